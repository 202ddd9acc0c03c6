use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::cam::Preset;
use crate::config::Config;
use crate::engine::{Engine, Progress, TargetSpec};
use crate::model::ModelRegistry;
use crate::pipeline::{self, ExplainParams, MethodArgs, OutputFormat, Rendered, Resolution};
use crate::render::Colormap;
use crate::runtime;

#[derive(Debug, Parser)]
#[command(name = "scorecam", version, about = "Score-CAM saliency maps for ONNX image classifiers")]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Configuration file (default: config/default.toml when present).
    #[arg(long, global = true, env = "SCORECAM_CONFIG")]
    pub config: Option<PathBuf>,
    /// Folder of model packages.
    #[arg(long, global = true, env = "SCORECAM_MODELS_DIR")]
    pub models_dir: Option<PathBuf>,
    /// Path of libonnxruntime.so (ORT_DYLIB_PATH takes precedence).
    #[arg(long, global = true, env = "SCORECAM_ORT_LIBRARY")]
    pub ort_library: Option<PathBuf>,
    /// Worker count.
    #[arg(long, global = true, env = "SCORECAM_WORKERS")]
    pub workers: Option<usize>,
    /// ONNX Runtime intra-op threads per worker (0 = cores / workers).
    #[arg(long, global = true, env = "SCORECAM_INTRA_THREADS")]
    pub intra_threads: Option<usize>,
    /// Most masked inputs per forward pass.
    #[arg(long, global = true, env = "SCORECAM_MAX_BATCH_SIZE")]
    pub max_batch_size: Option<usize>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP API (POST /explain, /predict; GET /models, /healthz, /readyz, /metrics).
    Serve(ServeArgs),
    /// Explain images: write an overlay PNG, a heatmap PNG or the JSON document per image.
    Explain(ExplainArgs),
    /// Faithfulness of every method over a folder of images: a table, CSV/JSON and a plot.
    Evaluate(super::evaluate::EvaluateArgs),
    /// Print the top-k classes of images.
    Predict(PredictArgs),
    /// List the model packages.
    Models,
    /// Exit 0 when the local server answers GET /healthz (the container HEALTHCHECK; no curl
    /// in the image). Loads no model.
    Healthcheck(HealthcheckArgs),
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    #[arg(long)]
    pub model: Option<String>,
    /// Class indices to explain (several allowed; they share one set of masked passes).
    #[arg(long = "target", num_args = 1..)]
    pub targets: Vec<usize>,
    /// Explain the k most probable classes (default 1 when no --target is given).
    #[arg(long, conflicts_with = "targets")]
    pub top_k: Option<usize>,
    #[command(flatten)]
    pub method: MethodFlags,
    /// Also compute faithfulness metrics (Average Drop, Increase in Confidence, deletion
    /// and insertion AUC) for each map.
    #[arg(long)]
    pub metrics: bool,
    #[arg(long, default_value = "png", value_parser = parse::<OutputFormat>)]
    pub format: OutputFormat,
    #[arg(long, default_value = "input", value_parser = parse::<Resolution>)]
    pub resolution: Resolution,
    #[arg(long, default_value = "jet", value_parser = parse::<Colormap>)]
    pub colormap: Colormap,
    /// Heatmap opacity over the image.
    #[arg(long, default_value_t = 0.5)]
    pub alpha: f32,
    /// Output file (one image), folder (several), or `-` for standard output.
    #[arg(short = 'o', long)]
    pub output: Option<PathBuf>,
}

/// The explanation method and its parameters (each applies to one method only).
#[derive(Debug, Clone, Args)]
pub struct MethodFlags {
    /// scorecam, sscam, iscam or ablationcam.
    #[arg(long, default_value = "scorecam")]
    pub method: String,
    /// Score-CAM convention: official, pytorch_grad_cam or torchcam (scorecam only).
    #[arg(long, value_parser = parse::<Preset>)]
    pub preset: Option<Preset>,
    /// Faster Score-CAM: keep the N channels with the largest spatial spread (scorecam only).
    #[arg(long)]
    pub max_channels: Option<usize>,
    /// SS-CAM noise samples per channel (default 35).
    #[arg(long)]
    pub samples: Option<usize>,
    /// SS-CAM noise standard deviation (default 2.0).
    #[arg(long)]
    pub sigma: Option<f32>,
    /// SS-CAM noise seed (default 0).
    #[arg(long)]
    pub seed: Option<u64>,
    /// IS-CAM integration steps (default 10).
    #[arg(long)]
    pub steps: Option<usize>,
}

