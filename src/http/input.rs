//! The three ways to send an image (multipart, raw body, JSON with base64) and the
//! parameters that come with it, reduced to one shape (`service::Params` and the image
//! bytes) before any handler sees them. What the parameters mean is the service's business.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRequest, Multipart, Request};
use axum::http::header;
use base64::Engine as _;
use serde_json::Value;

use super::error::ApiError;
use super::state::AppState;
use crate::service::{self, ExplainRequest, Fault, ImageInput, ImageLimits, Params, PredictRequest, ReferenceSpec};

/// An image and its parameters, whatever form they came in.
#[derive(Debug)]
pub struct ImageRequest {
    pub image: Arc<[u8]>,
    pub params: Params,
    /// The client sent `Accept: application/json`.
    pub accepts_json: bool,
    /// An injected fault (only with the `fault-injection` feature).
    pub fault: Option<Fault>,
    /// Targets' inputs that are files or long, not parameters.
    pub extras: Extras,
}

/// A segmentation region drawn as a mask, an embedding's reference photo, or a reference
/// vector too long for a parameter: multipart parts or JSON members of those names.
#[derive(Debug, Default)]
pub struct Extras {
    pub region_mask: Option<axum::body::Bytes>,
    pub reference_image: Option<axum::body::Bytes>,
    pub reference: Option<String>,
}

/// Names that carry [`Extras`] rather than parameters.
const EXTRA_PARTS: [&str; 3] = ["region_mask", "reference_image", "reference"];

impl Extras {
    /// Keeps a part named as an extra; false for any other name.
    fn take(&mut self, name: &str, bytes: axum::body::Bytes) -> Result<bool, ApiError> {
        let slot = match name {
            "region_mask" => &mut self.region_mask,
            "reference_image" => &mut self.reference_image,
            "reference" => {
                let text = String::from_utf8(bytes.to_vec())
                    .map_err(|_| ApiError::bad_request("part `reference` is not UTF-8 text"))?;
                return self.set_reference(text).map(|()| true);
            }
            _ => return Ok(false),
        };
        if slot.replace(bytes).is_some() {
            return Err(ApiError::bad_request(format!("more than one `{name}` part")));
        }
        Ok(true)
    }

    fn set_reference(&mut self, text: String) -> Result<(), ApiError> {
        if self.reference.replace(text).is_some() {
            return Err(ApiError::bad_request("`reference` given more than once"));
        }
        Ok(())
    }

    /// Sets the request's region and reference from the extras.
    fn apply(&self, request: &mut ExplainRequest, limits: &ImageLimits) -> Result<(), ApiError> {
        if let Some(mask) = &self.region_mask {
            if request.region.is_some() {
                return Err(ApiError::bad_request("give `region` (a box) or `region_mask`, not both"));
            }
            request.region = Some(service::region_mask(mask, limits)?);
        }
        let given = [self.reference.is_some(), self.reference_image.is_some(), request.reference.is_some()];
        if given.iter().filter(|g| **g).count() > 1 {
            return Err(ApiError::bad_request("give one of `reference` and `reference_image`"));
        }
        if let Some(text) = &self.reference {
            request.reference = Some(service::parse_reference(text)?);
        }
        if let Some(image) = &self.reference_image {
            request.reference = Some(ReferenceSpec::Image(ImageInput::Encoded(Arc::from(image.as_ref()))));
        }
        Ok(())
    }
}

impl ImageRequest {
    pub fn explain_request(&self, limits: &ImageLimits) -> Result<(ExplainRequest, ImageInput), ApiError> {
        let mut request = self.params.explain_request(self.accepts_json)?;
        request.fault = self.fault;
        self.extras.apply(&mut request, limits)?;
        Ok((request, ImageInput::Encoded(self.image.clone())))
    }

    pub fn predict_request(&self) -> Result<(PredictRequest, ImageInput), ApiError> {
        let e = &self.extras;
        if e.region_mask.is_some() || e.reference_image.is_some() || e.reference.is_some() {
            return Err(ApiError::bad_request(
                "region_mask, reference and reference_image choose what /explain explains; a prediction takes none",
            ));
        }
        Ok((self.params.predict_request()?, ImageInput::Encoded(self.image.clone())))
    }
}

