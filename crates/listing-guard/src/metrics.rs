//! The pipeline's metrics: every name, type and label set in one place, behind one recording
//! method each. They are exposed two ways:
//!
//! - pulled: the Prometheus text format from the telemetry server (`/metrics`, see
//!   [`crate::telemetry`]), always;
//! - pushed: OpenTelemetry instruments exported over OTLP/HTTP by the SDK's periodic reader,
//!   when [`Metrics::export_to`] has been given a meter (see [`crate::otel`]).
//!
//! Each recording method writes both, so the two views hold the same values: OTLP sums are
//! cumulative, as Prometheus counters are, histograms have the same bucket bounds, and the OTel
//! name is the Prometheus family name (an OTel collector's Prometheus exporter adds `_total` to
//! the sums, giving the scrape's names back).
//!
//! Labels are bounded: actions, marketplaces (validated lower-case ASCII names), error classes,
//! stages and topic partitions. Never listing, event or merchant ids.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, LazyLock, Mutex, OnceLock};
use std::time::Duration;

use opentelemetry::metrics::{Counter as OtelCounter, Histogram as OtelHistogram, Meter};
use opentelemetry::KeyValue;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// A metric's name (the Prometheus family name, also the OTel instrument name) and help text.
struct Spec {
    name: &'static str,
    help: &'static str,
}

const CONSUMED: Spec = Spec {
    name: "lg_records_consumed",
    help: "Input records received",
};
const DECISIONS: Spec = Spec {
    name: "lg_decisions",
    help: "Decisions acknowledged by the broker, by action and marketplace",
};
const DEAD_LETTERS: Spec = Spec {
    name: "lg_dead_letters",
    help: "Dead letters acknowledged by the broker, by error class",
};
const FETCH_ERRORS: Spec = Spec {
    name: "lg_image_fetch_errors",
    help: "Image fetches that failed, by error class",
};
const BATCH_SIZE: Spec = Spec {
    name: "lg_detector_batch_size",
    help: "Images per detector batch",
};
const BATCH_SECONDS: Spec = Spec {
    name: "lg_detector_batch_seconds",
    help: "Seconds per detector batch",
};
const END_TO_END: Spec = Spec {
    name: "lg_end_to_end_seconds",
    help: "Seconds from receiving a record to its outputs being acknowledged",
};
const CONSUMER_LAG: Spec = Spec {
    name: "lg_consumer_lag",
    help: "Records behind the high-water mark, per assigned partition",
};
const CACHE_LOOKUPS: Spec = Spec {
    name: "lg_score_cache_lookups",
    help: "Score-cache lookups by result",
};
const STAGE_SECONDS: Spec = Spec {
    name: "lg_stage_seconds",
    help: "Seconds spent per processing stage, summed over records and threads",
};
const LABEL_ASSETS: Spec = Spec {
    name: "lg_label_assets",
    help: "Labelled files written for a label event (written) or not (failed)",
};

/// `n` bucket bounds from `start`, doubling (Prometheus' `exponential_buckets(start, 2, n)`).
fn doubling(start: f64, n: u16) -> Vec<f64> {
    (0..n).map(|i| start * 2f64.powi(i32::from(i))).collect()
}

/// Bucket bounds of the three histograms, shared by both views.
fn batch_size_bounds() -> Vec<f64> {
    doubling(1.0, 10)
}
fn batch_seconds_bounds() -> Vec<f64> {
    doubling(0.001, 16)
}
fn end_to_end_bounds() -> Vec<f64> {
    doubling(0.001, 18)
}

/// Labels of `lg_decisions_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    /// allow / label / review / block.
    action: String,
    /// The listing's marketplace.
    marketplace: String,
}

/// Labels of the error-class counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabels {
    /// The stable error class (the same string as on the wire).
    class: String,
}

/// Labels of the per-partition gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartitionLabels {
    topic: String,
    partition: i32,
}

