//! The label-asset store against an S3-compatible server (moto, from PyPI, started by this test
//! through `scripts/s3.sh`): both labelled files land in the bucket under the prefix, and what
//! is read back over the S3 protocol is the stamped original and the visible copy. Under
//! `CI=true` the server must be available.

use std::io::{Read as _, Write as _};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use lg_events::{LabelEvent, MarkerKind};
use listing_guard::assets::AssetStore;
use listing_guard::config::LabelAssetSettings;
use listing_guard::fixtures::Fixture;
use object_store::ObjectStore as _;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn moto() -> Option<String> {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/s3.sh");
    let out = Command::new(script)
        .stderr(Stdio::inherit())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn http(addr: &str, request: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labelled_files_go_to_an_s3_compatible_store() {
    let Some(moto) = moto() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true and scripts/s3.sh could not provide an S3-compatible server"
        );
        eprintln!("skipped: no moto_server (scripts/s3.sh failed)");
        return;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let _server = Server(
        Command::new(moto)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server starts"),
    );
    let started = Instant::now();
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "moto did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let created = http(
        &addr,
        &format!("PUT /lg-labels HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
    );
    assert!(created.starts_with("HTTP/1.1 200"), "{created}");
    // object_store reads the standard variables; this test process is its own binary.
    for (k, v) in [
        ("AWS_ENDPOINT", format!("http://{addr}")),
        ("AWS_ALLOW_HTTP", "true".into()),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("AWS_REGION", "us-east-1".into()),
    ] {
        std::env::set_var(k, v);
    }
    let store = AssetStore::open(&LabelAssetSettings {
        store: "s3://lg-labels/labelled/v1".into(),
        visible: true,
        corner: "bottom-right".into(),
    })
    .unwrap()
    .unwrap();
    let original = Fixture::XmpTc260.bytes(2);
    let mut label: LabelEvent = serde_json::from_value(serde_json::json!({
        "schema_version": 1, "label_id": "l", "decision_id": "d", "event_id": "e",
        "listing_id": "L-s3", "marketplace": "tmall", "image_id": "main",
        "content_sha256": lg_events::sha256_hex(&original),
        "visible_label": {"zh": "AI生成", "en": "AI-generated"},
        "basis": "declared_in_metadata",
        "implicit_label": lg_events::Tc260Aigc::default(),
        "policy_version": "p"
    }))
    .unwrap();
    label.implicit_label.content_propagator = "tmall-s3".into();
    label.implicit_label.propagate_id = "L-s3/main".into();
    let assets = store.write(&label, Bytes::from(original.clone())).await;
    assert_eq!(assets.error, None);
    let implicit = assets.implicit.unwrap();
    let visible = assets.visible.unwrap();
    assert!(
        implicit.starts_with("s3://lg-labels/labelled/v1/tmall/L-s3/main/"),
        "{implicit}"
    );

    // Read both back over S3.
    let s3 = object_store::aws::AmazonS3Builder::from_env()
        .with_bucket_name("lg-labels")
        .build()
        .unwrap();
    let get = |url: &str| {
        let key = url.strip_prefix("s3://lg-labels/").unwrap().to_owned();
        let s3 = &s3;
        async move {
            s3.get(&object_store::path::Path::from(key))
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap()
        }
    };
    let stamped = get(&implicit).await;
    let copy = get(&visible).await;
    let px = |b: &[u8]| image::load_from_memory(b).unwrap().to_rgba8();
    assert_eq!(px(&stamped), px(&original), "pixels unchanged");
    assert_ne!(px(&copy), px(&original), "the visible label is drawn");
    for file in [&stamped, &copy] {
        let ev = lg_detector::provenance::read(file, None)
            .markers
            .into_iter()
            .find(|m| m.kind == MarkerKind::Tc260Aigc && m.evidence.starts_with("XMP"))
            .map(|m| m.evidence)
            .unwrap_or_default();
        assert!(ev.contains("ContentPropagator=tmall-s3"), "{ev}");
        assert!(
            ev.contains("ProduceID=gen-2026-0001"),
            "producer kept: {ev}"
        );
    }
}
