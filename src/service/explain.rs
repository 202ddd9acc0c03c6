//! One explanation from a request to its result, in named stages: validate against the
//! model and decode (`prepare`); then `run`: the cache, the clean pass, the targets, the
//! method's plan, the masked passes, the maps, the metrics follow-up; then `render`.
//! Predictions and the faithfulness of given maps take the same road's first stages.

use std::sync::Arc;
use std::time::Instant;

use image::RgbImage;

use super::cache::{self, CacheOutcome, CachedResult};
use super::progress::{Progress, Stage, StageObserver};
use super::request::{ExplainRequest, ImageInput, MAX_JSON_MAP_VALUES, OutputFormat, PredictRequest, Resolution};
use super::result::{
    DetectedBox, EmbeddingSummary, Explanation, PredictDocument, PredictTimings, Rendered, RunStats, StageTimings,
    TargetInfo, predictions,
};
use super::targets::detections;
use super::{Deadline, Service, ServiceError};
use crate::cam::faithfulness::{Faithfulness, MetricPlan};
use crate::cam::{
    self, Activations, Graph, HeadKind, MaskPlan, PassSet, PlanPrefix, Readout, Saliency, Target, TargetScores,
};
use crate::engine::{Admission, Demand, EngineModel, JobTiming, PassCounts, PassObserver, PassScores, RunOptions};
use crate::imaging::{self, ImageLimits, ImagingError, Orientation, Preprocessed};
use crate::model::ExifOrientation;

/// A request checked against its model and its image decoded, ready to run: the split
/// lets a streaming face answer bad parameters and undecodable images with a plain error
/// status before it starts streaming.
pub struct Prepared {
    model: Arc<EngineModel>,
    request: ExplainRequest,
    deadline: Option<Deadline>,
    tensor: Arc<[f32]>,
    image: Option<(RgbImage, Preprocessed)>,
    /// What the model saw of the photo's EXIF orientation.
    exif: ExifOrientation,
}

impl Prepared {
    pub(super) fn model(&self) -> &Arc<EngineModel> {
        &self.model
    }

    pub(super) fn tensor(&self) -> Arc<[f32]> {
        self.tensor.clone()
    }

    /// The request's method cannot run on this model, and why.
    pub(super) fn unsupported(&self, reason: String) -> ServiceError {
        unsupported_by(&self.model, &self.request, reason)
    }

    pub(super) fn request(&self) -> &ExplainRequest {
        &self.request
    }

    pub(super) fn exif(&self) -> ExifOrientation {
        self.exif
    }

    pub(super) fn deadline_at(&self) -> Option<Instant> {
        self.deadline.map(|d| d.at)
    }

    /// How the photo was preprocessed (`None` for a tensor input).
    pub(super) fn preprocessed(&self) -> Option<&Preprocessed> {
        self.image.as_ref().map(|(_, pre)| pre)
    }
}

/// Predictions a request that does not say gets.
const DEFAULT_TOP_K: usize = 5;

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn invalid(message: String) -> ServiceError {
    ServiceError::InvalidParameter(message)
}

