//! `cargo bench --bench scorecam [-- --quick] [--images DIR] [--out FILE]`
//!
//! 1. raw throughput of the full model (extractor + head) at batch 1, 8, 16, 32, 64;
//! 2. Score-CAM end to end per preset: time, forward passes, overhead ratio;
//! 3. the HTTP server on loopback: explanations per minute and latency percentiles at 1,
//!    2, 4 and 8 concurrent clients, /predict throughput, the server's peak RSS;
//! 4. (only with `--parts 4`) anytime fidelity: per photo one exact `official` run, then
//!    the maps a pass budget gives (most important channels first) beside Faster
//!    Score-CAM's (`max_channels`) at the same pass counts, both against the exact map;
//!    `--plot FILE` draws mean fidelity against the share of passes;
//! 5. (only with `--parts 5`) the overhead of exact Score-CAM against the strictest floor:
//!    ONNX Runtime alone on real masked inputs, the best of N sessions × 1 thread and 1
//!    session × N threads at every batch size, measured in rounds interleaved with the
//!    explanations (`--rounds R`, default 3), so drift between minutes hits both alike.
//!
//! `--quick` runs one tiny iteration of everything; so does the binary when `cargo test
//! --all-targets` runs it (CI's smoke test, so the benchmark never rots).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use scorecam::cam::Preset;
use scorecam::engine::EngineConfig;
use scorecam::model::ModelPackage;
use scorecam::runtime::{self, ModelSessions, ProviderKind, SessionConfig};
use scorecam::service::{
    ExplainRequest, ImageInput, ModelRepository, OutputFormat, Rendered, Rendering, Service, ServiceConfig, TargetSpec,
};

struct Options {
    quick: bool,
    /// The quick run uses the tiny generated test model, so it takes seconds.
    models: PathBuf,
    images: Vec<PathBuf>,
    out: Option<PathBuf>,
    threads: usize,
    workers: usize,
    batch: usize,
    spinning: bool,
    /// Run only these parts (1, 2, 3); all by default.
    parts: Vec<u8>,
    /// The model parts 1 and 2 measure (default: the first).
    model: Option<String>,
    /// Part 4's plot (PNG).
    plot: Option<PathBuf>,
    /// Part 4's photo count (default: every photo); part 5's photos per round (default 3).
    photos: Option<usize>,
    /// Part 5's rounds.
    rounds: usize,
}

fn options() -> Options {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).cloned();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    // A folder of photos (--images or SCORECAM_IMAGES); none: the reference photos below.
    let dir = value("--images").or_else(|| std::env::var("SCORECAM_IMAGES").ok()).unwrap_or_default();
    let mut images: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "JPEG" || e == "png"))
                .collect()
        })
        .unwrap_or_default();
    images.sort();
    if images.is_empty() {
        // Bundled fall-back: the reference photos.
        images = ["chelsea", "goldfish", "golden_retriever", "airliner"]
            .iter()
            .map(|n| root.join(format!("tests/fixtures/reference/{n}.png")))
            .collect();
    }
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    // `cargo bench` passes --bench; anything else (cargo test) is a smoke run.
    let quick = args.iter().any(|a| a == "--quick") || !args.iter().any(|a| a == "--bench");
    Options {
        quick,
        models: value("--models")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join(if quick { "tests/fixtures/models" } else { "models" })),
        images,
        out: value("--out").map(PathBuf::from),
        // The service's defaults: a worker per core, one thread each, batches of 4.
        threads: value("--threads").and_then(|t| t.parse().ok()).unwrap_or(1),
        workers: value("--workers").and_then(|t| t.parse().ok()).unwrap_or(cores),
        batch: value("--batch").and_then(|t| t.parse().ok()).unwrap_or(4),
        spinning: args.iter().any(|a| a == "--spinning"),
        model: value("--model"),
        plot: value("--plot").map(PathBuf::from),
        photos: value("--photos").and_then(|n| n.parse().ok()),
        rounds: value("--rounds").and_then(|n| n.parse().ok()).unwrap_or(3),
        parts: value("--parts")
            .map(|p| p.bytes().filter(u8::is_ascii_digit).map(|b| b - b'0').collect())
            .unwrap_or(vec![1, 2, 3]),
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").parse::<u64>().unwrap_or(0) / 1024 / 1024)
        })
        .unwrap_or(0);
    format!(
        "CPU: {cpu}; {cores} cores available; {mem} GiB RAM; ONNX Runtime {}; {}",
        runtime::ORT_VERSION,
        std::env::consts::ARCH
    )
}

