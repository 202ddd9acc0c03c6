//! `model.toml`: how to feed the model and what its target layer is.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::ModelError;

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
    /// Per-channel mean and std, applied after scaling pixels to 0..1.
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetLayer {
    pub description: String,
}

impl Manifest {
    pub fn from_file(path: &Path) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io { path: path.into(), source })?;
        Self::parse(&text).map_err(|message| ModelError::Manifest { path: path.into(), message })
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let manifest: Manifest = toml::from_str(text).map_err(|e| e.message().to_string())?;
        manifest.check()?;
        Ok(manifest)
    }

    fn check(&self) -> Result<(), String> {
        let i = &self.input;
        for (name, v) in [("input.width", i.width), ("input.height", i.height)] {
            if v == 0 || v > MAX_SIDE {
                return Err(format!("{name} = {v} must be in 1..={MAX_SIDE}"));
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
            (ResizeMode::Stretch, Some(_)) => {
                Err("input.crop_from only applies to resize = \"shorter_side_crop\"".into())
            }
            _ => Ok(()),
        }
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
    fn shorter_side_crop_with_crop_from_is_accepted() {
        let m = Manifest::parse(
            &GOOD.replace("height = 224", "height = 224\nresize = \"shorter_side_crop\"\ncrop_from = 256"),
        )
        .unwrap();
        assert_eq!(m.input.crop_from, Some(256));
    }
}
