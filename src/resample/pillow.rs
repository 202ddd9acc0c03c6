//! Resampling that reproduces the training pipelines' bytes: Pillow's `Image.resize(size,
//! BILINEAR)` (torchvision's `transforms.Resize` on PIL images) and OpenCV's
//! `cv2.resize(.., INTER_LINEAR)`. A model sees what it was trained on only if its input is
//! resized the same way, and the two differ by up to a few levels per pixel, which moves
//! Score-CAM maps by a few hundredths.
//!
//! Both are separable: one pass per axis through an intermediate buffer, in each library's
//! order and with its own fixed-point arithmetic (so every rounding matches, not just the
//! filter shape). Both resize to a *full* size but compute only a window of it: the
//! coefficients of an output pixel depend only on its own index, so a window is exactly the
//! same pixels as resizing everything and then cropping, without the full-size buffer (a
//! 1×8192 upload resized to shorter side 256 would be 256×2097152).
//!
//! Written from the libraries' published algorithms (Pillow's libImaging/Resample.c,
//! OpenCV's imgproc resize.cpp), with the details that the source does not settle (which
//! rounding path OpenCV's SIMD build takes, Pillow 13's pass order) fitted to their
//! outputs; checked byte for byte against tests/fixtures/resize
//! (scripts/dev/make_resize_fixtures.py).

use image::RgbImage;

/// Which part of the full-size resized image to compute, in its pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Window {
    /// Size of the whole resized image. u64: the shorter-side resize of a thin image can be
    /// millions of pixels long, which is fine since only the window is ever computed.
    pub full_width: u64,
    pub full_height: u64,
    pub left: u64,
    pub top: u64,
    pub width: u32,
    pub height: u32,
}

impl Window {
    /// The whole of a `width`×`height` resize.
    pub fn whole(width: u32, height: u32) -> Self {
        Self { full_width: width.into(), full_height: height.into(), left: 0, top: 0, width, height }
    }
}

// ---------------------------------------------------------------------------------------
// Pillow
// ---------------------------------------------------------------------------------------

/// Pillow keeps its 8-bit coefficients in 32-bit ints with 8 bits for the pixel and 2 for
/// overshoot, leaving 22 fractional bits.
const PILLOW_PRECISION_BITS: u32 = 22;

/// One output pixel's taps: the first input index and its fixed-point weights.
struct Taps {
    start: usize,
    weights: Vec<i32>,
}

/// One of Pillow's resampling filters: its kernel and the half-width it is non-zero on.
#[derive(Clone, Copy)]
struct PillowFilter {
    kernel: fn(f64) -> f64,
    support: f64,
}

/// Pillow's bilinear ("triangle") filter, support 1.
const PILLOW_BILINEAR: PillowFilter = PillowFilter {
    kernel: |x| {
        let x = x.abs();
        if x < 1.0 { 1.0 - x } else { 0.0 }
    },
    support: 1.0,
};

/// Pillow's `sinc_filter`: 1 at 0, else sin(πx)/(πx).
fn pillow_sinc(x: f64) -> f64 {
    if x == 0.0 {
        return 1.0;
    }
    let x = x * std::f64::consts::PI;
    x.sin() / x
}

/// Pillow's Lanczos filter (`LANCZOS`, formerly `ANTIALIAS`): a sinc windowed by a sinc
/// three times wider, on [-3, 3) (the interval is half-open in Pillow's source).
const PILLOW_LANCZOS: PillowFilter = PillowFilter {
    kernel: |x| if (-3.0..3.0).contains(&x) { pillow_sinc(x) * pillow_sinc(x / 3.0) } else { 0.0 },
    support: 3.0,
};

