//! `scorecam evaluate`: every method over a folder of images, with faithfulness metrics,
//! floors (a random map and a centre Gaussian), and for approximate methods their
//! agreement with the exact map.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::cam::faithfulness::{Faithfulness, STEPS, pearson, top_iou};
use crate::cam::{Method, gaussian_noise};
use crate::service::{
    ExplainRequest, ImageInput, OutputFormat, PredictRequest, Rendering, Resolution, Service, ServiceError, TargetSpec,
    is_image_name, top_k,
};

/// One column of the evaluation: a method, or a map that needs no model (a floor).
#[derive(Clone, Debug)]
pub enum Candidate {
    Method(Method),
    /// Uniform noise: what a map that knows nothing scores.
    Random,
    /// A Gaussian centred on the image (σ = a quarter of the shorter side): the
    /// photographer's bias, which many ImageNet objects share.
    Centre,
}

impl Candidate {
    /// The default set: every preset, the other methods at their defaults, Faster
    /// Score-CAM at 64 and 256 channels, and the two floors.
    pub fn defaults() -> Vec<Candidate> {
        "scorecam:official,scorecam:pytorch_grad_cam,scorecam:torchcam,scorecam:pytorch_cnn_visualizations,sscam,iscam,ablationcam,\
         gradcam,gradcampp,xgradcam,layercam,reciprocam:cell,reciprocam:gaussian,rise:4000,\
         scorecam:official@64,scorecam:official@256,random,centre"
            .split(',')
            .map(|s| s.parse().expect("valid default"))
            .collect()
    }

    /// The method in the registry's short form (`scorecam:official@64`), or the floor's name.
    pub fn label(&self) -> String {
        match self {
            Candidate::Method(m) => m.short(),
            Candidate::Random => "random".into(),
            Candidate::Centre => "centre".into(),
        }
    }

    /// For an approximation, the exact method it approximates.
    pub fn exact(&self) -> Option<Method> {
        match self {
            Candidate::Method(m) => m.exact(),
            _ => None,
        }
    }
}

impl std::str::FromStr for Candidate {
    type Err = String;

    /// A method in the registry's short form, `random` or `centre`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "random" => Ok(Candidate::Random),
            "centre" | "center" => Ok(Candidate::Centre),
            spec => Method::from_short(spec)
                .map(Candidate::Method)
                .map_err(|e| format!("{e} (or the floors random and centre)")),
        }
    }
}

/// A floor's map at the model's input resolution.
pub fn baseline_map(candidate: &Candidate, height: usize, width: usize, seed: u64) -> Option<Vec<f32>> {
    match candidate {
        Candidate::Method(_) => None,
        // |N(0, 1)| is as good a "knows nothing" map as uniform noise, and reproducible.
        Candidate::Random => Some(gaussian_noise(seed, 0, 1.0, height * width).into_iter().map(f32::abs).collect()),
        Candidate::Centre => {
            let sigma = height.min(width) as f32 / 4.0;
            let (cy, cx) = ((height as f32 - 1.0) / 2.0, (width as f32 - 1.0) / 2.0);
            Some(
                (0..height * width)
                    .map(|i| {
                        let (y, x) = ((i / width) as f32 - cy, (i % width) as f32 - cx);
                        (-(x * x + y * y) / (2.0 * sigma * sigma)).exp()
                    })
                    .collect(),
            )
        }
    }
}

/// One image under one candidate.
#[derive(Clone, Debug, Serialize)]
pub struct Record {
    pub image: String,
    pub method: String,
    pub target: usize,
    /// Where the target came from: `label` (the labels file) or `predicted`.
    pub target_source: &'static str,
    pub metrics: Faithfulness,
    /// Passes through the whole model (the clean pass included) and through the head alone.
    pub forward_passes: usize,
    pub head_passes: usize,
    /// Time to the map (metrics excluded), in seconds.
    pub seconds: f64,
    /// Against the exact map, for approximations.
    pub pearson: Option<f32>,
    pub top20_iou: Option<f32>,
}

/// Means over images for one candidate.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub method: String,
    pub images: usize,
    /// ×100, as the Score-CAM paper reports them.
    pub average_drop_pct: f64,
    pub increase_in_confidence_pct: f64,
    pub deletion_auc: f64,
    pub insertion_auc: f64,
    pub forward_passes: f64,
    pub head_passes: f64,
    pub seconds: f64,
    pub pearson: Option<f64>,
    pub top20_iou: Option<f64>,
    pub deletion_curve: Vec<f64>,
    pub insertion_curve: Vec<f64>,
    /// 95 % bootstrap intervals of the four means (`None` with fewer than 2 images).
    pub ci95: Intervals,
}

