//! The parts composed with tower's own stack, and `Client` inside tonic and axum.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use support::backend::{Backend, start_pods};
use tower::ServiceBuilder;
use tower::balance::p2c::Balance;
use tower_max_connection_age::replay::ReplayBody;
use tower_max_connection_age::{
    Client, Http2Connector, MaxConnectionAgeLayer, ReplayLayer, RotatingDiscover,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tower_balance_over_rotating_discover_rotates_without_failures() {
    let pods = start_pods(2).await;
    let make = ServiceBuilder::new()
        .layer(MaxConnectionAgeLayer::new(Duration::from_millis(200)))
        .service(Http2Connector::<_, ReplayBody<Full<Bytes>>>::http());
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
        Duration::from_millis(2000),
        Duration::from_millis(500),
    )
    .await;
    report.assert_rotated_without_failures(&pods, 100, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tonic_health_client_runs_over_client() {
    use tonic_health::ServingStatus;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;

    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("demo", ServingStatus::Serving)
        .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );

    let client = Client::builder()
        .endpoint(format!("http://{addr}").parse().unwrap())
        .max_connection_age(Duration::from_millis(100))
        .build::<tonic::body::Body>()
        .unwrap();
    let mut health = HealthClient::new(client.clone());
    // Call until the connection has rotated twice: every call must succeed.
    let mut calls = 0;
    tokio::time::timeout(Duration::from_secs(10), async {
        while client.stats().rotated < 2 {
            let response = health
                .check(HealthCheckRequest {
                    service: "demo".into(),
                })
                .await
                .unwrap();
            assert_eq!(
                response.into_inner().status(),
                ServingStatus::Serving.into()
            );
            calls += 1;
        }
    })
    .await
    .expect("connections did not rotate");
    assert!(calls > 0);
    let missing = health
        .check(HealthCheckRequest {
            service: "missing".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    assert!(
        client.stats().rotated >= 1,
        "connections should have rotated: {:?}",
        client.stats()
    );
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_handler_calls_backends_through_client() {
    use axum::extract::State;
    use axum::routing::get;

    let pods = start_pods(2).await;
    let upstream = Client::builder()
        .endpoints(pods.iter().map(Backend::uri))
        .build::<axum::body::Body>()
        .unwrap();
    async fn proxy(State(client): State<Client<axum::body::Body>>) -> String {
        use tower::ServiceExt;
        let request = http::Request::get("/from-axum")
            .body(axum::body::Body::empty())
            .unwrap();
        let response = support::bounded(client.oneshot(request)).await.unwrap();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        format!("upstream said: {}", String::from_utf8_lossy(&bytes))
    }
    let app = axum::Router::new()
        .route("/", get(proxy))
        .with_state(upstream);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let client = Client::builder()
        .endpoint(format!("http://{addr}").parse().unwrap())
        .build::<Full<Bytes>>()
        .unwrap();
    for _ in 0..10 {
        use tower::ServiceExt;
        let request = http::Request::get(format!("http://{addr}/"))
            .body(Full::default())
            .unwrap();
        let response = support::bounded(client.clone().oneshot(request))
            .await
            .unwrap();
        assert!(response.status().is_success());
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let body = String::from_utf8(body.to_vec()).unwrap();
        assert!(body.starts_with("upstream said: 127.0.0."), "{body}");
    }
    assert_eq!(pods.iter().map(Backend::requests).sum::<usize>(), 10);
    server.abort();
}

/// The layer alone (no discover): at its deadline a connection stops taking
/// requests, hands new ones back, and lets the one in flight finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layer_alone_drains_at_the_deadline_and_gives_requests_back() {
    use tower::{Service, ServiceExt};

    let pods = start_pods(1).await;
    let mut make = ServiceBuilder::new()
        .layer(
            MaxConnectionAgeLayer::new(Duration::from_millis(200))
                .jitter(Duration::ZERO)
                .drain_timeout(Duration::from_secs(5)),
        )
        .service(Http2Connector::<_, Full<Bytes>>::http());
    let mut connection = support::connect_one(&mut make, pods[0].uri()).await;
    let deadline = connection
        .deadline()
        .expect("an aged connection has a deadline");

    let slow = http::Request::get(format!("{}sleep/600", pods[0].uri()))
        .body(Full::default())
        .unwrap();
    let in_flight = connection.ready().await.unwrap().call(slow);
    let in_flight = tokio::spawn(async move { in_flight.await.map(|r| r.status()) });
    support::until_draining(&connection).await;
    assert!(
        tokio::time::Instant::now() >= deadline,
        "drained before its deadline"
    );

    let request = http::Request::get(pods[0].uri())
        .header("x-request-id", "late")
        .body(Full::default())
        .unwrap();
    let mut err = connection.call(request).await.unwrap_err();
    assert!(err.is_draining(), "{err:?}");
    let back = err
        .take_request::<http::Request<Full<Bytes>>>()
        .expect("the request comes back");
    assert_eq!(back.headers()["x-request-id"], "late");
    assert_eq!(pods[0].executions("late"), 0);
    assert!(
        support::bounded(in_flight)
            .await
            .unwrap()
            .unwrap()
            .is_success(),
        "the in-flight request finishes"
    );
}

/// A connection service of the user's own joins the replay protocol through
/// `Error::unsent` and `Error::refused`.
#[tokio::test]
async fn a_users_connection_hands_requests_back_with_the_public_constructors() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tower::ServiceExt;
    use tower_max_connection_age::Error;

    let calls = Arc::new(AtomicUsize::new(0));
    let connection = {
        let calls = calls.clone();
        tower::service_fn(move |request: http::Request<ReplayBody<Full<Bytes>>>| {
            let call = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                match call {
                    // Never sent: the request itself comes back.
                    0 => Err(Error::unsent(request)),
                    // Provably not processed: the head comes back; the body
                    // is rebuilt from what the replay recorded.
                    1 => {
                        let (parts, body) = request.into_parts();
                        let sent = body.collect().await.unwrap().to_bytes();
                        assert_eq!(sent, "payload");
                        Err(Error::refused(http::Request::from_parts(parts, ())))
                    }
                    _ => {
                        let body = request.into_body().collect().await.unwrap().to_bytes();
                        Ok::<_, Error>(http::Response::new(body))
                    }
                }
            }
        })
    };
    let service = ServiceBuilder::new()
        .layer(ReplayLayer::new())
        .service(connection);
    let request = http::Request::post("http://svc/")
        .body(Full::new(Bytes::from_static(b"payload")))
        .unwrap();
    let response = service.oneshot(request).await.unwrap();
    assert_eq!(response.into_body(), "payload");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tower_http_layers_compose_around_client() {
    use tower::ServiceExt;
    use tower_http::set_header::SetRequestHeaderLayer;
    use tower_http::timeout::TimeoutLayer;
    use tower_http::trace::TraceLayer;

    let pods = start_pods(1).await;
    let client = Client::builder()
        .endpoint(pods[0].uri())
        .build::<Full<Bytes>>()
        .unwrap();
    let service = ServiceBuilder::new()
        .layer(TraceLayer::new_for_http())
        .layer(SetRequestHeaderLayer::overriding(
            http::HeaderName::from_static("x-request-id"),
            http::HeaderValue::from_static("from-tower-http"),
        ))
        // Needs `ResBody: Default`: it answers 408 with an empty body.
        .layer(TimeoutLayer::with_status_code(
            http::StatusCode::REQUEST_TIMEOUT,
            Duration::from_millis(200),
        ))
        .service(client);
    let request = |path: &str| {
        http::Request::get(format!("{}{path}", pods[0].uri()))
            .body(Full::<Bytes>::default())
            .unwrap()
    };
    let response = support::bounded(service.clone().oneshot(request("")))
        .await
        .unwrap();
    assert!(response.status().is_success());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(!body.is_empty());
    assert_eq!(pods[0].executions("from-tower-http"), 1);
    let late = support::bounded(service.oneshot(request("sleep/5000")))
        .await
        .unwrap();
    assert_eq!(late.status(), http::StatusCode::REQUEST_TIMEOUT);
    assert!(
        late.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .is_empty()
    );
}

/// An axum app behind tower-http's gzip compression, on h2c.
async fn gzip_app() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let text = "aged connections ".repeat(1000);
    let app = axum::Router::new()
        .route("/", axum::routing::get(move || async move { text }))
        .layer(tower_http::compression::CompressionLayer::new());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (addr, server)
}

/// tower-http's `Decompression` around `Client`: it asks for gzip, the
/// server compresses, and the caller reads the text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tower_http_decompression_composes_around_client() {
    use tower::ServiceExt;
    use tower_http::decompression::DecompressionLayer;

    let (addr, server) = gzip_app().await;
    let client = Client::builder()
        .endpoint(format!("http://{addr}").parse().unwrap())
        .build::<Full<Bytes>>()
        .unwrap();
    let service = ServiceBuilder::new()
        .layer(DecompressionLayer::new())
        .service(client.clone());
    let request = http::Request::get(format!("http://{addr}/"))
        .body(Full::default())
        .unwrap();
    let response = support::bounded(service.oneshot(request)).await.unwrap();
    assert!(response.status().is_success());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "aged connections ".repeat(1000));
    // And the bytes on the wire were compressed: without the layer the
    // server answers plain text, with it, the client asked for gzip.
    let request = http::Request::get(format!("http://{addr}/"))
        .header(http::header::ACCEPT_ENCODING, "gzip")
        .body(Full::default())
        .unwrap();
    let raw = support::bounded(client.oneshot(request)).await.unwrap();
    assert_eq!(raw.headers()[http::header::CONTENT_ENCODING], "gzip");
    let compressed = raw.into_body().collect().await.unwrap().to_bytes();
    assert!(compressed.len() < 1000, "{} bytes", compressed.len());
    server.abort();
}

