//! gRPC fit (feature `tonic`): the status codes tonic sees for this crate's
//! errors, and deadlines (`grpc-timeout`, `ClientBuilder::timeout`) against
//! a server that ignores them. All through tonic-health's generated client.
#![cfg(feature = "tonic")]

mod support;

use std::net::Ipv4Addr;
use std::time::Duration;

use support::backend::{Script, start_pods};
use support::fault::{Fault, FaultProxy};
use support::grpc::{DELAY, HealthServer};
use tokio::time::Instant;
use tonic::{Code, Status};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tower::{Layer, Service};
use tower_max_connection_age::client::ClientBuilder;
use tower_max_connection_age::{Client, Error, ErrorKind, Http2Connector, MaxConnectionAgeLayer};

type Body = tonic::body::Body;

/// A health check of `demo`, answered after `delay_ms`, with `deadline` as
/// its `grpc-timeout`.
fn check(delay_ms: u64, deadline: Option<Duration>) -> tonic::Request<HealthCheckRequest> {
    let mut request = tonic::Request::new(HealthCheckRequest {
        service: "demo".into(),
    });
    request
        .metadata_mut()
        .insert(DELAY, delay_ms.to_string().parse().unwrap());
    if let Some(deadline) = deadline {
        request.set_timeout(deadline);
    }
    request
}

/// This crate's error behind a status: tonic keeps what it mapped as the
/// status's source.
fn kind_behind(status: &Status) -> ErrorKind {
    std::error::Error::source(status)
        .and_then(|s| s.downcast_ref::<Error>())
        .unwrap_or_else(|| panic!("no crate error behind {status:?}"))
        .kind()
}

async fn health_call(
    client: Client<Body>,
    request: tonic::Request<HealthCheckRequest>,
) -> (Result<(), Status>, Duration) {
    let started = Instant::now();
    let result = support::bounded(HealthClient::new(client).check(request)).await;
    (result.map(|_| ()), started.elapsed())
}

fn client_for(server: &HealthServer) -> ClientBuilder {
    Client::builder().endpoint(server.uri())
}

/// tonic's `Channel` gives `CANCELLED` at the deadline; so does `Client`,
/// where it used to wait for the server (2 s here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_timeout_the_server_ignores_ends_the_call_at_its_deadline() {
    let server = HealthServer::start(Ipv4Addr::LOCALHOST).await;
    let client = client_for(&server).build::<Body>().unwrap();
    let (result, took) = health_call(
        client.clone(),
        check(3000, Some(Duration::from_millis(300))),
    )
    .await;
    let status = result.unwrap_err();
    assert_eq!(status.code(), Code::Cancelled, "{status:?}");
    assert_eq!(kind_behind(&status), ErrorKind::Timeout);
    assert!(took >= Duration::from_millis(300), "ended early: {took:?}");
    assert!(took < Duration::from_millis(2000), "ended late: {took:?}");
    // A call well within its deadline is answered.
    let (result, _) = health_call(client, check(10, Some(Duration::from_secs(5)))).await;
    result.unwrap();
}

