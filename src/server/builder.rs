//! [`Builder`]: the server's settings, checked once in [`Builder::build`].

use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;

use super::Server;
use crate::Error;
use crate::jitter::default_jitter;

/// The settings every connection task reads.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) age: Option<Duration>,
    pub(crate) jitter: Duration,
    pub(crate) grace: Option<Duration>,
    pub(crate) idle: Option<Duration>,
    pub(crate) http1_drain_window: Duration,
    pub(crate) accept_error_backoff: Duration,
    pub(crate) tcp_nodelay: bool,
}

/// The default [`Builder::http1_drain_window`]: long enough for a busy
/// client's next request to arrive (it sends within a round trip of its last
/// response), short enough not to hold an idle connection, or a shutdown,
/// for long.
pub const DEFAULT_HTTP1_DRAIN_WINDOW: Duration = Duration::from_millis(500);

/// Builds a [`Server`]; start from [`Server::builder`].
///
/// Every duration is optional and off by default, like grpc-go's keepalive
/// enforcement: a server built with no settings never closes a connection on
/// its own. Invalid settings are reported by [`build`](Builder::build) as an
/// [`ErrorKind::Config`](crate::ErrorKind::Config) error; no setter panics.
/// Any duration longer than about 30 years, `Duration::MAX` included, means
/// "never" (adding it to a clock reading would overflow, so no deadline is
/// made); no value of these settings makes a connection panic.
///
/// ```
/// use std::time::Duration;
/// use tower_max_connection_age::server::Server;
///
/// let server = Server::builder()
///     .max_connection_age(Duration::from_secs(300))
///     .max_connection_age_grace(Duration::from_secs(30))
///     .build()
///     .expect("valid settings");
/// # let _ = server;
///
/// let err = Server::builder()
///     .max_connection_age(Duration::from_secs(10))
///     .max_connection_age_jitter(Duration::from_secs(10))
///     .build()
///     .unwrap_err();
/// assert!(err.is_config());
/// ```
#[derive(Debug, Clone)]
pub struct Builder {
    age: Option<Duration>,
    jitter: Option<Duration>,
    grace: Option<Duration>,
    idle: Option<Duration>,
    http1_drain_window: Duration,
    accept_error_backoff: Duration,
    tcp_nodelay: bool,
    http: auto::Builder<TokioExecutor>,
}

impl Default for Builder {
    fn default() -> Self {
        Builder::new()
    }
}

impl Builder {
    /// A builder with every limit off, `TCP_NODELAY` on, a 100 ms accept error
    /// backoff, a 500 ms HTTP/1.1 drain window, and hyper-util's auto (HTTP/1.1 + HTTP/2) connection builder
    /// on the tokio executor and timer.
    pub fn new() -> Self {
        let mut http = auto::Builder::new(TokioExecutor::new());
        // hyper's HTTP/1 header read timeout (30 s by default) and HTTP/2
        // keep-alive need a timer to work at all.
        http.http1().timer(TokioTimer::new());
        http.http2().timer(TokioTimer::new());
        Builder {
            age: None,
            jitter: None,
            grace: None,
            idle: None,
            http1_drain_window: DEFAULT_HTTP1_DRAIN_WINDOW,
            accept_error_backoff: Duration::from_millis(100),
            tcp_nodelay: true,
            http,
        }
    }

    /// How long a connection may live before the server asks the client to go
    /// away: a two-phase GOAWAY on HTTP/2 (`GOAWAY(2^31-1)` and a PING, then
    /// the final GOAWAY once the PING is answered), or `Connection: close` on
    /// the next HTTP/1.1 response. Requests in flight finish (see
    /// [`max_connection_age_grace`](Self::max_connection_age_grace)); new ones
    /// go to a new connection, which makes the client resolve and balance
    /// again.
    ///
    /// Default: none, connections live as long as the client keeps them.
    /// Zero is rejected by [`build`](Self::build); `Duration::MAX` is the
    /// same as none. grpc-go: `MaxConnectionAge`.
    pub fn max_connection_age(mut self, age: Duration) -> Self {
        self.age = Some(age);
        self
    }

    /// Spreads each connection's age uniformly over `[age - jitter, age +
    /// jitter]`, so connections opened together do not drain together.
    ///
    /// Default: a tenth of the age (±10%, as grpc-go). `Duration::ZERO` turns
    /// jitter off (every connection gets exactly the age, as in tonic). A
    /// jitter not below the age (`Duration::MAX` always is), or a jitter
    /// without an age, is rejected by [`build`](Self::build): an age minus
    /// such a jitter could be zero.
    pub fn max_connection_age_jitter(mut self, jitter: Duration) -> Self {
        self.jitter = Some(jitter);
        self
    }

    /// How long a draining connection may take to finish its in-flight
    /// requests before it is closed by force (its task drops the connection,
    /// which resets the streams and closes the socket).
    ///
    /// It applies to every drain: age, idle, and server shutdown.
    ///
    /// Default: none, a draining connection waits for its in-flight requests
    /// however long they take. Zero is rejected by [`build`](Self::build);
    /// `Duration::MAX` is the same as none. grpc-go: `MaxConnectionAgeGrace`.
    pub fn max_connection_age_grace(mut self, grace: Duration) -> Self {
        self.grace = Some(grace);
        self
    }

    /// How long a connection may stay without a request in flight before the
    /// server drains it the same way as at its age. A request counts as in
    /// flight until its response body has been sent.
    ///
    /// Default: none. Zero is rejected by [`build`](Self::build);
    /// `Duration::MAX` is the same as none. grpc-go: `MaxConnectionIdle`.
    pub fn max_connection_idle(mut self, idle: Duration) -> Self {
        self.idle = Some(idle);
        self
    }

