//! End-to-end benchmark: Listing Guard against the pipeline a team would write instead
//! (`benches/reference/pipeline.py`: Python, confluent-kafka, requests, Pillow, onnxruntime on
//! the same model), on the same broker, the same images and the same listings.
//!
//! `make bench-e2e` starts the broker, builds the release binary and the Python virtualenv,
//! and runs this. Here: a local HTTP image server with a realistic mix (800–1600 px JPEGs and
//! some PNGs, some declaring AI in their metadata, 1–5 images per listing, 20% re-posted), N
//! listings preloaded into one input topic, then each pipeline over that topic in a fresh
//! consumer group, alternating, `E2E_REPEATS` times. Per run: listings/s and images/s from
//! process start to the N-th decision, p50/p99 of the decisions' `processing_latency_ms`
//! (receipt to decision), peak RSS (VmHWM) and CPU seconds (utime + stime) of the process.
//! Prints a table with ratios, Listing Guard's stage breakdown (its `lg_stage_seconds_total`),
//! the machine's physical floor (the JPEG decoder alone; the model's FLOPs over a measured
//! GEMM peak) and writes `target/bench/e2e.json`; then measures latency at a steady load (a
//! pipeline that stops deciding there is reported, not waited for) and ends with
//! `ratio ours/reference: X.XX`.
//!
//! Knobs: `E2E_LISTINGS` (default 300), `E2E_REPEATS` (default 3), `E2E_PARTITIONS` (2),
//! `E2E_PACED_LISTINGS` (60), `E2E_PACED_TIMEOUT_S` (300, per wait), `E2E_INSTANCES` (Listing
//! Guard instances in one group, 1), `E2E_ONLY=listing-guard` or `reference` (one pipeline's
//! runs, for tuning; `LISTING_GUARD__*` variables reach Listing Guard),
//! `KAFKA_BROKERS`, `LISTING_GUARD_BIN` (default target/release/listing-guard), `E2E_PYTHON`
//! (default target/bench-venv/bin/python).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use integration_tests::{brokers, guard_command, http_get, produce_all, Collector, Topics};
use listing_guard::fixtures;
use rand::{Rng, SeedableRng};

fn env_or<T: std::str::FromStr>(k: &str, d: T) -> T {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// One generated image: its bytes and whether it is a JPEG.
struct Img {
    bytes: Vec<u8>,
    jpeg: bool,
}

/// 800–1600 px per side; 80% JPEG (q 80–95), 20% PNG; one in ten declares AI in its metadata.
fn make_images(n: usize, seed: u64) -> Vec<Img> {
    let out = std::sync::Mutex::new(Vec::with_capacity(n));
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let mut rng = rand::rngs::StdRng::seed_from_u64(seed + i as u64);
                let (w, h) = (rng.gen_range(800..=1600), rng.gen_range(800..=1600));
                let photo = fixtures::photo(w, h, i as u32);
                let jpeg = rng.gen_bool(0.8);
                let ai = rng.gen_bool(0.1);
                let bytes = if jpeg {
                    let mut b = Vec::new();
                    let q = rng.gen_range(80..=95);
                    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut b, q)
                        .encode_image(&photo)
                        .unwrap();
                    if ai {
                        b = fixtures::with_jpeg_xmp(
                            &b,
                            &fixtures::xmp_tc260(&fixtures::aigc_json()),
                        );
                    }
                    b
                } else {
                    let b = fixtures::png(&photo);
                    if ai {
                        fixtures::with_png_text(
                            &b,
                            "parameters",
                            "a product photo, Steps: 20, Sampler: Euler a, Seed: 1",
                        )
                    } else {
                        b
                    }
                };
                out.lock().unwrap().push((i, Img { bytes, jpeg }));
            });
        }
    });
    let mut v = out.into_inner().unwrap();
    v.sort_by_key(|(i, _)| *i);
    v.into_iter().map(|(_, img)| img).collect()
}

