//! Re-audit: historical listings from a time window through the current (or a candidate) policy
//! and model, written as `mode = replay` decisions to a re-audit topic.
//!
//! - **Window.** Each partition is read from the broker's time lookup of `from` (the first
//!   offset with a timestamp at or after it) up to its time lookup of `to` (the first offset
//!   past the window), both taken at start; a partition with nothing at or after `to` is read
//!   to its high-water mark at start. The records past `to` that are not read are counted in the
//!   summary (`skipped_after_window`). Every record read is also filtered by its own timestamp
//!   (`outside_window`): producer timestamps need not be monotonic. A lookup answered with an
//!   offset before the partition's start (some brokers answer one past the end with 0) counts
//!   as "nothing at or after" (so does one at the start itself: an empty window there is read
//!   to the end, filtered).
//! - **Invalid records** met on the way are listed in the summary and the checkpoint (partition,
//!   offset, error class; the first [`MAX_INVALID_LISTED`]) and counted; they go to no topic.
//! - **No interference.** The consumer is assigned its partitions (no group membership, no
//!   commits); nothing is written to the live decision, label or dead-letter topics. Labels are
//!   not emitted at all: a re-audit never re-enforces.
//! - **Resumable.** Progress is checkpointed per partition to
//!   `<checkpoint_dir>/<run_id>.json` (only offsets whose decisions are acknowledged, in order);
//!   a run started again with the same `--run-id` continues from there with the same bounds.
//! - **Rate.** `--max-rate` paces records so that a re-audit cannot starve live traffic.
//! - **Cache.** With the score cache configured, an image whose URL and content are cached is
//!   neither fetched nor analysed again (`--refetch` turns the URL shortcut off).

use std::collections::BTreeMap;
use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use lg_events::SourceCoordinates;
use lg_ingest::offsets::OffsetTracker;
use lg_labeler::{OutputTopics, Outputs};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::config::Settings;
use crate::process::{InputRecord, Mode, Outcome, Processor};

/// Default re-audit topic.
pub const REAUDIT_TOPIC: &str = "moderation.reaudit.v1";

/// What to replay.
#[derive(Debug, Clone)]
pub struct ReplayArgs {
    /// Window start (inclusive), by record timestamp.
    pub from: DateTime<Utc>,
    /// Window end (exclusive).
    pub to: DateTime<Utc>,
    /// Where decisions go.
    pub output_topic: String,
    /// Records per second at most.
    pub max_rate: Option<f64>,
    /// The run (resumes when its checkpoint exists).
    pub run_id: String,
    /// Fetch every image even when its URL is cached.
    pub refetch: bool,
    /// Where checkpoints live.
    pub checkpoint_dir: PathBuf,
}

/// Counters of a replay.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ReplayStats {
    /// Records read inside the partitions' bounds.
    pub read: u64,
    /// Records whose own timestamp lies outside the window (skipped).
    pub outside_window: u64,
    /// Decisions written.
    pub decisions: u64,
    /// Records that are not valid listing events (counted and listed, not dead-lettered again).
    pub invalid: u64,
    /// Records past the window's end (by the time lookup of `to`) that were not read.
    pub skipped_after_window: u64,
    /// Decisions the broker refused for good (e.g. over its message size limit).
    pub refused: u64,
}

/// One partition's bounds and progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionRange {
    /// Partition.
    pub partition: i32,
    /// First offset of the window.
    pub start: i64,
    /// One past the last offset read: the first offset at or after `to`.
    pub end: i64,
    /// Next offset to read (everything before it is done).
    pub next: i64,
    /// The high-water mark at start: `high - end` records after the window are skipped.
    #[serde(default)]
    pub high: i64,
}

/// The most invalid records a replay lists (all are counted).
pub const MAX_INVALID_LISTED: usize = 1000;

/// An invalid record met during a replay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvalidRecord {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// The dead-letter error class it would have in the live pipeline.
    pub error_class: lg_events::DeadLetterClass,
    /// The error message.
    pub error: String,
}

