//! Route handlers: each turns the transport's request into a service request, calls the
//! service, and shapes the response. No explanation logic lives here.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::error::ApiError;
use super::input::ImageRequest;
use super::state::AppState;
use crate::service::{ExplainDocument, ImageSummary, ModelStatus, Progress, Rendered, RenderedPng, ServiceError};

/// The contract, embedded so the binary serves exactly the spec it was built with.
pub const OPENAPI: &str = include_str!("../../openapi.yaml");

/// The explorer page: one self-contained file (no CDN, works offline), embedded at build time.
pub const PAGE: &str = include_str!("page/index.html");

pub async fn explain(State(state): State<AppState>, req: ImageRequest) -> Result<Response, ApiError> {
    let (request, image) = req.explain_request()?;
    Ok(match state.service.explain(request, image, None).await? {
        Rendered::Json(doc) => {
            let cache = HeaderValue::from_static(doc.stats.cache.as_str());
            ([(HeaderName::from_static("x-scorecam-cache"), cache)], Json(doc)).into_response()
        }
        Rendered::Png(png) => png_response(*png),
    })
}

fn png_response(img: RenderedPng) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/png"));
    let s = &img.summary;
    let label: String =
        s.target.label.chars().map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '?' }).collect();
    let t = &s.timings_ms;
    let mut pairs = vec![
        ("x-scorecam-target-index", s.target.index.to_string()),
        ("x-scorecam-target-label", label),
        ("x-scorecam-target-score", format!("{:.6}", s.target.score)),
        ("x-scorecam-forward-passes", s.stats.forward_passes.to_string()),
        ("x-scorecam-skipped-channels", s.stats.skipped_channels.to_string()),
        ("x-scorecam-shared-mask-channels", s.stats.shared_mask_channels.to_string()),
        ("x-scorecam-cache", s.stats.cache.as_str().to_string()),
        (
            "server-timing",
            format!(
                "queue;dur={:.1}, features;dur={:.1}, masked;dur={:.1}, combine;dur={:.1}, metrics;dur={:.1}, total;dur={:.1}",
                t.queue_ms, t.features_ms, t.masked_ms, t.combine_ms, t.metrics_ms, t.total_ms
            ),
        ),
    ];
    if let Some(c) = &s.stats.coverage {
        pairs.extend([
            ("x-scorecam-coverage", format!("{:.6}", c.estimated_mass)),
            ("x-scorecam-passes-done", format!("{}/{}", c.passes_done, c.passes_total)),
            ("x-scorecam-channels-done", format!("{}/{}", c.channels_done, c.channels_total)),
        ]);
    }
    if let Some(m) = &s.metrics {
        pairs.extend([
            ("x-scorecam-average-drop", format!("{:.6}", m.average_drop)),
            ("x-scorecam-increase-in-confidence", m.increase_in_confidence.to_string()),
            ("x-scorecam-deletion-auc", format!("{:.6}", m.deletion_auc)),
            ("x-scorecam-insertion-auc", format!("{:.6}", m.insertion_auc)),
            ("x-scorecam-metric-passes", s.stats.metric_passes.to_string()),
        ]);
    }
    for (name, value) in pairs {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), v);
        }
    }
    (headers, img.png).into_response()
}

/// An explanation as one JSON value, whatever its format: the JSON document as it is, or an
/// image's summary with the PNG inline (base64). The stream's `result` event and the v1
/// `explanations` carry it.
#[derive(Serialize)]
#[serde(untagged)]
pub(super) enum InlineExplanation {
    Document(Box<ExplainDocument>),
    Image(Box<InlineImage>),
}

#[derive(Serialize)]
pub(super) struct InlineImage {
    #[serde(flatten)]
    summary: ImageSummary,
    image: InlinePng,
}

#[derive(Serialize)]
struct InlinePng {
    content_type: &'static str,
    width: u32,
    height: u32,
    base64: String,
}

impl InlineExplanation {
    /// About how many bytes of JSON it takes, to bound a response of several. A map value
    /// is counted at 10 bytes (a float's digits, its comma), a PNG at its base64 text.
    pub(super) fn approx_bytes(&self) -> usize {
        match self {
            InlineExplanation::Document(doc) => {
                10 * doc.explanations.iter().map(|e| e.saliency.data.len()).sum::<usize>()
            }
            InlineExplanation::Image(img) => img.image.base64.len(),
        }
    }
}

impl From<Rendered> for InlineExplanation {
    fn from(rendered: Rendered) -> Self {
        use base64::Engine as _;
        match rendered {
            Rendered::Json(doc) => InlineExplanation::Document(doc),
            Rendered::Png(img) => {
                let RenderedPng { png, width, height, summary } = *img;
                let base64 = base64::engine::general_purpose::STANDARD.encode(&png);
                InlineExplanation::Image(Box::new(InlineImage {
                    summary,
                    image: InlinePng { content_type: "image/png", width, height, base64 },
                }))
            }
        }
    }
}