/// Checks an explanation request against the model it will run on.
fn validate(
    model: &EngineModel,
    r: &ExplainRequest,
    image: &ImageInput,
    known_head: Option<super::closed_form::Measured>,
) -> Result<(), ServiceError> {
    let head = model.package.head();
    super::targets::check(head, r)?;
    r.method.check(model.package.info.feature_khw[0]).map_err(invalid)?;
    if r.method.graph() == Graph::Head && !model.package.manifest.target_layer.head_reads {
        return Err(unsupported_by(
            model,
            r,
            "its head graph does not read the target layer (the package was cut at a tensor the graph does not \
             separate at, or at a derived one, so its extractor computes the model's outputs too), and this method \
             runs the head alone on changed activations; use scorecam, sscam, iscam, rise or eigencam, or cut the \
             model where it separates (scripts/tools/split_model.py --list-layers)"
                .into(),
        ));
    }
    if r.method.needs_linear_head() {
        let unsupported = |reason: String| unsupported_by(model, r, reason);
        if !matches!(head, HeadKind::Classes { .. }) {
            return Err(unsupported(format!(
                "the closed-form gradient methods need a classifier's linear head, and this model's head is `{}`; \
                 use scorecam, ablationcam, reciprocam, rise or eigencam",
                head.name()
            )));
        }
        if model.package.info.feature_extra() > 0 {
            return Err(unsupported(
                "its head reads more than the target layer's grid (a transformer's prefix tokens, or tensors from \
                 before the cut such as skip connections), so it is not global average pooling followed by a \
                 linear layer, and the gradient-family methods have no closed form for it; use scorecam, \
                 ablationcam, reciprocam, rise or eigencam"
                    .into(),
            ));
        }
        if let Some(Err(reason)) = known_head {
            return Err(unsupported(reason));
        }
    }
    let rendering = &r.rendering;
    if rendering.resolution == Resolution::Feature && !r.method.has_feature_map() {
        return Err(invalid(format!("`{}` has no feature-resolution map; use resolution=input or model", r.method)));
    }
    if rendering.format == OutputFormat::Png && rendering.resolution != Resolution::Input {
        return Err(invalid(
            "the png overlay is drawn at the uploaded image's size; use format=heatmap or json for other resolutions"
                .into(),
        ));
    }
    if rendering.format == OutputFormat::Png && matches!(image, ImageInput::Tensor(_)) {
        return Err(invalid("a tensor input has no image to draw on; use format=heatmap or json".into()));
    }
    Ok(())
}

/// The request's method cannot run on this model, and why.
fn unsupported_by(model: &EngineModel, r: &ExplainRequest, reason: String) -> ServiceError {
    ServiceError::UnsupportedByModel { method: r.method.name().into(), model: model.name().into(), reason }
}

/// Decodes and preprocesses (CPU work: runs on the blocking pool). `exif` says whether
/// the model sees a photo turned upright by its EXIF tag; the photo kept for drawing is
/// upright either way, and the preprocessed image knows how to turn maps onto it.
pub(super) async fn decode(
    image: ImageInput,
    limits: ImageLimits,
    model: Arc<EngineModel>,
    exif: ExifOrientation,
) -> Result<(Arc<[f32]>, Option<(RgbImage, Preprocessed)>), ServiceError> {
    tokio::task::spawn_blocking(move || {
        let spec = &model.package.manifest.input;
        // A model that takes RGBA reads the photo's alpha too (a second decode).
        let mut alpha = None;
        let (stored, orientation) = match image {
            ImageInput::Encoded(bytes) => {
                if spec.channels == 4 {
                    alpha = imaging::decode_alpha(&bytes, &limits)?;
                }
                imaging::decode_stored(&bytes, &limits)?
            }
            ImageInput::Pixels(rgb) => (within_limits(rgb, &limits)?, Orientation::NoTransforms),
            ImageInput::Tensor(t) => {
                let [c, h, w] = model.package.info.input_chw;
                if t.len() != c * h * w {
                    return Err(invalid(format!("the tensor has {} values; the model takes {c}×{h}×{w}", t.len())));
                }
                return Ok((t.into(), None));
            }
        };
        let (upright, pre) = match exif {
            ExifOrientation::Apply => {
                let upright = imaging::orient(stored, orientation);
                let alpha = alpha.map(|a| imaging::orient_alpha(a, orientation));
                let pre = imaging::preprocess_rgba(&upright, alpha.as_ref(), spec);
                (upright, pre)
            }
            ExifOrientation::Ignore => {
                let mut pre = imaging::preprocess_rgba(&stored, alpha.as_ref(), spec);
                pre.map_orientation = orientation;
                (imaging::orient(stored, orientation), pre)
            }
        };
        Ok((pre.tensor.clone().into(), Some((upright, pre))))
    })
    .await
    .map_err(|e| ServiceError::Internal(format!("decoding task failed: {e}")))?
}

