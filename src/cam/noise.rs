//! Reproducible randomness: Gaussian noise (SS-CAM's samples, the evaluation's random
//! floor) and the generator behind it (RISE's masks).

/// SplitMix64 from a (seed, stream) pair: a counter-based generator, so stream n is the
/// same whichever thread draws it and whenever.
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    pub(crate) fn new(seed: u64, stream: u64) -> Self {
        Self(seed ^ stream.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform in [0, 1) with 53 random bits.
    pub(crate) fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A uniform integer in 0..n (n ≥ 1; the modulo bias is below 2^-40 for the small n used).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

/// `len` draws of N(0, σ²) from a counter-based generator (SplitMix64 + Box–Muller), so a
/// sample is the same whichever thread draws it and whenever.
pub fn gaussian_noise(seed: u64, sample: u64, sigma: f32, len: usize) -> Vec<f32> {
    let mut rng = SplitMix64::new(seed, sample);
    let mut out = Vec::with_capacity(len + 1);
    while out.len() < len {
        // Uniforms in (0, 1]: 53 random bits, never 0 (ln 0).
        let u1 = ((rng.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64;
        let u2 = rng.uniform();
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
