//! hyper's own HTTP/2 client connection (`hyper::client::conn::http2`)
//! under the age layer and inside `Client`, through `HyperConnector`:
//! rotation, drain, force-close, and replay of unsent and refused requests.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use support::backend::{Backend, Script, start_pods};
use support::bounded;
use tower::balance::p2c::Balance;
use tower::{Layer, Service, ServiceBuilder, ServiceExt};
use tower_max_connection_age::age::AgeableConnection;
use tower_max_connection_age::client::SharedConnection;
use tower_max_connection_age::connector::{HyperConnection, HyperConnector};
use tower_max_connection_age::replay::ReplayBody;
use tower_max_connection_age::{
    Client, ErrorKind, MaxConnectionAgeLayer, ReplayLayer, RotatingDiscover,
};

type Body = Full<Bytes>;

async fn text(response: http::Response<impl http_body::Body<Error: std::fmt::Debug>>) -> String {
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// The one-line hyper stack under tower's balancer: connections rotate every
/// 200 ms with no failed request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hyper_stack_rotates_under_tower_balance_without_failures() {
    let pods = start_pods(2).await;
    let make = MaxConnectionAgeLayer::new(Duration::from_millis(200))
        .layer(HyperConnector::<_, ReplayBody<Body>>::http());
    let discover = RotatingDiscover::builder()
        .endpoints(pods.iter().map(Backend::uri))
        .build(make)
        .unwrap();
    let service = ServiceBuilder::new()
        .layer(ReplayLayer::new())
        .buffer(64)
        .service(Balance::new(discover));

    let uri = format!("http://svc.test:{}/", pods[0].addr.port());
    let report = support::load::run(
        service,
        &uri,
        8,
        Duration::from_millis(1500),
        Duration::from_millis(500),
    )
    .await;
    report.assert_rotated_without_failures(&pods, 100, 3);
}

/// `Client` over hyper's connections: requests spread over both pods, and
/// connections rotate with nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_over_hyper_connections_balances_and_rotates() {
    let pods = start_pods(2).await;
    let client = Client::builder()
        .endpoints(pods.iter().map(Backend::uri))
        .max_connection_age(Duration::from_millis(200))
        .build_with::<Body, _>(HyperConnector::<_, ReplayBody<Body>>::http())
        .unwrap();
    support::connected(&client, 2).await;
    let uri = format!("http://svc.test:{}/", pods[0].addr.port());
    let report = support::load::run(
        client.clone(),
        &uri,
        8,
        Duration::from_millis(1500),
        Duration::from_millis(500),
    )
    .await;
    assert!(
        report.failed.is_empty(),
        "failed: {:?}",
        &report.failed[..report.failed.len().min(5)]
    );
    for pod in &pods {
        assert!(pod.requests() > 0, "{} got no traffic", pod.addr);
    }
    assert!(
        client.stats().rotated >= 4,
        "rotations: {:?}",
        client.stats()
    );
}

/// The pick sees a hyper connection's stream limit (hyper's
/// `current_max_send_streams`): against a server allowing 10 streams, 30
/// callers of slow requests fill the connection, and `Client` opens extra
/// ones instead of queueing inside hyper; nothing fails. (hyper's handshake
/// returns before the server's SETTINGS arrive, so a first request is
/// answered before the others go: its answer comes after them. One thread,
/// so the connection task has published the limit when the caller goes on.)
#[tokio::test]
async fn client_over_hyper_sees_the_servers_stream_limit() {
    let pod = Backend::start(std::net::Ipv4Addr::LOCALHOST, 0).await;
    pod.script([Script::ServeLimited(10); 3]);
    let client = Client::builder()
        .endpoint(pod.uri())
        .max_connections_per_endpoint(3)
        .build_with::<Body, _>(HyperConnector::<_, ReplayBody<Body>>::http())
        .unwrap();
    support::connected(&client, 1).await;
    let first = format!("http://svc.test:{}/", pod.addr.port());
    let response = client
        .clone()
        .oneshot(support::get(&first, "first"))
        .await
        .expect("answered");
    response.into_body().collect().await.expect("the body");
    let uri = format!("http://svc.test:{}/sleep/100", pod.addr.port());
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..30 {
        let (client, uri) = (client.clone(), uri.clone());
        calls.spawn(async move {
            let response = client
                .oneshot(support::get(&uri, &format!("limit-{i}")))
                .await
                .expect("answered");
            assert_eq!(response.status(), 200);
            response.into_body().collect().await.expect("the body");
        });
    }
    bounded(async {
        while let Some(call) = calls.join_next().await {
            call.unwrap();
        }
    })
    .await;
    assert!(
        client.stats().opened >= 2 && pod.connections() >= 2,
        "extra connections for the full one: {:?}, {} at the server",
        client.stats(),
        pod.connections()
    );
    assert_eq!(pod.requests(), 31, "each ran once");
}

/// A stream the server refuses (`REFUSED_STREAM`, read from the h2 error
/// inside hyper's) is replayed with its whole body, and runs once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_over_hyper_replays_refused_streams_with_their_body() {
    let pods = start_pods(1).await;
    pods[0].script([Script::RefuseStreams(2)]);
    let client = Client::builder()
        .endpoint(pods[0].uri())
        .build_with::<Body, _>(HyperConnector::<_, ReplayBody<Body>>::http())
        .unwrap();
    let request = Request::post(pods[0].uri())
        .header("x-request-id", "refused")
        .body(Full::new(Bytes::from_static(b"twelve bytes")))
        .unwrap();
    let response = bounded(client.clone().oneshot(request)).await.unwrap();
    assert!(
        text(response).await.ends_with(" 12"),
        "the whole body each time"
    );
    assert_eq!(pods[0].executions("refused"), 1);
    assert_eq!(client.stats().replayed, 2);
}

