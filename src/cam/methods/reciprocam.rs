//! Recipro-CAM (Byun and Lee, CVPRW 2024; the default method of OpenVINO XAI): one head
//! pass per spatial cell of the target layer, on a feature map that keeps that cell's
//! activation vector and zeroes the rest (`kernel=cell`), or spreads the cell's vector over
//! its 3×3 neighbourhood weighted by a Gaussian kernel (`kernel=gaussian`, the authors'
//! code). The target's score on cell (i, j)'s pass is the map's value there: the
//! probability (the authors' code) or the logit (OpenVINO XAI's), min-max normalised at
//! feature resolution and upsampled bilinearly to the input. Only the head runs.
//!
//! A transformer's prefix tokens (class token) are kept as the clean pass made them, as
//! ViT-ReciproCAM does with its `use_cls_token`.

use std::fmt;
use std::sync::Arc;

use serde_json::Value;

use super::{Args, CamMethod, MethodEntry, ParamKind, ParamSpec};
use crate::cam::combine::{MapInputs, cell_map};
use crate::cam::passes::{Pass, PassSource};
use crate::cam::{Activations, Graph, Preset, Saliency};

const KERNELS: &[&str] = &["cell", "gaussian"];
const SCORES: &[&str] = &["probability", "logit"];

pub(super) static ENTRY: MethodEntry = MethodEntry {
    name: "reciprocam",
    summary: "Recipro-CAM: one head pass per feature-map cell, keeping only that cell; its score is the map (head only)",
    params: &[
        ParamSpec {
            name: "kernel",
            kind: ParamKind::Choice(KERNELS),
            default: "cell",
            help: "Recipro-CAM mask: the cell alone, or its vector spread over a 3×3 Gaussian",
        },
        ParamSpec {
            name: "score",
            kind: ParamKind::Choice(SCORES),
            default: "probability",
            help: "Recipro-CAM score: the softmax probability (the paper) or the logit (OpenVINO XAI)",
        },
    ],
    build,
};

fn build(args: &Args) -> Result<Arc<dyn CamMethod>, String> {
    Ok(Arc::new(ReciproCam {
        gaussian: args.choice("kernel") == Some("gaussian"),
        logit: args.choice("score") == Some("logit"),
    }))
}

/// The authors' 3×3 kernel.
const GAUSSIAN: [[f32; 3]; 3] = [[1.0 / 16.0, 1.0 / 8.0, 1.0 / 16.0], [1.0 / 8.0, 1.0 / 4.0, 1.0 / 8.0], [
    1.0 / 16.0,
    1.0 / 8.0,
    1.0 / 16.0,
]];

#[derive(Debug)]
struct ReciproCam {
    gaussian: bool,
    logit: bool,
}

/// Cell u's activation vector A[:, u] (K values).
fn cell(act: &Activations, u: usize) -> impl Iterator<Item = f32> + '_ {
    let n = act.height * act.width;
    (0..act.channels).map(move |k| act.data[k * n + u])
}

impl CamMethod for ReciproCam {
    fn entry(&self) -> &'static MethodEntry {
        &ENTRY
    }

    /// Not a Score-CAM convention; the map is min-max normalised at feature size.
    fn preset(&self) -> Preset {
        Preset::Torchcam
    }

    fn convention(&self) -> &'static str {
        "recipro_cam"
    }

    fn has_feature_map(&self) -> bool {
        true
    }

    fn graph(&self) -> Graph {
        Graph::Head
    }

    fn parameters(&self) -> serde_json::Map<String, Value> {
        let kernel = if self.gaussian { "gaussian" } else { "cell" };
        let score = if self.logit { "logit" } else { "probability" };
        [("kernel", kernel), ("score", score)].into_iter().map(|(k, v)| (k.to_string(), v.into())).collect()
    }

    fn units(&self, activations: &Activations) -> usize {
        activations.height * activations.width
    }

    fn unit_mass(&self, activations: &Activations, unit: usize) -> f64 {
        cell(activations, unit).map(|v| f64::from(v.abs())).sum()
    }

    /// The most active cells first: a partial map then has the cells that matter most.
    fn unit_priority(&self, activations: &Activations, unit: usize) -> f64 {
        self.unit_mass(activations, unit)
    }

    fn passes_per_unit(&self) -> usize {
        1
    }

    /// A cell whose vector is all zero gives the all-zero grid with either kernel: every
    /// such cell shares one pass.
    fn is_degenerate(&self, activations: &Activations, unit: usize) -> bool {
        cell(activations, unit).all(|v| v == 0.0)
    }

    fn degenerate_passes(&self) -> Option<usize> {
        Some(1)
    }

    fn shares_masks(&self) -> bool {
        false
    }

    fn fill_pass(&self, src: &PassSource<'_>, pass: Pass, _mask: &mut [f32], dst: &mut [f32]) {
        let act = src.activations;
        let (grid, extra) = dst.split_at_mut(act.data.len());
        grid.fill(0.0);
        extra.copy_from_slice(&act.extra);
        let Some(u) = pass.channel else { return };
        let (h, w, n) = (act.height, act.width, act.height * act.width);
        let (i, j) = (u / w, u % w);
        for (k, v) in cell(act, u).enumerate() {
            let plane = &mut grid[k * n..(k + 1) * n];
            if !self.gaussian {
                plane[u] = v;
                continue;
            }
            // The cell's vector on each neighbour, weighed by the kernel; the kernel is cut
            // (not renormalised) at the edges, as in the authors' code.
            for (di, row) in GAUSSIAN.iter().enumerate() {
                for (dj, g) in row.iter().enumerate() {
                    let (y, x) = ((i + di).checked_sub(1), (j + dj).checked_sub(1));
                    if let (Some(y), Some(x)) = (y, x)
                        && y < h
                        && x < w
                    {
                        plane[y * w + x] = v * g;
                    }
                }
            }
        }
    }

    fn map(&self, inputs: &MapInputs<'_>) -> Option<Saliency> {
        let act = inputs.activations;
        let scores: Vec<f32> =
            if self.logit { inputs.mean_logits().collect() } else { inputs.mean_probs().collect() };
        // Cells a partial run has not reached take the lowest score seen: no evidence.
        let floor = scores.iter().copied().fold(f32::INFINITY, f32::min);
        let mut cells = vec![if floor.is_finite() { floor } else { 0.0 }; act.height * act.width];
        for (&(u, _), s) in inputs.weighed.iter().zip(scores) {
            cells[u] = s;
        }
        Some(cell_map(cells, act, inputs.input_hw))
    }
}

impl fmt::Display for ReciproCam {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kernel = if self.gaussian { "gaussian" } else { "cell" };
        let score = if self.logit { "logit" } else { "probability" };
        write!(f, "reciprocam(kernel={kernel}, score={score})")
    }
}