/// A 95 % percentile bootstrap interval of a mean.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Interval {
    pub low: f64,
    pub high: f64,
}

/// The intervals of the faithfulness means (Average Drop and Increase in Confidence ×100).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Intervals {
    pub average_drop_pct: Option<Interval>,
    pub increase_in_confidence_pct: Option<Interval>,
    pub deletion_auc: Option<Interval>,
    pub insertion_auc: Option<Interval>,
}

/// Resamples of the images per interval. With 2000 the interval's ends move by well under
/// a tenth of its width between seeds.
const BOOTSTRAP: usize = 2000;

/// The four per-image metrics, in `Intervals`' order (AD and IC ×100).
fn metric_values(r: &Record) -> [f64; 4] {
    let m = &r.metrics;
    [
        100.0 * f64::from(m.average_drop),
        100.0 * f64::from(u8::from(m.increase_in_confidence)),
        f64::from(m.deletion_auc),
        f64::from(m.insertion_auc),
    ]
}

/// 95 % percentile bootstrap intervals of the means of each column of `rows` (one row per
/// image): `BOOTSTRAP` resamples of the rows with replacement from a fixed seed, so a run
/// is reproducible; the same resamples serve every column.
fn bootstrap(rows: &[[f64; 4]], seed: u64) -> Intervals {
    let n = rows.len();
    if n < 2 {
        return Intervals::default();
    }
    let mut rng = crate::cam::SplitMix64::new(seed, n as u64);
    let mut means: [Vec<f64>; 4] = Default::default();
    for _ in 0..BOOTSTRAP {
        let mut sum = [0.0f64; 4];
        for _ in 0..n {
            let row = &rows[rng.below(n)];
            sum.iter_mut().zip(row).for_each(|(s, v)| *s += v);
        }
        means.iter_mut().zip(sum).for_each(|(m, s)| m.push(s / n as f64));
    }
    let interval = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        Some(Interval { low: at(0.025), high: at(0.975) })
    };
    let [a, b, c, d] = means;
    Intervals {
        average_drop_pct: interval(a),
        increase_in_confidence_pct: interval(b),
        deletion_auc: interval(c),
        insertion_auc: interval(d),
    }
}

/// One method against a reference on the images both explained: the mean per-image
/// difference (method − reference) of each metric and its 95 % bootstrap interval. An
/// interval that excludes 0 is a difference the sample supports.
#[derive(Clone, Debug, Serialize)]
pub struct Paired {
    pub method: String,
    pub reference: String,
    pub images: usize,
    pub average_drop_pct: f64,
    pub increase_in_confidence_pct: f64,
    pub deletion_auc: f64,
    pub insertion_auc: f64,
    pub ci95: Intervals,
}

/// Every other method paired against `reference` (image by image, same target).
pub fn paired(records: &[Record], reference: &str) -> Vec<Paired> {
    let base: BTreeMap<(&str, usize), [f64; 4]> = records
        .iter()
        .filter(|r| r.method == reference)
        .map(|r| ((r.image.as_str(), r.target), metric_values(r)))
        .collect();
    let mut order: Vec<&str> = Vec::new();
    for r in records {
        if r.method != reference && !order.contains(&r.method.as_str()) {
            order.push(&r.method);
        }
    }
    order
        .into_iter()
        .map(|method| {
            let diffs: Vec<[f64; 4]> = records
                .iter()
                .filter(|r| r.method == method)
                .filter_map(|r| {
                    let b = base.get(&(r.image.as_str(), r.target))?;
                    let v = metric_values(r);
                    Some(std::array::from_fn(|i| v[i] - b[i]))
                })
                .collect();
            let col = |i: usize| mean(diffs.iter().map(|d| d[i]));
            Paired {
                method: method.to_string(),
                reference: reference.to_string(),
                images: diffs.len(),
                average_drop_pct: col(0),
                increase_in_confidence_pct: col(1),
                deletion_auc: col(2),
                insertion_auc: col(3),
                ci95: bootstrap(&diffs, 1),
            }
        })
        .collect()
}

