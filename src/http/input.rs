//! The three ways to send an image (multipart, raw body, JSON with base64) and the
//! parameters that come with it, reduced to one shape before any handler sees them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{FromRequest, Multipart, Request};
use axum::http::header;
use base64::Engine as _;
use serde_json::Value;

use super::error::ApiError;
use super::state::AppState;
use crate::engine::TargetSpec;
use crate::pipeline::{ExplainParams, MethodArgs, OutputFormat, Resolution};
use crate::render::Colormap;

/// Most parameters (form parts, JSON keys, query pairs) one request may carry.
const MAX_PARAMS: usize = 32;
/// Most bytes of one text parameter.
const MAX_PARAM_BYTES: usize = 1024;

/// An image and its parameters, whatever form they came in.
#[derive(Debug)]
pub struct ImageRequest {
    pub image: Arc<[u8]>,
    pub params: Params,
    /// The client sent `Accept: application/json`.
    pub accepts_json: bool,
    /// An injected fault (only with the `fault-injection` feature).
    pub fault: Option<crate::engine::Fault>,
}

/// Named parameters; a name may repeat (`target=1&target=2`).
#[derive(Debug, Default)]
pub struct Params(HashMap<String, Vec<String>>);

impl Params {
    fn push(&mut self, name: &str, value: String) -> Result<(), ApiError> {
        if value.len() > MAX_PARAM_BYTES {
            return Err(ApiError::BadRequest(format!("parameter `{name}` is longer than {MAX_PARAM_BYTES} bytes")));
        }
        let count: usize = self.0.values().map(Vec::len).sum();
        if count >= MAX_PARAMS {
            return Err(ApiError::BadRequest(format!("more than {MAX_PARAMS} parameters")));
        }
        self.0.entry(name.to_string()).or_default().push(value);
        Ok(())
    }

    /// Adds the body's parameters; a name given in the body replaces the query's value.
    fn merge_over(mut self, body: Params) -> Params {
        for (k, v) in body.0 {
            self.0.insert(k, v);
        }
        self
    }

    fn one(&self, name: &str) -> Result<Option<&str>, ApiError> {
        match self.0.get(name).map(Vec::as_slice) {
            None | Some([]) => Ok(None),
            Some([v]) => Ok(Some(v.as_str())),
            Some(_) => Err(ApiError::InvalidParameter(format!("`{name}` given more than once"))),
        }
    }

    fn parse<T: std::str::FromStr>(&self, name: &str) -> Result<Option<T>, ApiError>
    where
        T::Err: std::fmt::Display,
    {
        self.one(name)?
            .map(|v| v.trim().parse::<T>().map_err(|e| ApiError::InvalidParameter(format!("`{name}`: {e}"))))
            .transpose()
    }

    /// Fails on names outside `known`: a typo should not silently become a default.
    fn only(&self, known: &[&str]) -> Result<(), ApiError> {
        match self.0.keys().find(|k| !known.contains(&k.as_str())) {
            Some(k) => {
                Err(ApiError::InvalidParameter(format!("unknown parameter `{k}` (known: {})", known.join(", "))))
            }
            None => Ok(()),
        }
    }

    /// Class indices from repeated or comma-separated `target` values.
    fn targets(&self) -> Result<Vec<usize>, ApiError> {
        let mut out = Vec::new();
        for v in self.0.get("target").into_iter().flatten() {
            for part in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let class = part
                    .parse()
                    .map_err(|_| ApiError::InvalidParameter(format!("`target`: `{part}` is not a class index")))?;
                out.push(class);
            }
        }
        Ok(out)
    }
}

const EXPLAIN_PARAMS: &[&str] = &[
    "model",
    "target",
    "top_k",
    "method",
    "preset",
    "max_channels",
    "samples",
    "sigma",
    "seed",
    "steps",
    "metrics",
    "format",
    "resolution",
    "colormap",
    "alpha",
    "timeout_ms",
];
const PREDICT_PARAMS: &[&str] = &["model", "top_k", "timeout_ms"];

