//! Smoothed Score-CAM (torch-cam SSCAM): Gaussian noise added to every mask, each channel's
//! score the mean over the noise samples.

use std::fmt;
use std::sync::Arc;

use serde_json::Value;

use super::{Args, CamMethod, MAX_REPEATS, MethodEntry, ParamKind, ParamSpec, json_f32};
use crate::cam::Preset;
use crate::cam::gaussian_noise;
use crate::cam::passes::{Pass, PassSource};

pub(super) static ENTRY: MethodEntry = MethodEntry {
    name: "sscam",
    summary: "Smoothed Score-CAM: noise added to every mask, scores averaged over the samples",
    params: &[
        // torch-cam's defaults.
        ParamSpec {
            name: "samples",
            kind: ParamKind::Int { min: 1, max: MAX_REPEATS },
            default: "35",
            help: "SS-CAM noise samples per channel",
        },
        ParamSpec {
            name: "sigma",
            // The masks themselves span 0..1: noise beyond 10 σ drowns them.
            kind: ParamKind::Float { min_exclusive: 0.0, max: 10.0 },
            default: "2.0",
            help: "SS-CAM noise standard deviation",
        },
        ParamSpec { name: "seed", kind: ParamKind::Seed, default: "0", help: "SS-CAM noise seed" },
    ],
    build,
};

fn build(args: &Args) -> Result<Arc<dyn CamMethod>, String> {
    Ok(Arc::new(SsCam {
        samples: args.count("samples").expect("samples has a default"),
        sigma: args.float("sigma").expect("sigma has a default"),
        seed: args.seed("seed").expect("seed has a default"),
    }))
}

#[derive(Debug)]
struct SsCam {
    samples: usize,
    sigma: f32,
    seed: u64,
}

impl CamMethod for SsCam {
    fn entry(&self) -> &'static MethodEntry {
        &ENTRY
    }

    fn preset(&self) -> Preset {
        Preset::Torchcam
    }

    fn parameters(&self) -> serde_json::Map<String, Value> {
        [("samples", self.samples.into()), ("sigma", json_f32(self.sigma)), ("seed", self.seed.into())]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect()
    }

    fn passes_per_unit(&self) -> usize {
        self.samples
    }

    /// Every constant channel's mask is 0, so X ⊙ (0 + δ_n) is one input per sample for
    /// all of them.
    fn degenerate_passes(&self) -> Option<usize> {
        Some(self.samples)
    }

    fn fill_pass(&self, src: &PassSource<'_>, pass: Pass, mask: &mut [f32], dst: &mut [f32]) {
        match pass.channel {
            Some(k) => src.mask_into(k, mask),
            None => mask.fill(0.0),
        }
        // Sample n is the same for every channel: drawn once per plan, by whichever
        // thread needs it first.
        let noise = src.memo(pass.step, || gaussian_noise(self.seed, pass.step as u64, self.sigma, src.x.len()));
        let hw = mask.len();
        // X ⊙ (M + δ): δ varies per colour channel, M does not.
        for ((dst_c, x_c), n_c) in dst.chunks_exact_mut(hw).zip(src.x.chunks_exact(hw)).zip(noise.chunks_exact(hw)) {
            for (((d, xv), m), n) in dst_c.iter_mut().zip(x_c).zip(&*mask).zip(n_c) {
                *d = xv * (m + n);
            }
        }
    }
}

impl fmt::Display for SsCam {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sscam(samples={}, sigma={})", self.samples, self.sigma)
    }
}
