//! Separable bilinear resampling with the two pixel-centre conventions the presets need.

/// Where source and destination pixel grids are anchored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Align {
    /// `align_corners=False`: half-pixel centres, as `F.interpolate`, OpenCV `INTER_LINEAR`.
    HalfPixel,
    /// `align_corners=True`: the corner pixels of both grids coincide
    /// (`torch.nn.UpsamplingBilinear2d`).
    Corners,
}

/// One output coordinate's two source taps and the weight of the second.
#[derive(Clone, Copy, Debug)]
struct Tap {
    i0: usize,
    i1: usize,
    w1: f32,
}

fn taps(src: usize, dst: usize, align: Align) -> Vec<Tap> {
    // Mirrors PyTorch's `area_pixel_compute_source_index` (float arithmetic), which OpenCV's
    // float path also reproduces, so both references' grids come out identical.
    let scale = match align {
        Align::HalfPixel => src as f32 / dst as f32,
        Align::Corners if dst > 1 => (src as f32 - 1.0) / (dst as f32 - 1.0),
        Align::Corners => 0.0,
    };
    (0..dst)
        .map(|d| {
            let pos = match align {
                Align::HalfPixel => (scale * (d as f32 + 0.5) - 0.5).max(0.0),
                Align::Corners => scale * d as f32,
            };
            let i0 = (pos.floor() as usize).min(src - 1);
            let i1 = (i0 + 1).min(src - 1);
            let w1 = if i1 == i0 { 0.0 } else { pos - i0 as f32 };
            Tap { i0, i1, w1 }
        })
        .collect()
}

/// A reusable resampler from one grid size to another: the taps are computed once, so
/// resizing many channels (one per masked pass) costs only the arithmetic.
#[derive(Clone, Debug)]
pub struct Resampler {
    src_h: usize,
    src_w: usize,
    dst_h: usize,
    dst_w: usize,
    rows: Vec<Tap>,
    cols: Vec<Tap>,
}

impl Resampler {
    /// # Panics
    /// If any dimension is zero (callers validate sizes before building one).
    pub fn new(src: (usize, usize), dst: (usize, usize), align: Align) -> Self {
        let ((src_h, src_w), (dst_h, dst_w)) = (src, dst);
        assert!(src_h > 0 && src_w > 0 && dst_h > 0 && dst_w > 0, "empty grid");
        Self { src_h, src_w, dst_h, dst_w, rows: taps(src_h, dst_h, align), cols: taps(src_w, dst_w, align) }
    }

    pub fn dst_len(&self) -> usize {
        self.dst_h * self.dst_w
    }

    /// Resamples `src` (src_h×src_w, row-major) into `dst` (dst_h×dst_w).
    pub fn apply_into(&self, src: &[f32], dst: &mut [f32]) {
        assert_eq!(src.len(), self.src_h * self.src_w);
        assert_eq!(dst.len(), self.dst_len());
        // Horizontal pass for every source row first: src_h × dst_w intermediate values.
        let mut horiz = vec![0.0f32; self.src_h * self.dst_w];
        for (row, out) in src.chunks_exact(self.src_w).zip(horiz.chunks_exact_mut(self.dst_w)) {
            for (o, t) in out.iter_mut().zip(&self.cols) {
                *o = (1.0 - t.w1) * row[t.i0] + t.w1 * row[t.i1];
            }
        }
        for (out, t) in dst.chunks_exact_mut(self.dst_w).zip(&self.rows) {
            let r0 = &horiz[t.i0 * self.dst_w..(t.i0 + 1) * self.dst_w];
            let r1 = &horiz[t.i1 * self.dst_w..(t.i1 + 1) * self.dst_w];
            for ((o, a), b) in out.iter_mut().zip(r0).zip(r1) {
                *o = (1.0 - t.w1) * a + t.w1 * b;
            }
        }
    }

    pub fn apply(&self, src: &[f32]) -> Vec<f32> {
        let mut dst = vec![0.0; self.dst_len()];
        self.apply_into(src, &mut dst);
        dst
    }
}

/// One-off resize of a row-major map.
pub fn resize(src: &[f32], src_hw: (usize, usize), dst_hw: (usize, usize), align: Align) -> Vec<f32> {
    Resampler::new(src_hw, dst_hw, align).apply(src)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() < 1e-6, "index {i}: {x} vs {y}");
        }
    }

    #[test]
    fn half_pixel_1d_doubling_matches_hand_values() {
        // [0, 4] → 4 samples at source positions -0.25(→0), 0.25, 0.75, 1.25(→clamped 1).
        let out = resize(&[0.0, 4.0], (1, 2), (1, 4), Align::HalfPixel);
        close(&out, &[0.0, 1.0, 3.0, 4.0]);
    }

    #[test]
    fn corner_aligned_1d_matches_hand_values() {
        // [0, 3] → 4 samples at positions 0, 1/3, 2/3, 1.
        let out = resize(&[0.0, 3.0], (1, 2), (1, 4), Align::Corners);
        close(&out, &[0.0, 1.0, 2.0, 3.0]);
    }

    #[test]
    fn half_pixel_2d_matches_hand_values() {
        // 2×2 → 4×4, the interior 2×2 block is the bilinear blend at quarter positions.
        let src = [0.0, 4.0, 8.0, 12.0];
        let out = resize(&src, (2, 2), (4, 4), Align::HalfPixel);
        #[rustfmt::skip]
        let want = [
            0.0, 1.0, 3.0, 4.0,
            2.0, 3.0, 5.0, 6.0,
            6.0, 7.0, 9.0, 10.0,
            8.0, 9.0, 11.0, 12.0,
        ];
        close(&out, &want);
    }

    #[test]
    fn corner_aligned_2d_keeps_corners() {
        let src = [1.0, 2.0, 3.0, 4.0];
        let out = resize(&src, (2, 2), (3, 3), Align::Corners);
        #[rustfmt::skip]
        let want = [
            1.0, 1.5, 2.0,
            2.0, 2.5, 3.0,
            3.0, 3.5, 4.0,
        ];
        close(&out, &want);
    }

    #[test]
    fn same_size_is_identity_in_both_alignments() {
        let src: Vec<f32> = (0..12).map(|v| v as f32 * 0.5).collect();
        close(&resize(&src, (3, 4), (3, 4), Align::HalfPixel), &src);
        close(&resize(&src, (3, 4), (3, 4), Align::Corners), &src);
    }

    #[test]
    fn downsampling_half_pixel_averages_neighbours() {
        // 4 → 2: positions 0.5 and 2.5.
        let out = resize(&[0.0, 2.0, 4.0, 6.0], (1, 4), (1, 2), Align::HalfPixel);
        close(&out, &[1.0, 5.0]);
    }

    #[test]
    fn single_pixel_source_broadcasts() {
        let out = resize(&[7.0], (1, 1), (2, 3), Align::Corners);
        close(&out, &[7.0; 6]);
        let out = resize(&[7.0], (1, 1), (2, 3), Align::HalfPixel);
        close(&out, &[7.0; 6]);
    }
}
