//! The method registry: every explanation method, its parameters (names, defaults, bounds,
//! help) and how a caller's strings become a [`Method`].
//!
//! Adding a method is one file in this folder (its parameters, parsing, printing and a
//! `CamMethod` impl) and one line in `REGISTRY`: the plan, the passes and the
//! combination ask the method, never match on it.

use std::fmt;
use std::sync::Arc;

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value;

use super::combine::{MapInputs, preset_weights};
use super::passes::{Pass, PassSource};
use super::plan::{mass, spread};
use super::{Activations, Graph, Preset, Saliency};

pub use scorecam::top_channels_by_std;

/// Declares each method's module (`<name>.rs`, holding its `ENTRY`) and lists it.
macro_rules! registry {
    ($($method:ident),+ $(,)?) => {
        $(mod $method;)+
        /// Every method, in the order callers list them.
        static REGISTRY: &[&MethodEntry] = &[$(&$method::ENTRY),+];
    };
}

registry! {
    scorecam,
    sscam,
    iscam,
    ablationcam,
    gradcam,
    gradcampp,
    xgradcam,
    layercam,
    reciprocam,
    rise,
    eigencam,
}

/// What the closed-form gradient methods share.
mod closed_form;

/// The method a caller gets without naming one.
const DEFAULT_METHOD: &str = "scorecam";

/// Most SS-CAM samples or IS-CAM steps one request may ask for: each is a full set of
/// masked passes (100 × 1280 channels is already 128 000 forward passes).
const MAX_REPEATS: i64 = 100;

/// One method as the registry lists it.
pub struct MethodEntry {
    pub name: &'static str,
    /// One line for help texts and listings.
    pub summary: &'static str,
    /// The parameters it takes, in the order it prints and serialises them.
    pub params: &'static [ParamSpec],
    /// Builds the method from parameters already parsed and bounds-checked against `params`.
    pub(crate) build: fn(&Args) -> Result<Arc<dyn CamMethod>, String>,
}

/// One parameter of a method.
pub struct ParamSpec {
    pub name: &'static str,
    pub kind: ParamKind,
    /// The value used when the caller gives none, written as a caller would; empty when
    /// the parameter is optional and absent by default (`max_channels`: every channel).
    pub default: &'static str,
    pub help: &'static str,
}

/// A parameter's type and bounds, checked by [`Method::parse`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ParamKind {
    /// An integer within `min..=max` (`max == i64::MAX`: no upper bound here; a bound that
    /// depends on the model is [`Method::check`]'s).
    Int { min: i64, max: i64 },
    /// An `f32` within `(min_exclusive, max]`.
    Float { min_exclusive: f64, max: f64 },
    /// One of these names.
    Choice(&'static [&'static str]),
    /// Any `u64`.
    Seed,
}

/// The registry, in the order `REGISTRY` lists it (what `GET /methods` and the help show).
pub fn all() -> &'static [&'static MethodEntry] {
    REGISTRY
}

pub fn names() -> Vec<&'static str> {
    REGISTRY.iter().map(|e| e.name).collect()
}

/// Every parameter name any method takes, once each, in registry order.
pub fn param_names() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for p in REGISTRY.iter().flat_map(|e| e.params) {
        if !out.contains(&p.name) {
            out.push(p.name);
        }
    }
    out
}

/// `a, b or c`.
fn or_list(items: &[&str]) -> String {
    match items.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => items.join(""),
    }
}

/// A parsed parameter value.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Arg {
    Int(i64),
    Float(f32),
    Choice(&'static str),
    Seed(u64),
}

