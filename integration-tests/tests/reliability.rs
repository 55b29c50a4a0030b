//! Crashes, rebalances and graceful shutdown, with the pipeline as a separate process on the
//! real broker. Nothing is lost; every duplicate is the same decision.
//!
//! `LG_RELIABILITY=full` (`make test-reliability`) runs the full scale: 5,000 listings and 20
//! SIGKILLs, and 2,000 listings for the rebalance. `make test` runs a reduced scale.

use std::time::Duration;

use integration_tests::*;

/// A small deterministic generator for the kill moments (the seed is printed).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n.max(1)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_storm_loses_nothing() {
    let n = scale(600, 5_000);
    // Three kills in `make test` (each restart waits ~6 s for tansu's held JoinGroup and
    // SyncGroup), twenty at full scale.
    let kills = scale(3, 20);
    let topics = Topics::fresh("storm");
    topics.create(3).await;
    let records = fixture_listings("storm", n).await;
    produce_all(&topics.input, &records).await;

    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut rng = Lcg(seed);
    let mut collector = Collector::new(&topics);
    // Each instance serves /healthz, so the final SIGTERM waits until the last one has started
    // (a signal before a process reaches `main` takes the default action, as for any program).
    let start = || {
        let addr = format!("127.0.0.1:{}", closed_port());
        let child = start_pipeline_with(
            &topics,
            &[("LISTING_GUARD__TELEMETRY__LISTEN", addr.clone())],
        );
        (child, addr)
    };
    let (mut child, mut addr) = start();
    let step = n / (kills + 1);
    for k in 1..=kills {
        // Kill somewhere in the k-th slice of the stream, then after a random extra moment.
        let at = k * step + rng.below(step as u64 / 2) as usize;
        collector
            .until(Duration::from_secs(300), |c| c.distinct_events.len() >= at)
            .await;
        tokio::time::sleep(Duration::from_millis(rng.below(400))).await;
        child.kill();
        (child, addr) = start();
    }
    collector
        .until(Duration::from_secs(600), |c| c.distinct_events.len() >= n)
        .await;
    wait_for_status(&addr, "/healthz", 200, Duration::from_secs(60)).await;
    child.terminate();
    collector.drain(Duration::from_secs(3)).await;

    let seen = &collector.seen;
    assert_eq!(seen.distinct_events.len(), n, "every event has a decision");
    let duplicates = seen.assert_duplicates_identical();
    eprintln!(
        "SIGKILL storm (seed {seed}): {n} listings, {kills} kills, {} decisions, {duplicates} duplicates ({:.1}%)",
        seen.decisions.len(),
        100.0 * duplicates as f64 / n as f64
    );
}

/// A SIGTERM right after start (while it connects and joins the group) stops the pipeline
/// cleanly: exit status 0, not death by the signal. (Start-up to the handlers takes ~10 ms
/// without a model, so this guards against handlers installed late, e.g. after the model
/// load or the first assignment; the few milliseconds before `main` cannot be tested.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigterm_right_after_start_stops_cleanly() {
    let topics = Topics::fresh("early-term");
    topics.create(1).await;
    for delay_ms in [50, 150] {
        let pipeline = start_pipeline(&topics);
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        // terminate_within asserts a successful exit within the bound.
        pipeline.terminate_within(Duration::from_secs(30));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_within_the_bound_and_restart_has_no_duplicates() {
    let n = scale(600, 2_000);
    let topics = Topics::fresh("sigterm");
    topics.create(2).await;
    let records = fixture_listings("sigterm", n).await;
    produce_all(&topics.input, &records).await;
    let bound_ms = 5_000u64;
    let env = [(
        "LISTING_GUARD__PIPELINE__SHUTDOWN_TIMEOUT_MS",
        bound_ms.to_string(),
    )];

    let mut collector = Collector::new(&topics);
    let first = start_pipeline_with(&topics, &env);
    collector
        .until(Duration::from_secs(180), |c| {
            c.distinct_events.len() >= n / 3
        })
        .await;
    // The drain bound, plus the slack of stopping the clients (final commit, producer flush).
    let took = first.terminate_within(Duration::from_millis(bound_ms + 10_000));
    let at_stop = collector.seen.distinct_events.len();
    assert!(at_stop < n, "SIGTERM must land mid-stream");

    let second = start_pipeline_with(&topics, &env);
    collector
        .until(Duration::from_secs(300), |c| c.distinct_events.len() >= n)
        .await;
    second.terminate();
    collector.drain(Duration::from_secs(3)).await;
    let duplicates = collector.seen.assert_duplicates_identical();
    eprintln!(
        "SIGTERM: exited in {took:?} (bound {bound_ms} ms), {at_stop} of {n} decided before, {duplicates} duplicates"
    );
    assert_eq!(
        duplicates, 0,
        "a graceful stop commits exactly what is done"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_instance_joining_and_leaving_loses_nothing() {
    let n = scale(800, 2_000);
    let topics = Topics::fresh("rebalance");
    topics.create(4).await;
    let records = fixture_listings("rebalance", n).await;
    let (first_half, second_half) = records.split_at(n / 2);
    produce_all(&topics.input, first_half).await;

    let mut collector = Collector::new(&topics);
    let a_log = std::env::temp_dir().join(format!("{}.a.log", topics.group));
    let a = start_pipeline_logged(&topics, &[], &a_log);
    collector
        .until(Duration::from_secs(180), |c| {
            c.distinct_events.len() >= n / 5
        })
        .await;
    let log = std::env::temp_dir().join(format!("{}.b.log", topics.group));
    // The second instance is a dynamic member, so that it leaves the group when it stops (a
    // static member does not, and tansu 0.6.0 never reassigns a departed static member's
    // partitions; Apache Kafka does after session.timeout.ms).
    let b = start_pipeline_logged(
        &topics,
        &[("LISTING_GUARD__KAFKA__INSTANCE_ID", String::new())],
        &log,
    );
    wait_for_assignment(&log, Duration::from_secs(90)).await;
    // The second half arrives while both instances share the partitions.
    produce_all(&topics.input, second_half).await;
    collector
        .until(Duration::from_secs(180), |c| {
            c.distinct_events.len() >= n / 2 + n / 8
        })
        .await;
    b.terminate();
    collector
        .until(Duration::from_secs(300), |c| c.distinct_events.len() >= n)
        .await;
    a.terminate();
    collector.drain(Duration::from_secs(3)).await;

    let text = std::fs::read_to_string(&log).unwrap();
    let b_decisions: u64 = text
        .lines()
        .find_map(|l| l.split("decisions: ").nth(1))
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no run stats in the second instance's log:\n{text}"));
    let duplicates = collector.seen.assert_duplicates_identical();
    eprintln!(
        "rebalance: {n} listings, second instance decided {b_decisions}, {duplicates} duplicates"
    );
    assert!(
        b_decisions > 0,
        "the second instance got partitions and did work"
    );
    assert_eq!(collector.seen.distinct_events.len(), n);
    // The first instance gave partitions up when the second joined, and forgot their
    // positions then (its records of them still in flight store nothing).
    let a_text = std::fs::read_to_string(&a_log).unwrap();
    assert!(
        a_text
            .lines()
            .any(|l| l.contains("partitions revoked; their positions are forgotten")),
        "the first instance logged no revocation:\n{a_text}"
    );
}

/// Waits until the instance logging to `log` has been assigned partitions.
async fn wait_for_assignment(log: &std::path::Path, timeout: Duration) {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text
            .lines()
            .any(|l| l.contains("rebalance done") && l.contains("Assign([TopicPartitionListElem"))
        {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the second instance was not assigned partitions within {timeout:?}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
