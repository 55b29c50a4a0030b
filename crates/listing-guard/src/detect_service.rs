//! The detector as a batching service off the async runtime.
//!
//! Callers send image bytes over a bounded channel (a full channel slows them down). One task
//! forms batches, flushing on `batch_size` or after `linger`, and runs each batch on a blocking
//! thread; at most `workers` batches run at once. When every handle is dropped the channel
//! closes, the tail batch is flushed and the service ends.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use lg_detector::{Analysis, Detector, Image};
use tokio::sync::{mpsc, oneshot, Semaphore};

struct Job {
    bytes: Bytes,
    /// The bytes' SHA-256 where the caller has it.
    sha256: Option<String>,
    reply: oneshot::Sender<Analysis>,
}

/// A handle to send images to the detector.
#[derive(Clone, Debug)]
pub struct DetectorHandle {
    tx: mpsc::Sender<Job>,
    model_version: Option<String>,
    provenance_version: String,
}

impl DetectorHandle {
    /// Starts the service on the current runtime.
    pub fn spawn(detector: Detector, batch_size: usize, linger: Duration, workers: usize) -> Self {
        let (tx, rx) = mpsc::channel(batch_size * workers * 2);
        let model_version = detector.model_version().map(str::to_owned);
        let provenance_version = detector.provenance_version();
        tokio::spawn(run(
            Arc::new(detector),
            rx,
            batch_size.max(1),
            linger,
            workers.max(1),
        ));
        Self {
            tx,
            model_version,
            provenance_version,
        }
    }

    /// The provenance reader's version (with its C2PA trust list).
    pub fn provenance_version(&self) -> &str {
        &self.provenance_version
    }

    /// The pixel model's version, if any.
    pub fn model_version(&self) -> Option<&str> {
        self.model_version.as_deref()
    }

    /// Analyses one image; `sha256`: its bytes' hash if the caller has already computed it.
    pub async fn analyse(&self, bytes: Bytes, sha256: Option<String>) -> Option<Analysis> {
        let (reply, rx) = oneshot::channel();
        let job = Job {
            bytes,
            sha256,
            reply,
        };
        self.tx.send(job).await.ok()?;
        rx.await.ok()
    }
}

async fn run(
    detector: Arc<Detector>,
    mut rx: mpsc::Receiver<Job>,
    batch_size: usize,
    linger: Duration,
    workers: usize,
) {
    let slots = Arc::new(Semaphore::new(workers));
    // The model's cumulative stage times, as last turned into metrics.
    let seen = Arc::new(std::sync::Mutex::new((0u64, 0u64)));
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + linger;
        while batch.len() < batch_size {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(job)) => batch.push(job),
                Ok(None) | Err(_) => break,
            }
        }
        let permit = Arc::clone(&slots)
            .acquire_owned()
            .await
            .expect("semaphore is never closed");
        let det = Arc::clone(&detector);
        let seen = Arc::clone(&seen);
        tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let inputs: Vec<Image<'_>> = batch
                .iter()
                .map(|j| Image {
                    bytes: &j.bytes,
                    sha256: j.sha256.as_deref(),
                })
                .collect();
            let (results, decode) = det.analyse_batch_timed(&inputs);
            let m = &crate::metrics::METRICS;
            m.stage("decode", decode);
            let (crop, infer) = det.model_stage_nanos();
            let (d_crop, d_infer) = {
                let mut last = seen.lock().expect("stage lock");
                let d = (crop.saturating_sub(last.0), infer.saturating_sub(last.1));
                *last = (last.0.max(crop), last.1.max(infer));
                d
            };
            m.stage("crop", Duration::from_nanos(d_crop));
            m.stage("inference", Duration::from_nanos(d_infer));
            m.detector_batch(inputs.len(), started.elapsed());
            for (job, analysis) in batch.into_iter().zip(results) {
                let _ = job.reply.send(analysis); // the caller may have gone at shutdown
            }
            drop(permit);
        });
    }
}
