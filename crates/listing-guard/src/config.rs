//! Layered configuration: compiled-in defaults, then an optional file, then the environment.
//!
//! The raw structure mirrors `config/default.toml` and refuses unknown keys; [`Settings::load`]
//! validates it without any I/O beyond reading the file.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context as _};
use ipnet::IpNet;
use serde::Deserialize;

/// The model shipped under `models/`: the residual-feature model, the best of the compared
/// models by the pooled out-of-fold figures (`models/README.md`).
pub const SHIPPED_MODEL: &str = "models/residual-lr";

/// `detector.model_dir` for metadata signals only, no pixel model.
pub const NO_MODEL: &str = "none";

/// Where the shipped model is looked for, in order: the working directory, then beside the
/// binary (`<bin>/models/…`; `<bin>/../models/…` as an install lays it out;
/// `<bin>/../../models/…` for cargo's `target/<profile>/` in a checkout).
pub fn shipped_model_candidates() -> Vec<std::path::PathBuf> {
    let mut candidates = vec![std::path::PathBuf::from(SHIPPED_MODEL)];
    if let Some(bin) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        for up in ["", "..", "../.."] {
            candidates.push(bin.join(up).join(SHIPPED_MODEL));
        }
    }
    candidates
}

/// The shipped model's directory: the first of [`shipped_model_candidates`] with a model card.
pub fn shipped_model_dir() -> Option<std::path::PathBuf> {
    shipped_model_candidates()
        .into_iter()
        .find(|d| d.join(lg_model::card::CARD_FILE).is_file())
}

/// The compiled-in defaults.
pub const DEFAULT_CONFIG_TOML: &str = include_str!("../config/default.toml");

/// Kafka settings.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSettings {
    /// Bootstrap servers.
    pub brokers: String,
    /// Consumer group.
    pub group_id: String,
    /// Static group membership id; empty for dynamic membership.
    pub instance_id: String,
    /// Input topic.
    pub input_topic: String,
    /// Decisions topic.
    pub decisions_topic: String,
    /// Labels topic.
    pub labels_topic: String,
    /// Dead-letter topic.
    pub dlq_topic: String,
    /// Extra librdkafka settings.
    #[serde(default)]
    pub librdkafka: BTreeMap<String, String>,
}

/// Pipeline settings.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSettings {
    /// Records processed concurrently.
    pub max_in_flight: usize,
    /// Drain deadline at shutdown.
    pub shutdown_timeout_ms: u64,
    /// Most payload bytes copied into a dead letter.
    pub dead_letter_payload_max_bytes: usize,
}

/// Input validation settings.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ValidationSettings {
    /// Largest payload.
    pub max_payload_bytes: usize,
    /// Most images per listing.
    pub max_images: usize,
}

/// Image fetch settings.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct FetchSettings {
    /// Largest body.
    pub max_bytes: usize,
    /// Per-attempt deadline.
    pub timeout_ms: u64,
    /// Connect deadline.
    pub connect_timeout_ms: u64,
    /// Most redirects.
    pub max_redirects: usize,
    /// Attempts in all.
    pub max_attempts: u32,
    /// First backoff.
    pub backoff_initial_ms: u64,
    /// Largest backoff.
    pub backoff_max_ms: u64,
    /// Networks exempt from the address refusal.
    pub allowed_networks: Vec<String>,
    /// Requests in flight at once.
    pub max_concurrent: usize,
}

/// Decode limits.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct DecodeSettings {
    /// Most pixels.
    pub max_pixels: u64,
    /// Largest side.
    pub max_dimension: u32,
    /// Smallest side.
    pub min_dimension: u32,
    /// Largest decoder allocation.
    pub max_alloc_bytes: u64,
}

