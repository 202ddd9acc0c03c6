//! `model.toml`: how to feed the model and what its target layer is.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::ModelError;
use crate::cam::{Activation, DetectionFormat, Detector, HeadKind, MapLayout};

/// The largest input side accepted; bigger models are not what this service is for and
/// would make masked batches allocate without bound.
const MAX_SIDE: u32 = 4096;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub description: String,
    pub source: String,
    pub license: String,
    pub input: InputSpec,
    pub target_layer: TargetLayer,
    /// What the head returns (optional: a softmax classifier when absent).
    #[serde(default)]
    pub head: HeadSpec,
    /// `[quantization]`: the package is an approximation of another (its graphs quantised),
    /// with the measured fidelity of its maps to that package's. Absent: an exact package.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantization: Option<Quantization>,
    /// `[engine]`: how this model runs fastest on the CPU, as measured when the package was
    /// made (`scripts/tools/split_model.py --measure-batch`). Absent: the engine's defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<MeasuredEngine>,
}

/// The largest batch a package may ask for (the engine's own setting has no bound; this one
/// comes from a file that travels with the model).
pub const MAX_MEASURED_BATCH: usize = 1024;

/// `[engine]`: how this model ran fastest on the CPU when its package was made. The engine
/// uses `max_batch_size` as the model's batch size unless `engine.models.NAME.max_batch_size`
/// is configured, and only when the model runs on the CPU (see `EngineConfig::batch_of`);
/// `flush_denormals` unless `engine.session.flush_denormals` is configured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeasuredEngine {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_batch_size: Option<usize>,
    /// Treat subnormal floats as zero (measured faster, with the same outputs).
    #[serde(default)]
    pub flush_denormals: bool,
    /// How it was measured (free text: the machine, the layout, the figures).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub measured: String,
}

impl MeasuredEngine {
    fn check(&self) -> Result<(), String> {
        if let Some(b) = self.max_batch_size.filter(|b| !(1..=MAX_MEASURED_BATCH).contains(b)) {
            return Err(format!("engine.max_batch_size = {b} must be in 1..={MAX_MEASURED_BATCH}"));
        }
        Ok(())
    }
}

/// `[quantization]`: how the package was made from another one and how close its maps are
/// to that package's (what `scripts/tools/quantize_int8.py` measured and wrote).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quantization {
    /// `int8` (the only kind today): ONNX Runtime static quantisation.
    pub kind: QuantizationKind,
    /// The package whose maps this one approximates (its folder name).
    pub reference: String,
    /// Which graphs were quantised and how (free text, e.g. "extractor: QDQ, per-channel").
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub method: String,
    /// Photos the quantisation was calibrated on.
    pub calibration_photos: u32,
    /// The maps of this package against the reference's.
    pub fidelity: Fidelity,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuantizationKind {
    Int8,
}

/// Score-CAM maps of the quantised package against the reference package's, each photo
/// explained for the reference's top class by both.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fidelity {
    /// Photos compared.
    pub photos: u32,
    /// Whether those photos were left out of the calibration (false: the calibration photos).
    pub held_out: bool,
    /// The Score-CAM preset the maps were drawn with.
    pub preset: String,
    /// Pearson r between the two maps: mean and least over the photos.
    pub pearson_mean: f64,
    pub pearson_min: f64,
    /// IoU of the two maps' top-20 % pixels: mean and least.
    pub top20_iou_mean: f64,
    pub top20_iou_min: f64,
    /// The photo with the least Pearson r.
    pub worst_photo: String,
    /// Photos on which both packages' top-1 classes agree.
    pub top1_agree: u32,
    /// The least mean Pearson r the tool accepted, and whether it was overridden (`--force`)
    /// to write a package below it.
    pub min_pearson_mean: f64,
    #[serde(default)]
    pub forced: bool,
}

