//! The client path end to end: real HTTP/2 over loopback sockets.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full, StreamBody};
use support::backend::{Backend, Script, start_pods, wait_until};
use support::{bounded, connected, get};
use tower::ServiceExt;
use tower_max_connection_age::{Client, ErrorKind};

type Body = Full<Bytes>;

async fn text(
    response: http::Response<impl http_body::Body<Error = impl std::fmt::Debug>>,
) -> String {
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_under_load_fails_nothing_and_every_backend_keeps_traffic() {
    let pods = start_pods(3).await;
    let client = Client::builder()
        .endpoints(pods.iter().map(Backend::uri))
        .max_connection_age(Duration::from_millis(200))
        .build::<Body>()
        .unwrap();
    connected(&client, 3).await;
    let uri = format!("http://svc.test:{}/", pods[0].addr.port());
    let report = support::load::run(
        client.clone(),
        &uri,
        32,
        Duration::from_secs(5),
        Duration::from_secs(1),
    )
    .await;

    assert!(
        report.failed.is_empty(),
        "failed requests: {:?}",
        &report.failed[..report.failed.len().min(5)]
    );
    assert!(report.ok > 1000, "only {} requests succeeded", report.ok);
    let stats = client.stats();
    // 5 s / ~210 ms per connection is ~23 rotations each; demand a third of it.
    assert!(
        stats.rotated >= 3 * 8,
        "only {} rotations: {stats:?}",
        stats.rotated
    );
    for pod in &pods {
        assert!(
            pod.connections() >= 8,
            "{} saw only {} connections",
            pod.addr,
            pod.connections()
        );
        for (second, bucket) in report.buckets.iter().enumerate().take(5) {
            let n = bucket.get(&pod.addr.to_string()).copied().unwrap_or(0);
            assert!(
                n > 0,
                "{} got no traffic in second {second}: {bucket:?}",
                pod.addr
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn make_before_break_one_connection_never_waits_for_a_connect() {
    let pods = start_pods(1).await;
    let client = Client::builder()
        .endpoint(pods[0].uri())
        .max_connection_age(Duration::from_millis(100))
        .max_connection_age_jitter(Duration::ZERO)
        .build::<Body>()
        .unwrap();
    connected(&client, 1).await;
    let before = client.stats();
    let report = support::load::run(
        client.clone(),
        &pods[0].uri().to_string(),
        4,
        Duration::from_millis(1500),
        Duration::from_millis(100),
    )
    .await;
    let stats = client.stats();
    assert!(report.failed.is_empty(), "failed: {:?}", report.failed);
    assert!(
        stats.rotated - before.rotated >= 8,
        "too few rotations: {stats:?}"
    );
    assert_eq!(
        stats.waited, before.waited,
        "a request waited for a connection during rotation: {stats:?}"
    );
    assert!(pods[0].connections() >= 9);
}

/// A connected client of one pod whose connection ages after 200 ms.
async fn aging_client(pod: &Backend, drain_timeout: Duration) -> Client<Body> {
    let client = Client::builder()
        .endpoint(pod.uri())
        .max_connection_age(Duration::from_millis(200))
        .drain_timeout(drain_timeout)
        .build::<Body>()
        .unwrap();
    connected(&client, 1).await;
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_request_on_an_aging_connection_completes() {
    let pods = start_pods(1).await;
    let client = aging_client(&pods[0], Duration::from_secs(10)).await;
    let long = client
        .clone()
        .oneshot(get(format!("{}sleep/2000", pods[0].uri()), "long"));
    let response = bounded(long).await.unwrap();
    assert!(
        client.stats().rotated >= 1,
        "the connection should have rotated meanwhile"
    );
    assert!(text(response).await.starts_with(&pods[0].addr.to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_running_past_the_drain_timeout_is_force_closed() {
    let pods = start_pods(1).await;
    let client = aging_client(&pods[0], Duration::from_millis(300)).await;
    let too_long = client
        .clone()
        .oneshot(get(format!("{}sleep/5000", pods[0].uri()), "too-long"));
    let err = bounded(too_long).await.unwrap_err();
    assert!(err.is_force_closed(), "{err:?}");
    assert_eq!(
        pods[0].executions("too-long"),
        1,
        "a maybe-processed request must not be replayed"
    );
}

/// A POST whose first `refusals` streams are refused with REFUSED_STREAM:
/// it is replayed that many times, each time with its whole body, and runs
/// exactly once.
async fn refused_post_is_replayed(refusals: usize) {
    let pods = start_pods(1).await;
    pods[0].script([Script::RefuseStreams(refusals)]);
    let client = Client::builder()
        .endpoint(pods[0].uri())
        .build::<Body>()
        .unwrap();
    let request = Request::post(pods[0].uri())
        .header("x-request-id", "post")
        .body(Full::new(Bytes::from_static(b"twelve bytes")))
        .unwrap();
    let response = bounded(client.clone().oneshot(request)).await.unwrap();
    assert!(
        text(response).await.ends_with(" 12"),
        "each replay must carry the whole body"
    );
    assert_eq!(pods[0].executions("post"), 1);
    assert_eq!(client.stats().replayed, refusals as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_streams_are_replayed_with_their_body() {
    refused_post_is_replayed(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_refused_twice_is_replayed_again_with_its_whole_body() {
    refused_post_is_replayed(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn goaway_above_the_last_stream_id_is_replayed_once_on_a_new_connection() {
    let pods = start_pods(1).await;
    pods[0].script([Script::GoAwayBeforeProcessing(0)]);
    let client = Client::builder()
        .endpoint(pods[0].uri())
        .build::<Body>()
        .unwrap();
    let request = Request::post(pods[0].uri())
        .header("x-request-id", "post-2")
        .body(Full::new(Bytes::from_static(b"hello")))
        .unwrap();
    let response = bounded(client.clone().oneshot(request)).await.unwrap();
    assert!(
        text(response).await.contains(" 5 "),
        "the replay must carry the whole body"
    );
    assert_eq!(pods[0].executions("post-2"), 1);
    assert_eq!(
        pods[0].connections(),
        2,
        "the replay went over a new connection"
    );
    assert_eq!(client.stats().replayed, 1);
}

/// A body far larger than HTTP/2's initial 64 KiB stream window: it goes
/// out as the server grants window, and arrives whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_larger_than_the_flow_control_window_arrives_whole() {
    let pods = start_pods(1).await;
    let client = Client::builder()
        .endpoint(pods[0].uri())
        .build::<Body>()
        .unwrap();
    let len = 4 * 1024 * 1024 + 7;
    let request = Request::post(pods[0].uri())
        .header("x-request-id", "big-1")
        .body(Full::new(Bytes::from(vec![b'x'; len])))
        .unwrap();
    let response = bounded(client.clone().oneshot(request)).await.unwrap();
    assert!(
        text(response).await.contains(&format!(" {len} ")),
        "the server must have read every byte"
    );
    assert_eq!(pods[0].executions("big-1"), 1);
}

/// A body that arrives chunk by chunk, with the caller's task waiting in
/// between, is written as it comes, and the server sees its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_body_is_written_chunk_by_chunk() {
    let pods = start_pods(1).await;
    let (tx, body) = channel_body();
    let client = streaming_client(&pods[0]);
    let request = Request::post(pods[0].uri())
        .header("x-request-id", "stream-1")
        .body(body)
        .unwrap();
    let sender = tokio::spawn(async move {
        for _ in 0..3 {
            tx.send(chunk("abcd")).await.unwrap();
        }
    });
    let response = bounded(client.clone().oneshot(request)).await.unwrap();
    sender.await.unwrap();
    assert!(text(response).await.contains(" 12 "));
    assert_eq!(pods[0].executions("stream-1"), 1);
}

/// A request body still being written when the response arrives (as in a
/// bidirectional gRPC stream) goes on being written after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_still_being_written_when_the_response_arrives_goes_on() {
    let pods = start_pods(1).await;
    let (tx, body) = channel_body();
    let client = streaming_client(&pods[0]);
    let request = Request::post(format!("{}echo", pods[0].uri()))
        .body(body)
        .unwrap();
    tx.send(chunk("ping-1")).await.unwrap();
    let response = bounded(client.clone().oneshot(request)).await.unwrap();
    let mut echoed = response.into_body();
    let first = bounded(echoed.frame()).await.unwrap().unwrap();
    assert_eq!(first.into_data().unwrap(), "ping-1");
    tx.send(chunk("ping-2")).await.unwrap();
    let second = bounded(echoed.frame()).await.unwrap().unwrap();
    assert_eq!(
        second.into_data().unwrap(),
        "ping-2",
        "the body was written after the response had arrived"
    );
    drop(tx);
    let end = bounded(echoed.frame()).await;
    assert!(
        end.is_none(),
        "the request body's end reached the server: {end:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partly_sent_post_is_not_replayed_when_the_connection_dies() {
    let pods = start_pods(1).await;
    pods[0].script([Script::DieAfterFirstChunk]);
    // A body that sends one chunk and then never ends.
    let (tx, body) = channel_body();
    tx.send(chunk("first")).await.unwrap();
    let client = streaming_client(&pods[0]);
    let request = Request::post(pods[0].uri())
        .header("x-request-id", "post-3")
        .body(body)
        .unwrap();
    let err = bounded(client.clone().oneshot(request)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Request, "{err:?}");
    assert!(!err.is_unprocessed());
    assert_eq!(pods[0].executions("post-3"), 1, "exactly one execution");
    assert_eq!(client.stats().replayed, 0);
    drop(tx);
}

type Chunk = Result<hyper::body::Frame<Bytes>, std::convert::Infallible>;
type ChannelBody = StreamBody<std::pin::Pin<Box<dyn futures_util::Stream<Item = Chunk> + Send>>>;

/// A request body fed through a channel: it ends when the sender is dropped.
fn channel_body() -> (tokio::sync::mpsc::Sender<Chunk>, ChannelBody) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Chunk>(1);
    let stream = Box::pin(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)));
    (tx, StreamBody::new(stream))
}

fn chunk(data: &'static str) -> Chunk {
    Ok(hyper::body::Frame::data(Bytes::from_static(
        data.as_bytes(),
    )))
}

/// A client of `pod` for requests with a [`channel_body`].
fn streaming_client(pod: &Backend) -> Client<ChannelBody> {
    Client::builder()
        .endpoint(pod.uri())
        .build::<ChannelBody>()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_ready_endpoint_fails_after_the_ready_timeout() {
    // A port with nothing listening.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let client = Client::builder()
        .endpoint(format!("http://127.0.0.1:{port}").parse().unwrap())
        .ready_timeout(Duration::from_millis(300))
        .build::<Body>()
        .unwrap();
    let started = tokio::time::Instant::now();
    let err = tokio::time::timeout(
        Duration::from_secs(5),
        client.oneshot(get(format!("http://127.0.0.1:{port}/"), "x")),
    )
    .await
    .expect("must not hang")
    .unwrap_err();
    assert!(err.is_no_ready_endpoint(), "{err:?}");
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn bad_configurations_are_typed_errors() {
    let ok = || Client::builder().endpoint("http://127.0.0.1:1".parse().unwrap());
    let cases = [
        (
            ok().max_connection_age(Duration::ZERO)
                .build::<Body>()
                .unwrap_err(),
            "max_connection_age",
        ),
        (
            ok().connections_per_endpoint(0)
                .build::<Body>()
                .unwrap_err(),
            "connections_per_endpoint",
        ),
        (
            Client::builder().build::<Body>().unwrap_err(),
            "no endpoints",
        ),
        (
            ok().ready_timeout(Duration::ZERO)
                .build::<Body>()
                .unwrap_err(),
            "ready_timeout",
        ),
        (
            ok().drain_timeout(Duration::ZERO)
                .build::<Body>()
                .unwrap_err(),
            "drain_timeout",
        ),
        (
            Client::builder()
                .endpoint("127.0.0.1:80".parse().unwrap())
                .build::<Body>()
                .unwrap_err(),
            "scheme",
        ),
        (
            Client::builder()
                .endpoint_str("http://exa mple")
                .unwrap_err(),
            "not a URI",
        ),
    ];
    for (err, needle) in cases {
        assert_eq!(err.kind(), ErrorKind::Config, "{err}");
        assert!(
            err.to_string().contains(needle),
            "`{err}` should mention {needle}"
        );
    }
}

#[test]
fn building_outside_a_runtime_is_a_typed_error() {
    let err = Client::builder()
        .endpoint("http://127.0.0.1:1".parse().unwrap())
        .build::<Body>()
        .unwrap_err();
    assert!(
        err.is_config() && err.to_string().contains("Tokio runtime"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relative_uris_get_the_origin_and_the_authority_is_kept() {
    let pods = start_pods(2).await;
    let client = Client::builder()
        .endpoints(pods.iter().map(Backend::uri))
        .origin("http://svc.test:8080".parse().unwrap())
        .build::<Body>()
        .unwrap();
    connected(&client, 2).await;
    for i in 0..20 {
        let response = bounded(client.clone().oneshot(get("/", &i.to_string())))
            .await
            .unwrap();
        assert!(text(response).await.ends_with(" svc.test:8080"));
        let response = bounded(client.clone().oneshot(get("http://other.test/", "abs")))
            .await
            .unwrap();
        assert!(text(response).await.ends_with(" other.test"));
    }
    assert!(
        wait_until(&pods[1].record, Duration::from_secs(1), || pods[1]
            .requests()
            > 0)
        .await
    );
}

/// A transport connector whose connects never finish, and the count of
/// those it started.
fn never_connecting() -> (
    impl tower::Service<
        http::Uri,
        Response = hyper_util::rt::TokioIo<tokio::net::TcpStream>,
        Error = std::io::Error,
        Future = impl Send,
    > + Clone
    + Send
    + 'static,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    let attempts = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = attempts.clone();
    let connector = tower::service_fn(move |_uri: http::Uri| {
        counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        std::future::pending::<std::io::Result<hyper_util::rt::TokioIo<tokio::net::TcpStream>>>()
    });
    (connector, attempts)
}

/// Sends one request to a client whose only endpoint never connects: it
/// fails with `NoReadyEndpoint`, not a hang.
async fn no_ready_endpoint<C>(client: Client<Body, C>) -> tower_max_connection_age::Error
where
    Client<Body, C>: tower::Service<http::Request<Body>, Error = tower_max_connection_age::Error>,
{
    let err = tokio::time::timeout(
        Duration::from_secs(5),
        client.oneshot(get("http://10.255.255.1/", "x")),
    )
    .await
    .expect("must not hang")
    .err()
    .expect("no answer");
    assert!(err.is_no_ready_endpoint(), "{err:?}");
    err
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_that_never_finishes_times_out_and_is_retried() {
    use std::sync::atomic::Ordering;

    let (connector, attempts) = never_connecting();
    let client = Client::builder()
        .endpoint("http://10.255.255.1:80".parse().unwrap())
        .connector(connector)
        .connect_timeout(Duration::from_millis(100))
        .reconnect_backoff(Duration::from_millis(10), Duration::from_millis(20))
        .ready_timeout(Duration::from_millis(600))
        .build::<Body>()
        .unwrap();
    no_ready_endpoint(client).await;
    assert!(
        attempts.load(Ordering::SeqCst) >= 2,
        "the timed-out connect was not retried"
    );
}

/// With a connection `MakeService` of one's own (here hyper's, over a
/// transport that never connects), which bounds nothing, discovery's
/// `connect_timeout` bounds each connect, and it is retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_of_a_make_service_of_ones_own_times_out_too() {
    use std::sync::atomic::Ordering;
    use tower_max_connection_age::connector::HyperConnector;
    use tower_max_connection_age::replay::ReplayBody;

    let (transport, attempts) = never_connecting();
    let mut builder =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new());
    builder.timer(hyper_util::rt::TokioTimer::new());
    let client = Client::builder()
        .endpoint("http://10.255.255.1:80".parse().unwrap())
        .connect_timeout(Duration::from_millis(100))
        .reconnect_backoff(Duration::from_millis(10), Duration::from_millis(20))
        .ready_timeout(Duration::from_millis(600))
        .build_with::<Body, _>(HyperConnector::<_, ReplayBody<Body>>::new(
            transport, builder,
        ))
        .unwrap();
    let err = no_ready_endpoint(client).await;
    let message = format!("{err:?}");
    assert!(
        message.contains("no connection within 100ms"),
        "discovery's timeout named: {message}"
    );
    assert!(
        attempts.load(Ordering::SeqCst) >= 2,
        "the timed-out connect was not retried"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn goaway_above_the_last_stream_id_is_replayed_for_a_request_with_no_body_too() {
    // h2 fails a stream with the server's GOAWAY only when the stream is
    // above the GOAWAY's last-stream-id: proof enough without a body.
    let pods = start_pods(1).await;
    pods[0].script([Script::GoAwayBeforeProcessing(0)]);
    let client = Client::builder()
        .endpoint(pods[0].uri())
        .build::<Body>()
        .unwrap();
    let response = bounded(client.clone().oneshot(get(pods[0].uri(), "get-1")))
        .await
        .unwrap();
    assert!(response.status().is_success());
    assert_eq!(pods[0].executions("get-1"), 1);
    assert_eq!(
        pods[0].connections(),
        2,
        "the replay went over a new connection"
    );
    assert_eq!(client.stats().replayed, 1);
}

/// Connecting starts while the client is being built; a first connection
/// that is ready before the client exists must not be lost. (It was, when the
/// driver task was spawned before the client's shared state existed: on a
/// busy 2-core machine about 3 in 1000 new clients never connected.) The race
/// is rare, so this builds many clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_new_client_gets_its_first_connection() {
    let pods = start_pods(1).await;
    for _ in 0..300 {
        let client = Client::builder()
            .endpoint(pods[0].uri())
            .build::<Body>()
            .unwrap();
        connected(&client, 1).await;
    }
}
