//! What an explanation produces: the computed result (maps, scores, counts, timings), and
//! the rendered forms every face returns (a PNG with its summary, or the JSON document).

use std::sync::Arc;

use image::RgbImage;
use serde::{Deserialize, Serialize};

use super::cache::CacheOutcome;
use super::request::{ExifOrientation, Rendering};
use crate::cam::faithfulness::Faithfulness;
use crate::cam::{Coverage, Detection, HeadKind, Map, Method, Saliency};
use crate::engine::EngineModel;
use crate::imaging::Preprocessed;

/// Counts that describe the work an explanation took.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct RunStats {
    /// Every forward pass through the model for this request, the clean pass included.
    pub forward_passes: usize,
    /// Passes through the head graph alone (Ablation-CAM, Recipro-CAM, the closed-form
    /// methods' one-time head measurement).
    pub head_passes: usize,
    /// Passes spent on faithfulness metrics (not counted above).
    pub metric_passes: usize,
    /// Channels that got no pass of their own (constant, all-zero, or left out).
    pub skipped_channels: usize,
    /// Channels whose mask equals another channel's, so they reused its passes.
    pub shared_mask_channels: usize,
    /// The largest batch any of its passes ran in.
    pub batch_size: usize,
    /// Whether the result came from the cache (then no pass ran for this request and
    /// the pass counts above are 0).
    pub cache: CacheOutcome,
    /// How much of the method's plan the map covers, when a pass budget or the deadline
    /// (with `anytime`) cut it short; absent for a complete map.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coverage: Option<Coverage>,
}

/// Wall-clock time per stage, in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct StageTimings {
    /// Admission to the clean pass starting.
    pub queue_ms: f64,
    /// The clean pass (extractor + head).
    pub features_ms: f64,
    /// First masked batch dispatched to last masked result.
    pub masked_ms: f64,
    /// Weights, sum and upsampling into maps.
    pub combine_ms: f64,
    /// Faithfulness metrics' passes (0 unless asked for).
    pub metrics_ms: f64,
    pub total_ms: f64,
}

/// A computed explanation, before rendering.
pub struct Explanation {
    pub model: Arc<EngineModel>,
    pub method: Method,
    pub rendering: Rendering,
    /// Logits of the clean pass.
    pub logits: Vec<f32>,
    /// The explained classes, in the order of `maps` (0 for an embedding's reference).
    pub targets: Vec<usize>,
    /// What answers say of the targets besides their class.
    pub target_info: TargetInfo,
    pub maps: Vec<Saliency>,
    /// Per target, when metrics were asked for.
    pub metrics: Option<Vec<Faithfulness>>,
    pub stats: RunStats,
    pub timings: StageTimings,
    /// The decoded upload (for overlays and its own resolution); `None` for a tensor input.
    pub(crate) image: Option<(RgbImage, Preprocessed)>,
    /// What the model saw of the photo's EXIF orientation.
    pub exif_orientation: ExifOrientation,
}

/// What answers report of an explanation's targets besides their classes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TargetInfo {
    /// Each target's score on the clean pass: its probability (a segmenter's class
    /// probability averaged over the region; an embedding's cosine similarity to the
    /// reference; a detection target's box score).
    pub scores: Vec<f32>,
    /// A detection target's box, in model-input pixels.
    pub boxes: Vec<Option<[f32; 4]>>,
    /// A segmentation target's region, as plane indices of the head's output grid.
    pub regions: Vec<Option<Arc<[u32]>>>,
    /// A detector's detections on the clean pass (model-input pixels).
    pub detections: Option<Vec<Detection>>,
}

impl Explanation {
    /// The clean pass's per-class scores, as the model's head defines them
    /// (`HeadKind::class_scores`: probabilities, or a segmenter's pixel shares).
    pub fn probabilities(&self) -> Vec<f32> {
        self.model.package.head().class_scores(&self.logits)
    }
}

impl std::fmt::Debug for Explanation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Explanation")
            .field("model", &self.model.name())
            .field("method", &self.method.to_string())
            .field("targets", &self.targets)
            .field("stats", &self.stats)
            .finish()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    pub index: usize,
    pub label: String,
    /// The class's probability (softmax, or sigmoid for a multi-label or binary head); for
    /// a segmenter the share of output pixels it assigns to the class (a target: the class
    /// probability averged over its region); for an embedding's target the cosine
    /// similarity to the reference.
    pub score: f32,
}

/// One detection of a detector, on the upright photo (on the model's input for a tensor
/// input).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DetectedBox {
    pub index: usize,
    pub label: String,
    /// The class probability (× objectness where the format has one).
    pub score: f32,
    /// x1, y1, x2, y2 in pixels.
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
}