impl ImageRequest {
    /// The explain parameters, validated for syntax (ranges that depend on the model are
    /// checked by the pipeline).
    pub fn explain_params(&self, state: &AppState) -> Result<ExplainParams, ApiError> {
        let p = &self.params;
        p.only(EXPLAIN_PARAMS)?;
        let method = MethodArgs {
            method: p.one("method")?.map(str::to_string),
            preset: p.parse("preset")?,
            max_channels: p.parse("max_channels")?,
            samples: p.parse("samples")?,
            sigma: p.parse("sigma")?,
            seed: p.parse("seed")?,
            steps: p.parse("steps")?,
        }
        .resolve()
        .map_err(ApiError::InvalidParameter)?;
        let targets = p.targets()?;
        let top_k: Option<usize> = p.parse("top_k")?;
        let targets = match (targets.is_empty(), top_k) {
            (false, Some(_)) => {
                return Err(ApiError::InvalidParameter("give `target` or `top_k`, not both".into()));
            }
            (false, None) => TargetSpec::Classes(targets),
            (true, k) => TargetSpec::TopK(k.unwrap_or(1)),
        };
        let format = match p.parse::<OutputFormat>("format")? {
            Some(f) => f,
            None if self.accepts_json => OutputFormat::Json,
            None => OutputFormat::Png,
        };
        let alpha: f32 = p.parse("alpha")?.unwrap_or(0.5);
        if !(0.0..=1.0).contains(&alpha) {
            return Err(ApiError::InvalidParameter(format!("`alpha` must be within 0..=1, got {alpha}")));
        }
        Ok(ExplainParams {
            model: self.model(state)?,
            targets,
            method,
            metrics: p.parse::<bool>("metrics")?.unwrap_or(false),
            format,
            resolution: p.parse::<Resolution>("resolution")?.unwrap_or_default(),
            colormap: p.parse::<Colormap>("colormap")?.unwrap_or_default(),
            alpha,
            deadline: Some(self.deadline(state)?),
            progress: None,
            fault: self.fault,
        })
    }

    pub fn predict_params(&self, state: &AppState) -> Result<(String, usize, Instant), ApiError> {
        self.params.only(PREDICT_PARAMS)?;
        Ok((self.model(state)?, self.params.parse("top_k")?.unwrap_or(5), self.deadline(state)?))
    }

    fn model(&self, state: &AppState) -> Result<String, ApiError> {
        Ok(self.params.one("model")?.map(str::to_string).unwrap_or_else(|| state.default_model.clone()))
    }

    fn deadline(&self, state: &AppState) -> Result<Instant, ApiError> {
        let server = &state.config.server;
        let ms: u64 = self.params.parse("timeout_ms")?.unwrap_or(server.request_timeout_ms);
        if ms == 0 || ms > server.max_request_timeout_ms {
            return Err(ApiError::InvalidParameter(format!(
                "`timeout_ms` must be within 1..={}, got {ms}",
                server.max_request_timeout_ms
            )));
        }
        Ok(Instant::now() + Duration::from_millis(ms))
    }
}

fn body_error(limit: usize) -> impl Fn(axum::Error) -> ApiError {
    move |e| {
        // to_bytes reports an exceeded limit as a length-limit error in its source chain.
        let text = format!("{e:?}");
        if text.contains("LengthLimitError") || text.contains("length limit") {
            ApiError::PayloadTooLarge(limit)
        } else {
            ApiError::BadRequest(format!("could not read the request body: {e}"))
        }
    }
}

impl FromRequest<AppState> for ImageRequest {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        // The whole body must arrive within the limit: a slow client cannot hold a
        // connection (and its buffers) open indefinitely.
        let ms = state.config.server.body_read_timeout_ms;
        tokio::time::timeout(Duration::from_millis(ms), Self::read(req, state))
            .await
            .map_err(|_| ApiError::RequestTimeout(ms))?
    }
}

