//! Listing Guard output edge.
//!
//! - [`labels_for`] (pure) turns a decision and the policy's per-image verdicts into GB 45438
//!   label events.
//! - [`Outputs`] produces decisions, labels and dead letters, and resolves only when the broker
//!   has acknowledged every record (idempotent producer, `acks=all`). A failed delivery is
//!   retried with backoff until it succeeds or shutdown is requested, unless the broker refused
//!   the record itself ([`OutputError::Rejected`], e.g. too large), which no retry fixes. The
//!   caller stores the input offset only after success or after routing a refused record to the
//!   dead-letter topic, so a record is never acknowledged without an output.

pub mod stamp;
pub mod visible;

use std::collections::BTreeMap;
use std::time::Duration;

use lg_events::trace::{self, TraceParent};
use lg_events::{
    headers, DeadLetter, LabelBasis, LabelEvent, ModerationDecision, Tc260Aigc, VisibleLabel,
    SCHEMA_VERSION, VISIBLE_LABEL_EN, VISIBLE_LABEL_ZH,
};
use lg_policy::LabelSettings;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use tokio::sync::watch;

/// Output topic names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputTopics {
    /// Decisions.
    pub decisions: String,
    /// Label events.
    pub labels: String,
    /// Dead letters.
    pub dlq: String,
}

impl Default for OutputTopics {
    fn default() -> Self {
        Self {
            decisions: "moderation.decisions.v1".into(),
            labels: "moderation.labels.v1".into(),
            dlq: "moderation.dlq.v1".into(),
        }
    }
}

/// Errors producing outputs.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The broker refused or did not acknowledge in time, and shutdown was requested before a
    /// retry succeeded. The input must not be acknowledged.
    #[error("delivery to {topic} failed and shutdown was requested: {source}")]
    Abandoned {
        /// Topic.
        topic: String,
        /// Last error.
        source: KafkaError,
    },
    /// The broker (or the client, before sending) refused the record for good, e.g. because it
    /// is over the message size limit. Retrying cannot help; the caller routes the input
    /// elsewhere (see [`is_permanent`]).
    #[error("{topic} refused the record: {source}")]
    Rejected {
        /// Topic.
        topic: String,
        /// The refusal.
        source: KafkaError,
    },
    /// Client configuration error.
    #[error("producer configuration: {0}")]
    Config(#[from] KafkaError),
}

/// Whether a produce error is a refusal of the record itself (too large, invalid), which no
/// retry can fix. Anything else is retried: timeouts, broker down, leader changes, an unknown
/// topic while it is being created, and deployment mistakes such as a missing ACL, which must
/// stall the pipeline (and alert) rather than send every record to the dead-letter topic.
pub fn is_permanent(e: &KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as C;
    matches!(
        e.rdkafka_error_code(),
        Some(C::MessageSizeTooLarge | C::InvalidMessageSize | C::InvalidRecord)
    )
}

/// Builds the label events for a decision: one per image whose verdict carries a label basis.
pub fn labels_for(
    decision: &ModerationDecision,
    bases: &[Option<LabelBasis>],
    settings: &LabelSettings,
) -> Vec<LabelEvent> {
    decision
        .images
        .iter()
        .zip(bases)
        .filter_map(|(img, basis)| {
            let basis = (*basis)?;
            // What the producer declared, kept (its label value too, when it is one the
            // standard defines); the propagator fields are ours.
            let declared = img
                .signals
                .provenance
                .markers
                .iter()
                .find(|m| m.kind == lg_events::MarkerKind::Tc260Aigc && m.aigc_label.is_some());
            let content_producer = declared
                .and_then(|m| m.generator.clone())
                .unwrap_or_default();
            let producer_label = declared
                .and_then(|m| m.aigc_label.as_deref())
                .filter(|l| matches!(*l, "1" | "2" | "3"));
            let implicit_label = Tc260Aigc {
                label: match (basis, producer_label) {
                    (LabelBasis::DeclaredInMetadata, Some(l)) => l.to_owned(),
                    (LabelBasis::DeclaredInMetadata, None) => "1".into(),
                    // Detected, not declared: "suspected" in the standard's terms.
                    (LabelBasis::Detected, _) => "3".into(),
                },
                content_producer,
                produce_id: String::new(),
                reserved_code1: String::new(),
                content_propagator: settings.content_propagator.clone(),
                propagate_id: format!("{}/{}", decision.listing_id, img.image_id),
                reserved_code2: img.content_sha256.clone().unwrap_or_default(),
            };
            let visible_label = visible_label_for(&settings.locale);
            Some(LabelEvent {
                schema_version: SCHEMA_VERSION,
                label_id: lg_events::label_id(&decision.decision_id, &img.image_id),
                decision_id: decision.decision_id.clone(),
                event_id: decision.event_id.clone(),
                listing_id: decision.listing_id.clone(),
                marketplace: decision.marketplace.clone(),
                image_id: img.image_id.clone(),
                content_sha256: img.content_sha256.clone(),
                visible_label,
                basis,
                implicit_label,
                policy_version: decision.versions.policy.clone(),
                assets: None,
            })
        })
        .collect()
}

