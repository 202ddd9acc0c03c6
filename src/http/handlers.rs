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
use crate::service::{
    Catalog, ExplainDocument, ImageSummary, ModelSummary, Progress, Readiness, Rendered, RenderedPng, ServiceError,
    registry,
};

/// The contract, embedded so the binary serves exactly the spec it was built with.
pub const OPENAPI: &str = include_str!("../../openapi.yaml");

/// The explorer page: one self-contained file (no CDN, works offline), embedded at build time.
pub const PAGE: &str = include_str!("page/index.html");
/// The page's icon (also answered at `/favicon.ico`, which browsers ask for unprompted).
pub const FAVICON: &str = include_str!("page/favicon.svg");

pub async fn explain(State(state): State<AppState>, req: ImageRequest) -> Result<Response, ApiError> {
    let (request, image) = req.explain_request(&state.config.limits)?;
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
        ("x-scorecam-exif-orientation", s.exif_orientation.as_str().to_string()),
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
    let (request, image) = req.explain_request(&state.config.limits)?;
    let progress = Arc::new(Progress::default());
    let prepared = state.service.prepare(request, image).await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(4);
    let task_progress = progress.clone();
    let task = tokio::spawn(async move {
        let service = state.service.clone();
        let work = async move { service.finish(prepared, Some(task_progress)).await };
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

pub async fn models(State(state): State<AppState>) -> Json<Catalog> {
    Json(state.service.catalog())
}

pub async fn model(State(state): State<AppState>, Path(name): Path<String>) -> Result<Json<ModelSummary>, ApiError> {
    Ok(Json(state.service.model_summary(&name)?))
}

/// The method registry: names, parameters, bounds and defaults (the page builds its form
/// from it).
pub async fn methods() -> Json<serde_json::Value> {
    Json(registry::describe())
}

pub async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

pub async fn readyz(State(state): State<AppState>) -> Result<Json<Readiness>, ApiError> {
    state.service.readiness().map(Json).map_err(ApiError::NotReady)
}

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let body = state.metrics.render(&state.service.metrics());
    ([(header::CONTENT_TYPE, super::metrics::CONTENT_TYPE)], body)
}

/// `GET /`: the explorer page for a browser (a client that accepts HTML); for any other
/// client, KServe V1's liveness answer `{"status": "alive"}`, which its clients'
/// `is_server_live` reads from this path.
pub async fn root(headers: HeaderMap) -> Response {
    let wants_html = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|accept| accept.contains("text/html"));
    if wants_html {
        page().await.into_response()
    } else {
        Json(serde_json::json!({ "status": "alive" })).into_response()
    }
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

/// `GET /favicon.svg` and `GET /favicon.ico`: the page's icon (SVG).
pub async fn favicon() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        FAVICON,
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
    use serde_json::Value;

    use super::OPENAPI;
    use crate::service::registry as methods;

    fn spec() -> Value {
        serde_norway::from_str(OPENAPI).expect("openapi.yaml parses")
    }

    fn names(v: &Value) -> Vec<&str> {
        v.as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default()
    }

    /// Every `method` enum of the document, wherever it is (query parameter, bodies).
    fn method_enums(v: &Value, out: &mut Vec<Vec<String>>) {
        match v {
            Value::Object(map) => {
                for (key, value) in map {
                    let e = value.get("enum").or_else(|| value.get("schema").and_then(|s| s.get("enum")));
                    if key == "method"
                        && let Some(e) = e
                    {
                        out.push(names(e).into_iter().map(str::to_string).collect());
                    }
                    method_enums(value, out);
                }
            }
            Value::Array(items) => items.iter().for_each(|i| method_enums(i, out)),
            _ => {}
        }
    }

    /// The contract follows the method registry: every method is in each `method` enum,
    /// and every method parameter is a query parameter of `/explain` and a field of its
    /// multipart body. Compared as parsed documents, so layout does not matter.
    #[test]
    fn openapi_names_every_method_and_parameter_of_the_registry() {
        let spec = spec();
        let components = &spec["components"];
        let multipart =
            &components["requestBodies"]["ExplainRequest"]["content"]["multipart/form-data"]["schema"]["properties"];
        let mut enums = Vec::new();
        method_enums(&spec, &mut enums);
        assert!(enums.len() >= 4, "the query parameter, the bodies and the v2 parameters name methods");
        for e in enums {
            assert_eq!(e, methods::names(), "a `method` enum of openapi.yaml");
        }
        let explain: Vec<&str> = spec["paths"]["/explain"]["post"]["parameters"]
            .as_array()
            .expect("/explain has parameters")
            .iter()
            .filter_map(|p| p["$ref"].as_str())
            .collect();
        for name in methods::param_names() {
            let param = &components["parameters"][name];
            assert_eq!((param["name"].as_str(), param["in"].as_str()), (Some(name), Some("query")), "`{name}`");
            assert!(explain.contains(&format!("#/components/parameters/{name}").as_str()), "/explain takes `{name}`");
            assert!(multipart.get(name).is_some(), "multipart field `{name}`");
            // A generated client sends every parameter that has a default, and a method's
            // parameter with another method is refused: none may declare one.
            let schema = &param["schema"];
            let preset = (schema["$ref"].as_str() == Some("#/components/schemas/Preset"))
                .then(|| &components["schemas"]["Preset"]);
            assert!(preset.unwrap_or(schema).get("default").is_none(), "`{name}` declares a default");
        }
    }
}