/// Pillow's coefficients for outputs `first..first + count` of resizing `in_size` to
/// `out_size`: when downscaling the filter is stretched by the scale (antialiasing), taps
/// are normalised to sum 1 in f64, then rounded to fixed point.
fn pillow_taps(filter: PillowFilter, in_size: u32, out_size: u64, first: u64, count: u32) -> Vec<Taps> {
    // Pillow takes the scale from the box (0, in_size) as floats, exact for sides below
    // 2^24 (far above the decoder's limits), so this f64 arithmetic is Pillow's.
    let scale = f64::from(in_size) / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support * filterscale;
    let inv = 1.0 / filterscale;
    let one = f64::from(1u32 << PILLOW_PRECISION_BITS);
    (first..first + u64::from(count))
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            // `as` truncates toward zero, as C's (int) cast does; the clamp comes after.
            let xmin = ((center - support + 0.5) as i64).max(0);
            let xmax = ((center + support + 0.5) as i64).min(i64::from(in_size)).max(xmin);
            let raw: Vec<f64> = (xmin..xmax).map(|x| (filter.kernel)((x as f64 - center + 0.5) * inv)).collect();
            // Summed in order, as Pillow does: the normalised weights depend on it.
            let total = raw.iter().fold(0.0, |acc, w| acc + w);
            let weights = raw
                .iter()
                .map(|&w| {
                    let w = if total != 0.0 { w / total } else { w };
                    // Round half away from zero, then truncate: Pillow's normalize_coeffs_8bpc.
                    if w < 0.0 { (-0.5 + w * one) as i32 } else { (0.5 + w * one) as i32 }
                })
                .collect();
            Taps { start: xmin as usize, weights }
        })
        .collect()
}

/// Fixed point back to a byte: round (the accumulator starts at one half), shift, clip.
fn pillow_clip8(acc: i64) -> u8 {
    (acc >> PILLOW_PRECISION_BITS).clamp(0, 255) as u8
}

/// Pillow's `Image.resize((full_width, full_height), Image.BILINEAR)` cut to `win`: two
/// passes, each rounding to bytes, so their order shows in the last bit. Pillow 13 runs
/// the vertical pass first when it shrinks the image by more rows than twice the columns
/// the horizontal pass removes, else horizontal first. (Its source is not what this was
/// fitted to: the rule was found by comparing both orders with Pillow 13.0.0 on a grid of
/// sizes and on 400 random ones, all exact; scripts/dev/make_resize_fixtures.py has cases
/// of each order.)
pub(crate) fn pillow_bilinear(img: &RgbImage, win: Window) -> RgbImage {
    let (iw, ih) = img.dimensions();
    let (ow, oh) = (win.width as usize, win.height as usize);
    let cols = pillow_taps(PILLOW_BILINEAR, iw, win.full_width, win.left, win.width);
    let rows = pillow_taps(PILLOW_BILINEAR, ih, win.full_height, win.top, win.height);
    // i128: the full size may be far above the input's (a needle image's long side).
    let removed_rows = i128::from(ih) - i128::from(win.full_height);
    let removed_cols = i128::from(iw) - i128::from(win.full_width);
    let vertical_first = removed_rows > 0 && removed_rows > 2 * removed_cols;
    let (src, iw) = (img.as_raw(), iw as usize);
    let out = if vertical_first {
        // Only the input columns that some output column reads go through the first pass.
        let span = span(&cols);
        let mid = pillow_vertical::<3>(src, iw, span.clone(), &rows, 0);
        pillow_horizontal::<3>(&mid, span.len(), 0..oh, &cols, span.start)
    } else {
        let span = span(&rows);
        let mid = pillow_horizontal::<3>(src, iw, span.clone(), &cols, 0);
        pillow_vertical::<3>(&mid, ow, 0..ow, &rows, span.start)
    };
    RgbImage::from_raw(win.width, win.height, out).unwrap_or_else(|| RgbImage::new(win.width, win.height))
}

/// The input indices that some of `taps` read.
fn span(taps: &[Taps]) -> std::ops::Range<usize> {
    let first = taps.iter().map(|t| t.start).min().unwrap_or(0);
    let end = taps.iter().map(|t| t.start + t.weights.len()).max().unwrap_or(0).max(first);
    first..end
}

