//! Arbitrary requests through the real router (`scorecam::http::router`) with the tiny test
//! model (`tests/fixtures/models/tiny`), in process, via `tower::ServiceExt::oneshot`.
//!
//! Input layout (so that seeds can be written by hand, see fuzz/make_seeds.py):
//!   byte 0  method   (mostly POST; GET, PUT)
//!   byte 1  route    (/explain, /explain/stream, /predict, /v2/…/infer, …)
//!   byte 2  Content-Type, from a small set (multipart with boundary `fuzzboundary`, image/*,
//!           application/json, octet-stream, text/plain, none, …)
//!   byte 3  flags: bit 0 `Accept: application/json`, bit 1 body sent in three chunks
//!   then    the query string up to the first `\n` (bytes outside the URI's safe set are
//!           percent-encoded, so any bytes make a valid URI), then the body (the rest).
//!
//! Invariants: no panic; no 500 (nor any 5xx but the documented 503 and 504); every error
//! response is JSON `{"error": "…", "error_type": "…"}`; a 200 from /explain is a PNG or
//! JSON, from /predict JSON with `predictions`, from /explain/stream events ending in a
//! `result` or an `error` that is not a 500's.
#![no_main]

use std::sync::{Arc, LazyLock};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use libfuzzer_sys::fuzz_target;
use scorecam::config::Config;
use scorecam::http::{ApiKeys, AppState};
use scorecam::service::{ModelRepository, Service, ServiceConfig};
use tower::ServiceExt;

const METHODS: [Method; 8] =
    [Method::POST, Method::POST, Method::POST, Method::POST, Method::POST, Method::POST, Method::GET, Method::PUT];

const ROUTES: [&str; 8] = [
    "/explain",
    "/predict",
    "/v2/models/tiny/infer",
    "/explain/stream",
    "/predict",
    "/v2/models/nope/infer",
    "/models/tiny",
    "/explain/extra",
];

const CONTENT_TYPES: [&str; 12] = [
    "multipart/form-data; boundary=fuzzboundary",
    "image/png",
    "application/json",
    "image/jpeg",
    "application/octet-stream",
    "multipart/form-data; boundary=fuzzboundary",
    "application/json; charset=utf-8",
    "IMAGE/WEBP",
    "text/plain",
    "",
    "multipart/form-data",
    "multipart/form-data; boundary=\"fuzzboundary\"; charset=utf-8",
];

struct World {
    runtime: tokio::runtime::Runtime,
    state: AppState,
}

static WORLD: LazyLock<World> = LazyLock::new(|| {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let (lib, _) = scorecam::runtime::resolve_library(None, "cpu").expect("run scripts/setup/ort.sh first");
    scorecam::runtime::init(&lib).expect("ONNX Runtime loads");
    let mut config = Config::default();
    config.models.dir = root.join("tests/fixtures/models");
    config.models.default = Some("tiny".into());
    config.engine.workers = 1;
    config.engine.session.intra_threads = 1;
    config.engine.max_batch_size = 4;
    // Small and quick: every input must finish in milliseconds.
    config.server.request_timeout_ms = 2_000;
    config.server.max_request_timeout_ms = 5_000;
    config.server.body_read_timeout_ms = 2_000;
    config.server.max_body_bytes = 16 << 10;
    config.limits.max_width = 2048;
    config.limits.max_height = 2048;
    config.limits.max_pixels = 1 << 20;
    config.limits.max_alloc_bytes = 32 << 20;
    let repo = ModelRepository::new(config.models.dir.clone(), Some("tiny".into()), config.effective_engine());
    let service_config = ServiceConfig {
        limits: config.limits.clone(),
        default_timeout_ms: Some(config.server.request_timeout_ms),
        max_timeout_ms: Some(config.server.max_request_timeout_ms),
        cache_mib: config.server.cache_mib,
    };
    let service = Service::start(config.effective_engine(), repo, service_config).expect("the tiny model serves");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let state = AppState {
        service: Arc::new(service),
        config: Arc::new(config),
        metrics: Default::default(),
        api_keys: Arc::new(ApiKeys::default()),
    };
    World { runtime, state }
});

/// `SCORECAM_FUZZ_DEBUG=1` prints each request and its answer (for looking at a corpus).
static DEBUG: LazyLock<bool> = LazyLock::new(|| std::env::var_os("SCORECAM_FUZZ_DEBUG").is_some());

/// Bytes a URI query may hold as they are; everything else is percent-encoded.
fn query_safe(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%".contains(&b)
}

