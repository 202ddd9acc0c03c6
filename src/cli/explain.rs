//! `scorecam explain IMAGE` and `scorecam predict`: files in, files (or lines) out, through
//! the same request parsing and service calls as the HTTP API (a dataset run: `dataset`).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::CliError;
use super::args::{ExplainArgs, FormatArg, PredictArgs};
use crate::service::{
    ExifOrientation, ExplainRequest, ImageInput, ImageLimits, Params, Progress, ReferenceSpec, RegionSpec, Rendered,
    Service, parse_box, parse_reference, region_mask,
};

fn read(path: &Path) -> Result<ImageInput, CliError> {
    std::fs::read(path).map(|b| ImageInput::Encoded(b.into())).map_err(CliError::io(path))
}

/// The flags as the parameters an HTTP request would carry, less the rendering's typed
/// values (`rendering` gives those; a dataset run's client sends the resolution itself).
pub(super) fn params(args: &ExplainArgs) -> Params {
    let mut pairs: Vec<(String, String)> = args.targets.iter().map(|t| ("target".into(), t.to_string())).collect();
    let mut put = |k: &str, v: String| pairs.push((k.into(), v));
    if let Some(m) = &args.model {
        put("model", m.clone());
    }
    if let Some(k) = args.top_k {
        put("top_k", k.to_string());
    }
    if let Some(m) = &args.method.method {
        put("method", m.clone());
    }
    put("metrics", args.metrics.to_string());
    if let Some(n) = args.max_passes {
        put("max_passes", n.to_string());
    }
    put("alpha", args.alpha.to_string());
    if let Some(b) = &args.bbox {
        put("box", b.clone());
    }
    if let Some(n) = args.detection {
        put("detection", n.to_string());
    }
    if let Some(rule) = &args.box_score {
        put("box_score", rule.clone());
    }
    if let Some(e) = args.exif_orientation {
        put("exif_orientation", ExifOrientation::from(e).as_str().to_string());
    }
    pairs.extend(args.thresholds.pairs());
    pairs.extend(args.method.params.iter().cloned());
    pairs.into_iter().collect()
}

fn output_path(args: &ExplainArgs, image: &Path) -> PathBuf {
    let ext = if args.format == FormatArg::Json { "json" } else { "png" };
    let name = format!("{}.scorecam.{ext}", image.file_stem().and_then(|s| s.to_str()).unwrap_or("image"));
    match &args.output {
        Some(o) if !o.is_dir() => o.clone(),
        Some(dir) => dir.join(name),
        None => PathBuf::from(name),
    }
}

/// The request the flags make: the parameters parsed as the HTTP API parses them, the
/// rendering from the typed flags.
pub(super) fn request(args: &ExplainArgs, limits: &ImageLimits) -> Result<ExplainRequest, CliError> {
    let mut request = params(args).explain_request(false)?;
    let r = &mut request.rendering;
    (r.format, r.resolution, r.colormap) = (args.format.into(), args.resolution.into(), args.colormap.into());
    if let Some(region) = &args.region {
        request.region = Some(region_arg(region, limits)?);
    }
    if let Some(path) = &args.reference {
        request.reference = Some(reference_arg(path)?);
    }
    Ok(request)
}

/// `--region`: a box, or a mask image file.
fn region_arg(text: &str, limits: &ImageLimits) -> Result<RegionSpec, CliError> {
    let path = Path::new(text);
    if !path.exists() && text.contains(',') {
        return Ok(parse_box(text)?);
    }
    let bytes = std::fs::read(path).map_err(CliError::io(path))?;
    Ok(region_mask(&bytes, limits)?)
}

/// `--reference`: a vector file (`.npy`, `.json`) or a photo.
fn reference_arg(path: &Path) -> Result<ReferenceSpec, CliError> {
    let bytes = std::fs::read(path).map_err(CliError::io(path))?;
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    match ext.as_str() {
        "npy" => npy_vector(&bytes)
            .map(|v| ReferenceSpec::Vector(v.into()))
            .map_err(|e| CliError::Invalid(format!("{}: {e}", path.display()))),
        "json" => Ok(parse_reference(&String::from_utf8_lossy(&bytes))?),
        _ => Ok(ReferenceSpec::Image(ImageInput::Encoded(bytes.into()))),
    }
}

/// A 1-D little-endian float32 or float64 array from a `.npy` file (format 1.0–3.0).
fn npy_vector(bytes: &[u8]) -> Result<Vec<f32>, String> {
    let bad = || "not a .npy file of one float32/float64 vector (np.save(path, v.astype(np.float32)))".to_string();
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad());
    }
    let (len_bytes, start) = if bytes[6] == 1 { (2, 8) } else { (4, 8) };
    let header_len = bytes[start..start + len_bytes].iter().rev().fold(0usize, |n, &b| n * 256 + usize::from(b));
    let data_at = start + len_bytes + header_len;
    let header = std::str::from_utf8(bytes.get(start + len_bytes..data_at).ok_or_else(bad)?).map_err(|_| bad())?;
    let data = &bytes[data_at..];
    let width = if header.contains("'<f4'") {
        4
    } else if header.contains("'<f8'") {
        8
    } else {
        return Err(bad());
    };
    if header.contains("'fortran_order': True") || !data.len().is_multiple_of(width) {
        return Err(bad());
    }
    Ok(data
        .chunks_exact(width)
        .map(|c| match c.try_into() {
            Ok(b4) => f32::from_le_bytes(b4),
            Err(_) => f64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32,
        })
        .collect())
}

