//! The live pipeline: consume, process concurrently, produce, store offsets in order.
//!
//! Delivery is at least once:
//! 1. A record is registered with the [`OffsetTracker`] when received.
//! 2. It is processed (at most `max_in_flight` at once: a semaphore permit is taken before the
//!    next `recv`, so a slow stage stops consumption instead of queueing without bound).
//! 3. Its outputs (decision + labels, or a dead letter) are produced and acknowledged by the
//!    broker.
//! 4. Only then is it completed in the tracker, which stores the partition's position if every
//!    earlier record is also done. Auto-commit commits stored positions only.
//!
//! Shutdown (SIGTERM/SIGINT or the watch channel): stop receiving, let in-flight records finish
//! within `shutdown_timeout`, commit the positions that are done synchronously, and return.
//! Records abandoned at the deadline are not committed and are redone on restart; since
//! decision ids are deterministic, a redone record yields the same decision id.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use lg_events::{DeadLetterClass, SourceCoordinates};
use lg_ingest::consumer::{
    build_consumer, commit_positions, store_position, ConsumerSettings, GuardConsumer,
};
use lg_ingest::offsets::OffsetTracker;
use lg_labeler::{OutputError, OutputTopics, Outputs};
use rdkafka::consumer::{ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaResult;
use rdkafka::message::BorrowedMessage;
use rdkafka::Message;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::config::Settings;
use crate::detect_service::DetectorHandle;
use crate::metrics::METRICS;
use crate::process::{InputRecord, Outcome, Processor};

/// Counters of one run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RunStats {
    /// Records received.
    pub received: u64,
    /// Decisions produced.
    pub decisions: u64,
    /// Dead letters produced.
    pub dead_letters: u64,
    /// Records not finished by the shutdown deadline (redone on restart).
    pub abandoned: u64,
}

