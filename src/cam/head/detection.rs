//! A detector's head output: raw proposals (a box and per-class scores each), the two
//! scores a detection target can be read by, and non-maximum suppression for predictions.
//! Boxes are x1, y1, x2, y2 in the model's input pixels.

use serde::{Deserialize, Serialize};

/// How a detector's head lays out its proposals.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DetectionFormat {
    /// One tensor [N, 4 + C, A]: per anchor cx, cy, w, h then C class scores, channels
    /// first (YOLOv8, YOLOv11 exports without NMS).
    YoloV8,
    /// One tensor [N, A, 5 + C]: per anchor cx, cy, w, h, objectness, C class scores
    /// (YOLOv5, YOLOX-style exports without NMS).
    YoloV5,
    /// Two tensors: boxes [N, K, 4] as x1, y1, x2, y2 and class scores [N, K, C] (RT-DETR,
    /// DETR-style heads).
    Boxes,
    /// Three tensors after the model's own NMS: boxes [N, K, 4] as x1, y1, x2, y2, labels
    /// [N, K] (class indices, as floats) and scores [N, K]; K is the most detections the
    /// model returns, rows past its detections zero (torchvision's Faster R-CNN,
    /// RetinaNet, SSD as `split_model.py` pads them). The classes are the labels file's.
    Torchvision,
}

/// The detector's output shape for one image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Detector {
    pub format: DetectionFormat,
    pub classes: usize,
    pub proposals: usize,
    /// Class scores (and objectness) are logits: a sigmoid turns them into probabilities.
    pub logits: bool,
}

/// How a detection target is scored on a pass's proposals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BoxScore {
    /// D-RISE (Petsiuk et al. 2021): max over proposals j of IoU(target, box_j) · p_j(class)
    /// (· objectness_j where the format has one). No NMS: continuous in the masks.
    #[default]
    DRise,
    /// pytorch-grad-cam's `FasterRCNNBoxScoreTarget`: the proposal of largest IoU with the
    /// target; when that IoU is above the threshold and the proposal's best class is the
    /// target's, IoU + its score of the class, else 0.
    BoxScore { iou_threshold: f32 },
}

/// One detection: its box (model-input pixels), class and score (probability × objectness).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Detection {
    pub bbox: [f32; 4],
    pub class: usize,
    pub score: f32,
}

fn sigmoid(z: f32) -> f32 {
    (1.0 / (1.0 + (-f64::from(z)).exp())) as f32
}

impl Detector {
    pub fn output_len(&self) -> usize {
        match self.format {
            DetectionFormat::YoloV8 => (4 + self.classes) * self.proposals,
            DetectionFormat::YoloV5 => self.proposals * (5 + self.classes),
            DetectionFormat::Boxes => self.proposals * (4 + self.classes),
            DetectionFormat::Torchvision => self.proposals * 6,
        }
    }

    /// Attribute `a` of proposal `j` in one image's raw output.
    fn raw(&self, output: &[f32], j: usize, a: usize) -> f32 {
        match self.format {
            DetectionFormat::YoloV8 => output[a * self.proposals + j],
            DetectionFormat::YoloV5 => output[j * (5 + self.classes) + a],
            // Boxes first (K×4), then the scores (K×C).
            DetectionFormat::Boxes | DetectionFormat::Torchvision if a < 4 => output[j * 4 + a],
            DetectionFormat::Boxes => output[self.proposals * 4 + j * self.classes + (a - 4)],
            // Boxes (K×4), then the labels (K), then the scores (K).
            DetectionFormat::Torchvision => output[self.proposals * a + j],
        }
    }

    /// Proposal j's box, x1, y1, x2, y2.
    pub fn bbox(&self, output: &[f32], j: usize) -> [f32; 4] {
        let v = |a| self.raw(output, j, a);
        match self.format {
            DetectionFormat::Boxes | DetectionFormat::Torchvision => [v(0), v(1), v(2), v(3)],
            _ => {
                let (cx, cy, w, h) = (v(0), v(1), v(2), v(3));
                [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0]
            }
        }
    }

