//! The server against real peers on loopback sockets: tonic's `Channel`,
//! hyper's HTTP/2 and HTTP/1.1 clients, raw TCP. Tests wait on the server's
//! own tracing events (recorded by `support::server::Capture`) and on client
//! events, each with a bounded timeout, instead of sleeping.

mod support;

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use http_body_util::BodyExt;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tower_max_connection_age::ErrorKind;
use tower_max_connection_age::server::Server;
use tracing::instrument::WithSubscriber;

use support::server::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// What a 5 s run of 16 concurrent tonic health checks saw.
struct TonicRun {
    server: TestServer,
    /// Calls that returned `SERVING`.
    ok: u64,
    /// Calls the server's service received.
    processed: u64,
    /// Calls that failed.
    failures: Vec<tonic::Status>,
}

/// Runs a tonic health server with a 500 ms age and a plain tonic `Channel`
/// against it: 16 workers calling `Check` for 5 s.
async fn tonic_health_under_rotation() -> TonicRun {
    let (_reporter, health) = tonic_health::server::health_reporter();
    let processed = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&processed);
    let routes = tower::ServiceBuilder::new()
        .map_request(move |req: http::Request<hyper::body::Incoming>| {
            counted.fetch_add(1, Ordering::Relaxed);
            req
        })
        .service(tonic::service::Routes::new(health));
    let server = Server::builder()
        .max_connection_age(ms(500))
        .build()
        .unwrap();
    let server = TestServer::start(server, routes).await;

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let ok = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let run_for = Duration::from_secs(5);
    let workers: Vec<_> = (0..16)
        .map(|_| {
            let mut client = HealthClient::new(channel.clone());
            let ok = Arc::clone(&ok);
            tokio::spawn(async move {
                let mut failures = Vec::new();
                while started.elapsed() < run_for {
                    let call = client.check(HealthCheckRequest {
                        service: String::new(),
                    });
                    let result = tokio::time::timeout(WAIT, call)
                        .await
                        .expect("a call hung for 10 s");
                    match result {
                        Ok(response) => {
                            assert_eq!(response.into_inner().status(), ServingStatus::Serving);
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(status) => failures.push(status),
                    }
                }
                failures
            })
        })
        .collect();
    let mut failures = Vec::new();
    for worker in workers {
        failures.extend(worker.await.unwrap());
    }
    TonicRun {
        server,
        ok: ok.load(Ordering::Relaxed),
        processed: processed.load(Ordering::Relaxed),
        failures,
    }
}

/// Connections rotate (several accepted, GOAWAYs sent, none forced) and the
/// server answered every call it received.
fn assert_rotated(run: &TonicRun) {
    let accepted = run.server.capture.count(ACCEPTED);
    let goaways = run.server.capture.count(GOAWAY_SENT);
    assert!(run.ok > 100, "only {} calls in 5 s", run.ok);
    // 5 s at 500 ms ± 10% is about 10 connections; allow for reconnect time.
    assert!(accepted >= 5, "only {accepted} connections accepted in 5 s");
    assert!(goaways >= 4, "only {goaways} GOAWAYs sent in 5 s");
    assert_eq!(run.server.capture.count(CLOSED_BY_FORCE), 0);
}

fn describe(failures: &[tonic::Status]) -> Vec<String> {
    failures.iter().take(10).map(|s| format!("{s:?}")).collect()
}

/// A plain tonic `Channel` (no replay) follows the rotation: several
/// connections, a GOAWAY for each, none closed by force. It loses a few calls
/// per rotation (about 0.2% of calls on a quiet machine; at most one per
/// worker per GOAWAY), all on the client's transport, none with a status from the server: hyper's h2
/// client keeps opening streams on a connection after its GOAWAY until the
/// connection has closed, and tonic retries nothing. See `docs/server.md`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tonic_channel_follows_rotation_and_loses_only_transport_errors_at_goaway() {
    let run = tonic_health_under_rotation().await;
    assert_rotated(&run);
    let (unprocessed, other): (Vec<_>, Vec<_>) =
        run.failures.iter().cloned().partition(is_unprocessed);
    let not_transport: Vec<_> = run
        .failures
        .iter()
        .filter(|s| !is_transport(s))
        .cloned()
        .collect();
    assert!(
        not_transport.is_empty(),
        "calls failed with a status that did not come from the transport: {:#?}",
        describe(&not_transport)
    );
    // Each of the 16 workers has one call in flight, so a GOAWAY can cost
    // each at most one: a bound that holds however many calls the machine
    // fits in 5 s (a share of all calls does not, on a loaded machine).
    let goaways = run.server.capture.count(GOAWAY_SENT);
    assert!(
        run.failures.len() <= 16 * goaways,
        "{} failed calls of {} at {goaways} GOAWAYs ({} provably unprocessed, {} received by the server): more than one per worker per GOAWAY; others: {:#?}",
        run.failures.len(),
        run.ok,
        unprocessed.len(),
        run.processed.saturating_sub(run.ok),
        describe(&other)
    );
}

