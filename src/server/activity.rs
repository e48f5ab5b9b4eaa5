//! What a connection is doing: how many requests are in flight, since when it
//! has been idle, whether a request is arriving, and which protocol it speaks.
//!
//! The connection task needs this for things hyper does not expose:
//! `max_connection_idle` (idle means no request in flight, counted until the
//! response *body* is done, as grpc-go counts "outstanding RPCs"); draining
//! each protocol its own way (a GOAWAY for HTTP/2; for HTTP/1.1, waiting for
//! the next request of an idle keep-alive connection, because hyper's
//! `graceful_shutdown()` closes an idle one at once and a request the client
//! has just sent is lost); and naming the protocol in its logs. Requests are
//! learned by wrapping the user's service and each response body, bytes
//! arriving and the protocol by wrapping the IO ([`ObservedIo`]).
//!
//! The request counts live in a `watch` channel, which synchronises. The
//! flags are relaxed atomics: the ones the drain relies on (`receiving`,
//! `draining`) only matter for HTTP/1.1, where hyper polls the IO, the
//! service's futures and the bodies all from the connection's own task, so
//! they are read where they were written. (hyper runs each HTTP/2 stream on
//! a task of its own; HTTP/2 drains with `GOAWAY` and does not look at them.)

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::header::{CONNECTION, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};

use crate::time::deadline;
use tower::ServiceExt;
use tower::util::Oneshot;

/// The protocol a connection speaks, as far as its requests have told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// No request has arrived yet.
    Unknown,
    /// HTTP/1.0 or HTTP/1.1.
    Http1,
    /// HTTP/2 (prior knowledge or ALPN).
    Http2,
}

impl Protocol {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Protocol::Unknown => "unknown",
            Protocol::Http1 => "HTTP/1.1",
            Protocol::Http2 => "HTTP/2",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct State {
    in_flight: usize,
    /// Requests started since the connection was accepted.
    started: u64,
    idle_since: Instant,
}

/// Shared between a connection's task, its service, its response bodies and
/// its IO.
#[derive(Debug)]
pub(crate) struct Activity {
    state: watch::Sender<State>,
    protocol: AtomicU8,
    /// Bytes have been read since the last request ended (or since the
    /// connection was accepted): the next request is on its way in.
    receiving: AtomicBool,
    /// The connection drains: HTTP/1.1 responses say `Connection: close`.
    draining: AtomicBool,
}

impl Activity {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Activity {
            state: watch::Sender::new(State {
                in_flight: 0,
                started: 0,
                idle_since: Instant::now(),
            }),
            protocol: AtomicU8::new(0),
            receiving: AtomicBool::new(false),
            draining: AtomicBool::new(false),
        })
    }

    /// Counts a request in flight until the returned guard is dropped.
    fn start(self: &Arc<Self>, version: Version) -> Guard {
        self.set_protocol(if version == Version::HTTP_2 {
            Protocol::Http2
        } else {
            Protocol::Http1
        });
        self.state.send_modify(|s| {
            s.in_flight += 1;
            s.started += 1;
        });
        Guard(Arc::clone(self))
    }

    fn set_protocol(&self, protocol: Protocol) {
        let value = match protocol {
            Protocol::Unknown => 0,
            Protocol::Http1 => 1,
            Protocol::Http2 => 2,
        };
        self.protocol.store(value, Ordering::Relaxed);
    }

    /// From now on every HTTP/1.x response carries `Connection: close`, so
    /// hyper closes the connection after it, even when the request was read,
    /// answered and written in one poll, before the connection task could
    /// call `graceful_shutdown()`.
    pub(crate) fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// True when bytes have arrived since the last request ended and no
    /// request has started yet: a request is being read (or the client sent
    /// something that is not one; hyper's header read timeout ends that).
    pub(crate) fn is_receiving(&self) -> bool {
        self.in_flight() == 0 && self.receiving.load(Ordering::Relaxed)
    }

    /// How many requests have started so far; see [`Self::started_after`].
    pub(crate) fn started(&self) -> u64 {
        self.state.borrow().started
    }

    /// Resolves once more than `count` requests have started.
    pub(crate) async fn started_after(&self, count: u64) {
        let mut rx = self.state.subscribe();
        // `self` owns the sender, so this cannot fail while we run.
        let _ = rx.wait_for(|s| s.started > count).await;
    }

    pub(crate) fn protocol(&self) -> Protocol {
        match self.protocol.load(Ordering::Relaxed) {
            1 => Protocol::Http1,
            2 => Protocol::Http2,
            _ => Protocol::Unknown,
        }
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.state.borrow().in_flight
    }

    /// Resolves once no request has been in flight for `idle`.
    pub(crate) async fn idle_for(&self, idle: Duration) {
        let mut rx = self.state.subscribe();
        loop {
            let state = *rx.borrow_and_update();
            if state.in_flight == 0 {
                // No deadline (an idle limit of decades): only a change
                // can matter, and none makes the connection idle sooner.
                let Some(deadline) = deadline(state.idle_since, idle) else {
                    let _ = rx.changed().await;
                    continue;
                };
                if Instant::now() >= deadline {
                    return;
                }
                tokio::select! {
                    () = sleep_until(deadline) => {}
                    // `self` owns the sender, so this cannot fail while we run.
                    _ = rx.changed() => {}
                }
            } else {
                let _ = rx.changed().await;
            }
        }
    }
}

