//! The closed form of a classifier head that is global average pooling followed by a linear
//! layer (ResNet, EfficientNet, MobileNet, RegNet, DenseNet, …): logits = W · mean(A) + b.
//! For such a head the gradient of class c's logit with respect to the target layer's
//! activations is W[c, k] / (h·w) at every cell of channel k, so the gradient-family CAMs
//! (Grad-CAM, Grad-CAM++, XGrad-CAM, LayerCAM) are exact from one clean pass.
//!
//! ONNX Runtime gives no gradients and no access to a graph's weights, so the head is
//! *measured*: one pass on an all-zero grid gives b, one pass per channel with that channel
//! at 1 everywhere gives b + W[:, k], and a few passes on varied grids check that the head
//! really is W · mean(A) + b. A head that fails the check (a LayerNorm, an MLP, a
//! transformer's class token, a flatten over the cells) is refused with the reason.

use std::ops::Range;

use super::pass_set::{Graph, PassSet};

/// Grids the probe checks the fitted form on, after the zero grid and the K unit grids.
const CHECKS: usize = 4;

/// Largest |head(A) − (W·mean(A) + b)| accepted, relative to the largest logit magnitude
/// on the check grids (at least 1). Float rounding of a 1280-term dot product is ~1e-6;
/// a non-linear head misses by orders of magnitude more.
const TOLERANCE: f64 = 1e-3;

/// logits = W · mean(A) + b, as measured.
#[derive(Clone, Debug, PartialEq)]
pub struct LinearHead {
    pub classes: usize,
    pub channels: usize,
    /// classes × channels, row-major: W[c, k].
    weights: Vec<f32>,
    pub bias: Vec<f32>,
}

impl LinearHead {
    /// W[c, :], the weights of class c (empty for a class the head does not have).
    pub fn row(&self, class: usize) -> &[f32] {
        self.weights.get(class * self.channels..(class + 1) * self.channels).unwrap_or(&[])
    }

    /// The head's logits for a grid of K×h×w activations, by the closed form.
    pub fn logits(&self, grid: &[f32], cells: usize) -> Vec<f32> {
        let means: Vec<f64> = grid.chunks_exact(cells.max(1)).map(mean).collect();
        (0..self.classes)
            .map(|c| {
                let dot: f64 = self.row(c).iter().zip(&means).map(|(&w, m)| f64::from(w) * m).sum();
                (dot + f64::from(self.bias[c])) as f32
            })
            .collect()
    }
}

fn mean(values: &[f32]) -> f64 {
    values.iter().map(|&v| f64::from(v)).sum::<f64>() / values.len().max(1) as f64
}

/// The passes that measure a head on K×h×w grids: zero, each unit channel, the checks.
#[derive(Debug)]
pub struct HeadProbe {
    channels: usize,
    height: usize,
    width: usize,
}

impl HeadProbe {
    pub fn new(channels: usize, height: usize, width: usize) -> Self {
        Self { channels, height, width }
    }

    fn cells(&self) -> usize {
        self.height * self.width
    }

    fn checks(&self) -> Range<usize> {
        1 + self.channels..1 + self.channels + CHECKS
    }

    /// Check grid j: values in 0..4 that vary by cell and channel in different ways, so a
    /// head that weighs cells unequally, or is not linear, shows it.
    fn check_grid(&self, j: usize, dst: &mut [f32]) {
        let n = self.cells();
        for (i, v) in dst.iter_mut().enumerate() {
            let (k, cell) = (i / n, i % n);
            let h = (k * 7919 + cell * 104_729 + j * 15_485_863) as u64;
            let h = h.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
            // Every other check grid is sparse, like ReLU features.
            let x = (h % 4096) as f32 / 1024.0;
            *v = if j % 2 == 1 && h.is_multiple_of(3) { 0.0 } else { x };
        }
    }

    /// The head's closed form from the logits of every probe pass (passes × classes,
    /// row-major), or why the head is not global average pooling followed by a linear layer.
    pub fn fit(&self, logits: &[f32], classes: usize) -> Result<LinearHead, String> {
        let k = self.channels;
        if classes == 0 || logits.len() != self.len() * classes {
            return Err("the head's probe returned no logits".into());
        }
        let row = |p: usize| &logits[p * classes..(p + 1) * classes];
        let bias = row(0).to_vec();
        let mut weights = vec![0.0f32; classes * k];
        for ch in 0..k {
            for (c, (&z, &b)) in row(1 + ch).iter().zip(&bias).enumerate() {
                weights[c * k + ch] = z - b;
            }
        }
        let head = LinearHead { classes, channels: k, weights, bias };
        let mut grid = vec![0.0f32; self.pass_len()];
        for (j, p) in self.checks().enumerate() {
            self.check_grid(j, &mut grid);
            let want = row(p);
            let got = head.logits(&grid, self.cells());
            let scale = want.iter().map(|z| f64::from(z.abs())).fold(1.0, f64::max);
            let worst = want.iter().zip(&got).map(|(a, b)| f64::from((a - b).abs())).fold(0.0, f64::max);
            // NaN logits fail too.
            if worst.is_nan() || worst > TOLERANCE * scale {
                return Err(format!(
                    "the head is not global average pooling followed by a linear layer (on a test \
                     grid its logits differ from that form's by up to {worst:.3}, logits up to \
                     {scale:.3}), so the gradient-family methods have no closed form for it; use \
                     scorecam, ablationcam or reciprocam"
                ));
            }
        }
        Ok(head)
    }
}