/// Labels of `lg_score_cache_lookups_total` (`hit`/`miss`) and `lg_label_assets_total`
/// (`written`/`failed`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

/// Labels of `lg_stage_seconds_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabels {
    /// `fetch`, `decode` (with provenance), `crop`, `inference`, `policy`, `produce`,
    /// `label_assets`.
    stage: &'static str,
}

/// Where the consumer lag comes from: `((topic, partition), lag)` for each assigned partition.
pub type LagSource = Arc<dyn Fn() -> Vec<((String, i32), i64)> + Send + Sync>;

/// The scrape view (prometheus-client).
#[derive(Debug)]
struct Scrape {
    consumed: Counter,
    decisions: Family<DecisionLabels, Counter>,
    dead_letters: Family<ClassLabels, Counter>,
    fetch_errors: Family<ClassLabels, Counter>,
    batch_size: Histogram,
    batch_seconds: Histogram,
    end_to_end: Histogram,
    consumer_lag: Family<PartitionLabels, Gauge>,
    cache_lookups: Family<ResultLabels, Counter>,
    stage_seconds: Family<StageLabels, Counter<f64, AtomicU64>>,
    label_assets: Family<ResultLabels, Counter>,
    registry: Registry,
}

impl Scrape {
    fn new() -> Self {
        let s = Self {
            consumed: Counter::default(),
            decisions: Family::default(),
            dead_letters: Family::default(),
            fetch_errors: Family::default(),
            batch_size: Histogram::new(batch_size_bounds()),
            batch_seconds: Histogram::new(batch_seconds_bounds()),
            end_to_end: Histogram::new(end_to_end_bounds()),
            consumer_lag: Family::default(),
            cache_lookups: Family::default(),
            stage_seconds: Family::default(),
            label_assets: Family::default(),
            registry: Registry::default(),
        };
        let mut r = Registry::default();
        macro_rules! reg {
            ($($spec:ident => $field:ident),* $(,)?) => {
                $(r.register($spec.name, $spec.help, s.$field.clone());)*
            };
        }
        reg!(
            CONSUMED => consumed,
            DECISIONS => decisions,
            DEAD_LETTERS => dead_letters,
            FETCH_ERRORS => fetch_errors,
            BATCH_SIZE => batch_size,
            BATCH_SECONDS => batch_seconds,
            END_TO_END => end_to_end,
            CONSUMER_LAG => consumer_lag,
            CACHE_LOOKUPS => cache_lookups,
            STAGE_SECONDS => stage_seconds,
            LABEL_ASSETS => label_assets,
        );
        Self { registry: r, ..s }
    }
}

/// The push view (OpenTelemetry instruments), created once export is configured.
struct Push {
    consumed: OtelCounter<u64>,
    decisions: OtelCounter<u64>,
    dead_letters: OtelCounter<u64>,
    fetch_errors: OtelCounter<u64>,
    batch_size: OtelHistogram<f64>,
    batch_seconds: OtelHistogram<f64>,
    end_to_end: OtelHistogram<f64>,
    cache_lookups: OtelCounter<u64>,
    stage_seconds: OtelCounter<f64>,
    label_assets: OtelCounter<u64>,
    // Observed by the SDK at each collection; kept alive here.
    _consumer_lag: opentelemetry::metrics::ObservableGauge<i64>,
}