/// Images per second of the full model with the service's thread settings: `workers`
/// sessions side by side, each with `threads` intra-op threads, each running batches.
fn raw_throughput(model: &ModelPackage, opts: &Options, out: &mut String) -> f64 {
    let (threads, workers, quick) = (opts.threads, opts.workers, opts.quick);
    let cfg = SessionConfig { intra_threads: threads, spinning: opts.spinning, ..SessionConfig::default() };
    let mut sessions: Vec<ModelSessions> = (0..workers)
        .map(|_| {
            ModelSessions::open(&model.extractor, &model.head, model.session_shapes(), &cfg, ProviderKind::Cpu).unwrap()
        })
        .collect();
    let [c, h, w] = model.info.input_chw;
    let per = c * h * w;
    // A real photo, preprocessed, repeated: synthetic values can hit slow paths (denormals)
    // that real inputs do not, which would make the floor unfair.
    let photo = image::open(&opts.images[0]).unwrap().into_rgb8();
    let one = scorecam::imaging::preprocess(&photo, &model.manifest.input).tensor;
    let input: Vec<f32> = one.iter().copied().cycle().take(per * 64).collect();
    let _ = writeln!(
        out,
        "\n## 1. Raw model throughput (extractor + head; {workers} session(s) in parallel × {threads} intra-op threads)\n"
    );
    let _ = writeln!(out, "| batch | images/s | ms/batch |\n|---:|---:|---:|");
    let mut best: f64 = 0.0;
    for batch in [1usize, 2, 4, 8, 16, 32, 64] {
        let rounds = if quick { 1 } else { (384 / batch / workers).max(4) };
        let x = &input[..per * batch];
        let t = Instant::now();
        std::thread::scope(|scope| {
            for s in sessions.iter_mut() {
                scope.spawn(move || {
                    s.model_output(x, batch).unwrap(); // warm-up for this shape, inside the timing only once
                    for _ in 0..rounds {
                        s.model_output(x, batch).unwrap();
                    }
                });
            }
        });
        let secs = t.elapsed().as_secs_f64();
        let ips = ((rounds + 1) * batch * workers) as f64 / secs;
        best = best.max(ips);
        let _ = writeln!(out, "| {batch} | {ips:.1} | {:.1} |", secs * 1e3 / (rounds + 1) as f64);
    }
    best
}

async fn scorecam_end_to_end(service: &Service, name: &str, opts: &Options, best: f64, out: &mut String) {
    let (images, quick) = (&opts.images, opts.quick);
    let n = if quick { 1 } else { images.len().min(10) };
    let batch = service.ready_model(name).map(|(_, d)| d.batch_size).unwrap_or_default();
    let _ = writeln!(out, "\n## 2. Score-CAM end to end ({n} images, batch {batch})\n");
    let _ = writeln!(out, "| preset | mean s/image | mean forward passes | overhead ratio |\n|---|---:|---:|---:|");
    for preset in Preset::ALL {
        let (mut secs, mut passes) = (0.0, 0usize);
        for path in &images[..n] {
            let bytes: Arc<[u8]> = std::fs::read(path).unwrap().into();
            let request = ExplainRequest {
                model: Some(name.to_string()),
                method: preset.into(),
                targets: TargetSpec::TopK(1),
                rendering: Rendering { format: OutputFormat::Json, ..Default::default() },
                ..Default::default()
            };
            let t = Instant::now();
            let r = service.explain(request, ImageInput::Encoded(bytes), None).await.unwrap();
            secs += t.elapsed().as_secs_f64();
            if let Rendered::Json(doc) = r {
                passes += doc.stats.forward_passes;
            }
        }
        let (s, p) = (secs / n as f64, passes as f64 / n as f64);
        let ratio = s / (p / best);
        let _ = writeln!(out, "| {preset} | {s:.2} | {p:.0} | {ratio:.3} |");
    }
}

