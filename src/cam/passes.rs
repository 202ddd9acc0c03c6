//! Building a plan's pass inputs a batch at a time: the masks by each convention, and the
//! method's rule for turning (X, a channel's mask or the activations) into one input.

use std::sync::OnceLock;

use super::{Activations, Align, Preset, Resampler, min_max, normalize_shift_eps};

/// One pass of a plan: step `step` of channel `channel`'s passes, or (`None`) of the passes
/// every degenerate channel shares (their masks are all zero).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Pass {
    pub channel: Option<usize>,
    pub step: usize,
}

impl Pass {
    /// The single pass that all degenerate channels share.
    #[cfg(test)]
    pub(crate) const ZERO: Pass = Pass { channel: None, step: 0 };

    #[cfg(test)]
    pub(crate) fn channel(k: usize) -> Pass {
        Pass { channel: Some(k), step: 0 }
    }
}

/// How a convention turns a channel into its mask at input resolution.
pub(crate) struct MaskRule {
    preset: Preset,
    up: Resampler,
}

/// torch-cam's channel normalisation at feature size, before its mask is upsampled.
pub(super) fn torchcam_normalised(a: &[f32]) -> Vec<f32> {
    let mut n = a.to_vec();
    normalize_shift_eps(&mut n, 1e-8);
    n
}

impl MaskRule {
    pub(super) fn new(preset: Preset, feature_hw: (usize, usize), input_hw: (usize, usize)) -> Self {
        let align = if preset == Preset::PytorchGradCam { Align::Corners } else { Align::HalfPixel };
        Self { preset, up: Resampler::new(feature_hw, input_hw, align) }
    }

    /// The mask of channel activations `a`, by the convention's rule.
    fn mask_into(&self, a: &[f32], mask: &mut [f32]) {
        match self.preset {
            Preset::Official | Preset::PytorchGradCam | Preset::PytorchCnnVisualizations => {
                self.up.apply_into(a, mask);
                let (lo, hi) = min_max(mask);
                let denom = if self.preset.official_masks() { hi - lo } else { hi - lo + 1e-8 };
                if denom > 0.0 {
                    mask.iter_mut().for_each(|m| *m = (*m - lo) / denom);
                } else {
                    mask.fill(0.0);
                }
            }
            Preset::Torchcam => self.up.apply_into(&torchcam_normalised(a), mask),
        }
    }
}

/// What a method builds one pass's input from.
pub(crate) struct PassSource<'a> {
    /// The preprocessed image, C×H×W.
    pub x: &'a [f32],
    /// The target layer's activations.
    pub activations: &'a Activations,
    /// The model's input size (H, W).
    input_hw: (usize, usize),
    masks: &'a MaskRule,
    memo: &'a [OnceLock<Vec<f32>>],
}

impl<'a> PassSource<'a> {
    pub(super) fn new(
        x: &'a [f32],
        activations: &'a Activations,
        input_hw: (usize, usize),
        masks: &'a MaskRule,
        memo: &'a [OnceLock<Vec<f32>>],
    ) -> Self {
        Self { x, activations, input_hw, masks, memo }
    }

    /// The model's input size (H, W).
    pub fn input_hw(&self) -> (usize, usize) {
        self.input_hw
    }

    /// Channel k's mask at input resolution (H×W), by the method's convention.
    pub fn mask_into(&self, k: usize, mask: &mut [f32]) {
        self.masks.mask_into(self.activations.channel(k), mask);
    }

    /// The plan's buffer for pass step `step`, built by `init` on first use.
    pub fn memo(&self, step: usize, init: impl FnOnce() -> Vec<f32>) -> &'a [f32] {
        self.memo[step].get_or_init(init)
    }
}

/// X ⊙ mask, the H×W mask applied to every colour channel.
pub(crate) fn times_mask(x: &[f32], mask: &[f32], dst: &mut [f32]) {
    let hw = mask.len();
    for (dst_c, x_c) in dst.chunks_exact_mut(hw).zip(x.chunks_exact(hw)) {
        for ((d, xv), m) in dst_c.iter_mut().zip(x_c).zip(mask) {
            *d = xv * m;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cam::PassSet;
    use crate::cam::test_support::{activations, assert_close, input, plan};

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
}
