//! What a request's targets mean for its model's head: classes of a classifier, a class
//! over a region of a segmenter's output, a reference for an embedding. Checked before any
//! pass (`check`, `check_region`) and resolved after the clean pass (`Service::targets`).

use std::sync::Arc;

use super::explain::Prepared;
use super::request::{DetectionSpec, ExplainRequest, MAX_TARGETS, ReferenceSpec, RegionSpec, TargetSpec};
use super::result::top_k;
use super::{Service, ServiceError};
use crate::cam::{Detection, HeadKind, Target};
use crate::engine::{Admission, RunOptions};
use crate::imaging::Preprocessed;

fn invalid(message: String) -> ServiceError {
    ServiceError::InvalidParameter(message)
}

/// The request's targets fit the head's kind (before the image is decoded).
pub(super) fn check(head: HeadKind, r: &ExplainRequest) -> Result<(), ServiceError> {
    let classes = head.classes();
    let detection = &r.detection;
    if !matches!(head, HeadKind::Detection(_)) && *detection != DetectionSpec::default() {
        return Err(invalid(format!(
            "box, detection, box_score and the thresholds apply to detection models; this model's head is `{}`",
            head.name()
        )));
    }
    match (&head, &r.region, &r.reference) {
        (HeadKind::Detection(_), None, None) => return check_detection(classes, detection, &r.targets),
        (HeadKind::Segmentation { .. }, _, None) => {}
        (HeadKind::Embedding { dim }, None, Some(reference)) => return check_reference(*dim, reference, &r.targets),
        (HeadKind::Embedding { .. }, None, None) => {
            return Err(invalid(
                "this is an embedding model: say what to compare with, a reference vector (reference=[...] as \
                 JSON) or a reference photo (reference_image)"
                    .into(),
            ));
        }
        (_, Some(_), _) => {
            return Err(invalid(format!(
                "region applies to segmentation models; this model's head is `{}`: leave region out",
                head.name()
            )));
        }
        (_, None, Some(_)) => {
            return Err(invalid(format!(
                "reference applies to embedding models; this model's head is `{}`: leave reference out",
                head.name()
            )));
        }
        (HeadKind::Classes { .. }, None, None) => {}
    }
    match &r.targets {
        TargetSpec::Classes(c) if c.is_empty() => Err(invalid("target needs at least one class index".into())),
        TargetSpec::Classes(c) if c.len() > MAX_TARGETS => {
            Err(invalid(format!("at most {MAX_TARGETS} targets per request, got {}", c.len())))
        }
        TargetSpec::Classes(c) => match c.iter().find(|&&c| c >= classes) {
            Some(&class) => Err(ServiceError::InvalidTarget { class, classes }),
            None => Ok(()),
        },
        TargetSpec::TopK(k) if *k == 0 || *k > MAX_TARGETS.min(classes) => {
            Err(invalid(format!("top_k must be within 1..={}, got {k}", MAX_TARGETS.min(classes))))
        }
        TargetSpec::TopK(_) => Ok(()),
    }
}

/// A detector's target is a box with a class, a detection's rank, or the top k detections.
fn check_detection(classes: usize, d: &DetectionSpec, targets: &TargetSpec) -> Result<(), ServiceError> {
    match (d.bbox, d.rank, targets) {
        (Some(_), Some(_), _) => Err(invalid("give `box` (with `target`) or `detection`, not both".into())),
        (Some(_), None, TargetSpec::Classes(c)) if c.len() == 1 => match c[0] < classes {
            true => Ok(()),
            false => Err(ServiceError::InvalidTarget { class: c[0], classes }),
        },
        (Some(_), None, _) => Err(invalid("`box` needs the class to explain in it: one `target=C`".into())),
        (None, Some(_), TargetSpec::TopK(1)) => Ok(()),
        (None, Some(_), _) => Err(invalid("`detection` names the target itself: leave target and top_k out".into())),
        (None, None, TargetSpec::Classes(_)) => Err(invalid(
            "a detection target is a box and a class: give box=x1,y1,x2,y2 with target=C, or detection=N (the \
             N-th detection, 0 the highest-scoring), or top_k=K"
                .into(),
        )),
        (None, None, TargetSpec::TopK(k)) if *k == 0 || *k > MAX_TARGETS => {
            Err(invalid(format!("top_k must be within 1..={MAX_TARGETS}, got {k}")))
        }
        (None, None, TargetSpec::TopK(_)) => Ok(()),
    }
}

