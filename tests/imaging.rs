//! Decoding and preprocessing of uploads, with every image generated on the fly.
//!
//! No ONNX Runtime here: only `scorecam::imaging`, `scorecam::model::InputSpec` and
//! `scorecam::cam::Map`.

use std::io::Cursor;

use image::codecs::gif::GifEncoder;
use image::codecs::jpeg::JpegEncoder;
use image::codecs::webp::WebPEncoder;
use image::{
    AnimationDecoder, Delay, DynamicImage, Frame, GrayImage, ImageBuffer, ImageEncoder, ImageFormat, Rgb, RgbImage,
    Rgba, RgbaImage,
};
use scorecam::cam::Map;
use scorecam::imaging::{ImageLimits, ImagingError, Region, decode, preprocess, resize};
use scorecam::model::{InputSpec, ResizeFilter, ResizeMode};
use serde_json::Value;

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// A w×h image whose every pixel is distinct enough to catch transposed or shifted output.
fn pattern(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| Rgb([(x * 37 + 11) as u8, (y * 53 + 7) as u8, ((x + 2 * y) * 19 + 3) as u8]))
}

/// A smooth image (no sharp edges), so lossy codecs stay close to it.
fn smooth(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        Rgb([(40 + (x * 8) % 160) as u8, (60 + (y * 6) % 150) as u8, (200 - ((x + y) * 3) % 150) as u8])
    })
}

fn encode(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut buf = Cursor::new(Vec::new());
    img.write_to(&mut buf, format).unwrap_or_else(|e| panic!("encoding {format:?}: {e}"));
    buf.into_inner()
}

fn jpeg(img: &RgbImage, quality: u8) -> Vec<u8> {
    let mut out = Vec::new();
    JpegEncoder::new_with_quality(&mut out, quality).encode_image(img).unwrap();
    out
}

fn ok(bytes: &[u8]) -> RgbImage {
    decode(bytes, &ImageLimits::default()).unwrap_or_else(|e| panic!("decode failed: {e}"))
}

fn err(bytes: &[u8], limits: &ImageLimits) -> ImagingError {
    match decode(bytes, limits) {
        Ok(img) => panic!("decode unexpectedly succeeded ({}×{})", img.width(), img.height()),
        Err(e) => e,
    }
}

fn assert_same(got: &RgbImage, want: &RgbImage) {
    assert_eq!(got.dimensions(), want.dimensions(), "size");
    for (x, y, p) in want.enumerate_pixels() {
        assert_eq!(got.get_pixel(x, y), p, "pixel ({x}, {y})");
    }
}

fn max_abs_diff(a: &RgbImage, b: &RgbImage) -> u8 {
    assert_eq!(a.dimensions(), b.dimensions(), "size");
    a.as_raw().iter().zip(b.as_raw()).map(|(p, q)| p.abs_diff(*q)).max().unwrap_or(0)
}

/// CRC-32 (ISO-HDLC, as PNG uses), bit by bit: slow but obviously right.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let mut body = kind.to_vec();
    body.extend_from_slice(data);
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc32(&body).to_be_bytes());
}

/// A PNG that is only a signature, an IHDR claiming w×h 8-bit RGB, a stub IDAT and IEND: no pixel data
/// at all. A decoder that tried to decode it would fail with a decode error (or try to
/// allocate w×h×3 bytes first); only a size check made up front answers `TooLarge`.
fn png_header_only(w: u32, h: u32) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // depth 8, colour type 2 (RGB), deflate, no filter, no interlace
    png_chunk(&mut out, b"IHDR", &ihdr);
    // An IDAT with only a zlib header: the header parser reads up to the first IDAT, so
    // one must be there for the file to get past it; the pixel data itself is missing.
    png_chunk(&mut out, b"IDAT", &[0x78, 0x9C]);
    png_chunk(&mut out, b"IEND", &[]);
    out
}

/// Inserts an EXIF APP1 segment right after SOI: "Exif\0\0" and a minimal big-endian TIFF
/// with one IFD of one entry, Orientation (0x0112), SHORT, count 1, value `orientation`.
fn with_exif_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
    assert_eq!(&jpeg[..2], &[0xFF, 0xD8], "not a JPEG");
    let mut tiff = Vec::new();
    tiff.extend_from_slice(b"MM\x00\x2A"); // big-endian TIFF magic
    tiff.extend_from_slice(&8u32.to_be_bytes()); // offset of IFD0
    tiff.extend_from_slice(&1u16.to_be_bytes()); // one entry
    tiff.extend_from_slice(&0x0112u16.to_be_bytes()); // tag: Orientation
    tiff.extend_from_slice(&3u16.to_be_bytes()); // type: SHORT
    tiff.extend_from_slice(&1u32.to_be_bytes()); // count
    tiff.extend_from_slice(&orientation.to_be_bytes()); // value, left-justified in 4 bytes
    tiff.extend_from_slice(&[0, 0]);
    tiff.extend_from_slice(&0u32.to_be_bytes()); // no next IFD
    let mut payload = b"Exif\x00\x00".to_vec();
    payload.extend_from_slice(&tiff);
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes()); // length counts itself
    out.extend_from_slice(&payload);
    out.extend_from_slice(&jpeg[2..]);
    out
}

/// A spec with the default filter (Pillow's bilinear).
fn spec(width: u32, height: u32, resize: ResizeMode, crop_from: Option<u32>) -> InputSpec {
    spec_with(ResizeFilter::default(), width, height, resize, crop_from)
}

fn spec_with(
    resize_filter: ResizeFilter,
    width: u32,
    height: u32,
    resize: ResizeMode,
    crop_from: Option<u32>,
) -> InputSpec {
    InputSpec {
        width,
        height,
        resize,
        crop_from,
        resize_filter,
        exif_orientation: Default::default(),
        channels: 3,
        mean: vec![0.5, 0.5, 0.5],
        std: vec![0.25, 0.25, 0.25],
        pad_value: 114,
    }
}

const FILTERS: [ResizeFilter; 3] = [ResizeFilter::PillowBilinear, ResizeFilter::OpencvLinear, ResizeFilter::Triangle];

