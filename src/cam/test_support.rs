//! Shared by the unit tests of `cam`: a closed-form model, small activations and
//! straight, unoptimised transcriptions of each method's spec to compare against.

use super::combine::relu;
use super::{
    Activations, Align, Map, MaskPlan, Method, Preset, Saliency, gaussian_noise, min_max, normalize_min_max,
    normalize_shift_eps, resize,
};

/// A closed-form "model": logits_c = Σ_i weight[c][i] · x[i] over the flattened input,
/// plus a bias. Smooth and non-trivial, so weights and maps differ between presets.
pub(crate) struct Linear {
    weights: Vec<Vec<f32>>,
    bias: Vec<f32>,
}

impl Linear {
    pub(crate) fn new(classes: usize, inputs: usize) -> Self {
        let weights = (0..classes)
            .map(|c| (0..inputs).map(|i| (((c * 31 + i * 17) % 13) as f32 - 6.0) * 0.05).collect())
            .collect();
        let bias = (0..classes).map(|c| c as f32 * 0.1).collect();
        Self { weights, bias }
    }

    pub(crate) fn logits(&self, x: &[f32]) -> Vec<f32> {
        self.weights.iter().zip(&self.bias).map(|(w, b)| w.iter().zip(x).map(|(a, b)| a * b).sum::<f32>() + b).collect()
    }

    pub(crate) fn batch(&self, xs: &[f32], n: usize) -> Vec<f32> {
        xs.chunks_exact(xs.len() / n).flat_map(|x| self.logits(x)).collect()
    }
}

pub(crate) fn activations() -> Activations {
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
pub(crate) struct Scene {
    pub hw: (usize, usize),
    pub x: Vec<f32>,
    pub model: Linear,
    pub clean: Vec<f32>,
}

pub(crate) fn scene() -> Scene {
    let hw = (5, 7);
    let x = input(hw.0, hw.1);
    let model = Linear::new(4, x.len());
    let clean = model.logits(&x);
    Scene { hw, x, model, clean }
}

pub(crate) fn input(h: usize, w: usize) -> Vec<f32> {
    (0..3 * h * w).map(|i| ((i * 7) % 11) as f32 / 5.0 - 1.0).collect()
}

pub(crate) fn softmax_ref(v: &[f32]) -> Vec<f32> {
    let m = v.iter().copied().fold(f32::MIN, f32::max);
    let e: Vec<f32> = v.iter().map(|x| (x - m).exp()).collect();
    let s: f32 = e.iter().sum();
    e.iter().map(|x| x / s).collect()
}

pub(crate) fn masked(x: &[f32], mask: &[f32]) -> Vec<f32> {
    x.chunks_exact(mask.len()).flat_map(|c| c.iter().zip(mask).map(|(a, m)| a * m)).collect()
}

pub(crate) fn plan(method: impl Into<Method>, act: Activations, hw: (usize, usize)) -> MaskPlan {
    MaskPlan::new(&method.into(), act, [3, hw.0, hw.1])
}

/// torch-cam's mask: normalise at feature size, then upsample half-pixel.
pub(crate) fn torchcam_mask(a: &[f32], fhw: (usize, usize), hw: (usize, usize)) -> Vec<f32> {
    let (lo, _) = min_max(a);
    let n: Vec<f32> = a.iter().map(|v| v - lo).collect();
    let (_, hi) = min_max(&n);
    resize(&n.iter().map(|v| v / (hi + 1e-8)).collect::<Vec<_>>(), fhw, hw, Align::HalfPixel)
}

/// The torch-cam map from per-channel scores (weights = softmax of the scores).
pub(crate) fn torchcam_map(act: &Activations, scores: &[f32], hw: (usize, usize)) -> Saliency {
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
pub(crate) fn reference_smoothed(
    method: Smoothed,
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
                Smoothed::Ss { samples, sigma, seed } => (0..samples)
                    .map(|n| {
                        let noise = gaussian_noise(seed, n as u64, sigma, x.len());
                        let input: Vec<f32> =
                            x.iter().zip(&noise).enumerate().map(|(i, (xv, d))| xv * (m[i % m.len()] + d)).collect();
                        model.logits(&input)[c]
                    })
                    .collect(),
                Smoothed::Is { steps } => (1..=steps)
                    .map(|i| {
                        let coeff: f32 = (1..=i).map(|j| j as f32 / steps as f32).sum();
                        let scaled: Vec<f32> = m.iter().map(|v| v * coeff).collect();
                        model.logits(&masked(x, &scaled))[c]
                    })
                    .collect(),
            };
            zs.iter().sum::<f32>() / zs.len() as f32 - clean
        })
        .collect();
    torchcam_map(act, &scores, hw)
}

