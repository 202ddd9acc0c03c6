//! Dataset runs of `scorecam explain` on the tiny test model: a stopped run resumes to the
//! index an uninterrupted run writes, shards cover a folder once, and client mode against
//! a server that answers 429 still explains every image exactly once.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Images to explain: small photos of varied content, in two sub-folders, and one file
/// that is not an image.
fn dataset(dir: &Path, n: usize) -> PathBuf {
    let root = dir.join("in");
    for i in 0..n {
        let sub = root.join(if i % 2 == 0 { "even" } else { "odd" });
        std::fs::create_dir_all(&sub).unwrap();
        let img = image::RgbImage::from_fn(40 + i as u32, 32, |x, y| {
            image::Rgb([(x * 7 + i as u32 * 31) as u8, (y * 5 + i as u32 * 17) as u8, ((x ^ y) * 3) as u8])
        });
        img.save(sub.join(format!("img{i:02}.png"))).unwrap();
    }
    std::fs::write(root.join("odd/broken.png"), b"not a png").unwrap();
    root
}

fn scorecam(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_scorecam"));
    cmd.args(["--models-dir", "tests/fixtures/models", "explain"]).args(args).current_dir(common::root());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The index's records without their wall times (which differ run to run).
fn index(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().remove("ms");
            v
        })
        .collect()
}

fn paths(records: &[serde_json::Value]) -> Vec<String> {
    records.iter().map(|r| r["path"].as_str().unwrap().to_string()).collect()
}

#[test]
#[cfg(feature = "fault-injection")]
fn a_stopped_run_resumes_to_the_index_of_an_uninterrupted_one() {
    let dir = tempfile::tempdir().unwrap();
    let input = dataset(dir.path(), 12);
    let input = input.to_str().unwrap();
    let (whole, stopped) = (dir.path().join("whole"), dir.path().join("stopped"));
    let outputs = ["--model", "tiny", "--outputs", "overlay,npy", "--concurrency", "3"];

    let o = scorecam(&[&[input, "-o", whole.to_str().unwrap()], &outputs[..]].concat(), &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let want = index(&whole.join("index.jsonl"));
    assert_eq!(want.len(), 13);
    assert_eq!(want.iter().filter(|r| r["status"] == "ok").count(), 12);
    let broken = want.iter().find(|r| r["path"] == "odd/broken.png").unwrap();
    assert_eq!(broken["status"], "error");
    assert!(broken["error"].as_str().unwrap().contains("unrecognised image format"), "{broken}");

    // Killed after five images: what a stop leaves (some outputs, a partial index).
    let args = [&[input, "-o", stopped.to_str().unwrap()], &outputs[..]].concat();
    let o = scorecam(&args, &[("SCORECAM_FAULT_STOP_AFTER", "5")]);
    assert!(!o.status.success(), "the run was meant to be killed: {}", stderr(&o));
    let partial = std::fs::read_to_string(stopped.join("index.jsonl")).unwrap();
    assert_eq!(partial.lines().count(), 5, "{partial}");

    // Without --resume the index is not overwritten.
    let o = scorecam(&args, &[]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("pass --resume"), "{}", stderr(&o));

    let o = scorecam(&[&args[..], &["--resume"]].concat(), &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let skipped = partial.lines().filter(|l| l.contains("\"status\":\"ok\"")).count();
    assert!(stderr(&o).contains(&format!("{skipped} already explained")), "{}", stderr(&o));
    assert_eq!(index(&stopped.join("index.jsonl")), want, "resumed index differs from the uninterrupted one");
    for r in want.iter().filter(|r| r["status"] == "ok") {
        for out in r["outputs"].as_array().unwrap() {
            let out = out.as_str().unwrap();
            let (a, b) = (std::fs::read(whole.join(out)).unwrap(), std::fs::read(stopped.join(out)).unwrap());
            assert!(a == b, "{out} differs between the two runs");
        }
    }
    // No temporary file survives the resumed run's own writes.
    let leftovers: Vec<_> = walk(&stopped).into_iter().filter(|p| p.to_string_lossy().ends_with(".tmp")).collect();
    assert!(leftovers.len() <= 3, "at most the killed run's in-flight files: {leftovers:?}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() { out.extend(walk(&p)) } else { out.push(p) }
    }
    out
}

#[test]
fn two_shards_cover_a_folder_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let input = dataset(dir.path(), 16);
    let out = dir.path().join("out");
    let mut seen = Vec::new();
    for shard in ["0/2", "1/2"] {
        let args = [input.to_str().unwrap(), "--model", "tiny", "--outputs", "npy", "-o", out.to_str().unwrap()];
        let o = scorecam(&[&args[..], &["--shard", shard]].concat(), &[]);
        assert!(o.status.success(), "{}", stderr(&o));
        let name = format!("index-{}-of-2.jsonl", &shard[..1]);
        let records = index(&out.join(name));
        assert!(!records.is_empty(), "shard {shard} got nothing of 17 files");
        seen.extend(paths(&records));
    }
    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "an image was in both shards: {seen:?}");
    assert_eq!(seen.len(), 17, "every file once: {seen:?}");

    // A plain resume over the shards' folder redoes none of their work: only the file that
    // failed is tried again, and no output is rewritten.
    let outputs: Vec<(PathBuf, std::time::SystemTime)> = walk(&out)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "npy"))
        .map(|p| (p.clone(), std::fs::metadata(&p).unwrap().modified().unwrap()))
        .collect();
    assert_eq!(outputs.len(), 16);
    let args = [input.to_str().unwrap(), "--model", "tiny", "--outputs", "npy", "-o", out.to_str().unwrap()];
    let o = scorecam(&[&args[..], &["--resume"]].concat(), &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("16 already explained; 1 to go"), "{}", stderr(&o));
    for (path, modified) in &outputs {
        assert_eq!(std::fs::metadata(path).unwrap().modified().unwrap(), *modified, "{} rewritten", path.display());
    }
    assert_eq!(paths(&index(&out.join("index.jsonl"))), ["odd/broken.png"], "the resume ran only the failure");

    // One index from the three: every image once, the explained ones as the shards wrote them.
    let o = scorecam(&["--merge-index", "-o", out.to_str().unwrap()], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("16 explained, 1 failed"), "{}", stderr(&o));
    let merged = index(&out.join("index.jsonl"));
    let mut shards: Vec<serde_json::Value> =
        ["index-0-of-2.jsonl", "index-1-of-2.jsonl"].iter().flat_map(|n| index(&out.join(n))).collect();
    shards.sort_by_key(|r| r["path"].as_str().unwrap().to_string());
    assert_eq!(paths(&merged), paths(&shards), "one record per image, in name order");
    for (m, s) in merged.iter().zip(&shards).filter(|(_, s)| s["status"] == "ok") {
        assert_eq!(m, s, "an explained image keeps its shard's record");
    }
}

