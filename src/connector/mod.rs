//! [`Http2Connector`]: HTTP/2 client connections on h2, as tower services.
//!
//! Requests go to h2 straight from the caller's task. hyper's HTTP/2 client
//! hands each request to a dispatch task over a channel and spawns one more
//! task per request to wait for its response; at concurrency 1 those hops
//! cost more than everything else this crate does per request (`loadgen
//! --layers`). h2 also says exactly which failed streams the server never
//! processed: it fails a stream with the server's `GOAWAY` only when the
//! stream is above the `GOAWAY`'s last-stream-id.
//!
//! A connection counts as made only once the server has spoken: h2's
//! handshake returns as soon as the client's preface is *written*, so the
//! connector sends a `PING` with it and waits for the answer, which a
//! server sends after its `SETTINGS` (RFC 9113 §3.4). A peer that accepts
//! TCP and never speaks fails the connect at the connect timeout, a peer
//! that answers in HTTP/1.1 fails it at once, and the server's stream limit
//! is known before the first request.
//!
//! With feature `rustls`, `RustlsConnector` is a TLS transport connector
//! for pods dialed by IP address: it verifies them against a server name
//! (the service's) instead of the address, and offers ALPN `h2` alone.

mod body;
mod connection;
mod driver;
mod future;
mod handle;
mod head;
mod hyper_http2;
mod io;
mod pipe;
mod shared;
#[cfg(feature = "rustls")]
mod tls;

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Uri;
use http_body::Body;
use hyper::rt::{Read, Write};
use hyper_util::client::legacy::connect::{Connection as TransportInfo, HttpConnector};
use hyper_util::rt::TokioIo;
use tower_service::Service;

pub use body::Http2Body;
pub use connection::Http2Connection;
pub(crate) use driver::KeepAliveConfig;
use driver::PingBackoff;
pub use future::ResponseFuture;
pub use handle::{AgeableConnection, ClosedOnDrop, ConnectionHandle};
pub use hyper_http2::{HyperConnection, HyperConnector, HyperResponseFuture};
pub use io::ClosableIo;
pub use shared::SharedConnection;
#[cfg(feature = "rustls")]
pub(crate) use tls::server_name_of;
#[cfg(feature = "rustls")]
pub use tls::{RustlsConnector, RustlsStream};

use crate::error::{self, BoxError, Error, ErrorKind};
use crate::outcome::ConnectionEnd;
use driver::{Driver, Signals};

/// The default [`connect_timeout`](Http2Connector::connect_timeout): 10 s.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The default [`keep_alive_interval`](Http2Connector::keep_alive_interval):
/// 10 s, the shortest grpc-go's client allows.
pub const DEFAULT_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(10);

/// The default [`keep_alive_timeout`](Http2Connector::keep_alive_timeout): 10 s.
pub const DEFAULT_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// The default [`keep_alive_max_pings_without_data`](Http2Connector::keep_alive_max_pings_without_data):
/// 2, as gRPC C-core's client (`grpc.http2.max_pings_without_data`).
pub const DEFAULT_KEEP_ALIVE_MAX_PINGS_WITHOUT_DATA: u32 = 2;

/// Makes one [`Http2Connection`] per call: connects with any hyper-util
/// connector (`HttpConnector`, or the TLS connector you bring), runs the
/// HTTP/2 handshake with your `h2::client::Builder`, and waits until the
/// server has answered (its `SETTINGS` and a `PING`).
///
/// `B` is the request body type the connections send.
///
/// ```
/// use hyper_util::client::legacy::connect::HttpConnector;
/// use tower_max_connection_age::Http2Connector;
/// use tower_max_connection_age::connector::default_builder;
///
/// let mut http = HttpConnector::new();
/// http.set_nodelay(true);
/// let mut h2 = default_builder();
/// h2.initial_window_size(4 * 1024 * 1024);
/// let connector = Http2Connector::<_, http_body_util::Full<bytes::Bytes>>::new(http, h2);
/// # let _ = connector;
/// ```
pub struct Http2Connector<C, B> {
    connector: C,
    builder: h2::client::Builder,
    connect_timeout: Duration,
    keep_alive: KeepAliveConfig,
    /// Shared by every connection this connector (and its clones) makes.
    ping_backoff: Arc<PingBackoff>,
    _body: PhantomData<fn(B)>,
}

