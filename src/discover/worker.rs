//! The task behind [`RotatingDiscover`](super::RotatingDiscover).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use http::Uri;
use tokio::sync::mpsc;
use tower::discover::Change;
use tower_service::Service;

use super::ejection::{EjectionReason, Ejections};
use super::endpoints::Endpoints;
use super::extra::{Demand, extra_key};
use super::resolution::Schedule;
use super::settings::Settings;
use super::slot::{Reconnect, request_cap};
use super::slots::Slots;
use super::{DiscoverStatus, EndpointKey};
use crate::age::AgedConnection;
use crate::age::state::Event;
use crate::error::{BoxError, Error};
use crate::resolve::Resolution;

mod connect;

type Changes<S> = mpsc::UnboundedSender<Change<EndpointKey, AgedConnection<S>>>;
type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

enum Step<S> {
    Connected {
        key: EndpointKey,
        result: Result<AgedConnection<S>, Error>,
    },
    Retry {
        key: EndpointKey,
    },
    Resolved(Result<Resolution, Error>),
    /// An ejected endpoint's time is up.
    Readmit {
        endpoint: Uri,
    },
}

pub(crate) struct Worker<M, S> {
    make: M,
    slots: Slots<AgedConnection<S>>,
    endpoints: Endpoints,
    settings: Settings,
    /// Re-resolution, when the endpoints come from a host name.
    schedule: Option<Schedule>,
    changes: Changes<S>,
    events_tx: mpsc::UnboundedSender<(EndpointKey, u64, Event)>,
    events: mpsc::UnboundedReceiver<(EndpointKey, u64, Event)>,
    pending: FuturesUnordered<BoxFuture<Step<S>>>,
    status: DiscoverStatus,
    demand: Arc<Demand>,
    /// An extra connection is being opened (one at a time).
    extra_connecting: bool,
    /// Outlier detection's state, when it is on.
    ejections: Option<Ejections>,
    /// Where endpoints' health reports reaching the failure threshold.
    failing: mpsc::UnboundedReceiver<Uri>,
    membership: crate::metrics::Membership,
}