/// Raw pixels are held to the decoder's limits too, whichever face sent them.
fn within_limits(rgb: RgbImage, limits: &ImageLimits) -> Result<RgbImage, ImagingError> {
    let (w, h) = rgb.dimensions();
    let pixels = u64::from(w) * u64::from(h);
    if w > limits.max_width || h > limits.max_height || pixels > limits.max_pixels {
        return Err(ImagingError::TooLarge(format!(
            "{w}×{h} pixels is over the limits ({}×{}, {} pixels)",
            limits.max_width, limits.max_height, limits.max_pixels
        )));
    }
    Ok(rgb)
}

/// Runs CPU work off the async threads.
pub(super) async fn blocking<T: Send + 'static>(
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ServiceError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| ServiceError::Internal(format!("{what} failed: {e}")))
}

pub(super) fn options(p: &Prepared, progress: Option<&Arc<Progress>>, stage: Stage) -> RunOptions {
    RunOptions {
        deadline: p.deadline.map(|d| d.at),
        observer: progress.map(|p| Arc::new(StageObserver { progress: p.clone(), stage }) as Arc<dyn PassObserver>),
        fault: p.request.fault,
        partial_at_deadline: false,
    }
}

/// What an explanation asks of the engine: its deadline, whether a partial map will do,
/// and its kind of work (the engine learns the passes of each kind per model: the method
/// with its parameters, the pass budget and the metrics change them).
fn demand(p: &Prepared) -> Demand {
    let r = &p.request;
    Demand {
        deadline: p.deadline_at(),
        partial_ok: r.anytime,
        label: format!("{} max_passes={:?} metrics={}", r.method, r.max_passes, r.metrics),
    }
}

/// A cached result as this request's explanation: its own rendering and upload, no pass.
fn from_cache(p: Prepared, hit: &CachedResult, started: Instant) -> Explanation {
    let stats = RunStats {
        forward_passes: 0,
        head_passes: 0,
        metric_passes: 0,
        batch_size: 0,
        cache: CacheOutcome::Hit,
        ..hit.stats
    };
    Explanation {
        model: p.model,
        method: p.request.method,
        rendering: p.request.rendering,
        logits: hit.logits.clone(),
        targets: hit.targets.clone(),
        target_info: hit.target_info.clone(),
        maps: hit.maps.clone(),
        metrics: hit.metrics.clone(),
        stats,
        timings: StageTimings { total_ms: ms(started.elapsed()), ..Default::default() },
        image: p.image,
        exif_orientation: p.exif,
    }
}

/// How long before an anytime request's deadline its passes stop: a tenth of the
/// deadline, within 50 ms..1 s.
fn anytime_margin(timeout_ms: u64) -> std::time::Duration {
    std::time::Duration::from_millis((timeout_ms / 10).clamp(50, 1000))
}

/// Each target's scores over every pass of the plan, in the combine's terms (`clean`: each
/// target's (score, probability) on the clean input).
fn target_scores(scores: Vec<PassScores>, targets: &[Target], clean: &[(f32, f32)], len: usize) -> Vec<TargetScores> {
    scores
        .into_iter()
        .zip(targets.iter().zip(clean))
        .map(|(mut s, (t, &(clean_logit, _)))| {
            s.logits.resize(len, 0.0);
            s.probs.resize(len, 0.0);
            TargetScores { class: t.class(), clean_logit, logits: s.logits, probs: s.probs }
        })
        .collect()
}

/// What answers say of the targets: their clean scores, boxes, and a detector's
/// detections.
fn target_info(p: &Prepared, readout: &Readout, clean: &[(f32, f32)], output: &[f32]) -> TargetInfo {
    let spec = &p.request.detection;
    TargetInfo {
        scores: clean.iter().map(|&(_, probability)| probability).collect(),
        boxes: readout.targets().iter().map(Target::bbox).collect(),
        regions: readout.targets().iter().map(Target::region).collect(),
        detections: detections(
            p.model.package.head(),
            output,
            (spec.score_threshold, spec.iou_threshold),
            p.model.package.nms(),
        ),
    }
}

