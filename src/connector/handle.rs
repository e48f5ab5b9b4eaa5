//! [`ConnectionHandle`]: the transport's lifetime, seen from outside the service.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// What the age layer needs from a connection service besides `Service`: a
/// way to learn that the transport has closed, and a way to close it by force
/// once the drain timeout has passed.
///
/// Dropping an HTTP/2 sender only closes the connection after its in-flight
/// streams finish, which is what draining wants but not what a
/// force-close wants, so the transport needs a handle of its own.
/// [`Http2Connection`](crate::Http2Connection) implements this; implement it
/// for your own connection services to wrap them in
/// [`MaxConnectionAgeLayer`](crate::MaxConnectionAgeLayer).
pub trait AgeableConnection {
    /// The handle of this connection's transport.
    fn handle(&self) -> ConnectionHandle;
}

/// A cheap, cloneable handle on a connection's transport.
///
/// The transport's owner calls [`set_closed`](Self::set_closed) when it has
/// closed (or holds the guard from [`closed_on_drop`](Self::closed_on_drop)),
/// and [`set_going_away`](Self::set_going_away) when the server sent
/// `GOAWAY`; anyone may wait for those with [`closed`](Self::closed) and
/// [`going_away`](Self::going_away), or end the transport with
/// [`force_close`](Self::force_close).
///
/// ```
/// use tower_max_connection_age::connector::ConnectionHandle;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let handle = ConnectionHandle::new(|| println!("closing the socket"));
/// let guard = handle.closed_on_drop();
/// handle.force_close();
/// drop(guard); // the transport task ended
/// handle.closed().await;
/// assert!(handle.is_closed() && handle.was_forced());
/// # }
/// ```
#[derive(Clone)]
pub struct ConnectionHandle {
    inner: Arc<Inner>,
}

type CloseFn = Box<dyn FnOnce() + Send>;

const IN_FLIGHT_MASK: u64 = 0xFFFF_FFFF;
const STARTED_ONE: u64 = 1 << 32;

/// What has happened to the transport, in one word. Each fact goes from
/// unset to set once and never back, so one load gives a reader every fact
/// at one moment: a connection closed by force for a dead peer is never
/// seen closed without its cause. The low 32 bits hold the server's
/// `GOAWAY` code once [`GONE_AWAY`] is set.
mod fact {
    /// The server sent `GOAWAY` (its code in the low 32 bits).
    pub(super) const GONE_AWAY: u64 = 1 << 32;
    /// A keepalive `PING` went unanswered: closed as a dead peer.
    pub(super) const KEEP_ALIVE_TIMED_OUT: u64 = 1 << 33;
    /// [`force_close`](super::ConnectionHandle::force_close) was called.
    pub(super) const FORCED: u64 = 1 << 34;
    /// The transport has closed.
    pub(super) const CLOSED: u64 = 1 << 35;
    /// Keepalive `PING`s went out: a server's `GOAWAY(ENHANCE_YOUR_CALM)`
    /// may be about them (grpc-go's "too_many_pings"), not about a request.
    pub(super) const PINGED: u64 = 1 << 36;
    /// Someone counts the streams: until then the connection counts as busy.
    pub(super) const COUNTED: u64 = 1 << 37;
    pub(super) const CODE: u64 = 0xFFFF_FFFF;
}

struct Inner {
    /// See [`fact`].
    facts: AtomicU64,
    /// The server sent response HEADERS or DATA since the keepalive last
    /// looked (set by whoever reads responses: the age layer). It comes and
    /// goes, so it is not a fact.
    heard: AtomicBool,
    /// Requests in flight (low 32 bits) and requests ever started (high 32
    /// bits, wrapping), counted by whoever tracks requests until their
    /// bodies end (the age layer): one atomic add per request keeps both.
    /// The connection task reads it to tell whether requests are in flight
    /// (keepalive pings only then, unless told to while idle).
    streams: AtomicU64,
    notify: Notify,
    close: Mutex<Option<CloseFn>>,
}

