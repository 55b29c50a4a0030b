//! `listing-guard demo`: the whole pipeline with zero setup.
//!
//! It starts librdkafka's in-process mock cluster (no broker to install), a local HTTP image
//! server with the [`fixtures`](crate::fixtures), produces sample listings (clean photos, each
//! kind of AI marker, a broken image, an unreachable and a hostile URL, a malformed event), runs
//! the real pipeline against them and prints the decisions.
//!
//! [`feed`] (`listing-guard feed`) sends the same samples to a real broker, for deployments
//! such as `deploy/docker-compose.yml`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use lg_events::{DeadLetter, LabelEvent, ModerationDecision};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message};
use tokio::sync::watch;

use crate::config::Settings;
use crate::fixtures::Fixture;

/// Serves fixture bytes at `/img/{name}` on 127.0.0.1; returns the base URL.
pub async fn serve_images(images: HashMap<String, Vec<u8>>) -> anyhow::Result<String> {
    Ok(serve_images_counted(images).await?.0)
}

/// The image server's state: images by name, and the request counter.
type ImageState = (Arc<HashMap<String, Vec<u8>>>, Arc<AtomicU64>);

/// [`serve_images`], also returning the number of requests served so far (any status).
pub async fn serve_images_counted(
    images: HashMap<String, Vec<u8>>,
) -> anyhow::Result<(String, Arc<AtomicU64>)> {
    serve_images_on("127.0.0.1:0", images).await
}

/// Serves `images` at `/img/{name}` on `bind`; returns the base URL (by the bound address) and
/// the request counter.
pub async fn serve_images_on(
    bind: &str,
    images: HashMap<String, Vec<u8>>,
) -> anyhow::Result<(String, Arc<AtomicU64>)> {
    let requests = Arc::new(AtomicU64::new(0));
    let app = Router::new()
        .route(
            "/img/{name}",
            get(
                |State((imgs, n)): State<ImageState>, Path(name): Path<String>| async move {
                    n.fetch_add(1, Ordering::Relaxed);
                    imgs.get(&name).cloned().ok_or(StatusCode::NOT_FOUND)
                },
            ),
        )
        .with_state((Arc::new(images), Arc::clone(&requests)));
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .with_context(|| format!("binding the image server to {bind}"))?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((format!("http://{addr}"), requests))
}

/// One sample listing: (marketplace, category, image URL suffix or full URL, what it shows).
struct Sample {
    marketplace: &'static str,
    category: &'static str,
    image: String,
    note: &'static str,
}

fn listing_json(i: usize, s: &Sample, base: &str) -> String {
    let url = if s.image.starts_with("http") {
        s.image.clone()
    } else {
        format!("{base}/img/{}", s.image)
    };
    serde_json::json!({
        "schema_version": 1,
        "event_id": format!("demo-evt-{i:02}"),
        "event_type": "listing.created",
        "occurred_at": "2026-11-25T08:00:00Z",
        "listing_id": format!("demo-listing-{i:02}"),
        "merchant_id": "demo-merchant",
        "marketplace": s.marketplace,
        "category": s.category,
        "title": s.note,
        "images": [{"image_id": "main", "url": url, "role": "main"}]
    })
    .to_string()
}

