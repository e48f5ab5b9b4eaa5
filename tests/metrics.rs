//! The `metrics` feature, read through metrics-util's `DebuggingRecorder`
//! installed as the global recorder: real sockets, backends on 127.0.0.x,
//! each event provoked and its metric waited for (bounded), then checked
//! exactly once the client is gone and nothing moves any more.
//!
//! One recorder serves the whole test binary, so the tests take turns
//! (`serial`): the gauges without a label (endpoints, ejections) and the
//! replay counters are process-wide, and each test leaves them as it found
//! them by dropping its client and waiting for its share to go. The
//! per-endpoint metrics are told apart by their `endpoint` label (each test's
//! backends have a port of their own).
#![cfg(feature = "metrics")]

mod support;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use metrics_util::MetricKind;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use support::backend::{Backend, Script, start_pods};
use support::fault::{Fault, FaultProxy};
use support::{bounded, connected, get};
use tower::ServiceExt;
use tower_max_connection_age::connector::HyperConnector;
use tower_max_connection_age::discover::OutlierDetection;
use tower_max_connection_age::metrics as m;
use tower_max_connection_age::replay::ReplayBody;
use tower_max_connection_age::resolve::StaticResolver;
use tower_max_connection_age::{Client, ErrorKind};

type Body = Full<Bytes>;

/// How long a test waits for a metric before it fails.
const WAIT: Duration = Duration::from_secs(10);

/// Every name the crate may record.
const NAMES: &[&str] = &[
    m::UPSTREAM_CX_TOTAL,
    m::UPSTREAM_CX_ACTIVE,
    m::UPSTREAM_CX_CONNECT_FAIL,
    m::UPSTREAM_CX_CONNECT_TIMEOUT,
    m::UPSTREAM_CX_MAX_DURATION_REACHED,
    m::UPSTREAM_CX_ROTATED,
    m::UPSTREAM_CX_DRAINED,
    m::UPSTREAM_CX_FORCE_CLOSED,
    m::UPSTREAM_CX_DESTROY,
    m::UPSTREAM_CX_DESTROY_WITH_ACTIVE_RQ,
    m::UPSTREAM_CX_CLOSE_NOTIFY,
    m::HTTP2_KEEPALIVE_TIMEOUT,
    m::UPSTREAM_RQ_RETRY,
    m::UPSTREAM_RQ_REFUSED,
    m::MEMBERSHIP_TOTAL,
    m::MEMBERSHIP_HEALTHY,
    m::OUTLIER_DETECTION_EJECTIONS_ACTIVE,
    m::OUTLIER_DETECTION_EJECTIONS_ENFORCED_TOTAL,
    m::OUTLIER_DETECTION_EJECTIONS_ENFORCED_CONSECUTIVE_5XX,
    m::OUTLIER_DETECTION_EJECTIONS_ENFORCED_FAILURE_PERCENTAGE,
    m::OUTLIER_DETECTION_EJECTIONS_OVERFLOW,
];

type Labels = Vec<(String, String)>;

/// What the recorder saw so far. Its snapshots *take* the values (each read
/// swaps counters and gauges to zero), so every read is added up here: a
/// counter's total is the sum of its reads, and so is a gauge's value, as
/// the crate only ever moves its gauges up and down.
struct Recorded {
    snapshotter: Snapshotter,
    totals: Mutex<HashMap<(MetricKind, String, Labels), f64>>,
}

fn recorded() -> &'static Recorded {
    static RECORDED: OnceLock<Recorded> = OnceLock::new();
    RECORDED.get_or_init(|| {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        metrics::set_global_recorder(recorder).expect("the only recorder of this binary");
        // As an application would, once its recorder is in.
        m::describe();
        Recorded {
            snapshotter,
            totals: Mutex::default(),
        }
    })
}