#[test]
fn client_mode_through_429s_explains_every_image_once_with_the_local_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let input = dataset(dir.path(), 12);
    // One job running and one queued: eight clients in flight must meet 429s.
    let server = common::Server::start(&[
        "--models-dir",
        "tests/fixtures/models",
        "--max-concurrent-jobs",
        "1",
        "--max-queued-jobs",
        "1",
    ]);
    let (remote, local) = (dir.path().join("remote"), dir.path().join("local"));
    let common_args = ["--model", "tiny", "--outputs", "overlay,npy"];
    let o = scorecam(
        &[
            &[input.to_str().unwrap(), "-o", remote.to_str().unwrap(), "--server", &server.base, "--concurrency", "8"],
            &common_args[..],
        ]
        .concat(),
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let records = index(&remote.join("index.jsonl"));
    assert_eq!(records.iter().filter(|r| r["status"] == "ok").count(), 12, "{records:?}");

    let metrics = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(async { reqwest::get(server.url("/metrics")).await.unwrap().text().await.unwrap() });
    let count = |status: &str| -> u64 {
        metrics
            .lines()
            .find(|l| l.starts_with(&format!("scorecam_http_requests_total{{route=\"/explain\",status=\"{status}\"}}")))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0)
    };
    assert!(count("429") > 0, "no 429 happened, so nothing was retried:\n{metrics}");
    assert_eq!(count("200"), 12, "each image explained exactly once (the broken file is never sent)");

    let o = scorecam(&[&[input.to_str().unwrap(), "-o", local.to_str().unwrap()], &common_args[..]].concat(), &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(records, index(&local.join("index.jsonl")), "client mode and local mode record the same");
    for r in records.iter().filter(|r| r["status"] == "ok") {
        for out in r["outputs"].as_array().unwrap() {
            let out = out.as_str().unwrap();
            assert!(std::fs::read(remote.join(out)).unwrap() == std::fs::read(local.join(out)).unwrap(), "{out}");
        }
    }
}