/// Pass shares part 4 reports in its table, and the plot's x axis (0 to 1 in 20 steps).
const TABLE_SHARES: [f64; 4] = [0.05, 0.10, 0.25, 0.50];
const PLOT_STEPS: usize = 20;

/// Part 4: fidelity of partial maps to the exact one, from one complete run per photo (a
/// partial map needs only a subset of the complete run's scores).
fn anytime_fidelity(model: &ModelPackage, opts: &Options, out: &mut String) {
    use scorecam::cam::faithfulness::{pearson, top_iou};
    use scorecam::cam::{
        Activations, MaskPlan, Method, PassSet, combine, combine_partial, score_passes, top_channels_by_std,
    };
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let cfg = SessionConfig { intra_threads: cores, ..SessionConfig::default() };
    let mut s =
        ModelSessions::open(&model.extractor, &model.head, model.session_shapes(), &cfg, ProviderKind::Cpu).unwrap();
    let n = if opts.quick { 1 } else { opts.photos.unwrap_or(opts.images.len()).min(opts.images.len()) };
    let [k, fh, fw] = model.info.feature_khw;
    let method: Method = Preset::Official.into();
    // Per share (table, then plot), per photo: (Pearson, IoU) of anytime and of max_channels.
    let shares: Vec<f64> =
        TABLE_SHARES.iter().copied().chain((0..=PLOT_STEPS).map(|i| i as f64 / PLOT_STEPS as f64)).collect();
    let mut anytime = vec![Vec::new(); shares.len()];
    let mut faster = vec![Vec::new(); shares.len()];
    let started = Instant::now();
    for path in &opts.images[..n] {
        let photo = image::open(path).unwrap().into_rgb8();
        let x = scorecam::imaging::preprocess(&photo, &model.manifest.input).tensor;
        let features = s.features(&x, 1).unwrap();
        let logits = s.head_output(&features, 1).unwrap();
        let target = scorecam::service::top_k(&logits, 1)[0];
        let act = Activations::with_extra(k, fh, fw, features);
        let plan = MaskPlan::new(&method, act.clone(), model.info.input_chw);
        let scores =
            score_passes(&plan, &x, &logits, &[target], opts.batch, |b, n| s.model_output(b, n).unwrap()).remove(0);
        let exact = combine(&plan, &scores).input.data;
        let total = plan.len();
        for (i, share) in shares.iter().enumerate() {
            let budget = ((share * total as f64).round() as usize).min(total);
            let mut done = vec![false; total];
            done[..budget].fill(true);
            let map = combine_partial(&plan, &scores, &done).input.data;
            anytime[i].push((pearson(&map, &exact), top_iou(&map, &exact, 0.2), budget));
            // Faster Score-CAM: the fewest top-by-spread channels whose passes reach the budget.
            let (mut lo, mut hi) = (0usize, k);
            while lo < hi {
                let mid = (lo + hi) / 2;
                let used = plan.passes_of(&top_channels_by_std(&act, mid)).iter().filter(|d| **d).count();
                if used >= budget { hi = mid } else { lo = mid + 1 }
            }
            let done = plan.passes_of(&top_channels_by_std(&act, lo));
            let used = done.iter().filter(|d| **d).count();
            let map = combine_partial(&plan, &scores, &done).input.data;
            faster[i].push((pearson(&map, &exact), top_iou(&map, &exact, 0.2), used));
        }
    }
    let stats = |v: &[(f32, f32, usize)], pick: fn(&(f32, f32, usize)) -> f64| {
        let mut xs: Vec<f64> = v.iter().map(pick).collect();
        xs.sort_by(f64::total_cmp);
        (xs.iter().sum::<f64>() / xs.len().max(1) as f64, percentile(&xs, 0.05))
    };
    let _ = writeln!(
        out,
        "\n## 4. Anytime fidelity ({n} photos, `official`, top-1 class; {:.0} s)\n\n\
         Against the exact map at the model's resolution. \"anytime\": the plan's first passes (its order: \
         channels by spatial spread); \"max_channels\": Faster Score-CAM (channels by spatial spread) with \
         the fewest channels whose passes reach the same count (mean passes in brackets).\n",
        started.elapsed().as_secs_f64()
    );
    let _ = writeln!(
        out,
        "| share of passes | anytime Pearson mean / p5 | anytime IoU@20% mean / p5 | max_channels Pearson mean / p5 | max_channels IoU@20% mean / p5 |\n|---:|---|---|---|---|"
    );
    for (i, share) in TABLE_SHARES.iter().enumerate() {
        let (ap, ap5) = stats(&anytime[i], |t| f64::from(t.0));
        let (ai, ai5) = stats(&anytime[i], |t| f64::from(t.1));
        let (fp, fp5) = stats(&faster[i], |t| f64::from(t.0));
        let (fi, fi5) = stats(&faster[i], |t| f64::from(t.1));
        let passes = |v: &[(f32, f32, usize)]| v.iter().map(|t| t.2 as f64).sum::<f64>() / v.len().max(1) as f64;
        let _ = writeln!(
            out,
            "| {:.0} % ({:.0}) | {ap:.4} / {ap5:.4} | {ai:.3} / {ai5:.3} | {fp:.4} / {fp5:.4} ({:.0}) | {fi:.3} / {fi5:.3} |",
            share * 100.0,
            passes(&anytime[i]),
            passes(&faster[i])
        );
    }
    if let Some(path) = &opts.plot {
        use scorecam::render::plot::{Panel, line_charts};
        let curve = |v: &[Vec<(f32, f32, usize)>], pick: fn(&(f32, f32, usize)) -> f64| -> Vec<f64> {
            v[TABLE_SHARES.len()..].iter().map(|xs| stats(xs, pick).0.max(0.0)).collect()
        };
        let panel = |title: &str, pick: fn(&(f32, f32, usize)) -> f64| Panel {
            title: title.into(),
            series: vec![
                ("anytime (plan order)".into(), curve(&anytime, pick)),
                ("max_channels (spread)".into(), curve(&faster, pick)),
            ],
        };
        let img = line_charts(
            &[
                panel("mean Pearson r to the exact map", |t| f64::from(t.0)),
                panel("mean top-20 % IoU", |t| f64::from(t.1)),
            ],
            "share of the exact plan's passes",
            "fidelity",
        );
        img.save(path).unwrap();
    }
}

