//! A server whose connections have a maximum age, for any tower HTTP service.
//!
//! HTTP/2 clients keep one connection for as long as they can, so a client
//! that connected when a service had two replicas stays on them after it
//! scales to ten, and a layer 4 load balancer never gets to balance again.
//! When the clients cannot all be changed, the standard answer (gRPC's
//! `MAX_CONNECTION_AGE`) is on the server: after a while it asks each client
//! to go away, the client reconnects, resolves again and lands wherever the
//! balancer sends it.
//!
//! [`Server`] serves any `tower::Service<http::Request<hyper::body::Incoming>>`
//! (an axum `Router`, tonic's `Routes`, a hyper service wrapped with
//! `tower::service_fn`) over HTTP/1.1 and HTTP/2 (h2c prior knowledge, as
//! plaintext gRPC clients use) on one port, with hyper-util's auto builder.
//! Each connection:
//!
//! - gets its own age, the configured age ± jitter (±10% by default, as
//!   grpc-go), so connections accepted together do not all leave together;
//! - at that age is drained gracefully: HTTP/2 gets hyper's two-phase
//!   `GOAWAY` (max stream id + PING, then the real last stream id), so no
//!   request racing the `GOAWAY` is refused; HTTP/1.1 gets
//!   `Connection: close` on the response in flight, or, when it is idle, on
//!   its next request within the drain window (500 ms by default, see
//!   [`Builder::http1_drain_window`]), so the request a busy client sent
//!   just as the age came is answered rather than lost;
//! - finishes its in-flight requests, however long by default, or until the
//!   optional grace ends (which bounds the drain window too), when it is
//!   closed by force;
//! - is drained the same way when it was idle too long, and when the server
//!   shuts down;
//! - is closed with a lingering close (FIN, then what the client still sends
//!   is read and discarded until it closes, at most 1 s), so its last
//!   responses are not destroyed by a TCP RST.
//!
//! | | this server | grpc-go | tonic 0.14 |
//! |---|---|---|---|
//! | jitter | ±10% default, configurable | ±10% | none |
//! | age without grace | waits for in-flight requests | waits (grace infinite) | reported panic |
//! | age with grace | graceful `GOAWAY`, force close at the grace | same | no graceful `GOAWAY`, kill at age + grace |
//! | idle limit | yes | yes | no |
//!
//! Any duration setting may be `Duration::MAX`, meaning "never"; none makes
//! a connection panic. Accept errors are logged and never stop the server
//! (see [`Builder::accept_error_backoff`]). Everything a connection goes through is
//! logged with `tracing` at `debug` (accepted, age reached, `GOAWAY` sent,
//! closed) and `info` (closed by force), with the peer address and the
//! connection's age in milliseconds as fields; connection tasks log to the
//! subscriber that was current where the server runs.
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//! use axum::{Router, routing::get};
//! use tokio::net::TcpListener;
//! use tower_max_connection_age::server::Server;
//!
//! # async fn doc() -> Result<(), Box<dyn std::error::Error>> {
//! let app = Router::new().route("/", get(|| async { "hello" }));
//! let listener = TcpListener::bind("0.0.0.0:8080").await?;
//! Server::builder()
//!     .max_connection_age(Duration::from_secs(300))
//!     .max_connection_age_grace(Duration::from_secs(30))
//!     .build()?
//!     .serve_with_shutdown(listener, app, async {
//!         let _ = tokio::signal::ctrl_c().await;
//!     })
//!     .await;
//! # Ok(())
//! # }
//! ```
//!
//! A tonic service goes through `tonic::service::Routes`:
//!
//! ```no_run
//! # async fn doc() -> Result<(), Box<dyn std::error::Error>> {
//! # use std::time::Duration;
//! # use tower_max_connection_age::server::Server;
//! let (_reporter, health) = tonic_health::server::health_reporter();
//! let routes = tonic::service::Routes::new(health);
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:50051").await?;
//! Server::builder()
//!     .max_connection_age(Duration::from_secs(300))
//!     .build()?
//!     .serve(listener, routes)
//!     .await;
//! # Ok(())
//! # }
//! ```
//!
//! # What clients see
//!
//! Clients that stop using a connection at the first `GOAWAY` and replay what
//! the server provably did not process (grpc-go) see no failed call.
//! HTTP/1.1 clients that keep their connections busy see none either
//! (`h2load --h1`, 16 connections, a 200 ms age: 20 000 requests answered
//! over about 220 connections); a request sent on an idle connection after
//! its window has ended meets a closed connection, as after any keep-alive
//! timeout, and is the client's to retry (RFC 9112 §9.3.1). tonic
//! 0.14's `Channel` loses a few calls per rotation under load (about 0.2% at
//! 16 concurrent callers and a 500 ms age): its hyper/h2 client keeps opening
//! streams on a connection after the `GOAWAY` until the connection closes and
//! retries none of them.
//!
//! # What it does not do
//!
//! - Connections upgraded from HTTP/1.1 (WebSocket) leave hyper once upgraded
//!   and are not aged.
//! - TLS is not built in: terminate it in a stream of accepted IO and use
//!   [`Server::serve_incoming`].

mod accept;
mod activity;
mod builder;
mod connection;
mod linger;

use std::future::{Future, poll_fn};
use std::sync::Arc;

use futures_util::Stream;
use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;
use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::instrument::WithSubscriber;

pub use builder::{Builder, DEFAULT_HTTP1_DRAIN_WINDOW};

