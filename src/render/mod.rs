//! Turning maps into what users look at: colour maps, overlays, heatmaps, PNG encoding and
//! plots. Knows nothing of requests or results (the service composes these).

mod colormap;
pub mod plot;
#[rustfmt::skip]
mod tables;

pub use colormap::Colormap;

use image::{ImageEncoder, RgbImage};

use crate::cam::Map;

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("could not encode the PNG: {0}")]
    Encode(String),
    #[error("the map is {map_w}×{map_h} but the image is {img_w}×{img_h}")]
    SizeMismatch { map_w: usize, map_h: usize, img_w: u32, img_h: u32 },
    #[error("alpha must be within 0..=1, got {0}")]
    Alpha(f32),
}

/// The map painted with a colour map, one pixel per map value.
pub fn heatmap(map: &Map, cmap: Colormap) -> RgbImage {
    let mut img = RgbImage::new(map.width as u32, map.height as u32);
    for (px, v) in img.pixels_mut().zip(&map.data) {
        px.0 = cmap.color(*v);
    }
    img
}

/// `alpha · heatmap + (1 − alpha) · image`, as pytorch-grad-cam's `show_cam_on_image`
/// (with alpha = 1 − image_weight).
pub fn overlay(image: &RgbImage, map: &Map, cmap: Colormap, alpha: f32) -> Result<RgbImage, RenderError> {
    if !(0.0..=1.0).contains(&alpha) {
        return Err(RenderError::Alpha(alpha));
    }
    if (map.width as u32, map.height as u32) != image.dimensions() {
        return Err(RenderError::SizeMismatch {
            map_w: map.width,
            map_h: map.height,
            img_w: image.width(),
            img_h: image.height(),
        });
    }
    let mut out = image.clone();
    for (px, v) in out.pixels_mut().zip(&map.data) {
        let heat = cmap.color(*v);
        for c in 0..3 {
            let blended = alpha * f32::from(heat[c]) + (1.0 - alpha) * f32::from(px[c]);
            px[c] = blended.round().clamp(0.0, 255.0) as u8;
        }
    }
    Ok(out)
}

/// A box outline (x1, y1, x2, y2 in image pixels; 2 pixels wide, white inside black so it
/// shows on any map) with a label above it (below when there is no room).
pub fn draw_box(image: &mut RgbImage, [x1, y1, x2, y2]: [f32; 4], label: &str) {
    let (w, h) = (image.width() as i64, image.height() as i64);
    if w == 0 || h == 0 {
        return;
    }
    let clamp = |v: f32, max: i64| (v.round() as i64).clamp(0, max - 1);
    let (x1, y1, x2, y2) = (clamp(x1, w), clamp(y1, h), clamp(x2, w), clamp(y2, h));
    let mut put = |x: i64, y: i64, c: [u8; 3]| {
        if (0..w).contains(&x) && (0..h).contains(&y) {
            image.put_pixel(x as u32, y as u32, image::Rgb(c));
        }
    };
    for (inset, colour) in [(0, [0, 0, 0]), (1, [255, 255, 255])] {
        let (l, t, r, b) = (x1 + inset, y1 + inset, x2 - inset, y2 - inset);
        for x in l..=r {
            put(x, t, colour);
            put(x, b, colour);
        }
        for y in t..=b {
            put(l, y, colour);
            put(r, y, colour);
        }
    }
    let ty = if y1 >= 10 { y1 - 10 } else { (y2 + 2).min(h - 8).max(0) };
    plot::text(image, x1.max(0) as u32, ty as u32, label, image::Rgb([255, 255, 255]));
}

/// The outline of a region (`inside[y][x]`, the image's size): the pixels inside it with a
/// neighbour outside, drawn white.
pub fn draw_outline(image: &mut RgbImage, inside: &[Vec<bool>]) {
    let at = |x: i64, y: i64| {
        y >= 0 && x >= 0 && inside.get(y as usize).and_then(|row| row.get(x as usize)).copied().unwrap_or(false)
    };
    for (y, row) in inside.iter().enumerate() {
        for (x, &is_in) in row.iter().enumerate() {
            let (xi, yi) = (x as i64, y as i64);
            let edge = is_in && [(1, 0), (-1, 0), (0, 1), (0, -1)].iter().any(|(dx, dy)| !at(xi + dx, yi + dy));
            if edge && (x as u32) < image.width() && (y as u32) < image.height() {
                image.put_pixel(x as u32, y as u32, image::Rgb([255, 255, 255]));
            }
        }
    }
}

/// PNG bytes of an RGB image (fast compression: these are responses, not archives).
pub fn encode_png(image: &RgbImage) -> Result<Vec<u8>, RenderError> {
    let mut bytes = Vec::new();
    image::codecs::png::PngEncoder::new_with_quality(
        &mut bytes,
        image::codecs::png::CompressionType::Fast,
        image::codecs::png::FilterType::Adaptive,
    )
    .write_image(image.as_raw(), image.width(), image.height(), image::ExtendedColorType::Rgb8)
    .map_err(|e| RenderError::Encode(e.to_string()))?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heatmap_paints_each_value_with_the_colour_map() {
        let map = Map::new(2, 1, vec![0.0, 1.0]);
        let img = heatmap(&map, Colormap::Jet);
        assert_eq!(img.get_pixel(0, 0).0, [0, 0, 128]);
        assert_eq!(img.get_pixel(1, 0).0, [128, 0, 0]);
    }

    #[test]
    fn overlay_blends_by_alpha() {
        let image = RgbImage::from_pixel(1, 1, image::Rgb([100, 100, 100]));
        let map = Map::new(1, 1, vec![1.0]); // jet(1) = (128, 0, 0)
        assert_eq!(overlay(&image, &map, Colormap::Jet, 0.5).unwrap().get_pixel(0, 0).0, [114, 50, 50]);
        assert_eq!(overlay(&image, &map, Colormap::Jet, 0.0).unwrap().get_pixel(0, 0).0, [100, 100, 100]);
        assert_eq!(overlay(&image, &map, Colormap::Jet, 1.0).unwrap().get_pixel(0, 0).0, [128, 0, 0]);
        assert!(overlay(&image, &map, Colormap::Jet, 1.5).is_err());
        assert!(overlay(&image, &Map::new(2, 1, vec![0.0; 2]), Colormap::Jet, 0.5).is_err());
    }

    #[test]
    fn png_round_trips() {
        let img = heatmap(&Map::new(3, 2, vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0]), Colormap::Viridis);
        let bytes = encode_png(&img).unwrap();
        let back = image::load_from_memory(&bytes).unwrap().into_rgb8();
        assert_eq!(back, img);
    }
}