/// The visible-label texts a policy locale asks for: `zh` (AI生成), `en` (AI-generated), or
/// both (`zh+en`, and anything else).
pub fn visible_label_for(locale: &str) -> VisibleLabel {
    match locale {
        "zh" => VisibleLabel {
            zh: VISIBLE_LABEL_ZH.into(),
            en: String::new(),
        },
        "en" => VisibleLabel {
            zh: String::new(),
            en: VISIBLE_LABEL_EN.into(),
        },
        _ => VisibleLabel::default(),
    }
}

/// The producer for all outputs.
#[derive(Clone)]
pub struct Outputs {
    producer: FutureProducer,
    topics: OutputTopics,
    shutdown: watch::Receiver<bool>,
    retry_backoff_max: Duration,
}

impl std::fmt::Debug for Outputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outputs")
            .field("topics", &self.topics)
            .finish_non_exhaustive()
    }
}

/// One record to produce.
struct Out<'a> {
    topic: &'a str,
    key: Option<&'a [u8]>,
    payload: Vec<u8>,
    headers: Vec<(&'static str, String)>,
}

impl Outputs {
    /// Builds the producer. `shutdown` turning true stops delivery retries.
    pub fn new(
        brokers: &str,
        topics: OutputTopics,
        extra: &BTreeMap<String, String>,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Self, OutputError> {
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("message.timeout.ms", "30000")
            .set("compression.type", "lz4");
        for (k, v) in extra {
            cfg.set(k, v);
        }
        let producer: FutureProducer = cfg.create()?;
        Ok(Self {
            producer,
            topics,
            shutdown,
            retry_backoff_max: Duration::from_secs(5),
        })
    }

    /// The topics written to.
    pub fn topics(&self) -> &OutputTopics {
        &self.topics
    }

    /// Produces a decision and its labels; resolves when all are acknowledged.
    pub async fn emit_decision(
        &self,
        decision: &ModerationDecision,
        labels: &[LabelEvent],
        trace: Option<&TraceParent>,
    ) -> Result<(), OutputError> {
        let trace = trace.map(|t| (trace::HEADER, t.to_string()));
        let key = decision.listing_id.as_bytes();
        let mut records = Vec::with_capacity(1 + labels.len());
        records.push(Out {
            topic: &self.topics.decisions,
            key: Some(key),
            payload: serde_json::to_vec(decision).expect("decisions serialise"),
            headers: [
                (headers::SCHEMA_VERSION, SCHEMA_VERSION.to_string()),
                (headers::DECISION_ID, decision.decision_id.clone()),
            ]
            .into_iter()
            .chain(trace.clone())
            .collect(),
        });
        for l in labels {
            records.push(Out {
                topic: &self.topics.labels,
                key: Some(key),
                payload: serde_json::to_vec(l).expect("labels serialise"),
                headers: [
                    (headers::SCHEMA_VERSION, SCHEMA_VERSION.to_string()),
                    (headers::DECISION_ID, decision.decision_id.clone()),
                ]
                .into_iter()
                .chain(trace.clone())
                .collect(),
            });
        }
        // The decision first: if it is refused, no label of it is out either. Labels follow it
        // together.
        let (decision, labels) = records.split_first().expect("the decision is first");
        self.deliver(decision).await?;
        let results = futures::future::join_all(labels.iter().map(|r| self.deliver(r))).await;
        results.into_iter().collect()
    }

    /// Produces a dead letter, keyed like the original; resolves when acknowledged.
    pub async fn emit_dead_letter(
        &self,
        dl: &DeadLetter,
        key: Option<&[u8]>,
        trace: Option<&TraceParent>,
    ) -> Result<(), OutputError> {
        let rec = Out {
            topic: &self.topics.dlq,
            key,
            payload: serde_json::to_vec(dl).expect("dead letters serialise"),
            headers: vec![
                (headers::SCHEMA_VERSION, SCHEMA_VERSION.to_string()),
                (headers::ERROR_CLASS, dl.error_class.as_str().to_owned()),
                (headers::ERROR_MESSAGE, dl.error_message.clone()),
                (headers::SOURCE_TOPIC, dl.source.topic.clone()),
                (headers::SOURCE_PARTITION, dl.source.partition.to_string()),
                (headers::SOURCE_OFFSET, dl.source.offset.to_string()),
            ]
            .into_iter()
            .chain(trace.map(|t| (trace::HEADER, t.to_string())))
            .collect(),
        };
        self.deliver(&rec).await
    }

    /// Waits for everything queued to be delivered (at shutdown).
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer.flush(timeout)
    }