/// The normalisation the spec above asks for, computed the same way in f32.
fn norm(v: u8) -> f32 {
    (f32::from(v) / 255.0 - 0.5) / 0.25
}

// ---------------------------------------------------------------------------------------
// Formats
// ---------------------------------------------------------------------------------------

#[test]
fn png_rgb8_decodes_exactly() {
    let img = pattern(7, 5);
    let got = ok(&encode(&DynamicImage::ImageRgb8(img.clone()), ImageFormat::Png));
    assert_same(&got, &img);
}

#[test]
fn png_rgba8_drops_alpha_without_compositing() {
    // Alpha varies, including fully transparent: the colour channels must come back as they
    // are (PIL's convert("RGB")), not blended with black or white.
    let rgba = RgbaImage::from_fn(6, 4, |x, y| {
        let p = pattern(6, 4).get_pixel(x, y).0;
        Rgba([p[0], p[1], p[2], (x * 50) as u8])
    });
    let got = ok(&encode(&DynamicImage::ImageRgba8(rgba), ImageFormat::Png));
    assert_same(&got, &pattern(6, 4));
}

#[test]
fn png_grey_becomes_equal_rgb_channels() {
    let grey = GrayImage::from_fn(5, 3, |x, y| image::Luma([(x * 40 + y * 7 + 1) as u8]));
    let got = ok(&encode(&DynamicImage::ImageLuma8(grey.clone()), ImageFormat::Png));
    assert_eq!(got.dimensions(), (5, 3));
    for (x, y, p) in grey.enumerate_pixels() {
        let l = p.0[0];
        assert_eq!(got.get_pixel(x, y).0, [l, l, l], "pixel ({x}, {y})");
    }
}

#[test]
fn png_16_bit_is_scaled_to_8_bit() {
    // Multiples of 257 map exactly onto 8-bit values (65535 / 255 = 257).
    let wide: ImageBuffer<Rgb<u16>, Vec<u16>> =
        ImageBuffer::from_fn(4, 3, |x, y| Rgb([(x * 60) as u16 * 257, (y * 100) as u16 * 257, 65535]));
    let got = ok(&encode(&DynamicImage::ImageRgb16(wide), ImageFormat::Png));
    assert_eq!(got.dimensions(), (4, 3));
    for (x, y, p) in got.enumerate_pixels() {
        assert_eq!(p.0, [(x * 60) as u8, (y * 100) as u8, 255], "pixel ({x}, {y})");
    }
    // Arbitrary values: scaled (v × 255 / 65535), not just the low or high byte.
    let odd: ImageBuffer<Rgb<u16>, Vec<u16>> = ImageBuffer::from_pixel(1, 1, Rgb([1000, 0x1234, 0xFEFF]));
    let got = ok(&encode(&DynamicImage::ImageRgb16(odd), ImageFormat::Png));
    for (c, v) in [1000u16, 0x1234, 0xFEFF].into_iter().enumerate() {
        let want = f64::from(v) * 255.0 / 65535.0;
        assert!(
            (f64::from(got.get_pixel(0, 0).0[c]) - want).abs() <= 0.5 + 1e-9,
            "channel {c}: {v} → {:?}",
            got.get_pixel(0, 0)
        );
    }
}

#[test]
fn jpeg_decodes_close_to_the_original() {
    let img = smooth(16, 16);
    let got = ok(&jpeg(&img, 95));
    assert_eq!(got.dimensions(), (16, 16));
    let diff = max_abs_diff(&got, &img);
    assert!(diff <= 16, "JPEG at quality 95 is off by up to {diff}");
}

#[test]
fn webp_lossless_decodes_exactly() {
    let img = pattern(9, 6);
    let mut out = Vec::new();
    WebPEncoder::new_lossless(&mut out)
        .write_image(img.as_raw(), img.width(), img.height(), image::ExtendedColorType::Rgb8)
        .unwrap();
    assert_eq!(&out[..4], b"RIFF");
    assert_same(&ok(&out), &img);
}

#[test]
fn animated_gif_gives_its_first_frame() {
    let first = RgbaImage::from_pixel(5, 4, Rgba([255, 0, 0, 255]));
    let second = RgbaImage::from_pixel(5, 4, Rgba([0, 0, 255, 255]));
    let mut out = Vec::new();
    {
        let mut enc = GifEncoder::new(&mut out);
        enc.encode_frames(
            [first, second].into_iter().map(|f| Frame::from_parts(f, 0, 0, Delay::from_numer_denom_ms(100, 1))),
        )
        .unwrap();
    }
    // Both frames really are in the file, so returning the last one would fail the test.
    let frames =
        image::codecs::gif::GifDecoder::new(Cursor::new(&out)).unwrap().into_frames().collect_frames().unwrap();
    assert_eq!(frames.len(), 2);
    assert_eq!(frames[1].buffer().get_pixel(0, 0).0, [0, 0, 255, 255]);
    let got = ok(&out);
    assert_eq!(got.dimensions(), (5, 4));
    assert!(got.pixels().all(|p| p.0 == [255, 0, 0]), "first frame is red, got {:?}", got.get_pixel(0, 0));
}

#[test]
fn bmp_decodes_exactly() {
    let img = pattern(7, 3); // odd width: rows are padded to 4 bytes in BMP
    let bytes = encode(&DynamicImage::ImageRgb8(img.clone()), ImageFormat::Bmp);
    assert_eq!(&bytes[..2], b"BM");
    assert_same(&ok(&bytes), &img);
}

#[test]
fn tiff_decodes_exactly() {
    let img = pattern(6, 5);
    let bytes = encode(&DynamicImage::ImageRgb8(img.clone()), ImageFormat::Tiff);
    assert!(bytes.starts_with(b"II*\0") || bytes.starts_with(b"MM\0*"));
    assert_same(&ok(&bytes), &img);
}

// ---------------------------------------------------------------------------------------
// EXIF orientation
// ---------------------------------------------------------------------------------------

