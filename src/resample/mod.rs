//! Resampling, in one place: half-pixel and corner-aligned bilinear upsampling of f32 maps
//! (what `F.interpolate` and OpenCV do to activations), and the byte-exact resizes of the
//! training pipelines (Pillow's bilinear and Lanczos, OpenCV's linear). Both `cam` (masks,
//! enlargements) and `imaging` (inputs, maps mapped back onto the upload) stand on it, so
//! neither needs the other.

mod bilinear;
mod pillow;

pub use bilinear::{Align, Resampler, resize};
pub(crate) use pillow::{Window, opencv_linear, pillow_bilinear, pillow_lanczos_gray};

use serde::{Deserialize, Serialize};

/// A single-channel map, row-major. (Deserialised only from scorecam's own JSON, in the
/// CLI's client mode, which checks the size against the data.)
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Map {
    pub width: usize,
    pub height: usize,
    pub data: Vec<f32>,
}

impl Map {
    pub fn new(width: usize, height: usize, data: Vec<f32>) -> Self {
        assert_eq!(data.len(), width * height, "map data does not match its size");
        Self { width, height, data }
    }

    /// Resizes with half-pixel bilinear sampling (what OpenCV and `F.interpolate` do).
    pub fn resized(&self, width: usize, height: usize) -> Map {
        if (width, height) == (self.width, self.height) {
            return self.clone();
        }
        let data = resize(&self.data, (self.height, self.width), (height, width), Align::HalfPixel);
        Map::new(width, height, data)
    }
}