/// The strict claim: a plain tonic `Channel` sees zero failed calls across
/// rotations. It does not hold with tonic 0.14 / hyper 1 / h2 0.4 as the
/// client (0.15% to 0.3% of calls fail at rotations, see the test above); no
/// server-side GOAWAY sequence fixes a client that keeps opening streams
/// after a GOAWAY. Run it by hand (`--ignored`) when those clients change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "fails with tonic 0.14: its h2 client keeps sending after GOAWAY and retries nothing"]
async fn tonic_channel_sees_zero_failed_calls_across_rotations() {
    let run = tonic_health_under_rotation().await;
    assert_rotated(&run);
    assert!(
        run.failures.is_empty(),
        "{} of {} calls failed: {:#?}",
        run.failures.len(),
        run.failures.len() as u64 + run.ok,
        describe(&run.failures)
    );
}

/// Opens `/slow` on an HTTP/2 connection and reads its first chunk, so one
/// stream is in flight when the age comes.
async fn slow_stream_in_flight(
    server: &TestServer,
) -> (
    http::Response<hyper::body::Incoming>,
    tokio::sync::oneshot::Receiver<Result<(), hyper::Error>>,
) {
    let (mut send, closed) = h2_client(server.addr).await;
    let mut response = send
        .send_request(get_request(server.addr, "/slow"))
        .await
        .unwrap();
    let first = response.body_mut().frame().await.unwrap().unwrap();
    assert_eq!(first.into_data().unwrap(), "first");
    (response, closed)
}

async fn stream_outlives_age_and_completes(grace: Option<Duration>) {
    let gate = Gate::new();
    let mut builder = Server::builder()
        .max_connection_age(ms(300))
        .max_connection_age_jitter(Duration::ZERO);
    if let Some(grace) = grace {
        builder = builder.max_connection_age_grace(grace);
    }
    let server = TestServer::start(builder.build().unwrap(), app(gate.clone())).await;
    let (response, closed_rx) = slow_stream_in_flight(&server).await;

    let aged = server.capture.wait_for(AGE_REACHED).await;
    assert_eq!(aged.u64("max_age_ms"), 300);
    assert!(aged.u64("age_ms") >= 300);
    assert_eq!(aged.u64("in_flight"), 1);
    let goaway = server.capture.wait_for(GOAWAY_SENT).await;
    assert!(goaway.field("peer").unwrap().starts_with("127.0.0.1:"));

    // The stream is still open after the GOAWAY; let it finish.
    gate.open();
    let rest = tokio::time::timeout(WAIT, response.into_body().collect())
        .await
        .expect("the stream did not end")
        .expect("the stream failed");
    assert_eq!(rest.to_bytes(), "last");

    closed(closed_rx)
        .await
        .expect("client connection closed with an error");
    server.capture.wait_for(CLOSED_GRACEFULLY).await;
    assert_eq!(server.capture.count(CLOSED_BY_FORCE), 0);
}

#[tokio::test]
async fn stream_longer_than_age_completes_when_no_grace_is_set() {
    stream_outlives_age_and_completes(None).await;
}

#[tokio::test]
async fn stream_longer_than_age_completes_within_the_grace() {
    stream_outlives_age_and_completes(Some(Duration::from_secs(30))).await;
}

#[tokio::test]
async fn stream_longer_than_age_and_grace_is_cut_at_the_grace() {
    let gate = Gate::new(); // never opened: the stream would last forever
    let server = Server::builder()
        .max_connection_age(ms(300))
        .max_connection_age_jitter(Duration::ZERO)
        .max_connection_age_grace(ms(200))
        .build()
        .unwrap();
    let started = Instant::now();
    let server = TestServer::start(server, app(gate)).await;
    let (mut response, closed_rx) = slow_stream_in_flight(&server).await;

    let next = tokio::time::timeout(WAIT, response.body_mut().frame())
        .await
        .expect("the stream was not cut");
    let cut_after = started.elapsed();
    assert!(
        matches!(next, Some(Err(_))),
        "expected the body to fail, got {next:?}"
    );
    assert!(
        cut_after >= ms(500),
        "cut after {cut_after:?}, before age + grace"
    );
    let forced = server.capture.wait_for(CLOSED_BY_FORCE).await;
    assert!(forced.u64("age_ms") >= 500);
    assert_eq!(forced.u64("in_flight"), 1);
    assert_eq!(forced.field("cause"), Some("max_connection_age"));
    // The graceful phase came first.
    let goaway = server.capture.wait_for(GOAWAY_SENT).await;
    assert!(goaway.at <= forced.at);
    let _ = closed(closed_rx).await;
}