impl ConnectionHandle {
    /// A handle whose [`force_close`](Self::force_close) runs `close` once.
    pub fn new(close: impl FnOnce() + Send + 'static) -> Self {
        ConnectionHandle {
            inner: Arc::new(Inner {
                facts: AtomicU64::new(0),
                heard: AtomicBool::new(false),
                streams: AtomicU64::new(0),
                notify: Notify::new(),
                close: Mutex::new(Some(Box::new(close))),
            }),
        }
    }

    /// Sets `fact`; true when it was not set before.
    fn record(&self, fact: u64) -> bool {
        self.inner.facts.fetch_or(fact, Ordering::AcqRel) & fact == 0
    }

    fn has(&self, fact: u64) -> bool {
        self.inner.facts.load(Ordering::Acquire) & fact != 0
    }

    /// Records that the transport has closed and wakes everyone waiting.
    pub fn set_closed(&self) {
        if self.record(fact::CLOSED) {
            self.inner.notify.notify_waiters();
        }
    }

    /// Records that the server sent `GOAWAY` with `reason`: the connection
    /// takes no new streams, its in-flight ones may finish. The first
    /// `GOAWAY` counts (a graceful shutdown sends two).
    pub fn set_going_away(&self, reason: h2::Reason) {
        let gone = fact::GONE_AWAY | u64::from(u32::from(reason));
        let first = self
            .inner
            .facts
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |facts| {
                (facts & fact::GONE_AWAY == 0).then_some(facts | gone)
            })
            .is_ok();
        if first {
            self.inner.notify.notify_waiters();
        }
    }

    /// The error code of the server's `GOAWAY`, once one came.
    pub fn go_away_reason(&self) -> Option<h2::Reason> {
        let facts = self.inner.facts.load(Ordering::Acquire);
        // The code sits in the low 32 bits: the cast keeps exactly those.
        (facts & fact::GONE_AWAY != 0).then(|| h2::Reason::from((facts & fact::CODE) as u32))
    }

    /// Waits until the server sent `GOAWAY`, and gives its error code.
    pub async fn going_away(&self) -> h2::Reason {
        loop {
            let notified = self.inner.notify.notified();
            if let Some(reason) = self.go_away_reason() {
                return reason;
            }
            notified.await;
        }
    }

    /// Records that the peer did not answer a keepalive `PING` in time; the
    /// transport's owner then closes it by force. Requests that were in
    /// flight fail with [`ErrorKind::KeepAlive`](crate::ErrorKind::KeepAlive).
    pub fn set_keep_alive_timed_out(&self) {
        self.record(fact::KEEP_ALIVE_TIMED_OUT);
    }

    /// True once a keepalive `PING` went unanswered.
    pub fn keep_alive_timed_out(&self) -> bool {
        self.has(fact::KEEP_ALIVE_TIMED_OUT)
    }

    pub(crate) fn set_pinged(&self) {
        self.record(fact::PINGED);
    }

    pub(crate) fn pinged(&self) -> bool {
        self.has(fact::PINGED)
    }

    /// A response's HEADERS or DATA came from the server: the connection is
    /// alive without a `PING`, and gRPC servers forgive earlier pings. A
    /// load, and a store only when it was not set yet.
    #[inline]
    pub(crate) fn note_heard(&self) {
        if !self.inner.heard.load(Ordering::Relaxed) {
            self.inner.heard.store(true, Ordering::Relaxed);
        }
    }

    /// Whether the server sent HEADERS or DATA since the last call.
    pub(crate) fn take_heard(&self) -> bool {
        self.inner.heard.load(Ordering::Relaxed) && self.inner.heard.swap(false, Ordering::Relaxed)
    }

    /// From now on the caller counts this connection's requests with
    /// [`begin_stream`](Self::begin_stream) and
    /// [`end_stream`](Self::end_stream).
    pub(crate) fn count_streams(&self) {
        self.record(fact::COUNTED);
    }

    /// Counts one more request in flight and started; gives the number
    /// in flight before it, and the number started with it (wrapping).
    #[inline]
    pub(crate) fn begin_stream(&self) -> (usize, u32) {
        let before = self
            .inner
            .streams
            .fetch_add(STARTED_ONE | 1, Ordering::AcqRel);
        (
            (before & IN_FLIGHT_MASK) as usize,
            ((before >> 32) as u32).wrapping_add(1),
        )
    }

    /// Counts one request fewer in flight; gives the number in flight
    /// before it. `SeqCst`, so that it is ordered with the waiters' count
    /// a finishing request reads next.
    #[inline]
    pub(crate) fn end_stream(&self) -> usize {
        (self.inner.streams.fetch_sub(1, Ordering::SeqCst) & IN_FLIGHT_MASK) as usize
    }

    /// Requests in flight; `SeqCst`, so that it is ordered with the
    /// waiters' count.
    #[inline]
    pub(crate) fn in_flight(&self) -> usize {
        (self.inner.streams.load(Ordering::SeqCst) & IN_FLIGHT_MASK) as usize
    }

    /// Requests started so far, wrapping at 2^32: equal at two moments means
    /// (almost surely) none started in between.
    pub(crate) fn started(&self) -> u32 {
        (self.inner.streams.load(Ordering::Acquire) >> 32) as u32
    }

    /// Whether requests are in flight (true while nobody counts them).
    pub(crate) fn is_busy(&self) -> bool {
        !self.has(fact::COUNTED) || self.in_flight() > 0
    }

    /// Whether more than one request is in flight (true while nobody counts
    /// them): only then can the connection task gather several streams
    /// into one write.
    pub(crate) fn is_shared(&self) -> bool {
        !self.has(fact::COUNTED) || self.in_flight() > 1
    }

    /// A guard that calls [`set_closed`](Self::set_closed) when dropped: hold it
    /// in whatever owns the transport.
    pub fn closed_on_drop(&self) -> ClosedOnDrop {
        ClosedOnDrop(self.clone())
    }

    /// True once the transport has closed.
    pub fn is_closed(&self) -> bool {
        self.has(fact::CLOSED)
    }

    /// True when [`force_close`](Self::force_close) was called.
    pub fn was_forced(&self) -> bool {
        self.has(fact::FORCED)
    }

    /// Closes the transport now; requests still in flight on it fail.
    pub fn force_close(&self) {
        self.record(fact::FORCED);
        let close = self
            .inner
            .close
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(close) = close {
            close();
        }
    }

    /// Waits until the transport has closed.
    pub async fn closed(&self) {
        loop {
            let notified = self.inner.notify.notified();
            if self.is_closed() {
                return;
            }
            notified.await;
        }
    }
}

