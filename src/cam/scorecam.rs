//! The mask plan of Score-CAM and its relatives (SS-CAM, IS-CAM, Ablation-CAM): which
//! passes an explanation needs, their inputs built a batch at a time, and each method's
//! weights and combination rule.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::OnceLock;

use super::method::{Graph, Method};
use super::{Activations, Align, Map, Preset, Resampler, Saliency, min_max, normalize_min_max, normalize_shift_eps};

/// What one pass feeds the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaskSource {
    /// The input times channel k's normalised, upsampled activation.
    Channel(usize),
    /// The all-zero input that every constant channel's all-zero mask produces (one pass
    /// serves them all).
    Zero,
    /// SS-CAM: the input times (mask + noise sample); `None` is the all-zero mask that
    /// every constant channel shares.
    Noisy { channel: Option<usize>, sample: usize },
    /// IS-CAM: the input times c_step × mask.
    Scaled { channel: usize, step: usize },
    /// Ablation-CAM: the activations with channel k set to zero (a head-only pass).
    Ablate(usize),
}

/// Any set of passes the engine can batch: built a batch at a time by the workers.
pub trait PassSet: Send + Sync + std::fmt::Debug {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn graph(&self) -> Graph;
    /// Floats in one pass's input.
    fn pass_len(&self) -> usize;
    /// Writes the inputs of `passes` into `out` (len = passes × pass_len). `x` is the
    /// preprocessed image, C×H×W.
    fn fill_batch(&self, x: &[f32], passes: Range<usize>, out: &mut [f32]);
}

/// The passes one explanation needs, derived from the clean pass's activations.
///
/// The plan does not depend on the target class: one set of passes serves every target.
pub struct MaskPlan {
    method: Method,
    activations: Activations,
    input_chw: [usize; 3],
    passes: Vec<MaskSource>,
    /// For each channel, the passes whose mean score weighs it; `None` for channels that
    /// contribute nothing (skipped constant channels, channels left out by `max_channels`,
    /// all-zero channels in Ablation-CAM).
    channel_passes: Vec<Option<Range<usize>>>,
    skipped: usize,
    /// Channels whose mask equals an earlier channel's: they reuse its passes.
    shared_masks: usize,
    up: Resampler,
    /// SS-CAM noise, one C×H×W sample each, drawn on first use by whichever thread needs it.
    noise: Vec<OnceLock<Vec<f32>>>,
}

impl std::fmt::Debug for MaskPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MaskPlan").field("method", &self.method).field("passes", &self.passes.len()).finish()
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

/// Below this range a channel's `pytorch_grad_cam` mask is not shared: the library's
/// 1e-8 in the denominator then changes the mask by more than 1e-6 relative.
const SHARE_MIN_RANGE_EPS: f32 = 1e-2;

/// A key that two channels share only when their masks are the same, so one set of passes
/// serves both (`None`: never shared). On ReLU6 activations about one active channel in ten
/// repeats another's normalised pattern (typically one saturated cell), so this saves
/// about a tenth of the passes.
///
/// - `official`: the channel min-max normalised at feature size. Equal keys mean
///   A_j = a·A_k + b with a > 0; bilinear upsampling is linear and keeps constants, so
///   Up(A_j) = a·Up(A_k) + b and the min-max masks at input size are equal (up to float
///   rounding in the last bit, far below the batch-to-batch noise of the runtime).
/// - `pytorch_grad_cam`: the same, only for channels whose range makes the 1e-8 in the
///   library's denominator negligible.
/// - `torchcam`, SS-CAM, IS-CAM: the mask is Up(the normalised channel), so the normalised
///   channel itself is the key and equal keys give bit-identical masks.
/// - Ablation-CAM zeroes a different channel in each pass: nothing to share.
fn mask_key(method: Method, a: &[f32]) -> Option<Vec<u32>> {
    if matches!(method, Method::AblationCam) {
        return None;
    }
    let normalised = match method.preset() {
        // Exactly what `mask_into` upsamples, so equal keys give bit-equal masks.
        Preset::Torchcam => torchcam_normalised(a),
        preset => {
            let (lo, hi) = min_max(a);
            if preset == Preset::PytorchGradCam && hi - lo < SHARE_MIN_RANGE_EPS {
                return None;
            }
            a.iter().map(|v| (v - lo) / (hi - lo)).collect()
        }
    };
    Some(normalised.iter().map(|x| x.to_bits()).collect())
}

/// torch-cam's channel normalisation at feature size, before its mask is upsampled.
fn torchcam_normalised(a: &[f32]) -> Vec<f32> {
    let mut n = a.to_vec();
    normalize_shift_eps(&mut n, 1e-8);
    n
}

/// IS-CAM's coefficient for step i (1-based): c_i = Σ_{j≤i} j/N.
pub fn iscam_coefficient(step: usize, steps: usize) -> f32 {
    (step * (step + 1)) as f32 / (2 * steps) as f32
}