/// `ClientBuilder::timeout` times calls without a `grpc-timeout`, and the
/// earlier of the two deadlines wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clients_timeout_applies_and_the_earlier_deadline_wins() {
    let server = HealthServer::start(Ipv4Addr::LOCALHOST).await;
    let short = client_for(&server)
        .timeout(Duration::from_millis(300))
        .build::<Body>()
        .unwrap();
    let long = client_for(&server)
        .timeout(Duration::from_secs(10))
        .build::<Body>()
        .unwrap();
    for (client, deadline) in [
        (short.clone(), None),
        (short, Some(Duration::from_secs(10))),
        (long, Some(Duration::from_millis(300))),
    ] {
        let (result, took) = health_call(client, check(3000, deadline)).await;
        let status = result.unwrap_err();
        assert_eq!(status.code(), Code::Cancelled, "{deadline:?}: {status:?}");
        assert!(
            took < Duration::from_millis(2000),
            "{deadline:?}: the later deadline won ({took:?})"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_ready_endpoint_and_connect_failures_are_unavailable() {
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let uri = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let client = Client::builder()
        .endpoint(uri.parse().unwrap())
        .ready_timeout(Duration::from_millis(300))
        .build::<Body>()
        .unwrap();
    let (result, _) = health_call(client, check(0, None)).await;
    let status = result.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(kind_behind(&status), ErrorKind::NoReadyEndpoint);
}

/// Refused more times than the client replays: `UNAVAILABLE`, which gRPC
/// retry policies retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_after_its_replays_is_unavailable() {
    let pods = start_pods(1).await;
    pods[0].script([Script::RefuseStreams(5)]);
    let client = Client::builder()
        .endpoint(pods[0].uri())
        .max_retries(1)
        .build::<Body>()
        .unwrap();
    let (result, _) = health_call(client, check(0, None)).await;
    let status = result.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(kind_behind(&status), ErrorKind::Refused);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_cut_by_the_drain_timeout_is_unavailable() {
    let server = HealthServer::start(Ipv4Addr::LOCALHOST).await;
    let client = client_for(&server)
        .max_connection_age(Duration::from_millis(200))
        .drain_timeout(Duration::from_millis(100))
        .build::<Body>()
        .unwrap();
    let (result, _) = health_call(client, check(10_000, None)).await;
    let status = result.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(kind_behind(&status), ErrorKind::ForceClosed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keepalive_timeout_is_unavailable() {
    let server = HealthServer::start(Ipv4Addr::LOCALHOST).await;
    let proxy = FaultProxy::start(Ipv4Addr::new(127, 0, 0, 2), 0, server.addr).await;
    let client = Client::builder()
        .endpoint(proxy.uri())
        .keep_alive_interval(Duration::from_millis(500))
        .keep_alive_timeout(Duration::from_millis(500))
        .build::<Body>()
        .unwrap();
    support::connected(&client, 1).await;
    proxy.set(Fault::BlackHole);
    let (result, _) = health_call(client, check(0, None)).await;
    let status = result.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(kind_behind(&status), ErrorKind::KeepAlive);
}

/// A draining connection (the layer alone, no replay) refuses the call
/// with `Draining`: `UNAVAILABLE`, so a retry goes to a fresh connection.
///
/// The call goes straight to `call`, as `Client` sends (it is always
/// ready): tonic turns an error from `poll_ready` into `UNKNOWN` ("Service
/// was not ready") without reading its source, whatever the service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_connection_is_unavailable() {
    use std::sync::{Arc, Mutex};

    let server = HealthServer::start(Ipv4Addr::LOCALHOST).await;
    let mut make = MaxConnectionAgeLayer::new(Duration::from_millis(100))
        .jitter(Duration::ZERO)
        .layer(Http2Connector::<_, Body>::http());
    let connection = support::connect_one(&mut make, server.uri()).await;
    support::until_draining(&connection).await;
    let connection = Arc::new(Mutex::new(connection));
    let always_ready = tower::service_fn(move |request: http::Request<Body>| {
        connection.lock().unwrap().call(request)
    });
    let status = HealthClient::new(always_ready)
        .check(check(0, None))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(kind_behind(&status), ErrorKind::Draining);
}

/// A gRPC answer is judged by its status (see `classify`), read from its
/// trailers: a message with `grpc-status: 0` ends a run of failures, and
/// `NOT_FOUND` (the caller asked for a service the pod does not have) is no
/// failure of the pod's. Calls that time out (a failure each) alternate
/// with healthy ones, and outlier detection ejecting at two failures in a
/// row ejects nothing. (If the trailers went unread, the healthy answers
/// would not count and the failures would run on.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_grpc_answers_end_a_run_of_failures_and_the_callers_mistakes_are_none() {
    use tower_max_connection_age::discover::OutlierDetection;

    let server = HealthServer::start(Ipv4Addr::LOCALHOST).await;
    let client = client_for(&server)
        .outlier_detection(OutlierDetection::new().consecutive_failures(2))
        .build::<Body>()
        .unwrap();
    let mut health = HealthClient::new(client.clone());
    let late = || check(1000, Some(Duration::from_millis(20)));
    let unknown = || {
        tonic::Request::new(HealthCheckRequest {
            service: "no-such-service".into(),
        })
    };
    for _ in 0..5 {
        let status = support::bounded(health.check(late())).await.unwrap_err();
        assert_eq!(kind_behind(&status), ErrorKind::Timeout);
        support::bounded(health.check(check(0, None)))
            .await
            .unwrap();
    }
    for _ in 0..5 {
        support::bounded(health.check(late())).await.unwrap_err();
        let status = support::bounded(health.check(unknown())).await.unwrap_err();
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
    }
    // A last call, so that a report of a run would have reached discovery.
    support::bounded(health.check(check(0, None)))
        .await
        .unwrap();
    assert_eq!(client.discover_status().ejections(), vec![]);
}

/// A stream whose connection breaks in the middle (here, a RST after the
/// first message of a `Watch`) ends with `UNAVAILABLE`, as gRPC maps a
/// lost transport, so a retry policy sees a failure it may retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_whose_connection_breaks_midway_is_unavailable() {
    use support::fault::Cut;

    let server = HealthServer::start(Ipv4Addr::LOCALHOST).await;
    let proxy = FaultProxy::start(Ipv4Addr::new(127, 0, 0, 2), 0, server.addr).await;
    for cut in [Cut::Reset, Cut::Fin] {
        let client = Client::builder()
            .endpoint(proxy.uri())
            .build::<Body>()
            .unwrap();
        let mut health = HealthClient::new(client);
        let request = tonic::Request::new(HealthCheckRequest {
            service: "demo".into(),
        });
        let mut stream = support::bounded(health.watch(request))
            .await
            .unwrap()
            .into_inner();
        let first = support::bounded(stream.message()).await.unwrap();
        assert!(first.is_some(), "the first message of the watch");
        proxy.cut(cut);
        let status = support::bounded(stream.message()).await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{cut:?}: {status:?}");
    }
}