impl Quantization {
    fn check(&self) -> Result<(), String> {
        if self.reference.trim().is_empty() {
            return Err("quantization.reference must name the package the maps were compared with".into());
        }
        let f = &self.fidelity;
        if f.photos == 0 {
            return Err("quantization.fidelity.photos must be at least 1".into());
        }
        if f.top1_agree > f.photos {
            return Err(format!(
                "quantization.fidelity.top1_agree = {} exceeds fidelity.photos = {}",
                f.top1_agree, f.photos
            ));
        }
        let ranges = [
            ("pearson_mean", f.pearson_mean, -1.0),
            ("pearson_min", f.pearson_min, -1.0),
            ("min_pearson_mean", f.min_pearson_mean, -1.0),
            ("top20_iou_mean", f.top20_iou_mean, 0.0),
            ("top20_iou_min", f.top20_iou_min, 0.0),
        ];
        for (name, v, low) in ranges {
            if !v.is_finite() || v < low || v > 1.0 {
                return Err(format!("quantization.fidelity.{name} = {v} must be in {low}..=1"));
            }
        }
        for (what, min, mean) in
            [("pearson", f.pearson_min, f.pearson_mean), ("top20_iou", f.top20_iou_min, f.top20_iou_mean)]
        {
            if min > mean {
                return Err(format!("quantization.fidelity.{what}_min = {min} exceeds {what}_mean = {mean}"));
            }
        }
        if f.pearson_mean < f.min_pearson_mean && !f.forced {
            return Err(format!(
                "quantization.fidelity.pearson_mean = {} is below min_pearson_mean = {} and forced is not set",
                f.pearson_mean, f.min_pearson_mean
            ));
        }
        Ok(())
    }
}

/// `[head]`: the kind of output the head graph returns: `classes` (one logit per class),
/// `segmentation` (per-pixel class logits), `embedding` (a vector) or `detection` (raw
/// proposals), with what each kind needs to be read.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HeadSpec {
    pub kind: HeadKindName,
    /// `softmax` (one class per image or pixel) or `sigmoid` (multi-label, one-logit binary).
    pub activation: Activation,
    /// A segmentation output's layout: `nchw` (N×C×H×W, the default) or `nhwc`.
    pub layout: MapLayout,
    /// A detector's output format (`yolo_v8`, `yolo_v5`, `boxes` or `torchvision`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<DetectionFormat>,
    /// A detector's class scores (and objectness): `probabilities` as they are, or
    /// `logits` that need a sigmoid.
    pub scores: ScoreScale,
    /// A detector's default thresholds for predictions (non-maximum suppression).
    pub score_threshold: f32,
    pub iou_threshold: f32,
}

impl Default for HeadSpec {
    fn default() -> Self {
        Self {
            kind: HeadKindName::Classes,
            activation: Activation::Softmax,
            layout: MapLayout::Nchw,
            format: None,
            scores: ScoreScale::Probabilities,
            score_threshold: 0.25,
            iou_threshold: 0.45,
        }
    }
}

/// Whether a detector's scores are probabilities already.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScoreScale {
    #[default]
    Probabilities,
    Logits,
}

/// The head kinds a manifest may name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeadKindName {
    #[default]
    Classes,
    Segmentation,
    Embedding,
    Detection,
}

impl HeadSpec {
    /// The head as the methods see it, given the shapes of the graph's outputs for one
    /// image (without the batch axis) and the labels file's length, or why they do not
    /// fit the kind.
    pub fn kind(self, outputs: &[Vec<usize>], labels: usize) -> Result<HeadKind, String> {
        let activation = self.activation;
        let first = outputs.first().map(Vec::as_slice).unwrap_or(&[]);
        let want = |what: &str| format!("a {} head outputs {what}", self.kind.name());
        match self.kind {
            HeadKindName::Classes => Ok(HeadKind::Classes { classes: first.iter().product(), activation }),
            HeadKindName::Embedding => Ok(HeadKind::Embedding { dim: first.iter().product() }),
            HeadKindName::Segmentation => {
                let &[a, b, c] = first else { return Err(want("[N, C, H, W] (or [N, H, W, C])")) };
                let (classes, height, width) = match self.layout {
                    MapLayout::Nchw => (a, b, c),
                    MapLayout::Nhwc => (c, a, b),
                };
                Ok(HeadKind::Segmentation { classes, height, width, layout: self.layout, activation })
            }
            HeadKindName::Detection => self.detector(outputs, labels).map(HeadKind::Detection),
        }
    }

