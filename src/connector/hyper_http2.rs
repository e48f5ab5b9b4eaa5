//! [`HyperConnector`] and [`HyperConnection`]: hyper's own HTTP/2 client
//! connection (`hyper::client::conn::http2`) as an ageable connection.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use http::{Request, Response, Uri};
use http_body::Body;
use hyper::body::Incoming;
use hyper::client::conn::http2::{Builder, SendRequest};
use hyper::rt::{Read, Write};
use hyper_util::client::legacy::connect::{Connection as TransportInfo, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tower_service::Service;

use super::handle::{AgeableConnection, ConnectionHandle};
use super::shared::SharedConnection;
use super::{ClosableIo, alpn_refused, future::sorted};
use crate::error::{self, BoxError, Error, ErrorKind};
use crate::outcome::{Stage, classify_wrapped};

/// One request's response on a [`HyperConnection`]. (hyper's
/// `try_send_request` returns an unnameable future, hence the box.)
pub type HyperResponseFuture =
    Pin<Box<dyn Future<Output = Result<Response<Incoming>, Error>> + Send>>;

/// hyper's HTTP/2 `SendRequest` with a handle on its transport, so that
/// [`MaxConnectionAgeLayer`](crate::MaxConnectionAgeLayer) can age it,
/// drain it and close it by force, and [`Client`](crate::Client) can pick
/// it.
///
/// Errors join the replay protocol: a request hyper hands back unsent (the
/// connection closed before its dispatch task took it) comes back as
/// [`Error::unsent`], and one the server provably did not process
/// (`REFUSED_STREAM`, or above a `GOAWAY`'s last-stream-id, read from the
/// `h2::Error` inside hyper's error) as [`ErrorKind::Refused`] with the
/// request's head. For that head, each request's method, URI and headers
/// are copied before hyper takes it.
///
/// hyper queues requests above the server's stream limit inside its
/// dispatch task. [`HyperConnector`]'s connection task publishes the
/// server's limit after each turn (hyper 1.12's
/// `Connection::current_max_send_streams`), so `Client` keeps each
/// connection under it and waits for room, or opens an extra connection,
/// as it does over h2's; a connection made by hand with
/// [`new`](Self::new) has no known limit and lets hyper queue. hyper's own
/// keepalive (`Builder::keep_alive_interval`) applies, not the crate's.
///
/// Made by [`HyperConnector`], or by hand from a handshake of your own:
///
/// ```no_run
/// # async fn doc(tcp: tokio::net::TcpStream) -> Result<(), Box<dyn std::error::Error>> {
/// use bytes::Bytes;
/// use http_body_util::Empty;
/// use hyper_util::rt::{TokioExecutor, TokioIo};
/// use tower_max_connection_age::connector::{ClosableIo, HyperConnection};
///
/// // The handle closes the socket by force after the drain timeout.
/// let (io, handle) = ClosableIo::new(TokioIo::new(tcp));
/// let (send, connection) = hyper::client::conn::http2::handshake::<_, _, Empty<Bytes>>(
///     TokioExecutor::new(),
///     io,
/// )
/// .await?;
/// tokio::spawn(connection);
/// let connection = HyperConnection::new(send, handle);
/// # let _ = connection;
/// # Ok(())
/// # }
/// ```
pub struct HyperConnection<B> {
    send: SendRequest<B>,
    handle: ConnectionHandle,
    /// The server's stream limit, as the connection task last read it.
    max_streams: Arc<AtomicUsize>,
}

impl<B> HyperConnection<B> {
    /// Wraps `send`; `handle` must be the one of its transport (from
    /// [`ClosableIo::new`](super::ClosableIo::new), or a
    /// [`ConnectionHandle`] whose owner marks it closed when hyper's
    /// connection task ends).
    pub fn new(send: SendRequest<B>, handle: ConnectionHandle) -> Self {
        HyperConnection {
            send,
            handle,
            max_streams: Arc::new(AtomicUsize::new(usize::MAX)),
        }
    }

    /// hyper's sender.
    pub fn get_ref(&self) -> &SendRequest<B> {
        &self.send
    }

    /// hyper's sender, mutably.
    pub fn get_mut(&mut self) -> &mut SendRequest<B> {
        &mut self.send
    }

    /// hyper's sender and the transport's handle.
    pub fn into_inner(self) -> (SendRequest<B>, ConnectionHandle) {
        (self.send, self.handle)
    }
}

impl<B> Clone for HyperConnection<B> {
    fn clone(&self) -> Self {
        HyperConnection {
            send: self.send.clone(),
            handle: self.handle.clone(),
            max_streams: self.max_streams.clone(),
        }
    }
}

impl<B> fmt::Debug for HyperConnection<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HyperConnection")
            .field("handle", &self.handle)
            .field("closed", &self.send.is_closed())
            .finish()
    }
}