/// Ablation-CAM straight from the spec: zero each channel, run the head, weigh by the drop.
pub(crate) fn reference_ablation(head: &Linear, act: &Activations, hw: (usize, usize), c: usize) -> Saliency {
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
pub(crate) fn reference(
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
    // `official`'s weights (shared by `pytorch_cnn_visualizations`): each non-constant
    // channel's half-pixel min-max mask, scored by the masked input's probability.
    let official_weights = || {
        (0..act.channels).filter_map(|k| {
            let u = up(act.channel(k), Align::HalfPixel);
            let (lo, hi) = min_max(&u);
            if lo == hi {
                return None;
            }
            let m: Vec<f32> = u.iter().map(|v| (v - lo) / (hi - lo)).collect();
            Some((k, softmax_ref(&model.logits(&masked(x, &m)))[c]))
        })
    };
    match preset {
        Preset::Official => {
            let mut sum = vec![0.0f32; hw.0 * hw.1];
            for (k, p) in official_weights() {
                let u = up(act.channel(k), Align::HalfPixel);
                sum.iter_mut().zip(&u).for_each(|(s, u)| *s += p * u);
            }
            relu(&mut sum);
            normalize_min_max(&mut sum);
            Saliency { input: Map::new(hw.1, hw.0, sum), feature: None }
        }
        Preset::PytorchCnnVisualizations => {
            let mut cam = vec![1.0f32; fhw.0 * fhw.1];
            for (k, p) in official_weights() {
                cam.iter_mut().zip(act.channel(k)).for_each(|(s, a)| *s += p * a);
            }
            relu(&mut cam);
            normalize_min_max(&mut cam);
            let bytes: Vec<u8> = cam.iter().map(|v| (v * 255.0).floor() as u8).collect();
            let big = crate::resample::pillow_lanczos_gray(&bytes, (fhw.1, fhw.0), (hw.1, hw.0));
            let unit = |b: &[u8]| b.iter().map(|&v| f32::from(v) / 255.0).collect::<Vec<_>>();
            Saliency { input: Map::new(hw.1, hw.0, unit(&big)), feature: Some(Map::new(fhw.1, fhw.0, unit(&bytes))) }
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

pub(crate) fn assert_close(a: &[f32], b: &[f32], tol: f32) {
    assert_eq!(a.len(), b.len());
    let worst = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
    assert!(worst <= tol, "max |Δ| = {worst}");
}

/// 7 channels of 2×3 where several repeat another's normalised pattern.
pub(crate) fn repeating_activations() -> Activations {
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

/// SS-CAM or IS-CAM with its parameters, for the references above.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Smoothed {
    Ss { samples: usize, sigma: f32, seed: u64 },
    Is { steps: usize },
}

impl From<Smoothed> for Method {
    fn from(m: Smoothed) -> Method {
        match m {
            Smoothed::Ss { samples, sigma, seed } => sscam(samples, sigma, seed),
            Smoothed::Is { steps } => iscam(steps),
        }
    }
}

pub(crate) fn sscam(samples: usize, sigma: f32, seed: u64) -> Method {
    let (samples, sigma, seed) = (samples.to_string(), sigma.to_string(), seed.to_string());
    Method::parse(Some("sscam"), &[("samples", &samples), ("sigma", &sigma), ("seed", &seed)]).unwrap()
}

pub(crate) fn iscam(steps: usize) -> Method {
    Method::parse(Some("iscam"), &[("steps", &steps.to_string())]).unwrap()
}

pub(crate) fn ablationcam() -> Method {
    Method::parse(Some("ablationcam"), &[]).unwrap()
}

/// Faster Score-CAM: `preset` on the `n` channels with the largest spread.
pub(crate) fn faster(preset: Preset, n: usize) -> Method {
    Method::parse(Some("scorecam"), &[("preset", preset.as_str()), ("max_channels", &n.to_string())]).unwrap()
}
