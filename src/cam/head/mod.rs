//! The head seam: what a model's head returns, and how a target turns one pass's head
//! output into the scores a method weighs. Everything that knows the shape and meaning of
//! a head's output lives here; the engine only hands each pass's output row to a
//! [`Readout`], and the service asks [`HeadKind`] for predictions.
//!
//! Three kinds: `classes` (N×C logits, softmax or sigmoid; one sigmoid logit is a binary
//! classifier), `segmentation` (N×C×H×W or N×H×W×C logits; a target is a class summed over
//! a region of the output, pytorch-grad-cam's `SemanticSegmentationTarget`) and `embedding`
//! (N×D; a target is a reference vector, scored by cosine similarity like its
//! `SimilarityToConceptTarget`).

mod detection;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use detection::{BoxScore, Detection, DetectionFormat, Detector, iou};

/// How a classifier's logits become probabilities.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// One class per image (per pixel for a segmenter): softmax over the classes.
    #[default]
    Softmax,
    /// Independent classes (multi-label, one-logit binary): a sigmoid per class.
    Sigmoid,
}

/// How a segmentation head lays out its per-pixel logits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MapLayout {
    /// C×H×W per image (PyTorch).
    #[default]
    Nchw,
    /// H×W×C per image (TensorFlow).
    Nhwc,
}

/// What the head returns per image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HeadKind {
    /// One logit per class. A single sigmoid logit is a binary classifier with two targets:
    /// 1 (the logit) and 0 (its negation), as `BinaryClassifierOutputTarget`.
    Classes { classes: usize, activation: Activation },
    /// Per-pixel class logits on a `height`×`width` grid (which covers the model's input).
    Segmentation { classes: usize, height: usize, width: usize, layout: MapLayout, activation: Activation },
    /// One `dim`-vector per image.
    Embedding { dim: usize },
    /// A detector's raw proposals (before NMS).
    Detection(Detector),
}

/// What a target asks of the head's output.
#[derive(Clone, Debug, PartialEq)]
pub enum Target {
    /// A class of a classifier (of a one-logit binary head: 0 or 1).
    Class(usize),
    /// A segmenter's class, summed over the output pixels in `region` (plane indices
    /// y·width + x, ascending, not empty).
    Segment { class: usize, region: Arc<[u32]> },
    /// An embedding's cosine similarity to `reference` (as long as the embedding).
    Similarity { reference: Arc<[f32]> },
    /// A detector's box (x1, y1, x2, y2 in model-input pixels) and class, scored by `rule`.
    Detection { class: usize, bbox: [f32; 4], rule: BoxScore },
}

impl Target {
    /// A segmentation target's region (output-grid plane indices).
    pub fn region(&self) -> Option<Arc<[u32]>> {
        match self {
            Target::Segment { region, .. } => Some(region.clone()),
            _ => None,
        }
    }

    /// A detection target's box (model-input pixels).
    pub fn bbox(&self) -> Option<[f32; 4]> {
        match self {
            Target::Detection { bbox, .. } => Some(*bbox),
            _ => None,
        }
    }

    /// The class a target names (0 for a similarity), as answers label it.
    pub fn class(&self) -> usize {
        match self {
            Target::Class(c) | Target::Segment { class: c, .. } | Target::Detection { class: c, .. } => *c,
            Target::Similarity { .. } => 0,
        }
    }
}

impl HeadKind {
    /// Values of one image's head output.
    pub fn output_len(&self) -> usize {
        match *self {
            HeadKind::Classes { classes, .. } => classes,
            HeadKind::Segmentation { classes, height, width, .. } => classes * height * width,
            HeadKind::Embedding { dim } => dim,
            HeadKind::Detection(d) => d.output_len(),
        }
    }

    /// Classes a target may name (below this); 0 for an embedding, whose targets are
    /// references.
    pub fn classes(&self) -> usize {
        match *self {
            HeadKind::Classes { classes: 1, activation: Activation::Sigmoid } => 2,
            HeadKind::Classes { classes, .. } | HeadKind::Segmentation { classes, .. } => classes,
            HeadKind::Detection(d) => d.classes,
            HeadKind::Embedding { .. } => 0,
        }
    }

    /// A one-logit sigmoid head: targets 0 and 1 are its two classes.
    pub fn is_binary(&self) -> bool {
        matches!(self, HeadKind::Classes { classes: 1, activation: Activation::Sigmoid })
    }

