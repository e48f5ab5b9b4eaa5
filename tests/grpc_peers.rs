//! gRPC servers from other stacks, with their ping policy: a stream the
//! server keeps silent outlives many keepalive intervals through `Client`.
//! Both peers count a ping sooner than their minimum interval after the
//! previous one as a strike unless they sent HEADERS or DATA in between,
//! and at the third strike close the connection with
//! `GOAWAY(ENHANCE_YOUR_CALM, "too_many_pings")`, killing the stream:
//!
//! - grpcio (gRPC C-core), `grpc.http2.min_ping_interval_without_data_ms`;
//! - grpc-go, `keepalive.EnforcementPolicy` (`MinTime`; the first ping
//!   after HEADERS or DATA is never a strike, it resets the count:
//!   `internal/transport/http2_server.go`, `handlePing`). Its GOAWAY names
//!   the stream as processed, and the connection is closed right after it
//!   with no `RST_STREAM` or trailers: the stream dies of the closed
//!   transport ("stream closed because of a broken pipe" in h2).
//!
//! The policy is scaled down here (1 s between pings instead of 5 minutes,
//! a 200 ms keepalive instead of 10 s) so the tests take seconds; its rules
//! are the servers' own. One test per peer runs at full scale, with both
//! sides' defaults.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use support::grpcgo::GoSilentServer;
use support::grpcio::SilentServer;
use tower::ServiceExt;
use tower_max_connection_age::Client;

type Body = Full<Bytes>;

/// The messages' count and the status of a silent stream, or how it died.
type Called = Result<(usize, String), String>;

/// Calls the silent stream.
async fn call(client: &Client<Body>, server: &http::Uri) -> Called {
    // One empty message: the 5-byte gRPC frame header alone.
    let request = http::Request::post(format!("{server}silent.Silent/Stream"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Body::new(Bytes::from_static(&[0, 0, 0, 0, 0])))
        .unwrap();
    let response = client
        .clone()
        .oneshot(request)
        .await
        .map_err(|e| e.to_string())?;
    let mut body = response.into_body();
    let (mut messages, mut status) = (0, String::from("none"));
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("the stream died: {e}"))?;
        if let Some(data) = frame.data_ref() {
            // Each message here is small and comes in a frame of its own.
            messages += usize::from(!data.is_empty());
        } else if let Some(trailers) = frame.trailers_ref() {
            status = trailers
                .get("grpc-status")
                .map(|s| s.to_str().unwrap().to_string())
                .unwrap_or_default();
        }
    }
    Ok((messages, status))
}

/// A `Client` with a 200 ms keepalive, against the policy scaled down.
fn client(server: http::Uri, max_pings_without_data: Option<u32>) -> Client<Body> {
    let mut builder = Client::builder()
        .endpoint(server)
        .keep_alive_interval(Duration::from_millis(200))
        .keep_alive_timeout(Duration::from_secs(2));
    if let Some(n) = max_pings_without_data {
        builder = builder.keep_alive_max_pings_without_data(n);
    }
    builder.build::<Body>().unwrap()
}

/// The scaled-down stream (3 s of silence) through a client pinging every
/// 200 ms, with `max_pings_without_data` (`None`: the default allowance).
async fn scaled_down(uri: http::Uri, max_pings_without_data: Option<u32>) -> Called {
    let client = client(uri.clone(), max_pings_without_data);
    support::bounded(call(&client, &uri)).await
}

/// The stream ended otherwise than with its two messages and `OK`.
fn assert_killed(result: &Called) {
    assert!(
        result.is_err() || result.as_ref().is_ok_and(|(_, status)| status != "0"),
        "the stream survived: {result:?}"
    );
}

/// A 70 s silent stream through a `Client` with its defaults.
/// The stream answered both its messages and ended with `OK`.
fn assert_completed(result: Called, what: &str) {
    assert_eq!(result, Ok((2, "0".to_string())), "{what}");
}

async fn seventy_seconds(uri: http::Uri) -> Called {
    let client = Client::builder()
        .endpoint(uri.clone())
        .build::<Body>()
        .unwrap();
    tokio::time::timeout(Duration::from_secs(90), call(&client, &uri))
        .await
        .expect("the stream ended within 90 s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_grpcio_keeps_silent_outlives_the_keepalive() {
    let server = SilentServer::start(Duration::from_secs(3), Some(Duration::from_secs(1))).await;
    assert_completed(
        scaled_down(server.uri(), None).await,
        "fifteen intervals of silence",
    );
}

/// The same without the allowance, pinging at every interval of silence:
/// grpcio ends the connection, and the stream with it. (What the client
/// did before it kept within the policy.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinging_at_every_interval_gets_the_stream_killed_by_grpcio() {
    let server = SilentServer::start(Duration::from_secs(3), Some(Duration::from_secs(1))).await;
    assert_killed(&scaled_down(server.uri(), Some(0)).await);
}

/// At full scale, with both sides' defaults: a 70 s silent stream through a
/// `Client` with its defaults (keepalive every 10 s) against grpcio's
/// defaults (5 minutes between pings without data). Before the allowance
/// the stream died at 40 s. It takes 70 s, in parallel with the rest of
/// the suite; the scaled-down tests above say the same in seconds, this
/// one that it holds with the defaults no one here chose.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_70_second_silent_stream_completes_against_grpcios_defaults() {
    let server = SilentServer::start(Duration::from_secs(70), None).await;
    assert_completed(seventy_seconds(server.uri()).await, "70 s of silence");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_grpc_go_keeps_silent_outlives_the_keepalive() {
    let server = GoSilentServer::start(Duration::from_secs(3), Some(Duration::from_secs(1))).await;
    assert_completed(
        scaled_down(server.uri(), None).await,
        "fifteen intervals of silence",
    );
}

/// The same without the allowance: grpc-go forgives the first ping after
/// the first message and strikes the next three, 200 ms apart, so about a
/// second into the silence it ends the connection, and the stream with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinging_at_every_interval_gets_the_stream_killed_by_grpc_go() {
    let server = GoSilentServer::start(Duration::from_secs(3), Some(Duration::from_secs(1))).await;
    assert_killed(&scaled_down(server.uri(), Some(0)).await);
}

/// At full scale, with both sides' defaults: a 70 s silent stream through a
/// `Client` with its defaults (keepalive every 10 s) against grpc-go's
/// defaults (no keepalive options: `MinTime` 5 minutes). Without the
/// allowance the stream would die at 50 s (the ping at 20 s forgiven, those
/// at 30, 40 and 50 s struck).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_70_second_silent_stream_completes_against_grpc_gos_defaults() {
    let server = GoSilentServer::start(Duration::from_secs(70), None).await;
    assert_completed(seventy_seconds(server.uri()).await, "70 s of silence");
}
