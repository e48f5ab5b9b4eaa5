//! Endpoint discovery against a real DNS server on loopback: headless
//! services scaling out and in, DNS outages, and virtual IPs behind an L4 proxy.
#![cfg(feature = "hickory")]

mod support;

use std::net::Ipv4Addr;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use support::backend::{Backend, start_pods};
use support::dns::DnsServer;
use support::proxy::L4Proxy;
use tower::ServiceExt;
use tower_max_connection_age::Client;
use tower_max_connection_age::resolve::HickoryResolver;

type Body = Full<Bytes>;
const SVC: &str = "svc.test.local.";

fn ip(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, i)
}

fn ips(range: std::ops::RangeInclusive<u8>) -> Vec<Ipv4Addr> {
    range.map(ip).collect()
}

/// A client of `http://svc.test.local:port` resolved through `dns`.
fn headless_client(dns: &DnsServer, port: u16) -> tower_max_connection_age::client::ClientBuilder {
    Client::builder()
        .uri(format!("http://svc.test.local:{port}").parse().unwrap())
        .resolver(HickoryResolver::with_nameserver(dns.addr()).unwrap())
        .resolve_interval(Duration::from_millis(300))
        .min_resolve_interval(Duration::from_millis(50))
        .resolve_timeout(Duration::from_millis(300))
}