impl MethodFlags {
    pub fn resolve(&self) -> Result<crate::cam::Method, String> {
        MethodArgs {
            method: Some(self.method.clone()),
            preset: self.preset,
            max_channels: self.max_channels,
            samples: self.samples,
            sigma: self.sigma,
            seed: self.seed,
            steps: self.steps,
        }
        .resolve()
    }
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free one; the log says which).
    #[arg(long, env = "SCORECAM_BIND")]
    pub bind: Option<String>,
    /// Log format: pretty or json.
    #[arg(long, env = "SCORECAM_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// Default per-request deadline in milliseconds.
    #[arg(long, env = "SCORECAM_REQUEST_TIMEOUT_MS")]
    pub request_timeout_ms: Option<u64>,
    /// Largest request body in bytes.
    #[arg(long, env = "SCORECAM_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Jobs scheduled at once.
    #[arg(long, env = "SCORECAM_MAX_CONCURRENT_JOBS")]
    pub max_concurrent_jobs: Option<usize>,
    /// Jobs admitted but waiting; past this, 429.
    #[arg(long, env = "SCORECAM_MAX_QUEUED_JOBS")]
    pub max_queued_jobs: Option<usize>,
    /// File of API keys, one per line (enables authentication).
    #[arg(long, env = "SCORECAM_API_KEYS_FILE")]
    pub api_keys_file: Option<PathBuf>,
    /// API keys, comma-separated (enables authentication; prefer the file).
    #[arg(long, env = "SCORECAM_API_KEYS", hide_env_values = true, value_delimiter = ',')]
    pub api_keys: Vec<String>,
    /// Allowed CORS origins, comma-separated (CORS is off when none).
    #[arg(long, env = "SCORECAM_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,
    /// Seconds in-flight work may take to finish after SIGTERM.
    #[arg(long, env = "SCORECAM_SHUTDOWN_GRACE_S")]
    pub shutdown_grace_s: Option<u64>,
    /// Milliseconds a client may take to send its request body (408 after).
    #[arg(long, env = "SCORECAM_BODY_READ_TIMEOUT_MS")]
    pub body_read_timeout_ms: Option<u64>,
}

#[derive(Debug, Args)]
pub struct HealthcheckArgs {
    /// The server's address (default: the configured bind address).
    #[arg(long, env = "SCORECAM_BIND")]
    pub bind: Option<String>,
    #[arg(long, default_value_t = 3000)]
    pub timeout_ms: u64,
}

#[derive(Debug, Args)]
pub struct PredictArgs {
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    #[arg(long)]
    pub model: Option<String>,
    #[arg(long, default_value_t = 5)]
    pub top_k: usize,
}

fn parse<T: std::str::FromStr<Err = String>>(s: &str) -> Result<T, String> {
    s.parse()
}

/// Everything a command needs, built from the configuration.
pub(crate) struct Context {
    pub(crate) config: Config,
    pub(crate) engine: Arc<Engine>,
}

/// The configuration file overridden by flags and their environment variables.
fn configure(global: &GlobalArgs, command: &Command) -> Result<Config, String> {
    let mut config = Config::load(global.config.as_deref()).map_err(|e| e.to_string())?;
    if let Command::Serve(a) = command {
        let s = &mut config.server;
        if let Some(v) = &a.bind {
            s.bind = v.clone();
        }
        if let Some(v) = &a.log_format {
            s.log_format = v.clone();
        }
        if let Some(v) = a.request_timeout_ms {
            s.request_timeout_ms = v;
        }
        if let Some(v) = a.max_body_bytes {
            s.max_body_bytes = v;
        }
        if let Some(v) = a.max_concurrent_jobs {
            config.engine.max_concurrent_jobs = v;
        }
        if let Some(v) = a.max_queued_jobs {
            config.engine.max_queued_jobs = v;
        }
        if let Some(v) = &a.api_keys_file {
            config.auth.api_keys_file = Some(v.clone());
        }
        if !a.api_keys.is_empty() {
            config.auth.api_keys.extend(a.api_keys.iter().cloned());
        }
        if !a.cors_origins.is_empty() {
            config.server.cors_allowed_origins = a.cors_origins.clone();
        }
        if let Some(v) = a.shutdown_grace_s {
            config.server.shutdown_grace_s = v;
        }
        if let Some(v) = a.body_read_timeout_ms {
            config.server.body_read_timeout_ms = v;
        }
    }
    Ok(config)
}

/// Logs go to standard error, pretty or as JSON lines.
pub fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "warn,scorecam=info,tower_http=info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = if format == "json" { builder.json().try_init() } else { builder.try_init() };
}

