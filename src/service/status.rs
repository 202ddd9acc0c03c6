//! What the faces ask of the service besides requests: readiness, draining, the models'
//! details, and a snapshot of the counters for `/metrics`. Each is answered here, once,
//! from the engine and the repository, so no face reads either.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::Serialize;

use super::{Service, ServiceError};
use crate::cam::{Activation, DetectionFormat, HeadKind};
use crate::engine::EngineModel;
use crate::engine::stats::Histogram;
use crate::model::{ModelPackage, Quantization, ResizeMode};

/// The service takes work: every worker alive, not draining, at least one model ready.
#[derive(Clone, Debug, Serialize)]
pub struct Readiness {
    pub status: &'static str,
    /// The ready models, by name.
    pub models: Vec<String>,
    /// Each ready model's execution provider.
    pub providers: serde_json::Map<String, serde_json::Value>,
    /// Workers alive.
    pub workers: usize,
}

/// What `GET /models`, `GET /models/{name}`, `scorecam models` and the inference
/// protocols' metadata show of one package.
#[derive(Clone, Debug, Serialize)]
pub struct ModelSummary {
    pub name: String,
    /// `ready`, or `failed` (then `error` says why and nothing else is known).
    pub state: &'static str,
    /// Which load of this package this is (it grows when the package changes on disk).
    pub version: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub details: Option<ModelDetails>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ModelDetails {
    pub description: String,
    pub input: InputSummary,
    pub target_layer: LayerSummary,
    pub channels: usize,
    pub labels: usize,
    pub execution_provider: &'static str,
    pub batch_size: usize,
    /// The graphs take one image per run (a batch runs image by image).
    pub one_image_per_run: bool,
    pub workers: usize,
    /// Bytes of the two ONNX graphs: roughly what each worker's sessions hold in memory.
    pub weights_bytes: u64,
    /// Estimated memory of the model across the workers (`weights_bytes` × workers).
    pub memory_bytes: u64,
    pub source: String,
    pub license: String,
    /// What the head returns.
    pub head: HeadSummary,
    /// The package approximates another (its graphs quantised): its maps are close to that
    /// package's, not equal, by the measured `quantization.fidelity`.
    pub approximate: bool,
    /// How it was quantised and the measured fidelity of its maps (approximate packages).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quantization: Option<Quantization>,
}

#[derive(Clone, Debug, Serialize)]
pub struct InputSummary {
    pub width: usize,
    pub height: usize,
    pub resize: ResizeMode,
    /// Planes of the model's input tensor (N×C×H×W): 1 (grey) or 3 (RGB).
    pub channels: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct LayerSummary {
    pub description: String,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    /// The head computes the output from the target layer; false for a pass-through head
    /// (head-only methods refused).
    pub head_reads: bool,
}

/// The head's output as a client sees it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct HeadSummary {
    /// `classes`, `segmentation`, `embedding` or `detection`.
    pub kind: &'static str,
    /// Per-class scores a prediction gives per image (classes; 0 for an embedding).
    pub outputs: usize,
    /// `softmax` or `sigmoid` (classifiers and segmenters).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub activation: Option<Activation>,
    /// A segmenter's output grid (height, width).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grid: Option<[usize; 2]>,
    /// An embedding's length.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dim: Option<usize>,
    /// A detector's output format and raw proposals.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<DetectionFormat>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proposals: Option<usize>,
    /// Tensors besides the target layer that the head takes (skip connections).
    pub side_inputs: Vec<String>,
}

impl HeadSummary {
    fn of(p: &ModelPackage) -> Self {
        let head = p.head();
        let mut s = HeadSummary {
            kind: head.name(),
            outputs: head.classes(),
            side_inputs: p.wiring.sides.iter().map(|s| s.name.clone()).collect(),
            ..Default::default()
        };
        match head {
            HeadKind::Classes { activation, .. } => s.activation = Some(activation),
            HeadKind::Segmentation { height, width, activation, .. } => {
                (s.activation, s.grid) = (Some(activation), Some([height, width]));
            }
            HeadKind::Embedding { dim } => s.dim = Some(dim),
            HeadKind::Detection(d) => (s.format, s.proposals) = (Some(d.format), Some(d.proposals)),
        }
        s
    }
}

/// Every package, and which one a request that names none gets.
#[derive(Clone, Debug, Serialize)]
pub struct Catalog {
    /// The model a request that names none gets (`null` when none is ready).
    pub default: Option<String>,
    /// The configured default, when it differs from `default` (it is not available).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub configured_default: Option<String>,
    pub models: Vec<ModelSummary>,
}

/// A histogram as exported: (upper bound, cumulative count) per bucket, the sum, the count.
#[derive(Clone, Debug)]
pub struct HistogramSnapshot {
    pub buckets: Vec<(f64, u64)>,
    pub sum: f64,
    pub count: u64,
}

impl From<&Histogram> for HistogramSnapshot {
    fn from(h: &Histogram) -> Self {
        let (buckets, sum, count) = h.snapshot();
        Self { buckets, sum, count }
    }
}

/// One counter or gauge: its exported name, help text and value.
#[derive(Clone, Copy, Debug)]
pub struct Figure {
    pub name: &'static str,
    pub help: &'static str,
    pub value: u64,
}

/// The service's and the engine's counters at one moment, for `/metrics`.
#[derive(Clone, Debug)]
pub struct MetricsSnapshot {
    /// Explanation time per stage (queue, features, masked, combine, metrics, total).
    pub stage_seconds: Vec<(&'static str, HistogramSnapshot)>,
    /// Inputs per forward pass.
    pub batch_size: HistogramSnapshot,
    pub counters: Vec<Figure>,
    pub gauges: Vec<Figure>,
}

impl Service {
    /// Ready to take work, or why not.
    pub fn readiness(&self) -> Result<Readiness, String> {
        let engine = &self.engine;
        if engine.is_draining() {
            return Err("draining for shutdown".into());
        }
        let (alive, workers) = (engine.stats().workers_alive(), engine.config().workers);
        if alive < workers {
            return Err(format!("{alive} of {workers} workers alive"));
        }
        let ready = self.models.ready();
        if ready.is_empty() {
            return Err("no model is ready".into());
        }
        Ok(Readiness {
            status: "ready",
            models: ready.iter().map(|m| m.name().to_string()).collect(),
            providers: ready.iter().map(|m| (m.name().to_string(), m.provider.as_str().into())).collect(),
            workers: alive,
        })
    }