/// The checkpoint file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Run id.
    pub run_id: String,
    /// Input topic.
    pub topic: String,
    /// Window start.
    pub from: DateTime<Utc>,
    /// Window end.
    pub to: DateTime<Utc>,
    /// Per partition.
    pub partitions: Vec<PartitionRange>,
    /// Whether the whole window is done.
    pub complete: bool,
    /// Invalid records met so far (the first [`MAX_INVALID_LISTED`]).
    #[serde(default)]
    pub invalid_records: Vec<InvalidRecord>,
}

impl Checkpoint {
    fn path(dir: &Path, run_id: &str) -> PathBuf {
        dir.join(format!("{run_id}.json"))
    }

    /// Loads the checkpoint of `run_id`, if any.
    pub fn load(dir: &Path, run_id: &str) -> anyhow::Result<Option<Self>> {
        let p = Self::path(dir, run_id);
        match std::fs::read(&p) {
            Ok(b) => Ok(Some(
                serde_json::from_slice(&b).with_context(|| format!("reading {}", p.display()))?,
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
        }
    }

    /// Writes atomically (temporary file, then rename).
    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let p = Self::path(dir, &self.run_id);
        let tmp = p.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        std::fs::rename(&tmp, &p)?;
        Ok(())
    }

    fn remaining(&self) -> u64 {
        self.partitions
            .iter()
            .map(|p| (p.end - p.next).max(0) as u64)
            .sum()
    }
}

/// A run id from the current time, e.g. `reaudit-20261125T123456Z`.
pub fn new_run_id() -> String {
    format!("reaudit-{}", Utc::now().format("%Y%m%dT%H%M%SZ"))
}

fn replay_consumer(settings: &Settings, run_id: &str) -> Result<StreamConsumer, KafkaError> {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", &settings.kafka.brokers)
        // Required by the client; never joined (partitions are assigned) and never committed.
        .set("group.id", format!("listing-guard-replay-{run_id}"))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest");
    for (k, v) in &settings.kafka.librdkafka {
        cfg.set(k, v);
    }
    cfg.create()
}

/// The window's offset bounds on every partition of `topic` (see the module docs).
fn plan(
    consumer: &StreamConsumer,
    topic: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> anyhow::Result<Vec<PartitionRange>> {
    let timeout = Duration::from_secs(10);
    let parts = lg_ingest::consumer::partitions(consumer, topic, timeout)
        .with_context(|| format!("metadata of {topic}"))?;
    anyhow::ensure!(!parts.is_empty(), "topic {topic} has no partitions");
    let lookup = |ts: DateTime<Utc>| -> anyhow::Result<BTreeMap<i32, Offset>> {
        let mut tpl = TopicPartitionList::new();
        for &p in &parts {
            tpl.add_partition_offset(topic, p, Offset::Offset(ts.timestamp_millis()))?;
        }
        let found = consumer.offsets_for_times(tpl, timeout)?;
        Ok(found
            .elements()
            .iter()
            .map(|e| (e.partition(), e.offset()))
            .collect())
    };
    // The lookups give the first offset whose timestamp is at or after `from` (no record of
    // the window lies before it) and at or after `to` (the first past the window, as far as
    // the broker's time index knows: records written later with older timestamps are not read).
    let starts = lookup(from)?;
    let ends = lookup(to)?;
    let mut out = Vec::new();
    for p in parts {
        let (low, high) = consumer.fetch_watermarks(topic, p, timeout)?;
        let start = match starts.get(&p) {
            Some(Offset::Offset(o)) => (*o).clamp(low, high),
            // No record at or after `from`.
            _ => high,
        };
        let end = match ends.get(&p) {
            Some(Offset::Offset(o)) if *o > start => (*o).min(high),
            // No record at or after `to`, or an answer at or before the start (a broker that
            // answers a lookup past the end with 0 cannot be told from an empty window there):
            // read to the end, filtered by timestamp.
            _ => high,
        };
        out.push(PartitionRange {
            partition: p,
            start,
            end,
            next: start,
            high,
        });
    }
    Ok(out)
}

struct Shared {
    processor: Processor,
    outputs: Outputs,
    tracker: Mutex<OffsetTracker>,
    checkpoint: Mutex<Checkpoint>,
    stats: Mutex<ReplayStats>,
    window: (i64, i64),
}

/// Runs a replay to the end of its window (or until `shutdown`). Returns the counters and the
/// final checkpoint.
pub async fn run(
    settings: &Settings,
    processor: Processor,
    args: &ReplayArgs,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<(ReplayStats, Checkpoint)> {
    anyhow::ensure!(args.from < args.to, "--from must be before --to");
    anyhow::ensure!(
        matches!(processor.mode, Mode::Replay { .. }),
        "replay needs a processor in replay mode"
    );
    let k = &settings.kafka;
    for live in [&k.decisions_topic, &k.labels_topic, &k.dlq_topic] {
        anyhow::ensure!(
            &args.output_topic != live,
            "--output-topic {} is a live topic; re-audits write elsewhere",
            args.output_topic
        );
    }
    let topic = k.input_topic.clone();
    let consumer = replay_consumer(settings, &args.run_id)?;
    let checkpoint = match Checkpoint::load(&args.checkpoint_dir, &args.run_id)? {
        Some(c) => {
            anyhow::ensure!(
                c.topic == topic && c.from == args.from && c.to == args.to,
                "run {} was started with another topic or window ({} {}..{})",
                args.run_id,
                c.topic,
                c.from,
                c.to
            );
            tracing::info!(run_id = %args.run_id, remaining = c.remaining(), "resuming replay");
            c
        }
        None => Checkpoint {
            run_id: args.run_id.clone(),
            topic: topic.clone(),
            from: args.from,
            to: args.to,
            partitions: plan(&consumer, &topic, args.from, args.to)?,
            complete: false,
            invalid_records: Vec::new(),
        },
    };
    checkpoint.save(&args.checkpoint_dir)?;
    let total = checkpoint.remaining();
    let skipped_after_window = checkpoint
        .partitions
        .iter()
        .map(|p| (p.high - p.end).max(0) as u64)
        .sum();
    let mut open: BTreeMap<i32, i64> = BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in &checkpoint.partitions {
        if p.next < p.end {
            open.insert(p.partition, p.end);
            tpl.add_partition_offset(&topic, p.partition, Offset::Offset(p.next))?;
        }
    }
    tracing::info!(
        run_id = %args.run_id, %topic, from = %args.from, to = %args.to, records = total,
        output = %args.output_topic, policy = processor.policy.version(), "replay started"
    );
    let outputs = Outputs::new(
        &k.brokers,
        OutputTopics {
            decisions: args.output_topic.clone(),
            labels: args.output_topic.clone(),
            dlq: args.output_topic.clone(),
        },
        &k.librdkafka,
        shutdown.clone(),
    )?;
    let shared = Arc::new(Shared {
        processor,
        outputs,
        tracker: Mutex::new(OffsetTracker::new()),
        checkpoint: Mutex::new(checkpoint),
        stats: Mutex::new(ReplayStats {
            skipped_after_window,
            ..ReplayStats::default()
        }),
        window: (args.from.timestamp_millis(), args.to.timestamp_millis()),
    });
    if !open.is_empty() {
        consumer.assign(&tpl)?;
    }
    let progress = Progress::new(total);
    let slots = Arc::new(Semaphore::new(settings.pipeline.max_in_flight));
    let mut tasks = JoinSet::new();
    let pace = args
        .max_rate
        .filter(|r| *r > 0.0)
        .map(|r| Duration::from_secs_f64(1.0 / r));
    let mut next_slot = Instant::now();
    let mut last_save = Instant::now();
    while !open.is_empty() {
        let Some((permit, msg)) =
            crate::pipeline::next_record(&slots, &consumer, &mut shutdown).await
        else {
            break;
        };
        while tasks.try_join_next().is_some() {}
        if last_save.elapsed() > Duration::from_secs(1) {
            save(&shared, &args.checkpoint_dir);
            progress.update(&shared.stats.lock().expect("stats lock"));
            last_save = Instant::now();
        }
        let msg = match msg {
            Ok(m) => m,
            Err(KafkaError::PartitionEOF(p)) => {
                open.remove(&p);
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "consumer error; continuing");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let (p, offset) = (msg.partition(), msg.offset());
        let Some(&end) = open.get(&p) else { continue };
        if offset >= end {
            open.remove(&p);
            continue;
        }
        if offset + 1 >= end {
            open.remove(&p);
        }
        let rec = InputRecord::new(
            SourceCoordinates {
                topic: msg.topic().to_owned(),
                partition: p,
                offset,
            },
            msg.key().map(<[u8]>::to_vec),
            msg.payload().map(<[u8]>::to_vec),
            crate::pipeline::traceparent(&msg).as_deref(),
        );
        let ts = msg.timestamp().to_millis();
        drop(msg);
        shared
            .tracker
            .lock()
            .expect("tracker lock")
            .begin(&topic, p, offset);
        shared.stats.lock().expect("stats lock").read += 1;
        let in_window = ts.is_some_and(|t| t >= shared.window.0 && t < shared.window.1);
        if in_window {
            if let Some(step) = pace {
                let now = Instant::now();
                if next_slot > now {
                    tokio::time::sleep(next_slot - now).await;
                }
                next_slot = next_slot.max(now) + step;
            }
        }
        let sh = Arc::clone(&shared);
        tasks.spawn(async move {
            handle(&sh, rec, in_window).await;
            drop(permit);
        });
    }
    let interrupted = !open.is_empty();
    while tasks.join_next().await.is_some() {}
    if let Err(e) = shared.outputs.flush(Duration::from_secs(5)) {
        tracing::warn!(error = %e, "producer flush failed");
    }
    {
        let mut c = shared.checkpoint.lock().expect("checkpoint lock");
        c.complete = !interrupted && shared.tracker.lock().expect("tracker lock").in_flight() == 0;
        if c.complete {
            for p in &mut c.partitions {
                p.next = p.end;
            }
        }
    }
    save(&shared, &args.checkpoint_dir);
    let stats = *shared.stats.lock().expect("stats lock");
    progress.finish(&stats);
    let checkpoint = shared.checkpoint.lock().expect("checkpoint lock").clone();
    tracing::info!(?stats, complete = checkpoint.complete, "replay stopped");
    Ok((stats, checkpoint))
}

fn save(sh: &Shared, dir: &Path) {
    let c = sh.checkpoint.lock().expect("checkpoint lock").clone();
    if let Err(e) = c.save(dir) {
        tracing::warn!(error = %e, "could not write the replay checkpoint");
    }
}

async fn handle(sh: &Shared, rec: InputRecord, in_window: bool) {
    if in_window {
        let delivered = match sh.processor.process(&rec).await {
            Outcome::Decided(d, _labels) => {
                // Decisions only: a re-audit never re-emits enforcement (labels).
                let r = sh.outputs.emit_decision(&d, &[], Some(&rec.trace)).await;
                if r.is_ok() {
                    sh.stats.lock().expect("stats lock").decisions += 1;
                }
                r
            }
            Outcome::Dead(d) => {
                sh.stats.lock().expect("stats lock").invalid += 1;
                let mut c = sh.checkpoint.lock().expect("checkpoint lock");
                let seen = c
                    .invalid_records
                    .iter()
                    .any(|r| (r.partition, r.offset) == (d.source.partition, d.source.offset));
                if !seen && c.invalid_records.len() < MAX_INVALID_LISTED {
                    c.invalid_records.push(InvalidRecord {
                        partition: d.source.partition,
                        offset: d.source.offset,
                        error_class: d.error_class,
                        error: d.error_message.clone(),
                    });
                }
                Ok(())
            }
        };
        match delivered {
            Ok(()) => {}
            // Refused for good (e.g. too large): counted and passed, or no resume could finish.
            Err(e @ lg_labeler::OutputError::Rejected { .. }) => {
                tracing::error!(offset = rec.source.offset, error = %e, "re-audit decision refused by the broker; counted in stats.refused");
                sh.stats.lock().expect("stats lock").refused += 1;
            }
            Err(e) => {
                tracing::warn!(offset = rec.source.offset, error = %e, "re-audit decision not delivered; redone on resume");
                return;
            }
        }
    } else {
        sh.stats.lock().expect("stats lock").outside_window += 1;
    }
    let s = &rec.source;
    let advanced =
        sh.tracker
            .lock()
            .expect("tracker lock")
            .complete(&s.topic, s.partition, s.offset);
    if let Some(pos) = advanced {
        let mut c = sh.checkpoint.lock().expect("checkpoint lock");
        if let Some(p) = c.partitions.iter_mut().find(|p| p.partition == s.partition) {
            p.next = p.next.max(pos);
        }
    }
}

/// A progress bar with rate and ETA on a terminal; periodic log lines otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    started: Instant,
    total: u64,
}

impl Progress {
    fn new(total: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = indicatif::ProgressBar::new(total);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:40} {pos}/{len} records  {per_sec}  ETA {eta}  {msg}",
                )
                .expect("valid template"),
            );
            b
        });
        Self {
            bar,
            started: Instant::now(),
            total,
        }
    }

    fn update(&self, s: &ReplayStats) {
        match &self.bar {
            Some(b) => {
                b.set_position(s.read);
                b.set_message(format!("{} decisions", s.decisions));
            }
            None => {
                let secs = self.started.elapsed().as_secs_f64().max(1e-3);
                let rate = s.read as f64 / secs;
                let eta = (self.total.saturating_sub(s.read)) as f64 / rate.max(1e-9);
                tracing::info!(
                    read = s.read,
                    total = self.total,
                    decisions = s.decisions,
                    rate = format!("{rate:.0}/s"),
                    eta_s = format!("{eta:.0}"),
                    "replay progress"
                );
            }
        }
    }

    fn finish(&self, s: &ReplayStats) {
        if let Some(b) = &self.bar {
            b.set_position(s.read);
            b.finish();
        }
    }
}

