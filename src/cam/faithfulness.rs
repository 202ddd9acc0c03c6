//! Faithfulness metrics as torch-cam codes them: Average Drop, Increase in Confidence, and
//! deletion / insertion curves, all from batched passes of a [`PassSet`].
//!
//! Passes per target: X ⊙ L once, and 19 inner steps each of deletion and insertion. The
//! end points need no pass of their own: deletion at 0 % and insertion at 100 % are the
//! clean image (its probability is known), and deletion at 100 % and insertion at 0 % are
//! the same all-baseline input for every target, so one shared pass serves them.

use std::ops::Range;

use serde::Serialize;

use super::pass_set::{Graph, PassSet, TargetScores};

/// Steps of the deletion and insertion curves (21 points, 0 % to 100 % in 5 % steps).
pub const STEPS: usize = 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MetricPass {
    /// X ⊙ L for target t.
    Masked(usize),
    /// The top `step / STEPS` of target t's pixels set to the baseline.
    Deletion(usize, usize),
    /// Only the top `step / STEPS` of target t's pixels kept; the rest baseline.
    Insertion(usize, usize),
    /// Every pixel at the baseline (0 in normalised space, the dataset-mean colour).
    Baseline,
}

/// The metric passes for some maps of one image.
pub struct MetricPlan {
    input_chw: [usize; 3],
    maps: Vec<Vec<f32>>,
    /// Per target, pixel indices ranked by map value, highest first (stable: ties by index).
    orders: Vec<Vec<u32>>,
    passes: Vec<MetricPass>,
}

/// One target's faithfulness figures.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Faithfulness {
    /// ReLU(Y − O) / Y, with Y = p_c(X), O = p_c(X ⊙ L) (a fraction; papers report ×100).
    pub average_drop: f32,
    /// Whether O > Y (averaged over images, this is the Increase in Confidence rate).
    pub increase_in_confidence: bool,
    /// Area under p_c as the top-ranked pixels are removed (lower is better).
    pub deletion_auc: f32,
    /// Area under p_c as the top-ranked pixels are restored (higher is better).
    pub insertion_auc: f32,
    /// Y.
    pub clean_probability: f32,
    /// O.
    pub masked_probability: f32,
    /// p_c at 0 %, 5 %, … 100 % of the pixels removed.
    pub deletion_curve: Vec<f32>,
    /// p_c at 0 %, 5 %, … 100 % of the pixels restored.
    pub insertion_curve: Vec<f32>,
}

/// Pixel indices by value, highest first; ties keep index order.
pub fn rank_pixels(map: &[f32]) -> Vec<u32> {
    let mut idx: Vec<u32> = (0..map.len() as u32).collect();
    idx.sort_by(|&a, &b| map[b as usize].total_cmp(&map[a as usize]));
    idx
}

/// Pixels changed at step `s` of `STEPS` (rounded to the nearest pixel).
pub fn pixels_at(step: usize, pixels: usize) -> usize {
    (step * pixels + STEPS / 2) / STEPS
}

/// Area under a curve sampled at even steps over 0..1, by the trapezoid rule.
pub fn auc(curve: &[f32]) -> f32 {
    let n = curve.len().saturating_sub(1).max(1) as f32;
    curve.windows(2).map(|w| (w[0] + w[1]) / 2.0).sum::<f32>() / n
}

impl std::fmt::Debug for MetricPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricPlan").field("targets", &self.maps.len()).field("passes", &self.passes.len()).finish()
    }
}

impl MetricPlan {
    /// `maps`: one map per target at the model's input resolution (H×W).
    pub fn new(maps: Vec<Vec<f32>>, input_chw: [usize; 3]) -> Self {
        let hw = input_chw[1] * input_chw[2];
        assert!(maps.iter().all(|m| m.len() == hw), "maps must be at the model's input resolution");
        let orders = maps.iter().map(|m| rank_pixels(m)).collect();
        let mut passes = Vec::with_capacity(Self::pass_count(maps.len()));
        for t in 0..maps.len() {
            passes.push(MetricPass::Masked(t));
            passes.extend((1..STEPS).map(|s| MetricPass::Deletion(t, s)));
            passes.extend((1..STEPS).map(|s| MetricPass::Insertion(t, s)));
        }
        if !maps.is_empty() {
            passes.push(MetricPass::Baseline);
        }
        Self { input_chw, maps, orders, passes }
    }