/// Waits (bounded) until `check` holds, polling the client's state.
async fn eventually(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    tokio::time::timeout(limit, async {
        while !check() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

fn load(
    client: &Client<Body>,
    port: u16,
    seconds: f64,
) -> tokio::task::JoinHandle<support::load::LoadReport> {
    let client = client.clone();
    tokio::spawn(async move {
        let uri = format!("http://svc.test.local:{port}/");
        support::load::run(
            client,
            &uri,
            16,
            Duration::from_secs_f64(seconds),
            Duration::from_millis(250),
        )
        .await
    })
}

/// `n` pods, a DNS server listing `listed` of them, and a client of the
/// service that has connected to each listed pod.
async fn headless(n: u8, listed: &[Ipv4Addr]) -> (Vec<Backend>, u16, DnsServer, Client<Body>) {
    let pods = start_pods(n).await;
    let port = pods[0].addr.port();
    let dns = DnsServer::start().await;
    dns.set_a(SVC, listed, 1);
    let client = headless_client(&dns, port).build::<Body>().unwrap();
    eventually(
        "a connection to every listed pod",
        Duration::from_secs(5),
        || client.connection_count() == listed.len(),
    )
    .await;
    (pods, port, dns, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headless_scale_out_new_pods_get_traffic_within_a_resolve_interval() {
    let (pods, port, dns, client) = headless(4, &ips(1..=2)).await;

    let running = load(&client, port, 2.0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    dns.set_a(SVC, &ips(1..=4), 1);
    // One resolve interval (+10% jitter) plus a connect, with room for a slow machine.
    eventually("pods 3 and 4 to serve", Duration::from_millis(1500), || {
        pods[2].requests() > 0 && pods[3].requests() > 0
    })
    .await;
    let report = running.await.unwrap();
    assert!(report.failed.is_empty(), "failed: {:?}", report.failed);
    assert_eq!(client.discover_status().endpoints().len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headless_scale_in_removed_pods_drain_and_get_no_new_requests() {
    let (pods, port, dns, client) = headless(4, &ips(1..=4)).await;

    let running = load(&client, port, 2.5);
    // Long requests in flight while the pods leave must complete.
    let long: Vec<_> = (0..8)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                let request = Request::get(format!("http://svc.test.local:{port}/sleep/800"))
                    .header("x-request-id", format!("long-{i}"))
                    .body(Body::default())
                    .unwrap();
                client.oneshot(request).await.map(|r| r.status())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    dns.set_a(SVC, &ips(1..=2), 1);
    eventually("the answer to be applied", Duration::from_secs(2), || {
        client.discover_status().endpoints().len() == 2 && client.connection_count() == 2
    })
    .await;
    // Requests created from now on were picked after the answer was applied.
    let cut = support::load::next_id();
    let report = running.await.unwrap();
    for request in long {
        assert!(request.await.unwrap().unwrap().is_success());
    }
    assert!(report.failed.is_empty(), "failed: {:?}", report.failed);
    assert!(
        support::load::next_id() > cut + 100,
        "the load went on after the change"
    );
    for pod in &pods[2..] {
        let late: Vec<u64> = pod
            .executed()
            .keys()
            .filter_map(|id| id.parse::<u64>().ok())
            .filter(|id| *id >= cut)
            .collect();
        assert!(
            late.is_empty(),
            "{} got requests made after it left: {late:?}",
            pod.addr
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_request_on_a_pod_that_left_dns_completes() {
    let (pods, _, dns, client) = headless(3, &[ip(3)]).await;
    let long = tokio::spawn({
        let client = client.clone();
        async move {
            let request = Request::get("/sleep/1000").body(Body::default()).unwrap();
            let response = support::bounded(client.oneshot(request)).await.unwrap();
            response.into_body().collect().await.unwrap().to_bytes()
        }
    });
    assert!(
        support::backend::wait_until(&pods[2].record, Duration::from_secs(2), || pods[2]
            .requests()
            == 1)
        .await
    );
    dns.set_a(SVC, &ips(1..=2), 1);
    eventually("pod 3 to leave", Duration::from_secs(2), || {
        client
            .endpoints()
            .iter()
            .all(|e| e.host() != Some("127.0.0.3"))
    })
    .await;
    for _ in 0..10 {
        let request = Request::get("/").body(Body::default()).unwrap();
        support::bounded(client.clone().oneshot(request))
            .await
            .unwrap();
    }
    let body = support::bounded(long).await.unwrap();
    assert!(body.starts_with(pods[2].addr.to_string().as_bytes()));
    assert_eq!(
        pods[2].requests(),
        1,
        "no new request went to the pod that left"
    );
    assert_eq!(pods[0].requests() + pods[1].requests(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_outage_and_empty_answers_keep_the_last_known_pods() {
    let (mut pods, port, dns, client) = headless(2, &ips(1..=2)).await;

    dns.pause();
    let running = load(&client, port, 1.5);
    eventually("a failed resolution", Duration::from_secs(3), || {
        client.discover_status().last_resolve_error().is_some()
    })
    .await;
    assert_eq!(
        client.discover_status().endpoints().len(),
        2,
        "endpoints kept during the outage"
    );
    let report = running.await.unwrap();
    assert!(
        report.failed.is_empty(),
        "failed during the outage: {:?}",
        report.failed
    );
    assert!(pods[0].requests() > 0 && pods[1].requests() > 0);

    // An empty answer is treated the same.
    dns.resume();
    dns.set_empty(SVC);
    let queries = dns.query_count();
    dns.wait_for_queries(queries + 2).await;
    let running = load(&client, port, 0.5);
    assert!(running.await.unwrap().failed.is_empty());
    assert_eq!(
        client.discover_status().endpoints().len(),
        2,
        "endpoints kept on an empty answer"
    );

    // Recovery: the answer comes back with a new pod.
    pods.push(support::backend::add_pod(&pods, 3).await);
    dns.set_a(SVC, &ips(1..=3), 1);
    eventually("pod 3 to connect", Duration::from_secs(3), || {
        client.connection_count() == 3
    })
    .await;
    assert_eq!(client.discover_status().last_resolve_error(), None);
    let running = load(&client, port, 0.5);
    assert!(running.await.unwrap().failed.is_empty());
    assert!(pods[2].requests() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_lookup_failing_gives_a_typed_resolve_error_after_ready_timeout() {
    let dns = DnsServer::start().await;
    dns.pause();
    let client = headless_client(&dns, 8080)
        .ready_timeout(Duration::from_millis(800))
        .build::<Body>()
        .unwrap();
    let request = Request::get("/").body(Body::default()).unwrap();
    let err = tokio::time::timeout(Duration::from_secs(5), client.oneshot(request))
        .await
        .expect("must not hang")
        .unwrap_err();
    assert!(err.is_resolve(), "{err:?}");
    assert!(err.to_string().contains("svc.test.local"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authority_is_the_service_name_not_the_pod_ip() {
    let (_pods, port, _dns, client) = headless(2, &ips(1..=2)).await;
    for uri in ["/".to_owned(), format!("http://svc.test.local:{port}/x")] {
        for _ in 0..10 {
            let request = Request::get(&uri).body(Body::default()).unwrap();
            let body = support::bounded(client.clone().oneshot(request))
                .await
                .unwrap()
                .into_body()
                .collect()
                .await
                .unwrap()
                .to_bytes();
            let body = String::from_utf8(body.to_vec()).unwrap();
            assert!(body.ends_with(&format!(" svc.test.local:{port}")), "{body}");
        }
    }
}

/// VIP mode: DNS gives one address, an L4 proxy behind it spreads
/// connections. Only aging connections reach a backend added later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vip_mode_aged_connections_reach_a_backend_added_behind_the_proxy() {
    let mut pods = start_pods(3).await;
    let proxy = L4Proxy::start(pods.iter().map(|p| p.addr).collect()).await;
    let dns = DnsServer::start().await;
    let std::net::IpAddr::V4(proxy_ip) = proxy.addr().ip() else {
        panic!("the proxy binds IPv4");
    };
    dns.set_a(SVC, &[proxy_ip], 30);
    let port = proxy.addr().port();
    let vip = |age: Option<Duration>| {
        let builder = headless_client(&dns, port).connections_per_endpoint(4);
        match age {
            Some(age) => builder.max_connection_age(age),
            None => builder,
        }
        .build::<Body>()
        .unwrap()
    };
    let (aged, pinned) = (vip(Some(Duration::from_millis(300))), vip(None));
    eventually("8 connections", Duration::from_secs(5), || {
        aged.connection_count() == 4 && pinned.connection_count() == 4
    })
    .await;

    pods.push(support::backend::add_pod(&pods, 4).await);
    proxy.add_backend(pods[3].addr);
    let new = pods[3].addr.to_string();
    // Past one age (330 ms with jitter), then measure.
    let uri = format!("http://svc.test.local:{port}/");
    let warmup = Duration::from_millis(600);
    let (a, p) = tokio::join!(
        support::load::run(
            aged.clone(),
            &uri,
            8,
            warmup + Duration::from_secs(1),
            warmup
        ),
        support::load::run(
            pinned.clone(),
            &uri,
            8,
            warmup + Duration::from_secs(1),
            warmup
        ),
    );
    assert!(a.failed.is_empty() && p.failed.is_empty());
    let after = |r: &support::load::LoadReport| {
        r.buckets
            .get(1)
            .and_then(|b| b.get(&new))
            .copied()
            .unwrap_or(0)
    };
    assert!(
        after(&a) > 0,
        "aged connections never reached the new backend: {:?}",
        a.buckets
    );
    assert_eq!(
        after(&p),
        0,
        "connections that never age must stay pinned: {:?} (client {:?})",
        p.buckets,
        pinned
    );
    assert_eq!(p.per_backend.get(&new), None);
    assert_eq!(
        pinned.stats().opened,
        4,
        "the un-aged client reconnected: {:?}",
        pinned.stats()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_start_ramps_a_new_pods_share_over_its_window() {
    let pods = start_pods(4).await;
    let port = pods[0].addr.port();
    let dns = DnsServer::start().await;
    dns.set_a(SVC, &ips(1..=3), 1);
    let client = headless_client(&dns, port)
        .slow_start_window(Duration::from_secs(2))
        .build::<Body>()
        .unwrap();
    eventually("the three listed pods", Duration::from_secs(5), || {
        client.connection_count() == 3
    })
    .await;
    let running = load(&client, port, 4.5);
    tokio::time::sleep(Duration::from_millis(300)).await;
    dns.set_a(SVC, &ips(1..=4), 1);
    let report = running.await.unwrap();
    assert!(report.failed.is_empty(), "failed: {:?}", report.failed);
    let new = pods[3].addr.to_string();
    let share = |buckets: &[std::collections::HashMap<String, usize>]| {
        let total: usize = buckets.iter().flat_map(|b| b.values()).sum();
        let new: usize = buckets.iter().filter_map(|b| b.get(&new)).sum();
        new as f64 / total.max(1) as f64
    };
    // Buckets of 250 ms; the first in which the new pod answered.
    let joined = report
        .buckets
        .iter()
        .position(|b| b.contains_key(&new))
        .expect("the new pod got traffic");
    let early = share(&report.buckets[joined..(joined + 2).min(report.buckets.len())]);
    // Without slow start a new pod takes nearly a full share at once (0.21
    // of requests in its first half second in one run here, where a fair
    // share is 0.25). With a 2 s window its weight is at most 0.25 in that
    // half second, so it takes well under that.
    assert!(early < 0.12, "the new pod took {early:.2} at first");
    let late_from = (joined + 10).min(report.buckets.len() - 1);
    let late = share(&report.buckets[late_from..]);
    assert!(
        late > 0.15,
        "after its window the new pod took only {late:.2} (a fair share is 0.25)"
    );
}
