//! Named text parameters, whatever face they came from (query string, form parts, JSON
//! keys, CLI flags), and their conversion into requests: the one place where parameter
//! names are known and syntax is checked.

use std::collections::BTreeMap;

use super::ServiceError;
use super::request::{
    DetectionSpec, ExplainRequest, OutputFormat, PredictRequest, ReferenceSpec, RegionSpec, Rendering, Resolution,
    TargetSpec,
};
use crate::cam::{BoxScore, Method, methods};
use crate::render::Colormap;

/// Most parameters (form parts, JSON keys, query pairs) one request may carry.
pub const MAX_PARAMS: usize = 32;
/// Most bytes of one text parameter.
pub const MAX_PARAM_BYTES: usize = 1024;

/// Parameters that every explanation takes, besides its method's own.
const EXPLAIN_PARAMS: &[&str] = &[
    "model",
    "target",
    "top_k",
    "method",
    "metrics",
    "format",
    "resolution",
    "colormap",
    "alpha",
    "timeout_ms",
    "max_passes",
    "anytime",
    "exif_orientation",
    "region",
    "reference",
    "box",
    "detection",
    "box_score",
    "box_iou",
    "score_threshold",
    "iou_threshold",
];
const PREDICT_PARAMS: &[&str] =
    &["model", "top_k", "timeout_ms", "exif_orientation", "score_threshold", "iou_threshold"];

/// Named parameters; a name may repeat (`target=1&target=2`). Bounded in count and size,
/// so a hostile request cannot make it grow without limit.
#[derive(Clone, Debug, Default)]
pub struct Params(BTreeMap<String, Vec<String>>);

fn invalid(message: impl Into<String>) -> ServiceError {
    ServiceError::InvalidParameter(message.into())
}

impl Params {
    /// Adds one value; refuses past the limits (a malformed request, not a bad value).
    pub fn push(&mut self, name: &str, value: String) -> Result<(), ServiceError> {
        if value.len() > MAX_PARAM_BYTES {
            return Err(ServiceError::BadRequest(format!("parameter `{name}` is longer than {MAX_PARAM_BYTES} bytes")));
        }
        let count: usize = self.0.values().map(Vec::len).sum();
        if count >= MAX_PARAMS {
            return Err(ServiceError::BadRequest(format!("more than {MAX_PARAMS} parameters")));
        }
        self.0.entry(name.to_string()).or_default().push(value);
        Ok(())
    }

    /// Every (name, value), in name order (to send them on, e.g. as a query string).
    pub fn pairs(&self) -> Vec<(&str, &str)> {
        self.0.iter().flat_map(|(k, vs)| vs.iter().map(move |v| (k.as_str(), v.as_str()))).collect()
    }

    /// Adds `other`'s parameters; a name given there replaces this one's values.
    pub fn merge_over(mut self, other: Params) -> Params {
        for (k, v) in other.0 {
            self.0.insert(k, v);
        }
        self
    }

    fn one(&self, name: &str) -> Result<Option<&str>, ServiceError> {
        match self.0.get(name).map(Vec::as_slice) {
            None | Some([]) => Ok(None),
            Some([v]) => Ok(Some(v.as_str())),
            Some(_) => Err(invalid(format!("`{name}` given more than once"))),
        }
    }

    fn parse<T: std::str::FromStr>(&self, name: &str) -> Result<Option<T>, ServiceError>
    where
        T::Err: std::fmt::Display,
    {
        self.one(name)?.map(|v| v.trim().parse::<T>().map_err(|e| invalid(format!("`{name}`: {e}")))).transpose()
    }

    /// Fails on names outside `known`: a typo should not silently become a default.
    fn only(&self, known: &[&str]) -> Result<(), ServiceError> {
        match self.0.keys().find(|k| !known.contains(&k.as_str())) {
            Some(k) => Err(invalid(format!("unknown parameter `{k}` (known: {})", known.join(", ")))),
            None => Ok(()),
        }
    }

