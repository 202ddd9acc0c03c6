//! The one place an explanation becomes what the caller asked for: the JSON document, an
//! overlay or a heatmap PNG, at the asked resolution. Rendering never changes the numbers.

use super::ServiceError;
use super::request::{OutputFormat, RegionSpec, Resolution};
use super::result::{
    DetectedBox, ExplainDocument, Explanation, ImageSummary, Prediction, Rendered, RenderedPng, TargetMap, predictions,
};
use crate::cam::{Detection, HeadKind, Map, Saliency};
use image::RgbImage;

use crate::imaging::{self, ImageLimits};
use crate::render::{self, Colormap};

/// A target's label: its class's, or what an embedding's target is.
fn target_label(e: &Explanation, class: usize) -> String {
    match e.model.package.head() {
        HeadKind::Embedding { .. } => "similarity to the reference".into(),
        _ => e.model.package.label(class).to_string(),
    }
}

/// Renders a computed explanation (CPU work: call it off the async threads).
pub fn render_explanation(e: Explanation) -> Result<Rendered, ServiceError> {
    let package = &e.model.package;
    let probs = e.probabilities();
    let target_of = |i: usize| Prediction {
        index: e.targets[i],
        label: target_label(&e, e.targets[i]),
        score: e.target_info.scores.get(i).copied().unwrap_or(f32::NAN),
    };
    let pick = |map: &Saliency| -> Map {
        match (e.rendering.resolution, &e.image) {
            (Resolution::Input, Some((_, pre))) => pre.map_to_original(&map.input),
            (Resolution::Input | Resolution::Model, _) => map.input.clone(),
            (Resolution::Feature, _) => map.feature.clone().unwrap_or_else(|| map.input.clone()),
        }
    };
    let top5 = predictions(package.head(), &e.logits, &probs, &package.labels, 5);
    let pre = e.image.as_ref().map(|(_, pre)| pre);
    let on_photo = |b: [f32; 4]| pre.map_or(b, |pre| pre.input_box_on_photo(b));
    let box_of = |i: usize| e.target_info.boxes.get(i).copied().flatten().map(on_photo);
    let detections = e.target_info.detections.as_ref().map(|found| detected_boxes(found, &package.labels, on_photo));
    match e.rendering.format {
        OutputFormat::Json => {
            let explanations = e
                .targets
                .iter()
                .zip(&e.maps)
                .enumerate()
                .map(|(i, (_, m))| TargetMap {
                    target: target_of(i),
                    bbox: box_of(i),
                    saliency: pick(m),
                    metrics: e.metrics.as_ref().and_then(|f| f.get(i).cloned()),
                })
                .collect();
            Ok(Rendered::Json(Box::new(ExplainDocument {
                model: package.name.clone(),
                method: e.method.name().into(),
                preset: e.method.convention().to_string(),
                method_parameters: e.method.clone(),
                exif_orientation: e.exif_orientation,
                predictions: top5,
                detections,
                explanations,
                stats: e.stats,
                timings_ms: e.timings,
            })))
        }
        OutputFormat::Png | OutputFormat::Heatmap => {
            let map = e.maps.first().ok_or_else(|| ServiceError::Internal("explanation without a map".into()))?;
            let map = pick(map);
            let png = match (e.rendering.format, &e.image) {
                (OutputFormat::Png, Some((image, _))) => {
                    let mut drawn = render::overlay(image, &map, e.rendering.colormap, e.rendering.alpha)?;
                    if let Some(b) = box_of(0) {
                        render::draw_box(&mut drawn, b, &target_of(0).label);
                    }
                    if let (Some(Some(region)), Some(grid), Some(pre)) =
                        (e.target_info.regions.first(), package.head().grid(), pre)
                    {
                        render::draw_outline(&mut drawn, &region_on_photo(pre, grid, region));
                    }
                    render::encode_png(&drawn)?
                }
                (OutputFormat::Png, None) => {
                    return Err(ServiceError::Internal("an overlay needs the uploaded image".into()));
                }
                _ => heatmap_png(&map, e.rendering.colormap)?,
            };
            Ok(Rendered::Png(Box::new(RenderedPng {
                png,
                width: map.width as u32,
                height: map.height as u32,
                summary: ImageSummary {
                    model: package.name.clone(),
                    method: e.method.name().into(),
                    preset: e.method.convention().to_string(),
                    target: target_of(0),
                    bbox: box_of(0),
                    detections,
                    metrics: e.metrics.as_ref().and_then(|f| f.first().cloned()),
                    predictions: top5,
                    stats: e.stats,
                    timings_ms: e.timings,
                    exif_orientation: e.exif_orientation,
                },
            })))
        }
    }
}

