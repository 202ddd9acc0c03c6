//! The JSON document an explanation returns (the CLI and HTTP API share it).

use serde::Serialize;

use crate::cam::faithfulness::Faithfulness;
use crate::cam::{Map, Method, softmax};
use crate::engine::{RunStats, StageTimings};

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Prediction {
    pub index: usize,
    pub label: String,
    /// Softmax probability.
    pub score: f32,
}

#[derive(Clone, Debug, Serialize)]
pub struct Explanation {
    pub target: Prediction,
    pub saliency: Map,
    /// Faithfulness of this map (when asked for with `metrics=true`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Faithfulness>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ExplainDocument {
    pub model: String,
    pub method: String,
    /// The numerical convention the method follows (see scorecam-presets.md).
    pub preset: String,
    /// The method and every parameter it ran with.
    pub method_parameters: Method,
    pub predictions: Vec<Prediction>,
    pub explanations: Vec<Explanation>,
    pub stats: RunStats,
    pub timings_ms: StageTimings,
}

/// The k most probable classes, most probable first.
pub fn predictions(logits: &[f32], labels: &[String], k: usize) -> Vec<Prediction> {
    let probs = softmax(logits);
    crate::engine::top_k(logits, k)
        .into_iter()
        .map(|i| Prediction { index: i, label: labels.get(i).cloned().unwrap_or_default(), score: probs[i] })
        .collect()
}
