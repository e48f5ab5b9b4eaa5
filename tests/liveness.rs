//! Dead, hung and black-holed pods: keepalive finds them, traffic moves
//! away, and they get traffic back when they recover. Real sockets, with a
//! fault-injecting proxy in front of each backend.

mod support;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use support::backend::Backend;
use support::fault::{Fault, FaultProxy};
use support::{bounded, connected};
use tokio::time::Instant;
use tower::ServiceExt;
use tower_max_connection_age::{Client, ErrorKind};

type Body = Full<Bytes>;

/// `n` pods: backends on 127.0.1.i behind fault proxies on 127.0.0.i, all
/// proxies on one port (the pods' addresses).
async fn pods_behind_proxies(n: u8) -> (Vec<Backend>, Vec<FaultProxy>) {
    let mut backends = Vec::new();
    let mut proxies: Vec<FaultProxy> = Vec::new();
    for i in 1..=n {
        let backend = Backend::start(Ipv4Addr::new(127, 0, 1, i), 0).await;
        let port = proxies.first().map_or(0, |p| p.addr().port());
        let proxy = FaultProxy::start(Ipv4Addr::new(127, 0, 0, i), port, backend.addr).await;
        backends.push(backend);
        proxies.push(proxy);
    }
    (backends, proxies)
}

/// What callers saw: per backend answers, errors by kind, and the longest
/// any call took.
#[derive(Default)]
struct Seen {
    per_backend: HashMap<String, usize>,
    errors: HashMap<String, usize>,
    slowest: Duration,
}

