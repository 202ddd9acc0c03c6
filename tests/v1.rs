//! KServe's V1 data plane on the real server: model readiness, `:predict` with every image
//! encoding, `:explain` against `/explain`'s own JSON, and the errors (all JSON, with the
//! statuses of the rest of the API).

mod common;

use std::time::Duration;

use base64::Engine as _;
use common::{PngBody, Server};
use serde_json::{Value, json};

const MODEL: &str = "efficientnet-lite0";

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(300)).build().unwrap()
}

fn b64() -> String {
    base64::engine::general_purpose::STANDARD.encode(common::sample_png())
}

/// The status, and the `error_type` of a JSON error body.
async fn error_of(resp: reqwest::Response) -> (u16, String, String) {
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.expect("errors are JSON");
    let error = body["error"].as_str().expect("an error message").to_string();
    (status, body["error_type"].as_str().expect("an error_type").to_string(), error)
}

fn numbers(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn v1_readiness_predict_in_every_encoding_and_the_errors() {
    let server = Server::start(&[]);
    let c = client();
    let url = |verb: &str| server.url(&format!("/v1/models/{MODEL}{verb}"));

    // The list: the ready models of `GET /models`, by name.
    let list: Value = c.get(server.url("/v1/models")).send().await.unwrap().json().await.unwrap();
    let all: Value = c.get(server.url("/models")).send().await.unwrap().json().await.unwrap();
    let ready: Vec<Value> =
        all["models"].as_array().unwrap().iter().filter(|m| m["state"] == "ready").map(|m| m["name"].clone()).collect();
    assert_eq!(list, json!({ "models": ready }));
    assert!(ready.contains(&json!(MODEL)), "{list}");

    // Readiness.
    let r = c.get(url("")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"name": MODEL, "ready": true}));
    let (status, kind, error) = error_of(c.get(server.url("/v1/models/nope")).send().await.unwrap()).await;
    assert_eq!((status, kind.as_str()), (404, "unknown_model"), "{error}");
    // The verbs are POST only, and the model's own path GET only: 405 with `Allow`.
    let r = c.get(url(":predict")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "POST");
    let r = c.post(url("")).json(&json!({"instances": [b64()]})).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "GET,HEAD");
    // `Allow` names what the path takes, not what the route shared by the three takes.
    for (method, path, allow) in [
        (reqwest::Method::PUT, "", "GET,HEAD"),
        (reqwest::Method::OPTIONS, "", "GET,HEAD"),
        (reqwest::Method::DELETE, ":predict", "POST"),
        (reqwest::Method::OPTIONS, ":explain", "POST"),
    ] {
        let r = c.request(method.clone(), url(path)).send().await.unwrap();
        assert_eq!((r.status().as_u16(), r.headers()["allow"].to_str().unwrap()), (405, allow), "{method} {path}");
        assert_eq!(error_of(r).await.1, "method_not_allowed");
    }

    // One prediction per instance, in order, whatever the encoding; each is /predict's.
    let reference: Value =
        c.post(server.url("/predict?top_k=3")).png_body().send().await.unwrap().json().await.unwrap();
    assert_eq!(reference["predictions"][0]["index"], 285);
    let body = json!({
        "instances": [{"image": {"b64": b64()}}, {"b64": b64()}, b64()],
        "parameters": {"top_k": 3}
    });
    let r = c.post(url(":predict")).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r: Value = r.json().await.unwrap();
    let predictions = r["predictions"].as_array().unwrap();
    assert_eq!(predictions.len(), 3);
    for p in predictions {
        assert_eq!(p["model"], MODEL);
        assert_eq!(p["predictions"].as_array().unwrap().len(), 3);
        for (got, want) in p["predictions"].as_array().unwrap().iter().zip(reference["predictions"].as_array().unwrap())
        {
            assert_eq!((&got["index"], &got["label"]), (&want["index"], &want["label"]));
            assert!((got["score"].as_f64().unwrap() - want["score"].as_f64().unwrap()).abs() < 1e-6);
        }
    }
    // Without parameters: /predict's default of 5 classes.
    let r: Value =
        c.post(url(":predict")).json(&json!({"instances": [b64()]})).send().await.unwrap().json().await.unwrap();
    assert_eq!(r["predictions"][0]["predictions"].as_array().unwrap().len(), 5);

    // Errors: JSON, with the API's statuses and types.
    let too_many = vec![json!(b64()); 17];
    for (body, want_status, want_type, says) in [
        (json!({"instances": ["not base64!"]}), 400, "bad_request", "instance 0 is not valid base64"),
        (json!({"instances": [b64(), {"b64": "%%%"}]}), 400, "bad_request", "instance 1 is not valid base64"),
        (json!({"instances": too_many}), 400, "bad_request", "more than 16 instances"),
        (json!({"instances": []}), 400, "bad_request", "`instances` is empty"),
        (json!({"instances": [{"image": b64()}]}), 400, "bad_request", "each instance must be"),
        (json!({"instances": [b64()], "signature": "x"}), 400, "bad_request", "unknown field"),
        (json!({"nothing": 1}), 400, "bad_request", "invalid v1 request"),
        (json!({"instances": [b64()], "parameters": {"top_k": 0}}), 422, "invalid_parameter", "top_k"),
        (json!({"instances": [b64()], "parameters": {"preset": "x"}}), 422, "invalid_parameter", "unknown parameter"),
        (json!({"instances": [b64()], "parameters": {"model": MODEL}}), 422, "invalid_parameter", "the path names"),
        (json!({"instances": [""]}), 400, "empty_image", ""),
        (json!({"instances": ["aGVsbG8="]}), 415, "unsupported_image_format", ""),
    ] {
        let r = c.post(url(":predict")).json(&body).send().await.unwrap();
        let (status, kind, error) = error_of(r).await;
        assert_eq!((status, kind.as_str()), (want_status, want_type), "{body}: {error}");
        assert!(error.contains(says), "{body}: {error}");
    }
    let r = c.post(url(":predict")).body("{").send().await.unwrap();
    assert_eq!(error_of(r).await.0, 400);
    let body = json!({"instances": [b64()]});
    for (path, want_status, want_type) in [
        ("/v1/models/nope:predict", 404, "unknown_model"),
        ("/v1/models/nope:explain", 404, "unknown_model"),
        (&format!("/v1/models/{MODEL}:infer"), 404, "not_found"),
        (&format!("/v1/models/{MODEL}:"), 404, "not_found"),
        (&format!("/v1/models/{MODEL}:predict/x"), 404, "not_found"),
    ] {
        let (status, kind, error) = error_of(c.post(server.url(path)).json(&body).send().await.unwrap()).await;
        assert_eq!((status, kind.as_str()), (want_status, want_type), "{path}: {error}");
    }

    // The metrics tell the two operations apart although they share one route.
    let metrics = c.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"route="/v1/models/{name}:predict",status="200""#), "{metrics}");
    assert!(metrics.contains(r#"route="/v1/models/{name}:predict",status="400""#), "{metrics}");
    assert!(metrics.contains(r#"route="/v1/models/{name}",status="200""#), "{metrics}");
}

#[tokio::test(flavor = "multi_thread")]
async fn v1_explanations_are_the_explain_documents() {
    // No cache: each answer below is computed, not the other's stored result.
    let server = Server::start(&["--cache-mib", "0"]);
    let c = client();
    let url = server.url(&format!("/v1/models/{MODEL}:explain"));
    let query = "format=json&resolution=model&max_channels=16&top_k=2";

    let reference: Value =
        c.post(server.url(&format!("/explain?{query}"))).png_body().send().await.unwrap().json().await.unwrap();
    let parameters = json!({"resolution": "model", "max_channels": 16, "top_k": 2});
    let body = json!({"instances": [{"image": {"b64": b64()}}, b64()], "parameters": parameters});
    let r = c.post(&url).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r: Value = r.json().await.unwrap();
    let explanations = r["explanations"].as_array().unwrap();
    assert_eq!(explanations.len(), 2);
    for doc in explanations {
        assert_eq!(doc["model"], MODEL);
        assert_eq!(doc["method_parameters"], reference["method_parameters"]);
        assert_eq!(doc["stats"]["forward_passes"], reference["stats"]["forward_passes"]);
        assert_eq!(doc["stats"]["cache"], "off");
        let (got, want) = (doc["explanations"].as_array().unwrap(), reference["explanations"].as_array().unwrap());
        assert_eq!(got.len(), 2);
        for (g, w) in got.iter().zip(want) {
            assert_eq!(g["target"]["index"], w["target"]["index"]);
            assert_eq!((&g["saliency"]["width"], &g["saliency"]["height"]), (&json!(224), &json!(224)));
            let (g, w) = (numbers(&g["saliency"]["data"]), numbers(&w["saliency"]["data"]));
            assert_eq!(g.len(), w.len());
            let diff = g.iter().zip(&w).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
            assert!(diff < 1e-6, "the v1 map differs from /explain's by {diff}");
        }
    }

    // An image format: the summary with the PNG inline, as /explain/stream's `result`.
    let body = json!({"instances": [b64()], "parameters": {"format": "heatmap", "max_channels": 16, "target": 281}});
    let r: Value = c.post(&url).json(&body).send().await.unwrap().json().await.unwrap();
    let e = &r["explanations"][0];
    assert_eq!(e["target"]["index"], 281);
    assert_eq!(e["image"]["content_type"], "image/png");
    let png = base64::engine::general_purpose::STANDARD.decode(e["image"]["base64"].as_str().unwrap()).unwrap();
    let img = image::load_from_memory(&png).unwrap();
    assert_eq!((img.width(), img.height()), (e["image"]["width"].as_u64().unwrap() as u32, 224));

    // A bad parameter fails exactly as on /explain: one parser, one set of checks.
    for (query, parameters) in [
        ("alpha=2", json!({"alpha": 2})),
        ("method=sscam&steps=3", json!({"method": "sscam", "steps": 3})),
        ("target=5000", json!({"target": 5000})),
        ("top_k=2&target=1", json!({"top_k": 2, "target": [1]})),
    ] {
        let want = c.post(server.url(&format!("/explain?format=json&{query}"))).png_body().send().await.unwrap();
        let want = error_of(want).await;
        assert!(want.0 == 422, "{query}: {want:?}");
        let body = json!({"instances": [b64()], "parameters": parameters});
        let got = error_of(c.post(&url).json(&body).send().await.unwrap()).await;
        assert_eq!(got, want, "{query}");
    }
}

/// KServe V1's liveness is `GET /` answering `{"status": "alive"}` (its clients'
/// `is_server_live`); a browser asking for HTML still gets the page.
#[tokio::test(flavor = "multi_thread")]
async fn the_root_is_v1_liveness_for_clients_and_the_page_for_browsers() {
    let server = Server::start(&[]);
    let c = client();
    for accept in [None, Some("application/json"), Some("*/*")] {
        let mut req = c.get(server.url("/"));
        if let Some(a) = accept {
            req = req.header("accept", a);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.headers()["content-type"].to_str().unwrap().starts_with("application/json"), "{accept:?}");
        assert_eq!(r.json::<Value>().await.unwrap(), json!({"status": "alive"}), "{accept:?}");
    }
    let browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
    let r = c.get(server.url("/")).header("accept", browser).send().await.unwrap();
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(r.text().await.unwrap().contains("<html"), "the explorer page");
}
