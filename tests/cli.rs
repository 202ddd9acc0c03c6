//! The `scorecam` binary end to end on the real default model.

mod common;

use std::process::{Command, Output};

fn scorecam(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_scorecam"))
        .args(args)
        .current_dir(common::root())
        .env_remove("ORT_DYLIB_PATH")
        .output()
        .expect("binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Peak resident memory of the largest child this process has waited for, in bytes.
fn children_peak_rss() -> u64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given.
    let usage = unsafe {
        assert_eq!(libc::getrusage(libc::RUSAGE_CHILDREN, usage.as_mut_ptr()), 0);
        usage.assume_init()
    };
    usage.ru_maxrss as u64 * 1024
}

#[test]
fn explain_writes_an_overlay_of_the_uploaded_size_within_one_gib() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cat.png");
    let o = scorecam(&["explain", "samples/chelsea.png", "-o", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("class 285 (Egyptian cat)"), "{}", stderr(&o));
    let img = image::open(&out).unwrap();
    let src = image::open(common::root().join("samples/chelsea.png")).unwrap();
    assert_eq!((img.width(), img.height()), (src.width(), src.height()));
    assert_ne!(img.to_rgb8(), src.to_rgb8(), "the overlay changes the image");
    let peak = children_peak_rss();
    assert!(peak < 1 << 30, "peak RSS {peak} bytes");
}

#[test]
fn explain_json_to_stdout_has_the_documented_shape() {
    let o = scorecam(&[
        "explain",
        "samples/chelsea.png",
        "--format",
        "json",
        "--preset",
        "torchcam",
        "--resolution",
        "feature",
        "--target",
        "285",
        "281",
        "-o",
        "-",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    // The summary goes to stderr for every output, standard output included.
    let err = stderr(&o);
    assert!(err.contains("-> standard output: efficientnet-lite0: class 285 (Egyptian cat) p="), "{err}");
    assert!(err.contains(" passes in ") && err.contains("cache off"), "{err}");
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["model"], "efficientnet-lite0");
    assert_eq!(doc["method"], "scorecam");
    assert_eq!(doc["preset"], "torchcam");
    assert_eq!(doc["predictions"][0]["index"], 285);
    let ex = doc["explanations"].as_array().unwrap();
    assert_eq!(ex.len(), 2);
    assert_eq!(ex[1]["target"]["index"], 281);
    assert_eq!(ex[0]["saliency"]["width"], 7);
    assert_eq!(ex[0]["saliency"]["data"].as_array().unwrap().len(), 49);
    for key in ["forward_passes", "skipped_channels", "batch_size"] {
        assert!(doc["stats"][key].as_u64().unwrap() > 0, "{key}");
    }
    assert!(doc["timings_ms"]["total_ms"].as_f64().unwrap() > 0.0);
}

#[test]
fn predict_and_models_print_what_they_should() {
    let o = scorecam(&["predict", "samples/chelsea.png", "--top-k", "3"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("285  0.7992  Egyptian cat"), "{text}");
    assert_eq!(text.lines().count(), 4, "{text}");

    let o = scorecam(&["models"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("efficientnet-lite0") && text.contains("1280×7×7") && text.contains("1000 classes"),
        "{text}"
    );
}

#[test]
fn a_missing_runtime_library_is_one_clear_error() {
    let o = Command::new(env!("CARGO_BIN_EXE_scorecam"))
        .args(["models"])
        .current_dir(common::root())
        .env("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so.1.31.1")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("scripts/setup/ort.sh") && err.contains("/nonexistent"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn bad_input_is_reported_not_panicked() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.png");
    std::fs::write(&junk, b"not an image at all").unwrap();
    let o = scorecam(&["explain", junk.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("unrecognised image format"), "{}", stderr(&o));

    let o = scorecam(&["explain", "samples/chelsea.png", "--target", "1000"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("out of range"), "{}", stderr(&o));

    let o = scorecam(&["explain", "samples/chelsea.png", "--resolution", "feature", "--format", "json"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no feature-resolution map"), "{}", stderr(&o));
}

#[test]
fn evaluate_writes_the_table_the_records_and_the_plot() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    std::fs::create_dir(&images).unwrap();
    let chelsea = common::root().join("samples/chelsea.png");
    std::fs::copy(&chelsea, images.join("a_cat.png")).unwrap();
    let flipped = image::open(&chelsea).unwrap().fliph();
    flipped.save(images.join("b_flipped.png")).unwrap();
    std::fs::write(images.join("notes.txt"), "not an image").unwrap();
    // One labelled image (tabby, 281), one left to the prediction.
    std::fs::write(images.join("index.tsv"), "file\tclass_index\tlabel\na_cat.png\t281\ttabby\n").unwrap();
    let out = dir.path().join("out");
    let o = scorecam(&[
        "evaluate",
        images.to_str().unwrap(),
        "--methods",
        "scorecam@16,ablationcam,centre",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let table = String::from_utf8_lossy(&o.stdout);
    for method in ["| scorecam:official@16 | 2 |", "| ablationcam | 2 |", "| centre | 2 |"] {
        assert!(table.contains(method), "{method} missing from\n{table}");
    }
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    assert_eq!(rows.len(), 2 * 3, "{csv}");
    assert!(rows.iter().any(|r| r.starts_with("\"a_cat.png\",ablationcam,281,label,")), "{csv}");
    assert!(rows.iter().any(|r| r.starts_with("\"b_flipped.png\",ablationcam,285,predicted,")), "{csv}");
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    let summary = json["summary"].as_array().unwrap();
    assert_eq!(summary.len(), 3);
    // The approximation is compared with exact Score-CAM; the others are not.
    assert!(summary[0]["pearson"].as_f64().is_some_and(|p| (-1.0..=1.0).contains(&p)));
    assert!(summary[1]["pearson"].is_null());
    assert_eq!(summary[1]["forward_passes"].as_f64(), Some(1.0), "ablation runs one clean full pass");
    assert!(summary[1]["head_passes"].as_f64().unwrap() > 0.0);
    assert_eq!(summary[0]["deletion_curve"].as_array().unwrap().len(), 21);
    // Two images: every mean has its bootstrap interval, and every method is paired with
    // the first (no exact Score-CAM in this run), image by image.
    let ci = &summary[0]["ci95"]["average_drop_pct"];
    assert!(ci["low"].as_f64().unwrap() <= summary[0]["average_drop_pct"].as_f64().unwrap(), "{ci}");
    let paired = json["paired"].as_array().unwrap();
    assert_eq!(paired.len(), 2);
    assert_eq!(
        (paired[0]["method"].as_str(), paired[0]["reference"].as_str()),
        (Some("ablationcam"), Some("scorecam:official@16"))
    );
    assert_eq!(paired[1]["images"], 2);
    let md = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(md.contains("| centre − scorecam:official@16 | 2 |"), "{md}");
    let plot = image::open(out.join("curves.png")).unwrap();
    assert!(plot.width() > 1000 && plot.height() > 400);
}

#[test]
fn explain_takes_a_method_and_reports_its_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("a.png");
    let o = scorecam(&[
        "explain",
        "samples/chelsea.png",
        "--method",
        "ablationcam",
        "--metrics",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("class 285 (Egyptian cat)") && err.contains("1 passes"), "{err}");
    assert!(err.contains("average drop") && err.contains("deletion AUC"), "{err}");
    // A parameter of another method is refused before any work.
    let o = scorecam(&["explain", "samples/chelsea.png", "--method", "ablationcam", "--steps", "3"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("`steps` does not apply to method `ablationcam`"), "{}", stderr(&o));
}

/// `--score-threshold` and `--iou-threshold` reach a detector's predictions: the generated
/// torchvision-style package (tests/fixtures/models/detect/torchvision/reference/cases.json)
/// finds 2 detections at its model.toml's thresholds and more at a lower score threshold
/// with a stricter NMS (every detection's box listed with its class and score).
#[test]
fn predict_takes_a_detectors_thresholds() {
    let photo = "tests/fixtures/models/detect/photo_40x20.png";
    let run = |extra: &[&str]| {
        let mut args = vec!["--models-dir", "tests/fixtures/models/detect", "predict", photo, "--model", "torchvision"];
        args.extend_from_slice(extra);
        let o = scorecam(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        String::from_utf8_lossy(&o.stdout).lines().filter(|l| l.trim_start().starts_with("box ")).count()
    };
    let cases: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(common::root().join("tests/fixtures/models/detect/torchvision/reference/cases.json"))
            .unwrap(),
    )
    .unwrap();
    let want = cases["predict"]["detections"].as_array().unwrap().len();
    assert_eq!(run(&[]), want);
    let loose = run(&["--score-threshold", "0.1", "--iou-threshold", "0.3", "--top-k", "18"]);
    assert!(loose > want, "{loose} detections at score 0.1, {want} at the package's threshold");
    let o = scorecam(&["--models-dir", "tests/fixtures/models/detect", "predict", photo, "--score-threshold", "2"]);
    assert!(!o.status.success() && stderr(&o).contains("score_threshold"), "{}", stderr(&o));
}
