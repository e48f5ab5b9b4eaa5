//! [`Http2Connector`]: HTTP/2 client connections on h2, as tower services.
//!
//! Requests go to h2 straight from the caller's task. hyper's HTTP/2 client
//! hands each request to a dispatch task over a channel and spawns one more
//! task per request to wait for its response; at concurrency 1 those hops
//! cost more than everything else this crate does per request (`loadgen
//! --layers`). h2 also says exactly which failed streams the server never
//! processed: it fails a stream with the server's `GOAWAY` only when the
//! stream is above the `GOAWAY`'s last-stream-id.

mod body;
mod future;
mod io;
mod pipe;

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{CONNECTION, HeaderName, TE};
use http::{HeaderMap, Request, Uri};
use http_body::Body;
use hyper::rt::{Read, Write};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tower_service::Service;

pub use body::Http2Body;
pub use future::ResponseFuture;

use crate::age::{Connection, ConnectionHandle};
use crate::error::{self, BoxError, Error, ErrorKind};
use io::ClosableIo;
use pipe::Pipe;

/// Makes one [`Http2Connection`] per call: connects with any hyper-util
/// connector (`HttpConnector`, or the TLS connector you bring), then runs the
/// HTTP/2 handshake with your `h2::client::Builder`.
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
/// stream, header lists of up to 16 KiB, server push off.
pub fn default_builder() -> h2::client::Builder {
    let mut builder = h2::client::Builder::new();
    builder
        .initial_window_size(2 * 1024 * 1024)
        .initial_connection_window_size(5 * 1024 * 1024)
        .max_frame_size(16 * 1024)
        .max_send_buffer_size(1024 * 1024)
        .max_header_list_size(16 * 1024)
        .enable_push(false);
    builder
}