/// A `GOAWAY` whose last-stream-id is below the request: provably not
/// processed, replayed once on a new connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_over_hyper_replays_a_request_above_the_goaway() {
    let pods = start_pods(1).await;
    pods[0].script([Script::GoAwayBeforeProcessing(0)]);
    let client = Client::builder()
        .endpoint(pods[0].uri())
        .build_with::<Body, _>(HyperConnector::<_, ReplayBody<Body>>::http())
        .unwrap();
    let request = Request::post(pods[0].uri())
        .header("x-request-id", "above")
        .body(Full::new(Bytes::from_static(b"hello")))
        .unwrap();
    let response = bounded(client.clone().oneshot(request)).await.unwrap();
    assert!(text(response).await.contains(" 5 "));
    assert_eq!(pods[0].executions("above"), 1);
    assert_eq!(
        pods[0].connections(),
        2,
        "the replay went over a new connection"
    );
    assert_eq!(client.stats().replayed, 1);
}

/// The layer alone over hyper: at the deadline the connection hands new
/// requests back unsent and lets the one in flight finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aged_hyper_connection_drains_and_gives_requests_back() {
    let pods = start_pods(1).await;
    let mut make = MaxConnectionAgeLayer::new(Duration::from_millis(200))
        .jitter(Duration::ZERO)
        .drain_timeout(Duration::from_secs(5))
        .layer(HyperConnector::<_, Body>::http());
    let mut connection = support::connect_one(&mut make, pods[0].uri()).await;
    let slow = Request::get(format!("{}sleep/600", pods[0].uri()))
        .body(Full::default())
        .unwrap();
    let in_flight = connection.ready().await.unwrap().call(slow);
    let in_flight = tokio::spawn(async move { in_flight.await.map(|r| r.status()) });
    support::until_draining(&connection).await;
    let late = support::get(pods[0].uri(), "late");
    let mut err = connection.call(late).await.unwrap_err();
    assert!(err.is_draining(), "{err:?}");
    let back = err
        .take_request::<Request<Body>>()
        .expect("the request comes back");
    assert_eq!(back.headers()["x-request-id"], "late");
    assert_eq!(pods[0].executions("late"), 0);
    assert!(bounded(in_flight).await.unwrap().unwrap().is_success());
}

/// After the drain timeout the transport is closed by force: the request
/// still running fails as `ForceClosed` (it may have run), within a bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hyper_connection_is_closed_by_force_after_the_drain_timeout() {
    let pods = start_pods(1).await;
    let mut make = MaxConnectionAgeLayer::new(Duration::from_millis(100))
        .jitter(Duration::ZERO)
        .drain_timeout(Duration::from_millis(100))
        .layer(HyperConnector::<_, Body>::http());
    let mut connection = support::connect_one(&mut make, pods[0].uri()).await;
    let handle = connection.get_ref().handle();
    let stuck = Request::get(format!("{}sleep/10000", pods[0].uri()))
        .body(Full::default())
        .unwrap();
    let started = tokio::time::Instant::now();
    let err = bounded(connection.ready().await.unwrap().call(stuck))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ForceClosed, "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(handle.was_forced());
    bounded(handle.closed()).await;
}

/// A request hyper never took (its connection had ended) comes back whole
/// as `Error::unsent`, so it can go elsewhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_hyper_did_not_take_comes_back_unsent() {
    let pods = start_pods(1).await;
    let mut connector = HyperConnector::<_, Body>::http();
    let connection: HyperConnection<Body> =
        support::connect_one(&mut connector, pods[0].uri()).await;
    let handle = connection.handle();
    handle.force_close();
    bounded(handle.closed()).await;
    bounded(async {
        while !connection.get_ref().is_closed() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(!connection.is_open());
    let sent = SharedConnection::send(&connection, support::get(pods[0].uri(), "unsent")).unwrap();
    let mut err = bounded(sent).await.unwrap_err();
    assert!(err.is_draining() && err.is_unprocessed(), "{err:?}");
    let back = err
        .take_request::<Request<Body>>()
        .expect("the request comes back");
    assert_eq!(back.headers()["x-request-id"], "unsent");
    assert_eq!(pods[0].executions("unsent"), 0);
}

/// Settings of the crate's own connector given with `build_with` (which
/// brings its own) are a `Config` error naming them, not silently ignored.
#[tokio::test]
async fn build_with_rejects_the_settings_of_the_crates_own_connector() {
    let err = Client::builder()
        .endpoint("http://127.0.0.1:1".parse().unwrap())
        .keep_alive_interval(Duration::from_secs(1))
        .http2(tower_max_connection_age::connector::default_builder())
        .keep_alive_timeout(Duration::from_secs(1))
        .build_with::<Body, _>(HyperConnector::<_, ReplayBody<Body>>::http())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    let message = err.to_string();
    for setting in ["http2", "keep_alive_interval", "keep_alive_timeout"] {
        assert!(message.contains(setting), "{setting} not named: {message}");
    }
    // Without them it builds.
    Client::builder()
        .endpoint("http://127.0.0.1:1".parse().unwrap())
        .connect_timeout(Duration::from_secs(1))
        .build_with::<Body, _>(HyperConnector::<_, ReplayBody<Body>>::http())
        .unwrap();
}
