//! `POST /explain/stream` on the real server and the real default model: progress events,
//! the final result, errors before the stream, and cancellation on disconnect.

mod common;

use std::time::Duration;

use common::{PngBody, Server};
use reqwest::StatusCode;
use serde_json::Value;

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(300)).build().unwrap()
}

/// Reads Server-Sent Events off a response, one `(event, data)` at a time.
struct Events {
    response: reqwest::Response,
    buffer: String,
}

impl Events {
    fn new(response: reqwest::Response) -> Self {
        Self { response, buffer: String::new() }
    }

    async fn next(&mut self) -> Option<(String, Value)> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut event, mut data) = (String::from("message"), String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if data.is_empty() {
                    continue; // a keep-alive comment
                }
                return Some((event, serde_json::from_str(&data).expect("event data is JSON")));
            }
            let chunk = self.response.chunk().await.expect("stream readable")?;
            self.buffer.push_str(std::str::from_utf8(&chunk).expect("UTF-8 events"));
        }
    }
}

async fn masked_passes(server: &Server) -> (u64, u64) {
    let m = client().get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let read = |name: &str| -> u64 {
        m.lines().find(|l| l.starts_with(name)).unwrap().split(' ').nth(1).unwrap().parse().unwrap()
    };
    (read("scorecam_masked_passes_total"), read("scorecam_cancelled_jobs_total"))
}

