//! The state one connection shares between its service, its in-flight
//! requests, its supervisor task and whoever manages its rotation.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::balance::{EndpointHealth, SlowStart};
use super::config::Judging;
pub(crate) use super::waiters::{Turn, Waiters};
use crate::classify::{ResponseClass, ResponseClassifier};
use crate::connector::ConnectionHandle;
use crate::error::{Error, ErrorKind};
use crate::load::{Load, LoadInstant};
use crate::outcome::blames_pings;

/// The phase, in the low two bits of [`ConnectionState::phase`]; the drain
/// reason sits above them, so one load reads both.
const SERVING: u8 = 0;
const DRAINING: u8 = 1;
const CLOSED: u8 = 2;
const PHASE_MASK: u8 = 0b11;
const REASON_SHIFT: u32 = 2;

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
}

impl DrainReason {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => DrainReason::Aged,
            1 => DrainReason::Replaced,
            2 => DrainReason::GoAway,
            _ => DrainReason::Closed,
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

    /// Attaches the rotation manager. A managed connection keeps serving past
    /// its deadline until the manager replaces it (make-before-break).
    pub(crate) fn observe(&self, observer: impl Fn(Event) + Send + Sync + 'static) {
        let _ = self.observer.set(Box::new(observer));
        // It may have stopped serving before the observer was attached.
        if !self.is_serving() && self.drain_reason() != Some(DrainReason::Replaced) {
            self.emit(Event::Lost);
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
        let before = self.handle.begin_stream();
        let start_ns = if self.load.samples_rtt() {
            let now = self.nanos_since_born(LoadInstant::now());
            if before == 0 {
                self.quiet_since_ns.store(now, Ordering::Relaxed);
            }
            now
        } else {
            0
        };
        InFlight {
            state: self.clone(),
            start_ns,
            responded: false,
            unprocessed: false,
            awaiting_trailers: false,
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

/// One request in flight on a connection: held until its response body ends
/// (or the request fails), so that draining waits for it and the load sees it.
pub(crate) struct InFlight {
    state: Arc<ConnectionState>,
    /// In nanoseconds since the connection was born (0 when the load needs
    /// no clock): until the response head, when the request was sent; from
    /// then on, when the connection's previous response came, for a
    /// response judged by its trailers (the time since then weighs it).
    start_ns: u64,
    /// Its response headers came: `record_response` took the sample.
    responded: bool,
    /// It failed as provably unprocessed (the server said no): no failure
    /// of the connection's.
    unprocessed: bool,
    /// A gRPC response whose status comes in its trailers: it is judged
    /// when they come (or the body ends without them).
    awaiting_trailers: bool,
}

impl InFlight {
    /// Records the response's head: the time to it as an RTT sample, and
    /// what it says about the pod (a gRPC response with a body says it in
    /// its trailers, [`record_trailers`](Self::record_trailers)).
    #[inline]
    pub(crate) fn record_response(&mut self, status: http::StatusCode, headers: &http::HeaderMap) {
        self.responded = true;
        let state = &*self.state;
        state.handle.note_heard();
        let mut clock = None;
        if state.load.samples_rtt() {
            let now = state.nanos_since_born(LoadInstant::now());
            let prev = state.stamp_ns.swap(now, Ordering::Relaxed);
            state.quiet_since_ns.store(now, Ordering::Relaxed);
            state
                .load
                .record(now.saturating_sub(self.start_ns), now.saturating_sub(prev));
            clock = Some((now, now.saturating_sub(prev)));
        }
        match state.classifier.classify_head(status, headers) {
            Some(class) => self.judge(class, || clock.unwrap_or_default()),
            None => {
                self.awaiting_trailers = true;
                if let Some((now, since_previous)) = clock {
                    self.start_ns = now.saturating_sub(since_previous);
                }
            }
        }
    }

    /// A frame of the response's body came: the server is alive (for the
    /// keepalive).
    #[inline]
    pub(crate) fn record_frame(&self) {
        self.state.handle.note_heard();
    }

    /// The body of a response awaiting its trailers brought them, or ended
    /// without (`None`: gRPC's `UNKNOWN`).
    pub(crate) fn record_trailers(&mut self, trailers: Option<&http::HeaderMap>) {
        if std::mem::take(&mut self.awaiting_trailers) {
            let class = self.state.classifier.classify_trailers(trailers);
            let previous = self.start_ns;
            self.judge(class, || {
                let now = self.state.nanos_since_born(LoadInstant::now());
                (now, now.saturating_sub(previous))
            });
        }
    }

    /// What the response said, told to outlier detection and the load.
    /// `clock`: the time now and since the connection's previous response
    /// (read only when the load needs them).
    #[inline]
    fn judge(&self, class: ResponseClass, clock: impl FnOnce() -> (u64, u64)) {
        let state = &*self.state;
        if let Some(health) = state.health.get() {
            health.response(class.is_failure());
        }
        state.load.record_class(class.is_penalized(), clock);
    }

    /// The request failed (before its response, or in its body): lets the
    /// connection learn from it, and sorts it. A `GOAWAY` means the
    /// connection takes no more requests, a request cut by our own
    /// force-close or by a keepalive timeout says so, and one the server
    /// provably did not process is no failure of the connection's.
    pub(crate) fn failed(&mut self, mut err: Error) -> Error {
        let state = &*self.state;
        let wire = err.wire().unwrap_or_default();
        if wire.remote_go_away {
            state.start_draining(DrainReason::GoAway);
        } else if err.is_draining() {
            state.start_draining(DrainReason::Closed);
        }
        // grpc-go answers pings it finds too frequent with
        // GOAWAY(ENHANCE_YOUR_CALM, "too_many_pings"): on a connection that
        // sent keepalive pings, that code blames the pings, not the request.
        if err.is_blamed() && blames_pings(wire.reason, state.handle.pinged()) {
            err.clear_blame();
        }
        if err.is_unprocessed() {
            self.unprocessed = true;
        }
        if err.kind() == ErrorKind::Request {
            if state.handle.keep_alive_timed_out() {
                err.set_kind(ErrorKind::KeepAlive);
            } else if state.handle.was_forced() {
                err.set_kind(ErrorKind::ForceClosed);
            }
        }
        err
    }

    /// The request ended with no response (its caller gave up, a timeout,
    /// the connection failed): the time it waited raises the RTT estimate if
    /// it is longer, so a connection that stops answering costs more the
    /// longer its requests wait, instead of looking cheaper as its estimate
    /// decays with no samples. (A quick failure never lowers it.) Out of
    /// line: most requests get a response.
    #[cold]
    #[inline(never)]
    fn record_unanswered(&self) {
        let state = &*self.state;
        if !self.unprocessed
            && let Some(health) = state.health.get()
        {
            health.failure();
        }
        if !state.load.samples_rtt() {
            return;
        }
        let now_ns = state.nanos_since_born(LoadInstant::now());
        let waited = now_ns.saturating_sub(self.start_ns);
        if state.load.record_peak(waited) {
            state.stamp_ns.store(now_ns, Ordering::Relaxed);
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if !self.responded {
            self.record_unanswered();
        }
        let state = &*self.state;
        if state.handle.end_stream() == 1 && !state.is_serving() {
            state.wake.notify_one();
        }
        // The slot this frees goes to the first request in line.
        if let Some(waiters) = state.waiters.get()
            && waiters.count.load(Ordering::SeqCst) > 0
        {
            waiters.admit_one();
        }
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

#[cfg(test)]
mod tests;