/// The sample listings: clean photos, each kind of AI marker, a broken image, an unreachable
/// image server (`closed_port` on 127.0.0.1) and a hostile URL.
fn samples(closed_port: u16) -> Vec<Sample> {
    vec![
        Sample {
            marketplace: "taobao",
            category: "apparel",
            image: Fixture::CleanJpeg.name().into(),
            note: "clean camera JPEG",
        },
        Sample {
            marketplace: "tmall",
            category: "home",
            image: Fixture::CleanPng.name().into(),
            note: "clean PNG",
        },
        Sample {
            marketplace: "taobao",
            category: "apparel",
            image: Fixture::XmpTrainedAlgorithmic.name().into(),
            note: "IPTC trainedAlgorithmicMedia (XMP)",
        },
        Sample {
            marketplace: "taobao",
            category: "apparel",
            image: Fixture::XmpAlgorithmic.name().into(),
            note: "IPTC algorithmicMedia: not generative AI",
        },
        Sample {
            marketplace: "xianyu",
            category: "bags",
            image: Fixture::PngA1111.name().into(),
            note: "A1111 parameters on a secondhand listing",
        },
        Sample {
            marketplace: "tmall",
            category: "beauty",
            image: Fixture::PngComfyUi.name().into(),
            note: "ComfyUI workflow in beauty",
        },
        Sample {
            marketplace: "taobao",
            category: "toys",
            image: Fixture::ExifMidjourney.name().into(),
            note: "EXIF Software = Midjourney",
        },
        Sample {
            marketplace: "taobao",
            category: "home",
            image: Fixture::XmpTc260.name().into(),
            note: "GB 45438 TC260:AIGC in XMP",
        },
        Sample {
            marketplace: "xianyu",
            category: "phones",
            image: Fixture::PngAigcChunk.name().into(),
            note: "TC260:AIGC chunk, secondhand",
        },
        Sample {
            marketplace: "taobao",
            category: "apparel",
            image: Fixture::BrokenJpeg.name().into(),
            note: "truncated JPEG",
        },
        Sample {
            marketplace: "taobao",
            category: "apparel",
            image: format!("http://127.0.0.1:{closed_port}/gone.jpg"),
            note: "image server unreachable",
        },
        Sample {
            marketplace: "taobao",
            category: "apparel",
            image: "http://169.254.169.254/latest/meta-data/".into(),
            note: "hostile URL (cloud metadata)",
        },
    ]
}

/// Every fixture by name, bytes from `seed`.
fn fixture_images(seed: u32) -> HashMap<String, Vec<u8>> {
    Fixture::ALL
        .iter()
        .map(|f| (f.name().to_owned(), f.bytes(seed)))
        .collect()
}

/// A local port nothing listens on (for the "unreachable image server" sample).
fn closed_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Serves every fixture (`/img/{name}`, bytes from `seed`) on 127.0.0.1; returns the base URL.
pub async fn serve_fixtures(seed: u32) -> anyhow::Result<String> {
    serve_images(fixture_images(seed)).await
}

/// Arguments of `listing-guard feed`.
#[derive(Debug, Clone, clap::Args)]
pub struct FeedArgs {
    /// Kafka bootstrap servers.
    #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,
    /// The input topic.
    #[arg(long, default_value = "listings.v1")]
    pub topic: String,
    /// Where the image server listens.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub listen: String,
    /// The image server's base URL as the pipeline reaches it (e.g. `http://feeder:8080`);
    /// default: the bound address.
    #[arg(long)]
    pub public_base: Option<String>,
    /// Listings to produce; 0: until stopped.
    #[arg(long, default_value_t = 0)]
    pub count: u64,
    /// Pause between listings.
    #[arg(long, default_value_t = 1000)]
    pub interval_ms: u64,
}

/// `listing-guard feed`: the demo's sample listings against a real broker. Serves the fixture
/// images over HTTP and produces the samples in turn (plus, every round, one malformed event),
/// each with a fresh event id, so a deployment (e.g. `deploy/docker-compose.yml`) shows the
/// pipeline end to end. Keeps serving images after the last listing until stopped, so late
/// fetches still succeed.
pub async fn feed(args: &FeedArgs) -> anyhow::Result<()> {
    let (bound, _) = serve_images_on(&args.listen, fixture_images(7)).await?;
    let base = args.public_base.clone().unwrap_or(bound);
    let samples = samples(closed_port()?);
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &args.brokers)
        .create()
        .context("creating the producer")?;
    println!("feeding {} with images from {base}", args.topic);
    let mut n: u64 = 0;
    while args.count == 0 || n < args.count {
        let i = (n % (samples.len() as u64 + 1)) as usize;
        let (key, payload) = match samples.get(i) {
            Some(s) => {
                let mut v: serde_json::Value = serde_json::from_str(&listing_json(i, s, &base))?;
                v["event_id"] = format!("feed-evt-{n}").into();
                v["listing_id"] = format!("feed-listing-{n}").into();
                v["occurred_at"] = chrono::Utc::now().to_rfc3339().into();
                (format!("feed-listing-{n}"), v.to_string())
            }
            None => (
                format!("feed-malformed-{n}"),
                "{\"schema_version\":1,".to_owned(),
            ),
        };
        producer
            .send(
                FutureRecord::to(&args.topic).key(&key).payload(&payload),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)
            .with_context(|| format!("producing to {}", args.topic))?;
        n += 1;
        tokio::time::sleep(Duration::from_millis(args.interval_ms)).await;
    }
    println!("produced {n} listings; serving images until stopped");
    std::future::pending::<()>().await;
    Ok(())
}

