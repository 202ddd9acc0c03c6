//! Score-CAM (Wang et al. 2020) by one of three library conventions, and Faster Score-CAM:
//! each channel's upsampled, normalised activation masks the input, and the masked input's
//! score weighs the channel.

use std::fmt;
use std::sync::Arc;

use serde_json::Value;

use super::{Args, CamMethod, MethodEntry, ParamKind, ParamSpec};
use crate::cam::passes::{Pass, PassSource, times_mask};
use crate::cam::{Activations, Preset};

/// `Preset`'s names, as the parameter's choices (a test keeps them in step).
const PRESETS: &[&str] = &["official", "pytorch_grad_cam", "torchcam", "pytorch_cnn_visualizations"];

pub(super) static ENTRY: MethodEntry = MethodEntry {
    name: "scorecam",
    summary: "Score-CAM: each channel's normalised activation masks the input; the masked score weighs it",
    params: &[
        ParamSpec {
            name: "preset",
            kind: ParamKind::Choice(PRESETS),
            default: "official",
            help: "Score-CAM convention: official, pytorch_grad_cam, torchcam or pytorch_cnn_visualizations",
        },
        ParamSpec {
            name: "max_channels",
            kind: ParamKind::Int { min: 1, max: i64::MAX },
            default: "",
            help: "Faster Score-CAM: keep the N channels with the largest spatial spread (default: all)",
        },
    ],
    build,
};

fn build(args: &Args) -> Result<Arc<dyn CamMethod>, String> {
    let preset = args.choice("preset").expect("preset has a default").parse()?;
    Ok(Arc::new(ScoreCam { preset, max_channels: args.count("max_channels") }))
}

/// `max_channels` keeps only the channels with the largest spatial standard deviation
/// (Faster Score-CAM, an approximation).
#[derive(Debug)]
pub(super) struct ScoreCam {
    preset: Preset,
    max_channels: Option<usize>,
}

impl ScoreCam {
    pub(super) fn exact(preset: Preset) -> Self {
        Self { preset, max_channels: None }
    }
}

/// Spatial standard deviation of each channel (Faster Score-CAM's ranking).
fn channel_std(act: &Activations) -> Vec<f64> {
    (0..act.channels)
        .map(|k| {
            let c = act.channel(k);
            let n = c.len() as f64;
            let mean = c.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
            (c.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / n).sqrt()
        })
        .collect()
}

/// The `n` channels with the largest spatial standard deviation (ties by index).
pub fn top_channels_by_std(act: &Activations, n: usize) -> Vec<usize> {
    let std = channel_std(act);
    let mut idx: Vec<usize> = (0..act.channels).collect();
    idx.sort_by(|&a, &b| std[b].total_cmp(&std[a]).then(a.cmp(&b)));
    idx.truncate(n);
    idx.sort_unstable();
    idx
}

impl CamMethod for ScoreCam {
    fn entry(&self) -> &'static MethodEntry {
        &ENTRY
    }

    fn preset(&self) -> Preset {
        self.preset
    }

    fn check(&self, channels: usize) -> Result<(), String> {
        match self.max_channels {
            Some(n) if n == 0 || n > channels => Err(format!("max_channels must be within 1..={channels}, got {n}")),
            _ => Ok(()),
        }
    }

    fn parameters(&self) -> serde_json::Map<String, Value> {
        [("preset", self.preset.as_str().into()), ("max_channels", self.max_channels.into())]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect()
    }

    fn passes_per_unit(&self) -> usize {
        1
    }

    fn select_channels(&self, activations: &Activations) -> Option<Vec<usize>> {
        self.max_channels.map(|n| top_channels_by_std(activations, n))
    }

    /// `official` and `pytorch_cnn_visualizations` drop constant channels (their code skips
    /// them); the other conventions score their all-zero mask, the same input for all of
    /// them: one pass.
    fn degenerate_passes(&self) -> Option<usize> {
        (!self.preset.official_masks()).then_some(1)
    }

    fn fill_pass(&self, src: &PassSource<'_>, pass: Pass, mask: &mut [f32], dst: &mut [f32]) {
        match pass.channel {
            // X ⊙ 0, written as zeros so that -x · 0 does not feed the model a -0.
            None => dst.fill(0.0),
            Some(k) => {
                src.mask_into(k, mask);
                times_mask(src.x, mask, dst);
            }
        }
    }
}

impl fmt::Display for ScoreCam {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.max_channels {
            None => write!(f, "scorecam:{}", self.preset),
            Some(n) => write!(f, "scorecam:{}@{n}", self.preset),
        }
    }
}
