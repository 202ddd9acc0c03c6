//! The command line's grammar (clap), and how its flags layer over the configuration:
//! every flag that overrides a setting names its configuration path once, here.

use std::path::PathBuf;

use clap::{Arg, ArgMatches, Args, FromArgMatches, Parser, Subcommand, ValueEnum};
use serde::Serialize;

use crate::render::Colormap;
use crate::service::{ExifOrientation, OutputFormat, Resolution, registry as methods};

#[derive(Debug, Parser)]
#[command(name = "scorecam", version, about = "Score-CAM saliency maps for ONNX image classifiers")]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command takes; each overrides the configuration key it is renamed to.
#[derive(Debug, Args, Serialize)]
pub struct GlobalArgs {
    /// Configuration file (default: config/default.toml when present).
    #[arg(long, global = true, env = "SCORECAM_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Folder of model packages.
    #[arg(long, global = true, env = "SCORECAM_MODELS_DIR")]
    #[serde(rename = "models.dir", skip_serializing_if = "Option::is_none")]
    pub models_dir: Option<PathBuf>,
    /// Path of libonnxruntime.so (ORT_DYLIB_PATH takes precedence).
    #[arg(long, global = true, env = "SCORECAM_ORT_LIBRARY")]
    #[serde(rename = "runtime.library", skip_serializing_if = "Option::is_none")]
    pub ort_library: Option<PathBuf>,
    /// Worker count.
    #[arg(long, global = true, env = "SCORECAM_WORKERS")]
    #[serde(rename = "engine.workers", skip_serializing_if = "Option::is_none")]
    pub workers: Option<usize>,
    /// ONNX Runtime intra-op threads per worker (0 = cores / workers).
    #[arg(long, global = true, env = "SCORECAM_INTRA_THREADS")]
    #[serde(rename = "engine.session.intra_threads", skip_serializing_if = "Option::is_none")]
    pub intra_threads: Option<usize>,
    /// Most masked inputs per forward pass.
    #[arg(long, global = true, env = "SCORECAM_MAX_BATCH_SIZE")]
    #[serde(rename = "engine.max_batch_size", skip_serializing_if = "Option::is_none")]
    pub max_batch_size: Option<usize>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP API (POST /explain, /predict; GET /models, /methods, /healthz, /readyz, /metrics).
    Serve(ServeArgs),
    /// Explain images: write an overlay PNG, a heatmap PNG or the JSON document per image.
    Explain(Box<ExplainArgs>),
    /// Faithfulness of every method over a folder of images: a table, CSV/JSON and a plot.
    Evaluate(EvaluateArgs),
    /// Print the top-k classes of images.
    Predict(PredictArgs),
    /// List the model packages (and why any failed to load).
    Models,
    /// Write images as the model's input tensor (decoded and preprocessed as an explanation
    /// does): one N×C×H×W float32 .npy, for tools that run the graphs themselves
    /// (calibrating a quantised package).
    Preprocess(PreprocessArgs),
    /// List the explanation methods and their parameters.
    Methods,
    /// Exit 0 when the local server answers GET /healthz (the container HEALTHCHECK; no curl
    /// in the image). Loads no model.
    Healthcheck(HealthcheckArgs),
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// Images, or folders searched recursively for images (a dataset run: see --output).
    #[arg(required_unless_present_any = ["list", "merge_index"])]
    pub images: Vec<PathBuf>,
    /// A file of image paths, one per line (`-`: standard input); a dataset run.
    #[arg(long)]
    pub list: Option<PathBuf>,
    /// The model package to explain with (default: the configured default model).
    #[arg(long)]
    pub model: Option<String>,
    /// Class indices to explain (several allowed; they share one set of masked passes).
    #[arg(long = "target", num_args = 1..)]
    pub targets: Vec<usize>,
    /// Explain the k most probable classes (default 1 when no --target is given).
    #[arg(long, conflicts_with = "targets")]
    pub top_k: Option<usize>,
    /// A segmentation model's region to explain the target class over: `x1,y1,x2,y2` in
    /// photo pixels, or a mask image the photo's size (non-zero = in). Default: the pixels
    /// the model assigns to the class.
    #[arg(long, value_name = "BOX|FILE")]
    pub region: Option<String>,
    /// A detection model's target box, `x1,y1,x2,y2` in photo pixels (with one --target,
    /// its class).
    #[arg(long = "box", value_name = "X1,Y1,X2,Y2", conflicts_with = "detection")]
    pub bbox: Option<String>,
    /// A detection model's target: its N-th detection on the photo (0: the highest-scoring).
    #[arg(long, value_name = "N")]
    pub detection: Option<usize>,
    /// How a detection target's box is scored on each masked pass: d_rise (the best
    /// IoU × class probability over the raw proposals) or box_score (pytorch-grad-cam's
    /// FasterRCNNBoxScoreTarget: IoU + score of the best-matching proposal of the class).
    #[arg(long, value_name = "RULE")]
    pub box_score: Option<String>,
    #[command(flatten)]
    pub thresholds: DetectionThresholds,
    /// An embedding model's reference: a vector file (`.npy` float32/float64, or `.json`
    /// array) or a photo, which the model embeds.
    #[arg(long, value_name = "FILE")]
    pub reference: Option<PathBuf>,
    #[command(flatten)]
    pub method: MethodFlags,
    /// Also compute faithfulness metrics (Average Drop, Increase in Confidence, deletion
    /// and insertion AUC) for each map.
    #[arg(long)]
    pub metrics: bool,
    /// Pass budget: run only the first N passes (the most important channels first) and
    /// make the map from the channels they complete; the output says the coverage.
    #[arg(long)]
    pub max_passes: Option<usize>,
    /// What to write: the overlay PNG, the heatmap PNG or the JSON document.
    #[arg(long, value_enum, default_value_t = FormatArg::Png)]
    pub format: FormatArg,
    /// At which resolution the maps are: the image's own size, the model's input, or the
    /// target layer's grid.
    #[arg(long, value_enum, default_value_t = ResolutionArg::Input)]
    pub resolution: ResolutionArg,
    /// The colour map of overlays and heatmaps.
    #[arg(long, value_enum, default_value_t = ColormapArg::Jet)]
    pub colormap: ColormapArg,
    /// Heatmap opacity over the image.
    #[arg(long, default_value_t = 0.5)]
    pub alpha: f32,
    /// Whether the model sees a photo turned upright by its EXIF tag (apply) or as stored
    /// (ignore, as PIL and torchvision give it); default: the model package's setting.
    #[arg(long, value_enum)]
    pub exif_orientation: Option<ExifArg>,
    /// Output file (one image), folder (several, or a dataset run), or `-` for standard output.
    #[arg(short = 'o', long)]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub dataset: DatasetArgs,
}

