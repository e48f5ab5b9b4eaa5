//! gRPC servers from other stacks, with their ping policy: a stream the
//! server keeps silent outlives many keepalive intervals through `Client`.
//! grpcio (gRPC C-core) counts a ping sooner than its minimum interval
//! after the previous one as a strike unless it sent HEADERS or DATA in
//! between, and at the third strike closes the connection with
//! `GOAWAY(ENHANCE_YOUR_CALM)`, killing the stream. The policy is scaled
//! down here (1 s between pings instead of 5 minutes, a 200 ms keepalive
//! instead of 10 s) so the test takes seconds; its rule is C-core's own.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use support::grpcio::SilentServer;
use tower::ServiceExt;
use tower_max_connection_age::Client;

type Body = Full<Bytes>;

/// Calls the silent stream; gives the messages' count and the status.
async fn call(client: &Client<Body>, server: &SilentServer) -> Result<(usize, String), String> {
    // One empty message: the 5-byte gRPC frame header alone.
    let request = http::Request::post(format!("{}silent.Silent/Stream", server.uri()))
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

fn client(server: &SilentServer, max_pings_without_data: Option<u32>) -> Client<Body> {
    let mut builder = Client::builder()
        .endpoint(server.uri())
        .keep_alive_interval(Duration::from_millis(200))
        .keep_alive_timeout(Duration::from_secs(2));
    if let Some(n) = max_pings_without_data {
        builder = builder.keep_alive_max_pings_without_data(n);
    }
    builder.build::<Body>().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_grpcio_keeps_silent_outlives_the_keepalive() {
    let server = SilentServer::start(Duration::from_secs(3), Some(Duration::from_secs(1))).await;
    let client = client(&server, None);
    let result = support::bounded(call(&client, &server)).await;
    assert_eq!(
        result,
        Ok((2, "0".to_string())),
        "fifteen intervals of silence"
    );
}

/// The same without the allowance, pinging at every interval of silence:
/// grpcio ends the connection, and the stream with it. (What the client
/// did before it kept within the policy.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinging_at_every_interval_gets_the_stream_killed_by_grpcio() {
    let server = SilentServer::start(Duration::from_secs(3), Some(Duration::from_secs(1))).await;
    let client = client(&server, Some(0));
    let result = support::bounded(call(&client, &server)).await;
    assert!(
        result.is_err() || result.as_ref().is_ok_and(|(_, status)| status != "0"),
        "the stream survived: {result:?}"
    );
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
    let client = Client::builder()
        .endpoint(server.uri())
        .build::<Body>()
        .unwrap();
    let result = tokio::time::timeout(Duration::from_secs(90), call(&client, &server))
        .await
        .expect("the stream ended within 90 s");
    assert_eq!(result, Ok((2, "0".to_string())));
}
