//! Colour maps as 256-entry lookup tables (see `scripts/dev/gen_colormaps.py`).

use serde::{Deserialize, Serialize};

use super::tables;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Colormap {
    /// OpenCV's COLORMAP_JET, what pytorch-grad-cam overlays use.
    #[default]
    Jet,
    /// matplotlib's perceptually uniform default.
    Viridis,
    Inferno,
    Gray,
}

impl Colormap {
    pub const ALL: [Colormap; 4] = [Colormap::Jet, Colormap::Viridis, Colormap::Inferno, Colormap::Gray];

    pub fn as_str(self) -> &'static str {
        match self {
            Colormap::Jet => "jet",
            Colormap::Viridis => "viridis",
            Colormap::Inferno => "inferno",
            Colormap::Gray => "gray",
        }
    }

    /// The colour of a value in 0..1, quantised as `np.uint8(255 * v)` (truncation), the
    /// way pytorch-grad-cam feeds `cv2.applyColorMap`; out-of-range and NaN are clamped.
    pub fn color(self, v: f32) -> [u8; 3] {
        let i = if v.is_nan() { 0 } else { (v.clamp(0.0, 1.0) * 255.0) as usize };
        match self {
            Colormap::Jet => tables::JET[i],
            Colormap::Viridis => tables::VIRIDIS[i],
            Colormap::Inferno => tables::INFERNO[i],
            Colormap::Gray => [i as u8; 3],
        }
    }
}

impl std::str::FromStr for Colormap {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Colormap::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| format!("unknown colormap `{s}` (expected jet, viridis, inferno or gray)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jet_matches_opencv_anchor_values() {
        // cv2.applyColorMap(np.array([[0],[64],[128],[192],[255]], np.uint8), COLORMAP_JET), as RGB.
        let want =
            [(0, [0, 0, 128]), (64, [0, 128, 255]), (128, [130, 255, 126]), (192, [255, 124, 0]), (255, [128, 0, 0])];
        for (i, rgb) in want {
            assert_eq!(Colormap::Jet.color(i as f32 / 255.0), rgb, "index {i}");
        }
    }

    #[test]
    fn viridis_matches_matplotlib_endpoints_and_middle() {
        assert_eq!(Colormap::Viridis.color(0.0), [0x44, 0x01, 0x54]);
        assert_eq!(Colormap::Viridis.color(1.0), [0xfd, 0xe7, 0x25]);
        // viridis(0.5) in matplotlib is entry 128 (#21918c).
        assert_eq!(Colormap::Viridis.color(128.0 / 255.0), [0x21, 0x91, 0x8c]);
    }

    #[test]
    fn values_are_truncated_and_clamped_like_np_uint8() {
        // 0.999 · 255 = 254.7 → 254, not 255.
        assert_eq!(Colormap::Gray.color(0.999), [254; 3]);
        assert_eq!(Colormap::Gray.color(-3.0), [0; 3]);
        assert_eq!(Colormap::Gray.color(7.0), [255; 3]);
        assert_eq!(Colormap::Gray.color(f32::NAN), [0; 3]);
    }

    #[test]
    fn names_round_trip() {
        for c in Colormap::ALL {
            assert_eq!(c.as_str().parse::<Colormap>().unwrap(), c);
        }
        assert!("rainbow".parse::<Colormap>().is_err());
    }
}
