//! Pods that fail fast, through `Client` over real sockets: a pod answering
//! HTTP 503 or gRPC `UNAVAILABLE` at once is failing, not fast. With the
//! crate's defaults it draws no more than its fair share (the failure
//! penalty in the load), with outlier detection almost nothing (it is
//! ejected, and says why); no failed answer is replayed, and a pod that
//! recovers gets its share back.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use support::backend::{Backend, Failing, start_pods};
use support::haproxy::HaProxy;
use tower::ServiceExt;
use tower_max_connection_age::Client;
use tower_max_connection_age::client::ClientBuilder;
use tower_max_connection_age::discover::{EjectionReason, OutlierDetection};

type Body = Full<Bytes>;

/// Callers sending at once, as in the measurement.
const CALLERS: usize = 16;

fn client(
    pods: &[Backend],
    configure: impl FnOnce(ClientBuilder) -> ClientBuilder,
) -> Client<Body> {
    configure(Client::builder().endpoints(pods.iter().map(Backend::uri)))
        .build::<Body>()
        .unwrap()
}

/// What `requests` requests from [`CALLERS`] callers did: the share of
/// them each pod ran, and how many were answered with a failure status.
struct Run {
    shares: Vec<f64>,
    failed_answers: usize,
}

/// Sends `requests` requests (healthy pods answer after 2 ms), gRPC-style
/// (`POST`, `content-type: application/grpc`) when `grpc`; every one must
/// be answered, and each runs exactly once on `pods` (when given).
async fn run(client: &Client<Body>, pods: &[Backend], requests: usize, grpc: bool) -> Run {
    let before: Vec<usize> = pods.iter().map(Backend::requests).collect();
    let next = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let mut callers = tokio::task::JoinSet::new();
    for _ in 0..CALLERS {
        let (client, next, failed) = (client.clone(), next.clone(), failed.clone());
        callers.spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < requests {
                let request = if grpc {
                    http::Request::post("http://svc/sleep/2")
                        .header("content-type", "application/grpc")
                        .body(Body::default())
                } else {
                    http::Request::get("http://svc/sleep/2").body(Body::default())
                };
                let response = client
                    .clone()
                    .oneshot(request.unwrap())
                    .await
                    .expect("answered");
                let failure =
                    response.status() != 200 || response.headers().contains_key("grpc-status");
                let body = response.into_body().collect().await.expect("the body");
                let trailer_failure = body
                    .trailers()
                    .is_some_and(|t| t.get("grpc-status").is_some_and(|s| s != "0"));
                if failure || trailer_failure {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    support::bounded(async {
        while let Some(done) = callers.join_next().await {
            done.unwrap();
        }
    })
    .await;
    let ran: Vec<usize> = pods
        .iter()
        .zip(&before)
        .map(|(pod, before)| pod.requests() - before)
        .collect();
    if !pods.is_empty() {
        assert_eq!(
            ran.iter().sum::<usize>(),
            requests,
            "every request ran once: none lost, none replayed"
        );
    }
    assert_eq!(
        client.stats().replayed,
        0,
        "a failed answer is never replayed"
    );
    Run {
        shares: ran.iter().map(|&n| n as f64 / requests as f64).collect(),
        failed_answers: failed.load(Ordering::Relaxed),
    }
}

async fn failing_pods(mode: Failing) -> Vec<Backend> {
    let pods = start_pods(3).await;
    pods[0].fail(mode);
    pods
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_failing_fast_draws_no_more_than_its_fair_share_with_the_defaults() {
    for mode in [
        Failing::Http503,
        Failing::GrpcUnavailable,
        Failing::TonicUnavailable,
        Failing::GrpcInternalInTrailers,
    ] {
        let pods = failing_pods(mode).await;
        let client = client(&pods, |b| b);
        support::connected(&client, 3).await;
        let grpc = mode != Failing::Http503;
        let run = run(&client, &pods, 6000, grpc).await;
        let share = run.shares[0];
        eprintln!("{mode:?}: failing pod's share {share:.3}");
        assert!(share <= 0.34, "{mode:?}: the failing pod drew {share:.3}");
        assert_eq!(
            run.failed_answers,
            (share * 6000.0).round() as usize,
            "{mode:?}: the failing pod's answers reach the caller as they are"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_outlier_detection_a_pod_failing_fast_is_ejected_and_says_why() {
    for mode in [
        Failing::Http503,
        Failing::TonicUnavailable,
        Failing::GrpcInternalInTrailers,
    ] {
        let pods = failing_pods(mode).await;
        let client = client(&pods, |b| b.outlier_detection(OutlierDetection::new()));
        support::connected(&client, 3).await;
        let run = run(&client, &pods, 6000, mode != Failing::Http503).await;
        let share = run.shares[0];
        eprintln!("{mode:?}: failing pod's share with ejection {share:.4}");
        assert!(share <= 0.05, "{mode:?}: the failing pod drew {share:.4}");
        assert_eq!(
            client.discover_status().ejections(),
            vec![(pods[0].uri(), EjectionReason::ConsecutiveFailures)],
            "{mode:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_failing_half_its_requests_is_penalized_not_cut_off() {
    let pods = failing_pods(Failing::HalfHttp503).await;
    let client = client(&pods, |b| b);
    support::connected(&client, 3).await;
    let run = run(&client, &pods, 8000, false).await;
    let share = run.shares[0];
    eprintln!("half failing: share {share:.3}");
    assert!(share < 0.30, "penalized: {share:.3}");
    assert!(share > 0.002, "still served: {share:.4}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_that_recovers_gets_its_share_back() {
    let pods = failing_pods(Failing::Http503).await;
    // A short decay, so that the penalty fades within the test.
    let decay = Duration::from_millis(200);
    let client = client(&pods, |b| b.failure_penalty_decay(decay));
    support::connected(&client, 3).await;
    let failing = run(&client, &pods, 4000, false).await;
    assert!(failing.shares[0] <= 0.34, "{:.3}", failing.shares[0]);
    pods[0].fail(Failing::No);
    // The penalty fades while the pod is probed again; then it serves.
    tokio::time::sleep(decay * 10).await;
    let recovered = run(&client, &pods, 4000, false).await;
    eprintln!(
        "share failing {:.3}, recovered {:.3}",
        failing.shares[0], recovered.shares[0]
    );
    assert!(
        recovered.shares[0] > 0.2,
        "a recovered pod gets its share back: {:.3}",
        recovered.shares[0]
    );
    assert_eq!(recovered.failed_answers, 0);
}

/// A virtual IP: one endpoint, HAProxy (TCP mode, round-robin) spreading
/// the client's connections over an axum pod that answers 503 and a healthy
/// pod. The penalty is per connection, so the connections that land on the
/// failing pod draw less; with outlier detection the one endpoint is
/// ejected, and still used, since nothing else is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_virtual_ip_the_connections_to_a_failing_pod_draw_less() {
    let failing = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let failing_addr = failing.local_addr().unwrap();
    let app = axum::Router::new().fallback(|| async { http::StatusCode::SERVICE_UNAVAILABLE });
    let served = tokio::spawn(async move { axum::serve(failing, app).await });
    let healthy = Backend::start(std::net::Ipv4Addr::LOCALHOST, 0).await;
    let haproxy = HaProxy::start(&[failing_addr, healthy.addr], &[]).await;
    let vip: http::Uri = format!("http://{}", haproxy.addr()).parse().unwrap();
    for detection in [None, Some(OutlierDetection::new())] {
        let mut builder = Client::builder()
            .endpoint(vip.clone())
            .connections_per_endpoint(4);
        if let Some(detection) = detection {
            builder = builder.outlier_detection(detection);
        }
        let client = builder.build::<Body>().unwrap();
        support::connected(&client, 4).await;
        let before = healthy.requests();
        let requests = 4000;
        let run = run(&client, &[], requests, false).await;
        let served_well = healthy.requests() - before;
        let failed_share = run.failed_answers as f64 / requests as f64;
        eprintln!(
            "behind HAProxy, ejection {}: 503 share {failed_share:.3}",
            detection.is_some()
        );
        assert_eq!(
            served_well + run.failed_answers,
            requests,
            "every request answered, by one pod or the other"
        );
        assert!(
            failed_share < 0.25,
            "half the connections go to the failing pod; it answered {failed_share:.3}"
        );
    }
    served.abort();
}

/// Failure-percentage ejection (gRFC A50), wired through discovery: half
/// of a pod's requests in an interval failing eject it (failures in a row
/// are set out of reach), and discovery says why. (The penalty is off
/// here, so the pod keeps drawing its share until then.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_failing_half_its_requests_is_ejected_by_failure_percentage() {
    let pods = failing_pods(Failing::HalfHttp503).await;
    let client = client(&pods, |b| {
        b.failure_penalty(Duration::ZERO).outlier_detection(
            OutlierDetection::new()
                .consecutive_failures(1000)
                .failure_percentage(40)
                .failure_percentage_minimum_requests(20)
                .interval(Duration::from_millis(200)),
        )
    });
    support::connected(&client, 3).await;
    run(&client, &pods, 6000, false).await;
    assert_eq!(
        client.discover_status().ejections(),
        vec![(pods[0].uri(), EjectionReason::FailurePercentage)]
    );
}