impl Context {
    fn start(global: &GlobalArgs, mut config: Config) -> Result<Self, String> {
        if let Some(d) = &global.models_dir {
            config.models.dir = d.clone();
        }
        if let Some(l) = &global.ort_library {
            config.runtime.library = Some(l.clone());
        }
        if let Some(w) = global.workers {
            config.engine.workers = w;
        }
        if let Some(t) = global.intra_threads {
            config.engine.session.intra_threads = t;
        }
        if let Some(b) = global.max_batch_size {
            config.engine.max_batch_size = b;
        }
        let (lib, source) = runtime::resolve_library(
            config.runtime.library.as_deref(),
            config.engine.session.provider.kind.library_variant(),
        )
        .map_err(|e| e.to_string())?;
        runtime::init(&lib).map_err(|e| e.to_string())?;
        tracing::debug!(library = %lib.display(), ?source, "ONNX Runtime loaded");
        let registry = ModelRegistry::discover(&config.models.dir).map_err(|e| e.to_string())?;
        let engine = Engine::start(registry, config.effective_engine()).map_err(|e| e.to_string())?;
        Ok(Self { config, engine: Arc::new(engine) })
    }

    pub(crate) fn model_name(&self, requested: Option<&str>) -> String {
        requested
            .map(str::to_string)
            .or_else(|| self.config.models.default.clone().filter(|d| self.engine.registry().get(d).is_ok()))
            .unwrap_or_else(|| self.engine.registry().all()[0].name.clone())
    }
}

/// Runs a parsed command line; the error is what to print before exiting non-zero.
pub async fn run(cli: Cli) -> Result<(), String> {
    let config = configure(&cli.global, &cli.command)?;
    if let Command::Healthcheck(args) = &cli.command {
        let addr = args.bind.clone().unwrap_or(config.server.bind);
        return healthcheck(&addr, Duration::from_millis(args.timeout_ms));
    }
    init_logging(&config.server.log_format);
    let ctx = Context::start(&cli.global, config)?;
    let result = match cli.command {
        Command::Serve(_) => return serve(ctx).await,
        Command::Explain(args) => explain(&ctx, args).await,
        Command::Predict(args) => predict(&ctx, args).await,
        Command::Evaluate(args) => super::evaluate::evaluate(&ctx, args).await,
        Command::Models => models(&ctx),
        Command::Healthcheck(_) => Ok(()),
    };
    ctx.engine.shutdown(Duration::from_secs(1)).await;
    result
}

/// A minimal HTTP/1.1 GET of /healthz (std only: the image has no curl).
fn healthcheck(addr: &str, timeout: Duration) -> Result<(), String> {
    use std::io::{Read, Write};
    use std::net::ToSocketAddrs;
    // A server bound to all interfaces is checked on loopback.
    let addr = addr.replace("0.0.0.0", "127.0.0.1").replace("[::]", "[::1]");
    let target = addr.to_socket_addrs().map_err(|e| format!("{addr}: {e}"))?.next().ok_or("no address")?;
    let mut stream = std::net::TcpStream::connect_timeout(&target, timeout).map_err(|e| format!("{addr}: {e}"))?;
    stream.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    stream.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    write!(stream, "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").map_err(|e| e.to_string())?;
    let mut head = [0u8; 64];
    let n = stream.read(&mut head).map_err(|e| e.to_string())?;
    let status = String::from_utf8_lossy(&head[..n]);
    if status.starts_with("HTTP/1.1 200") {
        Ok(())
    } else {
        Err(format!("unhealthy: {}", status.lines().next().unwrap_or("no response")))
    }
}

async fn serve(ctx: Context) -> Result<(), String> {
    let config = Arc::new(ctx.config.clone());
    match serde_json::to_string(&*config) {
        Ok(effective) => tracing::info!(config = %effective, "effective configuration"),
        Err(e) => tracing::warn!(error = %e, "could not print the configuration"),
    }
    let keys = config.auth.keys().map_err(|e| e.to_string())?;
    tracing::info!(api_keys = keys.len(), "authentication {}", if keys.is_empty() { "off" } else { "on" });
    let listener = tokio::net::TcpListener::bind(&config.server.bind)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.server.bind))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let state = crate::http::AppState {
        default_model: ctx.model_name(None),
        engine: ctx.engine.clone(),
        config,
        metrics: Default::default(),
        api_keys: Arc::new(crate::http::ApiKeys::new(keys, ctx.config.auth.metrics_public)),
    };
    tracing::info!(%addr, models = ctx.engine.registry().all().len(), "listening on http://{addr}");
    crate::http::serve(listener, state, crate::http::shutdown_signal()).await.map_err(|e| e.to_string())
}

fn read(path: &Path) -> Result<Arc<[u8]>, String> {
    std::fs::read(path).map(Arc::from).map_err(|e| format!("{}: {e}", path.display()))
}