/// The clean pass's outputs.
struct Clean {
    features: Vec<f32>,
    logits: Vec<f32>,
    timing: JobTiming,
}

/// The masked passes' outcome: per target, its scores over the whole plan (zero where a
/// pass did not run), and which passes ran.
struct Masked {
    scores: Vec<TargetScores>,
    done: Vec<bool>,
    /// The deadline (anytime) cut the passes short.
    cut: bool,
    counts: PassCounts,
    timing: JobTiming,
}

impl Service {
    /// Validates the request against its model and decodes the image.
    pub async fn prepare(&self, request: ExplainRequest, image: ImageInput) -> Result<Prepared, ServiceError> {
        let model = self.model(request.model.as_deref())?;
        let known_head = if request.method.needs_linear_head() { self.linear_heads.known(&model) } else { None };
        validate(&model, &request, &image, known_head)?;
        let deadline = self.deadline(request.timeout_ms)?;
        let exif = request.exif_orientation.unwrap_or(model.package.manifest.input.exif_orientation);
        let (tensor, image) = decode(image, self.config.limits.clone(), model.clone(), exif).await?;
        let [_, h, w] = model.package.info.input_chw;
        let size = image.as_ref().map_or((w as u32, h as u32), |(upright, _)| upright.dimensions());
        if let Some(region) = &request.region {
            super::targets::check_region(region, size)?;
        }
        if let Some(b) = request.detection.bbox {
            super::targets::check_box(b, size)?;
        }
        if let Some((_, pre)) = &image {
            let values = pre.original_width as usize * pre.original_height as usize * request.targets.len();
            let r = &request.rendering;
            if r.format == OutputFormat::Json && r.resolution == Resolution::Input && values > MAX_JSON_MAP_VALUES {
                return Err(invalid(format!(
                    "a JSON map at the upload's {}×{} resolution would carry {values} values (limit \
                     {MAX_JSON_MAP_VALUES}); ask for resolution=model, or a PNG",
                    pre.original_width, pre.original_height
                )));
            }
        }
        Ok(Prepared { model, request, deadline, tensor, image, exif })
    }

    /// Runs a prepared explanation: every pass, every map, the metrics when asked; or,
    /// when the same input was explained the same way before, the cached result.
    pub async fn run(&self, prepared: Prepared, progress: Option<Arc<Progress>>) -> Result<Explanation, ServiceError> {
        let started = Instant::now();
        // An injected fault must reach the engine; anything else may be answered from
        // the cache.
        let key = if self.cache.enabled() && prepared.request.fault.is_none() {
            let (model, request, tensor) = (prepared.model.clone(), prepared.request.clone(), prepared.tensor.clone());
            Some(blocking("hashing", move || cache::key(&model, &request, &tensor)).await?)
        } else {
            None
        };
        if let Some(hit) = key.as_ref().and_then(|k| self.cache.get(k)) {
            return Ok(from_cache(prepared, &hit, started));
        }
        let (deadline, anytime) = (prepared.deadline, prepared.request.anytime);
        let (mut explanation, cut_by_deadline) =
            Deadline::bound(deadline, anytime, self.run_unbounded(prepared, progress)).await?;
        // A map the deadline cut short depends on the machine's speed: never cached.
        if let Some(key) = key.filter(|_| !cut_by_deadline) {
            explanation.stats.cache = CacheOutcome::Miss;
            self.cache.put(
                key,
                CachedResult {
                    logits: explanation.logits.clone(),
                    targets: explanation.targets.clone(),
                    target_info: explanation.target_info.clone(),
                    maps: explanation.maps.clone(),
                    metrics: explanation.metrics.clone(),
                    stats: explanation.stats,
                },
            );
        }
        Ok(explanation)
    }

