//! Resizing per the manifest and normalisation to the model's input tensor.

use std::borrow::Cow;

use image::imageops::{self, FilterType};
use image::metadata::Orientation;
use image::{GrayImage, ImageBuffer, Luma, RgbImage};

use crate::resample::{self, Map, Window};

use crate::model::{InputSpec, ResizeFilter, ResizeMode};

/// The rectangle of the original image that the model saw, in original pixels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Region {
    pub x: f64,
    pub y: f64,
    pub width: f64,
    pub height: f64,
}

/// One image ready for the model, and what is needed to map results back onto it.
#[derive(Clone, Debug)]
pub struct Preprocessed {
    /// C×H×W, normalised.
    pub tensor: Vec<f32>,
    pub input_width: usize,
    pub input_height: usize,
    pub original_width: u32,
    pub original_height: u32,
    pub region: Region,
    /// The rectangle of the model's input that shows `region`, in input pixels (less than
    /// the whole input when letterboxed: the rest is padding).
    pub content: Content,
    /// How a map on the preprocessed image is turned onto the upright photo: the EXIF
    /// orientation when the model saw the pixels as stored, else none.
    pub map_orientation: Orientation,
}

/// A rectangle of the model's input, in whole input pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Content {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

impl Preprocessed {
    /// A preprocessed `original`-sized photo, not turned by any EXIF orientation.
    fn new(tensor: Vec<f32>, spec: &InputSpec, original: (u32, u32), region: Region, content: Content) -> Self {
        Preprocessed {
            tensor,
            input_width: spec.width as usize,
            input_height: spec.height as usize,
            original_width: original.0,
            original_height: original.1,
            region,
            content,
            map_orientation: Orientation::NoTransforms,
        }
    }

    /// Where the centre of input pixel (u, v) of a `grid` laid over the model's input
    /// (a segmenter's output, say) falls on the upright photo, in continuous photo
    /// pixels; `None` on the letterbox's padding.
    pub fn grid_point_on_photo(&self, (gh, gw): (usize, usize), (u, v): (usize, usize)) -> Option<(f64, f64)> {
        let x = (u as f64 + 0.5) * self.input_width as f64 / gw as f64;
        let y = (v as f64 + 0.5) * self.input_height as f64 / gh as f64;
        let c = self.content;
        let (cx, cy) = (x - f64::from(c.x), y - f64::from(c.y));
        if cx < 0.0 || cy < 0.0 || cx >= f64::from(c.width) || cy >= f64::from(c.height) {
            return None;
        }
        Some(self.input_point_on_photo((x, y)))
    }

    /// A point of the model's input (continuous input pixels) on the upright photo.
    pub fn input_point_on_photo(&self, (x, y): (f64, f64)) -> (f64, f64) {
        let (c, r) = (self.content, self.region);
        let (cx, cy) = (x - f64::from(c.x), y - f64::from(c.y));
        let stored = (r.x + cx * r.width / f64::from(c.width), r.y + cy * r.height / f64::from(c.height));
        orient_point(stored, (self.stored_width(), self.stored_height()), self.map_orientation)
    }

    /// A point of the upright photo on the model's input (the inverse of
    /// [`Self::input_point_on_photo`]).
    pub fn photo_point_on_input(&self, upright: (f64, f64)) -> (f64, f64) {
        let (x, y) = unorient_point(upright, (self.stored_width(), self.stored_height()), self.map_orientation);
        let (c, r) = (self.content, self.region);
        (
            f64::from(c.x) + (x - r.x) * f64::from(c.width) / r.width,
            f64::from(c.y) + (y - r.y) * f64::from(c.height) / r.height,
        )
    }

    /// A box (x1, y1, x2, y2) on the upright photo as a box on the model's input.
    pub fn photo_box_on_input(&self, b: [f64; 4]) -> [f32; 4] {
        let (p, q) = (self.photo_point_on_input((b[0], b[1])), self.photo_point_on_input((b[2], b[3])));
        [p.0.min(q.0) as f32, p.1.min(q.1) as f32, p.0.max(q.0) as f32, p.1.max(q.1) as f32]
    }

