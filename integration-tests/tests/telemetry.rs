//! The telemetry server of a running pipeline: liveness, readiness and the Prometheus scrape
//! endpoint, whose counters match what reached the output topics.

use std::time::Duration;

use integration_tests::*;
use listing_guard::fixtures::Fixture;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_was_produced_and_probes_answer() {
    let base = serve_fixtures(4).await;
    let topics = Topics::fresh("telemetry");
    topics.create(2).await;
    let n = 40;
    let mut records: Vec<(String, Vec<u8>)> = (0..n)
        .map(|i| {
            let f = Fixture::ALL[i % Fixture::ALL.len()];
            let url = format!("{base}/img/{}", f.name());
            let market = ["taobao", "xianyu"][i % 2];
            (
                format!("k{i}"),
                listing(&format!("tel-{i}"), market, "apparel", &[url]),
            )
        })
        .collect();
    let bad = 5;
    records.extend((0..bad).map(|i| (format!("bad{i}"), b"{not json".to_vec())));
    produce_all(&topics.input, &records).await;

    let addr = format!("127.0.0.1:{}", closed_port());
    let pipeline = start_pipeline_with(
        &topics,
        &[("LISTING_GUARD__TELEMETRY__LISTEN", addr.clone())],
    );
    wait_for_status(&addr, "/healthz", 200, Duration::from_secs(30)).await;
    let mut collector = Collector::new(&topics);
    collector
        .until(Duration::from_secs(120), |c| {
            c.decisions.len() >= n && c.dead.len() >= bad
        })
        .await;
    let ready = wait_for_status(&addr, "/readyz", 200, Duration::from_secs(30)).await;
    assert!(ready.contains("partitions assigned"), "{ready}");

    // Counters are bumped right after the broker's acknowledgement; give the last one a moment.
    let total = (n + bad) as f64;
    let mut text = String::new();
    for _ in 0..20 {
        text = http_get(&addr, "/metrics")
            .await
            .expect("/metrics answers")
            .1;
        if metric(&text, "lg_end_to_end_seconds_count") == Some(total) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    pipeline.terminate();

    assert_eq!(
        metric(&text, "lg_records_consumed_total"),
        Some(total),
        "{text}"
    );
    assert_eq!(metric_sum(&text, "lg_decisions_total"), n as f64, "{text}");
    let blocked = collector
        .seen
        .decisions
        .iter()
        .filter(|d| d.action == lg_events::Action::Block)
        .count();
    assert_eq!(
        metric(
            &text,
            "lg_decisions_total{action=\"block\",marketplace=\"xianyu\"}"
        ),
        Some(blocked as f64),
        "{text}"
    );
    assert_eq!(
        metric(&text, "lg_dead_letters_total{class=\"malformed_json\"}"),
        Some(bad as f64),
        "{text}"
    );
    assert_eq!(
        metric(&text, "lg_end_to_end_seconds_count"),
        Some(total),
        "{text}"
    );
    assert!(
        metric(&text, "lg_detector_batch_size_count").unwrap_or(0.0) > 0.0,
        "{text}"
    );
    assert!(
        metric(&text, "lg_detector_batch_seconds_count").unwrap_or(0.0) > 0.0,
        "{text}"
    );
    assert!(!text.contains("tel-"), "no event or listing ids as labels");
}
