//! `scorecam models` and `scorecam methods`: what the server would offer.

use super::CliError;
use crate::service::{Service, registry};

pub fn list(service: &Service) -> Result<(), CliError> {
    for s in service.catalog().models {
        let Some(d) = s.details else {
            println!("{}\n  FAILED: {}", s.name, s.error.unwrap_or_default());
            continue;
        };
        let (i, t) = (&d.input, &d.target_layer);
        println!(
            "{}\n  input {}×{} ({:?}), target layer {}×{}×{}: {}\n  {} classes, provider {}\n  {}",
            s.name,
            i.width,
            i.height,
            i.resize,
            t.channels,
            t.height,
            t.width,
            t.description,
            d.head.outputs,
            d.execution_provider,
            d.description
        );
    }
    Ok(())
}

pub fn methods() -> Result<(), CliError> {
    for m in registry::all() {
        println!("{}: {}", m.name, m.summary);
        for p in m.params {
            let default = if p.default.is_empty() { String::new() } else { format!(" (default {})", p.default) };
            println!("  --{}{default}: {}", p.name.replace('_', "-"), p.help);
        }
    }
    Ok(())
}
