//! [`ClosableIo`]: a transport that can be closed by force from outside.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};

use futures_util::task::AtomicWaker;
use hyper::rt::{Read, ReadBufCursor, Write};

use super::handle::{ClosedOnDrop, ConnectionHandle};

/// The switch shared by a [`ClosableIo`] and its handle's force-close.
#[derive(Default)]
pub(crate) struct Switch {
    off: AtomicBool,
    waker: AtomicWaker,
}

impl Switch {
    pub(crate) fn turn_off(&self) {
        self.off.store(true, Ordering::Release);
        self.waker.wake();
    }
}

/// Wraps a connection's IO so that a force-close reaches the task that owns
/// it: h2's (or hyper's) connection runs in a task of its own, and dropping every
/// `SendRequest` lets in-flight streams finish rather than ending them. Once
/// switched off, reads and writes fail and h2 fails every open stream. It also
/// marks the handle closed when h2 drops it, which is the real "transport
/// closed" signal.
pub struct ClosableIo<T> {
    io: T,
    switch: Arc<Switch>,
    /// The waker last registered with the switch. h2 reads from one task, so
    /// registering once spares every read two atomic read-modify-writes.
    registered: Option<Waker>,
    _closed: ClosedOnDrop,
}

impl<T> ClosableIo<T> {
    /// Wraps `io`, and gives the handle that closes it by force (and is
    /// marked closed when `io` is dropped): the handle an
    /// [`AgeableConnection`](crate::age::AgeableConnection) reports.
    pub fn new(io: T) -> (Self, ConnectionHandle) {
        let switch = Arc::new(Switch::default());
        let handle = ConnectionHandle::new({
            let switch = switch.clone();
            move || switch.turn_off()
        });
        let io = ClosableIo {
            io,
            switch,
            registered: None,
            _closed: handle.closed_on_drop(),
        };
        (io, handle)
    }

    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        // Registered before the switch is read, so a force-close in between
        // still wakes this task. (Once woken, the switch stays off, so a
        // stale registration is never relied on again.)
        if !self
            .registered
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            self.switch.waker.register(cx.waker());
            self.registered = Some(cx.waker().clone());
        }
        if self.switch.off.load(Ordering::Acquire) {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "connection closed by force (its drain timeout passed, or its peer did not \
                 answer a keepalive PING)",
            ));
        }
        Ok(())
    }
}

impl<T: Read + Unpin> Read for ClosableIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        self.check(cx)?;
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: Write + Unpin> Write for ClosableIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.switch.off.load(Ordering::Acquire) {
            self.check(cx)?;
        }
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.switch.off.load(Ordering::Acquire) {
            self.check(cx)?;
        }
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

impl<T: std::fmt::Debug> std::fmt::Debug for ClosableIo<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClosableIo")
            .field("io", &self.io)
            .field("closed_by_force", &self.switch.off.load(Ordering::Acquire))
            .finish()
    }
}
