//! The Kafka consumer, configured for at-least-once processing.
//!
//! Offsets are never stored automatically (`enable.auto.offset.store=false`): the pipeline
//! stores a partition's position through [`store_position`] only when the
//! [`OffsetTracker`](crate::offsets::OffsetTracker) says every record before it is done. The
//! background auto-commit then commits only those stored positions, and [`commit_positions`]
//! commits them synchronously at shutdown.

use std::collections::BTreeMap;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};

use crate::offsets::TopicPartition;

/// Client settings the pipeline's delivery guarantees depend on; user overrides of these keys are
/// refused.
pub const RESERVED_KEYS: &[&str] = &[
    "enable.auto.offset.store",
    "enable.auto.commit",
    "group.id",
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
    /// Topics to subscribe to.
    pub topics: Vec<String>,
    /// Extra librdkafka settings (already checked against [`RESERVED_KEYS`]).
    pub extra: BTreeMap<String, String>,
}

/// Builds and subscribes the consumer.
pub fn build_consumer(s: &ConsumerSettings) -> Result<StreamConsumer, KafkaError> {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", &s.brokers)
        .set("group.id", &s.group_id)
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .set("enable.partition.eof", "false");
    for (k, v) in &s.extra {
        cfg.set(k, v);
    }
    let consumer: StreamConsumer = cfg.create()?;
    let topics: Vec<&str> = s.topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    Ok(consumer)
}

/// Stores one partition's position (the next offset to consume) for the next commit.
pub fn store_position<C: Consumer>(consumer: &C, topic: &str, partition: i32, position: i64) -> Result<(), KafkaError> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(position))?;
    consumer.store_offsets(&tpl)
}

/// Commits the given positions synchronously (used at shutdown).
pub fn commit_positions<C: Consumer>(consumer: &C, positions: &[(TopicPartition, i64)]) -> Result<(), KafkaError> {
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
    fn reserved_keys_are_refused() {
        let mut m = BTreeMap::new();
        m.insert("fetch.min.bytes".to_owned(), "1".to_owned());
        assert!(check_extra(&m).is_ok());
        m.insert("enable.auto.offset.store".to_owned(), "true".to_owned());
        assert!(check_extra(&m).unwrap_err().contains("enable.auto.offset.store"));
    }
}