/// One request in flight; dropping it ends the request.
#[derive(Debug)]
pub(crate) struct Guard(Arc<Activity>);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.state.send_modify(|s| {
            s.in_flight -= 1;
            if s.in_flight == 0 {
                s.idle_since = Instant::now();
                // What was read so far belonged to requests that have ended.
                // (A pipelined request read ahead in part is missed: hyper
                // has its bytes, and it would be cut by the close after the
                // window. Clients do not pipeline in practice.)
                self.0.receiving.store(false, Ordering::Relaxed);
            }
        });
    }
}

/// The user's tower service as a hyper service that reports to [`Activity`].
#[derive(Debug, Clone)]
pub(crate) struct TrackedService<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> TrackedService<S> {
    pub(crate) fn new(inner: S, activity: Arc<Activity>) -> Self {
        TrackedService { inner, activity }
    }
}

impl<S, B> hyper::service::Service<Request<Incoming>> for TrackedService<S>
where
    S: tower::Service<Request<Incoming>, Response = Response<B>> + Clone,
{
    type Response = Response<TrackedBody<B>>;
    type Error = S::Error;
    type Future = TrackedFuture<Oneshot<S, Request<Incoming>>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let guard = self.activity.start(req.version());
        // `Connection: close` only means something to HTTP/1.x, and must not
        // be added to a response that hands the connection over (CONNECT).
        let may_close = req.version() < Version::HTTP_2 && req.method() != Method::CONNECT;
        // hyper calls without a readiness check; `oneshot` waits for
        // `poll_ready` on a clone, as tower services expect.
        TrackedFuture {
            inner: self.inner.clone().oneshot(req),
            guard: Some(guard),
            may_close,
        }
    }
}

pin_project! {
    /// The response future: hands the request's guard to the response body,
    /// and marks HTTP/1.x responses of a draining connection `Connection:
    /// close`.
    #[derive(Debug)]
    pub(crate) struct TrackedFuture<F> {
        #[pin]
        inner: F,
        guard: Option<Guard>,
        may_close: bool,
    }
}

impl<F, B, E> Future for TrackedFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<TrackedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = ready!(this.inner.poll(cx))?;
        let guard = this
            .guard
            .take()
            .expect("TrackedFuture polled after completion");
        if *this.may_close
            && guard.0.is_draining()
            && response.status() != StatusCode::SWITCHING_PROTOCOLS
        {
            close_after(&mut response);
        }
        Poll::Ready(Ok(response.map(|inner| TrackedBody {
            inner,
            _guard: guard,
        })))
    }
}

/// Adds `Connection: close` unless a value already says so. hyper reads it
/// as the last response of the connection and closes after its body.
fn close_after<B>(response: &mut Response<B>) {
    let says_close = response.headers().get_all(CONNECTION).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|token| token.trim().eq_ignore_ascii_case("close"))
        })
    });
    if !says_close {
        response
            .headers_mut()
            .append(CONNECTION, HeaderValue::from_static("close"));
    }
}

pin_project! {
    /// A response body that keeps its request in flight until hyper drops it,
    /// which it does once the body has been sent or the stream was reset.
    #[derive(Debug)]
    pub(crate) struct TrackedBody<B> {
        #[pin]
        inner: B,
        _guard: Guard,
    }
}

impl<B: Body> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The first bytes of every HTTP/2 connection (RFC 9113 §3.4); hyper-util's
/// auto builder tells the protocols apart by them too.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A connection's IO that tells [`Activity`] when bytes arrive and which
/// protocol the first ones announce, before hyper has parsed a request.
#[derive(Debug)]
pub(crate) struct ObservedIo<IO> {
    io: IO,
    activity: Arc<Activity>,
    /// How much of the HTTP/2 preface the first bytes matched; `None` once
    /// the protocol is known.
    preface: Option<usize>,
}

impl<IO> ObservedIo<IO> {
    pub(crate) fn new(io: IO, activity: Arc<Activity>) -> Self {
        ObservedIo {
            io,
            activity,
            preface: Some(0),
        }
    }

    fn observe(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.activity.receiving.store(true, Ordering::Relaxed);
        if let Some(matched) = self.preface {
            let want = &H2_PREFACE[matched..];
            let n = want.len().min(bytes.len());
            if bytes[..n] != want[..n] {
                self.preface = None;
                self.activity.set_protocol(Protocol::Http1);
            } else if matched + n == H2_PREFACE.len() {
                self.preface = None;
                self.activity.set_protocol(Protocol::Http2);
            } else {
                self.preface = Some(matched + n);
            }
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for ObservedIo<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.io).poll_read(cx, buf))?;
        self.observe(&buf.filled()[before..]);
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for ObservedIo<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