/// `--format`: the service's `OutputFormat`, as a flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    /// The heatmap over the image.
    Png,
    /// The heatmap alone.
    Heatmap,
    /// The JSON document (maps as numbers).
    Json,
}

/// `--resolution`: the service's `Resolution`, as a flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ResolutionArg {
    Input,
    Model,
    Feature,
}

/// `--colormap`: the renderer's `Colormap`, as a flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ColormapArg {
    Jet,
    Viridis,
    Inferno,
    Gray,
}

/// `--exif-orientation`: the service's `ExifOrientation`, as a flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ExifArg {
    /// The photo turned upright first.
    Apply,
    /// The pixels as stored.
    Ignore,
}

impl From<ExifArg> for ExifOrientation {
    fn from(e: ExifArg) -> Self {
        match e {
            ExifArg::Apply => ExifOrientation::Apply,
            ExifArg::Ignore => ExifOrientation::Ignore,
        }
    }
}

impl From<FormatArg> for OutputFormat {
    fn from(f: FormatArg) -> Self {
        match f {
            FormatArg::Png => OutputFormat::Png,
            FormatArg::Heatmap => OutputFormat::Heatmap,
            FormatArg::Json => OutputFormat::Json,
        }
    }
}

impl From<ResolutionArg> for Resolution {
    fn from(r: ResolutionArg) -> Self {
        match r {
            ResolutionArg::Input => Resolution::Input,
            ResolutionArg::Model => Resolution::Model,
            ResolutionArg::Feature => Resolution::Feature,
        }
    }
}

