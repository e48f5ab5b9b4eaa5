//! [`Balancing`]: what the pick weighs of one connection (its load, what
//! its responses said, its endpoint's health and slow start) and whom its
//! freed room goes to (the client's wait line). Kept apart from the
//! connection's lifetime ([`ConnectionState`]), which it holds: the arrow
//! goes from balancing to lifetime, never back.
//!
//! The connection's load is measured here, by its own requests. The parts
//! that belong to others are handed in whole by their owners when they
//! take the connection, before anyone else can see it: discovery hands the
//! endpoint's [`EndpointHealth`] (which carries its ejection) and its
//! [`SlowStart`] ([`AgedConnection::weighed_as`](super::AgedConnection)),
//! the client its wait line ([`AgedConnection::waited_on_by`](super::AgedConnection)).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::balance::{EndpointHealth, SlowStart};
use super::config::Judging;
use super::state::ConnectionState;
use super::waiters::Waiters;
use crate::classify::ResponseClassifier;
use crate::load::{Load, LoadInstant};
pub(crate) use in_flight::InFlight;

pub(crate) struct Balancing {
    pub(crate) lifetime: Arc<ConnectionState>,
    /// When the connection was made, on the system clock, for load stamps.
    /// The load is measured per request, so it uses `std`'s clock: tokio's
    /// `Instant::now` takes a lock whenever tokio's `test-util` feature is
    /// on anywhere in the build.
    born: LoadInstant,
    judging: Judging,
    load: Load,
    /// What a response says about the pod (see [`crate::classify`]).
    classifier: ResponseClassifier,
    /// Nanoseconds since `born` of the last RTT sample.
    stamp_ns: AtomicU64,
    /// Nanoseconds since `born` of the last response, or of the moment the
    /// connection went from idle to busy: with requests in flight, how long
    /// it has been since it last answered.
    quiet_since_ns: AtomicU64,
    /// The endpoint's failure count and ejection, under outlier detection.
    health: Option<Arc<EndpointHealth>>,
    /// Set on connections to an endpoint that joined recently.
    slow_start: Option<SlowStart>,
    /// The requests waiting for room on some connection of the client that
    /// balances over this one: each request that ends here admits one.
    waiters: Option<Arc<Waiters>>,
}

impl Balancing {
    pub(crate) fn new(lifetime: Arc<ConnectionState>, judging: impl Into<Judging>) -> Self {
        let judging = judging.into();
        Balancing {
            lifetime,
            born: LoadInstant::now(),
            judging,
            load: Load::new(judging.load, judging.penalty),
            classifier: judging.classifier,
            stamp_ns: AtomicU64::new(0),
            quiet_since_ns: AtomicU64::new(0),
            health: None,
            slow_start: None,
            waiters: None,
        }
    }

    /// The same connection, judged the same way, with no request recorded:
    /// for a clone that has to be weighed on its own (see
    /// [`AgedConnection::weighed_as`](super::AgedConnection)).
    pub(crate) fn fresh(&self) -> Self {
        Balancing {
            health: self.health.clone(),
            slow_start: self.slow_start,
            waiters: self.waiters.clone(),
            ..Balancing::new(self.lifetime.clone(), self.judging)
        }
    }

    /// The endpoint's health (with its ejection) and slow-start ramp, from
    /// the discovery that owns them.
    pub(crate) fn weigh_as(
        &mut self,
        health: Option<Arc<EndpointHealth>>,
        slow_start: Option<SlowStart>,
    ) {
        self.health = health;
        self.slow_start = slow_start;
    }

    /// The wait line of the client that balances over this connection.
    pub(crate) fn wait_on(&mut self, waiters: Arc<Waiters>) {
        self.waiters = Some(waiters);
    }

    /// Counts a request in flight until the returned guard is dropped.
    #[inline]
    pub(crate) fn begin(self: &Arc<Self>) -> InFlight {
        let before = self.lifetime.request_started();
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

    /// Out of the pick: its endpoint is ejected as an outlier.
    #[inline]
    pub(crate) fn is_ejected(&self) -> bool {
        self.health.as_ref().is_some_and(|h| h.is_ejected())
    }

    /// The share of its normal traffic this connection should take at
    /// `now`: below 1 while its endpoint is in its slow-start window.
    #[inline]
    pub(crate) fn weight(&self, now: LoadInstant) -> f64 {
        self.slow_start.map_or(1.0, |s| s.weight(now))
    }

    /// The balancing cost of sending one more request here; lower is better.
    #[inline]
    pub(crate) fn cost(&self, now: LoadInstant) -> f64 {
        let now = self.nanos_since_born(now);
        let since = now.saturating_sub(self.stamp_ns.load(Ordering::Relaxed));
        let quiet = now.saturating_sub(self.quiet_since_ns.load(Ordering::Relaxed));
        self.load.cost(self.lifetime.in_flight(), since, quiet, now)
    }

    /// In `u64` arithmetic: `Duration::as_nanos` is a `u128`, whose
    /// conversions cost more than the rest of the load bookkeeping.
    #[inline]
    fn nanos_since_born(&self, now: LoadInstant) -> u64 {
        let since = now.saturating_duration_since(self.born);
        since
            .as_secs()
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::from(since.subsec_nanos()))
    }
}

impl fmt::Debug for Balancing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Balancing")
            .field("lifetime", &self.lifetime)
            .field("ejected", &self.is_ejected())
            .field("slow_start", &self.slow_start)
            .finish()
    }
}

#[cfg(test)]
impl Balancing {
    /// A connection for in-memory tests ([`ConnectionState::for_test`]),
    /// with the default load.
    pub(crate) fn for_test() -> Arc<Self> {
        Arc::new(Balancing::new(
            ConnectionState::for_test(None),
            crate::load::LoadKind::default(),
        ))
    }
}

mod in_flight;
#[cfg(test)]
mod tests;
