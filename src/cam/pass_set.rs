//! The pass-set contract: what the engine batches (any [`PassSet`]) and what comes back
//! from the model ([`TargetScores`]), with the score helpers every caller shares.

use std::ops::Range;

/// Which graph a set of passes runs through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Graph {
    /// Extractor then head, on images.
    Full,
    /// The head alone, on target-layer activations.
    Head,
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

/// One target class's scores over an explanation's passes.
#[derive(Clone, Debug, PartialEq)]
pub struct TargetScores {
    /// The target class.
    pub class: usize,
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
            class: t,
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

    #[test]
    fn class_scores_are_softmax_probabilities() {
        let s = class_scores(&[1.0, 2.0, 3.0], &[2, 0]);
        let e: f32 = [1.0f32, 2.0, 3.0].iter().map(|v| v.exp()).sum();
        assert!((s[0].1 - 3.0f32.exp() / e).abs() < 1e-6);
        assert!((s[1].1 - 1.0f32.exp() / e).abs() < 1e-6);
        assert_eq!(s[0].0, 3.0);
    }
}