/// Listings: 1–5 images each; an image slot re-posts an earlier image with probability 0.2.
fn make_listings(
    n: usize,
    unique: usize,
    base: &str,
    seed: u64,
) -> (Vec<(String, Vec<u8>)>, usize) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut next = 0usize;
    let mut images = 0usize;
    let markets = ["taobao", "tmall", "xianyu"];
    let cats = ["apparel", "home", "toys", "beauty", "bags"];
    let listings = (0..n)
        .map(|i| {
            let k = rng.gen_range(1..=5);
            let urls: Vec<String> = (0..k)
                .map(|_| {
                    let idx = if next > 0 && (rng.gen_bool(0.2) || next >= unique) {
                        rng.gen_range(0..next)
                    } else {
                        next += 1;
                        next - 1
                    };
                    format!("{base}/img/i{idx}")
                })
                .collect();
            images += urls.len();
            let payload =
                integration_tests::listing(&format!("e2e-{i}"), markets[i % 3], cats[i % 5], &urls);
            (format!("L-e2e-{i}"), payload)
        })
        .collect();
    (listings, images)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    Ours,
    Reference,
}

impl Which {
    fn name(self) -> &'static str {
        match self {
            Which::Ours => "listing-guard",
            Which::Reference => "reference (python)",
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
struct RunResult {
    pipeline: &'static str,
    repeat: usize,
    seconds: f64,
    /// Process start to the first decision: start-up (model load, group join) and the first
    /// listing's own time.
    first_decision_s: f64,
    listings_per_s: f64,
    images_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    peak_rss_mib: f64,
    cpu_seconds: f64,
    cpu_s_per_1000_listings: f64,
    stage_seconds: HashMap<String, f64>,
    instances: usize,
    /// Records each instance consumed (its `lg_records_consumed_total`): how evenly the
    /// partitions were shared.
    consumed_per_instance: Vec<f64>,
}

/// (utime + stime) seconds and VmHWM MiB of a live process.
fn proc_usage(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command: state is field 3; utime 14, stime 15.
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        f.get(i - 3)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let cpu = (ticks(14) + ticks(15)) / 100.0; // CLK_TCK is 100 on Linux
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    (cpu, hwm_kb / 1024.0)
}

/// One figure of a run.
type Field = dyn Fn(&RunResult) -> f64;

fn python() -> PathBuf {
    std::env::var("E2E_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root().join("target/bench-venv/bin/python"))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn start(which: Which, topics: &Topics, telemetry: &str, cache: &Path) -> Child {
    match which {
        Which::Ours => {
            let mut cmd = guard_command(topics, "run");
            cmd.env(
                "LISTING_GUARD__DETECTOR__MODEL_DIR",
                root().join("models/npr-small"),
            )
            .env("LISTING_GUARD__CACHE__PATH", cache)
            .env("LISTING_GUARD__TELEMETRY__LISTEN", telemetry)
            .env("LISTING_GUARD__KAFKA__INSTANCE_ID", "")
            .stdout(Stdio::null());
            // The CPU-model setting of deploy/config.example.toml, unless the caller tunes it.
            if std::env::var_os("LISTING_GUARD__PIPELINE__MAX_IN_FLIGHT").is_none() {
                cmd.env("LISTING_GUARD__PIPELINE__MAX_IN_FLIGHT", "16");
            }
            cmd.spawn().expect("listing-guard starts")
        }
        Which::Reference => Command::new(python())
            .arg(root().join("benches/reference/pipeline.py"))
            .args(["--brokers", &brokers()])
            .args(["--input-topic", &topics.input])
            .args(["--group", &topics.group])
            .args(["--decisions-topic", &topics.decisions])
            .args(["--labels-topic", &topics.labels])
            .args(["--dlq-topic", &topics.dlq])
            .arg("--model-dir")
            .arg(root().join("models/npr-small"))
            .arg("--onnx")
            .arg(root().join("target/bench/npr.onnx"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("the reference pipeline starts (make bench-e2e creates its virtualenv)"),
    }
}

fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if child.try_wait().ok().flatten().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

async fn run_one(
    which: Which,
    repeat: usize,
    input: &str,
    partitions: i32,
    listings: usize,
    images: usize,
) -> RunResult {
    let mut topics = Topics::fresh(if which == Which::Ours {
        "e2e-ours"
    } else {
        "e2e-ref"
    });
    topics.create(partitions).await;
    topics.input = input.to_owned();
    // Listing Guard may run as several instances in one consumer group (E2E_INSTANCES).
    let instances = if which == Which::Ours {
        env_or("E2E_INSTANCES", 1usize).max(1)
    } else {
        1
    };
    let telemetry: Vec<String> = (0..instances)
        .map(|_| format!("127.0.0.1:{}", integration_tests::closed_port()))
        .collect();
    let caches: Vec<PathBuf> = (0..instances)
        .map(|i| std::env::temp_dir().join(format!("{}-{i}.redb", topics.group)))
        .collect();
    let mut collector = Collector::new(&topics);
    let started = Instant::now();
    let children: Vec<Child> = (0..instances)
        .map(|i| start(which, &topics, &telemetry[i], &caches[i]))
        .collect();
    collector
        .until(Duration::from_secs(3600), |c| !c.decisions.is_empty())
        .await;
    let first_decision_s = started.elapsed().as_secs_f64();
    collector
        .until(Duration::from_secs(3600), |c| c.decisions.len() >= listings)
        .await;
    let seconds = started.elapsed().as_secs_f64();
    let usage: Vec<(f64, f64)> = children.iter().map(|c| proc_usage(c.id())).collect();
    let cpu_seconds = usage.iter().map(|u| u.0).sum();
    let peak_rss_mib = usage.iter().map(|u| u.1).fold(0.0, f64::max);
    let mut stage_seconds = HashMap::new();
    let mut consumed_per_instance = Vec::new();
    if which == Which::Ours {
        for t in &telemetry {
            let Some((_, text)) = http_get(t, "/metrics").await else {
                continue;
            };
            consumed_per_instance
                .push(integration_tests::metric(&text, "lg_records_consumed_total").unwrap_or(0.0));
            for line in text.lines() {
                if let Some(rest) = line.strip_prefix("lg_stage_seconds_total{stage=\"") {
                    if let Some((stage, v)) = rest.split_once("\"} ") {
                        *stage_seconds.entry(stage.to_owned()).or_insert(0.0) +=
                            v.trim().parse::<f64>().unwrap_or(0.0);
                    }
                }
            }
        }
    }
    for c in children {
        stop(c);
    }
    for c in &caches {
        std::fs::remove_file(c).ok();
    }
    let mut lat: Vec<f64> = collector
        .seen
        .decisions
        .iter()
        .map(|d| d.processing_latency_ms as f64)
        .collect();
    lat.sort_by(f64::total_cmp);
    RunResult {
        pipeline: which.name(),
        repeat,
        seconds,
        first_decision_s,
        listings_per_s: listings as f64 / seconds,
        images_per_s: images as f64 / seconds,
        p50_ms: percentile(&lat, 0.5),
        p99_ms: percentile(&lat, 0.99),
        peak_rss_mib,
        cpu_seconds,
        cpu_s_per_1000_listings: cpu_seconds / listings as f64 * 1000.0,
        stage_seconds,
        instances,
        consumed_per_instance,
    }
}

/// Latency under a steady, unsaturated load: `count` listings produced at `rate` per second
/// into a fresh topic while the pipeline runs, each stamped `occurred_at` = its send time;
/// latency = the decision's `decided_at` − `occurred_at` (one clock: both on this machine).
async fn paced_latency(
    which: Which,
    partitions: i32,
    listings: &[(String, Vec<u8>)],
    rate: f64,
) -> Result<(f64, f64), String> {
    let topics = Topics::fresh(if which == Which::Ours {
        "e2e-lat-ours"
    } else {
        "e2e-lat-ref"
    });
    topics.create(partitions).await;
    let telemetry = format!("127.0.0.1:{}", integration_tests::closed_port());
    let cache = std::env::temp_dir().join(format!("{}.redb", topics.group));
    let mut collector = Collector::new(&topics);
    let child = start(which, &topics, &telemetry, &cache);
    // A pipeline that stops consuming (it has happened on tansu, to either pipeline) costs
    // this phase, not the figures already printed.
    let timeout = Duration::from_secs(env_or("E2E_PACED_TIMEOUT_S", 300));
    let give_up = |child: Child, what: &str, got: usize| {
        stop(child);
        std::fs::remove_file(&cache).ok();
        Err(format!(
            "{} stopped deciding {what}: {got} of {} decisions within {timeout:?}",
            which.name(),
            listings.len()
        ))
    };
    // Warm up: the first listing's decision says the pipeline is consuming.
    produce_all(&topics.input, &listings[..1]).await;
    if !collector
        .try_until(timeout, |c| !c.decisions.is_empty())
        .await
    {
        return give_up(child, "before the first listing", 0);
    }
    let producer: rdkafka::producer::FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("linger.ms", "0")
        .create()
        .expect("producer");
    let interval = Duration::from_secs_f64(1.0 / rate);
    let mut tick = tokio::time::interval(interval);
    let rest = &listings[1..];
    for (key, payload) in rest {
        tick.tick().await;
        let mut v: serde_json::Value = serde_json::from_slice(payload).unwrap();
        v["occurred_at"] = serde_json::Value::String(
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        );
        let bytes = serde_json::to_vec(&v).unwrap();
        producer
            .send(
                rdkafka::producer::FutureRecord::to(&topics.input)
                    .key(key)
                    .payload(&bytes),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("paced send");
    }
    if !collector
        .try_until(timeout, |c| c.decisions.len() >= listings.len())
        .await
    {
        let got = collector.seen.decisions.len();
        return give_up(child, "mid-stream", got);
    }
    stop(child);
    std::fs::remove_file(&cache).ok();
    let mut lat: Vec<f64> = collector
        .seen
        .decisions
        .iter()
        .skip(1)
        .map(|d| {
            (d.decided_at - d.occurred_at)
                .num_microseconds()
                .unwrap_or(0) as f64
                / 1e3
        })
        .collect();
    lat.sort_by(f64::total_cmp);
    Ok((percentile(&lat, 0.5), percentile(&lat, 0.99)))
}

/// Conv FLOPs of one 224 px crop, from the shapes in the safetensors header.
fn model_flops_per_crop(model_dir: &Path) -> f64 {
    let bytes = std::fs::read(model_dir.join("model.safetensors")).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let mut flops = 0.0;
    for (name, t) in header.as_object().unwrap() {
        let Some(conv) = name.strip_suffix(".weight") else {
            continue;
        };
        let shape: Vec<f64> = t["shape"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_f64()).collect())
            .unwrap_or_default();
        if shape.len() != 4 {
            continue;
        }
        // Output side: 112 after the stem, 56 in layer1 and the first 1×1 of layer2.0, else 28.
        let side = if conv == "conv1" {
            112.0
        } else if conv.starts_with("layer1") || conv == "layer2.0.conv1" {
            56.0
        } else {
            28.0
        };
        flops += 2.0 * shape.iter().product::<f64>() * side * side;
    }
    flops
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let listings: usize = env_or("E2E_LISTINGS", 300);
    let repeats: usize = env_or("E2E_REPEATS", 3);
    let partitions: i32 = env_or("E2E_PARTITIONS", 2);
    let unique = listings * 3 * 4 / 5 + 1;
    eprintln!("generating {unique} images (800-1600 px; 80% JPEG)...");
    let imgs = make_images(unique, 42);
    let image_bytes: usize = imgs.iter().map(|i| i.bytes.len()).sum();
    let served: HashMap<String, Vec<u8>> = imgs
        .iter()
        .enumerate()
        .map(|(i, img)| (format!("i{i}"), img.bytes.clone()))
        .collect();
    let base = listing_guard::demo::serve_images(served).await.unwrap();
    let (records, images) = make_listings(listings, unique, &base, 7);
    let input = Topics::fresh("e2e-input");
    input.create(partitions).await;
    produce_all(&input.input, &records).await;
    eprintln!(
        "{listings} listings, {images} image references, {unique} distinct images ({:.0} MiB), {partitions} partitions",
        image_bytes as f64 / 1048576.0
    );
    std::fs::create_dir_all(root().join("target/bench")).unwrap();
    // The reference's ONNX graph, built fresh from the shipped weights before any run.
    let built = Command::new(python())
        .current_dir(root())
        .args([
            "-c",
            "import sys; sys.path.insert(0, 'benches/reference'); from npr_onnx import build; build('models/npr-small', 'target/bench/npr.onnx')",
        ])
        .status()
        .expect("the bench virtualenv's python runs (make bench-e2e creates it)");
    assert!(built.success(), "building the ONNX graph failed");

    let mut results: Vec<RunResult> = Vec::new();
    for r in 0..repeats {
        let order = if r % 2 == 0 {
            [Which::Ours, Which::Reference]
        } else {
            [Which::Reference, Which::Ours]
        };
        for which in order {
            if std::env::var("E2E_ONLY")
                .is_ok_and(|o| o != which.name().split(' ').next().unwrap_or(""))
            {
                continue;
            }
            eprintln!("run {}/{repeats}: {}", r + 1, which.name());
            let res = run_one(which, r, &input.input, partitions, listings, images).await;
            eprintln!(
                "  {:.1} s (first decision after {:.1} s), {:.1} listings/s, p99 {:.0} ms",
                res.seconds, res.first_decision_s, res.listings_per_s, res.p99_ms
            );
            results.push(res);
        }
    }

    if std::env::var("E2E_ONLY").is_ok() {
        // A tuning run of one pipeline: its figures only.
        for r in &results {
            println!("{}", serde_json::to_string(r).unwrap());
        }
        return;
    }

    // Medians over repeats.
    let med = |which: Which, f: &Field| {
        let mut v: Vec<f64> = results
            .iter()
            .filter(|r| r.pipeline == which.name())
            .map(f)
            .collect();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        }
    };
    let cores = std::thread::available_parallelism().map_or(1, |p| p.get());
    println!();
    println!(
        "end to end, {listings} listings / {images} images, {cores} cores, median of {repeats} runs each"
    );
    println!(
        "{:<24} {:>14} {:>14} {:>14}",
        "", "listing-guard", "reference", "ours/ref"
    );
    let rows: [(&str, &Field); 7] = [
        ("listings/s", &|r| r.listings_per_s),
        ("images/s", &|r| r.images_per_s),
        ("backlog p50 ms", &|r| r.p50_ms),
        ("backlog p99 ms", &|r| r.p99_ms),
        ("peak RSS MiB", &|r| r.peak_rss_mib),
        ("CPU s / 1,000 listings", &|r| r.cpu_s_per_1000_listings),
        ("wall s", &|r| r.seconds),
    ];
    for (name, f) in rows {
        let (o, p) = (med(Which::Ours, f), med(Which::Reference, f));
        println!("{name:<24} {o:>14.2} {p:>14.2} {:>14.2}", o / p);
    }
    println!("(backlog latency: receipt to decision while draining the preloaded topic)");

    // Where our time goes.
    let ours_runs: Vec<&RunResult> = results
        .iter()
        .filter(|r| r.pipeline == Which::Ours.name())
        .collect();
    let mut stages: Vec<(String, f64)> = ours_runs
        .last()
        .map(|r| r.stage_seconds.clone().into_iter().collect())
        .unwrap_or_default();
    stages.sort_by(|a, b| b.1.total_cmp(&a.1));
    let total: f64 = stages.iter().map(|(_, s)| s).sum();
    println!();
    println!("listing-guard stage breakdown (lg_stage_seconds_total, last run; wall time summed over concurrent records):");
    for (stage, s) in &stages {
        println!(
            "  {stage:<13} {:>8.2} s per 1,000 listings  {:>5.1}%",
            s / listings as f64 * 1000.0,
            100.0 * s / total.max(f64::MIN_POSITIVE)
        );
    }

    // The physical floor: decoding alone, and the model's FLOPs at the machine's GEMM peak.
    // Decoding is timed whole (as `image` does it) and crop-first (what the pipeline does: only
    // the model's 5 crops reconstructed), alternating, and the floor uses the crop-first figure.
    let jpegs: Vec<&Img> = imgs.iter().filter(|i| i.jpeg).take(60).collect();
    let limits = lg_detector::DecodeLimits::default();
    let (card, _) = lg_model::card::ModelCard::load(&root().join("models/npr-small")).unwrap();
    let input = card.input.clone();
    let crops_of = |w: u32, h: u32| {
        Some(lg_model::infer::crop_boxes(
            w,
            h,
            input.crop_size,
            input.crops_per_image,
        ))
    };
    let (mut whole_s, mut crop_first_s) = (0.0, 0.0);
    for _ in 0..2 {
        let t = Instant::now();
        for i in &jpegs {
            std::hint::black_box(image::load_from_memory(&i.bytes).unwrap());
        }
        whole_s += t.elapsed().as_secs_f64();
        let t = Instant::now();
        for i in &jpegs {
            std::hint::black_box(
                lg_detector::decode_regions(&i.bytes, &limits, &crops_of).unwrap(),
            );
        }
        crop_first_s += t.elapsed().as_secs_f64();
    }
    let whole_decode_s_per_image = whole_s / (2 * jpegs.len()) as f64;
    let decode_s_per_image = crop_first_s / (2 * jpegs.len()) as f64;
    let flops = model_flops_per_crop(&root().join("models/npr-small"));
    // The arithmetic the pipeline was run with (its `detector.precision`, default `auto`),
    // read by the pipeline's own parser.
    let precision = listing_guard::config::parse_precision(
        &std::env::var("LISTING_GUARD__DETECTOR__PRECISION").unwrap_or_else(|_| "auto".into()),
    )
    .expect("LISTING_GUARD__DETECTOR__PRECISION is a precision the pipeline accepts");
    let peak = lg_model::peak_gflops(cores, 3.0, precision);
    let crops = f64::from(input.crops_per_image);
    let model_s_per_image = crops * flops / (peak * 1e9);
    // Decode runs one image per core; the GEMM peak already uses every core.
    let floor_images_per_s = 1.0 / (decode_s_per_image / cores as f64 + model_s_per_image);
    let per_listing = images as f64 / listings as f64;
    println!();
    println!("physical floor on this machine:");
    println!(
        "  JPEG decode alone, crop-first: {:.1} ms/image on one core ({:.1} images/s on {cores} cores); whole: {:.1} ms/image (crop-first {:.2}x)",
        decode_s_per_image * 1e3,
        cores as f64 / decode_s_per_image,
        whole_decode_s_per_image * 1e3,
        whole_decode_s_per_image / decode_s_per_image
    );
    println!(
        "  model: {:.2} GFLOP per crop x {crops} crops, GEMM peak {peak:.1} GFLOP/s (the engine's {} kernel, {cores} threads) -> {:.1} ms/image",
        flops / 1e9,
        precision.kernel(),
        model_s_per_image * 1e3
    );
    println!(
        "  floor: {floor_images_per_s:.1} images/s = {:.1} listings/s ({per_listing:.2} images per listing, before re-posts)",
        floor_images_per_s / per_listing
    );

    let ratio =
        med(Which::Ours, &|r| r.listings_per_s) / med(Which::Reference, &|r| r.listings_per_s);
    let mut json = serde_json::json!({
        "listings": listings,
        "images": images,
        "distinct_images": unique,
        "partitions": partitions,
        "cores": cores,
        "runs": results,
        "floor": {
            "jpeg_decode_ms_per_image": decode_s_per_image * 1e3,
            "jpeg_whole_decode_ms_per_image": whole_decode_s_per_image * 1e3,
            "model_gflop_per_crop": flops / 1e9,
            "gemm_peak_gflops": peak,
            "floor_images_per_s": floor_images_per_s,
        },
        "ratio_ours_reference_listings_per_s": ratio,
        "paced": null,
    });
    // Written before the paced phase, and again after it: a hang there loses nothing above.
    let path = root().join("target/bench/e2e.json");
    let write = |json: &serde_json::Value| {
        std::fs::write(&path, serde_json::to_string_pretty(json).unwrap()).unwrap()
    };
    write(&json);
    println!();
    println!("raw figures: {}", path.display());
    println!("throughput ratio ours/reference: {ratio:.2}");

    // Latency at half the slower pipeline's throughput, each pipeline alone on the machine.
    let slower =
        med(Which::Ours, &|r| r.listings_per_s).min(med(Which::Reference, &|r| r.listings_per_s));
    let rate = slower / 2.0;
    let paced_n: usize = env_or("E2E_PACED_LISTINGS", 60).min(records.len());
    let mut paced = HashMap::new();
    for which in [Which::Ours, Which::Reference] {
        eprintln!("paced latency: {} at {rate:.2} listings/s", which.name());
        paced.insert(
            which.name(),
            paced_latency(which, partitions, &records[..paced_n], rate).await,
        );
    }
    println!();
    match (&paced[Which::Ours.name()], &paced[Which::Reference.name()]) {
        (Ok(o), Ok(p)) => {
            for (name, ours, reference) in [("paced p50 ms", o.0, p.0), ("paced p99 ms", o.1, p.1)]
            {
                println!(
                    "{name:<24} {ours:>14.2} {reference:>14.2} {:>14.2}",
                    ours / reference
                );
            }
            println!(
                "(paced: send to decision at {rate:.2} listings/s, {} listings, each pipeline alone)",
                paced_n - 1
            );
            json["paced"] = serde_json::json!({
                "rate_listings_per_s": rate,
                "listings": paced_n - 1,
                "ours_p50_ms": o.0, "ours_p99_ms": o.1,
                "reference_p50_ms": p.0, "reference_p99_ms": p.1,
            });
        }
        (o, p) => {
            // The failure is the figure: it goes in the JSON, and the run still ends with the
            // throughput ratio.
            let errors: Vec<&String> = [o, p]
                .into_iter()
                .filter_map(|r| r.as_ref().err())
                .collect();
            for e in &errors {
                println!("paced latency not measured: {e}");
            }
            json["paced"] = serde_json::json!({ "rate_listings_per_s": rate, "errors": errors });
        }
    }
    write(&json);
    println!("ratio ours/reference: {ratio:.2}");
}
