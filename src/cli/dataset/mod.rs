//! Dataset runs of `scorecam explain`: a folder, a list or many files streamed through the
//! service (or a server, with `--server`) with several images in flight so batches stay
//! full; per-image outputs and an index written as the run goes, so `--resume` continues
//! a stopped run and `--shard I/N` splits one dataset over N workers.
//!
//! Memory stays flat: at most `--concurrency` images are held at once, and what is kept
//! per finished image is its index line on disk.

mod client;
pub mod inputs;
mod outputs;

use std::collections::HashSet;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use client::Client;
use inputs::{Input, Shard};
use outputs::{Explained, Index, OutputKind, Record, Status, Writer};

use super::CliError;
use super::args::ExplainArgs;
use clap::ValueEnum;

use super::args::ResolutionArg;
use crate::service::{ExplainRequest, ImageInput, ImageLimits, OutputFormat, Rendered, Service, decode_image};

/// `--merge-index`: one `index.jsonl` from every index of the output folder.
pub fn merge(args: &ExplainArgs) -> Result<(), CliError> {
    let dir =
        args.output.clone().ok_or_else(|| CliError::Invalid("--merge-index needs the run's folder: -o DIR".into()))?;
    let (ok, failed) = outputs::merge_indexes(&dir)?;
    eprintln!("{} -> {}: {ok} explained, {failed} failed", dir.display(), dir.join("index.jsonl").display());
    Ok(())
}

/// Where explanations are computed.
pub enum Backend {
    Local { service: Arc<Service>, request: Box<ExplainRequest> },
    Remote(Arc<Client>),
}

impl Backend {
    async fn explain(&self, bytes: Vec<u8>, want_json: bool) -> Result<Explained, String> {
        match self {
            Self::Remote(client) => client.explain(bytes, want_json).await,
            Self::Local { service, request } => {
                let rendered = service
                    .explain((**request).clone(), ImageInput::Encoded(bytes.into()), None)
                    .await
                    .map_err(|e| e.to_string())?;
                let Rendered::Json(doc) = rendered else {
                    return Err("the service did not return a JSON document".into());
                };
                let json = if want_json { Some(serde_json::to_vec(&doc).map_err(|e| e.to_string())?) } else { None };
                let doc = *doc;
                Ok(Explained {
                    model: doc.model,
                    method: client::method_name(&doc.method, &doc.preset),
                    predictions: doc.predictions,
                    maps: doc.explanations.into_iter().map(|t| (t.target, t.saliency)).collect(),
                    passes: doc.stats.forward_passes,
                    json,
                })
            }
        }
    }
}

/// The output kinds of a run: `--outputs`, else what `--format` names.
fn kinds(args: &ExplainArgs) -> Vec<OutputKind> {
    if args.dataset.outputs.is_empty() {
        return vec![args.format.into()];
    }
    let mut kinds = Vec::new();
    for k in &args.dataset.outputs {
        if !kinds.contains(k) {
            kinds.push(*k);
        }
    }
    kinds
}

/// A run's shared, read-only settings.
struct Run {
    backend: Backend,
    writer: Writer,
    limits: ImageLimits,
}

/// Explains one image and writes its outputs; never fails the run (its record says how it
/// went).
async fn one(run: Arc<Run>, input: Input) -> Record {
    let started = Instant::now();
    let ms = |s: Instant| s.elapsed().as_secs_f64() * 1e3;
    let bytes = match tokio::fs::read(&input.path).await {
        Ok(b) => b,
        Err(e) => return Record::failed(&input.key, format!("reading {}: {e}", input.path.display()), ms(started)),
    };
    // The overlay needs the pixels here too (client mode never sends them back); decoding
    // first also keeps an unreadable file from costing a request.
    let image = if run.writer.needs_image() {
        let (b, limits) = (bytes.clone(), run.limits.clone());
        match tokio::task::spawn_blocking(move || decode_image(&b, &limits)).await {
            Ok(Ok(img)) => Some(img),
            Ok(Err(e)) => return Record::failed(&input.key, e.to_string(), ms(started)),
            Err(e) => return Record::failed(&input.key, format!("decoding: {e}"), ms(started)),
        }
    } else {
        None
    };
    let explained = match run.backend.explain(bytes, run.writer.needs_json()).await {
        Ok(e) => e,
        Err(e) => return Record::failed(&input.key, e, ms(started)),
    };
    let (run2, key) = (run.clone(), input.key.clone());
    let written = tokio::task::spawn_blocking(move || {
        let outputs = run2.writer.write(&key, image.as_ref(), &explained);
        (outputs, explained)
    })
    .await;
    match written {
        Ok((Ok(outputs), e)) => Record {
            path: input.key,
            status: Status::Ok,
            model: Some(e.model),
            method: Some(e.method),
            prediction: e.predictions.first().cloned(),
            targets: e.maps.into_iter().map(|(t, _)| t).collect(),
            passes: Some(e.passes),
            ms: Some(ms(started)),
            outputs,
            error: None,
        },
        Ok((Err(e), _)) => Record::failed(&input.key, e, ms(started)),
        Err(e) => Record::failed(&input.key, format!("writing: {e}"), ms(started)),
    }
}

