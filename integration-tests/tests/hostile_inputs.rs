//! The hostile input corpus (`integration_tests::hostile`) through the real pipeline process
//! and the real broker: every case lands where it must (a dead letter of the right class, or a
//! `review` decision naming the right image failure, or a scored decision for the unusual but
//! valid images), no forbidden address is ever connected to, the pipeline stays up and still
//! decides a normal listing afterwards, and its peak RSS stays under the documented bound.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use integration_tests::hostile::{self, Case, Expect, HostileServer};
use integration_tests::*;
use lg_events::{Action, ModerationDecision};

/// Peak RSS bound for the pipeline process over the whole corpus (README, "Limits").
const PEAK_RSS_BOUND_MIB: u64 = 512;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_corpus_lands_where_it_must_and_the_pipeline_stays_up() {
    let corpus = listing_guard::fixtures::shared_corpus();
    let server = HostileServer::start(hostile::images(corpus.as_deref())).await;
    // A canary on 127.0.0.1 at the same port: the loopback spellings point at it, and nothing
    // may ever connect.
    let canary = tokio::net::TcpListener::bind(("127.0.0.1", server.port))
        .await
        .expect("canary binds 127.0.0.1 at the hostile server's port");
    let canary_hits = Arc::new(AtomicU64::new(0));
    let ch = Arc::clone(&canary_hits);
    tokio::spawn(async move {
        while canary.accept().await.is_ok() {
            ch.fetch_add(1, Ordering::Relaxed);
        }
    });

    let cases = hostile::cases(&server.base, server.port, corpus.is_some());
    assert!(cases.len() >= 40, "{} cases", cases.len());
    let topics = Topics::fresh("hostile");
    topics.create(2).await;
    let records: Vec<(String, Vec<u8>)> = cases
        .iter()
        .flat_map(|c| c.payloads.iter().map(|p| (c.name.clone(), p.clone())))
        .collect();
    produce_all(&topics.input, &records).await;

    // The shipped model, as the pipeline runs by default.
    let model_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/residual-lr");
    let mut pipeline = start_pipeline_with(
        &topics,
        &[
            (
                "LISTING_GUARD__FETCH__ALLOWED_NETWORKS",
                format!("{}/32", hostile::SERVER_IP),
            ),
            ("LISTING_GUARD__DETECTOR__MODEL_DIR", model_dir.to_owned()),
        ],
    );
    let mut collector = Collector::new(&topics);
    let wanted_decisions: usize = cases
        .iter()
        .filter(|c| !matches!(c.expect, Expect::DeadLetter(_)))
        .map(|c| c.payloads.len())
        .sum();
    let wanted_dead = records.len() - wanted_decisions;
    let complete = collector
        .try_until(Duration::from_secs(90), |c| {
            c.decisions.len() >= wanted_decisions && c.dead.len() >= wanted_dead
        })
        .await;
    assert!(pipeline.is_running(), "the pipeline died during the corpus");
    if !complete {
        report(&cases, &collector.seen);
        panic!("timed out waiting for the outputs of the corpus");
    }

    // Still deciding normal traffic after all of that.
    let after = listing(
        "after-corpus",
        "taobao",
        "apparel",
        &[format!("{}/img/clean.jpg", server.base)],
    );
    produce_all(&topics.input, &[("after".into(), after)]).await;
    collector
        .until(Duration::from_secs(60), |c| {
            c.decisions.iter().any(|d| d.event_id == "after-corpus")
        })
        .await;
    let rss = peak_rss_mib(pipeline.pid().expect("running"));
    pipeline.terminate();
    collector.drain(Duration::from_secs(2)).await;

    let seen = &collector.seen;
    // Normal traffic after the corpus is decided as the same image was during it: scored by
    // the model, the same probability and action (the fixture is a synthetic pattern, which
    // the model may well send to review; what matters is that nothing carried over).
    let decided = |id: &str| {
        let d = seen.decisions.iter().find(|d| d.event_id == id);
        let d = d.unwrap_or_else(|| panic!("no decision for {id}"));
        let score = d.images[0].signals.model.as_ref().map(|m| m.ai_probability);
        (d.action, score)
    };
    let (after_action, after_score) = decided("after-corpus");
    assert!(after_score.is_some(), "the model did not score the image");
    assert_ne!(after_action, Action::Block);
    assert_eq!(
        (after_action, after_score),
        decided("hostile-duplicate-same-payload")
    );

    let failures = report(&cases, seen);
    assert!(
        failures.is_empty(),
        "cases failed:\n{}",
        failures.join("\n")
    );

    assert_eq!(
        canary_hits.load(Ordering::Relaxed),
        0,
        "a forbidden loopback address was connected to"
    );
    // 404 is final; 500 and 429 are retried (max_attempts = 2 in these tests).
    assert_eq!(server.hits("/status/404"), 1);
    assert_eq!(server.hits("/status/500"), 2);
    assert_eq!(server.hits("/status/429"), 2);
    assert!(server.hits("/redirect-loop") >= 3, "the loop was followed");
    eprintln!(
        "hostile corpus: {} cases, {} records, peak RSS {rss} MiB (bound {PEAK_RSS_BOUND_MIB} MiB)",
        cases.len(),
        records.len()
    );
    assert!(
        rss < PEAK_RSS_BOUND_MIB,
        "peak RSS {rss} MiB is over the documented bound of {PEAK_RSS_BOUND_MIB} MiB"
    );
}