/// The paired comparisons as a Markdown table.
pub fn paired_table(pairs: &[Paired]) -> String {
    let mut out = String::from(
        "| method − reference | images | Δ Average Drop % | Δ Increase in Confidence % | Δ deletion AUC | Δ insertion AUC |\n\
         |---|---:|---:|---:|---:|---:|\n",
    );
    for p in pairs {
        let c = &p.ci95;
        let _ = writeln!(
            out,
            "| {} − {} | {} | {} | {} | {} | {} |",
            p.method,
            p.reference,
            p.images,
            with_interval(p.average_drop_pct, c.average_drop_pct, 2),
            with_interval(p.increase_in_confidence_pct, c.increase_in_confidence_pct, 1),
            with_interval(p.deletion_auc, c.deletion_auc, 4),
            with_interval(p.insertion_auc, c.insertion_auc, 4),
        );
    }
    out
}

/// `v [low, high]` with `digits` decimals; just `v` without an interval.
fn with_interval(v: f64, ci: Option<Interval>, digits: usize) -> String {
    match ci {
        Some(i) => format!("{v:.digits$} [{:.digits$}, {:.digits$}]", i.low, i.high),
        None => format!("{v:.digits$}"),
    }
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if n == 0 { 0.0 } else { sum / n as f64 }
}

/// Per-candidate means, in the order the candidates first appear.
pub fn summarize(records: &[Record]) -> Vec<Summary> {
    let mut order: Vec<String> = Vec::new();
    let mut groups: BTreeMap<String, Vec<&Record>> = BTreeMap::new();
    for r in records {
        if !groups.contains_key(&r.method) {
            order.push(r.method.clone());
        }
        groups.entry(r.method.clone()).or_default().push(r);
    }
    order
        .into_iter()
        .map(|method| {
            let rs = &groups[&method];
            let opt = |f: &dyn Fn(&Record) -> Option<f32>| {
                let v: Vec<f64> = rs.iter().filter_map(|r| f(r)).map(f64::from).collect();
                (!v.is_empty()).then(|| mean(v.into_iter()))
            };
            let curve = |f: &dyn Fn(&Record) -> &Vec<f32>| {
                (0..=STEPS).map(|i| mean(rs.iter().map(|r| f64::from(f(r)[i])))).collect()
            };
            Summary {
                images: rs.len(),
                average_drop_pct: 100.0 * mean(rs.iter().map(|r| f64::from(r.metrics.average_drop))),
                increase_in_confidence_pct: 100.0
                    * mean(rs.iter().map(|r| f64::from(u8::from(r.metrics.increase_in_confidence)))),
                deletion_auc: mean(rs.iter().map(|r| f64::from(r.metrics.deletion_auc))),
                insertion_auc: mean(rs.iter().map(|r| f64::from(r.metrics.insertion_auc))),
                forward_passes: mean(rs.iter().map(|r| r.forward_passes as f64)),
                head_passes: mean(rs.iter().map(|r| r.head_passes as f64)),
                seconds: mean(rs.iter().map(|r| r.seconds)),
                pearson: opt(&|r| r.pearson),
                top20_iou: opt(&|r| r.top20_iou),
                deletion_curve: curve(&|r| &r.metrics.deletion_curve),
                insertion_curve: curve(&|r| &r.metrics.insertion_curve),
                ci95: bootstrap(&rs.iter().map(|r| metric_values(r)).collect::<Vec<_>>(), 0),
                method,
            }
        })
        .collect()
}

/// The summary as a Markdown table.
pub fn markdown_table(summaries: &[Summary]) -> String {
    let mut out = String::from(
        "| method | images | Average Drop % ↓ | Increase in Confidence % ↑ | deletion AUC ↓ | insertion AUC ↑ | \
         forward passes | head passes | s / image | Pearson vs exact | top-20% IoU vs exact |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let opt = |v: Option<f64>| v.map_or("—".to_string(), |v| format!("{v:.3}"));
    for s in summaries {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {:.0} | {:.0} | {:.2} | {} | {} |",
            s.method,
            s.images,
            with_interval(s.average_drop_pct, s.ci95.average_drop_pct, 2),
            with_interval(s.increase_in_confidence_pct, s.ci95.increase_in_confidence_pct, 1),
            with_interval(s.deletion_auc, s.ci95.deletion_auc, 4),
            with_interval(s.insertion_auc, s.ci95.insertion_auc, 4),
            s.forward_passes,
            s.head_passes,
            s.seconds,
            opt(s.pearson),
            opt(s.top20_iou)
        );
    }
    out
}

