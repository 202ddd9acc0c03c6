//! KServe's V1 data plane: `GET /v1/models/{name}` (readiness), `POST
//! /v1/models/{name}:predict` and `POST /v1/models/{name}:explain`.
//!
//! A request is `{"instances": [...], "parameters": {...}}`; the answer has one entry per
//! instance, in order: `{"predictions": [...]}` (each `/predict`'s document) or
//! `{"explanations": [...]}` (each `/explain`'s JSON document; with `format` png or heatmap,
//! the image's summary with the PNG inline in base64, as `/explain/stream` sends it). An
//! instance is one encoded image in base64: `{"image": {"b64": "…"}}` (the TensorFlow
//! Serving convention KServe follows for binary data), `{"b64": "…"}` or the bare string.
//! `parameters` are `/predict`'s or `/explain`'s, less `model` (the path names it), parsed
//! by the same `Params`, so they mean the same and fail the same way.
//!
//! matchit matches a parameter to a whole path segment, so `{name}:predict` cannot be a
//! route of its own: one route, `/v1/models/{name}`, takes all three operations, and the
//! verb is split off here.

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, Method, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::RouteLabel;
use super::error::ApiError;
use super::handlers::InlineExplanation;
use super::input::{MAX_INSTANCES, decode_base64, fault_header, push_json_param, read_body};
use super::state::AppState;
use super::v2::model_readiness;
use crate::service::{Fault, ImageInput, MAX_JSON_MAP_VALUES, Params, PredictDocument, ServiceError};

/// The most JSON one `:explain` answer may carry, over all its instances: what one
/// `/explain` JSON document may reach (its map values at about 10 bytes each), so sixteen
/// instances cannot make an answer sixteen times what `/explain` allows. The first
/// instance is always answered (it is what `/explain` would answer).
const MAX_EXPLAIN_RESPONSE_BYTES: usize = 10 * MAX_JSON_MAP_VALUES;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verb {
    Predict,
    Explain,
}

impl Verb {
    fn parse(verb: &str) -> Option<Self> {
        match verb {
            "predict" => Some(Verb::Predict),
            "explain" => Some(Verb::Explain),
            _ => None,
        }
    }

    /// The operation's route in the metrics (the router only knows `/v1/models/{name}`).
    fn route(self) -> &'static str {
        match self {
            Verb::Predict => "/v1/models/{name}:predict",
            Verb::Explain => "/v1/models/{name}:explain",
        }
    }
}

/// What the last path segment names.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    /// A model: `{name}` with no colon, or a colon followed by no verb we know (which may
    /// be part of a model's name).
    Model(String),
    /// A verb on a model: `{name}:predict`, `{name}:explain`.
    Call(String, Verb),
}

/// Splits `{name}:{verb}`. `raw` is the segment as sent, `decoded` the same
/// percent-decoded: the verb follows the last literal ':' of `raw`, so a model whose name
/// has a colon stays addressable with it encoded (`%3A`).
fn target(raw: &str, decoded: &str) -> Target {
    let call = raw.rsplit_once(':').and_then(|(_, verb)| {
        let v = Verb::parse(verb)?;
        // A verb we know has no escapes, so it ends the decoded segment as it ends the raw.
        let name = decoded.strip_suffix(verb)?.strip_suffix(':')?;
        Some(Target::Call(name.to_string(), v))
    });
    call.unwrap_or_else(|| Target::Model(decoded.to_string()))
}

fn last_segment(uri: &Uri) -> &str {
    uri.path().rsplit('/').next().unwrap_or_default()
}

fn path_error(e: PathRejection) -> ApiError {
    ApiError::bad_request(format!("invalid model name in the path: {}", e.body_text()))
}