/// Detector service settings.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct DetectorSettings {
    /// Images per batch.
    pub batch_size: usize,
    /// Partial-batch wait.
    pub linger_ms: u64,
    /// Parallel batches.
    pub workers: usize,
    /// Learned model directory: empty for the shipped model wherever it is found
    /// ([`shipped_model_dir`]), `none` for metadata signals only.
    pub model_dir: String,
    /// The CPU engine's arithmetic: `auto` (int8 where the CPU has AVX512-VNNI and AVX512-BF16
    /// but no AMX, else bf16 where it has AMX or AVX512-BF16, else f32), `bf16` (on AMX or
    /// AVX512-BF16, else f32), `int8` (on AMX-INT8 or AVX512-VNNI, else f32), or `f32`.
    pub precision: String,
    /// A PEM bundle of trust anchors that C2PA signers must chain to; empty: no trust list
    /// (signatures and hashes are still verified; signers are not judged).
    #[serde(default)]
    pub c2pa_trust_anchors: String,
    /// Which of the CPU's instruction sets the model engine may use.
    #[serde(default)]
    pub cpu: CpuSettings,
}

/// `[detector.cpu]`: the instruction sets the model engine may use (all that the CPU has, by
/// default). For comparisons and for working around a platform problem; process-wide.
#[derive(Debug, Clone, Copy, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CpuSettings {
    /// bf16 arithmetic for `precision = "auto"` (false: auto is f32).
    pub bf16: bool,
    /// int8 arithmetic for `precision = "auto"`.
    pub int8: bool,
    /// The AVX-512 vector kernels (false: the `gemm` crate's; the AMX tiles stay).
    pub avx512: bool,
    /// bf16 activations between layers on the AVX512-VNNI int8 kernel (false: f32).
    pub int8_bf16_activations: bool,
}

impl Default for CpuSettings {
    fn default() -> Self {
        let d = lg_model::cpu::CpuFeatures::default();
        Self {
            bf16: d.bf16,
            int8: d.int8,
            avx512: d.avx512,
            int8_bf16_activations: d.int8_bf16_activations,
        }
    }
}

impl From<CpuSettings> for lg_model::cpu::CpuFeatures {
    fn from(c: CpuSettings) -> Self {
        Self {
            bf16: c.bf16,
            int8: c.int8,
            avx512: c.avx512,
            int8_bf16_activations: c.int8_bf16_activations,
        }
    }
}

/// Policy settings.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySettings {
    /// Policy file; empty for the shipped default.
    pub file: String,
}

/// Score cache settings.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSettings {
    /// The redb file; empty: no cache.
    pub path: String,
    /// Entries older than this are ignored and evicted.
    pub max_age_hours: u64,
    /// Most entries kept.
    pub max_entries: u64,
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Kafka.
    pub kafka: KafkaSettings,
    /// Pipeline.
    pub pipeline: PipelineSettings,
    /// Validation.
    pub validation: ValidationSettings,
    /// Fetch.
    pub fetch: FetchSettings,
    /// Decode.
    pub decode: DecodeSettings,
    /// Detector.
    pub detector: DetectorSettings,
    /// Policy.
    pub policy: PolicySettings,
    /// Score cache.
    pub cache: CacheSettings,
    /// Health and metrics endpoints.
    pub telemetry: TelemetrySettings,
    /// Labelled copies of images the policy labels.
    pub label_assets: LabelAssetSettings,
}

pub use crate::assets::LabelAssetSettings;

/// Health and metrics endpoints.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySettings {
    /// Address of the `/healthz`, `/readyz` and `/metrics` server; empty: no server.
    pub listen: String,
    /// Base URL of an OTLP/HTTP collector for traces and metrics; empty: no export.
    pub otlp_endpoint: String,
    /// Fraction of new traces sampled.
    pub otlp_sample_ratio: f64,
    /// Milliseconds between metric pushes to `otlp_endpoint`; 0: spans only.
    pub otlp_metrics_interval_ms: u64,
    /// The `service.name` resource attribute.
    pub service_name: String,
}