    /// A box on the model's input as a box on the upright photo, clipped to the photo.
    pub fn input_box_on_photo(&self, b: [f32; 4]) -> [f32; 4] {
        let p = self.input_point_on_photo((f64::from(b[0]), f64::from(b[1])));
        let q = self.input_point_on_photo((f64::from(b[2]), f64::from(b[3])));
        let (w, h) = if swaps_sides(self.map_orientation) {
            (f64::from(self.original_height), f64::from(self.original_width))
        } else {
            (f64::from(self.original_width), f64::from(self.original_height))
        };
        let (cx, cy) = (|v: f64| v.clamp(0.0, w) as f32, |v: f64| v.clamp(0.0, h) as f32);
        [cx(p.0.min(q.0)), cy(p.1.min(q.1)), cx(p.0.max(q.0)), cy(p.1.max(q.1))]
    }

    /// The upright photo's width and height.
    pub fn upright_size(&self) -> (u32, u32) {
        if swaps_sides(self.map_orientation) {
            (self.original_height, self.original_width)
        } else {
            (self.original_width, self.original_height)
        }
    }

    /// The size of the image as preprocessed (as stored when the orientation was ignored;
    /// `map_orientation` turns it upright).
    fn stored_width(&self) -> f64 {
        f64::from(self.original_width)
    }

    fn stored_height(&self) -> f64 {
        f64::from(self.original_height)
    }

    /// Places a map at the model's input resolution onto the original image's pixels:
    /// stretched back over the whole image, or over the centre crop (zero outside it).
    pub fn map_to_original(&self, map: &Map) -> Map {
        orient_map(self.map_on_input(map), self.map_orientation)
    }

    /// The map on the image that was preprocessed (as stored, or upright).
    fn map_on_input(&self, map: &Map) -> Map {
        let (ow, oh) = (self.original_width as usize, self.original_height as usize);
        if ow == 0 || oh == 0 {
            return Map::new(ow, oh, Vec::new());
        }
        let c = self.content;
        let cropped;
        let map = if (c.x, c.y, c.width as usize, c.height as usize) == (0, 0, map.width, map.height) {
            map
        } else {
            cropped = crop_map(map, c);
            &cropped
        };
        let r = self.region;
        if r.x == 0.0 && r.y == 0.0 && r.width == ow as f64 && r.height == oh as f64 {
            return map.resized(ow, oh);
        }
        // The region is fractional (a resized crop's edges fall between original pixels);
        // its corner still lies on the image.
        let x0 = (r.x.round().max(0.0) as usize).min(ow - 1);
        let y0 = (r.y.round().max(0.0) as usize).min(oh - 1);
        let cw = (r.width.round() as usize).clamp(1, ow - x0);
        let ch = (r.height.round() as usize).clamp(1, oh - y0);
        let inner = map.resized(cw, ch);
        let mut data = vec![0.0f32; ow * oh];
        for (row, src) in inner.data.chunks_exact(cw).enumerate() {
            let start = (y0 + row) * ow + x0;
            data[start..start + cw].copy_from_slice(src);
        }
        Map::new(ow, oh, data)
    }
}