#[tokio::test]
async fn jittered_ages_differ_per_connection_and_stay_within_ten_percent() {
    let server = Server::builder()
        .max_connection_age(ms(200))
        .build()
        .unwrap();
    let server = TestServer::start(server, app(Gate::new())).await;

    // 100 raw TCP connections that never send a byte: each is closed at its
    // own age. Measure each from the client side too.
    let clients: Vec<_> = (0..100)
        .map(|_| {
            let addr = server.addr;
            tokio::spawn(async move {
                // Timed from before the connect: the server cannot have
                // accepted earlier, so a slow wake-up after the connect on a
                // loaded machine cannot make a lifetime look short.
                let connected = Instant::now();
                let mut tcp = TcpStream::connect(addr).await.unwrap();
                let mut buf = [0u8; 16];
                let read = tokio::time::timeout(WAIT, tcp.read(&mut buf))
                    .await
                    .expect("connection not closed at its age");
                assert!(matches!(read, Ok(0) | Err(_)), "unexpected bytes: {read:?}");
                connected.elapsed()
            })
        })
        .collect();
    let mut lifetimes = Vec::new();
    for client in clients {
        lifetimes.push(client.await.unwrap());
    }

    let ages: Vec<u64> = server
        .capture
        .wait_for_n(AGE_REACHED, 100)
        .await
        .iter()
        .map(|e| e.u64("max_age_ms"))
        .collect();
    assert!(
        ages.iter().all(|a| (180..=220).contains(a)),
        "ages out of ±10%: {ages:?}"
    );
    let mut distinct = ages.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert!(distinct.len() >= 10, "ages barely differ: {distinct:?}");

    let min = *lifetimes.iter().min().unwrap();
    let max = *lifetimes.iter().max().unwrap();
    assert!(
        min >= ms(180),
        "a connection closed after {min:?}, before age - 10%"
    );
    // Upper bound: age + 10% plus scheduling slack on a loaded machine.
    assert!(max <= ms(220 + 500), "a connection lived {max:?}");
    assert!(max > min, "all 100 connections lived exactly {min:?}");
}

#[tokio::test]
async fn http1_client_gets_connection_close_on_the_response_after_the_age() {
    let gate = Gate::new();
    let server = Server::builder()
        .max_connection_age(ms(300))
        .max_connection_age_jitter(Duration::ZERO)
        .build()
        .unwrap();
    let server = TestServer::start(server, app(gate.clone())).await;
    let (mut send, closed_rx) = h1_client(server.addr).await;

    // Before the age: keep-alive as usual.
    let before = send
        .send_request(get_request(server.addr, "/fast"))
        .await
        .unwrap();
    assert_eq!(before.version(), http::Version::HTTP_11);
    assert!(before.headers().get(http::header::CONNECTION).is_none());
    assert_eq!(before.into_body().collect().await.unwrap().to_bytes(), "ok");

    // A request is in flight when the age comes; its response says close.
    let pending = send.send_request(get_request(server.addr, "/wait"));
    let pending = tokio::spawn(pending);
    let aged = server.capture.wait_for(AGE_REACHED).await;
    assert_eq!(aged.u64("in_flight"), 1);
    server.capture.wait_for(H1_CLOSE).await;
    gate.open();
    let after = tokio::time::timeout(WAIT, pending)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        after
            .headers()
            .get(http::header::CONNECTION)
            .map(|v| v.as_bytes()),
        Some(&b"close"[..])
    );
    assert_eq!(
        after.into_body().collect().await.unwrap().to_bytes(),
        "done"
    );

    closed(closed_rx)
        .await
        .expect("client connection closed with an error");
    let done = server.capture.wait_for(CLOSED_GRACEFULLY).await;
    assert_eq!(done.field("protocol"), Some("HTTP/1.1"));
}

