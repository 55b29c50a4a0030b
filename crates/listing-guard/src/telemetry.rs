//! The telemetry server (`telemetry.listen`): liveness, readiness and the Prometheus scrape
//! endpoint, on a small axum server beside the pipeline.
//!
//! - `GET /healthz`: 200 while the process serves requests (liveness).
//! - `GET /readyz`: 200 when partitions of the input topic are assigned and a bootstrap broker
//!   accepts a TCP connection within 0.8 s (all are tried at once); 503 with the reason otherwise (readiness: a pod whose
//!   broker is unreachable is not counted as available). librdkafka's own views are no such
//!   check: a metadata request may be answered from its cache, and its statistics arrive only
//!   when the consumer is polled.
//! - `GET /metrics`: every metric of [`crate::metrics`], in the Prometheus/OpenMetrics text
//!   format; consumer lag is read from librdkafka's latest statistics on each scrape.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use lg_ingest::consumer::GuardConsumer;
use rdkafka::consumer::Consumer;

use crate::metrics::METRICS;

/// What `/readyz` checks.
#[derive(Clone)]
struct Ready {
    consumer: Arc<GuardConsumer>,
    brokers: Vec<String>,
}

/// Binds `listen` and serves the endpoints in the background; returns the bound address.
pub async fn serve(
    listen: &str,
    consumer: Arc<GuardConsumer>,
    brokers: &str,
) -> anyhow::Result<SocketAddr> {
    let ready = Ready {
        consumer,
        brokers: brokers.split(',').map(|b| b.trim().to_owned()).collect(),
    };
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(ready);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("telemetry.listen {listen}: {e}"))?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "telemetry server stopped");
        }
    });
    Ok(addr)
}

async fn readyz(State(r): State<Ready>) -> impl IntoResponse {
    match check_ready(&r).await {
        Ok(msg) => (StatusCode::OK, msg),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
    }
}

async fn check_ready(r: &Ready) -> Result<String, String> {
    let assigned = r
        .consumer
        .assignment()
        .map(|tpl| tpl.count())
        .map_err(|e| format!("not ready: no assignment ({e})\n"))?;
    if assigned == 0 {
        return Err("not ready: no partitions assigned\n".into());
    }
    // Every bootstrap broker at once; one accepting within the deadline is enough.
    let attempts = r.brokers.iter().map(|b| {
        let addr = broker_addr(b);
        Box::pin(async move { tokio::net::TcpStream::connect(addr).await.map(drop) })
    });
    let any = futures::future::select_ok(attempts);
    match tokio::time::timeout(Duration::from_millis(800), any).await {
        Ok(Ok(_)) => Ok(format!("ready: {assigned} partitions assigned\n")),
        _ => Err(format!(
            "not ready: broker unreachable ({})\n",
            r.brokers.join(",")
        )),
    }
}

/// `host:port` of a bootstrap entry as librdkafka accepts it: an optional `proto://` prefix,
/// and the port 9092 when none is given.
fn broker_addr(entry: &str) -> String {
    let b = entry.rsplit("://").next().unwrap_or(entry);
    match b.rsplit_once(':') {
        Some((_, port)) if port.parse::<u16>().is_ok() && !b.ends_with(']') => b.to_owned(),
        _ => format!("{b}:9092"),
    }
}

async fn metrics() -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        METRICS.encode(),
    )
}

#[cfg(test)]
mod tests {
    use super::broker_addr;

    #[test]
    fn bootstrap_entries_become_addresses() {
        assert_eq!(broker_addr("kafka-0:9093"), "kafka-0:9093");
        assert_eq!(broker_addr("SSL://kafka-0:9093"), "kafka-0:9093");
        assert_eq!(broker_addr("kafka-0"), "kafka-0:9092");
        assert_eq!(broker_addr("[::1]:9095"), "[::1]:9095");
        assert_eq!(broker_addr("[::1]"), "[::1]:9092");
    }
}
