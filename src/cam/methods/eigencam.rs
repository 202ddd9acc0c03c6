//! EigenCAM (Muhammad and Yeasin, IJCNN 2020; pytorch-grad-cam's `EigenCAM`): the target
//! layer's activations projected on their first principal component. No pass besides the
//! clean one, and no target: the map is the same for every class (and every head kind).
//!
//! As pytorch-grad-cam's `get_2d_projection`: the h·w×K matrix X of the activations
//! (one row per position) is centred per channel, and the map is X v₁, v₁ the first right
//! singular vector of the centred X; then ReLU, its min-max normalisation, the half-pixel
//! resize and the second normalisation (`BaseCAM`'s, as the `pytorch_grad_cam` preset).
//!
//! **Sign.** A singular vector's sign is arbitrary: numpy returns whatever LAPACK's
//! algorithm lands on, and the library keeps it, so its map can come out as the
//! complement of the salient region. Here the sign is fixed: the projection's element of
//! largest magnitude is positive (scikit-learn's `svd_flip` rule), so the most extreme
//! position is always part of the map.

use std::fmt;
use std::sync::Arc;

use nalgebra::{DMatrix, SymmetricEigen};
use serde_json::Value;

use super::{Args, CamMethod, MethodEntry};
use crate::cam::combine::{MapInputs, grad_cam_map};
use crate::cam::passes::{Pass, PassSource};
use crate::cam::{Activations, Preset, Saliency};

pub(super) static ENTRY: MethodEntry = MethodEntry {
    name: "eigencam",
    summary: "EigenCAM: the activations' first principal component; no masked pass, the same map for every target",
    params: &[],
    build,
};

fn build(_: &Args) -> Result<Arc<dyn CamMethod>, String> {
    Ok(Arc::new(EigenCam))
}

#[derive(Debug)]
struct EigenCam;

impl CamMethod for EigenCam {
    fn entry(&self) -> &'static MethodEntry {
        &ENTRY
    }

    /// pytorch-grad-cam's normalisation and resizing.
    fn preset(&self) -> Preset {
        Preset::PytorchGradCam
    }

    fn convention(&self) -> &'static str {
        "pytorch_grad_cam"
    }

    fn parameters(&self) -> serde_json::Map<String, Value> {
        serde_json::Map::new()
    }

    /// Nothing to weigh: the map comes from the clean activations alone.
    fn units(&self, _activations: &Activations) -> usize {
        0
    }

    fn passes_per_unit(&self) -> usize {
        1
    }

    fn degenerate_passes(&self) -> Option<usize> {
        None
    }

    fn fill_pass(&self, _: &PassSource<'_>, _: Pass, _: &mut [f32], _: &mut [f32]) {}

    fn map(&self, inputs: &MapInputs<'_>) -> Option<Saliency> {
        Some(grad_cam_map(first_component(inputs.activations), inputs.activations, inputs.input_hw))
    }
}

/// X v₁ of the centred h·w×K activations, sign fixed (see the module's notes). Computed
/// in f64 from the Gram matrix of the smaller side: X Xᵀ (its top eigenvector u₁ gives
/// X v₁ = σ₁ u₁) or Xᵀ X (v₁ itself).
pub(crate) fn first_component(act: &Activations) -> Vec<f32> {
    let (k, n) = (act.channels, act.height * act.width);
    // Centred, position-major: x[p][c].
    let mut x = vec![0.0f64; n * k];
    for c in 0..k {
        let plane = act.channel(c);
        let mean = plane.iter().map(|&v| f64::from(v)).sum::<f64>() / n as f64;
        for (p, &v) in plane.iter().enumerate() {
            x[p * k + c] = f64::from(v) - mean;
        }
    }
    let x = DMatrix::from_row_slice(n, k, &x);
    let mut projection: Vec<f64> = if n <= k {
        let (value, u) = top_eigen(&x * x.transpose());
        u.iter().map(|v| v * value.max(0.0).sqrt()).collect()
    } else {
        let (_, v) = top_eigen(x.transpose() * &x);
        (&x * v).iter().copied().collect()
    };
    let extreme = projection.iter().copied().fold(0.0f64, |m, v| if v.abs() > m.abs() { v } else { m });
    if extreme < 0.0 {
        projection.iter_mut().for_each(|v| *v = -*v);
    }
    projection.into_iter().map(|v| v as f32).collect()
}

/// The largest eigenvalue of a symmetric matrix and its unit eigenvector.
fn top_eigen(gram: DMatrix<f64>) -> (f64, nalgebra::DVector<f64>) {
    let eigen = SymmetricEigen::new(gram);
    let top = eigen.eigenvalues.iter().enumerate().fold(0, |best, (i, &v)| if v > eigen.eigenvalues[best] { i } else { best });
    (eigen.eigenvalues[top], eigen.eigenvectors.column(top).into_owned())
}

impl fmt::Display for EigenCam {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "eigencam")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_component_of_a_rank_one_map_is_that_map_centred() {
        // Every channel is a multiple of one spatial pattern: the centred data is rank 1,
        // and its projection is the centred pattern times ‖weights‖, largest element positive.
        let pattern = [0.0f32, 1.0, 4.0, 2.0, 0.5, 3.0];
        let weights = [2.0f32, -1.0, 0.5];
        let data: Vec<f32> = weights.iter().flat_map(|w| pattern.iter().map(move |p| w * p)).collect();
        let act = Activations::new(3, 2, 3, data);
        let got = first_component(&act);
        let mean = pattern.iter().sum::<f32>() / 6.0;
        let norm = weights.iter().map(|w| w * w).sum::<f32>().sqrt();
        for (g, p) in got.iter().zip(pattern) {
            assert!((g - (p - mean) * norm).abs() < 1e-5, "{got:?}");
        }
    }

    #[test]
    fn the_sign_is_fixed_by_the_largest_element() {
        // The negated activations have the same component up to sign: the map is the same.
        let data: Vec<f32> = (0..2 * 4 * 4).map(|i| ((i * 37 % 11) as f32).sin()).collect();
        let neg: Vec<f32> = data.iter().map(|v| -v).collect();
        let a = first_component(&Activations::new(2, 4, 4, data));
        let b = first_component(&Activations::new(2, 4, 4, neg));
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-5);
        }
        let extreme = a.iter().copied().fold(0.0f32, |m, v| if v.abs() > m.abs() { v } else { m });
        assert!(extreme > 0.0);
    }
}
