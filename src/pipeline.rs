//! One explanation or prediction from uploaded bytes to a rendered result: the core that
//! the CLI and the HTTP API both call, so the two faces cannot drift apart.

use std::sync::Arc;
use std::time::Instant;

use image::RgbImage;
use serde::Serialize;

use crate::cam::faithfulness::Faithfulness;
use crate::cam::{Map, Method, Preset};
use crate::engine::{Engine, EngineError, Fault, JobRequest, Progress, RunStats, StageTimings, TargetSpec};
use crate::imaging::{self, ImageLimits, ImagingError, Preprocessed};
use crate::model::ModelPackage;
use crate::render::{self, Colormap, ExplainDocument, Explanation, Prediction, RenderError};

/// What the caller wants back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// The heatmap blended over the uploaded image.
    #[default]
    Png,
    /// The coloured heatmap alone.
    Heatmap,
    /// The JSON document with raw saliency values.
    Json,
}

impl std::str::FromStr for OutputFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "png" => Ok(Self::Png),
            "heatmap" => Ok(Self::Heatmap),
            "json" => Ok(Self::Json),
            _ => Err(format!("unknown format `{s}` (expected png, heatmap or json)")),
        }
    }
}

/// At which resolution maps are returned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Resolution {
    /// The uploaded image's own size.
    #[default]
    Input,
    /// The model's input size (H×W).
    Model,
    /// The target layer's size (h×w), for presets that compute a map there.
    Feature,
}

impl std::str::FromStr for Resolution {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "input" => Ok(Self::Input),
            "model" => Ok(Self::Model),
            "feature" => Ok(Self::Feature),
            _ => Err(format!("unknown resolution `{s}` (expected input, model or feature)")),
        }
    }
}

#[derive(Clone, Debug)]
pub struct ExplainParams {
    pub model: String,
    pub targets: TargetSpec,
    pub method: Method,
    /// Also compute faithfulness metrics (extra passes).
    pub metrics: bool,
    pub format: OutputFormat,
    pub resolution: Resolution,
    pub colormap: Colormap,
    pub alpha: f32,
    pub deadline: Option<Instant>,
    pub progress: Option<Arc<Progress>>,
    /// Test-only fault injection (see the `fault-injection` feature).
    pub fault: Option<Fault>,
}

impl ExplainParams {
    /// How many maps the response will carry.
    fn targets_len(&self) -> usize {
        match &self.targets {
            TargetSpec::Classes(c) => c.len(),
            TargetSpec::TopK(k) => *k,
        }
    }

    pub fn new(model: &str) -> Self {
        Self {
            model: model.into(),
            targets: TargetSpec::TopK(1),
            method: Method::default(),
            metrics: false,
            format: OutputFormat::default(),
            resolution: Resolution::default(),
            colormap: Colormap::default(),
            alpha: 0.5,
            deadline: None,
            progress: None,
            fault: None,
        }
    }
}

/// A method as a caller names it (HTTP parameters, CLI flags), before the parameters are
/// checked together: a parameter that the chosen method does not take is an error, not
/// silently ignored.
#[derive(Clone, Debug, Default)]
pub struct MethodArgs {
    pub method: Option<String>,
    pub preset: Option<Preset>,
    pub max_channels: Option<usize>,
    pub samples: Option<usize>,
    pub sigma: Option<f32>,
    pub seed: Option<u64>,
    pub steps: Option<usize>,
}

impl MethodArgs {
    pub fn resolve(&self) -> Result<Method, String> {
        let given: Vec<(&str, String)> = [
            ("preset", self.preset.map(|v| v.to_string())),
            ("max_channels", self.max_channels.map(|v| v.to_string())),
            ("samples", self.samples.map(|v| v.to_string())),
            ("sigma", self.sigma.map(|v| v.to_string())),
            ("seed", self.seed.map(|v| v.to_string())),
            ("steps", self.steps.map(|v| v.to_string())),
        ]
        .into_iter()
        .filter_map(|(name, value)| value.map(|v| (name, v)))
        .collect();
        let given: Vec<(&str, &str)> = given.iter().map(|(n, v)| (*n, v.as_str())).collect();
        Method::parse(self.method.as_deref(), &given)
    }
}

/// Most targets one request may explain (each is a full map in the response).
pub const MAX_TARGETS: usize = 10;

/// Most values one JSON map may carry (about 40 MB of JSON): a JSON map at the upload's own
/// resolution of a 40-megapixel photo would otherwise be half a gigabyte of text.
pub const MAX_JSON_MAP_VALUES: usize = 4 << 20;

/// A rendered explanation.
#[derive(Debug)]
pub enum Rendered {
    Image(Box<RenderedImage>),
    Json(Box<ExplainDocument>),
}