    /// A detector's proposals and classes from its output shapes (a labelled format's
    /// classes from its labels).
    fn detector(self, outputs: &[Vec<usize>], labels: usize) -> Result<Detector, String> {
        let format = self.format.ok_or(
            "head.kind = \"detection\" needs head.format = \"yolo_v8\", \"yolo_v5\", \"boxes\" or \"torchvision\"",
        )?;
        let logits = self.scores == ScoreScale::Logits;
        let shapes: Vec<&[usize]> = outputs.iter().map(Vec::as_slice).collect();
        let (classes, proposals) = match (format, shapes.as_slice()) {
            (DetectionFormat::YoloV8, [[attrs, anchors], ..]) if *attrs > 4 => (attrs - 4, *anchors),
            (DetectionFormat::YoloV5, [[anchors, attrs], ..]) if *attrs > 5 => (attrs - 5, *anchors),
            (DetectionFormat::Boxes, [[k, 4], [k2, classes], ..]) if k == k2 && *classes > 0 => (*classes, *k),
            (DetectionFormat::Torchvision, [[k, 4], [k2], [k3], ..]) if k == k2 && k == k3 && labels > 0 => {
                (labels, *k)
            }
            (DetectionFormat::YoloV8, _) => return Err("a yolo_v8 head outputs [N, 4 + classes, anchors]".into()),
            (DetectionFormat::YoloV5, _) => return Err("a yolo_v5 head outputs [N, anchors, 5 + classes]".into()),
            (DetectionFormat::Boxes, _) => {
                return Err("a boxes head outputs boxes [N, K, 4] then scores [N, K, classes]".into());
            }
            (DetectionFormat::Torchvision, _) => {
                return Err("a torchvision head outputs boxes [N, K, 4], labels [N, K] and scores [N, K], and its \
                            classes are the lines of labels.txt"
                    .into());
            }
        };
        Ok(Detector { format, classes, proposals, logits })
    }

    /// The rank of the head graph's (first) output, batch included.
    pub fn output_rank(self) -> usize {
        match self.kind {
            HeadKindName::Segmentation => 4,
            HeadKindName::Detection => 3,
            HeadKindName::Classes | HeadKindName::Embedding => 2,
        }
    }

    /// How many of the head graph's outputs make its output (a boxes detector's boxes
    /// and scores, a torchvision detector's boxes, labels and scores; one for every other
    /// kind).
    pub fn outputs(self) -> usize {
        match self.format {
            Some(DetectionFormat::Boxes) if self.kind == HeadKindName::Detection => 2,
            Some(DetectionFormat::Torchvision) if self.kind == HeadKindName::Detection => 3,
            _ => 1,
        }
    }
}

impl HeadKindName {
    pub fn name(self) -> &'static str {
        match self {
            HeadKindName::Classes => "classes",
            HeadKindName::Segmentation => "segmentation",
            HeadKindName::Embedding => "embedding",
            HeadKindName::Detection => "detection",
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResizeMode {
    /// The whole image is resized to width×height (aspect ratio not kept), so the map
    /// covers the whole upload.
    #[default]
    Stretch,
    /// The shorter side is resized to `crop_from`, then the centre width×height is cut;
    /// the map covers that crop and is zero outside it.
    ShorterSideCrop,
    /// The aspect ratio is kept: scaled by min(width/w, height/h) (the new size rounded
    /// half to even, as Python's `round`), centred (the offset floored) and padded with
    /// `pad_value`: Ultralytics' letterbox. The map covers the whole upload.
    Letterbox,
}

/// What the model is fed of a photo whose EXIF tag says it is stored rotated or flipped.
/// Either way the maps are drawn on the photo as a viewer shows it (upright).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExifOrientation {
    /// The photo turned upright first (what a gallery shows; Pillow's
    /// `ImageOps.exif_transpose`). The default of packages that do not say.
    #[default]
    Apply,
    /// The pixels as stored: what `PIL.Image.open` and torchvision's transforms give, and so
    /// what pytorch-grad-cam's users compare against. The split tool writes this.
    Ignore,
}

impl ExifOrientation {
    pub fn as_str(self) -> &'static str {
        match self {
            ExifOrientation::Apply => "apply",
            ExifOrientation::Ignore => "ignore",
        }
    }
}

