//! Head kinds end to end: a binary (one sigmoid logit) and a multi-label grey classifier, a
//! segmenter (NCHW and NHWC output), an embedder and a letterboxed classifier, through the
//! service and the real server, against an independent numpy transcription of the presets
//! and EigenCAM with each head kind's target (tests/fixtures/models/heads, made by
//! scripts/dev/make_head_models.py): maps, reported target scores, /predict answers, and
//! every refusal of a target that does not fit the head.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use reqwest::StatusCode;
use reqwest::multipart::{Form, Part};
use scorecam::cam::{Method, Preset};
use scorecam::engine::EngineConfig;
use scorecam::service::{
    ErrorKind, ExplainRequest, ImageInput, ModelRepository, OutputFormat, PredictRequest, ReferenceSpec, RegionSpec,
    Rendered, Rendering, Resolution, Service, ServiceConfig, ServiceError, TargetSpec,
};
use serde_json::Value;

/// The numpy reference runs in float64 on the same ONNX graphs.
const TOLERANCE: f32 = 1e-4;
const PACKAGES: [&str; 6] = ["binary", "grey", "segmentation", "seg_nhwc", "embedding", "letterbox"];

fn heads() -> PathBuf {
    common::root().join("tests/fixtures/models/heads")
}

fn service() -> Arc<Service> {
    static SERVICE: OnceLock<Arc<Service>> = OnceLock::new();
    SERVICE
        .get_or_init(|| {
            common::init_runtime();
            let config = EngineConfig { workers: 1, max_batch_size: 3, ..EngineConfig::default() };
            let repo = ModelRepository::new(heads(), None, config.clone());
            Arc::new(Service::start(config, repo, ServiceConfig { cache_mib: 0, ..ServiceConfig::default() }).unwrap())
        })
        .clone()
}

