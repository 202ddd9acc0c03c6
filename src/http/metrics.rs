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

use crate::service::{Figure, HistogramSnapshot, MetricsSnapshot};

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
            "Explanation time per stage (queue, features, masked, combine, total)",
            None,
            MetricType::Histogram,
        )?;
        let mut stages = stages;
        for (stage, h) in &s.stage_seconds {
            let labels = [("stage", *stage)];
            histogram(&mut stages.encode_family(&labels.as_slice())?, h)?;
        }
        let mut batch =
            encoder.encode_descriptor("scorecam_batch_size", "Inputs per forward pass", None, MetricType::Histogram)?;
        histogram(&mut batch, &s.batch_size)?;
        for f in &s.counters {
            let name = f.name.strip_suffix("_total").unwrap_or(f.name);
            let counter = ConstCounter::new(f.value);
            counter.encode(encoder.encode_descriptor(name, help(f), None, counter.metric_type())?)?;
        }
        for f in &s.gauges {
            let gauge = ConstGauge::new(i64::try_from(f.value).unwrap_or(i64::MAX));
            gauge.encode(encoder.encode_descriptor(f.name, help(f), None, gauge.metric_type())?)?;
        }
        Ok(())
    }
}

/// The help text as the encoder wants it (it adds the final full stop).
fn help(f: &Figure) -> &str {
    f.help.strip_suffix('.').unwrap_or(f.help)
}

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
