//! One explanation request and one prediction request, as every face hands them to the
//! service: parsed once (see `params`), validated against the model once (`Service::prepare`).

use std::sync::Arc;

use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::cam::{BoxScore, Method};
use crate::engine::Fault;
use crate::render::Colormap;

/// What the model sees of a photo's EXIF orientation (`[input] exif_orientation`).
pub use crate::model::ExifOrientation;

/// Most targets one request may explain (each is a full map in the response).
pub const MAX_TARGETS: usize = 10;

/// Most values one JSON map may carry (about 40 MB of JSON): a JSON map at the upload's own
/// resolution of a 40-megapixel photo would otherwise be half a gigabyte of text.
pub const MAX_JSON_MAP_VALUES: usize = 4 << 20;

/// File name extensions of the image files the service decodes (lower case), for faces
/// that pick images out of a folder by name.
pub const IMAGE_EXTENSIONS: [&str; 9] = ["jpg", "jpeg", "jfif", "png", "webp", "gif", "bmp", "tif", "tiff"];

/// Whether a file name's extension is one of [`IMAGE_EXTENSIONS`] (case-insensitive).
pub fn is_image_name(path: &std::path::Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// The image to explain, in whichever form the face received it.
#[derive(Clone, Debug)]
pub enum ImageInput {
    /// An encoded file (PNG, JPEG, …): decoded with limits, oriented, resized per the model.
    Encoded(Arc<[u8]>),
    /// Decoded RGB pixels of any size: resized per the model.
    Pixels(RgbImage),
    /// A model-ready tensor (C×H×W, normalised): no original image to draw on.
    Tensor(Vec<f32>),
}

/// Which classes to explain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetSpec {
    /// These class indices, in this order.
    Classes(Vec<usize>),
    /// The k most probable classes of the clean pass.
    TopK(usize),
}

impl TargetSpec {
    /// How many maps the response will carry.
    pub fn len(&self) -> usize {
        match self {
            TargetSpec::Classes(c) => c.len(),
            TargetSpec::TopK(k) => *k,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where a segmentation target's class is summed (`region`): on the upright photo, in its
/// pixels (on the model's input for a tensor input).
#[derive(Clone, Debug, PartialEq)]
pub enum RegionSpec {
    /// x1, y1, x2, y2: the output pixels whose centre falls in x1 ≤ x < x2, y1 ≤ y < y2.
    Box([f64; 4]),
    /// A mask the size of the photo: the output pixels whose centre falls on a non-zero
    /// mask pixel.
    Mask { width: u32, height: u32, pixels: Arc<[u8]> },
}

/// A detector's target and predictions (`box`, `detection`, `box_score`, thresholds).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DetectionSpec {
    /// The target's box, x1, y1, x2, y2 in pixels of the upright photo (with `target`, its
    /// class).
    pub bbox: Option<[f64; 4]>,
    /// The target is the clean pass's detection of this rank (0: the highest-scoring).
    pub rank: Option<usize>,
    /// How the target's box is scored on each pass.
    pub rule: BoxScore,
    /// Predictions' non-maximum suppression; `None`: the package's `[head]` defaults.
    pub score_threshold: Option<f32>,
    pub iou_threshold: Option<f32>,
}

/// What an embedding's target is compared with (`reference`).
#[derive(Clone, Debug)]
pub enum ReferenceSpec {
    /// An embedding given as numbers.
    Vector(Arc<[f32]>),
    /// Another photo, embedded by the same model (one more clean pass).
    Image(ImageInput),
}

/// What the caller wants back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// The heatmap blended over the uploaded image.
    #[default]
    Png,
    /// The coloured heatmap alone.
    Heatmap,
    /// The JSON document with raw saliency values.
    Json,
}

impl std::str::FromStr for OutputFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "png" => Ok(Self::Png),
            "heatmap" => Ok(Self::Heatmap),
            "json" => Ok(Self::Json),
            _ => Err(format!("unknown format `{s}` (expected png, heatmap or json)")),
        }
    }
}

/// At which resolution maps are returned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Resolution {
    /// The uploaded image's own size.
    #[default]
    Input,
    /// The model's input size (H×W).
    Model,
    /// The target layer's size (h×w), for methods that compute a map there.
    Feature,
}

impl std::str::FromStr for Resolution {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "input" => Ok(Self::Input),
            "model" => Ok(Self::Model),
            "feature" => Ok(Self::Feature),
            _ => Err(format!("unknown resolution `{s}` (expected input, model or feature)")),
        }
    }
}

/// How the maps are turned into the response. Never changes the numbers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rendering {
    pub format: OutputFormat,
    pub resolution: Resolution,
    pub colormap: Colormap,
    /// Heatmap opacity over the image, 0..=1.
    pub alpha: f32,
}

impl Default for Rendering {
    fn default() -> Self {
        Self { format: OutputFormat::Png, resolution: Resolution::Input, colormap: Colormap::default(), alpha: 0.5 }
    }
}

/// One explanation, as asked.
#[derive(Clone, Debug)]
pub struct ExplainRequest {
    /// `None`: the default model.
    pub model: Option<String>,
    pub targets: TargetSpec,
    pub method: Method,
    /// Also compute faithfulness metrics (extra passes).
    pub metrics: bool,
    pub rendering: Rendering,
    /// The deadline; `None`: the service's default (which may be none).
    pub timeout_ms: Option<u64>,
    /// A pass budget: only the first N of the method's passes run (its most important
    /// channels first), and the map is made from the channels they complete.
    pub max_passes: Option<usize>,
    /// At the deadline, answer with the map of the passes done so far (and its coverage)
    /// instead of a 504.
    pub anytime: bool,
    /// Whether the model sees a photo turned upright by its EXIF tag; `None`: as the
    /// model's package says.
    pub exif_orientation: Option<ExifOrientation>,
    /// A segmentation target's region; `None`: the pixels the model assigns to the class.
    pub region: Option<RegionSpec>,
    /// An embedding target's reference (required for embedding models).
    pub reference: Option<ReferenceSpec>,
    /// A detector's target and its predictions' thresholds.
    pub detection: DetectionSpec,
    /// Test-only fault injection (see the `fault-injection` feature).
    pub fault: Option<Fault>,
}

impl Default for ExplainRequest {
    fn default() -> Self {
        Self {
            model: None,
            targets: TargetSpec::TopK(1),
            method: Method::default(),
            metrics: false,
            rendering: Rendering::default(),
            timeout_ms: None,
            max_passes: None,
            anytime: false,
            exif_orientation: None,
            region: None,
            reference: None,
            detection: DetectionSpec::default(),
            fault: None,
        }
    }
}

/// The top-k classes of one image.
#[derive(Clone, Debug, Default)]
pub struct PredictRequest {
    pub model: Option<String>,
    /// The top k classes (a detector: the k highest-scoring detections); `None`: up to 5.
    pub top_k: Option<usize>,
    /// A detector's non-maximum suppression; `None`: the package's defaults.
    pub score_threshold: Option<f32>,
    pub iou_threshold: Option<f32>,
    pub timeout_ms: Option<u64>,
    /// As [`ExplainRequest::exif_orientation`].
    pub exif_orientation: Option<ExifOrientation>,
}