fn result_event(rendered: Rendered) -> Result<Event, axum::Error> {
    Event::default().event("result").json_data(InlineExplanation::from(rendered))
}

fn error_event(error: ApiError) -> Event {
    let (_, error_type) = error.status_and_type();
    Event::default()
        .event("error")
        .json_data(serde_json::json!({ "error": error.to_string(), "error_type": error_type }))
        .unwrap_or_else(|_| Event::default().event("error").data("{}"))
}

/// How often a stream reports progress (only when it changed).
const PROGRESS_EVERY: Duration = Duration::from_millis(150);

/// How often at most a stream sends the map so far (only when new scores arrived).
const PARTIAL_EVERY: Duration = Duration::from_millis(400);

/// `/explain/stream`: the same request as `/explain`, answered with Server-Sent Events:
/// `progress` while the passes run, `partial` (the first target's map so far, at the
/// target layer's resolution, with its coverage) a few times a second as they sharpen it,
/// then one `result` or `error`. Parameters and the
/// image are checked first, so those errors keep their plain status codes. When the client
/// goes away the stream is dropped, which aborts the task, which cancels the job.
pub async fn explain_stream(State(state): State<AppState>, req: ImageRequest) -> Result<Response, ApiError> {
    let (request, image) = req.explain_request()?;
    let progress = Arc::new(Progress::default());
    let prepared = state.service.prepare(request, image).await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(4);
    let task_progress = progress.clone();
    let task = tokio::spawn(async move {
        let service = state.service.clone();
        let work = async move {
            let explanation = service.run(prepared, Some(task_progress)).await?;
            service.render(explanation).await
        };
        tokio::pin!(work);
        let mut tick = tokio::time::interval(PROGRESS_EVERY);
        let mut last = None;
        let (mut previewed, mut previewed_at) = (0, tokio::time::Instant::now());
        loop {
            let version = progress.scored_version();
            if version != previewed && previewed_at.elapsed() >= PARTIAL_EVERY {
                (previewed, previewed_at) = (version, tokio::time::Instant::now());
                let event = progress.preview().and_then(|p| Event::default().event("partial").json_data(p).ok());
                if let Some(event) = event
                    && tx.send(event).await.is_err()
                {
                    return;
                }
            }
            let report = (progress.done(), progress.total(), progress.stage());
            if last != Some(report) {
                last = Some(report);
                let (done, total, stage) = report;
                let data = serde_json::json!({ "done": done, "total": total, "stage": stage });
                if tx.send(Event::default().event("progress").data(data.to_string())).await.is_err() {
                    return; // the client is gone; dropping `work` cancels the job
                }
            }
            tokio::select! {
                result = &mut work => {
                    let event = match result {
                        Ok(rendered) => result_event(rendered)
                            .unwrap_or_else(|e| error_event(ServiceError::Internal(e.to_string()).into())),
                        Err(e) => error_event(e.into()),
                    };
                    let _ = tx.send(event).await;
                    return;
                }
                _ = tick.tick() => {}
            }
        }
    });
    let guard = AbortOnDrop(task.abort_handle());
    let events = futures_util::stream::unfold((rx, guard), |(mut rx, guard)| async move {
        rx.recv().await.map(|e| (Ok::<_, std::convert::Infallible>(e), (rx, guard)))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()).into_response())
}

/// Aborts the explanation task when the response stream is dropped (client disconnect).
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub async fn predict(State(state): State<AppState>, req: ImageRequest) -> Result<Response, ApiError> {
    let (request, image) = req.predict_request()?;
    Ok(Json(state.service.predict(request, image).await?).into_response())
}

#[derive(Serialize)]
pub struct ModelSummary {
    name: String,
    /// `ready`, or `failed` (then `error` says why and nothing else is known).
    state: &'static str,
    /// Which load of this package this is (it grows when the package changes on disk).
    version: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    details: Option<ModelDetails>,
}

#[derive(Serialize)]
struct ModelDetails {
    description: String,
    input: InputSummary,
    target_layer: LayerSummary,
    channels: usize,
    labels: usize,
    execution_provider: &'static str,
    batch_size: usize,
    workers: usize,
    /// Bytes of the two ONNX graphs: roughly what each worker's sessions hold in memory.
    weights_bytes: u64,
    /// Estimated memory of the model across the workers (`weights_bytes` × workers).
    memory_bytes: u64,
    source: String,
    license: String,
}

