//! [`Http2Connection`]: one HTTP/2 connection as a tower `Service`, sending
//! from the caller's task.

use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::{Method, Request};
use http_body::Body;
use tower_service::Service;

use super::BoxFuture;
use super::body::Http2Body;
use super::driver::Signals;
use super::future::ResponseFuture;
use super::handle::{AgeableConnection, ConnectionHandle};
use super::head::{declares_a_body, h2_head, invalid_connect};
use super::pipe::Pipe;
use super::shared::SharedConnection;
use crate::error::{BoxError, Error, ErrorKind};
use crate::outcome::{Stage, Verdict, classify};

/// One HTTP/2 connection as a tower `Service`, on h2's `SendRequest`.
///
/// A request the connection could not take (it was closing, or the server
/// had sent `GOAWAY`) comes back unsent inside an [`ErrorKind::Draining`]
/// error. Errors say whether the server provably did not process the
/// request ([`ErrorKind::Refused`]: `REFUSED_STREAM`, or above a `GOAWAY`'s
/// last-stream-id) or may have ([`ErrorKind::Request`]).
///
/// Clones share the connection; once the last clone is dropped, h2 closes
/// the connection gracefully as soon as its last stream ends.
pub struct Http2Connection<B> {
    inner: Arc<Inner>,
    _body: PhantomData<fn(B)>,
}

struct Inner {
    send: h2::client::SendRequest<Bytes>,
    /// Senders for [`send`](Http2Connection::send) through `&self`, one per
    /// thread slot.
    senders: Box<[Sender]>,
    handle: ConnectionHandle,
    signals: Arc<Signals>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.signals.release();
    }
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
    pub(super) fn new(
        send: h2::client::SendRequest<Bytes>,
        handle: ConnectionHandle,
        signals: Arc<Signals>,
    ) -> Self {
        let senders = (0..slots())
            .map(|_| Sender(Mutex::new(send.clone())))
            .collect();
        Http2Connection {
            inner: Arc::new(Inner {
                send,
                senders,
                handle,
                signals,
            }),
            _body: PhantomData,
        }
    }

    /// True until the transport has closed.
    pub fn is_open(&self) -> bool {
        !self.inner.handle.is_closed()
    }

    /// How many streams the server lets this connection have open at once
    /// (its `SETTINGS_MAX_CONCURRENT_STREAMS`; `usize::MAX` when it sets no
    /// limit).
    #[inline]
    pub fn max_concurrent_streams(&self) -> usize {
        self.inner.signals.max_streams()
    }
}

impl<B> Clone for Http2Connection<B> {
    fn clone(&self) -> Self {
        Http2Connection {
            inner: self.inner.clone(),
            _body: PhantomData,
        }
    }
}

impl<B> fmt::Debug for Http2Connection<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Http2Connection")
            .field("handle", &self.inner.handle)
            .field("max_concurrent_streams", &self.max_concurrent_streams())
            .finish()
    }
}

impl<B> AgeableConnection for Http2Connection<B> {
    fn handle(&self) -> ConnectionHandle {
        self.inner.handle.clone()
    }
}

impl<B> SharedConnection<B> for Http2Connection<B>
where
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Body = Http2Body;
    type Future = ResponseFuture<B>;

    #[inline]
    fn send(&self, request: Request<B>) -> Result<ResponseFuture<B>, Error> {
        Http2Connection::send(self, request)
    }

    #[inline]
    fn is_open(&self) -> bool {
        Http2Connection::is_open(self)
    }

    #[inline]
    fn max_concurrent_streams(&self) -> usize {
        Http2Connection::max_concurrent_streams(self)
    }
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
    #[inline]
    pub(crate) fn send(&self, request: Request<B>) -> Result<ResponseFuture<B>, Error> {
        let (parts, body) = request.into_parts();
        // A CONNECT stream is a tunnel: it stays open whatever the body.
        let connect = parts.method == Method::CONNECT;
        let ended = body.is_end_stream();
        if connect && declares_a_body(&parts.headers) {
            return Err(invalid_connect(&parts));
        }
        let end = ended && !connect;
        let head = h2_head(&parts, body.size_hint().exact());
        let inner = &*self.inner;
        let slot = &inner.senders[slot_of_this_thread() % inner.senders.len()];
        let sent = match slot.0.try_lock() {
            Ok(mut send) => {
                let sent = send.send_request(head, end);
                // h2 wants a sender ready (`poll_ready`) before its next
                // `send_request`. It is checked right after this one, so a
                // stream that this sender left queued behind the server's
                // stream limit is not kept alive by the slot: the caller
                // alone holds it, and dropping it cancels it.
                if sent.is_ok()
                    && send
                        .poll_ready(&mut Context::from_waker(Waker::noop()))
                        .is_pending()
                {
                    *send = inner.send.clone();
                }
                sent
            }
            // A fresh clone has no queued stream of its own, so it is ready
            // unless the connection failed, which `send_request` reports.
            Err(_) => inner.send.clone().send_request(head, end),
        };
        match sent {
            Ok((response, stream)) => Ok(ResponseFuture::new(
                response,
                (!ended).then(|| Pipe::new(body, stream)),
                parts,
            )),
            Err(e) => Err(self.not_sent(e, Request::from_parts(parts, body))),
        }
    }

    /// h2 opened no stream. A user error (a malformed request) fails as it
    /// is, unless the connection itself can open no more streams (h2 reports
    /// running out of stream ids that way too); otherwise the connection
    /// failed or the server sent `GOAWAY`: nothing was sent, and the
    /// request comes back as `Draining`.
    #[cold]
    #[inline(never)]
    fn not_sent(&self, e: h2::Error, request: Request<B>) -> Error {
        let usable = || {
            let mut fresh = self.inner.send.clone();
            matches!(
                fresh.poll_ready(&mut Context::from_waker(Waker::noop())),
                Poll::Ready(Ok(()))
            )
        };
        match classify(&e, Stage::Open) {
            Verdict::BadRequest if usable() => Error::new(ErrorKind::Request)
                .with_message("h2 did not take the request (not valid HTTP/2)")
                .with_source(e),
            _ => Error::new(ErrorKind::Draining)
                .with_message("the connection takes no more streams")
                .with_source(e)
                .with_request(request),
        }
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

    /// Ready while the connection can open streams; fails once the server
    /// sent `GOAWAY` or the transport closed, so tower's balancer drops it.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        if self.inner.handle.go_away_reason().is_some() || self.inner.handle.is_closed() {
            return Poll::Ready(Err(Error::new(ErrorKind::Draining)
                .with_message("the connection takes no more streams")));
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        match self.send(request) {
            Ok(response) => Box::pin(response),
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }
}