fn body_error(limit: usize) -> impl Fn(axum::Error) -> ApiError {
    move |e| {
        // to_bytes reports an exceeded limit as a length-limit error in its source chain.
        let text = format!("{e:?}");
        if text.contains("LengthLimitError") || text.contains("length limit") {
            ApiError::PayloadTooLarge(limit)
        } else {
            ApiError::bad_request(format!("could not read the request body: {e}"))
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
        let mut extras = Extras::default();
        let mime = content_type.split(';').next().unwrap_or("").trim().to_string();
        let image = if mime == "multipart/form-data" {
            let mut multipart = Multipart::from_request(req, state)
                .await
                .map_err(|e| ApiError::bad_request(format!("invalid multipart request: {e}")))?;
            let mut image = None;
            while let Some(field) = multipart.next_field().await.map_err(multipart_error(limit))? {
                let name = field.name().unwrap_or("").to_string();
                let bytes = field.bytes().await.map_err(multipart_error(limit))?;
                if name == "image" {
                    if image.is_some() {
                        return Err(ApiError::bad_request("more than one `image` part"));
                    }
                    image = Some(bytes);
                } else if !extras.take(&name, bytes.clone())? {
                    let value = String::from_utf8(bytes.to_vec())
                        .map_err(|_| ApiError::bad_request(format!("part `{name}` is not UTF-8 text")))?;
                    params.push(&name, value)?;
                }
            }
            image.ok_or_else(|| ApiError::bad_request("multipart request has no `image` part"))?
        } else if mime == "application/json" {
            let body = axum::body::to_bytes(req.into_body(), limit).await.map_err(body_error(limit))?;
            let value: Value =
                serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))?;
            let Value::Object(map) = value else {
                return Err(ApiError::bad_request("the JSON body must be an object"));
            };
            let mut image = None;
            for (key, v) in map {
                if key == "image" {
                    let b64 = v
                        .get("b64")
                        .and_then(Value::as_str)
                        .ok_or_else(|| ApiError::bad_request("`image` must be {\"b64\": \"<base64>\"}"))?;
                    image = Some(axum::body::Bytes::from(decode_base64("`image.b64`", b64)?));
                    continue;
                }
                if EXTRA_PARTS.contains(&key.as_str()) {
                    json_extra(&mut extras, &key, v)?;
                    continue;
                }
                push_json_param(&mut params, &key, v)?;
            }
            image.ok_or_else(|| ApiError::bad_request("the JSON body has no `image`"))?
        } else if mime.starts_with("image/") || mime == "application/octet-stream" {
            axum::body::to_bytes(req.into_body(), limit).await.map_err(body_error(limit))?
        } else {
            return Err(ApiError::UnsupportedMediaType(format!(
                "unsupported Content-Type `{mime}`: send multipart/form-data, image/*, or application/json"
            )));
        };
        Ok(Self {
            image: Arc::from(image.as_ref()),
            params: query_params.merge_over(params),
            accepts_json,
            fault,
            extras,
        })
    }
}

/// A JSON body's extra: `reference` as an array of numbers, a file as {"b64": "…"}.
fn json_extra(extras: &mut Extras, key: &str, v: Value) -> Result<(), ApiError> {
    if key == "reference" {
        return extras.set_reference(v.to_string());
    }
    let b64 = v
        .get("b64")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad_request(format!("`{key}` must be {{\"b64\": \"<base64>\"}}")))?;
    let bytes = axum::body::Bytes::from(decode_base64(&format!("`{key}.b64`"), b64)?);
    extras.take(key, bytes).map(|_| ())
}

/// The fault a test asks for with `x-scorecam-fault` (only with the `fault-injection` feature).
#[cfg(feature = "fault-injection")]
pub(super) fn fault_header(headers: &axum::http::HeaderMap) -> Option<Fault> {
    match headers.get("x-scorecam-fault").and_then(|v| v.to_str().ok()) {
        Some("panic") => Some(Fault::Panic),
        Some("kill-worker") => Some(Fault::KillWorker),
        _ => None,
    }
}

#[cfg(not(feature = "fault-injection"))]
pub(super) fn fault_header(_: &axum::http::HeaderMap) -> Option<Fault> {
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
            ApiError::bad_request(format!("invalid multipart request: {}", e.body_text()))
        }
    }
}

/// Decodes `a=1&b=x%20y` (with `+` as space).
fn url_pairs(query: &str) -> Result<Vec<(String, String)>, ApiError> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(query)
        .map_err(|e| ApiError::bad_request(format!("invalid query string: {e}")))
}

/// Most images in one request of the inference protocols (v1 `instances`, the v2 batch):
/// each is a full explanation or prediction (they run side by side, a bounded number at
/// once), so a request's work, and its answer, stay within a known multiple of a single
/// image's.
pub(super) const MAX_INSTANCES: usize = 16;

/// Decodes base64 image bytes (standard alphabet, padded; surrounding whitespace is
/// ignored). The result is smaller than the text, which the body limit already bounds.
pub(super) fn decode_base64(what: &str, text: &str) -> Result<Vec<u8>, ApiError> {
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|e| ApiError::bad_request(format!("{what} is not valid base64: {e}")))
}

/// One JSON parameter (`"top_k": 3`, `"target": [1, 2]`, `"preset": "official"`) as the
/// text values `Params` parses, so JSON bodies take exactly the parameters, with exactly
/// the checks, of the query string and form parts.
pub(super) fn push_json_param(params: &mut Params, key: &str, value: Value) -> Result<(), ApiError> {
    let values = match value {
        Value::Array(items) => items,
        other => vec![other],
    };
    for item in values {
        let text = match item {
            Value::String(s) => s,
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => return Err(ApiError::bad_request(format!("`{key}` must be a string, number or list of them"))),
        };
        params.push(key, text)?;
    }
    Ok(())
}
