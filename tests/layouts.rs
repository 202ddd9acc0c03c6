//! Feature-map layouts end to end: generated channels-last and token models (1 and 2
//! prefix tokens, a non-square grid) through the service, against an independent numpy
//! transcription of every preset, Ablation-CAM, Recipro-CAM (both kernels, both scores),
//! RISE and, on the pooled linear head, the gradient family (tests/fixtures/models/layouts,
//! made by scripts/dev/make_layout_models.py). Head-only methods write the features back in
//! the head's own layout with the clean pass's prefix tokens, which the token fixtures'
//! heads read.

mod common;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use scorecam::cam::{Method, Preset};
use scorecam::engine::EngineConfig;
use scorecam::service::{
    ExplainRequest, ImageInput, ModelRepository, OutputFormat, Rendered, Rendering, Resolution, Service, ServiceConfig,
    TargetSpec,
};
use serde_json::Value;

/// The numpy reference runs in float64 on the same ONNX graphs; batch-to-batch float noise
/// of ONNX Runtime is far below this.
const TOLERANCE: f32 = 1e-4;

fn layouts() -> PathBuf {
    common::root().join("tests/fixtures/models/layouts")
}

fn service() -> Arc<Service> {
    static SERVICE: OnceLock<Arc<Service>> = OnceLock::new();
    SERVICE
        .get_or_init(|| {
            common::init_runtime();
            let config = EngineConfig { workers: 1, max_batch_size: 3, ..EngineConfig::default() };
            let repo = ModelRepository::new(layouts(), None, config.clone());
            Arc::new(Service::start(config, repo, ServiceConfig::default()).expect("service starts"))
        })
        .clone()
}

fn case(package: &str) -> Value {
    let text = std::fs::read_to_string(layouts().join(package).join("reference/cases.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

async fn map(package: &str, method: Method, class: usize, resolution: Resolution) -> (Vec<usize>, Vec<f32>) {
    let case = case(package);
    let image = layouts().join(package).join("reference").join(case["image"].as_str().unwrap());
    let request = ExplainRequest {
        model: Some(package.into()),
        targets: TargetSpec::Classes(vec![class]),
        method,
        rendering: Rendering { format: OutputFormat::Json, resolution, ..Default::default() },
        ..Default::default()
    };
    let bytes = std::fs::read(image).unwrap();
    let Rendered::Json(doc) = service().explain(request, ImageInput::Encoded(bytes.into()), None).await.unwrap() else {
        panic!("asked for JSON")
    };
    let m = &doc.explanations[0].saliency;
    (vec![m.height, m.width], m.data.clone())
}

#[tokio::test(flavor = "multi_thread")]
async fn every_layout_package_loads_with_its_canonical_grid() {
    let service = service();
    for (package, khw) in [("nhwc", [6, 4, 4]), ("tokens1", [6, 4, 4]), ("tokens2", [6, 4, 3])] {
        let m = service.models().get(package).unwrap_or_else(|e| panic!("{package}: {e}"));
        assert_eq!(m.package.info.feature_khw, khw, "{package}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_method_matches_the_transcription_on_every_layout() {
    for package in ["nhwc", "tokens1", "tokens2"] {
        let case = case(package);
        let class = case["class_index"].as_u64().unwrap() as usize;
        for (name, spec) in case["methods"].as_object().unwrap() {
            let method = match spec["method"].as_str().unwrap() {
                "scorecam" => Method::scorecam(spec["preset"].as_str().unwrap().parse::<Preset>().unwrap()),
                other => {
                    let params: Vec<(&str, &str)> = spec["params"]
                        .as_object()
                        .map(|o| o.iter().map(|(k, v)| (k.as_str(), v.as_str().unwrap())).collect())
                        .unwrap_or_default();
                    Method::parse(Some(other), &params).unwrap()
                }
            };
            for (key, resolution) in [("input", Resolution::Model), ("feature", Resolution::Feature)] {
                let Some(file) = spec[key]["file"].as_str() else { continue };
                let (want_shape, want) = common::read_npy(&layouts().join(package).join("reference").join(file));
                let (shape, got) = map(package, method.clone(), class, resolution).await;
                assert_eq!(shape, want_shape, "{package}/{name}/{key}: shape");
                let diff = common::max_abs_diff(&got, &want);
                assert!(diff <= TOLERANCE, "{package}/{name}/{key}: max |Δ| = {diff}");
                assert!(want.iter().any(|v| *v > 0.5), "{package}/{name}/{key}: a degenerate reference");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_new_method_has_a_reference_on_every_layout() {
    for package in ["nhwc", "tokens1", "tokens2"] {
        let case = case(package);
        let methods: Vec<&str> =
            case["methods"].as_object().unwrap().values().map(|m| m["method"].as_str().unwrap()).collect();
        for m in ["reciprocam", "rise"] {
            assert!(methods.contains(&m), "{package}: no {m} reference");
        }
        let gradient = case["gradient_methods"] == "supported";
        assert_eq!(gradient, package == "nhwc");
        for m in ["gradcam", "gradcampp", "xgradcam", "layercam"] {
            assert_eq!(methods.contains(&m), gradient, "{package}: {m}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn gradient_methods_refuse_heads_that_read_prefix_tokens() {
    for package in ["tokens1", "tokens2"] {
        let request = ExplainRequest {
            model: Some(package.into()),
            method: Method::parse(Some("gradcam"), &[]).unwrap(),
            rendering: Rendering { format: OutputFormat::Json, ..Default::default() },
            ..Default::default()
        };
        let image = layouts().join(case(package)["image"].as_str().unwrap().trim_start_matches("../../"));
        let bytes = std::fs::read(image).unwrap();
        let err = service().explain(request, ImageInput::Encoded(bytes.into()), None).await.unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(err, scorecam::service::ServiceError::UnsupportedByModel { .. }) && text.contains("prefix"),
            "{package}: {text}"
        );
    }
}

/// Over HTTP: the refusal is a 422 with its own error type, and a pooled linear head serves
/// the same method.
#[tokio::test(flavor = "multi_thread")]
async fn over_http_a_head_without_a_closed_form_is_a_422_unsupported_by_model() {
    let server = common::Server::start(&["--models-dir", layouts().to_str().unwrap(), "--cache-mib", "0"]);
    let client = reqwest::Client::new();
    let image = std::fs::read(layouts().join("image_16x16.png")).unwrap();
    let ask = |model: &str| {
        client
            .post(server.url(&format!("/explain?model={model}&method=gradcam&format=json")))
            .header("content-type", "image/png")
            .body(image.clone())
            .send()
    };
    let refused = ask("tokens1").await.unwrap();
    assert_eq!(refused.status(), reqwest::StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error_type"], "unsupported_by_model", "{body}");
    assert!(body["error"].as_str().unwrap().contains("prefix"), "{body}");
    let served = ask("nhwc").await.unwrap();
    assert_eq!(served.status(), reqwest::StatusCode::OK);
    let doc: Value = served.json().await.unwrap();
    assert_eq!(doc["preset"], "pytorch_grad_cam");
    assert_eq!(doc["stats"]["forward_passes"], 1);
    server.terminate();
}