impl<B> Http2Connector<HttpConnector, B> {
    /// Plain-text HTTP/2 (h2c, prior knowledge) over TCP with `TCP_NODELAY`,
    /// and [`default_builder`]'s settings.
    pub fn http() -> Self {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.enforce_http(false);
        Http2Connector::new(http, default_builder())
    }
}

/// h2's client builder with hyper's client defaults, so switching from a
/// hyper client changes no window or frame size: stream window 2 MiB,
/// connection window 5 MiB, frames of 16 KiB, up to 1 MiB buffered per
/// stream, header lists of up to 16 KiB, server push off, and at most 100
/// streams until the server's `SETTINGS` say how many it takes (h2's own
/// default is unlimited, which sends a burst of refused streams to a server
/// with a lower limit).
pub fn default_builder() -> h2::client::Builder {
    let mut builder = h2::client::Builder::new();
    builder
        .initial_window_size(2 * 1024 * 1024)
        .initial_connection_window_size(5 * 1024 * 1024)
        .max_frame_size(16 * 1024)
        .max_send_buffer_size(1024 * 1024)
        .max_header_list_size(16 * 1024)
        .initial_max_send_streams(100)
        .enable_push(false);
    builder
}

impl<C, B> Http2Connector<C, B> {
    /// Connects with `connector` and handshakes with `builder`.
    pub fn new(connector: C, builder: h2::client::Builder) -> Self {
        Http2Connector {
            connector,
            builder,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            keep_alive: KeepAliveConfig::default(),
            ping_backoff: Arc::default(),
            _body: PhantomData,
        }
    }

    pub(crate) fn keep_alive_config(mut self, config: KeepAliveConfig) -> Self {
        self.keep_alive = config;
        self
    }

    /// How often each connection sends an HTTP/2 `PING` while requests are
    /// in flight, to find a peer that died without a FIN or RST (a crashed
    /// node, a network partition): otherwise its requests hang until the
    /// kernel gives up on the connection, typically after 15 minutes.
    /// `None` turns keepalive off. Default:
    /// [`DEFAULT_KEEP_ALIVE_INTERVAL`] (10 s; hyper's and grpc-go's clients
    /// have it off by default, grpc-go allows no less than 10 s).
    pub fn keep_alive_interval(mut self, interval: impl Into<Option<Duration>>) -> Self {
        self.keep_alive.interval = interval.into();
        self
    }

    /// How long a keepalive `PING` may go unanswered: then the connection is
    /// closed, takes no new request, and its in-flight requests fail. The
    /// age layer (and so [`Client`](crate::Client)) sorts those failures as
    /// [`ErrorKind::KeepAlive`]; a bare [`Http2Connection`] reports them as
    /// [`ErrorKind::Request`] caused by the force-close, and its
    /// [`handle`](AgeableConnection::handle) says
    /// [`keep_alive_timed_out`](crate::age::ConnectionHandle::keep_alive_timed_out)
    /// (sorting there would cost every request a reference count). Default:
    /// [`DEFAULT_KEEP_ALIVE_TIMEOUT`] (10 s; hyper's is 20 s).
    pub fn keep_alive_timeout(mut self, timeout: Duration) -> Self {
        self.keep_alive.timeout = timeout;
        self
    }

    /// Whether to `PING` with no request in flight too. Default: false, as
    /// hyper and grpc-go (grpc-go servers answer pings on idle connections
    /// more often than every 5 minutes with `GOAWAY(ENHANCE_YOUR_CALM)`).
    pub fn keep_alive_while_idle(mut self, enabled: bool) -> Self {
        self.keep_alive.while_idle = enabled;
        self
    }