#[tokio::test]
async fn idle_http1_connection_is_closed_at_its_age() {
    let server = Server::builder()
        .max_connection_age(ms(300))
        .max_connection_age_jitter(Duration::ZERO)
        .build()
        .unwrap();
    let server = TestServer::start(server, app(Gate::new())).await;
    let (mut send, closed_rx) = h1_client(server.addr).await;
    let response = send
        .send_request(get_request(server.addr, "/fast"))
        .await
        .unwrap();
    assert_eq!(
        response.into_body().collect().await.unwrap().to_bytes(),
        "ok"
    );
    closed(closed_rx)
        .await
        .expect("client connection closed with an error");
    let aged = server.capture.wait_for(AGE_REACHED).await;
    assert_eq!(aged.u64("in_flight"), 0);
}

#[tokio::test]
async fn idle_connection_is_drained_after_max_connection_idle_but_not_while_a_request_runs() {
    let gate = Gate::new();
    let server = Server::builder()
        .max_connection_idle(ms(300))
        .build()
        .unwrap();
    let server = TestServer::start(server, app(gate.clone())).await;
    let (mut response, closed_rx) = slow_stream_in_flight(&server).await;

    // With a stream in flight, three idle periods pass without a drain.
    assert!(
        tokio::time::timeout(ms(900), server.capture.wait_for(IDLE_REACHED))
            .await
            .is_err()
            || panic!("drained while a request was in flight")
    );
    gate.open();
    let ended = Instant::now();
    while let Some(frame) = response.body_mut().frame().await {
        frame.unwrap();
    }
    let idle = server.capture.wait_for(IDLE_REACHED).await;
    assert!(idle.at.duration_since(ended) >= ms(300) - ms(20));
    server.capture.wait_for(GOAWAY_SENT).await;
    closed(closed_rx)
        .await
        .expect("client connection closed with an error");
}

#[tokio::test]
async fn shutdown_drains_in_flight_streams_and_stops_accepting() {
    let gate = Gate::new();
    let mut server = TestServer::start(Server::builder().build().unwrap(), app(gate.clone())).await;
    let (response, closed_rx) = slow_stream_in_flight(&server).await;

    server.shutdown();
    let draining = server.capture.wait_for(SHUTTING_DOWN).await;
    assert_eq!(draining.u64("in_flight"), 1);
    server.capture.wait_for(GOAWAY_SENT).await;
    // The listener is closed: new connections are refused.
    let refused = TcpStream::connect(server.addr).await;
    assert!(refused.is_err(), "a connection was accepted after shutdown");

    gate.open();
    let rest = tokio::time::timeout(WAIT, response.into_body().collect())
        .await
        .expect("the stream did not end")
        .expect("the stream failed");
    assert_eq!(rest.to_bytes(), "last");
    closed(closed_rx)
        .await
        .expect("client connection closed with an error");
    let capture = server.capture.clone();
    server.stopped().await;
    assert_eq!(capture.count(CLOSED_BY_FORCE), 0);
}

#[tokio::test]
async fn shutdown_with_a_grace_cuts_streams_that_outlive_it() {
    let mut server = TestServer::start(
        Server::builder()
            .max_connection_age_grace(ms(200))
            .build()
            .unwrap(),
        app(Gate::new()),
    )
    .await;
    let (mut response, _closed) = slow_stream_in_flight(&server).await;
    server.shutdown();
    let next = tokio::time::timeout(WAIT, response.body_mut().frame())
        .await
        .expect("the stream was not cut");
    assert!(
        matches!(next, Some(Err(_))),
        "expected the body to fail, got {next:?}"
    );
    let forced = server.capture.wait_for(CLOSED_BY_FORCE).await;
    assert_eq!(forced.field("cause"), Some("shutdown"));
    server.stopped().await;
}