impl<M, S> Worker<M, S>
where
    M: Service<Uri, Response = AgedConnection<S>> + Send + 'static,
    M::Error: Into<BoxError>,
    M::Future: Send + 'static,
    S: Send + 'static,
{
    pub(crate) fn new(
        make: M,
        endpoints: Vec<Uri>,
        settings: Settings,
        schedule: Option<Schedule>,
        changes: Changes<S>,
        status: DiscoverStatus,
        demand: Arc<Demand>,
    ) -> Self {
        let (events_tx, events) = mpsc::unbounded_channel();
        let (failing_tx, failing) = mpsc::unbounded_channel();
        Worker {
            make,
            slots: Slots::default(),
            endpoints: Endpoints::new(settings.slow_start),
            settings,
            schedule,
            changes,
            events_tx,
            events,
            pending: FuturesUnordered::new(),
            status,
            demand,
            extra_connecting: false,
            ejections: settings
                .outlier
                .map(|detection| Ejections::new(detection, failing_tx)),
            failing,
            membership: Default::default(),
        }
        .with_endpoints(endpoints)
    }

    fn with_endpoints(mut self, endpoints: Vec<Uri>) -> Self {
        for endpoint in endpoints {
            self.add_endpoint(endpoint);
        }
        self
    }

    fn add_endpoint(&mut self, endpoint: Uri) {
        self.slots
            .add_endpoint(&endpoint, self.settings.per_endpoint);
        if let Some(ejections) = &mut self.ejections {
            ejections.add(endpoint.clone());
        }
        self.endpoints.add(endpoint);
    }

    /// Takes an endpoint out: its connections (extras too) leave the
    /// balancer and drain.
    fn remove_endpoint(&mut self, endpoint: &Uri) {
        self.endpoints.remove(endpoint);
        if let Some(ejections) = &mut self.ejections {
            ejections.remove(endpoint);
        }
        self.status.set_ejected(endpoint, None);
        for key in self.slots.remove_endpoint(endpoint) {
            let _ = self.changes.send(Change::Remove(key));
        }
    }

    /// The endpoint's failures reached the threshold: eject it, unless as
    /// many endpoints as allowed are out already.
    fn on_failing(&mut self, endpoint: Uri, reason: EjectionReason) {
        let in_service = self.endpoints.len();
        let Some(ejections) = &mut self.ejections else {
            return;
        };
        if let Some(time) = ejections.failing(&endpoint, in_service, reason) {
            self.set_ejected(&endpoint, Some(reason));
            self.pending.push(Box::pin(async move {
                tokio::time::sleep(time).await;
                Step::Readmit { endpoint }
            }));
        }
    }

    fn on_readmit(&mut self, endpoint: Uri) {
        if self
            .ejections
            .as_mut()
            .is_some_and(|ejections| ejections.readmit(&endpoint))
        {
            self.set_ejected(&endpoint, None);
        }
    }

    /// Says so in the status; the pick reads it from the endpoint's
    /// health, which the ejection timeline sets.
    fn set_ejected(&self, endpoint: &Uri, reason: Option<EjectionReason>) {
        self.status.set_ejected(endpoint, reason);
    }

    fn remove_slot(&mut self, key: EndpointKey) {
        if self.slots.remove(&key) {
            let _ = self.changes.send(Change::Remove(key));
        }
    }

    /// Every connection is full: one more connection, to the endpoint that
    /// has the fewest, unless each has `max_per_endpoint` already. One
    /// extra opens at a time; the next demand is heard once it is in.
    async fn on_demand(&mut self) {
        if self.extra_connecting || !self.demand.take() {
            return;
        }
        let Some(key) = extra_key(
            self.endpoints.list(),
            self.slots.keys(),
            self.settings.per_endpoint,
            self.settings.max_per_endpoint,
        ) else {
            return;
        };
        tracing::debug!(endpoint = %key, "every connection is full, opening an extra one");
        self.slots.add_extra(key.clone());
        self.extra_connecting = true;
        self.connect(key).await;
    }

    /// Closes the extras that started no request since the last check (and
    /// have none in flight): so an extra idle for `extra_idle` closes within
    /// twice that.
    fn close_idle_extras(&mut self) {
        for key in self.slots.idle_extras() {
            tracing::debug!(endpoint = %key, "extra connection idle, closing it");
            self.remove_slot(key);
        }
    }

    pub(crate) async fn run(mut self) {
        self.connect_all_wanted().await;
        let extras_allowed = self.settings.max_per_endpoint > self.settings.per_endpoint;
        let demand = self.demand.clone();
        let mut idle_check = tokio::time::interval(self.settings.extra_idle);
        idle_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let interval = self.ejections.as_ref().and_then(Ejections::interval);
        let failure_percentage = interval.is_some();
        let mut failure_check = tokio::time::interval(interval.unwrap_or(crate::time::LONGEST));
        failure_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        failure_check.reset();
        loop {
            let ejected = || self.ejections.as_ref().map_or(0, Ejections::ejected);
            self.membership.update(self.endpoints.len(), ejected);
            let has_extras = self.slots.has_extras();
            let resolve_due = async {
                match &mut self.schedule {
                    Some(schedule) if schedule.armed => schedule.timer.as_mut().await,
                    _ => std::future::pending().await,
                }
            };
            tokio::select! {
                Some((key, generation, event)) = self.events.recv() => {
                    self.on_event(key, generation, event).await;
                }
                Some(step) = self.pending.next(), if !self.pending.is_empty() => match step {
                    Step::Connected { key, result } => self.on_connected(key, result).await,
                    Step::Retry { key } => {
                        if let Some(slot) = self.slots.get_mut(&key) {
                            slot.backoff_over();
                        }
                        self.connect_if_wanted(key).await;
                    }
                    Step::Resolved(result) => self.on_resolved(result).await,
                    Step::Readmit { endpoint } => self.on_readmit(endpoint),
                },
                Some(endpoint) = self.failing.recv() => {
                    self.on_failing(endpoint, EjectionReason::ConsecutiveFailures);
                }
                _ = failure_check.tick(), if failure_percentage => {
                    let failing = self.ejections.as_mut().map(Ejections::interval_over);
                    for endpoint in failing.into_iter().flatten() {
                        self.on_failing(endpoint, EjectionReason::FailurePercentage);
                    }
                }
                () = resolve_due => self.start_resolve(),
                () = demand.notify.notified(), if extras_allowed => self.on_demand().await,
                _ = idle_check.tick(), if has_extras => self.close_idle_extras(),
                _ = self.changes.closed() => return,
            }
        }
    }

    fn start_resolve(&mut self) {
        if let Some(schedule) = &mut self.schedule {
            let lookup = schedule.start();
            self.pending
                .push(Box::pin(async move { Step::Resolved(lookup.await) }));
        }
    }

    /// Re-resolves as soon as the minimum interval allows; true when the
    /// resolution started now (so connects may wait for its answer).
    fn resolve_soon(&mut self) -> bool {
        let Some(schedule) = &mut self.schedule else {
            return false;
        };
        if schedule.request() {
            self.start_resolve();
            true
        } else {
            false
        }
    }

    async fn on_resolved(&mut self, result: Result<Resolution, Error>) {
        let Some(schedule) = &mut self.schedule else {
            return;
        };
        if let Some(diff) = schedule.answered(result, &mut self.endpoints, &self.status) {
            for endpoint in &diff.removed {
                self.remove_endpoint(endpoint);
            }
            for endpoint in diff.added {
                self.add_endpoint(endpoint);
            }
        }
        self.status.set_endpoints(self.endpoints.list().to_vec());
        // New endpoints, and rotations that waited for this answer.
        self.connect_all_wanted().await;
    }

    async fn connect_all_wanted(&mut self) {
        let keys: Vec<_> = self.slots.keys().cloned().collect();
        for key in keys {
            self.connect_if_wanted(key).await;
        }
    }

    async fn on_event(&mut self, key: EndpointKey, generation: u64, event: Event) {
        let Some(slot) = self.slots.get_mut(&key) else {
            return;
        };
        if !slot.is_current(generation) {
            return;
        }
        let backoff = self.settings.backoff;
        let next = match event {
            Event::CapNear => {
                // The server's request cap is near: connect the successor
                // now, so it serves the moment the server's GOAWAY comes.
                // A fixed cap is read now, not when the connection came:
                // by now the requests its predecessor's server refused
                // have all been counted. The connection stops at it, with
                // its successor ready or not (requests then wait for it,
                // rather than go to a server that refuses them).
                if let (Some(cap), Some(current)) = (
                    self.endpoints.fixed_request_cap(&key.endpoint),
                    slot.current(),
                ) {
                    current.drain_at_cap(cap);
                }
                if slot.begin_standby() {
                    self.dial(key).await;
                }
                return;
            }
            Event::CapReached => {
                // It stopped at the server's cap: the successor takes over.
                if self.install_standby(&key) {
                    return;
                }
                let Some((_, next)) = self
                    .slots
                    .get_mut(&key)
                    .and_then(|slot| slot.go_away(&backoff))
                else {
                    return;
                };
                next
            }
            Event::Deadline => {
                slot.deadline();
                if self.install_standby(&key) {
                    return;
                }
                // Resolve first when allowed, so the replacement goes to a
                // current address; otherwise the last answer is fresh enough.
                if !self.resolve_soon() {
                    self.connect(key).await;
                }
                return;
            }
            Event::GoAway => {
                // The server asked for a new connection (its request cap,
                // its own maximum connection age, a graceful shutdown). The
                // old connection finishes its in-flight requests.
                let Some((old, next)) = slot.go_away(&backoff) else {
                    return;
                };
                if request_cap(&old).is_some() {
                    self.endpoints.learn_request_cap(&key.endpoint, old.clone());
                }
                tracing::debug!(
                    endpoint = %key,
                    age_ms = old.age().as_millis() as u64,
                    served = old.served(),
                    "server sent GOAWAY, rotating the connection"
                );
                if self.install_standby(&key) {
                    self.resolve_soon();
                    return;
                }
                next
            }
            Event::Lost => {
                let Some((lost, next)) = slot.lost(&backoff) else {
                    return;
                };
                tracing::warn!(
                    endpoint = %key,
                    age_ms = lost.age().as_millis() as u64,
                    reason = ?lost.drain_reason(),
                    "connection lost, replacing it"
                );
                if self.install_standby(&key) {
                    self.resolve_soon();
                    return;
                }
                next
            }
        };
        let _ = self.changes.send(Change::Remove(key.clone()));
        self.resolve_soon();
        match next {
            Reconnect::Now => self.connect(key).await,
            Reconnect::After(delay) => self.schedule_retry(key, delay),
        }
    }
}
