//! Route handlers: each parses, calls the pipeline or engine, and shapes the response.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::error::ApiError;
use super::input::ImageRequest;
use super::state::AppState;
use crate::model::ModelPackage;
use crate::pipeline::{self, Rendered};

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
        Rendered::Image { png, target, stats, timings } => {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/png"));
            let label: String =
                target.label.chars().map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '?' }).collect();
            let pairs = [
                ("x-scorecam-target-index", target.index.to_string()),
                ("x-scorecam-target-label", label),
                ("x-scorecam-target-score", format!("{:.6}", target.score)),
                ("x-scorecam-forward-passes", stats.forward_passes.to_string()),
                ("x-scorecam-skipped-channels", stats.skipped_channels.to_string()),
                (
                    "server-timing",
                    format!(
                        "queue;dur={:.1}, features;dur={:.1}, masked;dur={:.1}, combine;dur={:.1}, total;dur={:.1}",
                        timings.queue_ms, timings.features_ms, timings.masked_ms, timings.combine_ms, timings.total_ms
                    ),
                ),
            ];
            for (name, value) in pairs {
                if let Ok(v) = HeaderValue::from_str(&value) {
                    headers.insert(HeaderName::from_static(name), v);
                }
            }
            (headers, png).into_response()
        }
    })
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