/// `listing-guard replay`: builds the processor in replay mode from `settings` (with any
/// `--policy` / `--model` already applied), runs the window, prints a JSON summary line, and
/// with `compare` writes the diff report to `report_dir`.
pub async fn command(
    settings: &Settings,
    args: &ReplayArgs,
    compare: Option<&Path>,
) -> anyhow::Result<bool> {
    let mut processor = crate::pipeline::build_processor(settings)?;
    processor.mode = Mode::Replay {
        run_id: args.run_id.clone(),
        trust_cached_urls: !args.refetch,
    };
    let cache = processor.cache.clone();
    let shutdown = crate::pipeline::shutdown_on_signals();
    let (stats, checkpoint) = run(settings, processor, args, shutdown).await?;
    let cache_stats = cache.map(|c| c.stats());
    println!(
        "{}",
        serde_json::json!({
            "run_id": args.run_id,
            "complete": checkpoint.complete,
            "stats": stats,
            "invalid_records": checkpoint.invalid_records,
            "cache": cache_stats.map(|c| serde_json::json!({"hits": c.hits, "misses": c.misses})),
        })
    );
    if let (Some(dir), true) = (compare, checkpoint.complete) {
        report_command(settings, &args.run_id, &args.output_topic, dir).await?;
    }
    Ok(checkpoint.complete)
}

/// `listing-guard reaudit-report`: joins run `run_id` on `reaudit_topic` with the live decisions,
/// prints the table and writes the report files to `dir`.
pub async fn report_command(
    settings: &Settings,
    run_id: &str,
    reaudit_topic: &str,
    dir: &Path,
) -> anyhow::Result<crate::reaudit::DiffReport> {
    let k = &settings.kafka;
    let originals = crate::reaudit::read_decisions(&k.brokers, &k.decisions_topic).await?;
    let replayed = crate::reaudit::read_decisions(&k.brokers, reaudit_topic).await?;
    let report = crate::reaudit::diff(run_id, originals, replayed);
    crate::reaudit::write(&report, dir)?;
    print!("{}", crate::reaudit::table(&report));
    println!("report written to {}", dir.display());
    Ok(report)
}
