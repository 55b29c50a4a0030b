//! A minimal OTLP/HTTP trace receiver on 127.0.0.1: it answers every POST with 200 and keeps the
//! decoded `ExportTraceServiceRequest`s, so a test can look at the spans a pipeline exported.

use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// The receiver; it runs until the test's runtime ends.
pub struct OtlpReceiver {
    /// Its base URL (what `telemetry.otlp_endpoint` takes).
    pub endpoint: String,
    requests: Arc<Mutex<Vec<(String, ExportTraceServiceRequest)>>>,
}

impl OtlpReceiver {
    /// Binds an ephemeral port and starts serving.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
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
            for rs in &req.resource_spans {
                let service = rs
                    .resource
                    .iter()
                    .flat_map(|r| &r.attributes)
                    .find(|kv| kv.key == "service.name")
                    .and_then(|kv| kv.value.as_ref())
                    .map(|v| format!("{:?}", v.value))
                    .unwrap_or_default();
                for ss in &rs.scope_spans {
                    out.extend(ss.spans.iter().map(|s| (service.clone(), s.clone())));
                }
            }
        }
        out
    }
}

/// Reads HTTP/1.1 requests with a `Content-Length` body off one connection (keep-alive).
async fn serve(
    sock: tokio::net::TcpStream,
    store: Arc<Mutex<Vec<(String, ExportTraceServiceRequest)>>>,
) -> std::io::Result<()> {
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
        let status = match ExportTraceServiceRequest::decode(body.as_slice()) {
            Ok(req) => {
                store.lock().unwrap().push((path, req));
                "200 OK"
            }
            Err(_) => "400 Bad Request",
        };
        let reply = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n"
        );
        r.get_mut().write_all(reply.as_bytes()).await?;
    }
}