    /// Class indices from repeated or comma-separated `target` values.
    fn targets(&self) -> Result<Vec<usize>, ServiceError> {
        let mut out = Vec::new();
        for v in self.0.get("target").into_iter().flatten() {
            for part in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                out.push(part.parse().map_err(|_| invalid(format!("`target`: `{part}` is not a class index")))?);
            }
        }
        Ok(out)
    }

    /// The method and its own parameters, through the method registry.
    fn method(&self) -> Result<Method, ServiceError> {
        let own: Vec<(&str, &str)> = methods::param_names()
            .into_iter()
            .filter_map(|name| Some((name, self.0.get(name)?)))
            .map(|(name, values)| match values.as_slice() {
                [v] => Ok((name, v.trim())),
                _ => Err(invalid(format!("`{name}` given more than once"))),
            })
            .collect::<Result<_, _>>()?;
        Method::parse(self.one("method")?.map(str::trim), &own).map_err(ServiceError::InvalidParameter)
    }

    /// The names an explanation takes: its own, then every method's (for a face that
    /// names them when it refuses one).
    pub fn explain_names() -> Vec<&'static str> {
        EXPLAIN_PARAMS.iter().copied().chain(methods::param_names()).collect()
    }

    /// The names a prediction takes.
    pub fn predict_names() -> &'static [&'static str] {
        PREDICT_PARAMS
    }

    /// An explanation request, checked for syntax and bounds that need no model (those
    /// that do are checked when it is prepared). `accepts_json` picks JSON output when no
    /// format is named.
    pub fn explain_request(&self, accepts_json: bool) -> Result<ExplainRequest, ServiceError> {
        self.only(&Self::explain_names())?;
        let method = self.method()?;
        let targets = self.targets()?;
        let top_k: Option<usize> = self.parse("top_k")?;
        let targets = match (targets.is_empty(), top_k) {
            (false, Some(_)) => return Err(invalid("give `target` or `top_k`, not both")),
            (false, None) => TargetSpec::Classes(targets),
            (true, k) => TargetSpec::TopK(k.unwrap_or(1)),
        };
        let format = match self.parse::<OutputFormat>("format")? {
            Some(f) => f,
            None if accepts_json => OutputFormat::Json,
            None => OutputFormat::Png,
        };
        let alpha: f32 = self.parse("alpha")?.unwrap_or(0.5);
        if !(0.0..=1.0).contains(&alpha) {
            return Err(invalid(format!("`alpha` must be within 0..=1, got {alpha}")));
        }
        let max_passes: Option<usize> = self.parse("max_passes")?;
        if max_passes == Some(0) {
            return Err(invalid("`max_passes` must be at least 1"));
        }
        Ok(ExplainRequest {
            max_passes,
            anytime: self.parse::<bool>("anytime")?.unwrap_or(false),
            model: self.one("model")?.map(str::to_string),
            targets,
            method,
            metrics: self.parse::<bool>("metrics")?.unwrap_or(false),
            rendering: Rendering {
                format,
                resolution: self.parse::<Resolution>("resolution")?.unwrap_or_default(),
                colormap: self.parse::<Colormap>("colormap")?.unwrap_or_default(),
                alpha,
            },
            timeout_ms: self.parse("timeout_ms")?,
            exif_orientation: self.parse("exif_orientation")?,
            region: self.one("region")?.map(parse_box).transpose()?,
            reference: self.one("reference")?.map(parse_reference).transpose()?,
            detection: self.detection()?,
            fault: None,
        })
    }

    /// A detector's target and thresholds.
    fn detection(&self) -> Result<DetectionSpec, ServiceError> {
        let bbox = match self.one("box")? {
            Some(text) => match parse_box(text) {
                Ok(RegionSpec::Box(b)) => Some(b),
                _ => {
                    return Err(invalid(format!(
                        "`box` must be x1,y1,x2,y2 (four numbers, photo pixels), got `{text}`"
                    )));
                }
            },
            None => None,
        };
        let iou = self.unit("box_iou")?;
        let rule = match (self.one("box_score")?, iou) {
            (None | Some("d_rise"), None) => BoxScore::DRise,
            (Some("box_score"), iou) => BoxScore::BoxScore { iou_threshold: iou.unwrap_or(0.5) },
            (None | Some("d_rise"), Some(_)) => return Err(invalid("`box_iou` applies to box_score=box_score")),
            (Some(other), _) => {
                return Err(invalid(format!("unknown box_score `{other}` (expected d_rise or box_score)")));
            }
        };
        Ok(DetectionSpec {
            bbox,
            rank: self.parse("detection")?,
            rule,
            score_threshold: self.unit("score_threshold")?,
            iou_threshold: self.unit("iou_threshold")?,
        })
    }

    /// A number within 0..=1.
    fn unit(&self, name: &str) -> Result<Option<f32>, ServiceError> {
        match self.parse::<f32>(name)? {
            Some(v) if !(0.0..=1.0).contains(&v) => Err(invalid(format!("`{name}` must be within 0..=1, got {v}"))),
            v => Ok(v),
        }
    }

    pub fn predict_request(&self) -> Result<PredictRequest, ServiceError> {
        self.only(PREDICT_PARAMS)?;
        Ok(PredictRequest {
            model: self.one("model")?.map(str::to_string),
            top_k: self.parse("top_k")?,
            score_threshold: self.unit("score_threshold")?,
            iou_threshold: self.unit("iou_threshold")?,
            timeout_ms: self.parse("timeout_ms")?,
            exif_orientation: self.parse("exif_orientation")?,
        })
    }
}

