//! 1,000 listings through the real broker and the pipeline process: 50 malformed events, 50
//! with unreachable images, the rest carrying known fixtures.

use std::collections::HashMap;
use std::time::Duration;

use integration_tests::*;
use lg_events::{Action, DeadLetterClass};
use listing_guard::fixtures::Fixture;

const N: usize = 1000;

fn malformed(i: usize) -> (Vec<u8>, DeadLetterClass) {
    match i % 5 {
        0 => (
            b"{this is not json".to_vec(),
            DeadLetterClass::MalformedJson,
        ),
        1 => (
            br#"{"schema_version":1,"event_id":42}"#.to_vec(),
            DeadLetterClass::SchemaViolation,
        ),
        2 => (
            br#"{"schema_version":7,"event_id":"x"}"#.to_vec(),
            DeadLetterClass::UnsupportedSchemaVersion,
        ),
        3 => {
            let mut v: serde_json::Value =
                serde_json::from_slice(&listing(&format!("bad-{i}"), "taobao", "apparel", &[]))
                    .unwrap();
            v["images"] = serde_json::json!([]);
            (
                serde_json::to_vec(&v).unwrap(),
                DeadLetterClass::InvalidEvent,
            )
        }
        _ => (
            b"\xff\xfe\x00binary".to_vec(),
            DeadLetterClass::MalformedJson,
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_listings_end_to_end() {
    let base = listing_guard::demo::serve_fixtures(11).await.unwrap();
    let dead_port = closed_port();
    let topics = Topics::fresh("e2e");
    topics.create(3).await;

    let markets = ["taobao", "tmall", "xianyu"];
    let mut records = Vec::new();
    let mut want_action: HashMap<String, Action> = HashMap::new();
    let mut want_dead: Vec<DeadLetterClass> = Vec::new();
    let mut unreachable = Vec::new();
    for i in 0..N {
        let key = format!("k{i}");
        if i % 20 == 0 {
            let (payload, class) = malformed(i / 20);
            want_dead.push(class);
            records.push((key, payload));
            continue;
        }
        let event_id = format!("evt-{i:04}");
        let market = markets[i % 3];
        let category = if i % 7 == 0 { "beauty" } else { "apparel" };
        if i % 20 == 1 {
            let url = format!("http://127.0.0.1:{dead_port}/gone-{i}.jpg");
            records.push((key, listing(&event_id, market, category, &[url])));
            want_action.insert(event_id.clone(), Action::Review);
            unreachable.push(event_id);
            continue;
        }
        let f = Fixture::ALL[i % Fixture::ALL.len()];
        let clean = format!("{base}/img/{}", Fixture::CleanJpeg.name());
        let urls = if i % 2 == 0 {
            vec![format!("{base}/img/{}", f.name()), clean]
        } else {
            vec![format!("{base}/img/{}", f.name())]
        };
        records.push((key, listing(&event_id, market, category, &urls)));
        want_action.insert(event_id, default_policy_action(f, market, category));
    }
    assert_eq!(want_dead.len(), 50);
    assert_eq!(unreachable.len(), 50);
    produce_all(&topics.input, &records).await;

    let child = start_pipeline(&topics);
    let mut collector = Collector::new(&topics);
    let valid = want_action.len();
    collector
        .until(Duration::from_secs(300), |c| {
            c.by_event().len() >= valid && c.dead.len() >= 50
        })
        .await;
    child.terminate();
    // Give a late duplicate a chance to show up before counting.
    collector.drain(Duration::from_secs(3)).await;
    let seen = &collector.seen;

    let by_event = seen.by_event();
    assert_eq!(by_event.len(), valid, "one decision per valid event");
    for (event, ds) in &by_event {
        assert_eq!(ds.len(), 1, "{event} has {} decisions", ds.len());
        let d = ds[0];
        assert_eq!(d.action, want_action[*event], "{event}: {:?}", d.reasons);
        assert!(d.decision_id.starts_with("dec_"));
        assert!(d.versions.policy.starts_with("default@sha256:"));
        assert_eq!(d.source.topic, topics.input);
    }
    for event in &unreachable {
        let d = by_event[event.as_str()][0];
        assert_eq!(d.reasons[0].code, "IMAGE_FETCH_FAILED", "{event}");
        assert_eq!(d.images[0].failure.as_ref().unwrap().class, "connect_error");
    }
    let labelled_images: usize = seen
        .decisions
        .iter()
        .map(|d| {
            d.images
                .iter()
                .filter(|i| i.action == Action::Label)
                .count()
        })
        .sum();
    let labels_on_allowed_listings = seen
        .labels
        .iter()
        .filter(|l| by_event[l.event_id.as_str()][0].action == Action::Block)
        .count();
    assert_eq!(
        labels_on_allowed_listings, 0,
        "blocked listings carry no labels"
    );
    assert!(labelled_images > 0);
    assert!(
        seen.labels.len() >= labelled_images,
        "every image labelled by policy has a label event"
    );
    for l in &seen.labels {
        assert_eq!(l.visible_label.zh, "AI生成");
        assert!(!l.implicit_label.content_propagator.is_empty());
    }

    assert_eq!(
        seen.dead.len(),
        50,
        "exactly the malformed events are dead-lettered"
    );
    let mut got: Vec<_> = seen.dead.iter().map(|(d, _)| d.error_class).collect();
    let mut want = want_dead.clone();
    got.sort_by_key(|c| c.as_str());
    want.sort_by_key(|c| c.as_str());
    assert_eq!(got, want);
    for (d, headers) in &seen.dead {
        assert!(!d.error_message.is_empty());
        assert_eq!(
            headers.get("lg-error-class").map(String::as_str),
            Some(d.error_class.as_str())
        );
        assert_eq!(
            headers.get("lg-source-offset"),
            Some(&d.source.offset.to_string())
        );
        let original = d.original_payload().unwrap();
        assert!(
            records.iter().any(|(_, p)| *p == original),
            "payload kept byte for byte"
        );
    }
}