/// One floor configuration: `sessions` side by side, each with `threads` intra-op threads.
struct FloorPool {
    sessions: Vec<ModelSessions>,
    threads: usize,
}

/// The floor's best point in one round.
#[derive(Clone, Copy, Debug)]
struct FloorBest {
    ips: f64,
    sessions: usize,
    threads: usize,
    batch: usize,
}

/// Batch sizes the floor tries (the quick run: two).
fn floor_batches(quick: bool) -> &'static [usize] {
    if quick { &[1, 2] } else { &[1, 2, 4, 8, 16, 32, 64] }
}

/// Images per second of `pool` at `batch` on `input`, timed for about a second after a
/// warm-up of the shape.
fn floor_point(pool: &mut FloorPool, input: &[f32], per: usize, batch: usize, quick: bool) -> f64 {
    let n = pool.sessions.len();
    let x = &input[..per * batch];
    let t = Instant::now();
    std::thread::scope(|scope| {
        for s in pool.sessions.iter_mut() {
            scope.spawn(move || s.model_output(x, batch).unwrap());
        }
    });
    let rounds = if quick { 1 } else { ((1.0 / t.elapsed().as_secs_f64()).ceil() as usize).clamp(2, 200) };
    let t = Instant::now();
    std::thread::scope(|scope| {
        for s in pool.sessions.iter_mut() {
            scope.spawn(move || {
                for _ in 0..rounds {
                    s.model_output(x, batch).unwrap();
                }
            });
        }
    });
    (rounds * batch * n) as f64 / t.elapsed().as_secs_f64()
}