    /// The explanation, and whether the deadline cut its passes short (`anytime`).
    async fn run_unbounded(
        &self,
        p: Prepared,
        progress: Option<Arc<Progress>>,
    ) -> Result<(Explanation, bool), ServiceError> {
        let started = Instant::now();
        let admission = self.engine.admit(&p.model, demand(&p)).await?;
        let clean = self.clean(&admission, &p, progress.as_ref()).await?;
        let targets = self.targets(&admission, &p, &clean.logits).await?;
        let readout = Arc::new(Readout::new(p.model.package.head(), targets));
        let clean_reads = readout.read(&clean.logits);
        let (plan, probe_passes) = self.plan(&admission, &p, clean.features).await?;
        let masked = self.masked(&admission, &p, &plan, &readout, &clean_reads, progress.as_ref()).await?;
        let t = Instant::now();
        let mut stats = run_stats(&plan, &masked, probe_passes);
        let maps = combine(plan.clone(), masked.scores, masked.done).await?;
        let mut timings = StageTimings {
            queue_ms: ms(clean.timing.queued),
            features_ms: ms(clean.timing.running),
            masked_ms: ms(masked.timing.running),
            combine_ms: ms(t.elapsed()),
            ..Default::default()
        };
        // Past the deadline there is no time for the metrics' passes.
        let metrics = if p.request.metrics && !masked.cut {
            let t = Instant::now();
            let inputs = maps.iter().map(|m| m.input.data.clone()).collect();
            let (figures, passes) =
                self.faithfulness(&admission, &p, progress.as_ref(), inputs, &clean_reads, &readout).await?;
            stats.metric_passes = passes;
            timings.metrics_ms = ms(t.elapsed());
            Some(figures)
        } else {
            None
        };
        timings.total_ms = ms(started.elapsed());
        self.stats.observe(&stats, &timings);
        let target_info = target_info(&p, &readout, &clean_reads, &clean.logits);
        let explanation = Explanation {
            model: p.model,
            method: p.request.method,
            rendering: p.request.rendering,
            logits: clean.logits,
            targets: readout.targets().iter().map(Target::class).collect(),
            target_info,
            maps,
            metrics,
            stats,
            timings,
            image: p.image,
            exif_orientation: p.exif,
        };
        Ok((explanation, masked.cut))
    }

    /// The clean pass: the target layer's activations and the logits.
    async fn clean(
        &self,
        admission: &Admission<'_>,
        p: &Prepared,
        progress: Option<&Arc<Progress>>,
    ) -> Result<Clean, ServiceError> {
        let clean = admission.clean(p.tensor.clone(), &options(p, progress, Stage::Features)).await?;
        Ok(Clean { features: clean.features, logits: clean.logits, timing: clean.timing })
    }

    /// The method's plan from the clean activations (with the measured head, for the
    /// methods that need it), and the head passes measuring it took.
    async fn plan(
        &self,
        admission: &Admission<'_>,
        p: &Prepared,
        features: Vec<f32>,
    ) -> Result<(Arc<MaskPlan>, usize), ServiceError> {
        let method = p.request.method.clone();
        let (head, probe_passes) = if method.needs_linear_head() {
            let (head, passes) = self.linear_head(admission, p).await?;
            (Some(head), passes)
        } else {
            (None, 0)
        };
        let info = p.model.package.info;
        let plan = blocking("planning", move || {
            let [k, fh, fw] = info.feature_khw;
            let activations = Activations::with_extra(k, fh, fw, features);
            Arc::new(MaskPlan::new(&method, activations, info.input_chw).with_linear_head(head))
        })
        .await?;
        Ok((plan, probe_passes))
    }