/// As [`preprocess`], for a model that takes 4 channels (RGBA): `alpha` is the photo's alpha
/// plane (`None`: opaque, as Pillow's `convert("RGBA")` makes an RGB photo). With the
/// Pillow filter the colours are premultiplied by alpha for the resize and divided back
/// after, as Pillow's `Image.resize` does to RGBA images ("RGBa"); OpenCV resizes the four
/// planes as they are. Letterbox padding is `pad_value` in all four.
pub fn preprocess_rgba(img: &RgbImage, alpha: Option<&GrayImage>, spec: &InputSpec) -> Preprocessed {
    if spec.channels != 4 {
        return preprocess(img, spec);
    }
    let (ow, oh) = img.dimensions();
    let alpha = match alpha {
        Some(a) if a.dimensions() == (ow, oh) => {
            RgbImage::from_fn(ow, oh, |x, y| image::Rgb([a.get_pixel(x, y)[0]; 3]))
        }
        _ => RgbImage::from_pixel(ow, oh, image::Rgb([255; 3])),
    };
    let premultiply = spec.resize_filter == ResizeFilter::PillowBilinear && resamples((ow, oh), spec);
    let colour = if premultiply { Cow::Owned(premultiplied(img, &alpha)) } else { Cow::Borrowed(img) };
    let (colour, region, content) = resize(&colour, spec);
    let (alpha, _, _) = resize(&alpha, spec);
    let w = spec.width;
    let pixels = colour.pixels().zip(alpha.pixels()).enumerate().map(|(i, (c, a))| {
        let (x, y) = (i as u32 % w, i as u32 / w);
        let inside =
            x >= content.x && y >= content.y && x < content.x + content.width && y < content.y + content.height;
        match (inside, premultiply) {
            // The letterbox's padding: after the division, so it stays pad_value.
            (false, _) => [spec.pad_value; 4],
            (true, true) => [unpremultiply(c[0], a[0]), unpremultiply(c[1], a[0]), unpremultiply(c[2], a[0]), a[0]],
            (true, false) => [c[0], c[1], c[2], a[0]],
        }
    });
    Preprocessed::new(normalised(pixels, spec), spec, (ow, oh), region, content)
}

/// Whether the manifest's resize resamples a `size` photo (rather than passing it through
/// or only cropping it), which is when Pillow premultiplies alpha.
fn resamples((ow, oh): (u32, u32), spec: &InputSpec) -> bool {
    let (w, h) = (spec.width, spec.height);
    match spec.resize {
        ResizeMode::Stretch => (ow, oh) != (w, h),
        ResizeMode::Letterbox => letterbox_size((ow, oh), (w, h)) != (ow, oh),
        ResizeMode::ShorterSideCrop => {
            let win = centre_crop_window(ow, oh, spec.crop_from.unwrap_or(w.max(h)), w, h);
            (win.full_width, win.full_height) != (u64::from(ow), u64::from(oh))
        }
    }
}

/// Pillow's RGBA → RGBa: each colour × alpha / 255, rounded as its `MULDIV255`.
fn premultiplied(img: &RgbImage, alpha: &RgbImage) -> RgbImage {
    let mul = |c: u8, a: u8| {
        let t = u32::from(c) * u32::from(a) + 128;
        (((t >> 8) + t) >> 8) as u8
    };
    RgbImage::from_fn(img.width(), img.height(), |x, y| {
        let (c, a) = (img.get_pixel(x, y), alpha.get_pixel(x, y)[0]);
        image::Rgb([mul(c[0], a), mul(c[1], a), mul(c[2], a)])
    })
}

/// Pillow's RGBa → RGBA: each colour × 255 / alpha (integer division, clipped), unchanged
/// where alpha is 0 or 255.
fn unpremultiply(c: u8, a: u8) -> u8 {
    match a {
        0 | 255 => c,
        a => ((255 * u32::from(c)) / u32::from(a)).min(255) as u8,
    }
}

/// Resizes per the manifest (an image already at the input size passes through untouched)
/// and normalises with the manifest's mean/std. A grey model's photo is turned grey first,
/// as Pillow's `convert("L")`.
pub fn preprocess(img: &RgbImage, spec: &InputSpec) -> Preprocessed {
    let (ow, oh) = img.dimensions();
    let grey;
    let img = if spec.channels == 1 {
        grey = pillow_grey(img);
        &grey
    } else {
        img
    };
    let (src, region, content) = resize(img, spec);
    let pixels = src.pixels().map(|p| [p[0], p[1], p[2], 0]);
    Preprocessed::new(normalised(pixels, spec), spec, (ow, oh), region, content)
}

