//! From scores to a map: the method turns each weighed channel's pass scores into a
//! weight, and the convention (preset) turns Σ_k w_k A_k into the map.

use std::ops::Range;

use super::pass_set::{TargetScores, softmax};
use super::plan::MaskPlan;
use super::{Activations, Align, Map, Preset, Resampler, Saliency, normalize_min_max, normalize_shift_eps};

/// One target's scores, read per weighed channel (each the mean over its passes).
pub(crate) struct ChannelScores<'a> {
    weighed: &'a [(usize, Range<usize>)],
    scores: &'a TargetScores,
}

impl ChannelScores<'_> {
    /// The target's logit on the clean input.
    pub fn clean_logit(&self) -> f32 {
        self.scores.clean_logit
    }

    /// Each weighed channel's mean logit over its passes.
    pub fn mean_logits(&self) -> impl Iterator<Item = f32> + '_ {
        self.weighed.iter().map(|(_, p)| mean(&self.scores.logits[p.clone()]))
    }

    /// Each weighed channel's mean softmax probability over its passes.
    pub fn mean_probs(&self) -> impl Iterator<Item = f32> + '_ {
        self.weighed.iter().map(|(_, p)| mean(&self.scores.probs[p.clone()]))
    }
}

/// A convention's channel weights: `official` the masked input's probability,
/// `pytorch_grad_cam` the softmax of the logits, `torchcam` the softmax of the logit's
/// increase over the clean input.
pub(crate) fn preset_weights(preset: Preset, scores: &ChannelScores<'_>) -> Vec<f32> {
    match preset {
        Preset::Official => scores.mean_probs().collect(),
        Preset::PytorchGradCam => softmax(&scores.mean_logits().collect::<Vec<_>>()),
        Preset::Torchcam => {
            let y = scores.clean_logit();
            softmax(&scores.mean_logits().map(|m| m - y).collect::<Vec<_>>())
        }
    }
}

/// Σ_k w_k A_k over the channels with a weight.
fn weighted_sum(act: &Activations, weights: impl Iterator<Item = (usize, f32)>) -> Vec<f32> {
    let mut sum = vec![0.0f32; act.height * act.width];
    for (k, w) in weights {
        for (s, a) in sum.iter_mut().zip(act.channel(k)) {
            *s += w * a;
        }
    }
    sum
}

pub(super) fn relu(values: &mut [f32]) {
    values.iter_mut().for_each(|v| *v = v.max(0.0));
}

fn mean(values: &[f32]) -> f32 {
    (values.iter().map(|&v| f64::from(v)).sum::<f64>() / values.len().max(1) as f64) as f32
}

/// Turns one target's pass scores into its saliency map, by the plan's method.
pub fn combine(plan: &MaskPlan, scores: &TargetScores) -> Saliency {
    assert_eq!(scores.logits.len(), plan.passes.len(), "one score per pass");
    combine_channels(plan, scores, plan.weighed_channels())
}

/// The map from the channels whose passes all ran (`done`: one flag per pass; scores of
/// passes not done are ignored). Every weight rule is per channel up to a common positive
/// factor (a softmax over the done channels is the full softmax rescaled), and the map is
/// normalised, so this is the exact map of the done channels; with every pass done it is
/// `combine`'s map bit for bit.
pub fn combine_partial(plan: &MaskPlan, scores: &TargetScores, done: &[bool]) -> Saliency {
    assert_eq!(scores.logits.len(), plan.passes.len(), "one score per pass");
    combine_channels(plan, scores, plan.weighed_channels_done(done))
}

/// A quick look at a partial run for live previews: ReLU(Σ w_k A_k) over the channels whose
/// passes are done, at the target layer's resolution, min-max normalised. Cheap (no
/// upsampling); not any preset's final map.
pub fn preview(plan: &MaskPlan, scores: &TargetScores, done: &[bool]) -> Map {
    let act = &plan.activations;
    let weighed = plan.weighed_channels_done(done);
    let weights = plan.method.cam().weights(&ChannelScores { weighed: &weighed, scores });
    let mut sum = weighted_sum(act, weighed.iter().map(|(k, _)| *k).zip(weights));
    relu(&mut sum);
    normalize_min_max(&mut sum);
    Map::new(act.width, act.height, sum)
}

fn combine_channels(plan: &MaskPlan, scores: &TargetScores, weighed: Vec<(usize, Range<usize>)>) -> Saliency {
    let act = &plan.activations;
    let [_, h, w] = plan.input_chw;
    let weights = plan.method.cam().weights(&ChannelScores { weighed: &weighed, scores });
    let sum = weighted_sum(act, weighed.iter().map(|(k, _)| *k).zip(weights));
    let preset = plan.method.preset();
    if preset == Preset::Official {
        // Σ_k w_k Up(A_k) = Up(Σ_k w_k A_k): bilinear upsampling is linear, so the sum is
        // taken at feature size and upsampled once; ReLU comes after, as in the code.
        let mut map = Resampler::new((act.height, act.width), (h, w), Align::HalfPixel).apply(&sum);
        relu(&mut map);
        normalize_min_max(&mut map);
        return Saliency { input: Map::new(w, h, map), feature: None };
    }
    let mut cam = sum;
    relu(&mut cam);
    let eps = if preset == Preset::Torchcam { 1e-8 } else { 1e-7 };
    normalize_shift_eps(&mut cam, eps);
    let feature = Map::new(act.width, act.height, cam);
    let mut input = feature.resized(w, h);
    if preset == Preset::PytorchGradCam {
        // pytorch-grad-cam normalises once more after cv2.resize.
        normalize_shift_eps(&mut input.data, 1e-7);
    }
    Saliency { input, feature: Some(feature) }
}
