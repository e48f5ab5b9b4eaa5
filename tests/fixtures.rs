//! The shared fixtures in `tests/support` work: the DNS server answers and
//! changes its answers, drops queries while paused; the L4 proxy spreads
//! connections round-robin over its backends; nghttpd serves h2c and h2load's
//! summary is read.

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use hickory_server::proto::op::{Message, Query, ResponseCode};
use hickory_server::proto::rr::{Name, RData, RecordType};
use hickory_server::proto::serialize::binary::{BinDecodable, BinEncodable};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::time::timeout;

use support::dns::DnsServer;
use support::proxy::L4Proxy;

/// Bound on every wait; the waits end on events long before it.
const WAIT: Duration = Duration::from_secs(10);

const SVC: &str = "svc.test.local.";

fn a_query(name: &str, id: u16) -> Vec<u8> {
    let mut message = Message::query();
    message.metadata.id = id;
    message.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    message.to_bytes().unwrap()
}

/// The response code and the (address, TTL) of each A record of a response.
fn parse(bytes: &[u8], id: u16) -> (ResponseCode, Vec<(Ipv4Addr, u32)>) {
    let response = Message::from_bytes(bytes).unwrap();
    assert_eq!(response.metadata.id, id, "answer to another query");
    let addrs = response
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some((a.0, r.ttl)),
            _ => None,
        })
        .collect();
    (response.metadata.response_code, addrs)
}

/// One A query over UDP from a fresh socket.
async fn udp_query(
    server: SocketAddr,
    name: &str,
    id: u16,
) -> (ResponseCode, Vec<(Ipv4Addr, u32)>) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(&a_query(name, id), server).await.unwrap();
    let mut buf = vec![0; 4096];
    let (len, _) = timeout(WAIT, socket.recv_from(&mut buf))
        .await
        .expect("no DNS answer")
        .unwrap();
    parse(&buf[..len], id)
}

#[tokio::test]
async fn dns_answers_follow_set_a_set_empty_and_remove() {
    let dns = DnsServer::start().await;
    let one = Ipv4Addr::new(10, 1, 0, 1);
    let two = Ipv4Addr::new(10, 1, 0, 2);

    assert_eq!(
        udp_query(dns.addr(), SVC, 1).await,
        (ResponseCode::NXDomain, vec![])
    );

    dns.set_a(SVC, &[one], 30);
    assert_eq!(
        udp_query(dns.addr(), SVC, 2).await,
        (ResponseCode::NoError, vec![(one, 30)])
    );

    dns.set_a("SVC.test.local", &[one, two], 5);
    assert_eq!(
        udp_query(dns.addr(), SVC, 3).await,
        (ResponseCode::NoError, vec![(one, 5), (two, 5)]),
        "set_a replaces the records; the name is case-insensitive, the final dot optional"
    );

    dns.set_empty(SVC);
    assert_eq!(
        udp_query(dns.addr(), SVC, 4).await,
        (ResponseCode::NoError, vec![])
    );

    dns.remove(SVC);
    assert_eq!(
        udp_query(dns.addr(), SVC, 5).await,
        (ResponseCode::NXDomain, vec![])
    );

    assert_eq!(dns.query_count(), 5);
    assert_eq!(dns.dropped_count(), 0);
}

#[tokio::test]
async fn dns_answers_over_tcp_on_the_same_port() {
    let dns = DnsServer::start().await;
    let ip = Ipv4Addr::new(10, 2, 0, 1);
    dns.set_a(SVC, &[ip], 7);

    let mut stream = TcpStream::connect(dns.addr()).await.unwrap();
    let query = a_query(SVC, 9);
    stream.write_u16(query.len() as u16).await.unwrap();
    stream.write_all(&query).await.unwrap();
    let len = timeout(WAIT, stream.read_u16())
        .await
        .expect("no DNS answer")
        .unwrap();
    let mut buf = vec![0; usize::from(len)];
    stream.read_exact(&mut buf).await.unwrap();
    assert_eq!(parse(&buf, 9), (ResponseCode::NoError, vec![(ip, 7)]));
    assert_eq!(dns.query_count(), 1);
}

