//! [`Driver`]: the task that owns one h2 connection and tells the rest of the
//! crate what the server decided (its stream limit, its `GOAWAY`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use h2::client::{Connection, SendRequest};
use hyper::rt::{Read, Write};
use hyper_util::rt::TokioIo;

use crate::age::ConnectionHandle;

/// What the driver learns and the connection's handles read, without
/// taking h2's lock on the request path.
pub(crate) struct Signals {
    /// The server's `SETTINGS_MAX_CONCURRENT_STREAMS` as h2 applies it
    /// (`usize::MAX` when the server sets none).
    max_streams: AtomicUsize,
    /// Set once no [`Http2Connection`](super::Http2Connection) is left.
    released: AtomicBool,
    waker: AtomicWaker,
}

impl Signals {
    pub(crate) fn new(max_streams: usize) -> Arc<Self> {
        Arc::new(Signals {
            max_streams: AtomicUsize::new(max_streams),
            released: AtomicBool::new(false),
            waker: AtomicWaker::new(),
        })
    }

    #[inline]
    pub(crate) fn max_streams(&self) -> usize {
        self.max_streams.load(Ordering::Relaxed)
    }

    /// The last handle is gone: the driver lets h2 close once idle.
    pub(crate) fn release(&self) {
        self.released.store(true, Ordering::Release);
        self.waker.wake();
    }
}

/// Runs the h2 connection in a task of its own and, after each turn of it:
///
/// - publishes the server's stream limit (h2 applies `SETTINGS` inside the
///   connection; the pick reads the limit on every request);
/// - looks for a `GOAWAY` from the server and reports it on the
///   [`ConnectionHandle`] at once, so the connection is rotated when the
///   server asks, not when a request finds out. h2 records a received
///   `GOAWAY` as the connection's error, which `SendRequest::poll_ready`
///   returns; the driver holds a sender of its own for that check.
///
/// h2 closes a connection gracefully once every sender is gone and its last
/// stream has ended, which is how a drained connection closes. So the
/// driver drops its own sender as soon as the connection's handles are
/// released (or the `GOAWAY` came), and never holds the connection open.
pub(crate) struct Driver<T> {
    connection: Connection<TokioIo<T>, Bytes>,
    watch: Option<SendRequest<Bytes>>,
    signals: Arc<Signals>,
    handle: ConnectionHandle,
}

impl<T> Driver<T> {
    pub(crate) fn new(
        connection: Connection<TokioIo<T>, Bytes>,
        watch: SendRequest<Bytes>,
        signals: Arc<Signals>,
        handle: ConnectionHandle,
    ) -> Self {
        Driver {
            connection,
            watch: Some(watch),
            signals,
            handle,
        }
    }
}

impl<T> Future for Driver<T>
where
    T: Read + Write + Unpin,
{
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        if this.watch.is_some() {
            this.signals.waker.register(cx.waker());
            if this.signals.released.load(Ordering::Acquire) {
                this.watch = None;
            }
        }
        let ended = Pin::new(&mut this.connection).poll(cx);
        let limit = this.connection.max_concurrent_send_streams();
        if this.signals.max_streams.load(Ordering::Relaxed) != limit {
            tracing::debug!(max_streams = limit, "server stream limit");
            this.signals.max_streams.store(limit, Ordering::Relaxed);
        }
        if let Some(watch) = &mut this.watch {
            // With no stream of its own queued, `poll_ready` only reports
            // the connection's error and registers no waker.
            let mut noop = Context::from_waker(Waker::noop());
            if let Poll::Ready(Err(e)) = watch.poll_ready(&mut noop) {
                if e.is_go_away() && e.is_remote() {
                    let reason = e.reason().unwrap_or(h2::Reason::NO_ERROR);
                    tracing::debug!(?reason, "server sent GOAWAY");
                    this.handle.set_going_away(reason);
                }
                this.watch = None;
            }
        }
        match ended {
            Poll::Pending => Poll::Pending,
            Poll::Ready(result) => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "http2 connection ended with an error");
                }
                Poll::Ready(())
            }
        }
    }
}
