//! nginx with its defaults: after 1,000 requests on a connection it sends
//! `GOAWAY(NO_ERROR)` (`keepalive_requests`), with 128 streams at a time
//! (`http2_max_concurrent_streams`). Through `Client` with its defaults,
//! over h2 and over hyper: every request answered, none failed, and nginx's
//! own count equal to the client's (nothing lost, nothing run twice), on
//! one pod and on three. That the successor connects before the cap, so
//! no caller waits for it, is in `tests/metrics.rs`
//! (`a_server_request_cap_is_met_by_a_successor_connected_ahead`).

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use support::nginx::Nginx;
use tower::ServiceExt;
use tower_max_connection_age::Client;
use tower_max_connection_age::connector::HyperConnector;
use tower_max_connection_age::replay::ReplayBody;

type Body = Full<Bytes>;

/// `callers` callers send `requests` requests in all through `client`;
/// gives the answered count, and panics at the first failure.
async fn drive<S, R>(client: S, callers: u64, requests: u64) -> u64
where
    S: tower::Service<http::Request<Body>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Error: std::fmt::Debug,
    S::Future: Send,
    R: http_body::Body<Data = Bytes> + Send,
    R::Error: std::fmt::Debug,
{
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..callers {
        let (client, next) = (client.clone(), next.clone());
        tasks.spawn(async move {
            let mut answered = 0;
            while next.fetch_add(1, Ordering::Relaxed) < requests {
                let request = http::Request::get("http://svc/")
                    .body(Body::default())
                    .unwrap();
                let response = client.clone().oneshot(request).await.expect("answered");
                assert_eq!(response.status(), 200);
                let body = response.into_body().collect().await.expect("a whole body");
                assert_eq!(body.to_bytes(), "ok\n");
                answered += 1;
            }
            answered
        });
    }
    let mut answered = 0;
    while let Some(result) = tasks.join_next().await {
        answered += result.expect("a caller panicked");
    }
    answered
}

/// Runs `requests` through `client` and checks that nginx served exactly
/// those (its status request counts itself, once per read).
async fn served_exactly<S, R>(nginx: &Nginx, client: S, callers: u64, requests: u64)
where
    S: tower::Service<http::Request<Body>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Error: std::fmt::Debug,
    S::Future: Send,
    R: http_body::Body<Data = Bytes> + Send,
    R::Error: std::fmt::Debug,
{
    let before = nginx.served().await;
    let answered = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        drive(client, callers, requests),
    )
    .await
    .expect("the requests were answered within 60 s");
    assert_eq!(answered, requests, "every request answered");
    let after = nginx.served().await;
    assert_eq!(
        after - before - 1,
        requests,
        "nginx served each request exactly once"
    );
}

/// `pods` pods, a `Client` with its defaults: two caps' worth per pod and
/// more at 64 callers, and again at 256, above nginx's 128 streams.
async fn capped_pods_lose_nothing(pods: u8) {
    let nginx = Nginx::start(pods, None).await;
    let client = Client::builder()
        .endpoints(nginx.uris())
        .build::<Body>()
        .unwrap();
    let requests = 3_000 * u64::from(pods);
    served_exactly(&nginx, client.clone(), 64, requests).await;
    served_exactly(&nginx, client, 256, requests).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_pod_capped_at_1000_requests_per_connection_loses_nothing() {
    capped_pods_lose_nothing(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_pods_capped_at_1000_requests_per_connection_lose_nothing() {
    capped_pods_lose_nothing(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_hyper_a_capped_pod_loses_nothing() {
    let nginx = Nginx::start(1, None).await;
    let client = Client::builder()
        .endpoints(nginx.uris())
        .build_with::<Body, _>(HyperConnector::<_, ReplayBody<Body>>::http())
        .unwrap();
    served_exactly(&nginx, client, 64, 4_000).await;
}