/// Checks every case against what was collected, prints a table, returns the failures.
fn report(cases: &[Case], seen: &Collected) -> Vec<String> {
    let mut dead_by_key: HashMap<String, Vec<&lg_events::DeadLetter>> = HashMap::new();
    for (dl, _) in &seen.dead {
        let key = dl
            .original_key()
            .map(|k| String::from_utf8(k.expect("key is base64")).expect("keys are text"))
            .unwrap_or_default();
        dead_by_key.entry(key).or_default().push(dl);
    }
    let by_event = seen.by_event();
    let mut failures = Vec::new();
    for case in cases {
        let decisions = by_event
            .get(format!("hostile-{}", case.name).as_str())
            .cloned()
            .unwrap_or_default();
        let dead = dead_by_key.get(&case.name).cloned().unwrap_or_default();
        let got = check(case, &decisions, &dead);
        eprintln!(
            "{:<26} {:<48} {}",
            case.name,
            format!("{:?}", case.expect),
            got.as_ref().err().map_or("ok", String::as_str)
        );
        if let Err(e) = got {
            failures.push(format!("{}: {e}", case.name));
        }
    }
    failures
}

fn check(
    case: &Case,
    decisions: &[&ModerationDecision],
    dead: &[&lg_events::DeadLetter],
) -> Result<(), String> {
    match &case.expect {
        Expect::DeadLetter(class) => {
            if !decisions.is_empty() {
                return Err(format!("{} decisions, expected none", decisions.len()));
            }
            let [dl] = dead else {
                return Err(format!("{} dead letters, expected 1", dead.len()));
            };
            if dl.error_class.as_str() != *class {
                return Err(format!("dead letter class {}", dl.error_class.as_str()));
            }
            if dl.error_message.is_empty() {
                return Err("dead letter without a message".into());
            }
            let size = case.payloads[0].len() as u64;
            if dl.payload_size != size
                || dl.payload_sha256 != lg_events::sha256_hex(&case.payloads[0])
            {
                return Err("dead letter does not name the original payload".into());
            }
            if !dl.payload_truncated
                && dl.original_payload().ok().as_deref() != Some(&case.payloads[0][..])
            {
                return Err("dead letter lost the payload".into());
            }
            Ok(())
        }
        expect => {
            if !dead.is_empty() {
                return Err(format!(
                    "{} dead letters: {:?}",
                    dead.len(),
                    dead[0].error_message
                ));
            }
            if decisions.len() != case.payloads.len() {
                return Err(format!(
                    "{} decisions, expected {}",
                    decisions.len(),
                    case.payloads.len()
                ));
            }
            let d = decisions[0];
            let img = &d.images[0];
            match expect {
                Expect::ImageFailed(class, text) => {
                    let Some(f) = &img.failure else {
                        return Err(format!("no image failure; action {:?}", d.action));
                    };
                    if f.class != *class || !f.message.to_lowercase().contains(&text.to_lowercase())
                    {
                        return Err(format!("image failure {} ({})", f.class, f.message));
                    }
                    if d.action != Action::Review {
                        return Err(format!("action {:?}, expected review", d.action));
                    }
                    let code = d
                        .reasons
                        .iter()
                        .map(|r| r.code.as_str())
                        .collect::<Vec<_>>();
                    if !code
                        .iter()
                        .any(|c| c.starts_with("IMAGE_") && c.ends_with("_FAILED"))
                    {
                        return Err(format!("reasons {code:?} do not name the image failure"));
                    }
                    Ok(())
                }
                Expect::Scored(dims) | Expect::Decoded(dims) => {
                    if let Some(f) = &img.failure {
                        return Err(format!("rejected: {} ({})", f.class, f.message));
                    }
                    if img.dimensions != Some(*dims) {
                        return Err(format!("dimensions {:?}", img.dimensions));
                    }
                    if matches!(expect, Expect::Scored(_)) && img.signals.model.is_none() {
                        return Err("decoded but not scored by the model".into());
                    }
                    Ok(())
                }
                Expect::DecidedSameId => {
                    if decisions.iter().any(|x| x.decision_id != d.decision_id) {
                        return Err("duplicates carry different decision ids".into());
                    }
                    Ok(())
                }
                Expect::DeadLetter(_) => unreachable!(),
            }
        }
    }
}