/// Pillow's horizontal pass over `rows` of a `width`-pixel plane of `C` bytes per pixel:
/// one output pixel per tap set, whose indices count from column `offset` of the plane's
/// coordinates.
fn pillow_horizontal<const C: usize>(
    plane: &[u8],
    width: usize,
    rows: std::ops::Range<usize>,
    taps: &[Taps],
    offset: usize,
) -> Vec<u8> {
    let half = 1i64 << (PILLOW_PRECISION_BITS - 1);
    let mut out = vec![0u8; rows.len() * taps.len() * C];
    for (y, out_row) in rows.zip(out.chunks_exact_mut(taps.len() * C)) {
        let in_row = &plane[y * width * C..(y + 1) * width * C];
        for (t, px) in taps.iter().zip(out_row.chunks_exact_mut(C)) {
            let mut acc = [half; C];
            for (i, &k) in t.weights.iter().enumerate() {
                let at = (t.start + i - offset) * C;
                for c in 0..C {
                    acc[c] += i64::from(in_row[at + c]) * i64::from(k);
                }
            }
            for c in 0..C {
                px[c] = pillow_clip8(acc[c]);
            }
        }
    }
    out
}

/// Pillow's vertical pass over the columns `cols` of a `width`-pixel plane of `C` bytes per
/// pixel: one output row per tap set, whose indices count from row `offset` of the plane's
/// coordinates.
fn pillow_vertical<const C: usize>(
    plane: &[u8],
    width: usize,
    cols: std::ops::Range<usize>,
    taps: &[Taps],
    offset: usize,
) -> Vec<u8> {
    let half = 1i64 << (PILLOW_PRECISION_BITS - 1);
    let out_width = cols.len() * C;
    let mut out = vec![0u8; taps.len() * out_width];
    for (t, out_row) in taps.iter().zip(out.chunks_exact_mut(out_width)) {
        for (x, o) in out_row.iter_mut().enumerate() {
            let mut acc = half;
            for (i, &k) in t.weights.iter().enumerate() {
                acc += i64::from(plane[(t.start + i - offset) * width * C + cols.start * C + x]) * i64::from(k);
            }
            *o = pillow_clip8(acc);
        }
    }
    out
}

/// Pillow's `Image.fromarray(bytes).resize((out_w, out_h), Image.LANCZOS)` of a one-byte
/// ("L") image, `src` row-major `w`×`h`: a pass per axis that changes size, horizontal
/// first (Pillow's order whenever the image is not shrunk; pytorch-cnn-visualizations'
/// Score-CAM only enlarges), each rounding to bytes.
pub(crate) fn pillow_lanczos_gray(src: &[u8], (w, h): (usize, usize), (out_w, out_h): (usize, usize)) -> Vec<u8> {
    assert_eq!(src.len(), w * h, "image data does not match its size");
    let taps = |n: usize, out: usize| {
        // Sides are feature-map and model-input sizes: far below u32::MAX.
        let (n, out) = (u32::try_from(n).unwrap_or(u32::MAX), u32::try_from(out).unwrap_or(u32::MAX));
        pillow_taps(PILLOW_LANCZOS, n, out.into(), 0, out)
    };
    let mid = if out_w == w { src.to_vec() } else { pillow_horizontal::<1>(src, w, 0..h, &taps(w, out_w), 0) };
    if out_h == h { mid } else { pillow_vertical::<1>(&mid, out_w, 0..out_w, &taps(h, out_h), 0) }
}

// ---------------------------------------------------------------------------------------
// OpenCV
// ---------------------------------------------------------------------------------------

/// OpenCV's INTER_RESIZE_COEF_BITS: 8-bit linear resizing weights are 11-bit fixed point.
const CV_COEF_SCALE: f32 = 2048.0;

/// One output index's two taps: the first input index (the second is the next one,
/// clamped) and their 11-bit weights.
#[derive(Clone, Copy)]
struct CvTap {
    first: usize,
    second: usize,
    w0: i32,
    w1: i32,
}