    /// Passes needed for `targets` maps.
    pub fn pass_count(targets: usize) -> usize {
        if targets == 0 { 0 } else { targets * (1 + 2 * (STEPS - 1)) + 1 }
    }

    /// Where a pass sits in the plan (the layout `new` builds: per target, X ⊙ L, then the
    /// deletion steps, then the insertion steps; the shared baseline last).
    fn index_of(&self, pass: MetricPass) -> usize {
        let per_target = 1 + 2 * (STEPS - 1);
        match pass {
            MetricPass::Masked(t) => t * per_target,
            MetricPass::Deletion(t, s) => t * per_target + s,
            MetricPass::Insertion(t, s) => t * per_target + (STEPS - 1) + s,
            MetricPass::Baseline => self.passes.len() - 1,
        }
    }

    /// The figures of target number `t` (in the plan's map order) from its pass scores and
    /// the clean image's probability of that class.
    pub fn evaluate(&self, t: usize, scores: &TargetScores, clean_probability: f32) -> Faithfulness {
        let p = |pass| scores.probs[self.index_of(pass)];
        let y = clean_probability;
        let o = p(MetricPass::Masked(t));
        let baseline = p(MetricPass::Baseline);
        let mut deletion = vec![y];
        deletion.extend((1..STEPS).map(|s| p(MetricPass::Deletion(t, s))));
        deletion.push(baseline);
        let mut insertion = vec![baseline];
        insertion.extend((1..STEPS).map(|s| p(MetricPass::Insertion(t, s))));
        insertion.push(y);
        Faithfulness {
            average_drop: (y - o).max(0.0) / (y + 1e-7),
            increase_in_confidence: y < o,
            deletion_auc: auc(&deletion),
            insertion_auc: auc(&insertion),
            clean_probability: y,
            masked_probability: o,
            deletion_curve: deletion,
            insertion_curve: insertion,
        }
    }
}

impl PassSet for MetricPlan {
    fn len(&self) -> usize {
        self.passes.len()
    }

    fn graph(&self) -> Graph {
        Graph::Full
    }

    fn pass_len(&self) -> usize {
        self.input_chw.iter().product()
    }

    fn fill_batch(&self, x: &[f32], passes: Range<usize>, out: &mut [f32]) {
        let hw = self.input_chw[1] * self.input_chw[2];
        let per = self.pass_len();
        assert_eq!(x.len(), per, "input does not match the plan's size");
        assert_eq!(out.len(), passes.len() * per, "output buffer does not match the batch");
        for (dst, pass) in out.chunks_exact_mut(per).zip(&self.passes[passes]) {
            match *pass {
                MetricPass::Baseline => dst.fill(0.0),
                MetricPass::Masked(t) => {
                    for (dst_c, x_c) in dst.chunks_exact_mut(hw).zip(x.chunks_exact(hw)) {
                        for ((d, xv), m) in dst_c.iter_mut().zip(x_c).zip(&self.maps[t]) {
                            *d = xv * m;
                        }
                    }
                }
                MetricPass::Deletion(t, s) => {
                    dst.copy_from_slice(x);
                    for &i in &self.orders[t][..pixels_at(s, hw)] {
                        dst.iter_mut().skip(i as usize).step_by(hw).for_each(|v| *v = 0.0);
                    }
                }
                MetricPass::Insertion(t, s) => {
                    dst.fill(0.0);
                    for &i in &self.orders[t][..pixels_at(s, hw)] {
                        for c in 0..self.input_chw[0] {
                            dst[c * hw + i as usize] = x[c * hw + i as usize];
                        }
                    }
                }
            }
        }
    }
}