#[tokio::test]
async fn accept_errors_are_logged_and_the_server_keeps_accepting() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = futures_util::stream::unfold(listener, |listener| async move {
        let next = listener.accept().await.map(|(tcp, _)| tcp);
        Some((next, listener))
    });
    // EMFILE (too many open files), then a reset in the backlog, then real
    // connections.
    let errors = futures_util::stream::iter([
        Err(io::Error::from_raw_os_error(24)),
        Err(io::Error::from(io::ErrorKind::ConnectionReset)),
    ]);
    let incoming = errors.chain(accepted);
    let capture = Capture::new();
    let server = Server::builder()
        .accept_error_backoff(ms(50))
        .build()
        .unwrap();
    let gate = Gate::new();
    let serve = server.serve_incoming(incoming, app(gate));
    let handle = tokio::spawn(serve.with_subscriber(capture.dispatch()));

    let (mut send, _closed) = h2_client(addr).await;
    let response = tokio::time::timeout(WAIT, send.send_request(get_request(addr, "/fast")))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        response.into_body().collect().await.unwrap().to_bytes(),
        "ok"
    );

    let backoff = capture.wait_for(ACCEPT_BACKOFF).await;
    assert!(
        backoff.field("error").unwrap().contains("os error 24"),
        "{backoff:?}"
    );
    assert_eq!(backoff.u64("backoff_ms"), 50);
    let next = capture.wait_for(ACCEPT_NEXT).await;
    assert!(next.at >= backoff.at);
    assert_eq!(
        capture.wait_for(ACCEPTED).await.field("peer"),
        Some("unknown")
    );
    assert!(!handle.is_finished(), "the server stopped");
    handle.abort();
}

#[test]
fn builder_rejects_zero_durations_with_config_errors() {
    let cases = [
        (
            "max_connection_age",
            Server::builder().max_connection_age(Duration::ZERO),
        ),
        (
            "max_connection_age_grace",
            Server::builder().max_connection_age_grace(Duration::ZERO),
        ),
        (
            "max_connection_idle",
            Server::builder().max_connection_idle(Duration::ZERO),
        ),
        (
            "accept_error_backoff",
            Server::builder().accept_error_backoff(Duration::ZERO),
        ),
    ];
    for (name, builder) in cases {
        let err = builder.build().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{name}");
        assert!(err.to_string().contains(name), "{err} does not name {name}");
    }
}

#[test]
fn builder_rejects_jitter_not_below_the_age_or_without_an_age() {
    for jitter in [ms(1000), ms(1500)] {
        let err = Server::builder()
            .max_connection_age(ms(1000))
            .max_connection_age_jitter(jitter)
            .build()
            .unwrap_err();
        assert!(err.is_config());
        assert!(
            err.to_string().contains("max_connection_age_jitter"),
            "{err}"
        );
    }
    let err = Server::builder()
        .max_connection_age_jitter(ms(10))
        .build()
        .unwrap_err();
    assert!(err.is_config());
}

#[test]
fn builder_accepts_age_without_grace_and_zero_jitter() {
    assert!(Server::builder().max_connection_age(ms(1)).build().is_ok());
    assert!(
        Server::builder()
            .max_connection_age(ms(1000))
            .max_connection_age_jitter(Duration::ZERO)
            .build()
            .is_ok()
    );
    assert!(
        Server::builder()
            .max_connection_age(ms(1000))
            .max_connection_age_jitter(ms(999))
            .max_connection_age_grace(ms(1))
            .max_connection_idle(ms(1))
            .build()
            .is_ok()
    );
}

/// This crate's `Client` against servers that age connections: every GOAWAY
/// drains the connection on the client, nothing that may have been processed
/// is replayed, the client reconnects (rebalances), and no request fails:
/// h2 says which streams were above the GOAWAY's last-stream-id, and those
/// are replayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_client_loses_no_request_to_server_goaway_and_replays_nothing_processed() {
    use std::net::Ipv4Addr;

    use tower_max_connection_age::Client;

    let server = Server::builder()
        .max_connection_age(Duration::from_millis(300))
        .build()
        .unwrap();
    let first =
        support::backend::Backend::start_aged(Ipv4Addr::new(127, 0, 0, 1), 0, server.clone()).await;
    let port = first.addr.port();
    let mut pods = vec![first];
    for i in 2..=3 {
        pods.push(
            support::backend::Backend::start_aged(
                Ipv4Addr::new(127, 0, 0, i),
                port,
                server.clone(),
            )
            .await,
        );
    }
    let client = Client::builder()
        .endpoints(pods.iter().map(support::backend::Backend::uri))
        .build::<http_body_util::Full<bytes::Bytes>>()
        .unwrap();
    let report = support::load::run(
        client.clone(),
        &format!("http://svc.test:{port}/"),
        16,
        Duration::from_secs(3),
        Duration::from_secs(1),
    )
    .await;

    assert!(
        report.failed.is_empty(),
        "requests failed across GOAWAYs: {:?}",
        report.failed
    );
    let mut executed = std::collections::HashMap::<String, usize>::new();
    for pod in &pods {
        assert!(
            pod.connections() >= 4,
            "{} saw {} connections: no reconnect after GOAWAY",
            pod.addr,
            pod.connections()
        );
        for (id, n) in pod.executed() {
            *executed.entry(id).or_default() += n;
        }
    }
    let duplicates: Vec<_> = executed.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        duplicates.is_empty(),
        "requests executed twice: {duplicates:?}"
    );
    assert_eq!(
        executed.len(),
        report.ok,
        "every answered request ran, and nothing else did"
    );
    let stats = client.stats();
    assert!(
        stats.removed >= 9,
        "GOAWAY'd connections were not taken out of service: {stats:?}"
    );
}

