//! [`InFlight`]: one request in flight on a connection, and what its
//! outcome tells the connection (its load, its health, its drain).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::Balancing;
use crate::age::state::DrainReason;
use crate::classify::ResponseClass;
use crate::error::{Error, ErrorKind};
use crate::load::LoadInstant;
use crate::outcome::blames_pings;

/// One request in flight on a connection: held until its response body ends
/// (or the request fails), so that draining waits for it and the load sees it.
pub(crate) struct InFlight {
    balancing: Arc<Balancing>,
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
    pub(super) fn new(balancing: Arc<Balancing>, start_ns: u64) -> Self {
        InFlight {
            balancing,
            start_ns,
            responded: false,
            unprocessed: false,
            awaiting_trailers: false,
        }
    }

    /// Records the response's head: the time to it as an RTT sample, and
    /// what it says about the pod (a gRPC response with a body says it in
    /// its trailers, [`record_trailers`](Self::record_trailers)).
    #[inline]
    pub(crate) fn record_response(&mut self, status: http::StatusCode, headers: &http::HeaderMap) {
        self.responded = true;
        let balancing = &*self.balancing;
        balancing.lifetime.handle.note_heard();
        let mut clock = None;
        if balancing.load.samples_rtt() {
            let now = balancing.nanos_since_born(LoadInstant::now());
            let prev = balancing.stamp_ns.swap(now, Ordering::Relaxed);
            balancing.quiet_since_ns.store(now, Ordering::Relaxed);
            balancing
                .load
                .record(now.saturating_sub(self.start_ns), now.saturating_sub(prev));
            clock = Some((now, now.saturating_sub(prev)));
        }
        match balancing.classifier.classify_head(status, headers) {
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
        self.balancing.lifetime.handle.note_heard();
    }

    /// The body of a response awaiting its trailers brought them, or ended
    /// without (`None`: gRPC's `UNKNOWN`).
    pub(crate) fn record_trailers(&mut self, trailers: Option<&http::HeaderMap>) {
        if std::mem::take(&mut self.awaiting_trailers) {
            let class = self.balancing.classifier.classify_trailers(trailers);
            let previous = self.start_ns;
            self.judge(class, || {
                let now = self.balancing.nanos_since_born(LoadInstant::now());
                (now, now.saturating_sub(previous))
            });
        }
    }

    /// What the response said, told to outlier detection and the load.
    /// `clock`: the time now and since the connection's previous response
    /// (read only when the load needs them).
    #[inline]
    fn judge(&self, class: ResponseClass, clock: impl FnOnce() -> (u64, u64)) {
        let balancing = &*self.balancing;
        if let Some(health) = &balancing.health {
            health.response(class.is_failure());
        }
        balancing.load.record_class(class.is_penalized(), clock);
    }

    /// The request failed (before its response, or in its body): lets the
    /// connection learn from it, and sorts it. A `GOAWAY` means the
    /// connection takes no more requests, a request cut by our own
    /// force-close or by a keepalive timeout says so, and one the server
    /// provably did not process is no failure of the connection's.
    pub(crate) fn failed(&mut self, mut err: Error) -> Error {
        let lifetime = &*self.balancing.lifetime;
        let wire = err.wire().unwrap_or_default();
        if wire.remote_go_away {
            // The request may hear of the GOAWAY before the connection's
            // task records it: its code tells a routine end (`NO_ERROR`)
            // from a failure either way.
            if let Some(reason) = wire.reason {
                lifetime.handle.set_going_away(reason);
            }
            lifetime.start_draining(DrainReason::GoAway);
        } else if err.is_draining() {
            lifetime.start_draining(DrainReason::Closed);
        }
        // grpc-go answers pings it finds too frequent with
        // GOAWAY(ENHANCE_YOUR_CALM, "too_many_pings"): on a connection that
        // sent keepalive pings, that code blames the pings, not the request.
        if err.is_blamed() && blames_pings(wire.reason, lifetime.handle.pinged()) {
            err.clear_blame();
        }
        if err.is_unprocessed() {
            self.unprocessed = true;
            lifetime.request_refused();
        }
        if err.kind() == ErrorKind::Request {
            if lifetime.handle.keep_alive_timed_out() {
                err.set_kind(ErrorKind::KeepAlive);
            } else if lifetime.handle.was_forced() {
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
        let balancing = &*self.balancing;
        if !self.unprocessed
            && let Some(health) = &balancing.health
        {
            health.failure();
        }
        if !balancing.load.samples_rtt() {
            return;
        }
        let now_ns = balancing.nanos_since_born(LoadInstant::now());
        let waited = now_ns.saturating_sub(self.start_ns);
        if balancing.load.record_peak(waited) {
            balancing.stamp_ns.store(now_ns, Ordering::Relaxed);
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if !self.responded {
            self.record_unanswered();
        }
        let balancing = &*self.balancing;
        balancing.lifetime.request_ended();
        // The slot this frees goes to the first request in line.
        if let Some(waiters) = &balancing.waiters
            && waiters.count.load(Ordering::SeqCst) > 0
        {
            waiters.admit_one();
        }
    }
}