/// 4×2 grey image: (0,0) white, (0,1) mid-grey, everything else black. The two marked
/// pixels tell a rotation from a flip or a transpose.
fn orientation_source() -> RgbImage {
    RgbImage::from_fn(4, 2, |x, y| match (x, y) {
        (0, 0) => Rgb([255, 255, 255]),
        (0, 1) => Rgb([128, 128, 128]),
        _ => Rgb([0, 0, 0]),
    })
}

/// Luma of a decoded pixel classified as black (0), grey (1) or white (2); JPEG is lossy, so
/// exact values cannot be compared.
fn level(img: &RgbImage, x: u32, y: u32) -> u8 {
    let p = img.get_pixel(x, y).0;
    let l = (u32::from(p[0]) + u32::from(p[1]) + u32::from(p[2])) / 3;
    match l {
        0..=60 => 0,
        90..=170 => 1,
        200..=255 => 2,
        _ => panic!("pixel ({x}, {y}) = {p:?} is neither black, grey nor white"),
    }
}

fn levels(img: &RgbImage) -> Vec<Vec<u8>> {
    (0..img.height()).map(|y| (0..img.width()).map(|x| level(img, x, y)).collect()).collect()
}

#[test]
fn jpeg_without_exif_is_upright() {
    let got = ok(&jpeg(&orientation_source(), 100));
    assert_eq!(got.dimensions(), (4, 2));
    assert_eq!(levels(&got), vec![vec![2, 0, 0, 0], vec![1, 0, 0, 0]]);
}

#[test]
fn exif_orientation_6_rotates_90_degrees_clockwise() {
    let bytes = with_exif_orientation(&jpeg(&orientation_source(), 100), 6);
    let got = ok(&bytes);
    assert_eq!(got.dimensions(), (2, 4), "4×2 rotated by 90° is 2×4");
    // Clockwise: the left column becomes the top row, read right to left, so (0,0) white
    // goes to (1,0) and (0,1) grey goes to (0,0).
    assert_eq!(levels(&got), vec![vec![1, 2], vec![0, 0], vec![0, 0], vec![0, 0]]);
}

#[test]
fn exif_orientation_3_rotates_180_degrees() {
    let bytes = with_exif_orientation(&jpeg(&orientation_source(), 100), 3);
    let got = ok(&bytes);
    assert_eq!(got.dimensions(), (4, 2));
    // (x, y) → (3 − x, 1 − y): white to the bottom-right, grey to the top-right.
    assert_eq!(levels(&got), vec![vec![0, 0, 0, 1], vec![0, 0, 0, 2]]);
}

#[test]
fn exif_orientation_1_changes_nothing() {
    let got = ok(&with_exif_orientation(&jpeg(&orientation_source(), 100), 1));
    assert_eq!(levels(&got), vec![vec![2, 0, 0, 0], vec![1, 0, 0, 0]]);
}

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

#[test]
fn empty_bytes_are_empty() {
    assert!(matches!(err(&[], &ImageLimits::default()), ImagingError::Empty));
}

#[test]
fn non_image_bytes_are_an_unsupported_format() {
    for bytes in [
        b"this is plainly some text, not an image at all".as_slice(),
        b"{\"json\": true}".as_slice(),
        &[0x13, 0x37, 0xBE, 0xEF, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07],
    ] {
        let e = err(bytes, &ImageLimits::default());
        assert!(matches!(e, ImagingError::UnsupportedFormat), "{bytes:?}: {e:?}");
    }
}

#[test]
fn truncated_png_is_a_decode_error() {
    let bytes = encode(&DynamicImage::ImageRgb8(pattern(32, 32)), ImageFormat::Png);
    // Cut inside the pixel data, inside the IHDR, and right after the signature.
    for len in [bytes.len() / 2, bytes.len() - 13, 20, 8] {
        let e = err(&bytes[..len], &ImageLimits::default());
        assert!(matches!(e, ImagingError::Decode(_)), "PNG cut to {len} bytes: {e:?}");
    }
}

#[test]
fn truncated_jpeg_is_a_decode_error() {
    let bytes = jpeg(&pattern(32, 32), 90);
    // Cut inside the headers (before the scan): there is nothing to decode.
    let sos = bytes.windows(2).position(|w| w == [0xFF, 0xDA]).expect("a JPEG has a scan");
    for len in [sos, sos / 2, 4] {
        let e = err(&bytes[..len], &ImageLimits::default());
        assert!(matches!(e, ImagingError::Decode(_)), "JPEG cut to {len} bytes: {e:?}");
    }
}

#[test]
fn truncated_jpeg_inside_the_scan_does_not_panic() {
    // Cut inside the entropy-coded data: whether the decoder reports an error or returns a
    // partly grey image is its choice, but it must not panic, and a returned image must
    // have the full size.
    let bytes = jpeg(&pattern(32, 32), 90);
    match decode(&bytes[..bytes.len() / 2], &ImageLimits::default()) {
        Ok(img) => assert_eq!(img.dimensions(), (32, 32)),
        Err(e) => assert!(matches!(e, ImagingError::Decode(_)), "{e:?}"),
    }
}

#[test]
fn the_crafted_png_header_is_well_formed() {
    // Guards the next tests: a small header-only PNG is a valid header (so the checks
    // below fail on size, not on a bad CRC) and, having no pixel data, fails to decode.
    let e = err(&png_header_only(3, 2), &ImageLimits::default());
    assert!(matches!(e, ImagingError::Decode(_)), "{e:?}");
}

#[test]
fn a_png_claiming_100000_squared_pixels_is_too_large() {
    let e = err(&png_header_only(100_000, 100_000), &ImageLimits::default());
    assert!(matches!(e, ImagingError::TooLarge(_)), "{e:?}");
}

#[test]
fn a_png_over_max_pixels_but_under_the_side_limits_is_too_large_before_decoding() {
    // 8000×8000 passes the default 8192-pixel side limits but is 64 M pixels (> 40 M); with
    // no pixel data present only the up-front pixel count check can say `TooLarge`.
    let e = err(&png_header_only(8000, 8000), &ImageLimits::default());
    assert!(matches!(e, ImagingError::TooLarge(_)), "{e:?}");
}