    /// The kind's name in `model.toml` and answers.
    pub fn name(&self) -> &'static str {
        match self {
            HeadKind::Classes { .. } => "classes",
            HeadKind::Segmentation { .. } => "segmentation",
            HeadKind::Embedding { .. } => "embedding",
            HeadKind::Detection(_) => "detection",
        }
    }

    /// Per class, the score a prediction ranks and reports: a classifier's probability
    /// (softmax or sigmoid; a binary head's two classes 1 − p and p), a segmenter's share
    /// of the output pixels it predicts as that class, a detector's best proposal score for
    /// the class. Empty for an embedding.
    pub fn class_scores(&self, output: &[f32]) -> Vec<f32> {
        match *self {
            HeadKind::Classes { classes: 1, activation: Activation::Sigmoid } => {
                let p = sigmoid(output[0]);
                vec![1.0 - p, p]
            }
            HeadKind::Classes { activation: Activation::Softmax, .. } => softmax(output),
            HeadKind::Classes { activation: Activation::Sigmoid, .. } => output.iter().map(|&z| sigmoid(z)).collect(),
            HeadKind::Segmentation { classes, .. } => {
                let pixels = (self.output_len() / classes.max(1)).max(1);
                let mut counts = vec![0usize; classes];
                for class in self.predicted_classes(output) {
                    counts[class] += 1;
                }
                counts.iter().map(|&n| n as f32 / pixels as f32).collect()
            }
            HeadKind::Embedding { .. } => Vec::new(),
            HeadKind::Detection(d) => {
                let o = |j| d.objectness(output, j);
                (0..d.classes)
                    .map(|c| (0..d.proposals).map(|j| d.class_prob(output, j, c) * o(j)).fold(0.0, f32::max))
                    .collect()
            }
        }
    }

    /// The class of each output pixel of a segmenter: the largest logit (softmax), or the
    /// largest of the logits above 0 (sigmoid; a pixel with none is counted to no class
    /// and gets `classes`). Empty for the other kinds.
    pub fn predicted_classes(&self, output: &[f32]) -> Vec<usize> {
        let HeadKind::Segmentation { classes, height, width, layout, activation } = *self else {
            return Vec::new();
        };
        (0..height * width)
            .map(|p| {
                let mut best = (classes, f32::NEG_INFINITY);
                for c in 0..classes {
                    let z = output[pixel_index(layout, classes, height * width, c, p)];
                    let counts = activation == Activation::Softmax || z > 0.0;
                    if counts && z > best.1 {
                        best = (c, z);
                    }
                }
                best.0
            })
            .collect()
    }

    /// The output pixels a segmenter assigns to `class` (plane indices, ascending).
    pub fn predicted_region(&self, output: &[f32], class: usize) -> Vec<u32> {
        self.predicted_classes(output).iter().enumerate().filter(|&(_, &c)| c == class).map(|(p, _)| p as u32).collect()
    }

    /// The segmenter's output grid (height, width); `None` for the other kinds.
    pub fn grid(&self) -> Option<(usize, usize)> {
        match *self {
            HeadKind::Segmentation { height, width, .. } => Some((height, width)),
            _ => None,
        }
    }

    /// The target's `(score, probability)` in one image's output. The score is what
    /// pytorch-grad-cam's target returns (a logit, the negated logit for a binary head's
    /// class 0, a region's summed logits, a cosine similarity); the probability is what the
    /// `official` preset weighs (softmax or sigmoid; a segmenter's class probability
    /// averaged over the region; the cosine similarity itself).
    fn read(&self, output: &[f32], target: &Target) -> (f32, f32) {
        match (*self, target) {
            (HeadKind::Classes { classes: 1, activation: Activation::Sigmoid }, Target::Class(t)) => {
                let z = if *t == 1 { output[0] } else { -output[0] };
                (z, sigmoid(z))
            }
            (HeadKind::Classes { activation: Activation::Sigmoid, .. }, Target::Class(t)) => {
                (output[*t], sigmoid(output[*t]))
            }
            (HeadKind::Classes { activation: Activation::Softmax, .. }, Target::Class(t)) => {
                (output[*t], softmax_at(output.iter().copied(), output[*t]))
            }
            (
                HeadKind::Segmentation { classes, height, width, layout, activation },
                Target::Segment { class, region },
            ) => {
                let plane = height * width;
                let at = |c: usize, p: u32| output[pixel_index(layout, classes, plane, c, p as usize)];
                // In f64: a region's sum runs over up to millions of logits.
                let (mut sum, mut prob) = (0.0f64, 0.0f64);
                for &p in region.iter() {
                    let z = at(*class, p);
                    sum += f64::from(z);
                    prob += f64::from(match activation {
                        Activation::Sigmoid => sigmoid(z),
                        Activation::Softmax => softmax_at((0..classes).map(|c| at(c, p)), z),
                    });
                }
                (sum as f32, (prob / region.len().max(1) as f64) as f32)
            }
            (HeadKind::Embedding { .. }, Target::Similarity { reference }) => {
                let cos = cosine(output, reference);
                (cos, cos)
            }
            (HeadKind::Detection(d), Target::Detection { class, bbox, rule }) => {
                let score = d.score(output, bbox, *class, *rule);
                (score, score)
            }
            (head, target) => unreachable!("targets are validated against the head: {target:?} on {head:?}"),
        }
    }

    /// Whether `target` fits this head (a class it has, a region inside its grid, a
    /// reference of its length).
    pub fn accepts(&self, target: &Target) -> bool {
        match (*self, target) {
            (HeadKind::Classes { .. }, Target::Class(c)) => *c < self.classes(),
            (HeadKind::Segmentation { classes, height, width, .. }, Target::Segment { class, region }) => {
                *class < classes && !region.is_empty() && region.iter().all(|&p| (p as usize) < height * width)
            }
            (HeadKind::Embedding { dim }, Target::Similarity { reference }) => reference.len() == dim,
            (HeadKind::Detection(d), Target::Detection { class, bbox, .. }) => {
                *class < d.classes && bbox.iter().all(|v| v.is_finite()) && bbox[0] < bbox[2] && bbox[1] < bbox[3]
            }
            _ => false,
        }
    }
}

