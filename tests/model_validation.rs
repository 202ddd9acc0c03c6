//! Model package validation against real ONNX Runtime sessions: the tiny generated package
//! loads, and every broken copy of it is refused with an error naming the file at fault.
//!
//! Needs the ONNX Runtime library that `scripts/setup/ort.sh` fetches into `.ort/cpu/`.

use std::fs;
use std::path::{Path, PathBuf};

use scorecam::engine::EngineConfig;
use scorecam::model::{ModelError, ModelPackage};
use scorecam::service::{ModelRepository, ServiceError};
use tempfile::TempDir;

const PACKAGE_FILES: [&str; 4] = ["extractor.onnx", "head.onnx", "labels.txt", "model.toml"];

fn models() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models")
}

fn init_ort() {
    let (lib, _) = scorecam::runtime::resolve_library(None, "cpu").unwrap();
    scorecam::runtime::init(&lib).unwrap();
}

/// A copy of `tiny/` at `<root>/<name>`.
fn copy_tiny(root: &Path, name: &str) -> PathBuf {
    let dir = root.join(name);
    fs::create_dir_all(&dir).unwrap();
    for f in PACKAGE_FILES {
        fs::copy(models().join("tiny").join(f), dir.join(f)).unwrap();
    }
    dir
}

/// A temporary folder holding one copy of `tiny/` named `tiny`, for mutating.
fn scratch() -> (TempDir, PathBuf) {
    init_ort();
    let tmp = tempfile::tempdir().unwrap();
    let dir = copy_tiny(tmp.path(), "tiny");
    (tmp, dir)
}

fn replace_with_variant(dir: &Path, file: &str, variant: &str) {
    fs::copy(models().join("variants").join(variant), dir.join(file)).unwrap();
}

fn edit_manifest(dir: &Path, from: &str, to: &str) {
    let path = dir.join("model.toml");
    let text = fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "model.toml has no `{from}`");
    fs::write(&path, text.replacen(from, to, 1)).unwrap();
}

fn load_err(dir: &Path) -> ModelError {
    match ModelPackage::load(dir) {
        Ok(p) => panic!("{} loaded although it is broken: {:?}", dir.display(), p.info),
        Err(e) => e,
    }
}

/// Asserts the error's message starts with the path of `file` in `dir` (the file at
/// fault) and contains every one of `needles`. Returns the message.
fn assert_names(err: &ModelError, dir: &Path, file: &str, needles: &[&str]) -> String {
    let msg = err.to_string();
    let path = dir.join(file).display().to_string();
    assert!(msg.starts_with(&path), "expected the error to name {path}, got: {msg}");
    for n in needles {
        assert!(msg.contains(n), "expected `{n}` in: {msg}");
    }
    msg
}

#[test]
fn the_tiny_package_loads_with_its_shapes() {
    let (_tmp, dir) = scratch();
    let p = ModelPackage::load(&dir).unwrap();
    assert_eq!(p.name, "tiny");
    assert_eq!(p.dir, dir);
    assert_eq!(p.info.input_chw, [3, 16, 16]);
    assert_eq!(p.info.feature_khw, [6, 4, 4]);
    assert_eq!(p.info.classes, 5);
    assert_eq!(p.labels, ["zero", "one", "two", "three", "four"]);
    assert_eq!(p.label(4), "four");
    assert_eq!(p.label(5), "", "out of range is empty, not a panic");
    assert_eq!((p.manifest.input.width, p.manifest.input.height), (16, 16));
    assert_eq!(p.extractor.path, dir.join("extractor.onnx"));
    assert_eq!(p.head.path, dir.join("head.onnx"));
}

#[test]
fn the_fixture_package_loads_in_place() {
    init_ort();
    let p = ModelPackage::load(&models().join("tiny")).unwrap();
    assert_eq!(p.info.classes, 5);
}

#[test]
fn labels_with_a_trailing_newline_or_crlf_still_load() {
    let (_tmp, dir) = scratch();
    fs::write(dir.join("labels.txt"), "zero\r\none\r\ntwo\r\nthree\r\nfour\r\n").unwrap();
    let p = ModelPackage::load(&dir).unwrap();
    assert_eq!(p.labels, ["zero", "one", "two", "three", "four"]);
}

