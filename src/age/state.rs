//! The state one connection shares between its service, its in-flight
//! requests, its supervisor task and whoever manages its rotation.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::balance::{EndpointHealth, SlowStart};
use super::config::Judging;
pub(crate) use super::waiters::{Turn, Waiters};
use crate::classify::ResponseClassifier;
use crate::connector::ConnectionHandle;
use crate::load::{Load, LoadInstant};
pub(crate) use in_flight::InFlight;

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

pub(crate) struct ConnectionState {
    pub(crate) endpoint: String,
    pub(crate) born: Instant,
    /// `born` on the system clock, for load stamps. The load is measured per
    /// request, so it uses `std`'s clock: tokio's `Instant::now` takes a lock
    /// whenever tokio's `test-util` feature is on anywhere in the build.
    born_std: LoadInstant,
    pub(crate) deadline: Option<Instant>,
    pub(crate) drain_timeout: Duration,
    pub(crate) handle: ConnectionHandle,
    /// `SERVING`, `DRAINING` or `CLOSED`, with the [`DrainReason`] above
    /// the phase bits once it is not serving: one atomic, so no reader sees
    /// a phase without its reason.
    phase: AtomicU8,
    /// Wakes the supervisor: the phase changed, or the last request finished.
    wake: Notify,
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
    waiters: OnceLock<Arc<Waiters>>,
    /// Set on connections to an endpoint that joined recently.
    slow_start: OnceLock<SlowStart>,
    /// The endpoint's failure count, under outlier detection.
    health: OnceLock<Arc<EndpointHealth>>,
    /// Out of the pick: its endpoint is ejected as an outlier.
    ejected: AtomicBool,
    load: Load,
    /// What a response says about the pod (see [`crate::classify`]).
    classifier: ResponseClassifier,
    /// Nanoseconds since `born` of the last RTT sample.
    stamp_ns: AtomicU64,
    /// Nanoseconds since `born` of the last response, or of the moment the
    /// connection went from idle to busy: with requests in flight, how long
    /// it has been since it last answered.
    quiet_since_ns: AtomicU64,
}

impl ConnectionState {
    pub(crate) fn new(
        endpoint: String,
        deadline: Option<Instant>,
        drain_timeout: Duration,
        handle: ConnectionHandle,
        judging: impl Into<Judging>,
    ) -> Arc<Self> {
        let judging = judging.into();
        Arc::new(ConnectionState {
            endpoint,
            born: Instant::now(),
            born_std: LoadInstant::now(),
            deadline,
            drain_timeout,
            handle,
            phase: AtomicU8::new(SERVING),
            wake: Notify::new(),
            observer: OnceLock::new(),
            cap_marks: AtomicU64::new(0),
            refused: AtomicU32::new(0),
            waiters: OnceLock::new(),
            slow_start: OnceLock::new(),
            health: OnceLock::new(),
            ejected: AtomicBool::new(false),
            load: Load::new(judging.load, judging.penalty),
            classifier: judging.classifier,
            stamp_ns: AtomicU64::new(0),
            quiet_since_ns: AtomicU64::new(0),
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

    pub(crate) fn set_health(&self, health: Arc<EndpointHealth>) {
        let _ = self.health.set(health);
    }

    #[inline]
    pub(crate) fn is_ejected(&self) -> bool {
        self.ejected.load(Ordering::Relaxed)
    }

    pub(crate) fn set_ejected(&self, ejected: bool) {
        self.ejected.store(ejected, Ordering::Relaxed);
    }

    pub(crate) fn set_slow_start(&self, slow_start: SlowStart) {
        let _ = self.slow_start.set(slow_start);
    }

    /// The share of its normal traffic this connection should take at
    /// `now`: below 1 while its endpoint is in its slow-start window.
    #[inline]
    pub(crate) fn weight(&self, now: LoadInstant) -> f64 {
        self.slow_start.get().map_or(1.0, |s| s.weight(now))
    }

    /// Lets requests that wait for room on some connection hear when one
    /// ends here. Set once, by the client that balances over it.
    pub(crate) fn set_waiters(&self, waiters: Arc<Waiters>) {
        let _ = self.waiters.set(waiters);
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

    /// Counts a request in flight until the returned guard is dropped.
    #[inline]
    pub(crate) fn begin(self: &Arc<Self>) -> InFlight {
        let (before, started) = self.handle.begin_stream();
        let marks = self.cap_marks.load(Ordering::Relaxed);
        if marks != 0 {
            self.at_cap_marks(started, marks);
        }
        let start_ns = if self.load.samples_rtt() {
            let now = self.nanos_since_born(LoadInstant::now());
            if before == 0 {
                self.quiet_since_ns.store(now, Ordering::Relaxed);
            }
            now
        } else {
            0
        };
        InFlight::new(self.clone(), start_ns)
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

    /// The balancing cost of sending one more request here; lower is better.
    #[inline]
    pub(crate) fn cost(&self, now: LoadInstant) -> f64 {
        let now = self.nanos_since_born(now);
        let since = now.saturating_sub(self.stamp_ns.load(Ordering::Relaxed));
        let quiet = now.saturating_sub(self.quiet_since_ns.load(Ordering::Relaxed));
        self.load.cost(self.in_flight(), since, quiet, now)
    }

    /// In `u64` arithmetic: `Duration::as_nanos` is a `u128`, whose
    /// conversions cost more than the rest of the load bookkeeping.
    #[inline]
    fn nanos_since_born(&self, now: LoadInstant) -> u64 {
        let since = now.saturating_duration_since(self.born_std);
        since
            .as_secs()
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::from(since.subsec_nanos()))
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
    /// that closes nothing, the default load, a 5 s drain timeout.
    pub(crate) fn for_test(deadline: Option<Instant>) -> Arc<Self> {
        let handle = ConnectionHandle::new(|| {});
        handle.count_streams();
        ConnectionState::new(
            "http://10.0.0.1:80".into(),
            deadline,
            Duration::from_secs(5),
            handle,
            crate::load::LoadKind::default(),
        )
    }
}

mod in_flight;
#[cfg(test)]
mod tests;