impl<B> AgeableConnection for HyperConnection<B> {
    fn handle(&self) -> ConnectionHandle {
        self.handle.clone()
    }
}

/// Sends `request` on `send`, sorting a failure into the replay protocol.
fn send_on<B>(send: &mut SendRequest<B>, request: Request<B>) -> HyperResponseFuture
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let head = head_of(&request);
    let sent = send.try_send_request(request);
    Box::pin(async move {
        match sent.await {
            Ok(response) => Ok(response),
            Err(mut failed) => match failed.take_message() {
                Some(request) => Err(Error::unsent(request)
                    .with_message("hyper's connection closed before it took the request")
                    .with_source(failed.into_error())),
                None => Err(stream_failure(failed.into_error(), head)),
            },
        }
    })
}

/// A failed request as this crate's error, from the `h2::Error` inside
/// hyper's (sorted in `outcome`, the one place h2's errors are read).
/// hyper reports a stream that could not be opened and one that failed
/// later the same way, so both are sorted as streams: only a remote
/// `REFUSED_STREAM` or `GOAWAY` says "unprocessed", which holds for both.
fn stream_failure(e: hyper::Error, head: Request<()>) -> Error {
    let verdict = classify_wrapped(&e, Stage::Stream);
    let error = sorted(verdict, e);
    match error.kind() {
        ErrorKind::Refused => error.with_request(head),
        _ => error,
    }
}

/// The request's head, for a replay after `REFUSED_STREAM`.
fn head_of<B>(request: &Request<B>) -> Request<()> {
    let mut head = Request::new(());
    *head.method_mut() = request.method().clone();
    *head.uri_mut() = request.uri().clone();
    *head.version_mut() = request.version();
    *head.headers_mut() = request.headers().clone();
    *head.extensions_mut() = request.extensions().clone();
    head
}

impl<B> Service<Request<B>> for HyperConnection<B>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = Response<Incoming>;
    type Error = Error;
    type Future = HyperResponseFuture;

    /// Fails once hyper's connection has closed, so tower's balancer drops
    /// it.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.send.poll_ready(cx).map_err(|e| {
            Error::new(ErrorKind::Draining)
                .with_message("hyper's connection has closed")
                .with_source(e)
        })
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        send_on(&mut self.send, request)
    }
}

impl<B> SharedConnection<B> for HyperConnection<B>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Body = Incoming;
    type Future = HyperResponseFuture;

    /// On a clone of hyper's sender (a channel sender: hyper's dispatch
    /// task owns the connection).
    fn send(&self, request: Request<B>) -> Result<HyperResponseFuture, Error> {
        Ok(send_on(&mut self.send.clone(), request))
    }

    fn is_open(&self) -> bool {
        !self.send.is_closed() && !self.handle.is_closed()
    }

    /// The server's `SETTINGS_MAX_CONCURRENT_STREAMS` as hyper's h2 applies
    /// it (unknown, `usize::MAX`, on a connection made by hand).
    fn max_concurrent_streams(&self) -> usize {
        self.max_streams.load(Ordering::Relaxed)
    }
}