    /// The plan's passes (a prefix of them under a pass budget; fewer if an anytime
    /// deadline cuts them), each read for the targets.
    async fn masked(
        &self,
        admission: &Admission<'_>,
        p: &Prepared,
        plan: &Arc<MaskPlan>,
        readout: &Arc<Readout>,
        clean: &[(f32, f32)],
        progress: Option<&Arc<Progress>>,
    ) -> Result<Masked, ServiceError> {
        // A pass budget runs the plan's first passes: its most important channels.
        let passes: Arc<dyn PassSet> = match p.request.max_passes {
            Some(n) if n < plan.len() => Arc::new(PlanPrefix { plan: plan.clone(), len: n }),
            _ => plan.clone(),
        };
        let ran = passes.len();
        let targets = readout.targets();
        if let Some(progress) = progress {
            let metric_passes = if p.request.metrics { MetricPlan::pass_count(targets.len()) } else { 0 };
            progress.begin_passes(plan.clone(), targets[0].class(), clean[0].0);
            progress.set_total(ran + metric_passes);
            progress.set_stage(Stage::Masked);
        }
        let mut masked_options = options(p, progress, Stage::Masked);
        if p.request.anytime {
            // Stop the passes a little before the deadline, so combining and rendering
            // the partial map still fit inside it.
            masked_options.partial_at_deadline = true;
            masked_options.deadline = p.deadline.map(|d| d.at - anytime_margin(d.ms));
        }
        let scored = admission.score(p.tensor.clone(), passes, readout.clone(), &masked_options).await?;
        // Which of the plan's passes ran: the budget's prefix, less any the deadline cut.
        let mut done = vec![false; plan.len()];
        match &scored.done {
            Some(d) => done[..ran].copy_from_slice(d),
            None => done[..ran].fill(true),
        }
        Ok(Masked {
            cut: scored.done.is_some(),
            scores: target_scores(scored.scores, targets, clean, plan.len()),
            done,
            counts: scored.counts,
            timing: scored.timing,
        })
    }

    /// The faithfulness passes of given maps (one per target, at the model's input
    /// resolution), under the request's admission.
    async fn faithfulness(
        &self,
        admission: &Admission<'_>,
        p: &Prepared,
        progress: Option<&Arc<Progress>>,
        maps: Vec<Vec<f32>>,
        clean: &[(f32, f32)],
        readout: &Arc<Readout>,
    ) -> Result<(Vec<Faithfulness>, usize), ServiceError> {
        let plan = Arc::new(MetricPlan::new(maps, p.model.package.info.input_chw));
        let scored = admission
            .score(p.tensor.clone(), plan.clone(), readout.clone(), &options(p, progress, Stage::Metrics))
            .await?;
        let figures = target_scores(scored.scores, readout.targets(), clean, plan.len())
            .iter()
            .enumerate()
            .map(|(i, s)| plan.evaluate(i, s, clean[i].1))
            .collect();
        Ok((figures, scored.counts.full))
    }

    /// Renders a computed explanation as it asked.
    pub async fn render(&self, explanation: Explanation) -> Result<Rendered, ServiceError> {
        blocking("rendering", move || super::render::render_explanation(explanation)).await?
    }

    /// Runs and renders a prepared explanation (the stream prepares first, to answer bad
    /// requests with a status before it starts).
    pub async fn finish(&self, prepared: Prepared, progress: Option<Arc<Progress>>) -> Result<Rendered, ServiceError> {
        let explanation = self.run(prepared, progress).await?;
        self.render(explanation).await
    }

    /// Validates, decodes and explains, unrendered (for faces that read the maps
    /// themselves: the inference protocol's tensors, `evaluate`).
    pub async fn explain_unrendered(
        &self,
        request: ExplainRequest,
        image: ImageInput,
        progress: Option<Arc<Progress>>,
    ) -> Result<Explanation, ServiceError> {
        let prepared = self.prepare(request, image).await?;
        self.run(prepared, progress).await
    }

    /// Validates, decodes, explains and renders.
    pub async fn explain(
        &self,
        request: ExplainRequest,
        image: ImageInput,
        progress: Option<Arc<Progress>>,
    ) -> Result<Rendered, ServiceError> {
        let prepared = self.prepare(request, image).await?;
        self.finish(prepared, progress).await
    }
}