    /// Where proposal j's class scores start among its attributes.
    fn first_class(&self) -> usize {
        if self.format == DetectionFormat::YoloV5 { 5 } else { 4 }
    }

    /// Proposal j's objectness (1 for formats without one).
    pub fn objectness(&self, output: &[f32], j: usize) -> f32 {
        match self.format {
            DetectionFormat::YoloV5 => self.prob(self.raw(output, j, 4)),
            _ => 1.0,
        }
    }

    fn prob(&self, v: f32) -> f32 {
        if self.logits { sigmoid(v) } else { v }
    }

    /// Proposal j's probability of `class` (before objectness). A labelled detection has
    /// one class: its score for that class, 0 for any other.
    pub fn class_prob(&self, output: &[f32], j: usize, class: usize) -> f32 {
        if self.format == DetectionFormat::Torchvision {
            let (label, score) = self.labelled(output, j);
            return if label == Some(class) { self.prob(score) } else { 0.0 };
        }
        self.prob(self.raw(output, j, self.first_class() + class))
    }

    /// A labelled detection's class (None when the label is not a class index) and score.
    fn labelled(&self, output: &[f32], j: usize) -> (Option<usize>, f32) {
        let label = self.raw(output, j, 4);
        let class = (label >= 0.0 && label.fract() == 0.0 && (label as usize) < self.classes).then_some(label as usize);
        (class, self.raw(output, j, 5))
    }

    /// Proposal j's best class and its score (probability × objectness); None for a
    /// labelled row whose label is no class index.
    pub fn best(&self, output: &[f32], j: usize) -> Option<(usize, f32)> {
        if self.format == DetectionFormat::Torchvision {
            let (label, score) = self.labelled(output, j);
            return label.map(|class| (class, self.prob(score)));
        }
        let o = self.objectness(output, j);
        Some(
            (0..self.classes)
                .map(|c| (c, self.class_prob(output, j, c) * o))
                .fold((0, f32::NEG_INFINITY), |best, x| if x.1 > best.1 { x } else { best }),
        )
    }

    /// A detection target's score on one image's output.
    pub fn score(&self, output: &[f32], target: &[f32; 4], class: usize, rule: BoxScore) -> f32 {
        match rule {
            BoxScore::DRise => (0..self.proposals)
                .map(|j| {
                    iou(target, &self.bbox(output, j)) * self.class_prob(output, j, class) * self.objectness(output, j)
                })
                .fold(0.0, f32::max),
            BoxScore::BoxScore { iou_threshold } => {
                let Some((j, overlap)) = (0..self.proposals).map(|j| (j, iou(target, &self.bbox(output, j)))).fold(
                    None,
                    |best: Option<(usize, f32)>, x| match best {
                        Some(b) if b.1 >= x.1 => Some(b),
                        _ => Some(x),
                    },
                ) else {
                    return 0.0;
                };
                match self.best(output, j) {
                    Some((best, score)) if overlap > iou_threshold && best == class => overlap + score,
                    _ => 0.0,
                }
            }
        }
    }

    /// The detections after greedy class-wise NMS: proposals whose best class scores at
    /// least `score_threshold`, highest first, dropping any whose IoU with a kept
    /// detection of the same class exceeds `iou_threshold`.
    pub fn detect(&self, output: &[f32], score_threshold: f32, iou_threshold: f32) -> Vec<Detection> {
        let mut candidates: Vec<Detection> = (0..self.proposals)
            .filter_map(|j| {
                let (class, score) = self.best(output, j)?;
                let bbox = self.bbox(output, j);
                // An empty box is no detection (a padded row of a labelled output).
                let empty = bbox[2] <= bbox[0] || bbox[3] <= bbox[1];
                (score >= score_threshold && !empty).then_some(Detection { bbox, class, score })
            })
            .collect();
        candidates.sort_by(|a, b| b.score.total_cmp(&a.score));
        let mut kept: Vec<Detection> = Vec::new();
        for d in candidates {
            if !kept.iter().any(|k| k.class == d.class && iou(&k.bbox, &d.bbox) > iou_threshold) {
                kept.push(d);
            }
        }
        kept
    }
}

