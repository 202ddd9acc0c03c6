//! Score-CAM: the mask plan, batch-at-a-time masked inputs, and the three presets' weights
//! and combination rules.

use std::ops::Range;

use super::{Activations, Align, Map, Preset, Resampler, Saliency, min_max, normalize_min_max, normalize_shift_eps};

/// What one masked pass feeds the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaskSource {
    /// The input times channel k's normalised, upsampled activation.
    Channel(usize),
    /// The all-zero input that every constant channel's all-zero mask produces
    /// (`pytorch_grad_cam` and `torchcam` weigh those channels; one pass serves them all).
    Zero,
}

/// The masked passes one explanation needs, derived from the clean pass's activations.
///
/// The plan does not depend on the target class: one set of passes serves every target.
#[derive(Clone, Debug)]
pub struct MaskPlan {
    preset: Preset,
    activations: Activations,
    input_hw: (usize, usize),
    passes: Vec<MaskSource>,
    /// For each channel, the pass that scores it; `None` for channels skipped outright.
    channel_pass: Vec<Option<usize>>,
    skipped: usize,
    up: Resampler,
}

impl MaskPlan {
    pub fn new(preset: Preset, activations: Activations, input_hw: (usize, usize)) -> Self {
        let k = activations.channels;
        let mut passes = Vec::with_capacity(k + 1);
        let mut channel_pass = vec![None; k];
        let mut constant = Vec::new();
        for (ch, slot) in channel_pass.iter_mut().enumerate() {
            if activations.is_constant(ch) {
                constant.push(ch);
            } else {
                *slot = Some(passes.len());
                passes.push(MaskSource::Channel(ch));
            }
        }
        // `official` drops constant channels; the others give them the all-zero input's
        // score, which is the same for all of them, so one pass is enough.
        if preset != Preset::Official && !constant.is_empty() {
            let zero = passes.len();
            passes.push(MaskSource::Zero);
            for ch in &constant {
                channel_pass[*ch] = Some(zero);
            }
        }
        let align = match preset {
            Preset::PytorchGradCam => Align::Corners,
            Preset::Official | Preset::Torchcam => Align::HalfPixel,
        };
        let up = Resampler::new((activations.height, activations.width), input_hw, align);
        Self { preset, activations, input_hw, passes, channel_pass, skipped: constant.len(), up }
    }

    pub fn preset(&self) -> Preset {
        self.preset
    }

    pub fn activations(&self) -> &Activations {
        &self.activations
    }

    /// Number of masked passes.
    pub fn len(&self) -> usize {
        self.passes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.passes.is_empty()
    }

    pub fn passes(&self) -> &[MaskSource] {
        &self.passes
    }

    /// Constant channels: skipped (`official`) or served by the shared zero pass.
    pub fn skipped_channels(&self) -> usize {
        self.skipped
    }

    /// Writes the masked inputs for `passes` into `out` (len = passes × x.len()).
    /// `x` is one preprocessed image, C×H×W.
    pub fn fill_batch(&self, x: &[f32], passes: Range<usize>, out: &mut [f32]) {
        let hw = self.input_hw.0 * self.input_hw.1;
        assert_eq!(x.len() % hw, 0, "input does not match the plan's size");
        assert_eq!(out.len(), passes.len() * x.len(), "output buffer does not match the batch");
        let mut mask = vec![0.0f32; hw];
        for (dst, source) in out.chunks_exact_mut(x.len()).zip(&self.passes[passes]) {
            match *source {
                MaskSource::Zero => dst.fill(0.0),
                MaskSource::Channel(k) => {
                    self.mask_into(k, &mut mask);
                    for (dst_c, x_c) in dst.chunks_exact_mut(hw).zip(x.chunks_exact(hw)) {
                        for ((d, xv), m) in dst_c.iter_mut().zip(x_c).zip(&mask) {
                            *d = xv * m;
                        }
                    }
                }
            }
        }
    }

    /// Channel k's mask at input resolution, by the preset's rule.
    fn mask_into(&self, k: usize, mask: &mut [f32]) {
        let a = self.activations.channel(k);
        match self.preset {
            Preset::Official | Preset::PytorchGradCam => {
                self.up.apply_into(a, mask);
                let (lo, hi) = min_max(mask);
                let denom = match self.preset {
                    Preset::Official => hi - lo,
                    _ => hi - lo + 1e-8,
                };
                if denom > 0.0 {
                    mask.iter_mut().for_each(|m| *m = (*m - lo) / denom);
                } else {
                    mask.fill(0.0);
                }
            }
            Preset::Torchcam => {
                let mut n = a.to_vec();
                normalize_shift_eps(&mut n, 1e-8);
                self.up.apply_into(&n, mask);
            }
        }
    }
}

