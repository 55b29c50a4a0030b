//! Kill the pipeline (SIGKILL) mid-stream and restart it: nothing is lost, and duplicates carry
//! the same decision id.

use std::collections::HashMap;
use std::time::Duration;

use integration_tests::*;
use listing_guard::fixtures::Fixture;

const N: usize = 400;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_and_restart_loses_nothing() {
    let images: HashMap<String, Vec<u8>> = Fixture::ALL
        .iter()
        .map(|f| (f.name().to_owned(), f.bytes(5)))
        .collect();
    let base = listing_guard::demo::serve_images(images).await.unwrap();
    let topics = Topics::fresh("crash");
    topics.create(2).await;
    let records: Vec<(String, Vec<u8>)> = (0..N)
        .map(|i| {
            let f = Fixture::ALL[i % Fixture::ALL.len()];
            let urls = vec![
                format!("{base}/img/{}", f.name()),
                format!("{base}/img/{}", Fixture::CleanPng.name()),
            ];
            (
                format!("k{i}"),
                listing(
                    &format!("crash-{i:04}"),
                    ["taobao", "xianyu"][i % 2],
                    "apparel",
                    &urls,
                ),
            )
        })
        .collect();
    produce_all(&topics.input, &records).await;

    let mut collector = Collector::new(&topics);
    let mut child = start_pipeline(&topics);
    collector
        .until(Duration::from_secs(180), |c| c.decisions.len() >= N / 5)
        .await;
    child.kill();
    let before_restart = collector.seen.decisions.len();
    assert!(
        before_restart < N,
        "the kill must land mid-stream (saw {before_restart} of {N})"
    );

    let child = start_pipeline(&topics);
    collector
        .until(Duration::from_secs(300), |c| c.by_event().len() >= N)
        .await;
    child.terminate();
    collector.drain(Duration::from_secs(3)).await;

    let by_event = collector.seen.by_event();
    assert_eq!(by_event.len(), N, "every event has a decision");
    let mut duplicates = 0;
    for (event, ds) in &by_event {
        let first = &ds[0].decision_id;
        assert!(
            ds.iter().all(|d| &d.decision_id == first),
            "{event}: duplicates with different decision ids"
        );
        assert!(
            ds.iter().all(|d| d.action == ds[0].action),
            "{event}: duplicates with different actions"
        );
        duplicates += ds.len() - 1;
    }
    eprintln!(
        "crash/restart: {N} events, {} decisions, {duplicates} duplicates ({:.1}%), killed after {before_restart}",
        collector.seen.decisions.len(),
        100.0 * duplicates as f64 / N as f64
    );
}