impl Recorded {
    /// Adds a snapshot to the totals, checking each metric's name and help.
    fn read(&self) -> MutexGuard<'_, HashMap<(MetricKind, String, Labels), f64>> {
        let mut totals = self.totals.lock().unwrap_or_else(|p| p.into_inner());
        for (key, unit, help, value) in self.snapshotter.snapshot().into_vec() {
            let (kind, key) = key.into_parts();
            let name = key.name().to_string();
            assert!(NAMES.contains(&name.as_str()), "unknown metric {name}");
            assert!(
                help.is_some_and(|h| !h.is_empty()) && unit == Some(metrics::Unit::Count),
                "{name} has no description"
            );
            let mut labels: Labels = key
                .labels()
                .map(|l| (l.key().to_string(), l.value().to_string()))
                .collect();
            labels.sort();
            let value = match value {
                DebugValue::Counter(n) => n as f64,
                DebugValue::Gauge(v) => v.into_inner(),
                DebugValue::Histogram(_) => panic!("{name}: the crate records no histogram"),
            };
            *totals.entry((kind, name, labels)).or_default() += value;
        }
        totals
    }

    fn value(&self, kind: MetricKind, name: &str, labels: &[(&str, &str)]) -> f64 {
        let mut labels: Labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        labels.sort();
        self.read()
            .get(&(kind, name.to_string(), labels))
            .copied()
            .unwrap_or(0.0)
    }

    /// Everything recorded for `endpoint`, and the unlabelled gauges: for
    /// failure messages.
    fn dump(&self, endpoints: &[&str]) -> String {
        let mut lines: Vec<String> = self
            .read()
            .iter()
            .filter(|((_, _, labels), _)| {
                labels.is_empty()
                    || labels
                        .iter()
                        .any(|(k, v)| k != m::ENDPOINT || endpoints.contains(&v.as_str()))
            })
            .map(|((_, name, labels), value)| format!("{name}{labels:?} = {value}"))
            .collect();
        lines.sort();
        lines.join("\n")
    }
}

/// A counter of one endpoint.
fn counter(name: &str, endpoint: &str) -> u64 {
    recorded().value(MetricKind::Counter, name, &[(m::ENDPOINT, endpoint)]) as u64
}

/// A counter with these labels.
fn counter_with(name: &str, labels: &[(&str, &str)]) -> u64 {
    recorded().value(MetricKind::Counter, name, labels) as u64
}

/// `upstream_cx_active` of one endpoint.
fn active(endpoint: &str) -> f64 {
    recorded().value(
        MetricKind::Gauge,
        m::UPSTREAM_CX_ACTIVE,
        &[(m::ENDPOINT, endpoint)],
    )
}

/// A gauge without labels.
fn gauge(name: &str) -> f64 {
    recorded().value(MetricKind::Gauge, name, &[])
}

