//! The telemetry of a running pipeline: liveness, readiness and the Prometheus scrape endpoint,
//! whose counters match what reached the output topics; the same metrics pushed over OTLP; and
//! spans over OTLP that continue each input's trace.

use std::time::Duration;

use integration_tests::*;
use listing_guard::fixtures::Fixture;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_was_produced_and_probes_answer() {
    let base = listing_guard::demo::serve_fixtures(4).await.unwrap();
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
    let otlp = integration_tests::otlp::OtlpReceiver::start().await;
    let pipeline = start_pipeline_with(
        &topics,
        &[
            ("LISTING_GUARD__TELEMETRY__LISTEN", addr.clone()),
            (
                "LISTING_GUARD__TELEMETRY__OTLP_ENDPOINT",
                otlp.endpoint.clone(),
            ),
            (
                "LISTING_GUARD__TELEMETRY__OTLP_METRICS_INTERVAL_MS",
                "200".into(),
            ),
            (
                "LISTING_GUARD__TELEMETRY__SERVICE_NAME",
                "lg-metrics-test".into(),
            ),
        ],
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
    // The consumer lag is pushed as a gauge per assigned partition (librdkafka's statistics come
    // every 2 s).
    let lag_pushed = |otlp: &integration_tests::otlp::OtlpReceiver| {
        otlp.metric_exports().iter().any(|(_, metrics)| {
            integration_tests::otlp::prometheus_view(metrics)
                .keys()
                .any(|k| k.starts_with("lg_consumer_lag{") && k.contains(&topics.input))
        })
    };
    for _ in 0..100 {
        if lag_pushed(&otlp) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(lag_pushed(&otlp), "no lg_consumer_lag for {}", topics.input);
    // A clean exit pushes the metrics once more.
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
    for stage in ["fetch", "decode", "policy", "produce"] {
        let key = format!("lg_stage_seconds_total{{stage=\"{stage}\"}}");
        assert!(metric(&text, &key).unwrap_or(0.0) > 0.0, "{key}: {text}");
    }
    assert!(!text.contains("tel-"), "no event or listing ids as labels");

    // The push view: the last OTLP export (at exit) holds exactly the scrape's samples, the
    // consumer lag (a moment's reading) aside. Sums are cumulative and monotonic.
    let exports = otlp.metric_exports();
    assert!(exports.len() >= 2, "periodic pushes and one at exit");
    assert!(
        otlp.paths()
            .iter()
            .all(|p| p == "/v1/metrics" || p == "/v1/traces"),
        "{:?}",
        otlp.paths()
    );
    let (service, last) = exports.last().unwrap();
    assert_eq!(service, "lg-metrics-test");
    use opentelemetry_proto::tonic::metrics::v1::metric::Data;
    for m in last {
        match &m.data {
            Some(Data::Sum(s)) => {
                assert!(s.is_monotonic, "{}", m.name);
                assert_eq!(s.aggregation_temporality, 2, "{}: cumulative", m.name);
            }
            Some(Data::Histogram(h)) => {
                assert_eq!(h.aggregation_temporality, 2, "{}: cumulative", m.name)
            }
            _ => {}
        }
    }
    let not_lag = |k: &String| !k.starts_with("lg_consumer_lag{");
    let pushed: std::collections::BTreeMap<_, _> = integration_tests::otlp::prometheus_view(last)
        .into_iter()
        .filter(|(k, _)| not_lag(k))
        .collect();
    let scraped: std::collections::BTreeMap<_, _> = prometheus_samples(&text)
        .into_iter()
        .filter(|(k, _)| not_lag(k))
        .collect();
    assert_eq!(
        pushed.keys().collect::<Vec<_>>(),
        scraped.keys().collect::<Vec<_>>(),
        "the same series in both views"
    );
    for (k, v) in &scraped {
        let p = pushed[k];
        // Float sums (stage seconds) may add in another order.
        assert!(
            (p - v).abs() <= 1e-9 * v.abs().max(1.0),
            "{k}: pushed {p}, scraped {v}"
        );
    }
    assert_eq!(pushed["lg_records_consumed_total{}"], total);
    assert_eq!(
        pushed["lg_decisions_total{action=\"block\",marketplace=\"xianyu\"}"],
        blocked as f64
    );
}

/// A record carrying a W3C `traceparent` header: its decision, its label events and, for a bad
/// record, its dead letter all carry the same trace id, with the pipeline's own span id. With
/// OTLP export on, that span id is the exported `record` span's: a child of the input's span,
/// with fetch, detect, policy and produce spans under it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_output_continues_the_input_trace() {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    use rdkafka::ClientConfig;

    let base = listing_guard::demo::serve_fixtures(6).await.unwrap();
    let topics = Topics::fresh("trace");
    topics.create(1).await;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    let labelled = listing(
        "trace-1",
        "taobao",
        "apparel",
        &[format!("{base}/img/{}", Fixture::XmpTc260.name())],
    );
    let parents = [
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    ];
    for (payload, tp) in [(labelled, parents[0]), (b"{broken".to_vec(), parents[1])] {
        let headers = OwnedHeaders::new().insert(Header {
            key: "traceparent",
            value: Some(tp),
        });
        producer
            .send(
                FutureRecord::to(&topics.input)
                    .key("k")
                    .payload(&payload)
                    .headers(headers),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
    let otlp = integration_tests::otlp::OtlpReceiver::start().await;
    let pipeline = start_pipeline_with(
        &topics,
        &[
            (
                "LISTING_GUARD__TELEMETRY__OTLP_ENDPOINT",
                otlp.endpoint.clone(),
            ),
            (
                "LISTING_GUARD__TELEMETRY__SERVICE_NAME",
                "lg-trace-test".into(),
            ),
        ],
    );
    let mut collector = Collector::new(&topics);
    collector
        .until(Duration::from_secs(60), |c| {
            !c.decisions.is_empty() && !c.labels.is_empty() && !c.dead.is_empty()
        })
        .await;
    // A clean exit flushes the span exporter.
    pipeline.terminate();
    let seen = &collector.seen;
    let trace_of = |tp: &str| tp.split('-').nth(1).unwrap().to_owned();
    for (topic, tp) in &seen.traceparents {
        let tp = tp
            .as_deref()
            .unwrap_or_else(|| panic!("{topic}: no traceparent"));
        let expected = if *topic == topics.dlq {
            parents[1]
        } else {
            parents[0]
        };
        assert_eq!(trace_of(tp), trace_of(expected), "{topic}: {tp}");
        assert_ne!(tp, expected, "{topic}: the pipeline's own span id");
        assert_eq!(
            lg_events::trace::TraceParent::parse(tp).map(|t| t.to_string()),
            Some(tp.to_owned())
        );
    }
    let topics_seen: std::collections::HashSet<&str> =
        seen.traceparents.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        topics_seen.len(),
        3,
        "decision, label and dead letter: {topics_seen:?}"
    );

    // The exported spans: one `record` span per input, the child of the input's span, whose id
    // is the parent every output names.
    assert!(
        otlp.paths().iter().any(|p| p == "/v1/traces"),
        "{:?}",
        otlp.paths()
    );
    let spans = otlp.spans();
    let records: Vec<_> = spans.iter().filter(|(_, s)| s.name == "record").collect();
    assert_eq!(records.len(), 2, "one record span per input: {spans:#?}");
    for (service, span) in &records {
        assert!(service.contains("lg-trace-test"), "{service}");
        let input = parents
            .iter()
            .map(|p| lg_events::trace::TraceParent::parse(p).unwrap())
            .find(|p| p.trace_id.as_slice() == span.trace_id.as_slice())
            .expect("the record span continues an input trace");
        assert_eq!(span.parent_span_id, input.parent_id.to_vec());
        let own = format!("00-{}-{}-01", hex_of(&span.trace_id), hex_of(&span.span_id));
        let named_by = seen
            .traceparents
            .iter()
            .filter(|(_, tp)| tp.as_deref() == Some(own.as_str()))
            .count();
        assert!(named_by >= 1, "no output names span {own}");
        let attr = |k: &str| {
            span.attributes
                .iter()
                .find(|kv| kv.key == k)
                .and_then(|kv| kv.value.as_ref())
                .map(|v| format!("{:?}", v.value))
        };
        assert!(attr("messaging.system").unwrap().contains("kafka"));
        assert!(attr("messaging.destination.name")
            .unwrap()
            .contains(&topics.input));
        assert!(attr("messaging.kafka.message.offset").is_some());
        assert!(attr("messaging.kafka.consumer.group").is_some());
    }
    // The good record's stages are children of its record span.
    let good = records
        .iter()
        .find(|(_, s)| hex_of(&s.trace_id) == parents[0].split('-').nth(1).unwrap())
        .unwrap();
    let children: std::collections::HashSet<&str> = spans
        .iter()
        .filter(|(_, s)| s.parent_span_id == good.1.span_id)
        .map(|(_, s)| s.name.as_str())
        .collect();
    for stage in ["fetch", "decode_detect", "policy", "produce"] {
        assert!(children.contains(stage), "{stage} missing: {children:?}");
    }
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