impl Settings {
    /// Loads defaults, then `file` (if any), then the environment; validates.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        let mut b = config::Config::builder().add_source(config::File::from_str(
            DEFAULT_CONFIG_TOML,
            config::FileFormat::Toml,
        ));
        if let Some(f) = file {
            if !f.exists() {
                bail!("config file {} does not exist", f.display());
            }
            b = b.add_source(config::File::from(f).format(config::FileFormat::Toml));
        }
        b = b
            .add_source(
                config::Environment::with_prefix("LISTING_GUARD")
                    .prefix_separator("__")
                    .separator("__")
                    .list_separator(",")
                    .with_list_parse_key("fetch.allowed_networks")
                    .try_parsing(true),
            )
            .set_override_option(
                "kafka.brokers",
                std::env::var("KAFKA_BROKERS")
                    .ok()
                    .filter(|s| !s.is_empty()),
            )?;
        let mut s: Settings = b
            .build()?
            .try_deserialize()
            .context("configuration is invalid")?;
        // Environment variable names cannot carry the dots of librdkafka keys, and the loader
        // splits keys on dots anyway, so `LISTING_GUARD__KAFKA__LIBRDKAFKA__SASL_PASSWORD`
        // names `sasl.password`. No librdkafka property has an underscore in its name.
        s.kafka.librdkafka = std::mem::take(&mut s.kafka.librdkafka)
            .into_iter()
            .map(|(k, v)| (k.replace('_', "."), v))
            .collect();
        s.validate()?;
        Ok(s)
    }

    fn validate(&self) -> anyhow::Result<()> {
        let positive = [
            ("pipeline.max_in_flight", self.pipeline.max_in_flight as u64),
            (
                "validation.max_payload_bytes",
                self.validation.max_payload_bytes as u64,
            ),
            ("validation.max_images", self.validation.max_images as u64),
            ("fetch.max_bytes", self.fetch.max_bytes as u64),
            ("cache.max_age_hours", self.cache.max_age_hours),
            ("cache.max_entries", self.cache.max_entries),
            ("fetch.timeout_ms", self.fetch.timeout_ms),
            ("fetch.max_concurrent", self.fetch.max_concurrent as u64),
            ("fetch.max_attempts", u64::from(self.fetch.max_attempts)),
            ("decode.max_pixels", self.decode.max_pixels),
            ("detector.batch_size", self.detector.batch_size as u64),
            ("detector.workers", self.detector.workers as u64),
        ];
        if let Some((k, _)) = positive.iter().find(|(_, v)| *v == 0) {
            bail!("{k} must be greater than 0");
        }
        for (k, v) in [
            ("kafka.brokers", &self.kafka.brokers),
            ("kafka.group_id", &self.kafka.group_id),
            ("kafka.input_topic", &self.kafka.input_topic),
        ] {
            if v.trim().is_empty() {
                bail!("{k} must not be empty");
            }
        }
        lg_ingest::consumer::check_extra(&self.kafka.librdkafka)
            .map_err(|e| anyhow::anyhow!("kafka.librdkafka: {e}"))?;
        self.allowed_networks()?;
        if !self.telemetry.listen.is_empty()
            && self
                .telemetry
                .listen
                .parse::<std::net::SocketAddr>()
                .is_err()
        {
            bail!(
                "telemetry.listen: {:?} is not an address like 0.0.0.0:9464",
                self.telemetry.listen
            );
        }
        if !self.label_assets.store.is_empty() {
            crate::assets::StoreUrl::parse(&self.label_assets.store)
                .map_err(|e| anyhow::anyhow!("label_assets.store: {e}"))?;
        }
        self.label_assets
            .corner
            .parse::<lg_labeler::visible::Corner>()
            .map_err(|e| anyhow::anyhow!("label_assets.corner: {e}"))?;
        self.precision()?;
        let t = &self.telemetry;
        if !t.otlp_endpoint.is_empty() {
            let ok = url::Url::parse(&t.otlp_endpoint)
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
            if !ok {
                bail!(
                    "telemetry.otlp_endpoint: {:?} is not an http(s) URL like http://otel-collector:4318",
                    t.otlp_endpoint
                );
            }
        }
        if !(0.0..=1.0).contains(&t.otlp_sample_ratio) {
            bail!(
                "telemetry.otlp_sample_ratio: {} is not between 0.0 and 1.0",
                t.otlp_sample_ratio
            );
        }
        if t.otlp_metrics_interval_ms != 0
            && !(100..=3_600_000).contains(&t.otlp_metrics_interval_ms)
        {
            bail!(
                "telemetry.otlp_metrics_interval_ms: {} is not 0 (off) or between 100 and 3600000",
                t.otlp_metrics_interval_ms
            );
        }
        if t.service_name.trim().is_empty() {
            bail!("telemetry.service_name must not be empty");
        }
        Ok(())
    }

    /// Parsed `fetch.allowed_networks`.
    pub fn allowed_networks(&self) -> anyhow::Result<Vec<IpNet>> {
        self.fetch
            .allowed_networks
            .iter()
            .map(|s| {
                s.parse::<IpNet>()
                    .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
                    .with_context(|| {
                        format!("fetch.allowed_networks: {s:?} is not a network (e.g. 127.0.0.0/8)")
                    })
            })
            .collect()
    }

    /// Fetcher configuration.
    pub fn fetch_config(&self) -> anyhow::Result<lg_ingest::fetch::FetchConfig> {
        let f = &self.fetch;
        Ok(lg_ingest::fetch::FetchConfig {
            max_bytes: f.max_bytes,
            timeout: Duration::from_millis(f.timeout_ms),
            connect_timeout: Duration::from_millis(f.connect_timeout_ms),
            max_redirects: f.max_redirects,
            max_attempts: f.max_attempts,
            backoff_initial: Duration::from_millis(f.backoff_initial_ms),
            backoff_max: Duration::from_millis(f.backoff_max_ms),
            allowed_networks: self.allowed_networks()?,
            max_concurrent: f.max_concurrent,
            ..Default::default()
        })
    }

    /// Decode limits.
    pub fn decode_limits(&self) -> lg_detector::DecodeLimits {
        lg_detector::DecodeLimits {
            max_pixels: self.decode.max_pixels,
            max_dimension: self.decode.max_dimension,
            min_dimension: self.decode.min_dimension,
            max_alloc_bytes: self.decode.max_alloc_bytes,
        }
    }

    /// The model directory the detector loads: `detector.model_dir` when set, none for
    /// `none`, else the shipped model where it is found.
    pub fn model_dir(&self) -> Option<std::path::PathBuf> {
        match self.detector.model_dir.as_str() {
            NO_MODEL => None,
            "" => shipped_model_dir(),
            dir => Some(dir.into()),
        }
    }

    /// The detector: decode limits plus the learned model from [`Self::model_dir`]. Logs which
    /// model, version and kernel it runs, or that it runs on metadata only and why.
    pub fn detector(&self) -> anyhow::Result<lg_detector::Detector> {
        let d =
            lg_detector::Detector::new(self.decode_limits()).with_c2pa_trust(self.c2pa_trust()?);
        let Some(dir) = self.model_dir() else {
            if self.detector.model_dir == NO_MODEL {
                tracing::info!("detector: metadata signals only (detector.model_dir = \"none\")");
            } else {
                let looked: Vec<String> = shipped_model_candidates()
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect();
                tracing::warn!(
                    looked_in = %looked.join(", "),
                    "detector: detector.model_dir is empty and no shipped {SHIPPED_MODEL} was \
                     found; metadata signals only"
                );
            }
            return Ok(d);
        };
        let (m, kernel) = lg_model::load_any(&dir, lg_model::device()?, self.precision()?)
            .with_context(|| format!("detector.model_dir: loading {}", dir.display()))?;
        tracing::info!(
            model = %m.version(),
            dir = %dir.display(),
            kernel,
            "detector: pixel model loaded"
        );
        Ok(d.with_model(m))
    }

    /// `detector.c2pa_trust_anchors`, read and parsed.
    pub fn c2pa_trust(&self) -> anyhow::Result<lg_detector::provenance::C2paTrust> {
        let path = &self.detector.c2pa_trust_anchors;
        if path.is_empty() {
            return Ok(lg_detector::provenance::C2paTrust::none());
        }
        let pem = std::fs::read_to_string(path)
            .with_context(|| format!("detector.c2pa_trust_anchors: reading {path}"))?;
        lg_detector::provenance::C2paTrust::with_anchors(&pem)
            .with_context(|| format!("detector.c2pa_trust_anchors: {path}"))
    }

    /// Parsed `detector.precision`.
    /// `detector.precision`, after `[detector.cpu]` is applied to the process (the engine's
    /// instruction sets are process-wide: a second, different `[detector.cpu]` in the same
    /// process is refused). Loading the settings validates them through this, so their
    /// `[detector.cpu]` is in force before anything resolves `auto`.
    pub fn precision(&self) -> anyhow::Result<lg_model::cpu::Precision> {
        lg_model::cpu::configure(self.detector.cpu.into()).map_err(|current| {
            anyhow::anyhow!(
                "detector.cpu: this process already runs the model engine with {current:?}"
            )
        })?;
        parse_precision(&self.detector.precision).context("detector.precision")
    }

    /// The score cache, when `cache.path` is set.
    pub fn score_cache(&self) -> anyhow::Result<Option<std::sync::Arc<crate::cache::ScoreCache>>> {
        if self.cache.path.is_empty() {
            return Ok(None);
        }
        let limits = crate::cache::CacheLimits {
            max_age: Duration::from_secs(self.cache.max_age_hours * 3600),
            max_entries: self.cache.max_entries,
        };
        let c = crate::cache::ScoreCache::open(Path::new(&self.cache.path), limits)
            .with_context(|| format!("cache.path: opening {}", self.cache.path))?;
        Ok(Some(std::sync::Arc::new(c)))
    }

    /// What a cached analysis must have been produced with to be reused: the provenance
    /// detector (with its C2PA trust list), the model and the decode limits.
    pub fn analysis_version(&self, detector: &lg_detector::Detector) -> String {
        let d = &self.decode;
        format!(
            "{};model={};decode={}/{}/{}/{}",
            detector.provenance_version(),
            detector.model_version().unwrap_or("-"),
            d.max_pixels,
            d.max_dimension,
            d.min_dimension,
            d.max_alloc_bytes
        )
    }

    /// The effective configuration as TOML, with secrets masked: librdkafka values whose key
    /// names a password, secret, key or token, and credentials in broker addresses.
    pub fn masked_toml(&self) -> anyhow::Result<String> {
        let mut s = self.clone();
        for (k, v) in &mut s.kafka.librdkafka {
            if ["password", "secret", "key", "token"]
                .iter()
                .any(|w| k.contains(w))
            {
                *v = "***".into();
            }
        }
        s.kafka.brokers = s
            .kafka
            .brokers
            .split(',')
            .map(|b| match b.rsplit_once('@') {
                Some((_, host)) => format!("***@{host}"),
                None => b.to_owned(),
            })
            .collect::<Vec<_>>()
            .join(",");
        Ok(toml::to_string(&s)?)
    }

    /// Validation limits.
    pub fn validation_limits(&self) -> lg_events::ValidationLimits {
        lg_events::ValidationLimits {
            max_payload_bytes: self.validation.max_payload_bytes,
            max_images: self.validation.max_images,
            ..Default::default()
        }
    }

    /// The policy in force.
    pub fn load_policy(&self) -> anyhow::Result<lg_policy::Policy> {
        if self.policy.file.is_empty() {
            return Ok(lg_policy::Policy::default_policy());
        }
        let text = std::fs::read_to_string(&self.policy.file)
            .with_context(|| format!("policy.file: cannot read {}", self.policy.file))?;
        lg_policy::Policy::from_toml_str(&text)
            .with_context(|| format!("policy.file: {}", self.policy.file))
    }
}

