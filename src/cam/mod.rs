//! Score-CAM and its relatives as pure functions over tensors: no threads, no ONNX Runtime.
//!
//! An explanation is planned from the clean pass's activations ([`MaskPlan`]), its passes'
//! inputs are built a batch at a time ([`PassSet::fill_batch`]), the model scores them
//! (whoever runs it), and [`combine`] turns the scores into a map. The engine runs those
//! steps across worker threads; [`explain_with`] runs them in-line for tests and tools.
//!
//! By stage: [`methods`] (the registry: what differs between methods), `plan` (which
//! passes), `passes` (their inputs), `pass_set` (the contract the engine batches),
//! `combine` (scores to a map), [`faithfulness`] (metrics over maps).

mod combine;
mod explain;
pub mod faithfulness;
mod head;
mod linear_head;
pub mod methods;
mod noise;
mod pass_set;
mod passes;
mod plan;
#[cfg(test)]
mod test_support;

pub use crate::resample::{Align, Map, Resampler, resize};
pub use combine::{combine, combine_partial, preview};
pub use explain::explain_with;
pub use head::{
    Activation, BoxScore, Detection, DetectionFormat, Detector, HeadKind, MapLayout, Readout, Target, iou, softmax,
};
pub use linear_head::{HeadProbe, LinearHead};
pub use methods::{Method, top_channels_by_std};
pub(crate) use noise::SplitMix64;
pub use noise::gaussian_noise;
pub use pass_set::{Graph, PassSet, TargetScores, score_passes};
pub use plan::{Coverage, MaskPlan, PlanPrefix};

use serde::{Deserialize, Serialize};

/// The numerical convention of a Score-CAM implementation (see docs/presets.md).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Preset {
    /// haofanwang/Score-CAM: half-pixel masks, softmax-probability weights, sum at input size.
    #[default]
    Official,
    /// jacobgil/pytorch-grad-cam: corner-aligned masks, softmax over channel logits.
    PytorchGradCam,
    /// frgfm/torch-cam: normalise at feature size, logit increase, map at feature size.
    Torchcam,
    /// utkuozbulak/pytorch-cnn-visualizations: official masks and weights, the sum at
    /// feature size from ones, quantised to bytes and enlarged with Pillow's Lanczos.
    PytorchCnnVisualizations,
}

impl Preset {
    pub const ALL: [Preset; 4] =
        [Preset::Official, Preset::PytorchGradCam, Preset::Torchcam, Preset::PytorchCnnVisualizations];

    pub fn as_str(self) -> &'static str {
        match self {
            Preset::Official => "official",
            Preset::PytorchGradCam => "pytorch_grad_cam",
            Preset::Torchcam => "torchcam",
            Preset::PytorchCnnVisualizations => "pytorch_cnn_visualizations",
        }
    }

    /// Whether the preset computes its map at feature resolution before upsampling, so a
    /// caller may ask for that map itself.
    pub fn has_feature_map(self) -> bool {
        !matches!(self, Preset::Official)
    }

    /// Whether the preset masks by the official code's rule (half-pixel upsampling, plain
    /// min-max) and drops constant channels, as `official` and `pytorch_cnn_visualizations` do.
    pub fn official_masks(self) -> bool {
        matches!(self, Preset::Official | Preset::PytorchCnnVisualizations)
    }
}

impl std::str::FromStr for Preset {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Preset::ALL.into_iter().find(|p| p.as_str() == s).ok_or_else(|| {
            format!(
                "unknown preset `{s}` (expected official, pytorch_grad_cam, torchcam or pytorch_cnn_visualizations)"
            )
        })
    }
}

impl std::fmt::Display for Preset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The target layer's activations for one image: K channels of h×w, and any values the
/// head needs besides the grid (a vision transformer's class tokens), which head-only
/// passes carry through unchanged.
#[derive(Clone, Debug)]
pub struct Activations {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub data: Vec<f32>,
    pub extra: Vec<f32>,
}

