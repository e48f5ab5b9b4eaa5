//! HTTP/2 connections with a maximum age for tower: drained gracefully,
//! rotated make-before-break, re-balanced across endpoints that come and go.
//!
//! HTTP/2 multiplexes every request over one long-lived connection, so a client
//! that connected when a service had two pods stays pinned to them after it
//! scales to ten. This crate gives each connection an age: once it is reached,
//! a replacement is opened (to a freshly chosen endpoint), and only when that one
//! is ready does the old connection stop taking requests, finish its in-flight
//! ones, and close.
//!
//! # Quick start
//!
//! ```no_run
//! # async fn doc() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use tower::ServiceExt;
//! use tower_max_connection_age::Client;
//!
//! // Every pod behind a headless Service, re-resolved; each connection
//! // replaced make-before-break after a minute.
//! let client = Client::builder()
//!     .uri("http://my-svc.my-ns.svc.cluster.local:8080".parse()?)
//!     .max_connection_age(Duration::from_secs(60))
//!     .build::<Full<Bytes>>()?;
//! let request = http::Request::get("/hello").body(Full::default())?;
//! let response = client.oneshot(request).await?;
//! # let _ = response;
//! # Ok(())
//! # }
//! ```
//!
//! # Features
//!
//! | feature | what it adds |
//! |---|---|
//! | `hickory` | `resolve::HickoryResolver`: DNS on hickory-resolver, with the records' TTL |
//! | `rustls` | `connector::RustlsConnector` and `ClientBuilder::tls`: TLS to pods dialed by IP, verified against the service's name |
//! | `tonic` | the gRPC status of every [`Error`] (`From<Error> for tonic::Status`, and first in its `source()` chain) |
//! | `metrics` | counters and gauges through the `metrics` facade (names in [`metrics`]) |
//!
//! None is on by default.
//!
//! # Module map
//!
//! The modules stand in layers, and every arrow points down: a module uses
//! only those below it (`../shared/tools/module-cycles` checks there is no
//! cycle, between modules or between the files of one). Each layer answers
//! one question, so a change to how connections are made, how long they
//! live, or how requests are spread lands in one layer.
//!
//! ```text
//! client, replay, server          what a caller or a server uses
//!   discover, resolve             which endpoints exist, which connections to hold
//!     age                         how long a connection lives (state.rs: deadline,
//!                                 drain, force-close), and above it what the pick
//!                                 weighs (balancing.rs: load, health, ejection,
//!                                 slow start, the wait line)
//!       connector                 the transport: h2's and hyper's connections, their
//!                                 task, the handle that reports GOAWAY and closes
//!                                 by force, and the in-flight count it reads
//!         error, outcome,         at the bottom: the error type, the one place h2's
//!         classify, load,         errors are read, what a response says, the load
//!         metrics, time, jitter,  model, metric names, the one "never" and jitter,
//!         accessors               and the wrappers' `get_ref`/`get_mut`/`into_inner`
//! ```
//!
//! Why balancing sits in `age`, above the lifetime and not in a layer over
//! it: an [`AgedConnection`] is what tower's `Balance` weighs (it implements
//! `tower::load::Load`), and its load is measured by its own requests, in
//! the one guard that also keeps them counted for the drain. So the
//! balancing record travels with the connection, and its parts owned
//! elsewhere are handed in whole, by value, by their owners as they take
//! the connection: discovery's per-endpoint health (with its ejection) and
//! slow start, the client's wait line. Nothing is filled in later into
//! state others already share; the one subscription attached after
//! construction is the rotation manager's to a connection's lifetime
//! events, since the connection's supervisor runs from the moment it is
//! made.
//!
//! `grpc` (feature `tonic`) documents the gRPC codes and converts errors
//! into `tonic::Status`; the table itself sits beside `Error::source`.
//!
//! | module | what it is |
//! |---|---|
//! | [`age`] | [`MaxConnectionAgeLayer`]: wraps any connection `MakeService` so each connection is an [`AgedConnection`] with a deadline (age + jitter), a drain, and a force-close after `drain_timeout`. It also tracks the connection's load until each response *body* ends. |
//! | [`connector`] | [`Http2Connector`]: turns a hyper-util connector (`HttpConnector`, TLS, ...) and an `h2::client::Builder` into connection services on h2's `SendRequest`, made only once the server answered (its `SETTINGS`, a `PING`), sending from the caller's task (no hyper dispatch task in between), handing unsent requests back and telling which failed streams the server never processed. Its connection task publishes the server's stream limit, reports its `GOAWAY`, and runs the HTTP/2 keepalive (a `PING` unanswered in time closes the connection: `ErrorKind::KeepAlive`). [`HyperConnector`](connector::HyperConnector) makes hyper's own HTTP/2 client connections ageable instead, and [`ClosableIo`](connector::ClosableIo) gives any transport a force-close. [`ConnectionHandle`](connector::ConnectionHandle) and [`SharedConnection`](connector::SharedConnection) are what the layers above need of a connection (also re-exported from `age` and `client`). |
//! | `connector::RustlsConnector` (feature `rustls`) | TLS on rustls for pods dialed by IP address: SNI and the certificate check use a configured server name (the service's; [`ClientBuilder::tls`](client::ClientBuilder) sets it from the `uri`) instead of the address, ALPN is `h2` alone, and its stream tells [`Http2Connector`] that ALPN chose `h2`. |
//! | `time`, `jitter` | Settings made safe to add to a clock (the crate's one "never", about 30 years), and the one jitter (the server spreads ages both ways as grpc-go, the client only adds, so its age is the least a connection lives). |
//! | [`discover`] | [`RotatingDiscover`]: a `tower::discover::Discover` over a fixed set of endpoints or a host name it re-resolves (periodically or at the TTL, at rotations, on losses), that opens `connections_per_endpoint` each, replaces aged connections make-before-break and closed ones with backoff, and drains those of endpoints that left. It never yields `Err` and never ends. Its worker performs what small state machines decide: each connection slot's (`slot.rs`), outlier ejection's (`ejection.rs`), the endpoint set's (`endpoints.rs`), extras' (`extra.rs`). |
//! | [`replay`] | [`ReplayLayer`]: replays requests that came back unsent, and those the server provably never processed (`REFUSED_STREAM`, above `GOAWAY`'s last-stream-id). Nothing else. |
//! | [`client`] | [`Client`]: all of it composed, with a lock-free power-of-two-choices pick in the caller's task (a plain function with its RNG injected), over [`Http2Connection`]s or any [`SharedConnection`](client::SharedConnection) (`ClientBuilder::build_with`); a request's deadline is the earlier of the client's `timeout` and its `grpc-timeout`. |
//! | [`resolve`] | [`Resolve`](resolve::Resolve): any hyper-util resolver (`Service<Name>`) whose answer may carry a TTL; [`StaticResolver`](resolve::StaticResolver), and `HickoryResolver` (feature `hickory`) which reports the records' TTL. |
//! | [`server`] | [`server::Server`]: serves any tower HTTP service (axum, tonic `Routes`, hyper) over HTTP/1.1 and h2c with a maximum connection age (±10% jitter), an optional grace, an idle limit and graceful shutdown; on age HTTP/2 gets the two-phase `GOAWAY`, HTTP/1.1 `Connection: close`. |
//! | [`classify`] | What a response says about the pod that sent it: [`ResponseClass`](classify::ResponseClass) from the HTTP status or the gRPC status (trailers-only head or trailers), by a [`ResponseClassifier`](classify::ResponseClassifier); read by the load's failure penalty and by outlier detection. At the bottom, beside `outcome`. |
//! | [`error`] | [`Error`] and [`ErrorKind`]; with feature `tonic`, the gRPC status each error maps to, put first in its `source()` chain so that tonic's `Status::from_error` finds it. |
//! | `outcome` | How a request or connection ended on the wire: the one place h2's errors are read (a verdict for replay, what the wire said for the age layer and the gRPC codes). |
//! | `grpc` | (feature `tonic`) the table of gRPC codes, and `From<Error> for tonic::Status`. |
//! | [`metrics`] | The metric names (Envoy's cluster statistics where one exists: `upstream_cx_total`, `upstream_cx_max_duration_reached`, `upstream_rq_retry`, `membership_total`, ...) and their table; recorded through the `metrics` facade with the cargo feature `metrics`, from where each event is decided, never per request. |
//!
//! # The path of a request through [`Client`]
//!
//! ```text
//! Client::call(req)                       caller's task, no Buffer hop
//!   └─ replay loop                        body wrapped so it can be replayed
//!        └─ p2c pick                      two random connections with room under their
//!             │                           server's stream limit, lower load wins; none:
//!             │                           wait in order for room, up to ready_timeout
//!             └─ AgedConnection           refuses (gives the request back) once draining,
//!                  │                      counts the request in flight until its body ends
//!                  └─ Http2Connection     h2::client::SendRequest::send_request
//!                       └─ h2             the connection task owns the socket;
//!                                         it wakes the caller's task directly
//! ```
//!
//! Rotation happens off the request path: a background task owned by
//! [`RotatingDiscover`] watches every connection's deadline and lifetime. At a
//! deadline it resolves the host again (when allowed) and connects the
//! replacement; when that is ready it swaps it in, which drops the old
//! connection handle and starts its drain. A request that raced the swap gets
//! `Draining` back with its request and is replayed on the new connection.
//!
//! ```text
//! RotatingDiscover worker (one task)
//!   ├─ resolve(host) ── diff ──> new address: connect; gone: Remove (drain)
//!   ├─ connection deadline ────> resolve, connect replacement, Insert same key
//!   ├─ server GOAWAY(NO_ERROR) > Remove (it drains), reconnect at once
//!   ├─ all connections full ───> an extra connection, up to the cap (opt-in)
//!   └─ connection lost ────────> Remove, reconnect (backoff when it repeats)
//!          │ Change::Insert / Change::Remove
//!          v
//! Client's connection list (or tower's Balance / ReadyCache)
//! ```
//!
//! # Composing with tower
//!
//! The same parts stack with `ServiceBuilder` around tower's own balancer:
//!
//! ```no_run
//! # async fn doc() -> Result<(), tower_max_connection_age::Error> {
//! use std::time::Duration;
//! use http_body_util::Empty;
//! use bytes::Bytes;
//! use tower::{ServiceBuilder, balance::p2c::Balance};
//! use tower_max_connection_age::{
//!     Http2Connector, MaxConnectionAgeLayer, ReplayLayer, RotatingDiscover,
//!     replay::ReplayBody,
//! };
//!
//! let make = ServiceBuilder::new()
//!     .layer(MaxConnectionAgeLayer::new(Duration::from_secs(300)))
//!     .service(Http2Connector::<_, ReplayBody<Empty<Bytes>>>::http());
//! let discover = RotatingDiscover::builder()
//!     .endpoint("http://127.0.0.1:50051".parse().unwrap())
//!     .build(make)?;
//! let service = ServiceBuilder::new()
//!     .layer(ReplayLayer::new())
//!     .buffer(1024)
//!     .service(Balance::new(discover));
//! # let _ = service;
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod accessors;
pub mod age;
pub mod classify;
pub mod client;
pub mod connector;
pub mod discover;
pub mod error;
#[cfg(feature = "tonic")]
pub mod grpc;
mod jitter;
pub mod load;
pub mod metrics;
mod outcome;
pub mod replay;
pub mod resolve;
pub mod server;
mod time;

pub use age::{AgedConnection, MaxConnectionAgeLayer};
pub use client::Client;
pub use connector::{Http2Connection, Http2Connector};
pub use discover::RotatingDiscover;
pub use error::{BoxError, Error, ErrorKind};
pub use load::LoadKind;
pub use replay::ReplayLayer;

/// The README's examples, compiled as doctests so they stay true (some use
/// the `hickory` feature, one the `rustls` feature).
#[cfg(all(doctest, feature = "hickory", feature = "rustls"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
