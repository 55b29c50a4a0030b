//! One input record to its outputs: validate, fetch, detect, evaluate policy, build the
//! decision and its labels, or a dead letter. No Kafka here: the caller produces the outcome.

use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use lg_events::{
    DeadLetter, ImageDecision, ImageFailure, LabelEvent, ListingEvent, ModerationDecision, Signals,
    SourceCoordinates, ValidationLimits, Versions, SCHEMA_VERSION,
};
use lg_ingest::fetch::ImageFetcher;
use lg_policy::{evaluate, ImageInput, Policy};

use crate::detect_service::DetectorHandle;

/// A record as received.
#[derive(Debug, Clone)]
pub struct InputRecord {
    /// Where it came from.
    pub source: SourceCoordinates,
    /// Its key.
    pub key: Option<Vec<u8>>,
    /// Its payload.
    pub payload: Option<Vec<u8>>,
    /// When the pipeline received it.
    pub received: Instant,
}

/// What to produce for a record.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// A decision with its labels.
    Decided(Box<ModerationDecision>, Vec<LabelEvent>),
    /// A dead letter.
    Dead(Box<DeadLetter>),
}

/// Everything needed to process records; cheap to clone.
#[derive(Clone, Debug)]
pub struct Processor {
    /// Fetcher.
    pub fetcher: ImageFetcher,
    /// Detector service.
    pub detector: DetectorHandle,
    /// Policy.
    pub policy: Arc<Policy>,
    /// Validation limits.
    pub limits: ValidationLimits,
}

impl Processor {
    /// The component versions every decision carries.
    pub fn versions(&self) -> Versions {
        Versions {
            policy: self.policy.version().to_owned(),
            provenance_detector: lg_detector::PROVENANCE_VERSION.to_owned(),
            model: self.detector.model_version().map(str::to_owned),
            pipeline: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }

    /// Processes one record.
    pub async fn process(&self, rec: &InputRecord) -> Outcome {
        let event = match ListingEvent::parse(rec.payload.as_deref(), &self.limits) {
            Ok(e) => e,
            Err(e) => {
                tracing::info!(topic = %rec.source.topic, partition = rec.source.partition, offset = rec.source.offset, class = e.class().as_str(), error = %e, "dead letter");
                return Outcome::Dead(Box::new(DeadLetter::new(
                    e.class(),
                    e.to_string(),
                    rec.source.clone(),
                    rec.key.as_deref(),
                    rec.payload.as_deref().unwrap_or_default(),
                )));
            }
        };
        let analysed =
            futures::future::join_all(event.images.iter().map(|img| self.analyse(&img.url))).await;
        let inputs: Vec<ImageInput<'_>> = event
            .images
            .iter()
            .zip(&analysed)
            .map(|(img, a)| match a {
                ImageOutcome::FetchFailed(f) => ImageInput::FetchFailed(f),
                ImageOutcome::DecodeFailed { failure, .. } => ImageInput::DecodeFailed(failure),
                ImageOutcome::Analysed { signals, .. } => ImageInput::Analysed {
                    role: img.role,
                    signals,
                },
            })
            .collect();
        let verdict = evaluate(&self.policy, &event.marketplace, &event.category, &inputs);
        let images: Vec<ImageDecision> = event
            .images
            .iter()
            .zip(analysed)
            .zip(&verdict.images)
            .map(|((img, a), v)| {
                let (sha, dims, failure, signals) = match a {
                    ImageOutcome::FetchFailed(f) => (None, None, Some(f), Signals::default()),
                    ImageOutcome::DecodeFailed {
                        sha256,
                        failure,
                        signals,
                    } => (Some(sha256), None, Some(failure), signals),
                    ImageOutcome::Analysed {
                        sha256,
                        dims,
                        signals,
                    } => (Some(sha256), Some(dims), None, signals),
                };
                ImageDecision {
                    image_id: img.image_id.clone(),
                    url: img.url.clone(),
                    role: img.role,
                    content_sha256: sha,
                    dimensions: dims,
                    failure,
                    signals,
                    action: v.action,
                    reasons: v.reasons.clone(),
                }
            })
            .collect();
        let versions = self.versions();
        let payload = rec.payload.as_deref().unwrap_or_default();
        let decision = ModerationDecision {
            schema_version: SCHEMA_VERSION,
            decision_id: lg_events::decision_id(payload, &versions),
            mode: lg_events::DecisionMode::Live,
            run_id: None,
            event_id: event.event_id,
            event_type: event.event_type,
            listing_id: event.listing_id,
            merchant_id: event.merchant_id,
            marketplace: event.marketplace,
            category: event.category,
            action: verdict.action,
            reasons: verdict.reasons,
            images,
            versions,
            source: rec.source.clone(),
            occurred_at: event.occurred_at,
            decided_at: Utc::now(),
            processing_latency_ms: rec.received.elapsed().as_millis() as u64,
        };
        let bases: Vec<_> = verdict.images.iter().map(|v| v.label).collect();
        let labels = lg_labeler::labels_for(&decision, &bases, self.policy.labels());
        Outcome::Decided(Box::new(decision), labels)
    }

    async fn analyse(&self, url: &str) -> ImageOutcome {
        let fetched = match self.fetcher.fetch(url).await {
            Ok(f) => f,
            Err(e) => {
                return ImageOutcome::FetchFailed(ImageFailure {
                    class: e.class(),
                    message: e.to_string(),
                })
            }
        };
        let Some(a) = self.detector.analyse(fetched.bytes).await else {
            let failure = ImageFailure {
                class: "detector_unavailable".into(),
                message: "detector service stopped".into(),
            };
            return ImageOutcome::FetchFailed(failure);
        };
        let signals = Signals {
            provenance: a.provenance,
            model: a.model,
        };
        match a.decoded {
            Ok(info) => ImageOutcome::Analysed {
                sha256: a.sha256,
                dims: [info.width, info.height],
                signals,
            },
            Err(e) => ImageOutcome::DecodeFailed {
                sha256: a.sha256,
                failure: e.to_failure(),
                signals,
            },
        }
    }
}

enum ImageOutcome {
    FetchFailed(ImageFailure),
    DecodeFailed {
        sha256: String,
        failure: ImageFailure,
        signals: Signals,
    },
    Analysed {
        sha256: String,
        dims: [u32; 2],
        signals: Signals,
    },
}
