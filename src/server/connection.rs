//! One connection's life: serve, reach the age (or idle, or shutdown), drain,
//! close.
//!
//! Draining is hyper's `graceful_shutdown()`, which does what grpc-go does:
//! on HTTP/2 it sends `GOAWAY` with the largest stream id and a PING, and the
//! final `GOAWAY` with the real last stream id once the PING comes back, so a
//! request the client sent while the first `GOAWAY` was on the wire is still
//! served rather than refused. On HTTP/1.1 the connection answers the request
//! in flight with `Connection: close` and closes after it.
//!
//! HTTP/1.1 has no `GOAWAY`: the only way to tell a client to stop sending is
//! `Connection: close` on a response. hyper closes an *idle* keep-alive
//! connection at once, which loses the request a busy client sent just
//! before; so an idle HTTP/1.1 connection first waits up to the drain window
//! for its next request and answers it with `Connection: close` (see
//! [`http1_drain_window`]). A connection that has not sent a byte is simply
//! closed.
//!
//! The grace, when set, bounds the drain, window included: when it ends the
//! task drops the connection, which resets the remaining streams and closes
//! the socket.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::Response;
use http_body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::time::{Instant, timeout_at};

use super::activity::{Activity, ObservedIo, Protocol, TrackedService};
use super::builder::Config;
use super::linger::{LINGER, Reclaim, linger};
use crate::BoxError;
use crate::jitter;
use crate::time::{deadline, sleep_until_or_never};

/// Displays a peer address, or `unknown` for IO that has none.
#[derive(Clone, Copy)]
pub(crate) struct Peer(pub(crate) Option<SocketAddr>);

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(addr) => addr.fmt(f),
            None => f.write_str("unknown"),
        }
    }
}

/// Why a connection started to drain.
#[derive(Debug, Clone, Copy)]
enum Cause {
    Age,
    Idle,
    Shutdown,
}