#[tokio::test(flavor = "multi_thread")]
async fn progress_is_monotonic_and_the_result_equals_the_plain_answer() {
    let server = Server::start(&[]);
    let query = "?format=json&resolution=model&target=285";
    let response = client().post(server.url(&format!("/explain/stream{query}"))).png_body().send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut events = Events::new(response);
    let (mut last_done, mut progress_events, mut saw_total) = (0u64, 0, 0u64);
    let (mut partials, mut partial_done) = (0, 0u64);
    let result = loop {
        let (event, data) = events.next().await.expect("the stream ends with a result");
        match event.as_str() {
            "progress" => {
                let (done, total) = (data["done"].as_u64().unwrap(), data["total"].as_u64().unwrap());
                assert!(done >= last_done, "progress went back: {done} after {last_done}");
                if total > 0 {
                    assert!(done <= total, "{done} of {total}");
                    assert!(saw_total == 0 || saw_total == total, "the total changed: {saw_total} → {total}");
                    saw_total = total;
                }
                assert!(["queued", "features", "masked", "metrics"].contains(&data["stage"].as_str().unwrap()));
                last_done = done;
                progress_events += 1;
            }
            "partial" => {
                // The map so far, at the target layer's 7×7, with its coverage.
                assert_eq!(data["target"], 285);
                let map = &data["map"];
                assert_eq!((map["width"].as_u64(), map["height"].as_u64()), (Some(7), Some(7)), "{data}");
                let values = map["data"].as_array().unwrap();
                assert_eq!(values.len(), 49);
                assert!(values.iter().all(|v| (0.0..=1.0).contains(&v.as_f64().unwrap())));
                let done = data["coverage"]["passes_done"].as_u64().unwrap();
                assert!(done >= partial_done && done <= data["coverage"]["passes_total"].as_u64().unwrap());
                partial_done = done;
                partials += 1;
            }
            "result" => break data,
            other => panic!("unexpected event {other}: {data}"),
        }
    };
    assert!(partials >= 1, "no partial map during a multi-second job");
    assert!(events.next().await.is_none(), "nothing after the result");
    assert!(progress_events >= 2, "only {progress_events} progress events for a multi-second job");
    assert!(saw_total > 0, "the total was never reported");
    // Official: every active channel plus the clean pass.
    assert_eq!(result["stats"]["forward_passes"].as_u64().unwrap(), saw_total + 1);

    let plain: Value =
        client().post(server.url(&format!("/explain{query}"))).png_body().send().await.unwrap().json().await.unwrap();
    let values = |doc: &Value| -> Vec<f32> {
        doc["explanations"][0]["saliency"]["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect()
    };
    let (a, b) = (values(&result), values(&plain));
    assert_eq!(a.len(), 224 * 224);
    assert!(common::max_abs_diff(&a, &b) < 1e-4, "stream and plain maps differ by {}", common::max_abs_diff(&a, &b));
    assert_eq!(result["explanations"][0]["target"]["index"], 285);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_image_result_carries_the_png_at_the_uploads_size() {
    let server = Server::start(&[]);
    let response = client().post(server.url("/explain/stream?format=heatmap")).png_body().send().await.unwrap();
    let mut events = Events::new(response);
    let result = loop {
        match events.next().await.expect("a result") {
            (e, data) if e == "result" => break data,
            (e, _) => assert!(e == "progress" || e == "partial", "{e}"),
        }
    };
    use base64::Engine as _;
    let png = base64::engine::general_purpose::STANDARD.decode(result["image"]["base64"].as_str().unwrap()).unwrap();
    let img = image::load_from_memory(&png).unwrap();
    let original = image::load_from_memory(&common::sample_png()).unwrap();
    assert_eq!((img.width(), img.height()), (original.width(), original.height()));
    assert_eq!(result["image"]["width"].as_u64().unwrap(), u64::from(original.width()));
    assert_eq!(result["predictions"].as_array().unwrap().len(), 5);
    assert_eq!(result["target"]["index"], result["predictions"][0]["index"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_a_plain_status_before_any_stream() {
    let server = Server::start(&[]);
    let c = client();
    let r = c.post(server.url("/explain/stream")).header("content-type", "image/png").body("not an image").send().await;
    let r = r.unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(r.json::<Value>().await.unwrap()["error_type"], "unsupported_image_format");
    let r = c.post(server.url("/explain/stream?target=5000")).png_body().send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let r = c.post(server.url("/explain/stream?timeout_ms=1")).png_body().send().await.unwrap();
    // A deadline that passes mid-stream arrives as an `error` event.
    assert_eq!(r.status(), StatusCode::OK);
    let mut events = Events::new(r);
    let last = loop {
        match events.next().await.expect("the stream ends with an error") {
            (e, data) if e != "progress" && e != "partial" => break (e, data),
            _ => {}
        }
    };
    assert_eq!(last.0, "error");
    assert_eq!(last.1["error_type"], "deadline_exceeded");
    assert!(c.get(server.url("/readyz")).send().await.unwrap().status().is_success());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_leaves_the_stream_cancels_the_work() {
    let server = Server::start(&[]);
    let (_, cancelled_before) = masked_passes(&server).await;
    // SS-CAM with 10 samples (4,880 passes), so that even a fast machine is far from
    // the end when the client leaves after the first progress; a deadline long enough
    // for a slow one to admit it.
    let response = client()
        .post(server.url("/explain/stream?method=sscam&samples=10&timeout_ms=300000"))
        .png_body()
        .send()
        .await
        .unwrap();
    let mut events = Events::new(response);
    let total = loop {
        let (event, data) = events.next().await.expect("progress before the end");
        if event == "partial" {
            continue;
        }
        assert_eq!(event, "progress", "{data}");
        if data["done"].as_u64().unwrap() > 0 {
            break data["total"].as_u64().unwrap();
        }
    };
    drop(events);
    // In-flight batches finish; after that the count must stop well short of the plan.
    let mut last = masked_passes(&server).await;
    let mut settled = false;
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let now = masked_passes(&server).await;
        if now.0 == last.0 && now.1 > cancelled_before {
            settled = true;
            break;
        }
        last = now;
    }
    assert!(settled, "the job was not cancelled ({last:?})");
    // The counter starts at 0 for this server, so a finished job would read `total`.
    assert!(last.0 < total, "the explanation ran to the end ({} of {total} passes)", last.0);
    assert!(client().get(server.url("/readyz")).send().await.unwrap().status().is_success());
}
