//! The head seam: what a model's head returns, and how a target turns one pass's head
//! output into the scores a method weighs. Everything that knows "the head returns one
//! logit per class" lives here; the engine only hands each pass's output row to a
//! [`Readout`], and the service asks [`HeadKind`] for probabilities.
//!
//! Today there is one kind, `classes` (N×classes logits, with a softmax or a sigmoid). A
//! segmentation map (N×C×H×W, a class summed over a region), a detector's proposals (a
//! box and class matched by IoU) or an embedding (cosine similarity to a reference) is a
//! further variant of [`HeadKind`] and of the target a [`Readout`] carries: the engine,
//! the plans and the combining of scores into maps need not change.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// How a classifier's logits become probabilities.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// One class per image: softmax over the classes.
    #[default]
    Softmax,
    /// Independent classes (multi-label, one-logit binary): a sigmoid per class.
    Sigmoid,
}

/// What the head returns per image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HeadKind {
    /// One logit per class.
    Classes { classes: usize, activation: Activation },
}

impl HeadKind {
    /// Values of one image's head output.
    pub fn output_len(&self) -> usize {
        match *self {
            HeadKind::Classes { classes, .. } => classes,
        }
    }

    /// Targets a request may name (class indices below this).
    pub fn classes(&self) -> usize {
        match *self {
            HeadKind::Classes { classes, .. } => classes,
        }
    }

    /// The probability of every class in one image's output.
    pub fn probabilities(&self, output: &[f32]) -> Vec<f32> {
        match *self {
            HeadKind::Classes { activation: Activation::Softmax, .. } => softmax(output),
            HeadKind::Classes { activation: Activation::Sigmoid, .. } => output.iter().map(|&z| sigmoid(z)).collect(),
        }
    }
}

/// The targets of one job's passes, read off each pass's head output: per target, the raw
/// score (the logit) and its probability (softmax or sigmoid), which is what the presets
/// weigh.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Readout {
    head: HeadKind,
    targets: Arc<[usize]>,
}

impl Readout {
    /// Panics if a target is not a class of the head: requests are validated first.
    pub fn new(head: HeadKind, targets: impl Into<Arc<[usize]>>) -> Self {
        let targets = targets.into();
        assert!(targets.iter().all(|&t| t < head.classes()), "targets are validated against the head");
        Self { head, targets }
    }

    pub fn targets(&self) -> &[usize] {
        &self.targets
    }

    pub fn len(&self) -> usize {
        self.targets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// `(score, probability)` of each target in one pass's head output.
    pub fn read(&self, output: &[f32]) -> Vec<(f32, f32)> {
        match self.head {
            HeadKind::Classes { activation: Activation::Softmax, .. } => {
                let max = output.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let sum: f64 = output.iter().map(|&z| f64::from(z - max).exp()).sum();
                self.targets
                    .iter()
                    .map(|&t| {
                        let z = output[t];
                        (z, (f64::from(z - max).exp() / sum) as f32)
                    })
                    .collect()
            }
            HeadKind::Classes { activation: Activation::Sigmoid, .. } => {
                self.targets.iter().map(|&t| (output[t], sigmoid(output[t]))).collect()
            }
        }
    }
}

fn sigmoid(z: f32) -> f32 {
    (1.0 / (1.0 + (-f64::from(z)).exp())) as f32
}

/// Softmax (computed in f64 for stability): over channels for the weights, over classes
/// for probabilities.
pub fn softmax(scores: &[f32]) -> Vec<f32> {
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f64> = scores.iter().map(|&s| f64::from(s - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.iter().map(|e| (e / sum) as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classes(activation: Activation) -> HeadKind {
        HeadKind::Classes { classes: 3, activation }
    }

    #[test]
    fn a_softmax_head_reads_logits_and_softmax_probabilities() {
        let s = Readout::new(classes(Activation::Softmax), vec![2, 0]).read(&[1.0, 2.0, 3.0]);
        let e: f32 = [1.0f32, 2.0, 3.0].iter().map(|v| v.exp()).sum();
        assert!((s[0].1 - 3.0f32.exp() / e).abs() < 1e-6);
        assert!((s[1].1 - 1.0f32.exp() / e).abs() < 1e-6);
        assert_eq!(s[0].0, 3.0);
        let p = classes(Activation::Softmax).probabilities(&[1.0, 2.0, 3.0]);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }

    #[test]
    fn a_sigmoid_head_scores_each_class_alone() {
        let s = Readout::new(classes(Activation::Sigmoid), vec![1]).read(&[5.0, -2.0, 0.0]);
        assert_eq!(s[0].0, -2.0);
        assert!((s[0].1 - 1.0 / (1.0 + 2.0f32.exp())).abs() < 1e-7);
        let p = classes(Activation::Sigmoid).probabilities(&[0.0, 0.0, 0.0]);
        assert_eq!(p, vec![0.5; 3], "independent classes do not share one unit of probability");
    }
}