    /// Whether the model `name` takes requests now: the engine is ready and the model
    /// loaded (an unknown or failed model is an error, as for a request).
    pub fn model_ready(&self, name: &str) -> Result<(String, bool), ServiceError> {
        let model = self.models.get(name)?;
        Ok((model.name().to_string(), self.engine.is_ready()))
    }

    /// Stops admitting new work and waits up to `grace` for admitted work to finish;
    /// returns whether it all did.
    pub async fn drain(&self, grace: Duration) -> bool {
        self.engine.drain(grace).await
    }

    /// Requests admitted and not yet finished.
    pub fn in_flight(&self) -> usize {
        self.engine.in_flight()
    }

    /// Every package, ready or failed, with its details.
    pub fn catalog(&self) -> Catalog {
        let default = self.default_model();
        let configured_default =
            self.models.configured_default().filter(|c| default.as_deref() != Some(*c)).map(str::to_string);
        let models = self.models.list().into_iter().map(|s| self.summary(s)).collect();
        Catalog { default, configured_default, models }
    }

    /// One package's summary (404 for a name the repository does not have).
    pub fn model_summary(&self, name: &str) -> Result<ModelSummary, ServiceError> {
        match self.models.list().into_iter().find(|s| s.name == name) {
            Some(s) => Ok(self.summary(s)),
            None => Err(self.models.get(name).err().unwrap_or_else(|| ServiceError::Internal(name.into()))),
        }
    }

    /// The summary of a ready model (its details always present), refused like a request
    /// for it.
    pub fn ready_model(&self, name: &str) -> Result<(ModelSummary, ModelDetails), ServiceError> {
        let model = self.model(Some(name))?;
        let summary = self.model_summary(model.name())?;
        let details =
            summary.details.clone().ok_or_else(|| ServiceError::Internal("a ready model has details".into()))?;
        Ok((summary, details))
    }

    fn summary(&self, s: super::ModelStatus) -> ModelSummary {
        let workers = self.engine.config().workers;
        let details = s.model.as_deref().map(|m| details(m, workers));
        ModelSummary { name: s.name, state: s.state, version: s.version, error: s.error, details }
    }