/// Every pool at every batch size on `input` (real masked inputs); returns the best point.
fn floor_sweep(pools: &mut [FloorPool], input: &[f32], per: usize, quick: bool) -> (FloorBest, usize) {
    let verbose = std::env::var_os("SCORECAM_BENCH_VERBOSE").is_some();
    let (mut best, mut best_pool) = (FloorBest { ips: 0.0, sessions: 0, threads: 0, batch: 0 }, 0);
    for (i, pool) in pools.iter_mut().enumerate() {
        for &batch in floor_batches(quick) {
            let ips = floor_point(pool, input, per, batch, quick);
            if verbose {
                eprintln!("floor {}x{} batch {batch}: {ips:.1} images/s", pool.sessions.len(), pool.threads);
            }
            if ips > best.ips {
                best = FloorBest { ips, sessions: pool.sessions.len(), threads: pool.threads, batch };
                best_pool = i;
            }
        }
    }
    (best, best_pool)
}

/// Seconds and forward passes of exact explanations (the default method, top-1) of `photos`.
async fn explain_photos(service: &Service, name: &str, photos: &[Arc<[u8]>]) -> (f64, usize) {
    let (mut secs, mut passes) = (0.0, 0);
    for bytes in photos {
        let request = ExplainRequest {
            model: Some(name.to_string()),
            targets: TargetSpec::TopK(1),
            rendering: Rendering { format: OutputFormat::Json, ..Default::default() },
            ..Default::default()
        };
        let t = Instant::now();
        let r = service.explain(request, ImageInput::Encoded(bytes.clone()), None).await.unwrap();
        secs += t.elapsed().as_secs_f64();
        if let Rendered::Json(doc) = r {
            passes += doc.stats.forward_passes;
        }
    }
    (secs, passes)
}

fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    percentile(&v, 0.5)
}

