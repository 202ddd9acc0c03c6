//! The mask plan: which passes one explanation needs, derived from the clean pass's
//! activations by asking the method what its units are (the target layer's channels for
//! most methods; Recipro-CAM's cells, RISE's random masks), which take part, which are
//! degenerate and how many passes each needs, and sharing the passes of channels with the
//! same mask.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::OnceLock;

use std::sync::Arc;

use super::linear_head::LinearHead;
use super::pass_set::{Graph, PassSet};
use super::passes::{MaskRule, Pass, PassSource, torchcam_normalised};
use super::{Activations, Method, Preset, min_max};

/// The passes one explanation needs, derived from the clean pass's activations.
///
/// The plan does not depend on the target class: one set of passes serves every target.
pub struct MaskPlan {
    pub(super) method: Method,
    pub(super) activations: Activations,
    pub(super) input_chw: [usize; 3],
    pub(super) passes: Vec<Pass>,
    /// For each unit (channel, cell or mask), the passes whose mean score weighs it; `None`
    /// for units that contribute nothing (skipped degenerate channels, channels the method
    /// left out).
    unit_passes: Vec<Option<Range<usize>>>,
    skipped: usize,
    /// Channels whose mask equals an earlier channel's: they reuse its passes.
    shared_masks: usize,
    masks: MaskRule,
    /// One lazily built input-sized buffer per pass step, for what every channel's pass
    /// at that step shares (SS-CAM's noise sample): drawn on first use by whichever
    /// thread needs it, and dropped with the plan.
    memo: Vec<OnceLock<Vec<f32>>>,
    /// Each unit's share of the explanation (a channel's activation mass Σ|A_k|): what a
    /// partial run's coverage reports the share of.
    mass: Vec<f64>,
    /// The head's closed form, for the methods that need it.
    pub(super) head: Option<Arc<LinearHead>>,
}

/// How much of a plan a partial run covered.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct Coverage {
    pub passes_done: usize,
    pub passes_total: usize,
    /// Weighed channels whose passes all ran (a channel counts only when complete).
    pub channels_done: usize,
    pub channels_total: usize,
    /// The done channels' share of the total activation mass Σ|A_k| (a proxy for their
    /// share of the map): 1 when complete.
    pub estimated_mass: f64,
}

impl Coverage {
    pub fn is_complete(&self) -> bool {
        self.passes_done == self.passes_total
    }
}

/// A channel's activation mass Σ|A_k|.
pub(crate) fn mass(a: &[f32]) -> f64 {
    a.iter().map(|v| f64::from(v.abs())).sum()
}

/// A channel's spatial standard deviation: the order its passes run in. Measured against
/// activation mass as the order of a partial plan (BENCHMARKS.md, 50 photos): at 5–25 %
/// of the passes the spread order's maps were the closer to the exact map (Faster
/// Score-CAM ranks channels the same way).
pub(crate) fn spread(a: &[f32]) -> f64 {
    let n = a.len().max(1) as f64;
    let mean = a.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    (a.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / n).sqrt()
}