/// Fails where the policy names a model operating point (`fpr:1%`) that the loaded model's
/// card does not have: that action would silently never fire.
pub fn check_operating_points(
    policy: &lg_policy::Policy,
    detector: &lg_detector::Detector,
) -> anyhow::Result<()> {
    let Some(model) = detector.model_version() else {
        return Ok(());
    };
    let points = detector.model_operating_points();
    let missing: Vec<String> = policy
        .model_fprs()
        .into_iter()
        .filter(|&f| !points.iter().any(|p| lg_policy::same_rate(p.fpr, f)))
        .map(|f| lg_policy::OperatingPoint::Fpr(f).to_string())
        .collect();
    anyhow::ensure!(
        missing.is_empty(),
        "policy {} names model operating points {} that model {model} does not have (its card \
         has {}); use a model trained with `train --cv-report` (models/README.md), or a raw \
         probability in the policy",
        policy.version(),
        missing.join(", "),
        if points.is_empty() {
            "none".to_owned()
        } else {
            points
                .iter()
                .map(|p| lg_policy::OperatingPoint::Fpr(p.fpr).to_string())
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    Ok(())
}

/// Builds the processor from settings.
pub fn build_processor(settings: &Settings) -> anyhow::Result<Processor> {
    let fetcher = lg_ingest::fetch::ImageFetcher::new(settings.fetch_config()?)?;
    let detector = settings.detector()?;
    let policy = settings.load_policy()?;
    check_operating_points(&policy, &detector)?;
    let analysis_version = settings.analysis_version(&detector);
    let handle = DetectorHandle::spawn(
        detector,
        settings.detector.batch_size,
        Duration::from_millis(settings.detector.linger_ms),
        settings.detector.workers,
    );
    Ok(Processor {
        fetcher,
        detector: handle,
        policy: Arc::new(policy),
        limits: settings.validation_limits(),
        cache: settings.score_cache()?,
        analysis_version,
        mode: crate::process::Mode::Live,
        dead_letter_payload_max: settings.pipeline.dead_letter_payload_max_bytes,
        assets: None,
    })
}

/// Runs the pipeline until `shutdown` turns true.
pub async fn run(settings: &Settings, shutdown: watch::Receiver<bool>) -> anyhow::Result<RunStats> {
    let mut processor = build_processor(settings)?;
    // Labelled files are written by the live pipeline only (a re-audit decides into its own
    // topic and writes none).
    processor.assets = crate::assets::AssetStore::open(&settings.label_assets)?;
    let k = &settings.kafka;
    let consumer = Arc::new(build_consumer(&ConsumerSettings {
        brokers: k.brokers.clone(),
        group_id: k.group_id.clone(),
        instance_id: Some(k.instance_id.clone()).filter(|s| !s.is_empty()),
        topics: vec![k.input_topic.clone()],
        extra: k.librdkafka.clone(),
    })?);
    let outputs = Outputs::new(
        &k.brokers,
        OutputTopics {
            decisions: k.decisions_topic.clone(),
            labels: k.labels_topic.clone(),
            dlq: k.dlq_topic.clone(),
        },
        &k.librdkafka,
        shutdown.clone(),
    )?;
    // Weak: the metrics (a process-wide static) must not keep the consumer open past the run.
    let lag_of = Arc::downgrade(&consumer);
    crate::metrics::METRICS.set_lag_source(Arc::new(move || {
        lag_of
            .upgrade()
            .map(|c| rdkafka::consumer::Consumer::context(&*c).lags())
            .unwrap_or_default()
    }));
    if !settings.telemetry.listen.is_empty() {
        let addr = crate::telemetry::serve(
            &settings.telemetry.listen,
            Arc::clone(&consumer),
            &k.brokers,
        )
        .await?;
        tracing::info!(%addr, "telemetry: /healthz /readyz /metrics");
    }
    tracing::info!(
        brokers = %k.brokers, group = %k.group_id, topic = %k.input_topic,
        policy = processor.policy.version(), "pipeline started"
    );
    let stats = drive(
        &k.group_id,
        consumer,
        outputs,
        processor,
        settings.pipeline.max_in_flight,
        Duration::from_millis(settings.pipeline.shutdown_timeout_ms),
        shutdown,
    )
    .await?;
    tracing::info!(?stats, "pipeline stopped");
    Ok(stats)
}

struct Shared {
    group: String,
    consumer: Arc<GuardConsumer>,
    tracker: Mutex<OffsetTracker>,
    outputs: Outputs,
    processor: Processor,
    stats: Mutex<RunStats>,
}

async fn drive(
    group: &str,
    consumer: Arc<GuardConsumer>,
    outputs: Outputs,
    processor: Processor,
    max_in_flight: usize,
    shutdown_timeout: Duration,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<RunStats> {
    let shared = Arc::new(Shared {
        group: group.to_owned(),
        consumer: Arc::clone(&consumer),
        tracker: Mutex::new(OffsetTracker::new()),
        outputs,
        processor,
        stats: Mutex::new(RunStats::default()),
    });
    // A revoked partition is forgotten at once: its records still in flight finish without
    // storing a position (the new owner redoes them from the committed one), and nothing of
    // its old state outlives a later reassignment. Weak: the consumer's context must not keep
    // the run's state alive.
    let revoked_from = Arc::downgrade(&shared);
    rdkafka::consumer::Consumer::context(&*consumer).on_revoke(Arc::new(move |parts| {
        if let Some(sh) = revoked_from.upgrade() {
            let mut tracker = sh.tracker.lock().expect("tracker lock");
            for (topic, partition) in parts {
                tracker.forget(topic, *partition);
            }
            tracing::info!(?parts, "partitions revoked; their positions are forgotten");
        }
    }));
    let slots = Arc::new(Semaphore::new(max_in_flight));
    let mut tasks = JoinSet::new();
    let mut recv_errors = 0u32;
    while let Some((permit, msg)) = next_record(&slots, &consumer, &mut shutdown).await {
        // Reap finished tasks so the set does not grow.
        while tasks.try_join_next().is_some() {}
        let msg = match msg {
            Ok(m) => {
                recv_errors = 0;
                m
            }
            Err(e) => {
                recv_errors = recv_errors.saturating_add(1);
                let delay = Duration::from_millis(100 * u64::from(recv_errors.min(50)));
                tracing::warn!(error = %e, ?delay, "consumer error; continuing");
                tokio::time::sleep(delay).await;
                continue;
            }
        };
        let rec = InputRecord::new(
            SourceCoordinates {
                topic: msg.topic().to_owned(),
                partition: msg.partition(),
                offset: msg.offset(),
            },
            msg.key().map(<[u8]>::to_vec),
            msg.payload().map(<[u8]>::to_vec),
            traceparent(&msg).as_deref(),
        );
        drop(msg);
        shared.tracker.lock().expect("tracker lock").begin(
            &rec.source.topic,
            rec.source.partition,
            rec.source.offset,
        );
        shared.stats.lock().expect("stats lock").received += 1;
        METRICS.consumed();
        let sh = Arc::clone(&shared);
        tasks.spawn(async move {
            handle(&sh, rec).await;
            drop(permit);
        });
    }

    let in_flight = shared.tracker.lock().expect("tracker lock").in_flight();
    tracing::info!(in_flight, "shutting down: draining in-flight records");
    let drained = tokio::time::timeout(shutdown_timeout, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            left = tasks.len(),
            "shutdown deadline passed; unfinished records will be redone on restart"
        );
        tasks.abort_all();
    }
    let positions = {
        let t = shared.tracker.lock().expect("tracker lock");
        shared.stats.lock().expect("stats lock").abandoned = t.in_flight() as u64;
        t.positions()
    };
    if let Err(e) = shared.outputs.flush(Duration::from_secs(5)) {
        tracing::warn!(error = %e, "producer flush at shutdown failed");
    }
    if let Err(e) = commit_positions(&*consumer, &positions) {
        tracing::warn!(error = %e, "final commit failed; uncommitted records will be redone");
    }
    let stats = *shared.stats.lock().expect("stats lock");
    Ok(stats)
}

/// Waits for a free slot among `slots` (the consumer's backpressure), then for the next record.
/// `None` once `shutdown` turns true.
pub(crate) async fn next_record<'c, C: ConsumerContext + 'static>(
    slots: &Arc<Semaphore>,
    consumer: &'c StreamConsumer<C>,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<(OwnedSemaphorePermit, KafkaResult<BorrowedMessage<'c>>)> {
    if *shutdown.borrow() {
        return None;
    }
    let permit = tokio::select! {
        _ = shutdown.changed() => return None,
        p = Arc::clone(slots).acquire_owned() => p.expect("semaphore is never closed"),
    };
    tokio::select! {
        _ = shutdown.changed() => None,
        m = consumer.recv() => Some((permit, m)),
    }
}

async fn handle(sh: &Shared, mut rec: InputRecord) {
    // One span per record, named with the OpenTelemetry messaging conventions; the W3C trace
    // id it continues is a field, so every log line of the record can be joined to the trace.
    // With span export on, the span is the input's child and the outputs name it as parent.
    let span = tracing::info_span!(
        "record",
        messaging.system = "kafka",
        messaging.operation = "process",
        messaging.destination.name = %rec.source.topic,
        messaging.kafka.destination.partition = rec.source.partition,
        messaging.kafka.message.offset = rec.source.offset,
        messaging.kafka.consumer.group = %sh.group,
        trace_id = tracing::field::Empty,
    );
    rec.trace = crate::otel::join_trace(&span, rec.upstream.as_ref(), rec.trace);
    span.record("trace_id", rec.trace.trace_id_hex());
    handle_in_span(sh, rec).instrument(span).await;
}

async fn handle_in_span(sh: &Shared, rec: InputRecord) {
    let outcome = sh.processor.process(&rec).await;
    let produce = tracing::info_span!("produce");
    let t = std::time::Instant::now();
    let delivered = deliver(&sh.outputs, &sh.processor, &rec, &outcome)
        .instrument(produce)
        .await;
    crate::metrics::METRICS.stage("produce", t.elapsed());
    let delivered = match delivered {
        Ok(d) => d,
        Err(e) => {
            // The partition's committed position stays before this record, so it is redone
            // after a restart or rebalance: at shutdown that is the plan; mid-run (even the
            // bare dead letter was refused) the partition's progress is held until then.
            if matches!(e, OutputError::Abandoned { .. }) {
                tracing::warn!(offset = rec.source.offset, error = %e, "outputs not delivered at shutdown; redone on restart");
            } else {
                tracing::error!(offset = rec.source.offset, error = %e, "outputs not delivered anywhere; the partition's position is held before this record");
            }
            return;
        }
    };
    {
        let mut st = sh.stats.lock().expect("stats lock");
        match delivered {
            Delivered::Decision => st.decisions += 1,
            Delivered::DeadLetter => st.dead_letters += 1,
        }
    }
    count_delivered(&outcome, delivered, &rec);
    let s = &rec.source;
    let advanced =
        sh.tracker
            .lock()
            .expect("tracker lock")
            .complete(&s.topic, s.partition, s.offset);
    if let Some(pos) = advanced {
        if let Err(e) = store_position(&*sh.consumer, &s.topic, s.partition, pos) {
            // Typically the partition was revoked; its new owner redoes the unfinished tail.
            tracing::debug!(topic = %s.topic, partition = s.partition, error = %e, "could not store offset");
        }
    }
}

/// The value of a record's `traceparent` header, if it has one in UTF-8.
pub(crate) fn traceparent<M: Message>(msg: &M) -> Option<String> {
    use rdkafka::message::Headers;
    let headers = msg.headers()?;
    headers
        .iter()
        .find(|h| h.key.eq_ignore_ascii_case(lg_events::trace::HEADER))
        .and_then(|h| std::str::from_utf8(h.value?).ok().map(str::to_owned))
}

/// Counts what reached the broker for `rec` in the metrics.
fn count_delivered(outcome: &Outcome, delivered: Delivered, rec: &InputRecord) {
    let dead_class = match (outcome, delivered) {
        (Outcome::Decided(d, _), Delivered::Decision) => {
            METRICS.decision(d.action.as_str(), &d.marketplace);
            None
        }
        (Outcome::Dead(dl), _) => Some(dl.error_class),
        (Outcome::Decided(..), Delivered::DeadLetter) => Some(DeadLetterClass::OutputRejected),
    };
    if let Some(class) = dead_class {
        METRICS.dead_letter(class.as_str());
    }
    METRICS.end_to_end(rec.received.elapsed());
}

/// What reached the broker for a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delivered {
    /// Its decision (and labels).
    Decision,
    /// A dead letter.
    DeadLetter,
}

/// Produces `outcome`. When the broker refuses an output for good (e.g. a decision over its
/// message size limit), the input goes to the dead-letter topic instead (class
/// `output_rejected`), and if even that dead letter is refused, a copy without the payload does.
/// An `Err` means nothing was delivered and the record must not be acknowledged.
pub(crate) async fn deliver(
    outputs: &Outputs,
    processor: &Processor,
    rec: &InputRecord,
    outcome: &Outcome,
) -> Result<Delivered, OutputError> {
    let key = rec.key.as_deref();
    let first = match outcome {
        Outcome::Decided(d, labels) => outputs
            .emit_decision(d, labels, Some(&rec.trace))
            .await
            .map(|()| Delivered::Decision),
        Outcome::Dead(dl) => outputs
            .emit_dead_letter(dl, key, Some(&rec.trace))
            .await
            .map(|()| Delivered::DeadLetter),
    };
    let refusal = match first {
        Err(e @ OutputError::Rejected { .. }) => e.to_string(),
        other => return other,
    };
    tracing::error!(topic = %rec.source.topic, partition = rec.source.partition, offset = rec.source.offset, error = %refusal, "output refused by the broker; dead-lettering the input");
    match outcome {
        Outcome::Decided(..) => {
            let dl = processor.dead_letter(rec, DeadLetterClass::OutputRejected, refusal);
            match outputs.emit_dead_letter(&dl, key, Some(&rec.trace)).await {
                Err(OutputError::Rejected { .. }) => {
                    outputs
                        .emit_dead_letter(&dl.without_payload(), None, Some(&rec.trace))
                        .await?;
                }
                other => other?,
            }
        }
        // The dead letter itself was refused: a copy with the same payload bound would be
        // refused again, so the copy without the payload goes, with the refusal appended.
        Outcome::Dead(dl) => {
            let mut dl = dl.without_payload();
            dl.error_message = format!("{} (then: {refusal})", dl.error_message);
            outputs
                .emit_dead_letter(&dl, None, Some(&rec.trace))
                .await?;
        }
    }
    Ok(Delivered::DeadLetter)
}

/// Set by a SIGTERM or SIGINT that arrives before [`shutdown_on_signals`] runs.
static EARLY_SIGNAL: std::sync::OnceLock<Arc<std::sync::atomic::AtomicBool>> =
    std::sync::OnceLock::new();

/// Replaces the default action of SIGTERM and SIGINT (terminate at once) with setting a flag.
/// The binary calls this first thing, so a stop request during start-up (config, telemetry,
/// the runtime, the model) is kept and honoured by [`shutdown_on_signals`] instead of killing
/// the process before anything is committed.
pub fn catch_early_signals() {
    #[cfg(unix)]
    {
        let flag = Arc::clone(EARLY_SIGNAL.get_or_init(Default::default));
        for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
            if let Err(e) = signal_hook::flag::register(sig, Arc::clone(&flag)) {
                eprintln!("listing-guard: cannot catch signal {sig}: {e}");
            }
        }
    }
}

/// A watch channel that turns true on SIGTERM or SIGINT (at once if one arrived since
/// [`catch_early_signals`]).
pub fn shutdown_on_signals() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    // The handlers are installed here, before the caller loads its model and connects: a
    // SIGTERM during start-up then stops the pipeline cleanly instead of killing the process.
    // They go in before the early flag is read, so a signal in between is seen by one of them.
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
        let early = EARLY_SIGNAL
            .get()
            .is_some_and(|f| f.load(std::sync::atomic::Ordering::SeqCst));
        tokio::spawn(async move {
            if early {
                tracing::info!("stop requested during start-up");
            } else {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM received"),
                    _ = int.recv() => tracing::info!("SIGINT received"),
                }
            }
            let _ = tx.send(true);
        });
    }
    #[cfg(not(unix))]
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        let _ = tx.send(true);
    });
    rx
}