impl ImageRequest {
    async fn read(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let limit = state.config.server.max_body_bytes;
        let content_type =
            req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_ascii_lowercase();
        let accepts_json = req
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("application/json"));
        let fault = fault_header(req.headers());
        let mut query_params = Params::default();
        if let Some(query) = req.uri().query() {
            for (k, v) in url_pairs(query)? {
                query_params.push(&k, v)?;
            }
        }
        let mut params = Params::default();
        let mime = content_type.split(';').next().unwrap_or("").trim().to_string();
        let image = if mime == "multipart/form-data" {
            let mut multipart = Multipart::from_request(req, state)
                .await
                .map_err(|e| ApiError::BadRequest(format!("invalid multipart request: {e}")))?;
            let mut image = None;
            while let Some(field) = multipart.next_field().await.map_err(multipart_error(limit))? {
                let name = field.name().unwrap_or("").to_string();
                let bytes = field.bytes().await.map_err(multipart_error(limit))?;
                if name == "image" {
                    if image.is_some() {
                        return Err(ApiError::BadRequest("more than one `image` part".into()));
                    }
                    image = Some(bytes);
                } else {
                    let value = String::from_utf8(bytes.to_vec())
                        .map_err(|_| ApiError::BadRequest(format!("part `{name}` is not UTF-8 text")))?;
                    params.push(&name, value)?;
                }
            }
            image.ok_or_else(|| ApiError::BadRequest("multipart request has no `image` part".into()))?
        } else if mime == "application/json" {
            let body = axum::body::to_bytes(req.into_body(), limit).await.map_err(body_error(limit))?;
            let value: Value =
                serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(format!("invalid JSON: {e}")))?;
            let Value::Object(map) = value else {
                return Err(ApiError::BadRequest("the JSON body must be an object".into()));
            };
            let mut image = None;
            for (key, v) in map {
                if key == "image" {
                    let b64 = v
                        .get("b64")
                        .and_then(Value::as_str)
                        .ok_or_else(|| ApiError::BadRequest("`image` must be {\"b64\": \"<base64>\"}".into()))?;
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(b64.trim())
                        .map_err(|e| ApiError::BadRequest(format!("`image.b64` is not valid base64: {e}")))?;
                    image = Some(axum::body::Bytes::from(bytes));
                    continue;
                }
                let values = match v {
                    Value::Array(items) => items,
                    other => vec![other],
                };
                for item in values {
                    let text = match item {
                        Value::String(s) => s,
                        Value::Number(n) => n.to_string(),
                        Value::Bool(b) => b.to_string(),
                        _ => {
                            return Err(ApiError::BadRequest(format!(
                                "`{key}` must be a string, number or list of them"
                            )));
                        }
                    };
                    params.push(&key, text)?;
                }
            }
            image.ok_or_else(|| ApiError::BadRequest("the JSON body has no `image`".into()))?
        } else if mime.starts_with("image/") || mime == "application/octet-stream" {
            axum::body::to_bytes(req.into_body(), limit).await.map_err(body_error(limit))?
        } else {
            return Err(ApiError::UnsupportedMediaType(format!(
                "unsupported Content-Type `{mime}`: send multipart/form-data, image/*, or application/json"
            )));
        };
        Ok(Self { image: Arc::from(image.as_ref()), params: query_params.merge_over(params), accepts_json, fault })
    }
}

#[cfg(feature = "fault-injection")]
fn fault_header(headers: &axum::http::HeaderMap) -> Option<crate::engine::Fault> {
    match headers.get("x-scorecam-fault").and_then(|v| v.to_str().ok()) {
        Some("panic") => Some(crate::engine::Fault::Panic),
        Some("kill-worker") => Some(crate::engine::Fault::KillWorker),
        _ => None,
    }
}

#[cfg(not(feature = "fault-injection"))]
fn fault_header(_: &axum::http::HeaderMap) -> Option<crate::engine::Fault> {
    None
}

/// Reads a whole body within the size limit and the body-read deadline.
pub(super) async fn read_body(body: axum::body::Body, state: &AppState) -> Result<axum::body::Bytes, ApiError> {
    let (limit, ms) = (state.config.server.max_body_bytes, state.config.server.body_read_timeout_ms);
    tokio::time::timeout(Duration::from_millis(ms), axum::body::to_bytes(body, limit))
        .await
        .map_err(|_| ApiError::RequestTimeout(ms))?
        .map_err(body_error(limit))
}

fn multipart_error(limit: usize) -> impl Fn(axum::extract::multipart::MultipartError) -> ApiError {
    move |e| {
        if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge(limit)
        } else {
            ApiError::BadRequest(format!("invalid multipart request: {}", e.body_text()))
        }
    }
}

/// Decodes `a=1&b=x%20y` (with `+` as space).
fn url_pairs(query: &str) -> Result<Vec<(String, String)>, ApiError> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(query)
        .map_err(|e| ApiError::BadRequest(format!("invalid query string: {e}")))
}
