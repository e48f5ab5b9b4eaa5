//! Keepalive's frame sequence, played in memory with tokio's paused time: a
//! `PING` every interval while requests are in flight (or always, with
//! `keep_alive_while_idle`), none on an idle connection, and a `PING` left
//! unanswered closing the connection at the timeout with its requests
//! failing as `KeepAlive`. (The same against real sockets and a
//! black-holing proxy: `tests/liveness.rs`.)

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use support::memory::{self, PingTap};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};
use tower_max_connection_age::age::AgeableConnection;
use tower_max_connection_age::connector::default_builder;
use tower_max_connection_age::{
    AgedConnection, ErrorKind, Http2Connection, Http2Connector, MaxConnectionAgeLayer,
};

type Body = Full<Bytes>;

const INTERVAL: Duration = Duration::from_secs(10);
const TIMEOUT: Duration = Duration::from_secs(5);
/// Tokio's timer rounds deadlines up to its millisecond ticks.
const TICK: Duration = Duration::from_millis(10);

/// An h2 server on `server_end` that takes every stream and never answers
/// one (h2 acks `PING`s by itself).
fn holding_server(server_end: tokio::io::DuplexStream) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let Ok(mut connection) = h2::server::handshake(server_end).await else {
            return;
        };
        let mut held = Vec::new();
        while let Some(Ok(stream)) = connection.accept().await {
            held.push(stream);
        }
    })
}

fn uri() -> http::Uri {
    "http://pod.test:80".parse().unwrap()
}

/// The age layer over in-memory connections with the tests' keepalive
/// settings, and the server ends of the connections it makes.
fn pinging(
    while_idle: bool,
) -> (
    impl Service<
        http::Uri,
        Response = AgedConnection<Http2Connection<Body>>,
        Error: std::fmt::Debug + Send + 'static,
        Future: Send + 'static,
    >,
    tokio::sync::mpsc::UnboundedReceiver<tokio::io::DuplexStream>,
) {
    let (connector, accepted) = memory::connector();
    let connector = Http2Connector::<_, Body>::new(connector, default_builder())
        .keep_alive_interval(INTERVAL)
        .keep_alive_timeout(TIMEOUT)
        .keep_alive_while_idle(while_idle);
    let make = MaxConnectionAgeLayer::new(Duration::from_secs(3600)).layer(connector);
    (make, accepted)
}

/// A connection through the age layer, which counts requests in flight (so
/// the connection is busy while one is) and sorts a keepalive failure as
/// `KeepAlive`, to a [`holding_server`] behind a [`PingTap`].
async fn connect(
    while_idle: bool,
) -> (
    AgedConnection<Http2Connection<Body>>,
    PingTap,
    tokio::task::JoinHandle<()>,
) {
    let (mut make, mut accepted) = pinging(while_idle);
    let connecting = tokio::spawn(make.call(uri()));
    let (server_end, tap) = PingTap::new(accepted.recv().await.unwrap());
    let server = holding_server(server_end);
    let connection = connecting.await.unwrap().unwrap();
    // The connector's own PING, sent with the preface: connected means the
    // server answered it.
    assert_eq!(tap.pings(), 1, "the connector's own PING");
    (connection, tap, server)
}

fn assert_at(started: Instant, expected: Duration, what: &str) {
    let elapsed = started.elapsed();
    assert!(
        elapsed >= expected && elapsed < expected + TICK,
        "{what} at {elapsed:?}, expected {expected:?}"
    );
}

/// gRPC servers' policy: a ping sooner than 5 minutes after the previous
/// one, with no HEADERS or DATA sent by the server in between, is a strike.
const SERVER_MIN_PING_INTERVAL: Duration = Duration::from_secs(300);

#[tokio::test(start_paused = true)]
async fn a_busy_connection_to_a_silent_server_pings_twice_then_every_five_minutes_and_an_unanswered_ping_closes_it()
 {
    let started = Instant::now();
    let (mut connection, tap, server) = connect(false).await;
    let request = Request::get("http://pod.test/held")
        .body(Body::default())
        .unwrap();
    let response = tokio::spawn(connection.ready().await.unwrap().call(request));

    // Busy, the server silent: a PING at each of the first two intervals
    // (the pings allowed without data), each answered.
    for n in 1..=2 {
        tokio::time::timeout(INTERVAL * 2, tap.until_pings(1 + n))
            .await
            .expect("a PING at the interval");
        assert_at(started, INTERVAL * n as u32, "keepalive PING");
    }
    // Then none sooner than the servers' 5 minutes after the last: the
    // next is at the first interval's end past them.
    let next = INTERVAL * 2 + SERVER_MIN_PING_INTERVAL + INTERVAL;
    tokio::time::sleep_until(started + next - INTERVAL / 2).await;
    assert_eq!(tap.pings(), 3, "no PING within 5 minutes of the last");
    assert!(connection.get_ref().is_open());

    // Just before it, the peer goes silent: that PING is not answered, and
    // at the timeout the connection is closed by force.
    tap.cut();
    let error = tokio::time::timeout(INTERVAL * 2, response)
        .await
        .expect("the request failed once the PING went unanswered")
        .unwrap()
        .unwrap_err();
    assert_at(started, next + TIMEOUT, "the force-close");
    assert_eq!(error.kind(), ErrorKind::KeepAlive, "{error}");
    assert!(connection.get_ref().handle().keep_alive_timed_out());
    assert_eq!(tap.pings(), 4, "one PING after the cut, not answered");
    server.abort();
}

