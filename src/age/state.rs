//! The state one connection shares between its service, its in-flight
//! requests, its supervisor task and whoever manages its rotation.

use std::fmt;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::connector::ConnectionHandle;

/// The phase, in the low two bits of [`ConnectionState::phase`]; the drain
/// reason sits above them, so one load reads both.
const SERVING: u8 = 0;
const DRAINING: u8 = 1;
const CLOSED: u8 = 2;
const PHASE_MASK: u8 = 0b11;
const REASON_SHIFT: u32 = 2;
/// [`ConnectionState::cap_marks`]' low half: when a successor is wanted.
const CAP_NEAR_MASK: u64 = 0xFFFF_FFFF;

/// Why a connection stopped taking new requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DrainReason {
    /// Its deadline (age + jitter) passed and nobody manages its rotation.
    Aged,
    /// Its service handle was dropped: a replacement took its place, or its
    /// endpoint left.
    Replaced,
    /// The server sent `GOAWAY`.
    GoAway,
    /// The transport closed (reset, I/O error, server gone).
    Closed,
    /// It started as many requests as its server serves on one connection
    /// (a request cap learned from the server's earlier `GOAWAY`s): its
    /// successor, connected ahead, takes over, and no request goes above
    /// the cap to be refused.
    RequestCap,
}

impl DrainReason {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => DrainReason::Aged,
            1 => DrainReason::Replaced,
            2 => DrainReason::GoAway,
            3 => DrainReason::Closed,
            _ => DrainReason::RequestCap,
        }
    }
}

/// What a connection tells the manager attached with [`ConnectionState::observe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    /// The deadline passed; the connection keeps serving until it is replaced.
    Deadline,
    /// The server sent a graceful `GOAWAY` (`NO_ERROR`): a rotation the
    /// server asked for. In-flight requests finish; a replacement is due now.
    GoAway,
    /// The connection stopped serving for a reason other than being replaced.
    Lost,
    /// It started the number of requests its manager asked to hear of
    /// ([`ConnectionState::observe`]): the server's request cap per
    /// connection is near, so a successor is wanted before it.
    CapNear,
    /// It reached the server's request cap and stopped taking requests
    /// ([`ConnectionState::drain_at_cap`]): its successor is due now.
    CapReached,
}

type Observer = Box<dyn Fn(Event) + Send + Sync>;

/// A connection's lifetime: its phase and why it left `SERVING`, its
/// requests in flight (on the transport's handle), its deadline and drain,
/// and the request-cap marks. What the pick weighs of it is not here: that
/// is its [`Balancing`](super::balancing::Balancing), which holds this.
pub(crate) struct ConnectionState {
    pub(crate) endpoint: String,
    pub(crate) born: Instant,
    pub(crate) deadline: Option<Instant>,
    pub(crate) drain_timeout: Duration,
    pub(crate) handle: ConnectionHandle,
    /// `SERVING`, `DRAINING` or `CLOSED`, with the [`DrainReason`] above
    /// the phase bits once it is not serving: one atomic, so no reader sees
    /// a phase without its reason.
    phase: AtomicU8,
    /// Wakes the supervisor: the phase changed, or the last request finished.
    wake: Notify,
    /// The rotation manager's subscription to [`Event`]s: the one thing
    /// attached after construction, because the connection's supervisor
    /// runs (and may report) from the moment it is made, before any
    /// manager has it. Set once; a connection nobody manages has none.
    observer: OnceLock<Observer>,
    /// The `started` counts at which the observer hears [`Event::CapNear`]
    /// (low 32 bits) and at which it drains, [`DrainReason::RequestCap`]
    /// (high 32 bits); 0: never (the count is at least 1 once a request
    /// started). One word, so a request reads one atomic when neither is
    /// set, as on connections to servers with no request cap.
    cap_marks: AtomicU64,
    /// Requests the server provably did not process (`REFUSED_STREAM`,
    /// above a `GOAWAY`'s last-stream-id): `started` minus these is what
    /// the server counted against a request cap.
    refused: AtomicU32,
}

impl ConnectionState {
    pub(crate) fn new(
        endpoint: String,
        deadline: Option<Instant>,
        drain_timeout: Duration,
        handle: ConnectionHandle,
    ) -> Arc<Self> {
        Arc::new(ConnectionState {
            endpoint,
            born: Instant::now(),
            deadline,
            drain_timeout,
            handle,
            phase: AtomicU8::new(SERVING),
            wake: Notify::new(),
            observer: OnceLock::new(),
            cap_marks: AtomicU64::new(0),
            refused: AtomicU32::new(0),
        })
    }

    pub(crate) fn age(&self) -> Duration {
        self.born.elapsed()
    }

    #[inline]
    pub(crate) fn is_serving(&self) -> bool {
        self.phase.load(Ordering::Acquire) == SERVING
    }

    pub(crate) fn drain_reason(&self) -> Option<DrainReason> {
        let phase = self.phase.load(Ordering::Acquire);
        (phase != SERVING).then(|| DrainReason::from_u8(phase >> REASON_SHIFT))
    }

    /// Requests in flight; `SeqCst`, so that it is ordered with
    /// [`Waiters::count`] (see there).
    #[inline]
    pub(crate) fn in_flight(&self) -> usize {
        self.handle.in_flight()
    }

    /// Requests started so far, wrapping at 2^32: equal at two moments means
    /// (almost surely) none started in between.
    pub(crate) fn started(&self) -> u32 {
        self.handle.started()
    }

    /// Requests the server processed, as far as this client knows: those
    /// started, minus those it refused. (A refusal is counted when its
    /// caller hears of it, so just after a `GOAWAY` this may still count a
    /// few the server refused.)
    pub(crate) fn served(&self) -> u32 {
        self.started()
            .wrapping_sub(self.refused.load(Ordering::Relaxed))
    }

