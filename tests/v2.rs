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
        (json!({"inputs": [{"name": "input", "shape": [1, 3, 2, 2], "datatype": "FP32", "data": vec![0.0; 12]}]}), 400),
        (json!({"inputs": [{"name": "pixels", "shape": [1, 2, 2, 3], "datatype": "UINT8", "data": [1, 2]}]}), 400),
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

/// A binary-framed request (Triton's binary tensor data extension): the JSON header, then
/// `binary`, with `Inference-Header-Content-Length` giving the header's length.
fn framed(header: &Value, binary: &[u8]) -> (Vec<u8>, usize) {
    let json = serde_json::to_vec(header).unwrap();
    let length = json.len();
    ([json.as_slice(), binary].concat(), length)
}

/// A BYTES tensor's binary data: each element a 4-byte little-endian length, then its bytes.
fn bytes_tensor(elements: &[&[u8]]) -> Vec<u8> {
    elements.iter().flat_map(|e| [&(e.len() as u32).to_le_bytes()[..], e].concat()).collect()
}

/// A response's JSON header and binary data (split where `Inference-Header-Content-Length`
/// says), or the whole JSON body and no binary data.
async fn unframe(r: reqwest::Response) -> (Value, Vec<u8>) {
    assert_eq!(r.status(), 200);
    let length = r.headers().get("inference-header-content-length").map(|v| v.to_str().unwrap().parse().unwrap());
    let body = r.bytes().await.unwrap();
    let length = length.unwrap_or(body.len());
    (serde_json::from_slice(&body[..length]).unwrap(), body[length..].to_vec())
}

fn le_f32(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
}