/// h2load over HTTP/1.1, 16 keep-alive connections each sending its next
/// request as soon as the last response is in (a busy client), against a
/// 200 ms age: every request is answered, and the connections did rotate
/// (more accepted than h2load's 16, each rotation a close after a response
/// that said so).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2load_http1_loses_no_request_across_rotations() {
    use support::nghttp::h2load;

    let server = Server::builder()
        .max_connection_age(ms(200))
        .build()
        .unwrap();
    let server = TestServer::start(server, app(Gate::new())).await;
    let report = h2load(
        &["--h1", "-n", "20000", "-c", "16"],
        &format!("http://{}/fast", server.addr),
    )
    .await;
    let accepted = server.capture.count(ACCEPTED);
    let aged = server.capture.count(AGE_REACHED);
    let late = server.capture.count(H1_LATE_REQUEST);
    let in_flight = server.capture.count(H1_CLOSE);
    println!(
        "{report}; {accepted} connections accepted, {aged} reached their age: \
         {in_flight} with a request in flight, {late} answered the next one in the window"
    );
    assert_eq!(
        (report.failed, report.errored, report.timeout),
        (0, 0, 0),
        "{report}\n{}",
        report.output
    );
    assert_eq!(
        (report.succeeded, report.status_2xx),
        (20_000, 20_000),
        "{report}"
    );
    assert!(
        accepted > 16,
        "{accepted} connections for 16 clients: none rotated ({report})"
    );
    // Busy connections are almost always idle between two requests when
    // their age comes: the rotations go through the drain window.
    assert!(late > 0, "no request was answered in a drain window");
}

const GET_FAST: &[u8] = b"GET /fast HTTP/1.1\r\nHost: test\r\n\r\n";

/// A raw HTTP/1.1 client on a keep-alive connection, after one exchange
/// before the age; the server has a 300 ms age (no jitter) and `window`.
async fn idle_keep_alive_connection(window: Duration) -> (TestServer, TcpStream) {
    use tokio::io::AsyncWriteExt;

    let server = Server::builder()
        .max_connection_age(ms(300))
        .max_connection_age_jitter(Duration::ZERO)
        .http1_drain_window(window)
        .build()
        .unwrap();
    let server = TestServer::start(server, app(Gate::new())).await;
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(GET_FAST).await.unwrap();
    let before = read_raw_response(&mut tcp)
        .await
        .expect("no response before the age");
    assert_eq!((before.status, &before.body[..]), (200, &b"ok"[..]));
    assert!(!before.says_close(), "{before:?}");
    (server, tcp)
}

/// The race that lost one request per connection: a keep-alive connection
/// is idle when its age comes and the client sends its next request right
/// then. The request is answered, with `Connection: close`, and the
/// connection closes after it. (The window is long here so the test does
/// not depend on how fast it sends after the age.)
#[tokio::test]
async fn http1_request_sent_at_the_age_on_an_idle_connection_is_answered_with_close() {
    use tokio::io::AsyncWriteExt;

    let (server, mut tcp) = idle_keep_alive_connection(WAIT).await;
    let aged = server.capture.wait_for(AGE_REACHED).await;
    assert_eq!(aged.u64("in_flight"), 0);
    let window = server.capture.wait_for(H1_WINDOW).await;
    assert_eq!(window.u64("window_ms"), 10_000);

    tcp.write_all(GET_FAST).await.unwrap();
    let after = read_raw_response(&mut tcp)
        .await
        .expect("the request after the age was lost");
    assert_eq!((after.status, &after.body[..]), (200, &b"ok"[..]));
    assert!(after.says_close(), "no Connection: close: {after:?}");
    read_eof(&mut tcp).await;
    server.capture.wait_for(H1_LATE_REQUEST).await;
    let closed = server.capture.wait_for(CLOSED_GRACEFULLY).await;
    assert_eq!(closed.field("protocol"), Some("HTTP/1.1"));
    assert!(closed.field("error").is_none(), "{closed:?}");
    assert_eq!(server.capture.count(H1_WINDOW_ENDED), 0);
}

