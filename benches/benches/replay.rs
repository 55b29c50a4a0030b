//! `make bench-replay`: re-audit throughput with a warm score cache, side by side with the
//! broker's own read throughput on the same topic (a plain consumer that only reads), which
//! bounds what any replay can reach on this broker.
//!
//! Needs a broker at `KAFKA_BROKERS` (the Makefile target starts tansu). Loads
//! `BENCH_REPLAY_EVENTS` listings (default 20,000; one image each, ten distinct images as
//! re-posted pictures), runs one replay to fill the cache, then measures:
//! - read only: consume the window, nothing else;
//! - replay: the same window through `listing_guard::replay::run` (parse, cache lookups, policy,
//!   decision, produce and await the broker's acknowledgement), warm cache, provenance detector
//!   only (the cache makes the model irrelevant to this figure).
//!
//! - replay core, no broker: the same per-record work on the payloads held in memory (what our
//!   code could do with an infinitely fast broker).
//!
//! Prints events/s for each and `ratio replay/read-only: X.XX`.

use std::time::{Duration, Instant};

use integration_tests::{brokers, produce_timed, Topics};
use lg_events::SourceCoordinates;
use listing_guard::config::Settings;
use listing_guard::fixtures::Fixture;
use listing_guard::process::{InputRecord, Mode, Outcome};
use listing_guard::replay::{ReplayArgs, ReplayStats};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// 2026-11-02T00:00:00Z.
const DAY_MS: i64 = 1_793_577_600_000;

fn settings(topics: &Topics, cache: &std::path::Path) -> Settings {
    let mut s = Settings::load(None).expect("defaults load");
    s.kafka.brokers = brokers();
    s.kafka.input_topic = topics.input.clone();
    s.kafka.decisions_topic = topics.decisions.clone();
    s.kafka.labels_topic = topics.labels.clone();
    s.kafka.dlq_topic = topics.dlq.clone();
    s.fetch.allowed_networks = vec!["127.0.0.0/8".into()];
    listing_guard::config::NO_MODEL.clone_into(&mut s.detector.model_dir);
    s.cache.path = cache.display().to_string();
    s.pipeline.max_in_flight = 512;
    s
}

async fn replay(
    s: &Settings,
    topics: &Topics,
    run_id: &str,
    dir: &std::path::Path,
) -> (ReplayStats, f64) {
    let mut processor = listing_guard::pipeline::build_processor(s).expect("processor");
    processor.mode = Mode::Replay {
        run_id: run_id.into(),
        trust_cached_urls: true,
    };
    let args = ReplayArgs {
        from: chrono::DateTime::from_timestamp_millis(DAY_MS).unwrap(),
        to: chrono::DateTime::from_timestamp_millis(DAY_MS + 86_400_000).unwrap(),
        output_topic: topics.reaudit.clone(),
        max_rate: None,
        run_id: run_id.into(),
        refetch: false,
        checkpoint_dir: dir.join("checkpoints"),
    };
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let start = Instant::now();
    let (stats, cp) = listing_guard::replay::run(s, processor, &args, rx)
        .await
        .expect("replay runs");
    assert!(cp.complete);
    (stats, start.elapsed().as_secs_f64())
}

/// The replay's per-record work without the broker: the same processor (warm cache) on the same
/// payloads held in memory, `max_in_flight` at a time, each decision serialised as it would be
/// produced.
async fn core_only(s: &Settings, payloads: &[Vec<u8>]) -> f64 {
    let mut processor = listing_guard::pipeline::build_processor(s).expect("processor");
    processor.mode = Mode::Replay {
        run_id: "core".into(),
        trust_cached_urls: true,
    };
    let start = Instant::now();
    let mut bytes = 0usize;
    for chunk in payloads.chunks(s.pipeline.max_in_flight) {
        let outcomes = futures::future::join_all(chunk.iter().enumerate().map(|(i, p)| {
            let rec = InputRecord::new(
                SourceCoordinates {
                    topic: "t".into(),
                    partition: 0,
                    offset: i as i64,
                },
                None,
                Some(p.clone()),
                None,
            );
            let processor = &processor;
            async move { processor.process(&rec).await }
        }))
        .await;
        for o in outcomes {
            match o {
                Outcome::Decided(d, _) => bytes += serde_json::to_vec(&d).unwrap().len(),
                Outcome::Dead(_) => panic!("all payloads are valid"),
            }
        }
    }
    assert!(bytes > 0);
    payloads.len() as f64 / start.elapsed().as_secs_f64()
}

async fn read_only(topic: &str) -> (u64, f64) {
    let timeout = Duration::from_secs(10);
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", "bench-read-only")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    let start = Instant::now();
    let md = consumer.fetch_metadata(Some(topic), timeout).unwrap();
    let mut tpl = TopicPartitionList::new();
    let mut open = 0;
    for p in md.topics()[0].partitions() {
        tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
            .unwrap();
        open += 1;
    }
    consumer.assign(&tpl).unwrap();
    let mut n = 0u64;
    while open > 0 {
        match consumer.recv().await {
            Ok(_) => n += 1,
            Err(KafkaError::PartitionEOF(_)) => open -= 1,
            Err(e) => panic!("read: {e}"),
        }
    }
    (n, start.elapsed().as_secs_f64())
}

fn main() {
    let n: usize = std::env::var("BENCH_REPLAY_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let base = listing_guard::demo::serve_fixtures(11).await.unwrap();
        let topics = Topics::fresh("bench-replay");
        topics.create(2).await;
        let records: Vec<_> = (0..n)
            .map(|i| {
                let f = Fixture::ALL[i % Fixture::ALL.len()];
                let url = format!("{base}/img/{}", f.name());
                let market = ["taobao", "tmall", "xianyu"][i % 3];
                (
                    format!("k{i}"),
                    integration_tests::listing(&format!("evt-{i}"), market, "apparel", &[url]),
                    Some(DAY_MS + (i as i64) * 3),
                )
            })
            .collect();
        produce_timed(&topics.input, &records).await;
        let dir = std::env::temp_dir().join(format!("lg-bench-replay-{}", std::process::id()));
        std::fs::remove_dir_all(&dir).ok();
        let s = settings(&topics, &dir.join("cache.redb"));
        println!(
            "{n} listings on {} (2 partitions), broker {}",
            topics.input,
            brokers()
        );

        let (first, t_first) = replay(&s, &topics, "fill", &dir).await;
        assert_eq!(first.decisions as usize, n);
        println!(
            "first replay (fills the cache):  {:>9.0} events/s",
            n as f64 / t_first
        );
        let (read, t_read) = read_only(&topics.input).await;
        assert_eq!(read as usize, n);
        let (warm, t_warm) = replay(&s, &topics, "warm", &dir).await;
        assert_eq!(warm.decisions as usize, n);
        let (r, w) = (n as f64 / t_read, n as f64 / t_warm);
        let payloads: Vec<Vec<u8>> = records.iter().map(|(_, p, _)| p.clone()).collect();
        let core = core_only(&s, &payloads).await;
        println!("read only (broker floor):         {r:>9.0} events/s");
        println!("replay, warm cache:               {w:>9.0} events/s");
        println!("replay core, no broker:           {core:>9.0} events/s");
        println!("ratio replay/read-only: {:.2}", w / r);
        std::fs::remove_dir_all(&dir).ok();
    });
}
