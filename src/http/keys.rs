//! Optional API keys, compared in constant time; probes stay open.

/// The accepted keys (empty = authentication off). Never logged or serialised.
#[derive(Default)]
pub struct ApiKeys {
    keys: Vec<Vec<u8>>,
    metrics_public: bool,
}

impl ApiKeys {
    pub fn new(keys: Vec<String>, metrics_public: bool) -> Self {
        Self { keys: keys.into_iter().map(String::into_bytes).collect(), metrics_public }
    }

    pub fn enabled(&self) -> bool {
        !self.keys.is_empty()
    }

    /// Whether `presented` is one of the keys. Every key is compared over its full length
    /// with no early exit, so the time taken does not reveal how much of a key matched.
    pub fn accepts(&self, presented: &[u8]) -> bool {
        let mut any = 0u8;
        for key in &self.keys {
            let mut diff = u8::from(key.len() != presented.len());
            for (i, k) in key.iter().enumerate() {
                diff |= k ^ presented.get(i).copied().unwrap_or(0);
            }
            any |= u8::from(diff == 0);
        }
        any == 1
    }

    pub(super) fn exempt(&self, path: &str) -> bool {
        matches!(path, "/" | "/healthz" | "/readyz" | "/v2/health/live" | "/v2/health/ready")
            || (self.metrics_public && path == "/metrics")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_exact_keys_are_accepted() {
        let keys = ApiKeys::new(vec!["alpha-key".into(), "beta".into()], false);
        assert!(keys.accepts(b"alpha-key"));
        assert!(keys.accepts(b"beta"));
        for wrong in [&b"alpha-ke"[..], b"alpha-key2", b"", b"BETA", b"bet\0"] {
            assert!(!keys.accepts(wrong), "{wrong:?}");
        }
        assert!(!ApiKeys::default().enabled());
    }

    #[test]
    fn probes_are_exempt_and_metrics_only_when_public() {
        let private = ApiKeys::new(vec!["k".into()], false);
        let public = ApiKeys::new(vec!["k".into()], true);
        assert!(private.exempt("/healthz") && private.exempt("/readyz"));
        assert!(!private.exempt("/metrics") && public.exempt("/metrics"));
        assert!(!public.exempt("/explain") && !public.exempt("/models"));
    }
}
