//! Route handlers: each parses, calls the pipeline or engine, and shapes the response.

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
use crate::engine::Progress;
use crate::model::ModelPackage;
use crate::pipeline::{self, Rendered, RenderedImage};

/// The contract, embedded so the binary serves exactly the spec it was built with.
pub const OPENAPI: &str = include_str!("../../openapi.yaml");

/// The explorer page: one self-contained file (no CDN, works offline), embedded at build time.
pub const PAGE: &str = include_str!("page/index.html");

/// Slack past a request's deadline before the HTTP layer gives up on the engine (which
/// enforces the deadline itself and normally answers first).
const DEADLINE_SLACK: Duration = Duration::from_secs(2);

fn ensure_accepting(state: &AppState) -> Result<(), ApiError> {
    if state.engine.is_draining() {
        return Err(ApiError::NotReady("the server is shutting down".into()));
    }
    Ok(())
}

pub async fn explain(State(state): State<AppState>, req: ImageRequest) -> Result<Response, ApiError> {
    ensure_accepting(&state)?;
    let params = req.explain_params(&state)?;
    let deadline = params.deadline.map(|d| tokio::time::Instant::from_std(d) + DEADLINE_SLACK);
    let work = pipeline::explain(&state.engine, req.image, &state.config.limits, params);
    let rendered = match deadline {
        Some(d) => tokio::time::timeout_at(d, work).await.map_err(|_| ApiError::Timeout)??,
        None => work.await?,
    };
    Ok(match rendered {
        Rendered::Json(doc) => Json(doc).into_response(),
        Rendered::Image(img) => image_response(*img),
    })
}

fn image_response(img: RenderedImage) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/png"));
    let label: String =
        img.target.label.chars().map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '?' }).collect();
    let t = &img.timings;
    let mut pairs = vec![
        ("x-scorecam-target-index", img.target.index.to_string()),
        ("x-scorecam-target-label", label),
        ("x-scorecam-target-score", format!("{:.6}", img.target.score)),
        ("x-scorecam-forward-passes", img.stats.forward_passes.to_string()),
        ("x-scorecam-skipped-channels", img.stats.skipped_channels.to_string()),
        ("x-scorecam-shared-mask-channels", img.stats.shared_mask_channels.to_string()),
        (
            "server-timing",
            format!(
                "queue;dur={:.1}, features;dur={:.1}, masked;dur={:.1}, combine;dur={:.1}, metrics;dur={:.1}, total;dur={:.1}",
                t.queue_ms, t.features_ms, t.masked_ms, t.combine_ms, t.metrics_ms, t.total_ms
            ),
        ),
    ];
    if let Some(m) = &img.metrics {
        pairs.extend([
            ("x-scorecam-average-drop", format!("{:.6}", m.average_drop)),
            ("x-scorecam-increase-in-confidence", m.increase_in_confidence.to_string()),
            ("x-scorecam-deletion-auc", format!("{:.6}", m.deletion_auc)),
            ("x-scorecam-insertion-auc", format!("{:.6}", m.insertion_auc)),
            ("x-scorecam-metric-passes", img.stats.metric_passes.to_string()),
        ]);
    }
    for (name, value) in pairs {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), v);
        }
    }
    (headers, img.png).into_response()
}

/// The `result` event of a streamed image explanation: the PNG inline, with what it shows.
#[derive(Serialize)]
struct StreamedImage<'a> {
    model: &'a str,
    method: &'a str,
    preset: &'a str,
    target: &'a crate::render::Prediction,
    #[serde(skip_serializing_if = "Option::is_none")]
    metrics: &'a Option<crate::cam::faithfulness::Faithfulness>,
    predictions: &'a [crate::render::Prediction],
    stats: &'a crate::engine::RunStats,
    timings_ms: &'a crate::engine::StageTimings,
    image: StreamedPng,
}

#[derive(Serialize)]
struct StreamedPng {
    content_type: &'static str,
    width: u32,
    height: u32,
    base64: String,
}

