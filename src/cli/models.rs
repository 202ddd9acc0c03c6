//! `scorecam models` and `scorecam methods`: what the server would offer.

use super::CliError;
use crate::service::Service;

pub fn list(service: &Service) -> Result<(), CliError> {
    for s in service.models().list() {
        let Some(m) = s.model else {
            println!("{}\n  FAILED: {}", s.name, s.error.unwrap_or_default());
            continue;
        };
        let p = &m.package;
        let [_, h, w] = p.info.input_chw;
        let [k, fh, fw] = p.info.feature_khw;
        println!(
            "{}\n  input {w}×{h} ({:?}), target layer {k}×{fh}×{fw}: {}\n  {} classes, provider {}\n  {}",
            s.name,
            p.manifest.input.resize,
            p.manifest.target_layer.description,
            p.info.classes,
            m.provider.as_str(),
            p.manifest.description
        );
    }
    Ok(())
}

pub fn methods() -> Result<(), CliError> {
    for m in crate::cam::methods::all() {
        println!("{}: {}", m.name, m.summary);
        for p in m.params {
            let default = if p.default.is_empty() { String::new() } else { format!(" (default {})", p.default) };
            println!("  --{}{default}: {}", p.name.replace('_', "-"), p.help);
        }
    }
    Ok(())
}
