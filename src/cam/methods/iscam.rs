//! Integrated Score-CAM (torch-cam ISCAM): each mask scaled by growing coefficients, each
//! channel's score the mean over the steps.

use std::fmt;
use std::sync::Arc;

use serde_json::Value;

use super::{Args, CamMethod, MAX_REPEATS, MethodEntry, ParamKind, ParamSpec};
use crate::cam::Preset;
use crate::cam::passes::{Pass, PassSource, times_mask};

pub(super) static ENTRY: MethodEntry = MethodEntry {
    name: "iscam",
    summary: "Integrated Score-CAM: masks scaled by growing coefficients, scores averaged over the steps",
    params: &[ParamSpec {
        name: "steps",
        kind: ParamKind::Int { min: 1, max: MAX_REPEATS },
        // torch-cam's default.
        default: "10",
        help: "IS-CAM integration steps",
    }],
    build,
};

fn build(args: &Args) -> Result<Arc<dyn CamMethod>, String> {
    Ok(Arc::new(IsCam { steps: args.count("steps").expect("steps has a default") }))
}

#[derive(Debug)]
struct IsCam {
    steps: usize,
}

/// IS-CAM's coefficient for step i (1-based): c_i = Σ_{j≤i} j/N.
fn coefficient(step: usize, steps: usize) -> f32 {
    (step * (step + 1)) as f32 / (2 * steps) as f32
}

impl CamMethod for IsCam {
    fn entry(&self) -> &'static MethodEntry {
        &ENTRY
    }

    fn preset(&self) -> Preset {
        Preset::Torchcam
    }

    fn parameters(&self) -> serde_json::Map<String, Value> {
        std::iter::once(("steps".to_string(), self.steps.into())).collect()
    }

    fn passes_per_unit(&self) -> usize {
        self.steps
    }

    /// c_i · 0 = 0: every constant channel, at every step, is the one zero input.
    fn degenerate_passes(&self) -> Option<usize> {
        Some(1)
    }

    fn fill_pass(&self, src: &PassSource<'_>, pass: Pass, mask: &mut [f32], dst: &mut [f32]) {
        let Some(k) = pass.channel else {
            dst.fill(0.0);
            return;
        };
        src.mask_into(k, mask);
        let c = coefficient(pass.step + 1, self.steps);
        mask.iter_mut().for_each(|m| *m *= c);
        times_mask(src.x, mask, dst);
    }
}

impl fmt::Display for IsCam {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "iscam(steps={})", self.steps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cam::test_support::assert_close;

    #[test]
    fn iscam_coefficients_are_the_cumulative_sums() {
        let c: Vec<f32> = (1..=10).map(|i| coefficient(i, 10)).collect();
        let want = [0.1, 0.3, 0.6, 1.0, 1.5, 2.1, 2.8, 3.6, 4.5, 5.5];
        assert_close(&c, &want, 1e-6);
    }
}