/// Per-image records as CSV.
pub fn records_csv(records: &[Record]) -> String {
    let mut out = String::from(
        "image,method,target,target_source,average_drop,increase_in_confidence,deletion_auc,insertion_auc,\
         clean_probability,masked_probability,forward_passes,head_passes,seconds,pearson,top20_iou\n",
    );
    let opt = |v: Option<f32>| v.map_or(String::new(), |v| format!("{v:.6}"));
    for r in records {
        let m = &r.metrics;
        let _ = writeln!(
            out,
            "\"{}\",{},{},{},{:.6},{},{:.6},{:.6},{:.6},{:.6},{},{},{:.4},{},{}",
            r.image.replace('"', "\"\""),
            r.method,
            r.target,
            r.target_source,
            m.average_drop,
            u8::from(m.increase_in_confidence),
            m.deletion_auc,
            m.insertion_auc,
            m.clean_probability,
            m.masked_probability,
            r.forward_passes,
            r.head_passes,
            r.seconds,
            opt(r.pearson),
            opt(r.top20_iou)
        );
    }
    out
}

/// Class indices by file name from a `file<TAB>class_index[<TAB>label]` table with a header
/// (the layout of the sample images' `index.tsv`).
pub fn read_labels(path: &Path) -> Result<BTreeMap<String, usize>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut labels = BTreeMap::new();
    for (n, line) in text.lines().enumerate().skip(1) {
        let mut cols = line.split('\t');
        let (Some(file), Some(class)) = (cols.next(), cols.next()) else { continue };
        let class = class.trim().parse().map_err(|_| format!("{}:{}: bad class index", path.display(), n + 1))?;
        labels.insert(file.trim().to_string(), class);
    }
    Ok(labels)
}

/// Image files of a folder, sorted by name.
pub fn list_images(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| is_image_name(p))
        .collect();
    files.sort();
    Ok(files)
}

/// What one evaluation run does.
pub struct EvaluationConfig {
    pub model: String,
    pub candidates: Vec<Candidate>,
    pub labels: BTreeMap<String, usize>,
    pub seed: u64,
}

/// Evaluates one image under every candidate; `done` is called after each.
pub async fn evaluate_image(
    service: &Service,
    config: &EvaluationConfig,
    path: &Path,
    mut done: impl FnMut(),
) -> Result<Vec<Record>, String> {
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let err = |e: ServiceError| format!("{name}: {e}");
    let bytes: Arc<[u8]> = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?.into();
    let input = service.preprocess(&config.model, ImageInput::Encoded(bytes)).await.map_err(err)?;
    let request = PredictRequest { model: Some(config.model.clone()), ..Default::default() };
    let clean = service.classify(&request, ImageInput::Tensor(input.clone())).await.map_err(err)?;
    let (target, source) = match config.labels.get(&name) {
        Some(&class) => (class, "label"),
        None => (top_k(&clean.logits, 1)[0], "predicted"),
    };
    let (_, details) = service.ready_model(&config.model).map_err(err)?;
    let mut image = ImageRun {
        service,
        config,
        name: name.clone(),
        input,
        target,
        source,
        size: (details.input.height, details.input.width),
        maps: BTreeMap::new(),
    };
    let mut records = Vec::new();
    for candidate in &config.candidates {
        let record = match candidate {
            Candidate::Method(method) => image.method_record(candidate, method).await,
            floor => image.floor_record(floor).await,
        };
        records.push(record.map_err(|e| format!("{name}: {e}"))?);
        done();
    }
    Ok(records)
}

/// One image's evaluation: its input, its target, and the maps computed so far (each
/// approximation is compared with its exact method's map, computed once).
struct ImageRun<'a> {
    service: &'a Service,
    config: &'a EvaluationConfig,
    name: String,
    input: Vec<f32>,
    target: usize,
    source: &'static str,
    size: (usize, usize),
    maps: BTreeMap<String, Vec<f32>>,
}

