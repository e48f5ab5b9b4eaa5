//! One connection slot of an endpoint, as a state machine: the connection it
//! holds, and the attempt under way to (re)place it. The worker performs
//! what a transition returns (connect, wait, tell the balancer); the slot
//! only decides, so its timeline is tested without sockets.

use std::sync::Arc;
use std::time::Duration;

use super::backoff::Backoff;
use crate::age::state::ConnectionState;

/// Requests a connection must have started for a server's `GOAWAY` on it
/// to be a routine end (a request cap), not load shedding.
pub(super) const SERVED_MANY: u32 = 100;

/// The requests a connection the server ended with `GOAWAY` served, when
/// that was a request cap per connection: [`SERVED_MANY`] or more.
pub(super) fn request_cap(ended: &ConnectionState) -> Option<u32> {
    (ended.started() >= SERVED_MANY).then(|| ended.served())
}

/// The connection a slot holds.
pub(super) enum Held {
    /// None: never connected, or the last one was lost or went away.
    Empty,
    /// In service.
    Serving(Arc<ConnectionState>),
    /// In service past its deadline, until its replacement is ready.
    Due(Arc<ConnectionState>),
}

/// The attempt under way to fill (or refill) the slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Attempt {
    /// Nothing under way.
    Idle,
    /// A connect is under way.
    Connecting,
    /// The next connect waits for the backoff's timer.
    BackingOff,
}

/// Whether the slot is one of `connections_per_endpoint`, or one more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Regular,
    /// Opened above `connections_per_endpoint` because the endpoint's
    /// connections were full; closed once idle. `idle_seen` is the
    /// connection's `started` count at the last idle check.
    Extra {
        idle_seen: Option<u32>,
    },
}

/// What the worker does after a connection left a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reconnect {
    /// Connect now.
    Now,
    /// Connect after this long.
    After(Duration),
}

/// The slot of one connection, with `C` the connection itself (what the
/// worker hands the balancer) for a successor held in reserve.
pub(super) struct Slot<C> {
    /// Bumped per connection, so events of a replaced one are ignored.
    generation: u64,
    held: Held,
    attempt: Attempt,
    /// A successor, connected ahead of the server's request cap and kept
    /// out of the pick until the connection in service ends (its `GOAWAY`,
    /// its deadline, its loss): make-before-break for an end the server
    /// sets. Only while a connection serves.
    standby: Option<(Arc<ConnectionState>, C)>,
    /// Connects failed or connections lost in a row.
    failures: u32,
    kind: Kind,
}

impl<C> Slot<C> {
    pub(super) fn new(kind: Kind) -> Self {
        Slot {
            generation: 0,
            held: Held::Empty,
            attempt: Attempt::Idle,
            standby: None,
            failures: 0,
            kind,
        }
    }

    pub(super) fn kind(&self) -> Kind {
        self.kind
    }

    #[cfg(test)]
    pub(super) fn attempt(&self) -> Attempt {
        self.attempt
    }

    pub(super) fn failures(&self) -> u32 {
        self.failures
    }

    /// The connection in service, due or not.
    pub(super) fn current(&self) -> Option<&Arc<ConnectionState>> {
        match &self.held {
            Held::Empty => None,
            Held::Serving(state) | Held::Due(state) => Some(state),
        }
    }

    /// Whether events of the connection of `generation` still concern the
    /// slot.
    pub(super) fn is_current(&self, generation: u64) -> bool {
        self.generation == generation
    }

    /// Nothing under way, and no connection or a due one.
    pub(super) fn wants_connect(&self) -> bool {
        self.attempt == Attempt::Idle && !matches!(self.held, Held::Serving(_))
    }

    /// Starts a connect, unless one is under way (a backoff's wait gives
    /// way: a deadline or a `GOAWAY` asks for a connection now).
    pub(super) fn begin_connect(&mut self) -> bool {
        if self.attempt == Attempt::Connecting {
            return false;
        }
        self.attempt = Attempt::Connecting;
        true
    }

    /// Starts connecting a successor for the connection in service, whose
    /// server's request cap is near; unless something is under way, a
    /// successor waits already, or the connection is not in service.
    pub(super) fn begin_standby(&mut self) -> bool {
        if self.attempt != Attempt::Idle
            || self.standby.is_some()
            || !matches!(self.held, Held::Serving(_))
        {
            return false;
        }
        self.attempt = Attempt::Connecting;
        true
    }

    /// Whether the connect under way is for a successor (see
    /// [`begin_standby`](Self::begin_standby)): the connection in service
    /// still serves.
    pub(super) fn connecting_standby(&self) -> bool {
        self.attempt == Attempt::Connecting && matches!(self.held, Held::Serving(_))
    }