/// A segmentation region (plane indices of the head's `grid`) on the upright photo: each
/// photo pixel is in when the output cell under its centre is.
fn region_on_photo(pre: &crate::imaging::Preprocessed, (gh, gw): (usize, usize), region: &[u32]) -> Vec<Vec<bool>> {
    let mut cells = vec![false; gh * gw];
    region.iter().for_each(|&p| cells[p as usize] = true);
    let (w, h) = pre.upright_size();
    let (iw, ih) = (pre.input_width as f64, pre.input_height as f64);
    (0..h)
        .map(|y| {
            (0..w)
                .map(|x| {
                    let (u, v) = pre.photo_point_on_input((f64::from(x) + 0.5, f64::from(y) + 0.5));
                    let (gx, gy) = ((u * gw as f64 / iw).floor(), (v * gh as f64 / ih).floor());
                    gx >= 0.0
                        && gy >= 0.0
                        && (gx as usize) < gw
                        && (gy as usize) < gh
                        && cells[gy as usize * gw + gx as usize]
                })
                .collect()
        })
        .collect()
}

/// A detector's detections as answers give them (`on_photo` maps a box onto the photo).
pub(super) fn detected_boxes(
    found: &[Detection],
    labels: &[String],
    on_photo: impl Fn([f32; 4]) -> [f32; 4],
) -> Vec<DetectedBox> {
    found
        .iter()
        .map(|d| DetectedBox {
            index: d.class,
            label: labels.get(d.class).cloned().unwrap_or_default(),
            score: d.score,
            bbox: on_photo(d.bbox),
        })
        .collect()
}

/// The map blended over the image, as PNG bytes (the map is resized to the image).
pub fn overlay_png(image: &RgbImage, map: &Map, colormap: Colormap, alpha: f32) -> Result<Vec<u8>, ServiceError> {
    Ok(render::encode_png(&render::overlay(image, map, colormap, alpha)?)?)
}

/// The map alone in a colour map, as PNG bytes.
pub fn heatmap_png(map: &Map, colormap: Colormap) -> Result<Vec<u8>, ServiceError> {
    Ok(render::encode_png(&render::heatmap(map, colormap))?)
}

/// Decodes an image file as every request's upload is decoded (limits first, EXIF
/// orientation, RGB), for faces that draw on the photo themselves (a dataset run's
/// overlays).
pub fn decode_image(bytes: &[u8], limits: &ImageLimits) -> Result<RgbImage, ServiceError> {
    Ok(imaging::decode(bytes, limits)?)
}

/// A region mask from an image file (any format the service decodes): the pixels where any
/// channel is non-zero are in the region.
pub fn region_mask(bytes: &[u8], limits: &ImageLimits) -> Result<RegionSpec, ServiceError> {
    let image = imaging::decode(bytes, limits)
        .map_err(|e| ServiceError::InvalidParameter(format!("the region mask could not be read: {e}")))?;
    let (width, height) = image.dimensions();
    let pixels = image.pixels().map(|p| u8::from(p.0.iter().any(|&v| v != 0))).collect::<Vec<_>>();
    Ok(RegionSpec::Mask { width, height, pixels: pixels.into() })
}