/// An idle keep-alive connection whose client sends nothing more is closed
/// when the window ends, not before, and without a byte sent.
#[tokio::test]
async fn idle_http1_connection_is_closed_when_its_drain_window_ends() {
    let (server, mut tcp) = idle_keep_alive_connection(ms(200)).await;
    let window = server.capture.wait_for(H1_WINDOW).await;
    read_eof(&mut tcp).await;
    let closed_at = Instant::now();
    assert!(
        closed_at.duration_since(window.at) >= ms(200),
        "closed {:?} after the window opened",
        closed_at.duration_since(window.at)
    );
    let ended = server.capture.wait_for(H1_WINDOW_ENDED).await;
    assert!(ended.at.duration_since(window.at) >= ms(200));
    server.capture.wait_for(H1_IDLE_CLOSE).await;
    server.capture.wait_for(CLOSED_GRACEFULLY).await;
    assert_eq!(server.capture.count(H1_LATE_REQUEST), 0);
}

/// A request whose head is only partly read when the window ends is waited
/// for, answered with `Connection: close`, and then the connection closes.
#[tokio::test]
async fn http1_request_being_read_when_the_window_ends_is_answered_with_close() {
    use tokio::io::AsyncWriteExt;

    let (server, mut tcp) = idle_keep_alive_connection(ms(100)).await;
    // Everything but the blank line that ends the head, before the age.
    tcp.write_all(&GET_FAST[..GET_FAST.len() - 2])
        .await
        .unwrap();
    server.capture.wait_for(H1_WINDOW).await;
    server.capture.wait_for(H1_WINDOW_READING).await;
    tcp.write_all(b"\r\n").await.unwrap();
    let after = read_raw_response(&mut tcp)
        .await
        .expect("the request being read was lost");
    assert_eq!((after.status, &after.body[..]), (200, &b"ok"[..]));
    assert!(after.says_close(), "no Connection: close: {after:?}");
    read_eof(&mut tcp).await;
    server.capture.wait_for(CLOSED_GRACEFULLY).await;
    assert_eq!(server.capture.count(H1_WINDOW_ENDED), 0);
}

/// A zero window is hyper's own behaviour: the idle connection is closed at
/// its age, with no window.
#[tokio::test]
async fn zero_http1_drain_window_closes_idle_connections_at_once() {
    let (server, mut tcp) = idle_keep_alive_connection(Duration::ZERO).await;
    read_eof(&mut tcp).await;
    let aged = server.capture.wait_for(AGE_REACHED).await;
    let closed = server.capture.wait_for(H1_IDLE_CLOSE).await;
    // Logged in the same poll as the age: well below the default window.
    assert!(closed.at.duration_since(aged.at) < ms(400));
    assert_eq!(server.capture.count(H1_WINDOW), 0);
}

/// Serves one HTTP/2 and one HTTP/1.1 request, shuts down while the HTTP/1.1
/// connection is idle (so the drain, its grace and its window run), closes
/// that connection from the client, and waits for the server to stop. Both
/// connections must log their graceful close: a connection task that
/// panicked would not.
async fn serve_and_shut_down(name: &str, server: Server) {
    let mut server = TestServer::start(server, app(Gate::new())).await;
    let (mut h2, h2_closed) = h2_client(server.addr).await;
    let response = tokio::time::timeout(WAIT, h2.send_request(get_request(server.addr, "/fast")))
        .await
        .unwrap_or_else(|_| panic!("{name}: no HTTP/2 response"))
        .unwrap_or_else(|e| panic!("{name}: HTTP/2 request failed: {e}"));
    assert_eq!(
        response.into_body().collect().await.unwrap().to_bytes(),
        "ok",
        "{name}"
    );
    let (mut h1, h1_closed) = h1_client(server.addr).await;
    let response = tokio::time::timeout(WAIT, h1.send_request(get_request(server.addr, "/fast")))
        .await
        .unwrap_or_else(|_| panic!("{name}: no HTTP/1.1 response"))
        .unwrap_or_else(|e| panic!("{name}: HTTP/1.1 request failed: {e}"));
    assert_eq!(
        response.into_body().collect().await.unwrap().to_bytes(),
        "ok",
        "{name}"
    );

    server.shutdown();
    server.capture.wait_for(GOAWAY_SENT).await;
    server.capture.wait_for(H1_WINDOW).await;
    drop(h1);
    let _ = closed(h1_closed).await;
    let _ = closed(h2_closed).await;
    let capture = server.capture.clone();
    server.stopped().await;
    assert_eq!(
        capture.count(CLOSED_GRACEFULLY),
        2,
        "{name}: {:#?}",
        capture.events()
    );
    assert_eq!(capture.count(CLOSED_BY_FORCE), 0, "{name}");
}