/// An h2 server that answers every stream with a head at once and then
/// holds it, sending a DATA frame on it whenever told.
fn speaking_server(
    server_end: tokio::io::DuplexStream,
    mut speak: tokio::sync::mpsc::UnboundedReceiver<()>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let Ok(mut connection) = h2::server::handshake(server_end).await else {
            return;
        };
        let mut streams = Vec::new();
        loop {
            tokio::select! {
                accepted = connection.accept() => match accepted {
                    Some(Ok((_, mut respond))) => {
                        let response = http::Response::new(());
                        streams.push(respond.send_response(response, false).unwrap());
                    }
                    _ => return,
                },
                Some(()) = speak.recv() => {
                    for stream in &mut streams {
                        stream.send_data(bytes::Bytes::from_static(b"tick"), false).unwrap();
                    }
                }
            }
        }
    })
}

#[tokio::test(start_paused = true)]
async fn data_from_the_server_stands_for_a_ping_and_restores_the_pings_allowed() {
    let (mut make, mut accepted) = pinging(false);
    let connecting = tokio::spawn(make.call(uri()));
    let (server_end, tap) = PingTap::new(accepted.recv().await.unwrap());
    let (speak, spoken) = tokio::sync::mpsc::unbounded_channel();
    let server = speaking_server(server_end, spoken);
    let mut connection = connecting.await.unwrap().unwrap();
    let started = Instant::now();
    let request = Request::get("http://pod.test/stream")
        .body(Body::default())
        .unwrap();
    let response = connection
        .ready()
        .await
        .unwrap()
        .call(request)
        .await
        .unwrap();
    // The caller reads the body as it comes.
    let reader = tokio::spawn(async move {
        let mut body = response.into_body();
        while let Some(Ok(_)) = body.frame().await {}
    });

    // The head came at once: no PING at the first interval; then two.
    tap.until_pings(2).await;
    assert_at(
        started,
        INTERVAL * 2,
        "the first PING, an interval after a silent one",
    );
    tap.until_pings(3).await;
    assert_at(started, INTERVAL * 3, "the second");
    tokio::time::sleep_until(started + INTERVAL * 4 + INTERVAL / 2).await;
    assert_eq!(tap.pings(), 3, "the pings allowed without data are spent");
    // The server sends DATA: it is alive, and forgives the pings.
    speak.send(()).unwrap();
    tokio::time::sleep_until(started + INTERVAL * 5 + INTERVAL / 2).await;
    assert_eq!(tap.pings(), 3, "no PING for an interval with DATA");
    tap.until_pings(4).await;
    assert_at(
        started,
        INTERVAL * 6,
        "pings resume after a silent interval",
    );
    reader.abort();
    server.abort();
}

#[tokio::test(start_paused = true)]
async fn an_idle_connection_pings_only_with_keep_alive_while_idle() {
    for while_idle in [false, true] {
        let started = Instant::now();
        let (connection, tap, server) = connect(while_idle).await;

        // Idle (the age layer knows no request is in flight) for six
        // intervals.
        tokio::time::sleep(INTERVAL * 6 + INTERVAL / 2).await;
        // With `while_idle`: the two pings allowed while the server sends
        // nothing, then none within 5 minutes.
        let expected = if while_idle { 1 + 2 } else { 1 };
        assert_eq!(tap.pings(), expected, "while_idle {while_idle}");
        if while_idle {
            assert_at(started, INTERVAL * 6 + INTERVAL / 2, "the check");
        }
        assert!(connection.get_ref().is_open());
        drop(connection);
        server.abort();
    }
}

/// An h2 server like [`holding_server`] that, when told, sends `GOAWAY`
/// with the reason given: `NO_ERROR` as a graceful shutdown (two
/// `GOAWAY`s), any other as grpc-go's "too_many_pings" does
/// (`GOAWAY(ENHANCE_YOUR_CALM)`, then the connection closes).
fn server_with_goaway(
    server_end: tokio::io::DuplexStream,
    mut goaway: tokio::sync::oneshot::Receiver<h2::Reason>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let Ok(mut connection) = h2::server::handshake(server_end).await else {
            return;
        };
        let mut held = Vec::new();
        let mut told = false;
        loop {
            tokio::select! {
                stream = connection.accept() => match stream {
                    Some(Ok(stream)) => held.push(stream),
                    _ => return,
                },
                reason = &mut goaway, if !told => {
                    told = true;
                    match reason {
                        Ok(h2::Reason::NO_ERROR) => connection.graceful_shutdown(),
                        Ok(reason) => connection.abrupt_shutdown(reason),
                        Err(_) => {}
                    }
                }
            }
        }
    })
}