fn output_path(args: &ExplainArgs, image: &Path) -> PathBuf {
    let ext = if args.format == OutputFormat::Json { "json" } else { "png" };
    let name = format!("{}.scorecam.{ext}", image.file_stem().and_then(|s| s.to_str()).unwrap_or("image"));
    match &args.output {
        Some(o) if args.images.len() == 1 && !o.is_dir() => o.clone(),
        Some(dir) => dir.join(name),
        None => PathBuf::from(name),
    }
}

async fn explain(ctx: &Context, args: ExplainArgs) -> Result<(), String> {
    let model = ctx.model_name(args.model.as_deref());
    if let Some(dir) = args.output.as_ref().filter(|_| args.images.len() > 1) {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let to_stdout = args.output.as_deref() == Some(Path::new("-"));
    let method = args.method.resolve()?;
    for image in &args.images {
        let bytes = read(image)?;
        let progress = Arc::new(Progress::default());
        let params = ExplainParams {
            targets: match (&args.targets, args.top_k) {
                (t, _) if !t.is_empty() => TargetSpec::Classes(t.clone()),
                (_, k) => TargetSpec::TopK(k.unwrap_or(1)),
            },
            method: method.clone(),
            metrics: args.metrics,
            format: args.format,
            resolution: args.resolution,
            colormap: args.colormap,
            alpha: args.alpha,
            progress: Some(progress.clone()),
            ..ExplainParams::new(&model)
        };
        let bar = ProgressBar::start(progress, &image.display().to_string());
        let result = pipeline::explain(&ctx.engine, bytes, &ctx.config.limits, params).await;
        bar.finish().await;
        let rendered = result.map_err(|e| format!("{}: {e}", image.display()))?;
        let (bytes, summary) = match rendered {
            Rendered::Json(doc) => {
                let s = format!("{} passes", doc.stats.forward_passes);
                (serde_json::to_vec(&doc).map_err(|e| e.to_string())?, s)
            }
            Rendered::Image(img) => {
                let mut s = format!(
                    "class {} ({}) p={:.4}, {} passes in {:.0} ms",
                    img.target.index,
                    img.target.label,
                    img.target.score,
                    img.stats.forward_passes,
                    img.timings.total_ms
                );
                if let Some(m) = &img.metrics {
                    s += &format!(
                        "; average drop {:.1}%, increase in confidence {}, deletion AUC {:.4}, insertion AUC {:.4}",
                        100.0 * m.average_drop,
                        m.increase_in_confidence,
                        m.deletion_auc,
                        m.insertion_auc
                    );
                }
                (img.png, s)
            }
        };
        if to_stdout {
            use std::io::Write;
            std::io::stdout().write_all(&bytes).map_err(|e| e.to_string())?;
        } else {
            let out = output_path(&args, image);
            std::fs::write(&out, bytes).map_err(|e| format!("{}: {e}", out.display()))?;
            eprintln!("{} -> {}: {summary}", image.display(), out.display());
        }
    }
    Ok(())
}

async fn predict(ctx: &Context, args: PredictArgs) -> Result<(), String> {
    let model = ctx.model_name(args.model.as_deref());
    for image in &args.images {
        let doc = pipeline::predict(&ctx.engine, read(image)?, &ctx.config.limits, &model, args.top_k)
            .await
            .map_err(|e| format!("{}: {e}", image.display()))?;
        println!("{}", image.display());
        for p in doc.predictions {
            println!("  {:>4}  {:.4}  {}", p.index, p.score, p.label);
        }
    }
    Ok(())
}

fn models(ctx: &Context) -> Result<(), String> {
    for (i, m) in ctx.engine.registry().all().iter().enumerate() {
        let [_, h, w] = m.info.input_chw;
        let [k, fh, fw] = m.info.feature_khw;
        println!(
            "{}\n  input {w}×{h} ({:?}), target layer {k}×{fh}×{fw}: {}\n  {} classes, provider {}\n  {}",
            m.name,
            m.manifest.input.resize,
            m.manifest.target_layer.description,
            m.info.classes,
            ctx.engine.provider(i).as_str(),
            m.manifest.description
        );
    }
    Ok(())
}

/// A terminal progress bar over an explanation's masked passes (silent when stderr is not
/// a terminal, so logs and pipes stay clean).
struct ProgressBar {
    task: Option<tokio::task::JoinHandle<()>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl ProgressBar {
    fn start(progress: Arc<Progress>, name: &str) -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        if !std::io::stderr().is_terminal() {
            return Self { task: None, stop };
        }
        let bar = indicatif::ProgressBar::new(0).with_message(name.to_string());
        bar.set_style(
            indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} passes ({eta})")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                bar.set_length(progress.total() as u64);
                bar.set_position(progress.done() as u64);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            bar.finish_and_clear();
        });
        Self { task: Some(task), stop }
    }

    async fn finish(self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.task {
            let _ = t.await;
        }
    }
}
