//! The telemetry server (`telemetry.listen`): liveness, readiness and the Prometheus scrape
//! endpoint, on a small axum server beside the pipeline.
//!
//! - `GET /healthz`: 200 while the process serves requests (liveness).
//! - `GET /readyz`: 200 when partitions of the input topic are assigned and a bootstrap broker
//!   accepts a TCP connection within 1 s; 503 with the reason otherwise (readiness: a pod whose
//!   broker is unreachable is not counted as available). librdkafka's own views are no such
//!   check: a metadata request may be answered from its cache, and its statistics arrive only
//!   when the consumer is polled.
//! - `GET /metrics`: every metric of [`crate::metrics`], in the Prometheus/OpenMetrics text
//!   format; consumer lag is refreshed from librdkafka's latest statistics on each scrape.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use lg_ingest::consumer::GuardConsumer;
use rdkafka::consumer::Consumer;

use crate::metrics::{PartitionLabels, METRICS};

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
    let checked = tokio::task::spawn_blocking(move || check_ready(&r)).await;
    match checked {
        Ok(Ok(msg)) => (StatusCode::OK, msg),
        Ok(Err(why)) => (StatusCode::SERVICE_UNAVAILABLE, why),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("check failed: {e}\n"),
        ),
    }
}

fn check_ready(r: &Ready) -> Result<String, String> {
    let assigned = r
        .consumer
        .assignment()
        .map(|tpl| tpl.count())
        .map_err(|e| format!("not ready: no assignment ({e})\n"))?;
    if assigned == 0 {
        return Err("not ready: no partitions assigned\n".into());
    }
    let reachable = r.brokers.iter().any(|b| {
        b.to_socket_addrs().is_ok_and(|mut addrs| {
            addrs.any(|a| TcpStream::connect_timeout(&a, Duration::from_secs(1)).is_ok())
        })
    });
    if !reachable {
        return Err(format!(
            "not ready: broker unreachable ({})\n",
            r.brokers.join(",")
        ));
    }
    Ok(format!("ready: {assigned} partitions assigned\n"))
}

async fn metrics(State(r): State<Ready>) -> impl IntoResponse {
    METRICS.consumer_lag.clear();
    for ((topic, partition), lag) in r.consumer.context().lags() {
        METRICS
            .consumer_lag
            .get_or_create(&PartitionLabels { topic, partition })
            .set(lag);
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        METRICS.encode(),
    )
}