impl ParamSpec {
    /// Parses and bounds-checks one value; errors name the parameter.
    fn parse(&self, raw: &str) -> Result<Arg, String> {
        let name = self.name;
        match self.kind {
            ParamKind::Int { min, max } => {
                let v: i64 = raw.parse().map_err(|e| format!("`{name}`: {e}"))?;
                match (v >= min && v <= max, max) {
                    (true, _) => Ok(Arg::Int(v)),
                    (false, i64::MAX) => Err(format!("{name} must be at least {min}, got {v}")),
                    (false, _) => Err(format!("{name} must be within {min}..={max}, got {v}")),
                }
            }
            ParamKind::Float { min_exclusive, max } => {
                // Parsed as the f32 the method keeps, so the bounds see the value it runs
                // with (1e-50 is 0 in f32, and refused as such).
                let v: f32 = raw.parse().map_err(|e| format!("`{name}`: {e}"))?;
                if f64::from(v) > min_exclusive && f64::from(v) <= max {
                    Ok(Arg::Float(v))
                } else {
                    Err(format!("{name} must be within ({min_exclusive}, {max}], got {v}"))
                }
            }
            ParamKind::Choice(choices) => choices
                .iter()
                .find(|c| **c == raw)
                .map(|c| Arg::Choice(c))
                .ok_or_else(|| format!("unknown {name} `{raw}` (expected {})", or_list(choices))),
            ParamKind::Seed => raw.parse().map(Arg::Seed).map_err(|e| format!("`{name}`: {e}")),
        }
    }
}

/// A method's parameters, parsed against its [`ParamSpec`]s with the defaults filled in.
/// The getters panic on a name or kind the spec does not declare: that is a bug in the
/// method's file, and the registry's tests build every method.
pub(crate) struct Args {
    values: Vec<(&'static str, Option<Arg>)>,
}

impl Args {
    fn get(&self, name: &str) -> Option<Arg> {
        self.values.iter().find(|(n, _)| *n == name).unwrap_or_else(|| panic!("no parameter `{name}`")).1
    }

    pub(crate) fn int(&self, name: &str) -> Option<i64> {
        self.get(name).map(|a| match a {
            Arg::Int(v) => v,
            other => panic!("`{name}` is not an integer: {other:?}"),
        })
    }

    /// An integer parameter whose bounds make it a count (≥ 0).
    pub(crate) fn count(&self, name: &str) -> Option<usize> {
        self.int(name).map(|v| usize::try_from(v).unwrap_or_else(|_| panic!("`{name}` is declared ≥ 0")))
    }

    pub(crate) fn float(&self, name: &str) -> Option<f32> {
        self.get(name).map(|a| match a {
            Arg::Float(v) => v,
            other => panic!("`{name}` is not a float: {other:?}"),
        })
    }

    pub(crate) fn choice(&self, name: &str) -> Option<&'static str> {
        self.get(name).map(|a| match a {
            Arg::Choice(v) => v,
            other => panic!("`{name}` is not a choice: {other:?}"),
        })
    }

    pub(crate) fn seed(&self, name: &str) -> Option<u64> {
        self.get(name).map(|a| match a {
            Arg::Seed(v) => v,
            other => panic!("`{name}` is not a seed: {other:?}"),
        })
    }
}

impl MethodEntry {
    fn args(&self, given: &[(&str, &str)]) -> Result<Args, String> {
        for (i, (name, _)) in given.iter().enumerate() {
            if !self.params.iter().any(|p| p.name == *name) {
                return Err(format!("`{name}` does not apply to method `{}`", self.name));
            }
            if given[..i].iter().any(|(n, _)| n == name) {
                return Err(format!("`{name}` is given twice"));
            }
        }
        let values = self
            .params
            .iter()
            .map(|p| {
                let raw = given.iter().find(|(n, _)| *n == p.name).map_or(p.default, |(_, v)| *v);
                let value = if raw.is_empty() && p.default.is_empty() { None } else { Some(p.parse(raw)?) };
                Ok((p.name, value))
            })
            .collect::<Result<_, String>>()?;
        Ok(Args { values })
    }
}

/// What makes one explanation method different from another. The shared machinery
/// (plan, passes, combination) asks these questions and nothing else.
pub(crate) trait CamMethod: Send + Sync + fmt::Debug + fmt::Display {
    fn entry(&self) -> &'static MethodEntry;

    /// The library convention the method follows: its masks' normalisation and
    /// alignment, its default weights and how its map is normalised and upsampled.
    fn preset(&self) -> Preset;