    /// The counters of the service, its cache and the engine, now.
    pub fn metrics(&self) -> MetricsSnapshot {
        let (engine, service, cache) = (self.engine.stats(), &self.stats, &self.cache);
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let figure = |name, help, value| Figure { name, help, value };
        let counters = vec![
            figure("scorecam_masked_passes_total", "Masked forward passes executed.", load(&engine.masked_passes)),
            figure(
                "scorecam_head_passes_total",
                "Head-only passes executed (Ablation-CAM, Recipro-CAM, the head probe).",
                load(&engine.head_passes),
            ),
            figure("scorecam_clean_passes_total", "Clean forward passes executed.", load(&engine.clean_passes)),
            figure(
                "scorecam_skipped_channels_total",
                "Constant channels that needed no pass of their own.",
                load(&service.skipped_channels),
            ),
            figure(
                "scorecam_shared_mask_channels_total",
                "Channels whose mask repeated another channel's, so they reused its passes.",
                load(&service.shared_mask_channels),
            ),
            figure(
                "scorecam_partial_explanations_total",
                "Explanations answered with a partial map (max_passes, or anytime at the deadline).",
                load(&service.partial_explanations),
            ),
            figure("scorecam_cache_hits_total", "Explanations answered from the result cache.", load(&cache.hits)),
            figure(
                "scorecam_cache_misses_total",
                "Explanations looked up in the result cache and computed.",
                load(&cache.misses),
            ),
            figure("scorecam_rejected_jobs_total", "Jobs refused at admission (429).", load(&engine.rejected)),
            figure(
                "scorecam_refused_deadline_total",
                "Explanations refused (429) because they could not finish before their deadline.",
                load(&engine.refused),
            ),
            figure(
                "scorecam_ended_early_total",
                "Admitted explanations ended before their passes because they could no longer make their deadline.",
                load(&engine.ended_early),
            ),
            figure(
                "scorecam_cancelled_jobs_total",
                "Jobs cancelled because the client went away.",
                load(&engine.cancelled),
            ),
        ];
        let gauges = vec![
            figure(
                "scorecam_queue_depth",
                "Jobs admitted and waiting to run.",
                engine.queued_jobs.load(Ordering::Relaxed) as u64,
            ),
            figure(
                "scorecam_jobs_running",
                "Jobs being scheduled.",
                engine.running_jobs.load(Ordering::Relaxed) as u64,
            ),
            figure("scorecam_workers_alive", "Workers with live sessions.", engine.workers_alive() as u64),
            figure(
                "scorecam_backlog_milliseconds",
                "Admitted work not yet run, in milliseconds of the engine (from the measured rates).",
                (engine.backlog_seconds() * 1e3) as u64,
            ),
            figure("scorecam_ready", "1 when the server accepts work.", u64::from(self.engine.is_ready())),
            figure("scorecam_cache_bytes", "Bytes the result cache holds.", cache.bytes() as u64),
            figure("scorecam_cache_entries", "Explanations the result cache holds.", cache.len() as u64),
        ];
        MetricsSnapshot {
            stage_seconds: service.stage_seconds.iter().map(|(s, h)| (*s, h.into())).collect(),
            batch_size: (&engine.batch_size).into(),
            counters,
            gauges,
        }
    }
}

fn details(m: &EngineModel, workers: usize) -> ModelDetails {
    let p = &m.package;
    let [c, h, w] = p.info.input_chw;
    let [k, fh, fw] = p.info.feature_khw;
    let weights_bytes = p.weights_bytes();
    ModelDetails {
        description: p.manifest.description.clone(),
        input: InputSummary { width: w, height: h, resize: p.manifest.input.resize, channels: c },
        target_layer: LayerSummary {
            description: p.manifest.target_layer.description.clone(),
            channels: k,
            height: fh,
            width: fw,
            head_reads: p.manifest.target_layer.head_reads,
        },
        channels: k,
        labels: p.labels.len(),
        execution_provider: m.provider.as_str(),
        batch_size: m.max_batch,
        one_image_per_run: p.info.one_image_per_run,
        workers,
        weights_bytes,
        memory_bytes: weights_bytes * workers as u64,
        source: p.manifest.source.clone(),
        license: p.manifest.license.clone(),
        head: HeadSummary::of(p),
        approximate: p.manifest.quantization.is_some(),
        quantization: p.manifest.quantization.clone(),
    }
}
