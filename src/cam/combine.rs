//! From scores to a map. Most methods weigh the target layer's channels (the method turns
//! each weighed channel's pass scores into a weight and the convention turns Σ_k w_k A_k
//! into the map); the others (Recipro-CAM's cells, RISE's random masks) build their map
//! from their units' scores themselves ([`CamMethod::map`]).

use std::ops::Range;

use super::head::softmax;
use super::linear_head::LinearHead;
use super::methods::CamMethod;
use super::pass_set::TargetScores;
use super::plan::MaskPlan;
use super::{Activations, Align, Map, Preset, Resampler, Saliency, normalize_min_max, normalize_shift_eps};
use crate::resample::pillow_lanczos_gray;

/// What a method's map is built from: one target's scores, read per weighed unit (each
/// the mean over its passes), and what the plan knows.
pub(crate) struct MapInputs<'a> {
    pub activations: &'a Activations,
    /// The model's input size (H, W).
    pub input_hw: (usize, usize),
    /// The units (channels, cells, masks) that take part, each with its passes.
    pub weighed: &'a [(usize, Range<usize>)],
    scores: &'a TargetScores,
    /// The head's closed form, for the methods that need it (`CamMethod::needs_linear_head`).
    pub head: Option<&'a LinearHead>,
}

impl MapInputs<'_> {
    /// The target class.
    pub fn class(&self) -> usize {
        self.scores.class
    }

    /// The target's logit on the clean input.
    pub fn clean_logit(&self) -> f32 {
        self.scores.clean_logit
    }

    /// Each weighed unit's mean logit over its passes.
    pub fn mean_logits(&self) -> impl Iterator<Item = f32> + '_ {
        self.weighed.iter().map(|(_, p)| mean(&self.scores.logits[p.clone()]))
    }

    /// Each weighed unit's mean softmax probability over its passes.
    pub fn mean_probs(&self) -> impl Iterator<Item = f32> + '_ {
        self.weighed.iter().map(|(_, p)| mean(&self.scores.probs[p.clone()]))
    }
}

/// A convention's channel weights: `official` the masked input's probability,
/// `pytorch_grad_cam` the softmax of the logits, `torchcam` the softmax of the logit's
/// increase over the clean input.
pub(crate) fn preset_weights(preset: Preset, scores: &MapInputs<'_>) -> Vec<f32> {
    match preset {
        Preset::Official | Preset::PytorchCnnVisualizations => scores.mean_probs().collect(),
        Preset::PytorchGradCam => softmax(&scores.mean_logits().collect::<Vec<_>>()),
        Preset::Torchcam => {
            let y = scores.clean_logit();
            softmax(&scores.mean_logits().map(|m| m - y).collect::<Vec<_>>())
        }
    }
}

/// `start` + Σ_k w_k A_k over the channels with a weight, added in the iterator's order.
fn weighted_sum(act: &Activations, start: f32, weights: impl Iterator<Item = (usize, f32)>) -> Vec<f32> {
    let mut sum = vec![start; act.height * act.width];
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
    saliency(plan, scores, &plan.weighed_units())
}

/// The map from the units whose passes all ran (`done`: one flag per pass; scores of
/// passes not done are ignored). Every channel weight rule is per channel up to a common
/// positive factor (a softmax over the done channels is the full softmax rescaled), and the
/// map is normalised, so for channel methods this is the exact map of the done channels;
/// with every pass done it is `combine`'s map bit for bit.
pub fn combine_partial(plan: &MaskPlan, scores: &TargetScores, done: &[bool]) -> Saliency {
    assert_eq!(scores.logits.len(), plan.passes.len(), "one score per pass");
    saliency(plan, scores, &plan.weighed_units_done(done))
}

fn inputs<'a>(plan: &'a MaskPlan, scores: &'a TargetScores, weighed: &'a [(usize, Range<usize>)]) -> MapInputs<'a> {
    let [_, h, w] = plan.input_chw;
    MapInputs { activations: &plan.activations, input_hw: (h, w), weighed, scores, head: plan.head.as_deref() }
}

/// A quick look at a partial run for live previews, at the target layer's resolution, min-max
/// normalised. For channel methods ReLU(Σ w_k A_k) over the done channels (cheap: no
/// upsampling; not any preset's final map); otherwise the method's own map.
pub fn preview(plan: &MaskPlan, scores: &TargetScores, done: &[bool]) -> Map {
    let act = &plan.activations;
    let weighed = plan.weighed_units_done(done);
    // The method's own map is asked for at the target layer's size: a preview of RISE then
    // draws its masks at 7×7, not 224×224, on every refresh.
    let inputs = MapInputs { input_hw: (act.height, act.width), ..inputs(plan, scores, &weighed) };
    let cam = plan.method.cam();
    if let Some(s) = cam.map(&inputs) {
        return s.feature.unwrap_or_else(|| s.input.resized(act.width, act.height));
    }
    let weights = cam.weights(&inputs);
    let mut sum = weighted_sum(act, 0.0, weighed.iter().map(|(k, _)| *k).zip(weights));
    relu(&mut sum);
    normalize_min_max(&mut sum);
    Map::new(act.width, act.height, sum)
}