#[test]
fn custom_limits_are_enforced() {
    let bytes = encode(&DynamicImage::ImageRgb8(pattern(20, 10)), ImageFormat::Png);
    let pixels = ImageLimits { max_pixels: 199, ..ImageLimits::default() };
    assert!(matches!(err(&bytes, &pixels), ImagingError::TooLarge(_)));
    let exactly = ImageLimits { max_pixels: 200, ..ImageLimits::default() };
    assert_eq!(decode(&bytes, &exactly).unwrap().dimensions(), (20, 10));
    let width = ImageLimits { max_width: 19, ..ImageLimits::default() };
    assert!(matches!(err(&bytes, &width), ImagingError::TooLarge(_)));
    let height = ImageLimits { max_height: 9, ..ImageLimits::default() };
    assert!(matches!(err(&bytes, &height), ImagingError::TooLarge(_)));
    // Same limits for other formats.
    let jpg = jpeg(&pattern(20, 10), 90);
    assert!(matches!(err(&jpg, &pixels), ImagingError::TooLarge(_)));
    let gif = encode(&DynamicImage::ImageRgb8(pattern(20, 10)), ImageFormat::Gif);
    assert!(matches!(err(&gif, &pixels), ImagingError::TooLarge(_)));
}

// ---------------------------------------------------------------------------------------
// Odd sizes
// ---------------------------------------------------------------------------------------

#[test]
fn a_1x1_image_decodes_and_preprocesses() {
    let img = RgbImage::from_pixel(1, 1, Rgb([10, 128, 250]));
    let got = ok(&encode(&DynamicImage::ImageRgb8(img.clone()), ImageFormat::Png));
    assert_same(&got, &img);
    for s in [spec(4, 4, ResizeMode::Stretch, None), spec(4, 4, ResizeMode::ShorterSideCrop, Some(8))] {
        let p = preprocess(&got, &s);
        assert_eq!(p.tensor.len(), 48);
        // Upscaling one pixel gives that pixel everywhere.
        for c in 0..3 {
            let want = norm(img.get_pixel(0, 0).0[c]);
            assert!(
                p.tensor[c * 16..(c + 1) * 16].iter().all(|v| (v - want).abs() < 1e-5),
                "{:?}: {:?}",
                s.resize,
                p.tensor
            );
        }
        let m = p.map_to_original(&Map::new(4, 4, vec![1.0; 16]));
        assert_eq!((m.width, m.height), (1, 1));
        assert!((m.data[0] - 1.0).abs() < 1e-6);
    }
}