/// Part 5: exact Score-CAM's time per forward pass against ONNX Runtime's own best on the
/// same inputs, in interleaved rounds: floor, the service at its defaults, the service at
/// the floor's best settings (when they differ), again and again.
async fn overhead(model: &ModelPackage, name: &str, base: &EngineConfig, opts: &Options, out: &mut String) {
    use scorecam::cam::{Activations, MaskPlan, Method, PassSet};
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let open = |threads: usize| {
        let cfg = SessionConfig { intra_threads: threads, spinning: opts.spinning, ..SessionConfig::default() };
        ModelSessions::open(&model.extractor, &model.head, model.session_shapes(), &cfg, ProviderKind::Cpu).unwrap()
    };
    // Real masked inputs: the first 64 passes of the first photo's exact plan (the widest
    // channels first), so the floor runs what an explanation runs, not a clean photo.
    let mut pools = vec![FloorPool { sessions: (0..cores).map(|_| open(1)).collect(), threads: 1 }];
    if cores > 1 {
        pools.push(FloorPool { sessions: vec![open(cores)], threads: cores });
    }
    let [c, h, w] = model.info.input_chw;
    let [k, fh, fw] = model.info.feature_khw;
    let per = c * h * w;
    let input: Vec<f32> = {
        let s = &mut pools[0].sessions[0];
        let photo = image::open(&opts.images[0]).unwrap().into_rgb8();
        let x = scorecam::imaging::preprocess(&photo, &model.manifest.input).tensor;
        let act = Activations::with_extra(k, fh, fw, s.features(&x, 1).unwrap());
        let plan = MaskPlan::new(&Method::default(), act, model.info.input_chw);
        let n = plan.len().min(64);
        let mut masked = vec![0.0; n * per];
        plan.fill_batch(&x, 0..n, &mut masked);
        masked.iter().copied().cycle().take(64 * per).collect()
    };
    let n_photos = if opts.quick { 1 } else { opts.photos.unwrap_or(3).min(opts.images.len()) };
    let photos: Vec<Arc<[u8]>> = opts.images[..n_photos].iter().map(|p| std::fs::read(p).unwrap().into()).collect();
    let rounds = if opts.quick { 1 } else { opts.rounds.max(1) };
    let started = Instant::now();
    let (first, first_pool) = floor_sweep(&mut pools, &input, per, opts.quick);
    // The service at its defaults, and at the floor's best point if that is another one.
    let mut settings = vec![(base.workers, base.session.intra_threads, base.max_batch_size)];
    let tuned = (first.sessions, first.threads, first.batch);
    if tuned != settings[0] {
        settings.push(tuned);
    }
    let mut services = Vec::new();
    for &(workers, threads, batch) in &settings {
        let mut config = EngineConfig { workers, max_batch_size: batch, ..base.clone() };
        config.session.intra_threads = threads;
        let repo = ModelRepository::new(opts.models.clone(), None, config.clone()).only(Some(name.to_string()));
        repo.refresh().unwrap();
        let service = Service::start(config, repo, ServiceConfig { cache_mib: 0, ..ServiceConfig::default() }).unwrap();
        explain_photos(&service, name, &photos[..1]).await; // warm-up: every batch shape once
        services.push(service);
    }
    let _ = writeln!(
        out,
        "\n## 5. Overhead of exact Score-CAM against the floor ({rounds} rounds × {n_photos} photo(s) per \
         service, `{}`, top-1)\n\n\
         Each round sweeps the floor (ONNX Runtime alone on 64 real masked inputs: {cores} session(s) × 1 \
         thread and 1 session × {cores} threads, at batch {:?}) and takes its best point; that point is \
         then timed again for a second right before and right after each explanation, and the ratio is \
         the explanation's seconds per forward pass × the mean of those two (images/s): 1.00 = the \
         service runs passes as fast as ONNX Runtime alone at its best.\n",
        Method::default(),
        floor_batches(opts.quick)
    );
    let _ = write!(out, "| round | sweep best: images/s (sessions × threads, batch) |");
    for (workers, threads, batch) in &settings {
        let _ = write!(out, " service {workers}×{threads}, batch {batch}: ms/pass; floor images/s; ratios |");
    }
    let _ = writeln!(out, "\n|---:|---|{}", "---|".repeat(settings.len()));
    let mut ratios = vec![Vec::new(); settings.len()];
    for round in 0..rounds {
        let (sweep, pool) =
            if round == 0 { (first, first_pool) } else { floor_sweep(&mut pools, &input, per, opts.quick) };
        let _ =
            write!(out, "| {} | {:.1} ({}×{}, {}) |", round + 1, sweep.ips, sweep.sessions, sweep.threads, sweep.batch);
        for (i, service) in services.iter().enumerate() {
            let (mut per_pass, mut floors, mut these) = (Vec::new(), Vec::new(), Vec::new());
            for photo in &photos {
                let before = floor_point(&mut pools[pool], &input, per, sweep.batch, opts.quick);
                let (secs, passes) = explain_photos(service, name, std::slice::from_ref(photo)).await;
                let after = floor_point(&mut pools[pool], &input, per, sweep.batch, opts.quick);
                let floor = (before + after) / 2.0;
                per_pass.push(secs / passes as f64);
                floors.push(floor);
                these.push(secs / passes as f64 * floor);
            }
            let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
            let list: Vec<String> = these.iter().map(|r| format!("{r:.3}")).collect();
            let _ = write!(out, " {:.2}; {:.1}; {} |", mean(&per_pass) * 1e3, mean(&floors), list.join(" "));
            ratios[i].extend(these);
        }
        let _ = writeln!(out);
    }
    let _ = write!(out, "| median (of every photo's ratio) | |");
    for r in &ratios {
        let _ = write!(out, " **{:.3}** (mean {:.3}) |", median(r), r.iter().sum::<f64>() / r.len() as f64);
    }
    let _ = writeln!(out, "\n\n({:.0} s in all)", started.elapsed().as_secs_f64());
    for service in services {
        service.shutdown(Duration::from_secs(1)).await;
    }
}

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Photos every concurrency level explains: 16 make a level last about a minute, long
/// enough that one photo's place in the queue does not sway the comparison.
const HTTP_PHOTOS: usize = 16;