fn saliency(plan: &MaskPlan, scores: &TargetScores, weighed: &[(usize, Range<usize>)]) -> Saliency {
    let inputs = inputs(plan, scores, weighed);
    let cam = plan.method.cam();
    cam.map(&inputs).unwrap_or_else(|| channel_map(cam, &inputs))
}

/// The map of a channel-weighing method: its weights, Σ_k w_k A_k, then its convention's
/// ReLU, normalisation and upsampling.
fn channel_map(cam: &dyn CamMethod, inputs: &MapInputs<'_>) -> Saliency {
    let act = inputs.activations;
    let (h, w) = inputs.input_hw;
    let weights = cam.weights(inputs);
    let preset = cam.preset();
    if preset == Preset::PytorchCnnVisualizations {
        return cnn_visualizations_map(act, inputs.weighed.iter().map(|(k, _)| *k).zip(weights), (h, w));
    }
    let sum = weighted_sum(act, 0.0, inputs.weighed.iter().map(|(k, _)| *k).zip(weights));
    if preset == Preset::Official {
        // Σ_k w_k Up(A_k) = Up(Σ_k w_k A_k): bilinear upsampling is linear, so the sum is
        // taken at feature size and upsampled once; ReLU comes after, as in the code.
        let mut map = Resampler::new((act.height, act.width), (h, w), Align::HalfPixel).apply(&sum);
        relu(&mut map);
        normalize_min_max(&mut map);
        return Saliency { input: Map::new(w, h, map), feature: None };
    }
    if preset == Preset::PytorchGradCam {
        return grad_cam_map(sum, act, (h, w));
    }
    let mut cam = sum;
    relu(&mut cam);
    normalize_shift_eps(&mut cam, 1e-8);
    let feature = Map::new(act.width, act.height, cam);
    Saliency { input: feature.resized(w, h), feature: Some(feature) }
}

/// pytorch-grad-cam's `BaseCAM` from a map at feature size: ReLU, `scale_cam_image`
/// (min shifted to 0, divided by max + 1e-7), `cv2.resize` (half-pixel bilinear) to the
/// input, and the same normalisation once more.
pub(crate) fn grad_cam_map(mut cam: Vec<f32>, act: &Activations, (h, w): (usize, usize)) -> Saliency {
    relu(&mut cam);
    normalize_shift_eps(&mut cam, 1e-7);
    let feature = Map::new(act.width, act.height, cam);
    let mut input = feature.resized(w, h);
    normalize_shift_eps(&mut input.data, 1e-7);
    Saliency { input, feature: Some(feature) }
}

/// pytorch-cnn-visualizations' map: 1 + Σ_k w_k A_k at feature size (summed from an array of
/// ones, channel by channel in index order, in f32 as its numpy code does), ReLU, min-max,
/// `np.uint8(cam * 255)` (truncation), Pillow's Lanczos enlargement of that byte image to
/// the input size, and / 255. The quantisation and the Lanczos filter are what make its
/// maps differ from `official`'s: up to one byte step everywhere and ringing near edges.
fn cnn_visualizations_map(
    act: &Activations,
    weights: impl Iterator<Item = (usize, f32)>,
    (h, w): (usize, usize),
) -> Saliency {
    let mut weights: Vec<(usize, f32)> = weights.collect();
    weights.sort_unstable_by_key(|&(k, _)| k);
    let mut cam = weighted_sum(act, 1.0, weights.into_iter());
    relu(&mut cam);
    // A constant map divides 0 by 0 in the code (NaN, which np.uint8 turns into 0 on the
    // usual platforms); normalize_min_max gives the same zeros without the NaN.
    normalize_min_max(&mut cam);
    // `as u8` truncates toward zero like np.uint8 (and saturates, which [0, 255] never needs).
    let bytes: Vec<u8> = cam.iter().map(|&v| (v * 255.0) as u8).collect();
    let big = pillow_lanczos_gray(&bytes, (act.width, act.height), (w, h));
    let to_unit = |b: &[u8]| b.iter().map(|&v| f32::from(v) / 255.0).collect::<Vec<_>>();
    Saliency { input: Map::new(w, h, to_unit(&big)), feature: Some(Map::new(act.width, act.height, to_unit(&bytes))) }
}

/// A map at feature resolution from one score per cell (Recipro-CAM), min-max normalised,
/// and its half-pixel bilinear upsample to the input.
pub(crate) fn cell_map(cells: Vec<f32>, act: &Activations, (h, w): (usize, usize)) -> Saliency {
    let mut cells = cells;
    normalize_min_max(&mut cells);
    let feature = Map::new(act.width, act.height, cells);
    Saliency { input: feature.resized(w, h), feature: Some(feature) }
}