pub async fn explain(service: &Service, args: ExplainArgs) -> Result<(), CliError> {
    let request = request(&args, service.limits())?;
    let model = service.model(request.model.as_deref())?;
    eprintln!("model: {}", model.name());
    let to_stdout = args.output.as_deref() == Some(Path::new("-"));
    for image in &args.images {
        let progress = Arc::new(Progress::default());
        let bar = ProgressBar::start(progress.clone(), &image.display().to_string());
        let result = service.explain(request.clone(), read(image)?, Some(progress)).await;
        bar.finish().await;
        let rendered = result.map_err(|source| CliError::Input { path: image.clone(), source })?;
        let summary = summary(&rendered);
        let bytes = match rendered {
            Rendered::Json(doc) => serde_json::to_vec(&doc).map_err(|e| CliError::Invalid(e.to_string()))?,
            Rendered::Png(img) => img.png,
        };
        if to_stdout {
            use std::io::Write;
            std::io::stdout().write_all(&bytes).map_err(CliError::io("standard output"))?;
            eprintln!("{} -> standard output: {summary}", image.display());
        } else {
            let out = output_path(&args, image);
            std::fs::write(&out, bytes).map_err(CliError::io(&out))?;
            eprintln!("{} -> {}: {summary}", image.display(), out.display());
        }
    }
    Ok(())
}

pub async fn predict(service: &Service, args: PredictArgs) -> Result<(), CliError> {
    for image in &args.images {
        // The flags as request parameters: checked as an HTTP request's are.
        let mut pairs = args.thresholds.pairs();
        pairs.extend(args.model.iter().map(|m| ("model".to_string(), m.clone())));
        pairs.extend(args.top_k.map(|k| ("top_k".to_string(), k.to_string())));
        if let Some(e) = args.exif_orientation {
            pairs.push(("exif_orientation".into(), ExifOrientation::from(e).as_str().to_string()));
        }
        let request = pairs
            .into_iter()
            .collect::<Params>()
            .predict_request()
            .map_err(|source| CliError::Input { path: image.clone(), source })?;
        let doc = service
            .predict(request, read(image)?)
            .await
            .map_err(|source| CliError::Input { path: image.clone(), source })?;
        println!("{}", image.display());
        for p in doc.predictions {
            println!("  {:>4}  {:.4}  {}", p.index, p.score, p.label);
        }
        for d in doc.detections.unwrap_or_default() {
            let [x1, y1, x2, y2] = d.bbox;
            println!("  box {x1:.1},{y1:.1},{x2:.1},{y2:.1}  {:>4}  {:.4}  {}", d.index, d.score, d.label);
        }
        if let Some(e) = doc.embedding {
            println!("  embedding of {} values, norm {:.4}", e.dim, e.norm);
        }
    }
    Ok(())
}

/// One line for stderr, whatever the output: model, the first target's class, label and
/// probability, passes and time, the coverage of a partial map, the metrics, the cache.
fn summary(rendered: &Rendered) -> String {
    let (model, target, stats, ms, metrics) = match rendered {
        Rendered::Json(d) => {
            let first = d.explanations.first();
            (
                &d.model,
                first.map(|e| &e.target),
                &d.stats,
                d.timings_ms.total_ms,
                first.and_then(|e| e.metrics.as_ref()),
            )
        }
        Rendered::Png(p) => {
            let s = &p.summary;
            (&s.model, Some(&s.target), &s.stats, s.timings_ms.total_ms, s.metrics.as_ref())
        }
    };
    let mut line = format!("{model}: ");
    if let Some(t) = target {
        line += &format!("class {} ({}) p={:.4}, ", t.index, t.label, t.score);
    }
    line += &format!("{} passes in {:.0} ms", stats.forward_passes, ms);
    if let Some(c) = &stats.coverage {
        line += &format!(" ({}/{} of the plan, estimated mass {:.3})", c.passes_done, c.passes_total, c.estimated_mass);
    }
    if let Some(m) = metrics {
        line += &format!(
            "; average drop {:.1}%, increase in confidence {}, deletion AUC {:.4}, insertion AUC {:.4}",
            100.0 * m.average_drop,
            m.increase_in_confidence,
            m.deletion_auc,
            m.insertion_auc
        );
    }
    line + &format!(", cache {}", stats.cache.as_str())
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
