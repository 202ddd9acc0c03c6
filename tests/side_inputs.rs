//! Heads that read a skip connection besides the target layer (`head.side_inputs`), through
//! the real server, against an independent numpy transcription
//! (tests/fixtures/models/side, made by scripts/dev/make_side_detect_models.py): full passes
//! (Score-CAM) recompute the side tensor from the masked photo, head-only passes
//! (Ablation-CAM, Recipro-CAM) hold it at its clean value, and the fixtures' controls show
//! that the other choice gives another map.

mod common;

use std::path::PathBuf;

use reqwest::StatusCode;
use reqwest::multipart::{Form, Part};
use serde_json::Value;

const TOLERANCE: f32 = 1e-4;
const PACKAGES: [&str; 2] = ["unet", "unet_cls"];

fn side() -> PathBuf {
    common::root().join("tests/fixtures/models/side")
}

fn doc(package: &str) -> Value {
    let text = std::fs::read_to_string(side().join(package).join("reference/cases.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn reference(package: &str, rel: &str) -> PathBuf {
    side().join(package).join("reference").join(rel)
}

fn image_form(package: &str, case: &Value) -> Form {
    let bytes = std::fs::read(reference(package, case["image"].as_str().unwrap())).unwrap();
    Form::new().part("image", Part::bytes(bytes).file_name("x.png").mime_str("image/png").unwrap())
}

fn saliency(body: &Value) -> (usize, usize, Vec<f32>) {
    let s = &body["explanations"][0]["saliency"];
    let data = s["data"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
    (s["height"].as_u64().unwrap() as usize, s["width"].as_u64().unwrap() as usize, data)
}

/// The `head` object of a model in GET /models, wherever the summary nests it.
fn find_head(v: &Value) -> Option<&Value> {
    match v {
        Value::Object(m) => {
            if let Some(h) = m.get("head").filter(|h| h.get("side_inputs").is_some()) {
                return Some(h);
            }
            m.values().find_map(find_head)
        }
        Value::Array(a) => a.iter().find_map(find_head),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn side_input_heads_match_the_transcription_over_http() {
    let server = common::Server::start(&["--models-dir", side().to_str().unwrap(), "--cache-mib", "0"]);
    let c = reqwest::Client::new();

    // GET /models lists the side tensor of both packages.
    let models: Value = c.get(server.url("/models")).send().await.unwrap().json().await.unwrap();
    for package in PACKAGES {
        let m = models["models"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == package)
            .unwrap_or_else(|| panic!("{package} not in /models: {models}"));
        let head = find_head(m).unwrap_or_else(|| panic!("{package}: no head summary: {m}"));
        assert_eq!(head["side_inputs"], serde_json::json!(["skip"]), "{package}: {m}");
    }

    let mut failures = Vec::new();
    let mut checked = 0;
    for package in PACKAGES {
        let d = doc(package);
        let mut served = std::collections::HashMap::new();
        for case in d["cases"].as_array().unwrap() {
            let name = format!("{package}/{}", case["name"].as_str().unwrap());
            let q =
                format!("/explain?format=json&resolution=model&model={package}&{}", case["query"].as_str().unwrap());
            let resp = c.post(server.url(&q)).multipart(image_form(package, case)).send().await.unwrap();
            let status = resp.status();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            if status != StatusCode::OK {
                failures.push(format!("{name}: {status} {body}"));
                continue;
            }
            checked += 1;
            let (h, w, data) = saliency(&body);
            let (shape, want) = common::read_npy(&reference(package, case["model"]["file"].as_str().unwrap()));
            if shape != [h, w] {
                failures.push(format!("{name}: map {h}×{w}, want {shape:?}"));
                continue;
            }
            let diff = common::max_abs_diff(&data, &want);
            eprintln!("{name}: max |Δ| = {diff:.2e}");
            if diff > TOLERANCE {
                failures.push(format!("{name}: max |Δ| = {diff}"));
            }
            let t = &body["explanations"][0]["target"];
            if t["index"] != case["target"]["index"] || t["label"] != case["target"]["label"] {
                failures.push(format!("{name}: target {t}, want {}", case["target"]));
            }
            let score = case["target"]["score"].as_f64().unwrap();
            if (t["score"].as_f64().unwrap() - score).abs() > 1e-5 {
                failures.push(format!("{name}: target score {} want {score}", t["score"]));
            }
            served.insert(case["name"].as_str().unwrap().to_string(), data);
        }
        // The head-only methods with the skip recomputed from a zero input give other maps:
        // the comparison above tells the clean-skip rule apart.
        for (method, file) in d["controls"].as_object().unwrap() {
            let Some(got) = served.get(&format!("top/{method}")) else { continue };
            let (_, control) = common::read_npy(&reference(package, file.as_str().unwrap()));
            let diff = common::max_abs_diff(got, &control);
            if diff < 1e-2 {
                failures.push(format!("{package}/{method}: the map is the zero-skip control's (max |Δ| {diff})"));
            }
        }
    }

    // A box is a detector's target: refused on a classifier, and the server keeps serving.
    let d = doc("unet_cls");
    let case = &d["cases"][0];
    let resp = c
        .post(server.url("/explain?format=json&model=unet_cls&box=1,1,10,10&target=0"))
        .multipart(image_form("unet_cls", case))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    let message = body["error"].as_str().unwrap_or("");
    if !(status.is_client_error() && message.contains("detection") && message.contains("box")) {
        failures.push(format!("box on a classifier: {status} {body}"));
    }
    assert_eq!(c.get(server.url("/readyz")).send().await.unwrap().status(), StatusCode::OK);
    let resp = c
        .post(server.url("/explain?format=json&resolution=model&model=unet_cls"))
        .multipart(image_form("unet_cls", case))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "the server stopped serving after a refusal");
    server.terminate();
    assert_eq!(checked, 10, "{}", failures.join("\n"));
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}