#[test]
fn a_head_with_7_input_channels_does_not_match_the_extractor() {
    let (_tmp, dir) = scratch();
    replace_with_variant(&dir, "head.onnx", "head_7ch.onnx");
    let e = load_err(&dir);
    assert!(matches!(&e, ModelError::Mismatch { path, .. } if *path == dir.join("head.onnx")), "{e:?}");
    // The head's input [?×7×4×4] against the extractor's output [?×6×4×4].
    assert_names(&e, &dir, "head.onnx", &["7×4×4", "6×4×4"]);
}

#[test]
fn an_extractor_with_a_fixed_batch_other_than_one_is_refused() {
    let (_tmp, dir) = scratch();
    replace_with_variant(&dir, "extractor.onnx", "extractor_batch2.onnx");
    let e = load_err(&dir);
    assert!(matches!(&e, ModelError::Mismatch { path, .. } if *path == dir.join("extractor.onnx")), "{e:?}");
    assert_names(&e, &dir, "extractor.onnx", &["batch", "2×3×16×16"]);
}

/// A graph exported for one image (batch fixed at 1) loads, and the runtime will run it
/// image by image; the dynamic pair does not.
#[test]
fn an_extractor_with_its_batch_fixed_at_one_runs_one_image_per_run() {
    let (_tmp, dir) = scratch();
    assert!(!ModelPackage::load(&dir).unwrap().info.one_image_per_run);
    replace_with_variant(&dir, "extractor.onnx", "extractor_static_batch.onnx");
    let package = ModelPackage::load(&dir).unwrap();
    assert!(package.info.one_image_per_run && package.session_shapes().one_image_per_run);
}

#[test]
fn a_head_with_3_classes_does_not_match_5_labels() {
    let (_tmp, dir) = scratch();
    replace_with_variant(&dir, "head.onnx", "head_3classes.onnx");
    let e = load_err(&dir);
    assert!(matches!(&e, ModelError::Mismatch { path, .. } if *path == dir.join("labels.txt")), "{e:?}");
    assert_names(&e, &dir, "labels.txt", &["5 labels", "3 classes"]);
}

#[test]
fn six_labels_for_five_classes_are_refused() {
    let (_tmp, dir) = scratch();
    fs::write(dir.join("labels.txt"), "zero\none\ntwo\nthree\nfour\nfive").unwrap();
    let e = load_err(&dir);
    assert_names(&e, &dir, "labels.txt", &["6 labels", "5 classes"]);
}

#[test]
fn labels_with_an_empty_line_are_refused() {
    for text in ["zero\none\n\ntwo\nthree", "zero\none\ntwo\nthree\n   \nfour", "", "\n"] {
        let (_tmp, dir) = scratch();
        fs::write(dir.join("labels.txt"), text).unwrap();
        let e = load_err(&dir);
        assert!(matches!(&e, ModelError::Labels { .. }), "{text:?}: {e:?}");
        assert_names(&e, &dir, "labels.txt", &["label"]);
    }
}

#[test]
fn missing_labels_are_refused() {
    let (_tmp, dir) = scratch();
    fs::remove_file(dir.join("labels.txt")).unwrap();
    let e = load_err(&dir);
    assert!(matches!(&e, ModelError::Io { .. }), "{e:?}");
    assert_names(&e, &dir, "labels.txt", &[]);
}

#[test]
fn a_manifest_width_that_differs_from_the_graph_is_refused() {
    let (_tmp, dir) = scratch();
    edit_manifest(&dir, "width = 16", "width = 32");
    let e = load_err(&dir);
    assert!(matches!(&e, ModelError::Mismatch { path, .. } if *path == dir.join("extractor.onnx")), "{e:?}");
    // The graph's 16×16 against the manifest's height 16 × width 32.
    let msg = assert_names(&e, &dir, "extractor.onnx", &["16×16", "model.toml", "32"]);
    assert!(msg.contains("16×32"), "the manifest's size is given as H×W: {msg}");
}

#[test]
fn a_manifest_height_that_differs_from_the_graph_is_refused() {
    let (_tmp, dir) = scratch();
    edit_manifest(&dir, "height = 16", "height = 8");
    let e = load_err(&dir);
    assert_names(&e, &dir, "extractor.onnx", &["16×16", "8×16"]);
}

#[test]
fn a_missing_manifest_is_refused() {
    let (_tmp, dir) = scratch();
    fs::remove_file(dir.join("model.toml")).unwrap();
    let e = load_err(&dir);
    assert!(matches!(&e, ModelError::Io { .. }), "{e:?}");
    assert_names(&e, &dir, "model.toml", &[]);
}

