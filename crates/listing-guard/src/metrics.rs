//! The pipeline's metrics: every name, type and label set in one place, exposed in the
//! Prometheus text format by the telemetry server (`/metrics`, see [`crate::telemetry`]).
//!
//! Labels are bounded: actions, marketplaces (validated lower-case ASCII names), error classes
//! and topic partitions. Never listing, event or merchant ids.

use std::sync::atomic::AtomicU64;
use std::sync::LazyLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels of `lg_decisions_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// allow / label / review / block.
    pub action: String,
    /// The listing's marketplace.
    pub marketplace: String,
}

/// Labels of the error-class counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassLabels {
    /// The stable error class (the same string as on the wire).
    pub class: String,
}

/// Labels of the per-partition gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
}

/// Labels of `lg_score_cache_lookups_total` (`hit`/`miss`) and `lg_label_assets_total`
/// (`written`/`failed`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    /// The outcome.
    pub result: &'static str,
}

/// Labels of `lg_stage_seconds_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    /// `fetch`, `decode` (with provenance), `crop`, `inference`, `policy`, `produce`,
    /// `label_assets`.
    pub stage: &'static str,
}

/// Every metric of the process.
#[derive(Debug)]
pub struct Metrics {
    /// Input records received (`lg_records_consumed_total`).
    pub consumed: Counter,
    /// Decisions acknowledged by the broker (`lg_decisions_total`).
    pub decisions: Family<DecisionLabels, Counter>,
    /// Dead letters acknowledged by the broker (`lg_dead_letters_total`).
    pub dead_letters: Family<ClassLabels, Counter>,
    /// Image fetches that failed (`lg_image_fetch_errors_total`).
    pub fetch_errors: Family<ClassLabels, Counter>,
    /// Images per detector batch (`lg_detector_batch_size`).
    pub batch_size: Histogram,
    /// Seconds per detector batch (`lg_detector_batch_seconds`).
    pub batch_seconds: Histogram,
    /// Seconds from receiving a record to its outputs being acknowledged
    /// (`lg_end_to_end_seconds`).
    pub end_to_end_seconds: Histogram,
    /// Consumer lag per assigned partition, from librdkafka's statistics (`lg_consumer_lag`).
    pub consumer_lag: Family<PartitionLabels, Gauge>,
    /// Score-cache lookups by result (`lg_score_cache_lookups_total`).
    pub cache_lookups: Family<CacheLabels, Counter>,
    /// Seconds spent per processing stage, summed over records and threads
    /// (`lg_stage_seconds_total`): where the time goes.
    pub stage_seconds: Family<StageLabels, Counter<f64, AtomicU64>>,
    /// Labelled-file sets written to the asset store, by result (`lg_label_assets_total`).
    pub label_assets: Family<CacheLabels, Counter>,
    registry: Registry,
}

impl Metrics {
    fn new() -> Self {
        let consumed = Counter::default();
        let decisions = Family::<DecisionLabels, Counter>::default();
        let dead_letters = Family::<ClassLabels, Counter>::default();
        let fetch_errors = Family::<ClassLabels, Counter>::default();
        let batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 10));
        let batch_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        let end_to_end_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 18));
        let consumer_lag = Family::<PartitionLabels, Gauge>::default();
        let cache_lookups = Family::<CacheLabels, Counter>::default();
        let label_assets = Family::<CacheLabels, Counter>::default();
        let stage_seconds = Family::<StageLabels, Counter<f64, AtomicU64>>::default();
        let mut r = Registry::default();
        r.register(
            "lg_records_consumed",
            "Input records received",
            consumed.clone(),
        );
        r.register(
            "lg_decisions",
            "Decisions acknowledged by the broker, by action and marketplace",
            decisions.clone(),
        );
        r.register(
            "lg_dead_letters",
            "Dead letters acknowledged by the broker, by error class",
            dead_letters.clone(),
        );
        r.register(
            "lg_image_fetch_errors",
            "Image fetches that failed, by error class",
            fetch_errors.clone(),
        );
        r.register(
            "lg_detector_batch_size",
            "Images per detector batch",
            batch_size.clone(),
        );
        r.register(
            "lg_detector_batch_seconds",
            "Seconds per detector batch",
            batch_seconds.clone(),
        );
        r.register(
            "lg_end_to_end_seconds",
            "Seconds from receiving a record to its outputs being acknowledged",
            end_to_end_seconds.clone(),
        );
        r.register(
            "lg_consumer_lag",
            "Records behind the high-water mark, per assigned partition",
            consumer_lag.clone(),
        );
        r.register(
            "lg_score_cache_lookups",
            "Score-cache lookups by result",
            cache_lookups.clone(),
        );
        r.register(
            "lg_stage_seconds",
            "Seconds spent per processing stage, summed over records and threads",
            stage_seconds.clone(),
        );
        r.register(
            "lg_label_assets",
            "Labelled files written for a label event (written) or not (failed)",
            label_assets.clone(),
        );
        Self {
            consumed,
            decisions,
            dead_letters,
            fetch_errors,
            batch_size,
            batch_seconds,
            end_to_end_seconds,
            consumer_lag,
            cache_lookups,
            label_assets,
            stage_seconds,
            registry: r,
        }
    }

    /// Counts a score-cache lookup.
    pub fn cache_lookup(&self, hit: bool) {
        let result = if hit { "hit" } else { "miss" };
        self.cache_lookups
            .get_or_create(&CacheLabels { result })
            .inc();
    }

    /// Adds time to a stage.
    pub fn stage(&self, stage: &'static str, took: std::time::Duration) {
        self.stage_seconds
            .get_or_create(&StageLabels { stage })
            .inc_by(took.as_secs_f64());
    }

    /// Counts a label event's asset write.
    pub fn label_asset(&self, ok: bool) {
        let result = if ok { "written" } else { "failed" };
        self.label_assets
            .get_or_create(&CacheLabels { result })
            .inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// The process's metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_types_and_labels_are_exposed() {
        let m = Metrics::new();
        m.consumed.inc();
        m.decisions
            .get_or_create(&DecisionLabels {
                action: "label".into(),
                marketplace: "taobao".into(),
            })
            .inc();
        m.end_to_end_seconds.observe(0.02);
        m.cache_lookup(true);
        let text = m.encode();
        for line in [
            "# TYPE lg_records_consumed counter",
            "lg_records_consumed_total 1",
            "lg_decisions_total{action=\"label\",marketplace=\"taobao\"} 1",
            "# TYPE lg_end_to_end_seconds histogram",
            "lg_end_to_end_seconds_count 1",
            "lg_score_cache_lookups_total{result=\"hit\"} 1",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }
}