impl MaskPlan {
    pub fn new(method: &Method, activations: Activations, input_chw: [usize; 3]) -> Self {
        let method = *method;
        let k = activations.channels;
        let mut passes = Vec::new();
        let mut channel_passes: Vec<Option<Range<usize>>> = vec![None; k];
        let included: Vec<bool> = match method {
            Method::ScoreCam { max_channels: Some(n), .. } => {
                let mut keep = vec![false; k];
                top_channels_by_std(&activations, n).into_iter().for_each(|c| keep[c] = true);
                keep
            }
            _ => vec![true; k],
        };
        // Channels whose pass(es) are shared or skipped: constant ones for the masking
        // methods (their min-max mask is all zero), all-zero ones for ablation.
        let mut shared = Vec::new();
        let push = |passes: &mut Vec<MaskSource>, sources: &mut dyn Iterator<Item = MaskSource>| {
            let start = passes.len();
            passes.extend(sources);
            Some(start..passes.len())
        };
        // Passes already planned per distinct mask (see `mask_key`).
        let mut by_mask: HashMap<Vec<u32>, Range<usize>> = HashMap::new();
        let mut shared_masks = 0;
        for ch in (0..k).filter(|&c| included[c]) {
            let degenerate = match method {
                Method::AblationCam => activations.channel(ch).iter().all(|&v| v == 0.0),
                _ => activations.is_constant(ch),
            };
            if degenerate {
                shared.push(ch);
                continue;
            }
            let key = mask_key(method, activations.channel(ch));
            if let Some(range) = key.as_ref().and_then(|key| by_mask.get(key)) {
                channel_passes[ch] = Some(range.clone());
                shared_masks += 1;
                continue;
            }
            channel_passes[ch] = match method {
                Method::ScoreCam { .. } => push(&mut passes, &mut std::iter::once(MaskSource::Channel(ch))),
                Method::SsCam { samples, .. } => {
                    push(&mut passes, &mut (0..samples).map(|s| MaskSource::Noisy { channel: Some(ch), sample: s }))
                }
                Method::IsCam { steps } => {
                    push(&mut passes, &mut (1..=steps).map(|s| MaskSource::Scaled { channel: ch, step: s }))
                }
                Method::AblationCam => push(&mut passes, &mut std::iter::once(MaskSource::Ablate(ch))),
            };
            if let (Some(key), Some(range)) = (key, &channel_passes[ch]) {
                by_mask.insert(key, range.clone());
            }
        }
        // `official` drops constant channels and ablating an all-zero channel changes
        // nothing (weight 0 on a zero map); the other rules give constant channels the
        // all-zero mask's score, the same for all of them, so their passes are shared.
        let shared_range = match method {
            _ if shared.is_empty() => None,
            Method::ScoreCam { preset: Preset::Official, .. } | Method::AblationCam => None,
            Method::ScoreCam { .. } | Method::IsCam { .. } => push(&mut passes, &mut std::iter::once(MaskSource::Zero)),
            Method::SsCam { samples, .. } => {
                push(&mut passes, &mut (0..samples).map(|s| MaskSource::Noisy { channel: None, sample: s }))
            }
        };
        for ch in &shared {
            channel_passes[*ch] = shared_range.clone();
        }
        let skipped = shared.len() + included.iter().filter(|i| !**i).count();
        let [_, h, w] = input_chw;
        let align = if method.preset() == Preset::PytorchGradCam { Align::Corners } else { Align::HalfPixel };
        let up = Resampler::new((activations.height, activations.width), (h, w), align);
        let noise = match method {
            Method::SsCam { samples, .. } => (0..samples).map(|_| OnceLock::new()).collect(),
            _ => Vec::new(),
        };
        Self { method, activations, input_chw, passes, channel_passes, skipped, shared_masks, up, noise }
    }

    pub fn method(&self) -> Method {
        self.method
    }

    pub fn preset(&self) -> Preset {
        self.method.preset()
    }

    pub fn activations(&self) -> &Activations {
        &self.activations
    }

    pub fn passes(&self) -> &[MaskSource] {
        &self.passes
    }

    /// Channels without a pass of their own: constant (skipped or sharing one), left out
    /// by `max_channels`, or all-zero under ablation.
    pub fn skipped_channels(&self) -> usize {
        self.skipped
    }

    /// Channels that reuse the passes of an earlier channel with the same mask.
    pub fn shared_mask_channels(&self) -> usize {
        self.shared_masks
    }

    /// Channel k's mask at input resolution, by the method's rule.
    fn mask_into(&self, k: usize, mask: &mut [f32]) {
        let a = self.activations.channel(k);
        match self.method.preset() {
            Preset::Official | Preset::PytorchGradCam => {
                self.up.apply_into(a, mask);
                let (lo, hi) = min_max(mask);
                let denom = match self.method.preset() {
                    Preset::Official => hi - lo,
                    _ => hi - lo + 1e-8,
                };
                if denom > 0.0 {
                    mask.iter_mut().for_each(|m| *m = (*m - lo) / denom);
                } else {
                    mask.fill(0.0);
                }
            }
            Preset::Torchcam => self.up.apply_into(&torchcam_normalised(a), mask),
        }
    }

    /// SS-CAM noise sample `s` (C×H×W), reproducible from the seed.
    fn noise(&self, s: usize) -> &[f32] {
        let Method::SsCam { sigma, seed, .. } = self.method else { unreachable!("noise is only planned for SS-CAM") };
        let len = self.input_chw.iter().product();
        self.noise[s].get_or_init(|| gaussian_noise(seed, s as u64, sigma, len))
    }
}