    /// Keepalive `PING`s allowed while the server sends no HEADERS or DATA,
    /// before the next ones keep 5 minutes apart: gRPC servers (grpc-go,
    /// C-core) count a ping sooner than 5 minutes after the previous one as
    /// a strike unless they sent something in between, and close the
    /// connection, its streams with it, at the third. So a stream the
    /// server keeps silent for minutes survives, and a peer that dies is
    /// still found by the first ping after it stopped. The server's HEADERS
    /// and DATA are noted by [`MaxConnectionAgeLayer`](crate::MaxConnectionAgeLayer)
    /// as responses arrive (so by [`Client`](crate::Client)); a bare
    /// [`Http2Connection`] notes none, and so counts all its time as
    /// silence. `0` removes the limit (pings at every interval of silence,
    /// as before). Default:
    /// [`DEFAULT_KEEP_ALIVE_MAX_PINGS_WITHOUT_DATA`] (2, as C-core's client).
    pub fn keep_alive_max_pings_without_data(mut self, n: u32) -> Self {
        self.keep_alive.max_pings_without_data = n;
        self
    }

    /// How long the transport connect, the handshake and the server's first
    /// answer may take together; past it the connect fails with an error
    /// that says which step did not finish. Default:
    /// [`DEFAULT_CONNECT_TIMEOUT`] (10 s); longer than about 30 years counts
    /// as 30 years.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    crate::accessors::inner_accessors!(connector: C, "the wrapped transport connector");
}

impl<C: Clone, B> Clone for Http2Connector<C, B> {
    fn clone(&self) -> Self {
        Http2Connector {
            connector: self.connector.clone(),
            builder: self.builder.clone(),
            connect_timeout: self.connect_timeout,
            keep_alive: self.keep_alive,
            ping_backoff: self.ping_backoff.clone(),
            _body: PhantomData,
        }
    }
}

impl<C: fmt::Debug, B> fmt::Debug for Http2Connector<C, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Http2Connector")
            .field("connector", &self.connector)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

pub(super) type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T, Error>> + Send>>;

impl<C, B> Service<Uri> for Http2Connector<C, B>
where
    C: Service<Uri> + Clone + Send + 'static,
    C::Response: Read + Write + TransportInfo + Unpin + Send + 'static,
    C::Error: Into<BoxError>,
    C::Future: Send,
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Http2Connection<B>;
    type Error = Error;
    type Future = BoxFuture<Http2Connection<B>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.connector
            .poll_ready(cx)
            .map_err(|e| error::from_box(e.into(), ErrorKind::Connect))
    }

    fn call(&mut self, target: Uri) -> Self::Future {
        // The clone is the ready one; keep a fresh clone for the next call.
        let clone = self.connector.clone();
        let mut connector = std::mem::replace(&mut self.connector, clone);
        let builder = self.builder.clone();
        let keep_alive = self.keep_alive;
        let ping_backoff = self.ping_backoff.clone();
        if let Err(error) = keep_alive.validate() {
            return Box::pin(std::future::ready(Err(error)));
        }
        // Fixed now, so that it never ends after a caller's timeout started
        // at the same moment (see `RotatingDiscover`'s connect timeout).
        let timeout = crate::time::saturate(self.connect_timeout);
        let deadline = tokio::time::Instant::now() + timeout;
        let counted = crate::metrics::Endpoint::of(&target);
        let connect = async move {
            let failed = |message: String| {
                Error::new(ErrorKind::Connect).with_message(format!("{target}: {message}"))
            };
            let io = match tokio::time::timeout_at(deadline, connector.call(target.clone())).await {
                Ok(io) => {
                    io.map_err(|e| error::from_box(e.into(), ErrorKind::Connect).context(&target))?
                }
                Err(_) => {
                    crate::metrics::connect_timeout(&target);
                    return Err(failed(format!(
                        "the transport connect did not finish within {timeout:?}"
                    )));
                }
            };
            if let Some(message) = alpn_refused(&target, &io) {
                return Err(failed(message.into()));
            }
            let (io, handle) = ClosableIo::new(io);
            let (send, mut connection) = builder
                .handshake::<_, Bytes>(TokioIo::new(io))
                .await
                .map_err(|e| failed("HTTP/2 handshake failed".into()).with_source(e))?;
            let mut ping_pong = connection.ping_pong();
            let spoke = tokio::time::timeout_at(
                deadline,
                first_answer(&mut connection, ping_pong.as_mut()),
            )
            .await;
            match spoke {
                Ok(Ok(())) => {}
                Ok(Err(NoAnswer { message, source })) => {
                    let error = failed(message.into());
                    return Err(match source {
                        Some(source) => error.with_source(source),
                        None => error,
                    });
                }
                Err(_) => {
                    crate::metrics::connect_timeout(&target);
                    return Err(failed(format!(
                        "the server accepted the connection but sent no HTTP/2 SETTINGS \
                         within {timeout:?} (a silent or hung peer)"
                    )));
                }
            }
            let signals = Signals::new(connection.max_concurrent_send_streams());
            tokio::spawn(Driver::new(
                connection,
                send.clone(),
                signals.clone(),
                handle.clone(),
                ping_pong.map(|ping| (keep_alive, ping, ping_backoff)),
                crate::metrics::Endpoint::of(&target),
            ));
            Ok(Http2Connection::new(send, handle, signals))
        };
        Box::pin(counted.connecting(connect))
    }
}