    async fn deliver(&self, r: &Out<'_>) -> Result<(), OutputError> {
        let mut backoff = Duration::from_millis(100);
        loop {
            let mut hdrs = OwnedHeaders::new_with_capacity(r.headers.len());
            for (k, v) in &r.headers {
                hdrs = hdrs.insert(Header {
                    key: k,
                    value: Some(v.as_bytes()),
                });
            }
            let mut rec = FutureRecord::<[u8], [u8]>::to(r.topic)
                .payload(&r.payload)
                .headers(hdrs);
            if let Some(k) = r.key {
                rec = rec.key(k);
            }
            let err = match self.producer.send(rec, Duration::from_secs(5)).await {
                Ok(_) => return Ok(()),
                Err((e, _)) => e,
            };
            if is_permanent(&err) {
                return Err(OutputError::Rejected {
                    topic: r.topic.to_owned(),
                    source: err,
                });
            }
            if *self.shutdown.borrow() {
                return Err(OutputError::Abandoned {
                    topic: r.topic.to_owned(),
                    source: err,
                });
            }
            tracing::warn!(topic = r.topic, error = %err, ?backoff, "delivery failed; retrying");
            let mut sd = self.shutdown.clone();
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = sd.wait_for(|v| *v) => {}
            }
            backoff = (backoff * 2).min(self.retry_backoff_max);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lg_events::*;

    #[test]
    fn only_refusals_of_the_record_are_permanent() {
        use rdkafka::types::RDKafkaErrorCode as C;
        let produce = KafkaError::MessageProduction;
        assert!(is_permanent(&produce(C::MessageSizeTooLarge)));
        assert!(is_permanent(&produce(C::InvalidRecord)));
        assert!(!is_permanent(&produce(C::TopicAuthorizationFailed)));
        assert!(!is_permanent(&produce(C::InvalidMessage)));
        assert!(!is_permanent(&produce(C::MessageTimedOut)));
        assert!(!is_permanent(&produce(C::NotLeaderForPartition)));
        assert!(!is_permanent(&produce(C::UnknownTopicOrPartition)));
        assert!(!is_permanent(&produce(C::BrokerTransportFailure)));
    }

    fn decision(images: Vec<ImageDecision>) -> ModerationDecision {
        ModerationDecision {
            schema_version: 1,
            decision_id: "dec_1".into(),
            mode: DecisionMode::Live,
            run_id: None,
            event_id: "e1".into(),
            event_type: ListingEventType::Created,
            listing_id: "l1".into(),
            merchant_id: "m1".into(),
            marketplace: "taobao".into(),
            category: "apparel".into(),
            action: Action::Label,
            reasons: vec![],
            images,
            versions: Versions {
                policy: "p@1".into(),
                provenance_detector: "d".into(),
                model: None,
                pipeline: "0".into(),
            },
            source: SourceCoordinates {
                topic: "t".into(),
                partition: 0,
                offset: 1,
            },
            occurred_at: chrono::DateTime::UNIX_EPOCH,
            decided_at: chrono::DateTime::UNIX_EPOCH,
            processing_latency_ms: 1,
        }
    }

    fn image(id: &str, markers: Vec<Marker>) -> ImageDecision {
        ImageDecision {
            image_id: id.into(),
            url: "http://x".into(),
            role: ImageRole::Main,
            content_sha256: Some("abc".into()),
            dimensions: None,
            failure: None,
            signals: Signals {
                provenance: Provenance {
                    declared_ai: !markers.is_empty(),
                    markers,
                },
                model: None,
            },
            action: Action::Label,
            reasons: vec![],
        }
    }

    #[test]
    fn one_label_per_labelled_image_with_producer_kept() {
        let aigc = Marker {
            aigc_label: Some("2".into()),
            ..Marker::new(
                MarkerKind::Tc260Aigc,
                true,
                Some("producer-42".into()),
                String::new(),
            )
        };
        let d = decision(vec![
            image("a", vec![aigc]),
            image("b", vec![]),
            image("c", vec![]),
        ]);
        let settings = LabelSettings {
            content_propagator: "mkt".into(),
            locale: "zh+en".into(),
        };
        let labels = labels_for(
            &d,
            &[
                Some(LabelBasis::DeclaredInMetadata),
                None,
                Some(LabelBasis::Detected),
            ],
            &settings,
        );
        assert_eq!(labels.len(), 2);
        assert_eq!(labels[0].image_id, "a");
        assert_eq!(labels[0].implicit_label.content_producer, "producer-42");
        assert_eq!(
            labels[0].implicit_label.label, "2",
            "the producer's own label value is kept"
        );
        assert_eq!(labels[0].implicit_label.content_propagator, "mkt");
        assert_eq!(labels[0].implicit_label.propagate_id, "l1/a");
        assert_eq!(labels[0].visible_label.zh, "AI生成");
        assert_eq!(labels[1].image_id, "c");
        assert_eq!(labels[1].implicit_label.label, "3");
        assert_eq!(labels[1].basis, LabelBasis::Detected);
        assert_ne!(labels[0].label_id, labels[1].label_id);
    }
}
