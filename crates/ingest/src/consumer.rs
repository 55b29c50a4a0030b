//! The Kafka consumer, configured for at-least-once processing.
//!
//! Offsets are never stored automatically (`enable.auto.offset.store=false`): the pipeline
//! stores a partition's position through [`store_position`] only when the
//! [`OffsetTracker`](crate::offsets::OffsetTracker) says every record before it is done. The
//! background auto-commit then commits only those stored positions, and [`commit_positions`]
//! commits them synchronously at shutdown.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::{Offset, TopicPartitionList};

use crate::offsets::TopicPartition;

/// Client settings the pipeline's delivery guarantees depend on; user overrides of these keys are
/// refused.
pub const RESERVED_KEYS: &[&str] = &[
    "enable.auto.offset.store",
    "enable.auto.commit",
    "group.id",
    "group.instance.id",
    "bootstrap.servers",
    "isolation.level",
    "enable.partition.eof",
];

/// Consumer settings.
#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    /// Bootstrap servers.
    pub brokers: String,
    /// Consumer group.
    pub group_id: String,
    /// Static membership id (`group.instance.id`); `None` for dynamic membership.
    pub instance_id: Option<String>,
    /// Topics to subscribe to.
    pub topics: Vec<String>,
    /// Extra librdkafka settings (already checked against [`RESERVED_KEYS`]).
    pub extra: BTreeMap<String, String>,
}

/// What a revocation calls with the revoked partitions (see [`GuardContext::on_revoke`]).
pub type RevokeHook = Arc<dyn Fn(&[TopicPartition]) + Send + Sync>;

/// Consumer context: routes librdkafka's logs and rebalance events to `tracing`, keeps the
/// consumer lag per partition from librdkafka's periodic statistics, and tells its owner which
/// partitions a rebalance revokes.
#[derive(Default, Clone)]
pub struct GuardContext {
    lags: Arc<Mutex<BTreeMap<TopicPartition, i64>>>,
    on_revoke: Arc<std::sync::OnceLock<RevokeHook>>,
}

impl std::fmt::Debug for GuardContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardContext")
            .field("lags", &self.lags)
            .field("on_revoke", &self.on_revoke.get().is_some())
            .finish()
    }
}

impl GuardContext {
    /// Sets what a revocation calls, before the partitions go (in the consumer's poll, so it
    /// must be quick and must not wait on the consumer). Only the first hook set is kept;
    /// returns whether this one was.
    pub fn on_revoke(&self, hook: RevokeHook) -> bool {
        self.on_revoke.set(hook).is_ok()
    }

    /// The consumer lag of each assigned partition, as of the latest statistics (every
    /// `statistics.interval.ms`, 2 s here).
    pub fn lags(&self) -> Vec<(TopicPartition, i64)> {
        let l = self.lags.lock().expect("lags lock");
        l.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }
}

impl ClientContext for GuardContext {
    fn stats(&self, statistics: rdkafka::Statistics) {
        let mut lags = BTreeMap::new();
        for (topic, t) in &statistics.topics {
            for (partition, p) in &t.partitions {
                // -1 is librdkafka's internal unassigned partition; a lag of -1 is unknown.
                if *partition >= 0 && p.consumer_lag >= 0 {
                    lags.insert((topic.clone(), *partition), p.consumer_lag);
                }
            }
        }
        *self.lags.lock().expect("lags lock") = lags;
    }

    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", fac, "{log_message}")
            }
            RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", fac, "{log_message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", fac, "{log_message}")
            }
            RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", fac, "{log_message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(target: "librdkafka", %error, "{reason}");
    }
}

impl ConsumerContext for GuardContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        tracing::info!(?rebalance, "rebalance starting");
        if let (Rebalance::Revoke(list), Some(hook)) = (rebalance, self.on_revoke.get()) {
            let parts: Vec<TopicPartition> = list
                .elements()
                .iter()
                .map(|e| (e.topic().to_owned(), e.partition()))
                .collect();
            hook(&parts);
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        tracing::info!(?rebalance, "rebalance done");
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        match result {
            Ok(()) => tracing::debug!(?offsets, "offsets committed"),
            Err(e) => tracing::warn!(error = %e, "offset commit failed"),
        }
    }
}

/// The pipeline's consumer type.
pub type GuardConsumer = StreamConsumer<GuardContext>;