#[test]
fn an_invalid_manifest_is_refused() {
    for (what, text) in [
        ("not TOML", "this is = = not toml ["),
        ("empty", ""),
        (
            "missing [input]",
            "description = \"d\"\nsource = \"s\"\nlicense = \"l\"\n[target_layer]\ndescription = \"t\"\n",
        ),
    ] {
        let (_tmp, dir) = scratch();
        fs::write(dir.join("model.toml"), text).unwrap();
        let e = load_err(&dir);
        assert!(matches!(&e, ModelError::Manifest { .. }), "{what}: {e:?}");
        assert_names(&e, &dir, "model.toml", &["invalid manifest"]);
    }
}

#[test]
fn a_manifest_with_bad_values_is_refused() {
    let (_tmp, dir) = scratch();
    edit_manifest(&dir, "std = [0.25, 0.25, 0.25]", "std = [0.25, 0.0, 0.25]");
    let e = load_err(&dir);
    assert_names(&e, &dir, "model.toml", &["input.std"]);
}

#[test]
fn a_missing_extractor_is_refused() {
    let (_tmp, dir) = scratch();
    fs::remove_file(dir.join("extractor.onnx")).unwrap();
    let e = load_err(&dir);
    assert!(matches!(&e, ModelError::Io { .. }), "{e:?}");
    assert_names(&e, &dir, "extractor.onnx", &[]);
}

#[test]
fn a_garbage_extractor_is_refused() {
    let (_tmp, dir) = scratch();
    fs::write(dir.join("extractor.onnx"), b"this is not an ONNX protobuf \x00\x01\x02\xff\xfe").unwrap();
    let e = load_err(&dir);
    assert!(matches!(&e, ModelError::Graph { .. }), "{e:?}");
    assert_names(&e, &dir, "extractor.onnx", &["ONNX"]);
}

#[test]
fn an_empty_extractor_is_refused() {
    let (_tmp, dir) = scratch();
    fs::write(dir.join("extractor.onnx"), b"").unwrap();
    let e = load_err(&dir);
    assert_names(&e, &dir, "extractor.onnx", &[]);
}

#[test]
fn a_missing_or_garbage_head_is_refused() {
    let (_tmp, dir) = scratch();
    fs::remove_file(dir.join("head.onnx")).unwrap();
    assert_names(&load_err(&dir), &dir, "head.onnx", &[]);
    fs::write(dir.join("head.onnx"), b"\x08\x07garbage").unwrap();
    assert_names(&load_err(&dir), &dir, "head.onnx", &[]);
}

#[test]
fn extractor_and_head_swapped_are_refused() {
    let (_tmp, dir) = scratch();
    fs::rename(dir.join("extractor.onnx"), dir.join("tmp.onnx")).unwrap();
    fs::rename(dir.join("head.onnx"), dir.join("extractor.onnx")).unwrap();
    fs::rename(dir.join("tmp.onnx"), dir.join("head.onnx")).unwrap();
    let e = load_err(&dir);
    // The "extractor" now has a 6-channel input and a rank-2 output.
    assert_names(&e, &dir, "extractor.onnx", &[]);
}

// ---------------------------------------------------------------------------------------
// Repository: the models folder as the server sees it
// ---------------------------------------------------------------------------------------

fn repository(dir: &Path) -> ModelRepository {
    ModelRepository::new(dir.to_path_buf(), Some("a".into()), EngineConfig::default())
}

fn names(repo: &ModelRepository) -> Vec<(String, &'static str)> {
    repo.list().into_iter().map(|s| (s.name, s.state)).collect()
}

#[test]
fn the_repository_lists_every_package_sorted_by_name() {
    init_ort();
    let tmp = tempfile::tempdir().unwrap();
    // Created out of order, so a sorted result is the repository's doing.
    copy_tiny(tmp.path(), "b");
    copy_tiny(tmp.path(), "a");
    // Neither a folder without model.toml nor a stray file is a package.
    fs::create_dir(tmp.path().join("notes")).unwrap();
    fs::write(tmp.path().join("notes/readme.txt"), "not a model").unwrap();
    fs::write(tmp.path().join("model.toml"), "stray").unwrap();
    let repo = repository(tmp.path());
    repo.refresh().unwrap();
    assert_eq!(names(&repo), [("a".to_string(), "ready"), ("b".to_string(), "ready")]);
    assert_eq!(repo.get("b").unwrap().package.name, "b");
    assert_eq!(repo.get("a").unwrap().package.dir, tmp.path().join("a"));
    assert_eq!(repo.default_name().as_deref(), Some("a"));
    let e = repo.get("nope").unwrap_err();
    assert!(matches!(&e, ServiceError::UnknownModel { name, .. } if name == "nope"), "{e:?}");
    assert!(e.to_string().contains("nope") && e.to_string().contains("a, b"), "{e}");
    // Names are only compared, never turned into paths.
    assert!(repo.get("../a").is_err());
    assert!(repo.get("").is_err());
}