/// Makes a [`HyperConnection`] per call: connects with any hyper-util
/// connector, runs hyper's HTTP/2 handshake with your
/// `hyper::client::conn::http2::Builder` (its settings, its keepalive), and
/// spawns hyper's connection task. The transport is wrapped in a
/// [`ClosableIo`], so the age layer can close it by force.
///
/// A hyper stack goes under the age layer, into tower's balancer or into
/// [`Client`](crate::Client) with
/// [`build_with`](crate::client::ClientBuilder::build_with):
///
/// ```no_run
/// # async fn doc() -> Result<(), tower_max_connection_age::Error> {
/// use std::time::Duration;
/// use bytes::Bytes;
/// use http_body_util::Full;
/// use tower::Layer;
/// use tower_max_connection_age::replay::ReplayBody;
/// use tower_max_connection_age::connector::HyperConnector;
/// use tower_max_connection_age::{Client, MaxConnectionAgeLayer};
///
/// // Under the age layer, for tower's Balance or a RotatingDiscover:
/// let make = MaxConnectionAgeLayer::new(Duration::from_secs(300))
///     .layer(HyperConnector::<_, Full<Bytes>>::http());
/// # let _ = make;
///
/// // Or as the connections of a Client:
/// let client = Client::builder()
///     .endpoint("http://10.0.0.1:8080".parse().unwrap())
///     .max_connection_age(Duration::from_secs(300))
///     .build_with::<Full<Bytes>, _>(HyperConnector::<_, ReplayBody<Full<Bytes>>>::http())?;
/// # let _ = client;
/// # Ok(())
/// # }
/// ```
pub struct HyperConnector<C, B> {
    connector: C,
    builder: Builder<TokioExecutor>,
    _body: PhantomData<fn(B)>,
}

impl<B> HyperConnector<HttpConnector, B> {
    /// Plain TCP (`HttpConnector` with `TCP_NODELAY`) and hyper's HTTP/2
    /// defaults, with Tokio's timer (for hyper's keepalive and timeouts).
    pub fn http() -> Self {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        let mut builder = Builder::new(TokioExecutor::new());
        builder.timer(TokioTimer::new());
        HyperConnector::new(http, builder)
    }
}

impl<C, B> HyperConnector<C, B> {
    /// Connects with `connector` and hands the transport to `builder`.
    pub fn new(connector: C, builder: Builder<TokioExecutor>) -> Self {
        HyperConnector {
            connector,
            builder,
            _body: PhantomData,
        }
    }

    crate::accessors::inner_accessors!(connector: C, "the wrapped transport connector");
}

impl<C: Clone, B> Clone for HyperConnector<C, B> {
    fn clone(&self) -> Self {
        HyperConnector {
            connector: self.connector.clone(),
            builder: self.builder.clone(),
            _body: PhantomData,
        }
    }
}

impl<C: fmt::Debug, B> fmt::Debug for HyperConnector<C, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HyperConnector")
            .field("connector", &self.connector)
            .field("builder", &self.builder)
            .finish()
    }
}

impl<C, B> Service<Uri> for HyperConnector<C, B>
where
    C: Service<Uri> + Clone + Send + 'static,
    C::Response: Read + Write + TransportInfo + Unpin + Send + 'static,
    C::Error: Into<BoxError>,
    C::Future: Send,
    B: Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = HyperConnection<B>;
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<HyperConnection<B>, Error>> + Send>>;

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
        let counted = crate::metrics::Endpoint::of(&target);
        let connect = async move {
            let io = connector.call(target.clone()).await.map_err(|e| {
                error::from_box(e.into(), ErrorKind::Connect).with_message(target.to_string())
            })?;
            if let Some(message) = alpn_refused(&target, &io) {
                return Err(
                    Error::new(ErrorKind::Connect).with_message(format!("{target}: {message}"))
                );
            }
            let (io, handle) = ClosableIo::new(io);
            let (send, connection) = builder.handshake(io).await.map_err(|e| {
                Error::new(ErrorKind::Connect)
                    .with_message(format!("{target}: hyper's HTTP/2 handshake failed"))
                    .with_source(e)
            })?;
            let made = HyperConnection::new(send, handle);
            let max_streams = made.max_streams.clone();
            tokio::spawn(async move {
                // After each turn, the server's stream limit as hyper's h2
                // applies it, for the pick (one lock inside hyper per turn,
                // none per request).
                let mut connection = std::pin::pin!(connection);
                let ended = std::future::poll_fn(|cx| {
                    let polled = connection.as_mut().poll(cx);
                    max_streams.store(connection.current_max_send_streams(), Ordering::Relaxed);
                    polled
                })
                .await;
                if let Err(e) = ended {
                    tracing::debug!(error = %error::chain(&e), "hyper's HTTP/2 connection ended");
                }
            });
            Ok(made)
        };
        Box::pin(counted.connecting(connect))
    }
}
