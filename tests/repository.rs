//! The live model repository through the real server: a package added to the models folder
//! is served within the documented delay (`models.poll_interval_s`), a corrupt one is
//! reported in `GET /models` without a restart and without disturbing the others, and a
//! removed one is gone; an absent default model is a visible fallback.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::Server;
use serde_json::Value;

fn copy_package(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for f in ["extractor.onnx", "head.onnx", "labels.txt", "model.toml"] {
        std::fs::copy(from.join(f), to.join(f)).unwrap();
    }
}

async fn models(server: &Server) -> Value {
    reqwest::get(server.url("/models")).await.unwrap().json().await.unwrap()
}

fn state<'a>(list: &'a Value, name: &str) -> Option<&'a Value> {
    list["models"].as_array().unwrap().iter().find(|m| m["name"] == name)
}

/// Polls `GET /models` until `done` holds (or fails after `limit`).
async fn wait_for(server: &Server, limit: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    loop {
        let list = models(server).await;
        if done(&list) {
            return list;
        }
        assert!(started.elapsed() < limit, "not within {limit:?}: {list}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn packages_come_and_go_while_the_server_runs() {
    let tiny = common::root().join("tests/fixtures/models/tiny");
    let dir = tempfile::tempdir().unwrap();
    copy_package(&tiny, &dir.path().join("first"));
    let server = Server::start(&["--models-dir", dir.path().to_str().unwrap(), "--models-poll-s", "1"]);

    // The configured default (efficientnet-lite0) is not in this folder: a visible fallback.
    let list = models(&server).await;
    assert_eq!(list["default"], "first");
    assert_eq!(list["configured_default"], "efficientnet-lite0");
    assert!(server.log.lock().unwrap().iter().any(|l| l.contains("configured default model is not available")));

    // Added while serving: ready within the poll interval (1 s) plus its load.
    copy_package(&tiny, &dir.path().join("second"));
    let list = wait_for(&server, Duration::from_secs(15), |l| state(l, "second").is_some()).await;
    assert_eq!(state(&list, "second").unwrap()["state"], "ready", "{list}");
    let png = common::root().join("tests/fixtures/models/layouts/image_16x16.png");
    let explain = |model: &str| {
        reqwest::Client::new()
            .post(server.url(&format!("/explain?model={model}&format=json")))
            .header("content-type", "image/png")
            .body(std::fs::read(&png).unwrap())
            .send()
    };
    let r = explain("second").await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());

    // A corrupt package is reported, with the file at fault; the others keep serving.
    let broken = dir.path().join("broken");
    copy_package(&tiny, &broken);
    std::fs::write(broken.join("head.onnx"), b"not an onnx graph").unwrap();
    let list = wait_for(&server, Duration::from_secs(15), |l| state(l, "broken").is_some()).await;
    let entry = state(&list, "broken").unwrap();
    assert_eq!(entry["state"], "failed", "{list}");
    assert!(entry["error"].as_str().unwrap().contains("head.onnx"), "{entry}");
    // KServe V1's list names only the models that can serve.
    let v1: Value = reqwest::get(server.url("/v1/models")).await.unwrap().json().await.unwrap();
    let names = v1["models"].as_array().unwrap();
    assert!(!names.contains(&Value::from("broken")) && names.contains(&Value::from("first")), "{v1}");
    let r = explain("broken").await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.json::<Value>().await.unwrap()["error_type"], "model_unavailable");
    assert_eq!(explain("first").await.unwrap().status(), 200);
    assert_eq!(reqwest::get(server.url("/readyz")).await.unwrap().status(), 200);

    // Fixed in place: loaded again as a new version. Removed: gone.
    std::fs::copy(tiny.join("head.onnx"), broken.join("head.onnx")).unwrap();
    wait_for(&server, Duration::from_secs(15), |l| state(l, "broken").is_some_and(|m| m["state"] == "ready")).await;
    std::fs::remove_dir_all(dir.path().join("second")).unwrap();
    wait_for(&server, Duration::from_secs(15), |l| state(l, "second").is_none()).await;
    let r = explain("second").await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<Value>().await.unwrap()["error_type"], "unknown_model");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_package_added_under_load_is_seen_at_the_next_look() {
    let dir = tempfile::tempdir().unwrap();
    copy_package(&common::root().join("models/efficientnet-lite0"), &dir.path().join("busy"));
    let server = Server::start(&[
        "--models-dir",
        dir.path().to_str().unwrap(),
        "--models-poll-s",
        "1",
        "--max-concurrent-jobs",
        "1",
        "--max-queued-jobs",
        "8",
        "--cache-mib",
        "0",
    ]);
    // The explanations' queue holds long work (SS-CAM, ten samples a mask: minutes), with
    // room left, so a warm-up sent there would be admitted and wait behind it.
    let url = server.url("/explain?model=busy&method=sscam&samples=10&timeout_ms=300000");
    let busy: Vec<_> = (0..5)
        .map(|_| {
            let request = reqwest::Client::new().post(url.clone()).header("content-type", "image/png");
            tokio::spawn(request.body(common::sample_png()).send())
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    // A new package's warm-up is one clean pass in the cheap requests' lane: were it
    // queued behind the explanations, the folder would not be read again until they end.
    let tiny = common::root().join("tests/fixtures/models/tiny");
    copy_package(&tiny, &dir.path().join("first"));
    wait_for(&server, Duration::from_secs(20), |l| state(l, "first").is_some()).await;
    copy_package(&tiny, &dir.path().join("second"));
    let list = wait_for(&server, Duration::from_secs(20), |l| state(l, "second").is_some()).await;
    assert_eq!(state(&list, "second").unwrap()["state"], "ready", "{list}");
    // And the explanations were still queued and running all along.
    assert!(busy.iter().filter(|h| !h.is_finished()).count() >= 3, "the load ended before the test did");
}
