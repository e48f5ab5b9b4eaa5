//! An in-process authoritative DNS server on `127.0.0.1`, UDP and TCP on one
//! ephemeral port, whose records a test changes while it runs.
//!
//! ```ignore
//! let dns = DnsServer::start().await;
//! dns.set_a("svc.test.local.", &[Ipv4Addr::new(127, 0, 0, 1)], 5);
//! dns.set_a_with_ttls("svc.test.local.", &[(Ipv4Addr::new(127, 0, 0, 2), 1)]);
//! let resolver = HickoryResolver::with_nameserver(dns.addr())?;
//! dns.pause(); // queries are dropped: lookups time out
//! dns.resume();
//! assert!(dns.query_count() >= 1);
//! ```
//!
//! Answers: a name set with [`DnsServer::set_a`] gets its A records for an A
//! query and an empty `NOERROR` answer for any other type; a name set with
//! [`DnsServer::set_empty`] gets an empty `NOERROR` answer; any other name gets
//! `NXDOMAIN`. Negative answers carry no SOA record (so they are not cached)
//! unless [`DnsServer::set_negative_ttl`] was called.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_server::Server;
use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{Header, HeaderCounts, Metadata, ResponseCode};
use hickory_server::proto::rr::rdata::SOA;
use hickory_server::proto::rr::{LowerName, Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;

/// What the server answers for one name.
#[derive(Clone, Debug)]
enum Zone {
    A(Vec<(Ipv4Addr, u32)>),
    Empty,
}

struct State {
    zones: Mutex<HashMap<LowerName, Zone>>,
    paused: AtomicBool,
    /// When set, negative answers carry an SOA record with this TTL.
    negative_ttl: Mutex<Option<u32>>,
    /// Queries received (answered or dropped); a watch so tests can wait on it.
    queries: watch::Sender<usize>,
    /// Queries dropped while paused.
    dropped: watch::Sender<usize>,
}

/// The running server. Dropping it stops it.
pub struct DnsServer {
    addr: SocketAddr,
    state: Arc<State>,
    server: Option<Server<Handler>>,
}

impl DnsServer {
    /// Binds UDP and TCP on `127.0.0.1` on one ephemeral port and starts
    /// answering, with no names set (every name is `NXDOMAIN`).
    pub async fn start() -> DnsServer {
        let state = Arc::new(State {
            zones: Mutex::new(HashMap::new()),
            paused: AtomicBool::new(false),
            negative_ttl: Mutex::new(None),
            queries: watch::Sender::new(0),
            dropped: watch::Sender::new(0),
        });
        let (udp, tcp) = bind_udp_and_tcp().await;
        let addr = udp.local_addr().expect("udp local addr");
        let mut server = Server::new(Handler {
            state: state.clone(),
        });
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(30), 16);
        DnsServer {
            addr,
            state,
            server: Some(server),
        }
    }

    /// The address (UDP and TCP) to send queries to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replaces the records of `name` (e.g. `"svc.test.local."`; the final dot
    /// is optional, case does not matter) with one A record per address, each
    /// with `ttl_secs`. An empty list is the same as [`set_empty`](Self::set_empty).
    pub fn set_a(&self, name: &str, ips: &[Ipv4Addr], ttl_secs: u32) {
        let records: Vec<_> = ips.iter().map(|ip| (*ip, ttl_secs)).collect();
        self.set_a_with_ttls(name, &records);
    }

    /// Like [`set_a`](Self::set_a), with a TTL for each record.
    pub fn set_a_with_ttls(&self, name: &str, records: &[(Ipv4Addr, u32)]) {
        let zone = if records.is_empty() {
            Zone::Empty
        } else {
            Zone::A(records.to_vec())
        };
        self.zones().insert(lower_name(name), zone);
    }

    /// Makes `name` exist with no records: every query for it gets `NOERROR`
    /// and an empty answer.
    pub fn set_empty(&self, name: &str) {
        self.zones().insert(lower_name(name), Zone::Empty);
    }

    /// Removes `name`: queries for it get `NXDOMAIN`.
    pub fn remove(&self, name: &str) {
        self.zones().remove(&lower_name(name));
    }

    /// Sends an SOA record with `ttl_secs` (as its TTL and its `minimum`) in
    /// every negative answer (`NXDOMAIN`, or `NOERROR` with no record of the
    /// type asked), so that resolvers cache it (RFC 2308) and report it.
    /// `None`, the default, sends no SOA: negative answers are not cached.
    pub fn set_negative_ttl(&self, ttl_secs: Option<u32>) {
        *self
            .state
            .negative_ttl
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = ttl_secs;
    }

    /// Drops every query from now on without answering, so clients time out.
    /// Queries are still counted.
    pub fn pause(&self) {
        self.state.paused.store(true, Ordering::SeqCst);
    }

    /// Answers queries again after [`pause`](Self::pause).
    pub fn resume(&self) {
        self.state.paused.store(false, Ordering::SeqCst);
    }

    /// Stops the server and closes its sockets: UDP queries then go to a
    /// closed port and TCP connections are refused. [`addr`](Self::addr) and
    /// the counters stay readable. It cannot be restarted.
    pub async fn stop(&mut self) {
        if let Some(mut server) = self.server.take() {
            // The tasks end on the token; an error only says a socket task
            // ended badly, and the server is gone either way.
            let _ = server.shutdown_gracefully().await;
        }
    }

    /// How many queries reached the server (answered or dropped), over UDP
    /// and TCP. A client's lookup of one name may be one query or several
    /// (A then AAAA, retries).
    pub fn query_count(&self) -> usize {
        *self.state.queries.borrow()
    }

    /// How many queries were dropped while paused.
    pub fn dropped_count(&self) -> usize {
        *self.state.dropped.borrow()
    }

    /// Waits until at least `n` queries reached the server. Wrap it in a
    /// timeout.
    pub async fn wait_for_queries(&self, n: usize) {
        let mut rx = self.state.queries.subscribe();
        rx.wait_for(|&count| count >= n)
            .await
            .expect("the sender lives in self");
    }

    /// Waits until at least `n` queries were dropped while paused. Wrap it in
    /// a timeout.
    pub async fn wait_for_dropped(&self, n: usize) {
        let mut rx = self.state.dropped.subscribe();
        rx.wait_for(|&count| count >= n)
            .await
            .expect("the sender lives in self");
    }

    fn zones(&self) -> std::sync::MutexGuard<'_, HashMap<LowerName, Zone>> {
        self.state.zones.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn lower_name(name: &str) -> LowerName {
    let mut name = Name::from_ascii(name).unwrap_or_else(|e| panic!("bad DNS name {name:?}: {e}"));
    name.set_fqdn(true);
    LowerName::new(&name)
}

/// UDP on an ephemeral port of 127.0.0.1, and TCP on the same port. Another
/// process may hold that TCP port; then try another.
async fn bind_udp_and_tcp() -> (UdpSocket, TcpListener) {
    for _ in 0..32 {
        let udp = UdpSocket::bind("127.0.0.1:0").await.expect("bind udp");
        let addr = udp.local_addr().expect("udp local addr");
        if let Ok(tcp) = TcpListener::bind(addr).await {
            return (udp, tcp);
        }
    }
    panic!("no ephemeral port free for both UDP and TCP on 127.0.0.1");
}

struct Handler {
    state: Arc<State>,
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        self.state.queries.send_modify(|n| *n += 1);
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.authoritative = true;

        if self.state.paused.load(Ordering::SeqCst) {
            self.state.dropped.send_modify(|n| *n += 1);
            // Nothing is sent: the client waits for its timeout.
            return header_only(metadata);
        }

        let info = match request.request_info() {
            Ok(info) => info,
            Err(_) => {
                metadata.response_code = ResponseCode::FormErr;
                return send(&mut response_handle, request, metadata, &[], &[]).await;
            }
        };
        let query = info.query;
        let zone = self
            .state
            .zones
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(query.name())
            .cloned();
        let records: Vec<Record> = match zone {
            None => {
                metadata.response_code = ResponseCode::NXDomain;
                Vec::new()
            }
            Some(Zone::Empty) => Vec::new(),
            Some(Zone::A(records)) => match query.query_type() {
                RecordType::A => {
                    let name = query.original().name().clone();
                    records
                        .iter()
                        .map(|(ip, ttl)| Record::from_rdata(name.clone(), *ttl, RData::from(*ip)))
                        .collect()
                }
                _ => Vec::new(),
            },
        };
        let negative_ttl = *self
            .state
            .negative_ttl
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let soa = match negative_ttl {
            Some(ttl) if records.is_empty() => vec![soa_record(query.original().name(), ttl)],
            _ => Vec::new(),
        };
        send(&mut response_handle, request, metadata, &records, &soa).await
    }
}

/// An SOA record for the zone above `name`, for a negative answer.
fn soa_record(name: &Name, ttl: u32) -> Record {
    let zone = name.base_name();
    let mname = Name::from_ascii("ns.test.local.").expect("valid name");
    let rname = Name::from_ascii("hostmaster.test.local.").expect("valid name");
    let soa = SOA::new(mname, rname, 1, 3600, 600, 86400, ttl);
    Record::from_rdata(zone, ttl, RData::SOA(soa))
}

async fn send<R: ResponseHandler>(
    response_handle: &mut R,
    request: &Request,
    metadata: Metadata,
    answers: &[Record],
    soa: &[Record],
) -> ResponseInfo {
    let response = MessageResponseBuilder::from_message_request(request).build(
        metadata,
        answers.iter(),
        std::iter::empty(),
        soa.iter(),
        std::iter::empty(),
    );
    match response_handle.send_response(response).await {
        Ok(info) => info,
        Err(_) => {
            let mut metadata = metadata;
            metadata.response_code = ResponseCode::ServFail;
            header_only(metadata)
        }
    }
}

fn header_only(metadata: Metadata) -> ResponseInfo {
    ResponseInfo::from(Header {
        metadata,
        counts: HeaderCounts::default(),
    })
}