/// Peak resident set size (`VmHWM`) of a process, in MiB.
fn peak_rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    kb / 1024
}

/// A decision the broker refuses for good (here: over the producer's `message.max.bytes`) goes
/// to the dead-letter topic as `output_rejected`, cut down to fit; the partition moves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_decision_is_dead_lettered_and_the_partition_moves_on() {
    use listing_guard::fixtures::Fixture;
    let images = HashMap::from([("clean.jpg".to_owned(), Fixture::CleanJpeg.bytes(1))]);
    let base = listing_guard::demo::serve_images(images).await.unwrap();
    let topics = Topics::fresh("refused");
    topics.create(1).await;
    // 25 images make a decision (and a dead letter carrying the payload) over 6,000 bytes.
    let urls: Vec<String> = (0..25)
        .map(|i| format!("{base}/img/clean.jpg?{i}"))
        .collect();
    let big = listing("refused-big", "taobao", "apparel", &urls);
    let small = listing("refused-small", "taobao", "apparel", &urls[..1]);
    produce_all(
        &topics.input,
        &[("big".into(), big.clone()), ("small".into(), small)],
    )
    .await;
    let pipeline = start_pipeline_with(
        &topics,
        &[(
            "LISTING_GUARD__KAFKA__LIBRDKAFKA__MESSAGE_MAX_BYTES",
            "6000".into(),
        )],
    );
    let mut collector = Collector::new(&topics);
    collector
        .until(Duration::from_secs(60), |c| {
            !c.dead.is_empty() && c.decisions.iter().any(|d| d.event_id == "refused-small")
        })
        .await;
    pipeline.terminate();
    let (dl, headers) = &collector.seen.dead[0];
    assert_eq!(dl.error_class, lg_events::DeadLetterClass::OutputRejected);
    assert_eq!(headers["lg-error-class"], "output_rejected");
    assert!(dl.error_message.contains("refused"), "{}", dl.error_message);
    assert_eq!(dl.source.offset, 0);
    assert_eq!(dl.payload_size, big.len() as u64);
    assert_eq!(dl.payload_sha256, lg_events::sha256_hex(&big));
    assert!(dl.payload_truncated, "the full copy is over the limit too");
    assert!(collector
        .seen
        .decisions
        .iter()
        .all(|d| d.event_id == "refused-small"));
}