fn result_event(rendered: &Rendered) -> Result<Event, axum::Error> {
    let event = Event::default().event("result");
    match rendered {
        Rendered::Json(doc) => event.json_data(doc),
        Rendered::Image(img) => {
            use base64::Engine as _;
            event.json_data(StreamedImage {
                model: &img.model,
                method: &img.method,
                preset: &img.preset,
                target: &img.target,
                metrics: &img.metrics,
                predictions: &img.predictions,
                stats: &img.stats,
                timings_ms: &img.timings,
                image: StreamedPng {
                    content_type: "image/png",
                    width: img.width,
                    height: img.height,
                    base64: base64::engine::general_purpose::STANDARD.encode(&img.png),
                },
            })
        }
    }
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

/// `/explain/stream`: the same request as `/explain`, answered with Server-Sent Events:
/// `progress` while the passes run, then one `result` or `error`. Parameters and the
/// image are checked first, so those errors keep their plain status codes. When the client
/// goes away the stream is dropped, which aborts the task, which cancels the job.
pub async fn explain_stream(State(state): State<AppState>, req: ImageRequest) -> Result<Response, ApiError> {
    ensure_accepting(&state)?;
    let mut params = req.explain_params(&state)?;
    let progress = Arc::new(Progress::default());
    params.progress = Some(progress.clone());
    let deadline = params.deadline.map(|d| tokio::time::Instant::from_std(d) + DEADLINE_SLACK);
    let prepared = pipeline::prepare(&state.engine, req.image, &state.config.limits, params).await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(4);
    let task = tokio::spawn(async move {
        let work = pipeline::run(&state.engine, prepared);
        let work = async move {
            match deadline {
                Some(d) => {
                    tokio::time::timeout_at(d, work).await.map_err(|_| ApiError::Timeout)?.map_err(ApiError::from)
                }
                None => work.await.map_err(ApiError::from),
            }
        };
        tokio::pin!(work);
        let mut tick = tokio::time::interval(PROGRESS_EVERY);
        let mut last = None;
        loop {
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
                        Ok(rendered) => result_event(&rendered).unwrap_or_else(|e| {
                            error_event(ApiError::from(crate::engine::EngineError::Internal(e.to_string())))
                        }),
                        Err(e) => error_event(e),
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
    ensure_accepting(&state)?;
    let (model, top_k, deadline) = req.predict_params(&state)?;
    let work = pipeline::predict(&state.engine, req.image, &state.config.limits, &model, top_k);
    let doc = tokio::time::timeout_at(tokio::time::Instant::from_std(deadline), work)
        .await
        .map_err(|_| ApiError::Timeout)??;
    Ok(Json(doc).into_response())
}

#[derive(Serialize)]
pub struct ModelSummary {
    name: String,
    description: String,
    input: InputSummary,
    target_layer: LayerSummary,
    channels: usize,
    labels: usize,
    execution_provider: &'static str,
    batch_size: usize,
    workers: usize,
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

fn summary(state: &AppState, index: usize, m: &ModelPackage) -> ModelSummary {
    let [_, h, w] = m.info.input_chw;
    let [k, fh, fw] = m.info.feature_khw;
    ModelSummary {
        name: m.name.clone(),
        description: m.manifest.description.clone(),
        input: InputSummary { width: w, height: h, resize: m.manifest.input.resize },
        target_layer: LayerSummary {
            description: m.manifest.target_layer.description.clone(),
            channels: k,
            height: fh,
            width: fw,
        },
        channels: k,
        labels: m.labels.len(),
        execution_provider: state.engine.provider(index).as_str(),
        batch_size: state.engine.config().batch_for(&m.name),
        workers: state.engine.config().workers,
        source: m.manifest.source.clone(),
        license: m.manifest.license.clone(),
    }
}

#[derive(Serialize)]
pub struct ModelList {
    default: String,
    models: Vec<ModelSummary>,
}

pub async fn models(State(state): State<AppState>) -> Json<ModelList> {
    let models = state.engine.registry().all().iter().enumerate().map(|(i, m)| summary(&state, i, m)).collect();
    Json(ModelList { default: state.default_model.clone(), models })
}

pub async fn model(State(state): State<AppState>, Path(name): Path<String>) -> Result<Json<ModelSummary>, ApiError> {
    let index = state
        .engine
        .registry()
        .index_of(&name)
        .ok_or_else(|| ApiError::from(crate::engine::EngineError::UnknownModel(name.clone())))?;
    Ok(Json(summary(&state, index, &state.engine.registry().all()[index])))
}

pub async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

pub async fn readyz(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let engine = &state.engine;
    if engine.is_draining() {
        return Err(ApiError::NotReady("draining for shutdown".into()));
    }
    let alive = engine.stats().workers_alive();
    if alive < engine.config().workers {
        return Err(ApiError::NotReady(format!("{alive} of {} workers alive", engine.config().workers)));
    }
    let models: Vec<_> = engine.registry().all().iter().map(|m| m.name.clone()).collect();
    let providers: serde_json::Map<String, serde_json::Value> =
        models.iter().enumerate().map(|(i, name)| (name.clone(), engine.provider(i).as_str().into())).collect();
    Ok(Json(serde_json::json!({ "status": "ready", "models": models, "providers": providers, "workers": alive })))
}

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let body = state.metrics.render(state.engine.stats(), state.engine.is_ready());
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
