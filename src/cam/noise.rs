//! Reproducible Gaussian noise (SS-CAM's samples, the evaluation's random floor).

/// `len` draws of N(0, σ²) from a counter-based generator (SplitMix64 + Box–Muller), so a
/// sample is the same whichever thread draws it and whenever.
pub fn gaussian_noise(seed: u64, sample: u64, sigma: f32, len: usize) -> Vec<f32> {
    let mut state = seed ^ sample.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut next = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut out = Vec::with_capacity(len + 1);
    while out.len() < len {
        // Uniforms in (0, 1]: 53 random bits, never 0 (ln 0).
        let u1 = ((next() >> 11) + 1) as f64 / (1u64 << 53) as f64;
        let u2 = (next() >> 11) as f64 / (1u64 << 53) as f64;
        let r = (-2.0 * u1.ln()).sqrt() * f64::from(sigma);
        let t = std::f64::consts::TAU * u2;
        out.push((r * t.cos()) as f32);
        out.push((r * t.sin()) as f32);
    }
    out.truncate(len);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_is_reproducible_and_has_the_asked_spread() {
        let a = gaussian_noise(3, 1, 2.0, 100_001);
        assert_eq!(a, gaussian_noise(3, 1, 2.0, 100_001));
        assert_ne!(a[..10], gaussian_noise(3, 2, 2.0, 10)[..]);
        let mean = a.iter().map(|&v| f64::from(v)).sum::<f64>() / a.len() as f64;
        let var = a.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / a.len() as f64;
        assert!(mean.abs() < 0.03, "mean {mean}");
        assert!((var.sqrt() - 2.0).abs() < 0.03, "std {}", var.sqrt());
    }
}