#[test]
fn a_folder_without_packages_has_no_ready_model() {
    init_ort();
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir(tmp.path().join("empty")).unwrap();
    let repo = repository(tmp.path());
    assert!(repo.refresh().unwrap().is_empty());
    assert!(repo.ready().is_empty());
    assert_eq!(repo.default_name(), None);
}

#[test]
fn a_missing_folder_is_named() {
    init_ort();
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no-such-folder");
    let e = repository(&missing).refresh().unwrap_err();
    assert!(e.to_string().contains(&missing.display().to_string()), "{e}");
}

#[test]
fn one_broken_package_is_reported_and_the_others_serve() {
    init_ort();
    let tmp = tempfile::tempdir().unwrap();
    copy_tiny(tmp.path(), "a");
    let b = copy_tiny(tmp.path(), "b");
    replace_with_variant(&b, "head.onnx", "head_3classes.onnx");
    let repo = repository(tmp.path());
    let changes = repo.refresh().unwrap();
    assert_eq!((changes.loaded, changes.failed), (vec!["a".to_string()], vec!["b".to_string()]));
    assert_eq!(names(&repo), [("a".to_string(), "ready"), ("b".to_string(), "failed")]);
    let error = repo.list().into_iter().find(|s| s.name == "b").and_then(|s| s.error).unwrap();
    assert!(error.starts_with(&b.join("labels.txt").display().to_string()) && error.contains("3 classes"), "{error}");
    let e = repo.get("b").unwrap_err();
    assert!(matches!(&e, ServiceError::ModelUnavailable { .. }) && e.to_string().contains("3 classes"), "{e}");
    assert!(repo.get("a").is_ok());
}

#[test]
fn a_refresh_picks_up_added_changed_and_removed_packages() {
    init_ort();
    let tmp = tempfile::tempdir().unwrap();
    copy_tiny(tmp.path(), "a");
    let repo = repository(tmp.path());
    repo.refresh().unwrap();
    let first = repo.get("a").unwrap();
    assert!(repo.refresh().unwrap().is_empty(), "nothing changed, nothing reloaded");
    assert_eq!(repo.get("a").unwrap().id, first.id);

    copy_tiny(tmp.path(), "b");
    // A changed package (its labels rewritten) is loaded again as a new version.
    let labels = tmp.path().join("a/labels.txt");
    let text = fs::read_to_string(&labels).unwrap().replace("zero", "nought");
    fs::write(&labels, text).unwrap();
    let changes = repo.refresh().unwrap();
    assert_eq!(changes.loaded, ["a", "b"]);
    let second = repo.get("a").unwrap();
    assert_ne!(second.id, first.id);
    assert_eq!(second.package.labels[0], "nought");
    assert_eq!(repo.list()[0].version, 2);

    fs::remove_dir_all(tmp.path().join("b")).unwrap();
    assert_eq!(repo.refresh().unwrap().removed, ["b"]);
    assert!(matches!(repo.get("b"), Err(ServiceError::UnknownModel { .. })));
}

#[test]
fn sessions_come_from_the_graphs_read_at_load_not_from_the_folder() {
    let (_tmp, dir) = scratch();
    let p = ModelPackage::load(&dir).unwrap();
    let open = || {
        scorecam::runtime::ModelSessions::open(
            &p.extractor,
            &p.head,
            p.session_shapes(),
            &scorecam::runtime::SessionConfig::default(),
            scorecam::runtime::ProviderKind::Cpu,
        )
    };
    let on_disk: u64 = ["extractor.onnx", "head.onnx"].iter().map(|f| fs::metadata(dir.join(f)).unwrap().len()).sum();
    let input = vec![0.25f32; 3 * 16 * 16];
    let before = open().unwrap().model_output(&input, 1).unwrap();
    // The package removed while the load still serves: a worker that opens it now (a
    // replacement, or one running its first batch of it) runs what was loaded.
    fs::remove_dir_all(&dir).unwrap();
    let after = open().expect("opened from the bytes read at load").model_output(&input, 1).unwrap();
    assert_eq!(before, after);
    assert_eq!(p.weights_bytes(), on_disk);
}