impl Cause {
    fn as_str(self) -> &'static str {
        match self {
            Cause::Age => "max_connection_age",
            Cause::Idle => "max_connection_idle",
            Cause::Shutdown => "shutdown",
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Serves one connection until it closes, then lingers (see [`linger`]).
/// `drain` turns `true` (or its sender is dropped) when the server shuts down.
pub(crate) async fn serve_connection<IO, S, B>(
    io: IO,
    peer: Option<SocketAddr>,
    service: S,
    http: Arc<auto::Builder<TokioExecutor>>,
    config: Arc<Config>,
    drain: watch::Receiver<bool>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: tower::Service<http::Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let (io, mut back) = Reclaim::new(io);
    serve(io, peer, service, http, config, drain).await;
    // hyper's connection is dropped by now, which handed the IO back, unless
    // an HTTP/1.1 upgrade took it (then it is the upgrade's to close).
    if let Ok(io) = back.try_recv() {
        linger(io, LINGER).await;
    }
}

async fn serve<IO, S, B>(
    io: IO,
    peer: Option<SocketAddr>,
    service: S,
    http: Arc<auto::Builder<TokioExecutor>>,
    config: Arc<Config>,
    mut drain: watch::Receiver<bool>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: tower::Service<http::Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let peer = Peer(peer);
    let accepted = Instant::now();
    let max_age = config
        .age
        .map(|age| jitter::around(age, config.jitter, &mut rand::rng()));
    let activity = Activity::new();
    let io = ObservedIo::new(io, Arc::clone(&activity));
    let service = TrackedService::new(service, Arc::clone(&activity));
    let conn = http.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);

    tracing::debug!(
        %peer,
        max_age_ms = max_age.map(millis),
        "connection accepted"
    );

    let age_reached = async {
        match max_age {
            Some(age) => sleep_until_or_never(deadline(accepted, age)).await,
            None => std::future::pending().await,
        }
    };
    let idle = async {
        match config.idle {
            Some(idle) => activity.idle_for(idle).await,
            None => std::future::pending().await,
        }
    };
    let shutdown = async {
        // An error means the server's task is gone: drain as on shutdown.
        let _ = drain.wait_for(|draining| *draining).await;
    };

    let cause = tokio::select! {
        result = conn.as_mut() => {
            let age_ms = millis(accepted.elapsed());
            match result {
                Ok(()) => tracing::debug!(%peer, age_ms, "connection closed by the client"),
                Err(err) => tracing::debug!(%peer, age_ms, error = %err, "connection closed with an error"),
            }
            return;
        }
        () = age_reached => Cause::Age,
        () = idle => Cause::Idle,
        () = shutdown => Cause::Shutdown,
    };

    let drain_started = Instant::now();
    let age_ms = millis(accepted.elapsed());
    match cause {
        Cause::Age => tracing::debug!(
            %peer,
            age_ms,
            max_age_ms = max_age.map(millis),
            in_flight = activity.in_flight(),
            "max connection age reached; draining"
        ),
        Cause::Idle => tracing::debug!(%peer, age_ms, "max connection idle reached; draining"),
        Cause::Shutdown => tracing::debug!(
            %peer,
            age_ms,
            in_flight = activity.in_flight(),
            "server shutting down; draining"
        ),
    }
    // Responses produced from now on close their HTTP/1.1 connection.
    activity.start_draining();

    let drain = async {
        if let Some(result) =
            http1_drain_window(conn.as_mut(), &activity, &config, peer, accepted, cause).await
        {
            return result;
        }
        conn.as_mut().graceful_shutdown();
        let age_ms = millis(accepted.elapsed());
        match activity.protocol() {
            Protocol::Http2 => tracing::debug!(
                %peer,
                age_ms,
                cause = cause.as_str(),
                "GOAWAY sent (graceful: max stream id and PING, final GOAWAY on the PING ack)"
            ),
            Protocol::Http1 if activity.in_flight() > 0 => tracing::debug!(
                %peer,
                age_ms,
                cause = cause.as_str(),
                "HTTP/1.1 response in flight gets Connection: close; closing after it"
            ),
            Protocol::Http1 => tracing::debug!(
                %peer,
                age_ms,
                cause = cause.as_str(),
                "HTTP/1.1 connection idle between requests; closing it"
            ),
            Protocol::Unknown => tracing::debug!(
                %peer,
                age_ms,
                cause = cause.as_str(),
                "graceful shutdown started before the first request"
            ),
        }
        conn.as_mut().await
    };
    // The grace bounds the whole drain, the HTTP/1.1 window included.
    let drained = match config
        .grace
        .and_then(|grace| deadline(drain_started, grace))
    {
        Some(end) => timeout_at(end, drain).await.ok(),
        None => Some(drain.await),
    };
    let age_ms = millis(accepted.elapsed());
    match drained {
        Some(result) => tracing::debug!(
            %peer,
            age_ms,
            cause = cause.as_str(),
            protocol = activity.protocol().as_str(),
            error = result.err().map(tracing::field::display),
            "connection closed gracefully"
        ),
        None => tracing::info!(
            %peer,
            age_ms,
            cause = cause.as_str(),
            in_flight = activity.in_flight(),
            "grace ended; connection closed by force"
        ),
    }
    // Dropping `conn` here closes the socket; on a forced close it also
    // drops the in-flight streams.
}

/// The HTTP/1.1 part of a drain that hyper's `graceful_shutdown()` gets
/// wrong for us: on an idle keep-alive connection it closes at once, and the
/// request a busy client sent a moment earlier (on the wire, or read in
/// part) is lost, with no `Connection: close` ever seen.
///
/// So an HTTP/1.1 connection with nothing in flight (or one whose first
/// bytes have arrived, protocol not yet known) waits up to the window for
/// its next request, which is answered with `Connection: close` (see
/// [`Activity::start_draining`]); if the window ends while a request is
/// being read, it waits for that request too (hyper's header read timeout
/// bounds that). Returns `Some` when the connection closed meanwhile (after
/// that response, or the client closed), `None` when the caller goes on with
/// `graceful_shutdown()`: a request is in flight, the window ended with
/// nothing arriving, or there is nothing to wait for (HTTP/2, a connection
/// that has not sent a byte, a zero window).
async fn http1_drain_window<C>(
    mut conn: std::pin::Pin<&mut C>,
    activity: &Activity,
    config: &Config,
    peer: Peer,
    accepted: Instant,
    cause: Cause,
) -> Option<Result<(), BoxError>>
where
    C: Future<Output = Result<(), BoxError>>,
{
    let window = config.http1_drain_window;
    let waits = match activity.protocol() {
        Protocol::Http1 => activity.in_flight() == 0,
        Protocol::Unknown => activity.is_receiving(),
        Protocol::Http2 => false,
    };
    if !waits || window.is_zero() {
        return None;
    }
    let started = activity.started();
    tracing::debug!(
        %peer,
        age_ms = millis(accepted.elapsed()),
        cause = cause.as_str(),
        window_ms = millis(window),
        receiving = activity.is_receiving(),
        "HTTP/1.1 connection idle at drain; its next request in the window gets Connection: close"
    );
    let window_end = deadline(Instant::now(), window);
    let late_request = || {
        tracing::debug!(
            %peer,
            age_ms = millis(accepted.elapsed()),
            cause = cause.as_str(),
            "HTTP/1.1 request arrived in the drain window; its response says Connection: close"
        );
    };
    // `biased`: the connection is polled first, so bytes that arrived with
    // the window's end are read (and seen) before the window is checked.
    let arrived = tokio::select! {
        biased;
        result = conn.as_mut() => {
            // hyper can read, answer and close in a single poll.
            if activity.started() > started {
                late_request();
            }
            return Some(result);
        }
        () = activity.started_after(started) => true,
        () = sleep_until_or_never(window_end) => false,
    };
    if !arrived && activity.is_receiving() {
        tracing::debug!(
            %peer,
            age_ms = millis(accepted.elapsed()),
            cause = cause.as_str(),
            "HTTP/1.1 drain window ended while a request is being read; waiting for it"
        );
        tokio::select! {
            biased;
            result = conn.as_mut() => {
                if activity.started() > started {
                    late_request();
                }
                return Some(result);
            }
            () = activity.started_after(started) => {}
        }
    } else if !arrived {
        tracing::debug!(
            %peer,
            age_ms = millis(accepted.elapsed()),
            cause = cause.as_str(),
            "HTTP/1.1 drain window ended with no request"
        );
        return None;
    }
    late_request();
    None
}