impl Push {
    fn new(meter: &Meter, lags: Arc<Mutex<Option<LagSource>>>) -> Self {
        let counter = |s: Spec| meter.u64_counter(s.name).with_description(s.help).build();
        let histogram = |s: Spec, unit: &'static str, bounds: Vec<f64>| {
            meter
                .f64_histogram(s.name)
                .with_description(s.help)
                .with_unit(unit)
                .with_boundaries(bounds)
                .build()
        };
        Self {
            consumed: counter(CONSUMED),
            decisions: counter(DECISIONS),
            dead_letters: counter(DEAD_LETTERS),
            fetch_errors: counter(FETCH_ERRORS),
            batch_size: histogram(BATCH_SIZE, "{image}", batch_size_bounds()),
            batch_seconds: histogram(BATCH_SECONDS, "s", batch_seconds_bounds()),
            end_to_end: histogram(END_TO_END, "s", end_to_end_bounds()),
            cache_lookups: counter(CACHE_LOOKUPS),
            stage_seconds: meter
                .f64_counter(STAGE_SECONDS.name)
                .with_description(STAGE_SECONDS.help)
                .with_unit("s")
                .build(),
            label_assets: counter(LABEL_ASSETS),
            _consumer_lag: meter
                .i64_observable_gauge(CONSUMER_LAG.name)
                .with_description(CONSUMER_LAG.help)
                .with_callback(move |g| {
                    for ((topic, partition), lag) in current_lags(&lags) {
                        g.observe(
                            lag,
                            &[
                                KeyValue::new("topic", topic),
                                KeyValue::new("partition", i64::from(partition)),
                            ],
                        );
                    }
                })
                .build(),
        }
    }
}

fn current_lags(source: &Mutex<Option<LagSource>>) -> Vec<((String, i32), i64)> {
    let f = source.lock().expect("lag source lock").clone();
    f.map(|f| f()).unwrap_or_default()
}

/// Every metric of the process.
pub struct Metrics {
    scrape: Scrape,
    push: OnceLock<Push>,
    lags: Arc<Mutex<Option<LagSource>>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("scrape", &self.scrape)
            .field("push", &self.push.get().is_some())
            .finish()
    }
}

impl Metrics {
    fn new() -> Self {
        Self {
            scrape: Scrape::new(),
            push: OnceLock::new(),
            lags: Arc::default(),
        }
    }

    /// Also records every metric into OpenTelemetry instruments made from `meter` (whose
    /// provider exports them). Once per process; later calls are ignored.
    pub fn export_to(&self, meter: &Meter) {
        let _ = self
            .push
            .get_or_init(|| Push::new(meter, Arc::clone(&self.lags)));
    }

    /// Where `lg_consumer_lag` is read from, at each scrape and each OTLP collection.
    pub fn set_lag_source(&self, source: LagSource) {
        *self.lags.lock().expect("lag source lock") = Some(source);
    }

    /// An input record was received (`lg_records_consumed_total`).
    pub fn consumed(&self) {
        self.scrape.consumed.inc();
        if let Some(p) = self.push.get() {
            p.consumed.add(1, &[]);
        }
    }

    /// A decision was acknowledged by the broker (`lg_decisions_total`).
    pub fn decision(&self, action: &'static str, marketplace: &str) {
        self.scrape
            .decisions
            .get_or_create(&DecisionLabels {
                action: action.to_owned(),
                marketplace: marketplace.to_owned(),
            })
            .inc();
        if let Some(p) = self.push.get() {
            p.decisions.add(
                1,
                &[
                    KeyValue::new("action", action),
                    KeyValue::new("marketplace", marketplace.to_owned()),
                ],
            );
        }
    }

    /// A dead letter was acknowledged by the broker (`lg_dead_letters_total`).
    pub fn dead_letter(&self, class: &'static str) {
        self.count_class(&self.scrape.dead_letters, class, |p| &p.dead_letters);
    }

    /// An image fetch failed (`lg_image_fetch_errors_total`).
    pub fn fetch_error(&self, class: &str) {
        self.count_class(&self.scrape.fetch_errors, class, |p| &p.fetch_errors);
    }

    fn count_class(
        &self,
        family: &Family<ClassLabels, Counter>,
        class: &str,
        push: impl Fn(&Push) -> &OtelCounter<u64>,
    ) {
        family
            .get_or_create(&ClassLabels {
                class: class.to_owned(),
            })
            .inc();
        if let Some(p) = self.push.get() {
            push(p).add(1, &[KeyValue::new("class", class.to_owned())]);
        }
    }

