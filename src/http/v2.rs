//! The Open Inference Protocol v2 (KServe, Triton): health, metadata and `infer`.
//!
//! Inputs: one tensor, either encoded images (`BYTES`, each element a base64 string),
//! raw pixels (`UINT8`, N×H×W×3 RGB, any size) or model-ready floats (`FP32`, N×C×H×W,
//! normalised). Outputs: `probabilities` (FP32 N×classes); with the request parameter
//! `explain: true` also `saliency` (FP32 N×H×W at the model's input size) and
//! `explained_class` (INT64 N). With `explain`, the other parameters are `/explain`'s
//! (`method`, `preset`, `target`, `top_k`, every method parameter, `metrics`,
//! `max_passes`, `anytime`, `timeout_ms`), parsed by the same `Params`, so they mean the
//! same and unknown names are refused the same way; without it, `/predict`'s. The batch's
//! images run side by side, so their passes share the engine's batches.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::error::ApiError;
use super::input::push_json_param;
use super::input::{MAX_INSTANCES, decode_base64};
use super::state::AppState;
use crate::service::{ImageInput, Inference, Inferred, ModelDetails, Params};

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

/// The version every model has: a package is served as one version (a changed package
/// replaces it).
const MODEL_VERSION: &str = "1";

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::bad_request(message)
}

/// A ready model's details (404 for an unknown one, 503 for one that failed to load).
fn model(state: &AppState, name: &str) -> Result<(String, ModelDetails), ApiError> {
    let (summary, details) = state.service.ready_model(name)?;
    Ok((summary.name, details))
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
    let ready = state.service.readiness().is_ok();
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(json!({ "ready": ready }))).into_response()
}

pub async fn model_metadata(State(state): State<AppState>, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    let (name, m) = model(&state, &name)?;
    let (c, h, w) = (m.input.channels, m.input.height, m.input.width);
    Ok(Json(json!({
        "name": name,
        "versions": [MODEL_VERSION],
        "platform": "onnxruntime_onnx",
        "inputs": [
            { "name": "image", "datatype": "BYTES", "shape": [-1] },
            { "name": "pixels", "datatype": "UINT8", "shape": [-1, -1, -1, 3] },
            { "name": "input", "datatype": "FP32", "shape": [-1, c, h, w] }
        ],
        "outputs": [
            scores_output(&m),
            { "name": "saliency", "datatype": "FP32", "shape": [-1, h, w] },
            { "name": "explained_class", "datatype": "INT64", "shape": [-1] }
        ]
    })))
}

pub async fn model_ready(State(state): State<AppState>, Path(name): Path<String>) -> Result<Response, ApiError> {
    model_readiness(&state, &name)
}

/// The per-image output an inference answers: an embedding model's vector, else the
/// per-class scores.
fn scores_output(m: &ModelDetails) -> Value {
    match m.head.dim {
        Some(dim) => json!({ "name": "embedding", "datatype": "FP32", "shape": [-1, dim] }),
        None => json!({ "name": "probabilities", "datatype": "FP32", "shape": [-1, m.head.outputs] }),
    }
}

/// The one version a model has: a path naming another is a 404 that says which there is.
fn version(name: &str, version: &str) -> Result<(), ApiError> {
    if version == MODEL_VERSION {
        return Ok(());
    }
    Err(ApiError::NotFound(format!(
        "/v2/models/{name}/versions/{version} (model `{name}` has one version: \"{MODEL_VERSION}\")"
    )))
}

