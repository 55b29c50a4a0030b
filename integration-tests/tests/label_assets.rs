//! With `label_assets.store` set, every label event of a labelled image points at two files the
//! pipeline wrote: the original with the implicit label (same pixels, the producer's label
//! kept) and the visible-label copy. Images that are not labelled get no files.

use std::collections::HashMap;
use std::time::Duration;

use integration_tests::*;
use lg_events::MarkerKind;
use listing_guard::fixtures::Fixture;

fn path_of(url: &str) -> std::path::PathBuf {
    url.strip_prefix("file://")
        .unwrap_or_else(|| panic!("not a file URL: {url}"))
        .into()
}

fn label_evidence(bytes: &[u8]) -> String {
    lg_detector::provenance::read(bytes, None)
        .markers
        .into_iter()
        .find(|m| m.kind == MarkerKind::Tc260Aigc && m.evidence.starts_with("XMP"))
        .map(|m| m.evidence)
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labelled_images_are_written_with_both_labels() {
    let seed = 9;
    let base = listing_guard::demo::serve_fixtures(seed).await.unwrap();
    let topics = Topics::fresh("assets");
    topics.create(1).await;
    let cases = [
        ("as-tc260", Fixture::XmpTc260),
        ("as-iptc", Fixture::XmpTrainedAlgorithmic),
        ("as-clean", Fixture::CleanJpeg),
    ];
    let records: Vec<(String, Vec<u8>)> = cases
        .iter()
        .map(|(id, f)| {
            let url = format!("{base}/img/{}", f.name());
            (id.to_string(), listing(id, "taobao", "apparel", &[url]))
        })
        .collect();
    produce_all(&topics.input, &records).await;
    let dir = std::env::temp_dir().join(format!("lg-assets-{}", topics.group));
    let pipeline = start_pipeline_with(
        &topics,
        &[(
            "LISTING_GUARD__LABEL_ASSETS__STORE",
            dir.display().to_string(),
        )],
    );
    let mut collector = Collector::new(&topics);
    collector
        .until(Duration::from_secs(90), |c| {
            c.decisions.len() >= cases.len() && c.labels.len() >= 2
        })
        .await;
    pipeline.terminate();

    let labels: HashMap<&str, &lg_events::LabelEvent> = collector
        .seen
        .labels
        .iter()
        .map(|l| (l.listing_id.as_str(), l))
        .collect();
    assert_eq!(labels.len(), 2, "{labels:?}");
    for (id, fixture) in &cases[..2] {
        let l = labels[format!("L-{id}").as_str()];
        let assets = l.assets.as_ref().expect("assets written");
        assert_eq!(assets.error, None, "{id}");
        let implicit = std::fs::read(path_of(assets.implicit.as_ref().unwrap())).unwrap();
        let visible = std::fs::read(path_of(assets.visible.as_ref().unwrap())).unwrap();
        let served = fixture.bytes(seed);
        let px = |b: &[u8]| image::load_from_memory(b).unwrap().to_rgba8();
        assert_eq!(px(&implicit), px(&served), "{id}: pixels changed");
        assert_eq!(px(&visible).dimensions(), px(&served).dimensions());
        assert_ne!(px(&visible), px(&served), "{id}: no visible label");
        for file in [&implicit, &visible] {
            let ev = label_evidence(file);
            assert!(
                ev.contains("ContentPropagator=listing-guard-marketplace"),
                "{id}: {ev}"
            );
            assert!(
                ev.contains(&format!("PropagateID=L-{id}/img0")),
                "{id}: {ev}"
            );
        }
        if *fixture == Fixture::XmpTc260 {
            // The producer's label is kept.
            let ev = label_evidence(&implicit);
            assert!(ev.contains("Label=1"), "{ev}");
            assert!(ev.contains("ProduceID=gen-2026-0001"), "{ev}");
        }
    }
    // Nothing for the image that was not labelled.
    let listings: Vec<String> = std::fs::read_dir(dir.join("taobao"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!listings.contains(&"L-as-clean".to_owned()), "{listings:?}");
    assert_eq!(listings.len(), 2, "{listings:?}");
    std::fs::remove_dir_all(&dir).ok();
}