#[tokio::test]
async fn dns_pause_drops_queries_until_resume() {
    let dns = DnsServer::start().await;
    let ip = Ipv4Addr::new(10, 3, 0, 1);
    dns.set_a(SVC, &[ip], 30);

    dns.pause();
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(&a_query(SVC, 1), dns.addr()).await.unwrap();
    timeout(WAIT, dns.wait_for_dropped(1))
        .await
        .expect("query never reached the server");
    // The handler returned without sending anything: nothing is queued.
    let mut buf = vec![0; 4096];
    let nothing = socket.try_recv_from(&mut buf).unwrap_err();
    assert_eq!(nothing.kind(), std::io::ErrorKind::WouldBlock);

    dns.resume();
    socket.send_to(&a_query(SVC, 2), dns.addr()).await.unwrap();
    let (len, _) = timeout(WAIT, socket.recv_from(&mut buf))
        .await
        .expect("no answer after resume")
        .unwrap();
    // The first answer to arrive is the one to the second query.
    assert_eq!(
        parse(&buf[..len], 2),
        (ResponseCode::NoError, vec![(ip, 30)])
    );
    assert_eq!(dns.query_count(), 2);
    assert_eq!(dns.dropped_count(), 1);
}

#[tokio::test]
async fn dns_stop_closes_the_port() {
    let mut dns = DnsServer::start().await;
    dns.set_a(SVC, &[Ipv4Addr::new(10, 4, 0, 1)], 30);
    assert_eq!(udp_query(dns.addr(), SVC, 1).await.0, ResponseCode::NoError);

    dns.stop().await;
    let refused = TcpStream::connect(dns.addr()).await.unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    assert_eq!(dns.query_count(), 1);
}

