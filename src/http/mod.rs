//! The HTTP face: axum router, input extraction, handlers, the error→status map, metrics.
//! A thin face over `service`: handlers parse, call the service, shape the response.

mod auth;
mod binary_data;
mod body_guard;
mod error;
mod handlers;
mod input;
mod keys;
mod metrics;
mod state;
mod v1;
mod v2;

pub use error::ApiError;
pub use keys::ApiKeys;
pub use metrics::HttpMetrics;
pub use state::AppState;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{any, get, post};
use tower_http::request_id::{MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

const REQUEST_ID: &str = "x-request-id";

/// Request ids: the client's `x-request-id` is kept; otherwise a process-unique one.
#[derive(Clone, Default)]
struct NextRequestId(Arc<AtomicU64>);

impl MakeRequestId for NextRequestId {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        let n = self.0.fetch_add(1, Ordering::Relaxed);
        HeaderValue::from_str(&format!("{:08x}-{n}", std::process::id())).ok().map(RequestId::new)
    }
}

/// A response's route in the metrics, where it is finer than the route the router matched:
/// one route may serve several operations (v1's `{name}:predict` and `{name}:explain`).
#[derive(Clone, Copy, Debug)]
struct RouteLabel(&'static str);

async fn record(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route =
        req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string()).unwrap_or_else(|| "unmatched".into());
    let started = Instant::now();
    let response = next.run(req).await;
    let route = response.extensions().get::<RouteLabel>().map_or(route, |label| label.0.to_string());
    state.metrics.observe(&route, response.status().as_u16(), started.elapsed().as_secs_f64());
    response
}

/// The application's routes and middleware.
pub fn router(state: AppState) -> Router {
    let body_limit = state.config.server.max_body_bytes;
    let trace = TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
        let id = req.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("-");
        tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.uri().path())
    });
    Router::new()
        .route("/", get(handlers::root))
        .route("/favicon.svg", get(handlers::favicon))
        .route("/favicon.ico", get(handlers::favicon))
        .route("/explain", post(handlers::explain))
        .route("/explain/stream", post(handlers::explain_stream))
        .route("/predict", post(handlers::predict))
        .route("/models", get(handlers::models))
        .route("/models/{name}", get(handlers::model))
        .route("/methods", get(handlers::methods))
        .route("/healthz", get(handlers::healthz))
        .route("/readyz", get(handlers::readyz))
        .route("/metrics", get(handlers::metrics))
        .route("/openapi.yaml", get(handlers::openapi))
        // Open Inference Protocol v2 (KServe / Triton clients).
        .route("/v2", get(v2::server_metadata))
        .route("/v2/health/live", get(v2::live))
        .route("/v2/health/ready", get(v2::ready))
        .route("/v2/models/{name}", get(v2::model_metadata))
        .route("/v2/models/{name}/ready", get(v2::model_ready))
        .route("/v2/models/{name}/infer", post(v2::infer))
        // The versions the metadata advertises ("1"), for clients that name one.
        .route("/v2/models/{name}/versions/{version}", get(v2::versioned_metadata))
        .route("/v2/models/{name}/versions/{version}/ready", get(v2::versioned_ready))
        .route("/v2/models/{name}/versions/{version}/infer", post(v2::versioned_infer))
        // KServe's V1 data plane: `{name}`, `{name}:predict` and `{name}:explain` are one
        // path segment, which matchit cannot split, so one route takes all three, and
        // every method (the handler knows which the path takes, for 405's `Allow`).
        .route("/v1/models", get(v1::list))
        .route("/v1/models/{name}", any(v1::route))
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), auth::require_key))
        // Outside the key check, so a refused upload is drained too.
        .layer(middleware::from_fn_with_state(state.clone(), body_guard::body_guard))
        .layer(middleware::from_fn_with_state(state.clone(), record))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(PropagateRequestIdLayer::new(axum::http::HeaderName::from_static(REQUEST_ID)))
        .layer(trace)
        .layer(SetRequestIdLayer::new(axum::http::HeaderName::from_static(REQUEST_ID), NextRequestId::default()))
        .layer(cors(&state.config.server.cors_allowed_origins))
        .with_state(state)
}

/// CORS is off (no headers) unless origins are configured.
fn cors(origins: &[String]) -> tower::util::Either<tower_http::cors::CorsLayer, tower::layer::util::Identity> {
    use axum::http::{Method, header};
    if origins.is_empty() {
        return tower::util::Either::Right(tower::layer::util::Identity::new());
    }
    let allowed: Vec<HeaderValue> = origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()).collect();
    tower::util::Either::Left(
        tower_http::cors::CorsLayer::new()
            .allow_origin(allowed)
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([header::CONTENT_TYPE, header::AUTHORIZATION, header::HeaderName::from_static("x-api-key")])
            .expose_headers([header::HeaderName::from_static("x-request-id")]),
    )
}

/// Serves until `shutdown` resolves, then drains: readiness turns 503 and new work is
/// refused while in-flight work finishes (up to the grace period); then the listener
/// closes and the engine stops.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let service = state.service.clone();
    let grace = Duration::from_secs(state.config.server.shutdown_grace_s);
    let drained = {
        let service = service.clone();
        async move {
            shutdown.await;
            tracing::info!(in_flight = service.in_flight(), "shutdown requested: draining");
            service.drain(grace).await;
        }
    };
    axum::serve(listener, router(state)).with_graceful_shutdown(drained).await?;
    service.shutdown(Duration::from_secs(1)).await;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
