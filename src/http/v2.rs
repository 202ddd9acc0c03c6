//! The Open Inference Protocol v2 (KServe, Triton): health, metadata and `infer`.
//!
//! Inputs: one tensor, either encoded images (`image`, `BYTES`, each element a base64
//! string), raw pixels (`pixels`, `UINT8`, N×H×W×3 RGB, any size) or model-ready floats
//! (`input`, `FP32`, N×C×H×W, normalised), as JSON `data` or as binary data after the JSON
//! (Triton's binary tensor data extension, framed by `binary_data`). Outputs: `probabilities` (FP32 N×classes); with the request parameter
//! `explain: true` also `saliency` (FP32 N×H×W at the model's input size) and
//! `explained_class` (INT64 N). With `explain`, the other parameters are `/explain`'s
//! (`method`, `preset`, `target`, `top_k`, every method parameter, `metrics`,
//! `max_passes`, `anytime`, `timeout_ms`), parsed by the same `Params`, so they mean the
//! same and unknown names are refused the same way; without it, `/predict`'s. Outputs go as
//! JSON or, asked with `binary_data` (per output) or `binary_data_output`, as binary data.
//! The batch's images run side by side, so their passes share the engine's batches.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::binary_data::{self, Framed};
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
    /// The outputs to answer with (all when absent or empty), each as JSON or binary.
    #[serde(default)]
    outputs: Vec<RequestedOutput>,
    #[serde(default)]
    parameters: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
struct InputTensor {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    /// Absent when the tensor's bytes follow the JSON (binary tensor data extension).
    #[serde(default)]
    data: Option<Value>,
    #[serde(default)]
    parameters: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
struct RequestedOutput {
    name: String,
    #[serde(default)]
    parameters: Map<String, Value>,
}

/// An input's elements: the JSON `data` array, or its bytes after the JSON header.
enum TensorData {
    Json(Value),
    Binary(Bytes),
}

/// An output's values, typed so they can be written as JSON numbers or little-endian bytes.
enum Values {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

impl Values {
    fn json(&self) -> Value {
        match self {
            Values::F32(v) => json!(v),
            Values::I64(v) => json!(v),
        }
    }