/// One target class's scores over an explanation's passes.
#[derive(Clone, Debug, PartialEq)]
pub struct TargetScores {
    /// The class logit on the clean input.
    pub clean_logit: f32,
    /// The class logit on each masked pass.
    pub logits: Vec<f32>,
    /// The class softmax probability on each masked pass.
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

/// Turns one target's pass scores into its saliency map, by the plan's preset.
pub fn combine(plan: &MaskPlan, scores: &TargetScores) -> Saliency {
    assert_eq!(scores.logits.len(), plan.len(), "one score per pass");
    let act = &plan.activations;
    let (h, w) = plan.input_hw;
    let feature_hw = (act.height, act.width);
    match plan.preset {
        Preset::Official => {
            // Σ_k w_k Up(A_k) = Up(Σ_k w_k A_k): bilinear upsampling is linear, so the sum
            // is taken at feature size and upsampled once; ReLU comes after, as in the code.
            let weights = plan.channel_pass.iter().enumerate().filter_map(|(k, p)| p.map(|p| (k, scores.probs[p])));
            let sum = weighted_sum(act, weights);
            let mut map = Resampler::new(feature_hw, (h, w), Align::HalfPixel).apply(&sum);
            relu(&mut map);
            normalize_min_max(&mut map);
            Saliency { input: Map::new(w, h, map), feature: None }
        }
        Preset::PytorchGradCam | Preset::Torchcam => {
            let raw: Vec<f32> = plan
                .channel_pass
                .iter()
                .map(|p| {
                    let p = p.expect("every channel has a pass in this preset");
                    match plan.preset {
                        Preset::Torchcam => scores.logits[p] - scores.clean_logit,
                        _ => scores.logits[p],
                    }
                })
                .collect();
            let weights = softmax(&raw);
            let mut cam = weighted_sum(act, weights.into_iter().enumerate());
            relu(&mut cam);
            let eps = if plan.preset == Preset::Torchcam { 1e-8 } else { 1e-7 };
            normalize_shift_eps(&mut cam, eps);
            let feature = Map::new(act.width, act.height, cam);
            let mut input = feature.resized(w, h);
            if plan.preset == Preset::PytorchGradCam {
                // pytorch-grad-cam normalises once more after cv2.resize.
                normalize_shift_eps(&mut input.data, 1e-7);
            }
            Saliency { input, feature: Some(feature) }
        }
    }
}

/// Runs a whole explanation in-line: `score(batch, n)` returns n rows of logits for n
/// stacked inputs. Returns one map per target, in order, and the number of masked passes.
pub fn explain_with(
    plan: &MaskPlan,
    x: &[f32],
    clean_logits: &[f32],
    targets: &[usize],
    batch_size: usize,
    mut score: impl FnMut(&[f32], usize) -> Vec<f32>,
) -> Vec<Saliency> {
    let mut per_target: Vec<TargetScores> = targets
        .iter()
        .map(|&t| TargetScores {
            clean_logit: clean_logits[t],
            logits: Vec::with_capacity(plan.len()),
            probs: Vec::with_capacity(plan.len()),
        })
        .collect();
    let classes = clean_logits.len();
    let mut buf = Vec::new();
    let mut start = 0;
    while start < plan.len() {
        let end = (start + batch_size.max(1)).min(plan.len());
        buf.resize((end - start) * x.len(), 0.0);
        plan.fill_batch(x, start..end, &mut buf);
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
    per_target.iter().map(|ts| combine(plan, ts)).collect()
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
        let hw = (5, 7);
        let x = input(hw.0, hw.1);
        let model = Linear::new(4, x.len());
        let clean = model.logits(&x);
        for preset in Preset::ALL {
            let plan = MaskPlan::new(preset, activations(), hw);
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
        let official = MaskPlan::new(Preset::Official, activations(), (4, 6));
        assert_eq!(official.passes(), &[MaskSource::Channel(0), MaskSource::Channel(1)]);
        assert_eq!(official.skipped_channels(), 2);
        for preset in [Preset::PytorchGradCam, Preset::Torchcam] {
            let plan = MaskPlan::new(preset, activations(), (4, 6));
            assert_eq!(plan.passes(), &[MaskSource::Channel(0), MaskSource::Channel(1), MaskSource::Zero]);
            assert_eq!(plan.skipped_channels(), 2);
        }
    }

    #[test]
    fn official_mask_is_min_max_of_the_half_pixel_upsample() {
        let act = Activations::new(1, 1, 2, vec![0.0, 4.0]);
        let plan = MaskPlan::new(Preset::Official, act, (1, 4));
        let x = vec![1.0; 3 * 4];
        let mut out = vec![0.0; 12];
        plan.fill_batch(&x, 0..1, &mut out);
        // Upsample gives [0, 1, 3, 4] → mask [0, .25, .75, 1], repeated on 3 channels.
        assert_close(&out, &[0.0, 0.25, 0.75, 1.0].repeat(3), 1e-7);
    }

    #[test]
    fn pytorch_grad_cam_mask_is_corner_aligned() {
        let act = Activations::new(1, 1, 2, vec![0.0, 3.0]);
        let plan = MaskPlan::new(Preset::PytorchGradCam, act, (1, 4));
        let mut out = vec![0.0; 12];
        plan.fill_batch(&[2.0; 12], 0..1, &mut out);
        let third = 2.0 / 3.0;
        assert_close(&out[..4], &[0.0, third, 2.0 * third, 2.0], 1e-6);
    }

    #[test]
    fn zero_pass_feeds_an_all_zero_input() {
        let plan = MaskPlan::new(Preset::Torchcam, activations(), (2, 3));
        let mut out = vec![9.0; 2 * 18];
        plan.fill_batch(&input(2, 3), 1..3, &mut out);
        assert!(out[18..].iter().all(|v| *v == 0.0), "second pass is the shared zero input");
        assert!(out[..18].iter().any(|v| *v != 0.0));
    }

    #[test]
    fn all_constant_activations_give_an_all_zero_official_map() {
        let act = Activations::new(2, 2, 2, vec![0.0; 8]);
        let plan = MaskPlan::new(Preset::Official, act, (4, 4));
        assert!(plan.is_empty());
        let maps = explain_with(&plan, &input(4, 4), &[0.0, 1.0], &[1], 8, |_, _| unreachable!());
        assert!(maps[0].input.data.iter().all(|v| *v == 0.0));
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
