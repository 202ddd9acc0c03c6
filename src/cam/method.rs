//! The explanation methods and their parameters, as `scorecam-presets.md` defines them.

use serde::Serialize;

use super::Preset;

/// SS-CAM's default noise samples per channel (torch-cam).
pub const SSCAM_SAMPLES: usize = 35;
/// SS-CAM's default noise standard deviation (torch-cam).
pub const SSCAM_SIGMA: f32 = 2.0;
/// IS-CAM's default integration steps (torch-cam).
pub const ISCAM_STEPS: usize = 10;

/// Most SS-CAM samples or IS-CAM steps one request may ask for: each is a full set of
/// masked passes (100 × 1280 channels is already 128 000 forward passes).
pub const MAX_REPEATS: usize = 100;
/// Largest SS-CAM noise standard deviation accepted (the masks themselves span 0..1).
pub const MAX_SIGMA: f32 = 10.0;

/// How an explanation weighs the target layer's channels.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(tag = "name")]
pub enum Method {
    /// Score-CAM by one of the three conventions; `max_channels` keeps only the channels
    /// with the largest spatial standard deviation (Faster Score-CAM, an approximation).
    #[serde(rename = "scorecam")]
    ScoreCam { preset: Preset, max_channels: Option<usize> },
    /// Smoothed Score-CAM (torch-cam SSCAM): Gaussian noise added to every mask.
    #[serde(rename = "sscam")]
    SsCam { samples: usize, sigma: f32, seed: u64 },
    /// Integrated Score-CAM (torch-cam ISCAM): masks scaled by growing coefficients.
    #[serde(rename = "iscam")]
    IsCam { steps: usize },
    /// Ablation-CAM (pytorch-grad-cam): each channel zeroed in turn; only the head runs.
    #[serde(rename = "ablationcam")]
    AblationCam,
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

/// Which graph a method's passes run through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Graph {
    /// Extractor then head, on images.
    Full,
    /// The head alone, on target-layer activations.
    Head,
}

impl Method {
    pub const NAMES: [&'static str; 4] = ["scorecam", "sscam", "iscam", "ablationcam"];

    /// Exact Score-CAM by a preset.
    pub fn scorecam(preset: Preset) -> Self {
        Method::ScoreCam { preset, max_channels: None }
    }

    pub fn sscam() -> Self {
        Method::SsCam { samples: SSCAM_SAMPLES, sigma: SSCAM_SIGMA, seed: 0 }
    }

    pub fn iscam() -> Self {
        Method::IsCam { steps: ISCAM_STEPS }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Method::ScoreCam { .. } => "scorecam",
            Method::SsCam { .. } => "sscam",
            Method::IsCam { .. } => "iscam",
            Method::AblationCam => "ablationcam",
        }
    }

    /// The Score-CAM preset; the other methods follow one library's conventions, named
    /// here so responses say which.
    pub fn preset(&self) -> Preset {
        match self {
            Method::ScoreCam { preset, .. } => *preset,
            Method::SsCam { .. } | Method::IsCam { .. } => Preset::Torchcam,
            Method::AblationCam => Preset::PytorchGradCam,
        }
    }

    pub fn graph(&self) -> Graph {
        match self {
            Method::AblationCam => Graph::Head,
            _ => Graph::Full,
        }
    }

    /// Whether the map is computed at feature resolution first (so it can be returned).
    pub fn has_feature_map(&self) -> bool {
        match self {
            Method::ScoreCam { preset, .. } => preset.has_feature_map(),
            _ => true,
        }
    }

    /// Checks the parameters' bounds; `channels` is the target layer's channel count.
    pub fn validate(&self, channels: usize) -> Result<(), String> {
        match *self {
            Method::ScoreCam { max_channels: Some(n), .. } if n == 0 || n > channels => {
                Err(format!("max_channels must be within 1..={channels}, got {n}"))
            }
            Method::SsCam { samples, .. } if samples == 0 || samples > MAX_REPEATS => {
                Err(format!("samples must be within 1..={MAX_REPEATS}, got {samples}"))
            }
            Method::SsCam { sigma, .. } if !(sigma > 0.0 && sigma <= MAX_SIGMA) => {
                Err(format!("sigma must be within (0, {MAX_SIGMA}], got {sigma}"))
            }
            Method::IsCam { steps } if steps == 0 || steps > MAX_REPEATS => {
                Err(format!("steps must be within 1..={MAX_REPEATS}, got {steps}"))
            }
            _ => Ok(()),
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Method::ScoreCam { preset, max_channels: None } => write!(f, "scorecam:{preset}"),
            Method::ScoreCam { preset, max_channels: Some(n) } => write!(f, "scorecam:{preset}@{n}"),
            Method::SsCam { samples, sigma, .. } => write!(f, "sscam(samples={samples}, sigma={sigma})"),
            Method::IsCam { steps } => write!(f, "iscam(steps={steps})"),
            Method::AblationCam => f.write_str("ablationcam"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_refuse_runaway_requests() {
        assert!(Method::sscam().validate(1280).is_ok());
        assert!(Method::SsCam { samples: 1_000_000, sigma: 2.0, seed: 0 }.validate(1280).is_err());
        assert!(Method::SsCam { samples: 35, sigma: 0.0, seed: 0 }.validate(1280).is_err());
        assert!(Method::SsCam { samples: 35, sigma: f32::NAN, seed: 0 }.validate(1280).is_err());
        assert!(Method::IsCam { steps: 0 }.validate(1280).is_err());
        let fast = |n| Method::ScoreCam { preset: Preset::Official, max_channels: Some(n) };
        assert!(fast(64).validate(1280).is_ok());
        assert!(fast(0).validate(1280).is_err());
        assert!(fast(1281).validate(1280).is_err());
    }

    #[test]
    fn only_ablation_runs_the_head_alone() {
        assert_eq!(Method::AblationCam.graph(), Graph::Head);
        for m in [Method::default(), Method::sscam(), Method::iscam()] {
            assert_eq!(m.graph(), Graph::Full);
        }
    }
}
