//! Re-audit against the real broker (`make test-replay`).
//!
//! 3,000 listings over three days of record timestamps are decided live with the score cache on;
//! then, with the live pipeline stopped:
//! - day 2 is replayed under a stricter policy: exactly that day's events, no image fetched
//!   again, and the diff report's transition counts equal the test's own computation;
//! - a window past the end of the topic replays nothing;
//! - day 1 is replayed, killed halfway (SIGKILL) and resumed: every event exactly once by
//!   (run id, event id), any duplicate with the same decision id.
//!
//! Finally day 3 is replayed with `--max-rate` while the live pipeline decides new listings.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use integration_tests::*;
use lg_events::{Action, ModerationDecision};
use listing_guard::fixtures::Fixture;

const PER_DAY: usize = 1000;
const DAY_MS: i64 = 86_400_000;
/// 2026-11-01T00:00:00Z.
const DAY1_MS: i64 = 1_793_491_200_000;
const DAYS: [&str; 4] = [
    "2026-11-01T00:00:00Z",
    "2026-11-02T00:00:00Z",
    "2026-11-03T00:00:00Z",
    "2026-11-04T00:00:00Z",
];
const MARKETS: [&str; 3] = ["taobao", "tmall", "xianyu"];

/// [`STRICT`]: any declared AI image blocks the listing.
fn strict_action(f: Fixture) -> Action {
    if f == Fixture::BrokenJpeg {
        Action::Review
    } else if f.declares_ai() {
        Action::Block
    } else {
        Action::Allow
    }
}

const STRICT: &str = r#"
name = "strict"

[labels]
content_propagator = "listing-guard-marketplace"
locale = "zh+en"

[defaults]
declared_ai = "block"
c2pa_invalid = "review"
fetch_failed = "review"
decode_failed = "review"
model_ai_main = "review"
model_ai_secondary = "label"
model_label_at = "fpr:1%"
model_review_at = "fpr:1%"
model_block_at = "fpr:0.1%"
"#;

struct Listing {
    event_id: String,
    fixture: Fixture,
    market: &'static str,
    category: &'static str,
}

fn listing_of(i: usize) -> Listing {
    Listing {
        event_id: format!("evt-{i:05}"),
        fixture: Fixture::ALL[i % Fixture::ALL.len()],
        market: MARKETS[i % 3],
        category: if i.is_multiple_of(7) {
            "beauty"
        } else {
            "apparel"
        },
    }
}

fn record(i: usize, base: &str, ts: Option<i64>) -> (String, Vec<u8>, Option<i64>) {
    let l = listing_of(i);
    // One URL per listing: the re-audit must find each through the cache's URL index.
    let url = format!("{base}/img/{}?listing={i}", l.fixture.name());
    (
        format!("k{i}"),
        listing(&l.event_id, l.market, l.category, &[url]),
        ts,
    )
}

async fn run_to_end(cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || {
        let mut cmd = cmd;
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .output()
            .expect("listing-guard runs")
    })
    .await
    .unwrap()
}

/// The JSON summary line `replay` prints.
fn summary(out: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with('{') && l.contains("\"run_id\""))
        .unwrap_or_else(|| panic!("no summary line in {stdout}"));
    serde_json::from_str(line).unwrap()
}

struct Replay<'a> {
    topics: &'a Topics,
    dir: &'a Path,
    cache: &'a Path,
}

impl Replay<'_> {
    fn command(&self, run_id: &str, from: &str, to: &str, extra: &[&str]) -> Command {
        let mut cmd = guard_command(self.topics, "replay");
        cmd.args(["--from", from, "--to", to, "--run-id", run_id])
            .args(["--output-topic", &self.topics.reaudit])
            .arg("--checkpoint-dir")
            .arg(self.dir.join("checkpoints"))
            .args(extra)
            .env("LISTING_GUARD__CACHE__PATH", self.cache);
        cmd
    }
}

async fn reaudit(topics: &Topics, run_id: &str) -> Vec<ModerationDecision> {
    listing_guard::reaudit::read_decisions(&brokers(), &topics.reaudit)
        .await
        .unwrap()
        .into_iter()
        .filter(|d| d.run_id.as_deref() == Some(run_id))
        .collect()
}

fn day_events(day: usize) -> HashSet<String> {
    (day * PER_DAY..(day + 1) * PER_DAY)
        .map(|i| listing_of(i).event_id)
        .collect()
}

