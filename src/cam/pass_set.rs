//! The pass-set contract: what the engine batches (any [`PassSet`]) and what comes back
//! from the model ([`TargetScores`]), and the in-line scorer of tests and tools.

use std::ops::Range;

use super::head::{Activation, HeadKind, Readout};

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

/// Scores every pass of a pass set in batches, for each target of a softmax classifier
/// (the in-line runner of tests and tools; the engine reads scores through the model's own
/// [`Readout`]).
pub fn score_passes(
    passes: &dyn PassSet,
    x: &[f32],
    clean_logits: &[f32],
    targets: &[usize],
    batch_size: usize,
    mut score: impl FnMut(&[f32], usize) -> Vec<f32>,
) -> Vec<TargetScores> {
    let classes = clean_logits.len();
    let readout = Readout::classes(HeadKind::Classes { classes, activation: Activation::Softmax }, targets);
    let mut per_target: Vec<TargetScores> = targets
        .iter()
        .map(|&t| TargetScores {
            class: t,
            clean_logit: clean_logits[t],
            logits: Vec::with_capacity(passes.len()),
            probs: Vec::with_capacity(passes.len()),
        })
        .collect();
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
            for (ts, (z, p)) in per_target.iter_mut().zip(readout.read(row)) {
                ts.logits.push(z);
                ts.probs.push(p);
            }
        }
        start = end;
    }
    per_target
}
