//! Prometheus text exposition of the HTTP, service and engine counters.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::Ordering;

use crate::engine::{EngineStats, stats::Histogram};
use crate::service::{ResultCache, ServiceStats};

const LATENCY: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0];

/// Requests by route and status, and latency by route.
#[derive(Default)]
pub struct HttpMetrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    latency: Mutex<BTreeMap<String, std::sync::Arc<Histogram>>>,
}

impl HttpMetrics {
    pub fn observe(&self, route: &str, status: u16, seconds: f64) {
        if let Ok(mut r) = self.requests.lock() {
            *r.entry((route.to_string(), status)).or_default() += 1;
        }
        let h = self.latency.lock().map(|mut l| {
            l.entry(route.to_string()).or_insert_with(|| std::sync::Arc::new(Histogram::new(LATENCY))).clone()
        });
        if let Ok(h) = h {
            h.observe(seconds);
        }
    }

    pub fn render(&self, engine: &EngineStats, service: &ServiceStats, cache: &ResultCache, ready: bool) -> String {
        let mut out = String::new();
        let o = &mut out;
        let _ = writeln!(o, "# HELP scorecam_http_requests_total HTTP requests by route and status.");
        let _ = writeln!(o, "# TYPE scorecam_http_requests_total counter");
        if let Ok(r) = self.requests.lock() {
            for ((route, status), n) in r.iter() {
                let _ = writeln!(o, "scorecam_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}");
            }
        }
        let _ = writeln!(o, "# HELP scorecam_http_request_duration_seconds HTTP request latency by route.");
        let _ = writeln!(o, "# TYPE scorecam_http_request_duration_seconds histogram");
        if let Ok(l) = self.latency.lock() {
            for (route, h) in l.iter() {
                histogram(o, "scorecam_http_request_duration_seconds", &format!("route=\"{route}\""), h);
            }
        }
        let _ = writeln!(
            o,
            "# HELP scorecam_stage_duration_seconds Explanation time per stage (queue, features, masked, combine, total)."
        );
        let _ = writeln!(o, "# TYPE scorecam_stage_duration_seconds histogram");
        for (stage, h) in &service.stage_seconds {
            histogram(o, "scorecam_stage_duration_seconds", &format!("stage=\"{stage}\""), h);
        }
        let _ = writeln!(o, "# HELP scorecam_batch_size Inputs per forward pass.");
        let _ = writeln!(o, "# TYPE scorecam_batch_size histogram");
        histogram(o, "scorecam_batch_size", "", &engine.batch_size);
        let counters = [
            (
                "scorecam_masked_passes_total",
                "Masked forward passes executed.",
                engine.masked_passes.load(Ordering::Relaxed),
            ),
            (
                "scorecam_head_passes_total",
                "Head-only passes executed (Ablation-CAM).",
                engine.head_passes.load(Ordering::Relaxed),
            ),
            (
                "scorecam_clean_passes_total",
                "Clean forward passes executed.",
                engine.clean_passes.load(Ordering::Relaxed),
            ),
            (
                "scorecam_skipped_channels_total",
                "Constant channels that needed no pass of their own.",
                service.skipped_channels.load(Ordering::Relaxed),
            ),
            (
                "scorecam_shared_mask_channels_total",
                "Channels whose mask repeated another channel's, so they reused its passes.",
                service.shared_mask_channels.load(Ordering::Relaxed),
            ),
            (
                "scorecam_partial_explanations_total",
                "Explanations answered with a partial map (max_passes, or anytime at the deadline).",
                service.partial_explanations.load(Ordering::Relaxed),
            ),
            (
                "scorecam_cache_hits_total",
                "Explanations answered from the result cache.",
                cache.hits.load(Ordering::Relaxed),
            ),
            (
                "scorecam_cache_misses_total",
                "Explanations looked up in the result cache and computed.",
                cache.misses.load(Ordering::Relaxed),
            ),
            (
                "scorecam_rejected_jobs_total",
                "Jobs refused at admission (429).",
                engine.rejected.load(Ordering::Relaxed),
            ),
            (
                "scorecam_cancelled_jobs_total",
                "Jobs cancelled because the client went away.",
                engine.cancelled.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        }
        let gauges = [
            (
                "scorecam_queue_depth",
                "Jobs admitted and waiting to run.",
                engine.queued_jobs.load(Ordering::Relaxed) as u64,
            ),
            ("scorecam_jobs_running", "Jobs being scheduled.", engine.running_jobs.load(Ordering::Relaxed) as u64),
            ("scorecam_workers_alive", "Workers with live sessions.", engine.workers_alive() as u64),
            ("scorecam_ready", "1 when the server accepts work.", u64::from(ready)),
            ("scorecam_cache_bytes", "Bytes the result cache holds.", cache.bytes() as u64),
            ("scorecam_cache_entries", "Explanations the result cache holds.", cache.len() as u64),
        ];
        for (name, help, v) in gauges {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        out
    }
}

fn histogram(o: &mut String, name: &str, labels: &str, h: &Histogram) {
    let (buckets, sum, count) = h.snapshot();
    let sep = if labels.is_empty() { "" } else { "," };
    for (bound, n) in buckets {
        let _ = writeln!(o, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {n}");
    }
    let _ = writeln!(o, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
    let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
    let _ = writeln!(o, "{name}_sum{braces} {sum}");
    let _ = writeln!(o, "{name}_count{braces} {count}");
}