/// `region=x1,y1,x2,y2`: a box in photo pixels.
pub fn parse_box(text: &str) -> Result<RegionSpec, ServiceError> {
    let values: Vec<f64> = text
        .split(',')
        .map(|v| v.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .map_err(|_| invalid(format!("`region` must be x1,y1,x2,y2 (four numbers, photo pixels), got `{text}`")))?;
    match values.as_slice() {
        &[x1, y1, x2, y2] if values.iter().all(|v| v.is_finite()) => Ok(RegionSpec::Box([x1, y1, x2, y2])),
        _ => Err(invalid(format!("`region` must be x1,y1,x2,y2 (four numbers, photo pixels), got `{text}`"))),
    }
}

/// `reference=[0.1, -0.3, …]`: an embedding as a JSON array of numbers.
pub fn parse_reference(text: &str) -> Result<ReferenceSpec, ServiceError> {
    let values: Vec<f32> = serde_json::from_str(text)
        .map_err(|e| invalid(format!("`reference` must be a JSON array of numbers (the reference embedding): {e}")))?;
    Ok(ReferenceSpec::Vector(values.into()))
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Params {
    /// For callers whose parameters are already bounded (the CLI, tests).
    fn from_iter<I: IntoIterator<Item = (K, V)>>(pairs: I) -> Self {
        let mut p = Params::default();
        for (k, v) in pairs {
            p.0.entry(k.into()).or_default().push(v.into());
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Params {
        pairs.iter().map(|(k, v)| (*k, *v)).collect()
    }

    #[test]
    fn method_parameters_go_through_the_registry() {
        let r = params(&[("method", "sscam"), ("samples", "3")]).explain_request(false).unwrap();
        assert_eq!(r.method.name(), "sscam");
        let e = params(&[("method", "ablationcam"), ("steps", "3")]).explain_request(false).unwrap_err();
        assert!(e.to_string().contains("`steps` does not apply to method `ablationcam`"), "{e}");
        let e = params(&[("colour", "red")]).explain_request(false).unwrap_err();
        assert!(e.to_string().contains("unknown parameter `colour`"), "{e}");
    }

    #[test]
    fn targets_and_top_k_exclude_each_other() {
        let r = params(&[("target", "1,2"), ("target", "3")]).explain_request(false).unwrap();
        assert_eq!(r.targets, TargetSpec::Classes(vec![1, 2, 3]));
        assert!(params(&[("target", "1"), ("top_k", "2")]).explain_request(false).is_err());
        assert_eq!(params(&[]).explain_request(true).unwrap().rendering.format, OutputFormat::Json);
    }

    /// A method parameter named like a request parameter would silently alias it (and give
    /// clap a duplicate flag): the registry must never have one.
    #[test]
    fn no_method_parameter_is_named_like_a_request_parameter() {
        for name in methods::param_names() {
            assert!(!EXPLAIN_PARAMS.contains(&name), "method parameter `{name}` collides with /explain's own");
            assert!(!PREDICT_PARAMS.contains(&name), "method parameter `{name}` collides with /predict's own");
        }
        // The inference protocol's own switch, and the CLI's flags that are not parameters.
        for reserved in ["explain", "output", "images", "list", "config"] {
            assert!(!methods::param_names().contains(&reserved), "method parameter `{reserved}` is reserved");
        }
    }

    #[test]
    fn limits_bound_a_hostile_request() {
        let mut p = Params::default();
        for i in 0..MAX_PARAMS {
            p.push("target", i.to_string()).unwrap();
        }
        assert!(matches!(p.push("target", "x".into()), Err(ServiceError::BadRequest(_))));
        assert!(Params::default().push("a", "x".repeat(MAX_PARAM_BYTES + 1)).is_err());
    }
}