/// A detection target's box lies on the photo (`size`, upright) and is not empty.
pub(super) fn check_box([x1, y1, x2, y2]: [f64; 4], (w, h): (u32, u32)) -> Result<(), ServiceError> {
    let (fw, fh) = (f64::from(w), f64::from(h));
    if 0.0 <= x1 && x1 < x2 && x2 <= fw && 0.0 <= y1 && y1 < y2 && y2 <= fh {
        return Ok(());
    }
    Err(invalid(format!(
        "box {x1},{y1},{x2},{y2} must satisfy 0 <= x1 < x2 <= {w} and 0 <= y1 < y2 <= {h} (the photo's pixels, upright)"
    )))
}

/// A detector's predictions on one output, with the request's thresholds or the package's.
pub(super) fn detections(
    head: HeadKind,
    output: &[f32],
    spec: (Option<f32>, Option<f32>),
    defaults: (f32, f32),
) -> Option<Vec<Detection>> {
    let HeadKind::Detection(d) = head else { return None };
    Some(d.detect(output, spec.0.unwrap_or(defaults.0), spec.1.unwrap_or(defaults.1)))
}

/// An embedding explains one reference, of the embedding's length.
fn check_reference(dim: usize, reference: &ReferenceSpec, targets: &TargetSpec) -> Result<(), ServiceError> {
    if !matches!(targets, TargetSpec::TopK(1)) {
        return Err(invalid(
            "an embedding model has no classes: leave target and top_k out (the target is the reference)".into(),
        ));
    }
    match reference {
        ReferenceSpec::Vector(v) if v.len() != dim => Err(invalid(format!(
            "the reference has {} values but the model's embedding has {dim}; give a vector of {dim} numbers, or a \
             reference photo",
            v.len()
        ))),
        ReferenceSpec::Vector(v) if v.iter().any(|x| !x.is_finite()) => {
            Err(invalid("the reference vector has a value that is not a finite number".into()))
        }
        _ => Ok(()),
    }
}

/// A region lies on the photo (`size`: the upright photo, or the model's input for a
/// tensor input) and is not empty.
pub(super) fn check_region(region: &RegionSpec, (w, h): (u32, u32)) -> Result<(), ServiceError> {
    match region {
        RegionSpec::Box([x1, y1, x2, y2]) => {
            let (fw, fh) = (f64::from(w), f64::from(h));
            if !(0.0 <= *x1 && x1 < x2 && *x2 <= fw && 0.0 <= *y1 && y1 < y2 && *y2 <= fh) {
                return Err(invalid(format!(
                    "region {x1},{y1},{x2},{y2} must satisfy 0 <= x1 < x2 <= {w} and 0 <= y1 < y2 <= {h} (the \
                     photo's pixels, upright)"
                )));
            }
        }
        RegionSpec::Mask { width, height, pixels } => {
            if (*width, *height) != (w, h) {
                return Err(invalid(format!(
                    "the region mask is {width}×{height} but the photo is {w}×{h} (upright); draw it at the photo's size"
                )));
            }
            if pixels.iter().all(|&p| p == 0) {
                return Err(invalid("the region mask is empty: mark the region with non-zero pixels".into()));
            }
        }
    }
    Ok(())
}

/// The output pixels of a segmenter's `grid` that a region covers.
fn region_pixels(region: &RegionSpec, grid: (usize, usize), image: Option<&Preprocessed>) -> Vec<u32> {
    let (gh, gw) = grid;
    let inside = |x: f64, y: f64| match region {
        RegionSpec::Box([x1, y1, x2, y2]) => *x1 <= x && x < *x2 && *y1 <= y && y < *y2,
        RegionSpec::Mask { width, height, pixels } => {
            let (px, py) = (x.floor() as i64, y.floor() as i64);
            (0..i64::from(*width)).contains(&px)
                && (0..i64::from(*height)).contains(&py)
                && pixels[py as usize * *width as usize + px as usize] != 0
        }
    };
    (0..gh * gw)
        .filter(|&p| {
            let (u, v) = (p % gw, p / gw);
            match image {
                Some(pre) => pre.grid_point_on_photo(grid, (u, v)).is_some_and(|(x, y)| inside(x, y)),
                None => inside(u as f64 + 0.5, v as f64 + 0.5),
            }
        })
        .map(|p| p as u32)
        .collect()
}