impl From<ColormapArg> for Colormap {
    fn from(c: ColormapArg) -> Self {
        match c {
            ColormapArg::Jet => Colormap::Jet,
            ColormapArg::Viridis => Colormap::Viridis,
            ColormapArg::Inferno => Colormap::Inferno,
            ColormapArg::Gray => Colormap::Gray,
        }
    }
}

/// One kind of per-image output of a dataset run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputKind {
    /// The heatmap over the image (PNG).
    #[value(alias = "png")]
    Overlay,
    /// The heatmap alone (PNG).
    Heatmap,
    /// Every target's map as a NumPy array.
    Npy,
    /// The JSON document.
    Json,
}

impl From<FormatArg> for OutputKind {
    fn from(f: FormatArg) -> Self {
        match f {
            FormatArg::Png => OutputKind::Overlay,
            FormatArg::Heatmap => OutputKind::Heatmap,
            FormatArg::Json => OutputKind::Json,
        }
    }
}

/// How a dataset run (several images, a folder or a list) goes: its outputs, its share,
/// and where the explanations are computed.
#[derive(Debug, Clone, Args)]
pub struct DatasetArgs {
    /// What a dataset run writes per image (comma-separated; default: the one --format
    /// names).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub outputs: Vec<OutputKind>,
    /// Continue a stopped run: skip the images that any index in the output folder (the
    /// plain run's or a shard's) records as explained; their outputs are not rewritten.
    #[arg(long)]
    pub resume: bool,
    /// Write one `index.jsonl` in the -o folder from every index there (the shards' and a
    /// plain run's): one record per image, the last one, an explained record never
    /// replaced by a failure. Explains nothing.
    #[arg(long, conflicts_with_all = ["shard", "server", "resume"])]
    pub merge_index: bool,
    /// Explain only shard I of N (0-based, `I/N`): a stable share of the inputs by a hash of
    /// their names, so N workers cover a dataset once with no coordination.
    #[arg(long, env = "SCORECAM_SHARD")]
    pub shard: Option<String>,
    /// Images in flight at once (keeps the batches full; with --server, concurrent requests).
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Send the images to a running scorecam server (e.g. http://scorecam:8080) instead of
    /// loading a model here.
    #[arg(long, env = "SCORECAM_SERVER")]
    pub server: Option<String>,
    /// API key for --server.
    #[arg(long, env = "SCORECAM_CLIENT_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// With --server: attempts per image on 429, 502, 503, 504 and connection errors.
    #[arg(long, default_value_t = 10)]
    pub attempts: u32,
    /// When standard error is not a terminal: a progress line every N images.
    #[arg(long, default_value_t = 100)]
    pub log_every: usize,
}

impl ExplainArgs {
    /// A dataset run: anything beyond one image file written to one place.
    pub fn is_dataset(&self) -> bool {
        let d = &self.dataset;
        self.images.len() != 1
            || self.list.is_some()
            || self.images.iter().any(|p| p.is_dir())
            || !d.outputs.is_empty()
            || d.resume
            || d.shard.is_some()
            || d.server.is_some()
    }
}

/// `--method` and every method parameter in the registry, as flags (`--max-channels` for
/// `max_channels`): the CLI follows the registry, so a new method's parameters appear here
/// without an edit.
#[derive(Debug, Clone, Default)]
pub struct MethodFlags {
    pub method: Option<String>,
    /// (parameter name, value) for each parameter flag given.
    pub params: Vec<(String, String)>,
}

impl MethodFlags {
    fn flag(name: &str) -> String {
        name.replace('_', "-")
    }
}

impl FromArgMatches for MethodFlags {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        let params = methods::param_names()
            .into_iter()
            .filter_map(|name| m.get_one::<String>(name).map(|v| (name.to_string(), v.clone())))
            .collect();
        Ok(Self { method: m.get_one::<String>("method").cloned(), params })
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl Args for MethodFlags {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        let names = methods::names().join(", ");
        let mut cmd = cmd.arg(
            Arg::new("method")
                .long("method")
                .value_name("NAME")
                .help(format!("Explanation method: {names} (default scorecam)")),
        );
        for name in methods::param_names() {
            let users: Vec<&str> =
                methods::all().iter().filter(|e| e.params.iter().any(|p| p.name == name)).map(|e| e.name).collect();
            let help = methods::all()
                .iter()
                .flat_map(|e| e.params.iter())
                .find(|p| p.name == name)
                .map(|p| match p.default {
                    // The help of a parameter without a default already says what leaving it out does.
                    "" => format!("{} ({})", p.help, users.join(", ")),
                    default => format!("{} ({}; default {default})", p.help, users.join(", ")),
                })
                .unwrap_or_default();
            cmd = cmd.arg(Arg::new(name).long(Self::flag(name)).value_name("VALUE").help(help));
        }
        cmd
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

/// `serve`'s flags; each overrides the configuration key it is renamed to.
#[derive(Debug, Args, Serialize)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free one; the log says which).
    #[arg(long, env = "SCORECAM_BIND")]
    #[serde(rename = "server.bind", skip_serializing_if = "Option::is_none")]
    pub bind: Option<String>,
    /// Log format: pretty or json.
    #[arg(long, env = "SCORECAM_LOG_FORMAT")]
    #[serde(rename = "server.log_format", skip_serializing_if = "Option::is_none")]
    pub log_format: Option<String>,
    /// Default per-request deadline in milliseconds.
    #[arg(long, env = "SCORECAM_REQUEST_TIMEOUT_MS")]
    #[serde(rename = "server.request_timeout_ms", skip_serializing_if = "Option::is_none")]
    pub request_timeout_ms: Option<u64>,
    /// Largest request body in bytes.
    #[arg(long, env = "SCORECAM_MAX_BODY_BYTES")]
    #[serde(rename = "server.max_body_bytes", skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<usize>,
    /// Jobs scheduled at once.
    #[arg(long, env = "SCORECAM_MAX_CONCURRENT_JOBS")]
    #[serde(rename = "engine.max_concurrent_jobs", skip_serializing_if = "Option::is_none")]
    pub max_concurrent_jobs: Option<usize>,
    /// Jobs admitted but waiting; past this, 429.
    #[arg(long, env = "SCORECAM_MAX_QUEUED_JOBS")]
    #[serde(rename = "engine.max_queued_jobs", skip_serializing_if = "Option::is_none")]
    pub max_queued_jobs: Option<usize>,
    /// File of API keys, one per line (enables authentication).
    #[arg(long, env = "SCORECAM_API_KEYS_FILE")]
    #[serde(rename = "auth.api_keys_file", skip_serializing_if = "Option::is_none")]
    pub api_keys_file: Option<PathBuf>,
    /// API keys, comma-separated (enables authentication; prefer the file).
    #[arg(long, env = "SCORECAM_API_KEYS", hide_env_values = true, value_delimiter = ',')]
    #[serde(rename = "auth.api_keys", skip_serializing_if = "Vec::is_empty")]
    pub api_keys: Vec<String>,
    /// Allowed CORS origins, comma-separated (CORS is off when none).
    #[arg(long, env = "SCORECAM_CORS_ORIGINS", value_delimiter = ',')]
    #[serde(rename = "server.cors_allowed_origins", skip_serializing_if = "Vec::is_empty")]
    pub cors_origins: Vec<String>,
    /// Result cache size in MiB (0: off): a repeated explanation that differs only in how
    /// it is drawn costs no pass.
    #[arg(long, env = "SCORECAM_CACHE_MIB")]
    #[serde(rename = "server.cache_mib", skip_serializing_if = "Option::is_none")]
    pub cache_mib: Option<usize>,
    /// Seconds in-flight work may take to finish after SIGTERM.
    #[arg(long, env = "SCORECAM_SHUTDOWN_GRACE_S")]
    #[serde(rename = "server.shutdown_grace_s", skip_serializing_if = "Option::is_none")]
    pub shutdown_grace_s: Option<u64>,
    /// Milliseconds a client may take to send its request body (408 after).
    #[arg(long, env = "SCORECAM_BODY_READ_TIMEOUT_MS")]
    #[serde(rename = "server.body_read_timeout_ms", skip_serializing_if = "Option::is_none")]
    pub body_read_timeout_ms: Option<u64>,
    /// Seconds between looks at the models folder for added, changed or removed packages
    /// (0: never).
    #[arg(long, env = "SCORECAM_MODELS_POLL_S")]
    #[serde(rename = "models.poll_interval_s", skip_serializing_if = "Option::is_none")]
    pub models_poll_s: Option<u64>,
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
pub struct PreprocessArgs {
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// The model package whose model.toml says how (default: the configured default model).
    #[arg(long)]
    pub model: Option<String>,
    /// The .npy file to write (the images in the order given).
    #[arg(short = 'o', long)]
    pub output: PathBuf,
}

#[derive(Debug, Args)]
pub struct PredictArgs {
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// The model package (default: the configured default model).
    #[arg(long)]
    pub model: Option<String>,
    /// How many classes (a detector: detections) to print; default 5, or fewer when the
    /// model has fewer classes.
    #[arg(long)]
    pub top_k: Option<usize>,
    /// As `explain --exif-orientation`.
    #[arg(long, value_enum)]
    pub exif_orientation: Option<ExifArg>,
    #[command(flatten)]
    pub thresholds: DetectionThresholds,
}

/// A detector's prediction thresholds (default: the package's model.toml).
#[derive(Debug, Default, Args)]
pub struct DetectionThresholds {
    /// A detection model's score threshold: detections scoring less are not predicted
    /// (default: model.toml's `[head] score_threshold`).
    #[arg(long, value_name = "SCORE")]
    pub score_threshold: Option<f32>,
    /// A detection model's NMS threshold: a detection overlapping a better one of its
    /// class by more IoU is dropped (default: model.toml's `[head] iou_threshold`).
    #[arg(long, value_name = "IOU")]
    pub iou_threshold: Option<f32>,
}

impl DetectionThresholds {
    /// The thresholds as request parameters.
    pub fn pairs(&self) -> Vec<(String, String)> {
        [("score_threshold", self.score_threshold), ("iou_threshold", self.iou_threshold)]
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k.to_string(), v.to_string())))
            .collect()
    }
}