impl std::str::FromStr for ExifOrientation {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "apply" => Ok(Self::Apply),
            "ignore" => Ok(Self::Ignore),
            _ => Err(format!("unknown exif_orientation `{s}` (expected apply or ignore)")),
        }
    }
}

/// How pixels are interpolated when resizing: the model should be fed what its training
/// pipeline fed it, to the byte.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResizeFilter {
    /// Pillow's `Image.resize(size, Image.BILINEAR)` (antialiased when downscaling), which
    /// is what torchvision's `transforms.Resize` does to PIL images; shorter_side_crop is
    /// then torchvision's `Resize(crop_from)` + `CenterCrop`. The default: most image
    /// classifiers were trained and evaluated through that pipeline.
    #[default]
    PillowBilinear,
    /// OpenCV's `cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)` (no antialiasing),
    /// as in pytorch-grad-cam's examples.
    OpencvLinear,
    /// The `image` crate's Triangle filter, cropping before resizing: what this service did
    /// before the other two existed. It matches neither Pillow nor OpenCV (by up to a few
    /// levels per pixel); kept for packages tuned against it.
    Triangle,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    pub width: u32,
    pub height: u32,
    #[serde(default)]
    pub resize: ResizeMode,
    #[serde(default)]
    pub crop_from: Option<u32>,
    #[serde(default)]
    pub resize_filter: ResizeFilter,
    /// Whether a photo's EXIF orientation is applied before the model sees it (a request
    /// may ask otherwise).
    #[serde(default)]
    pub exif_orientation: ExifOrientation,
    /// Channels the model takes: 1 (the photo turned grey as Pillow's `convert("L")`
    /// does, before resizing), 3 (RGB; a photo's alpha is dropped) or 4 (RGBA: alpha kept,
    /// 255 for photos without one).
    #[serde(default = "three")]
    pub channels: u32,
    /// Per-channel mean and std (one value per channel), applied after scaling pixels to
    /// 0..1.
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    /// `resize = "letterbox"`: the padding's pixel value (0..=255, every channel), before
    /// normalisation.
    #[serde(default = "grey_pad")]
    pub pad_value: u8,
}

fn three() -> u32 {
    3
}

/// Ultralytics' letterbox grey.
fn grey_pad() -> u8 {
    114
}

/// The largest token grid side accepted for `layout = "tokens"`.
const MAX_GRID_SIDE: usize = 1024;
/// The most non-spatial tokens (class, distillation, register tokens) before the grid.
const MAX_PREFIX_TOKENS: usize = 16;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawTargetLayer", into = "RawTargetLayer")]
pub struct TargetLayer {
    pub description: String,
    /// How the extractor's output is laid out, so its channels can be read as maps.
    pub layout: DeclaredLayout,
    /// Whether the head computes the model's output from the target layer (true unless
    /// model.toml says `head_reads = false`). A package cut at a tensor the graph does not
    /// separate at, or at a derived tensor (pytorch-grad-cam's `reshape_transform` of
    /// several outputs), has an extractor that computes the model's outputs as well and a
    /// head that passes them through: full passes are right, head-only passes are not.
    pub head_reads: bool,
}

/// The target layer's layout as `model.toml` declares it (with the token grid); the runtime
/// keeps its own `runtime::FeatureLayout`, what it needs to convert tensors.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeclaredLayout {
    /// N×C×H×W: convolutional networks exported from PyTorch.
    #[default]
    Nchw,
    /// N×H×W×C: TensorFlow / TFLite exports.
    Nhwc,
    /// N×T×C transformer tokens: `prefix` non-spatial tokens (class, registers) then the
    /// patch tokens of a `grid` = (height, width) row-major grid, T = prefix + h·w.
    Tokens { grid: (usize, usize), prefix: usize },
}

/// `[target_layer]` as written: flat keys, checked and folded into [`DeclaredLayout`].
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTargetLayer {
    description: String,
    #[serde(default)]
    layout: LayoutKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    grid: Option<[usize; 2]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    prefix_tokens: Option<usize>,
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    head_reads: bool,
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

#[derive(Clone, Copy, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum LayoutKind {
    #[default]
    Nchw,
    Nhwc,
    Tokens,
}

