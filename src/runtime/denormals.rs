//! Flush-to-zero and denormals-are-zero on the calling thread while a guard lives.
//!
//! Subnormal floats (below 1.2e-38 in magnitude) take a slow path in x86 multiply-adds. A
//! transformer's softmax over masked inputs makes many of them (probabilities of e^-90 and
//! less), and Swin-T's passes ran about 20 % faster with them treated as zero, with the
//! same logits (BENCHMARKS.md, issue #30). ONNX Runtime's own switch
//! (`session.set_denormal_as_zero`) covers its pool threads and, once per process, the
//! thread that made the first session; a one-thread session computes on the caller, which
//! is what this guard sets. Elsewhere than x86-64 it does nothing.

/// Sets MXCSR's FTZ (bit 15) and DAZ (bit 6) while alive, when asked to; restores the
/// thread's previous flags when dropped.
pub struct FlushDenormals {
    saved: Option<u32>,
}

#[cfg(target_arch = "x86_64")]
const FTZ_DAZ: u32 = (1 << 15) | (1 << 6);

impl FlushDenormals {
    pub fn new(on: bool) -> Self {
        #[cfg(target_arch = "x86_64")]
        if on {
            let saved = mxcsr();
            if saved & FTZ_DAZ != FTZ_DAZ {
                set_mxcsr(saved | FTZ_DAZ);
                return Self { saved: Some(saved) };
            }
        }
        let _ = on;
        Self { saved: None }
    }
}

impl Drop for FlushDenormals {
    fn drop(&mut self) {
        #[cfg(target_arch = "x86_64")]
        if let Some(saved) = self.saved {
            set_mxcsr(saved);
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn mxcsr() -> u32 {
    let mut v: u32 = 0;
    // SAFETY: stmxcsr stores the 32-bit MXCSR register into `v`, a valid, aligned u32.
    unsafe { std::arch::asm!("stmxcsr [{}]", in(reg) &mut v, options(nostack, preserves_flags)) };
    v
}

#[cfg(target_arch = "x86_64")]
fn set_mxcsr(v: u32) {
    // SAFETY: ldmxcsr loads `v`, a value read from MXCSR with only the FTZ/DAZ bits changed
    // (or restored), so no reserved bit is set and no exception is unmasked.
    unsafe { std::arch::asm!("ldmxcsr [{}]", in(reg) &v, options(nostack, readonly, preserves_flags)) };
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;
    use std::hint::black_box;

    /// Whether this thread treats subnormal floats as zero now.
    fn flushing() -> bool {
        mxcsr() & FTZ_DAZ == FTZ_DAZ
    }

    /// 1e-38 × 0.01 is 1e-40, a subnormal: kept without the guard, zero with it.
    fn tiny_product() -> f32 {
        black_box(1e-38f32) * black_box(0.01f32)
    }

    #[test]
    fn the_guard_flushes_subnormals_and_restores_the_thread() {
        assert!(!flushing());
        assert!(tiny_product() > 0.0);
        {
            let _g = FlushDenormals::new(true);
            assert!(flushing());
            assert_eq!(tiny_product(), 0.0);
            // A nested guard leaves the flags to the outer one.
            drop(FlushDenormals::new(true));
            assert!(flushing());
            assert_eq!(black_box(1e-39f32) + black_box(0.0f32), 0.0, "a subnormal input reads as zero");
        }
        assert!(!flushing());
        assert!(tiny_product() > 0.0);
        let _off = FlushDenormals::new(false);
        assert!(!flushing());
    }
}