const CLOSED_BEFORE_SETTINGS: &str = "the connection closed (or was reset) before the server's \
     HTTP/2 SETTINGS: the server does not speak HTTP/2 with prior knowledge (an HTTP/1.1-only \
     server closes like this), or it shed the connection";

/// Why the server's first answer did not come.
struct NoAnswer {
    message: &'static str,
    source: Option<h2::Error>,
}

/// Drives the new connection until the server answers a `PING` (and so has
/// sent its `SETTINGS`, which come first), or until the connection fails.
async fn first_answer<T>(
    connection: &mut h2::client::Connection<T, Bytes>,
    ping_pong: Option<&mut h2::PingPong>,
) -> Result<(), NoAnswer>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let Some(ping_pong) = ping_pong else {
        // Taken once per connection, just before: never `None`. Without it
        // the connection still works; it just counts as made at once.
        return Ok(());
    };
    let ended = tokio::select! {
        pong = ping_pong.ping(h2::Ping::opaque()) => match pong {
            Ok(_) => return Ok(()),
            Err(e) => e,
        },
        ended = &mut *connection => match ended {
            Ok(()) => {
                return Err(NoAnswer {
                    message: CLOSED_BEFORE_SETTINGS,
                    source: None,
                });
            }
            Err(e) => e,
        },
    };
    let message = match ConnectionEnd::of(&ended) {
        // An HTTP/1.1-only server closes on the preface, with a RST when
        // our SETTINGS and PING were still unread: the same as a clean close.
        ConnectionEnd::Io => CLOSED_BEFORE_SETTINGS,
        ConnectionEnd::GoAway(_) | ConnectionEnd::Remote => {
            "the server refused the HTTP/2 connection"
        }
        // h2 could not parse what came back: not HTTP/2 frames. An HTTP/1.x
        // server answering the preface looks like this.
        ConnectionEnd::Local => {
            "the server does not speak HTTP/2 (prior knowledge): its answer is not HTTP/2 frames, \
             as an HTTP/1.1-only server answers"
        }
    };
    Err(NoAnswer {
        message,
        source: Some(ended),
    })
}

/// Why a transport to an `https` target cannot carry HTTP/2: TLS did not
/// choose `h2` by ALPN. (Sending the preface anyway would reach an
/// HTTP/1.1 server as garbage.)
pub(crate) fn alpn_refused(target: &Uri, io: &impl TransportInfo) -> Option<&'static str> {
    (target.scheme() == Some(&http::uri::Scheme::HTTPS) && !io.connected().is_negotiated_h2())
        .then_some(
            "TLS did not negotiate HTTP/2 (ALPN `h2`): the server offers only HTTP/1.1, \
             or the TLS connector does not ask for `h2`",
        )
}
