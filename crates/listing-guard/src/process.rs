//! One input record to its outputs: validate, fetch, detect, evaluate policy, build the
//! decision and its labels, or a dead letter. No Kafka here: the caller produces the outcome.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use chrono::Utc;
use lg_events::trace::TraceParent;
use lg_events::{
    DeadLetter, ImageDecision, ImageFailure, LabelEvent, ListingEvent, ModerationDecision, Signals,
    SourceCoordinates, ValidationLimits, Versions, SCHEMA_VERSION,
};
use lg_ingest::fetch::ImageFetcher;
use lg_policy::{evaluate, ImageInput, Policy};
use tracing::Instrument;

use crate::cache::{CachedAnalysis, ScoreCache};
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
    /// Its trace context: the input's `traceparent` continued with this record's span, or a
    /// new trace; written into every output record's headers.
    pub trace: TraceParent,
    /// The input's own `traceparent`, when it carried a valid one.
    pub upstream: Option<TraceParent>,
}

impl InputRecord {
    /// A record received now, with the value of its `traceparent` header, if any.
    pub fn new(
        source: SourceCoordinates,
        key: Option<Vec<u8>>,
        payload: Option<Vec<u8>>,
        traceparent: Option<&str>,
    ) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let seed = format!(
            "{}/{}/{}/{nanos}",
            source.topic, source.partition, source.offset
        );
        Self {
            trace: TraceParent::for_record(traceparent, seed.as_bytes()),
            upstream: traceparent.and_then(TraceParent::parse),
            source,
            key,
            payload,
            received: Instant::now(),
        }
    }
}

/// What to produce for a record.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// A decision with its labels.
    Decided(Box<ModerationDecision>, Vec<LabelEvent>),
    /// A dead letter.
    Dead(Box<DeadLetter>),
}

/// Live traffic, or a re-audit run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Decisions for live traffic.
    Live,
    /// A re-audit: decisions carry the run id.
    Replay {
        /// The run.
        run_id: String,
        /// Reuse the content hash cached for an image URL instead of fetching it again.
        trust_cached_urls: bool,
    },
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
    /// Score cache, if configured.
    pub cache: Option<Arc<ScoreCache>>,
    /// The analysis version cached results must match (see [`ScoreCache`]).
    pub analysis_version: String,
    /// Live or re-audit.
    pub mode: Mode,
    /// Most payload bytes copied into a dead letter.
    pub dead_letter_payload_max: usize,
    /// Where labelled copies of labelled images go, if anywhere.
    pub assets: Option<Arc<crate::assets::AssetStore>>,
}

impl Processor {
    /// The component versions every decision carries.
    pub fn versions(&self) -> Versions {
        Versions {
            policy: self.policy.version().to_owned(),
            provenance_detector: self.detector.provenance_version().to_owned(),
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
                return Outcome::Dead(Box::new(self.dead_letter(rec, e.class(), e.to_string())));
            }
        };
        let (analysed, originals): (Vec<ImageOutcome>, Vec<Option<Bytes>>) =
            futures::future::join_all(event.images.iter().map(|img| self.analyse(&img.url)))
                .await
                .into_iter()
                .unzip();
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
        let t = Instant::now();
        let verdict = tracing::info_span!("policy")
            .in_scope(|| evaluate(&self.policy, &event.marketplace, &event.category, &inputs));
        crate::metrics::METRICS.stage("policy", t.elapsed());
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
        let (mode, run_id) = match &self.mode {
            Mode::Live => (lg_events::DecisionMode::Live, None),
            Mode::Replay { run_id, .. } => (lg_events::DecisionMode::Replay, Some(run_id.clone())),
        };
        let decision = ModerationDecision {
            schema_version: SCHEMA_VERSION,
            decision_id: lg_events::decision_id(payload, &versions),
            mode,
            run_id,
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
        let mut labels = lg_labeler::labels_for(&decision, &bases, self.policy.labels());
        if let Some(store) = self.assets.as_ref().filter(|_| !labels.is_empty()) {
            let t = Instant::now();
            labels = self
                .with_assets(store, labels, &decision.images, originals)
                .instrument(tracing::info_span!("label_assets"))
                .await;
            crate::metrics::METRICS.stage("label_assets", t.elapsed());
        }
        Outcome::Decided(Box::new(decision), labels)
    }

    /// A dead letter for `rec`, its payload bounded by `dead_letter_payload_max`.
    pub fn dead_letter(
        &self,
        rec: &InputRecord,
        class: lg_events::DeadLetterClass,
        message: String,
    ) -> DeadLetter {
        DeadLetter::bounded(
            class,
            message,
            rec.source.clone(),
            rec.key.as_deref(),
            rec.payload.as_deref().unwrap_or_default(),
            self.dead_letter_payload_max,
        )
    }