impl PassSet for MaskPlan {
    fn len(&self) -> usize {
        self.passes.len()
    }

    fn graph(&self) -> Graph {
        self.method.graph()
    }

    fn pass_len(&self) -> usize {
        match self.graph() {
            Graph::Full => self.input_chw.iter().product(),
            Graph::Head => self.activations.data.len() + self.activations.extra.len(),
        }
    }

    fn fill_batch(&self, x: &[f32], passes: Range<usize>, out: &mut [f32]) {
        let [_, h, w] = self.input_chw;
        let hw = h * w;
        let per = self.pass_len();
        assert_eq!(out.len(), passes.len() * per, "output buffer does not match the batch");
        if self.graph() == Graph::Full {
            assert_eq!(x.len(), per, "input does not match the plan's size");
        }
        let mut mask = vec![0.0f32; hw];
        let times = |dst: &mut [f32], mask: &[f32]| {
            for (dst_c, x_c) in dst.chunks_exact_mut(hw).zip(x.chunks_exact(hw)) {
                for ((d, xv), m) in dst_c.iter_mut().zip(x_c).zip(mask) {
                    *d = xv * m;
                }
            }
        };
        for (dst, source) in out.chunks_exact_mut(per).zip(&self.passes[passes]) {
            match *source {
                MaskSource::Zero => dst.fill(0.0),
                MaskSource::Channel(k) => {
                    self.mask_into(k, &mut mask);
                    times(dst, &mask);
                }
                MaskSource::Scaled { channel, step } => {
                    let Method::IsCam { steps } = self.method else { unreachable!("IS-CAM passes") };
                    self.mask_into(channel, &mut mask);
                    let c = iscam_coefficient(step, steps);
                    mask.iter_mut().for_each(|m| *m *= c);
                    times(dst, &mask);
                }
                MaskSource::Noisy { channel, sample } => {
                    match channel {
                        Some(k) => self.mask_into(k, &mut mask),
                        None => mask.fill(0.0),
                    }
                    let noise = self.noise(sample);
                    // X ⊙ (M + δ): δ varies per colour channel, M does not.
                    for ((dst_c, x_c), n_c) in
                        dst.chunks_exact_mut(hw).zip(x.chunks_exact(hw)).zip(noise.chunks_exact(hw))
                    {
                        for (((d, xv), m), n) in dst_c.iter_mut().zip(x_c).zip(&mask).zip(n_c) {
                            *d = xv * (m + n);
                        }
                    }
                }
                MaskSource::Ablate(k) => {
                    let (grid, extra) = dst.split_at_mut(self.activations.data.len());
                    grid.copy_from_slice(&self.activations.data);
                    extra.copy_from_slice(&self.activations.extra);
                    let n = self.activations.height * self.activations.width;
                    dst[k * n..(k + 1) * n].fill(0.0);
                }
            }
        }
    }
}

/// `len` draws of N(0, σ²) from a counter-based generator (SplitMix64 + Box–Muller), so a
/// sample is the same whichever thread draws it and whenever.
pub fn gaussian_noise(seed: u64, sample: u64, sigma: f32, len: usize) -> Vec<f32> {
    let mut state = seed ^ sample.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut next = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut out = Vec::with_capacity(len + 1);
    while out.len() < len {
        // Uniforms in (0, 1]: 53 random bits, never 0 (ln 0).
        let u1 = ((next() >> 11) + 1) as f64 / (1u64 << 53) as f64;
        let u2 = (next() >> 11) as f64 / (1u64 << 53) as f64;
        let r = (-2.0 * u1.ln()).sqrt() * f64::from(sigma);
        let t = std::f64::consts::TAU * u2;
        out.push((r * t.cos()) as f32);
        out.push((r * t.sin()) as f32);
    }
    out.truncate(len);
    out
}

/// One target class's scores over an explanation's passes.
#[derive(Clone, Debug, PartialEq)]
pub struct TargetScores {
    /// The class logit on the clean input.
    pub clean_logit: f32,
    /// The class logit on each pass.
    pub logits: Vec<f32>,
    /// The class softmax probability on each pass.
    pub probs: Vec<f32>,
}

/// `(logit, softmax probability)` of each target class in one row of logits.
pub fn class_scores(logits: &[f32], targets: &[usize]) -> Vec<(f32, f32)> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&z| f64::from(z - max).exp()).sum();
    targets
        .iter()
        .map(|&t| {
            let z = logits[t];
            (z, (f64::from(z - max).exp() / sum) as f32)
        })
        .collect()
}