pub async fn versioned_metadata(
    state: State<AppState>,
    Path((name, v)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    version(&name, &v)?;
    model_metadata(state, Path(name)).await
}

pub async fn versioned_ready(
    State(state): State<AppState>,
    Path((name, v)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    version(&name, &v)?;
    model_readiness(&state, &name)
}

pub async fn versioned_infer(
    state: State<AppState>,
    Path((name, v)): Path<(String, String)>,
    request: axum::extract::Request,
) -> Result<Json<Value>, ApiError> {
    version(&name, &v)?;
    infer(state, Path(name), request).await
}

/// `{"name": …, "ready": …}`: 200 when ready, 503 when not (v1 and v2 alike); an unknown
/// model is a 404.
pub(super) fn model_readiness(state: &AppState, name: &str) -> Result<Response, ApiError> {
    let (name, ready) = state.service.model_ready(name)?;
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    Ok((status, Json(json!({ "name": name, "ready": ready }))).into_response())
}

/// Turns the request's single input tensor into the images it carries (the service
/// decodes and preprocesses them as it does any upload).
fn decode_inputs(state: &AppState, m: &ModelDetails, input: InputTensor) -> Result<Vec<ImageInput>, ApiError> {
    let dims: Vec<usize> = input
        .shape
        .iter()
        .map(|d| usize::try_from(*d).map_err(|_| bad(format!("input `{}` has a negative dimension", input.name))))
        .collect::<Result<_, _>>()?;
    let n = *dims.first().ok_or_else(|| bad("input shape is empty"))?;
    if n == 0 || n > MAX_INSTANCES {
        return Err(ApiError::invalid_parameter(format!("batch must be within 1..={MAX_INSTANCES}, got {n}")));
    }
    match input.datatype.as_str() {
        "BYTES" => bytes_inputs(&input.data, &dims),
        "UINT8" => pixel_inputs(&input.data, &dims, state.service.limits().max_pixels),
        "FP32" => tensor_inputs(&input.data, &dims, [m.input.channels, m.input.height, m.input.width]),
        other => Err(bad(format!("unsupported datatype `{other}` (BYTES, UINT8 or FP32)"))),
    }
}

/// `data` as `expected` numbers, for a tensor of shape `dims`.
fn numbers(data: &Value, dims: &[usize], expected: usize) -> Result<Vec<f64>, ApiError> {
    let items = data.as_array().ok_or_else(|| bad("`data` must be a flat array"))?;
    if items.len() != expected {
        return Err(bad(format!("`data` has {} elements but the shape {dims:?} needs {expected}", items.len())));
    }
    items.iter().map(|v| v.as_f64().ok_or_else(|| bad("`data` must hold numbers"))).collect()
}

/// `BYTES`, shape [N]: N encoded image files in base64.
fn bytes_inputs(data: &Value, dims: &[usize]) -> Result<Vec<ImageInput>, ApiError> {
    let items = data.as_array().ok_or_else(|| bad("`data` must be an array of base64 strings"))?;
    if dims.len() != 1 || items.len() != dims[0] {
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

/// `UINT8`, N×H×W×3 RGB pixels of any size within the pixel limit (checked before the
/// values are read; the service checks decoded pixels against every limit again).
fn pixel_inputs(data: &Value, dims: &[usize], max_pixels: u64) -> Result<Vec<ImageInput>, ApiError> {
    let [n, ih, iw, ch] = dims[..] else {
        return Err(bad(format!("UINT8 input must be N×H×W×3, got {dims:?}")));
    };
    let pixels = ih
        .checked_mul(iw)
        .filter(|p| ch == 3 && *p > 0 && (*p as u64) <= max_pixels)
        .ok_or_else(|| bad(format!("UINT8 input must be N×H×W×3 within the pixel limit, got {dims:?}")))?;
    let byte =
        |v: &f64| if (0.0..=255.0).contains(v) { Ok(*v as u8) } else { Err(bad("UINT8 values must be 0..=255")) };
    numbers(data, dims, n * pixels * 3)?
        .chunks_exact(pixels * 3)
        .map(|chunk| {
            let raw: Vec<u8> = chunk.iter().map(byte).collect::<Result<_, _>>()?;
            let img = image::RgbImage::from_raw(iw as u32, ih as u32, raw).ok_or_else(|| bad("bad pixel buffer"))?;
            Ok(ImageInput::Pixels(img))
        })
        .collect()
}

/// `FP32`, N×C×H×W model-ready tensors.
fn tensor_inputs(data: &Value, dims: &[usize], [c, h, w]: [usize; 3]) -> Result<Vec<ImageInput>, ApiError> {
    if dims[1..] != [c, h, w] {
        return Err(bad(format!("FP32 input must be N×{c}×{h}×{w}, got {dims:?}")));
    }
    let values = numbers(data, dims, dims[0] * c * h * w)?;
    Ok(values.chunks_exact(c * h * w).map(|x| ImageInput::Tensor(x.iter().map(|v| *v as f32).collect())).collect())
}

pub async fn infer(
    State(state): State<AppState>,
    Path(name): Path<String>,
    request: axum::extract::Request,
) -> Result<Json<Value>, ApiError> {
    let body = super::input::read_body(request.into_body(), &state).await?;
    let req: InferRequest =
        serde_json::from_slice(&body).map_err(|e| bad(format!("invalid inference request: {e}")))?;
    let (name, m) = model(&state, &name)?;
    let [input]: [InputTensor; 1] = req
        .inputs
        .try_into()
        .map_err(|inputs: Vec<InputTensor>| bad(format!("expected exactly one input tensor, got {}", inputs.len())))?;
    let (explain, params) = parameters(req.parameters)?;
    let inference = if explain {
        Inference::Explain(params.explain_request(true)?)
    } else {
        Inference::Predict(params.predict_request()?)
    };
    let images = decode_inputs(&state, &m, input)?;
    let n = images.len();
    let inferred = state.service.infer_many(&name, images, inference).await?;
    let response =
        InferResponse { model_name: name, model_version: MODEL_VERSION, id: req.id, outputs: outputs(&m, n, inferred) };
    serde_json::to_value(response).map(Json).map_err(|e| crate::service::ServiceError::Internal(e.to_string()).into())
}

/// `explain` and the other parameters, as `/explain` or `/predict` would take them (the
/// path names the model, and the answer is tensors, so `model`, `format`, `resolution`,
/// `colormap` and `alpha` do not apply).
fn parameters(map: serde_json::Map<String, Value>) -> Result<(bool, Params), ApiError> {
    let mut explain = false;
    let mut params = Params::default();
    for (key, value) in map {
        match key.as_str() {
            "explain" => {
                explain =
                    value.as_bool().ok_or_else(|| ApiError::invalid_parameter("`explain` must be true or false"))?
            }
            "model" | "format" | "resolution" | "colormap" | "alpha" => {
                return Err(ApiError::invalid_parameter(format!(
                    "`{key}` does not apply to the inference protocol: the path names the model, and the answer \
                     is the `saliency` tensor (FP32 at the model's input size)"
                )));
            }
            _ => push_json_param(&mut params, &key, value)?,
        }
    }
    Ok((explain, params))
}

/// The answer's tensors: every image's probabilities, and its map and class when explained.
fn outputs(m: &ModelDetails, n: usize, inferred: Vec<Inferred>) -> Vec<OutputTensor> {
    let (classes, h, w) = (m.head.outputs, m.input.height, m.input.width);
    let mut outputs = vec![match m.head.dim {
        Some(dim) => {
            let values: Vec<f32> = inferred.iter().flat_map(|i| i.embedding.iter().flatten().copied()).collect();
            OutputTensor { name: "embedding", datatype: "FP32", shape: vec![n, dim], data: json!(values) }
        }
        None => {
            let values: Vec<f32> = inferred.iter().flat_map(|i| i.probabilities.iter().copied()).collect();
            OutputTensor { name: "probabilities", datatype: "FP32", shape: vec![n, classes], data: json!(values) }
        }
    }];
    let explained: Vec<&(usize, Vec<f32>)> = inferred.iter().filter_map(|i| i.explained.as_ref()).collect();
    if explained.len() == n {
        let saliency: Vec<f32> = explained.iter().flat_map(|(_, map)| map.iter().copied()).collect();
        let classes: Vec<i64> = explained.iter().map(|(c, _)| *c as i64).collect();
        outputs.push(OutputTensor { name: "saliency", datatype: "FP32", shape: vec![n, h, w], data: json!(saliency) });
        outputs.push(OutputTensor { name: "explained_class", datatype: "INT64", shape: vec![n], data: json!(classes) });
    }
    outputs
}