/// The same tower-http layers around one `AgedConnection` (the layer
/// alone): `Trace`, `SetRequestHeader`, `Timeout` (its body is `Default`)
/// and `Decompression`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tower_http_layers_compose_around_an_aged_connection() {
    use tower::{Service, ServiceExt};
    use tower_http::decompression::DecompressionLayer;
    use tower_http::set_header::SetRequestHeaderLayer;
    use tower_http::timeout::TimeoutLayer;
    use tower_http::trace::TraceLayer;

    let (addr, server) = gzip_app().await;
    let uri: http::Uri = format!("http://{addr}").parse().unwrap();
    let mut make = ServiceBuilder::new()
        .layer(MaxConnectionAgeLayer::new(Duration::from_secs(60)))
        .service(Http2Connector::<_, Full<Bytes>>::http());
    let connection = make.ready().await.unwrap().call(uri.clone()).await.unwrap();
    let mut service = ServiceBuilder::new()
        .layer(TraceLayer::new_for_http())
        .layer(SetRequestHeaderLayer::overriding(
            http::HeaderName::from_static("x-request-id"),
            http::HeaderValue::from_static("from-tower-http"),
        ))
        .layer(TimeoutLayer::with_status_code(
            http::StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(5),
        ))
        .layer(DecompressionLayer::new())
        .service(connection);
    let request = http::Request::get(format!("{uri}"))
        .body(Full::default())
        .unwrap();
    let response = support::bounded(service.ready().await.unwrap().call(request))
        .await
        .unwrap();
    assert!(response.status().is_success());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "aged connections ".repeat(1000));
    server.abort();
}