    /// The name responses give the convention followed: the preset's for methods that
    /// follow one of Score-CAM's, else the reference implementation's.
    fn convention(&self) -> &'static str {
        self.preset().as_str()
    }

    /// Whether the map is computed at feature resolution first (so it can be returned).
    fn has_feature_map(&self) -> bool {
        self.preset().has_feature_map()
    }

    /// The graph its passes run through.
    fn graph(&self) -> Graph {
        Graph::Full
    }

    /// Whether it weighs by the head's closed form ([`super::LinearHead`]), which only a
    /// head that is global average pooling followed by a linear layer has.
    fn needs_linear_head(&self) -> bool {
        false
    }

    /// How many units the plan weighs: the target layer's channels, unless the method's
    /// units are something else (spatial cells, random masks).
    fn units(&self, activations: &Activations) -> usize {
        activations.channels
    }

    /// A unit's share of the explanation, which a partial run's coverage reports: by
    /// default the channel's activation mass Σ|A_k|.
    fn unit_mass(&self, activations: &Activations, unit: usize) -> f64 {
        mass(activations.channel(unit))
    }

    /// Units run in decreasing priority (ties by index): by default the channel's spatial
    /// spread, so a prefix of the passes is a good partial plan.
    fn unit_priority(&self, activations: &Activations, unit: usize) -> f64 {
        spread(activations.channel(unit))
    }

    /// Bounds that depend on the model; `channels` is the target layer's K.
    fn check(&self, _channels: usize) -> Result<(), String> {
        Ok(())
    }

    /// Every parameter's value, keyed by its [`ParamSpec`] name.
    fn parameters(&self) -> serde_json::Map<String, Value>;

    /// Passes each weighed unit (channel, cell or mask) needs.
    fn passes_per_unit(&self) -> usize;

    /// The channels that take part, ascending; `None`: all of them.
    fn select_channels(&self, _activations: &Activations) -> Option<Vec<usize>> {
        None
    }

    /// Whether channel k gets no pass of its own: by default a constant channel, whose
    /// min-max mask is all zero.
    fn is_degenerate(&self, activations: &Activations, k: usize) -> bool {
        activations.is_constant(k)
    }

    /// Degenerate channels' passes: `None` leaves them out of the map (no weight);
    /// `Some(n)`: they all score the same n passes (`Pass { channel: None, .. }`).
    fn degenerate_passes(&self) -> Option<usize>;

    /// Whether channels with the same mask may share passes (a pass depends on its
    /// channel only through the mask).
    fn shares_masks(&self) -> bool {
        true
    }

    /// Writes one pass's input into `dst` (`pass_len` floats); `mask` is scratch of H×W.
    fn fill_pass(&self, src: &PassSource<'_>, pass: Pass, mask: &mut [f32], dst: &mut [f32]);

    /// The weighed channels' weights from their passes' scores; by default the preset's.
    fn weights(&self, scores: &MapInputs<'_>) -> Vec<f32> {
        preset_weights(self.preset(), scores)
    }

    /// The map, for a method whose units are not channels weighed into Σ_k w_k A_k;
    /// `None` (the default): that weighted sum, by the preset's convention.
    fn map(&self, _inputs: &MapInputs<'_>) -> Option<Saliency> {
        None
    }
}

/// An explanation method with its parameters: one of the registry's, built by
/// [`Method::parse`] (or [`Method::scorecam`]); cheap to clone.
#[derive(Clone)]
pub struct Method(Arc<dyn CamMethod>);

impl Method {
    /// The method `name` (`None`: scorecam) with `params` as `(name, value)` strings;
    /// parameters not given take their defaults.
    pub fn parse(name: Option<&str>, params: &[(&str, &str)]) -> Result<Method, String> {
        let name = name.unwrap_or(DEFAULT_METHOD);
        let entry = REGISTRY
            .iter()
            .find(|e| e.name == name)
            .ok_or_else(|| format!("unknown method `{name}` (expected {})", names().join(", ")))?;
        (entry.build)(&entry.args(params)?).map(Method)
    }

    /// Exact Score-CAM by a preset.
    pub fn scorecam(preset: Preset) -> Method {
        Method(Arc::new(scorecam::ScoreCam::exact(preset)))
    }

