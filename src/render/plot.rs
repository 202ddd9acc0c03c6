//! Line charts as PNG, drawn directly on an image buffer with an 8×8 bitmap font: enough
//! for the evaluation's deletion and insertion curves without a plotting stack or fonts
//! installed on the machine.

use font8x8::{BASIC_FONTS, UnicodeFonts};
use image::{Rgb, RgbImage};

/// One chart: a title and named series of y values over x evenly spaced in 0..1.
pub struct Panel {
    pub title: String,
    pub series: Vec<(String, Vec<f64>)>,
}

/// Tableau's ten colours, distinguishable in print and by most colour-blind readers.
const PALETTE: [[u8; 3]; 10] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
    [227, 119, 194],
    [127, 127, 127],
    [188, 189, 34],
    [23, 190, 207],
];

const PANEL_W: u32 = 520;
const PANEL_H: u32 = 428;
const LEFT: u32 = 56;
const TOP: u32 = 44;
const PLOT_W: u32 = 440;
const PLOT_H: u32 = 330;
const LEGEND_W: u32 = 260;

pub(super) fn text(img: &mut RgbImage, x: u32, y: u32, s: &str, color: Rgb<u8>) {
    for (i, ch) in s.chars().enumerate() {
        let glyph = BASIC_FONTS.get(ch).or_else(|| BASIC_FONTS.get('?')).unwrap_or([0; 8]);
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8 {
                if bits >> col & 1 == 1 {
                    let (px, py) = (x + i as u32 * 8 + col, y + row as u32);
                    if px < img.width() && py < img.height() {
                        img.put_pixel(px, py, color);
                    }
                }
            }
        }
    }
}

fn dot(img: &mut RgbImage, x: i64, y: i64, color: Rgb<u8>, r: i64) {
    for dy in -r..=r {
        for dx in -r..=r {
            let (px, py) = (x + dx, y + dy);
            if px >= 0 && py >= 0 && (px as u32) < img.width() && (py as u32) < img.height() {
                img.put_pixel(px as u32, py as u32, color);
            }
        }
    }
}

fn line(img: &mut RgbImage, (x0, y0): (f64, f64), (x1, y1): (f64, f64), color: Rgb<u8>, r: i64) {
    let steps = ((x1 - x0).abs().max((y1 - y0).abs()).ceil() as usize).max(1);
    for i in 0..=steps {
        let t = i as f64 / steps as f64;
        dot(img, (x0 + t * (x1 - x0)).round() as i64, (y0 + t * (y1 - y0)).round() as i64, color, r);
    }
}

/// Panels side by side, a shared legend on the right.
pub fn line_charts(panels: &[Panel], x_label: &str, y_label: &str) -> RgbImage {
    let width = PANEL_W * panels.len() as u32 + LEGEND_W;
    let mut img = RgbImage::from_pixel(width, PANEL_H, Rgb([255, 255, 255]));
    let (black, grey) = (Rgb([0, 0, 0]), Rgb([225, 225, 225]));
    for (p, panel) in panels.iter().enumerate() {
        let ox = p as u32 * PANEL_W + LEFT;
        let to_px =
            |x: f64, y: f64| (f64::from(ox) + x * f64::from(PLOT_W), f64::from(TOP) + (1.0 - y) * f64::from(PLOT_H));
        for tick in 0..=4 {
            let v = f64::from(tick) / 4.0;
            let (gx, _) = to_px(v, 0.0);
            let (_, gy) = to_px(0.0, v);
            line(&mut img, (gx, f64::from(TOP)), (gx, f64::from(TOP + PLOT_H)), grey, 0);
            line(&mut img, (f64::from(ox), gy), (f64::from(ox + PLOT_W), gy), grey, 0);
            let label = format!("{v:.2}");
            text(&mut img, (gx as u32).saturating_sub(16), TOP + PLOT_H + 6, &label, black);
            text(&mut img, ox.saturating_sub(40), (gy as u32).saturating_sub(4), &label, black);
        }
        line(&mut img, to_px(0.0, 0.0), to_px(1.0, 0.0), black, 0);
        line(&mut img, to_px(0.0, 0.0), to_px(0.0, 1.0), black, 0);
        text(&mut img, ox.saturating_sub(LEFT - 4), 8, &panel.title, black);
        text(&mut img, ox + PLOT_W / 2 - x_label.len() as u32 * 4, TOP + PLOT_H + 22, x_label, black);
        text(&mut img, ox.saturating_sub(LEFT - 4), TOP - 16, y_label, black);
        for (i, (_, ys)) in panel.series.iter().enumerate() {
            let color = Rgb(PALETTE[i % PALETTE.len()]);
            let n = ys.len().saturating_sub(1).max(1) as f64;
            for (j, w) in ys.windows(2).enumerate() {
                let a = to_px(j as f64 / n, w[0].clamp(0.0, 1.0));
                let b = to_px((j + 1) as f64 / n, w[1].clamp(0.0, 1.0));
                line(&mut img, a, b, color, 1);
            }
        }
    }
    if let Some(first) = panels.first() {
        let lx = PANEL_W * panels.len() as u32;
        for (i, (name, _)) in first.series.iter().enumerate() {
            let y = TOP + 8 + i as u32 * 18;
            let color = Rgb(PALETTE[i % PALETTE.len()]);
            line(&mut img, (f64::from(lx), f64::from(y + 4)), (f64::from(lx + 24), f64::from(y + 4)), color, 1);
            text(&mut img, lx + 32, y, name, black);
        }
    }
    img
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curves_land_where_their_values_say() {
        let panel = |v: f64| Panel { title: "t".into(), series: vec![("flat".into(), vec![v; 21])] };
        let img = line_charts(&[panel(1.0), panel(0.0)], "x", "y");
        assert_eq!(img.dimensions(), (2 * PANEL_W + LEGEND_W, PANEL_H));
        let blue = Rgb(PALETTE[0]);
        // Panel 0: y = 1 runs along the top of the plot; panel 1: y = 0 along the bottom.
        assert_eq!(*img.get_pixel(LEFT + PLOT_W / 2, TOP), blue);
        assert_ne!(*img.get_pixel(LEFT + PLOT_W / 2, TOP + PLOT_H / 2), blue);
        assert_eq!(*img.get_pixel(PANEL_W + LEFT + PLOT_W / 2, TOP + PLOT_H), blue);
    }
}