    /// The successor connected: it waits until the connection in service
    /// ends.
    pub(super) fn stand_by(&mut self, state: Arc<ConnectionState>, connection: C) {
        self.attempt = Attempt::Idle;
        self.standby = Some((state, connection));
    }

    /// The successor, to take the place of a connection that ended: `None`
    /// when there is none, or it closed while it waited (a server's idle
    /// timeout), and then a connect is due as without one.
    pub(super) fn take_standby(&mut self) -> Option<(Arc<ConnectionState>, C)> {
        self.standby
            .take()
            .filter(|(state, _)| state.is_serving() && !state.handle.is_closed())
    }

    /// Starts the backoff's wait, unless something is under way already.
    pub(super) fn begin_backoff(&mut self) -> bool {
        if self.attempt != Attempt::Idle {
            return false;
        }
        self.attempt = Attempt::BackingOff;
        true
    }

    /// The backoff's timer fired.
    pub(super) fn backoff_over(&mut self) {
        if self.attempt == Attempt::BackingOff {
            self.attempt = Attempt::Idle;
        }
    }

    /// A connect succeeded: the connection serves, and the one it replaces
    /// (if any) is returned, to be dropped (which starts its drain). The
    /// new connection's generation is returned with it.
    pub(super) fn connected(
        &mut self,
        state: Arc<ConnectionState>,
    ) -> (u64, Option<Arc<ConnectionState>>) {
        self.attempt = Attempt::Idle;
        self.generation += 1;
        if let Kind::Extra { idle_seen } = &mut self.kind {
            *idle_seen = None;
        }
        let replaced = match std::mem::replace(&mut self.held, Held::Serving(state)) {
            Held::Empty => None,
            Held::Serving(old) | Held::Due(old) => Some(old),
        };
        (self.generation, replaced)
    }

    /// A connect failed: the next one waits for the backoff.
    pub(super) fn connect_failed(&mut self, backoff: &Backoff) -> Duration {
        self.attempt = Attempt::Idle;
        self.failures += 1;
        backoff.delay(self.failures)
    }

    /// The connection reached its deadline: it lived its whole age, so
    /// whatever failed before is over, and it waits for a replacement.
    pub(super) fn deadline(&mut self) {
        self.failures = 0;
        if let Held::Serving(state) = std::mem::replace(&mut self.held, Held::Empty) {
            self.held = Held::Due(state);
        }
    }

    /// The server sent `GOAWAY`: a rotation the server asked for, not a
    /// failure. The connection leaves the slot (it finishes its in-flight
    /// requests). A server that sends `GOAWAY` to each new connection at
    /// once is shedding load, not rotating, so the replacement opens no
    /// sooner than the backoff's minimum after the old one opened; unless
    /// the old one started [`SERVED_MANY`] requests or more: that is a
    /// server's request cap per connection (nginx's `keepalive_requests`,
    /// 1,000 by default; Envoy's `max_requests_per_connection`), routine,
    /// with callers waiting for the replacement.
    pub(super) fn go_away(
        &mut self,
        backoff: &Backoff,
    ) -> Option<(Arc<ConnectionState>, Reconnect)> {
        let old = self.take()?;
        self.failures = 0;
        let wait = if request_cap(&old).is_some() {
            Duration::ZERO
        } else {
            backoff.min.saturating_sub(old.age())
        };
        let next = if wait.is_zero() {
            Reconnect::Now
        } else {
            Reconnect::After(wait)
        };
        Some((old, next))
    }

    /// The connection closed: the first loss is replaced at once, repeated
    /// ones back off, so a server that accepts and closes is not hammered.
    /// A connection that lived longer than the longest backoff starts the
    /// count over.
    pub(super) fn lost(&mut self, backoff: &Backoff) -> Option<(Arc<ConnectionState>, Reconnect)> {
        let lost = self.take()?;
        if lost.age() >= backoff.max {
            self.failures = 0;
        }
        self.failures += 1;
        let next = match self.failures {
            1 => Reconnect::Now,
            n => Reconnect::After(backoff.delay(n - 1)),
        };
        Some((lost, next))
    }

    /// For extras: whether the connection started no request since the
    /// last check and has none in flight.
    pub(super) fn idle_since_last_check(&mut self) -> bool {
        let (Kind::Extra { idle_seen }, Held::Serving(state) | Held::Due(state)) =
            (&mut self.kind, &self.held)
        else {
            return false;
        };
        let started = state.started();
        let idle = state.in_flight() == 0 && *idle_seen == Some(started);
        *idle_seen = Some(started);
        idle
    }

    fn take(&mut self) -> Option<Arc<ConnectionState>> {
        match std::mem::replace(&mut self.held, Held::Empty) {
            Held::Empty => None,
            Held::Serving(state) | Held::Due(state) => Some(state),
        }
    }
}

#[cfg(test)]
mod tests;