/// Waits until `check` holds, reading the metrics every 10 ms, for at most
/// [`WAIT`]; fails with what was recorded for `endpoints`.
async fn eventually(what: &str, endpoints: &[&str], mut check: impl FnMut() -> bool) {
    let waited = tokio::time::timeout(WAIT, async {
        while !check() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    if waited.is_err() {
        panic!(
            "waited {WAIT:?} for {what}; recorded:\n{}",
            recorded().dump(endpoints)
        );
    }
}

/// Takes this test's turn with the process-wide metrics, once the test
/// before has taken its share back.
async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let turn = TURN.lock().await;
    recorded();
    eventually("the test before to take back its endpoints", &[], || {
        gauge(m::MEMBERSHIP_TOTAL) == 0.0
            && gauge(m::MEMBERSHIP_HEALTHY) == 0.0
            && gauge(m::OUTLIER_DETECTION_EJECTIONS_ACTIVE) == 0.0
    })
    .await;
    turn
}

/// Drops `client` and waits until its connections and endpoints are gone
/// from the gauges.
async fn drop_client<C>(client: C, endpoints: &[&str]) {
    drop(client);
    eventually(
        "the client's connections and endpoints to go",
        endpoints,
        || {
            endpoints.iter().all(|e| active(e) == 0.0)
                && gauge(m::MEMBERSHIP_TOTAL) == 0.0
                && gauge(m::MEMBERSHIP_HEALTHY) == 0.0
                && gauge(m::OUTLIER_DETECTION_EJECTIONS_ACTIVE) == 0.0
        },
    )
    .await;
}

/// Reads a response's body to its end.
async fn ended<B: http_body::Body>(response: http::Response<B>)
where
    B::Error: std::fmt::Debug,
{
    bounded(response.into_body().collect()).await.unwrap();
}

/// An address on 127.0.0.1 where nothing listens.
async fn closed_port() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aged_connections_are_counted_opened_rotated_and_drained_and_the_active_gauge_comes_back() {
    let _turn = serial().await;
    let pods = start_pods(1).await;
    let endpoint = pods[0].addr.to_string();
    let ep = endpoint.as_str();
    let client = Client::builder()
        .endpoint(pods[0].uri())
        .max_connection_age(Duration::from_millis(200))
        .build::<Body>()
        .unwrap();
    connected(&client, 1).await;
    eventually("the first connection", &[ep], || {
        counter(m::UPSTREAM_CX_TOTAL, ep) == 1 && active(ep) == 1.0
    })
    .await;
    assert_eq!(gauge(m::MEMBERSHIP_TOTAL), 1.0);
    assert_eq!(gauge(m::MEMBERSHIP_HEALTHY), 1.0);

    eventually("two rotations", &[ep], || {
        counter(m::UPSTREAM_CX_ROTATED, ep) >= 2
    })
    .await;
    // Each replaced connection drains (no request is in flight) and
    // closes: one connection is open again between rotations.
    eventually("the replaced connections to close", &[ep], || {
        active(ep) == 1.0 && counter(m::UPSTREAM_CX_DRAINED, ep) >= 2
    })
    .await;
    let response = bounded(client.clone().oneshot(get(pods[0].uri(), "after")))
        .await
        .unwrap();
    assert!(response.status().is_success());
    // Its connection counts it in flight until the body has ended.
    ended(response).await;

    let rotated = counter(m::UPSTREAM_CX_ROTATED, ep);
    drop_client(client, &[ep]).await;
    // Nothing moves any more: every connection opened was closed, and
    // every one of them gracefully.
    let total = counter(m::UPSTREAM_CX_TOTAL, ep);
    let aged = counter(m::UPSTREAM_CX_MAX_DURATION_REACHED, ep);
    assert!(total > rotated, "{total} opened, {rotated} rotated");
    // One slot: a rotation follows each deadline but the last.
    assert!(
        aged >= counter(m::UPSTREAM_CX_ROTATED, ep)
            && aged <= counter(m::UPSTREAM_CX_ROTATED, ep) + 1,
        "{}",
        recorded().dump(&[ep])
    );
    assert_eq!(counter(m::UPSTREAM_CX_DESTROY, ep), total);
    assert_eq!(counter(m::UPSTREAM_CX_DRAINED, ep), total);
    assert_eq!(counter(m::UPSTREAM_CX_DESTROY_WITH_ACTIVE_RQ, ep), 0);
    assert_eq!(counter(m::UPSTREAM_CX_FORCE_CLOSED, ep), 0);
    assert_eq!(counter(m::UPSTREAM_CX_CONNECT_FAIL, ep), 0);
    assert_eq!(active(ep), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_still_running_at_the_drain_timeout_counts_a_force_close() {
    let _turn = serial().await;
    let pods = start_pods(1).await;
    let endpoint = pods[0].addr.to_string();
    let ep = endpoint.as_str();
    let client = Client::builder()
        .endpoint(pods[0].uri())
        .max_connection_age(Duration::from_millis(200))
        .drain_timeout(Duration::from_millis(300))
        .build::<Body>()
        .unwrap();
    connected(&client, 1).await;
    let hung = client
        .clone()
        .oneshot(get(format!("{}sleep/5000", pods[0].uri()), "hung"));
    let error = bounded(hung).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::ForceClosed, "{error:?}");
    eventually("the force-close", &[ep], || {
        counter(m::UPSTREAM_CX_FORCE_CLOSED, ep) == 1
    })
    .await;

    drop_client(client, &[ep]).await;
    let total = counter(m::UPSTREAM_CX_TOTAL, ep);
    assert!(total >= 2, "the hung connection was rotated: {total}");
    assert_eq!(counter(m::UPSTREAM_CX_FORCE_CLOSED, ep), 1);
    assert_eq!(counter(m::UPSTREAM_CX_DESTROY_WITH_ACTIVE_RQ, ep), 1);
    // All the others had nothing in flight.
    assert_eq!(counter(m::UPSTREAM_CX_DRAINED, ep), total - 1);
    assert_eq!(counter(m::UPSTREAM_CX_DESTROY, ep), total);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_port_counts_connect_failures_and_no_connection() {
    let _turn = serial().await;
    let addr = closed_port().await;
    let endpoint = addr.to_string();
    let ep = endpoint.as_str();
    let client = Client::builder()
        .endpoint(format!("http://{addr}").parse().unwrap())
        .reconnect_backoff(Duration::from_millis(10), Duration::from_millis(20))
        .build::<Body>()
        .unwrap();
    eventually("three connect failures", &[ep], || {
        counter(m::UPSTREAM_CX_CONNECT_FAIL, ep) >= 3
    })
    .await;
    assert_eq!(gauge(m::MEMBERSHIP_TOTAL), 1.0);
    drop_client(client, &[ep]).await;
    // Refused at once: none timed out, none was opened.
    assert_eq!(counter(m::UPSTREAM_CX_CONNECT_TIMEOUT, ep), 0);
    assert_eq!(counter(m::UPSTREAM_CX_TOTAL, ep), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_speaks_counts_connect_timeouts_until_one_answers() {
    let _turn = serial().await;
    let pods = start_pods(1).await;
    let endpoint = pods[0].addr.to_string();
    let ep = endpoint.as_str();
    pods[0].script([Script::Silent, Script::Silent]);
    let client = Client::builder()
        .endpoint(pods[0].uri())
        .connect_timeout(Duration::from_millis(200))
        .reconnect_backoff(Duration::from_millis(10), Duration::from_millis(20))
        .build::<Body>()
        .unwrap();
    connected(&client, 1).await;
    eventually("the third connect to be opened", &[ep], || {
        counter(m::UPSTREAM_CX_TOTAL, ep) == 1
    })
    .await;
    // The two silent connects timed out, each counted once, as a timeout
    // and as a failure (as in Envoy).
    assert_eq!(counter(m::UPSTREAM_CX_CONNECT_TIMEOUT, ep), 2);
    assert_eq!(counter(m::UPSTREAM_CX_CONNECT_FAIL, ep), 2);
    assert_eq!(pods[0].connections(), 3);
    drop_client(client, &[ep]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_requests_are_counted_with_their_replays_and_the_servers_goaway() {
    let _turn = serial().await;
    let retried = |reason: &str| counter_with(m::UPSTREAM_RQ_RETRY, &[(m::REASON, reason)]);
    let refused = || counter_with(m::UPSTREAM_RQ_REFUSED, &[]);

    // GOAWAY(last-stream-id 0, NO_ERROR) on the first HEADERS: the request
    // is above it, provably not processed, and replayed on a new connection.
    let pods = start_pods(1).await;
    let endpoint = pods[0].addr.to_string();
    let ep = endpoint.as_str();
    pods[0].script([Script::GoAwayBeforeProcessing(0)]);
    let client = Client::builder()
        .endpoint(pods[0].uri())
        .build::<Body>()
        .unwrap();
    let (refused_before, unsent_before) = (retried("refused"), retried("unsent"));
    let refusals_before = refused();
    let response = bounded(client.clone().oneshot(get(pods[0].uri(), "goaway")))
        .await
        .unwrap();
    assert!(response.status().is_success());
    ended(response).await;
    assert_eq!(pods[0].executions("goaway"), 1);
    assert_eq!(client.stats().replayed, 1);
    assert_eq!(retried("refused") - refused_before, 1);
    assert_eq!(retried("unsent") - unsent_before, 0);
    assert_eq!(refused() - refusals_before, 1);
    let goaway = [(m::ENDPOINT, ep), (m::CODE, "NO_ERROR")];
    eventually("the GOAWAY", &[ep], || {
        counter_with(m::UPSTREAM_CX_CLOSE_NOTIFY, &goaway) == 1
    })
    .await;
    drop_client(client, &[ep]).await;
    assert_eq!(counter_with(m::UPSTREAM_CX_CLOSE_NOTIFY, &goaway), 1);

    // REFUSED_STREAM twice, then served: two refusals, two replays.
    let pods = start_pods(1).await;
    let endpoint = pods[0].addr.to_string();
    let ep = endpoint.as_str();
    pods[0].script([Script::RefuseStreams(2)]);
    let client = Client::builder()
        .endpoint(pods[0].uri())
        .build::<Body>()
        .unwrap();
    let (refused_before, refusals_before) = (retried("refused"), refused());
    let response = bounded(client.clone().oneshot(get(pods[0].uri(), "refused")))
        .await
        .unwrap();
    assert!(response.status().is_success());
    ended(response).await;
    assert_eq!(pods[0].executions("refused"), 1);
    assert_eq!(client.stats().replayed, 2);
    assert_eq!(retried("refused") - refused_before, 2);
    assert_eq!(refused() - refusals_before, 2);
    drop_client(client, &[ep]).await;
    // REFUSED_STREAM resets the stream, not the connection: the replays
    // went over the same (the only) connection, and no GOAWAY came.
    assert_eq!(counter(m::UPSTREAM_CX_TOTAL, ep), 1);
    assert_eq!(counter(m::UPSTREAM_CX_DRAINED, ep), 1);
    let any_goaway = recorded().read().keys().any(|(_, name, labels)| {
        name == m::UPSTREAM_CX_CLOSE_NOTIFY
            && labels.contains(&(m::ENDPOINT.to_string(), endpoint.clone()))
    });
    assert!(!any_goaway, "{}", recorded().dump(&[ep]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_peer_counts_a_keepalive_timeout() {
    let _turn = serial().await;
    let backend = Backend::start(Ipv4Addr::new(127, 0, 1, 1), 0).await;
    let proxy = FaultProxy::start(Ipv4Addr::LOCALHOST, 0, backend.addr).await;
    let endpoint = proxy.addr().to_string();
    let ep = endpoint.as_str();
    let client = Client::builder()
        .endpoint(proxy.uri())
        .keep_alive_interval(Duration::from_secs(1))
        .keep_alive_timeout(Duration::from_secs(1))
        .connect_timeout(Duration::from_secs(1))
        .reconnect_backoff(Duration::from_millis(100), Duration::from_millis(500))
        .build::<Body>()
        .unwrap();
    connected(&client, 1).await;
    proxy.set(Fault::BlackHole);
    let error = bounded(client.clone().oneshot(get(proxy.uri(), "held")))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::KeepAlive, "{error:?}");
    eventually("the dead connection to close", &[ep], || {
        counter(m::HTTP2_KEEPALIVE_TIMEOUT, ep) == 1
            && counter(m::UPSTREAM_CX_DESTROY, ep) == 1
            && active(ep) == 0.0
    })
    .await;
    // Its replacements go into the hole too, and time out.
    eventually("a reconnect to time out", &[ep], || {
        counter(m::UPSTREAM_CX_CONNECT_TIMEOUT, ep) >= 1
    })
    .await;
    drop_client(client, &[ep]).await;
    assert_eq!(counter(m::HTTP2_KEEPALIVE_TIMEOUT, ep), 1);
    assert_eq!(counter(m::UPSTREAM_CX_TOTAL, ep), 1);
    assert_eq!(counter(m::UPSTREAM_CX_DRAINED, ep), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_endpoints_are_ejected_up_to_the_percent_and_the_gauges_follow() {
    let _turn = serial().await;
    let pods = start_pods(1).await;
    let port = pods[0].addr.port();
    // 127.0.0.2 and .3 on the pods' port: nobody listens, connects are refused.
    let healthy = pods[0].addr.to_string();
    let dead = [format!("127.0.0.2:{port}"), format!("127.0.0.3:{port}")];
    let all = [healthy.as_str(), dead[0].as_str(), dead[1].as_str()];
    let client = Client::builder()
        .endpoints(all.iter().map(|a| format!("http://{a}").parse().unwrap()))
        .outlier_detection(
            OutlierDetection::new()
                .consecutive_failures(2)
                .base_ejection_time(Duration::from_secs(60))
                // One of three may be out.
                .max_ejection_percent(34),
        )
        .reconnect_backoff(Duration::from_millis(10), Duration::from_millis(20))
        .build::<Body>()
        .unwrap();
    let ejections = |e: &str| counter(m::OUTLIER_DETECTION_EJECTIONS_ENFORCED_TOTAL, e);
    let overflows = |e: &str| counter(m::OUTLIER_DETECTION_EJECTIONS_OVERFLOW, e);
    eventually(
        "one dead endpoint ejected, the other not for the percent",
        &all,
        || {
            ejections(&dead[0]) + ejections(&dead[1]) == 1
                && overflows(&dead[0]) + overflows(&dead[1]) >= 1
        },
    )
    .await;
    assert_eq!(gauge(m::OUTLIER_DETECTION_EJECTIONS_ACTIVE), 1.0);
    assert_eq!(
        counter(
            m::OUTLIER_DETECTION_EJECTIONS_ENFORCED_CONSECUTIVE_5XX,
            &dead[0]
        ) + counter(
            m::OUTLIER_DETECTION_EJECTIONS_ENFORCED_CONSECUTIVE_5XX,
            &dead[1]
        ),
        1,
        "ejected for failures in a row"
    );
    assert_eq!(gauge(m::MEMBERSHIP_TOTAL), 3.0);
    assert_eq!(gauge(m::MEMBERSHIP_HEALTHY), 2.0);
    // The one ejected is not the one that overflowed.
    let (out, kept) = if ejections(&dead[0]) == 1 {
        (&dead[0], &dead[1])
    } else {
        (&dead[1], &dead[0])
    };
    assert!(overflows(kept) >= 1 && overflows(out) == 0);
    assert_eq!(ejections(&healthy), 0);
    assert_eq!(active(&healthy), 1.0);

    drop_client(client, &all).await;
    // Still ejected when the client went: no second ejection.
    assert_eq!(ejections(out), 1);
    assert_eq!(ejections(kept), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_endpoints_gauge_follows_the_dns_answer() {
    let _turn = serial().await;
    let pods = start_pods(3).await;
    let port = pods[0].addr.port();
    let endpoints: Vec<String> = pods.iter().map(|p| p.addr.to_string()).collect();
    let all: Vec<&str> = endpoints.iter().map(String::as_str).collect();
    let resolver = StaticResolver::new(pods.iter().map(|p| p.addr));
    let client = Client::builder()
        .uri(format!("http://svc.test:{port}").parse().unwrap())
        .resolver(resolver.clone())
        .resolve_interval(Duration::from_millis(100))
        .min_resolve_interval(Duration::from_millis(50))
        .build::<Body>()
        .unwrap();
    eventually("three endpoints, each connected", &all, || {
        gauge(m::MEMBERSHIP_TOTAL) == 3.0
            && gauge(m::MEMBERSHIP_HEALTHY) == 3.0
            && all.iter().all(|e| active(e) == 1.0)
    })
    .await;

    // Scaled in to one pod: two endpoints leave, their connections drain.
    resolver.set([pods[0].addr]);
    eventually("one endpoint left", &all, || {
        gauge(m::MEMBERSHIP_TOTAL) == 1.0
            && gauge(m::MEMBERSHIP_HEALTHY) == 1.0
            && active(all[1]) == 0.0
            && active(all[2]) == 0.0
    })
    .await;
    for gone in &all[1..] {
        assert_eq!(counter(m::UPSTREAM_CX_DRAINED, gone), 1, "{gone}");
    }
    assert_eq!(active(all[0]), 1.0);

    // Scaled out again.
    resolver.set(pods.iter().map(|p| p.addr));
    eventually("three endpoints again", &all, || {
        gauge(m::MEMBERSHIP_TOTAL) == 3.0 && all.iter().all(|e| active(e) == 1.0)
    })
    .await;
    drop_client(client, &all).await;
    for endpoint in &all {
        assert_eq!(
            counter(m::UPSTREAM_CX_DESTROY, endpoint),
            counter(m::UPSTREAM_CX_TOTAL, endpoint),
            "{endpoint}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyper_connections_are_counted_by_the_age_layer_and_their_connect_failures_too() {
    let _turn = serial().await;
    let pods = start_pods(1).await;
    let endpoint = pods[0].addr.to_string();
    let ep = endpoint.as_str();
    let client = Client::builder()
        .endpoint(pods[0].uri())
        .max_connection_age(Duration::from_millis(200))
        .build_with::<Body, _>(HyperConnector::<_, ReplayBody<Body>>::http())
        .unwrap();
    eventually("two rotations of hyper's connections", &[ep], || {
        counter(m::UPSTREAM_CX_ROTATED, ep) >= 2 && active(ep) == 1.0
    })
    .await;
    assert_eq!(gauge(m::MEMBERSHIP_TOTAL), 1.0);
    drop_client(client, &[ep]).await;
    let total = counter(m::UPSTREAM_CX_TOTAL, ep);
    assert!(total >= 3, "{total}");
    assert!(counter(m::UPSTREAM_CX_MAX_DURATION_REACHED, ep) >= 2);
    assert_eq!(counter(m::UPSTREAM_CX_DRAINED, ep), total);
    assert_eq!(counter(m::UPSTREAM_CX_DESTROY, ep), total);

    let addr = closed_port().await;
    let endpoint = addr.to_string();
    let ep = endpoint.as_str();
    let client = Client::builder()
        .endpoint(format!("http://{addr}").parse().unwrap())
        .reconnect_backoff(Duration::from_millis(10), Duration::from_millis(20))
        .build_with::<Body, _>(HyperConnector::<_, ReplayBody<Body>>::http())
        .unwrap();
    eventually("three connect failures through hyper", &[ep], || {
        counter(m::UPSTREAM_CX_CONNECT_FAIL, ep) >= 3
    })
    .await;
    drop_client(client, &[ep]).await;
    assert_eq!(counter(m::UPSTREAM_CX_CONNECT_TIMEOUT, ep), 0);
    assert_eq!(counter(m::UPSTREAM_CX_TOTAL, ep), 0);
}

/// nginx with its defaults sends `GOAWAY(NO_ERROR)` after 1,000 requests on
/// a connection. The first `GOAWAY` teaches the client the cap: from then
/// on a successor connects a quarter before it and takes over, counted as
/// a rotation, so no caller waits for a connect. Once two connections in
/// a row served exactly 1,000, the cap is fixed: a connection stops at its
/// 1,000th request, and no request goes above it to be refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_request_cap_is_met_by_a_successor_connected_ahead() {
    let _turn = serial().await;
    let nginx = support::nginx::Nginx::start(1, None).await;
    let endpoint = nginx.addrs()[0].to_string();
    let ep = endpoint.as_str();
    let client = Client::builder()
        .endpoints(nginx.uris())
        .build::<Body>()
        .unwrap();
    let send = |requests: u64| {
        let client = client.clone();
        async move {
            let next = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
            let mut callers = tokio::task::JoinSet::new();
            for _ in 0..16 {
                let (client, next) = (client.clone(), next.clone());
                callers.spawn(async move {
                    while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < requests {
                        let request = http::Request::get("http://svc/")
                            .body(Body::default())
                            .unwrap();
                        let response = bounded(client.clone().oneshot(request)).await.unwrap();
                        assert_eq!(response.status(), 200);
                        ended(response).await;
                    }
                });
            }
            while let Some(caller) = callers.join_next().await {
                caller.unwrap();
            }
        }
    };
    // Two caps and half a third: the first GOAWAY teaches the cap, the
    // second confirms it (each refuses what was sent above it).
    send(2_500).await;
    let goaway = [(m::ENDPOINT, ep), (m::CODE, "NO_ERROR")];
    assert_eq!(counter_with(m::UPSTREAM_CX_CLOSE_NOTIFY, &goaway), 2);
    let refused = || counter_with(m::UPSTREAM_RQ_REFUSED, &[]);
    let refused_before = refused();
    // Three caps more: requests 2,501 to 5,500.
    send(3_000).await;
    assert_eq!(
        refused() - refused_before,
        0,
        "no request above the fixed cap"
    );
    drop_client(client, &[ep]).await;
    assert_eq!(
        counter(m::UPSTREAM_CX_ROTATED, ep),
        4,
        "every connection after the first handed over to its successor: {}",
        recorded().dump(&[ep])
    );
    // Five capped connections and the sixth, short of its successor's time.
    assert_eq!(
        counter(m::UPSTREAM_CX_TOTAL, ep),
        6,
        "{}",
        recorded().dump(&[ep])
    );
}
