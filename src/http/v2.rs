//! The Open Inference Protocol v2 (KServe, Triton): health, metadata and `infer`.
//!
//! Inputs: one tensor, either encoded images (`BYTES`, each element a base64 string),
//! raw pixels (`UINT8`, N×H×W×3 RGB, any size) or model-ready floats (`FP32`, N×3×H×W,
//! normalised). Outputs: `probabilities` (FP32 N×classes); with the request parameter
//! `explain: true` also `saliency` (FP32 N×H×W at the model's input size) and
//! `explained_class` (INT64 N). Optional parameters: `preset`, `target` (a class index).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::error::ApiError;
use super::input::{MAX_INSTANCES, decode_base64};
use super::state::AppState;
use crate::cam::{Method, softmax};
use crate::engine::EngineModel;
use crate::service::{ExplainRequest, ImageInput, OutputFormat, Rendering, Resolution, TargetSpec};

#[derive(Debug, Deserialize)]
pub struct InferRequest {
    #[serde(default)]
    id: Option<String>,
    inputs: Vec<InputTensor>,
    #[serde(default)]
    parameters: serde_json::Map<String, Value>,
}

#[derive(Debug, Deserialize)]
struct InputTensor {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    data: Value,
}

#[derive(Debug, Serialize)]
struct OutputTensor {
    name: &'static str,
    datatype: &'static str,
    shape: Vec<usize>,
    data: Value,
}

#[derive(Debug, Serialize)]
struct InferResponse {
    model_name: String,
    model_version: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    outputs: Vec<OutputTensor>,
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::bad_request(message)
}

fn model(state: &AppState, name: &str) -> Result<Arc<EngineModel>, ApiError> {
    Ok(state.service.model(Some(name))?)
}

pub async fn server_metadata() -> Json<Value> {
    Json(json!({ "name": "scorecam", "version": env!("CARGO_PKG_VERSION"), "extensions": ["scorecam_explain"] }))
}

pub async fn live() -> Json<Value> {
    Json(json!({ "live": true }))
}

/// The protocol: 200 means ready, a 4xx status means not (we use 503 like /readyz, which
/// orchestrators treat the same way and which says why).
pub async fn ready(State(state): State<AppState>) -> Response {
    let ready = state.service.engine().is_ready() && !state.service.models().ready().is_empty();
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(json!({ "ready": ready }))).into_response()
}

pub async fn model_metadata(State(state): State<AppState>, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    let m = model(&state, &name)?;
    let [c, h, w] = m.package.info.input_chw;
    Ok(Json(json!({
        "name": m.name(),
        "versions": ["1"],
        "platform": "onnxruntime_onnx",
        "inputs": [
            { "name": "image", "datatype": "BYTES", "shape": [-1] },
            { "name": "pixels", "datatype": "UINT8", "shape": [-1, -1, -1, 3] },
            { "name": "input", "datatype": "FP32", "shape": [-1, c, h, w] }
        ],
        "outputs": [
            { "name": "probabilities", "datatype": "FP32", "shape": [-1, m.package.info.classes] },
            { "name": "saliency", "datatype": "FP32", "shape": [-1, h, w] },
            { "name": "explained_class", "datatype": "INT64", "shape": [-1] }
        ]
    })))
}

pub async fn model_ready(State(state): State<AppState>, Path(name): Path<String>) -> Result<Response, ApiError> {
    model_readiness(&state, &name)
}

/// `{"name": …, "ready": …}`: 200 when ready, 503 when not (v1 and v2 alike); an unknown
/// model is a 404.
pub(super) fn model_readiness(state: &AppState, name: &str) -> Result<Response, ApiError> {
    let m = model(state, name)?;
    let ready = state.service.engine().is_ready();
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    Ok((status, Json(json!({ "name": m.name(), "ready": ready }))).into_response())
}

