//! Open Inference Protocol v2 routes, with the request and response shapes of the
//! protocol's specification (ids, datatypes, shapes, the error object).

mod common;

use base64::Engine as _;
use common::Server;
use serde_json::{Value, json};

fn pixels() -> (Vec<u8>, Vec<f32>) {
    let img = image::load_from_memory(&common::sample_png()).unwrap().into_rgb8();
    let raw = img.as_raw().clone();
    // Model-ready FP32: /255, ImageNet mean/std, CHW.
    let (mean, std) = ([0.485f32, 0.456, 0.406], [0.229f32, 0.224, 0.225]);
    let plane = 224 * 224;
    let mut chw = vec![0.0f32; 3 * plane];
    for (i, p) in img.pixels().enumerate() {
        for c in 0..3 {
            chw[c * plane + i] = (f32::from(p[c]) / 255.0 - mean[c]) / std[c];
        }
    }
    (raw, chw)
}

fn probabilities(resp: &Value) -> Vec<f64> {
    let out = &resp["outputs"][0];
    assert_eq!(out["name"], "probabilities");
    assert_eq!(out["datatype"], "FP32");
    assert_eq!(out["shape"], json!([1, 1000]));
    out["data"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect()
}

fn argmax(v: &[f64]) -> usize {
    (0..v.len()).max_by(|a, b| v[*a].total_cmp(&v[*b])).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn v2_health_metadata_and_infer_in_every_datatype() {
    let server = Server::start(&[]);
    let c = reqwest::Client::new();
    let get = |p: &str| c.get(server.url(p)).send();

    let meta: Value = get("/v2").await.unwrap().json().await.unwrap();
    assert_eq!(meta["name"], "scorecam");
    assert!(meta["version"].is_string() && meta["extensions"].is_array());
    let live = get("/v2/health/live").await.unwrap();
    assert_eq!(live.status(), 200);
    assert_eq!(live.json::<Value>().await.unwrap()["live"], true);
    let ready = get("/v2/health/ready").await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.json::<Value>().await.unwrap()["ready"], true);

    let model: Value = get("/v2/models/efficientnet-lite0").await.unwrap().json().await.unwrap();
    assert_eq!(model["name"], "efficientnet-lite0");
    assert_eq!(model["platform"], "onnxruntime_onnx");
    assert_eq!(model["inputs"][2], json!({"name": "input", "datatype": "FP32", "shape": [-1, 3, 224, 224]}));
    assert_eq!(model["outputs"][0], json!({"name": "probabilities", "datatype": "FP32", "shape": [-1, 1000]}));
    let mr = get("/v2/models/efficientnet-lite0/ready").await.unwrap();
    assert_eq!(mr.status(), 200);
    assert_eq!(mr.json::<Value>().await.unwrap(), json!({"name": "efficientnet-lite0", "ready": true}));
    let missing = get("/v2/models/nope").await.unwrap();
    assert_eq!(missing.status(), 404);
    assert!(missing.json::<Value>().await.unwrap()["error"].as_str().unwrap().contains("nope"));

    let infer = |body: Value| c.post(server.url("/v2/models/efficientnet-lite0/infer")).json(&body).send();
    let b64 = base64::engine::general_purpose::STANDARD.encode(common::sample_png());
    let r: Value =
        infer(json!({"id": "req-1", "inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [b64]}]}))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(r["id"], "req-1");
    assert_eq!(r["model_name"], "efficientnet-lite0");
    assert_eq!(r["model_version"], "1");
    let from_bytes = probabilities(&r);
    assert_eq!(argmax(&from_bytes), 285);
    assert!((from_bytes.iter().sum::<f64>() - 1.0).abs() < 1e-4);
    assert!((from_bytes[285] - 0.79924).abs() < 1e-4);

    let (raw, chw) = pixels();
    let r: Value =
        infer(json!({"inputs": [{"name": "pixels", "shape": [1, 224, 224, 3], "datatype": "UINT8", "data": raw}]}))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert!(r.get("id").is_none(), "no id asked, none echoed");
    let from_pixels = probabilities(&r);
    let r: Value =
        infer(json!({"inputs": [{"name": "input", "shape": [1, 3, 224, 224], "datatype": "FP32", "data": chw}]}))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    let from_floats = probabilities(&r);
    for (a, b) in from_bytes.iter().zip(&from_pixels).chain(from_bytes.iter().zip(&from_floats)) {
        assert!((a - b).abs() < 1e-5);
    }

    // An explanation as named outputs.
    let r: Value = infer(json!({
        "inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [b64]}],
        "parameters": {"explain": true, "preset": "official"}
    }))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let sal = &r["outputs"][1];
    assert_eq!((sal["name"].as_str(), sal["datatype"].as_str()), (Some("saliency"), Some("FP32")));
    assert_eq!(sal["shape"], json!([1, 224, 224]));
    let map: Vec<f32> = sal["data"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
    let reference = common::read_npy(&common::root().join("tests/fixtures/reference/chelsea.official.npy")).1;
    assert!(common::max_abs_diff(&map, &reference) < 1e-3);
    assert_eq!(r["outputs"][2], json!({"name": "explained_class", "datatype": "INT64", "shape": [1], "data": [285]}));

    // Errors use the protocol's error object ({"error": …}).
    for (body, status) in [
        (json!({"inputs": [{"name": "x", "shape": [1], "datatype": "INT8", "data": [1]}]}), 400),
        (json!({"inputs": [{"name": "x", "shape": [1, 3, 2, 2], "datatype": "FP32", "data": vec![0.0; 12]}]}), 400),
        (json!({"inputs": [{"name": "x", "shape": [1, 2, 2, 3], "datatype": "UINT8", "data": [1, 2]}]}), 400),
        (json!({"inputs": []}), 400),
        (json!({"nothing": 1}), 400),
        (json!({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": ["!!"]}]}), 400),
        (
            json!({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [b64]}], "parameters": {"explain": true, "target": 5000}}),
            422,
        ),
    ] {
        let r = infer(body.clone()).await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{body}");
        assert!(r.json::<Value>().await.unwrap()["error"].is_string());
    }
    let r = c.post(server.url("/v2/models/nope/infer")).json(&json!({"inputs": []})).send().await.unwrap();
    assert_eq!(r.status(), 404);
}

/// The inference protocol reaches every method of the registry, with the parameters and
/// checks of `/explain`: Ablation-CAM's map is `/explain`'s, bit for bit, and a parameter
/// name nobody knows is refused with the same 422 (with `explain` or without).
#[tokio::test(flavor = "multi_thread")]
async fn v2_explains_with_any_method_and_refuses_unknown_parameters() {
    let server = Server::start(&[]);
    let c = reqwest::Client::new();
    let b64 = base64::engine::general_purpose::STANDARD.encode(common::sample_png());
    let inputs = json!([{"name": "image", "shape": [1], "datatype": "BYTES", "data": [b64]}]);
    let infer = |parameters: Value| {
        c.post(server.url("/v2/models/efficientnet-lite0/infer"))
            .json(&json!({"inputs": inputs.clone(), "parameters": parameters}))
            .send()
    };
    let r = infer(json!({"explain": true, "method": "ablationcam", "target": 281})).await.unwrap();
    assert_eq!(r.status(), 200);
    let r: Value = r.json().await.unwrap();
    assert_eq!(r["outputs"][2]["data"], json!([281]), "the class asked for is the one explained");
    let floats = |v: &Value| -> Vec<f32> { v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect() };
    let via_v2 = floats(&r["outputs"][1]["data"]);

    let doc: Value = c
        .post(server.url("/explain?method=ablationcam&target=281&format=json&resolution=model"))
        .header("content-type", "image/png")
        .body(common::sample_png())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["method"], "ablationcam");
    let via_explain = floats(&doc["explanations"][0]["saliency"]["data"]);
    assert_eq!(via_v2.len(), 224 * 224);
    assert_eq!(common::max_abs_diff(&via_v2, &via_explain), 0.0, "the same map through both doors");

    for (parameters, named) in [
        (json!({"explain": true, "explian": 1}), "explian"),
        (json!({"explian": true}), "explian"),
        (json!({"explain": true, "method": "ablationcam", "steps": 3}), "steps"),
        (json!({"explain": true, "format": "png"}), "format"),
    ] {
        let r = infer(parameters.clone()).await.unwrap();
        assert_eq!(r.status(), 422, "{parameters}");
        let error = r.json::<Value>().await.unwrap()["error"].as_str().unwrap_or_default().to_string();
        assert!(error.contains(&format!("`{named}`")), "{parameters}: {error}");
    }
    let ready = c.get(server.url("/v2/health/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 200, "refusals leave the server ready");
}

/// The versions the metadata advertises have their paths (tritonclient's `model_version`):
/// "1" answers as the unversioned path does, another version is a 404 naming the one there is.
#[tokio::test(flavor = "multi_thread")]
async fn v2_versioned_paths_answer_for_the_advertised_version() {
    let server = Server::start(&[]);
    let c = reqwest::Client::new();
    let meta: Value = c.get(server.url("/v2/models/efficientnet-lite0")).send().await.unwrap().json().await.unwrap();
    assert_eq!(meta["versions"], json!(["1"]));
    let versioned: Value =
        c.get(server.url("/v2/models/efficientnet-lite0/versions/1")).send().await.unwrap().json().await.unwrap();
    assert_eq!(versioned, meta);
    let ready = c.get(server.url("/v2/models/efficientnet-lite0/versions/1/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let b64 = base64::engine::general_purpose::STANDARD.encode(common::sample_png());
    let body = json!({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [b64]}]});
    let r: Value = c
        .post(server.url("/v2/models/efficientnet-lite0/versions/1/infer"))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(argmax(&probabilities(&r)), 285);
    for path in ["/versions/2", "/versions/2/ready"] {
        let r = c.get(server.url(&format!("/v2/models/efficientnet-lite0{path}"))).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
        let error = r.json::<Value>().await.unwrap()["error"].as_str().unwrap_or_default().to_string();
        assert!(error.contains("one version: \"1\""), "{error}");
    }
    let r = c.post(server.url("/v2/models/efficientnet-lite0/versions/2/infer")).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 404);
}