/// OpenCV's INTER_LINEAR coefficients for outputs `first..first + count`: half-pixel
/// centres, the position rounded to f32, weights rounded half to even (cvRound). No
/// antialiasing: two taps whatever the scale.
///
/// Outside the image the edge pixel is repeated, but not the same way on both axes, and
/// the difference shows in the last bit: horizontally OpenCV clamps the position and zeroes
/// the fraction; vertically it keeps the fraction and clamps the two row indices, so the
/// edge row is weighed twice with weights that round separately.
fn cv_taps(in_size: u32, out_size: u64, first: u64, count: u32, horizontal: bool) -> Vec<CvTap> {
    // cv::resize derives the scale as the reciprocal of out/in, not as in/out; the two can
    // differ in the last bit.
    let scale = 1.0 / (out_size as f64 / f64::from(in_size));
    let last = i64::from(in_size) - 1;
    (first..first + u64::from(count))
        .map(|d| {
            let f = ((d as f64 + 0.5) * scale - 0.5) as f32;
            let fl = f.floor();
            let mut frac = f - fl;
            let mut s = fl as i64;
            if horizontal && s < 0 {
                s = 0;
                frac = 0.0;
            }
            if horizontal && s >= last {
                s = last;
                frac = 0.0;
            }
            CvTap {
                first: s.clamp(0, last) as usize,
                second: (s + 1).clamp(0, last) as usize,
                w0: ((1.0 - frac) * CV_COEF_SCALE).round_ties_even() as i32,
                w1: (frac * CV_COEF_SCALE).round_ties_even() as i32,
            }
        })
        .collect()
}

/// OpenCV's vertical step for 8-bit images as its SIMD code computes it: each horizontally
/// filtered value (scaled by 2^11) is shifted down by 4 to fit 16 bits, multiplied by its
/// 11-bit weight keeping the high 16 bits, and the sum is rounded by a final shift of 2.
/// The fixtures show this for every pixel, row ends included; the exact formula of its
/// scalar code, (a·w0 + b·w1 + 2^21) >> 22, is 1 off on about a quarter of them.
fn cv_vertical(a: i32, b: i32, w0: i32, w1: i32) -> u8 {
    let hi = |v: i32, w: i32| ((v >> 4).clamp(i16::MIN.into(), i16::MAX.into()) * w) >> 16;
    ((hi(a, w0) + hi(b, w1) + 2) >> 2).clamp(0, 255) as u8
}

/// OpenCV's `cv2.resize(img, (full_width, full_height), interpolation=cv2.INTER_LINEAR)`
/// cut to `win`.
pub(crate) fn opencv_linear(img: &RgbImage, win: Window) -> RgbImage {
    let (iw, ih) = img.dimensions();
    // An exact halving both ways is done by cv::resize as a 2×2 box average (INTER_AREA),
    // which its source calls equivalent; the rounding is its own, so follow it.
    if win.full_width * 2 == u64::from(iw) && win.full_height * 2 == u64::from(ih) {
        return opencv_half(img, win);
    }
    let (ow, oh) = (win.width as usize, win.height as usize);
    let cols = cv_taps(iw, win.full_width, win.left, win.width, true);
    let rows = cv_taps(ih, win.full_height, win.top, win.height, false);
    let src = img.as_raw();
    let stride = iw as usize * 3;

    // Each output row reads two input rows; filter each needed row horizontally once.
    let mut needed: Vec<usize> = rows.iter().flat_map(|t| [t.first, t.second]).collect();
    needed.sort_unstable();
    needed.dedup();
    let mut mid = vec![0i32; needed.len() * ow * 3];
    for (&y, out_row) in needed.iter().zip(mid.chunks_exact_mut(ow * 3)) {
        let in_row = &src[y * stride..(y + 1) * stride];
        for (t, out) in cols.iter().zip(out_row.chunks_exact_mut(3)) {
            for c in 0..3 {
                out[c] = i32::from(in_row[t.first * 3 + c]) * t.w0 + i32::from(in_row[t.second * 3 + c]) * t.w1;
            }
        }
    }
    let row_of = |y: usize| needed.binary_search(&y).unwrap_or(0) * ow * 3;

    let mut out = vec![0u8; ow * oh * 3];
    for (t, out_row) in rows.iter().zip(out.chunks_exact_mut(ow * 3)) {
        let (a, b) = (row_of(t.first), row_of(t.second));
        for (x, o) in out_row.iter_mut().enumerate() {
            *o = cv_vertical(mid[a + x], mid[b + x], t.w0, t.w1);
        }
    }
    RgbImage::from_raw(win.width, win.height, out).unwrap_or_else(|| RgbImage::new(win.width, win.height))
}