/// Connects through `make` to a [`server_with_goaway`] behind a [`PingTap`].
async fn connect_told<M>(
    make: &mut M,
    accepted: &mut tokio::sync::mpsc::UnboundedReceiver<tokio::io::DuplexStream>,
) -> (
    AgedConnection<Http2Connection<Body>>,
    PingTap,
    tokio::sync::oneshot::Sender<h2::Reason>,
)
where
    M: Service<http::Uri, Response = AgedConnection<Http2Connection<Body>>>,
    M::Future: Send + 'static,
    M::Error: std::fmt::Debug + Send + 'static,
{
    let connecting = tokio::spawn(make.call(uri()));
    let (server_end, tap) = PingTap::new(accepted.recv().await.unwrap());
    let (tell, told) = tokio::sync::oneshot::channel();
    server_with_goaway(server_end, told);
    (connecting.await.unwrap().unwrap(), tap, tell)
}

#[tokio::test(start_paused = true)]
async fn goaway_enhance_your_calm_after_our_pings_doubles_the_interval_of_the_next_connection() {
    let (mut make, mut accepted) = pinging(true);

    let started = Instant::now();
    let (first, tap, tell) = connect_told(&mut make, &mut accepted).await;
    tap.until_pings(2).await;
    assert_at(started, INTERVAL, "the first keepalive PING");
    tell.send(h2::Reason::ENHANCE_YOUR_CALM).unwrap();
    tokio::time::timeout(INTERVAL, first.get_ref().handle().going_away())
        .await
        .expect("the GOAWAY reaches the handle");
    drop(first);

    // The connector's next connection pings half as often.
    let started = Instant::now();
    let (second, tap, _tell) = connect_told(&mut make, &mut accepted).await;
    tokio::time::timeout(INTERVAL * 3, tap.until_pings(2))
        .await
        .expect("keepalive goes on, less often");
    assert_at(started, INTERVAL * 2, "the next connection's first PING");
    tap.until_pings(3).await;
    assert_at(started, INTERVAL * 4, "and its second");
    drop(second);
}

#[tokio::test(start_paused = true)]
async fn goaway_enhance_your_calm_without_our_pings_leaves_the_interval_alone() {
    let (mut make, mut accepted) = pinging(true);

    // Told before the first keepalive PING: the server is calming
    // something else (a flood of streams), not our pings.
    let (first, _tap, tell) = connect_told(&mut make, &mut accepted).await;
    tell.send(h2::Reason::ENHANCE_YOUR_CALM).unwrap();
    first.get_ref().handle().going_away().await;
    drop(first);

    let started = Instant::now();
    let (_second, tap, _tell) = connect_told(&mut make, &mut accepted).await;
    tap.until_pings(2).await;
    assert_at(started, INTERVAL, "the next connection's first PING");
}

#[tokio::test(start_paused = true)]
async fn a_connection_whose_requests_end_stops_pinging() {
    let started = Instant::now();
    let (mut connection, tap, server) = connect(false).await;
    let request = Request::get("http://pod.test/held")
        .body(Body::default())
        .unwrap();
    let response = connection.ready().await.unwrap().call(request);
    let response = tokio::spawn(response);
    tap.until_pings(3).await;
    assert_at(started, INTERVAL * 2, "two keepalive PINGs while busy");

    // The caller gives up on its request: nothing is in flight any more.
    response.abort();
    let _ = response.await;
    tokio::time::sleep(INTERVAL * 5).await;
    assert_eq!(tap.pings(), 3, "no PING on an idle connection");
    assert!(connection.get_ref().is_open());
    server.abort();
}

#[tokio::test(start_paused = true)]
async fn a_graceful_goaway_reaches_the_handle_with_no_request_in_flight() {
    let (connector, mut accepted) = memory::connector();
    let connector = Http2Connector::<_, Body>::new(connector, default_builder());
    let mut make = MaxConnectionAgeLayer::new(Duration::from_secs(3600)).layer(connector);
    let (connection, _tap, tell) = connect_told(&mut make, &mut accepted).await;
    assert_eq!(connection.get_ref().handle().go_away_reason(), None);
    let started = Instant::now();
    tell.send(h2::Reason::NO_ERROR).unwrap();
    let reason = tokio::time::timeout(TICK, connection.get_ref().handle().going_away())
        .await
        .expect("reported when it arrives, not when a request finds out");
    assert_eq!(reason, h2::Reason::NO_ERROR);
    assert!(started.elapsed() < TICK);
}