/// A PNG (overlay or heatmap) and what it shows.
#[derive(Debug)]
pub struct RenderedImage {
    pub png: Vec<u8>,
    pub width: u32,
    pub height: u32,
    pub model: String,
    pub method: String,
    pub preset: String,
    /// The explained target (the first one when several were asked for).
    pub target: Prediction,
    /// The target's faithfulness, when asked for.
    pub metrics: Option<Faithfulness>,
    pub predictions: Vec<Prediction>,
    pub stats: RunStats,
    pub timings: StageTimings,
}

#[derive(Clone, Debug, Serialize)]
pub struct PredictDocument {
    pub model: String,
    pub predictions: Vec<Prediction>,
    pub timings_ms: PredictTimings,
}

#[derive(Clone, Copy, Debug, Serialize)]
pub struct PredictTimings {
    pub decode_ms: f64,
    pub inference_ms: f64,
}

/// Everything that can fail between bytes in and a result out.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Imaging(#[from] ImagingError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error("invalid parameter: {0}")]
    InvalidParameter(String),
}

fn model<'e>(engine: &'e Engine, name: &str) -> Result<&'e Arc<ModelPackage>, PipelineError> {
    engine.registry().get(name).map_err(|_| EngineError::UnknownModel(name.to_string()).into())
}

/// Checks parameters against the model before any work is done.
pub fn validate(package: &ModelPackage, p: &ExplainParams) -> Result<(), PipelineError> {
    let classes = package.info.classes;
    let invalid = |m: String| Err(PipelineError::InvalidParameter(m));
    match &p.targets {
        TargetSpec::Classes(c) if c.is_empty() => {
            return invalid("target needs at least one class index".into());
        }
        TargetSpec::Classes(c) if c.len() > MAX_TARGETS => {
            return invalid(format!("at most {MAX_TARGETS} targets per request, got {}", c.len()));
        }
        TargetSpec::Classes(c) => {
            if let Some(&class) = c.iter().find(|&&c| c >= classes) {
                return Err(EngineError::InvalidTarget { class, classes }.into());
            }
        }
        TargetSpec::TopK(k) if *k == 0 || *k > MAX_TARGETS.min(classes) => {
            return invalid(format!("top_k must be within 1..={}, got {k}", MAX_TARGETS.min(classes)));
        }
        TargetSpec::TopK(_) => {}
    }
    if !(0.0..=1.0).contains(&p.alpha) {
        return invalid(format!("alpha must be within 0..=1, got {}", p.alpha));
    }
    if let Err(e) = p.method.check(package.info.feature_khw[0]) {
        return invalid(e);
    }
    if p.resolution == Resolution::Feature && !p.method.has_feature_map() {
        return invalid(format!("`{}` has no feature-resolution map; use resolution=input or model", p.method));
    }
    if p.format == OutputFormat::Png && p.resolution != Resolution::Input {
        return invalid(
            "the png overlay is drawn at the uploaded image's size; use format=heatmap or json for other resolutions"
                .into(),
        );
    }
    Ok(())
}

/// Decodes and preprocesses off the async threads.
pub(crate) async fn decode(
    bytes: Arc<[u8]>,
    limits: ImageLimits,
    package: Arc<ModelPackage>,
) -> Result<(RgbImage, Preprocessed), PipelineError> {
    tokio::task::spawn_blocking(move || {
        let image = imaging::decode(&bytes, &limits)?;
        let pre = imaging::preprocess(&image, &package.manifest.input);
        Ok((image, pre))
    })
    .await
    .map_err(|e| EngineError::Internal(format!("decoding task failed: {e}")))?
}

/// Runs the clean pass only and returns the top-k classes.
pub async fn predict(
    engine: &Engine,
    bytes: Arc<[u8]>,
    limits: &ImageLimits,
    model_name: &str,
    top_k: usize,
) -> Result<PredictDocument, PipelineError> {
    let package = model(engine, model_name)?.clone();
    if top_k == 0 || top_k > package.info.classes {
        return Err(PipelineError::InvalidParameter(format!(
            "top_k must be within 1..={}, got {top_k}",
            package.info.classes
        )));
    }
    let t = Instant::now();
    let (_, pre) = decode(bytes, limits.clone(), package.clone()).await?;
    let decode_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    let logits = engine.predict(model_name, pre.tensor).await?;
    Ok(PredictDocument {
        model: package.name.clone(),
        predictions: render::predictions(&logits, &package.labels, top_k),
        timings_ms: PredictTimings { decode_ms, inference_ms: t.elapsed().as_secs_f64() * 1e3 },
    })
}

/// A request checked and decoded, ready to run: the split lets a streaming caller answer
/// bad parameters and undecodable images with a plain error status before it streams.
pub struct Prepared {
    package: Arc<ModelPackage>,
    params: ExplainParams,
    image: RgbImage,
    pre: Preprocessed,
}