impl<C, B> Http2Connector<C, B> {
    /// Connects with `connector` and handshakes with `builder`.
    pub fn new(connector: C, builder: h2::client::Builder) -> Self {
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
                .handshake::<_, Bytes>(TokioIo::new(io))
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

/// One HTTP/2 connection as a tower `Service`, on h2's `SendRequest`.
///
/// A request the connection could not take (it was closing, or the server
/// had sent `GOAWAY`) comes back unsent inside an [`ErrorKind::Draining`]
/// error. Errors say whether the server provably did not process the
/// request ([`ErrorKind::Refused`]: `REFUSED_STREAM`, or above a `GOAWAY`'s
/// last-stream-id) or may have ([`ErrorKind::Request`]).
pub struct Http2Connection<B> {
    send: h2::client::SendRequest<Bytes>,
    /// Senders for [`send`](Self::send) through `&self`, one per thread slot.
    senders: Box<[Sender]>,
    handle: ConnectionHandle,
    _body: PhantomData<fn(B)>,
}

/// A clone of the connection's sender, alone on its cache line(s).
///
/// h2's `send_request` needs `&mut SendRequest`, and a `Client` shares its
/// connections between callers. Cloning and dropping h2's sender for every
/// request takes h2's connection lock twice and touches reference counts
/// that every thread shares. So each thread uses "its" slot: a `try_lock`
/// that never waits, and finds the slot busy only when there are more
/// threads than slots and two of them race (the guard is held just while
/// h2 opens the stream). A busy slot falls back to a clone. The slots live
/// and die with the connection, so they never keep a replaced connection
/// open.
#[repr(align(128))]
struct Sender(Mutex<h2::client::SendRequest<Bytes>>);

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
    fn new(send: h2::client::SendRequest<Bytes>, handle: ConnectionHandle) -> Self {
        let senders = (0..slots())
            .map(|_| Sender(Mutex::new(send.clone())))
            .collect();
        Http2Connection {
            send,
            senders,
            handle,
            _body: PhantomData,
        }
    }

    /// True until the transport has closed.
    pub fn is_open(&self) -> bool {
        !self.handle.is_closed()
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

/// Headers that mean something only on an HTTP/1 connection; HTTP/2 forbids
/// them (RFC 9113 §8.2.2), so they are dropped as hyper does.
const CONNECTION_HEADERS: [HeaderName; 4] = [
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    http::header::TRANSFER_ENCODING,
    http::header::UPGRADE,
];

/// The head h2 sends: a copy of the request's, without connection-specific
/// headers. The caller keeps the original, so a request h2 does not take
/// can be given back whole.
fn h2_head(parts: &http::request::Parts, body_len: Option<u64>) -> Request<()> {
    let mut head = Request::new(());
    *head.method_mut() = parts.method.clone();
    *head.uri_mut() = parts.uri.clone();
    *head.version_mut() = parts.version;
    let headers = head.headers_mut();
    *headers = parts.headers.clone();
    if !headers.is_empty() {
        strip_connection_headers(headers);
    }
    if let Some(len) = body_len
        && (len != 0 || has_payload_semantics(&parts.method))
        && !headers.contains_key(http::header::CONTENT_LENGTH)
    {
        headers.insert(http::header::CONTENT_LENGTH, len.into());
    }
    head
}

fn strip_connection_headers(headers: &mut HeaderMap) {
    for name in &CONNECTION_HEADERS {
        headers.remove(name);
    }
    if headers.get(TE).is_some_and(|te| te != "trailers") {
        headers.remove(TE);
    }
    if let Some(connection) = headers.remove(CONNECTION)
        && let Ok(names) = connection.to_str()
    {
        for name in names.split(',') {
            headers.remove(name.trim());
        }
    }
}

fn has_payload_semantics(method: &http::Method) -> bool {
    matches!(
        *method,
        http::Method::POST | http::Method::PUT | http::Method::PATCH
    )
}

impl<B> Http2Connection<B>
where
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<BoxError>,
{
    /// Opens the request's stream through `&self`, on this thread's sender
    /// slot (or on a clone of the sender when the slot is busy), so callers
    /// can share the connection. A request h2 did not take comes back in a
    /// [`ErrorKind::Draining`] error.
    #[allow(clippy::result_large_err)]
    pub(crate) fn send(&self, request: Request<B>) -> Result<ResponseFuture<B>, Error> {
        let (parts, body) = request.into_parts();
        let end = body.is_end_stream();
        let head = h2_head(&parts, body.size_hint().exact());
        let slot = &self.senders[slot_of_this_thread() % self.senders.len()];
        let sent = match slot.0.try_lock() {
            Ok(mut send) => send.send_request(head, end),
            Err(_) => self.send.clone().send_request(head, end),
        };
        match sent {
            Ok((response, stream)) => Ok(ResponseFuture::new(
                response,
                (!end).then(|| Pipe::new(body, stream)),
                parts,
            )),
            Err(e) => self.not_sent(e, Request::from_parts(parts, body)),
        }
    }

    /// h2 opened no stream. This sender may still wait to open its last
    /// stream past the server's stream limit (h2 "rejects" the next one):
    /// a fresh sender opens (or queues) it. A malformed request fails as
    /// it is. Otherwise the connection failed or the server sent `GOAWAY`:
    /// nothing was sent, and the request comes back as `Draining`.
    #[cold]
    #[inline(never)]
    #[allow(clippy::result_large_err)]
    fn not_sent(&self, e: h2::Error, request: Request<B>) -> Result<ResponseFuture<B>, Error> {
        let (parts, body) = request.into_parts();
        let e = match user_error(&e) {
            Some(UserError::Rejected) => {
                let end = body.is_end_stream();
                let head = h2_head(&parts, body.size_hint().exact());
                match self.send.clone().send_request(head, end) {
                    Ok((response, stream)) => {
                        return Ok(ResponseFuture::new(
                            response,
                            (!end).then(|| Pipe::new(body, stream)),
                            parts,
                        ));
                    }
                    Err(e) => e,
                }
            }
            Some(UserError::Malformed) => {
                return Err(Error::new(ErrorKind::Request)
                    .with_message("h2 did not take the request")
                    .with_source(e));
            }
            None => e,
        };
        Err(Error::new(ErrorKind::Draining)
            .with_message("the connection took no more streams")
            .with_source(e)
            .with_request(Request::from_parts(parts, body)))
    }
}

/// The errors h2 gives for the request itself rather than the connection.
enum UserError {
    /// This sender's previous stream is still waiting to open.
    Rejected,
    /// The request's head is not valid HTTP/2.
    Malformed,
}

/// h2 has no accessor for its user errors; its messages are stable.
fn user_error(e: &h2::Error) -> Option<UserError> {
    if e.is_io() || e.is_go_away() || e.is_reset() {
        return None;
    }
    match e.to_string().as_str() {
        "rejected" => Some(UserError::Rejected),
        "malformed headers" | "request URI missing scheme and authority" => {
            Some(UserError::Malformed)
        }
        _ => None,
    }
}

impl<B> Service<Request<B>> for Http2Connection<B>
where
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = http::Response<Http2Body>;
    type Error = Error;
    type Future = BoxFuture<http::Response<Http2Body>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.send.poll_ready(cx).map_err(|e| {
            Error::new(ErrorKind::Draining)
                .with_message("connection closed")
                .with_source(e)
        })
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        match self.send(request) {
            Ok(response) => Box::pin(response),
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }
}