/// Where the demo writes labelled files (relative to the working directory).
pub const DEMO_LABELLED: &str = "target/demo-labelled";

/// Runs the demo and prints the table.
pub async fn run() -> anyhow::Result<()> {
    let base = serve_fixtures(7).await?;
    let samples = samples(closed_port()?);

    let cluster = MockCluster::new(1).context("starting the in-process mock Kafka cluster")?;
    let mut settings = Settings::load(None)?;
    settings.kafka.brokers = cluster.bootstrap_servers();
    settings.kafka.group_id = "listing-guard-demo".into();
    settings.fetch.allowed_networks = vec!["127.0.0.1/32".into()];
    settings.fetch.max_attempts = 2;
    settings.fetch.backoff_initial_ms = 20;
    // Labelled files: the stamped original and the visible-label copy of each labelled image.
    settings.label_assets.store = DEMO_LABELLED.into();
    if settings.model_dir().is_none() {
        println!(
            "note: no shipped model found (looked in {}); metadata signals only",
            crate::config::shipped_model_candidates()
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let k = settings.kafka.clone();
    for t in [
        &k.input_topic,
        &k.decisions_topic,
        &k.labels_topic,
        &k.dlq_topic,
    ] {
        cluster.create_topic(t, 1, 1)?;
    }

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &k.brokers)
        .create()?;
    let mut payloads: Vec<(String, String)> = samples
        .iter()
        .enumerate()
        .map(|(i, s)| (format!("demo-listing-{i:02}"), listing_json(i, s, &base)))
        .collect();
    payloads.push((
        "demo-malformed".into(),
        r#"{"schema_version":1,"event_id":"demo-evt-bad","images":"#.into(),
    ));
    for (key, p) in &payloads {
        producer
            .send(
                FutureRecord::to(&k.input_topic).key(key).payload(p),
                Duration::from_secs(5),
            )
            .await
            .map_err(|(e, _)| e)?;
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    let pipeline_settings = settings.clone();
    let pipeline =
        tokio::spawn(async move { crate::pipeline::run(&pipeline_settings, stop_rx).await });

    let reader: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &k.brokers)
        .set("group.id", "listing-guard-demo-reader")
        .set("auto.offset.reset", "earliest")
        .create()?;
    reader.subscribe(&[&k.decisions_topic, &k.labels_topic, &k.dlq_topic])?;
    let mut decisions: Vec<ModerationDecision> = Vec::new();
    let mut labels: Vec<LabelEvent> = Vec::new();
    let mut dead: Vec<DeadLetter> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    // Labels travel on their own topic and may arrive after the decisions: one is due for every
    // AI image of a listing that is not blocked.
    let labels_due = |ds: &[ModerationDecision]| -> usize {
        ds.iter()
            .filter(|d| d.action != lg_events::Action::Block)
            .flat_map(|d| d.images.iter())
            .filter(|i| {
                i.reasons.iter().any(|r| {
                    r.code == lg_policy::codes::AI_DECLARED_METADATA
                        || r.code == lg_policy::codes::AI_DETECTED_MODEL
                })
            })
            .count()
    };
    while decisions.len() < samples.len()
        || dead.is_empty()
        || labels.len() < labels_due(&decisions)
    {
        let msg = match tokio::time::timeout_at(deadline, reader.recv()).await {
            Ok(m) => m?,
            Err(_) => anyhow::bail!(
                "demo timed out waiting for decisions ({} of {})",
                decisions.len(),
                samples.len()
            ),
        };
        let payload = msg.payload().unwrap_or_default();
        if msg.topic() == k.decisions_topic {
            decisions.push(serde_json::from_slice(payload)?);
        } else if msg.topic() == k.labels_topic {
            labels.push(serde_json::from_slice(payload)?);
        } else {
            dead.push(serde_json::from_slice(payload)?);
        }
    }
    stop_tx.send(true).ok();
    let stats = pipeline.await??;

    decisions.sort_by(|a, b| a.event_id.cmp(&b.event_id));
    println!();
    println!(
        "{:<13} {:<8} {:<8} {:<7} {:<5} {:<42} reasons",
        "event", "market", "category", "action", "p(AI)", "sample"
    );
    println!("{}", "-".repeat(130));
    for (d, s) in decisions.iter().zip(&samples) {
        let reasons: Vec<String> = d.reasons.iter().map(|r| r.code.clone()).collect();
        let generators: Vec<String> = d
            .images
            .iter()
            .flat_map(|i| i.signals.provenance.markers.iter())
            .map(|m| {
                format!(
                    "{}{}",
                    lg_policy::kind_name(m.kind),
                    m.generator
                        .as_ref()
                        .map(|g| format!(": {g}"))
                        .unwrap_or_default()
                )
            })
            .collect();
        let failure = d
            .images
            .iter()
            .find_map(|i| i.failure.as_ref().map(|f| f.class.clone()));
        let p_ai = d
            .images
            .iter()
            .find_map(|i| i.signals.model.as_ref())
            .map_or_else(|| "-".to_owned(), |m| format!("{:.2}", m.ai_probability));
        println!(
            "{:<13} {:<8} {:<8} {:<7} {:<5} {:<42} {}{}{}",
            d.event_id,
            d.marketplace,
            d.category,
            d.action.as_str().to_uppercase(),
            p_ai,
            s.note,
            reasons.join(","),
            if generators.is_empty() {
                String::new()
            } else {
                format!(" [{}]", generators.join("; "))
            },
            failure.map(|f| format!(" ({f})")).unwrap_or_default(),
        );
    }
    for dl in &dead {
        println!(
            "{:<13} {:<8} {:<8} {:<7} {:<5} {:<42} {}: {}",
            "-",
            "-",
            "-",
            "DLQ",
            "-",
            "malformed event",
            dl.error_class.as_str(),
            dl.error_message
        );
    }
    let count = |a: lg_events::Action| decisions.iter().filter(|d| d.action == a).count();
    println!();
    println!(
        "summary: {} listings -> {} decisions (allow {}, label {}, review {}, block {}), {} label events, {} dead letters",
        payloads.len(),
        decisions.len(),
        count(lg_events::Action::Allow),
        count(lg_events::Action::Label),
        count(lg_events::Action::Review),
        count(lg_events::Action::Block),
        labels.len(),
        dead.len()
    );
    labels.sort_by(|a, b| a.listing_id.cmp(&b.listing_id));
    if !labels.is_empty() {
        println!();
        println!("labelled files (label_assets.store = {DEMO_LABELLED}):");
    }
    for l in &labels {
        let a = l.assets.as_ref();
        let show = |v: Option<&String>| v.map_or("-", String::as_str).to_owned();
        println!("  {}/{}", l.listing_id, l.image_id);
        println!(
            "    implicit label: {}",
            show(a.and_then(|a| a.implicit.as_ref()))
        );
        println!(
            "    visible label:  {}",
            show(a.and_then(|a| a.visible.as_ref()))
        );
        if let Some(e) = a.and_then(|a| a.error.as_ref()) {
            println!("    not written:    {e}");
        }
    }
    let first = decisions.first();
    println!(
        "policy {}; model {}; pipeline stats {:?}",
        first.map(|d| d.versions.policy.as_str()).unwrap_or("-"),
        first
            .and_then(|d| d.versions.model.as_deref())
            .unwrap_or("none (metadata only)"),
        stats
    );
    Ok(())
}