    fn le_bytes(&self) -> Vec<u8> {
        match self {
            Values::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Values::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }
}

struct OutputTensor {
    name: &'static str,
    datatype: &'static str,
    shape: Vec<usize>,
    values: Values,
}

/// The inputs a model takes (as its metadata lists them): each name has one datatype.
const INPUTS: [(&str, &str); 3] = [("image", "BYTES"), ("pixels", "UINT8"), ("input", "FP32")];

/// The protocol's own request parameters (the rest are `/explain`'s or `/predict`'s).
const OWN_PARAMS: [&str; 2] = ["explain", "binary_data_output"];

/// `/explain`'s parameters that do not apply: the path names the model, and the answer is
/// tensors.
const NOT_APPLICABLE: [&str; 5] = ["model", "format", "resolution", "colormap", "alpha"];

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
    Json(
        json!({ "name": "scorecam", "version": env!("CARGO_PKG_VERSION"), "extensions": ["binary_tensor_data", "scorecam_explain"] }),
    )
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
) -> Result<Response, ApiError> {
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

/// The one input tensor, its name and datatype checked against the model's inputs.
fn single_input(inputs: Vec<InputTensor>) -> Result<InputTensor, ApiError> {
    let [input]: [InputTensor; 1] = inputs
        .try_into()
        .map_err(|inputs: Vec<InputTensor>| bad(format!("expected exactly one input tensor, got {}", inputs.len())))?;
    match INPUTS.iter().find(|(name, _)| *name == input.name) {
        Some((_, datatype)) if *datatype == input.datatype => Ok(input),
        Some((name, datatype)) => Err(bad(format!(
            "input `{name}` is {datatype}, got {} (the model's inputs: {})",
            input.datatype,
            inputs_list()
        ))),
        None => Err(bad(format!("unknown input `{}`: send one of the model's inputs, {}", input.name, inputs_list()))),
    }
}

fn inputs_list() -> String {
    INPUTS.iter().map(|(name, datatype)| format!("`{name}` ({datatype})")).collect::<Vec<_>>().join(", ")
}

/// The input's data: its JSON `data`, or the bytes its `binary_data_size` claims after the
/// JSON header.
fn input_data(input: &mut InputTensor, framed: &mut Framed) -> Result<TensorData, ApiError> {
    let name = &input.name;
    let mut size = None;
    for (key, value) in &input.parameters {
        match key.as_str() {
            "binary_data_size" => size = Some(binary_data::data_size(name, value)?),
            other => {
                return Err(bad(format!("input `{name}`: unknown parameter `{other}` (accepted: binary_data_size)")));
            }
        }
    }
    match (input.data.take(), size) {
        (Some(data), None) => Ok(TensorData::Json(data)),
        (None, Some(size)) => Ok(TensorData::Binary(framed.take(name, size)?)),
        (Some(_), Some(_)) => Err(bad(format!("input `{name}` has both `data` and `binary_data_size`: send one"))),
        (None, None) => Err(bad(format!(
            "input `{name}` has no data: give `data`, or `parameters.binary_data_size` with the bytes after the JSON \
             header (binary tensor data extension)"
        ))),
    }
}

/// Turns the request's input tensor into the images it carries (the service decodes and
/// preprocesses them as it does any upload).
fn decode_inputs(
    state: &AppState,
    m: &ModelDetails,
    input: &InputTensor,
    data: TensorData,
) -> Result<Vec<ImageInput>, ApiError> {
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
        "BYTES" => bytes_inputs(&input.name, data, &dims),
        "UINT8" => pixel_inputs(data, &dims, state.service.limits().max_pixels),
        _ => tensor_inputs(data, &dims, [m.input.channels, m.input.height, m.input.width]),
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

/// Binary data of `expected` elements of `width` bytes, for a tensor of shape `dims`.
fn binary_len(data: &Bytes, dims: &[usize], expected: usize, width: usize) -> Result<(), ApiError> {
    if Some(data.len()) != expected.checked_mul(width) {
        return Err(bad(format!(
            "binary data has {} bytes but the shape {dims:?} needs {expected} elements of {width} bytes",
            data.len()
        )));
    }
    Ok(())
}

/// `BYTES`, shape [N]: N encoded image files, in base64 in JSON; in binary data the files'
/// bytes (or, as in JSON, their base64 text, so a client may switch binary data on or off
/// without changing its tensors).
fn bytes_inputs(name: &str, data: TensorData, dims: &[usize]) -> Result<Vec<ImageInput>, ApiError> {
    let shape_error = || bad(format!("BYTES input must have shape [N] with N elements, got {dims:?}"));
    let [n] = dims[..] else { return Err(shape_error()) };
    match data {
        TensorData::Json(data) => {
            let items = data.as_array().ok_or_else(|| bad("`data` must be an array of base64 strings"))?;
            if items.len() != n {
                return Err(shape_error());
            }
            items
                .iter()
                .map(|v| {
                    let b64 = v.as_str().ok_or_else(|| bad("BYTES elements must be base64 strings"))?;
                    Ok(ImageInput::Encoded(decode_base64("BYTES element", b64)?.into()))
                })
                .collect()
        }
        TensorData::Binary(bytes) => binary_data::bytes_elements(name, &bytes, n)?.iter().map(image_file).collect(),
    }
}

/// A binary BYTES element: an image file, or its base64 text (only base64 characters, which
/// no image file is: every format's header has bytes outside them).
fn image_file(element: &Bytes) -> Result<ImageInput, ApiError> {
    let is_base64 = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'\n' | b'\r');
    if !element.is_empty() && element.iter().all(is_base64) {
        let text = std::str::from_utf8(element).map_err(|_| bad("BYTES element is not base64"))?;
        return Ok(ImageInput::Encoded(decode_base64("BYTES element", text)?.into()));
    }
    Ok(ImageInput::Encoded(std::sync::Arc::from(element.as_ref())))
}

/// `UINT8`, N×H×W×3 RGB pixels of any size within the pixel limit (checked before the
/// values are read; the service checks decoded pixels against every limit again).
fn pixel_inputs(data: TensorData, dims: &[usize], max_pixels: u64) -> Result<Vec<ImageInput>, ApiError> {
    let [n, ih, iw, ch] = dims[..] else {
        return Err(bad(format!("UINT8 input must be N×H×W×3, got {dims:?}")));
    };
    let pixels = ih
        .checked_mul(iw)
        .filter(|p| ch == 3 && *p > 0 && (*p as u64) <= max_pixels)
        .ok_or_else(|| bad(format!("UINT8 input must be N×H×W×3 within the pixel limit, got {dims:?}")))?;
    let expected = n * pixels * 3;
    // Binary pixels are the body's own bytes (no copy until each image takes its own).
    let raw: Bytes = match data {
        TensorData::Json(data) => {
            let byte = |v: &f64| {
                if (0.0..=255.0).contains(v) { Ok(*v as u8) } else { Err(bad("UINT8 values must be 0..=255")) }
            };
            Bytes::from(numbers(&data, dims, expected)?.iter().map(byte).collect::<Result<Vec<u8>, _>>()?)
        }
        TensorData::Binary(bytes) => {
            binary_len(&bytes, dims, expected, 1)?;
            bytes
        }
    };
    raw.chunks_exact(pixels * 3)
        .map(|chunk| {
            let img = image::RgbImage::from_raw(iw as u32, ih as u32, chunk.to_vec())
                .ok_or_else(|| bad("bad pixel buffer"))?;
            Ok(ImageInput::Pixels(img))
        })
        .collect()
}

/// `FP32`, N×C×H×W model-ready tensors.
fn tensor_inputs(data: TensorData, dims: &[usize], [c, h, w]: [usize; 3]) -> Result<Vec<ImageInput>, ApiError> {
    if dims[1..] != [c, h, w] {
        return Err(bad(format!("FP32 input must be N×{c}×{h}×{w}, got {dims:?}")));
    }
    let (expected, image) = (dims[0] * c * h * w, c * h * w);
    Ok(match data {
        TensorData::Json(data) => {
            let values = numbers(&data, dims, expected)?;
            values.chunks_exact(image).map(|x| ImageInput::Tensor(x.iter().map(|v| *v as f32).collect())).collect()
        }
        TensorData::Binary(bytes) => {
            binary_len(&bytes, dims, expected, 4)?;
            bytes.chunks_exact(image * 4).map(|x| ImageInput::Tensor(binary_data::f32_values(x))).collect()
        }
    })
}

/// A request as the protocol sends it: the JSON header and, with the binary tensor data
/// extension, the input's bytes after it.
struct Received {
    request: InferRequest,
    input: InputTensor,
    data: TensorData,
}

/// Reads and frames the body: the JSON header, and the input's data from it or after it.
async fn receive(request: axum::extract::Request, state: &AppState) -> Result<Received, ApiError> {
    let (parts, body) = request.into_parts();
    refuse_compressed(&parts.headers)?;
    let body = super::input::read_body(body, state).await?;
    let mut framed = Framed::split(&parts.headers, body)?;
    let mut request: InferRequest = serde_json::from_slice(&framed.json).map_err(|e| {
        let hint = if parts.headers.contains_key(binary_data::HEADER_LENGTH) {
            ""
        } else {
            " (binary tensor data after the JSON needs the header Inference-Header-Content-Length with the JSON's \
             length)"
        };
        bad(format!("invalid inference request: {e}{hint}"))
    })?;
    let mut input = single_input(std::mem::take(&mut request.inputs))?;
    let data = input_data(&mut input, &mut framed)?;
    framed.finish()?;
    Ok(Received { request, input, data })
}

/// A compressed body would be misread as JSON: say so instead.
fn refuse_compressed(headers: &axum::http::HeaderMap) -> Result<(), ApiError> {
    match headers.get(axum::http::header::CONTENT_ENCODING).and_then(|v| v.to_str().ok()) {
        None | Some("identity") => Ok(()),
        Some(other) => Err(ApiError::UnsupportedMediaType(format!(
            "Content-Encoding `{other}` is not supported: send the inference request uncompressed"
        ))),
    }
}

pub async fn infer(
    State(state): State<AppState>,
    Path(name): Path<String>,
    request: axum::extract::Request,
) -> Result<Response, ApiError> {
    let (name, m) = model(&state, &name)?;
    let Received { request, input, data } = receive(request, &state).await?;
    let asked = parameters(request.parameters)?;
    let wanted = wanted_outputs(request.outputs, &output_names(&m, asked.explain), asked.binary_output)?;
    let inference = if asked.explain {
        Inference::Explain(asked.params.explain_request(true)?)
    } else {
        Inference::Predict(asked.params.predict_request()?)
    };
    let images = decode_inputs(&state, &m, &input, data)?;
    let n = images.len();
    let inferred = state.service.infer_many(&name, images, inference).await?;
    let mut header = json!({ "model_name": name, "model_version": MODEL_VERSION });
    if let Some(id) = request.id {
        header["id"] = json!(id);
    }
    answer(header, outputs(&m, n, inferred), &wanted)
}

/// What the request's `parameters` ask: an explanation or not, binary outputs or not, and
/// the rest as `/explain` or `/predict` take them.
struct Asked {
    explain: bool,
    binary_output: bool,
    params: Params,
}

/// `explain`, `binary_data_output` and the other parameters, as `/explain` or `/predict`
/// would take them; a name that does not apply here is refused naming those that do.
fn parameters(map: Map<String, Value>) -> Result<Asked, ApiError> {
    let explain = flag(&map, "explain")?;
    let binary_output = flag(&map, "binary_data_output")?;
    let mut params = Params::default();
    for (key, value) in map {
        if !OWN_PARAMS.contains(&key.as_str()) {
            check_name(&key, explain)?;
            push_json_param(&mut params, &key, value)?;
        }
    }
    Ok(Asked { explain, binary_output, params })
}

/// A boolean parameter, false when absent.
fn flag(map: &Map<String, Value>, name: &str) -> Result<bool, ApiError> {
    map.get(name).map_or(Ok(false), |v| {
        v.as_bool().ok_or_else(|| ApiError::invalid_parameter(format!("`{name}` must be true or false, got {v}")))
    })
}

/// Refuses a parameter name this request cannot take, naming those it can.
fn check_name(key: &str, explain: bool) -> Result<(), ApiError> {
    if NOT_APPLICABLE.contains(&key) {
        return Err(ApiError::invalid_parameter(format!(
            "`{key}` does not apply to the inference protocol: the path names the model, and the answer is the \
             `saliency` tensor (FP32 at the model's input size)"
        )));
    }
    let accepted = |names: &[&'static str]| -> String {
        OWN_PARAMS.iter().chain(names).filter(|n| !NOT_APPLICABLE.contains(n)).copied().collect::<Vec<_>>().join(", ")
    };
    let explain_names = Params::explain_names();
    if !explain_names.contains(&key) {
        return Err(ApiError::invalid_parameter(format!(
            "unknown parameter `{key}` (accepted: {})",
            accepted(&explain_names)
        )));
    }
    if !explain && !Params::predict_names().contains(&key) {
        return Err(ApiError::invalid_parameter(format!(
            "`{key}` is an explanation parameter: add \"explain\": true (without it the accepted parameters are {})",
            accepted(Params::predict_names())
        )));
    }
    Ok(())
}

/// The outputs this request can answer with, as the model's metadata names them.
fn output_names(m: &ModelDetails, explain: bool) -> Vec<&'static str> {
    let scores = if m.head.dim.is_some() { "embedding" } else { "probabilities" };
    if explain { vec![scores, "saliency", "explained_class"] } else { vec![scores] }
}

/// The outputs to answer with, in order, and whether each goes as binary data: those
/// `outputs` names (with their `binary_data`), or every one (with `binary_data_output`).
fn wanted_outputs(
    requested: Vec<RequestedOutput>,
    available: &[&'static str],
    binary_default: bool,
) -> Result<Vec<(&'static str, bool)>, ApiError> {
    if requested.is_empty() {
        return Ok(available.iter().map(|name| (*name, binary_default)).collect());
    }
    let mut wanted: Vec<(&'static str, bool)> = Vec::with_capacity(requested.len());
    for output in requested {
        let name = available
            .iter()
            .find(|n| **n == output.name)
            .copied()
            .ok_or_else(|| unknown_output(&output.name, available))?;
        if wanted.iter().any(|(n, _)| *n == name) {
            return Err(bad(format!("output `{name}` is asked for twice")));
        }
        let mut binary = binary_default;
        for (key, value) in &output.parameters {
            match (key.as_str(), value.as_bool()) {
                ("binary_data", Some(b)) => binary = b,
                ("binary_data", None) => {
                    return Err(bad(format!("output `{name}`: `binary_data` must be true or false")));
                }
                (other, _) => {
                    return Err(bad(format!("output `{name}`: unknown parameter `{other}` (accepted: binary_data)")));
                }
            }
        }
        wanted.push((name, binary));
    }
    Ok(wanted)
}

fn unknown_output(name: &str, available: &[&str]) -> ApiError {
    if matches!(name, "saliency" | "explained_class") {
        return bad(format!("output `{name}` comes with an explanation: add the parameter \"explain\": true"));
    }
    bad(format!("unknown output `{name}` (this request's outputs: {})", available.join(", ")))
}

/// Every image's scores (or embedding), and its map and class when explained.
fn outputs(m: &ModelDetails, n: usize, inferred: Vec<Inferred>) -> Vec<OutputTensor> {
    let (classes, h, w) = (m.head.outputs, m.input.height, m.input.width);
    let mut outputs = vec![match m.head.dim {
        Some(dim) => {
            let values: Vec<f32> = inferred.iter().flat_map(|i| i.embedding.iter().flatten().copied()).collect();
            OutputTensor { name: "embedding", datatype: "FP32", shape: vec![n, dim], values: Values::F32(values) }
        }
        None => {
            let values: Vec<f32> = inferred.iter().flat_map(|i| i.probabilities.iter().copied()).collect();
            OutputTensor {
                name: "probabilities",
                datatype: "FP32",
                shape: vec![n, classes],
                values: Values::F32(values),
            }
        }
    }];
    let explained: Vec<&(usize, Vec<f32>)> = inferred.iter().filter_map(|i| i.explained.as_ref()).collect();
    if explained.len() == n {
        let saliency: Vec<f32> = explained.iter().flat_map(|(_, map)| map.iter().copied()).collect();
        let classes: Vec<i64> = explained.iter().map(|(c, _)| *c as i64).collect();
        outputs.push(OutputTensor {
            name: "saliency",
            datatype: "FP32",
            shape: vec![n, h, w],
            values: Values::F32(saliency),
        });
        outputs.push(OutputTensor {
            name: "explained_class",
            datatype: "INT64",
            shape: vec![n],
            values: Values::I64(classes),
        });
    }
    outputs
}

/// The response: `header` (model, version, id) with the wanted outputs, each as JSON `data`
/// or, with its size in `parameters.binary_data_size`, as bytes after the JSON.
fn answer(mut header: Value, produced: Vec<OutputTensor>, wanted: &[(&str, bool)]) -> Result<Response, ApiError> {
    let mut binary = Vec::new();
    let mut tensors = Vec::with_capacity(wanted.len());
    for (name, as_binary) in wanted {
        let Some(output) = produced.iter().find(|o| o.name == *name) else { continue };
        let mut tensor = json!({ "name": output.name, "datatype": output.datatype, "shape": output.shape });
        if *as_binary {
            let bytes = output.values.le_bytes();
            tensor["parameters"] = json!({ "binary_data_size": bytes.len() });
            binary.extend_from_slice(&bytes);
        } else {
            tensor["data"] = output.values.json();
        }
        tensors.push(tensor);
    }
    header["outputs"] = Value::Array(tensors);
    if wanted.iter().any(|(_, b)| *b) {
        let json = serde_json::to_vec(&header).map_err(|e| crate::service::ServiceError::Internal(e.to_string()))?;
        return Ok(binary_data::response(json, binary));
    }
    Ok(Json(header).into_response())
}
