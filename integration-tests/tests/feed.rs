//! `listing-guard feed` (what `deploy/docker-compose.yml` runs beside the pipeline) against the
//! real broker: its listings and its images carry the pipeline end to end.

use std::process::{Command, Stdio};
use std::time::Duration;

use integration_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feeder_drives_the_pipeline_end_to_end() {
    let topics = Topics::fresh("feed");
    topics.create(1).await;
    // One round of the samples (12) and its malformed event, then one more sample.
    let mut feeder = Command::new(binary())
        .args(["feed", "--brokers", &brokers(), "--topic", &topics.input])
        .args([
            "--listen",
            "127.0.0.1:0",
            "--count",
            "14",
            "--interval-ms",
            "0",
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("feed starts");
    let pipeline = start_pipeline(&topics);
    let mut collector = Collector::new(&topics);
    collector
        .until(Duration::from_secs(90), |c| {
            c.decisions.len() >= 13 && !c.dead.is_empty() && !c.labels.is_empty()
        })
        .await;
    pipeline.terminate();
    let _ = feeder.kill();
    let _ = feeder.wait();

    let seen = &collector.seen;
    assert_eq!(seen.dead.len(), 1, "one malformed event per round");
    assert_eq!(seen.distinct_events.len(), 13, "fresh event ids");
    // The clean photo was fetched from the feeder and allowed; the declared AI images were
    // fetched and flagged; the unreachable and hostile URLs failed as they should.
    let by_title = |n: usize| {
        seen.decisions
            .iter()
            .find(|d| d.event_id == format!("feed-evt-{n}"))
            .unwrap_or_else(|| panic!("feed-evt-{n}"))
    };
    assert_eq!(by_title(0).action, lg_events::Action::Allow);
    assert!(by_title(0).images[0].failure.is_none());
    assert_eq!(
        by_title(4).action,
        lg_events::Action::Block,
        "A1111 on xianyu"
    );
    assert!(
        by_title(10).images[0].failure.is_some(),
        "unreachable server"
    );
    assert_eq!(
        by_title(11).images[0].failure.as_ref().unwrap().class,
        "forbidden_address"
    );
}