/// One target's map in the JSON document.
#[derive(Clone, Debug, Serialize)]
pub struct TargetMap {
    pub target: Prediction,
    /// A detection target's box (x1, y1, x2, y2 on the upright photo).
    #[serde(rename = "box", skip_serializing_if = "Option::is_none")]
    pub bbox: Option<[f32; 4]>,
    pub saliency: Map,
    /// Faithfulness of this map (when asked for with `metrics=true`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Faithfulness>,
}

/// The JSON document of an explanation (CLI and HTTP alike).
#[derive(Clone, Debug, Serialize)]
pub struct ExplainDocument {
    pub model: String,
    pub method: String,
    /// The numerical convention the method follows (docs/presets.md).
    pub preset: String,
    /// The method and every parameter it ran with.
    pub method_parameters: Method,
    /// Whether the model saw the photo turned upright by its EXIF tag (`apply`) or as
    /// stored (`ignore`); maps at the upload's resolution are upright either way.
    pub exif_orientation: ExifOrientation,
    pub predictions: Vec<Prediction>,
    /// A detector's detections on the clean pass (after non-maximum suppression).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detections: Option<Vec<DetectedBox>>,
    pub explanations: Vec<TargetMap>,
    pub stats: RunStats,
    pub timings_ms: StageTimings,
}

/// What an image response shows, besides the pixels (headers, the stream's result event).
#[derive(Clone, Debug, Serialize)]
pub struct ImageSummary {
    pub model: String,
    pub method: String,
    pub preset: String,
    /// The explained target (the first one when several were asked for).
    pub target: Prediction,
    /// A detection target's box (x1, y1, x2, y2 on the upright photo).
    #[serde(rename = "box", skip_serializing_if = "Option::is_none")]
    pub bbox: Option<[f32; 4]>,
    /// A detector's detections on the clean pass.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detections: Option<Vec<DetectedBox>>,
    /// The target's faithfulness, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Faithfulness>,
    pub predictions: Vec<Prediction>,
    pub stats: RunStats,
    pub timings_ms: StageTimings,
    /// As [`ExplainDocument::exif_orientation`].
    pub exif_orientation: ExifOrientation,
}

/// A rendered PNG (overlay or heatmap).
#[derive(Clone, Debug)]
pub struct RenderedPng {
    pub png: Vec<u8>,
    pub width: u32,
    pub height: u32,
    pub summary: ImageSummary,
}

/// An explanation in the form asked for.
#[derive(Clone, Debug)]
pub enum Rendered {
    Png(Box<RenderedPng>),
    Json(Box<ExplainDocument>),
}

#[derive(Clone, Debug, Serialize)]
pub struct PredictDocument {
    pub model: String,
    /// The top k classes (empty for an embedding model).
    pub predictions: Vec<Prediction>,
    /// An embedding model's output: its Euclidean norm and length.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embedding: Option<EmbeddingSummary>,
    /// A detector's detections (after non-maximum suppression), the top k.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detections: Option<Vec<DetectedBox>>,
    pub timings_ms: PredictTimings,
    /// Whether the model saw the photo turned upright by its EXIF tag.
    pub exif_orientation: ExifOrientation,
}

/// What a prediction says of an embedding model's output.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct EmbeddingSummary {
    pub dim: usize,
    pub norm: f32,
}

impl EmbeddingSummary {
    pub fn of(output: &[f32]) -> Self {
        let norm = output.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>().sqrt() as f32;
        Self { dim: output.len(), norm }
    }
}

#[derive(Clone, Copy, Debug, Serialize)]
pub struct PredictTimings {
    pub decode_ms: f64,
    pub inference_ms: f64,
}

/// The k highest logits' indices, highest first (ties by index).
pub fn top_k(logits: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..logits.len()).collect();
    idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    idx.truncate(k.min(logits.len()));
    idx
}

/// The k most probable classes, most probable first, scored by the head's class scores
/// (`scores`: softmax or sigmoid probabilities, a segmenter's pixel shares). A classifier's
/// classes are ranked by logit (probabilities far in the tail tie at 0), the others by
/// their scores.
pub fn predictions(head: HeadKind, output: &[f32], scores: &[f32], labels: &[String], k: usize) -> Vec<Prediction> {
    let rank = if matches!(head, HeadKind::Classes { .. }) && !head.is_binary() { output } else { scores };
    top_k(rank, k)
        .into_iter()
        .map(|i| Prediction { index: i, label: labels.get(i).cloned().unwrap_or_default(), score: scores[i] })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_orders_by_logit_then_index() {
        assert_eq!(top_k(&[0.1, 0.9, 0.5, 0.9], 3), vec![1, 3, 2]);
        assert_eq!(top_k(&[1.0, 2.0], 5), vec![1, 0]);
    }
}
