//! One explanation from a request to its result: validate against the model, decode, the
//! clean pass, the method's plan and passes, the maps, the metrics follow-up. Also the
//! prediction and the faithfulness of given maps, which take the same road.

use std::sync::Arc;
use std::time::Instant;

use image::RgbImage;

use super::cache::{self, CacheOutcome, CachedResult};
use super::progress::{Progress, Stage, StageObserver};
use super::request::{
    ExplainRequest, ImageInput, MAX_JSON_MAP_VALUES, MAX_TARGETS, OutputFormat, PredictRequest, Resolution, TargetSpec,
};
use super::result::{
    Explanation, PredictDocument, PredictTimings, Rendered, RunStats, StageTimings, predictions, top_k,
};
use super::{Deadline, Service, ServiceError};
use crate::cam::faithfulness::{Faithfulness, MetricPlan};
use crate::cam::{self, Activations, HeadProbe, LinearHead, MaskPlan, PassSet, PlanPrefix, Saliency, TargetScores};
use crate::engine::{Admission, EngineModel, PassObserver, PassScores, RunOptions};
use crate::imaging::{self, ImageLimits, Preprocessed};

/// A request checked against its model and its image decoded, ready to run: the split
/// lets a streaming face answer bad parameters and undecodable images with a plain error
/// status before it starts streaming.
pub struct Prepared {
    model: Arc<EngineModel>,
    request: ExplainRequest,
    deadline: Option<Deadline>,
    tensor: Arc<[f32]>,
    image: Option<(RgbImage, Preprocessed)>,
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn invalid(message: String) -> ServiceError {
    ServiceError::InvalidParameter(message)
}

/// Checks an explanation request against the model it will run on.
fn validate(model: &EngineModel, r: &ExplainRequest, image: &ImageInput) -> Result<(), ServiceError> {
    let classes = model.package.info.classes;
    match &r.targets {
        TargetSpec::Classes(c) if c.is_empty() => return Err(invalid("target needs at least one class index".into())),
        TargetSpec::Classes(c) if c.len() > MAX_TARGETS => {
            return Err(invalid(format!("at most {MAX_TARGETS} targets per request, got {}", c.len())));
        }
        TargetSpec::Classes(c) => {
            if let Some(&class) = c.iter().find(|&&c| c >= classes) {
                return Err(ServiceError::InvalidTarget { class, classes });
            }
        }
        TargetSpec::TopK(k) if *k == 0 || *k > MAX_TARGETS.min(classes) => {
            return Err(invalid(format!("top_k must be within 1..={}, got {k}", MAX_TARGETS.min(classes))));
        }
        TargetSpec::TopK(_) => {}
    }
    r.method.check(model.package.info.feature_khw[0]).map_err(invalid)?;
    if r.method.needs_linear_head() {
        let unsupported = |reason: String| unsupported_by(model, r, reason);
        if model.package.info.feature_extra() > 0 {
            return Err(unsupported(
                "its head reads the transformer's prefix (class) tokens besides the grid, so it is not global \
                 average pooling followed by a linear layer, and the gradient-family methods have no closed form \
                 for it; use scorecam, ablationcam or reciprocam"
                    .into(),
            ));
        }
        if let Some(Err(reason)) = model.linear_head.get() {
            return Err(unsupported(reason.clone()));
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

/// Decodes and preprocesses (CPU work: runs on the blocking pool).
async fn decode(
    image: ImageInput,
    limits: ImageLimits,
    model: Arc<EngineModel>,
) -> Result<(Arc<[f32]>, Option<(RgbImage, Preprocessed)>), ServiceError> {
    tokio::task::spawn_blocking(move || {
        let spec = &model.package.manifest.input;
        let rgb = match image {
            ImageInput::Encoded(bytes) => imaging::decode(&bytes, &limits)?,
            ImageInput::Pixels(rgb) => rgb,
            ImageInput::Tensor(t) => {
                let [c, h, w] = model.package.info.input_chw;
                if t.len() != c * h * w {
                    return Err(invalid(format!("the tensor has {} values; the model takes {c}×{h}×{w}", t.len())));
                }
                return Ok((t.into(), None));
            }
        };
        let pre = imaging::preprocess(&rgb, spec);
        Ok((pre.tensor.clone().into(), Some((rgb, pre))))
    })
    .await
    .map_err(|e| ServiceError::Internal(format!("decoding task failed: {e}")))?
}

/// Runs CPU work off the async threads.
async fn blocking<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> Result<T, ServiceError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| ServiceError::Internal(format!("{what} failed: {e}")))
}

fn options(p: &Prepared, progress: Option<&Arc<Progress>>, stage: Stage) -> RunOptions {
    RunOptions {
        deadline: p.deadline.map(|d| d.at),
        observer: progress.map(|p| Arc::new(StageObserver { progress: p.clone(), stage }) as Arc<dyn PassObserver>),
        fault: p.request.fault,
        partial_at_deadline: false,
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
        maps: hit.maps.clone(),
        metrics: hit.metrics.clone(),
        stats,
        timings: StageTimings { total_ms: ms(started.elapsed()), ..Default::default() },
        image: p.image,
    }
}

/// How long before an anytime request's deadline its passes stop: a tenth of the
/// deadline, within 50 ms..1 s.
fn anytime_margin(timeout_ms: u64) -> std::time::Duration {
    std::time::Duration::from_millis((timeout_ms / 10).clamp(50, 1000))
}

fn target_scores(scores: Vec<PassScores>, targets: &[usize], logits: &[f32]) -> Vec<TargetScores> {
    scores
        .into_iter()
        .zip(targets)
        .map(|(s, &t)| TargetScores { class: t, clean_logit: logits[t], logits: s.logits, probs: s.probs })
        .collect()
}

impl Service {
    /// Validates the request against its model and decodes the image.
    pub async fn prepare(&self, request: ExplainRequest, image: ImageInput) -> Result<Prepared, ServiceError> {
        let model = self.model(request.model.as_deref())?;
        validate(&model, &request, &image)?;
        let deadline = self.deadline(request.timeout_ms)?;
        let (tensor, image) = decode(image, self.config.limits.clone(), model.clone()).await?;
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
        Ok(Prepared { model, request, deadline, tensor, image })
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
        let deadline = prepared.deadline;
        let (mut explanation, cut_by_deadline) =
            Deadline::bound(deadline, self.run_unbounded(prepared, progress)).await?;
        // A map the deadline cut short depends on the machine's speed: never cached.
        if let Some(key) = key.filter(|_| !cut_by_deadline) {
            explanation.stats.cache = CacheOutcome::Miss;
            self.cache.put(
                key,
                CachedResult {
                    logits: explanation.logits.clone(),
                    targets: explanation.targets.clone(),
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
        let admission = self.engine.admit(&p.model)?;
        let info = p.model.package.info;
        let clean = admission.clean(p.tensor.clone(), &options(&p, progress.as_ref(), Stage::Features)).await?;
        let logits = clean.logits;
        let targets: Vec<usize> = match &p.request.targets {
            TargetSpec::Classes(c) => c.clone(),
            TargetSpec::TopK(k) => top_k(&logits, (*k).max(1)),
        };
        let method = p.request.method.clone();
        // The head passes that measured the head, if this request was the one that did.
        let (head, probe_passes) = if method.needs_linear_head() {
            let (head, passes) = self.linear_head(&admission, &p).await?;
            (Some(head), passes)
        } else {
            (None, 0)
        };
        let features = clean.features;
        let plan = blocking("planning", move || {
            let [k, fh, fw] = info.feature_khw;
            let activations = Activations::with_extra(k, fh, fw, features);
            Arc::new(MaskPlan::new(&method, activations, info.input_chw).with_linear_head(head))
        })
        .await?;
        // A pass budget runs the plan's first passes: its most important channels.
        let passes: Arc<dyn PassSet> = match p.request.max_passes {
            Some(n) if n < plan.len() => Arc::new(PlanPrefix { plan: plan.clone(), len: n }),
            _ => plan.clone(),
        };
        let ran = passes.len();
        if let Some(progress) = &progress {
            let metric_passes = if p.request.metrics { MetricPlan::pass_count(targets.len()) } else { 0 };
            progress.begin_passes(plan.clone(), targets[0], logits[targets[0]]);
            progress.set_total(ran + metric_passes);
            progress.set_stage(Stage::Masked);
        }
        let mut masked_options = options(&p, progress.as_ref(), Stage::Masked);
        if p.request.anytime {
            // Stop the passes a little before the deadline, so combining and rendering
            // the partial map still fit inside it.
            masked_options.partial_at_deadline = true;
            masked_options.deadline = p.deadline.map(|d| d.at - anytime_margin(d.ms));
        }
        let scored = admission.score(p.tensor.clone(), passes, targets.clone().into(), &masked_options).await?;
        let t = Instant::now();
        // Which of the plan's passes ran: the budget's prefix, less any the deadline cut.
        let mut done = vec![false; plan.len()];
        match &scored.done {
            Some(d) => done[..ran].copy_from_slice(d),
            None => done[..ran].fill(true),
        }
        let cut_by_deadline = scored.done.is_some();
        let coverage = (!done.iter().all(|d| *d)).then(|| plan.coverage(&done));
        let mut per_target = target_scores(scored.scores, &targets, &logits);
        for s in &mut per_target {
            s.logits.resize(plan.len(), 0.0);
            s.probs.resize(plan.len(), 0.0);
        }
        let combine_plan = plan.clone();
        // With every pass done this is `combine`'s map, bit for bit.
        let maps: Vec<Saliency> = blocking("combining", move || {
            per_target.iter().map(|s| cam::combine_partial(&combine_plan, s, &done)).collect()
        })
        .await?;
        let mut timings = StageTimings {
            queue_ms: ms(clean.timing.queued),
            features_ms: ms(clean.timing.running),
            masked_ms: ms(scored.timing.running),
            combine_ms: ms(t.elapsed()),
            ..Default::default()
        };
        let mut stats = RunStats {
            forward_passes: 1 + scored.counts.full,
            head_passes: scored.counts.head + probe_passes,
            skipped_channels: plan.skipped_channels(),
            shared_mask_channels: plan.shared_mask_channels(),
            batch_size: scored.counts.batch_size,
            coverage,
            ..Default::default()
        };
        // Past the deadline there is no time for the metrics' passes.
        let metrics = if p.request.metrics && !cut_by_deadline {
            let t = Instant::now();
            let inputs = maps.iter().map(|m| m.input.data.clone()).collect();
            let (figures, passes) =
                self.faithfulness(&admission, &p, progress.as_ref(), inputs, &logits, &targets).await?;
            stats.metric_passes = passes;
            timings.metrics_ms = ms(t.elapsed());
            Some(figures)
        } else {
            None
        };
        timings.total_ms = ms(started.elapsed());
        self.stats.observe(&stats, &timings);
        let explanation = Explanation {
            model: p.model,
            method: p.request.method,
            rendering: p.request.rendering,
            logits,
            targets,
            maps,
            metrics,
            stats,
            timings,
            image: p.image,
        };
        Ok((explanation, cut_by_deadline))
    }

    /// The model's head in closed form, measured by the engine on first use and kept with
    /// the loaded model (two first requests may both measure it; the first result stays),
    /// and the head passes this call ran for it.
    async fn linear_head(
        &self,
        admission: &Admission<'_>,
        p: &Prepared,
    ) -> Result<(Arc<LinearHead>, usize), ServiceError> {
        let model = &p.model;
        let unsupported = |reason: &String| unsupported_by(model, &p.request, reason.clone());
        if let Some(known) = model.linear_head.get() {
            return known.clone().map(|h| (h, 0)).map_err(|r| unsupported(&r));
        }
        let [k, h, w] = model.package.info.feature_khw;
        let classes = model.package.info.classes;
        let probe = Arc::new(HeadProbe::new(k, h, w));
        let all: Arc<[usize]> = (0..classes).collect();
        let scored = admission.score(p.tensor.clone(), probe.clone(), all, &options(p, None, Stage::Masked)).await?;
        let passes = scored.counts.head;
        let fitted = blocking("measuring the head", move || {
            // Pass-major logits from the engine's class-major scores.
            let mut logits = vec![0.0f32; probe.len() * classes];
            for (c, s) in scored.scores.iter().enumerate() {
                for (i, z) in s.logits.iter().enumerate() {
                    logits[i * classes + c] = *z;
                }
            }
            probe.fit(&logits, classes).map(Arc::new)
        })
        .await?;
        match &fitted {
            Ok(_) => tracing::info!(model = %model.name(), "head measured: pooling followed by a linear layer"),
            Err(reason) => tracing::info!(model = %model.name(), %reason, "head measured: no closed form"),
        }
        model.linear_head.get_or_init(|| fitted).clone().map(|h| (h, passes)).map_err(|r| unsupported(&r))
    }

    /// The faithfulness passes of given maps (one per target, at the model's input
    /// resolution), under the request's admission.
    async fn faithfulness(
        &self,
        admission: &Admission<'_>,
        p: &Prepared,
        progress: Option<&Arc<Progress>>,
        maps: Vec<Vec<f32>>,
        logits: &[f32],
        targets: &[usize],
    ) -> Result<(Vec<Faithfulness>, usize), ServiceError> {
        let plan = Arc::new(MetricPlan::new(maps, p.model.package.info.input_chw));
        let scored = admission
            .score(p.tensor.clone(), plan.clone(), targets.into(), &options(p, progress, Stage::Metrics))
            .await?;
        let probs = cam::softmax(logits);
        let figures = target_scores(scored.scores, targets, logits)
            .iter()
            .enumerate()
            .map(|(i, s)| plan.evaluate(i, s, probs[targets[i]]))
            .collect();
        Ok((figures, scored.counts.full))
    }

    /// Renders a computed explanation as it asked.
    pub async fn render(&self, explanation: Explanation) -> Result<Rendered, ServiceError> {
        blocking("rendering", move || super::render::render_explanation(explanation)).await?
    }

    /// Validates, decodes, explains and renders.
    pub async fn explain(
        &self,
        request: ExplainRequest,
        image: ImageInput,
        progress: Option<Arc<Progress>>,
    ) -> Result<Rendered, ServiceError> {
        let prepared = self.prepare(request, image).await?;
        let explanation = self.run(prepared, progress).await?;
        self.render(explanation).await
    }

    /// The clean pass only: the model that ran and its logits.
    pub async fn classify(
        &self,
        model: Option<&str>,
        image: ImageInput,
        timeout_ms: Option<u64>,
    ) -> Result<(Arc<EngineModel>, Vec<f32>), ServiceError> {
        let model = self.model(model)?;
        let deadline = self.deadline(timeout_ms)?;
        let work = async {
            let (tensor, _) = decode(image, self.config.limits.clone(), model.clone()).await?;
            let admission = self.engine.admit_priority(&model)?;
            let options = RunOptions { deadline: deadline.map(|d| d.at), ..Default::default() };
            Ok(admission.clean(tensor, &options).await?.logits)
        };
        let logits = Deadline::bound(deadline, work).await?;
        Ok((model, logits))
    }

    /// The top-k classes of one image.
    pub async fn predict(&self, request: PredictRequest, image: ImageInput) -> Result<PredictDocument, ServiceError> {
        let model = self.model(request.model.as_deref())?;
        let classes = model.package.info.classes;
        if request.top_k == 0 || request.top_k > classes {
            return Err(invalid(format!("top_k must be within 1..={classes}, got {}", request.top_k)));
        }
        let deadline = self.deadline(request.timeout_ms)?;
        let t = Instant::now();
        let work = async {
            let (tensor, _) = decode(image, self.config.limits.clone(), model.clone()).await?;
            let decode_ms = ms(t.elapsed());
            let t = Instant::now();
            let admission = self.engine.admit_priority(&model)?;
            let options = RunOptions { deadline: deadline.map(|d| d.at), ..Default::default() };
            let logits = admission.clean(tensor, &options).await?.logits;
            Ok((logits, decode_ms, ms(t.elapsed())))
        };
        let (logits, decode_ms, inference_ms) = Deadline::bound(deadline, work).await?;
        Ok(PredictDocument {
            model: model.name().to_string(),
            predictions: predictions(&logits, &model.package.labels, request.top_k),
            timings_ms: PredictTimings { decode_ms, inference_ms },
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
        let p = Prepared { model: model.clone(), request, deadline: None, tensor: input.into(), image: None };
        let admission = self.engine.admit(&model)?;
        let logits = admission.clean(p.tensor.clone(), &RunOptions::default()).await?.logits;
        if let Some(&class) = targets.iter().find(|&&t| t >= logits.len()) {
            return Err(ServiceError::InvalidTarget { class, classes: logits.len() });
        }
        let (figures, passes) = self.faithfulness(&admission, &p, None, maps, &logits, targets).await?;
        Ok((figures, RunStats { forward_passes: 1, metric_passes: passes, ..Default::default() }))
    }

    /// Decodes and preprocesses an image for `model` as an explanation would (for tools
    /// that score maps of their own on the same input).
    pub async fn preprocess(&self, model: &str, image: ImageInput) -> Result<Vec<f32>, ServiceError> {
        let model = self.model(Some(model))?;
        let (tensor, _) = decode(image, self.config.limits.clone(), model).await?;
        Ok(tensor.to_vec())
    }
}