impl PassSet for HeadProbe {
    fn len(&self) -> usize {
        1 + self.channels + CHECKS
    }

    fn graph(&self) -> Graph {
        Graph::Head
    }

    fn pass_len(&self) -> usize {
        self.channels * self.cells()
    }

    fn fill_batch(&self, _x: &[f32], passes: Range<usize>, out: &mut [f32]) {
        let (per, n) = (self.pass_len(), self.cells());
        assert_eq!(out.len(), passes.len() * per, "output buffer does not match the batch");
        for (dst, p) in out.chunks_exact_mut(per).zip(passes) {
            dst.fill(0.0);
            if (1..=self.channels).contains(&p) {
                dst[(p - 1) * n..p * n].fill(1.0);
            } else if self.checks().contains(&p) {
                self.check_grid(p - self.checks().start, dst);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the probe's passes through `head` (one grid → logits).
    fn probe_with(probe: &HeadProbe, classes: usize, head: impl Fn(&[f32]) -> Vec<f32>) -> Vec<f32> {
        let mut grids = vec![0.0; probe.len() * probe.pass_len()];
        probe.fill_batch(&[], 0..probe.len(), &mut grids);
        let out: Vec<f32> = grids.chunks_exact(probe.pass_len()).flat_map(head).collect();
        assert_eq!(out.len(), probe.len() * classes);
        out
    }

    fn gap_linear(k: usize, cells: usize, classes: usize) -> impl Fn(&[f32]) -> Vec<f32> {
        move |grid: &[f32]| {
            let means: Vec<f32> = grid.chunks_exact(cells).map(|c| c.iter().sum::<f32>() / cells as f32).collect();
            (0..classes)
                .map(|c| (0..k).map(|i| means[i] * ((c * 5 + i * 3) % 7) as f32 * 0.3 - 0.2 * i as f32).sum::<f32>())
                .map(|z| z + 0.5)
                .collect()
        }
    }

    #[test]
    fn a_pooled_linear_head_is_measured_exactly() {
        let probe = HeadProbe::new(3, 2, 2);
        let head = probe.fit(&probe_with(&probe, 4, gap_linear(3, 4, 4)), 4).unwrap();
        // b = 0.5 − 0.2·(0 + 1 + 2); W[c, k] = ((5c + 3k) mod 7)·0.3.
        assert!(head.bias.iter().all(|b| (b + 0.1).abs() < 1e-6), "{:?}", head.bias);
        for c in 0..4 {
            for k in 0..3 {
                let w = ((c * 5 + k * 3) % 7) as f32 * 0.3;
                assert!((head.row(c)[k] - w).abs() < 1e-6, "W[{c},{k}]");
            }
        }
        assert!(head.row(4).is_empty());
    }

    #[test]
    fn heads_that_are_not_pooled_linear_layers_are_refused() {
        let probe = HeadProbe::new(3, 2, 2);
        let linear = gap_linear(3, 4, 2);
        // A ReLU after the pooling.
        let relu = |g: &[f32]| linear(g).into_iter().map(|z| (z - 1.0).max(0.0)).collect::<Vec<_>>();
        // A linear layer over the flattened cells: linear, but not pooled.
        let flat =
            |g: &[f32]| vec![g.iter().enumerate().map(|(i, v)| v * (i % 5) as f32).sum::<f32>(), g.iter().sum::<f32>()];
        // Max pooling instead of the mean.
        let max = |g: &[f32]| vec![g.chunks_exact(4).map(|c| c.iter().copied().fold(0.0, f32::max)).sum::<f32>()];
        for (name, logits, classes) in [
            ("relu", probe_with(&probe, 2, relu), 2),
            ("flatten", probe_with(&probe, 2, flat), 2),
            ("max", probe_with(&probe, 1, max), 1),
        ] {
            let err = probe.fit(&logits, classes).unwrap_err();
            assert!(err.contains("not global average pooling followed by a linear layer"), "{name}: {err}");
        }
        assert!(probe.fit(&[], 2).is_err());
    }
}