#[test]
fn an_extreme_aspect_ratio_decodes_and_preprocesses() {
    let img = smooth(1, 500);
    for bytes in [encode(&DynamicImage::ImageRgb8(img.clone()), ImageFormat::Png), jpeg(&img, 95)] {
        let got = ok(&bytes);
        assert_eq!(got.dimensions(), (1, 500));
        for s in [spec(4, 4, ResizeMode::Stretch, None), spec(4, 4, ResizeMode::ShorterSideCrop, Some(8))] {
            let p = preprocess(&got, &s);
            assert_eq!(p.tensor.len(), 48);
            assert!(p.tensor.iter().all(|v| v.is_finite() && (-2.0..=2.0).contains(v)), "{:?}", s.resize);
            let r = p.region;
            assert!(r.x >= 0.0 && r.y >= 0.0 && r.x + r.width <= 1.0 + 1e-9 && r.y + r.height <= 500.0 + 1e-9, "{r:?}");
            let m = p.map_to_original(&Map::new(4, 4, vec![1.0; 16]));
            assert_eq!((m.width, m.height), (1, 500));
            assert!(m.data.iter().any(|v| *v > 0.5), "the map is placed somewhere");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Preprocessing
// ---------------------------------------------------------------------------------------

#[test]
fn an_image_at_the_input_size_passes_through_unchanged_in_chw_order() {
    let img = pattern(4, 4);
    let p = preprocess(&img, &spec(4, 4, ResizeMode::Stretch, None));
    assert_eq!(p.tensor.len(), 48);
    assert_eq!((p.input_width, p.input_height), (4, 4));
    assert_eq!((p.original_width, p.original_height), (4, 4));
    assert_eq!(p.region, Region { x: 0.0, y: 0.0, width: 4.0, height: 4.0 });
    // Every value, channel-major: index c·H·W + y·W + x.
    for (x, y, px) in img.enumerate_pixels() {
        for c in 0..3 {
            let i = c * 16 + y as usize * 4 + x as usize;
            assert_eq!(p.tensor[i], norm(px.0[c]), "c={c} y={y} x={x}");
        }
    }
    // One spelled out: pixel (x=2, y=1), green channel, is at 1·16 + 1·4 + 2 = 22.
    let g = img.get_pixel(2, 1).0[1];
    assert_eq!(g, 60); // 1·53 + 7
    assert_eq!(p.tensor[22], (60.0f32 / 255.0 - 0.5) / 0.25);
    // Normalisation bounds: 0 → −2, 255 → +2.
    let extremes = RgbImage::from_fn(4, 4, |x, _| if x < 2 { Rgb([0, 0, 0]) } else { Rgb([255, 255, 255]) });
    let p = preprocess(&extremes, &spec(4, 4, ResizeMode::Stretch, None));
    assert_eq!(p.tensor[0], -2.0);
    assert_eq!(p.tensor[3], 2.0);
}

#[test]
fn per_channel_mean_and_std_are_applied_to_their_own_channel() {
    let img = RgbImage::from_pixel(2, 2, Rgb([255, 255, 255]));
    let s = InputSpec {
        width: 2,
        height: 2,
        resize: ResizeMode::Stretch,
        crop_from: None,
        resize_filter: ResizeFilter::default(),
        exif_orientation: Default::default(),
        channels: 3,
        mean: vec![0.0, 0.5, 1.0],
        std: vec![1.0, 0.5, 0.25],
        pad_value: 114,
    };
    let p = preprocess(&img, &s);
    assert_eq!(&p.tensor[0..4], &[1.0; 4]);
    assert_eq!(&p.tensor[4..8], &[1.0; 4]);
    assert_eq!(&p.tensor[8..12], &[0.0; 4]);
}

#[test]
fn a_grey_model_sees_pillows_luma_of_the_photo() {
    // Pillow's convert("L"): (19595 R + 38470 G + 7471 B + 2^15) >> 16, per pixel.
    let img = RgbImage::from_fn(3, 2, |x, y| Rgb([(x * 90) as u8, (y * 200) as u8, 37]));
    let s = InputSpec { width: 3, height: 2, channels: 1, mean: vec![0.0], std: vec![1.0], ..spec_for(3, 2) };
    let p = preprocess(&img, &s);
    assert_eq!(p.tensor.len(), 6, "one plane");
    for (i, px) in img.pixels().enumerate() {
        let [r, g, b] = px.0.map(u32::from);
        let l = (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16;
        assert_eq!(p.tensor[i], l as f32 / 255.0, "pixel {i}");
    }
}

fn spec_for(width: u32, height: u32) -> InputSpec {
    spec(width, height, ResizeMode::Stretch, None)
}

#[test]
fn a_letterbox_keeps_the_aspect_ratio_and_pads_around_the_photo() {
    // 24×12 into 16×16: scale 2/3, 16×8 inside, 4 rows of padding above and below.
    let img = RgbImage::from_pixel(24, 12, Rgb([200, 10, 10]));
    let s = InputSpec { resize: ResizeMode::Letterbox, pad_value: 114, ..spec_for(16, 16) };
    let p = preprocess(&img, &s);
    assert_eq!(scorecam::imaging::letterbox_size((24, 12), (16, 16)), (16, 8));
    assert_eq!((p.content.x, p.content.y, p.content.width, p.content.height), (0, 4, 16, 8));
    let at = |x: usize, y: usize| p.tensor[y * 16 + x];
    assert_eq!(at(3, 0), norm(114), "padding");
    assert_eq!(at(3, 15), norm(114), "padding");
    assert_eq!(at(3, 8), norm(200), "the photo");
    // Python's round half to even: 5×2.5 = 12.5 -> 12 (Ultralytics' letterbox).
    assert_eq!(scorecam::imaging::letterbox_size((5, 10), (25, 25)), (12, 25));
    // The map's padding rows are cut before it goes back on the photo.
    let map = scorecam::service::Map::new(
        16,
        16,
        (0..256).map(|i| if (4..12).contains(&(i / 16)) { 1.0 } else { 0.0 }).collect(),
    );
    let back = p.map_to_original(&map);
    assert_eq!((back.width, back.height), (24, 12));
    assert!(back.data.iter().all(|&v| v == 1.0), "only the photo's rows come back");
}

#[test]
fn boxes_go_from_the_photo_to_the_input_and_back() {
    let img = RgbImage::new(30, 20);
    for resize in [ResizeMode::Stretch, ResizeMode::Letterbox] {
        let s = InputSpec { resize, ..spec_for(16, 16) };
        let p = preprocess(&img, &s);
        let on_input = p.photo_box_on_input([3.0, 4.0, 21.0, 15.0]);
        let back = p.input_box_on_photo(on_input);
        for (a, b) in back.iter().zip([3.0, 4.0, 21.0, 15.0]) {
            assert!((a - b).abs() < 1e-4, "{resize:?}: {back:?}");
        }
    }
    // A photo stored rotated (EXIF 6) and fed as stored: the box is on the upright photo.
    let stored = RgbImage::new(30, 20);
    let mut p = preprocess(&stored, &spec_for(16, 16));
    p.map_orientation = scorecam::imaging::Orientation::Rotate90;
    let upright_box = [2.0f32, 5.0, 12.0, 25.0]; // on the 20×30 upright photo
    let back = p.input_box_on_photo(p.photo_box_on_input(upright_box.map(f64::from)));
    for (a, b) in back.iter().zip(upright_box) {
        assert!((a - b).abs() < 1e-4, "{back:?}");
    }
}

#[test]
fn stretch_resizes_the_whole_image() {
    let img = RgbImage::from_pixel(10, 6, Rgb([200, 100, 50]));
    let p = preprocess(&img, &spec(4, 4, ResizeMode::Stretch, None));
    assert_eq!(p.tensor.len(), 48);
    assert_eq!((p.input_width, p.input_height), (4, 4));
    assert_eq!((p.original_width, p.original_height), (10, 6));
    assert_eq!(p.region, Region { x: 0.0, y: 0.0, width: 10.0, height: 6.0 });
    // A constant image stays constant through resizing.
    for (c, v) in [200u8, 100, 50].into_iter().enumerate() {
        assert!(p.tensor[c * 16..(c + 1) * 16].iter().all(|t| (t - norm(v)).abs() < 1e-5), "channel {c}");
    }
    // Left half black, right half white: the resized tensor keeps that layout.
    let halves = RgbImage::from_fn(16, 8, |x, _| if x < 8 { Rgb([0, 0, 0]) } else { Rgb([255, 255, 255]) });
    let p = preprocess(&halves, &spec(4, 4, ResizeMode::Stretch, None));
    for y in 0..4 {
        assert!(p.tensor[y * 4] < -1.9 && p.tensor[y * 4 + 3] > 1.9, "row {y}: {:?}", &p.tensor[y * 4..y * 4 + 4]);
    }
    // The map goes back over the whole image.
    let m = p.map_to_original(&Map::new(4, 4, vec![1.0; 16]));
    assert_eq!((m.width, m.height), (16, 8));
    assert!(m.data.iter().all(|v| (v - 1.0).abs() < 1e-6));
}

#[test]
fn shorter_side_crop_without_scaling_cuts_the_centre() {
    // 16×8 with crop_from 8 and a 4×4 input: the shorter side (8) is resized to 8, so the
    // scale is 1 and the image stays 16×8. The centre 4×4 starts at ((16−4)/2, (8−4)/2) =
    // (6, 2), which is also its place in the original pixels (scale 1): region x=6, y=2,
    // 4×4.
    let img = pattern(16, 8);
    let p = preprocess(&img, &spec(4, 4, ResizeMode::ShorterSideCrop, Some(8)));
    assert_eq!(p.tensor.len(), 48);
    assert_eq!((p.original_width, p.original_height), (16, 8));
    assert_eq!(p.region, Region { x: 6.0, y: 2.0, width: 4.0, height: 4.0 });
    // No resampling happened, so the tensor is exactly the crop.
    for y in 0..4u32 {
        for x in 0..4u32 {
            let px = img.get_pixel(6 + x, 2 + y).0;
            for (c, &v) in px.iter().enumerate() {
                assert_eq!(p.tensor[c * 16 + (y * 4 + x) as usize], norm(v), "c={c} y={y} x={x}");
            }
        }
    }
    // A constant-1 map is 1 on the crop and 0 elsewhere.
    let m = p.map_to_original(&Map::new(4, 4, vec![1.0; 16]));
    assert_eq!((m.width, m.height), (16, 8));
    for y in 0..8 {
        for x in 0..16 {
            let inside = (6..10).contains(&x) && (2..6).contains(&y);
            assert_eq!(m.data[y * 16 + x], if inside { 1.0 } else { 0.0 }, "({x}, {y})");
        }
    }
    // A non-constant map lands cell for cell on the crop (same size, no resampling).
    let values: Vec<f32> = (0..16).map(|i| i as f32 / 16.0).collect();
    let m = p.map_to_original(&Map::new(4, 4, values.clone()));
    for y in 0..4 {
        for x in 0..4 {
            assert_eq!(m.data[(2 + y) * 16 + 6 + x], values[y * 4 + x], "({x}, {y})");
        }
    }
}

#[test]
fn shorter_side_crop_with_scaling_maps_the_crop_back_to_original_pixels() {
    // 16×8 with crop_from 4 and a 4×4 input: the shorter side 8 → 4 is a scale of 1/2, so
    // the image becomes 8×4. Its centre 4×4 starts at ((8−4)/2, (4−4)/2) = (2, 0); in the
    // original's pixels (× 2) that is x=4, y=0, 8×8: the middle half of the width, all of
    // the height.
    // White on x in 2..14, black outside: the crop's bilinear (triangle) taps reach 2
    // original pixels beyond the region, so that margin keeps the crop all white, while a
    // crop in the wrong place would take in black.
    let img = RgbImage::from_fn(16, 8, |x, _| if (2..14).contains(&x) { Rgb([255, 255, 255]) } else { Rgb([0, 0, 0]) });
    let p = preprocess(&img, &spec(4, 4, ResizeMode::ShorterSideCrop, Some(4)));
    assert_eq!(p.tensor.len(), 48);
    assert_eq!(p.region, Region { x: 4.0, y: 0.0, width: 8.0, height: 8.0 });
    // The crop saw only the white middle.
    assert!(p.tensor.iter().all(|v| *v > 1.99), "{:?}", p.tensor);
    let m = p.map_to_original(&Map::new(4, 4, vec![1.0; 16]));
    assert_eq!((m.width, m.height), (16, 8));
    for y in 0..8 {
        for x in 0..16 {
            let want = if (4..12).contains(&x) { 1.0 } else { 0.0 };
            assert!((m.data[y * 16 + x] - want).abs() < 1e-6, "({x}, {y}) = {}", m.data[y * 16 + x]);
        }
    }
}

#[test]
fn shorter_side_crop_on_a_portrait_image_crops_vertically() {
    // 8×16 (portrait), crop_from 4, 4×4: scale 1/2 → 4×8, centre 4×4 at (0, 2) → original
    // x=0, y=4, 8×8.
    let p = preprocess(&pattern(8, 16), &spec(4, 4, ResizeMode::ShorterSideCrop, Some(4)));
    assert_eq!(p.region, Region { x: 0.0, y: 4.0, width: 8.0, height: 8.0 });
    let m = p.map_to_original(&Map::new(4, 4, vec![1.0; 16]));
    assert_eq!((m.width, m.height), (8, 16));
    for y in 0..16 {
        let want = if (4..12).contains(&y) { 1.0 } else { 0.0 };
        assert!(m.data[y * 8..y * 8 + 8].iter().all(|v| (v - want).abs() < 1e-6), "row {y}");
    }
}

#[test]
fn decode_then_preprocess_end_to_end() {
    // The usual path: bytes in, tensor out, for a non-square JPEG.
    let bytes = jpeg(&smooth(32, 24), 95);
    let img = ok(&bytes);
    let p = preprocess(&img, &spec(16, 16, ResizeMode::Stretch, None));
    assert_eq!(p.tensor.len(), 3 * 16 * 16);
    assert_eq!((p.original_width, p.original_height), (32, 24));
    assert!(p.tensor.iter().all(|v| v.is_finite() && (-2.0..=2.0).contains(v)));
}

// Regressions for problems found while writing these tests.

#[test]
fn the_decoded_allocation_limit_applies_to_every_format() {
    let img = DynamicImage::ImageRgb8(pattern(32, 32)); // 3072 bytes decoded
    let limits = ImageLimits { max_alloc_bytes: 1000, ..ImageLimits::default() };
    for f in
        [ImageFormat::Png, ImageFormat::Jpeg, ImageFormat::Bmp, ImageFormat::Gif, ImageFormat::WebP, ImageFormat::Tiff]
    {
        assert!(matches!(err(&encode(&img, f), &limits), ImagingError::TooLarge(_)), "{f:?}");
    }
}

#[test]
fn shorter_side_crop_of_a_needle_image_works_on_the_crop_only() {
    // 1×8192 with crop_from 256 is, resized whole, 256×2,097,152 (1.6 GB): only the crop
    // may be computed. torchvision's centre 4×4 of that starts at (126, 1048574), which is
    // 126/256 and 1048574/256 in the original's pixels (the scale is 256 both ways).
    for filter in [ResizeFilter::PillowBilinear, ResizeFilter::OpencvLinear] {
        let p = preprocess(&pattern(1, 8192), &spec_with(filter, 4, 4, ResizeMode::ShorterSideCrop, Some(256)));
        assert_eq!(p.tensor.len(), 48);
        let r = 1.0 / 256.0;
        assert_eq!(
            p.region,
            Region { x: 126.0 * r, y: 1_048_574.0 * r, width: 4.0 * r, height: 4.0 * r },
            "{filter:?}"
        );
        let m = p.map_to_original(&Map::new(4, 4, vec![1.0; 16]));
        assert_eq!((m.width, m.height), (1, 8192));
        assert_eq!(m.data.iter().filter(|v| **v > 0.5).count(), 1, "{filter:?}: the map covers one original pixel");
    }
    // The legacy filter crops the original first, so its region is whole pixels.
    let s = spec_with(ResizeFilter::Triangle, 4, 4, ResizeMode::ShorterSideCrop, Some(256));
    assert_eq!(preprocess(&pattern(1, 8192), &s).region, Region { x: 0.0, y: 4095.0, width: 1.0, height: 1.0 });
}

#[test]
fn an_image_already_at_the_input_size_is_still_zoomed_by_shorter_side_crop() {
    let p = preprocess(&pattern(4, 4), &spec(4, 4, ResizeMode::ShorterSideCrop, Some(8)));
    assert_eq!(p.region, Region { x: 1.0, y: 1.0, width: 2.0, height: 2.0 });
}

#[test]
fn a_recognised_but_disabled_format_is_unsupported() {
    // A minimal QOI header: the crate knows the format but it is not built in.
    let mut qoi = b"qoif".to_vec();
    qoi.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1, 3, 0]);
    assert!(matches!(err(&qoi, &ImageLimits::default()), ImagingError::UnsupportedFormat));
}

// ---------------------------------------------------------------------------------------
// Parity with Pillow and OpenCV (tests/fixtures/resize, scripts/dev/make_resize_fixtures.py)
// ---------------------------------------------------------------------------------------

fn fixture(name: &str) -> RgbImage {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/resize").join(name);
    image::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).into_rgb8()
}

#[test]
fn resizing_matches_pillow_and_opencv_on_every_fixture() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/resize");
    let manifest: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).unwrap()).unwrap();
    let cases = manifest["cases"].as_array().unwrap();
    assert!(cases.len() >= 20, "{} cases", cases.len());
    let mut report = Vec::new();
    for case in cases {
        let field = |k: &str| case[k].as_str().unwrap_or_else(|| panic!("{case}: no {k}"));
        let filter = match field("filter") {
            "pillow_bilinear" => ResizeFilter::PillowBilinear,
            "opencv_linear" => ResizeFilter::OpencvLinear,
            other => panic!("unknown filter {other}"),
        };
        let mode = match field("resize") {
            "stretch" => ResizeMode::Stretch,
            "shorter_side_crop" => ResizeMode::ShorterSideCrop,
            other => panic!("unknown resize {other}"),
        };
        let crop_from = case["crop_from"].as_u64().map(|c| c as u32);
        let (w, h) = (case["width"].as_u64().unwrap() as u32, case["height"].as_u64().unwrap() as u32);
        let s = spec_with(filter, w, h, mode, crop_from);
        let src = fixture(field("source"));
        let want = fixture(field("expected"));
        let (got, _, _) = resize(&src, &s);
        assert_eq!(got.dimensions(), want.dimensions(), "{}/{}", field("name"), field("filter"));
        let max = max_abs_diff(&got, &want);
        let inexact = got.pixels().zip(want.pixels()).filter(|(a, b)| a != b).count();
        report.push(format!("{:<24} {:<16} max |Δ| {max}, {inexact} pixels not exact", field("name"), field("filter")));
        assert!(max <= 1, "{}/{}: max |Δ| = {max} ({inexact} pixels differ)", field("name"), field("filter"));
        // preprocess normalises exactly that image.
        let p = preprocess(&src, &s);
        let plane = (w * h) as usize;
        for (i, px) in got.pixels().enumerate() {
            for c in 0..3 {
                assert_eq!(p.tensor[c * plane + i], norm(px[c]));
            }
        }
    }
    println!("{}", report.join("\n"));
}

