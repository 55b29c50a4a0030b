//! Logging and OpenTelemetry: the `tracing` subscriber every command installs, and, when
//! `telemetry.otlp_endpoint` is set, OTLP/HTTP export of spans and of the metrics (every
//! `telemetry.otlp_metrics_interval_ms`, cumulative, the same values as `/metrics`).
//!
//! The per-record span (see the pipeline) continues the input record's W3C trace: its parent is
//! the `traceparent` the listing service wrote, and its own span id is what the outputs'
//! `traceparent` headers name as their parent, so the exported trace joins the producer, this
//! pipeline and the consumers of its decisions.

use anyhow::Context as _;
use lg_events::trace::TraceParent;
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use std::time::Duration;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::layer::{Layer as _, SubscriberExt as _};
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::config::TelemetrySettings;

/// Flushes and stops the span and metric exporters when dropped (call it outside any async
/// runtime: the exporters' HTTP client blocks). The metrics' last values are pushed then.
#[must_use = "dropping the guard stops the OTLP export"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
    meters: Option<SdkMeterProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            if let Err(e) = p.shutdown() {
                eprintln!("listing-guard: flushing spans at exit failed: {e}");
            }
        }
        if let Some(m) = self.meters.take() {
            if let Err(e) = m.shutdown() {
                eprintln!("listing-guard: pushing the last metrics at exit failed: {e}");
            }
        }
    }
}

/// Installs the global subscriber: human-readable logs on stderr filtered by `LISTING_GUARD_LOG`
/// (default `info,rdkafka=warn`), and, when `telemetry` names an OTLP endpoint, span export and
/// metric export (the latter unless `otlp_metrics_interval_ms` is 0).
pub fn init(telemetry: Option<&TelemetrySettings>) -> anyhow::Result<TelemetryGuard> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LISTING_GUARD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rdkafka=warn"));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let provider = match telemetry.filter(|t| !t.otlp_endpoint.is_empty()) {
        Some(t) => Some(provider(t)?),
        None => None,
    };
    // Spans are exported by their own filter, not the log level: the project's info spans (the
    // record and its stages), never the exporter's own HTTP client, which would feed back.
    let otel = provider.as_ref().map(|p| {
        let spans: tracing_subscriber::filter::Targets = [
            "listing_guard",
            "lg_ingest",
            "lg_detector",
            "lg_policy",
            "lg_labeler",
            "lg_model",
        ]
        .into_iter()
        .map(|t| (t, tracing::Level::INFO))
        .collect();
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("listing-guard"))
            .with_tracked_inactivity(false)
            .with_filter(spans)
    });
    tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(otel)
        .try_init()
        .context("installing the tracing subscriber")?;
    let mut meters = None;
    if let Some(t) = telemetry.filter(|t| !t.otlp_endpoint.is_empty()) {
        tracing::info!(endpoint = %otlp_url(&t.otlp_endpoint, "traces"), "exporting spans over OTLP/HTTP");
        if t.otlp_metrics_interval_ms > 0 {
            let m = meter_provider(t)?;
            crate::metrics::METRICS.export_to(&m.meter("listing-guard"));
            tracing::info!(
                endpoint = %otlp_url(&t.otlp_endpoint, "metrics"),
                interval_ms = t.otlp_metrics_interval_ms,
                "exporting metrics over OTLP/HTTP"
            );
            meters = Some(m);
        }
    }
    Ok(TelemetryGuard { provider, meters })
}

/// `<base>/v1/<signal>`, as the OTLP/HTTP specification builds it from a base endpoint.
fn otlp_url(base: &str, signal: &str) -> String {
    format!("{}/v1/{signal}", base.trim_end_matches('/'))
}

/// The resource both signals describe: `service.name` and `service.version`.
fn resource(t: &TelemetrySettings) -> opentelemetry_sdk::Resource {
    opentelemetry_sdk::Resource::builder()
        .with_service_name(t.service_name.clone())
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build()
}

fn provider(t: &TelemetrySettings) -> anyhow::Result<SdkTracerProvider> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(otlp_url(&t.otlp_endpoint, "traces"))
        .with_timeout(Duration::from_secs(5))
        .build()
        .context("telemetry.otlp_endpoint: building the OTLP span exporter")?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            t.otlp_sample_ratio,
        ))))
        .with_resource(resource(t))
        .build())
}

/// Metrics pushed on their own thread every `otlp_metrics_interval_ms`, with cumulative
/// temporality (what Prometheus counters are), and once more at shutdown.
fn meter_provider(t: &TelemetrySettings) -> anyhow::Result<SdkMeterProvider> {
    let exporter = opentelemetry_otlp::MetricExporter::builder()
        .with_http()
        .with_endpoint(otlp_url(&t.otlp_endpoint, "metrics"))
        .with_timeout(Duration::from_secs(5))
        .with_temporality(opentelemetry_sdk::metrics::Temporality::Cumulative)
        .build()
        .context("telemetry.otlp_endpoint: building the OTLP metric exporter")?;
    let reader = PeriodicReader::builder(exporter)
        .with_interval(Duration::from_millis(t.otlp_metrics_interval_ms))
        .build();
    Ok(SdkMeterProvider::builder()
        .with_reader(reader)
        .with_resource(resource(t))
        .build())
}

/// Makes `span` the child of `upstream` (the input record's `traceparent`, if valid) and returns
/// the trace context the record's outputs carry: the span's own ids when spans are exported,
/// else `fallback` (the input's trace continued with a derived span id).
pub fn join_trace(
    span: &tracing::Span,
    upstream: Option<&TraceParent>,
    fallback: TraceParent,
) -> TraceParent {
    if let Some(up) = upstream {
        let remote = SpanContext::new(
            TraceId::from_bytes(up.trace_id),
            SpanId::from_bytes(up.parent_id),
            TraceFlags::new(up.flags),
            true,
            TraceState::default(),
        );
        let cx = opentelemetry::Context::new().with_remote_span_context(remote);
        if span.set_parent(cx).is_err() {
            // No OpenTelemetry layer: nothing is exported, the derived context stands.
            return fallback;
        }
    }
    let cx = span.context();
    let own = cx.span().span_context().clone();
    if !own.is_valid() {
        return fallback;
    }
    TraceParent {
        trace_id: own.trace_id().to_bytes(),
        parent_id: own.span_id().to_bytes(),
        flags: own.trace_flags().to_u8(),
    }
}
