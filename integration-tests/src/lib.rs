//! Helpers for the end-to-end tests: a real broker from `KAFKA_BROKERS` (default
//! 127.0.0.1:9092, started by `make broker-up`), fresh topics per test, the `listing-guard`
//! binary as a separate process, and an output collector.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use lg_events::{DeadLetter, LabelEvent, ModerationDecision};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Headers;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message};

pub mod hostile;
pub mod otlp;

static BROKER_OVERRIDE: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Points every helper of this test process at `addr` instead of `KAFKA_BROKERS` (for a test
/// binary that owns its broker, see [`OwnBroker`]). Once per process.
pub fn use_broker(addr: &str) {
    BROKER_OVERRIDE
        .set(addr.to_owned())
        .expect("use_broker is called once per test process");
}

/// The broker under test.
pub fn brokers() -> String {
    if let Some(b) = BROKER_OVERRIDE.get() {
        return b.clone();
    }
    std::env::var("KAFKA_BROKERS")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "127.0.0.1:9092".into())
}

/// Fresh topic names for one test.
#[derive(Debug, Clone)]
pub struct Topics {
    /// Input.
    pub input: String,
    /// Decisions.
    pub decisions: String,
    /// Labels.
    pub labels: String,
    /// Dead letters.
    pub dlq: String,
    /// Re-audit decisions.
    pub reaudit: String,
    /// Consumer group of the pipeline.
    pub group: String,
}

impl Topics {
    /// Unique names with `prefix`.
    pub fn fresh(prefix: &str) -> Self {
        let n = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
            % 1_000_000_000_000;
        let p = format!("{prefix}-{}-{n}", std::process::id());
        Self {
            input: format!("{p}.listings"),
            decisions: format!("{p}.decisions"),
            labels: format!("{p}.labels"),
            dlq: format!("{p}.dlq"),
            reaudit: format!("{p}.reaudit"),
            group: format!("{p}.group"),
        }
    }

    /// Creates the topics on the broker.
    pub async fn create(&self, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", brokers())
            .create()
            .expect("admin client");
        let names = [
            &self.input,
            &self.decisions,
            &self.labels,
            &self.dlq,
            &self.reaudit,
        ];
        let topics: Vec<NewTopic<'_>> = names
            .iter()
            .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
            .collect();
        let res = admin
            .create_topics(
                &topics,
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
            )
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "cannot reach the broker at {} (run `make broker-up`): {e}",
                    brokers()
                )
            });
        for r in res {
            r.unwrap_or_else(|(t, e)| panic!("creating topic {t}: {e}"));
        }
    }
}

/// Produces `(key, payload)` records to `topic` and waits for all acks.
pub async fn produce_all(topic: &str, records: &[(String, Vec<u8>)]) {
    let timed: Vec<(String, Vec<u8>, Option<i64>)> = records
        .iter()
        .map(|(k, p)| (k.clone(), p.clone(), None))
        .collect();
    produce_timed(topic, &timed).await;
}

/// Produces `(key, payload, timestamp ms)` records (`None`: the producer's clock) to `topic`
/// and waits for all acks.
pub async fn produce_timed(topic: &str, records: &[(String, Vec<u8>, Option<i64>)]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("linger.ms", "5")
        // Room for the oversized records of the hostile-input tests.
        .set("message.max.bytes", "16777216")
        .create()
        .expect("producer");
    for chunk in records.chunks(200) {
        let sends = chunk.iter().map(|(k, p, ts)| {
            let mut rec = FutureRecord::to(topic).key(k).payload(p);
            if let Some(ts) = ts {
                rec = rec.timestamp(*ts);
            }
            producer.send(rec, Duration::from_secs(30))
        });
        for r in futures::future::join_all(sends).await {
            r.map_err(|(e, _)| e).expect("input produced");
        }
    }
}

