//! Target-layer layouts. Above the runtime every feature map is canonical: K channels of
//! h×w, row-major, then any values the head needs besides the grid (a vision
//! transformer's class and distillation tokens). Only here are they converted to and from
//! the layout the extractor produces and the head takes.

/// How the extractor lays out one image's target-layer activations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FeatureLayout {
    /// K×h×w (convolutional networks).
    #[default]
    Nchw,
    /// h×w×K, channels last (Swin, ConvNeXt-style blocks exported without a permute).
    Nhwc,
    /// (prefix + h·w)×K tokens: `prefix` non-grid tokens first (class, distillation),
    /// then the grid row by row (ViT, DeiT).
    Tokens { prefix: usize },
}

impl FeatureLayout {
    /// Values one image's canonical features hold besides the K×h×w grid.
    pub fn extra_len(self, [k, _, _]: [usize; 3]) -> usize {
        match self {
            FeatureLayout::Tokens { prefix } => prefix * k,
            _ => 0,
        }
    }

    /// The graph's tensor shape for `n` images (the batch first).
    pub fn graph_shape(self, n: usize, [k, h, w]: [usize; 3]) -> Vec<usize> {
        match self {
            FeatureLayout::Nchw => vec![n, k, h, w],
            FeatureLayout::Nhwc => vec![n, h, w, k],
            FeatureLayout::Tokens { prefix } => vec![n, prefix + h * w, k],
        }
    }

    /// `n` images in the graph's layout → canonical (grid, then the extra values).
    pub fn to_canonical(self, raw: &[f32], n: usize, [k, h, w]: [usize; 3]) -> Vec<f32> {
        if self == FeatureLayout::Nchw {
            return raw.to_vec();
        }
        let hw = h * w;
        let extra = self.extra_len([k, h, w]);
        let (per_raw, per_out) = (raw.len() / n.max(1), k * hw + extra);
        let mut out = vec![0.0f32; n * per_out];
        for (src, dst) in raw.chunks_exact(per_raw).zip(out.chunks_exact_mut(per_out)) {
            let skip = per_raw - hw * k; // the prefix tokens, first in the graph's layout
            let (grid, tail) = dst.split_at_mut(k * hw);
            tail.copy_from_slice(&src[..skip]);
            for (i, cell) in src[skip..].chunks_exact(k).enumerate() {
                for (c, v) in cell.iter().enumerate() {
                    grid[c * hw + i] = *v;
                }
            }
        }
        out
    }

    /// `n` canonical images → the graph's layout (the inverse of `to_canonical`).
    pub fn from_canonical(self, canonical: &[f32], n: usize, [k, h, w]: [usize; 3]) -> Vec<f32> {
        if self == FeatureLayout::Nchw {
            return canonical.to_vec();
        }
        let hw = h * w;
        let per = canonical.len() / n.max(1);
        let mut out = vec![0.0f32; canonical.len()];
        for (src, dst) in canonical.chunks_exact(per).zip(out.chunks_exact_mut(per)) {
            let (grid, tail) = src.split_at(k * hw);
            let skip = tail.len();
            dst[..skip].copy_from_slice(tail);
            for (i, cell) in dst[skip..].chunks_exact_mut(k).enumerate() {
                for (c, v) in cell.iter_mut().enumerate() {
                    *v = grid[c * hw + i];
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_last_becomes_channel_planes_and_back() {
        // 2 images, h=1, w=2, k=3: cells (c0,c1,c2).
        let raw = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0];
        let c = FeatureLayout::Nhwc.to_canonical(&raw, 2, [3, 1, 2]);
        assert_eq!(c, vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0, 7.0, 10.0, 8.0, 11.0, 9.0, 12.0]);
        assert_eq!(FeatureLayout::Nhwc.from_canonical(&c, 2, [3, 1, 2]), raw);
    }

    #[test]
    fn tokens_keep_their_prefix_after_the_grid() {
        // 1 image, prefix 1, grid 1×2, k=2: tokens [cls, g0, g1].
        let raw = [0.5, -0.5, 1.0, 2.0, 3.0, 4.0];
        let layout = FeatureLayout::Tokens { prefix: 1 };
        let c = layout.to_canonical(&raw, 1, [2, 1, 2]);
        assert_eq!(c, vec![1.0, 3.0, 2.0, 4.0, 0.5, -0.5]);
        assert_eq!(layout.extra_len([2, 1, 2]), 2);
        assert_eq!(layout.from_canonical(&c, 1, [2, 1, 2]), raw);
        assert_eq!(layout.graph_shape(3, [2, 1, 2]), vec![3, 3, 2]);
    }
}