impl Prepared {
    pub fn params(&self) -> &ExplainParams {
        &self.params
    }
}

/// Validates the parameters and decodes the image.
pub async fn prepare(
    engine: &Engine,
    bytes: Arc<[u8]>,
    limits: &ImageLimits,
    params: ExplainParams,
) -> Result<Prepared, PipelineError> {
    let package = model(engine, &params.model)?.clone();
    validate(&package, &params)?;
    let (image, pre) = decode(bytes, limits.clone(), package.clone()).await?;
    let values = pre.original_width as usize * pre.original_height as usize * params.targets_len();
    if params.format == OutputFormat::Json && params.resolution == Resolution::Input && values > MAX_JSON_MAP_VALUES {
        return Err(PipelineError::InvalidParameter(format!(
            "a JSON map at the upload's {}×{} resolution would carry {values} values (limit {MAX_JSON_MAP_VALUES}); \
             ask for resolution=model, or a PNG",
            pre.original_width, pre.original_height
        )));
    }
    Ok(Prepared { package, params, image, pre })
}

/// Explains and renders a prepared request.
pub async fn run(engine: &Engine, prepared: Prepared) -> Result<Rendered, PipelineError> {
    let Prepared { package, params, image, pre } = prepared;
    let mut request =
        JobRequest::explain(&params.model, pre.tensor.clone(), params.method.clone(), params.targets.clone())
            .with_metrics(params.metrics);
    request.deadline = params.deadline;
    request.progress = params.progress.clone();
    request.fault = params.fault;
    let outcome = engine.explain(request).await?;
    let rendered = tokio::task::spawn_blocking(move || render_outcome(&package, &params, &image, &pre, outcome))
        .await
        .map_err(|e| EngineError::Internal(format!("rendering task failed: {e}")))??;
    Ok(rendered)
}

/// Decodes, explains and renders one image.
pub async fn explain(
    engine: &Engine,
    bytes: Arc<[u8]>,
    limits: &ImageLimits,
    params: ExplainParams,
) -> Result<Rendered, PipelineError> {
    let prepared = prepare(engine, bytes, limits, params).await?;
    run(engine, prepared).await
}

fn render_outcome(
    package: &ModelPackage,
    params: &ExplainParams,
    image: &RgbImage,
    pre: &Preprocessed,
    outcome: crate::engine::ExplainOutcome,
) -> Result<Rendered, PipelineError> {
    let probs = render::softmax(&outcome.logits);
    let target_of = |i: usize| Prediction { index: i, label: package.label(i).to_string(), score: probs[i] };
    let pick = |map: &crate::cam::Saliency| -> Map {
        match params.resolution {
            Resolution::Input => pre.map_to_original(&map.input),
            Resolution::Model => map.input.clone(),
            Resolution::Feature => map.feature.clone().unwrap_or_else(|| map.input.clone()),
        }
    };
    match params.format {
        OutputFormat::Json => {
            let explanations = outcome
                .targets
                .iter()
                .zip(&outcome.maps)
                .enumerate()
                .map(|(i, (&t, m))| Explanation {
                    target: target_of(t),
                    saliency: pick(m),
                    metrics: outcome.metrics.as_ref().and_then(|f| f.get(i).cloned()),
                })
                .collect();
            Ok(Rendered::Json(Box::new(ExplainDocument {
                model: package.name.clone(),
                method: params.method.name().into(),
                preset: params.method.preset().to_string(),
                method_parameters: params.method.clone(),
                predictions: render::predictions(&outcome.logits, &package.labels, 5),
                explanations,
                stats: outcome.stats,
                timings_ms: outcome.timings,
            })))
        }
        OutputFormat::Png | OutputFormat::Heatmap => {
            let (&target, map) = outcome
                .targets
                .first()
                .zip(outcome.maps.first())
                .ok_or_else(|| EngineError::Internal("explanation without a map".into()))?;
            let map = pick(map);
            let img = match params.format {
                OutputFormat::Png => render::overlay(image, &map, params.colormap, params.alpha)?,
                _ => render::heatmap(&map, params.colormap),
            };
            Ok(Rendered::Image(Box::new(RenderedImage {
                png: render::encode_png(&img)?,
                width: img.width(),
                height: img.height(),
                model: package.name.clone(),
                method: params.method.name().into(),
                preset: params.method.preset().to_string(),
                target: target_of(target),
                metrics: outcome.metrics.as_ref().and_then(|f| f.first().cloned()),
                predictions: render::predictions(&outcome.logits, &package.labels, 5),
                stats: outcome.stats,
                timings: outcome.timings,
            })))
        }
    }
}