/// The `listing-guard` binary (built by `make test` before the tests run).
pub fn binary() -> PathBuf {
    if let Ok(p) = std::env::var("LISTING_GUARD_BIN") {
        return PathBuf::from(p);
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/listing-guard");
    assert!(
        p.exists(),
        "{} not found: run `cargo build -p listing-guard` first (make test does)",
        p.display()
    );
    p
}

/// A pipeline process, killed when dropped (so a failing test leaves nothing behind).
#[derive(Debug)]
pub struct Pipeline(Option<Child>);

impl Pipeline {
    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.0.as_ref().map(Child::id)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.0
            .as_mut()
            .is_some_and(|c| c.try_wait().expect("wait").is_none())
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.0.take() {
            c.kill().expect("SIGKILL");
            c.wait().expect("reaped");
        }
    }

    /// SIGTERM; asserts a clean exit within 30 s.
    pub fn terminate(self) {
        self.terminate_within(Duration::from_secs(30));
    }

    /// SIGTERM; asserts a clean exit within `bound`, and returns how long it took.
    pub fn terminate_within(mut self, bound: Duration) -> Duration {
        let c = self.0.take().expect("running");
        terminate(c, bound)
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A broker this test process starts, stops and restarts itself, on its own port with its own
/// sqlite state, through a control script with `up` and `down` (`LG_BROKER_CTL`, default
/// `scripts/broker.sh`, which reads `BROKER_ADDR` and `BROKER_STATE_DIR`). Pointing
/// `LG_BROKER_CTL` at a script with the same interface runs the same tests on another broker.
#[derive(Debug)]
pub struct OwnBroker {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    state: PathBuf,
}

impl OwnBroker {
    /// Starts a fresh broker on a free port.
    pub fn start() -> Self {
        let state = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join(format!("../target/broker-own-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&state);
        let b = Self {
            addr: format!("127.0.0.1:{}", closed_port()),
            state,
        };
        b.up();
        b
    }

    fn ctl(&self, verb: &str) {
        let script = std::env::var("LG_BROKER_CTL").unwrap_or_else(|_| {
            concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/broker.sh").to_owned()
        });
        // Output to a file, not a pipe: the broker started in the background may keep the
        // script's descriptors open, and reading a pipe to its end would wait for the broker.
        std::fs::create_dir_all(&self.state).expect("broker state dir");
        let log_path = self.state.join("ctl.log");
        let log = std::fs::File::create(&log_path).expect("ctl log");
        let status = Command::new(&script)
            .arg(verb)
            .env("BROKER_ADDR", &self.addr)
            .env("BROKER_STATE_DIR", &self.state)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("ctl log"))
            .stderr(log)
            .status()
            .unwrap_or_else(|e| panic!("{script} {verb}: {e}"));
        assert!(
            status.success(),
            "{script} {verb} failed: {}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
    }

    /// Starts it (again), keeping its data.
    pub fn up(&self) {
        self.ctl("up");
    }

    /// Stops it.
    pub fn down(&self) {
        self.ctl("down");
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        self.ctl("down");
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

/// Starts `listing-guard run` for `topics` as a separate process.
pub fn start_pipeline(topics: &Topics) -> Pipeline {
    start_pipeline_with(topics, &[])
}

/// [`start_pipeline`] with extra environment variables (e.g. `LISTING_GUARD__CACHE__PATH`).
pub fn start_pipeline_with(topics: &Topics, env: &[(&str, String)]) -> Pipeline {
    let mut cmd = guard_command(topics, "run");
    cmd.envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    Pipeline(Some(cmd.spawn().expect("listing-guard starts")))
}

/// [`start_pipeline_with`], logging at `info` (no colours) into the file `log`.
pub fn start_pipeline_logged(
    topics: &Topics,
    env: &[(&str, String)],
    log: &std::path::Path,
) -> Pipeline {
    let mut cmd = guard_command(topics, "run");
    cmd.envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("LISTING_GUARD_LOG", "info")
        .env("NO_COLOR", "1")
        .stderr(std::fs::File::create(log).expect("log file"));
    Pipeline(Some(cmd.spawn().expect("listing-guard starts")))
}

/// `listing-guard <subcommand>` configured for `topics` and the test broker (images from
/// 127.0.0.1 allowed, short fetch timeouts), not yet started.
pub fn guard_command(topics: &Topics, subcommand: &str) -> Command {
    let mut cmd = Command::new(binary());
    cmd.arg(subcommand)
        .env("KAFKA_BROKERS", brokers())
        .env("LISTING_GUARD__KAFKA__GROUP_ID", &topics.group)
        .env(
            "LISTING_GUARD__KAFKA__INSTANCE_ID",
            format!("{}.instance-0", topics.group),
        )
        .env("LISTING_GUARD__KAFKA__INPUT_TOPIC", &topics.input)
        .env("LISTING_GUARD__KAFKA__DECISIONS_TOPIC", &topics.decisions)
        .env("LISTING_GUARD__KAFKA__LABELS_TOPIC", &topics.labels)
        .env("LISTING_GUARD__KAFKA__DLQ_TOPIC", &topics.dlq)
        .env("LISTING_GUARD__FETCH__ALLOWED_NETWORKS", "127.0.0.0/8")
        // Metadata only unless a test sets a model: the debug build runs the network slowly.
        .env("LISTING_GUARD__DETECTOR__MODEL_DIR", "none")
        .env("LISTING_GUARD__FETCH__MAX_ATTEMPTS", "2")
        .env("LISTING_GUARD__FETCH__BACKOFF_INITIAL_MS", "10")
        .env("LISTING_GUARD__FETCH__TIMEOUT_MS", "3000")
        .env(
            "LISTING_GUARD_LOG",
            std::env::var("IT_PIPELINE_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdin(Stdio::null());
    cmd
}

fn terminate(mut child: Child, bound: Duration) -> Duration {
    let pid = child.id().to_string();
    let started = std::time::Instant::now();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    while started.elapsed() < bound {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(
                status.success(),
                "pipeline exited with {status} after SIGTERM"
            );
            return started.elapsed();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    panic!("pipeline did not exit within {bound:?} of SIGTERM");
}

/// Everything read from the output topics.
#[derive(Debug, Default)]
pub struct Collected {
    /// Decisions, in arrival order.
    pub decisions: Vec<ModerationDecision>,
    /// Label events.
    pub labels: Vec<LabelEvent>,
    /// Dead letters, with their Kafka headers.
    pub dead: Vec<(DeadLetter, HashMap<String, String>)>,
    /// Distinct event ids decided.
    pub distinct_events: std::collections::HashSet<String>,
    /// Every output record's topic and `traceparent` header, in arrival order.
    pub traceparents: Vec<(String, Option<String>)>,
}

impl Collected {
    /// Decisions grouped by event id.
    pub fn by_event(&self) -> HashMap<&str, Vec<&ModerationDecision>> {
        let mut m: HashMap<&str, Vec<&ModerationDecision>> = HashMap::new();
        for d in &self.decisions {
            m.entry(d.event_id.as_str()).or_default().push(d);
        }
        m
    }

    /// Checks that every duplicate decision of an event is the same decision: the same id and
    /// the same content (everything but `decided_at` and `processing_latency_ms`). Returns the
    /// number of duplicates.
    pub fn assert_duplicates_identical(&self) -> usize {
        let content = |d: &ModerationDecision| {
            let mut v = serde_json::to_value(d).expect("decision serialises");
            let o = v.as_object_mut().expect("an object");
            o.remove("decided_at");
            o.remove("processing_latency_ms");
            v
        };
        let mut duplicates = 0;
        for (event, ds) in self.by_event() {
            let first = content(ds[0]);
            for d in &ds[1..] {
                assert_eq!(
                    d.decision_id, ds[0].decision_id,
                    "{event}: duplicates with different decision ids"
                );
                assert_eq!(
                    content(d),
                    first,
                    "{event}: duplicates with different content"
                );
            }
            duplicates += ds.len() - 1;
        }
        duplicates
    }
}

/// The number of partitions of `topic`, waiting up to 30 s for the broker to report it.
fn partition_count(consumer: &StreamConsumer, topic: &str) -> i32 {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let found = lg_ingest::consumer::partitions(consumer, topic, Duration::from_secs(5))
            .unwrap_or_default();
        if !found.is_empty() {
            return found.len() as i32;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "topic {topic} has no partitions on {}: create the topics before reading them",
            brokers()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Reads the output topics from the beginning.
///
/// It assigns itself every partition instead of joining a consumer group: the reader must not
/// depend on the group coordinator it observes the pipeline through. (As a group member it once
/// stalled a test for good: on tansu 0.6.0 under load, a heartbeat answered after the session
/// timeout made librdkafka rejoin under a new member id, the broker kept the expired id as the
/// group's leader, and the new member's assignment never came.)
pub struct Collector {
    consumer: StreamConsumer,
    topics: Topics,
    /// What has been read so far.
    pub seen: Collected,
    errors: u64,
}

impl Collector {
    /// Assigns every partition of the output topics, from the beginning. The topics must exist
    /// ([`Topics::create`]).
    pub fn new(topics: &Topics) -> Self {
        // librdkafka wants a group id for `assign`; with no `subscribe` it never joins it.
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers())
            .set("group.id", format!("{}.reader", topics.group))
            .set("enable.auto.commit", "false")
            .create()
            .expect("reader");
        let mut tpl = rdkafka::TopicPartitionList::new();
        for topic in [&topics.decisions, &topics.labels, &topics.dlq] {
            for p in 0..partition_count(&consumer, topic) {
                tpl.add_partition_offset(topic, p, rdkafka::Offset::Beginning)
                    .expect("partition offset");
            }
        }
        consumer.assign(&tpl).expect("assign");
        Self {
            consumer,
            topics: topics.clone(),
            seen: Collected::default(),
            errors: 0,
        }
    }

    /// Reads until `done(seen)` holds; panics after `timeout`.
    pub async fn until(&mut self, timeout: Duration, done: impl Fn(&Collected) -> bool) {
        if !self.try_until(timeout, done).await {
            panic!(
                "timed out: {} decisions, {} labels, {} dead letters so far",
                self.seen.decisions.len(),
                self.seen.labels.len(),
                self.seen.dead.len()
            );
        }
    }

    /// Reads until `done(seen)` holds (true) or `timeout` passes (false).
    pub async fn try_until(
        &mut self,
        timeout: Duration,
        done: impl Fn(&Collected) -> bool,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while !done(&self.seen) {
            if !self.read_one(deadline).await {
                return false;
            }
        }
        true
    }

    /// Keeps reading for `period` (to catch late duplicates).
    pub async fn drain(&mut self, period: Duration) {
        let deadline = tokio::time::Instant::now() + period;
        while self.read_one(deadline).await {}
    }

    async fn read_one(&mut self, deadline: tokio::time::Instant) -> bool {
        {
            let msg = loop {
                match tokio::time::timeout_at(deadline, self.consumer.recv()).await {
                    Ok(Ok(m)) => break m,
                    // The broker may be down on purpose (broker restart tests).
                    Ok(Err(e)) => {
                        self.errors += 1;
                        if self.errors.is_power_of_two() {
                            eprintln!("reader: {e} ({} errors so far); retrying", self.errors);
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Err(_) => return false,
                }
            };
            let payload = msg.payload().unwrap_or_default();
            let traceparent = msg.headers().and_then(|h| {
                h.iter()
                    .find(|x| x.key == "traceparent")
                    .and_then(|x| Some(String::from_utf8_lossy(x.value?).into_owned()))
            });
            self.seen
                .traceparents
                .push((msg.topic().to_owned(), traceparent));
            if msg.topic() == self.topics.decisions {
                let d: ModerationDecision =
                    serde_json::from_slice(payload).expect("decision parses");
                self.seen.distinct_events.insert(d.event_id.clone());
                self.seen.decisions.push(d);
            } else if msg.topic() == self.topics.labels {
                self.seen
                    .labels
                    .push(serde_json::from_slice(payload).expect("label parses"));
            } else {
                let mut headers = HashMap::new();
                if let Some(h) = msg.headers() {
                    for hdr in h.iter() {
                        headers.insert(
                            hdr.key.to_owned(),
                            String::from_utf8_lossy(hdr.value.unwrap_or_default()).into_owned(),
                        );
                    }
                }
                self.seen.dead.push((
                    serde_json::from_slice(payload).expect("dead letter parses"),
                    headers,
                ));
            }
        }
        true
    }
}

/// What the shipped default policy (`deploy/policy/default.toml`) decides for a listing showing
/// fixture `f` (next to any clean images), stated independently of the policy engine.
pub fn default_policy_action(
    f: listing_guard::fixtures::Fixture,
    marketplace: &str,
    category: &str,
) -> lg_events::Action {
    use lg_events::Action;
    if f == listing_guard::fixtures::Fixture::BrokenJpeg {
        return Action::Review;
    }
    if !f.declares_ai() {
        return Action::Allow;
    }
    match (marketplace, category) {
        ("xianyu", _) => Action::Block,
        (_, "beauty") => Action::Review,
        _ => Action::Label,
    }
}

/// Whether `LG_RELIABILITY=full` asks for the full-scale reliability runs.
pub fn full() -> bool {
    std::env::var("LG_RELIABILITY").as_deref() == Ok("full")
}

/// `reduced` in `make test`, `full` in `make test-reliability`.
pub fn scale(reduced: usize, full_scale: usize) -> usize {
    if full() {
        full_scale
    } else {
        reduced
    }
}

/// Serves the fixtures and returns `n` listings of 1–2 images each.
pub async fn fixture_listings(prefix: &str, n: usize) -> Vec<(String, Vec<u8>)> {
    let base = listing_guard::demo::serve_fixtures(9).await.unwrap();
    (0..n)
        .map(|i| {
            let f = listing_guard::fixtures::Fixture::ALL
                [i % listing_guard::fixtures::Fixture::ALL.len()];
            let mut urls = vec![format!("{base}/img/{}", f.name())];
            if i % 3 == 0 {
                urls.push(format!(
                    "{base}/img/{}",
                    listing_guard::fixtures::Fixture::CleanPng.name()
                ));
            }
            let market = ["taobao", "tmall", "xianyu"][i % 3];
            (
                format!("k{i}"),
                listing(&format!("{prefix}-{i:05}"), market, "apparel", &urls),
            )
        })
        .collect()
}

/// A listing event as JSON.
pub fn listing(event_id: &str, marketplace: &str, category: &str, urls: &[String]) -> Vec<u8> {
    let images: Vec<serde_json::Value> = urls
        .iter()
        .enumerate()
        .map(|(i, u)| serde_json::json!({"image_id": format!("img{i}"), "url": u, "role": if i == 0 { "main" } else { "detail" }}))
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "schema_version": 1,
        "event_id": event_id,
        "event_type": "listing.created",
        "occurred_at": "2026-11-25T08:00:00Z",
        "listing_id": format!("L-{event_id}"),
        "merchant_id": "M-1",
        "marketplace": marketplace,
        "category": category,
        "title": "test listing",
        "images": images
    }))
    .unwrap()
}

/// `GET path` from an HTTP/1.1 server at `addr` (e.g. the pipeline's telemetry server):
/// `(status, body)`, or `None` when nothing answers.
pub async fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let connect = tokio::net::TcpStream::connect(addr);
    let mut sock = tokio::time::timeout(Duration::from_secs(5), connect)
        .await
        .ok()?
        .ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    sock.write_all(req.as_bytes()).await.ok()?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), sock.read_to_end(&mut raw))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}

/// Polls `GET path` until it answers `status`; panics after `timeout`.
pub async fn wait_for_status(addr: &str, path: &str, status: u16, timeout: Duration) -> String {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let got = http_get(addr, path).await;
        if let Some((s, body)) = &got {
            if *s == status {
                return body.clone();
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{path} did not answer {status} within {timeout:?} (last: {got:?})"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The value of the Prometheus sample `name` (with its labels, exactly as exposed) in `text`.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The sum of every sample of the metric `family` (any labels) in `text`.
pub fn metric_sum(text: &str, family: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(family) && !l.starts_with('#'))
        .filter(|l| matches!(l.as_bytes().get(family.len()), Some(b'{' | b' ')))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A port on 127.0.0.1 with nothing listening.
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A sample's key: `name{k="v",...}` with the labels sorted by key and numeric `le` bounds
/// written as Rust prints the `f64`, so the Prometheus text and an OTLP export compare.
pub fn sample_key(name: &str, mut labels: Vec<(String, String)>) -> String {
    for (k, v) in &mut labels {
        if k == "le" && v != "+Inf" {
            *v = v
                .parse::<f64>()
                .map_or_else(|_| v.clone(), |f| f.to_string());
        }
    }
    labels.sort();
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    format!("{name}{{{}}}", inner.join(","))
}

/// Every sample of a Prometheus/OpenMetrics text exposition, keyed by [`sample_key`].
pub fn prometheus_samples(text: &str) -> std::collections::BTreeMap<String, f64> {
    let mut out = std::collections::BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect("sample line has a value");
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => {
                let body = rest.strip_suffix('}').expect("label set ends with }");
                let labels = body
                    .split("\",")
                    .filter(|p| !p.is_empty())
                    .map(|p| {
                        let (k, v) = p.split_once("=\"").expect("label is k=\"v\"");
                        (k.to_owned(), v.trim_end_matches('"').to_owned())
                    })
                    .collect();
                (n, labels)
            }
            None => (series, Vec::new()),
        };
        out.insert(
            sample_key(name, labels),
            value.parse().expect("numeric value"),
        );
    }
    out
}