impl TryFrom<RawTargetLayer> for TargetLayer {
    type Error = String;

    fn try_from(raw: RawTargetLayer) -> Result<Self, String> {
        let layout = match raw.layout {
            LayoutKind::Tokens => {
                let [h, w] =
                    raw.grid.ok_or("target_layer.layout = \"tokens\" needs target_layer.grid = [height, width]")?;
                if !(1..=MAX_GRID_SIDE).contains(&h) || !(1..=MAX_GRID_SIDE).contains(&w) {
                    return Err(format!("target_layer.grid = [{h}, {w}]: each side must be in 1..={MAX_GRID_SIDE}"));
                }
                let prefix = raw.prefix_tokens.unwrap_or(0);
                if prefix > MAX_PREFIX_TOKENS {
                    return Err(format!("target_layer.prefix_tokens = {prefix} must be at most {MAX_PREFIX_TOKENS}"));
                }
                DeclaredLayout::Tokens { grid: (h, w), prefix }
            }
            kind @ (LayoutKind::Nchw | LayoutKind::Nhwc) => {
                let name = if matches!(kind, LayoutKind::Nchw) { "nchw" } else { "nhwc" };
                for (key, given) in [("grid", raw.grid.is_some()), ("prefix_tokens", raw.prefix_tokens.is_some())] {
                    if given {
                        return Err(format!(
                            "target_layer.{key} only applies to layout = \"tokens\" (the layout is \"{name}\")"
                        ));
                    }
                }
                if matches!(kind, LayoutKind::Nchw) { DeclaredLayout::Nchw } else { DeclaredLayout::Nhwc }
            }
        };
        Ok(Self { description: raw.description, layout, head_reads: raw.head_reads })
    }
}

impl From<TargetLayer> for RawTargetLayer {
    fn from(t: TargetLayer) -> Self {
        let (layout, grid, prefix_tokens) = match t.layout {
            DeclaredLayout::Nchw => (LayoutKind::Nchw, None, None),
            DeclaredLayout::Nhwc => (LayoutKind::Nhwc, None, None),
            DeclaredLayout::Tokens { grid: (h, w), prefix } => (LayoutKind::Tokens, Some([h, w]), Some(prefix)),
        };
        Self { description: t.description, layout, grid, prefix_tokens, head_reads: t.head_reads }
    }
}

impl Manifest {
    pub fn from_file(path: &Path) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io { path: path.into(), source })?;
        Self::parse(&text).map_err(|message| ModelError::Manifest { path: path.into(), message })
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let manifest: Manifest = toml::from_str(text).map_err(|e| describe(text, &e))?;
        manifest.check()?;
        Ok(manifest)
    }

    fn check(&self) -> Result<(), String> {
        if let Some(q) = &self.quantization {
            q.check()?;
        }
        if let Some(e) = &self.engine {
            e.check()?;
        }
        let i = &self.input;
        for (name, v) in [("input.width", i.width), ("input.height", i.height)] {
            if v == 0 || v > MAX_SIDE {
                return Err(format!("{name} = {v} must be in 1..={MAX_SIDE}"));
            }
        }
        if !matches!(i.channels, 1 | 3 | 4) {
            return Err(format!("input.channels = {} must be 1 (grey), 3 (RGB) or 4 (RGBA)", i.channels));
        }
        for (name, values) in [("input.mean", &i.mean), ("input.std", &i.std)] {
            if values.len() != i.channels as usize {
                return Err(format!("{name} has {} values; give one per input channel ({})", values.len(), i.channels));
            }
        }
        if let Some(s) =
            i.std.iter().find(|s| s.partial_cmp(&&0.0) != Some(std::cmp::Ordering::Greater) || !s.is_finite())
        {
            return Err(format!("input.std must be positive and finite, got {s}"));
        }
        if i.mean.iter().any(|m| !m.is_finite()) {
            return Err("input.mean must be finite".into());
        }
        match (i.resize, i.crop_from) {
            (ResizeMode::ShorterSideCrop, None) => {
                Err("input.resize = \"shorter_side_crop\" needs input.crop_from".into())
            }
            (ResizeMode::ShorterSideCrop, Some(c)) if c < i.width.max(i.height) || c > MAX_SIDE => Err(format!(
                "input.crop_from = {c} must be at least the input size ({}) and at most {MAX_SIDE}",
                i.width.max(i.height)
            )),
            (ResizeMode::Stretch | ResizeMode::Letterbox, Some(_)) => {
                Err("input.crop_from only applies to resize = \"shorter_side_crop\"".into())
            }
            _ => Ok(()),
        }
    }
}