#[derive(Serialize)]
struct InputSummary {
    width: usize,
    height: usize,
    resize: crate::model::ResizeMode,
}

#[derive(Serialize)]
struct LayerSummary {
    description: String,
    channels: usize,
    height: usize,
    width: usize,
}

fn summary(state: &AppState, s: ModelStatus) -> ModelSummary {
    let workers = state.service.engine().config().workers;
    let details = s.model.as_ref().map(|m| {
        let p = &m.package;
        let [_, h, w] = p.info.input_chw;
        let [k, fh, fw] = p.info.feature_khw;
        let weights_bytes = p.weights_bytes();
        ModelDetails {
            description: p.manifest.description.clone(),
            input: InputSummary { width: w, height: h, resize: p.manifest.input.resize },
            target_layer: LayerSummary {
                description: p.manifest.target_layer.description.clone(),
                channels: k,
                height: fh,
                width: fw,
            },
            channels: k,
            labels: p.labels.len(),
            execution_provider: m.provider.as_str(),
            batch_size: m.max_batch,
            workers,
            weights_bytes,
            memory_bytes: weights_bytes * workers as u64,
            source: p.manifest.source.clone(),
            license: p.manifest.license.clone(),
        }
    });
    ModelSummary { name: s.name, state: s.state, version: s.version, error: s.error, details }
}

#[derive(Serialize)]
pub struct ModelList {
    /// The model a request that names none gets (`null` when none is ready).
    default: Option<String>,
    /// The configured default, when it differs from `default` (it is not available).
    #[serde(skip_serializing_if = "Option::is_none")]
    configured_default: Option<String>,
    models: Vec<ModelSummary>,
}

pub async fn models(State(state): State<AppState>) -> Json<ModelList> {
    let repo = state.service.models();
    let default = state.service.default_model();
    let configured_default = repo.configured_default().filter(|c| default.as_deref() != Some(*c)).map(str::to_string);
    let models = repo.list().into_iter().map(|s| summary(&state, s)).collect();
    Json(ModelList { default, configured_default, models })
}

pub async fn model(State(state): State<AppState>, Path(name): Path<String>) -> Result<Json<ModelSummary>, ApiError> {
    let status = state.service.models().list().into_iter().find(|s| s.name == name);
    match status {
        Some(s) => Ok(Json(summary(&state, s))),
        // The service's error lists the models there are.
        None => Err(state.service.model(Some(&name)).err().unwrap_or(ServiceError::Internal(name)).into()),
    }
}

/// The method registry: names, parameters, bounds and defaults (the page builds its form
/// from it).
pub async fn methods() -> Json<serde_json::Value> {
    Json(crate::cam::methods::describe())
}

pub async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

pub async fn readyz(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let engine = state.service.engine();
    if engine.is_draining() {
        return Err(ApiError::NotReady("draining for shutdown".into()));
    }
    let alive = engine.stats().workers_alive();
    if alive < engine.config().workers {
        return Err(ApiError::NotReady(format!("{alive} of {} workers alive", engine.config().workers)));
    }
    let ready = state.service.models().ready();
    if ready.is_empty() {
        return Err(ApiError::NotReady("no model is ready".into()));
    }
    let models: Vec<_> = ready.iter().map(|m| m.name().to_string()).collect();
    let providers: serde_json::Map<String, serde_json::Value> =
        ready.iter().map(|m| (m.name().to_string(), m.provider.as_str().into())).collect();
    Ok(Json(serde_json::json!({ "status": "ready", "models": models, "providers": providers, "workers": alive })))
}

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let service = &state.service;
    let body =
        state.metrics.render(service.engine().stats(), service.stats(), service.cache(), service.engine().is_ready());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body)
}

pub async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // Everything the page needs is inline or same-origin; nothing else may load.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' data: blob:; connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        PAGE,
    )
}

pub async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/yaml")], OPENAPI)
}

pub async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound(uri.path().to_string())
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

#[cfg(test)]
mod tests {
    use super::OPENAPI;
    use crate::cam::methods;

    /// The contract follows the method registry: every method is in the `method` enum and
    /// every method parameter is a documented query parameter and multipart field.
    #[test]
    fn openapi_names_every_method_and_parameter_of_the_registry() {
        let enum_line = format!("enum: [{}]", methods::names().join(", "));
        assert!(OPENAPI.matches(&enum_line).count() >= 2, "openapi.yaml's method enums should be `{enum_line}`");
        for name in methods::param_names() {
            assert!(OPENAPI.contains(&format!("      name: {name}\n      in: query")), "query parameter `{name}`");
            assert!(OPENAPI.contains(&format!("              {name}: {{")), "multipart field `{name}`");
        }
    }
}