/// Where class `c` of output pixel `p` is in one image's segmentation output.
fn pixel_index(layout: MapLayout, classes: usize, plane: usize, c: usize, p: usize) -> usize {
    match layout {
        MapLayout::Nchw => c * plane + p,
        MapLayout::Nhwc => p * classes + c,
    }
}

/// The targets of one job's passes, read off each pass's head output: per target, the raw
/// score and its probability, which is what the presets weigh.
#[derive(Clone, Debug, PartialEq)]
pub struct Readout {
    head: HeadKind,
    targets: Arc<[Target]>,
}

impl Readout {
    /// Panics if a target does not fit the head: requests are validated first.
    pub fn new(head: HeadKind, targets: impl Into<Arc<[Target]>>) -> Self {
        let targets = targets.into();
        assert!(targets.iter().all(|t| head.accepts(t)), "targets are validated against the head");
        Self { head, targets }
    }

    /// Class targets of a classifier.
    pub fn classes(head: HeadKind, classes: &[usize]) -> Self {
        Self::new(head, classes.iter().map(|&c| Target::Class(c)).collect::<Vec<_>>())
    }

    pub fn targets(&self) -> &[Target] {
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
        self.targets.iter().map(|t| self.head.read(output, t)).collect()
    }
}

fn sigmoid(z: f32) -> f32 {
    (1.0 / (1.0 + (-f64::from(z)).exp())) as f32
}

/// softmax(values) at the value `z` (one of them), in f64.
fn softmax_at(values: impl Iterator<Item = f32> + Clone, z: f32) -> f32 {
    let max = values.clone().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = values.map(|v| f64::from(v - max).exp()).sum();
    (f64::from(z - max).exp() / sum) as f32
}