#[test]
fn shorter_side_crop_uses_torchvision_geometry() {
    // 200×150, crop_from 256: resized to 341×256 (int(256·200/150) = 341), centre 224×224
    // at (round(58.5), round(16)) = (58, 16) with Python's half-to-even round.
    let img = pattern(200, 150);
    let s = spec(224, 224, ResizeMode::ShorterSideCrop, Some(256));
    let p = preprocess(&img, &s);
    // Each edge is (resized coordinate × original size) / resized size, rounded once.
    let region = Region {
        x: 58.0 * 200.0 / 341.0,
        y: 16.0 * 150.0 / 256.0,
        width: 224.0 * 200.0 / 341.0,
        height: 224.0 * 150.0 / 256.0,
    };
    assert_eq!(p.region, region);
    // 131×257 (portrait), crop_from 128, 112×112: 128×251, corner (8, round(69.5) = 70).
    let p = preprocess(&pattern(131, 257), &spec(112, 112, ResizeMode::ShorterSideCrop, Some(128)));
    assert_eq!((p.region.x, p.region.y), (8.0 * 131.0 / 128.0, 70.0 * 257.0 / 251.0));
}

#[test]
fn the_legacy_triangle_filter_is_the_image_crates() {
    let img = pattern(37, 23);
    let s = spec_with(ResizeFilter::Triangle, 16, 12, ResizeMode::Stretch, None);
    let (got, _, _) = resize(&img, &s);
    assert_same(&got, &image::imageops::resize(&img, 16, 12, image::imageops::FilterType::Triangle));
}