/// A clean pass on its own (a prediction): the model that ran and what it said.
#[derive(Clone, Debug)]
pub struct Classified {
    pub model: String,
    pub logits: Vec<f32>,
    /// The head's probabilities (softmax or sigmoid).
    pub probabilities: Vec<f32>,
    pub timings: PredictTimings,
    /// What the model saw of the photo's EXIF orientation.
    pub exif_orientation: ExifOrientation,
    /// The model that ran (for its labels).
    source: Arc<EngineModel>,
    /// How the photo was fed to the model (to put a detector's boxes back on it).
    preprocessed: Option<Preprocessed>,
}

impl Classified {
    /// The k most probable classes, with their labels.
    pub fn top(&self, k: usize) -> Vec<super::Prediction> {
        predictions(self.source.package.head(), &self.logits, &self.probabilities, &self.source.package.labels, k)
    }

    /// An embedding model's output vector (`None` for other heads).
    pub fn embedding(&self) -> Option<Vec<f32>> {
        matches!(self.source.package.head(), HeadKind::Embedding { .. }).then(|| self.logits.clone())
    }

    /// A detector's k highest-scoring detections on the photo (`None` for other heads).
    pub fn detections(&self, k: usize, thresholds: (Option<f32>, Option<f32>)) -> Option<Vec<DetectedBox>> {
        let package = &self.source.package;
        let found = detections(package.head(), &self.logits, thresholds, package.nms())?;
        let on_photo = |b: [f32; 4]| self.preprocessed.as_ref().map_or(b, |pre| pre.input_box_on_photo(b));
        Some(super::render::detected_boxes(&found[..k.min(found.len())], &package.labels, on_photo))
    }
}

impl Service {
    /// The clean pass only, in the cheap requests' lane: decode, admit, one pass.
    pub async fn classify(&self, request: &PredictRequest, image: ImageInput) -> Result<Classified, ServiceError> {
        let model = self.model(request.model.as_deref())?;
        let deadline = self.deadline(request.timeout_ms)?;
        let exif = request.exif_orientation.unwrap_or(model.package.manifest.input.exif_orientation);
        let t = Instant::now();
        let work = async {
            let (tensor, image) = decode(image, self.config.limits.clone(), model.clone(), exif).await?;
            let decode_ms = ms(t.elapsed());
            let t = Instant::now();
            let admission = self.engine.admit_priority(&model)?;
            let options = RunOptions { deadline: deadline.map(|d| d.at), ..Default::default() };
            let logits = admission.clean(tensor, &options).await?.logits;
            Ok((logits, image.map(|(_, pre)| pre), PredictTimings { decode_ms, inference_ms: ms(t.elapsed()) }))
        };
        let (logits, preprocessed, timings) = Deadline::bound(deadline, false, work).await?;
        Ok(Classified {
            model: model.name().to_string(),
            probabilities: model.package.head().class_scores(&logits),
            logits,
            timings,
            exif_orientation: exif,
            source: model,
            preprocessed,
        })
    }

    /// The top-k classes of one image.
    pub async fn predict(&self, request: PredictRequest, image: ImageInput) -> Result<PredictDocument, ServiceError> {
        let head = self.model(request.model.as_deref())?.package.head();
        let classes = head.classes();
        // An embedding has no classes to rank: its prediction is the vector's norm.
        // Without top_k, up to 5 (a binary head has 2). A detector's top_k counts its
        // detections, an embedding has none to count.
        let top_k = match head {
            HeadKind::Detection(_) | HeadKind::Embedding { .. } => request.top_k.unwrap_or(DEFAULT_TOP_K),
            _ => request.top_k.unwrap_or(DEFAULT_TOP_K.min(classes.max(1))),
        };
        let most = match head {
            HeadKind::Detection(d) => d.proposals,
            HeadKind::Embedding { .. } => usize::MAX,
            _ => classes,
        };
        if top_k == 0 || top_k > most {
            return Err(invalid(format!("top_k must be within 1..={most}, got {top_k}")));
        }
        let c = self.classify(&request, image).await?;
        let embedding = matches!(head, HeadKind::Embedding { .. }).then(|| EmbeddingSummary::of(&c.logits));
        Ok(PredictDocument {
            predictions: c.top(top_k.min(classes)),
            detections: c.detections(top_k, (request.score_threshold, request.iou_threshold)),
            embedding,
            model: c.model,
            timings_ms: c.timings,
            exif_orientation: c.exif_orientation,
        })
    }

