//! Ablation-CAM (pytorch-grad-cam): each channel zeroed in turn in the activations, the
//! drop of the head's logit weighs it. Only the head runs.

use std::fmt;
use std::sync::Arc;

use serde_json::Value;

use super::{Args, CamMethod, MethodEntry};
use crate::cam::combine::MapInputs;
use crate::cam::passes::{Pass, PassSource};
use crate::cam::{Activations, Graph, Preset};

pub(super) static ENTRY: MethodEntry = MethodEntry {
    name: "ablationcam",
    summary: "Ablation-CAM: each channel zeroed in turn; the drop of the logit weighs it (head only)",
    params: &[],
    build,
};

fn build(_: &Args) -> Result<Arc<dyn CamMethod>, String> {
    Ok(Arc::new(AblationCam))
}

#[derive(Debug)]
struct AblationCam;

impl CamMethod for AblationCam {
    fn entry(&self) -> &'static MethodEntry {
        &ENTRY
    }

    fn preset(&self) -> Preset {
        Preset::PytorchGradCam
    }

    fn graph(&self) -> Graph {
        Graph::Head
    }

    fn parameters(&self) -> serde_json::Map<String, Value> {
        serde_json::Map::new()
    }

    fn passes_per_unit(&self) -> usize {
        1
    }

    /// Zeroing an all-zero channel changes nothing (and it weighs a zero map); a constant
    /// non-zero channel does change the head's input.
    fn is_degenerate(&self, activations: &Activations, k: usize) -> bool {
        activations.channel(k).iter().all(|&v| v == 0.0)
    }

    fn degenerate_passes(&self) -> Option<usize> {
        None
    }

    /// Each pass zeroes a different channel: no two are the same input.
    fn shares_masks(&self) -> bool {
        false
    }

    fn fill_pass(&self, src: &PassSource<'_>, pass: Pass, _mask: &mut [f32], dst: &mut [f32]) {
        let k = pass.channel.expect("ablation plans no shared pass");
        let act = src.activations;
        // The grid with channel k zeroed, then the values the head needs besides the grid
        // (a transformer's class tokens) as the clean pass made them.
        let (grid, extra) = dst.split_at_mut(act.data.len());
        grid.copy_from_slice(&act.data);
        extra.copy_from_slice(&act.extra);
        let n = act.height * act.width;
        grid[k * n..(k + 1) * n].fill(0.0);
    }

    /// pytorch-grad-cam: (y_c - y_c^(k)) / y_c on the raw logits.
    fn weights(&self, scores: &MapInputs<'_>) -> Vec<f32> {
        let y = scores.clean_logit();
        scores.mean_logits().map(|m| (y - m) / y).collect()
    }
}

impl fmt::Display for AblationCam {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ablationcam")
    }
}