/// Pearson correlation of two maps (0 when either is constant).
pub fn pearson(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "maps of different sizes");
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().map(|&v| f64::from(v)).sum::<f64>() / n, b.iter().map(|&v| f64::from(v)).sum::<f64>() / n);
    let (mut cov, mut va, mut vb) = (0.0, 0.0, 0.0);
    for (&x, &y) in a.iter().zip(b) {
        let (dx, dy) = (f64::from(x) - ma, f64::from(y) - mb);
        cov += dx * dy;
        va += dx * dx;
        vb += dy * dy;
    }
    if va == 0.0 || vb == 0.0 { 0.0 } else { (cov / (va.sqrt() * vb.sqrt())) as f32 }
}

/// Intersection over union of the two maps' top `fraction` of pixels (ranked as above).
pub fn top_iou(a: &[f32], b: &[f32], fraction: f32) -> f32 {
    assert_eq!(a.len(), b.len(), "maps of different sizes");
    let k = ((a.len() as f32 * fraction).ceil() as usize).min(a.len());
    let mut in_a = vec![false; a.len()];
    rank_pixels(a)[..k].iter().for_each(|&i| in_a[i as usize] = true);
    let both = rank_pixels(b)[..k].iter().filter(|&&i| in_a[i as usize]).count();
    let union = 2 * k - both;
    if union == 0 { 1.0 } else { both as f32 / union as f32 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cam::pass_set::score_passes;

    /// logits = [Σ w·x, 0]: class 0's probability rises with the weighted input sum.
    fn model(weights: &[f32]) -> impl Fn(&[f32], usize) -> Vec<f32> + '_ {
        move |batch: &[f32], n: usize| {
            batch
                .chunks_exact(batch.len() / n)
                .flat_map(|x| [x.iter().zip(weights).map(|(a, b)| a * b).sum::<f32>(), 0.0])
                .collect()
        }
    }

    fn sigmoid(z: f32) -> f32 {
        1.0 / (1.0 + (-z).exp())
    }

    fn run(maps: Vec<Vec<f32>>, x: &[f32], weights: &[f32]) -> Vec<Faithfulness> {
        let plan = MetricPlan::new(maps, [1, 2, 5]);
        let f = model(weights);
        let clean = f(x, 1);
        let scores = score_passes(&plan, x, &clean, &[0], 7, &f);
        let y = sigmoid(clean[0]);
        (0..plan.maps.len()).map(|t| plan.evaluate(t, &scores[0], y)).collect()
    }

    #[test]
    fn a_map_that_keeps_the_whole_image_has_no_drop() {
        let x: Vec<f32> = (0..10).map(|i| i as f32 * 0.1).collect();
        let w = vec![0.5; 10];
        let m = &run(vec![vec![1.0; 10]], &x, &w)[0];
        assert_eq!(m.average_drop, 0.0);
        assert!(!m.increase_in_confidence);
        assert_eq!(m.masked_probability, m.clean_probability);
    }

    #[test]
    fn average_drop_and_increase_follow_the_formulas() {
        // Positive weights: halving the input lowers the score.
        let x = vec![1.0; 10];
        let m = &run(vec![vec![0.5; 10]], &x, &[0.4; 10])[0];
        let (y, o) = (sigmoid(4.0), sigmoid(2.0));
        assert!((m.average_drop - (y - o) / (y + 1e-7)).abs() < 1e-6);
        assert!(!m.increase_in_confidence);
        // Negative weights: masking raises confidence, so no drop and an increase.
        let m = &run(vec![vec![0.5; 10]], &x, &[-0.4; 10])[0];
        assert_eq!(m.average_drop, 0.0);
        assert!(m.increase_in_confidence);
    }

    #[test]
    fn a_constant_map_ranks_pixels_in_index_order() {
        assert_eq!(rank_pixels(&[0.5; 4]), vec![0, 1, 2, 3]);
        assert_eq!(rank_pixels(&[0.1, 0.9, 0.9, 0.3]), vec![1, 2, 3, 0]);
        // Deletion at step 2 of 20 on 10 pixels removes exactly the first one.
        let plan = MetricPlan::new(vec![vec![0.5; 10]], [1, 2, 5]);
        let x: Vec<f32> = (1..=10).map(|v| v as f32).collect();
        let at = plan.index_of(MetricPass::Deletion(0, 2));
        let mut out = vec![0.0; 10];
        plan.fill_batch(&x, at..at + 1, &mut out);
        assert_eq!(out[0], 0.0);
        assert_eq!(&out[1..], &x[1..]);
        let at = plan.index_of(MetricPass::Insertion(0, 10));
        plan.fill_batch(&x, at..at + 1, &mut out);
        assert_eq!(&out[..5], &x[..5]);
        assert!(out[5..].iter().all(|v| *v == 0.0));
    }

    #[test]
    fn deletion_of_the_evidence_first_scores_lower_than_deletion_of_the_rest() {
        // Only the first five pixels carry evidence for class 0.
        let w: Vec<f32> = (0..10).map(|i| if i < 5 { 1.0 } else { 0.0 }).collect();
        let x = vec![1.0; 10];
        let right: Vec<f32> = (0..10).map(|i| if i < 5 { 1.0 } else { 0.0 }).collect();
        let wrong: Vec<f32> = right.iter().map(|v| 1.0 - v).collect();
        let m = run(vec![right, wrong], &x, &w);
        assert!(m[0].deletion_auc < m[1].deletion_auc, "{} vs {}", m[0].deletion_auc, m[1].deletion_auc);
        assert!(m[0].insertion_auc > m[1].insertion_auc);
        assert_eq!(m[0].deletion_curve.len(), STEPS + 1);
        assert_eq!(m[0].deletion_curve[0], m[0].clean_probability);
        assert_eq!(m[0].insertion_curve[STEPS], m[0].clean_probability);
        assert_eq!(m[0].deletion_curve[STEPS], m[1].insertion_curve[0], "one shared baseline pass");
    }

    #[test]
    fn auc_by_the_trapezoid_rule() {
        assert!((auc(&[0.5; 21]) - 0.5).abs() < 1e-6);
        let line: Vec<f32> = (0..=20).map(|i| 1.0 - i as f32 / 20.0).collect();
        assert!((auc(&line) - 0.5).abs() < 1e-6);
        assert!((auc(&[0.0, 1.0]) - 0.5).abs() < 1e-6);
    }

    #[test]
    fn pass_count_shares_the_end_points() {
        assert_eq!(MetricPlan::pass_count(1), 40);
        assert_eq!(MetricPlan::pass_count(2), 79);
        assert_eq!(MetricPlan::new(vec![vec![0.0; 10]; 2], [1, 2, 5]).len(), 79);
        assert_eq!(pixels_at(20, 50176), 50176);
        assert_eq!(pixels_at(1, 50176), 2509);
    }

    #[test]
    fn map_agreement_measures() {
        let a: Vec<f32> = (0..10).map(|v| v as f32).collect();
        let neg: Vec<f32> = a.iter().map(|v| -v).collect();
        assert!((pearson(&a, &a) - 1.0).abs() < 1e-6);
        assert!((pearson(&a, &neg) + 1.0).abs() < 1e-6);
        assert_eq!(pearson(&a, &[1.0; 10]), 0.0);
        assert_eq!(top_iou(&a, &a, 0.2), 1.0);
        assert_eq!(top_iou(&a, &neg, 0.2), 0.0);
        // Top 2 of each: {9, 8} vs {9, 7} → 1 shared of 3.
        let mut b = a.clone();
        b.swap(8, 7);
        assert!((top_iou(&a, &b, 0.2) - 1.0 / 3.0).abs() < 1e-6);
    }
}