/// Every event once, duplicates (from a resumed run) identical in id and action.
fn unique_events(ds: &[ModerationDecision]) -> HashSet<String> {
    let mut by_event: HashMap<&str, &ModerationDecision> = HashMap::new();
    for d in ds {
        assert_eq!(d.mode, lg_events::DecisionMode::Replay);
        if let Some(first) = by_event.insert(&d.event_id, d) {
            assert_eq!(
                first.decision_id, d.decision_id,
                "duplicate of {}",
                d.event_id
            );
            assert_eq!(first.action, d.action);
        }
    }
    by_event.keys().map(|s| (*s).to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_windows_cache_diff_resume_and_live_traffic() {
    let images: HashMap<String, Vec<u8>> = Fixture::ALL
        .iter()
        .map(|f| (f.name().to_owned(), f.bytes(11)))
        .collect();
    let (base, requests) = listing_guard::demo::serve_images_counted(images)
        .await
        .unwrap();
    let topics = Topics::fresh("replay");
    topics.create(2).await;
    let dir = std::env::temp_dir().join(format!("lg-replay-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    std::fs::create_dir_all(&dir).unwrap();
    let cache = dir.join("cache.redb");
    let cache_env = [("LISTING_GUARD__CACHE__PATH", cache.display().to_string())];

    // Three days, one minute apart within each day, produced in time order, with one
    // malformed record in the middle of day 2.
    let mut records: Vec<_> = (0..3 * PER_DAY)
        .map(|i| {
            let (day, j) = ((i / PER_DAY) as i64, (i % PER_DAY) as i64);
            record(i, &base, Some(DAY1_MS + day * DAY_MS + j * 60_000))
        })
        .collect();
    let malformed_ts = DAY1_MS + DAY_MS + (PER_DAY as i64 / 2) * 60_000 + 30_000;
    records.insert(
        PER_DAY + PER_DAY / 2 + 1,
        ("bad".into(), b"{not json".to_vec(), Some(malformed_ts)),
    );
    produce_timed(&topics.input, &records).await;

    // Live decisions for all of them, filling the cache.
    let live = start_pipeline_with(&topics, &cache_env);
    let mut collector = Collector::new(&topics);
    collector
        .until(Duration::from_secs(300), |c| {
            c.by_event().len() >= 3 * PER_DAY
        })
        .await;
    live.terminate();
    // Labels and dead letters lag the decisions: read everything the live run wrote.
    collector.drain(Duration::from_secs(3)).await;
    let originals: HashMap<String, Action> = collector
        .seen
        .decisions
        .iter()
        .map(|d| (d.event_id.clone(), d.action))
        .collect();
    for i in 0..3 * PER_DAY {
        let l = listing_of(i);
        assert_eq!(
            originals[&l.event_id],
            default_policy_action(l.fixture, l.market, l.category),
            "live decision of {}",
            l.event_id
        );
    }
    let fetched_live = requests.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        fetched_live >= (3 * PER_DAY) as u64,
        "every URL fetched once live"
    );

    let replay = Replay {
        topics: &topics,
        dir: &dir,
        cache: &cache,
    };
    let strict = dir.join("strict.toml");
    std::fs::write(&strict, STRICT).unwrap();

    // Day 2 under the strict policy, with the diff report.
    let report_dir = dir.join("report");
    let out = run_to_end(replay.command(
        "r1",
        DAYS[1],
        DAYS[2],
        &[
            "--policy",
            strict.to_str().unwrap(),
            "--compare",
            "--report-dir",
            report_dir.to_str().unwrap(),
        ],
    ))
    .await;
    assert!(out.status.success(), "replay r1: {:?}", out.status);
    let s = summary(&out);
    assert_eq!(s["complete"], true);
    assert_eq!(s["stats"]["decisions"], PER_DAY as u64);
    // The window ends at the time lookup of `to`: day 3 is not read, only counted.
    assert_eq!(s["stats"]["read"], PER_DAY as u64 + 1);
    assert_eq!(s["stats"]["skipped_after_window"], PER_DAY as u64);
    assert_eq!(s["stats"]["outside_window"], 0);
    // The malformed record is listed with its coordinates and class, and counted.
    assert_eq!(s["stats"]["invalid"], 1);
    let invalid = s["invalid_records"]
        .as_array()
        .expect("invalid_records listed");
    assert_eq!(invalid.len(), 1, "{invalid:?}");
    assert_eq!(invalid[0]["error_class"], "malformed_json");
    assert!(invalid[0]["offset"].as_i64().is_some() && invalid[0]["partition"].as_i64().is_some());
    assert_eq!(
        requests.load(std::sync::atomic::Ordering::Relaxed),
        fetched_live,
        "a re-audit under a new policy with the same model fetches no image again"
    );
    assert_eq!(s["cache"]["misses"], 0, "and analyses none again");
    let r1 = reaudit(&topics, "r1").await;
    assert_eq!(
        unique_events(&r1),
        day_events(1),
        "exactly the events of day 2"
    );
    assert!(r1.iter().all(|d| d.versions.policy.starts_with("strict@")));
    // The report's transitions against the test's own computation from the fixtures.
    let mut want: BTreeMap<(String, String), u64> = BTreeMap::new();
    for i in PER_DAY..2 * PER_DAY {
        let l = listing_of(i);
        let from = default_policy_action(l.fixture, l.market, l.category);
        *want
            .entry((
                from.as_str().into(),
                strict_action(l.fixture).as_str().into(),
            ))
            .or_default() += 1;
    }
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(report_dir.join("report.json")).unwrap()).unwrap();
    let got: BTreeMap<(String, String), u64> = report["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["count"].as_u64() != Some(0))
        .map(|t| {
            (
                (
                    t["from"].as_str().unwrap().to_owned(),
                    t["to"].as_str().unwrap().to_owned(),
                ),
                t["count"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, want, "transition matrix");
    let flips: u64 = want
        .iter()
        .filter(|((f, t), _)| f != t)
        .map(|(_, n)| n)
        .sum();
    assert!(flips > 0);
    assert_eq!(report["flipped"].as_u64(), Some(flips));
    assert_eq!(report["compared"].as_u64(), Some(PER_DAY as u64));
    for f in ["transitions.csv", "flips.csv", "transitions.svg"] {
        assert!(report_dir.join(f).is_file(), "{f} written");
    }

    // A window past the end of the topic: complete, and nothing replayed.
    let out = run_to_end(replay.command(
        "r-past",
        "2026-11-10T00:00:00Z",
        "2026-11-11T00:00:00Z",
        &[],
    ))
    .await;
    assert!(out.status.success());
    let s = summary(&out);
    assert_eq!(
        (s["complete"].clone(), s["stats"]["decisions"].clone()),
        (true.into(), 0.into())
    );
    assert!(reaudit(&topics, "r-past").await.is_empty());

    // Day 1, killed halfway, then resumed.
    let mut child = replay
        .command("r2", DAYS[0], DAYS[1], &["--max-rate", "150"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while reaudit(&topics, "r2").await.len() < 150 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "replay r2 made no progress"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let checkpoint: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join("checkpoints/r2.json")).expect("checkpoint written"),
    )
    .unwrap();
    assert_eq!(checkpoint["complete"], false, "killed before the end");
    let before = reaudit(&topics, "r2").await.len();
    assert!(before < PER_DAY, "killed halfway: {before} decisions");
    let out = run_to_end(replay.command("r2", DAYS[0], DAYS[1], &[])).await;
    assert!(out.status.success(), "resumed replay: {:?}", out.status);
    let r2 = reaudit(&topics, "r2").await;
    assert_eq!(
        unique_events(&r2),
        day_events(0),
        "every event of day 1 exactly once"
    );
    println!(
        "resume: {} decisions before the kill, {} records for {} events after resuming ({} duplicates)",
        before,
        r2.len(),
        PER_DAY,
        r2.len() - PER_DAY
    );
    let out = run_to_end({
        let mut c = guard_command(&topics, "reaudit-report");
        c.args([
            "--run-id",
            "r2",
            "--reaudit-topic",
            &topics.reaudit,
            "--out",
        ])
        .arg(dir.join("report-r2"));
        c
    })
    .await;
    assert!(out.status.success());
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("report-r2/report.json")).unwrap()).unwrap();
    assert_eq!(
        report["replayed_events"].as_u64(),
        Some(PER_DAY as u64),
        "unique events"
    );
    assert_eq!(report["replayed_records"].as_u64(), Some(r2.len() as u64));
    assert_eq!(
        report["flipped"].as_u64(),
        Some(0),
        "same policy, same model"
    );

    // Nothing of the re-audits reached the live topics.
    let (decisions, labels, dead) = (
        collector.seen.decisions.len(),
        collector.seen.labels.len(),
        collector.seen.dead.len(),
    );
    collector.drain(Duration::from_secs(2)).await;
    assert_eq!(
        (
            collector.seen.decisions.len(),
            collector.seen.labels.len(),
            collector.seen.dead.len()
        ),
        (decisions, labels, dead),
        "re-audits write no live decision, label or dead letter"
    );

    // Day 3 at a bounded rate while the live pipeline decides 200 new listings. The replay
    // uses a copy of the cache: the live process holds the original.
    let replay_cache = dir.join("replay-cache.redb");
    std::fs::copy(&cache, &replay_cache).unwrap();
    let live = start_pipeline_with(&topics, &cache_env);
    let new: Vec<_> = (3 * PER_DAY..3 * PER_DAY + 200)
        .map(|i| record(i, &base, None))
        .collect();
    let mut day3 = Replay {
        cache: &replay_cache,
        ..replay
    }
    .command("r3", DAYS[2], DAYS[3], &["--max-rate", "10"]);
    let replaying = tokio::task::spawn_blocking(move || {
        day3.stdout(Stdio::null()).status().expect("replay r3 runs")
    });
    produce_timed(&topics.input, &new).await;
    collector
        .until(Duration::from_secs(120), |c| {
            c.by_event().len() >= 3 * PER_DAY + 200
        })
        .await;
    // At 10 records/s the day-3 replay takes 100 s; the live pipeline (metadata only here)
    // decides its 200 new listings meanwhile, not after it, with a wide margin for a slow CI.
    assert!(
        !replaying.is_finished(),
        "the live pipeline decided 200 new listings only after the day-3 replay had finished"
    );
    live.terminate();
    assert!(replaying.await.unwrap().success());
    assert_eq!(unique_events(&reaudit(&topics, "r3").await), day_events(2));
    assert!(
        collector.seen.decisions.iter().all(|d| d.run_id.is_none()),
        "no replay decision on the live decisions topic"
    );
    std::fs::remove_dir_all(&dir).ok();
}