    /// A detector batch of `images` ran for `took` (`lg_detector_batch_size`,
    /// `lg_detector_batch_seconds`).
    pub fn detector_batch(&self, images: usize, took: Duration) {
        let (n, s) = (images as f64, took.as_secs_f64());
        self.scrape.batch_size.observe(n);
        self.scrape.batch_seconds.observe(s);
        if let Some(p) = self.push.get() {
            p.batch_size.record(n, &[]);
            p.batch_seconds.record(s, &[]);
        }
    }

    /// A record's outputs were acknowledged `took` after it was received
    /// (`lg_end_to_end_seconds`).
    pub fn end_to_end(&self, took: Duration) {
        let s = took.as_secs_f64();
        self.scrape.end_to_end.observe(s);
        if let Some(p) = self.push.get() {
            p.end_to_end.record(s, &[]);
        }
    }

    /// Counts a score-cache lookup (`lg_score_cache_lookups_total`).
    pub fn cache_lookup(&self, hit: bool) {
        let result = if hit { "hit" } else { "miss" };
        self.count_result(&self.scrape.cache_lookups, result, |p| &p.cache_lookups);
    }

    /// Counts a label event's asset write (`lg_label_assets_total`).
    pub fn label_asset(&self, ok: bool) {
        let result = if ok { "written" } else { "failed" };
        self.count_result(&self.scrape.label_assets, result, |p| &p.label_assets);
    }

    fn count_result(
        &self,
        family: &Family<ResultLabels, Counter>,
        result: &'static str,
        push: impl Fn(&Push) -> &OtelCounter<u64>,
    ) {
        family.get_or_create(&ResultLabels { result }).inc();
        if let Some(p) = self.push.get() {
            push(p).add(1, &[KeyValue::new("result", result)]);
        }
    }

    /// Adds time to a stage (`lg_stage_seconds_total`).
    pub fn stage(&self, stage: &'static str, took: Duration) {
        let s = took.as_secs_f64();
        self.scrape
            .stage_seconds
            .get_or_create(&StageLabels { stage })
            .inc_by(s);
        if let Some(p) = self.push.get() {
            p.stage_seconds.add(s, &[KeyValue::new("stage", stage)]);
        }
    }

    /// The Prometheus text exposition of every metric, with the consumer lag read now.
    pub fn encode(&self) -> String {
        let lag = &self.scrape.consumer_lag;
        lag.clear();
        for ((topic, partition), l) in current_lags(&self.lags) {
            lag.get_or_create(&PartitionLabels { topic, partition })
                .set(l);
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.scrape.registry)
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
        m.consumed();
        m.decision("label", "taobao");
        m.dead_letter("malformed_json");
        m.end_to_end(Duration::from_millis(20));
        m.cache_lookup(true);
        m.stage("fetch", Duration::from_millis(1500));
        m.set_lag_source(Arc::new(|| vec![(("listings.v1".to_owned(), 2), 17)]));
        let text = m.encode();
        for line in [
            "# TYPE lg_records_consumed counter",
            "lg_records_consumed_total 1",
            "lg_decisions_total{action=\"label\",marketplace=\"taobao\"} 1",
            "lg_dead_letters_total{class=\"malformed_json\"} 1",
            "# TYPE lg_end_to_end_seconds histogram",
            "lg_end_to_end_seconds_count 1",
            "lg_end_to_end_seconds_bucket{le=\"0.032\"} 1",
            "lg_end_to_end_seconds_bucket{le=\"0.016\"} 0",
            "lg_score_cache_lookups_total{result=\"hit\"} 1",
            "lg_stage_seconds_total{stage=\"fetch\"} 1.5",
            "lg_consumer_lag{topic=\"listings.v1\",partition=\"2\"} 17",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn bucket_bounds_double() {
        assert_eq!(doubling(1.0, 4), [1.0, 2.0, 4.0, 8.0]);
        assert_eq!(end_to_end_bounds().len(), 18);
        assert!((end_to_end_bounds()[17] - 131.072).abs() < 1e-9);
    }
}