fn encode_query(raw: &[u8]) -> String {
    let mut out = String::with_capacity(raw.len());
    for &b in raw {
        if query_safe(b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn is_error_shape(body: &[u8]) -> bool {
    let Ok(serde_json::Value::Object(map)) = serde_json::from_slice::<serde_json::Value>(body) else { return false };
    map.get("error").is_some_and(serde_json::Value::is_string)
        && map.get("error_type").is_some_and(serde_json::Value::is_string)
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let world = &*WORLD;
    let method = METHODS[usize::from(data[0]) % METHODS.len()].clone();
    let route = ROUTES[usize::from(data[1]) % ROUTES.len()];
    let content_type = CONTENT_TYPES[usize::from(data[2]) % CONTENT_TYPES.len()];
    let (accept_json, chunked) = (data[3] & 1 != 0, data[3] & 2 != 0);
    let rest = &data[4..];
    let (query, body) = match rest.iter().position(|&b| b == b'\n') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let uri = if query.is_empty() { route.to_string() } else { format!("{route}?{}", encode_query(query)) };
    let mut builder = Request::builder().method(method.clone()).uri(&uri);
    if !content_type.is_empty() {
        builder = builder.header(header::CONTENT_TYPE, content_type);
    }
    if accept_json {
        builder = builder.header(header::ACCEPT, "application/json");
    }
    let body = if chunked {
        let third = body.len() / 3;
        let parts: Vec<Result<axum::body::Bytes, std::io::Error>> = vec![
            Ok(body[..third].to_vec().into()),
            Ok(body[third..2 * third].to_vec().into()),
            Ok(body[2 * third..].to_vec().into()),
        ];
        Body::from_stream(futures_util::stream::iter(parts))
    } else {
        Body::from(body.to_vec())
    };
    let Ok(request) = builder.body(body) else { return };
    let app = scorecam::http::router(world.state.clone());
    let (status, content_type_out, bytes) = world.runtime.block_on(async move {
        let response = app.oneshot(request).await.expect("the router is infallible");
        let status = response.status();
        let ct = response.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.expect("response body reads");
        (status, ct, bytes)
    });
    let shown = || String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into_owned();
    if *DEBUG {
        eprintln!("{method} {uri} ({content_type}) → {status}: {}", shown().chars().take(120).collect::<String>());
    }
    assert!(
        !status.is_server_error() || status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::GATEWAY_TIMEOUT,
        "{method} {uri} ({content_type}) → {status}: {}",
        shown()
    );
    if status.is_client_error() || status.is_server_error() {
        assert!(
            content_type_out.starts_with("application/json") && is_error_shape(&bytes),
            "{method} {uri} ({content_type}) → {status} without the error shape ({content_type_out}): {}",
            shown()
        );
    } else if status == StatusCode::OK && method == Method::POST && route == "/explain" {
        let png = bytes.starts_with(b"\x89PNG\r\n\x1a\n") && content_type_out == "image/png";
        let json = content_type_out.starts_with("application/json")
            && serde_json::from_slice::<serde_json::Value>(&bytes).is_ok_and(|v| v.get("explanations").is_some());
        assert!(png || json, "explain 200 is neither a PNG nor the JSON document ({content_type_out})");
    } else if status == StatusCode::OK && method == Method::POST && route == "/explain/stream" {
        check_stream(&bytes);
    } else if status == StatusCode::OK && method == Method::POST && route == "/predict" {
        let doc: serde_json::Value = serde_json::from_slice(&bytes).expect("predict 200 is JSON");
        assert!(doc.get("predictions").is_some_and(serde_json::Value::is_array), "{doc}");
    }
});

/// A 200 stream ends with one `result` or `error` event; an error there is never what
/// would have been a 500 (`internal`, `model_failure`) and has the error shape.
fn check_stream(bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    let mut last: Option<(String, String)> = None;
    for block in text.split("\n\n") {
        let event = block.lines().find_map(|l| l.strip_prefix("event:")).map(|e| e.trim().to_string());
        let data: String = block.lines().filter_map(|l| l.strip_prefix("data:")).map(str::trim).collect();
        if let Some(event) = event {
            last = Some((event, data));
        }
    }
    let (event, data) = last.expect("the stream has events");
    match event.as_str() {
        "result" => {}
        "error" => {
            assert!(is_error_shape(data.as_bytes()), "stream error without the error shape: {data}");
            assert!(
                !data.contains("\"error_type\":\"internal\"") && !data.contains("\"error_type\":\"model_failure\""),
                "stream error that would be a 500: {data}"
            );
        }
        other => panic!("the stream ends with `{other}`, not a result or an error"),
    }
}