#[derive(Debug, Args)]
pub struct EvaluateArgs {
    /// Folder of images.
    pub dir: PathBuf,
    /// Comma-separated methods in the registry's short form (`scorecam:torchcam@64`,
    /// `sscam:35`, `iscam:10`, `ablationcam`, `gradcam`, `reciprocam:gaussian`, `rise:4000`,
    /// see `scorecam methods`) and the floors `random` and `centre` (default: every preset,
    /// sscam, iscam, ablationcam, the gradient family, both Recipro-CAM kernels, RISE,
    /// scorecam@64 and @256, and both floors).
    #[arg(long, value_delimiter = ',')]
    pub methods: Vec<String>,
    /// Only the first N images (by file name).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Every k-th image (a spread-out subset: with 200 images, --every 10 takes 20).
    #[arg(long, default_value_t = 1)]
    pub every: usize,
    /// Table of true classes (`file<TAB>class_index…` with a header); default DIR/index.tsv
    /// when present. Images without a label are explained for their predicted class.
    #[arg(long)]
    pub labels: Option<PathBuf>,
    #[arg(long)]
    pub model: Option<String>,
    /// Where to write results.csv, summary.json, summary.md and curves.png.
    #[arg(short = 'o', long, default_value = "evaluation")]
    pub output: PathBuf,
    /// Seed of the random floor.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}
