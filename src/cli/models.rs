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
        if let Some(q) = &d.quantization {
            let f = &q.fidelity;
            println!(
                "  APPROXIMATE ({:?} of {}): maps vs its maps over {} photos: Pearson r mean {:.4} (least {:.4}, {}), \
                 top-20 % IoU mean {:.4} (least {:.4})",
                q.kind,
                q.reference,
                f.photos,
                f.pearson_mean,
                f.pearson_min,
                f.worst_photo,
                f.top20_iou_mean,
                f.top20_iou_min
            );
        }
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
