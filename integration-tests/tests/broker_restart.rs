//! The broker stops and starts during a stream (once in `make test`, three times at full scale) (sqlite storage, so its data
//! survives): the pipeline reconnects by itself and loses nothing, and its `/readyz` says
//! not-ready while the broker is down and ready again after (`/healthz` stays up).
//!
//! This test owns its broker ([`OwnBroker`]: its own port and state), so it runs in its own test
//! binary and never disturbs the shared one.

use std::time::Duration;

use integration_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restarts_lose_nothing() {
    let broker = OwnBroker::start();
    use_broker(&broker.addr);
    let n = scale(600, 2_000);
    let topics = Topics::fresh("restart");
    topics.create(2).await;
    let records = fixture_listings("restart", n).await;
    produce_all(&topics.input, &records).await;

    let mut collector = Collector::new(&topics);
    let health = format!("127.0.0.1:{}", closed_port());
    let mut pipeline = start_pipeline_with(
        &topics,
        &[
            ("LISTING_GUARD__TELEMETRY__LISTEN", health.clone()),
            // tansu 0.6.0 forgets idempotent-producer state when it restarts and then refuses
            // every produce of that producer ("Unknown broker error") for good; Apache Kafka
            // keeps it. Outputs carry deterministic ids, so retries without idempotence only
            // add recognisable duplicates.
            (
                "LISTING_GUARD__KAFKA__LIBRDKAFKA__ENABLE_IDEMPOTENCE",
                "false".into(),
            ),
            // A dynamic member: after a restart tansu 0.6.0 sometimes revokes a static member's
            // partitions and never reassigns them (seen in CI); a dynamic one rejoins.
            ("LISTING_GUARD__KAFKA__INSTANCE_ID", String::new()),
        ],
    );
    let outage = Duration::from_secs(3);
    // One outage in `make test`, three at full scale (`make test-reliability`).
    let outages = scale(1, 3);
    for k in 1..=outages {
        collector
            .until(Duration::from_secs(300), |c| {
                c.distinct_events.len() >= k * n / (outages + 1)
            })
            .await;
        wait_for_status(&health, "/readyz", 200, Duration::from_secs(60)).await;
        broker.down();
        let down = std::time::Instant::now();
        let why = wait_for_status(&health, "/readyz", 503, Duration::from_secs(20)).await;
        // Unreachable, or the assignment already lost with the session: either way not ready.
        assert!(why.starts_with("not ready"), "{why}");
        tokio::time::sleep(outage.saturating_sub(down.elapsed())).await;
        assert!(
            pipeline.is_running(),
            "the pipeline exited while the broker was down"
        );
        assert_eq!(http_get(&health, "/healthz").await.map(|r| r.0), Some(200));
        broker.up();
    }
    wait_for_status(&health, "/readyz", 200, Duration::from_secs(60)).await;
    collector
        .until(Duration::from_secs(600), |c| c.distinct_events.len() >= n)
        .await;
    pipeline.terminate();
    collector.drain(Duration::from_secs(3)).await;
    let duplicates = collector.seen.assert_duplicates_identical();
    eprintln!(
        "broker restarts: {n} listings, {outages} outages of {outage:?}, {} decisions, {duplicates} duplicates",
        collector.seen.decisions.len()
    );
    assert_eq!(collector.seen.distinct_events.len(), n);
}