/// The model's C×H×W tensor from its input's pixels (row-major, the first `spec.channels`
/// values of each used): scaled to 0..1, then each channel's (v − mean) / std.
fn normalised(pixels: impl Iterator<Item = [u8; 4]>, spec: &InputSpec) -> Vec<f32> {
    let plane = (spec.width * spec.height) as usize;
    let channels = spec.channels as usize;
    let mut tensor = vec![0.0f32; channels * plane];
    for (i, p) in pixels.enumerate() {
        for c in 0..channels {
            tensor[c * plane + i] = (f32::from(p[c]) / 255.0 - spec.mean[c]) / spec.std[c];
        }
    }
    tensor
}

/// Pillow's `convert("L")`: L = (19595 R + 38470 G + 7471 B + 2¹⁵) >> 16 (ITU-R 601-2
/// luma in 16-bit fixed point), kept in all three planes so the RGB resizers carry it.
fn pillow_grey(img: &RgbImage) -> RgbImage {
    let mut out = img.clone();
    for p in out.pixels_mut() {
        let [r, g, b] = p.0.map(u32::from);
        let l = ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16) as u8;
        p.0 = [l; 3];
    }
    out
}

/// The `content` rectangle of a map, as its own map.
fn crop_map(map: &Map, c: Content) -> Map {
    let (x0, y0) = (c.x as usize, c.y as usize);
    let (cw, ch) =
        ((c.width as usize).min(map.width.saturating_sub(x0)), (c.height as usize).min(map.height.saturating_sub(y0)));
    let mut data = Vec::with_capacity(cw * ch);
    for row in y0..y0 + ch {
        data.extend_from_slice(&map.data[row * map.width + x0..row * map.width + x0 + cw]);
    }
    Map::new(cw, ch, data)
}

/// Whether an EXIF orientation swaps width and height.
fn swaps_sides(o: Orientation) -> bool {
    matches!(
        o,
        Orientation::Rotate90 | Orientation::Rotate270 | Orientation::Rotate90FlipH | Orientation::Rotate270FlipH
    )
}

/// A point of the upright image on the image as stored (size `(w, h)`): the inverse of
/// [`orient_point`].
pub fn unorient_point((x, y): (f64, f64), (w, h): (f64, f64), o: Orientation) -> (f64, f64) {
    match o {
        Orientation::Rotate90 => (y, h - x),
        Orientation::Rotate270 => (w - y, x),
        Orientation::Rotate270FlipH => (w - y, h - x),
        // The others are their own inverses.
        other => orient_point((x, y), (w, h), other),
    }
}

/// A point of an image of size `(w, h)` as stored, on the image turned as `o` turns it
/// (continuous coordinates: the same turns as [`orient_map`]'s).
pub fn orient_point((x, y): (f64, f64), (w, h): (f64, f64), o: Orientation) -> (f64, f64) {
    match o {
        Orientation::NoTransforms => (x, y),
        Orientation::Rotate90 => (h - y, x),
        Orientation::Rotate180 => (w - x, h - y),
        Orientation::Rotate270 => (y, w - x),
        Orientation::FlipHorizontal => (w - x, y),
        Orientation::FlipVertical => (x, h - y),
        Orientation::Rotate90FlipH => (y, x),
        Orientation::Rotate270FlipH => (h - y, w - x),
    }
}

/// A map turned as an EXIF orientation turns a photo (the same lossless flips and
/// rotations, so a map on the stored pixels lands on the same pixels of the upright photo).
pub fn orient_map(map: Map, orientation: Orientation) -> Map {
    if orientation == Orientation::NoTransforms {
        return map;
    }
    let (w, h) = (map.width as u32, map.height as u32);
    let Some(grid) = ImageBuffer::<Luma<f32>, Vec<f32>>::from_raw(w, h, map.data) else {
        return Map::new(0, 0, Vec::new());
    };
    let turned = match orientation {
        Orientation::NoTransforms => grid,
        Orientation::Rotate90 => imageops::rotate90(&grid),
        Orientation::Rotate180 => imageops::rotate180(&grid),
        Orientation::Rotate270 => imageops::rotate270(&grid),
        Orientation::FlipHorizontal => imageops::flip_horizontal(&grid),
        Orientation::FlipVertical => imageops::flip_vertical(&grid),
        Orientation::Rotate90FlipH => imageops::flip_horizontal(&imageops::rotate90(&grid)),
        Orientation::Rotate270FlipH => imageops::flip_horizontal(&imageops::rotate270(&grid)),
    };
    let (tw, th) = turned.dimensions();
    Map::new(tw as usize, th as usize, turned.into_raw())
}

