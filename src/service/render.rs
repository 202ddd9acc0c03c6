//! The one place an explanation becomes what the caller asked for: the JSON document, an
//! overlay or a heatmap PNG, at the asked resolution. Rendering never changes the numbers.

use super::ServiceError;
use super::request::{OutputFormat, Resolution};
use super::result::{
    ExplainDocument, Explanation, ImageSummary, Prediction, Rendered, RenderedPng, TargetMap, predictions,
};
use crate::cam::{Map, Saliency, softmax};
use crate::render;

/// Renders a computed explanation (CPU work: call it off the async threads).
pub fn render_explanation(e: Explanation) -> Result<Rendered, ServiceError> {
    let package = &e.model.package;
    let probs = softmax(&e.logits);
    let target_of = |i: usize| Prediction { index: i, label: package.label(i).to_string(), score: probs[i] };
    let pick = |map: &Saliency| -> Map {
        match (e.rendering.resolution, &e.image) {
            (Resolution::Input, Some((_, pre))) => pre.map_to_original(&map.input),
            (Resolution::Input | Resolution::Model, _) => map.input.clone(),
            (Resolution::Feature, _) => map.feature.clone().unwrap_or_else(|| map.input.clone()),
        }
    };
    let top5 = predictions(&e.logits, &package.labels, 5);
    match e.rendering.format {
        OutputFormat::Json => {
            let explanations = e
                .targets
                .iter()
                .zip(&e.maps)
                .enumerate()
                .map(|(i, (&t, m))| TargetMap {
                    target: target_of(t),
                    saliency: pick(m),
                    metrics: e.metrics.as_ref().and_then(|f| f.get(i).cloned()),
                })
                .collect();
            Ok(Rendered::Json(Box::new(ExplainDocument {
                model: package.name.clone(),
                method: e.method.name().into(),
                preset: e.method.convention().to_string(),
                method_parameters: e.method.clone(),
                predictions: top5,
                explanations,
                stats: e.stats,
                timings_ms: e.timings,
            })))
        }
        OutputFormat::Png | OutputFormat::Heatmap => {
            let (&target, map) = e
                .targets
                .first()
                .zip(e.maps.first())
                .ok_or_else(|| ServiceError::Internal("explanation without a map".into()))?;
            let map = pick(map);
            let img = match (e.rendering.format, &e.image) {
                (OutputFormat::Png, Some((image, _))) => {
                    render::overlay(image, &map, e.rendering.colormap, e.rendering.alpha)?
                }
                (OutputFormat::Png, None) => {
                    return Err(ServiceError::Internal("an overlay needs the uploaded image".into()));
                }
                _ => render::heatmap(&map, e.rendering.colormap),
            };
            Ok(Rendered::Png(Box::new(RenderedPng {
                png: render::encode_png(&img)?,
                width: img.width(),
                height: img.height(),
                summary: ImageSummary {
                    model: package.name.clone(),
                    method: e.method.name().into(),
                    preset: e.method.convention().to_string(),
                    target: target_of(target),
                    metrics: e.metrics.as_ref().and_then(|f| f.first().cloned()),
                    predictions: top5,
                    stats: e.stats,
                    timings_ms: e.timings,
                },
            })))
        }
    }
}
