//! Decoding with limits enforced before any pixel buffer is allocated.

use std::io::Cursor;

use image::metadata::Orientation;
use image::{DynamicImage, GrayImage, ImageDecoder, ImageFormat, ImageReader, RgbImage};
use serde::{Deserialize, Serialize};

use super::{ImagingError, jpeg};

/// Bounds on what a decoder may allocate for one upload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImageLimits {
    pub max_width: u32,
    pub max_height: u32,
    /// Width × height after orientation (rotation does not change it, but it is the figure
    /// that bounds every later buffer).
    pub max_pixels: u64,
    /// Bytes the decoder may allocate in all.
    pub max_alloc_bytes: u64,
}

impl Default for ImageLimits {
    fn default() -> Self {
        Self { max_width: 8192, max_height: 8192, max_pixels: 40_000_000, max_alloc_bytes: 512 << 20 }
    }
}

/// Decodes PNG, JPEG, WebP, GIF (first frame), BMP or TIFF into RGB, with EXIF orientation
/// applied. Grey, alpha and 16-bit images are converted (alpha dropped, as PIL's
/// `convert("RGB")` does, which is what the reference pipelines use). JPEGs go through
/// libjpeg-turbo with Pillow's settings (see `jpeg`), so they decode to Pillow's bytes.
pub fn decode(bytes: &[u8], limits: &ImageLimits) -> Result<RgbImage, ImagingError> {
    let (image, orientation) = decode_stored(bytes, limits)?;
    Ok(orient(image, orientation))
}

/// Decodes as [`decode`] does, but returns the pixels as stored, with the EXIF orientation
/// that would turn them upright (for a model fed unrotated pixels, as PIL's users are).
pub fn decode_stored(bytes: &[u8], limits: &ImageLimits) -> Result<(RgbImage, Orientation), ImagingError> {
    if bytes.is_empty() {
        return Err(ImagingError::Empty);
    }
    let reader =
        ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| ImagingError::Decode(e.to_string()))?;
    match reader.format() {
        None => Err(ImagingError::UnsupportedFormat),
        Some(ImageFormat::Jpeg) => decode_jpeg(bytes, limits),
        Some(_) => decode_other(reader, limits),
    }
}

fn decode_jpeg(bytes: &[u8], limits: &ImageLimits) -> Result<(RgbImage, Orientation), ImagingError> {
    // A file with no end-of-image marker is truncated: refuse it before any work. (Entropy-
    // coded data stuffs 0xFF bytes, so FF D9 appears only as a marker.) The decoder also
    // notices data running out, which covers an FF D9 earlier on, in an EXIF thumbnail.
    if !bytes.windows(2).rev().any(|w| w == [0xFF, 0xD9]) {
        return Err(ImagingError::Decode("the JPEG is truncated (no end-of-image marker)".into()));
    }
    let decoded = jpeg::decode(bytes, limits)?;
    Ok((decoded.image, decoded.orientation))
}

fn decode_other(
    mut reader: ImageReader<Cursor<&[u8]>>,
    limits: &ImageLimits,
) -> Result<(RgbImage, Orientation), ImagingError> {
    let mut decoder_limits = image::Limits::default();
    decoder_limits.max_image_width = Some(limits.max_width);
    decoder_limits.max_image_height = Some(limits.max_height);
    decoder_limits.max_alloc = Some(limits.max_alloc_bytes);
    reader.limits(decoder_limits);
    let mut decoder = reader.into_decoder().map_err(map_err(limits))?;
    let (w, h) = decoder.dimensions();
    // `into_decoder` bypasses the reader's allocation check, so apply it here.
    check_size(w, h, decoder.total_bytes(), limits)?;
    // A broken EXIF block should not cost the user their request: treat it as upright.
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let img = DynamicImage::from_decoder(decoder).map_err(map_err(limits))?;
    Ok((img.into_rgb8(), orientation))
}

