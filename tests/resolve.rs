//! `resolve::HickoryResolver` against the in-process DNS server of
//! `tests/support/dns.rs`: TTLs, changing records, empty answers, outages.
#![cfg(feature = "hickory")]

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use support::dns::DnsServer;
use tokio::time::timeout;
use tower_max_connection_age::resolve::hickory_resolver::config::{
    NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use tower_max_connection_age::resolve::{HickoryResolver, Name, Resolution, Resolve};
use tower_max_connection_age::{Error, ErrorKind};

/// Bound on every wait; lookups end on an answer or their own timeout first.
const WAIT: Duration = Duration::from_secs(20);

const SVC: &str = "svc.test.local";

fn name(s: &str) -> Name {
    s.parse().unwrap()
}

fn addr(ip: Ipv4Addr) -> SocketAddr {
    SocketAddr::new(ip.into(), 0)
}

async fn resolve(resolver: &HickoryResolver, host: &str) -> Result<Resolution, Error> {
    timeout(WAIT, resolver.resolve(name(host)))
        .await
        .expect("the lookup neither answered nor timed out")
}

#[tokio::test]
async fn answers_carry_the_addresses_and_the_smallest_ttl() {
    let dns = DnsServer::start().await;
    let (one, two) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
    let resolver = HickoryResolver::with_nameserver(dns.addr()).unwrap();

    dns.set_a(SVC, &[one, two], 5);
    let resolution = resolve(&resolver, SVC).await.unwrap();
    assert_eq!(resolution.addrs(), &[addr(one), addr(two)]);
    assert_eq!(resolution.ttl(), Some(Duration::from_secs(5)));

    dns.set_a_with_ttls(SVC, &[(one, 30), (two, 3)]);
    let resolution = resolve(&resolver, SVC).await.unwrap();
    assert_eq!(resolution.addrs(), &[addr(one), addr(two)]);
    assert_eq!(resolution.ttl(), Some(Duration::from_secs(3)));
}

#[tokio::test]
async fn with_nameserver_does_not_cache_so_changes_are_seen_at_once() {
    let dns = DnsServer::start().await;
    let resolver = HickoryResolver::with_nameserver(dns.addr()).unwrap();
    let (one, two) = (Ipv4Addr::new(10, 0, 1, 1), Ipv4Addr::new(10, 0, 1, 2));

    dns.set_a(SVC, &[one], 300);
    assert_eq!(resolve(&resolver, SVC).await.unwrap().addrs(), &[addr(one)]);
    let after_first = dns.query_count();
    assert!(after_first >= 1);

    dns.set_a(SVC, &[one, two], 300);
    assert_eq!(
        resolve(&resolver, SVC).await.unwrap().addrs(),
        &[addr(one), addr(two)],
        "a 300 s TTL must not keep the old answer: caching is off"
    );
    assert!(
        dns.query_count() > after_first,
        "the second lookup must reach the server"
    );

    // A clone shares the resolver and sees the same records.
    dns.set_a(SVC, &[two], 300);
    let clone = resolver.clone();
    assert_eq!(resolve(&clone, SVC).await.unwrap().addrs(), &[addr(two)]);
}

#[tokio::test]
async fn with_caching_on_an_answer_is_kept_within_its_ttl() {
    let dns = DnsServer::start().await;
    let resolver = HickoryResolver::with_nameserver(dns.addr())
        .unwrap()
        .caching(true);
    let (one, two) = (Ipv4Addr::new(10, 0, 2, 1), Ipv4Addr::new(10, 0, 2, 2));
    // hickory asks for AAAA too: let the empty AAAA answer be cached as well.
    dns.set_negative_ttl(Some(300));

    dns.set_a(SVC, &[one], 300);
    let first = resolve(&resolver, SVC).await.unwrap();
    let queries = dns.query_count();

    dns.set_a(SVC, &[two], 300);
    let second = resolve(&resolver, SVC).await.unwrap();
    assert_eq!(second.addrs(), first.addrs(), "served from the cache");
    assert_eq!(dns.query_count(), queries, "no query reached the server");
    let ttl = second.ttl().unwrap();
    assert!(
        ttl <= Duration::from_secs(300) && ttl >= Duration::from_secs(200),
        "{ttl:?}"
    );

    // Turning caching off on a clone asks the server again.
    let uncached = resolver.clone().caching(false);
    assert_eq!(resolve(&uncached, SVC).await.unwrap().addrs(), &[addr(two)]);
}

#[tokio::test]
async fn an_empty_answer_is_an_empty_resolution() {
    let dns = DnsServer::start().await;
    let resolver = HickoryResolver::with_nameserver(dns.addr()).unwrap();
    dns.set_a(SVC, &[Ipv4Addr::new(10, 0, 3, 1)], 5);
    assert!(!resolve(&resolver, SVC).await.unwrap().is_empty());

    dns.set_empty(SVC);
    let resolution = resolve(&resolver, SVC).await.unwrap();
    assert!(resolution.is_empty(), "{resolution:?}");
    assert_eq!(
        resolution.ttl(),
        None,
        "the fixture sends no SOA, so no negative TTL"
    );
}

#[tokio::test]
async fn nxdomain_is_an_empty_resolution() {
    let dns = DnsServer::start().await;
    let resolver = HickoryResolver::with_nameserver(dns.addr()).unwrap();
    let resolution = resolve(&resolver, "missing.test.local").await.unwrap();
    assert!(resolution.is_empty(), "{resolution:?}");
    assert!(dns.query_count() >= 1, "the answer came from the server");
}

#[tokio::test]
async fn an_unanswered_lookup_fails_with_a_resolve_error_after_lookup_timeout() {
    let dns = DnsServer::start().await;
    dns.set_a(SVC, &[Ipv4Addr::new(10, 0, 4, 1)], 5);
    let resolver = HickoryResolver::with_nameserver(dns.addr())
        .unwrap()
        .lookup_timeout(Duration::from_millis(300));

    dns.pause();
    let err = resolve(&resolver, SVC).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Resolve);
    assert!(err.to_string().contains(SVC), "{err}");
    assert!(support::cause(&err).is_some());
    assert!(
        dns.dropped_count() >= 1,
        "the query reached the server and was dropped"
    );

    dns.resume();
    let resolution = resolve(&resolver, SVC).await.unwrap();
    assert_eq!(resolution.addrs(), &[addr(Ipv4Addr::new(10, 0, 4, 1))]);
}