    /// How long a draining HTTP/1.1 connection with no request in flight
    /// (at its age, when idle too long, or at shutdown) stays open for its
    /// next request, which is answered with `Connection: close`; then it is
    /// closed.
    ///
    /// HTTP/1.1 has no `GOAWAY`: a server can only say `Connection: close` on
    /// a response, or close. Closing an idle keep-alive connection at once
    /// (what hyper's `graceful_shutdown()` does) loses the request a busy
    /// client sent a moment earlier, and the client never learns why. With
    /// the window, a busy client's next request gets an answer and the
    /// `Connection: close` that sends it to a new connection. A request still
    /// being read when the window ends is waited for (hyper's header read
    /// timeout bounds that). A request sent after the window meets a closed
    /// connection, as with any keep-alive timeout.
    ///
    /// The grace ([`max_connection_age_grace`](Self::max_connection_age_grace))
    /// bounds the window too. HTTP/2 connections do not use it: their
    /// two-phase `GOAWAY` already covers requests on the wire.
    ///
    /// Default: [`DEFAULT_HTTP1_DRAIN_WINDOW`] (500 ms). `Duration::ZERO`
    /// closes idle HTTP/1.1 connections at once, as hyper does; anything
    /// over about 30 years (`Duration::MAX`) waits for the next request however
    /// long it takes (or the grace, or the client closing).
    pub fn http1_drain_window(mut self, window: Duration) -> Self {
        self.http1_drain_window = window;
        self
    }

    /// How long to wait after an accept error that is not about one connection
    /// (for example `EMFILE`: out of file descriptors) before accepting again.
    /// Errors about one connection (reset or aborted while in the backlog) are
    /// followed by the next accept at once. Every accept error is logged; none
    /// stops the server.
    ///
    /// Default: 100 ms. Zero is rejected by [`build`](Self::build): it would
    /// spin on a persistent error. `Duration::MAX` never accepts again after
    /// such an error (the shutdown signal still works); it does not panic,
    /// but it is rarely what a server wants.
    pub fn accept_error_backoff(mut self, backoff: Duration) -> Self {
        self.accept_error_backoff = backoff;
        self
    }

    /// Whether accepted TCP connections get `TCP_NODELAY`, so small gRPC
    /// frames are not held back by Nagle's algorithm. Only applies to
    /// [`Server::serve`] and [`Server::serve_with_shutdown`].
    ///
    /// Default: `true` (as tonic).
    pub fn tcp_nodelay(mut self, enabled: bool) -> Self {
        self.tcp_nodelay = enabled;
        self
    }

    /// The hyper-util connection builder, to tune HTTP/1.1 and HTTP/2
    /// (`max_concurrent_streams`, keep-alive pings, window sizes,
    /// `http2_only`, ...).
    ///
    /// Default: `auto::Builder::new(TokioExecutor::new())` with a
    /// `TokioTimer`: it serves HTTP/1.1 and HTTP/2 with prior knowledge (h2c)
    /// on the same port, telling them apart by the HTTP/2 preface.
    ///
    /// Durations set here are hyper's, and hyper 1.12 adds them to the clock
    /// unchecked: `http1().header_read_timeout(Duration::MAX)` or
    /// `http2().keep_alive_interval(Duration::MAX)` makes every connection's
    /// task panic (`overflow when adding duration to instant`). Turn those
    /// off with their `None` form instead, or keep them realistic; this
    /// builder cannot read them back to check.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_max_connection_age::server::Server;
    ///
    /// let mut builder = Server::builder().max_connection_age(Duration::from_secs(60));
    /// builder
    ///     .http_builder()
    ///     .http2()
    ///     .max_concurrent_streams(256)
    ///     .keep_alive_interval(Duration::from_secs(20));
    /// let server = builder.build().unwrap();
    /// # let _ = server;
    /// ```
    pub fn http_builder(&mut self) -> &mut auto::Builder<TokioExecutor> {
        &mut self.http
    }

    /// Checks the settings and returns the [`Server`].
    ///
    /// # Errors
    ///
    /// An [`ErrorKind::Config`](crate::ErrorKind::Config) error when a
    /// duration is zero, when the jitter is not below the age, or when a
    /// jitter is set without an age.
    pub fn build(self) -> Result<Server, Error> {
        fn nonzero(name: &'static str, value: Option<Duration>) -> Result<(), Error> {
            match value {
                Some(d) if d.is_zero() => {
                    Err(Error::config(format!("{name} must be greater than zero")))
                }
                _ => Ok(()),
            }
        }
        nonzero("max_connection_age", self.age)?;
        nonzero("max_connection_age_grace", self.grace)?;
        nonzero("max_connection_idle", self.idle)?;
        nonzero("accept_error_backoff", Some(self.accept_error_backoff))?;
        let jitter = match (self.age, self.jitter) {
            (None, Some(_)) => {
                return Err(Error::config(
                    "max_connection_age_jitter is set but max_connection_age is not",
                ));
            }
            (Some(age), Some(jitter)) if jitter >= age => {
                return Err(Error::config(format!(
                    "max_connection_age_jitter ({jitter:?}) must be less than \
                     max_connection_age ({age:?})"
                )));
            }
            (Some(_), Some(jitter)) => jitter,
            (Some(age), None) => default_jitter(age),
            (None, None) => Duration::ZERO,
        };
        Ok(Server::from_parts(
            Config {
                age: self.age,
                jitter,
                grace: self.grace,
                idle: self.idle,
                http1_drain_window: self.http1_drain_window,
                accept_error_backoff: self.accept_error_backoff,
                tcp_nodelay: self.tcp_nodelay,
            },
            self.http,
        ))
    }
}
