//! [`Http2Connector`]: hyper's HTTP/2 client connections as tower services.

mod io;

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::TryFutureExt;
use http::{Request, Response, Uri};
use http_body::Body;
use hyper::body::Incoming;
use hyper::client::conn::{TrySendError, http2};
use hyper::rt::{Read, Write};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tower_service::Service;

use crate::age::{Connection, ConnectionHandle};
use crate::error::{self, BoxError, Error, ErrorKind};
use io::ClosableIo;

/// Makes one [`Http2Connection`] per call: connects with any hyper-util
/// connector (`HttpConnector`, or the TLS connector you bring), then runs the
/// HTTP/2 handshake with your `http2::Builder`.
///
/// `B` is the request body type the connections send.
///
/// ```
/// use hyper_util::client::legacy::connect::HttpConnector;
/// use hyper_util::rt::TokioExecutor;
/// use tower_max_connection_age::Http2Connector;
///
/// let mut http = HttpConnector::new();
/// http.set_nodelay(true);
/// let mut h2 = hyper::client::conn::http2::Builder::new(TokioExecutor::new());
/// h2.initial_max_send_streams(256);
/// let connector = Http2Connector::<_, http_body_util::Full<bytes::Bytes>>::new(http, h2);
/// # let _ = connector;
/// ```
pub struct Http2Connector<C, B> {
    connector: C,
    builder: http2::Builder<TokioExecutor>,
    _body: PhantomData<fn(B)>,
}

impl<B> Http2Connector<HttpConnector, B> {
    /// Plain-text HTTP/2 (h2c, prior knowledge) over TCP with `TCP_NODELAY`,
    /// and hyper's default HTTP/2 settings with its Tokio timer.
    pub fn http() -> Self {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.enforce_http(false);
        Http2Connector::new(http, default_builder())
    }
}

pub(crate) fn default_builder() -> http2::Builder<TokioExecutor> {
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder.timer(TokioTimer::new());
    builder
}

impl<C, B> Http2Connector<C, B> {
    /// Connects with `connector` and handshakes with `builder`.
    pub fn new(connector: C, builder: http2::Builder<TokioExecutor>) -> Self {
        Http2Connector {
            connector,
            builder,
            _body: PhantomData,
        }
    }
}

impl<C: Clone, B> Clone for Http2Connector<C, B> {
    fn clone(&self) -> Self {
        Http2Connector {
            connector: self.connector.clone(),
            builder: self.builder.clone(),
            _body: PhantomData,
        }
    }
}

impl<C: fmt::Debug, B> fmt::Debug for Http2Connector<C, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Http2Connector")
            .field("connector", &self.connector)
            .finish()
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T, Error>> + Send>>;

impl<C, B> Service<Uri> for Http2Connector<C, B>
where
    C: Service<Uri> + Clone + Send + 'static,
    C::Response: Read + Write + Unpin + Send + 'static,
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
        Box::pin(async move {
            let connect_error = |e: BoxError| {
                error::from_box(e, ErrorKind::Connect).with_message(target.to_string())
            };
            let io = connector
                .call(target.clone())
                .await
                .map_err(|e| connect_error(e.into()))?;
            let (io, handle) = ClosableIo::new(io);
            let (send, connection) = builder
                .handshake(io)
                .await
                .map_err(|e| connect_error(e.into()))?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, "http2 connection ended with an error");
                }
            });
            Ok(Http2Connection::new(send, handle))
        })
    }
}

/// One HTTP/2 connection as a tower `Service`, on hyper's
/// `http2::SendRequest`.
///
/// Requests go out with `try_send_request`, so a request the connection never
/// wrote (it was closing) comes back inside an [`ErrorKind::Draining`] error.
/// Errors say whether the server provably did not process the request
/// ([`ErrorKind::Refused`]: `REFUSED_STREAM`, or above a `GOAWAY`'s
/// last-stream-id) or may have ([`ErrorKind::Request`]).
pub struct Http2Connection<B> {
    send: http2::SendRequest<B>,
    /// Senders for [`send`](Self::send) through `&self`, one per thread slot.
    senders: Box<[Sender<B>]>,
    handle: ConnectionHandle,
}

