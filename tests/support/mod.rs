//! Test fixtures shared by the integration tests and the examples.
//!
//! Include with `mod support;` from `tests/*.rs`, or from an example with
//! `#[path = "../tests/support/mod.rs"] mod support;`.
//!
//! - [`backend`]: HTTP/2 backends ("pods") on 127.0.0.x with one port, that
//!   count what they execute and can misbehave on purpose.
//! - [`load`]: a bounded load generator that tallies responses per backend.
//! - [`child`]: starts a peer process that prints its port (the gRPC peers).
//! - [`dns`]: an authoritative DNS server on loopback whose records change while
//!   it runs, that can drop queries to simulate an outage, and counts queries.
//! - [`proxy`]: an L4 TCP proxy that spreads connections round-robin over
//!   backends, standing in for kube-proxy or a cloud network load balancer.
//! - [`fault`]: a TCP proxy in front of one backend that black-holes,
//!   delays, or cuts its connections with a RST or a FIN, on command.
//! - [`grpc`]: a tonic-health gRPC server on hyper that ignores
//!   `grpc-timeout` and answers a call after the delay its metadata asks for.
//! - [`grpcio`]: a gRPC server on grpcio (C-core, from pip) with C-core's
//!   ping policy, one stream that stays silent for a while.
//! - [`grpcgo`]: the same server on grpc-go (built from Go source with
//!   Debian's grpc-go) with grpc-go's ping policy.
//! - [`haproxy`]: a real HAProxy in TCP mode as that L4 balancer, started as a
//!   child process, with servers enabled at run time over its admin socket.
//! - [`memory`]: an in-memory connector over `tokio::io::duplex`, for exact
//!   frame sequences against an `h2::server` with paused time.
//! - [`nghttp`]: nghttp2's `nghttpd` (an HTTP/2 server that is not hyper) as a
//!   child process, and `h2load` runs parsed into a report of what they lost.
//! - [`nginx`]: nginx (`nginx-light`) with its default request cap and
//!   stream limit on 127.0.0.x, one port, as a child process.
//! - [`server`]: helpers for the server-side tests: a tracing-event recorder,
//!   a test server, slow axum routes, plain hyper clients.
#![allow(dead_code)]

pub mod backend;
pub mod child;
pub mod dns;
pub mod fault;
pub mod grpc;
pub mod grpcgo;
pub mod grpcio;
pub mod haproxy;
pub mod load;
pub mod memory;
pub mod nghttp;
pub mod nginx;
pub mod proxy;
pub mod server;

/// Bounds a test's call: a hang fails the test instead of stalling the suite.
pub async fn bounded<T>(call: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(std::time::Duration::from_secs(20), call)
        .await
        .expect("the call did not finish within 20 s")
}

/// A GET of `uri` with an empty body and `x-request-id: id` (the id the
/// backends record executions under).
pub fn get(
    uri: impl std::fmt::Display,
    id: &str,
) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    http::Request::get(uri.to_string())
        .header("x-request-id", id)
        .body(http_body_util::Full::default())
        .unwrap()
}

/// Waits (at most 5 s) until `client` has `n` connections in service.
pub async fn connected<B, C>(client: &tower_max_connection_age::Client<B, C>, n: usize) {
    tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while client.connection_count() < n {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("client did not connect in time");
}

/// The first source of `error` that is not the `tonic::Status` the crate's
/// `tonic` feature puts in front of the cause: the cause itself.
pub fn cause<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a (dyn std::error::Error + 'static)> {
    let mut cur = error.source();
    while let Some(e) = cur {
        if !e.is::<tonic::Status>() {
            return Some(e);
        }
        cur = e.source();
    }
    None
}

/// One connection from a connection `MakeService` (an age layer over a
/// connector), bounded.
pub async fn connect_one<M>(make: &mut M, uri: http::Uri) -> M::Response
where
    M: tower::Service<http::Uri>,
    M::Error: std::fmt::Debug,
{
    use tower::ServiceExt;
    bounded(async { make.ready().await.unwrap().call(uri).await.unwrap() }).await
}

/// Waits (bounded) until an aged connection stops taking requests.
pub async fn until_draining<S>(connection: &tower_max_connection_age::AgedConnection<S>) {
    bounded(async {
        while connection.is_serving() {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await
}