/// `callers` tasks calling for `run_for`.
async fn call_for(client: &Client<Body>, callers: usize, run_for: Duration) -> Seen {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let end = Instant::now() + run_for;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..callers {
        let (client, seen) = (client.clone(), seen.clone());
        tasks.spawn(async move {
            while Instant::now() < end {
                let started = Instant::now();
                let request = Request::get("http://svc.test/")
                    .body(Body::default())
                    .unwrap();
                let result = client.clone().oneshot(request).await;
                let backend = match result {
                    Ok(response) => {
                        let backend = response
                            .headers()
                            .get("x-backend")
                            .map(|v| v.to_str().unwrap().to_string());
                        response
                            .into_body()
                            .collect()
                            .await
                            .map(|_| backend)
                            .ok()
                            .flatten()
                    }
                    Err(e) => {
                        *seen
                            .lock()
                            .unwrap()
                            .errors
                            .entry(format!("{:?}", e.kind()))
                            .or_default() += 1;
                        None
                    }
                };
                let mut seen = seen.lock().unwrap();
                seen.slowest = seen.slowest.max(started.elapsed());
                if let Some(backend) = backend {
                    *seen.per_backend.entry(backend).or_default() += 1;
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    Arc::try_unwrap(seen).ok().unwrap().into_inner().unwrap()
}

fn keepalive_client(proxies: &[FaultProxy]) -> Client<Body> {
    Client::builder()
        .endpoints(proxies.iter().map(FaultProxy::uri))
        .keep_alive_interval(Duration::from_secs(1))
        .keep_alive_timeout(Duration::from_secs(1))
        .connect_timeout(Duration::from_secs(1))
        .reconnect_backoff(Duration::from_millis(100), Duration::from_millis(500))
        .build::<Body>()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_pod_costs_a_bounded_blip_and_gets_traffic_back_when_it_heals() {
    let (backends, proxies) = pods_behind_proxies(3).await;
    let client = keepalive_client(&proxies);
    connected(&client, 3).await;
    let holed = backends[1].addr.to_string();
    proxies[1].set(Fault::BlackHole);
    let seen = call_for(&client, 8, Duration::from_secs(5)).await;
    // interval + timeout + 1 s.
    assert!(
        seen.slowest <= Duration::from_secs(3),
        "a caller was blocked for {:?}",
        seen.slowest
    );
    // Only requests that were in flight on the dead connection failed, and
    // with the typed error; the healthy pods kept serving.
    for (kind, n) in &seen.errors {
        assert_eq!(kind, &format!("{:?}", ErrorKind::KeepAlive), "{n} × {kind}");
    }
    assert!(
        seen.errors.values().sum::<usize>() <= 8,
        "{:?}",
        seen.errors
    );
    for healthy in [&backends[0], &backends[2]] {
        assert!(
            seen.per_backend
                .get(&healthy.addr.to_string())
                .copied()
                .unwrap_or(0)
                > 100
        );
    }
    assert!(
        proxies[1].accepted() >= 2,
        "the dead pod's connection was not replaced"
    );
    // The hole ends: the pod gets traffic again within a reconnect.
    proxies[1].set(Fault::None);
    let before = backends[1].requests();
    let healed = call_for(&client, 8, Duration::from_secs(3)).await;
    assert!(healed.errors.is_empty(), "{:?}", healed.errors);
    assert!(
        backends[1].requests() > before && healed.per_backend.contains_key(&holed),
        "the healed pod got no traffic back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_one_black_holed_endpoint_callers_get_the_typed_error_not_a_hang() {
    let (_backends, proxies) = pods_behind_proxies(1).await;
    let client = keepalive_client(&proxies);
    connected(&client, 1).await;
    proxies[0].set(Fault::BlackHole);
    let started = Instant::now();
    let request = Request::get("http://svc.test/")
        .body(Body::default())
        .unwrap();
    let error = bounded(client.clone().oneshot(request)).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::KeepAlive, "{error:?}");
    assert!(
        started.elapsed() <= Duration::from_secs(3),
        "the error took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_pod_loses_its_traffic_and_gets_it_back_when_it_answers_again() {
    use tower_max_connection_age::LoadKind;
    let pods = support::backend::start_pods(2).await;
    let client = Client::builder()
        .endpoints(pods.iter().map(Backend::uri))
        // A short decay so the recovered pod's estimate comes down within
        // the test; the default (10 s) takes about a minute.
        .load(LoadKind::PeakEwma {
            decay: Duration::from_millis(500),
        })
        .build::<Body>()
        .unwrap();
    connected(&client, 2).await;
    // Callers give up after 300 ms, as with `tower::timeout`.
    let timed = tower::ServiceBuilder::new()
        .timeout(Duration::from_millis(300))
        .service(client.clone());
    let call_for = |run_for: Duration| {
        let timed = timed.clone();
        async move {
            let end = Instant::now() + run_for;
            let mut tasks = tokio::task::JoinSet::new();
            for _ in 0..4 {
                let timed = timed.clone();
                tasks.spawn(async move {
                    while Instant::now() < end {
                        let request = Request::get("http://svc.test/")
                            .body(Body::default())
                            .unwrap();
                        if let Ok(response) = timed.clone().oneshot(request).await {
                            let _ = response.into_body().collect().await;
                        }
                    }
                });
            }
            while tasks.join_next().await.is_some() {}
        }
    };
    pods[1].hang(true);
    // The first seconds: the hung pod is found out.
    call_for(Duration::from_secs(2)).await;
    let (hung_before, healthy_before) = (pods[1].requests(), pods[0].requests());
    call_for(Duration::from_secs(3)).await;
    let hung_share = (pods[1].requests() - hung_before) as f64
        / ((pods[1].requests() - hung_before) + (pods[0].requests() - healthy_before)) as f64;
    assert!(
        hung_share < 0.05,
        "the hung pod still drew {:.1}% of requests",
        hung_share * 100.0
    );
    // It answers again: it gets traffic back.
    pods[1].hang(false);
    let before = pods[1].requests();
    call_for(Duration::from_secs(4)).await;
    assert!(
        pods[1].requests() - before > 100,
        "the recovered pod got {} requests back",
        pods[1].requests() - before
    );
}

/// A pod policing pings as grpc-go does but wanting 350 ms between them,
/// and a client pinging it every 100 ms, idle (`keep_alive_while_idle`),
/// connected; `max_pings_without_data` if given.
async fn policed(max_pings_without_data: Option<u32>) -> (Vec<Backend>, Client<Body>) {
    use support::backend::Script;
    let pods = support::backend::start_pods(1).await;
    pods[0].script(std::iter::repeat_n(Script::PolicePings(350), 50));
    let mut builder = Client::builder()
        .endpoint(pods[0].uri())
        .keep_alive_interval(Duration::from_millis(100))
        .keep_alive_timeout(Duration::from_secs(1))
        .keep_alive_while_idle(true);
    if let Some(n) = max_pings_without_data {
        builder = builder.keep_alive_max_pings_without_data(n);
    }
    let client = builder.build::<Body>().unwrap();
    connected(&client, 1).await;
    (pods, client)
}

/// A client pinging every 100 ms, idle (`keep_alive_while_idle`), against
/// a server that polices pings as grpc-go does but wants 350 ms between
/// them: with the default allowance (two pings while the server sends
/// nothing, then one per 5 minutes) it never earns the third strike, so
/// the connection stays; then requests flow on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_policing_pings_keeps_the_connection_with_the_default_allowance() {
    let (pods, client) = policed(None).await;
    // Thirty intervals of silence.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(pods[0].connections(), 1, "the server sent GOAWAY");
    let seen = call_for(&client, 4, Duration::from_secs(1)).await;
    assert!(seen.errors.is_empty(), "failed: {:?}", seen.errors);
    assert_eq!(pods[0].connections(), 1);
}

/// With no allowance (`keep_alive_max_pings_without_data(0)`, pings at
/// every interval of silence), the same server answers with
/// `GOAWAY(ENHANCE_YOUR_CALM)`: the interval doubles until the server is
/// content (100 ms, then 200 ms, earn a GOAWAY each; 400 ms is enough),
/// and requests afterwards cost nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_policing_pings_makes_the_interval_back_off_without_the_allowance() {
    let (pods, client) = policed(Some(0)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let connections = pods[0].connections();
    assert!(
        (2..=4).contains(&connections),
        "{connections} connections: the pings did not back off"
    );
    let seen = call_for(&client, 4, Duration::from_secs(2)).await;
    assert!(seen.errors.is_empty(), "failed: {:?}", seen.errors);
    assert_eq!(
        pods[0].connections(),
        connections,
        "the server still sent GOAWAY after the back-off"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_that_kills_every_connection_is_ejected_and_readmitted() {
    use support::backend::Script;
    use tower_max_connection_age::discover::OutlierDetection;
    let pods = support::backend::start_pods(3).await;
    // Every connection to pod 2 dies with the first request on it.
    pods[1].script(std::iter::repeat_n(Script::DieAfterFirstChunk, 200));
    let client = Client::builder()
        .endpoints(pods.iter().map(Backend::uri))
        .reconnect_backoff(Duration::from_millis(10), Duration::from_millis(20))
        .outlier_detection(
            OutlierDetection::new()
                .consecutive_failures(3)
                .base_ejection_time(Duration::from_millis(1500))
                .max_ejection_percent(50),
        )
        .build::<Body>()
        .unwrap();
    connected(&client, 3).await;
    // Until ejected, each of pod 2's connections costs the requests on it.
    let first = call_for(&client, 8, Duration::from_millis(1000)).await;
    let reached = pods[1].requests();
    assert!(reached >= 1, "pod 2 got no request before it was ejected");
    assert_eq!(client.discover_status().ejected(), vec![pods[1].uri()]);
    let failed: usize = first.errors.values().sum();
    // Ejected after 3 failures in a row, as the client saw them. (The pod
    // may have seen fewer: a request in flight on a connection the pod
    // kills fails without reaching its handler.)
    assert!(
        failed >= 3,
        "ejected after {failed} failures: {:?}",
        first.errors
    );
    // The requests in flight then, not one per reconnect (every 10-20 ms)
    // for the whole second.
    assert!(failed <= 16, "{failed} failed: {:?}", first.errors);
    // Its time is up: readmitted, it is tried (and ejected) again.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let _ = call_for(&client, 8, Duration::from_millis(700)).await;
    assert!(
        pods[1].requests() > reached,
        "the ejected pod was never readmitted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_pod_failing_no_more_than_max_ejection_percent_are_ejected() {
    use support::backend::Script;
    use tower_max_connection_age::discover::OutlierDetection;
    let pods = support::backend::start_pods(3).await;
    for pod in &pods {
        pod.script(std::iter::repeat_n(Script::DieAfterFirstChunk, 200));
    }
    let client = Client::builder()
        .endpoints(pods.iter().map(Backend::uri))
        .reconnect_backoff(Duration::from_millis(10), Duration::from_millis(20))
        .outlier_detection(
            OutlierDetection::new()
                .consecutive_failures(2)
                .base_ejection_time(Duration::from_secs(30))
                // A third of three: one.
                .max_ejection_percent(34),
        )
        .build::<Body>()
        .unwrap();
    connected(&client, 3).await;
    let status = client.discover_status();
    let watch = tokio::spawn({
        let status = status.clone();
        async move {
            let mut most = 0;
            let end = Instant::now() + Duration::from_millis(1200);
            while Instant::now() < end {
                most = most.max(status.ejected().len());
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            most
        }
    });
    let seen = call_for(&client, 8, Duration::from_secs(1)).await;
    assert!(!seen.errors.is_empty(), "the pods did not fail");
    let most = watch.await.unwrap();
    assert_eq!(most, 1, "{most} of 3 endpoints were out at once");
    assert_eq!(status.ejected().len(), 1);
}