/// A clone of the connection's sender, alone on its cache line(s).
///
/// hyper's `try_send_request` needs `&mut SendRequest`, and a `Client` shares
/// its connections between callers. Cloning and dropping the sender for every
/// request costs six atomic read-modify-writes on three cache lines that
/// every thread shares (hyper's and tokio's reference counts): 230-250 ns
/// with two threads at it, against 4.5 ns for `try_lock` and unlock of a
/// thread's own slot (measured on two cores). So each thread uses "its"
/// slot: a `try_lock` that never waits, and finds the slot busy only when
/// there are more threads than slots and two of them race (the guard is held
/// just while hyper queues the request). A busy slot falls back to a clone.
/// The slots live and die with the connection, so they never keep a replaced
/// connection open.
#[repr(align(128))]
struct Sender<B>(Mutex<http2::SendRequest<B>>);

/// The slot this thread uses, in every connection.
fn slot_of_this_thread() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SLOT: usize = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    SLOT.with(|slot| *slot)
}

/// Slots per connection: the available parallelism, at most 16.
fn slots() -> usize {
    static SLOTS: OnceLock<usize> = OnceLock::new();
    *SLOTS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get().min(16)))
}

impl<B> Http2Connection<B> {
    fn new(send: http2::SendRequest<B>, handle: ConnectionHandle) -> Self {
        let senders = (0..slots())
            .map(|_| Sender(Mutex::new(send.clone())))
            .collect();
        Http2Connection {
            send,
            senders,
            handle,
        }
    }
}

impl<B> Clone for Http2Connection<B> {
    fn clone(&self) -> Self {
        Http2Connection::new(self.send.clone(), self.handle.clone())
    }
}

impl<B> fmt::Debug for Http2Connection<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Http2Connection")
            .field("handle", &self.handle)
            .finish()
    }
}

impl<B> Connection for Http2Connection<B> {
    fn handle(&self) -> ConnectionHandle {
        self.handle.clone()
    }
}

impl<B> Http2Connection<B> {
    /// True while hyper still takes requests on this connection.
    pub fn is_open(&self) -> bool {
        !self.send.is_closed()
    }
}

impl<B> Http2Connection<B>
where
    B: Body + Send + 'static,
{
    /// Sends through `&self`, on this thread's sender slot (or on a clone
    /// of the sender when the slot is busy), so callers can share it.
    ///
    /// Returns hyper's own future: the caller sorts its error with
    /// [`classify`], in the same poll that handles the response, so the
    /// large `Result` moves through no extra adapter.
    pub(crate) fn send(
        &self,
        request: Request<B>,
    ) -> impl Future<Output = Result<Response<Incoming>, TrySendError<Request<B>>>>
    + Send
    + 'static
    + use<B> {
        let slot = &self.senders[slot_of_this_thread() % self.senders.len()];
        match slot.0.try_lock() {
            Ok(mut sender) => sender.try_send_request(request),
            Err(_) => self.send.clone().try_send_request(request),
        }
    }
}

/// Sorts hyper's errors into "never sent", "provably not processed", and
/// "may have been processed".
pub(crate) fn classify<B: Send + 'static>(mut err: TrySendError<Request<B>>) -> Error {
    if let Some(request) = err.take_message() {
        return Error::new(ErrorKind::Draining)
            .with_message("connection closed before the request was sent")
            .with_source(err.into_error())
            .with_request(request);
    }
    let err = err.into_error();
    let kind = match std::error::Error::source(&err).and_then(error::find_h2) {
        Some(h2)
            if h2.is_reset()
                && h2.is_remote()
                && h2.reason() == Some(h2::Reason::REFUSED_STREAM) =>
        {
            ErrorKind::Refused
        }
        // Above the last-stream-id, or noticed by hyper after it opened the
        // stream: the replay decides which (see `replay`).
        Some(h2) if h2.is_go_away() && h2.is_remote() => ErrorKind::GoAway,
        _ => ErrorKind::Request,
    };
    Error::new(kind).with_source(err)
}

impl<B> Service<Request<B>> for Http2Connection<B>
where
    B: Body + Send + 'static,
{
    type Response = Response<Incoming>;
    type Error = Error;
    type Future = BoxFuture<Response<Incoming>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.send.poll_ready(cx).map_err(|e| {
            Error::new(ErrorKind::Draining)
                .with_message("connection closed")
                .with_source(e)
        })
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        Box::pin(self.send.try_send_request(request).map_err(classify))
    }
}