/// Softmax (computed in f64 for stability): over channels for the weights, over classes
/// for probabilities.
pub fn softmax(scores: &[f32]) -> Vec<f32> {
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f64> = scores.iter().map(|&s| f64::from(s - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.iter().map(|e| (e / sum) as f32).collect()
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

fn relu(values: &mut [f32]) {
    values.iter_mut().for_each(|v| *v = v.max(0.0));
}

fn mean(values: &[f32]) -> f32 {
    (values.iter().map(|&v| f64::from(v)).sum::<f64>() / values.len().max(1) as f64) as f32
}

/// Turns one target's pass scores into its saliency map, by the plan's method.
pub fn combine(plan: &MaskPlan, scores: &TargetScores) -> Saliency {
    assert_eq!(scores.logits.len(), plan.len(), "one score per pass");
    let act = &plan.activations;
    let [_, h, w] = plan.input_chw;
    let feature_hw = (act.height, act.width);
    // (channel, its passes) for every channel that contributes.
    let weighed: Vec<(usize, Range<usize>)> =
        plan.channel_passes.iter().enumerate().filter_map(|(k, p)| p.clone().map(|p| (k, p))).collect();
    let (weights, preset): (Vec<f32>, Preset) = match plan.method {
        Method::ScoreCam { preset: Preset::Official, .. } => {
            // Σ_k w_k Up(A_k) = Up(Σ_k w_k A_k): bilinear upsampling is linear, so the sum
            // is taken at feature size and upsampled once; ReLU comes after, as in the code.
            let weights = weighed.iter().map(|(_, p)| mean(&scores.probs[p.clone()])).collect::<Vec<_>>();
            let sum = weighted_sum(act, weighed.iter().map(|(k, _)| *k).zip(weights));
            let mut map = Resampler::new(feature_hw, (h, w), Align::HalfPixel).apply(&sum);
            relu(&mut map);
            normalize_min_max(&mut map);
            return Saliency { input: Map::new(w, h, map), feature: None };
        }
        Method::ScoreCam { preset: Preset::PytorchGradCam, .. } => {
            let raw: Vec<f32> = weighed.iter().map(|(_, p)| mean(&scores.logits[p.clone()])).collect();
            (softmax(&raw), Preset::PytorchGradCam)
        }
        Method::ScoreCam { .. } | Method::SsCam { .. } | Method::IsCam { .. } => {
            let raw: Vec<f32> =
                weighed.iter().map(|(_, p)| mean(&scores.logits[p.clone()]) - scores.clean_logit).collect();
            (softmax(&raw), Preset::Torchcam)
        }
        Method::AblationCam => {
            // pytorch-grad-cam: (y_c - y_c^(k)) / y_c on the raw logits.
            let y = scores.clean_logit;
            let weights = weighed.iter().map(|(_, p)| (y - mean(&scores.logits[p.clone()])) / y).collect();
            (weights, Preset::PytorchGradCam)
        }
    };
    let mut cam = weighted_sum(act, weighed.iter().map(|(k, _)| *k).zip(weights));
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

/// Runs a whole explanation in-line: `score(batch, n)` returns n rows of logits for n
/// stacked pass inputs (images, or activations for a head-only method). Returns one map
/// per target, in order.
pub fn explain_with(
    plan: &MaskPlan,
    x: &[f32],
    clean_logits: &[f32],
    targets: &[usize],
    batch_size: usize,
    score: impl FnMut(&[f32], usize) -> Vec<f32>,
) -> Vec<Saliency> {
    let per_target = score_passes(plan, x, clean_logits, targets, batch_size, score);
    per_target.iter().map(|ts| combine(plan, ts)).collect()
}

/// Scores every pass of a pass set in batches, for each target.
pub fn score_passes(
    passes: &dyn PassSet,
    x: &[f32],
    clean_logits: &[f32],
    targets: &[usize],
    batch_size: usize,
    mut score: impl FnMut(&[f32], usize) -> Vec<f32>,
) -> Vec<TargetScores> {
    let mut per_target: Vec<TargetScores> = targets
        .iter()
        .map(|&t| TargetScores {
            clean_logit: clean_logits[t],
            logits: Vec::with_capacity(passes.len()),
            probs: Vec::with_capacity(passes.len()),
        })
        .collect();
    let classes = clean_logits.len();
    let per = passes.pass_len();
    let mut buf = Vec::new();
    let mut start = 0;
    while start < passes.len() {
        let end = (start + batch_size.max(1)).min(passes.len());
        buf.resize((end - start) * per, 0.0);
        passes.fill_batch(x, start..end, &mut buf);
        let logits = score(&buf, end - start);
        assert_eq!(logits.len(), (end - start) * classes, "scorer returned the wrong shape");
        for row in logits.chunks_exact(classes) {
            for (ts, (z, p)) in per_target.iter_mut().zip(class_scores(row, targets)) {
                ts.logits.push(z);
                ts.probs.push(p);
            }
        }
        start = end;
    }
    per_target
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cam::resize;

    /// A closed-form "model": logits_c = Σ_i weight[c][i] · x[i] over the flattened input,
    /// plus a bias. Smooth and non-trivial, so weights and maps differ between presets.
    struct Linear {
        weights: Vec<Vec<f32>>,
        bias: Vec<f32>,
    }

    impl Linear {
        fn new(classes: usize, inputs: usize) -> Self {
            let weights = (0..classes)
                .map(|c| (0..inputs).map(|i| (((c * 31 + i * 17) % 13) as f32 - 6.0) * 0.05).collect())
                .collect();
            let bias = (0..classes).map(|c| c as f32 * 0.1).collect();
            Self { weights, bias }
        }

        fn logits(&self, x: &[f32]) -> Vec<f32> {
            self.weights
                .iter()
                .zip(&self.bias)
                .map(|(w, b)| w.iter().zip(x).map(|(a, b)| a * b).sum::<f32>() + b)
                .collect()
        }

        fn batch(&self, xs: &[f32], n: usize) -> Vec<f32> {
            xs.chunks_exact(xs.len() / n).flat_map(|x| self.logits(x)).collect()
        }
    }

    fn activations() -> Activations {
        // 4 channels of 2×3: two varying, one all-zero, one constant non-zero.
        #[rustfmt::skip]
        let data = vec![
            0.0, 1.0, 2.0, 3.0, 4.0, 5.0,
            5.0, 0.0, 0.5, 1.0, 0.0, 2.0,
            0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
            6.0, 6.0, 6.0, 6.0, 6.0, 6.0,
        ];
        Activations::new(4, 2, 3, data)
    }

    /// The tests' common setting: a 5×7 input, a 4-class linear model, its clean logits.
    struct Scene {
        hw: (usize, usize),
        x: Vec<f32>,
        model: Linear,
        clean: Vec<f32>,
    }

    fn scene() -> Scene {
        let hw = (5, 7);
        let x = input(hw.0, hw.1);
        let model = Linear::new(4, x.len());
        let clean = model.logits(&x);
        Scene { hw, x, model, clean }
    }

    fn input(h: usize, w: usize) -> Vec<f32> {
        (0..3 * h * w).map(|i| ((i * 7) % 11) as f32 / 5.0 - 1.0).collect()
    }

    fn softmax_ref(v: &[f32]) -> Vec<f32> {
        let m = v.iter().copied().fold(f32::MIN, f32::max);
        let e: Vec<f32> = v.iter().map(|x| (x - m).exp()).collect();
        let s: f32 = e.iter().sum();
        e.iter().map(|x| x / s).collect()
    }

    fn masked(x: &[f32], mask: &[f32]) -> Vec<f32> {
        x.chunks_exact(mask.len()).flat_map(|c| c.iter().zip(mask).map(|(a, m)| a * m)).collect()
    }

    fn plan(method: impl Into<Method>, act: Activations, hw: (usize, usize)) -> MaskPlan {
        MaskPlan::new(&method.into(), act, [3, hw.0, hw.1])
    }

    /// torch-cam's mask: normalise at feature size, then upsample half-pixel.
    fn torchcam_mask(a: &[f32], fhw: (usize, usize), hw: (usize, usize)) -> Vec<f32> {
        let (lo, _) = min_max(a);
        let n: Vec<f32> = a.iter().map(|v| v - lo).collect();
        let (_, hi) = min_max(&n);
        resize(&n.iter().map(|v| v / (hi + 1e-8)).collect::<Vec<_>>(), fhw, hw, Align::HalfPixel)
    }

    /// The torch-cam map from per-channel scores (weights = softmax of the scores).
    fn torchcam_map(act: &Activations, scores: &[f32], hw: (usize, usize)) -> Saliency {
        let w = softmax_ref(scores);
        let fhw = (act.height, act.width);
        let mut cam = vec![0.0f32; fhw.0 * fhw.1];
        for (k, wk) in w.iter().enumerate() {
            cam.iter_mut().zip(act.channel(k)).for_each(|(s, a)| *s += wk * a);
        }
        relu(&mut cam);
        normalize_shift_eps(&mut cam, 1e-8);
        let big = resize(&cam, fhw, hw, Align::HalfPixel);
        Saliency { input: Map::new(hw.1, hw.0, big), feature: Some(Map::new(fhw.1, fhw.0, cam)) }
    }

    /// SS-CAM and IS-CAM straight from the spec: every channel, every sample, no sharing.
    fn reference_smoothed(
        method: Method,
        model: &Linear,
        act: &Activations,
        x: &[f32],
        hw: (usize, usize),
        c: usize,
    ) -> Saliency {
        let fhw = (act.height, act.width);
        let clean = model.logits(x)[c];
        let scores: Vec<f32> = (0..act.channels)
            .map(|k| {
                let m = torchcam_mask(act.channel(k), fhw, hw);
                let zs: Vec<f32> = match method {
                    Method::SsCam { samples, sigma, seed } => (0..samples)
                        .map(|n| {
                            let noise = gaussian_noise(seed, n as u64, sigma, x.len());
                            let input: Vec<f32> = x
                                .iter()
                                .zip(&noise)
                                .enumerate()
                                .map(|(i, (xv, d))| xv * (m[i % m.len()] + d))
                                .collect();
                            model.logits(&input)[c]
                        })
                        .collect(),
                    Method::IsCam { steps } => (1..=steps)
                        .map(|i| {
                            let coeff: f32 = (1..=i).map(|j| j as f32 / steps as f32).sum();
                            let scaled: Vec<f32> = m.iter().map(|v| v * coeff).collect();
                            model.logits(&masked(x, &scaled))[c]
                        })
                        .collect(),
                    _ => unreachable!(),
                };
                zs.iter().sum::<f32>() / zs.len() as f32 - clean
            })
            .collect();
        torchcam_map(act, &scores, hw)
    }

    /// Ablation-CAM straight from the spec: zero each channel, run the head, weigh by the drop.
    fn reference_ablation(head: &Linear, act: &Activations, hw: (usize, usize), c: usize) -> Saliency {
        let y = head.logits(&act.data)[c];
        let n = act.height * act.width;
        let mut cam = vec![0.0f32; n];
        for k in 0..act.channels {
            let mut ablated = act.data.clone();
            ablated[k * n..(k + 1) * n].fill(0.0);
            let w = (y - head.logits(&ablated)[c]) / y;
            cam.iter_mut().zip(act.channel(k)).for_each(|(s, a)| *s += w * a);
        }
        relu(&mut cam);
        normalize_shift_eps(&mut cam, 1e-7);
        let mut big = resize(&cam, (act.height, act.width), hw, Align::HalfPixel);
        normalize_shift_eps(&mut big, 1e-7);
        Saliency { input: Map::new(hw.1, hw.0, big), feature: Some(Map::new(act.width, act.height, cam)) }
    }

    /// Straight from the spec, with none of the savings: every channel upsampled, official
    /// summed at input size, every pgc/torchcam channel given its own pass.
    fn reference(
        preset: Preset,
        model: &Linear,
        act: &Activations,
        x: &[f32],
        hw: (usize, usize),
        c: usize,
    ) -> Saliency {
        let fhw = (act.height, act.width);
        let up = |a: &[f32], align| resize(a, fhw, hw, align);
        let clean = model.logits(x)[c];
        match preset {
            Preset::Official => {
                let mut sum = vec![0.0f32; hw.0 * hw.1];
                for k in 0..act.channels {
                    let u = up(act.channel(k), Align::HalfPixel);
                    let (lo, hi) = min_max(&u);
                    if lo == hi {
                        continue;
                    }
                    let m: Vec<f32> = u.iter().map(|v| (v - lo) / (hi - lo)).collect();
                    let p = softmax_ref(&model.logits(&masked(x, &m)))[c];
                    sum.iter_mut().zip(&u).for_each(|(s, u)| *s += p * u);
                }
                relu(&mut sum);
                normalize_min_max(&mut sum);
                Saliency { input: Map::new(hw.1, hw.0, sum), feature: None }
            }
            Preset::PytorchGradCam | Preset::Torchcam => {
                let scores: Vec<f32> = (0..act.channels)
                    .map(|k| {
                        let m = if preset == Preset::PytorchGradCam {
                            let u = up(act.channel(k), Align::Corners);
                            let (lo, hi) = min_max(&u);
                            u.iter().map(|v| (v - lo) / (hi - lo + 1e-8)).collect::<Vec<_>>()
                        } else {
                            let a = act.channel(k);
                            let (lo, _) = min_max(a);
                            let n: Vec<f32> = a.iter().map(|v| v - lo).collect();
                            let (_, hi) = min_max(&n);
                            up(&n.iter().map(|v| v / (hi + 1e-8)).collect::<Vec<_>>(), Align::HalfPixel)
                        };
                        let z = model.logits(&masked(x, &m))[c];
                        if preset == Preset::Torchcam { z - clean } else { z }
                    })
                    .collect();
                let w = softmax_ref(&scores);
                let mut cam = vec![0.0f32; fhw.0 * fhw.1];
                for (k, wk) in w.iter().enumerate() {
                    cam.iter_mut().zip(act.channel(k)).for_each(|(s, a)| *s += wk * a);
                }
                relu(&mut cam);
                let eps = if preset == Preset::Torchcam { 1e-8 } else { 1e-7 };
                normalize_shift_eps(&mut cam, eps);
                let mut big = resize(&cam, fhw, hw, Align::HalfPixel);
                if preset == Preset::PytorchGradCam {
                    normalize_shift_eps(&mut big, 1e-7);
                }
                Saliency { input: Map::new(hw.1, hw.0, big), feature: Some(Map::new(fhw.1, fhw.0, cam)) }
            }
        }
    }

    fn assert_close(a: &[f32], b: &[f32], tol: f32) {
        assert_eq!(a.len(), b.len());
        let worst = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
        assert!(worst <= tol, "max |Δ| = {worst}");
    }

    #[test]
    fn every_preset_matches_the_unoptimised_spec_for_every_target() {
        let Scene { hw, x, model, clean } = scene();
        for preset in Preset::ALL {
            let plan = plan(preset, activations(), hw);
            for batch in [1, 2, 64] {
                let maps = explain_with(&plan, &x, &clean, &[0, 3], batch, |b, n| model.batch(b, n));
                for (map, class) in maps.iter().zip([0, 3]) {
                    let want = reference(preset, &model, &activations(), &x, hw, class);
                    assert_close(&map.input.data, &want.input.data, 1e-5);
                    assert_eq!(map.feature.is_some(), want.feature.is_some());
                    if let (Some(a), Some(b)) = (&map.feature, &want.feature) {
                        assert_close(&a.data, &b.data, 1e-5);
                    }
                    let (lo, hi) = min_max(&map.input.data);
                    assert!(lo >= 0.0 && hi <= 1.0 + 1e-6, "{preset}: range {lo}..{hi}");
                }
            }
        }
    }

    #[test]
    fn official_skips_constant_channels_and_others_share_one_zero_pass() {
        let official = plan(Preset::Official, activations(), (4, 6));
        assert_eq!(official.passes(), &[MaskSource::Channel(0), MaskSource::Channel(1)]);
        assert_eq!(official.skipped_channels(), 2);
        for preset in [Preset::PytorchGradCam, Preset::Torchcam] {
            let plan = plan(preset, activations(), (4, 6));
            assert_eq!(plan.passes(), &[MaskSource::Channel(0), MaskSource::Channel(1), MaskSource::Zero]);
            assert_eq!(plan.skipped_channels(), 2);
        }
    }

    #[test]
    fn official_mask_is_min_max_of_the_half_pixel_upsample() {
        let act = Activations::new(1, 1, 2, vec![0.0, 4.0]);
        let plan = plan(Preset::Official, act, (1, 4));
        let x = vec![1.0; 3 * 4];
        let mut out = vec![0.0; 12];
        plan.fill_batch(&x, 0..1, &mut out);
        // Upsample gives [0, 1, 3, 4] → mask [0, .25, .75, 1], repeated on 3 channels.
        assert_close(&out, &[0.0, 0.25, 0.75, 1.0].repeat(3), 1e-7);
    }

    #[test]
    fn pytorch_grad_cam_mask_is_corner_aligned() {
        let act = Activations::new(1, 1, 2, vec![0.0, 3.0]);
        let plan = plan(Preset::PytorchGradCam, act, (1, 4));
        let mut out = vec![0.0; 12];
        plan.fill_batch(&[2.0; 12], 0..1, &mut out);
        let third = 2.0 / 3.0;
        assert_close(&out[..4], &[0.0, third, 2.0 * third, 2.0], 1e-6);
    }

    #[test]
    fn zero_pass_feeds_an_all_zero_input() {
        let plan = plan(Preset::Torchcam, activations(), (2, 3));
        let mut out = vec![9.0; 2 * 18];
        plan.fill_batch(&input(2, 3), 1..3, &mut out);
        assert!(out[18..].iter().all(|v| *v == 0.0), "second pass is the shared zero input");
        assert!(out[..18].iter().any(|v| *v != 0.0));
    }

    #[test]
    fn all_constant_activations_give_an_all_zero_official_map() {
        let act = Activations::new(2, 2, 2, vec![0.0; 8]);
        let plan = plan(Preset::Official, act, (4, 4));
        assert!(plan.is_empty());
        let maps = explain_with(&plan, &input(4, 4), &[0.0, 1.0], &[1], 8, |_, _| unreachable!());
        assert!(maps[0].input.data.iter().all(|v| *v == 0.0));
    }

    #[test]
    fn sscam_and_iscam_match_the_spec_without_sharing() {
        let Scene { hw, x, model, clean } = scene();
        for method in [Method::SsCam { samples: 3, sigma: 2.0, seed: 7 }, Method::IsCam { steps: 4 }] {
            let plan = plan(method, activations(), hw);
            let maps = explain_with(&plan, &x, &clean, &[1, 2], 5, |b, n| model.batch(b, n));
            for (map, class) in maps.iter().zip([1, 2]) {
                let want = reference_smoothed(method, &model, &activations(), &x, hw, class);
                assert_close(&map.input.data, &want.input.data, 1e-5);
                assert_close(&map.feature.as_ref().unwrap().data, &want.feature.unwrap().data, 1e-5);
            }
        }
    }

    #[test]
    fn sscam_and_iscam_share_the_constant_channels_passes() {
        // 2 varying channels, 2 constant: SS-CAM needs N passes per varying channel plus N
        // shared (the constant masks are all zero, so X ⊙ (0 + δ_n) is one input per n).
        let ss = plan(Method::SsCam { samples: 3, sigma: 2.0, seed: 0 }, activations(), (4, 6));
        assert_eq!(ss.len(), 3 * 2 + 3);
        let is = plan(Method::IsCam { steps: 10 }, activations(), (4, 6));
        assert_eq!(is.len(), 10 * 2 + 1, "IS-CAM: c_i × 0 is the zero input for every i");
        assert_eq!(is.skipped_channels(), 2);
    }

    /// 7 channels of 2×3 where several repeat another's normalised pattern.
    fn repeating_activations() -> Activations {
        let p = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0];
        let mut data = p.to_vec();
        data.extend(p.iter().map(|v| 3.0 * v + 2.0)); // 1: affine copy of 0
        data.extend([5.0, 0.0, 0.5, 1.0, 0.0, 2.0]); // 2: its own pattern
        data.extend([0.0, 0.0, 6.0, 0.0, 0.0, 0.0]); // 3: one saturated cell
        data.extend([0.0, 0.0, 0.5, 0.0, 0.0, 0.0]); // 4: the same cell, weaker
        data.extend([6.0; 6]); // 5: constant
        data.extend(p.iter().map(|v| v / 1024.0)); // 6: copy of 0 with a range under 1e-2
        Activations::new(7, 2, 3, data)
    }

    #[test]
    fn channels_with_the_same_mask_share_passes_and_the_maps_do_not_change() {
        let Scene { hw, x, model, clean } = scene();
        // (method, passes, channels sharing): official shares 1, 4 and 6; pytorch_grad_cam
        // not 6 (its 1e-8 matters at that range). torch-cam adds its 1e-8 at feature size:
        // it vanishes in f32 next to ranges of 5 and 15 (1 and 4 share), not next to 0.005
        // (6 does not).
        let cases: [(Method, usize, usize); 5] = [
            (Preset::Official.into(), 3, 3),
            (Preset::PytorchGradCam.into(), 4 + 1, 2),
            (Preset::Torchcam.into(), 4 + 1, 2),
            (Method::SsCam { samples: 2, sigma: 2.0, seed: 3 }, 2 * 4 + 2, 2),
            (Method::IsCam { steps: 3 }, 3 * 4 + 1, 2),
        ];
        for (method, passes, shared) in cases {
            let plan = plan(method, repeating_activations(), hw);
            assert_eq!((plan.len(), plan.shared_mask_channels()), (passes, shared), "{method:?}");
            assert_eq!(plan.skipped_channels(), 1, "{method:?}: the constant channel");
            let maps = explain_with(&plan, &x, &clean, &[0, 2], 3, |b, n| model.batch(b, n));
            for (map, class) in maps.iter().zip([0, 2]) {
                let want = match method {
                    Method::ScoreCam { preset, .. } => {
                        reference(preset, &model, &repeating_activations(), &x, hw, class)
                    }
                    _ => reference_smoothed(method, &model, &repeating_activations(), &x, hw, class),
                };
                assert_close(&map.input.data, &want.input.data, 1e-5);
            }
        }
        // Ablating different channels never gives the same input.
        let ablation = plan(Method::AblationCam, repeating_activations(), hw);
        assert_eq!((ablation.len(), ablation.shared_mask_channels()), (7, 0), "no channel is all zero");
    }

    #[test]
    fn iscam_coefficients_are_the_cumulative_sums() {
        let c: Vec<f32> = (1..=10).map(|i| iscam_coefficient(i, 10)).collect();
        let want = [0.1, 0.3, 0.6, 1.0, 1.5, 2.1, 2.8, 3.6, 4.5, 5.5];
        assert_close(&c, &want, 1e-6);
    }

    #[test]
    fn noise_is_reproducible_and_has_the_asked_spread() {
        let a = gaussian_noise(3, 1, 2.0, 100_001);
        assert_eq!(a, gaussian_noise(3, 1, 2.0, 100_001));
        assert_ne!(a[..10], gaussian_noise(3, 2, 2.0, 10)[..]);
        let mean = a.iter().map(|&v| f64::from(v)).sum::<f64>() / a.len() as f64;
        let var = a.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / a.len() as f64;
        assert!(mean.abs() < 0.03, "mean {mean}");
        assert!((var.sqrt() - 2.0).abs() < 0.03, "std {}", var.sqrt());
    }

    #[test]
    fn ablation_runs_the_head_on_activations_and_matches_the_spec() {
        let act = activations();
        let head = Linear::new(3, act.data.len());
        let clean = head.logits(&act.data);
        let plan = plan(Method::AblationCam, act.clone(), (5, 7));
        assert_eq!(plan.graph(), Graph::Head);
        assert_eq!(plan.pass_len(), act.data.len());
        // The all-zero channel cannot change the head's output: no pass. The constant 6s can.
        assert_eq!(plan.passes(), &[MaskSource::Ablate(0), MaskSource::Ablate(1), MaskSource::Ablate(3)]);
        let maps = explain_with(&plan, &[], &clean, &[0, 2], 2, |b, n| head.batch(b, n));
        for (map, class) in maps.iter().zip([0, 2]) {
            let want = reference_ablation(&head, &act, (5, 7), class);
            assert_close(&map.input.data, &want.input.data, 1e-5);
        }
    }

    #[test]
    fn max_channels_keeps_the_channels_with_the_largest_spread() {
        let Scene { hw, x, model, clean } = scene();
        // By hand: channel 1 has std 1.740 (mean 17/12), channel 0 (the 0..5 ramp) 1.708;
        // the constant channels 0, so index order breaks their tie.
        assert_eq!(top_channels_by_std(&activations(), 1), vec![1]);
        assert_eq!(top_channels_by_std(&activations(), 3), vec![0, 1, 2]);
        let fast = Method::ScoreCam { preset: Preset::Official, max_channels: Some(1) };
        let p = plan(fast, activations(), hw);
        assert_eq!(p.passes(), &[MaskSource::Channel(1)]);
        assert_eq!(p.skipped_channels(), 3);
        // With one channel the official map is that channel's upsampled, normalised map.
        let map = &explain_with(&p, &x, &clean, &[0], 4, |b, n| model.batch(b, n))[0];
        let mut want = resize(activations().channel(1), (2, 3), hw, Align::HalfPixel);
        normalize_min_max(&mut want);
        assert_close(&map.input.data, &want, 1e-6);
        // Keeping every channel is exact Score-CAM.
        for preset in Preset::ALL {
            let all = Method::ScoreCam { preset, max_channels: Some(4) };
            let a = &explain_with(&plan(all, activations(), hw), &x, &clean, &[3], 4, |b, n| model.batch(b, n))[0];
            let b = &explain_with(&plan(preset, activations(), hw), &x, &clean, &[3], 4, |b, n| model.batch(b, n))[0];
            assert_close(&a.input.data, &b.input.data, 1e-7);
        }
    }

    #[test]
    fn class_scores_are_softmax_probabilities() {
        let s = class_scores(&[1.0, 2.0, 3.0], &[2, 0]);
        let e: f32 = [1.0f32, 2.0, 3.0].iter().map(|v| v.exp()).sum();
        assert!((s[0].1 - 3.0f32.exp() / e).abs() < 1e-6);
        assert!((s[1].1 - 1.0f32.exp() / e).abs() < 1e-6);
        assert_eq!(s[0].0, 3.0);
    }
}