impl fmt::Debug for ConnectionHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionHandle")
            .field("closed", &self.is_closed())
            .field("go_away", &self.go_away_reason())
            .field("forced", &self.was_forced())
            .finish()
    }
}

/// Marks its [`ConnectionHandle`] closed when dropped.
#[derive(Debug)]
pub struct ClosedOnDrop(ConnectionHandle);

impl Drop for ClosedOnDrop {
    fn drop(&mut self) {
        self.0.set_closed();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_goaway_counts_and_its_code_comes_back_whole() {
        let handle = ConnectionHandle::new(|| {});
        assert_eq!(handle.go_away_reason(), None);
        handle.set_going_away(h2::Reason::from(u32::MAX));
        handle.set_going_away(h2::Reason::NO_ERROR);
        assert_eq!(handle.go_away_reason(), Some(h2::Reason::from(u32::MAX)));
        assert!(!handle.is_closed() && !handle.was_forced() && !handle.pinged());
    }

    #[test]
    fn each_fact_is_kept_apart_and_once_set_stays() {
        let closes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = closes.clone();
        let handle = ConnectionHandle::new(move || {
            counted.fetch_add(1, Ordering::Relaxed);
        });
        assert!(handle.is_busy(), "nobody counts its streams yet");
        handle.count_streams();
        assert!(!handle.is_busy());
        handle.set_pinged();
        handle.set_keep_alive_timed_out();
        assert!(handle.pinged() && handle.keep_alive_timed_out());
        assert!(!handle.was_forced() && !handle.is_closed());
        handle.force_close();
        handle.force_close();
        assert_eq!(closes.load(Ordering::Relaxed), 1, "closed once");
        assert!(handle.was_forced() && !handle.is_closed());
        handle.set_closed();
        assert!(handle.is_closed() && handle.keep_alive_timed_out());
        assert_eq!(
            handle.go_away_reason(),
            None,
            "no GOAWAY in the other facts"
        );
    }
}