#[tokio::test]
async fn hickorys_own_timeout_is_a_resolve_error_with_its_source() {
    let dns = DnsServer::start().await;
    dns.set_a(SVC, &[Ipv4Addr::new(10, 0, 5, 1)], 5);
    let mut server = NameServerConfig::udp(dns.addr().ip());
    server.connections[0].port = dns.addr().port();
    let mut opts = ResolverOpts::default();
    opts.timeout = Duration::from_millis(200);
    opts.attempts = 1;
    opts.use_hosts_file = ResolveHosts::Never;
    let resolver =
        HickoryResolver::with_config(ResolverConfig::from_name_servers(vec![server]), opts)
            .unwrap();

    dns.pause();
    let err = resolve(&resolver, SVC).await.unwrap_err();
    assert!(err.is_resolve(), "{err:?}");
    let source = support::cause(&err).expect("hickory's error is the source");
    assert!(
        source.to_string().contains("timed out"),
        "expected hickory's timeout, got {source}"
    );
}

#[tokio::test]
async fn a_stopped_server_is_a_resolve_error() {
    let mut dns = DnsServer::start().await;
    dns.set_a(SVC, &[Ipv4Addr::new(10, 0, 6, 1)], 5);
    let resolver = HickoryResolver::with_nameserver(dns.addr())
        .unwrap()
        .lookup_timeout(Duration::from_secs(2));
    assert!(!resolve(&resolver, SVC).await.unwrap().is_empty());

    dns.stop().await;
    let err = resolve(&resolver, SVC).await.unwrap_err();
    assert!(err.is_resolve(), "{err:?}");
}

#[tokio::test]
async fn fits_hyper_utils_http_connector() {
    use hyper_util::client::legacy::connect::HttpConnector;
    use tower::ServiceExt;

    let dns = DnsServer::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    dns.set_a(SVC, &[Ipv4Addr::LOCALHOST], 5);

    let resolver = HickoryResolver::with_nameserver(dns.addr()).unwrap();
    let connector = HttpConnector::new_with_resolver(resolver);
    let uri: http::Uri = format!("http://{SVC}:{port}").parse().unwrap();
    let (connected, accepted) = tokio::join!(
        timeout(WAIT, connector.oneshot(uri)),
        timeout(WAIT, listener.accept())
    );
    let stream = connected.unwrap().expect("connect through the resolver");
    let (_, peer) = accepted.unwrap().unwrap();
    assert_eq!(stream.inner().local_addr().unwrap(), peer);
    assert!(dns.query_count() >= 1);
}