/// Progress: a bar with rate and time left on a terminal, else a line every N images.
struct Report {
    total: usize,
    done: usize,
    failed: usize,
    started: Instant,
    every: usize,
    bar: Option<indicatif::ProgressBar>,
}

impl Report {
    fn new(total: usize, every: usize) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(total as u64);
            bar.set_style(
                indicatif::ProgressStyle::with_template("[{bar:30}] {pos}/{len} images, {per_sec}, {eta} left {msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar
        });
        Self { total, done: 0, failed: 0, started: Instant::now(), every: every.max(1), bar }
    }

    fn tick(&mut self, record: &Record) {
        self.done += 1;
        if record.status == Status::Error {
            self.failed += 1;
            let msg = format!("{}: {}", record.path, record.error.as_deref().unwrap_or(""));
            match &self.bar {
                Some(bar) => bar.println(format!("failed: {msg}")),
                None => eprintln!("failed: {msg}"),
            }
        }
        match &self.bar {
            Some(bar) => {
                bar.set_position(self.done as u64);
                if self.failed > 0 {
                    bar.set_message(format!("({} failed)", self.failed));
                }
            }
            None if self.done.is_multiple_of(self.every) || self.done == self.total => {
                let secs = self.started.elapsed().as_secs_f64();
                let rate = self.done as f64 / secs.max(1e-9);
                let left = (self.total - self.done) as f64 / rate.max(1e-9);
                eprintln!(
                    "{}/{} images, {} failed, {rate:.2} images/s, {:.0} s elapsed, {left:.0} s left",
                    self.done, self.total, self.failed, secs
                );
            }
            None => {}
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Test builds only: `SCORECAM_FAULT_STOP_AFTER=N` kills the process (abort, as `kill -9`
/// would: nothing is flushed or cleaned up) once N images are recorded.
#[cfg(feature = "fault-injection")]
fn stop_if_asked(done: usize) {
    if std::env::var("SCORECAM_FAULT_STOP_AFTER").ok().and_then(|n| n.parse().ok()) == Some(done) {
        std::process::abort();
    }
}

/// Runs a dataset explanation as the flags say: on `service`, or on the server `--server`
/// names when `service` is `None`.
pub async fn run(args: &ExplainArgs, limits: ImageLimits, service: Option<Arc<Service>>) -> Result<(), CliError> {
    let d = &args.dataset;
    let shard: Option<Shard> = d.shard.as_deref().map(str::parse).transpose()?;
    let kinds = kinds(args);
    if kinds.contains(&OutputKind::Overlay) && args.resolution != ResolutionArg::Input {
        return Err(CliError::Invalid(
            "an overlay is drawn at the image's own size: use --resolution input, or --outputs heatmap,npy,json \
             for maps at another resolution"
                .into(),
        ));
    }
    let dir = args.output.clone().unwrap_or_else(|| PathBuf::from("scorecam-out"));
    if dir == std::path::Path::new("-") {
        return Err(CliError::Invalid("a dataset run writes to a folder (-o DIR), not standard output".into()));
    }
    let (backend, concurrency) = backend(args, service)?;
    let (index, todo, total_mine) = plan(args, shard, &dir)?;
    let rendering = (args.colormap.into(), args.alpha);
    let run =
        Arc::new(Run { backend, writer: Writer { dir, kinds, colormap: rendering.0, alpha: rendering.1 }, limits });
    drive(run, index, todo, total_mine, concurrency, d.log_every).await
}

/// Where the explanations are computed, and how many images may be in flight there.
fn backend(args: &ExplainArgs, service: Option<Arc<Service>>) -> Result<(Backend, usize), CliError> {
    let d = &args.dataset;
    // Validated here first in both modes, so a typo fails at once rather than per image.
    let limits = service.as_ref().map_or_else(ImageLimits::default, |s| s.limits().clone());
    let mut request = super::explain::request(args, &limits)?;
    // JSON maps whatever --format says: the outputs are rendered here, alike in both modes.
    request.rendering.format = OutputFormat::Json;
    let concurrency = d.concurrency.max(1);
    match service {
        // More in flight than the engine admits would only turn images into errors.
        Some(service) => {
            let concurrency = concurrency.min(service.capacity());
            Ok((Backend::Local { service, request: Box::new(request) }, concurrency))
        }
        None => {
            let server = d.server.as_deref().ok_or_else(|| CliError::Invalid("no --server".into()))?;
            if args.region.is_some() || args.reference.is_some() {
                return Err(CliError::Invalid(
                    "--region and --reference are not sent to a --server; run the dataset locally (no --server)".into(),
                ));
            }
            let resolution = args.resolution.to_possible_value().map(|v| v.get_name().to_string()).unwrap_or_default();
            let params = super::explain::params(args)
                .merge_over([("format", "json".to_string()), ("resolution", resolution)].into_iter().collect());
            let query = serde_urlencoded::to_string(params.pairs()).map_err(|e| CliError::Invalid(e.to_string()))?;
            Ok((Backend::Remote(Arc::new(Client::new(server, &query, d.api_key.clone(), d.attempts)?)), concurrency))
        }
    }
}

/// This run's share of the inputs, less what its index already records (with `--resume`).
fn plan(
    args: &ExplainArgs,
    shard: Option<Shard>,
    dir: &std::path::Path,
) -> Result<(Index, Vec<Input>, usize), CliError> {
    let listed = inputs::collect(&args.images, args.list.as_deref())?;
    let listed_count = listed.len();
    let mine: Vec<Input> = match shard {
        Some(s) => listed.into_iter().filter(|i| s.takes(&i.key)).collect(),
        None => listed,
    };
    let index_name = match shard {
        Some(s) => format!("index-{}-of-{}.jsonl", s.index, s.count),
        None => "index.jsonl".into(),
    };
    let (index, finished): (Index, HashSet<String>) = Index::open(dir.join(index_name), args.dataset.resume)?;
    let total_mine = mine.len();
    let todo: Vec<Input> = mine.into_iter().filter(|i| !finished.contains(&i.key)).collect();
    eprintln!(
        "{} image(s) listed{}; {} already explained; {} to go -> {}",
        listed_count,
        shard.map(|s| format!(", {total_mine} in shard {}/{}", s.index, s.count)).unwrap_or_default(),
        total_mine - todo.len(),
        todo.len(),
        dir.display()
    );
    Ok((index, todo, total_mine))
}

/// Keeps `concurrency` images in flight until all are recorded in the index.
async fn drive(
    run: Arc<Run>,
    mut index: Index,
    todo: Vec<Input>,
    total_mine: usize,
    concurrency: usize,
    log_every: usize,
) -> Result<(), CliError> {
    let mut report = Report::new(todo.len(), log_every);
    let mut pending = todo.into_iter();
    let mut in_flight = tokio::task::JoinSet::new();
    loop {
        while in_flight.len() < concurrency {
            let Some(input) = pending.next() else { break };
            in_flight.spawn(one(run.clone(), input));
        }
        let Some(joined) = in_flight.join_next().await else { break };
        let record = joined.map_err(|e| CliError::Invalid(format!("an image's task failed: {e}")))?;
        index.append(&record)?;
        report.tick(&record);
        #[cfg(feature = "fault-injection")]
        stop_if_asked(report.done);
    }
    report.finish();
    let (ok, failed) = index.compact()?;
    eprintln!(
        "{ok} explained, {failed} failed (see the index) of {total_mine}; this run: {} image(s) in {:.1} s",
        report.done,
        report.started.elapsed().as_secs_f64()
    );
    Ok(())
}