/// `Duration::MAX` means "never" in every duration setting, one at a time
/// and all together: the server builds, serves, drains and stops, and no
/// connection task panics on `Instant + Duration::MAX`. The jitter must stay
/// below the age (a jitter of `MAX` with an age of `MAX` is a `Config`
/// error, tested below), so it is one nanosecond less.
#[tokio::test]
async fn duration_max_in_every_setting_serves_and_drains_without_panicking() {
    let max = Duration::MAX;
    let below_max = max - Duration::from_nanos(1);
    let cases = [
        (
            "max_connection_age",
            Server::builder().max_connection_age(max),
        ),
        (
            "max_connection_age_jitter",
            Server::builder()
                .max_connection_age(max)
                .max_connection_age_jitter(below_max),
        ),
        (
            "max_connection_age_grace",
            Server::builder().max_connection_age_grace(max),
        ),
        (
            "max_connection_idle",
            Server::builder().max_connection_idle(max),
        ),
        (
            "accept_error_backoff",
            Server::builder().accept_error_backoff(max),
        ),
        (
            "http1_drain_window",
            Server::builder().http1_drain_window(max),
        ),
        (
            "all together",
            Server::builder()
                .max_connection_age(max)
                .max_connection_age_jitter(below_max)
                .max_connection_age_grace(max)
                .max_connection_idle(max)
                .accept_error_backoff(max)
                .http1_drain_window(max),
        ),
    ];
    for (name, builder) in cases {
        let server = builder
            .build()
            .unwrap_or_else(|e| panic!("{name} = Duration::MAX: {e}"));
        serve_and_shut_down(name, server).await;
    }
}

#[test]
fn jitter_of_duration_max_is_a_config_error_naming_it() {
    for age in [Duration::MAX, ms(1000)] {
        let err = Server::builder()
            .max_connection_age(age)
            .max_connection_age_jitter(Duration::MAX)
            .build()
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(
            err.to_string().contains("max_connection_age_jitter"),
            "{err}"
        );
    }
}

/// An accept error with a backoff of `Duration::MAX` waits "forever" without
/// a panic, and the shutdown signal still stops the server during it.
#[tokio::test]
async fn accept_error_backoff_of_duration_max_waits_and_shutdown_still_stops_the_server() {
    let incoming =
        futures_util::stream::iter([Err::<TcpStream, _>(io::Error::from_raw_os_error(24))])
            .chain(futures_util::stream::pending());
    let capture = Capture::new();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serve = Server::builder()
        .accept_error_backoff(Duration::MAX)
        .build()
        .unwrap()
        .serve_incoming_with_shutdown(incoming, app(Gate::new()), async {
            let _ = stopped.await;
        });
    let handle = tokio::spawn(serve.with_subscriber(capture.dispatch()));
    let backoff = capture.wait_for(ACCEPT_BACKOFF).await;
    assert_eq!(backoff.u64("backoff_ms"), u64::MAX);
    assert!(!handle.is_finished());
    stop.send(()).unwrap();
    tokio::time::timeout(WAIT, handle)
        .await
        .expect("the server did not stop during its backoff")
        .expect("the server task panicked");
}

/// HTTP/2 keeps its two-phase `GOAWAY` at the age and gets no drain window,
/// even on a connection that never sent a request (its preface tells the
/// protocol).
#[tokio::test]
async fn http2_connection_without_requests_gets_goaway_at_its_age_and_no_window() {
    let server = Server::builder()
        .max_connection_age(ms(300))
        .max_connection_age_jitter(Duration::ZERO)
        .build()
        .unwrap();
    let server = TestServer::start(server, app(Gate::new())).await;
    let (_send, closed_rx) = h2_client(server.addr).await;
    let aged = server.capture.wait_for(AGE_REACHED).await;
    let goaway = server.capture.wait_for(GOAWAY_SENT).await;
    // Logged in the same poll as the age: well below the default window.
    assert!(goaway.at.duration_since(aged.at) < ms(400));
    closed(closed_rx)
        .await
        .expect("client connection closed with an error");
    let done = server.capture.wait_for(CLOSED_GRACEFULLY).await;
    assert_eq!(done.field("protocol"), Some("HTTP/2"));
    assert_eq!(server.capture.count(H1_WINDOW), 0);
}
