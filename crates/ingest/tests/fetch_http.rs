//! The fetcher against a real HTTP server on 127.0.0.1.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use lg_ingest::fetch::{FetchConfig, ImageFetcher};

async fn serve() -> (String, Arc<AtomicU32>) {
    let hits = Arc::new(AtomicU32::new(0));
    let app = Router::new()
        .route(
            "/ok",
            get(|| async { ([(header::CONTENT_TYPE, "image/png")], vec![7u8; 1000]) }),
        )
        .route("/missing", get(|| async { StatusCode::NOT_FOUND }))
        .route(
            "/flaky",
            get(|State(h): State<Arc<AtomicU32>>| async move {
                if h.fetch_add(1, Ordering::SeqCst) < 2 {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        [(header::RETRY_AFTER, "0")],
                    )
                        .into_response()
                } else {
                    vec![1u8; 10].into_response()
                }
            }),
        )
        .route(
            "/always500",
            get(|| async { StatusCode::INTERNAL_SERVER_ERROR }),
        )
        .route("/big", get(|| async { vec![0u8; 5000] }))
        .route(
            "/to-private",
            get(|| async { Redirect::temporary("http://10.0.0.1/x.jpg") }),
        )
        .route(
            "/to-file",
            get(|| async { Redirect::temporary("file:///etc/passwd") }),
        )
        .route("/loop", get(|| async { Redirect::temporary("/loop") }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Response::new(axum::body::Body::from("late"))
            }),
        )
        .with_state(Arc::clone(&hits));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), hits)
}

fn fetcher(allow_loopback: bool) -> ImageFetcher {
    ImageFetcher::new(FetchConfig {
        max_bytes: 4096,
        timeout: Duration::from_millis(500),
        max_attempts: 3,
        backoff_initial: Duration::from_millis(10),
        backoff_max: Duration::from_millis(50),
        allowed_networks: if allow_loopback {
            vec!["127.0.0.0/8".parse().unwrap()]
        } else {
            vec![]
        },
        ..FetchConfig::default()
    })
    .unwrap()
}

#[tokio::test]
async fn outcomes_over_real_http() {
    let (base, hits) = serve().await;
    let f = fetcher(true);
    let ok = f.fetch(&format!("{base}/ok")).await.unwrap();
    assert_eq!(ok.bytes.len(), 1000);
    assert_eq!(ok.content_type.as_deref(), Some("image/png"));

    let flaky = f.fetch(&format!("{base}/flaky")).await.unwrap();
    assert_eq!(flaky.attempts, 3, "two 503s, then success");
    assert_eq!(hits.load(Ordering::SeqCst), 3);

    for (path, class) in [
        ("/missing", "http_404"),
        ("/always500", "http_500"),
        ("/big", "too_large"),
        ("/to-private", "redirect_refused"),
        ("/to-file", "redirect_refused"),
        ("/loop", "redirect_refused"),
        ("/slow", "fetch_timeout"),
    ] {
        let e = f.fetch(&format!("{base}{path}")).await.unwrap_err();
        assert_eq!(e.class(), class, "{path}: {e}");
    }
}

#[tokio::test]
async fn loopback_is_refused_by_default_and_unreachable_is_connect_error() {
    let (base, _) = serve().await;
    let e = fetcher(false)
        .fetch(&format!("{base}/ok"))
        .await
        .unwrap_err();
    assert_eq!(e.class(), "forbidden_address", "{e}");
    // A port with nothing listening.
    let sock = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = sock.local_addr().unwrap().port();
    drop(sock);
    let e = fetcher(true)
        .fetch(&format!("http://127.0.0.1:{port}/x.jpg"))
        .await
        .unwrap_err();
    assert_eq!(e.class(), "connect_error", "{e}");
}
