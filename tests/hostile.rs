//! The hostile-input corpus (tests/fixtures/hostile, made by scripts/dev/make_hostile_corpus.py)
//! against the real server: every hostile file gets a documented 4xx JSON error, every
//! valid oddity is explained, and the server stays ready throughout.

mod common;

use common::Server;
use reqwest::multipart::{Form, Part};
use serde_json::Value;

fn corpus() -> Vec<(String, Vec<u8>)> {
    let dir = common::root().join("tests/fixtures/hostile");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()))
        .collect();
    files.sort();
    assert!(files.len() >= 30, "the corpus is there");
    files
}

async fn ready(c: &reqwest::Client, server: &Server) {
    assert_eq!(c.get(server.url("/readyz")).send().await.unwrap().status(), 200, "server still ready");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_hostile_file_gets_a_documented_4xx_and_the_server_stays_ready() {
    let server = Server::start(&[]);
    let c = reqwest::Client::new();
    for (name, bytes) in corpus().into_iter().filter(|(n, _)| !n.starts_with("valid_")) {
        let r = c.post(server.url("/explain")).header("content-type", "image/png").body(bytes).send().await.unwrap();
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap_or_else(|e| panic!("{name}: not JSON: {e}"));
        let kind = body["error_type"].as_str().unwrap_or_else(|| panic!("{name}: {body}"));
        let expected: &[&str] = match status {
            400 => &["empty_image"],
            415 => &["unsupported_image_format"],
            422 => &["invalid_image", "image_too_large"],
            _ => panic!("{name}: status {status} ({body})"),
        };
        assert!(expected.contains(&kind), "{name}: {status} {kind}");
        if name.starts_with("bomb") || name.starts_with("huge") {
            assert_eq!(kind, "image_too_large", "{name}");
        }
    }
    ready(&c, &server).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn valid_oddities_are_explained_not_rejected() {
    let server = Server::start(&[]);
    let c = reqwest::Client::new();
    for (name, bytes) in corpus().into_iter().filter(|(n, _)| n.starts_with("valid_")) {
        let src = image::load_from_memory(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        // Tiny and extreme-aspect images get a full explanation; the rest a prediction.
        let explain = ["1x1", "needle", "wide"].iter().any(|k| name.contains(k));
        let route = if explain { "/explain" } else { "/predict" };
        let r = c.post(server.url(route)).header("content-type", "image/png").body(bytes).send().await.unwrap();
        assert_eq!(r.status(), 200, "{name}");
        if explain {
            let png = image::load_from_memory(&r.bytes().await.unwrap()).unwrap();
            assert_eq!(
                (png.width(), png.height()),
                (src.width(), src.height()),
                "{name}: overlay at the upload's size"
            );
        }
    }
    ready(&c, &server).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_requests_get_400_and_the_server_stays_ready() {
    let server = Server::start(&[]);
    let c = reqwest::Client::new();
    let url = server.url("/explain");
    let cases: Vec<(&str, &str, Vec<u8>)> = vec![
        ("multipart/form-data", "no boundary", b"--x\r\n".to_vec()),
        (
            "multipart/form-data; boundary=abc",
            "truncated multipart",
            b"--abc\r\nContent-Disposition: form-data; name=\"image\"\r\n\r\nxx".to_vec(),
        ),
        ("multipart/form-data; boundary=abc", "empty multipart", b"--abc--\r\n".to_vec()),
        ("application/json", "deep JSON", format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)).into_bytes()),
        ("application/json", "array", b"[1, 2]".to_vec()),
        ("application/json", "image not an object", br#"{"image": "abc"}"#.to_vec()),
        ("application/json", "nested parameter", br#"{"image": {"b64": "AAAA"}, "top_k": {"a": 1}}"#.to_vec()),
        ("application/json", "invalid UTF-8", b"{\"image\": \"\xff\xfe\"}".to_vec()),
    ];
    for (ct, what, body) in cases {
        let r = c.post(&url).header("content-type", ct).body(body).send().await.unwrap();
        assert_eq!(r.status(), 400, "{what}");
        assert_eq!(r.json::<Value>().await.unwrap()["error_type"], "bad_request", "{what}");
    }
    // Two image parts, and too many parameters.
    let png = std::fs::read(common::root().join("tests/fixtures/hostile/valid_1x1.png")).unwrap();
    let two = Form::new().part("image", Part::bytes(png.clone())).part("image", Part::bytes(png.clone()));
    assert_eq!(c.post(&url).multipart(two).send().await.unwrap().status(), 400);
    let mut many = Form::new().part("image", Part::bytes(png));
    for i in 0..40 {
        many = many.text(format!("p{i}"), "1");
    }
    assert_eq!(c.post(&url).multipart(many).send().await.unwrap().status(), 400);
    ready(&c, &server).await;
}

/// A request refused before its body is read (too many parameters, two images, a wrong
/// type, a wrong key) still gets its answer while the client is uploading the rest. A
/// server that closed at once would leave unread bytes in its socket; the kernel then
/// resets the connection and the client sees a broken pipe instead of the 4xx. The 4 MiB
/// tail is well over a loopback socket's buffers, so without draining this fails every time.
#[tokio::test(flavor = "multi_thread")]
async fn a_request_refused_early_is_answered_while_the_client_still_uploads() {
    let server = Server::start(&["--api-keys", "right-key-5d1e"]);
    let c = reqwest::Client::new();
    let url = server.url("/explain");
    let key = ("x-api-key", "right-key-5d1e");
    let tail = || Part::bytes(vec![b'x'; 4 << 20]);
    let png = std::fs::read(common::root().join("tests/fixtures/hostile/valid_1x1.png")).unwrap();

    let mut many = Form::new();
    for i in 0..40 {
        many = many.text(format!("p{i}"), "1");
    }
    let cases: Vec<(&str, reqwest::RequestBuilder, u16, &str)> = vec![
        (
            "too many parameters",
            c.post(&url).header(key.0, key.1).multipart(many.part("tail", tail())),
            400,
            "bad_request",
        ),
        (
            "two images",
            c.post(&url).header(key.0, key.1).multipart(
                Form::new()
                    .part("image", Part::bytes(png.clone()))
                    .part("image", Part::bytes(png.clone()))
                    .part("tail", tail()),
            ),
            400,
            "bad_request",
        ),
        (
            "unsupported type",
            c.post(&url).header(key.0, key.1).header("content-type", "text/plain").body(vec![b'x'; 4 << 20]),
            415,
            "unsupported_media_type",
        ),
        (
            "wrong key",
            c.post(&url).header(key.0, "wrong").header("content-type", "image/png").body(vec![b'x'; 4 << 20]),
            401,
            "unauthorized",
        ),
    ];
    for (what, request, status, error_type) in cases {
        let r = request.send().await.unwrap_or_else(|e| panic!("{what}: no answer: {e:?}"));
        assert_eq!(r.status(), status, "{what}");
        // The connection is not offered for reuse: the drain may stop short of the end.
        assert_eq!(r.headers().get("connection").map(|v| v.as_bytes()), Some(&b"close"[..]), "{what}");
        assert_eq!(r.json::<Value>().await.unwrap()["error_type"], error_type, "{what}");
    }
    let r = c.get(server.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200, "server still ready");
    assert!(r.headers().get("connection").is_none(), "a request read to its end keeps its connection");
}