/// Cosine similarity, as `torch.nn.CosineSimilarity` (eps 1e-8 on the product of norms).
fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let (mut dot, mut na, mut nb) = (0.0f64, 0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        dot += f64::from(x) * f64::from(y);
        na += f64::from(x) * f64::from(x);
        nb += f64::from(y) * f64::from(y);
    }
    (dot / (na * nb).sqrt().max(1e-8)) as f32
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
        let s = Readout::classes(classes(Activation::Softmax), &[2, 0]).read(&[1.0, 2.0, 3.0]);
        let e: f32 = [1.0f32, 2.0, 3.0].iter().map(|v| v.exp()).sum();
        assert!((s[0].1 - 3.0f32.exp() / e).abs() < 1e-6);
        assert!((s[1].1 - 1.0f32.exp() / e).abs() < 1e-6);
        assert_eq!(s[0].0, 3.0);
        let p = classes(Activation::Softmax).class_scores(&[1.0, 2.0, 3.0]);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }

    #[test]
    fn a_sigmoid_head_scores_each_class_alone() {
        let s = Readout::classes(classes(Activation::Sigmoid), &[1]).read(&[5.0, -2.0, 0.0]);
        assert_eq!(s[0].0, -2.0);
        assert!((s[0].1 - 1.0 / (1.0 + 2.0f32.exp())).abs() < 1e-7);
        let p = classes(Activation::Sigmoid).class_scores(&[0.0, 0.0, 0.0]);
        assert_eq!(p, vec![0.5; 3], "independent classes do not share one unit of probability");
    }

    #[test]
    fn a_one_logit_sigmoid_head_is_a_binary_classifier_with_two_targets() {
        let head = HeadKind::Classes { classes: 1, activation: Activation::Sigmoid };
        assert!(head.is_binary());
        assert_eq!(head.classes(), 2);
        // BinaryClassifierOutputTarget: category 1 is the logit, category 0 its negation.
        let s = Readout::classes(head, &[1, 0]).read(&[1.5]);
        assert_eq!((s[0].0, s[1].0), (1.5, -1.5));
        let p1 = 1.0 / (1.0 + (-1.5f32).exp());
        assert!((s[0].1 - p1).abs() < 1e-7 && (s[1].1 - (1.0 - p1)).abs() < 1e-6);
        assert_eq!(head.class_scores(&[0.0]), vec![0.5, 0.5]);
        assert!(!head.accepts(&Target::Class(2)));
    }

    /// 2 classes on a 2×2 grid, N×C×H×W: class 1 wins at pixels 1 and 3.
    const SEG: [f32; 8] = [1.0, 0.0, 2.0, -1.0, /* class 1: */ 0.0, 3.0, 1.0, 4.0];

    fn seg(layout: MapLayout) -> HeadKind {
        HeadKind::Segmentation { classes: 2, height: 2, width: 2, layout, activation: Activation::Softmax }
    }

    #[test]
    fn a_segmentation_target_sums_its_class_over_the_region() {
        let head = seg(MapLayout::Nchw);
        assert_eq!(head.predicted_region(&SEG, 1), vec![1, 3]);
        assert_eq!(head.class_scores(&SEG), vec![0.5, 0.5]);
        let target = Target::Segment { class: 1, region: vec![1, 3].into() };
        let (score, prob) = Readout::new(head, vec![target]).read(&SEG)[0];
        assert_eq!(score, 3.0 + 4.0, "SemanticSegmentationTarget: (output[c] * mask).sum()");
        // The class's softmax probability over classes at each pixel, averaged.
        let p = |a: f32, b: f32| b.exp() / (a.exp() + b.exp());
        assert!((prob - (p(0.0, 3.0) + p(-1.0, 4.0)) / 2.0).abs() < 1e-6);
    }

    #[test]
    fn nhwc_segmentation_reads_the_same_pixels() {
        // SEG transposed to H×W×C.
        let nhwc: Vec<f32> = (0..4).flat_map(|p| [SEG[p], SEG[4 + p]]).collect();
        let target = || vec![Target::Segment { class: 0, region: vec![0, 2].into() }];
        assert_eq!(
            Readout::new(seg(MapLayout::Nhwc), target()).read(&nhwc),
            Readout::new(seg(MapLayout::Nchw), target()).read(&SEG)
        );
        assert_eq!(seg(MapLayout::Nhwc).predicted_classes(&nhwc), vec![0, 1, 0, 1]);
    }

    #[test]
    fn an_embedding_target_is_the_cosine_similarity_to_its_reference() {
        let head = HeadKind::Embedding { dim: 3 };
        let target = Target::Similarity { reference: vec![1.0, 0.0, 1.0].into() };
        assert!(head.accepts(&target) && !head.accepts(&Target::Similarity { reference: vec![1.0].into() }));
        let (score, prob) = Readout::new(head, vec![target]).read(&[2.0, 5.0, 2.0])[0];
        let want = 4.0 / (8.0f32.sqrt() * 2.0f32.sqrt() * (33.0f32 / 8.0).sqrt());
        assert!((score - want).abs() < 1e-6, "{score} vs {want}");
        assert_eq!(score, prob);
        assert_eq!(head.classes(), 0);
    }
}