#[cfg(feature = "hickory")]
#[tokio::test]
async fn dns_changes_are_seen_by_the_hickory_resolver() {
    use tower_max_connection_age::resolve::{HickoryResolver, Resolve};

    let dns = DnsServer::start().await;
    let one = Ipv4Addr::new(10, 5, 0, 1);
    let two = Ipv4Addr::new(10, 5, 0, 2);
    dns.set_a(SVC, &[one], 30);
    let resolver = HickoryResolver::with_nameserver(dns.addr()).unwrap();

    let first = timeout(WAIT, resolver.resolve(SVC.parse().unwrap()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.addrs(), &[SocketAddr::new(one.into(), 0)]);
    dns.set_a(SVC, &[two], 30);
    let second = timeout(WAIT, resolver.resolve(SVC.parse().unwrap()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.addrs(), &[SocketAddr::new(two.into(), 0)]);
}

/// An echo server; it reports each accepted connection on `accepted`.
async fn echo_server(listener: TcpListener, accepted: mpsc::UnboundedSender<SocketAddr>) {
    let me = listener.local_addr().unwrap();
    loop {
        let (mut stream, _) = listener.accept().await.unwrap();
        let _ = accepted.send(me);
        tokio::spawn(async move {
            let (mut read, mut write) = stream.split();
            let _ = tokio::io::copy(&mut read, &mut write).await;
        });
    }
}

/// Two listeners with one port, on 127.0.0.1 and 127.0.0.2.
async fn two_backends() -> (TcpListener, TcpListener) {
    for _ in 0..32 {
        let a = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = a.local_addr().unwrap().port();
        if let Ok(b) = TcpListener::bind(("127.0.0.2", port)).await {
            return (a, b);
        }
    }
    panic!("no port free on both 127.0.0.1 and 127.0.0.2");
}

/// Connects through the proxy and checks that bytes come back.
async fn echo_through(proxy: SocketAddr, payload: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    stream.write_all(payload).await.unwrap();
    let mut back = vec![0; payload.len()];
    timeout(WAIT, stream.read_exact(&mut back))
        .await
        .expect("no echo")
        .unwrap();
    assert_eq!(back, payload);
    stream
}

async fn next_accept(accepted: &mut mpsc::UnboundedReceiver<SocketAddr>) -> SocketAddr {
    timeout(WAIT, accepted.recv())
        .await
        .expect("no backend accepted")
        .unwrap()
}

#[tokio::test]
async fn proxy_round_robins_connections_across_backends() {
    let (a, b) = two_backends().await;
    let (addr_a, addr_b) = (a.local_addr().unwrap(), b.local_addr().unwrap());
    assert_eq!(addr_a.port(), addr_b.port());
    let (tx, mut accepted) = mpsc::unbounded_channel();
    tokio::spawn(echo_server(a, tx.clone()));
    tokio::spawn(echo_server(b, tx));

    let proxy = L4Proxy::start(vec![addr_a, addr_b]).await;
    let mut streams = Vec::new();
    let mut order = Vec::new();
    for i in 0..4u8 {
        streams.push(echo_through(proxy.addr(), &[i; 16]).await);
        order.push(next_accept(&mut accepted).await);
    }
    assert_eq!(order, vec![addr_a, addr_b, addr_a, addr_b]);
    let per_backend = proxy.connections_per_backend();
    assert_eq!(per_backend.get(&addr_a), Some(&2));
    assert_eq!(per_backend.get(&addr_b), Some(&2));
    assert_eq!(proxy.accepted_count(), 4);
    assert_eq!(proxy.failed_count(), 0);
}

#[tokio::test]
async fn proxy_backends_change_for_new_connections_only() {
    let (a, b) = two_backends().await;
    let (addr_a, addr_b) = (a.local_addr().unwrap(), b.local_addr().unwrap());
    let (tx, mut accepted) = mpsc::unbounded_channel();
    tokio::spawn(echo_server(a, tx.clone()));
    tokio::spawn(echo_server(b, tx));

    let proxy = L4Proxy::start(vec![addr_a]).await;
    let mut to_a = echo_through(proxy.addr(), b"first").await;
    assert_eq!(next_accept(&mut accepted).await, addr_a);

    proxy.add_backend(addr_b);
    proxy.remove_backend(addr_a);
    assert_eq!(proxy.backends(), vec![addr_b]);
    let _to_b = echo_through(proxy.addr(), b"second").await;
    assert_eq!(next_accept(&mut accepted).await, addr_b);

    // The connection carried to the removed backend still works.
    to_a.write_all(b"still here").await.unwrap();
    let mut back = [0; 10];
    timeout(WAIT, to_a.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&back, b"still here");

    // With no backend, a connection is accepted and closed at once.
    proxy.remove_backend(addr_b);
    let mut orphan = TcpStream::connect(proxy.addr()).await.unwrap();
    let read = timeout(WAIT, orphan.read(&mut back))
        .await
        .expect("not closed");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    timeout(WAIT, proxy.wait_for_connections(3)).await.unwrap();
    assert_eq!(proxy.failed_count(), 1);
    assert_eq!(proxy.connections_per_backend().get(&addr_a), Some(&1));
    assert_eq!(proxy.connections_per_backend().get(&addr_b), Some(&1));
}

#[tokio::test]
async fn dropping_the_proxy_closes_its_connections() {
    let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend_addr = backend.local_addr().unwrap();
    let (tx, _accepted) = mpsc::unbounded_channel();
    tokio::spawn(echo_server(backend, tx));

    let proxy = L4Proxy::start(vec![backend_addr]).await;
    let proxy_addr = proxy.addr();
    let mut stream = echo_through(proxy_addr, b"ping").await;
    drop(proxy);

    let mut buf = [0; 4];
    let read = timeout(WAIT, stream.read(&mut buf))
        .await
        .expect("connection left open");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}

/// nghttpd answers hyper's HTTP/2 client (prior knowledge) with its file,
/// announces the `SETTINGS_MAX_CONCURRENT_STREAMS` it was started with,
/// h2load against it loses nothing, and dropping it closes its port.
#[tokio::test]
async fn nghttpd_serves_h2c_to_hyper_and_h2load_and_stops_on_drop() {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use support::nghttp::{Nghttpd, h2load};

    let nghttpd = Nghttpd::start(Ipv4Addr::new(127, 0, 0, 7), 0, 7).await;
    assert_eq!(nghttpd.addr().ip(), Ipv4Addr::new(127, 0, 0, 7));
    let get = |path: &str| {
        http::Request::get(nghttpd.uri(path))
            .body(Empty::<Bytes>::new())
            .unwrap()
    };

    let tcp = TcpStream::connect(nghttpd.addr()).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let response = timeout(WAIT, send.send_request(get(Nghttpd::PATH)))
        .await
        .expect("no answer from nghttpd")
        .unwrap();
    assert_eq!(response.status(), http::StatusCode::OK);
    assert_eq!(response.version(), http::Version::HTTP_2);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, Nghttpd::BODY);
    // h2's own client shows the server's SETTINGS once a response came.
    let tcp = TcpStream::connect(nghttpd.addr()).await.unwrap();
    let (h2, h2_conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(h2_conn);
    let mut h2: h2::client::SendRequest<Bytes> = h2.ready().await.unwrap();
    let request = http::Request::get(nghttpd.uri(Nghttpd::PATH))
        .body(())
        .unwrap();
    let (response, _) = h2.send_request(request, true).unwrap();
    let response = timeout(WAIT, response).await.unwrap().unwrap();
    assert_eq!(response.status(), http::StatusCode::OK);
    assert_eq!(h2.current_max_send_streams(), 7);

    // At most 5 streams per connection, below nghttpd's 7: h2load opens its
    // first streams before nghttpd's SETTINGS arrive, and with 10 it saw
    // some refused (12 of 200 errored once).
    let report = h2load(
        &["-n", "200", "-c", "4", "-m", "5"],
        &nghttpd.uri(Nghttpd::PATH),
    )
    .await;
    assert_eq!(
        (
            report.total,
            report.succeeded,
            report.failed,
            report.errored
        ),
        (200, 200, 0, 0),
        "{report}\n{}",
        report.output
    );
    assert_eq!(report.status_2xx, 200, "{report}");

    let addr = nghttpd.addr();
    drop(nghttpd);
    timeout(WAIT, async {
        while TcpStream::connect(addr).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("nghttpd still accepts connections after drop");
}

#[test]
fn h2load_summary_is_parsed() {
    use support::nghttp::H2LoadReport;

    let output = "starting benchmark...\n\
        finished in 5.10ms, 19623.23 req/s, 712.88KB/s\n\
        requests: 100 total, 98 started, 97 done, 95 succeeded, 5 failed, 3 errored, 1 timeout\n\
        status codes: 94 2xx, 1 3xx, 2 4xx, 0 5xx\n\
        traffic: 3.63KB (3720) total\n";
    let report = H2LoadReport::parse(output).unwrap();
    assert_eq!(
        (report.total, report.started, report.done, report.succeeded),
        (100, 98, 97, 95)
    );
    assert_eq!((report.failed, report.errored, report.timeout), (5, 3, 1));
    assert_eq!(
        (
            report.status_2xx,
            report.status_3xx,
            report.status_4xx,
            report.status_5xx
        ),
        (94, 1, 2, 0)
    );
    assert_eq!(
        report.finished,
        "finished in 5.10ms, 19623.23 req/s, 712.88KB/s"
    );
    assert_eq!(H2LoadReport::parse("h2load: connection refused\n"), None);
}