    pub fn name(&self) -> &'static str {
        self.0.entry().name
    }

    /// The convention followed: Score-CAM's preset, or the library the other methods
    /// follow, named so responses say which.
    pub fn preset(&self) -> Preset {
        self.0.preset()
    }

    pub fn graph(&self) -> Graph {
        self.0.graph()
    }

    /// Whether the map is computed at feature resolution first (so it can be returned).
    pub fn has_feature_map(&self) -> bool {
        self.0.has_feature_map()
    }

    /// The convention responses name: a Score-CAM preset, or the reference the method
    /// follows.
    pub fn convention(&self) -> &'static str {
        self.0.convention()
    }

    /// Whether the method needs the model's head to be global average pooling followed by
    /// a linear layer.
    pub fn needs_linear_head(&self) -> bool {
        self.0.needs_linear_head()
    }

    /// Checks the bounds that depend on the model; `channels` is the target layer's K.
    pub fn check(&self, channels: usize) -> Result<(), String> {
        self.0.check(channels)
    }

    /// Every parameter's value, e.g. `{"preset":"official","max_channels":null}`.
    pub fn parameters(&self) -> serde_json::Map<String, Value> {
        self.0.parameters()
    }

    pub(crate) fn cam(&self) -> &dyn CamMethod {
        &*self.0
    }
}

/// The short form (`evaluate`'s method names, listings): `name[:first][@optional]`, where
/// `:` binds the method's first parameter and `@` its first optional one (a parameter absent
/// by default, such as `max_channels`): `scorecam:torchcam@64`, `sscam:35`, `ablationcam`.
impl Method {
    fn first_param(entry: &MethodEntry) -> Option<&'static ParamSpec> {
        entry.params.first().filter(|p| !p.default.is_empty())
    }

    fn optional_param(entry: &MethodEntry) -> Option<&'static ParamSpec> {
        entry.params.iter().find(|p| p.default.is_empty())
    }

    /// Prints the short form (the first parameter always, the optional one when set).
    pub fn short(&self) -> String {
        let entry = self.0.entry();
        let values = self.parameters();
        let text = |v: &Value| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let mut out = entry.name.to_string();
        if let Some(v) = Self::first_param(entry).and_then(|p| values.get(p.name)) {
            out += &format!(":{}", text(v));
        }
        if let Some(v) = Self::optional_param(entry).and_then(|p| values.get(p.name)).filter(|v| !v.is_null()) {
            out += &format!("@{}", text(v));
        }
        out
    }

    /// Parses the short form.
    pub fn from_short(spec: &str) -> Result<Method, String> {
        let spec = spec.trim();
        let (head, optional) = match spec.split_once('@') {
            Some((h, n)) => (h, Some(n)),
            None => (spec, None),
        };
        let (name, first) = match head.split_once(':') {
            Some((n, v)) => (n, Some(v)),
            None => (head, None),
        };
        let entry = REGISTRY.iter().find(|e| e.name == name).ok_or_else(|| {
            format!("unknown method `{spec}` (expected {} in the form name[:value][@n])", names().join(", "))
        })?;
        let mut params = Vec::new();
        for (value, param, what) in
            [(first, Self::first_param(entry), ":value"), (optional, Self::optional_param(entry), "@n")]
        {
            if let Some(v) = value {
                let p = param.ok_or_else(|| format!("`{spec}`: {} takes no `{what}`", entry.name))?;
                params.push((p.name, v));
            }
        }
        Method::parse(Some(name), &params).map_err(|e| format!("`{spec}`: {e}"))
    }

    /// For an approximation (an optional parameter set, such as Faster Score-CAM's
    /// `max_channels`), the exact method it approximates.
    pub fn exact(&self) -> Option<Method> {
        let entry = self.0.entry();
        let optional = Self::optional_param(entry)?;
        let values = self.parameters();
        if values.get(optional.name).is_none_or(Value::is_null) {
            return None;
        }
        let kept: Vec<(&str, String)> = entry
            .params
            .iter()
            .filter(|p| p.name != optional.name)
            .filter_map(|p| values.get(p.name).map(|v| (p.name, v)))
            .map(|(n, v)| (n, if let Value::String(s) = v { s.clone() } else { v.to_string() }))
            .collect();
        let pairs: Vec<(&str, &str)> = kept.iter().map(|(n, v)| (*n, v.as_str())).collect();
        Method::parse(Some(entry.name), &pairs).ok()
    }
}