/// Builds and subscribes the consumer.
pub fn build_consumer(s: &ConsumerSettings) -> Result<GuardConsumer, KafkaError> {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", &s.brokers)
        .set("group.id", &s.group_id)
        .set("enable.auto.commit", "true")
        // Stored positions are committed this often: after a crash, at most this much finished
        // work is redone (measured: 1000 ms gave 58% duplicates in the SIGKILL storm test).
        .set("auto.commit.interval.ms", "250")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        // Kafka's default. A restarted static member must heartbeat within it of its
        // predecessor's last heartbeat: on tansu 0.6.0 the rejoin does not renew the member's
        // last contact and its JoinGroup and SyncGroup are each held 3 s, so with 10 s the
        // member was expired at its first heartbeat after a SIGKILL (measured: 11.5 s after
        // the last one), and the broker then never assigned the group again.
        .set("session.timeout.ms", "45000")
        .set("enable.partition.eof", "false")
        .set("statistics.interval.ms", "2000");
    if let Some(id) = &s.instance_id {
        cfg.set("group.instance.id", id);
    }
    for (k, v) in &s.extra {
        cfg.set(k, v);
    }
    let consumer: GuardConsumer = cfg.create_with_context(GuardContext::default())?;
    let topics: Vec<&str> = s.topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    Ok(consumer)
}

/// The partition ids of `topic` as the broker reports them; empty when it reports none.
pub fn partitions<X: ConsumerContext, C: Consumer<X>>(
    consumer: &C,
    topic: &str,
    timeout: std::time::Duration,
) -> Result<Vec<i32>, KafkaError> {
    let md = consumer.fetch_metadata(Some(topic), timeout)?;
    Ok(md
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect())
}

/// Stores one partition's position (the next offset to consume) for the next commit.
pub fn store_position<X: ConsumerContext, C: Consumer<X>>(
    consumer: &C,
    topic: &str,
    partition: i32,
    position: i64,
) -> Result<(), KafkaError> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(position))?;
    consumer.store_offsets(&tpl)
}

/// Commits the given positions synchronously (used at shutdown).
pub fn commit_positions<X: ConsumerContext, C: Consumer<X>>(
    consumer: &C,
    positions: &[(TopicPartition, i64)],
) -> Result<(), KafkaError> {
    if positions.is_empty() {
        return Ok(());
    }
    let mut tpl = TopicPartitionList::new();
    for ((topic, partition), pos) in positions {
        tpl.add_partition_offset(topic, *partition, Offset::Offset(*pos))?;
    }
    consumer.commit(&tpl, CommitMode::Sync)
}

/// Checks user-supplied librdkafka settings against the reserved keys.
pub fn check_extra(extra: &BTreeMap<String, String>) -> Result<(), String> {
    match extra.keys().find(|k| RESERVED_KEYS.contains(&k.as_str())) {
        Some(k) => Err(format!(
            "librdkafka option `{k}` is managed by the pipeline (its delivery guarantees depend on it) and cannot be overridden"
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revocation_tells_the_hook_which_partitions_go() {
        let ctx = GuardContext::default();
        let seen: Arc<Mutex<Vec<TopicPartition>>> = Arc::default();
        let sink = Arc::clone(&seen);
        assert!(ctx.on_revoke(Arc::new(move |parts| {
            sink.lock().unwrap().extend_from_slice(parts)
        })));
        assert!(
            !ctx.on_revoke(Arc::new(|_| {})),
            "only the first hook is kept"
        );
        // A consumer is needed for the callback's signature; it never connects.
        let consumer: BaseConsumer<GuardContext> = ClientConfig::new()
            .set("bootstrap.servers", "127.0.0.1:1")
            .set("group.id", "revoke-test")
            .create_with_context(ctx.clone())
            .expect("consumer builds offline");
        let mut list = TopicPartitionList::new();
        list.add_partition("listings", 3);
        list.add_partition("listings", 5);
        ctx.pre_rebalance(&consumer, &Rebalance::Assign(&list));
        assert!(
            seen.lock().unwrap().is_empty(),
            "an assignment revokes nothing"
        );
        ctx.pre_rebalance(&consumer, &Rebalance::Revoke(&list));
        assert_eq!(
            *seen.lock().unwrap(),
            vec![("listings".to_owned(), 3), ("listings".to_owned(), 5)]
        );
    }

    #[tokio::test]
    async fn tls_and_sasl_settings_pass_through() {
        // librdkafka refuses SASL_SSL at client creation when built without TLS; this build has
        // it, and SCRAM needs nothing else.
        let extra: BTreeMap<String, String> = [
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanisms", "SCRAM-SHA-512"),
            ("sasl.username", "svc-listing-guard"),
            ("sasl.password", "not-a-real-secret"),
            ("ssl.endpoint.identification.algorithm", "https"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let settings = ConsumerSettings {
            brokers: "127.0.0.1:1".into(),
            group_id: "g".into(),
            instance_id: None,
            topics: vec!["t".into()],
            extra,
        };
        let made = build_consumer(&settings);
        assert!(made.is_ok(), "{:?}", made.err());
    }

    #[test]
    fn reserved_keys_are_refused() {
        let mut m = BTreeMap::new();
        m.insert("fetch.min.bytes".to_owned(), "1".to_owned());
        assert!(check_extra(&m).is_ok());
        m.insert("enable.auto.offset.store".to_owned(), "true".to_owned());
        assert!(check_extra(&m)
            .unwrap_err()
            .contains("enable.auto.offset.store"));
    }
}
