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
//! `sgesdd` lands on, and the library keeps it, so its map may show the complement of the
//! salient region. To give the library's map, the sign is taken as `sgesdd` leaves it,
//! read off the structure of its algorithm (found by experiment on numpy 2 with OpenBLAS's
//! LAPACK, and exact there for the shapes target layers have; see `numpy_sign`). Where the
//! rule cannot decide (a zero it would read the sign of), the projection's element of
//! largest magnitude is made positive (scikit-learn's `svd_flip`).

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
    if numpy_sign(&x, &projection) < 0.0 {
        projection.iter_mut().for_each(|v| *v = -*v);
    }
    projection.into_iter().map(|v| v as f32).collect()
}

/// +1 when `projection` (= X v₁ for the centred n×k matrix `x`) has the sign numpy's SVD
/// gives it, −1 when it has the other. LAPACK's `sgesdd` takes one of three roads, and each
/// leaves the first left singular vector u₁ with a sign its first Householder reflection
/// fixes:
/// - n < k and k ≥ ⌊11n/6⌋ (an LQ factorisation first): u₁[0] < 0;
/// - n < k otherwise (bidiagonalised directly, lower bidiagonal): u₁[0] > 0;
/// - n ≥ k (a QR factorisation first, or upper bidiagonal): u₁ · q > 0, q = H₁e₁ the first
///   column of the reflection that maps X's first column x₁ onto β e₁ (β = −sign(x₁₁)‖x₁‖,
///   LAPACK's `slarfg`), i.e. q = x₁/β (e₁ when x₁ is zero below its first entry).
///
/// Measured against numpy 2.3 (OpenBLAS) on centred ReLU-like matrices with dead channels:
/// the two wide roads agreed in every trial at every shape tried (4×6 to 196×768); the tall
/// road in 97–100 % of trials when the smaller side exceeds 25 (LAPACK's divide and
/// conquer), less below that, where LAPACK's QR iteration decides (16×6: 82 %). An
/// undecided case (the value read is 0) falls back to `svd_flip`.
fn numpy_sign(x: &DMatrix<f64>, projection: &[f64]) -> f64 {
    let (n, k) = x.shape();
    let read = if n < k {
        let lq_first = k >= n * 11 / 6;
        if lq_first { -projection[0] } else { projection[0] }
    } else {
        let first = x.column(0);
        let below = first.rows(1, n - 1).norm();
        if below == 0.0 {
            projection[0]
        } else {
            let beta = -first[0].signum() * first.norm();
            first.iter().zip(projection).map(|(a, p)| a * p).sum::<f64>() / beta
        }
    };
    if read != 0.0 {
        return read.signum();
    }
    let extreme = projection.iter().copied().fold(0.0f64, |m, v| if v.abs() > m.abs() { v } else { m });
    if extreme < 0.0 { -1.0 } else { 1.0 }
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

    /// `sin((i·37) mod 11)` activations, K×H×W.
    fn activations(k: usize, h: usize, w: usize) -> Activations {
        Activations::new(k, h, w, (0..k * h * w).map(|i| ((i * 37 % 11) as f32).sin()).collect())
    }

    #[test]
    fn the_sign_is_numpys() {
        // numpy 2.3's `X @ np.linalg.svd(X)[2][0]` (OpenBLAS), first three positions, on
        // a tall 16×2, a wide 9×40 (LQ first), a wide 16×20 (bidiagonalised directly) and a
        // tall 64×30 matrix. (On tiny tall ones such as 36×8 LAPACK's small-matrix QR
        // iteration can land on the other sign: the module's notes say how often.)
        let cases: [((usize, usize, usize), [f32; 3]); 4] = [
            ((2, 4, 4), [-0.25028598, -1.1526201, 0.95497805]),
            ((40, 3, 3), [-1.0928522, 3.5881875, -0.25725695]),
            ((20, 4, 4), [1.5543852, 1.7701517, -2.6401489]),
            ((30, 8, 8), [1.1302866, -3.2639422, -0.18889667]),
        ];
        for ((k, h, w), want) in cases {
            let got = first_component(&activations(k, h, w));
            for (g, x) in got.iter().zip(want) {
                assert!((g - x).abs() < 1e-4, "{k}×{h}×{w}: {:?} vs {want:?}", &got[..3]);
            }
        }
    }

    #[test]
    fn negated_activations_give_the_same_map() {
        // The component is the same up to sign, and the sign is read off the data.
        let a = first_component(&activations(8, 6, 6));
        let neg = activations(8, 6, 6);
        let neg = Activations::new(8, 6, 6, neg.data.iter().map(|v| -v).collect());
        for (x, y) in a.iter().zip(&first_component(&neg)) {
            assert!((x - y).abs() < 1e-5);
        }
    }
}