/// toml's message without its multi-line snippet, plus the line it points at: some
/// messages ("invalid length 1, expected an array of length 2") do not name the key.
fn describe(text: &str, e: &toml::de::Error) -> String {
    let line = e.span().and_then(|span| text.get(..span.start)).map(|before| before.matches('\n').count());
    match line.and_then(|n| Some((n + 1, text.lines().nth(n)?.trim()))) {
        Some((n, line)) if !line.is_empty() => format!("{} (line {n}: `{line}`)", e.message()),
        _ => e.message().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
description = "d"
source = "s"
license = "l"
[input]
width = 224
height = 224
mean = [0.485, 0.456, 0.406]
std = [0.229, 0.224, 0.225]
[target_layer]
description = "t"
"#;

    #[test]
    fn the_head_defaults_to_a_softmax_classifier_and_takes_a_sigmoid() {
        assert_eq!(
            Manifest::parse(GOOD).unwrap().head.kind(&[vec![5]], 5).unwrap(),
            HeadKind::Classes { classes: 5, activation: Activation::Softmax }
        );
        let sigmoid =
            Manifest::parse(&format!("{GOOD}[head]\nkind = \"classes\"\nactivation = \"sigmoid\"\n")).unwrap();
        assert_eq!(
            sigmoid.head.kind(&[vec![14]], 14).unwrap(),
            HeadKind::Classes { classes: 14, activation: Activation::Sigmoid }
        );
        assert!(err(&format!("{GOOD}[head]\nkind = \"boxes\"\n")).contains("boxes"));
    }

    #[test]
    fn a_minimal_manifest_parses_with_stretch_by_default() {
        let m = Manifest::parse(GOOD).unwrap();
        assert_eq!(m.input.resize, ResizeMode::Stretch);
        assert_eq!((m.input.width, m.input.height), (224, 224));
    }

    fn err(text: &str) -> String {
        Manifest::parse(text).unwrap_err()
    }

    #[test]
    fn invalid_manifests_say_what_is_wrong() {
        assert!(err(&GOOD.replace("width = 224", "width = 0")).contains("input.width"));
        assert!(err(&GOOD.replace("0.229,", "0.0,")).contains("input.std"));
        assert!(err(&GOOD.replace("[target_layer]\ndescription = \"t\"", "")).contains("target_layer"));
        assert!(
            err(&GOOD.replace("height = 224", "height = 224\nresize = \"shorter_side_crop\"")).contains("crop_from")
        );
        assert!(err(&GOOD.replace("height = 224", "height = 224\nresize = \"zoom\"")).contains("zoom"));
        assert!(err(&GOOD.replace("license = \"l\"", "license = \"l\"\ncolour = 1")).contains("colour"));
        assert!(
            err(&GOOD.replace("height = 224", "height = 224\nresize = \"shorter_side_crop\"\ncrop_from = 100"))
                .contains("at least")
        );
    }

    #[test]
    fn the_resize_filter_defaults_to_pillow_and_names_the_others() {
        assert_eq!(Manifest::parse(GOOD).unwrap().input.resize_filter, ResizeFilter::PillowBilinear);
        for (text, want) in [
            ("pillow_bilinear", ResizeFilter::PillowBilinear),
            ("opencv_linear", ResizeFilter::OpencvLinear),
            ("triangle", ResizeFilter::Triangle),
        ] {
            let m =
                Manifest::parse(&GOOD.replace("height = 224", &format!("height = 224\nresize_filter = \"{text}\"")));
            assert_eq!(m.unwrap().input.resize_filter, want);
        }
        assert!(err(&GOOD.replace("height = 224", "height = 224\nresize_filter = \"lanczos\"")).contains("lanczos"));
    }

    fn layer(extra: &str) -> Result<TargetLayer, String> {
        Manifest::parse(&GOOD.replace("description = \"t\"", &format!("description = \"t\"\n{extra}")))
            .map(|m| m.target_layer)
    }

    #[test]
    fn the_feature_layout_defaults_to_nchw_and_parses_each_kind() {
        assert_eq!(layer("").unwrap().layout, DeclaredLayout::Nchw);
        assert_eq!(layer("layout = \"nchw\"").unwrap().layout, DeclaredLayout::Nchw);
        assert_eq!(layer("layout = \"nhwc\"").unwrap().layout, DeclaredLayout::Nhwc);
        assert_eq!(
            layer("layout = \"tokens\"\ngrid = [14, 16]").unwrap().layout,
            DeclaredLayout::Tokens { grid: (14, 16), prefix: 0 }
        );
        let t = layer("layout = \"tokens\"\ngrid = [1, 1024]\nprefix_tokens = 16").unwrap();
        assert_eq!(t.layout, DeclaredLayout::Tokens { grid: (1, 1024), prefix: 16 });
        assert_eq!(t.description, "t");
    }

    #[test]
    fn invalid_feature_layouts_name_the_key_at_fault() {
        let cases = [
            ("layout = \"tokens\"", "target_layer.grid"),
            ("layout = \"tokens\"\ngrid = [0, 14]", "target_layer.grid"),
            ("layout = \"tokens\"\ngrid = [14, 1025]", "1..=1024"),
            ("layout = \"tokens\"\ngrid = [14]", "grid"),
            ("layout = \"tokens\"\ngrid = [14, -1]", "grid"),
            ("layout = \"tokens\"\ngrid = [14, 14]\nprefix_tokens = 17", "target_layer.prefix_tokens"),
            ("grid = [7, 7]", "target_layer.grid only applies to layout = \"tokens\""),
            ("layout = \"nhwc\"\ngrid = [7, 7]", "\"nhwc\""),
            ("prefix_tokens = 1", "target_layer.prefix_tokens only applies"),
            ("layout = \"nhwc\"\nprefix_tokens = 0", "target_layer.prefix_tokens"),
            ("layout = \"nwhc\"", "nwhc"),
            ("layuot = \"nchw\"", "layuot"),
        ];
        for (extra, want) in cases {
            let e = layer(extra).unwrap_err();
            assert!(e.contains(want), "{extra:?}: {e:?} does not mention {want:?}");
        }
    }

    #[test]
    fn a_manifest_round_trips_through_serde_with_its_layout() {
        let m = Manifest::parse(&GOOD.replace(
            "description = \"t\"",
            "description = \"t\"\nlayout = \"tokens\"\ngrid = [14, 14]\nprefix_tokens = 1",
        ))
        .unwrap();
        let text = toml::to_string(&m).unwrap();
        assert_eq!(Manifest::parse(&text).unwrap(), m);
        let plain = Manifest::parse(GOOD).unwrap();
        assert_eq!(Manifest::parse(&toml::to_string(&plain).unwrap()).unwrap(), plain);
    }

    const QUANTIZED: &str = r#"
[quantization]
kind = "int8"
reference = "fp32-model"
method = "extractor: ONNX Runtime static QDQ, per-channel"
calibration_photos = 64
[quantization.fidelity]
photos = 136
held_out = true
preset = "official"
pearson_mean = 0.9924
pearson_min = 0.9095
top20_iou_mean = 0.9019
top20_iou_min = 0.4598
worst_photo = "n02808440_bathtub"
top1_agree = 123
min_pearson_mean = 0.95
"#;

    #[test]
    fn a_package_is_exact_unless_it_says_it_is_quantized() {
        assert_eq!(Manifest::parse(GOOD).unwrap().quantization, None);
        let m = Manifest::parse(&format!("{GOOD}{QUANTIZED}")).unwrap();
        let q = m.quantization.clone().unwrap();
        assert_eq!((q.kind, q.reference.as_str(), q.calibration_photos), (QuantizationKind::Int8, "fp32-model", 64));
        assert_eq!((q.fidelity.photos, q.fidelity.top1_agree, q.fidelity.forced), (136, 123, false));
        assert_eq!(q.fidelity.pearson_mean, 0.9924);
        assert_eq!(q.fidelity.worst_photo, "n02808440_bathtub");
        // It round-trips, and an exact manifest writes no section.
        assert_eq!(Manifest::parse(&toml::to_string(&m).unwrap()).unwrap(), m);
        assert!(!toml::to_string(&Manifest::parse(GOOD).unwrap()).unwrap().contains("quantization"));
    }

    #[test]
    fn invalid_quantization_sections_name_the_key_at_fault() {
        let full = format!("{GOOD}{QUANTIZED}");
        let cases = [
            ("kind = \"int8\"", "kind = \"int4\"", "int4"),
            ("reference = \"fp32-model\"", "reference = \" \"", "quantization.reference"),
            ("reference = \"fp32-model\"\n", "", "reference"),
            ("photos = 136", "photos = 0", "fidelity.photos"),
            ("top1_agree = 123", "top1_agree = 137", "top1_agree"),
            ("pearson_mean = 0.9924", "pearson_mean = 1.5", "pearson_mean"),
            ("pearson_min = 0.9095", "pearson_min = nan", "pearson_min"),
            ("top20_iou_min = 0.4598", "top20_iou_min = -0.1", "top20_iou_min"),
            ("top20_iou_min = 0.4598", "top20_iou_min = 0.95", "exceeds top20_iou_mean"),
            ("pearson_min = 0.9095", "pearson_min = 0.999", "exceeds pearson_mean"),
            ("min_pearson_mean = 0.95", "min_pearson_mean = 0.995", "forced is not set"),
            ("held_out = true", "held_out = true\nspeedup = 2.0", "speedup"),
            ("worst_photo = \"n02808440_bathtub\"\n", "", "worst_photo"),
        ];
        for (from, to, want) in cases {
            assert!(full.contains(from), "{from:?}");
            let e = err(&full.replace(from, to));
            assert!(e.contains(want), "{to:?}: {e:?} does not mention {want:?}");
        }
        // Below the gate is accepted when the package says it was forced.
        let forced = full.replace("min_pearson_mean = 0.95", "min_pearson_mean = 0.995\nforced = true");
        assert!(Manifest::parse(&forced).unwrap().quantization.unwrap().fidelity.forced);
    }

    #[test]
    fn a_package_may_carry_its_measured_batch_size() {
        assert_eq!(Manifest::parse(GOOD).unwrap().engine, None);
        let text = format!("{GOOD}[engine]\nmax_batch_size = 2\nmeasured = \"2 workers x 1 thread\"\n");
        let m = Manifest::parse(&text).unwrap();
        let e = m.engine.clone().unwrap();
        assert_eq!(
            (e.max_batch_size, e.flush_denormals, e.measured.as_str()),
            (Some(2), false, "2 workers x 1 thread")
        );
        let flush = Manifest::parse(&format!("{GOOD}[engine]\nflush_denormals = true\n")).unwrap().engine.unwrap();
        assert_eq!((flush.max_batch_size, flush.flush_denormals), (None, true));
        assert_eq!(Manifest::parse(&toml::to_string(&m).unwrap()).unwrap(), m);
        assert!(!toml::to_string(&Manifest::parse(GOOD).unwrap()).unwrap().contains("[engine]"));
        for (section, want) in [
            ("[engine]\nmax_batch_size = 0\n", "engine.max_batch_size = 0"),
            ("[engine]\nmax_batch_size = 1025\n", "1..=1024"),
            ("[engine]\nflush_denormals = 1\n", "flush_denormals"),
            ("[engine]\nmax_batch_size = 2\nworkers = 2\n", "workers"),
        ] {
            let e = err(&format!("{GOOD}{section}"));
            assert!(e.contains(want), "{section:?}: {e:?} does not mention {want:?}");
        }
    }

    #[test]
    fn shorter_side_crop_with_crop_from_is_accepted() {
        let m = Manifest::parse(
            &GOOD.replace("height = 224", "height = 224\nresize = \"shorter_side_crop\"\ncrop_from = 256"),
        )
        .unwrap();
        assert_eq!(m.input.crop_from, Some(256));
    }
}