/// The registry as JSON (`GET /methods`, which the web page builds its form from).
pub fn describe() -> Value {
    let param = |p: &ParamSpec| {
        let mut o = serde_json::Map::new();
        o.insert("name".into(), p.name.into());
        o.insert("default".into(), p.default.into());
        o.insert("help".into(), p.help.into());
        let kind = match p.kind {
            ParamKind::Int { min, max } => {
                o.insert("minimum".into(), min.into());
                if max != i64::MAX {
                    o.insert("maximum".into(), max.into());
                }
                "integer"
            }
            ParamKind::Float { min_exclusive, max } => {
                o.insert("exclusive_minimum".into(), min_exclusive.into());
                o.insert("maximum".into(), max.into());
                "number"
            }
            ParamKind::Choice(choices) => {
                o.insert("choices".into(), choices.into());
                "choice"
            }
            ParamKind::Seed => "seed",
        };
        o.insert("kind".into(), kind.into());
        Value::Object(o)
    };
    Value::Array(
        REGISTRY
            .iter()
            .map(|e| {
                serde_json::json!({
                    "name": e.name,
                    "summary": e.summary,
                    "parameters": e.params.iter().map(param).collect::<Vec<_>>(),
                })
            })
            .collect(),
    )
}

impl Default for Method {
    fn default() -> Self {
        Method::scorecam(Preset::default())
    }
}

impl From<Preset> for Method {
    fn from(preset: Preset) -> Self {
        Method::scorecam(preset)
    }
}

/// Two methods are equal when they are the same method with the same parameters.
impl PartialEq for Method {
    fn eq(&self, other: &Self) -> bool {
        self.name() == other.name() && self.parameters() == other.parameters()
    }
}

impl fmt::Debug for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&*self.0, f)
    }
}

/// `{"name": …, then every parameter in its spec's order}`.
impl Serialize for Method {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let values = self.parameters();
        let specs = self.0.entry().params;
        let mut map = serializer.serialize_map(Some(1 + specs.len()))?;
        map.serialize_entry("name", self.name())?;
        for spec in specs {
            if let Some(v) = values.get(spec.name) {
                map.serialize_entry(spec.name, v)?;
            }
        }
        map.end()
    }
}