    /// Faithfulness of maps that came from elsewhere (baselines, other tools): `maps[i]`
    /// explains `targets[i]` of the preprocessed `input`.
    pub async fn evaluate_maps(
        &self,
        model: &str,
        input: Vec<f32>,
        maps: Vec<Vec<f32>>,
        targets: &[usize],
    ) -> Result<(Vec<Faithfulness>, RunStats), ServiceError> {
        let request = ExplainRequest { model: Some(model.into()), ..Default::default() };
        let model = self.model(Some(model))?;
        let [c, h, w] = model.package.info.input_chw;
        if input.len() != c * h * w || maps.iter().any(|m| m.len() != h * w) || maps.len() != targets.len() {
            return Err(invalid("the input, maps and targets do not match the model".into()));
        }
        let head = model.package.head();
        if !matches!(head, HeadKind::Classes { .. }) {
            return Err(invalid(format!(
                "evaluating given maps needs a classifier; this model's head is `{}`",
                head.name()
            )));
        }
        let classes = head.classes();
        if let Some(&class) = targets.iter().find(|&&t| t >= classes) {
            return Err(ServiceError::InvalidTarget { class, classes });
        }
        let exif = model.package.manifest.input.exif_orientation;
        let p = Prepared { model: model.clone(), request, deadline: None, tensor: input.into(), image: None, exif };
        let demand = Demand { label: "metrics of given maps".into(), ..Default::default() };
        let admission = self.engine.admit(&model, demand).await?;
        let clean = self.clean(&admission, &p, None).await?;
        let readout = Arc::new(Readout::classes(head, targets));
        let clean_reads = readout.read(&clean.logits);
        let (figures, passes) = self.faithfulness(&admission, &p, None, maps, &clean_reads, &readout).await?;
        Ok((figures, RunStats { forward_passes: 1, metric_passes: passes, ..Default::default() }))
    }

    /// Decodes and preprocesses an image for `model` as an explanation would (for tools
    /// that score maps of their own on the same input).
    pub async fn preprocess(&self, model: &str, image: ImageInput) -> Result<Vec<f32>, ServiceError> {
        let model = self.model(Some(model))?;
        let exif = model.package.manifest.input.exif_orientation;
        let (tensor, _) = decode(image, self.config.limits.clone(), model, exif).await?;
        Ok(tensor.to_vec())
    }
}

/// The counts of a run's passes, and its coverage when some of the plan did not run.
fn run_stats(plan: &MaskPlan, masked: &Masked, probe_passes: usize) -> RunStats {
    RunStats {
        forward_passes: 1 + masked.counts.full,
        head_passes: masked.counts.head + probe_passes,
        skipped_channels: plan.skipped_channels(),
        shared_mask_channels: plan.shared_mask_channels(),
        batch_size: masked.counts.batch_size,
        coverage: (!masked.done.iter().all(|d| *d)).then(|| plan.coverage(&masked.done)),
        ..Default::default()
    }
}

/// Scores to maps (CPU work, on the blocking pool). With every pass done this is
/// `cam::combine`'s map, bit for bit.
async fn combine(
    plan: Arc<MaskPlan>,
    scores: Vec<TargetScores>,
    done: Vec<bool>,
) -> Result<Vec<Saliency>, ServiceError> {
    blocking("combining", move || scores.iter().map(|s| cam::combine_partial(&plan, s, &done)).collect()).await
}