    /// Attaches the rotation manager. A managed connection keeps serving past
    /// its deadline until the manager replaces it (make-before-break). With
    /// `cap_near_at`, the manager also hears [`Event::CapNear`] when that
    /// many requests have started.
    pub(crate) fn observe(
        &self,
        observer: impl Fn(Event) + Send + Sync + 'static,
        cap_near_at: Option<u32>,
    ) {
        let near = u64::from(cap_near_at.unwrap_or(0));
        let _ = self
            .cap_marks
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |marks| {
                Some(marks & !CAP_NEAR_MASK | near)
            });
        let _ = self.observer.set(Box::new(observer));
        // It may have stopped serving before the observer was attached.
        if !self.is_serving() && self.drain_reason() != Some(DrainReason::Replaced) {
            self.emit(Event::Lost);
        }
    }

    /// Stops taking requests once `cap` have started (at once if they
    /// have): the server serves no more on one connection, and its
    /// manager has the successor ready.
    pub(crate) fn drain_at_cap(&self, cap: u32) {
        let _ = self
            .cap_marks
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |marks| {
                Some(marks & CAP_NEAR_MASK | u64::from(cap) << 32)
            });
        if self.started() >= cap {
            self.start_draining(DrainReason::RequestCap);
        }
    }

    pub(crate) fn is_managed(&self) -> bool {
        self.observer.get().is_some()
    }

    pub(crate) fn emit(&self, event: Event) {
        if let Some(observer) = self.observer.get() {
            observer(event);
        }
    }

    /// Stops taking new requests. Returns false when it already had.
    pub(crate) fn start_draining(&self, reason: DrainReason) -> bool {
        let draining = DRAINING | (reason as u8) << REASON_SHIFT;
        if self
            .phase
            .compare_exchange(SERVING, draining, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return false;
        }
        tracing::debug!(
            endpoint = %self.endpoint,
            age_ms = self.age().as_millis() as u64,
            in_flight = self.in_flight(),
            ?reason,
            "connection draining started"
        );
        self.wake.notify_one();
        match reason {
            DrainReason::Replaced => {}
            DrainReason::RequestCap => self.emit(Event::CapReached),
            DrainReason::GoAway if self.handle.go_away_reason() == Some(h2::Reason::NO_ERROR) => {
                self.emit(Event::GoAway)
            }
            _ => self.emit(Event::Lost),
        }
        true
    }

    pub(crate) fn mark_closed(&self) {
        self.start_draining(DrainReason::Closed);
        // Keeps the reason it drained for.
        let _ = self
            .phase
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |phase| {
                Some(phase & !PHASE_MASK | CLOSED)
            });
    }

    /// A request starts: counted in flight (until [`request_ended`](Self::request_ended)),
    /// and checked against the request-cap marks. Returns how many were in
    /// flight before it.
    #[inline]
    pub(crate) fn request_started(&self) -> usize {
        let (before, started) = self.handle.begin_stream();
        let marks = self.cap_marks.load(Ordering::Relaxed);
        if marks != 0 {
            self.at_cap_marks(started, marks);
        }
        before
    }

    /// A request counted by [`request_started`](Self::request_started)
    /// ended; the last one of a draining connection wakes its supervisor.
    #[inline]
    pub(crate) fn request_ended(&self) {
        if self.handle.end_stream() == 1 && !self.is_serving() {
            self.wake.notify_one();
        }
    }

    /// The server provably did not process one of its requests: it does
    /// not count toward the server's request cap ([`served`](Self::served)).
    pub(crate) fn request_refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// The request `started` reached a mark of the server's request cap.
    /// The first mark is cleared once it fires, so a connection with no
    /// drain mark goes back to the one load per request.
    #[cold]
    #[inline(never)]
    fn at_cap_marks(&self, started: u32, marks: u64) {
        if u64::from(started) == marks & CAP_NEAR_MASK {
            self.cap_marks.fetch_and(!CAP_NEAR_MASK, Ordering::Relaxed);
            self.emit(Event::CapNear);
        }
        if u64::from(started) == marks >> 32 {
            // This request is the cap's last: it goes; none after it.
            self.start_draining(DrainReason::RequestCap);
        }
    }

    /// Resolves once the phase changed or, while draining, the last request ended.
    pub(crate) async fn changed(&self) {
        self.wake.notified().await
    }
}

impl fmt::Debug for ConnectionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionState")
            .field("endpoint", &self.endpoint)
            .field("age", &self.age())
            .field("serving", &self.is_serving())
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

#[cfg(test)]
impl ConnectionState {
    /// A connection for in-memory tests: its requests counted on a handle
    /// that closes nothing, a 5 s drain timeout.
    pub(crate) fn for_test(deadline: Option<Instant>) -> Arc<Self> {
        let handle = ConnectionHandle::new(|| {});
        handle.count_streams();
        ConnectionState::new(
            "http://10.0.0.1:80".into(),
            deadline,
            Duration::from_secs(5),
            handle,
        )
    }

    /// Counts a request in flight until the returned guard is dropped, as
    /// a connection's [`InFlight`](super::balancing::InFlight) does.
    pub(crate) fn begin(self: &Arc<Self>) -> Counted {
        self.request_started();
        Counted(self.clone())
    }
}

/// A request counted in flight on a connection, in tests of its lifetime.
#[cfg(test)]
pub(crate) struct Counted(Arc<ConnectionState>);

#[cfg(test)]
impl Drop for Counted {
    fn drop(&mut self) {
        self.0.request_ended();
    }
}

#[cfg(test)]
mod tests;