/// 405 with the `Allow` header HTTP requires, listing what this path takes (not what the
/// shared route takes: a model's path and its verbs take different methods).
fn method_not_allowed(allow: &'static str) -> Response {
    let mut response = ApiError::MethodNotAllowed.into_response();
    response.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

/// `GET /v1/models`: the names of the models that can serve (`{"models": [...]}`, KServe
/// V1's list); a package that failed to load is left out (`GET /models` shows it, with
/// its error).
pub async fn list(State(state): State<AppState>) -> Json<Value> {
    let names = state.service.readiness().map(|r| r.models).unwrap_or_default();
    Json(serde_json::json!({ "models": names }))
}

/// Every method on `/v1/models/{name}`: `GET` on a model is its readiness (`{"name": …,
/// "ready": …}`, 200 when ready, 503 when not); `POST` on `{name}:predict` or
/// `{name}:explain` runs it. Other methods are 405, with the path's own `Allow`.
pub async fn route(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    name: Result<Path<String>, PathRejection>,
    request: Request,
) -> Response {
    let decoded = match name {
        Ok(Path(decoded)) => decoded,
        Err(e) => return path_error(e).into_response(),
    };
    let raw = last_segment(&uri);
    match (target(raw, &decoded), method) {
        (Target::Model(name), Method::GET | Method::HEAD) => {
            model_readiness(&state, &name).unwrap_or_else(IntoResponse::into_response)
        }
        // A colon with no verb we know after it: a request for a verb, not for a model.
        (Target::Model(_), Method::POST) if raw.contains(':') => {
            ApiError::NotFound(format!("{} (the v1 verbs are `:predict` and `:explain`)", uri.path())).into_response()
        }
        (Target::Model(_), _) => method_not_allowed("GET,HEAD"),
        (Target::Call(name, verb), Method::POST) => {
            let result = match verb {
                Verb::Predict => predict(&state, &name, request).await,
                Verb::Explain => explain(&state, &name, request).await,
            };
            let mut response = result.unwrap_or_else(IntoResponse::into_response);
            response.extensions_mut().insert(RouteLabel(verb.route()));
            response
        }
        (Target::Call(..), _) => method_not_allowed("POST"),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct V1Request {
    instances: Instances,
    #[serde(default)]
    parameters: serde_json::Map<String, Value>,
}

/// The instances' base64 texts. Past [`MAX_INSTANCES`] the request is refused as it is
/// read, before the rest of the array is parsed.
struct Instances(Vec<String>);

impl<'de> Deserialize<'de> for Instances {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Bounded;
        impl<'de> Visitor<'de> for Bounded {
            type Value = Instances;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                write!(f, "an array of 1 to {MAX_INSTANCES} instances")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Instances, A::Error> {
                let mut out = Vec::new();
                while let Some(value) = seq.next_element::<Value>()? {
                    if out.len() == MAX_INSTANCES {
                        return Err(de::Error::custom(format!(
                            "more than {MAX_INSTANCES} instances in one request (the limit); split it"
                        )));
                    }
                    out.push(base64_of(value).ok_or_else(|| {
                        de::Error::custom(
                            "each instance must be an image in base64: {\"image\": {\"b64\": \"…\"}}, \
                             {\"b64\": \"…\"} or the bare string",
                        )
                    })?);
                }
                Ok(Instances(out))
            }
        }
        d.deserialize_seq(Bounded)
    }
}

/// The base64 text of one instance, in any of its three forms (no other keys allowed: a
/// misspelt one should not be silently dropped).
fn base64_of(value: Value) -> Option<String> {
    fn only(value: Value, key: &str) -> Option<Value> {
        match value {
            Value::Object(map) if map.len() == 1 => map.into_iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
    let b64 = |value: Value| match only(value, "b64")? {
        Value::String(s) => Some(s),
        _ => None,
    };
    match value {
        Value::String(s) => Some(s),
        Value::Object(ref map) if map.contains_key("image") => b64(only(value, "image")?),
        other => b64(other),
    }
}

/// A parsed v1 request, its images still in base64.
struct Call {
    instances: Vec<String>,
    params: Params,
    fault: Option<Fault>,
}

impl Call {
    /// Decodes the instances; the first that is not base64 fails the request.
    fn images(self) -> Result<Vec<ImageInput>, ApiError> {
        self.instances
            .into_iter()
            .enumerate()
            .map(|(i, text)| Ok(ImageInput::Encoded(decode_base64(&format!("instance {i}"), &text)?.into())))
            .collect()
    }
}

async fn read_call(state: &AppState, name: &str, request: Request) -> Result<Call, ApiError> {
    // The model first: a client that names the wrong one learns that, whatever its body.
    state.service.model(Some(name))?;
    let fault = fault_header(request.headers());
    let body = read_body(request.into_body(), state).await?;
    let V1Request { instances, parameters } =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("invalid v1 request: {e}")))?;
    if instances.0.is_empty() {
        return Err(ApiError::bad_request(format!("`instances` is empty: send 1 to {MAX_INSTANCES} images")));
    }
    let mut params = Params::default();
    for (key, value) in parameters {
        if key == "model" {
            return Err(ApiError::invalid_parameter(
                "`model` is not a v1 parameter: the path names the model (/v1/models/{name}:…)",
            ));
        }
        push_json_param(&mut params, &key, value)?;
    }
    Ok(Call { instances: instances.0, params, fault })
}

#[derive(Serialize)]
struct Predictions {
    predictions: Vec<PredictDocument>,
}

#[derive(Serialize)]
struct Explanations {
    explanations: Vec<InlineExplanation>,
}

/// `/predict` for every instance; they run side by side, so their clean passes share
/// the engine's batches.
async fn predict(state: &AppState, name: &str, request: Request) -> Result<Response, ApiError> {
    let call = read_call(state, name, request).await?;
    let mut request = call.params.predict_request()?;
    request.model = Some(name.to_string());
    let images = call.images()?;
    let predictions = state.service.predict_many(&request, images).await?;
    Ok(Json(Predictions { predictions }).into_response())
}

/// `/explain` for every instance, side by side up to the engine's running slots (their
/// passes batch together). `timeout_ms` is each instance's deadline.
async fn explain(state: &AppState, name: &str, request: Request) -> Result<Response, ApiError> {
    let call = read_call(state, name, request).await?;
    let fault = call.fault;
    // V1 answers are JSON: the document unless the parameters ask for an image.
    let mut request = call.params.explain_request(true)?;
    request.model = Some(name.to_string());
    request.fault = fault;
    let images = call.images()?;
    let mut bytes = 0usize;
    let explanations = state
        .service
        .explain_many(&request, images, |i, rendered| {
            let e = InlineExplanation::from(rendered);
            bytes = bytes.saturating_add(e.approx_bytes());
            if i > 0 && bytes > MAX_EXPLAIN_RESPONSE_BYTES {
                return Err(ServiceError::InvalidParameter(format!(
                    "the explanations of the first {} instances would pass the answer's limit of about {} MB; \
                     ask for resolution=model, or send fewer instances per request",
                    i + 1,
                    MAX_EXPLAIN_RESPONSE_BYTES >> 20
                )));
            }
            Ok(e)
        })
        .await?;
    Ok(Json(Explanations { explanations }).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_verb_follows_the_last_literal_colon() {
        let call = |name: &str, verb| Target::Call(name.into(), verb);
        assert_eq!(target("m:predict", "m:predict"), call("m", Verb::Predict));
        assert_eq!(target("m:explain", "m:explain"), call("m", Verb::Explain));
        assert_eq!(target("a:b:predict", "a:b:predict"), call("a:b", Verb::Predict));
        // An encoded colon is part of the name.
        assert_eq!(target("a%3Ab:predict", "a:b:predict"), call("a:b", Verb::Predict));
        assert_eq!(target("a%3Apredict", "a:predict"), Target::Model("a:predict".into()));
        assert_eq!(target("m", "m"), Target::Model("m".into()));
        assert_eq!(target("m:infer", "m:infer"), Target::Model("m:infer".into()));
        assert_eq!(target(":predict", ":predict"), call("", Verb::Predict));
        assert_eq!(target("m:Predict", "m:Predict"), Target::Model("m:Predict".into()));
    }

    #[test]
    fn instances_take_three_forms_and_nothing_else() {
        let parse = |v: Value| serde_json::from_value::<V1Request>(json!({ "instances": v }));
        let ok = parse(json!(["YQ==", {"b64": "Yg=="}, {"image": {"b64": "Yw=="}}])).unwrap();
        assert_eq!(ok.instances.0, ["YQ==", "Yg==", "Yw=="]);
        for bad in [
            json!([1]),
            json!([{"b64": 1}]),
            json!([{"b64": "YQ==", "key": 1}]),
            json!([{"image": "YQ=="}]),
            json!([{"image": {"b64": "YQ==", "x": 1}}]),
            json!([{"image": {"b64": "YQ=="}, "b64": "YQ=="}]),
            json!("YQ=="),
        ] {
            assert!(parse(bad.clone()).is_err(), "{bad}");
        }
        let many = vec![json!("YQ=="); MAX_INSTANCES + 1];
        let e = parse(json!(many)).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains(&format!("more than {MAX_INSTANCES} instances")), "{e}");
        assert!(parse(json!(vec![json!("YQ=="); MAX_INSTANCES])).is_ok());
        assert!(serde_json::from_value::<V1Request>(json!({"instances": [], "extra": 1})).is_err());
    }
}