/// The image the model sees, before normalisation: `spec.width`×`spec.height` pixels, per
/// the manifest's resize mode and filter; the rectangle of `img` it shows, and where in
/// the input that shows.
pub fn resize<'a>(img: &'a RgbImage, spec: &InputSpec) -> (Cow<'a, RgbImage>, Region, Content) {
    let (ow, oh) = img.dimensions();
    let (w, h) = (spec.width, spec.height);
    if spec.resize != ResizeMode::Letterbox || w == 0 || h == 0 || ow == 0 || oh == 0 {
        let (out, region) = resize_region(img, spec);
        return (out, region, Content { x: 0, y: 0, width: w, height: h });
    }
    let (nw, nh) = letterbox_size((ow, oh), (w, h));
    let fitted = InputSpec { width: nw, height: nh, resize: ResizeMode::Stretch, ..spec.clone() };
    let (inner, region) = resize_region(img, &fitted);
    let content = Content { x: (w - nw) / 2, y: (h - nh) / 2, width: nw, height: nh };
    let mut canvas = RgbImage::from_pixel(w, h, image::Rgb([spec.pad_value; 3]));
    imageops::replace(&mut canvas, inner.as_ref(), i64::from(content.x), i64::from(content.y));
    (Cow::Owned(canvas), region, content)
}

/// A letterbox's inner size: the photo scaled by min(w/ow, h/oh), each side rounded half to
/// even (Python's `round`, as Ultralytics) and kept within 1..=the input's side.
pub fn letterbox_size((ow, oh): (u32, u32), (w, h): (u32, u32)) -> (u32, u32) {
    let s = (f64::from(w) / f64::from(ow)).min(f64::from(h) / f64::from(oh));
    let side = |v: u32, max: u32| ((f64::from(v) * s).round_ties_even() as u32).clamp(1, max);
    (side(ow, w), side(oh, h))
}

/// Stretch or shorter-side crop to `spec`'s size (a letterbox's first step is a stretch to
/// its inner size), and the rectangle of `img` it shows.
fn resize_region<'a>(img: &'a RgbImage, spec: &InputSpec) -> (Cow<'a, RgbImage>, Region) {
    let (ow, oh) = img.dimensions();
    let (w, h) = (spec.width, spec.height);
    let full = Region { x: 0.0, y: 0.0, width: f64::from(ow), height: f64::from(oh) };
    // A manifest is checked on load and a decoded image has pixels, but this is public:
    // degenerate sizes get a black image of the asked size rather than a panic.
    if w == 0 || h == 0 || ow == 0 || oh == 0 {
        return (Cow::Owned(RgbImage::new(w, h)), full);
    }
    if spec.resize_filter == ResizeFilter::Triangle {
        return triangle(img, spec);
    }
    let window = match spec.resize {
        ResizeMode::Stretch | ResizeMode::Letterbox if (ow, oh) == (w, h) => return (Cow::Borrowed(img), full),
        ResizeMode::Stretch | ResizeMode::Letterbox => Window::whole(w, h),
        ResizeMode::ShorterSideCrop => centre_crop_window(ow, oh, spec.crop_from.unwrap_or(w.max(h)), w, h),
    };
    // Products before the division (exact in f64 at these sizes: one rounding, not two),
    // and the far edges clamped onto the image: rounding must not push the region past
    // it (a 12×29 upload once gave a height of 29.000000000000004).
    let scale = |v: u64, original: u32, full: u64| (v as f64 * f64::from(original)) / full as f64;
    let (x, y) = (scale(window.left, ow, window.full_width), scale(window.top, oh, window.full_height));
    let region = Region {
        x,
        y,
        width: scale(u64::from(w), ow, window.full_width).min(f64::from(ow) - x),
        height: scale(u64::from(h), oh, window.full_height).min(f64::from(oh) - y),
    };
    let out = if (window.full_width, window.full_height) == (u64::from(ow), u64::from(oh)) {
        // No resampling, only the crop (every filter is the identity at scale 1).
        imageops::crop_imm(img, window.left as u32, window.top as u32, w, h).to_image()
    } else {
        match spec.resize_filter {
            ResizeFilter::OpencvLinear => resample::opencv_linear(img, window),
            _ => resample::pillow_bilinear(img, window),
        }
    };
    (Cow::Owned(out), region)
}

