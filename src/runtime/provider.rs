//! Execution provider selection: CPU, or CUDA with a fall-back policy.

use serde::{Deserialize, Serialize};

use super::RuntimeError;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    #[default]
    Cpu,
    Cuda,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Cpu => "cpu",
            ProviderKind::Cuda => "cuda",
        }
    }

    /// The `.ort/<variant>/` folder `scripts/setup/ort.sh` fills for this provider.
    pub fn library_variant(self) -> &'static str {
        match self {
            ProviderKind::Cpu => "cpu",
            ProviderKind::Cuda => "gpu",
        }
    }
}

/// What to do when the requested accelerator is not there.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DevicePolicy {
    /// Fall back to the CPU with a logged warning.
    #[default]
    Prefer,
    /// Refuse to start.
    Require,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProviderConfig {
    pub kind: ProviderKind,
    pub policy: DevicePolicy,
    pub device_id: i32,
    /// GPU memory arena limit in MiB (0 = ONNX Runtime's default).
    pub memory_limit_mb: usize,
}

impl ProviderConfig {
    /// Decides which provider sessions will use, given whether CUDA is present in the loaded
    /// library. Separated from the probing so the policy is testable without a GPU.
    pub fn resolve(&self, cuda_available: bool) -> Result<ProviderKind, RuntimeError> {
        match (self.kind, cuda_available, self.policy) {
            (ProviderKind::Cpu, _, _) => Ok(ProviderKind::Cpu),
            (ProviderKind::Cuda, true, _) => Ok(ProviderKind::Cuda),
            (ProviderKind::Cuda, false, DevicePolicy::Prefer) => {
                tracing::warn!(
                    "CUDA execution provider requested but not available in the loaded ONNX Runtime; \
                     falling back to CPU (set policy = \"require\" to refuse instead)"
                );
                Ok(ProviderKind::Cpu)
            }
            (ProviderKind::Cuda, false, DevicePolicy::Require) => Err(RuntimeError::ProviderUnavailable {
                provider: "cuda".into(),
                reason: "the loaded ONNX Runtime has no CUDA execution provider; install the GPU build with \
                         `scripts/setup/ort.sh gpu` and point ORT_DYLIB_PATH at it (CUDA 13 and cuDNN 9 must be present, as the onnxruntime-gpu 1.31.1 wheel requires)"
                    .into(),
            }),
        }
    }

    /// Probes the loaded library and resolves the provider.
    pub fn select(&self) -> Result<ProviderKind, RuntimeError> {
        use ort::ep::ExecutionProvider;
        let available = match self.kind {
            ProviderKind::Cpu => false,
            ProviderKind::Cuda => ort::ep::CUDA::is_available().unwrap_or(false),
        };
        self.resolve(available)
    }

    pub(crate) fn dispatch(&self, kind: ProviderKind) -> Vec<ort::ep::ExecutionProviderDispatch> {
        match kind {
            // `CPU::default()` *disables* ONNX Runtime's arena (its flag defaults to false):
            // every run then mallocs and frees its activations (buffers up to 13 MiB at
            // batch 4), and glibc's heaps grew by hundreds of MiB over a dataset run.
            ProviderKind::Cpu => vec![ort::ep::CPU::default().with_arena_allocator(true).build()],
            ProviderKind::Cuda => {
                let mut cuda = ort::ep::CUDA::default().with_device_id(self.device_id);
                if self.memory_limit_mb > 0 {
                    cuda = cuda.with_memory_limit(self.memory_limit_mb << 20);
                }
                vec![cuda.build().error_on_failure()]
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cuda(policy: DevicePolicy) -> ProviderConfig {
        ProviderConfig { kind: ProviderKind::Cuda, policy, ..Default::default() }
    }

    #[test]
    fn prefer_falls_back_to_cpu_when_cuda_is_absent() {
        assert_eq!(cuda(DevicePolicy::Prefer).resolve(false).unwrap(), ProviderKind::Cpu);
    }

    #[test]
    fn require_fails_with_a_clear_error_when_cuda_is_absent() {
        let err = cuda(DevicePolicy::Require).resolve(false).unwrap_err().to_string();
        assert!(err.contains("cuda") && err.contains("setup/ort.sh gpu"), "{err}");
    }

    #[test]
    fn cuda_is_used_when_present_and_cpu_always_stays_cpu() {
        assert_eq!(cuda(DevicePolicy::Require).resolve(true).unwrap(), ProviderKind::Cuda);
        assert_eq!(ProviderConfig::default().resolve(true).unwrap(), ProviderKind::Cpu);
    }
}