#[test]
fn every_filter_survives_degenerate_sizes() {
    for filter in FILTERS {
        for (iw, ih) in [(1, 1), (1, 300), (300, 1), (2, 2), (5, 3)] {
            for (w, h, mode, crop) in [
                (1, 1, ResizeMode::Stretch, None),
                (7, 3, ResizeMode::Stretch, None),
                (4, 4, ResizeMode::ShorterSideCrop, Some(4)),
                (3, 5, ResizeMode::ShorterSideCrop, Some(9)),
            ] {
                let s = spec_with(filter, w, h, mode, crop);
                let p = preprocess(&pattern(iw, ih), &s);
                assert_eq!(p.tensor.len(), 3 * (w * h) as usize, "{filter:?} {iw}×{ih} → {w}×{h}");
                assert!(p.tensor.iter().all(|v| v.is_finite() && (-2.0..=2.0).contains(v)));
                let m = p.map_to_original(&Map::new(w as usize, h as usize, vec![1.0; (w * h) as usize]));
                assert_eq!((m.width, m.height), (iw as usize, ih as usize));
            }
        }
        // No decoder returns an empty image, but preprocess is public.
        let p = preprocess(&RgbImage::new(0, 0), &spec_with(filter, 4, 4, ResizeMode::ShorterSideCrop, Some(4)));
        assert_eq!(p.tensor.len(), 48);
        assert_eq!(p.map_to_original(&Map::new(4, 4, vec![1.0; 16])).data.len(), 0);
    }
}