impl Service {
    /// The targets of an explanation, from the clean pass's output: the classes asked for
    /// or the top k; a segmenter's class over the region asked for or over the pixels the
    /// model assigns to it; an embedding's reference (a reference photo costs a clean pass).
    pub(super) async fn targets(
        &self,
        admission: &Admission<'_>,
        p: &Prepared,
        output: &[f32],
    ) -> Result<Vec<Target>, ServiceError> {
        let head = p.model().package.head();
        let request = p.request();
        let classes = match &request.targets {
            TargetSpec::Classes(c) => c.clone(),
            TargetSpec::TopK(k) if head.is_binary() => top_k(&head.class_scores(output), *k),
            // A segmenter's top k among the classes it predicts somewhere (fewer maps when
            // fewer classes appear).
            TargetSpec::TopK(k) if matches!(head, HeadKind::Segmentation { .. }) => {
                let shares = head.class_scores(output);
                let present: Vec<usize> = top_k(&shares, *k).into_iter().filter(|&c| shares[c] > 0.0).collect();
                if present.is_empty() { top_k(&shares, 1) } else { present }
            }
            TargetSpec::TopK(k) => top_k(output, (*k).max(1)),
        };
        match head {
            HeadKind::Classes { .. } => Ok(classes.into_iter().map(Target::Class).collect()),
            HeadKind::Segmentation { .. } => classes.into_iter().map(|c| segment(head, p, output, c)).collect(),
            HeadKind::Embedding { .. } => {
                let reference = match &request.reference {
                    Some(ReferenceSpec::Vector(v)) => v.clone(),
                    Some(ReferenceSpec::Image(image)) => self.embed(admission, p, image.clone()).await?,
                    None => return Err(invalid("an embedding model needs a reference".into())),
                };
                Ok(vec![Target::Similarity { reference }])
            }
            HeadKind::Detection(_) => detection_targets(head, p, output),
        }
    }

    /// A reference photo's embedding, by the request's model and preprocessing.
    async fn embed(
        &self,
        admission: &Admission<'_>,
        p: &Prepared,
        image: super::ImageInput,
    ) -> Result<Arc<[f32]>, ServiceError> {
        let (tensor, _) =
            super::explain::decode(image, self.config.limits.clone(), p.model().clone(), p.exif()).await?;
        let options = RunOptions { deadline: p.deadline_at(), ..Default::default() };
        Ok(admission.clean(tensor, &options).await?.logits.into())
    }
}

/// A detector's targets: the box asked for, the detection of the rank asked for, or the
/// top k detections.
fn detection_targets(head: HeadKind, p: &Prepared, output: &[f32]) -> Result<Vec<Target>, ServiceError> {
    let request = p.request();
    let spec = &request.detection;
    let rule = spec.rule;
    if let (Some(b), TargetSpec::Classes(c)) = (spec.bbox, &request.targets) {
        let bbox = match p.preprocessed() {
            Some(pre) => pre.photo_box_on_input(b),
            None => b.map(|v| v as f32),
        };
        return Ok(vec![Target::Detection { class: c[0], bbox, rule }]);
    }
    let found = detections(head, output, (spec.score_threshold, spec.iou_threshold), p.model().package.nms())
        .unwrap_or_default();
    let pick = |d: &Detection| Target::Detection { class: d.class, bbox: d.bbox, rule };
    let none = || {
        invalid(format!(
            "the model detects {} object(s) on this photo above the score threshold; ask for one of those \
             (detection=0..), lower score_threshold, or give box=x1,y1,x2,y2 with target=C",
            found.len()
        ))
    };
    match (spec.rank, &request.targets) {
        (Some(rank), _) => found.get(rank).map(|d| vec![pick(d)]).ok_or_else(none),
        (None, TargetSpec::TopK(k)) if !found.is_empty() => Ok(found.iter().take(*k).map(pick).collect()),
        _ => Err(none()),
    }
}

/// A segmenter's class over the request's region, or over the pixels it assigns to it.
fn segment(head: HeadKind, p: &Prepared, output: &[f32], class: usize) -> Result<Target, ServiceError> {
    let grid = head.grid().unwrap_or((1, 1));
    let region = match &p.request().region {
        Some(region) => region_pixels(region, grid, p.preprocessed()),
        None => head.predicted_region(output, class),
    };
    if region.is_empty() {
        let why = match p.request().region {
            Some(_) => "the region covers none of the model's output pixels (it may lie on the letterbox's padding)",
            None => "the model assigns no pixel of this photo to that class",
        };
        return Err(invalid(format!(
            "class {class} ({}): {why}; give a region (region=x1,y1,x2,y2 or a region mask) that covers some",
            p.model().package.label(class)
        )));
    }
    Ok(Target::Segment { class, region: region.into() })
}