async fn http(opts: &Options, out: &mut String) {
    let (images, models, threads, quick) = (&opts.images, &opts.models, opts.threads, opts.quick);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let log = std::env::temp_dir().join(format!("scorecam-bench-{}.log", std::process::id()));
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_scorecam"))
        .args(["serve", "--bind", "127.0.0.1:0", "--log-format", "json", "--intra-threads", &threads.to_string()])
        .args(["--max-concurrent-jobs", "8", "--max-queued-jobs", "64"])
        .args(["--workers", &opts.workers.to_string(), "--max-batch-size", &opts.batch.to_string()])
        .arg("--models-dir")
        .arg(models)
        .current_dir(root)
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut base = None;
    for _ in 0..600 {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(i) = text.find("listening on http://") {
            let rest = &text[i + "listening on ".len()..];
            base = Some(rest[..rest.find('"').unwrap()].to_string());
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let base = base.expect("server started");
    let client = reqwest::Client::builder().timeout(Duration::from_secs(600)).build().unwrap();
    let bodies: Vec<Vec<u8>> = images.iter().take(HTTP_PHOTOS).map(|p| std::fs::read(p).unwrap()).collect();
    let rss_idle = peak_rss_kib(child.id());

    let _ = writeln!(
        out,
        "\n## 3. HTTP server on loopback (official preset, PNG overlay; the same {HTTP_PHOTOS} photos at every level)\n"
    );
    let _ = writeln!(out, "Server peak RSS after start-up: {:.0} MiB\n", rss_idle as f64 / 1024.0);
    let _ = writeln!(
        out,
        "| clients | explanations | wall s | explanations/min | p50 s | p95 s | p99 s | errors |\n|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let levels: &[usize] = if quick { &[1, 2] } else { &[1, 2, 4, 8] };
    for &clients in levels {
        // Every level explains the same images (split among its clients), so the levels'
        // throughputs compare like with like (images differ in active channels).
        let total = if quick { clients } else { HTTP_PHOTOS };
        let per_client = total / clients;
        let t = Instant::now();
        let mut tasks = Vec::new();
        for c in 0..clients {
            let (client, url) = (client.clone(), format!("{base}/explain"));
            let mine: Vec<Vec<u8>> =
                (0..per_client).map(|i| bodies[(c + i * clients) % bodies.len()].clone()).collect();
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut errors = 0;
                for body in mine {
                    let t = Instant::now();
                    let r = client.post(&url).header("content-type", "image/jpeg").body(body).send().await;
                    match r {
                        Ok(r) if r.status().is_success() => {
                            let _ = r.bytes().await;
                            lat.push(t.elapsed().as_secs_f64());
                        }
                        _ => errors += 1,
                    }
                }
                (lat, errors)
            }));
        }
        let mut lat = Vec::new();
        let mut errors = 0;
        for task in tasks {
            let (l, e) = task.await.unwrap();
            lat.extend(l);
            errors += e;
        }
        let wall = t.elapsed().as_secs_f64();
        lat.sort_by(f64::total_cmp);
        let _ = writeln!(
            out,
            "| {clients} | {} | {wall:.1} | {:.1} | {:.2} | {:.2} | {:.2} | {errors} |",
            lat.len(),
            lat.len() as f64 / wall * 60.0,
            percentile(&lat, 0.5),
            percentile(&lat, 0.95),
            percentile(&lat, 0.99)
        );
    }
    let rss_peak = peak_rss_kib(child.id());
    let _ = writeln!(out, "\nServer peak RSS over the whole run: {:.0} MiB", rss_peak as f64 / 1024.0);

    let n = if quick { 4 } else { 200 };
    let t = Instant::now();
    let mut lat = Vec::new();
    for i in 0..n {
        let body = bodies[i % bodies.len()].clone();
        let s = Instant::now();
        let r = client
            .post(format!("{base}/predict"))
            .header("content-type", "image/jpeg")
            .body(body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
        let _ = r.bytes().await;
        lat.push(s.elapsed().as_secs_f64() * 1e3);
    }
    let wall = t.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    let _ = writeln!(
        out,
        "\n/predict, one client, {n} requests: {:.1} requests/s; latency p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms",
        n as f64 / wall,
        percentile(&lat, 0.5),
        percentile(&lat, 0.95),
        percentile(&lat, 0.99)
    );
    // SAFETY: plain kill(2) on our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let _ = child.wait();
    let _ = std::fs::remove_file(&log);
}

#[tokio::main]
async fn main() {
    let opts = options();
    let (lib, _) = runtime::resolve_library(None, "cpu").expect("run scripts/setup/ort.sh");
    runtime::init(&lib).unwrap();
    let mut config = EngineConfig { max_batch_size: opts.batch, workers: opts.workers, ..EngineConfig::default() };
    config.session.intra_threads = opts.threads;
    config.session.spinning = opts.spinning;
    let repo = ModelRepository::new(opts.models.clone(), None, config.clone()).only(opts.model.clone());
    repo.refresh().unwrap();
    let model = repo.ready().first().expect("a model to measure").clone();
    let name = model.name().to_string();
    let mut out = String::new();
    let _ =
        writeln!(out, "# scorecam benchmark{}\n\n{}", if opts.quick { " (quick smoke run)" } else { "" }, machine());
    let _ = writeln!(
        out,
        "Model: {}; images: {} (first {} from {})",
        name,
        opts.images.len(),
        opts.images.len().min(10),
        opts.images[0].parent().unwrap().display()
    );
    let _ = writeln!(
        out,
        "Settings: {} worker(s) × {} intra-op threads, max batch {}, spinning {}",
        opts.workers, opts.threads, opts.batch, opts.spinning
    );
    let best = if opts.parts.contains(&1) { raw_throughput(&model.package, &opts, &mut out) } else { f64::NAN };
    if opts.parts.contains(&2) {
        let service = Service::start(config.clone(), repo, ServiceConfig::default()).unwrap();
        scorecam_end_to_end(&service, &name, &opts, best, &mut out).await;
        service.shutdown(Duration::from_secs(1)).await;
    }
    if opts.parts.contains(&3) {
        http(&opts, &mut out).await;
    }
    // Not in the default parts: it runs every photo's exact plan once (minutes).
    if opts.parts.contains(&4) || opts.quick {
        anytime_fidelity(&model.package, &opts, &mut out);
    }
    if opts.parts.contains(&5) || opts.quick {
        overhead(&model.package, &name, &config, &opts, &mut out).await;
    }
    print!("{out}");
    if let Some(path) = opts.out {
        std::fs::write(path, &out).unwrap();
    }
}
