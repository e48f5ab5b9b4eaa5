//! A connection that takes requests but never answers must not draw every
//! request (found by `examples/soak.rs`: with peak-EWMA, a connection with no
//! response yet cost nothing however many requests waited on it, so
//! power-of-two-choices sent it every request it was compared on, and within
//! 100 ms all 256 callers were stuck on it).

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use support::backend::{Script, start_pods, wait_until};
use tokio::sync::Notify;
use tower::ServiceExt;
use tower_max_connection_age::Client;

type Body = Full<Bytes>;

const REQUESTS: usize = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_never_answers_stops_drawing_requests() {
    let pods = start_pods(2).await;
    // Pod 2's connection completes the handshake, takes streams, never answers.
    pods[1].script([Script::Hang]);
    let client = Client::builder()
        .endpoints(pods.iter().map(|p| p.uri()))
        .build::<Body>()
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), async {
        while client.connection_count() < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("client did not connect in time");

    // One request at a time: each one is answered by pod 1, or arrives at
    // pod 2 and waits there for good (it is left running).
    let answered = Arc::new(Notify::new());
    let mut requests = tokio::task::JoinSet::new();
    for i in 0..REQUESTS {
        let on_hanging_pod = pods[1].requests();
        let request = Request::get(format!("http://svc.test:{}/", pods[0].addr.port()))
            .header("x-request-id", i.to_string())
            .body(Body::default())
            .unwrap();
        let client = client.clone();
        let done = answered.clone();
        requests.spawn(async move {
            let response = client.oneshot(request).await;
            done.notify_one();
            response.map(|r| r.status())
        });
        let hung = wait_until(&pods[1].record, Duration::from_secs(5), || {
            pods[1].requests() > on_hanging_pod
        });
        tokio::select! {
            arrived = hung => assert!(arrived, "request {i} was neither answered nor hung in 5 s"),
            _ = answered.notified() => {}
        }
    }
    let hung = pods[1].requests();
    let served = pods[0].requests();
    assert_eq!(hung + served, REQUESTS, "every request went somewhere once");
    assert!(
        hung <= 5,
        "{hung} of {REQUESTS} requests went to the connection that never answers"
    );
    requests.abort_all();
}