/// Intersection over union of two x1, y1, x2, y2 boxes (0 when either is empty).
pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let area = |r: &[f32; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    let union = area(a) + area(b) - inter;
    if union > 0.0 { inter / union } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two classes, three anchors, YOLOv8 layout [4 + 2, 3]: anchor 0 a 10×10 box at (5, 5)
    /// of class 0, anchor 1 nearly the same box of class 0 but weaker, anchor 2 elsewhere of
    /// class 1.
    fn v8() -> (Detector, Vec<f32>) {
        let d = Detector { format: DetectionFormat::YoloV8, classes: 2, proposals: 3, logits: false };
        #[rustfmt::skip]
        let out = vec![
            5.0, 6.0, 30.0,   // cx
            5.0, 5.0, 30.0,   // cy
            10.0, 10.0, 8.0,  // w
            10.0, 10.0, 8.0,  // h
            0.9, 0.6, 0.1,    // class 0
            0.05, 0.1, 0.8,   // class 1
        ];
        (d, out)
    }

    #[test]
    fn iou_of_boxes() {
        assert_eq!(iou(&[0.0, 0.0, 10.0, 10.0], &[0.0, 0.0, 10.0, 10.0]), 1.0);
        assert!((iou(&[0.0, 0.0, 10.0, 10.0], &[5.0, 0.0, 15.0, 10.0]) - 50.0 / 150.0).abs() < 1e-6);
        assert_eq!(iou(&[0.0, 0.0, 1.0, 1.0], &[2.0, 2.0, 3.0, 3.0]), 0.0);
        assert_eq!(iou(&[0.0, 0.0, 0.0, 0.0], &[0.0, 0.0, 0.0, 0.0]), 0.0);
    }

    #[test]
    fn nms_keeps_the_best_of_overlapping_boxes_per_class() {
        let (d, out) = v8();
        let found = d.detect(&out, 0.25, 0.45);
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!((found[0].class, found[0].score, found[0].bbox), (0, 0.9, [0.0, 0.0, 10.0, 10.0]));
        assert_eq!((found[1].class, found[1].score), (1, 0.8));
        assert!(d.detect(&out, 0.95, 0.45).is_empty());
    }

    #[test]
    fn d_rise_is_the_best_iou_times_probability() {
        let (d, out) = v8();
        let target = [0.0, 0.0, 10.0, 10.0];
        // Anchor 0: IoU 1 × 0.9; anchor 1 (shifted by 1): IoU 81/119 × 0.6.
        assert!((d.score(&out, &target, 0, BoxScore::DRise) - 0.9).abs() < 1e-6);
        // Shifted by 1: anchor 1 matches it exactly (1 × 0.6), anchor 0 by 90/110 × 0.9.
        let shifted = [1.0, 0.0, 11.0, 10.0];
        let want = (90.0f32 / 110.0 * 0.9).max(0.6);
        assert!((d.score(&out, &shifted, 0, BoxScore::DRise) - want).abs() < 1e-6);
    }

    #[test]
    fn box_score_needs_the_matching_class_above_the_threshold() {
        let (d, out) = v8();
        let rule = BoxScore::BoxScore { iou_threshold: 0.5 };
        assert!((d.score(&out, &[0.0, 0.0, 10.0, 10.0], 0, rule) - 1.9).abs() < 1e-6);
        assert_eq!(d.score(&out, &[0.0, 0.0, 10.0, 10.0], 1, rule), 0.0, "the best match is of class 0");
        assert_eq!(d.score(&out, &[50.0, 50.0, 60.0, 60.0], 0, rule), 0.0, "no overlap");
    }

    #[test]
    fn every_format_reads_the_same_proposals() {
        let (v8, out8) = v8();
        let a = 3;
        // YOLOv5: [A, 5 + C] with objectness 1; Boxes: K×4 corners then K×C scores.
        let mut out5 = Vec::new();
        let mut boxes = Vec::new();
        let mut scores = Vec::new();
        for j in 0..a {
            let attr = |i: usize| out8[i * a + j];
            out5.extend([attr(0), attr(1), attr(2), attr(3), 1.0, attr(4), attr(5)]);
            boxes.extend(v8.bbox(&out8, j));
            scores.extend([attr(4), attr(5)]);
        }
        let v5 = Detector { format: DetectionFormat::YoloV5, ..v8 };
        let bx = Detector { format: DetectionFormat::Boxes, ..v8 };
        let out_boxes: Vec<f32> = boxes.into_iter().chain(scores).collect();
        assert_eq!(v5.output_len(), out5.len());
        assert_eq!(bx.output_len(), out_boxes.len());
        for j in 0..a {
            assert_eq!(v5.bbox(&out5, j), v8.bbox(&out8, j));
            assert_eq!(bx.bbox(&out_boxes, j), v8.bbox(&out8, j));
            assert_eq!(v5.best(&out5, j), v8.best(&out8, j));
            assert_eq!(bx.best(&out_boxes, j), v8.best(&out8, j));
            assert!(v8.best(&out8, j).is_some());
        }
    }

    #[test]
    fn logits_and_objectness_scale_the_scores() {
        let d = Detector { format: DetectionFormat::YoloV5, classes: 1, proposals: 1, logits: true };
        let out = [5.0, 5.0, 10.0, 10.0, 0.0, 2.0];
        let p = 1.0 / (1.0 + (-2.0f32).exp());
        assert!((d.best(&out, 0).unwrap().1 - 0.5 * p).abs() < 1e-6);
        assert!((d.score(&out, &[0.0, 0.0, 10.0, 10.0], 0, BoxScore::DRise) - 0.5 * p).abs() < 1e-6);
    }

    /// Torchvision's post-NMS output, padded: two detections (class 2 at 0.9, class 1 at
    /// 0.4) and a zero row.
    fn labelled() -> (Detector, Vec<f32>) {
        let d = Detector { format: DetectionFormat::Torchvision, classes: 3, proposals: 3, logits: false };
        #[rustfmt::skip]
        let out = vec![
            0.0, 0.0, 10.0, 10.0,   20.0, 20.0, 30.0, 40.0,   0.0, 0.0, 0.0, 0.0, // boxes
            2.0, 1.0, 0.0,                                                        // labels
            0.9, 0.4, 0.0,                                                        // scores
        ];
        (d, out)
    }

    #[test]
    fn labelled_detections_have_one_class_each() {
        let (d, out) = labelled();
        assert_eq!(d.output_len(), out.len());
        assert_eq!(d.bbox(&out, 1), [20.0, 20.0, 30.0, 40.0]);
        assert_eq!((d.best(&out, 0), d.best(&out, 1)), (Some((2, 0.9)), Some((1, 0.4))));
        assert_eq!((d.class_prob(&out, 0, 2), d.class_prob(&out, 0, 1)), (0.9, 0.0));
        // The padded row is no detection even at threshold 0.
        let found = d.detect(&out, 0.0, 0.5);
        assert_eq!(found.iter().map(|f| (f.class, f.score)).collect::<Vec<_>>(), [(2, 0.9), (1, 0.4)]);
        // FasterRCNNBoxScoreTarget: the best-overlapping detection, if of the class: IoU + score.
        let rule = BoxScore::BoxScore { iou_threshold: 0.5 };
        assert!((d.score(&out, &[0.0, 0.0, 10.0, 10.0], 2, rule) - 1.9).abs() < 1e-6);
        assert_eq!(d.score(&out, &[0.0, 0.0, 10.0, 10.0], 1, rule), 0.0);
        // D-RISE: IoU × the detection's score of the class, 0 for other classes.
        let half = [0.0, 0.0, 10.0, 5.0];
        assert!((d.score(&out, &half, 2, BoxScore::DRise) - 0.5 * 0.9).abs() < 1e-6);
        assert_eq!(d.score(&out, &half, 0, BoxScore::DRise), 0.0);
    }

    #[test]
    fn a_label_that_is_no_class_index_is_no_detection() {
        let (d, mut out) = labelled();
        out[12] = 7.0; // past the 3 classes
        out[13] = 0.5; // not an integer
        assert!(d.detect(&out, 0.0, 0.5).is_empty());
    }
}