impl std::fmt::Debug for MaskPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MaskPlan").field("method", &self.method).field("passes", &self.passes.len()).finish()
    }
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
/// - `torchcam` (and SS-CAM, IS-CAM): the mask is Up(the normalised channel), so the
///   normalised channel itself is the key and equal keys give bit-identical masks.
fn mask_key(preset: Preset, a: &[f32]) -> Option<Vec<u32>> {
    let normalised = match preset {
        // Exactly what `MaskRule::mask_into` upsamples, so equal keys give bit-equal masks.
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

/// Appends `sources` to `passes` and returns their range.
fn push(passes: &mut Vec<Pass>, sources: impl Iterator<Item = Pass>) -> Range<usize> {
    let start = passes.len();
    passes.extend(sources);
    start..passes.len()
}

impl MaskPlan {
    pub fn new(method: &Method, activations: Activations, input_chw: [usize; 3]) -> Self {
        let cam = method.cam();
        let preset = method.preset();
        let k = cam.units(&activations);
        let mut passes = Vec::new();
        let mut unit_passes: Vec<Option<Range<usize>>> = vec![None; k];
        let included: Vec<bool> = match cam.select_channels(&activations) {
            Some(selected) => {
                let mut keep = vec![false; k];
                selected.into_iter().for_each(|c| keep[c] = true);
                keep
            }
            None => vec![true; k],
        };
        let per_unit = cam.passes_per_unit();
        // Channels whose passes are shared or skipped (see `CamMethod::degenerate_passes`).
        let mut degenerate = Vec::new();
        // Passes already planned per distinct mask (see `mask_key`).
        let mut by_mask: HashMap<Vec<u32>, Range<usize>> = HashMap::new();
        let mut shared_masks = 0;
        let mass: Vec<f64> = (0..k).map(|u| cam.unit_mass(&activations, u)).collect();
        let spread: Vec<f64> = (0..k).map(|u| cam.unit_priority(&activations, u)).collect();
        // Largest priority first (a channel's spatial spread; ties by index), so a prefix of
        // the passes is a good partial plan of its length; a complete map does not depend
        // on the order.
        let mut order: Vec<usize> = (0..k).filter(|&c| included[c]).collect();
        order.sort_by(|&a, &b| spread[b].total_cmp(&spread[a]).then(a.cmp(&b)));
        for ch in order {
            if cam.is_degenerate(&activations, ch) {
                degenerate.push(ch);
                continue;
            }
            let key = if cam.shares_masks() { mask_key(preset, activations.channel(ch)) } else { None };
            if let Some(range) = key.as_ref().and_then(|key| by_mask.get(key)) {
                unit_passes[ch] = Some(range.clone());
                shared_masks += 1;
                continue;
            }
            let range = push(&mut passes, (0..per_unit).map(|step| Pass { channel: Some(ch), step }));
            if let Some(key) = key {
                by_mask.insert(key, range.clone());
            }
            unit_passes[ch] = Some(range);
        }
        let shared_range = match cam.degenerate_passes() {
            Some(n) if !degenerate.is_empty() => {
                Some(push(&mut passes, (0..n).map(|step| Pass { channel: None, step })))
            }
            _ => None,
        };
        for ch in &degenerate {
            unit_passes[*ch] = shared_range.clone();
        }
        let skipped = degenerate.len() + included.iter().filter(|i| !**i).count();
        let [_, h, w] = input_chw;
        let masks = MaskRule::new(preset, (activations.height, activations.width), (h, w));
        let steps = passes.iter().map(|p| p.step + 1).max().unwrap_or(0);
        let memo = (0..steps).map(|_| OnceLock::new()).collect();
        Self {
            method: method.clone(),
            activations,
            input_chw,
            passes,
            unit_passes,
            skipped,
            shared_masks,
            masks,
            memo,
            mass,
            head: None,
        }
    }

    /// The plan with the head's closed form, which the gradient-family methods weigh by.
    pub fn with_linear_head(mut self, head: Option<Arc<LinearHead>>) -> Self {
        self.head = head;
        self
    }

    pub fn method(&self) -> &Method {
        &self.method
    }

    pub fn preset(&self) -> Preset {
        self.method.preset()
    }

    pub fn activations(&self) -> &Activations {
        &self.activations
    }

    /// The passes, in order.
    #[cfg(test)]
    pub(crate) fn passes(&self) -> &[Pass] {
        &self.passes
    }

    /// Channels without a pass of their own: degenerate (skipped or sharing one) or left
    /// out by the method (`max_channels`).
    pub fn skipped_channels(&self) -> usize {
        self.skipped
    }

    /// Channels that reuse the passes of an earlier channel with the same mask.
    pub fn shared_mask_channels(&self) -> usize {
        self.shared_masks
    }

    /// (unit, its passes) for every unit (channel, cell or mask) that contributes, ascending.
    pub(super) fn weighed_units(&self) -> Vec<(usize, Range<usize>)> {
        self.unit_passes.iter().enumerate().filter_map(|(k, p)| p.clone().map(|p| (k, p))).collect()
    }

    /// The weighed units whose passes are all in `done` (one flag per pass).
    pub(super) fn weighed_units_done(&self, done: &[bool]) -> Vec<(usize, Range<usize>)> {
        let mut weighed = self.weighed_units();
        weighed.retain(|(_, p)| done[p.clone()].iter().all(|d| *d));
        weighed
    }

    /// One flag per pass: the passes that weigh any of `channels` (for studies of other
    /// partial plans, e.g. Faster Score-CAM's channels, from one complete run's scores).
    pub fn passes_of(&self, channels: &[usize]) -> Vec<bool> {
        let mut flags = vec![false; self.passes.len()];
        for &k in channels {
            if let Some(Some(p)) = self.unit_passes.get(k) {
                flags[p.clone()].iter_mut().for_each(|f| *f = true);
            }
        }
        flags
    }

    /// What a run that did the passes flagged in `done` covered.
    pub fn coverage(&self, done: &[bool]) -> Coverage {
        assert_eq!(done.len(), self.passes.len(), "one flag per pass");
        let all = self.weighed_units();
        let finished = self.weighed_units_done(done);
        let mass = |set: &[(usize, Range<usize>)]| set.iter().map(|(k, _)| self.mass[*k]).sum::<f64>();
        let total = mass(&all);
        Coverage {
            passes_done: done.iter().filter(|d| **d).count(),
            passes_total: self.passes.len(),
            channels_done: finished.len(),
            channels_total: all.len(),
            estimated_mass: if total > 0.0 {
                mass(&finished) / total
            } else {
                f64::from(u8::from(finished.len() == all.len()))
            },
        }
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
        let per = self.pass_len();
        assert_eq!(out.len(), passes.len() * per, "output buffer does not match the batch");
        if self.graph() == Graph::Full {
            assert_eq!(x.len(), per, "input does not match the plan's size");
        }
        let cam = self.method.cam();
        let src = PassSource::new(x, &self.activations, (h, w), &self.masks, &self.memo);
        let mut mask = vec![0.0f32; h * w];
        for (dst, &pass) in out.chunks_exact_mut(per).zip(&self.passes[passes]) {
            cam.fill_pass(&src, pass, &mut mask, dst);
        }
    }
}

/// The first `len` passes of a plan (a pass budget): the most important channels' passes.
#[derive(Debug)]
pub struct PlanPrefix {
    pub plan: std::sync::Arc<MaskPlan>,
    pub len: usize,
}

impl PassSet for PlanPrefix {
    fn len(&self) -> usize {
        self.len.min(self.plan.len())
    }

    fn graph(&self) -> Graph {
        self.plan.graph()
    }

    fn pass_len(&self) -> usize {
        self.plan.pass_len()
    }

    fn fill_batch(&self, x: &[f32], passes: Range<usize>, out: &mut [f32]) {
        assert!(passes.end <= self.len(), "passes beyond the prefix");
        self.plan.fill_batch(x, passes, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cam::test_support::{activations, iscam, plan, sscam};

    #[test]
    fn official_skips_constant_channels_and_others_share_one_zero_pass() {
        // Channel 1's spatial spread (1.74) is a little wider than channel 0's (1.71): it
        // runs first.
        let official = plan(Preset::Official, activations(), (4, 6));
        assert_eq!(official.passes(), &[Pass::channel(1), Pass::channel(0)]);
        assert_eq!(official.skipped_channels(), 2);
        for preset in [Preset::PytorchGradCam, Preset::Torchcam] {
            let plan = plan(preset, activations(), (4, 6));
            assert_eq!(plan.passes(), &[Pass::channel(1), Pass::channel(0), Pass::ZERO]);
            assert_eq!(plan.skipped_channels(), 2);
        }
    }

    #[test]
    fn sscam_and_iscam_share_the_constant_channels_passes() {
        use crate::cam::PassSet;
        // 2 varying channels, 2 constant: SS-CAM needs N passes per varying channel plus N
        // shared (the constant masks are all zero, so X ⊙ (0 + δ_n) is one input per n).
        let ss = plan(sscam(3, 2.0, 0), activations(), (4, 6));
        assert_eq!(ss.len(), 3 * 2 + 3);
        let is = plan(iscam(10), activations(), (4, 6));
        assert_eq!(is.len(), 10 * 2 + 1, "IS-CAM: c_i × 0 is the zero input for every i");
        assert_eq!(is.skipped_channels(), 2);
    }
}