/// cv::resize's exact 2× reduction: the mean of each 2×2 block, rounded half up.
fn opencv_half(img: &RgbImage, win: Window) -> RgbImage {
    let src = img.as_raw();
    let stride = img.width() as usize * 3;
    let mut out = Vec::with_capacity(win.width as usize * win.height as usize * 3);
    for y in win.top..win.top + u64::from(win.height) {
        let (r0, r1) = (2 * y as usize * stride, (2 * y as usize + 1) * stride);
        for x in win.left..win.left + u64::from(win.width) {
            let p = 2 * x as usize * 3;
            for c in 0..3 {
                let sum = [r0 + p + c, r0 + p + 3 + c, r1 + p + c, r1 + p + 3 + c]
                    .iter()
                    .map(|&i| u16::from(src[i]))
                    .sum::<u16>();
                out.push(((sum + 2) >> 2) as u8);
            }
        }
    }
    RgbImage::from_raw(win.width, win.height, out).unwrap_or_else(|| RgbImage::new(win.width, win.height))
}

#[cfg(test)]
mod tests {
    use image::Rgb;

    use super::*;

    fn noise(w: u32, h: u32, seed: u32) -> RgbImage {
        let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        RgbImage::from_fn(w, h, |_, _| {
            let mut next = || {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s >> 24) as u8
            };
            Rgb([next(), next(), next()])
        })
    }

    fn crop(img: &RgbImage, x: u32, y: u32, w: u32, h: u32) -> RgbImage {
        image::imageops::crop_imm(img, x, y, w, h).to_image()
    }

    #[test]
    fn a_window_is_exactly_the_crop_of_the_whole_resize() {
        let img = noise(61, 47, 1);
        for (fw, fh) in [(40u32, 30u32), (97, 131), (61, 23), (122, 47), (30, 23)] {
            for (l, t, w, h) in [(0, 0, fw, fh), (3, 5, fw - 7, fh - 9), (fw - 1, fh - 1, 1, 1)] {
                let win = Window {
                    full_width: fw.into(),
                    full_height: fh.into(),
                    left: l.into(),
                    top: t.into(),
                    width: w,
                    height: h,
                };
                for (name, f) in
                    [("pillow", pillow_bilinear as fn(&RgbImage, Window) -> RgbImage), ("opencv", opencv_linear)]
                {
                    let whole = f(&img, Window::whole(fw, fh));
                    assert_eq!(f(&img, win), crop(&whole, l, t, w, h), "{name} {fw}×{fh} window {l},{t} {w}×{h}");
                }
            }
        }
    }

    #[test]
    fn same_size_and_constant_images_come_through_unchanged() {
        let img = noise(13, 9, 2);
        assert_eq!(pillow_bilinear(&img, Window::whole(13, 9)), img);
        assert_eq!(opencv_linear(&img, Window::whole(13, 9)), img);
        let flat = RgbImage::from_pixel(50, 20, Rgb([7, 128, 255]));
        for (w, h) in [(3, 2), (224, 224), (50, 1), (1, 77)] {
            for out in [pillow_bilinear(&flat, Window::whole(w, h)), opencv_linear(&flat, Window::whole(w, h))] {
                assert!(out.pixels().all(|p| *p == Rgb([7, 128, 255])), "{w}×{h}");
            }
        }
    }

    #[test]
    fn one_pixel_images_and_outputs_work() {
        let dot = RgbImage::from_pixel(1, 1, Rgb([9, 99, 199]));
        let img = noise(17, 5, 3);
        for f in [pillow_bilinear as fn(&RgbImage, Window) -> RgbImage, opencv_linear] {
            assert!(f(&dot, Window::whole(5, 3)).pixels().all(|p| *p == Rgb([9, 99, 199])));
            assert_eq!(f(&img, Window::whole(1, 1)).dimensions(), (1, 1));
        }
    }

    #[test]
    fn a_window_far_into_a_huge_resize_is_cheap() {
        // A 1×8192 image with its shorter side resized to 256 is 256×2097152: compute only
        // the centre 224×224 (this would need 1.6 GB if done in full).
        let img = noise(1, 8192, 4);
        let win = Window { full_width: 256, full_height: 2_097_152, left: 16, top: 1_048_464, width: 224, height: 224 };
        for f in [pillow_bilinear as fn(&RgbImage, Window) -> RgbImage, opencv_linear] {
            let out = f(&img, win);
            assert_eq!(out.dimensions(), (224, 224));
            // One input column: every output row is constant.
            assert!(out.rows().all(|r| r.clone().all(|p| p == r.clone().next().unwrap())));
        }
    }

    #[test]
    fn pillow_weights_match_its_hand_computed_values() {
        // 4 → 2: scale 2, support 2; output 0 is centred at 1.0 and reads pixels 0..3 with
        // triangle weights 0.75, 0.75, 0.25 normalised to 3/7, 3/7, 1/7.
        let taps = pillow_taps(PILLOW_BILINEAR, 4, 2, 0, 2);
        assert_eq!(taps[0].start, 0);
        let one = f64::from(1u32 << 22);
        let want: Vec<i32> = [3.0 / 7.0, 3.0 / 7.0, 1.0 / 7.0].iter().map(|w| (0.5 + w * one) as i32).collect();
        assert_eq!(taps[0].weights, want);
        // Upscaling: plain linear interpolation between the two nearest pixels.
        let taps = pillow_taps(PILLOW_BILINEAR, 2, 4, 0, 4);
        assert_eq!((taps[1].start, taps[1].weights.len()), (0, 2));
        assert_eq!(taps[1].weights, vec![(0.5 + 0.75 * one) as i32, (0.5 + 0.25 * one) as i32]);
    }

    #[test]
    fn opencv_weights_are_eleven_bit_half_pixel_linear() {
        // 2 → 4: output 1 sits at 0.25 → 1536/512; output 0 at -0.25 is clamped to pixel 0.
        let taps = cv_taps(2, 4, 0, 4, true);
        assert_eq!((taps[0].first, taps[0].w0, taps[0].w1), (0, 2048, 0));
        assert_eq!((taps[1].first, taps[1].second, taps[1].w0, taps[1].w1), (0, 1, 1536, 512));
        assert_eq!((taps[3].first, taps[3].w0, taps[3].w1), (1, 2048, 0));
        // Vertically the fraction stays and both rows are the clamped edge row.
        let taps = cv_taps(2, 4, 0, 4, false);
        assert_eq!((taps[0].first, taps[0].second, taps[0].w0, taps[0].w1), (0, 0, 512, 1536));
        assert_eq!((taps[3].first, taps[3].second, taps[3].w0, taps[3].w1), (1, 1, 1536, 512));
    }

    /// Pillow 13's `Image.resize(.., LANCZOS)` of one-byte images, byte for byte
    /// (tests/fixtures/lanczos, scripts/dev/make_lanczos_fixtures.py).
    #[test]
    fn lanczos_matches_pillow() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lanczos");
        let manifest: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).unwrap()).unwrap();
        let cases = manifest["cases"].as_array().unwrap();
        assert!(cases.len() >= 5);
        let size = |c: &serde_json::Value, k: &str| c[k].as_u64().unwrap() as usize;
        for case in cases {
            let name = case["name"].as_str().unwrap();
            let grey = |suffix: &str| image::open(dir.join(format!("{name}.{suffix}.png"))).unwrap().into_luma8();
            let (src, want) = (grey("src"), grey("out"));
            let (w, h, ow, oh) =
                (size(case, "width"), size(case, "height"), size(case, "out_width"), size(case, "out_height"));
            assert_eq!(src.dimensions(), (w as u32, h as u32), "{name}");
            let got = pillow_lanczos_gray(src.as_raw(), (w, h), (ow, oh));
            let diffs = got.iter().zip(want.as_raw()).filter(|(a, b)| a != b).count();
            assert_eq!(got.len(), want.as_raw().len(), "{name}");
            assert_eq!(diffs, 0, "{name}: {diffs} bytes differ from Pillow");
        }
    }

    /// The filter's interval is half-open, as in Pillow: -3 is inside, 3 is not.
    #[test]
    fn lanczos_support_is_half_open() {
        assert_eq!((PILLOW_LANCZOS.kernel)(3.0), 0.0);
        assert!((PILLOW_LANCZOS.kernel)(-3.0).abs() < 1e-15);
        assert_eq!((PILLOW_LANCZOS.kernel)(0.0), 1.0);
        assert!(((PILLOW_LANCZOS.kernel)(0.5) - 0.6079271018540267).abs() < 1e-12);
    }
}