/// Turns the request's single input tensor into the images it carries (the service
/// decodes and preprocesses them as it does any upload).
fn decode_inputs(state: &AppState, m: &EngineModel, input: InputTensor) -> Result<Vec<ImageInput>, ApiError> {
    let [c, h, w] = m.package.info.input_chw;
    let dims: Vec<usize> = input
        .shape
        .iter()
        .map(|d| usize::try_from(*d).map_err(|_| bad(format!("input `{}` has a negative dimension", input.name))))
        .collect::<Result<_, _>>()?;
    let n = *dims.first().ok_or_else(|| bad("input shape is empty"))?;
    if n == 0 || n > MAX_INSTANCES {
        return Err(ApiError::invalid_parameter(format!("batch must be within 1..={MAX_INSTANCES}, got {n}")));
    }
    let numbers = |expected: usize| -> Result<Vec<f64>, ApiError> {
        let items = input.data.as_array().ok_or_else(|| bad("`data` must be a flat array"))?;
        if items.len() != expected {
            return Err(bad(format!("`data` has {} elements but the shape {dims:?} needs {expected}", items.len())));
        }
        items.iter().map(|v| v.as_f64().ok_or_else(|| bad("`data` must hold numbers"))).collect()
    };
    match input.datatype.as_str() {
        "BYTES" => {
            let items = input.data.as_array().ok_or_else(|| bad("`data` must be an array of base64 strings"))?;
            if dims.len() != 1 || items.len() != n {
                return Err(bad(format!("BYTES input must have shape [N] with N strings, got {dims:?}")));
            }
            items
                .iter()
                .map(|v| {
                    let b64 = v.as_str().ok_or_else(|| bad("BYTES elements must be base64 strings"))?;
                    Ok(ImageInput::Encoded(decode_base64("BYTES element", b64)?.into()))
                })
                .collect()
        }
        "UINT8" => {
            let [_, ih, iw, ch] = dims[..] else {
                return Err(bad(format!("UINT8 input must be N×H×W×3, got {dims:?}")));
            };
            let pixels =
                ih.checked_mul(iw).filter(|p| ch == 3 && *p > 0 && (*p as u64) <= state.config.limits.max_pixels);
            let pixels = pixels
                .ok_or_else(|| bad(format!("UINT8 input must be N×H×W×3 within the pixel limit, got {dims:?}")))?;
            let values = numbers(n * pixels * 3)?;
            values
                .chunks_exact(pixels * 3)
                .map(|chunk| {
                    let raw: Vec<u8> = chunk
                        .iter()
                        .map(|v| {
                            if (0.0..=255.0).contains(v) {
                                Ok(*v as u8)
                            } else {
                                Err(bad("UINT8 values must be 0..=255"))
                            }
                        })
                        .collect::<Result<_, _>>()?;
                    let img =
                        image::RgbImage::from_raw(iw as u32, ih as u32, raw).ok_or_else(|| bad("bad pixel buffer"))?;
                    Ok(ImageInput::Pixels(img))
                })
                .collect()
        }
        "FP32" => {
            if dims[1..] != [c, h, w] {
                return Err(bad(format!("FP32 input must be N×{c}×{h}×{w}, got {dims:?}")));
            }
            let values = numbers(n * c * h * w)?;
            Ok(values
                .chunks_exact(c * h * w)
                .map(|x| ImageInput::Tensor(x.iter().map(|v| *v as f32).collect()))
                .collect())
        }
        other => Err(bad(format!("unsupported datatype `{other}` (BYTES, UINT8 or FP32)"))),
    }
}

pub async fn infer(
    State(state): State<AppState>,
    Path(name): Path<String>,
    request: axum::extract::Request,
) -> Result<Json<Value>, ApiError> {
    let body = super::input::read_body(request.into_body(), &state).await?;
    let req: InferRequest =
        serde_json::from_slice(&body).map_err(|e| bad(format!("invalid inference request: {e}")))?;
    let m = model(&state, &name)?;
    let classes = m.package.info.classes;
    if req.inputs.len() != 1 {
        return Err(bad(format!("expected exactly one input tensor, got {}", req.inputs.len())));
    }
    let explain = req.parameters.get("explain").and_then(Value::as_bool).unwrap_or(false);
    let method = match req.parameters.get("preset").and_then(Value::as_str) {
        Some(p) => Method::parse(Some("scorecam"), &[("preset", p)]).map_err(ApiError::invalid_parameter)?,
        None => Method::default(),
    };
    let target =
        match req.parameters.get("target") {
            Some(v) => Some(v.as_u64().map(|t| t as usize).filter(|t| *t < classes).ok_or_else(|| {
                ApiError::invalid_parameter(format!("`target` must be a class index below {classes}"))
            })?),
            None => None,
        };
    let input = req.inputs.into_iter().next().expect("checked above");
    let images = decode_inputs(&state, &m, input)?;
    let n = images.len();
    let [_, h, w] = m.package.info.input_chw;
    let mut probabilities = Vec::with_capacity(n * classes);
    let mut saliency = Vec::new();
    let mut explained = Vec::new();
    let service = &state.service;
    for image in images {
        if explain {
            let request = ExplainRequest {
                model: Some(m.name().to_string()),
                targets: target.map_or(TargetSpec::TopK(1), |t| TargetSpec::Classes(vec![t])),
                method: method.clone(),
                rendering: Rendering {
                    format: OutputFormat::Json,
                    resolution: Resolution::Model,
                    ..Default::default()
                },
                ..Default::default()
            };
            let explanation = service.run(service.prepare(request, image).await?, None).await?;
            probabilities.extend(softmax(&explanation.logits));
            saliency.extend_from_slice(&explanation.maps[0].input.data);
            explained.push(explanation.targets[0] as i64);
        } else {
            let (_, logits) = service.classify(Some(m.name()), image, None).await?;
            probabilities.extend(softmax(&logits));
        }
    }
    let mut outputs = vec![OutputTensor {
        name: "probabilities",
        datatype: "FP32",
        shape: vec![n, classes],
        data: json!(probabilities),
    }];
    if explain {
        outputs.push(OutputTensor { name: "saliency", datatype: "FP32", shape: vec![n, h, w], data: json!(saliency) });
        outputs.push(OutputTensor {
            name: "explained_class",
            datatype: "INT64",
            shape: vec![n],
            data: json!(explained),
        });
    }
    let response = InferResponse { model_name: m.name().to_string(), model_version: "1", id: req.id, outputs };
    serde_json::to_value(response).map(Json).map_err(|e| crate::service::ServiceError::Internal(e.to_string()).into())
}