/// Found by the fuzzer (fuzz/corpus/decode_image): a 1×1 photo through both resize modes
/// and back onto its own pixel.
#[test]
fn a_one_pixel_photo_preprocesses_and_maps_back() {
    let img = ok(&encode(&DynamicImage::ImageRgb8(pattern(1, 1)), ImageFormat::Png));
    for s in [spec(224, 224, ResizeMode::Stretch, None), spec(224, 224, ResizeMode::ShorterSideCrop, Some(256))] {
        let p = preprocess(&img, &s);
        assert_eq!(p.tensor.len(), 3 * 224 * 224);
        assert!(p.tensor.iter().all(|v| v.is_finite()));
        let r = p.region;
        assert!(r.x >= 0.0 && r.y >= 0.0 && r.x + r.width <= 1.0 && r.y + r.height <= 1.0, "{r:?}");
        let back = p.map_to_original(&Map::new(224, 224, vec![0.5; 224 * 224]));
        assert_eq!((back.width, back.height, back.data.len()), (1, 1, 1));
    }
}

/// Found by the fuzzer: a 12×29 photo stretched to 224×224 gave a region 29.000000000000004
/// pixels high (224 × 29/224), past the photo's edge. Every small size, in both resize
/// modes, must give a region that lies on the photo and maps back onto exactly its pixels.
#[test]
fn the_region_never_leaves_the_photo() {
    let map = Map::new(224, 224, vec![0.5; 224 * 224]);
    let specs = [spec(224, 224, ResizeMode::Stretch, None), spec(224, 224, ResizeMode::ShorterSideCrop, Some(256))];
    for w in 1..=40u32 {
        for (h, s) in (1..=40u32).flat_map(|h| specs.iter().map(move |s| (h, s))) {
            let p = preprocess(&pattern(w, h), s);
            let r = p.region;
            assert!(r.x >= 0.0 && r.y >= 0.0 && r.width > 0.0 && r.height > 0.0, "{w}×{h}: {r:?}");
            assert!(r.x + r.width <= f64::from(w) && r.y + r.height <= f64::from(h), "{w}×{h}: {r:?}");
            let back = p.map_to_original(&map);
            assert_eq!((back.width, back.height), (w as usize, h as usize));
        }
    }
}

// A 4-channel (RGBA) model's input against Pillow and OpenCV (tests/fixtures/rgba,
// scripts/dev/make_rgba_fixtures.py): Pillow premultiplies alpha around its resize.

#[test]
fn an_rgba_model_sees_what_pillow_and_opencv_make_of_a_transparent_photo() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rgba");
    let photo = std::fs::read(dir.join("photo.png")).unwrap();
    let limits = ImageLimits::default();
    let rgb = decode(&photo, &limits).unwrap();
    let alpha = scorecam::imaging::decode_alpha(&photo, &limits).unwrap().expect("the photo has alpha");
    assert!(alpha.pixels().any(|p| p[0] == 0) && alpha.pixels().any(|p| (1..255).contains(&p[0])));
    let cases: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).unwrap()).unwrap();
    for case in cases.as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let resize = match case["resize"].as_str().unwrap() {
            "stretch" => ResizeMode::Stretch,
            "letterbox" => ResizeMode::Letterbox,
            _ => ResizeMode::ShorterSideCrop,
        };
        let filter =
            if case["filter"] == "opencv_linear" { ResizeFilter::OpencvLinear } else { ResizeFilter::PillowBilinear };
        let (w, h) = (case["width"].as_u64().unwrap() as u32, case["height"].as_u64().unwrap() as u32);
        let crop = case["crop_from"].as_u64().map(|c| c as u32);
        let s = InputSpec {
            channels: 4,
            mean: vec![0.0; 4],
            std: vec![1.0; 4],
            pad_value: case["pad_value"].as_u64().unwrap_or(114) as u8,
            ..spec_with(filter, w, h, resize, crop)
        };
        let p = scorecam::imaging::preprocess_rgba(&rgb, Some(&alpha), &s);
        let want =
            image::load_from_memory(&std::fs::read(dir.join(format!("{name}.png"))).unwrap()).unwrap().to_rgba8();
        let plane = (w * h) as usize;
        let mut wrong = 0;
        for (i, px) in want.pixels().enumerate() {
            for c in 0..4 {
                let got = (p.tensor[c * plane + i] * 255.0).round() as i32;
                if got != i32::from(px[c]) {
                    wrong += 1;
                }
            }
        }
        assert_eq!(wrong, 0, "{name}: {wrong} of {} values differ", plane * 4);
    }
    // An opaque photo on an RGBA model: alpha 255 everywhere.
    let s = InputSpec { channels: 4, mean: vec![0.0; 4], std: vec![1.0; 4], ..spec(8, 8, ResizeMode::Stretch, None) };
    let p = scorecam::imaging::preprocess_rgba(&rgb, None, &s);
    assert!(p.tensor[3 * 64..].iter().all(|&v| v == 1.0));
}
