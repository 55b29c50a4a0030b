//! A minimal OTLP/HTTP receiver on 127.0.0.1: it answers every POST with 200 and keeps the
//! decoded requests (`/v1/traces`: `ExportTraceServiceRequest`, `/v1/metrics`:
//! `ExportMetricsServiceRequest`), so a test can look at what a pipeline exported.

use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::Metric;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// One decoded export request.
#[derive(Debug, Clone)]
enum Export {
    Traces(ExportTraceServiceRequest),
    Metrics(ExportMetricsServiceRequest),
}

type Store = Arc<Mutex<Vec<(String, Export)>>>;

/// The receiver; it runs until the test's runtime ends.
pub struct OtlpReceiver {
    /// Its base URL (what `telemetry.otlp_endpoint` takes).
    pub endpoint: String,
    requests: Store,
}

impl OtlpReceiver {
    /// Binds an ephemeral port and starts serving.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let requests = Store::default();
        let store = Arc::clone(&requests);
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    let _ = serve(sock, store).await;
                });
            }
        });
        Self { endpoint, requests }
    }

    /// The paths posted to, in order.
    pub fn paths(&self) -> Vec<String> {
        let r = self.requests.lock().unwrap();
        r.iter().map(|(p, _)| p.clone()).collect()
    }

    /// Every span received, with its resource's `service.name`.
    pub fn spans(&self) -> Vec<(String, Span)> {
        let r = self.requests.lock().unwrap();
        let mut out = Vec::new();
        for (_, req) in r.iter() {
            let Export::Traces(req) = req else { continue };
            for rs in &req.resource_spans {
                let service = service_name(rs.resource.as_ref());
                for ss in &rs.scope_spans {
                    out.extend(ss.spans.iter().map(|s| (service.clone(), s.clone())));
                }
            }
        }
        out
    }

    /// The metric export requests received, in order, each as its resource's `service.name`
    /// and its metrics.
    pub fn metric_exports(&self) -> Vec<(String, Vec<Metric>)> {
        let r = self.requests.lock().unwrap();
        let mut out = Vec::new();
        for (_, req) in r.iter() {
            let Export::Metrics(req) = req else { continue };
            for rm in &req.resource_metrics {
                let metrics = rm
                    .scope_metrics
                    .iter()
                    .flat_map(|s| s.metrics.iter().cloned())
                    .collect();
                out.push((service_name(rm.resource.as_ref()), metrics));
            }
        }
        out
    }
}

fn service_name(resource: Option<&Resource>) -> String {
    resource
        .iter()
        .flat_map(|r| &r.attributes)
        .find(|kv| kv.key == "service.name")
        .map(attribute_text)
        .unwrap_or_default()
}

/// A string attribute's value, or the debug form of any other.
pub fn attribute_text(kv: &KeyValue) -> String {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        other => format!("{other:?}"),
    }
}

/// Reads HTTP/1.1 requests with a `Content-Length` body off one connection (keep-alive).
async fn serve(sock: tokio::net::TcpStream, store: Store) -> std::io::Result<()> {
    let mut r = BufReader::new(sock);
    loop {
        let mut request_line = String::new();
        if r.read_line(&mut request_line).await? == 0 {
            return Ok(());
        }
        let path = request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or("")
            .to_owned();
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            r.read_line(&mut h).await?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0u8; len];
        r.read_exact(&mut body).await?;
        let decoded = match path.as_str() {
            "/v1/traces" => ExportTraceServiceRequest::decode(body.as_slice())
                .ok()
                .map(Export::Traces),
            "/v1/metrics" => ExportMetricsServiceRequest::decode(body.as_slice())
                .ok()
                .map(Export::Metrics),
            _ => None,
        };
        let status = match decoded {
            Some(req) => {
                store.lock().unwrap().push((path, req));
                "200 OK"
            }
            None => "400 Bad Request",
        };
        let reply = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n"
        );
        r.get_mut().write_all(reply.as_bytes()).await?;
    }
}

/// Every sample of `metrics` as the Prometheus text format names it, keyed as
/// [`crate::prometheus_samples`] keys them: sums as `<name>_total`, histograms as cumulative
/// `<name>_bucket{le}` (with `+Inf`), `<name>_sum` and `<name>_count`, gauges as `<name>`.
pub fn prometheus_view(metrics: &[Metric]) -> std::collections::BTreeMap<String, f64> {
    use opentelemetry_proto::tonic::metrics::v1::metric::Data;
    use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value;
    let labels = |attrs: &[KeyValue]| -> Vec<(String, String)> {
        attrs
            .iter()
            .map(|kv| (kv.key.clone(), attribute_text(kv)))
            .collect()
    };
    let number = |v: Option<Value>| match v {
        Some(Value::AsInt(i)) => i as f64,
        Some(Value::AsDouble(d)) => d,
        None => f64::NAN,
    };
    let mut out = std::collections::BTreeMap::new();
    for m in metrics {
        match &m.data {
            Some(Data::Sum(s)) => {
                for p in &s.data_points {
                    let key =
                        crate::sample_key(&format!("{}_total", m.name), labels(&p.attributes));
                    out.insert(key, number(p.value));
                }
            }
            Some(Data::Gauge(g)) => {
                for p in &g.data_points {
                    out.insert(
                        crate::sample_key(&m.name, labels(&p.attributes)),
                        number(p.value),
                    );
                }
            }
            Some(Data::Histogram(h)) => {
                for p in &h.data_points {
                    let l = labels(&p.attributes);
                    let mut cumulative = 0u64;
                    for (i, c) in p.bucket_counts.iter().enumerate() {
                        cumulative += c;
                        let le = p
                            .explicit_bounds
                            .get(i)
                            .map_or_else(|| "+Inf".to_owned(), |b| b.to_string());
                        let mut bl = l.clone();
                        bl.push(("le".into(), le));
                        out.insert(
                            crate::sample_key(&format!("{}_bucket", m.name), bl),
                            cumulative as f64,
                        );
                    }
                    out.insert(
                        crate::sample_key(&format!("{}_count", m.name), l.clone()),
                        p.count as f64,
                    );
                    out.insert(
                        crate::sample_key(&format!("{}_sum", m.name), l),
                        p.sum.unwrap_or(f64::NAN),
                    );
                }
            }
            other => panic!("{}: unexpected metric data {other:?}", m.name),
        }
    }
    out
}