    /// Writes the labelled files of each label's image and records where in the label. The
    /// bytes the pipeline analysed are used; an image analysed from the score cache is fetched
    /// again, and used only if it still has the analysed content hash.
    async fn with_assets(
        &self,
        store: &crate::assets::AssetStore,
        labels: Vec<LabelEvent>,
        images: &[ImageDecision],
        originals: Vec<Option<Bytes>>,
    ) -> Vec<LabelEvent> {
        let work = labels.into_iter().map(|mut label| {
            let at = images.iter().position(|i| i.image_id == label.image_id);
            let kept = at.and_then(|i| originals[i].clone());
            async move {
                let original = match (kept, at) {
                    (Some(b), _) => Ok(b),
                    (None, Some(i)) => self.refetch(&images[i].url, &label.content_sha256).await,
                    (None, None) => Err("the label's image is not in the decision".to_owned()),
                };
                label.assets = Some(match original {
                    // A store that hangs (S3 down, retries) must not hold the partition.
                    Ok(b) => {
                        tokio::time::timeout(crate::assets::WRITE_TIMEOUT, store.write(&label, b))
                            .await
                            .unwrap_or_else(|_| {
                                crate::assets::failed(format!(
                                    "the store did not answer within {:?}",
                                    crate::assets::WRITE_TIMEOUT
                                ))
                            })
                    }
                    Err(e) => crate::assets::failed(e),
                });
                label
            }
        });
        futures::future::join_all(work).await
    }

    async fn refetch(&self, url: &str, sha256: &Option<String>) -> Result<Bytes, String> {
        let f = self
            .fetcher
            .fetch(url)
            .await
            .map_err(|e| format!("fetching the image again: {e}"))?;
        let got = lg_events::sha256_hex(&f.bytes);
        if sha256.as_deref() != Some(got.as_str()) {
            return Err(format!(
                "the image changed since it was analysed (sha256 {got})"
            ));
        }
        Ok(f.bytes)
    }

    /// Analyses one image; also returns its bytes when the asset store needs them.
    async fn analyse(&self, url: &str) -> (ImageOutcome, Option<Bytes>) {
        if let Some(hit) = self.cached_for_url(url) {
            return (hit.into(), None);
        }
        let fetch = tracing::info_span!("fetch");
        let t = Instant::now();
        let fetched = self.fetcher.fetch(url).instrument(fetch).await;
        crate::metrics::METRICS.stage("fetch", t.elapsed());
        let fetched = match fetched {
            Ok(f) => f,
            Err(e) => {
                let class = e.class();
                crate::metrics::METRICS.fetch_error(&class);
                let failure = ImageFailure {
                    class,
                    message: e.to_string(),
                };
                return (ImageOutcome::FetchFailed(failure), None);
            }
        };
        // Bytes is reference-counted: keeping a handle for the asset store copies nothing.
        let kept = self.assets.as_ref().map(|_| fetched.bytes.clone());
        // The cache's key; on a miss the detector takes it instead of hashing the bytes again.
        let mut sha256 = None;
        if self.cache.is_some() {
            let key = lg_events::sha256_hex(&fetched.bytes);
            if let Some(hit) = self.cached(&key) {
                self.remember_url(url, &key);
                return (hit.into(), kept);
            }
            sha256 = Some(key);
        }
        // Decode and detect run together in the batching detector service.
        let detect = tracing::info_span!("decode_detect", bytes = fetched.bytes.len());
        let Some(a) = self
            .detector
            .analyse(fetched.bytes, sha256)
            .instrument(detect)
            .await
        else {
            let failure = ImageFailure {
                class: "detector_unavailable".into(),
                message: "detector service stopped".into(),
            };
            return (ImageOutcome::FetchFailed(failure), None);
        };
        let analysis = CachedAnalysis {
            dims: a.decoded.as_ref().ok().map(|i| [i.width, i.height]),
            failure: a.decoded.as_ref().err().map(|e| e.to_failure()),
            sha256: a.sha256,
            signals: Signals {
                provenance: a.provenance,
                model: a.model,
            },
        };
        if let Some(cache) = &self.cache {
            if let Err(e) = cache.put_analysis(&self.analysis_version, &analysis) {
                tracing::warn!(error = %e, "score cache write failed");
            }
            self.remember_url(url, &analysis.sha256);
        }
        (analysis.into(), kept)
    }

    /// A re-audit that trusts cached URLs: the cached analysis of what `url` served last.
    fn cached_for_url(&self, url: &str) -> Option<CachedAnalysis> {
        let Mode::Replay {
            trust_cached_urls: true,
            ..
        } = self.mode
        else {
            return None;
        };
        let sha = self.cache.as_ref()?.url_content(url).ok().flatten()?;
        self.cached(&sha)
    }

    fn cached(&self, sha256: &str) -> Option<CachedAnalysis> {
        match self
            .cache
            .as_ref()?
            .analysis(&self.analysis_version, sha256)
        {
            Ok(hit) => {
                crate::metrics::METRICS.cache_lookup(hit.is_some());
                hit
            }
            Err(e) => {
                tracing::warn!(error = %e, "score cache read failed; analysing");
                None
            }
        }
    }

    fn remember_url(&self, url: &str, sha256: &str) {
        if let Some(Err(e)) = self.cache.as_ref().map(|c| c.put_url_content(url, sha256)) {
            tracing::warn!(error = %e, "score cache write failed");
        }
    }
}

impl From<CachedAnalysis> for ImageOutcome {
    fn from(a: CachedAnalysis) -> Self {
        match (a.dims, a.failure) {
            (Some(dims), None) => ImageOutcome::Analysed {
                sha256: a.sha256,
                dims,
                signals: a.signals,
            },
            (_, failure) => ImageOutcome::DecodeFailed {
                sha256: a.sha256,
                failure: failure.unwrap_or_else(|| ImageFailure {
                    class: "decode_error".into(),
                    message: "no dimensions recorded".into(),
                }),
                signals: a.signals,
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
