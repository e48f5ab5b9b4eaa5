//! The virtual-IP scenario through a real L4 balancer: HAProxy in TCP mode,
//! `balance roundrobin`, started as a child process (`.ci/run` installs it).
//! A backend that joins behind it gets traffic from aged connections only.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use support::backend::{add_pod, start_pods, wait_until};
use support::haproxy::HaProxy;
use tower_max_connection_age::Client;

type Body = Full<Bytes>;

/// Bound on every wait; the waits end on events long before it.
const WAIT: Duration = Duration::from_secs(10);

/// Waits (bounded) until `check` holds, polling.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    tokio::time::timeout(WAIT, async {
        while !check() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aged_connections_reach_a_backend_enabled_behind_haproxy() {
    let mut pods = start_pods(3).await;
    // Pod 4's address is known up front (127.0.0.4, the pods' port): HAProxy
    // declares it as s4, disabled, before anything listens there.
    let standby = std::net::SocketAddr::new([127, 0, 0, 4].into(), pods[0].addr.port());
    let haproxy =
        HaProxy::start(&pods.iter().map(|p| p.addr).collect::<Vec<_>>(), &[standby]).await;
    let status = haproxy.server_status().await;
    assert_eq!(
        status,
        [
            ("s1", "no check"),
            ("s2", "no check"),
            ("s3", "no check"),
            ("s4", "MAINT")
        ]
        .map(|(s, st)| (s.to_owned(), st.to_owned())),
        "unexpected start state"
    );

    let vip = format!("http://{}", haproxy.addr());
    let client = |age: Option<Duration>| {
        let builder = Client::builder()
            .endpoint(vip.parse().unwrap())
            .connections_per_endpoint(4);
        match age {
            Some(age) => builder.max_connection_age(age),
            None => builder,
        }
        .build::<Body>()
        .unwrap()
    };
    let age = Duration::from_millis(300);
    let (aged, pinned) = (client(Some(age)), client(None));
    eventually("8 connections through HAProxy", || {
        aged.connection_count() == 4 && pinned.connection_count() == 4
    })
    .await;
    let pinned_opened = pinned.stats().opened;

    // Pod 4 starts, then joins HAProxy's rotation.
    pods.push(add_pod(&pods, 4).await);
    assert_eq!(pods[3].addr, standby);
    haproxy.enable_server("s4").await;
    let rotated_at_join = aged.stats().rotated;
    // One full age: every aged connection was replaced at least once since s4
    // came up (round-robin hands one of every four new connections to s4).
    eventually("every aged connection rotated once", || {
        aged.stats().rotated >= rotated_at_join + 4
    })
    .await;
    assert!(
        wait_until(&pods[3].record, WAIT, || pods[3].connections() > 0).await,
        "HAProxy carried no connection to the new backend"
    );

    let uri = format!("{vip}/");
    let second = Duration::from_secs(1);
    let (a, p) = tokio::join!(
        support::load::run(aged.clone(), &uri, 8, second, second),
        support::load::run(pinned.clone(), &uri, 8, second, second),
    );
    assert!(a.failed.is_empty(), "aged client failures: {:?}", a.failed);
    assert!(
        p.failed.is_empty(),
        "pinned client failures: {:?}",
        p.failed
    );
    assert!(
        a.ok > 0 && p.ok > 0,
        "no load: aged {} pinned {}",
        a.ok,
        p.ok
    );
    let new = pods[3].addr.to_string();
    assert!(
        a.per_backend.get(&new).copied().unwrap_or(0) > 0,
        "aged connections never reached the new backend: {:?}",
        a.per_backend
    );
    assert_eq!(
        p.per_backend.get(&new),
        None,
        "connections that never age must stay pinned: {:?}",
        p.per_backend
    );
    assert_eq!(pinned.stats().rotated, 0);
    assert_eq!(
        pinned.stats().opened,
        pinned_opened,
        "the un-aged client reconnected"
    );
    // Every request the new pod served came from the aged client.
    assert_eq!(pods[3].requests(), a.per_backend[&new]);
    drop(haproxy);
}