fn json_f32(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

/// The binary framing carries the same tensors as JSON: every input datatype sent as
/// binary data answers what its JSON form answers, binary outputs hold the JSON outputs'
/// values, and requested outputs come in the order asked, each in the form asked.
#[tokio::test(flavor = "multi_thread")]
async fn v2_binary_tensor_data_carries_the_json_tensors() {
    let server = Server::start(&[]);
    let c = reqwest::Client::new();
    let url = server.url("/v2/models/efficientnet-lite0/infer");
    let send = |header: Value, binary: Vec<u8>| {
        let (body, length) = framed(&header, &binary);
        c.post(&url).header("inference-header-content-length", length).body(body).send()
    };
    let meta: Value = c.get(server.url("/v2")).send().await.unwrap().json().await.unwrap();
    assert!(meta["extensions"].as_array().unwrap().contains(&json!("binary_tensor_data")));

    let png = common::sample_png();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&png);
    let json_answer: Value = c
        .post(&url)
        .json(&json!({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [b64]}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let from_json = json_f32(&json_answer["outputs"][0]["data"]);

    // The file's bytes, and its base64 text, as a binary BYTES element; all outputs binary.
    for element in [png.as_slice(), b64.as_bytes()] {
        let data = bytes_tensor(&[element]);
        let header = json!({
            "id": "bin-1",
            "inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": data.len()}}],
            "parameters": {"binary_data_output": true}
        });
        let r = send(header, data).await.unwrap();
        assert_eq!(r.headers()["content-type"], "application/octet-stream");
        let (header, binary) = unframe(r).await;
        assert_eq!(header["id"], "bin-1");
        let out = &header["outputs"][0];
        assert_eq!((out["name"].as_str(), out["shape"].clone()), (Some("probabilities"), json!([1, 1000])));
        assert!(out.get("data").is_none());
        assert_eq!(out["parameters"]["binary_data_size"], 4000);
        assert_eq!(le_f32(&binary), from_json, "binary outputs hold the JSON answer's values");
    }

    // UINT8 and FP32 as binary data answer as their JSON forms.
    let (raw, chw) = pixels();
    let floats: Vec<u8> = chw.iter().flat_map(|v| v.to_le_bytes()).collect();
    for (name, datatype, shape, json_data, binary) in [
        ("pixels", "UINT8", json!([1, 224, 224, 3]), json!(raw), raw.clone()),
        ("input", "FP32", json!([1, 3, 224, 224]), json!(chw), floats),
    ] {
        let as_json: Value = c
            .post(&url)
            .json(&json!({"inputs": [{"name": name, "shape": shape, "datatype": datatype, "data": json_data}]}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let header = json!({"inputs": [{"name": name, "shape": shape, "datatype": datatype,
                                        "parameters": {"binary_data_size": binary.len()}}]});
        let (answer, rest) = unframe(send(header, binary).await.unwrap()).await;
        assert!(rest.is_empty(), "JSON outputs unless binary ones are asked for");
        assert_eq!(json_f32(&answer["outputs"][0]["data"]), json_f32(&as_json["outputs"][0]["data"]), "{datatype}");
    }

    // An explanation: the outputs asked for, in that order, one binary and one JSON.
    let data = bytes_tensor(&[&png]);
    let header = json!({
        "inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": data.len()}}],
        "outputs": [{"name": "saliency", "parameters": {"binary_data": true}}, {"name": "explained_class"}],
        "parameters": {"explain": true, "method": "ablationcam"}
    });
    let (answer, binary) = unframe(send(header, data).await.unwrap()).await;
    let names: Vec<&str> = answer["outputs"].as_array().unwrap().iter().map(|o| o["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["saliency", "explained_class"]);
    assert_eq!(answer["outputs"][0]["parameters"]["binary_data_size"], 224 * 224 * 4);
    assert_eq!(answer["outputs"][1]["data"], json!([285]));
    let doc: Value = c
        .post(server.url("/explain?method=ablationcam&format=json&resolution=model"))
        .header("content-type", "image/png")
        .body(png.clone())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(le_f32(&binary), json_f32(&doc["explanations"][0]["saliency"]["data"]), "the map /explain draws");
}

/// Bad framing and bad tensor descriptions are 4xx answers that say what is wrong, and
/// leave the server ready.
#[tokio::test(flavor = "multi_thread")]
async fn v2_binary_framing_errors_say_what_is_wrong() {
    let server = Server::start(&[]);
    let c = reqwest::Client::new();
    let url = server.url("/v2/models/efficientnet-lite0/infer");
    let png = common::sample_png();
    let data = bytes_tensor(&[&png]);
    let size = data.len();
    let image =
        |parameters: Value| json!({"name": "image", "shape": [1], "datatype": "BYTES", "parameters": parameters});
    let one = |input: Value| json!({"inputs": [input]});
    let (good, good_length) = framed(&one(image(json!({"binary_data_size": size}))), &data);

    // (body, Inference-Header-Content-Length, status, what the message must say)
    let mut cases: Vec<(Vec<u8>, Option<String>, u16, &str)> = vec![
        (good.clone(), Some((good.len() + 1).to_string()), 400, "whole body is"),
        (good.clone(), Some("twelve".into()), 400, "must be the JSON header's length"),
        (good.clone(), Some("-5".into()), 400, "must be the JSON header's length"),
        (good.clone(), Some((good_length - 3).to_string()), 400, "invalid inference request"),
        (good.clone(), None, 400, "Inference-Header-Content-Length"),
    ];
    let mut add = |header: Value, binary: &[u8], status: u16, says: &'static str| {
        let (body, length) = framed(&header, binary);
        cases.push((body, Some(length.to_string()), status, says));
    };
    add(one(image(json!({"binary_data_size": size + 1}))), &data, 400, "only");
    add(one(image(json!({"binary_data_size": size - 1}))), &data, 400, "belong to no input");
    add(one(image(json!({"binary_data_size": -1}))), &data, 400, "whole number of bytes");
    add(one(image(json!({}))), &data, 400, "has no data");
    add(one(image(json!({"shared_memory_region": "r"}))), &data, 400, "accepted: binary_data_size");
    let mut both = image(json!({"binary_data_size": size}));
    both["data"] = json!(["aGk="]);
    add(one(both), &data, 400, "both `data` and `binary_data_size`");
    add(one(image(json!({"binary_data_size": size}))), &bytes_tensor(&[&png, &png]), 400, "belong to no input");
    let two = bytes_tensor(&[&png, &png]);
    add(one(image(json!({"binary_data_size": two.len()}))), &two, 400, "follow its 1 BYTES elements");
    let mut lying = (png.len() as u32 + 10).to_le_bytes().to_vec();
    lying.extend_from_slice(&png);
    add(one(image(json!({"binary_data_size": lying.len()}))), &lying, 400, "says");
    let floats = vec![0u8; 3 * 224 * 224 * 4 - 4];
    let fp32 = json!({"name": "input", "shape": [1, 3, 224, 224], "datatype": "FP32", "parameters": {"binary_data_size": floats.len()}});
    add(one(fp32), &floats, 400, "elements of 4 bytes");
    let pixels =
        json!({"name": "pixels", "shape": [1, 2, 2, 3], "datatype": "UINT8", "parameters": {"binary_data_size": 11}});
    add(one(pixels), &[0u8; 11], 400, "elements of 1 bytes");
    let misnamed =
        json!({"name": "INPUT0", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": size}});
    add(one(misnamed), &data, 400, "unknown input `INPUT0`");
    let mistyped = json!({"name": "image", "shape": [1], "datatype": "FP32", "parameters": {"binary_data_size": size}});
    add(one(mistyped), &data, 400, "input `image` is BYTES");
    let with_outputs = |outputs: Value, parameters: Value| {
        let mut h = one(image(json!({"binary_data_size": size})));
        h["outputs"] = outputs;
        h["parameters"] = parameters;
        h
    };
    add(with_outputs(json!([{"name": "OUTPUT0"}]), json!({})), &data, 400, "unknown output `OUTPUT0`");
    add(with_outputs(json!([{"name": "saliency"}]), json!({})), &data, 400, "\"explain\": true");
    let classification = json!([{"name": "probabilities", "parameters": {"classification": 3}}]);
    add(with_outputs(classification, json!({})), &data, 400, "accepted: binary_data");
    let twice = json!([{"name": "probabilities"}, {"name": "probabilities"}]);
    add(with_outputs(twice, json!({})), &data, 400, "twice");
    add(with_outputs(json!([]), json!({"binary_data_output": "yes"})), &data, 422, "true or false");
    add(with_outputs(json!([]), json!({"explian": true})), &data, 422, "accepted: explain, binary_data_output");
    add(with_outputs(json!([]), json!({"method": "rise"})), &data, 422, "add \"explain\": true");

    for (body, length, status, says) in cases {
        let mut request = c.post(&url).body(body);
        if let Some(length) = &length {
            request = request.header("inference-header-content-length", length);
        }
        let r = request.send().await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{says} ({length:?})");
        let error = r.json::<Value>().await.unwrap()["error"].as_str().unwrap_or_default().to_string();
        assert!(error.contains(says), "expected `{says}` in: {error}");
    }

    let r = c
        .post(&url)
        .header("inference-header-content-length", good_length)
        .header("content-encoding", "gzip")
        .body(good.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    let r = c.post(&url).header("inference-header-content-length", good_length).body(good).send().await.unwrap();
    assert_eq!(r.status(), 200, "the well-framed request itself is fine");
    let ready = c.get(server.url("/v2/health/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 200, "refusals leave the server ready");
}