/// torchvision's `Resize(crop_from)` then `CenterCrop((h, w))`: the shorter side becomes
/// `crop_from`, the longer `int(crop_from * long / short)` (truncated), and the crop's
/// corner is `int(round((size - crop) / 2.0))` with Python's round, half to even.
fn centre_crop_window(ow: u32, oh: u32, crop_from: u32, w: u32, h: u32) -> Window {
    let (short, long) = (u64::from(ow.min(oh)), u64::from(ow.max(oh)));
    let c = u64::from(crop_from);
    // Integer division equals the truncated float quotient here: it is within 1/short of
    // the next integer, far above f64's resolution at these sizes.
    let scaled_long = c * long / short;
    let (fw, fh) = if ow <= oh { (c, scaled_long) } else { (scaled_long, c) };
    // The manifest guarantees crop_from ≥ w, h; saturate anyway so a bad spec cannot panic.
    let (fw, fh) = (fw.max(u64::from(w)), fh.max(u64::from(h)));
    let corner = |size: u64, crop: u32| {
        let diff = size - u64::from(crop);
        let half = diff / 2;
        if diff % 2 == 1 && half % 2 == 1 { half + 1 } else { half }
    };
    Window { full_width: fw, full_height: fh, left: corner(fw, w), top: corner(fh, h), width: w, height: h }
}

/// The legacy filter: the `image` crate's Triangle, cropping first and resizing the crop.
fn triangle<'a>(img: &'a RgbImage, spec: &InputSpec) -> (Cow<'a, RgbImage>, Region) {
    let (ow, oh) = img.dimensions();
    let (w, h) = (spec.width, spec.height);
    let full = Region { x: 0.0, y: 0.0, width: f64::from(ow), height: f64::from(oh) };
    match spec.resize {
        ResizeMode::Stretch | ResizeMode::Letterbox if (ow, oh) == (w, h) => (Cow::Borrowed(img), full),
        ResizeMode::Stretch | ResizeMode::Letterbox => {
            (Cow::Owned(imageops::resize(img, w, h, FilterType::Triangle)), full)
        }
        ResizeMode::ShorterSideCrop => {
            // The crop is cut from the original first and only then resized: resizing the
            // whole image first would let a 1×8192 upload become a 256×2M buffer.
            let target = f64::from(spec.crop_from.unwrap_or(w.max(h)));
            let scale = target / f64::from(ow.min(oh));
            let cw = ((f64::from(w) / scale).round() as u32).clamp(1, ow);
            let ch = ((f64::from(h) / scale).round() as u32).clamp(1, oh);
            let (cx, cy) = ((ow - cw) / 2, (oh - ch) / 2);
            let crop = imageops::crop_imm(img, cx, cy, cw, ch).to_image();
            let out = if (cw, ch) == (w, h) { crop } else { imageops::resize(&crop, w, h, FilterType::Triangle) };
            let region = Region { x: f64::from(cx), y: f64::from(cy), width: f64::from(cw), height: f64::from(ch) };
            (Cow::Owned(out), region)
        }
    }
}