/// An f32 as JSON prints it: `Value` holds f64, and widening 0.1f32 would print
/// 0.10000000149011612; the f32's shortest decimal read as f64 prints as the f32 did.
fn json_f32(v: f32) -> Value {
    v.to_string().parse::<f64>().ok().and_then(serde_json::Number::from_f64).map_or(Value::Null, Value::Number)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(name: &str, params: &[(&str, &str)]) -> Result<Method, String> {
        Method::parse(Some(name), params)
    }

    #[test]
    fn bounds_refuse_runaway_requests() {
        assert!(parse("sscam", &[]).unwrap().check(1280).is_ok());
        assert_eq!(
            parse("sscam", &[("samples", "1000000")]).unwrap_err(),
            "samples must be within 1..=100, got 1000000"
        );
        assert_eq!(parse("sscam", &[("sigma", "0")]).unwrap_err(), "sigma must be within (0, 10], got 0");
        assert_eq!(parse("sscam", &[("sigma", "NaN")]).unwrap_err(), "sigma must be within (0, 10], got NaN");
        assert_eq!(parse("sscam", &[("sigma", "1e-50")]).unwrap_err(), "sigma must be within (0, 10], got 0");
        assert_eq!(parse("iscam", &[("steps", "0")]).unwrap_err(), "steps must be within 1..=100, got 0");
        let fast = |n: &str| parse("scorecam", &[("max_channels", n)]);
        assert!(fast("64").unwrap().check(1280).is_ok());
        assert_eq!(fast("0").unwrap_err(), "max_channels must be at least 1, got 0");
        assert_eq!(fast("1281").unwrap().check(1280).unwrap_err(), "max_channels must be within 1..=1280, got 1281");
    }

    #[test]
    fn only_ablation_and_recipro_cam_run_the_head_alone() {
        for name in names() {
            let graph = parse(name, &[]).unwrap().graph();
            let expected = if ["ablationcam", "reciprocam"].contains(&name) { Graph::Head } else { Graph::Full };
            assert_eq!(graph, expected, "{name}");
        }
    }

    #[test]
    fn parse_errors_name_the_problem() {
        // Today: "… (expected scorecam, sscam, iscam, ablationcam)"; later methods join the list.
        let known = names().join(", ");
        assert!(known.starts_with("scorecam, sscam, iscam, ablationcam"));
        assert_eq!(parse("nosuchcam", &[]).unwrap_err(), format!("unknown method `nosuchcam` (expected {known})"));
        assert_eq!(
            parse("ablationcam", &[("steps", "3")]).unwrap_err(),
            "`steps` does not apply to method `ablationcam`"
        );
        assert_eq!(parse("sscam", &[("samples", "many")]).unwrap_err(), "`samples`: invalid digit found in string");
        assert_eq!(parse("sscam", &[("seed", "-1")]).unwrap_err(), "`seed`: invalid digit found in string");
        assert_eq!(parse("scorecam", &[("preset", "x")]).unwrap_err(), "x".parse::<Preset>().unwrap_err());
        assert_eq!(Method::parse(None, &[]).unwrap(), Method::default());
    }

    #[test]
    fn serialisation_and_display_are_todays() {
        let json = |m: &Method| serde_json::to_string(m).unwrap();
        assert_eq!(json(&Method::default()), r#"{"name":"scorecam","preset":"official","max_channels":null}"#);
        let fast = parse("scorecam", &[("preset", "torchcam"), ("max_channels", "64")]).unwrap();
        assert_eq!(json(&fast), r#"{"name":"scorecam","preset":"torchcam","max_channels":64}"#);
        assert_eq!(fast.to_string(), "scorecam:torchcam@64");
        assert_eq!(Method::default().to_string(), "scorecam:official");
        let ss = parse("sscam", &[]).unwrap();
        assert_eq!(json(&ss), r#"{"name":"sscam","samples":35,"sigma":2.0,"seed":0}"#);
        assert_eq!(ss.to_string(), "sscam(samples=35, sigma=2)");
        let is = parse("iscam", &[]).unwrap();
        assert_eq!((json(&is), is.to_string()), (r#"{"name":"iscam","steps":10}"#.into(), "iscam(steps=10)".into()));
        let ab = parse("ablationcam", &[]).unwrap();
        assert_eq!((json(&ab), ab.to_string()), (r#"{"name":"ablationcam"}"#.into(), "ablationcam".into()));
        assert_eq!(format!("{:?}", parse("iscam", &[("steps", "4")]).unwrap()), "IsCam { steps: 4 }");
    }

    #[test]
    fn f32_parameters_serialise_as_the_f32_did() {
        for v in [0.1f32, 2.0, 1e-7, 0.3, 9.999_999, 1.0 / 3.0, f32::MIN_POSITIVE] {
            assert_eq!(serde_json::to_string(&json_f32(v)).unwrap(), serde_json::to_string(&v).unwrap(), "{v}");
        }
    }

    #[test]
    fn the_registry_is_consistent() {
        // Methods added later come after these.
        assert!(names().starts_with(&["scorecam", "sscam", "iscam", "ablationcam"]), "{:?}", names());
        let params = param_names();
        assert!(params.starts_with(&["preset", "max_channels", "samples", "sigma", "seed", "steps"]), "{params:?}");
        assert!(params.iter().enumerate().all(|(i, p)| !params[..i].contains(p)), "{params:?}");
        for entry in all() {
            // Defaults parse, satisfy their bounds and build the method.
            let method = Method::parse(Some(entry.name), &[]).unwrap_or_else(|e| panic!("{}: {e}", entry.name));
            assert_eq!(method.name(), entry.name);
            let values = method.parameters();
            let names: Vec<&str> = entry.params.iter().map(|p| p.name).collect();
            assert_eq!(values.keys().map(String::as_str).collect::<Vec<_>>().len(), names.len(), "{}", entry.name);
            for spec in entry.params {
                assert!(values.contains_key(spec.name), "{}: {} has no value", entry.name, spec.name);
                assert!(!spec.help.is_empty() && !entry.summary.is_empty());
                if !spec.default.is_empty() {
                    assert!(spec.parse(spec.default).is_ok(), "{}: default of {}", entry.name, spec.name);
                }
                // Values just past the bounds are refused; the bounds themselves are taken.
                let (inside, outside): (Vec<String>, Vec<String>) = match spec.kind {
                    ParamKind::Int { min, max } => {
                        let mut outside = vec![(min - 1).to_string(), "x".into()];
                        if max < i64::MAX {
                            outside.push((max + 1).to_string());
                        }
                        (vec![min.to_string(), max.to_string()], outside)
                    }
                    ParamKind::Float { min_exclusive, max } => {
                        (vec![max.to_string()], vec![min_exclusive.to_string(), (max * 1.01).to_string(), "NaN".into()])
                    }
                    ParamKind::Choice(choices) => (choices.iter().map(|c| c.to_string()).collect(), vec!["?".into()]),
                    ParamKind::Seed => (vec!["0".into(), u64::MAX.to_string()], vec!["-1".into()]),
                };
                for v in inside {
                    let m = Method::parse(Some(entry.name), &[(spec.name, &v)]);
                    assert!(m.is_ok(), "{}: {}={v}: {m:?}", entry.name, spec.name);
                    // Printing and serialising round-trip through the registry.
                    let m = m.unwrap();
                    let json = serde_json::to_value(&m).unwrap();
                    assert_eq!(json["name"], entry.name);
                    let again: Vec<(String, String)> = m
                        .parameters()
                        .into_iter()
                        .filter(|(_, v)| !v.is_null())
                        .map(|(k, v)| (k, v.as_str().map_or_else(|| v.to_string(), str::to_string)))
                        .collect();
                    let again: Vec<(&str, &str)> = again.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                    let rebuilt = Method::parse(Some(entry.name), &again).unwrap();
                    assert_eq!(rebuilt, m);
                    assert_eq!(rebuilt.to_string(), m.to_string());
                    assert_eq!(serde_json::to_value(&rebuilt).unwrap(), json);
                }
                for v in outside {
                    assert!(
                        Method::parse(Some(entry.name), &[(spec.name, &v)]).is_err(),
                        "{}: {}={v}",
                        entry.name,
                        spec.name
                    );
                }
            }
        }
    }

    #[test]
    fn the_short_form_parses_and_prints_back() {
        for s in ["scorecam:official", "scorecam:torchcam@64", "sscam:35", "iscam:10", "ablationcam"] {
            assert_eq!(Method::from_short(s).unwrap().short(), s);
        }
        assert_eq!(Method::from_short("scorecam").unwrap().short(), "scorecam:official");
        assert_eq!(Method::from_short("scorecam@16").unwrap().short(), "scorecam:official@16");
        for bad in ["nosuchcam", "sscam@64", "ablationcam:3", "scorecam:nope", "iscam:x", "scorecam@x", "iscam:0"] {
            assert!(Method::from_short(bad).is_err(), "{bad}");
        }
        let fast = Method::from_short("scorecam:torchcam@64").unwrap();
        assert_eq!(fast.exact().map(|m| m.short()).as_deref(), Some("scorecam:torchcam"));
        assert!(Method::from_short("sscam:3").unwrap().exact().is_none());
    }

    #[test]
    fn the_description_lists_every_parameter_with_its_bounds() {
        let d = describe();
        let methods = d.as_array().unwrap();
        assert_eq!(methods.iter().map(|m| m["name"].as_str().unwrap()).collect::<Vec<_>>(), names());
        let sscam = &methods[1]["parameters"];
        assert_eq!(sscam[0]["name"], "samples");
        assert_eq!((sscam[0]["kind"].as_str(), sscam[0]["maximum"].as_i64()), (Some("integer"), Some(100)));
        assert_eq!(sscam[1]["kind"], "number");
        assert_eq!(methods[0]["parameters"][0]["choices"][2], "torchcam");
    }

    #[test]
    fn presets_are_the_scorecam_choices() {
        let spec = scorecam::ENTRY.params.iter().find(|p| p.name == "preset").unwrap();
        let ParamKind::Choice(choices) = spec.kind else { panic!("preset is a choice") };
        assert_eq!(choices, Preset::ALL.map(Preset::as_str));
        assert_eq!(spec.parse("x").unwrap_err(), "x".parse::<Preset>().unwrap_err());
    }
}
