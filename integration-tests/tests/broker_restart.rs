//! The broker stops and starts three times during a stream (sqlite storage, so its data
//! survives): the pipeline reconnects by itself and loses nothing.
//!
//! This test owns its broker ([`OwnBroker`]: its own port and state), so it runs in its own test
//! binary and never disturbs the shared one.

use std::time::Duration;

use integration_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_broker_restarts_lose_nothing() {
    let broker = OwnBroker::start();
    use_broker(&broker.addr);
    let n = scale(600, 2_000);
    let topics = Topics::fresh("restart");
    topics.create(2).await;
    let records = fixture_listings("restart", n).await;
    produce_all(&topics.input, &records).await;

    let mut collector = Collector::new(&topics);
    let mut pipeline = start_pipeline(&topics);
    let outage = Duration::from_secs(3);
    for k in 1..=3 {
        collector
            .until(Duration::from_secs(300), |c| {
                c.distinct_events.len() >= k * n / 4
            })
            .await;
        broker.down();
        tokio::time::sleep(outage).await;
        assert!(
            pipeline.is_running(),
            "the pipeline exited while the broker was down"
        );
        broker.up();
    }
    collector
        .until(Duration::from_secs(600), |c| c.distinct_events.len() >= n)
        .await;
    pipeline.terminate();
    collector.drain(Duration::from_secs(3)).await;
    let duplicates = collector.seen.assert_duplicates_identical();
    eprintln!(
        "broker restarts: {n} listings, 3 outages of {outage:?}, {} decisions, {duplicates} duplicates",
        collector.seen.decisions.len()
    );
    assert_eq!(collector.seen.distinct_events.len(), n);
}