/// The alpha plane of an image file, as stored (`None` when it has none: a JPEG, an
/// opaque PNG), for models that take RGBA. A second decode of the same bytes, under the
/// same limits: only such models pay for it.
pub fn decode_alpha(bytes: &[u8], limits: &ImageLimits) -> Result<Option<GrayImage>, ImagingError> {
    let reader =
        ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| ImagingError::Decode(e.to_string()))?;
    if matches!(reader.format(), None | Some(ImageFormat::Jpeg)) {
        return Ok(None);
    }
    let mut decoder_limits = image::Limits::default();
    decoder_limits.max_image_width = Some(limits.max_width);
    decoder_limits.max_image_height = Some(limits.max_height);
    decoder_limits.max_alloc = Some(limits.max_alloc_bytes);
    let mut reader = reader;
    reader.limits(decoder_limits);
    let img = reader.decode().map_err(map_err(limits))?;
    if !img.color().has_alpha() {
        return Ok(None);
    }
    let rgba = img.into_rgba8();
    Ok(GrayImage::from_raw(rgba.width(), rgba.height(), rgba.pixels().map(|p| p[3]).collect()))
}

/// Turns an alpha plane upright as [`orient`] turns its image.
pub fn orient_alpha(alpha: GrayImage, orientation: Orientation) -> GrayImage {
    if orientation == Orientation::NoTransforms {
        return alpha;
    }
    let mut img = DynamicImage::ImageLuma8(alpha);
    img.apply_orientation(orientation);
    img.into_luma8()
}

/// Refuses a `w`×`h` image that would take `decoded_bytes` over the limits: from its
/// header, before any pixel buffer exists.
pub(super) fn check_size(w: u32, h: u32, decoded_bytes: u64, limits: &ImageLimits) -> Result<(), ImagingError> {
    if w == 0 || h == 0 {
        return Err(ImagingError::Decode(format!("the image has no pixels ({w}×{h})")));
    }
    if w > limits.max_width || h > limits.max_height {
        return Err(ImagingError::TooLarge(format!(
            "{w}×{h} is over the limit of {}×{} pixels",
            limits.max_width, limits.max_height
        )));
    }
    if u64::from(w) * u64::from(h) > limits.max_pixels {
        return Err(ImagingError::TooLarge(format!("{w}×{h} is over the limit of {} pixels", limits.max_pixels)));
    }
    if decoded_bytes > limits.max_alloc_bytes {
        return Err(ImagingError::TooLarge(format!(
            "{w}×{h} needs {decoded_bytes} bytes decoded, over the limit of {}",
            limits.max_alloc_bytes
        )));
    }
    Ok(())
}

/// Turns the image upright as its EXIF orientation says (a lossless flip or rotation).
/// On its own, with the orientation as a value: whether the model sees it is a choice
/// (`model::ExifOrientation`); the photo a map is drawn on is always upright.
pub fn orient(image: RgbImage, orientation: Orientation) -> RgbImage {
    if orientation == Orientation::NoTransforms {
        return image;
    }
    let mut img = DynamicImage::ImageRgb8(image);
    img.apply_orientation(orientation);
    img.into_rgb8()
}

fn map_err(limits: &ImageLimits) -> impl Fn(image::ImageError) -> ImagingError + '_ {
    move |e| match e {
        image::ImageError::Limits(l) => ImagingError::TooLarge(format!(
            "{l} (limits: {}×{} pixels, {} bytes decoded)",
            limits.max_width, limits.max_height, limits.max_alloc_bytes
        )),
        // A format recognised but not built in (HDR, QOI, ICO…) is still unsupported.
        image::ImageError::Unsupported(u) if matches!(u.kind(), image::error::UnsupportedErrorKind::Format(_)) => {
            ImagingError::UnsupportedFormat
        }
        image::ImageError::Unsupported(u) => ImagingError::Decode(u.to_string()),
        other => ImagingError::Decode(other.to_string()),
    }
}
