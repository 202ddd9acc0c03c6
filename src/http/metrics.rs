//! `/metrics`: the HTTP layer's own request counts and latencies, and the service's
//! snapshot of its and the engine's counters, in the Prometheus text format (0.0.4),
//! encoded by `prometheus-client`.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::service::{HistogramSnapshot, MetricsSnapshot};

/// What `/metrics` answers with.
pub use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

const LATENCY: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteStatus {
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Route {
    route: String,
}

/// Requests by route and status, and latency by route.
pub struct HttpMetrics {
    requests: Family<RouteStatus, Counter>,
    latency: Family<Route, Histogram, fn() -> Histogram>,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        let latency = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        Self { requests: Family::default(), latency }
    }
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY.iter().copied())
}

impl HttpMetrics {
    pub fn observe(&self, route: &str, status: u16, seconds: f64) {
        self.requests.get_or_create(&RouteStatus { route: route.to_string(), status }).inc();
        self.latency.get_or_create(&Route { route: route.to_string() }).observe(seconds);
    }

    /// The exposition: this layer's families, then the service's snapshot.
    pub fn render(&self, snapshot: &MetricsSnapshot) -> String {
        let mut registry = Registry::default();
        registry.register("scorecam_http_requests", "HTTP requests by route and status", self.requests.clone());
        registry.register(
            "scorecam_http_request_duration_seconds",
            "HTTP request latency by route",
            self.latency.clone(),
        );
        registry.register_collector(Box::new(Snapshot(snapshot.clone())));
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry);
        out
    }
}

/// The service's counters as one scrape's collector.
#[derive(Debug)]
struct Snapshot(MetricsSnapshot);

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.0;
        let stages = encoder.encode_descriptor(
            "scorecam_stage_duration_seconds",
            "Explanation time per stage (queue, features, masked, combine, total).",
            None,
            MetricType::Histogram,
        )?;
        let mut stages = stages;
        for (stage, h) in &s.stage_seconds {
            let labels = [("stage", *stage)];
            histogram(&mut stages.encode_family(&labels.as_slice())?, h)?;
        }
        let mut batch = encoder.encode_descriptor(
            "scorecam_batch_size",
            "Inputs per forward pass.",
            None,
            MetricType::Histogram,
        )?;
        histogram(&mut batch, &s.batch_size)?;
        for f in &s.counters {
            let name = f.name.strip_suffix("_total").unwrap_or(f.name);
            let counter = ConstCounter::new(f.value);
            counter.encode(encoder.encode_descriptor(name, f.help, None, counter.metric_type())?)?;
        }
        for f in &s.gauges {
            let gauge = ConstGauge::new(i64::try_from(f.value).unwrap_or(i64::MAX));
            gauge.encode(encoder.encode_descriptor(f.name, f.help, None, gauge.metric_type())?)?;
        }
        Ok(())
    }
}

// A collector's help text goes out as written (only `Registry::register` adds a full stop).

/// A snapshot's cumulative buckets as the encoder's per-bucket counts.
fn histogram(
    encoder: &mut prometheus_client::encoding::MetricEncoder,
    h: &HistogramSnapshot,
) -> Result<(), std::fmt::Error> {
    let mut below = 0;
    let buckets: Vec<(f64, u64)> = h
        .buckets
        .iter()
        .map(|&(bound, cumulative)| {
            let n = cumulative.saturating_sub(below);
            below = cumulative;
            (bound, n)
        })
        .collect();
    encoder.encode_histogram::<prometheus_client::encoding::NoLabelSet>(h.sum, h.count, &buckets, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::Figure;

    /// The exposition keeps the format `/metrics` always had: cumulative buckets (the
    /// snapshot's, not re-accumulated), `_total` once on counters, help ending in one stop.
    #[test]
    fn the_snapshot_is_exposed_in_the_prometheus_text_format() {
        let histogram = |buckets: Vec<(f64, u64)>, sum, count| HistogramSnapshot { buckets, sum, count };
        let snapshot = MetricsSnapshot {
            stage_seconds: vec![("masked", histogram(vec![(0.5, 1), (1.0, 3)], 2.25, 4))],
            batch_size: histogram(vec![(1.0, 2), (2.0, 5), (4.0, 5)], 9.0, 6),
            counters: vec![Figure { name: "scorecam_masked_passes_total", help: "Masked passes.", value: 7 }],
            gauges: vec![Figure { name: "scorecam_queue_depth", help: "Jobs waiting.", value: 3 }],
        };
        let metrics = HttpMetrics::default();
        metrics.observe("/explain", 200, 0.02);
        let text = metrics.render(&snapshot);
        for line in [
            "scorecam_http_requests_total{route=\"/explain\",status=\"200\"} 1",
            "scorecam_http_request_duration_seconds_bucket{route=\"/explain\",le=\"0.01\"} 0",
            "scorecam_http_request_duration_seconds_bucket{route=\"/explain\",le=\"0.025\"} 1",
            "scorecam_stage_duration_seconds_bucket{stage=\"masked\",le=\"0.5\"} 1",
            "scorecam_stage_duration_seconds_bucket{stage=\"masked\",le=\"1\"} 3",
            "scorecam_stage_duration_seconds_bucket{stage=\"masked\",le=\"+Inf\"} 4",
            "scorecam_stage_duration_seconds_sum{stage=\"masked\"} 2.25",
            "scorecam_batch_size_bucket{le=\"2\"} 5",
            "scorecam_batch_size_bucket{le=\"4\"} 5",
            "scorecam_batch_size_bucket{le=\"+Inf\"} 6",
            "scorecam_batch_size_count 6",
            "# HELP scorecam_batch_size Inputs per forward pass.",
            "# HELP scorecam_stage_duration_seconds Explanation time per stage (queue, features, masked, combine, total).",
            "# HELP scorecam_masked_passes_total Masked passes.",
            "# TYPE scorecam_masked_passes_total counter",
            "scorecam_masked_passes_total 7",
            "# HELP scorecam_queue_depth Jobs waiting.",
            "# TYPE scorecam_queue_depth gauge",
            "scorecam_queue_depth 3",
        ] {
            assert!(text.lines().any(|l| l == line), "missing `{line}` in:\n{text}");
        }
    }
}