impl Activations {
    pub fn new(channels: usize, height: usize, width: usize, data: Vec<f32>) -> Self {
        assert_eq!(data.len(), channels * height * width, "activation data does not match its shape");
        Self { channels, height, width, data, extra: Vec::new() }
    }

    /// `values` is the grid (K×h×w) followed by the extra values.
    pub fn with_extra(channels: usize, height: usize, width: usize, mut values: Vec<f32>) -> Self {
        let grid = channels * height * width;
        assert!(values.len() >= grid, "activation data is shorter than its grid");
        let extra = values.split_off(grid);
        Self { channels, height, width, data: values, extra }
    }

    pub fn channel(&self, k: usize) -> &[f32] {
        let n = self.height * self.width;
        &self.data[k * n..(k + 1) * n]
    }

    /// A channel is constant when every value is equal; its upsampled map is then constant
    /// too (bilinear taps are convex combinations), so its min-max mask is degenerate.
    pub fn is_constant(&self, k: usize) -> bool {
        let c = self.channel(k);
        c.iter().all(|&v| v == c[0])
    }
}

/// What one explanation produced for one target.
#[derive(Clone, Debug)]
pub struct Saliency {
    /// The map at the model's input resolution (H×W), values in 0..1.
    pub input: Map,
    /// The map at the target layer's resolution (h×w), for presets that compute one.
    pub feature: Option<Map>,
}

/// Min and max of a slice (NaN-free inputs assumed; `(inf, -inf)` when empty).
pub(crate) fn min_max(values: &[f32]) -> (f32, f32) {
    values.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)))
}

/// `(v - min) / (max - min)` in place; a constant slice becomes all zeros (the official
/// code returns no map there; zeros are the honest image of "no evidence").
pub(crate) fn normalize_min_max(values: &mut [f32]) {
    let (lo, hi) = min_max(values);
    if hi.partial_cmp(&lo) != Some(std::cmp::Ordering::Greater) {
        values.fill(0.0);
        return;
    }
    let range = hi - lo;
    values.iter_mut().for_each(|v| *v = (*v - lo) / range);
}

/// `v -= min; v /= (max + eps)` in place, the libraries' epsilon-guarded normalisation.
pub(crate) fn normalize_shift_eps(values: &mut [f32], eps: f32) {
    let (lo, _) = min_max(values);
    values.iter_mut().for_each(|v| *v -= lo);
    let (_, hi) = min_max(values);
    values.iter_mut().for_each(|v| *v /= hi + eps);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_max_normalisation_spans_zero_to_one() {
        let mut v = vec![2.0, 4.0, 3.0];
        normalize_min_max(&mut v);
        assert_eq!(v, vec![0.0, 1.0, 0.5]);
    }

    #[test]
    fn constant_and_all_zero_maps_normalise_to_zero_without_nan() {
        for fill in [0.0f32, 3.5, -1.0] {
            let mut v = vec![fill; 5];
            normalize_min_max(&mut v);
            assert!(v.iter().all(|x| *x == 0.0), "{fill}: {v:?}");
            let mut v = vec![fill; 5];
            normalize_shift_eps(&mut v, 1e-7);
            assert!(v.iter().all(|x| *x == 0.0 && !x.is_nan()), "{fill}: {v:?}");
        }
    }

    #[test]
    fn epsilon_normalisation_shifts_then_scales() {
        let mut v = vec![1.0, 3.0];
        normalize_shift_eps(&mut v, 1e-7);
        assert!((v[0] - 0.0).abs() < 1e-9);
        assert!((v[1] - 2.0 / (2.0 + 1e-7)).abs() < 1e-9);
    }

    #[test]
    fn preset_names_round_trip() {
        for p in Preset::ALL {
            assert_eq!(p.as_str().parse::<Preset>().unwrap(), p);
        }
        assert!("gradcam".parse::<Preset>().is_err());
    }

    #[test]
    fn constant_channel_detection() {
        let a = Activations::new(2, 1, 3, vec![0.0, 0.0, 0.0, 0.0, 1.0, 0.0]);
        assert!(a.is_constant(0));
        assert!(!a.is_constant(1));
    }
}