use crate::time::{deadline, sleep_until_or_never};
use accept::{Accept, StreamAccept, TcpAccept, is_connection_error};
use builder::Config;

use crate::BoxError;

/// An HTTP/1.1 and HTTP/2 server that drains each connection at its maximum
/// age, when idle, and on shutdown. Build it with [`Server::builder`].
///
/// It is cheap to clone; each `serve*` call runs one accept loop.
#[derive(Debug, Clone)]
pub struct Server {
    config: Arc<Config>,
    http: Arc<auto::Builder<TokioExecutor>>,
}

impl Server {
    /// A [`Builder`] with every limit off.
    pub fn builder() -> Builder {
        Builder::new()
    }

    fn from_parts(config: Config, http: auto::Builder<TokioExecutor>) -> Self {
        Server {
            config: Arc::new(config),
            http: Arc::new(http),
        }
    }

    /// Serves `service` on every connection `listener` accepts, forever.
    ///
    /// If the returned future is dropped, the server stops accepting and every
    /// connection drains as on shutdown (in the background).
    pub async fn serve<S, B>(self, listener: TcpListener, service: S)
    where
        S: tower::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        self.serve_with_shutdown(listener, service, std::future::pending())
            .await
    }

    /// Serves `service` until `signal` completes, then stops accepting, drains
    /// every connection (HTTP/2 `GOAWAY`, HTTP/1.1 `Connection: close`) and
    /// returns when all of them are closed: when their in-flight requests are
    /// done, or at the latest when the grace ends.
    pub async fn serve_with_shutdown<S, B, F>(self, listener: TcpListener, service: S, signal: F)
    where
        S: tower::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
        F: Future<Output = ()>,
    {
        let nodelay = self.config.tcp_nodelay;
        self.run(TcpAccept { listener, nodelay }, service, signal)
            .await
    }

    /// Serves `service` on every IO `incoming` yields (TLS streams, Unix
    /// sockets, ...). Errors from `incoming` are logged and handled as accept
    /// errors. When `incoming` ends, the server stops accepting and returns
    /// once its connections have closed (they still age). Peer addresses are
    /// logged as `unknown`.
    pub async fn serve_incoming<I, IO, E, S, B>(self, incoming: I, service: S)
    where
        I: Stream<Item = Result<IO, E>>,
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        E: Into<BoxError>,
        S: tower::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        self.serve_incoming_with_shutdown(incoming, service, std::future::pending())
            .await
    }

    /// [`serve_incoming`](Self::serve_incoming) until `signal` completes, then
    /// drains every connection as [`serve_with_shutdown`](Self::serve_with_shutdown)
    /// does.
    pub async fn serve_incoming_with_shutdown<I, IO, E, S, B, F>(
        self,
        incoming: I,
        service: S,
        signal: F,
    ) where
        I: Stream<Item = Result<IO, E>>,
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        E: Into<BoxError>,
        S: tower::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
        F: Future<Output = ()>,
    {
        let incoming = StreamAccept {
            incoming: Box::pin(incoming),
        };
        self.run(incoming, service, signal).await
    }

    async fn run<A, S, B, F>(self, mut acceptor: A, service: S, signal: F)
    where
        A: Accept,
        A::Io: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        S: tower::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
        F: Future<Output = ()>,
    {
        // Every connection task holds a receiver: `true` means drain, and
        // `closed()` on the sender means every connection is gone.
        let (drain_tx, _) = watch::channel(false);
        tokio::pin!(signal);
        let mut signalled = false;

        loop {
            let accepted = tokio::select! {
                () = &mut signal => {
                    signalled = true;
                    break;
                }
                accepted = poll_fn(|cx| acceptor.poll_accept(cx)) => accepted,
            };
            match accepted {
                None => {
                    tracing::debug!("incoming connections ended; no longer accepting");
                    break;
                }
                Some(Ok((io, peer))) => {
                    let task = connection::serve_connection(
                        io,
                        peer,
                        service.clone(),
                        Arc::clone(&self.http),
                        Arc::clone(&self.config),
                        drain_tx.subscribe(),
                    );
                    tokio::spawn(task.with_current_subscriber());
                }
                Some(Err(err)) if is_connection_error(&err) => {
                    tracing::debug!(error = %err, "accept failed for one connection; accepting the next");
                }
                Some(Err(err)) => {
                    let backoff = self.config.accept_error_backoff;
                    tracing::error!(
                        error = %err,
                        backoff_ms = u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX),
                        "accept failed; accepting again after a backoff"
                    );
                    // A backoff of decades (`Duration::MAX`) has no deadline:
                    // the loop waits for the shutdown signal only.
                    let until = deadline(tokio::time::Instant::now(), backoff);
                    tokio::select! {
                        () = &mut signal => {
                            signalled = true;
                            break;
                        }
                        () = sleep_until_or_never(until) => {}
                    }
                }
            }
        }
        drop(acceptor);

        if !signalled {
            // The incoming stream ended: connections live on until they close
            // or the shutdown signal asks them to drain.
            tokio::select! {
                () = drain_tx.closed() => {
                    tracing::debug!("all connections closed; server stopped");
                    return;
                }
                () = &mut signal => {}
            }
        }
        let connections = drain_tx.receiver_count();
        tracing::info!(connections, "shutdown signalled; draining connections");
        drain_tx.send_replace(true);
        drain_tx.closed().await;
        tracing::info!("all connections closed; server stopped");
    }
}
