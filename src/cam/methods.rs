//! TEMPORARY registry shim over the `Method` enum (replaced by the cam split).

use serde_json::{Value, json};

use super::{Method, Preset};

pub struct MethodEntry {
    pub name: &'static str,
    pub summary: &'static str,
    pub params: &'static [ParamSpec],
}

pub struct ParamSpec {
    pub name: &'static str,
    pub kind: ParamKind,
    pub default: &'static str,
    pub help: &'static str,
}

pub enum ParamKind {
    Int { min: i64, max: i64 },
    Float { min_exclusive: f64, max: f64 },
    Choice(&'static [&'static str]),
    Seed,
}

static SCORECAM: MethodEntry = MethodEntry {
    name: "scorecam",
    summary: "Score-CAM",
    params: &[
        ParamSpec { name: "preset", kind: ParamKind::Choice(&["official", "pytorch_grad_cam", "torchcam"]), default: "official", help: "Score-CAM convention" },
        ParamSpec { name: "max_channels", kind: ParamKind::Int { min: 1, max: 1 << 20 }, default: "all", help: "Faster Score-CAM" },
    ],
};
static SSCAM: MethodEntry = MethodEntry {
    name: "sscam",
    summary: "SS-CAM",
    params: &[
        ParamSpec { name: "samples", kind: ParamKind::Int { min: 1, max: 100 }, default: "35", help: "noise samples" },
        ParamSpec { name: "sigma", kind: ParamKind::Float { min_exclusive: 0.0, max: 10.0 }, default: "2", help: "noise std" },
        ParamSpec { name: "seed", kind: ParamKind::Seed, default: "0", help: "seed" },
    ],
};
static ISCAM: MethodEntry = MethodEntry {
    name: "iscam",
    summary: "IS-CAM",
    params: &[ParamSpec { name: "steps", kind: ParamKind::Int { min: 1, max: 100 }, default: "10", help: "steps" }],
};
static ABLATION: MethodEntry = MethodEntry { name: "ablationcam", summary: "Ablation-CAM", params: &[] };
static ALL: [&MethodEntry; 4] = [&SCORECAM, &SSCAM, &ISCAM, &ABLATION];

pub fn all() -> &'static [&'static MethodEntry] {
    &ALL
}

pub fn names() -> Vec<&'static str> {
    ALL.iter().map(|e| e.name).collect()
}

pub fn param_names() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for p in ALL.iter().flat_map(|e| e.params) {
        if !out.contains(&p.name) {
            out.push(p.name);
        }
    }
    out
}

pub fn describe() -> Value {
    json!(ALL.iter().map(|e| json!({"name": e.name, "summary": e.summary, "parameters": e.params.iter().map(|p| json!({"name": p.name, "kind": "integer", "default": p.default, "help": p.help})).collect::<Vec<_>>()})).collect::<Vec<_>>())
}

impl Method {
    pub fn parse(name: Option<&str>, params: &[(&str, &str)]) -> Result<Method, String> {
        let get = |k: &str| params.iter().find(|(n, _)| *n == k).map(|(_, v)| *v);
        let name = name.unwrap_or("scorecam");
        let entry = ALL.iter().find(|e| e.name == name).ok_or_else(|| format!("unknown method `{name}` (expected {})", names().join(", ")))?;
        if let Some((p, _)) = params.iter().find(|(p, _)| !entry.params.iter().any(|s| s.name == *p)) {
            return Err(format!("`{p}` does not apply to method `{name}`"));
        }
        fn num<T: std::str::FromStr>(k: &str, v: Option<&str>) -> Result<Option<T>, String> where T::Err: std::fmt::Display {
            v.map(|v| v.parse::<T>().map_err(|e| format!("`{k}`: {e}"))).transpose()
        }
        let m = match name {
            "scorecam" => Method::ScoreCam {
                preset: get("preset").map(|p| p.parse::<Preset>().map_err(|e| format!("`preset`: {e}"))).transpose()?.unwrap_or_default(),
                max_channels: num("max_channels", get("max_channels"))?,
            },
            "sscam" => Method::SsCam {
                samples: num("samples", get("samples"))?.unwrap_or(super::SSCAM_SAMPLES),
                sigma: num("sigma", get("sigma"))?.unwrap_or(super::SSCAM_SIGMA),
                seed: num("seed", get("seed"))?.unwrap_or(0),
            },
            "iscam" => Method::IsCam { steps: num("steps", get("steps"))?.unwrap_or(super::ISCAM_STEPS) },
            _ => Method::AblationCam,
        };
        m.validate(usize::MAX)?;
        Ok(m)
    }

    pub fn check(&self, channels: usize) -> Result<(), String> {
        self.validate(channels)
    }

    pub fn short(&self) -> String {
        match self {
            Method::ScoreCam { preset, max_channels: None } => format!("scorecam:{preset}"),
            Method::ScoreCam { preset, max_channels: Some(n) } => format!("scorecam:{preset}@{n}"),
            Method::SsCam { samples, .. } => format!("sscam:{samples}"),
            Method::IsCam { steps } => format!("iscam:{steps}"),
            Method::AblationCam => "ablationcam".into(),
        }
    }

    pub fn from_short(s: &str) -> Result<Method, String> {
        let (head, at) = match s.split_once('@') { Some((h, n)) => (h, Some(n)), None => (s, None) };
        let (name, arg) = match head.split_once(':') { Some((n, a)) => (n, Some(a)), None => (head, None) };
        let mut params = Vec::new();
        match (name, arg) {
            ("scorecam", Some(a)) => params.push(("preset", a)),
            ("sscam", Some(a)) => params.push(("samples", a)),
            ("iscam", Some(a)) => params.push(("steps", a)),
            (_, Some(_)) => return Err(format!("unknown method `{s}`")),
            _ => {}
        }
        if let Some(n) = at { params.push(("max_channels", n)); }
        Method::parse(Some(name), &params).map_err(|e| format!("`{s}`: {e}"))
    }

    pub fn exact(&self) -> Option<Method> {
        match self {
            Method::ScoreCam { preset, max_channels: Some(_) } => Some(Method::scorecam(*preset)),
            _ => None,
        }
    }
}
