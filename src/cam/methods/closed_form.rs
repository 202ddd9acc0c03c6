//! The gradient-family CAMs in closed form, for a head that is global average pooling
//! followed by a linear layer: there the gradient of class c's logit with respect to A_k is
//! g_k = W[c, k] / (h·w) at every cell, so each method's channel weights follow from W and
//! the activations, with no pass beyond the clean one. Each formula is pytorch-grad-cam
//! 1.5.7's with that constant gradient put in (its epsilons included), and the map follows
//! its convention (ReLU, normalise, cv2 resize, normalise), so the maps equal its own.
//!
//! Grad-CAM with this head is CAM (Zhou et al., 2016) up to the factor 1/(h·w), which the
//! normalisation removes; HiResCAM equals Grad-CAM for the same reason.

use std::fmt;
use std::sync::Arc;

use serde_json::Value;

use super::{CamMethod, MethodEntry};
use crate::cam::combine::MapInputs;
use crate::cam::passes::{Pass, PassSource};
use crate::cam::{Activations, Preset};

/// Which member of the family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    GradCam,
    GradCamPlusPlus,
    XGradCam,
    LayerCam,
}

pub(super) struct ClosedForm {
    kind: Kind,
    entry: &'static MethodEntry,
}

impl ClosedForm {
    pub(super) fn build(kind: Kind, entry: &'static MethodEntry) -> Result<Arc<dyn CamMethod>, String> {
        Ok(Arc::new(ClosedForm { kind, entry }))
    }

    /// Channel k's weight from its constant gradient g and activation sum s over n cells.
    fn weight(&self, g: f64, s: f64, n: f64) -> f64 {
        match self.kind {
            // mean over the cells of a constant gradient
            Kind::GradCam => g,
            // Σ_ij relu(g)·a, a = g² / (2g² + s·g³ + 1e-6), a = 0 where g = 0
            Kind::GradCamPlusPlus => {
                let a = if g == 0.0 { 0.0 } else { g * g / (2.0 * g * g + s * g * g * g + 1e-6) };
                n * g.max(0.0) * a
            }
            // Σ_ij g·A_ij / (s + 1e-7)
            Kind::XGradCam => g * s / (s + 1e-7),
            // Σ_k relu(g_ij)·A_k,ij: with a constant gradient, a channel weight of relu(g)
            Kind::LayerCam => g.max(0.0),
        }
    }
}

impl CamMethod for ClosedForm {
    fn entry(&self) -> &'static MethodEntry {
        self.entry
    }

    fn preset(&self) -> Preset {
        Preset::PytorchGradCam
    }

    fn needs_linear_head(&self) -> bool {
        true
    }

    fn parameters(&self) -> serde_json::Map<String, Value> {
        serde_json::Map::new()
    }

    /// The weights come from the head's closed form: no pass at all.
    fn passes_per_unit(&self) -> usize {
        0
    }

    /// Every channel counts, constant ones too: a constant channel with a non-zero
    /// gradient shifts the whole map before the ReLU.
    fn is_degenerate(&self, _activations: &Activations, _k: usize) -> bool {
        false
    }

    fn degenerate_passes(&self) -> Option<usize> {
        None
    }

    fn shares_masks(&self) -> bool {
        false
    }

    /// Never called: the plan has no pass (an all-zero input if it were).
    fn fill_pass(&self, _src: &PassSource<'_>, _pass: Pass, _mask: &mut [f32], dst: &mut [f32]) {
        dst.fill(0.0);
    }

    fn weights(&self, inputs: &MapInputs<'_>) -> Vec<f32> {
        let act = inputs.activations;
        let n = (act.height * act.width) as f64;
        // Without the head (the service checks it first) every weight is 0: an all-zero map.
        let row = inputs.head.map(|h| h.row(inputs.class())).unwrap_or(&[]);
        inputs
            .weighed
            .iter()
            .map(|&(k, _)| {
                let g = row.get(k).map_or(0.0, |&w| f64::from(w) / n);
                let s: f64 = act.channel(k).iter().map(|&v| f64::from(v)).sum();
                self.weight(g, s, n) as f32
            })
            .collect()
    }
}

impl fmt::Debug for ClosedForm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClosedForm").field("kind", &self.kind).finish()
    }
}

impl fmt::Display for ClosedForm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.entry.name)
    }
}
