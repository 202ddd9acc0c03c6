//! The real server (`scorecam serve`, the real default model) on an ephemeral port: every
//! route, every input form, every error status, overload, deadlines, shutdown, containment.

mod common;

use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{PngBody, Server};
use reqwest::StatusCode;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

/// The tests here run one at a time: several measure how fast this machine explains and
/// judge deadlines by it, which other tests' servers running beside them would falsify.
async fn one_server_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static ONE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    ONE.lock().await
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(300)).build().unwrap()
}

fn png_part() -> Part {
    Part::bytes(common::sample_png()).file_name("chelsea.png").mime_str("image/png").unwrap()
}

async fn error_of(resp: reqwest::Response, status: StatusCode) -> String {
    assert_eq!(resp.status(), status, "{:?}", resp.headers());
    let body: Value = resp.json().await.expect("errors are JSON");
    assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "{body}");
    body["error_type"].as_str().expect("error_type").to_string()
}

/// Sends a body over the server's limit. The server answers 413 as soon as the limit is
/// passed and closes the connection; if the client is still writing the rest, the kernel
/// may reset the connection before the client reads the answer (a TCP race, not a server
/// error), so a transport error is retried a few times.
async fn send_oversize(request: impl Fn() -> reqwest::RequestBuilder) -> reqwest::Response {
    let mut last = None;
    for _ in 0..5 {
        match request().send().await {
            Ok(resp) => return resp,
            Err(e) => last = Some(e),
        }
    }
    panic!("no answer to an oversize body in 5 tries: {last:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_route_and_every_input_form() {
    let _alone = one_server_at_a_time().await;
    let server = Server::start(&[]);
    let c = client();

    let health: Value = c.get(server.url("/healthz")).send().await.unwrap().json().await.unwrap();
    assert_eq!(health["status"], "ok");
    let ready = c.get(server.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["models"][0], "efficientnet-lite0");
    assert_eq!(ready["providers"]["efficientnet-lite0"], "cpu");

    let models: Value = c.get(server.url("/models")).send().await.unwrap().json().await.unwrap();
    let m = &models["models"][0];
    assert_eq!(models["default"], "efficientnet-lite0");
    assert_eq!(
        (m["name"].as_str(), m["channels"].as_u64(), m["labels"].as_u64()),
        (Some("efficientnet-lite0"), Some(1280), Some(1000))
    );
    assert_eq!(m["execution_provider"], "cpu");
    assert_eq!(m["input"]["width"], 224);
    let one: Value = c.get(server.url("/models/efficientnet-lite0")).send().await.unwrap().json().await.unwrap();
    assert_eq!(&one, m);
    // The int8 package says it is approximate, and how close its maps are (its model.toml's
    // [quantization]); the fp32 one says it is not.
    assert_eq!((m["approximate"].as_bool(), m.get("quantization")), (Some(false), None));
    let int8 = models["models"].as_array().unwrap().iter().find(|m| m["name"] == "efficientnet-lite0-int8").unwrap();
    assert_eq!(int8["approximate"], true);
    let q = &int8["quantization"];
    assert_eq!((q["kind"].as_str(), q["reference"].as_str()), (Some("int8"), Some("efficientnet-lite0")));
    let f = &q["fidelity"];
    assert_eq!(
        (f["photos"].as_u64(), f["held_out"].as_bool(), f["top1_agree"].as_u64()),
        (Some(136), Some(true), Some(123))
    );
    assert_eq!((f["pearson_mean"].as_f64(), f["top20_iou_min"].as_f64()), (Some(0.9924), Some(0.4598)));
    assert_eq!(f["worst_photo"], "n02808440_bathtub");
    let one: Value = c.get(server.url("/models/efficientnet-lite0-int8")).send().await.unwrap().json().await.unwrap();
    assert_eq!(&one, int8);

    let spec = c.get(server.url("/openapi.yaml")).send().await.unwrap().text().await.unwrap();
    assert!(spec.starts_with("openapi: 3"));

    // Multipart, PNG overlay by default, target in headers, the upload's size.
    let resp = c.post(server.url("/explain")).multipart(Form::new().part("image", png_part())).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let h = resp.headers().clone();
    assert_eq!(h["content-type"], "image/png");
    assert_eq!(h["x-scorecam-target-index"], "285");
    assert_eq!(h["x-scorecam-target-label"], "Egyptian cat");
    assert!(h["x-scorecam-target-score"].to_str().unwrap().starts_with("0.799"));
    // 534 active channels (../shared/reference/cases.json) less those sharing a mask, plus
    // the clean pass.
    let header = |name: &str| h[name].to_str().unwrap().parse::<usize>().unwrap();
    let shared = header("x-scorecam-shared-mask-channels");
    assert!(shared > 0 && shared < 534, "{shared} channels shared a mask");
    assert_eq!(header("x-scorecam-forward-passes"), 535 - shared);
    assert!(h.contains_key("x-request-id") && h.contains_key("server-timing"));
    let png = image::load_from_memory(&resp.bytes().await.unwrap()).unwrap();
    assert_eq!((png.width(), png.height()), (224, 224));
    let multipart_png = png.to_rgb8();

    // Raw body with parameters in the query; Accept: application/json selects JSON.
    let resp = c
        .post(server.url("/explain?preset=torchcam&resolution=feature&target=285"))
        .header("content-type", "image/png")
        .header("accept", "application/json")
        .body(common::sample_png())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let doc: Value = resp.json().await.unwrap();
    assert_eq!(doc["preset"], "torchcam");
    assert_eq!(doc["explanations"][0]["saliency"]["width"], 7);
    let reference = common::read_npy(&common::root().join("tests/fixtures/reference/chelsea.torchcam.npy")).1;
    let got: Vec<f32> = doc["explanations"][0]["saliency"]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    assert!(common::max_abs_diff(&got, &reference) < 1e-3);

    // JSON with base64 (the KServe convention), two targets, one set of passes.
    let b64 = base64::engine::general_purpose::STANDARD.encode(common::sample_png());
    let body = json!({"image": {"b64": b64}, "target": [285, 281], "format": "json", "resolution": "model"});
    let doc: Value = c.post(server.url("/explain")).json(&body).send().await.unwrap().json().await.unwrap();
    assert_eq!(doc["explanations"].as_array().unwrap().len(), 2);
    assert_eq!(doc["explanations"][1]["target"]["index"], 281);
    assert_eq!(doc["stats"]["forward_passes"].as_u64(), Some(535 - shared as u64));

    // Heatmap format, viridis, via multipart parameters.
    let form = Form::new().part("image", png_part()).text("format", "heatmap").text("colormap", "viridis");
    let resp = c.post(server.url("/explain")).multipart(form).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let heat = image::load_from_memory(&resp.bytes().await.unwrap()).unwrap().to_rgb8();
    assert_ne!(heat, multipart_png);

    // /predict in the three forms.
    let p1: Value = c
        .post(server.url("/predict"))
        .multipart(Form::new().part("image", png_part()).text("top_k", "3"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let p2: Value = c.post(server.url("/predict?top_k=3")).png_body().send().await.unwrap().json().await.unwrap();
    let p3: Value = c
        .post(server.url("/predict"))
        .json(&json!({"image": {"b64": b64}, "top_k": 3}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(p1["predictions"], p2["predictions"]);
    assert_eq!(p1["predictions"], p3["predictions"]);
    assert_eq!(p1["predictions"][0]["label"], "Egyptian cat");
    assert_eq!(p1["predictions"].as_array().unwrap().len(), 3);

    // The container HEALTHCHECK: `scorecam healthcheck` against this server.
    let addr = server.base.trim_start_matches("http://").to_string();
    let hc = std::process::Command::new(env!("CARGO_BIN_EXE_scorecam"))
        .args(["healthcheck", "--bind", &addr])
        .output()
        .unwrap();
    assert!(hc.status.success(), "{}", String::from_utf8_lossy(&hc.stderr));
    let down = std::process::Command::new(env!("CARGO_BIN_EXE_scorecam"))
        .args(["healthcheck", "--bind", "127.0.0.1:1"])
        .output()
        .unwrap();
    assert_eq!(down.status.code(), Some(1), "nothing listens on port 1");

    let metrics = c.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    for name in [
        "scorecam_http_requests_total{route=\"/explain\",status=\"200\"} 4",
        "scorecam_stage_duration_seconds_bucket{stage=\"masked\"",
        "scorecam_batch_size_bucket",
        "scorecam_masked_passes_total",
        "scorecam_skipped_channels_total",
        "scorecam_queue_depth 0",
        "scorecam_jobs_running 0",
    ] {
        assert!(metrics.contains(name), "missing {name} in\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_bad_input_gets_its_status_and_the_server_stays_ready() {
    let _alone = one_server_at_a_time().await;
    let server = Server::start(&["--max-body-bytes", "200000"]);
    let c = client();
    let explain = || c.post(server.url("/explain"));
    let raw = |q: &str| c.post(server.url(&format!("/explain{q}"))).png_body();

    let e = error_of(
        explain().header("content-type", "application/json").body("{not json").send().await.unwrap(),
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(e, "bad_request");
    let e = error_of(explain().json(&json!({"image": {"b64": "%%%"}})).send().await.unwrap(), StatusCode::BAD_REQUEST)
        .await;
    assert_eq!(e, "bad_request");
    let e =
        error_of(explain().multipart(Form::new().text("top_k", "1")).send().await.unwrap(), StatusCode::BAD_REQUEST)
            .await;
    assert_eq!(e, "bad_request");
    let e = error_of(
        explain().header("content-type", "image/png").body(Vec::new()).send().await.unwrap(),
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(e, "empty_image");
    // A declared length over the limit is refused before any of the body is read: a client
    // that waits for `100 Continue` gets the 413 instead, without uploading.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = server.base.trim_start_matches("http://").to_string();
        let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let head = format!(
            "POST /explain HTTP/1.1\r\nHost: {addr}\r\nContent-Type: image/png\r\n\
             Content-Length: 50000000\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n"
        );
        tcp.write_all(head.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(30), tcp.read_to_end(&mut answer)).await.unwrap().unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        assert!(answer.contains("\"payload_too_large\""), "{answer}");
        assert!(answer.to_ascii_lowercase().contains("connection: close"), "{answer}");
    }
    let e = error_of(
        send_oversize(|| explain().header("content-type", "image/png").body(vec![7u8; 300_000])).await,
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;
    assert_eq!(e, "payload_too_large");
    let e = error_of(
        send_oversize(|| {
            explain().multipart(Form::new().part("image", Part::bytes(vec![7u8; 300_000]).file_name("x.png")))
        })
        .await,
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;
    assert_eq!(e, "payload_too_large");
    // The inference protocols' routes are under the same limit.
    for path in ["/v1/models/efficientnet-lite0:predict", "/v2/models/efficientnet-lite0/infer"] {
        let big = json!({"instances": ["A".repeat(300_000)]});
        let e =
            error_of(send_oversize(|| c.post(server.url(path)).json(&big)).await, StatusCode::PAYLOAD_TOO_LARGE).await;
        assert_eq!(e, "payload_too_large", "{path}");
    }
    let e = error_of(
        explain().header("content-type", "text/plain").body("hi").send().await.unwrap(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
    )
    .await;
    assert_eq!(e, "unsupported_media_type");
    let e = error_of(
        explain().header("content-type", "image/png").body("GIF? no, text").send().await.unwrap(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
    )
    .await;
    assert_eq!(e, "unsupported_image_format");
    let mut truncated = common::sample_png();
    truncated.truncate(2000);
    let e = error_of(
        explain().header("content-type", "image/png").body(truncated).send().await.unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(e, "invalid_image");
    for (q, kind) in [
        ("?target=1000", "invalid_target"),
        ("?top_k=0", "invalid_parameter"),
        ("?top_k=11", "invalid_parameter"),
        ("?alpha=2", "invalid_parameter"),
        ("?preset=gradcam", "invalid_parameter"),
        ("?method=nosuchcam", "invalid_parameter"),
        ("?resolution=feature&format=json", "invalid_parameter"),
        ("?colour=red", "invalid_parameter"),
        ("?target=1&top_k=2", "invalid_parameter"),
        ("?timeout_ms=0", "invalid_parameter"),
        ("?target=abc", "invalid_parameter"),
    ] {
        assert_eq!(error_of(raw(q).send().await.unwrap(), StatusCode::UNPROCESSABLE_ENTITY).await, kind, "{q}");
    }
    let e = error_of(raw("?model=nope").send().await.unwrap(), StatusCode::NOT_FOUND).await;
    assert_eq!(e, "unknown_model");
    let e = error_of(c.get(server.url("/nowhere")).send().await.unwrap(), StatusCode::NOT_FOUND).await;
    assert_eq!(e, "not_found");
    let e = error_of(c.get(server.url("/explain")).send().await.unwrap(), StatusCode::METHOD_NOT_ALLOWED).await;
    assert_eq!(e, "method_not_allowed");
    // A JSON map at the upload's resolution is capped (4 Mi values): 2100×2100 is over.
    let big = image::RgbImage::from_pixel(2100, 2100, image::Rgb([90, 120, 30]));
    let mut png = Vec::new();
    image::DynamicImage::ImageRgb8(big).write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).unwrap();
    let r = explain().query(&[("format", "json")]).header("content-type", "image/png").body(png).send().await.unwrap();
    assert_eq!(error_of(r, StatusCode::UNPROCESSABLE_ENTITY).await, "invalid_parameter");
    // A tiny deadline: 504 when the engine has no rate yet and admits it, or 429 at once
    // when its measured rate already says 20 ms cannot be met (admission by deadline).
    let r = raw("?timeout_ms=20").send().await.unwrap();
    let status = r.status();
    let e = error_of(r, status).await;
    assert!(
        (status, e.as_str()) == (StatusCode::GATEWAY_TIMEOUT, "deadline_exceeded")
            || (status == StatusCode::TOO_MANY_REQUESTS && !e.is_empty()),
        "{status} {e}"
    );

    assert_eq!(c.get(server.url("/readyz")).send().await.unwrap().status(), 200);
    let ok = c.post(server.url("/predict")).png_body().send().await.unwrap();
    assert_eq!(ok.status(), 200, "still serving");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_past_capacity_gets_429_with_retry_after() {
    let _alone = one_server_at_a_time().await;
    let server = Server::start(&["--max-concurrent-jobs", "1", "--max-queued-jobs", "1"]);
    let c = client();
    // A long deadline, so only the capacity refuses (not the time they need).
    let send = || c.post(server.url("/explain?format=json&timeout_ms=300000")).png_body().send();
    let results = futures_join(vec![send(), send(), send(), send()]).await;
    let statuses: Vec<u16> = results.iter().map(|r| r.as_ref().unwrap().status().as_u16()).collect();
    assert!(statuses.contains(&429), "{statuses:?}");
    assert!(statuses.contains(&200), "{statuses:?}");
    assert!(statuses.iter().all(|s| *s == 200 || *s == 429), "{statuses:?}");
    let limited = results.into_iter().map(Result::unwrap).find(|r| r.status() == 429).unwrap();
    // The wait is the admitted work's, in seconds (at least one).
    let retry: u64 = limited.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry >= 1);
    assert_eq!(error_of(limited, StatusCode::TOO_MANY_REQUESTS).await, "overloaded");
}

/// A counter from `/metrics`.
async fn metric(server: &Server, name: &str) -> u64 {
    let m = client().get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let line = m.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no {name} in /metrics"));
    line.split(' ').nth(1).unwrap().parse::<f64>().unwrap() as u64
}

#[tokio::test(flavor = "multi_thread")]
async fn a_prediction_skips_the_explanations_queue() {
    let _alone = one_server_at_a_time().await;
    // Room for two explanations in all: both are admitted, and a third would get a 429.
    // Their deadline is long, so only the capacity refuses (not the time they need).
    let server = Server::start(&["--max-concurrent-jobs", "1", "--max-queued-jobs", "1"]);
    let c = client();
    let send = || c.post(server.url("/explain?format=json&timeout_ms=300000")).png_body().send();
    let explanations: Vec<_> = vec![send(), send()].into_iter().map(tokio::spawn).collect();
    // Wait until the first explanation's masked passes run (both are admitted by then).
    for _ in 0..600 {
        if metric(&server, "scorecam_masked_passes_total").await > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(metric(&server, "scorecam_masked_passes_total").await > 0, "the explanations started");
    let third = send().await.unwrap();
    assert_eq!(third.status(), 429, "the explanations' capacity is full");
    // A prediction has its own admission and its clean pass runs on the next free worker.
    let predicted = c.post(server.url("/predict")).png_body().send().await.unwrap();
    assert_eq!(predicted.status(), 200);
    let body: Value = predicted.json().await.unwrap();
    assert!(body["predictions"][0]["label"].is_string(), "{body}");
    // It answered while the explanations were still running (the second one waits for all
    // of the first's ~500 passes before its own start).
    assert!(explanations.iter().any(|h| !h.is_finished()), "the prediction waited for the explanations");
    for h in explanations {
        assert_eq!(h.await.unwrap().unwrap().status(), 200);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repeat_that_differs_only_in_drawing_is_answered_from_the_cache() {
    let _alone = one_server_at_a_time().await;
    let server = Server::start(&[]);
    let c = client();
    let explain = |query: &str| c.post(server.url(&format!("/explain?{query}"))).png_body().send();
    let cache_header = |r: &reqwest::Response| r.headers()["x-scorecam-cache"].to_str().unwrap().to_string();

    let fresh = explain("format=json&resolution=model").await.unwrap();
    assert_eq!(fresh.status(), 200);
    assert_eq!(cache_header(&fresh), "miss");
    let fresh: Value = fresh.json().await.unwrap();
    assert!(fresh["stats"]["forward_passes"].as_u64().unwrap() > 100);
    let passes = metric(&server, "scorecam_masked_passes_total").await;
    let clean = metric(&server, "scorecam_clean_passes_total").await;

    // Other formats, resolutions, colour maps and opacities: no pass at all.
    for query in ["format=png", "format=heatmap&colormap=viridis", "alpha=0.2&colormap=gray", "format=json"] {
        let r = explain(query).await.unwrap();
        assert_eq!(r.status(), 200, "{query}");
        assert_eq!(cache_header(&r), "hit", "{query}");
    }
    assert_eq!(metric(&server, "scorecam_masked_passes_total").await, passes, "no masked pass ran");
    assert_eq!(metric(&server, "scorecam_clean_passes_total").await, clean, "no clean pass ran");
    assert_eq!(metric(&server, "scorecam_cache_hits_total").await, 4);

    // The cached answer is the fresh one, value for value.
    let again: Value = explain("format=json&resolution=model").await.unwrap().json().await.unwrap();
    assert_eq!(again["stats"]["cache"], "hit");
    assert_eq!(again["stats"]["forward_passes"], 0);
    assert_eq!(again["explanations"], fresh["explanations"]);
    assert_eq!(again["predictions"], fresh["predictions"]);

    // A parameter that changes the numbers is a new computation.
    let other = explain("format=json&resolution=model&preset=torchcam").await.unwrap();
    assert_eq!(cache_header(&other), "miss");
    assert!(metric(&server, "scorecam_masked_passes_total").await > passes);
    assert!(metric(&server, "scorecam_cache_bytes").await > 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cache_can_be_turned_off() {
    let _alone = one_server_at_a_time().await;
    let server = Server::start(&["--cache-mib", "0"]);
    let c = client();
    for _ in 0..2 {
        let r =
            c.post(server.url("/explain?format=json&method=scorecam&max_channels=8")).png_body().send().await.unwrap();
        assert_eq!(r.headers()["x-scorecam-cache"], "off");
        let doc: Value = r.json().await.unwrap();
        assert!(doc["stats"]["forward_passes"].as_u64().unwrap() > 1);
    }
}

fn saliency(doc: &Value) -> Vec<f64> {
    doc["explanations"][0]["saliency"]["data"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pass_budget_gives_a_partial_map_with_its_coverage() {
    let _alone = one_server_at_a_time().await;
    let server = Server::start(&["--cache-mib", "0"]);
    let c = client();
    let explain = |query: &str| c.post(server.url(&format!("/explain?{query}"))).png_body().send();
    let exact: Value = explain("format=json&resolution=model").await.unwrap().json().await.unwrap();
    let total = exact["stats"]["forward_passes"].as_u64().unwrap() - 1;
    assert!(exact["stats"].get("coverage").is_none(), "a complete map has no coverage");

    let r = explain("format=json&resolution=model&max_passes=100").await.unwrap();
    assert_eq!(r.status(), 200);
    let partial: Value = r.json().await.unwrap();
    assert_eq!(partial["stats"]["forward_passes"], 101, "the clean pass and the budget");
    let cov = &partial["stats"]["coverage"];
    assert_eq!(cov["passes_done"], 100);
    assert_eq!(cov["passes_total"].as_u64().unwrap(), total);
    let mass = cov["estimated_mass"].as_f64().unwrap();
    assert!(mass > 0.0 && mass < 1.0, "{cov}");
    let (a, b) = (saliency(&exact), saliency(&partial));
    assert_eq!(a.len(), b.len());
    assert!(b.iter().all(|v| v.is_finite() && (0.0..=1.0).contains(v)));
    assert_ne!(a, b, "a partial map differs from the exact one");

    // A budget the plan fits in: the exact map, bit for bit, and no coverage.
    let whole: Value = explain("format=json&resolution=model&max_passes=100000").await.unwrap().json().await.unwrap();
    assert!(whole["stats"].get("coverage").is_none());
    assert_eq!(saliency(&whole), a);

    // The PNG's headers carry the coverage too.
    let png = explain("max_passes=10").await.unwrap();
    assert_eq!(png.headers()["x-scorecam-passes-done"].to_str().unwrap(), format!("10/{total}"));
    assert!(png.headers().contains_key("x-scorecam-coverage"));
    assert_eq!(metric(&server, "scorecam_partial_explanations_total").await, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn anytime_answers_at_the_deadline_with_what_it_has() {
    let _alone = one_server_at_a_time().await;
    let server = Server::start(&[]);
    let c = client();
    // About 490 passes take seconds on a CPU; 800 ms is not enough for all of them.
    let r = c.post(server.url("/explain?format=json&timeout_ms=800&anytime=true")).png_body().send().await.unwrap();
    assert_eq!(r.status(), 200);
    let doc: Value = r.json().await.unwrap();
    let cov = &doc["stats"]["coverage"];
    let done = cov["passes_done"].as_u64().unwrap();
    assert!(done < cov["passes_total"].as_u64().unwrap(), "{cov}");
    assert!(saliency(&doc).iter().all(|v| v.is_finite()));
    // A map the deadline cut depends on the machine's speed: it is never cached.
    let again: Value = c
        .post(server.url("/explain?format=json&timeout_ms=800&anytime=true"))
        .png_body()
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_ne!(again["stats"]["cache"], "hit", "{}", again["stats"]);
    // The same deadline without `anytime` cannot be met (the engine has measured its
    // passes by now): refused at once, before any pass, saying what to ask for instead.
    let late = c.post(server.url("/explain?format=json&timeout_ms=800")).png_body().send().await.unwrap();
    assert_eq!(late.status(), 429);
    let retry: u64 = late.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry >= 1);
    let error: Value = late.json().await.unwrap();
    let message = error["error"].as_str().unwrap();
    assert_eq!(error["error_type"], "overloaded");
    assert!(message.contains("timeout_ms") && message.contains("anytime=true"), "{message}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_past_its_deadline_is_answered_or_refused_at_once_never_timed_out() {
    let _alone = one_server_at_a_time().await;
    let server = Server::start(&["--cache-mib", "0"]);
    let c = client();
    // One explanation alone: the engine measures its rate and learns the passes it takes.
    let started = Instant::now();
    let alone = c.post(server.url("/explain?format=json&timeout_ms=300000")).png_body().send().await.unwrap();
    assert_eq!(alone.status(), 200);
    // Six at once with a deadline of one and a half of it: one fits, with room to spare
    // for a machine that slows down; under round-robin all six would time out together.
    let deadline_ms = (started.elapsed().as_millis() as u64 * 3 / 2).max(500);
    let url = server.url(&format!("/explain?format=json&timeout_ms={deadline_ms}"));
    let answers = futures_join((0..6).map(|_| c.post(url.clone()).png_body().send()).collect()).await;
    let mut statuses = Vec::new();
    for answer in answers {
        let answer = answer.unwrap();
        statuses.push(answer.status().as_u16());
        if answer.status() == StatusCode::TOO_MANY_REQUESTS {
            let retry: u64 = answer.headers()["retry-after"].to_str().unwrap().parse().unwrap();
            assert!(retry >= 1);
            let error: Value = answer.json().await.unwrap();
            assert!(error["error"].as_str().unwrap().contains("timeout_ms"), "{error}");
        }
    }
    assert!(statuses.iter().all(|s| *s == 200 || *s == 429), "{statuses:?}");
    assert!(statuses.contains(&200), "the engine finished what it admitted: {statuses:?}");
    assert!(statuses.contains(&429), "what could not finish was refused: {statuses:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_at_a_cold_server_is_refused_at_the_door_not_after_admission() {
    let _alone = one_server_at_a_time().await;
    let c = client();
    // The deadline comes from another server's explanation: this one has run none, so
    // it knows only the rate it timed when it opened the model.
    let probe = Server::start(&["--cache-mib", "0"]);
    let started = Instant::now();
    let alone = c.post(probe.url("/explain?format=json&timeout_ms=300000")).png_body().send().await.unwrap();
    assert_eq!(alone.status(), 200);
    // Three times one explanation: one fits even if this machine's speed halves between
    // the two servers; not two, on the count the cold engine assumes (a pass per channel).
    let deadline_ms = (started.elapsed().as_millis() as u64 * 3).max(500);
    drop(probe);
    let server = Server::start(&["--cache-mib", "0"]);
    let url = server.url(&format!("/explain?format=json&timeout_ms={deadline_ms}"));
    let answers = futures_join((0..6).map(|_| c.post(url.clone()).png_body().send()).collect()).await;
    let statuses: Vec<u16> = answers.into_iter().map(|a| a.unwrap().status().as_u16()).collect();
    assert!(statuses.iter().all(|s| *s == 200 || *s == 429), "{statuses:?}");
    assert!(statuses.contains(&200), "the engine tried and finished one: {statuses:?}");
    // Admitted by capacity alone, the burst would have been cut short once the engine
    // measured its rate (ended early: a late 429, or a 504 for a started one).
    assert_eq!(metric(&server, "scorecam_ended_early_total").await, 0, "{statuses:?}");
    let refused = metric(&server, "scorecam_refused_deadline_total").await;
    assert_eq!(refused as usize, statuses.iter().filter(|s| **s == 429).count(), "{statuses:?}");
    assert!(refused >= 1, "{statuses:?}");
}

async fn futures_join<F: std::future::Future + Send + 'static>(futures: Vec<F>) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_explanations_equal_the_sequential_ones() {
    let _alone = one_server_at_a_time().await;
    // Without the result cache, so the concurrent runs really run.
    let server = Server::start(&["--cache-mib", "0"]);
    let c = client();
    let images: Vec<Vec<u8>> = ["chelsea", "goldfish", "airliner"]
        .iter()
        .map(|n| std::fs::read(common::root().join(format!("tests/fixtures/reference/{n}.png"))).unwrap())
        .collect();
    let run = |img: Vec<u8>| {
        // The longest deadline: a loaded CI machine may take a while for three at once.
        c.post(server.url("/explain?format=json&resolution=model&timeout_ms=300000"))
            .header("content-type", "image/png")
            .body(img)
            .send()
    };
    let mut sequential = Vec::new();
    for img in &images {
        sequential.push(run(img.clone()).await.unwrap().json::<Value>().await.unwrap());
    }
    let concurrent = futures_join(images.iter().map(|i| run(i.clone())).collect()).await;
    for (seq, conc) in sequential.iter().zip(concurrent) {
        let conc: Value = conc.unwrap().json().await.unwrap();
        assert!(conc["explanations"].is_array(), "{conc}");
        let a: Vec<f32> = seq["explanations"][0]["saliency"]["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        let b: Vec<f32> = conc["explanations"][0]["saliency"]["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        // Batches mix jobs differently, so kernels may sum in another order: float noise only.
        assert!(common::max_abs_diff(&a, &b) < 1e-4);
        assert_eq!(seq["stats"]["forward_passes"], conc["stats"]["forward_passes"]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_the_request_in_flight_finish_then_exits_zero() {
    let _alone = one_server_at_a_time().await;
    let server = Server::start(&[]);
    let c = client();
    let url = server.url("/explain?format=json");
    let in_flight = tokio::spawn({
        let c = c.clone();
        async move { c.post(url).png_body().send().await }
    });
    // Let the job start, then ask for shutdown.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.terminate();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // While draining (if the listener still accepts): not ready, and new work is refused.
    if let Ok(r) = c.get(server.url("/readyz")).send().await {
        assert_eq!(error_of(r, StatusCode::SERVICE_UNAVAILABLE).await, "not_ready", "draining is not ready");
    }
    let late = c.post(server.url("/predict")).png_body().send().await;
    if let Ok(r) = late {
        assert_eq!(error_of(r, StatusCode::SERVICE_UNAVAILABLE).await, "not_ready", "new work refused while draining");
    }
    let resp = in_flight.await.unwrap().unwrap();
    assert_eq!(resp.status(), 200);
    let doc: Value = resp.json().await.unwrap();
    assert_eq!(doc["explanations"][0]["target"]["index"], 285);
    assert_eq!(server.wait(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_disconnects_cancels_its_remaining_passes() {
    let _alone = one_server_at_a_time().await;
    let server = Server::start(&[]);
    let short = reqwest::Client::builder().timeout(Duration::from_millis(1500)).build().unwrap();
    // SS-CAM with 10 samples is ten masked passes per mask (4,880 in all): long enough
    // that a fast machine is still far from the end when the client leaves at 1.5 s (and
    // a deadline long enough for a slow one to admit it).
    let r = short.post(server.url("/explain?method=sscam&samples=10&timeout_ms=300000")).png_body().send().await;
    assert!(r.is_err(), "the client gave up");
    let passes = || metric(&server, "scorecam_masked_passes_total");
    // Batches already handed to the worker (at most two) still finish; after that the
    // count must stop. Wait for it to settle (a loaded machine runs batches slowly).
    let mut last = passes().await;
    let mut settled = false;
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(2000)).await;
        let now = passes().await;
        if now == last {
            settled = true;
            break;
        }
        last = now;
    }
    assert!(settled, "masked passes kept running after the client left");
    let a = last;
    // A full run is 4,880 masked passes (488 distinct masks, 534 active channels of which
    // 46 share a mask, times 10 samples).
    assert!(a < 2000, "the explanation ran to the end or nearly ({a} passes)");
}

#[cfg(feature = "fault-injection")]
#[tokio::test(flavor = "multi_thread")]
async fn a_panic_fails_only_its_own_job() {
    let _alone = one_server_at_a_time().await;
    let server = Server::start(&[]);
    let c = client();
    let normal = tokio::spawn({
        let (c, url) = (c.clone(), server.url("/explain?format=json"));
        async move { c.post(url).png_body().send().await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let faulty = c
        .post(server.url("/explain?format=json"))
        .header("content-type", "image/png")
        .header("x-scorecam-fault", "panic")
        .body(common::sample_png())
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(faulty, StatusCode::INTERNAL_SERVER_ERROR).await, "model_failure");
    assert_eq!(normal.await.unwrap().status(), 200, "the other job is unaffected");
    assert_eq!(c.get(server.url("/readyz")).send().await.unwrap().status(), 200);
}

#[cfg(feature = "fault-injection")]
#[tokio::test(flavor = "multi_thread")]
async fn a_dead_worker_turns_readiness_off_and_is_replaced() {
    let _alone = one_server_at_a_time().await;
    let server = Server::start(&[]);
    let c = client();
    let faulty = c
        .post(server.url("/explain?format=json"))
        .header("content-type", "image/png")
        .header("x-scorecam-fault", "kill-worker")
        .body(common::sample_png())
        .send()
        .await
        .unwrap();
    assert_eq!(faulty.status(), 500);
    assert_eq!(c.get(server.url("/readyz")).send().await.unwrap().status(), 503);
    let v2 = c.get(server.url("/v2/health/ready")).send().await.unwrap();
    assert_eq!(v2.status(), 503);
    assert_eq!(v2.json::<Value>().await.unwrap()["ready"], false);
    let v2 = c.get(server.url("/v2/models/efficientnet-lite0/ready")).send().await.unwrap();
    assert_eq!(v2.status(), 503);
    let mut ready = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if c.get(server.url("/readyz")).send().await.unwrap().status() == 200 {
            ready = true;
            break;
        }
    }
    assert!(ready, "the worker was replaced");
    let ok = c.post(server.url("/predict")).png_body().send().await.unwrap();
    assert_eq!(ok.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn api_keys_guard_every_route_but_the_probes() {
    let _alone = one_server_at_a_time().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys");
    std::fs::write(&file, "# operators\nfile-key-7f3a\n\n").unwrap();
    let server = Server::start(&["--api-keys", "inline-key-91c2", "--api-keys-file", file.to_str().unwrap()]);
    let c = client();
    for open in ["/healthz", "/readyz", "/v2/health/live", "/v2/health/ready"] {
        assert_eq!(c.get(server.url(open)).send().await.unwrap().status(), 200, "{open}");
    }
    for path in
        ["/models", "/metrics", "/openapi.yaml", "/v2/models/efficientnet-lite0", "/v1/models/efficientnet-lite0"]
    {
        let r = c.get(server.url(path)).send().await.unwrap();
        assert_eq!(r.headers()["www-authenticate"], "Bearer realm=\"scorecam\"", "{path}");
        assert_eq!(error_of(r, StatusCode::UNAUTHORIZED).await, "unauthorized", "{path}");
    }
    let wrong = c.get(server.url("/models")).bearer_auth("inline-key-91c3").send().await.unwrap();
    assert_eq!(error_of(wrong, StatusCode::UNAUTHORIZED).await, "unauthorized");
    let r = c.get(server.url("/models")).bearer_auth("inline-key-91c2").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = c.get(server.url("/models")).header("x-api-key", "file-key-7f3a").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = c.post(server.url("/predict")).bearer_auth("file-key-7f3a").png_body().send().await.unwrap();
    assert_eq!(r.status(), 200);
    let unauth = c.post(server.url("/predict")).png_body().send().await;
    assert_eq!(unauth.unwrap().status(), 401);
    let v1 = server.url("/v1/models/efficientnet-lite0:predict");
    let instances = json!({"instances": [base64::engine::general_purpose::STANDARD.encode(common::sample_png())]});
    let r = c.post(&v1).json(&instances).send().await.unwrap();
    assert_eq!(error_of(r, StatusCode::UNAUTHORIZED).await, "unauthorized");
    let r = c.post(&v1).bearer_auth("inline-key-91c2").json(&instances).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let log = server.log.lock().unwrap().join("\n");
    assert!(log.contains("authentication on"), "{log}");
    assert!(!log.contains("inline-key-91c2") && !log.contains("file-key-7f3a"), "keys must never be logged");
}

#[tokio::test(flavor = "multi_thread")]
async fn cors_is_off_by_default_and_configurable() {
    let _alone = one_server_at_a_time().await;
    let c = client();
    let off = Server::start(&[]);
    let r = c.get(off.url("/models")).header("origin", "https://tools.example.com").send().await.unwrap();
    assert!(!r.headers().contains_key("access-control-allow-origin"));
    drop(off);
    let on = Server::start(&["--cors-origins", "https://tools.example.com"]);
    let r = c
        .request(reqwest::Method::OPTIONS, on.url("/explain"))
        .header("origin", "https://tools.example.com")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["access-control-allow-origin"], "https://tools.example.com");
    let r = c.get(on.url("/models")).header("origin", "https://evil.example.com").send().await.unwrap();
    assert!(!r.headers().contains_key("access-control-allow-origin"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_client_is_cut_off_with_408() {
    let _alone = one_server_at_a_time().await;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = Server::start(&["--body-read-timeout-ms", "500"]);
    let addr = server.base.trim_start_matches("http://").to_string();
    for (path, kind) in [("/explain", "image/png"), ("/v2/models/efficientnet-lite0/infer", "application/json")] {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let head =
            format!("POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {kind}\r\nContent-Length: 100000\r\n\r\n");
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(b"{\"in").await.unwrap(); // then stall
        let mut response = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut response)).await;
        assert!(read.is_ok(), "{path}: the server closed the slow request");
        let text = String::from_utf8_lossy(&response);
        assert!(text.starts_with("HTTP/1.1 408"), "{path}: {text}");
        assert!(text.contains("request_timeout"), "{path}: {text}");
    }
    assert_eq!(client().get(server.url("/readyz")).send().await.unwrap().status(), 200);
}
