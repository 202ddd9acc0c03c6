//! From uploaded bytes to the model's input tensor: decode (with limits), orient, convert
//! to RGB, resize per the manifest (with Pillow's or OpenCV's arithmetic), normalise to
//! C×H×W f32.

mod decode;
mod jpeg;
mod preprocess;

pub use decode::{ImageLimits, decode, decode_alpha, decode_stored, orient, orient_alpha};
pub use image::metadata::Orientation;
pub use preprocess::{
    Content, Preprocessed, Region, letterbox_size, orient_map, orient_point, preprocess, preprocess_rgba, resize,
    unorient_point,
};

/// Why an upload could not become an input tensor. All are the client's input at fault.
#[derive(Debug, thiserror::Error)]
pub enum ImagingError {
    #[error("the image is empty (0 bytes)")]
    Empty,
    #[error("unrecognised image format; send PNG, JPEG, WebP, GIF, BMP or TIFF")]
    UnsupportedFormat,
    #[error("the image could not be decoded: {0}")]
    Decode(String),
    #[error("the image is too large: {0}")]
    TooLarge(String),
}
