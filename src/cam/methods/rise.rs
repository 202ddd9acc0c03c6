//! RISE (Petsiuk, Das and Saenko, BMVC 2018): N random masks, each a `grid`×`grid` grid of
//! cells kept with probability `keep`, upsampled bilinearly to (grid + 1) cells' size and
//! cropped at a random shift; the map is Σ_i P(c | X ⊙ M_i) · M_i / (N · keep), min-max
//! normalised. Defaults are the paper's for ResNet-50 (4000 masks, a 7×7 grid, keep 0.5).
//!
//! The masks come from a counter-based generator seeded by (`seed`, mask index), so a seed
//! gives the same map on any machine and batch split, and no mask is stored: a mask is
//! drawn again when the map is summed (4000 masks at 224×224 would be 800 MB).

use std::fmt;
use std::sync::Arc;

use serde_json::Value;

use super::{Args, CamMethod, MethodEntry, ParamKind, ParamSpec, json_f32};
use crate::cam::combine::MapInputs;
use crate::cam::noise::SplitMix64;
use crate::cam::passes::{Pass, PassSource, times_mask};
use crate::cam::{Activations, Align, Map, Preset, Saliency, normalize_min_max, resize};

/// Most masks one request may ask for: each is a full forward pass.
const MAX_MASKS: i64 = 20_000;

pub(super) static ENTRY: MethodEntry = MethodEntry {
    name: "rise",
    summary: "RISE: random masks of a coarse grid; the map is the masks weighed by the masked inputs' probabilities",
    params: &[
        ParamSpec {
            name: "masks",
            kind: ParamKind::Int { min: 1, max: MAX_MASKS },
            default: "4000",
            help: "RISE masks (one forward pass each)",
        },
        ParamSpec { name: "grid", kind: ParamKind::Int { min: 2, max: 64 }, default: "7", help: "RISE grid cells per side" },
        ParamSpec {
            name: "keep",
            kind: ParamKind::Float { min_exclusive: 0.0, max: 1.0 },
            default: "0.5",
            help: "RISE probability that a grid cell is kept",
        },
        ParamSpec { name: "seed", kind: ParamKind::Seed, default: "0", help: "RISE mask seed" },
    ],
    build,
};

fn build(args: &Args) -> Result<Arc<dyn CamMethod>, String> {
    Ok(Arc::new(Rise {
        masks: args.count("masks").expect("masks has a default"),
        grid: args.count("grid").expect("grid has a default"),
        keep: args.float("keep").expect("keep has a default"),
        seed: args.seed("seed").expect("seed has a default"),
    }))
}

#[derive(Debug)]
struct Rise {
    masks: usize,
    grid: usize,
    keep: f32,
    seed: u64,
}

impl Rise {
    /// Mask i at the input size (H×W) into `out`.
    fn mask_into(&self, i: usize, (h, w): (usize, usize), out: &mut [f32]) {
        let s = self.grid;
        let mut rng = SplitMix64::new(self.seed, i as u64);
        let cells: Vec<f32> = (0..s * s).map(|_| f32::from(u8::from(rng.uniform() < f64::from(self.keep)))).collect();
        // Each cell covers ceil(H / s) pixels; the grid is upsampled to s + 1 cells and cropped
        // at a shift within one cell, so cell edges fall anywhere.
        let (ch, cw) = (h.div_ceil(s), w.div_ceil(s));
        let (dy, dx) = (rng.below(ch), rng.below(cw));
        let (uh, uw) = ((s + 1) * ch, (s + 1) * cw);
        let up = resize(&cells, (s, s), (uh, uw), Align::HalfPixel);
        for (y, row) in out.chunks_exact_mut(w).enumerate() {
            let src = (y + dy) * uw + dx;
            row.copy_from_slice(&up[src..src + w]);
        }
    }
}

impl CamMethod for Rise {
    fn entry(&self) -> &'static MethodEntry {
        &ENTRY
    }

    /// Not a Score-CAM convention; the map is made at input size.
    fn preset(&self) -> Preset {
        Preset::Official
    }

    fn convention(&self) -> &'static str {
        "rise"
    }

    fn has_feature_map(&self) -> bool {
        false
    }

    fn parameters(&self) -> serde_json::Map<String, Value> {
        [
            ("masks", self.masks.into()),
            ("grid", self.grid.into()),
            ("keep", json_f32(self.keep)),
            ("seed", self.seed.into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    fn units(&self, _activations: &Activations) -> usize {
        self.masks
    }

    /// Every mask counts the same.
    fn unit_mass(&self, _activations: &Activations, _unit: usize) -> f64 {
        1.0
    }

    /// In index order: any prefix of the masks is a smaller RISE run.
    fn unit_priority(&self, _activations: &Activations, _unit: usize) -> f64 {
        0.0
    }

    fn passes_per_unit(&self) -> usize {
        1
    }

    fn is_degenerate(&self, _activations: &Activations, _unit: usize) -> bool {
        false
    }

    fn degenerate_passes(&self) -> Option<usize> {
        None
    }

    fn shares_masks(&self) -> bool {
        false
    }

    fn fill_pass(&self, src: &PassSource<'_>, pass: Pass, mask: &mut [f32], dst: &mut [f32]) {
        let i = pass.channel.expect("RISE plans no shared pass");
        self.mask_into(i, src.input_hw(), mask);
        times_mask(src.x, mask, dst);
    }

    fn map(&self, inputs: &MapInputs<'_>) -> Option<Saliency> {
        let (h, w) = inputs.input_hw;
        let mut sum = vec![0.0f64; h * w];
        let mut mask = vec![0.0f32; h * w];
        for (&(i, _), p) in inputs.weighed.iter().zip(inputs.mean_probs()) {
            self.mask_into(i, (h, w), &mut mask);
            sum.iter_mut().zip(&mask).for_each(|(s, m)| *s += f64::from(p) * f64::from(*m));
        }
        // Σ p_i M_i / (N · keep); the normalisation below removes the factor, kept so the
        // values before it are RISE's.
        let n = inputs.weighed.len().max(1) as f64 * f64::from(self.keep);
        let mut map: Vec<f32> = sum.iter().map(|s| (s / n) as f32).collect();
        normalize_min_max(&mut map);
        Some(Saliency { input: Map::new(w, h, map), feature: None })
    }
}

impl fmt::Display for Rise {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rise(masks={}, grid={}, keep={}, seed={})", self.masks, self.grid, self.keep, self.seed)
    }
}