fn doc(package: &str) -> Value {
    let text = std::fs::read_to_string(heads().join(package).join("reference/cases.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// A path in cases.json is relative to the package's reference folder.
fn file(package: &str, rel: &str) -> PathBuf {
    heads().join(package).join("reference").join(rel)
}

fn bytes(path: &Path) -> Arc<[u8]> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).into()
}

fn mask_region(path: &Path) -> RegionSpec {
    let img = image::open(path).unwrap().to_rgb8();
    let pixels: Vec<u8> = img.pixels().map(|p| u8::from(p.0.iter().any(|&v| v != 0))).collect();
    RegionSpec::Mask { width: img.width(), height: img.height(), pixels: pixels.into() }
}

fn method_of(case: &Value) -> Method {
    match case["method"].as_str().unwrap() {
        "scorecam" => Method::scorecam(case["preset"].as_str().unwrap().parse::<Preset>().unwrap()),
        other => Method::parse(Some(other), &[]).unwrap(),
    }
}

fn json_rendering(resolution: Resolution) -> Rendering {
    Rendering { format: OutputFormat::Json, resolution, ..Default::default() }
}

/// The request a case describes (as the Rust API takes it).
fn request_of(package: &str, case: &Value, resolution: Resolution) -> ExplainRequest {
    let targets = match case["targets"].as_array() {
        Some(t) => TargetSpec::Classes(t.iter().map(|v| v.as_u64().unwrap() as usize).collect()),
        None => TargetSpec::TopK(1),
    };
    let region = match &case["region"] {
        Value::Null => None,
        r if r.get("box").is_some() => {
            let b: Vec<f64> = r["box"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
            Some(RegionSpec::Box([b[0], b[1], b[2], b[3]]))
        }
        r => Some(mask_region(&file(package, r["mask"].as_str().unwrap()))),
    };
    let reference = match &case["reference"] {
        Value::Null => None,
        r if r.get("vector").is_some() => Some(ReferenceSpec::Vector(
            r["vector"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect::<Vec<_>>().into(),
        )),
        r => Some(ReferenceSpec::Image(ImageInput::Encoded(bytes(&file(package, r["image"].as_str().unwrap()))))),
    };
    ExplainRequest {
        model: Some(package.into()),
        targets,
        method: method_of(case),
        rendering: json_rendering(resolution),
        region,
        reference,
        ..Default::default()
    }
}

fn image_of(package: &str, case: &Value) -> ImageInput {
    ImageInput::Encoded(bytes(&file(package, case["image"].as_str().unwrap())))
}

async fn json(request: ExplainRequest, image: ImageInput) -> Result<scorecam::service::ExplainDocument, ServiceError> {
    match service().explain(request, image, None).await? {
        Rendered::Json(doc) => Ok(*doc),
        _ => panic!("asked for JSON"),
    }
}

/// Compares one map with its reference file; `None` when it matches.
fn compare(what: &str, got: (usize, usize, &[f32]), package: &str, spec: &Value) -> Option<String> {
    let (want_shape, want) = common::read_npy(&file(package, spec["file"].as_str().unwrap()));
    if want_shape != [got.0, got.1] {
        return Some(format!("{what}: shape {:?}, want {want_shape:?}", [got.0, got.1]));
    }
    let diff = common::max_abs_diff(got.2, &want);
    eprintln!("{what}: max |Δ| = {diff:.2e}");
    (diff > TOLERANCE).then(|| format!("{what}: max |Δ| = {diff}"))
}

/// Every case of every package, at every resolution its reference has, with the target the
/// answer reports; all failures are listed together.
#[tokio::test(flavor = "multi_thread")]
async fn every_case_matches_the_transcription() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for package in PACKAGES {
        for case in doc(package)["cases"].as_array().unwrap() {
            let name = format!("{package}/{}", case["name"].as_str().unwrap());
            for (key, resolution) in
                [("model", Resolution::Model), ("feature", Resolution::Feature), ("input", Resolution::Input)]
            {
                if case[key].is_null() {
                    continue;
                }
                let what = format!("{name} ({key})");
                let d = match json(request_of(package, case, resolution), image_of(package, case)).await {
                    Ok(d) => d,
                    Err(e) => {
                        failures.push(format!("{what}: refused: {e}"));
                        continue;
                    }
                };
                checked += 1;
                let Some(x) = d.explanations.first() else {
                    failures.push(format!("{what}: no explanation"));
                    continue;
                };
                if d.explanations.len() != 1 {
                    failures.push(format!("{what}: {} explanations, want 1", d.explanations.len()));
                }
                let s = &x.saliency;
                if let Some(f) = compare(&what, (s.height, s.width, &s.data), package, &case[key]) {
                    failures.push(f);
                }
                let want = &case["target"];
                let score = want["score"].as_f64().unwrap() as f32;
                if (x.target.score - score).abs() > 1e-5 {
                    failures.push(format!("{what}: target.score {} want {score}", x.target.score));
                }
                if let Some(index) = want["index"].as_u64()
                    && x.target.index != index as usize
                {
                    failures.push(format!("{what}: target.index {} want {index}", x.target.index));
                }
                if let Some(label) = want["label"].as_str()
                    && x.target.label != label
                {
                    failures.push(format!("{what}: target.label {:?} want {label:?}", x.target.label));
                }
            }
        }
    }
    assert!(checked >= 40, "only {checked} maps checked");
    assert!(failures.is_empty(), "{} of the maps differ:\n{}", failures.len(), failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn every_head_package_loads() {
    let service = service();
    for package in PACKAGES {
        let m = service.models().get(package).unwrap_or_else(|e| panic!("{package}: {e}"));
        assert_eq!(m.package.info.feature_khw, [5, 4, 4], "{package}");
    }
}

/// /predict per head kind: class probabilities (sigmoid for one or several logits, the
/// binary head's two labels from one line of labels.txt), a segmenter's pixel shares, an
/// embedding's length and norm.
#[tokio::test(flavor = "multi_thread")]
async fn predict_answers_per_head_kind() {
    for package in PACKAGES {
        let d = doc(package);
        let want = &d["predict"];
        let image = ImageInput::Encoded(bytes(&file(package, want["image"].as_str().unwrap())));
        let preds = want["predictions"].as_array().unwrap();
        let request =
            PredictRequest { model: Some(package.into()), top_k: Some(preds.len().max(1)), ..Default::default() };
        let got = service().predict(request, image).await.unwrap_or_else(|e| panic!("{package}: {e}"));
        assert_eq!(got.predictions.len(), preds.len(), "{package}: {:?}", got.predictions);
        for (g, w) in got.predictions.iter().zip(preds) {
            assert_eq!(g.index, w["index"].as_u64().unwrap() as usize, "{package}: {:?}", got.predictions);
            assert_eq!(g.label, w["label"].as_str().unwrap(), "{package}");
            let score = w["score"].as_f64().unwrap() as f32;
            assert!((g.score - score).abs() <= 1e-5, "{package}/{}: score {} want {score}", g.index, g.score);
        }
        match want.get("embedding") {
            Some(e) => {
                let got = got.embedding.unwrap_or_else(|| panic!("{package}: no embedding summary"));
                assert_eq!(got.dim, e["dim"].as_u64().unwrap() as usize);
                let norm = e["norm"].as_f64().unwrap() as f32;
                assert!((got.norm - norm).abs() <= 1e-4, "{package}: norm {} want {norm}", got.norm);
            }
            None => assert!(got.embedding.is_none(), "{package}: an embedding summary on a non-embedding model"),
        }
    }
}

/// The default target of a binary head is the more probable of `not cat` / `cat`; of a
/// segmenter the class with the most predicted pixels (the case files say which).
#[tokio::test(flavor = "multi_thread")]
async fn default_targets_per_head_kind() {
    for (package, case_name) in [("binary", "eigen/eigencam"), ("segmentation", "predicted/pytorch_grad_cam")] {
        let d = doc(package);
        let case = d["cases"].as_array().unwrap().iter().find(|c| c["name"] == case_name).unwrap();
        assert!(case["targets"].is_null());
        let mut request = request_of(package, case, Resolution::Model);
        request.targets = TargetSpec::TopK(2);
        let got = json(request, image_of(package, case)).await.unwrap();
        assert_eq!(got.explanations.len(), 2, "{package}");
        assert_eq!(got.explanations[0].target.index as u64, case["target"]["index"].as_u64().unwrap(), "{package}");
        assert_ne!(got.explanations[1].target.index, got.explanations[0].target.index, "{package}");
    }
}

/// A model-ready tensor gives the same map as the photo it was made from, and one of the
/// wrong size is refused with the size it should have.
#[tokio::test(flavor = "multi_thread")]
async fn tensor_inputs_are_checked_against_the_input_channels() {
    // photo_16x16.png normalised as binary/ does it (per-channel mean and std).
    let png = image::open(heads().join("photo_16x16.png")).unwrap().to_rgb8();
    let (mean, std) = ([0.45f32, 0.5, 0.55], [0.22f32, 0.25, 0.28]);
    let mut tensor = vec![0f32; 3 * 16 * 16];
    for (x, y, p) in png.enumerate_pixels() {
        for c in 0..3 {
            tensor[c * 256 + y as usize * 16 + x as usize] = (f32::from(p.0[c]) / 255.0 - mean[c]) / std[c];
        }
    }
    let d = doc("binary");
    let case = d["cases"].as_array().unwrap().iter().find(|c| c["name"] == "target1/pytorch_grad_cam").unwrap();
    let got = json(request_of("binary", case, Resolution::Model), ImageInput::Tensor(tensor.clone())).await.unwrap();
    let s = &got.explanations[0].saliency;
    assert_eq!(compare("binary tensor", (s.height, s.width, &s.data), "binary", &case["model"]), None);

    for (package, len, want) in [("binary", 256, "768"), ("grey", 768, "256"), ("binary", 3 * 16 * 15, "768")] {
        let request = ExplainRequest {
            model: Some(package.into()),
            rendering: json_rendering(Resolution::Model),
            ..Default::default()
        };
        let err = json(request, ImageInput::Tensor(vec![0.0; len])).await.unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(err.kind(), ErrorKind::InvalidParameter | ErrorKind::BadRequest | ErrorKind::InvalidImage),
            "{package}/{len}: {:?} {text}",
            err.kind()
        );
        assert!(text.contains(want) || text.contains("16×16") || text.contains("16x16"), "{package}/{len}: {text}");
    }
    healthy().await;
}

/// A successful request after the refusals: the service is still serving.
async fn healthy() {
    let d = doc("segmentation");
    let case = &d["cases"][0];
    let got = json(request_of("segmentation", case, Resolution::Model), image_of("segmentation", case)).await;
    assert!(got.is_ok(), "the service stopped serving: {:?}", got.err());
}

fn reference_vector(n: usize) -> ReferenceSpec {
    ReferenceSpec::Vector((0..n).map(|i| i as f32 - 3.5).collect::<Vec<_>>().into())
}

/// Each refusal: (what, model, request changes, image, wanted kind, words the message must
/// contain, any one of them).
#[tokio::test(flavor = "multi_thread")]
async fn targets_that_do_not_fit_the_head_are_refused_with_what_to_do() {
    let photo16 = || ImageInput::Encoded(bytes(&heads().join("photo_16x16.png")));
    let photo32 = || ImageInput::Encoded(bytes(&heads().join("photo_32x24.png")));
    let base = |model: &str| ExplainRequest {
        model: Some(model.into()),
        rendering: json_rendering(Resolution::Model),
        ..Default::default()
    };
    let with = |model: &str, f: &dyn Fn(&mut ExplainRequest)| {
        let mut r = base(model);
        f(&mut r);
        r
    };
    type Case = (&'static str, ExplainRequest, ImageInput, ErrorKind, Vec<&'static str>);
    let cases: Vec<Case> = vec![
        (
            "region on a classifier",
            with("binary", &|r| r.region = Some(RegionSpec::Box([0.0, 0.0, 8.0, 8.0]))),
            photo16(),
            ErrorKind::InvalidParameter,
            vec!["region"],
        ),
        (
            "region on an embedding",
            with("embedding", &|r| {
                r.region = Some(RegionSpec::Box([0.0, 0.0, 8.0, 8.0]));
                r.reference = Some(reference_vector(8));
            }),
            photo16(),
            ErrorKind::InvalidParameter,
            vec!["region"],
        ),
        (
            "reference on a classifier",
            with("binary", &|r| r.reference = Some(reference_vector(8))),
            photo16(),
            ErrorKind::InvalidParameter,
            vec!["reference"],
        ),
        (
            "reference on a segmenter",
            with("segmentation", &|r| r.reference = Some(reference_vector(8))),
            photo32(),
            ErrorKind::InvalidParameter,
            vec!["reference"],
        ),
        ("embedding without reference", base("embedding"), photo16(), ErrorKind::InvalidParameter, vec!["reference"]),
        (
            "reference of the wrong length",
            with("embedding", &|r| r.reference = Some(reference_vector(5))),
            photo16(),
            ErrorKind::InvalidParameter,
            vec!["8"],
        ),
        (
            "target on an embedding",
            with("embedding", &|r| {
                r.reference = Some(reference_vector(8));
                r.targets = TargetSpec::Classes(vec![0]);
            }),
            photo16(),
            ErrorKind::InvalidParameter,
            vec!["target"],
        ),
        (
            "top_k 2 on an embedding",
            with("embedding", &|r| {
                r.reference = Some(reference_vector(8));
                r.targets = TargetSpec::TopK(2);
            }),
            photo16(),
            ErrorKind::InvalidParameter,
            vec!["top_k", "target"],
        ),
        (
            "region box past the photo",
            with("segmentation", &|r| r.region = Some(RegionSpec::Box([0.0, 0.0, 33.0, 10.0]))),
            photo32(),
            ErrorKind::InvalidParameter,
            vec!["32"],
        ),
        (
            "region box with a negative corner",
            with("segmentation", &|r| r.region = Some(RegionSpec::Box([-1.0, 0.0, 8.0, 10.0]))),
            photo32(),
            ErrorKind::InvalidParameter,
            vec!["x1"],
        ),
        (
            "empty region box",
            with("segmentation", &|r| r.region = Some(RegionSpec::Box([10.0, 2.0, 10.0, 8.0]))),
            photo32(),
            ErrorKind::InvalidParameter,
            vec!["x1 < x2", "x2"],
        ),
        (
            "region mask of another size",
            with("segmentation", &|r| {
                r.region = Some(RegionSpec::Mask { width: 16, height: 16, pixels: vec![1u8; 256].into() })
            }),
            photo32(),
            ErrorKind::InvalidParameter,
            vec!["32×24", "32x24"],
        ),
        (
            "all-zero region mask",
            with("segmentation", &|r| {
                r.region = Some(RegionSpec::Mask { width: 32, height: 24, pixels: vec![0u8; 32 * 24].into() })
            }),
            photo32(),
            ErrorKind::InvalidParameter,
            vec!["non-zero", "empty"],
        ),
        (
            "a class the segmenter predicts nowhere, without a region",
            with("segmentation", &|r| r.targets = TargetSpec::Classes(vec![0])),
            ImageInput::Pixels(image::RgbImage::from_pixel(32, 24, image::Rgb([128, 128, 128]))),
            ErrorKind::InvalidParameter,
            vec!["region"],
        ),
        (
            "a box that holds no output pixel's centre",
            with("segmentation", &|r| r.region = Some(RegionSpec::Box([0.0, 0.0, 0.5, 0.5]))),
            photo32(),
            ErrorKind::InvalidParameter,
            vec!["region"],
        ),
        (
            "class past the segmenter's classes",
            with("segmentation", &|r| r.targets = TargetSpec::Classes(vec![3])),
            photo32(),
            ErrorKind::InvalidTarget,
            vec!["3 classes"],
        ),
        (
            "class past the binary head's two targets",
            with("binary", &|r| r.targets = TargetSpec::Classes(vec![2])),
            photo16(),
            ErrorKind::InvalidTarget,
            vec!["2 classes"],
        ),
        (
            "gradcam on a segmenter",
            with("segmentation", &|r| r.method = Method::parse(Some("gradcam"), &[]).unwrap()),
            photo32(),
            ErrorKind::UnsupportedByModel,
            vec!["gradcam"],
        ),
        (
            "gradcam on an embedding",
            with("embedding", &|r| {
                r.method = Method::parse(Some("gradcam"), &[]).unwrap();
                r.reference = Some(reference_vector(8));
            }),
            photo16(),
            ErrorKind::UnsupportedByModel,
            vec!["gradcam"],
        ),
    ];
    let mut failures = Vec::new();
    for (what, request, image, kind, words) in cases {
        match json(request, image).await {
            Ok(_) => failures.push(format!("{what}: served, want {kind:?}")),
            Err(e) => {
                let text = e.to_string();
                if e.kind() != kind {
                    failures.push(format!("{what}: {:?} ({text}), want {kind:?}", e.kind()));
                } else if !words.iter().any(|w| text.contains(w)) {
                    failures.push(format!("{what}: the message does not say {words:?}: {text}"));
                }
            }
        }
    }
    healthy().await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------------------
// Over HTTP: the parameters and parts that carry regions and references.
// ---------------------------------------------------------------------------------------

fn png_part(path: &Path) -> Part {
    Part::bytes(std::fs::read(path).unwrap()).file_name("x.png").mime_str("image/png").unwrap()
}

fn case_named(package: &str, name: &str) -> Value {
    doc(package)["cases"].as_array().unwrap().iter().find(|c| c["name"] == name).cloned().unwrap()
}

fn check_http_map(what: &str, package: &str, case: &Value, body: &Value) {
    let x = &body["explanations"][0];
    let s = &x["saliency"];
    let data: Vec<f32> = s["data"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
    let (h, w) = (s["height"].as_u64().unwrap() as usize, s["width"].as_u64().unwrap() as usize);
    assert_eq!(compare(what, (h, w, &data), package, &case["model"]), None, "{what}");
    let score = case["target"]["score"].as_f64().unwrap();
    assert!((x["target"]["score"].as_f64().unwrap() - score).abs() <= 1e-5, "{what}: {}", x["target"]);
}

async fn ok_json(what: &str, resp: reqwest::Response) -> Value {
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{what}: {body}");
    body
}

async fn refused(what: &str, resp: reqwest::Response, words: &[&str]) -> Value {
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or_else(|e| panic!("{what}: not JSON: {e}"));
    assert!(status.is_client_error(), "{what}: {status} {body}");
    let message = body["error"].as_str().unwrap_or_else(|| panic!("{what}: {body}"));
    assert!(words.iter().any(|w| message.contains(w)), "{what}: the message does not say {words:?}: {message}");
    body
}

#[tokio::test(flavor = "multi_thread")]
async fn over_http_regions_and_references_reach_the_explanation() {
    let server = common::Server::start(&["--models-dir", heads().to_str().unwrap(), "--cache-mib", "0"]);
    let c = reqwest::Client::new();
    let photo32 = heads().join("photo_32x24.png");
    let photo16 = heads().join("photo_16x16.png");
    let explain = |q: &str| c.post(server.url(&format!("/explain?format=json&resolution=model&{q}")));

    // A box as a query parameter.
    let case = case_named("segmentation", "box/pytorch_grad_cam");
    let b: Vec<String> = case["region"]["box"].as_array().unwrap().iter().map(|v| v.to_string()).collect();
    let q = format!("model=segmentation&preset=pytorch_grad_cam&target=1&region={}", b.join(","));
    assert_eq!(case["targets"][0], 1);
    let body =
        ok_json("box", explain(&q).multipart(Form::new().part("image", png_part(&photo32))).send().await.unwrap())
            .await;
    check_http_map("segmentation box over HTTP", "segmentation", &case, &body);

    // A box as a multipart text part.
    let form = Form::new().part("image", png_part(&photo32)).text("region", b.join(","));
    let q = "model=segmentation&preset=pytorch_grad_cam&target=1";
    let body = ok_json("box part", explain(q).multipart(form).send().await.unwrap()).await;
    check_http_map("segmentation box part over HTTP", "segmentation", &case, &body);

    // A mask part.
    let case = case_named("segmentation", "mask/pytorch_grad_cam");
    let q = format!("model=segmentation&preset=pytorch_grad_cam&target={}", case["targets"][0]);
    let form = Form::new()
        .part("image", png_part(&photo32))
        .part("region_mask", png_part(&heads().join("region_mask_32x24.png")));
    let body = ok_json("mask", explain(&q).multipart(form).send().await.unwrap()).await;
    check_http_map("segmentation mask over HTTP", "segmentation", &case, &body);

    // A reference vector: query parameter, multipart text part, JSON body array.
    let case = case_named("embedding", "vector/torchcam");
    let vector = serde_json::to_string(&case["reference"]["vector"]).unwrap();
    let q = format!("model=embedding&preset=torchcam&reference={}", urlencode(&vector));
    let body = ok_json(
        "reference query",
        explain(&q).multipart(Form::new().part("image", png_part(&photo16))).send().await.unwrap(),
    )
    .await;
    check_http_map("embedding reference query", "embedding", &case, &body);
    let form = Form::new().part("image", png_part(&photo16)).text("reference", vector.clone());
    let body =
        ok_json("reference part", explain("model=embedding&preset=torchcam").multipart(form).send().await.unwrap())
            .await;
    check_http_map("embedding reference part", "embedding", &case, &body);
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(std::fs::read(&photo16).unwrap());
    let json_body = serde_json::json!({"image": {"b64": b64}, "reference": case["reference"]["vector"]});
    let body =
        ok_json("reference JSON", explain("model=embedding&preset=torchcam").json(&json_body).send().await.unwrap())
            .await;
    check_http_map("embedding reference JSON body", "embedding", &case, &body);

    // A reference photo.
    let case = case_named("embedding", "photo/pytorch_grad_cam");
    let form = Form::new()
        .part("image", png_part(&photo16))
        .part("reference_image", png_part(&heads().join("photo_20x20.png")));
    let body = ok_json(
        "reference_image",
        explain("model=embedding&preset=pytorch_grad_cam").multipart(form).send().await.unwrap(),
    )
    .await;
    check_http_map("embedding reference_image", "embedding", &case, &body);

    // /predict per kind.
    for package in PACKAGES {
        let d = doc(package);
        let want = &d["predict"];
        let n = want["predictions"].as_array().unwrap().len().max(1);
        let image = file(package, want["image"].as_str().unwrap());
        let url = server.url(&format!("/predict?model={package}&top_k={n}"));
        let got =
            ok_json(package, c.post(url).multipart(Form::new().part("image", png_part(&image))).send().await.unwrap())
                .await;
        let preds = got["predictions"].as_array().unwrap();
        assert_eq!(preds.len(), want["predictions"].as_array().unwrap().len(), "{package}: {got}");
        for (g, w) in preds.iter().zip(want["predictions"].as_array().unwrap()) {
            assert_eq!(g["index"], w["index"], "{package}: {got}");
            assert_eq!(g["label"], w["label"], "{package}: {got}");
            assert!((g["score"].as_f64().unwrap() - w["score"].as_f64().unwrap()).abs() <= 1e-5, "{package}: {got}");
        }
        if let Some(e) = want.get("embedding") {
            assert_eq!(got["embedding"]["dim"], e["dim"], "{got}");
            assert!((got["embedding"]["norm"].as_f64().unwrap() - e["norm"].as_f64().unwrap()).abs() <= 1e-4, "{got}");
        }
    }
    server.terminate();
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn over_http_every_refusal_is_a_4xx_that_says_what_to_do() {
    let server = common::Server::start(&["--models-dir", heads().to_str().unwrap(), "--cache-mib", "0"]);
    let c = reqwest::Client::new();
    let photo32 = heads().join("photo_32x24.png");
    let photo16 = heads().join("photo_16x16.png");
    let send = |q: String, form: Form| c.post(server.url(&format!("/explain?format=json&{q}"))).multipart(form).send();
    let img = |p: &Path| Form::new().part("image", png_part(p));
    let vec8 = urlencode("[1,2,3,4,5,6,7,8]");

    let checks: Vec<(&str, String, Form, Vec<&str>, StatusCode)> = vec![
        (
            "region on a classifier",
            "model=binary&region=0,0,8,8".into(),
            img(&photo16),
            vec!["region"],
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "region_mask on a classifier",
            "model=binary".into(),
            img(&photo16).part("region_mask", png_part(&photo16)),
            vec!["region"],
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "reference on a classifier",
            format!("model=binary&reference={vec8}"),
            img(&photo16),
            vec!["reference"],
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "reference_image on a segmenter",
            "model=segmentation".into(),
            img(&photo32).part("reference_image", png_part(&photo16)),
            vec!["reference"],
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "embedding without reference",
            "model=embedding".into(),
            img(&photo16),
            vec!["reference"],
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "reference of the wrong length",
            format!("model=embedding&reference={}", urlencode("[1,2,3]")),
            img(&photo16),
            vec!["8"],
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "reference that is not JSON",
            "model=embedding&reference=one,two".into(),
            img(&photo16),
            vec!["JSON array"],
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "target on an embedding",
            format!("model=embedding&target=0&reference={vec8}"),
            img(&photo16),
            vec!["target"],
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "box past the photo",
            "model=segmentation&region=0,0,40,10".into(),
            img(&photo32),
            vec!["32"],
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "empty box",
            "model=segmentation&region=12,2,4,8".into(),
            img(&photo32),
            vec!["x1 < x2", "x2"],
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "box of three numbers",
            "model=segmentation&region=1,2,3".into(),
            img(&photo32),
            vec!["x1,y1,x2,y2"],
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "mask of another size",
            "model=segmentation".into(),
            img(&photo32).part("region_mask", png_part(&photo16)),
            vec!["32×24", "32x24"],
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "all-zero mask",
            "model=segmentation".into(),
            img(&photo32)
                .part("region_mask", Part::bytes(black_png(32, 24)).file_name("m.png").mime_str("image/png").unwrap()),
            vec!["non-zero", "empty"],
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "box and mask together",
            "model=segmentation&region=0,0,8,8".into(),
            img(&photo32).part("region_mask", png_part(&heads().join("region_mask_32x24.png"))),
            vec!["not both"],
            StatusCode::BAD_REQUEST,
        ),
        (
            "class past the classes",
            "model=segmentation&target=3".into(),
            img(&photo32),
            vec!["3 classes"],
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "gradcam on a segmenter",
            "model=segmentation&method=gradcam".into(),
            img(&photo32),
            vec!["gradcam"],
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "gradcam on an embedding",
            format!("model=embedding&method=gradcam&reference={vec8}"),
            img(&photo16),
            vec!["gradcam"],
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ];
    let mut failures = Vec::new();
    for (what, q, form, words, status) in checks {
        let resp = send(q, form).await.unwrap();
        let got = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        let message = body["error"].as_str().unwrap_or("");
        if got != status {
            failures.push(format!("{what}: {got}, want {status}: {body}"));
        } else if !words.iter().any(|w| message.contains(w)) {
            failures.push(format!("{what}: the message does not say {words:?}: {message}"));
        }
    }
    // A prediction takes no region or reference.
    let resp = c
        .post(server.url("/predict?model=segmentation&top_k=3"))
        .multipart(img(&photo32).part("region_mask", png_part(&heads().join("region_mask_32x24.png"))))
        .send()
        .await
        .unwrap();
    refused("region_mask on /predict", resp, &["prediction"]).await;

    assert_eq!(c.get(server.url("/readyz")).send().await.unwrap().status(), StatusCode::OK);
    let ok = send("model=segmentation&resolution=model".into(), img(&photo32)).await.unwrap();
    let body = ok_json("after the refusals", ok).await;
    assert_eq!(body["explanations"][0]["saliency"]["width"], 16);
    server.terminate();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn black_png(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::new(w, h);
    let mut out = Vec::new();
    image::DynamicImage::ImageRgb8(img).write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png).unwrap();
    out
}

/// The maps of the same explanation at the upload's resolution on a letterboxed model are
/// the content rectangle of the model-resolution map, stretched (the pad never shows).
#[tokio::test(flavor = "multi_thread")]
async fn letterbox_maps_cover_the_photo_only() {
    let case = case_named("letterbox", "top/pytorch_grad_cam");
    let d = json(request_of("letterbox", &case, Resolution::Input), image_of("letterbox", &case)).await.unwrap();
    let s = &d.explanations[0].saliency;
    assert_eq!((s.width, s.height), (24, 11));
    assert_eq!(compare("letterbox input", (s.height, s.width, &s.data), "letterbox", &case["input"]), None);
}

/// With the result cache on, a request that differs only in its region or its reference is
/// not answered with another one's map; a true repeat is a hit with the same map.
#[tokio::test(flavor = "multi_thread")]
async fn the_cache_keeps_regions_and_references_apart() {
    common::init_runtime();
    let config = EngineConfig { workers: 1, max_batch_size: 3, ..EngineConfig::default() };
    let repo = ModelRepository::new(heads(), None, config.clone());
    let cached = Service::start(config, repo, ServiceConfig { cache_mib: 16, ..ServiceConfig::default() }).unwrap();
    let pairs = [
        ("segmentation", ["box/pytorch_grad_cam", "predicted1/pytorch_grad_cam"]),
        ("embedding", ["vector/pytorch_grad_cam", "photo/pytorch_grad_cam"]),
        ("segmentation", ["mask/official", "predicted/official"]),
    ];
    for (package, names) in pairs {
        for (round, name) in names.iter().chain(names.iter()).enumerate() {
            let case = case_named(package, name);
            let rendered = cached
                .explain(request_of(package, &case, Resolution::Model), image_of(package, &case), None)
                .await
                .unwrap_or_else(|e| panic!("{package}/{name}: {e}"));
            let Rendered::Json(d) = rendered else { panic!("asked for JSON") };
            let s = &d.explanations[0].saliency;
            let what = format!("{package}/{name} (cached service, round {round})");
            assert_eq!(compare(&what, (s.height, s.width, &s.data), package, &case["model"]), None);
            let score = case["target"]["score"].as_f64().unwrap() as f32;
            assert!(
                (d.explanations[0].target.score - score).abs() <= 1e-5,
                "{what}: {}",
                d.explanations[0].target.score
            );
            let want =
                if round < 2 { scorecam::service::CacheOutcome::Miss } else { scorecam::service::CacheOutcome::Hit };
            assert_eq!(d.stats.cache, want, "{what}");
        }
    }
}

/// labels.txt of a one-logit binary head may also give both labels (target 0 first).
#[tokio::test(flavor = "multi_thread")]
async fn a_binary_head_takes_two_labels_too() {
    let dir = std::env::temp_dir().join(format!("scorecam-heads-binary2-{}", std::process::id()));
    let pkg = dir.join("binary2");
    std::fs::create_dir_all(&pkg).unwrap();
    for f in ["extractor.onnx", "head.onnx", "model.toml"] {
        std::fs::copy(heads().join("binary").join(f), pkg.join(f)).unwrap();
    }
    std::fs::write(pkg.join("labels.txt"), "healthy\nill\n").unwrap();
    common::init_runtime();
    let config = EngineConfig { workers: 1, max_batch_size: 3, ..EngineConfig::default() };
    let repo = ModelRepository::new(dir.clone(), None, config.clone());
    let service = Service::start(config, repo, ServiceConfig { cache_mib: 0, ..ServiceConfig::default() }).unwrap();
    let want = &doc("binary")["predict"]["predictions"];
    let image = ImageInput::Encoded(bytes(&heads().join("photo_16x16.png")));
    let got = service
        .predict(PredictRequest { model: Some("binary2".into()), top_k: Some(2), ..Default::default() }, image.clone())
        .await
        .unwrap();
    // Without top_k a prediction gives up to 5: both classes of a binary head.
    let default = service.predict(PredictRequest { model: Some("binary2".into()), ..Default::default() }, image).await;
    assert_eq!(default.map(|d| d.predictions.len()).ok(), Some(2), "the default top_k fits a 2-class head");
    let _ = std::fs::remove_dir_all(&dir);
    let labels = ["healthy", "ill"];
    for (g, w) in got.predictions.iter().zip(want.as_array().unwrap()) {
        assert_eq!(g.index as u64, w["index"].as_u64().unwrap());
        assert_eq!(g.label, labels[g.index]);
        assert!((g.score - w["score"].as_f64().unwrap() as f32).abs() <= 1e-5);
    }
    assert_eq!(got.predictions.len(), 2);
}

/// An embedding's explanation has no class predictions, and its target is the reference.
#[tokio::test(flavor = "multi_thread")]
async fn an_embedding_explanation_has_no_class_predictions() {
    let case = case_named("embedding", "vector/official");
    let d = json(request_of("embedding", &case, Resolution::Model), image_of("embedding", &case)).await.unwrap();
    assert!(d.predictions.is_empty(), "{:?}", d.predictions);
    assert_eq!(d.explanations.len(), 1);
    assert_eq!(d.explanations[0].target.index, 0);
}

/// The inference protocol answers an embedding model with its vector (named `embedding`),
/// the numbers the fixture's transcription computed.
#[tokio::test(flavor = "multi_thread")]
async fn v2_answers_an_embedding_models_vector() {
    use base64::Engine as _;
    let server = common::Server::start(&["--models-dir", heads().to_str().unwrap(), "--cache-mib", "0"]);
    let c = reqwest::Client::new();
    let meta: Value = c.get(server.url("/v2/models/embedding")).send().await.unwrap().json().await.unwrap();
    assert_eq!(meta["outputs"][0]["name"], "embedding", "{meta}");
    assert_eq!(meta["outputs"][0]["shape"], serde_json::json!([-1, 8]));
    let b64 = base64::engine::general_purpose::STANDARD.encode(&*bytes(&heads().join("photo_16x16.png")));
    let body = serde_json::json!({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [b64]}]});
    let r: Value =
        c.post(server.url("/v2/models/embedding/infer")).json(&body).send().await.unwrap().json().await.unwrap();
    let out = &r["outputs"][0];
    assert_eq!((out["name"].as_str(), &out["shape"]), (Some("embedding"), &serde_json::json!([1, 8])), "{r}");
    let want = doc("embedding")["embedding"].clone();
    for (g, w) in out["data"].as_array().unwrap().iter().zip(want.as_array().unwrap()) {
        assert!((g.as_f64().unwrap() - w.as_f64().unwrap()).abs() < 1e-5, "{out} vs {want}");
    }
}