impl ImageRun<'_> {
    /// The method's explanation of the target, with its metrics.
    async fn explain(&self, method: Method) -> Result<crate::service::Explanation, ServiceError> {
        let request = ExplainRequest {
            model: Some(self.config.model.clone()),
            targets: TargetSpec::Classes(vec![self.target]),
            method,
            metrics: true,
            rendering: Rendering { format: OutputFormat::Json, resolution: Resolution::Model, ..Default::default() },
            ..Default::default()
        };
        self.service.explain_unrendered(request, ImageInput::Tensor(self.input.clone()), None).await
    }

    /// A method's record: its metrics, passes and time, and how close it is to its exact
    /// method's map when it approximates one.
    async fn method_record(&mut self, candidate: &Candidate, method: &Method) -> Result<Record, String> {
        let t = Instant::now();
        let outcome = self.explain(method.clone()).await.map_err(|e| e.to_string())?;
        let seconds = t.elapsed().as_secs_f64() - outcome.timings.metrics_ms / 1e3;
        let map = outcome.maps[0].input.data.clone();
        let (pearson, top20_iou) = match candidate.exact() {
            Some(exact) => {
                let key = Candidate::Method(exact.clone()).label();
                if !self.maps.contains_key(&key) {
                    let o = self.explain(exact).await.map_err(|e| e.to_string())?;
                    self.maps.insert(key.clone(), o.maps[0].input.data.clone());
                }
                let reference = &self.maps[&key];
                (Some(pearson(&map, reference)), Some(top_iou(&map, reference, 0.2)))
            }
            None => (None, None),
        };
        self.maps.insert(candidate.label(), map);
        let metrics = outcome.metrics.and_then(|m| m.into_iter().next()).ok_or("no metrics returned")?;
        Ok(Record {
            image: self.name.clone(),
            method: candidate.label(),
            target: self.target,
            target_source: self.source,
            metrics,
            forward_passes: outcome.stats.forward_passes,
            head_passes: outcome.stats.head_passes,
            seconds,
            pearson,
            top20_iou,
        })
    }

    /// A floor's record: its map's metrics.
    async fn floor_record(&self, floor: &Candidate) -> Result<Record, String> {
        // A different random map per image, the same on every run.
        let seed = self.config.seed
            ^ self
                .name
                .bytes()
                .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
        let map = baseline_map(floor, self.size.0, self.size.1, seed).ok_or("a floor has a map")?;
        let (figures, _) = self
            .service
            .evaluate_maps(&self.config.model, self.input.clone(), vec![map], &[self.target])
            .await
            .map_err(|e| e.to_string())?;
        Ok(Record {
            image: self.name.clone(),
            method: floor.label(),
            target: self.target,
            target_source: self.source,
            metrics: figures.into_iter().next().ok_or("no metrics returned")?,
            forward_passes: 0,
            head_passes: 0,
            seconds: 0.0,
            pearson: None,
            top20_iou: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidate_names_parse_and_print_back() {
        for s in
            ["scorecam:official", "scorecam:torchcam@64", "sscam:35", "iscam:10", "ablationcam", "random", "centre"]
        {
            assert_eq!(s.parse::<Candidate>().unwrap().label(), s);
        }
        assert_eq!("scorecam".parse::<Candidate>().unwrap().label(), "scorecam:official");
        assert_eq!("sscam".parse::<Candidate>().unwrap().label(), "sscam:35");
        for bad in ["nosuchcam", "sscam@64", "random:3", "scorecam:nope", "iscam:x", "scorecam@x"] {
            assert!(bad.parse::<Candidate>().is_err(), "{bad}");
        }
        assert_eq!(Candidate::defaults().len(), 18);
    }

    #[test]
    fn approximations_know_their_exact_method() {
        let fast: Candidate = "scorecam:torchcam@64".parse().unwrap();
        assert_eq!(fast.exact().map(|m| m.short()), Some("scorecam:torchcam".to_string()));
        assert_eq!("scorecam".parse::<Candidate>().unwrap().exact(), None);
    }

    #[test]
    fn the_centre_floor_peaks_in_the_middle() {
        let m = baseline_map(&Candidate::Centre, 5, 5, 0).unwrap();
        let peak = m.iter().copied().fold(0.0, f32::max);
        assert_eq!(m[12], peak);
        assert!(m[0] < m[6] && m[6] < m[12]);
        let r = baseline_map(&Candidate::Random, 4, 4, 1).unwrap();
        assert!(r.iter().all(|v| *v >= 0.0));
        assert_ne!(r, baseline_map(&Candidate::Random, 4, 4, 2).unwrap());
    }

    fn record(method: &str, drop: f32, increase: bool, del: f32) -> Record {
        Record {
            image: "a".into(),
            method: method.into(),
            target: 0,
            target_source: "label",
            metrics: Faithfulness {
                average_drop: drop,
                increase_in_confidence: increase,
                deletion_auc: del,
                insertion_auc: 0.5,
                clean_probability: 0.9,
                masked_probability: 0.5,
                deletion_curve: vec![del; STEPS + 1],
                insertion_curve: vec![0.5; STEPS + 1],
            },
            forward_passes: 10,
            head_passes: 0,
            seconds: 1.0,
            pearson: None,
            top20_iou: None,
        }
    }

    #[test]
    fn summaries_average_per_method_in_first_seen_order() {
        let rs = [record("b", 0.2, true, 0.1), record("a", 0.5, false, 0.3), record("b", 0.4, false, 0.3)];
        let s = summarize(&rs);
        assert_eq!(s.iter().map(|s| s.method.as_str()).collect::<Vec<_>>(), ["b", "a"]);
        assert!((s[0].average_drop_pct - 30.0).abs() < 1e-4);
        assert!((s[0].increase_in_confidence_pct - 50.0).abs() < 1e-9);
        assert!((s[0].deletion_auc - 0.2).abs() < 1e-6);
        assert!((s[0].deletion_curve[3] - 0.2).abs() < 1e-6);
        assert_eq!(s[1].images, 1);
        // Two images: each interval is spanned by the resampled means of the two values.
        assert!(
            markdown_table(&s).contains("| b | 2 | 30.00 [20.00, 40.00] | 50.0 [0.0, 100.0] |"),
            "{}",
            markdown_table(&s)
        );
        assert!(markdown_table(&s).contains("| a | 1 | 50.00 | 0.0 |"), "one image has no interval");
        assert_eq!(records_csv(&rs).lines().count(), 4);
    }

    #[test]
    fn bootstrap_intervals_are_reproducible_and_as_wide_as_the_standard_error() {
        // 400 images, half with a deletion AUC of 0 and half of 1: mean 0.5, standard error
        // 0.5 / √400 = 0.025, so the 95 % interval is about 0.5 ± 1.96 · 0.025.
        let rows: Vec<[f64; 4]> =
            (0..400).map(|i| [1.0, 0.0, f64::from(i % 2), f64::from((i * 37) % 101) / 100.0]).collect();
        let ci = bootstrap(&rows, 0);
        let d = ci.deletion_auc.unwrap();
        assert!((d.low - 0.451).abs() < 0.01 && (d.high - 0.549).abs() < 0.01, "{d:?}");
        assert_eq!(ci.average_drop_pct, Some(Interval { low: 1.0, high: 1.0 }), "a constant has no spread");
        assert_eq!(bootstrap(&rows, 0), ci);
        // Another seed, other resamples (the 0/1 column's means fall on a 1/400 grid, so the
        // spread column shows it).
        assert_ne!(bootstrap(&rows, 7).insertion_auc, ci.insertion_auc);
        assert_eq!(bootstrap(&rows[..1], 0), Intervals::default());
    }

    #[test]
    fn paired_comparisons_match_images_and_targets() {
        let at = |image: &str, method: &str, drop: f32, del: f32| Record {
            image: image.into(),
            ..record(method, drop, false, del)
        };
        let rs = [
            at("a", "ref", 0.5, 0.2),
            at("b", "ref", 0.3, 0.4),
            at("a", "m", 0.4, 0.3),
            at("b", "m", 0.2, 0.5),
            // Only in `m`: not paired.
            at("c", "m", 0.9, 0.9),
        ];
        let p = paired(&rs, "ref");
        assert_eq!(p.len(), 1);
        assert_eq!((p[0].method.as_str(), p[0].reference.as_str(), p[0].images), ("m", "ref", 2));
        // m − ref: Average Drop −10 points on both images, deletion AUC +0.1 on both.
        assert!((p[0].average_drop_pct + 10.0).abs() < 1e-4);
        assert!((p[0].deletion_auc - 0.1).abs() < 1e-6);
        let ad = p[0].ci95.average_drop_pct.unwrap();
        assert!((ad.low + 10.0).abs() < 1e-4 && (ad.high + 10.0).abs() < 1e-4, "{ad:?}");
        assert!(paired_table(&p).contains("| m − ref | 2 | -10.00 [-10.00, -10.00] |"), "{}", paired_table(&p));
    }

    #[test]
    fn labels_come_from_a_tab_separated_index() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("index.tsv");
        std::fs::write(&p, "file\tclass_index\tlabel\nn1_tench.JPEG\t0\ttench\nb.png\t5\tx\n").unwrap();
        let l = read_labels(&p).unwrap();
        assert_eq!(l["n1_tench.JPEG"], 0);
        assert_eq!(l["b.png"], 5);
    }
}