/// `auto` ([`lg_model::cpu::Precision::auto`]), `bf16`, `int8` or `f32`.
pub fn parse_precision(name: &str) -> anyhow::Result<lg_model::cpu::Precision> {
    match name {
        "auto" => Ok(lg_model::cpu::Precision::auto()),
        "bf16" => Ok(lg_model::cpu::Precision::Bf16),
        "int8" => Ok(lg_model::cpu::Precision::Int8),
        "f32" => Ok(lg_model::cpu::Precision::F32),
        other => bail!("{other:?} is not \"auto\", \"bf16\", \"int8\" or \"f32\""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_precision_name_parses_and_others_are_refused() {
        use lg_model::cpu::Precision;
        for (name, want) in [
            ("auto", Precision::auto()),
            ("bf16", Precision::Bf16),
            ("int8", Precision::Int8),
            ("f32", Precision::F32),
        ] {
            assert_eq!(parse_precision(name).unwrap(), want, "{name}");
        }
        let err = parse_precision("fp16").unwrap_err().to_string();
        assert!(err.contains("\"bf16\""), "{err}");
    }

    #[test]
    fn defaults_load_and_files_override() {
        let dir = std::env::temp_dir().join(format!("lg-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("c.toml");
        std::fs::write(
            &f,
            "[kafka]\ngroup_id = \"g2\"\n[fetch]\nallowed_networks = [\"127.0.0.0/8\"]\n",
        )
        .unwrap();
        let s = Settings::load(Some(&f)).unwrap();
        assert_eq!(s.kafka.group_id, "g2");
        assert_eq!(s.kafka.input_topic, "listings.v1");
        assert_eq!(s.allowed_networks().unwrap().len(), 1);

        std::fs::write(&f, "[kafka]\ngroup_idd = \"x\"\n").unwrap();
        let e = format!("{:#}", Settings::load(Some(&f)).unwrap_err());
        assert!(e.contains("group_idd"), "{e}");

        std::fs::write(
            &f,
            "[kafka.librdkafka]\n\"enable.auto.offset.store\" = \"true\"\n",
        )
        .unwrap();
        let e = format!("{:#}", Settings::load(Some(&f)).unwrap_err());
        assert!(e.contains("enable.auto.offset.store"), "{e}");

        std::fs::write(&f, "[pipeline]\nmax_in_flight = 0\n").unwrap();
        let e = format!("{:#}", Settings::load(Some(&f)).unwrap_err());
        assert!(e.contains("pipeline.max_in_flight"), "{e}");

        for (text, key) in [
            (
                "[telemetry]\notlp_endpoint = \"collector:4318\"\n",
                "telemetry.otlp_endpoint",
            ),
            (
                "[telemetry]\notlp_sample_ratio = 1.5\n",
                "telemetry.otlp_sample_ratio",
            ),
            ("[detector]\nprecision = \"fp16\"\n", "detector.precision"),
            (
                "[telemetry]\notlp_metrics_interval_ms = 50\n",
                "telemetry.otlp_metrics_interval_ms",
            ),
            (
                "[telemetry]\nservice_name = \" \"\n",
                "telemetry.service_name",
            ),
            (
                "[label_assets]\nstore = \"gs://b/x\"\n",
                "label_assets.store",
            ),
            (
                "[label_assets]\ncorner = \"middle\"\n",
                "label_assets.corner",
            ),
        ] {
            std::fs::write(&f, text).unwrap();
            let e = format!("{:#}", Settings::load(Some(&f)).unwrap_err());
            assert!(e.contains(key), "{e}");
        }
        std::fs::write(
            &f,
            "[telemetry]\notlp_endpoint = \"https://otel.example:4318/\"\n",
        )
        .unwrap();
        assert!(Settings::load(Some(&f)).is_ok());

        assert!(Settings::load(Some(&dir.join("missing.toml"))).is_err());
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn printed_config_masks_secrets_and_loads_back() {
        let mut s = Settings::load(None).unwrap();
        s.kafka
            .librdkafka
            .insert("sasl.password".into(), "hunter2".into());
        s.kafka
            .librdkafka
            .insert("ssl.key.location".into(), "/etc/k.pem".into());
        s.kafka
            .librdkafka
            .insert("fetch.wait.max.ms".into(), "100".into());
        let text = s.masked_toml().unwrap();
        assert!(
            !text.contains("hunter2") && !text.contains("/etc/k.pem"),
            "{text}"
        );
        assert!(text.contains("\"fetch.wait.max.ms\" = \"100\""), "{text}");
        let dir = std::env::temp_dir().join(format!("lg-print-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("printed.toml");
        std::fs::write(&f, &text).unwrap();
        let back = Settings::load(Some(&f)).unwrap();
        assert_eq!(back.kafka.librdkafka["sasl.password"], "***");
        assert_eq!(back.pipeline.max_in_flight, s.pipeline.max_in_flight);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn shipped_config_and_policy_load_through_the_real_loader() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let s = Settings::load(Some(&root.join("deploy/config.example.toml"))).unwrap();
        assert_eq!(
            s.kafka
                .librdkafka
                .get("fetch.wait.max.ms")
                .map(String::as_str),
            Some("100")
        );
        let mut s = s;
        s.policy.file = root
            .join("deploy/policy/default.toml")
            .display()
            .to_string();
        assert_eq!(
            s.load_policy().unwrap().version(),
            lg_policy::Policy::default_policy().version()
        );
    }
}
