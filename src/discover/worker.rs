//! The task behind [`RotatingDiscover`](super::RotatingDiscover).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use http::Uri;
use tokio::sync::{Notify, mpsc};
use tower::ServiceExt;
use tower::discover::Change;
use tower_service::Service;

use super::backoff::Backoff;
use super::outlier::OutlierDetection;
use super::resolution::Schedule;
use super::{DiscoverStatus, EndpointKey};
use crate::age::AgedConnection;
use crate::age::state::{ConnectionState, Event};
use crate::age::{EndpointHealth, SlowStart};
use crate::error::{self, BoxError, Error, ErrorKind};
use crate::load::LoadInstant;
use crate::resolve::Resolution;

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

/// One endpoint under outlier detection.
struct Outlier {
    health: Arc<EndpointHealth>,
    /// Ejections in a row; one comes off per base ejection time healthy.
    ejections: u32,
    ejected: bool,
    readmitted_at: Option<tokio::time::Instant>,
}

#[derive(Default)]
struct Slot {
    /// Bumped per connection, so events of a replaced one are ignored.
    generation: u64,
    current: Option<Arc<ConnectionState>>,
    connecting: bool,
    retry_scheduled: bool,
    /// The current connection's deadline passed: it waits for a replacement.
    due: bool,
    failures: u32,
    /// Opened above `connections_per_endpoint` because the endpoint's
    /// connections were full; closed once idle.
    extra: bool,
    /// `started` of the current connection at the last idle check.
    idle_seen: Option<u32>,
}

/// A client's word that every connection is at its server's stream limit,
/// so the worker may open an extra one (up to `max_connections_per_endpoint`).
#[derive(Default)]
pub(crate) struct Demand {
    wanted: AtomicBool,
    notify: Notify,
}

impl Demand {
    /// Asks for one more connection; repeated asks before the worker acts
    /// count once.
    pub(crate) fn all_full(&self) {
        if !self.wanted.swap(true, Ordering::AcqRel) {
            self.notify.notify_one();
        }
    }
}

/// The worker's fixed settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    pub(crate) per_endpoint: usize,
    /// New endpoints (found by a resolution after the first) take a growing
    /// share of traffic over this window; zero turns it off.
    pub(crate) slow_start: Duration,
    pub(crate) outlier: Option<OutlierDetection>,
    /// At least `per_endpoint`; above it, extras open on demand.
    pub(crate) max_per_endpoint: usize,
    /// An extra that started no request for this long is closed.
    pub(crate) extra_idle: Duration,
    pub(crate) backoff: Backoff,
    pub(crate) connect_timeout: Duration,
}

pub(crate) struct Worker<M, S> {
    make: M,
    slots: HashMap<EndpointKey, Slot>,
    /// The endpoints in service, in the order they were added.
    endpoints: Vec<Uri>,
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
    /// When endpoints found after the first resolution joined, for slow
    /// start; the first answer's endpoints start at full weight.
    joined: HashMap<Uri, LoadInstant>,
    first_answer_seen: bool,
    outliers: HashMap<Uri, Outlier>,
    failing_tx: mpsc::UnboundedSender<Uri>,
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
            slots: HashMap::new(),
            endpoints: Vec::new(),
            settings,
            schedule,
            changes,
            events_tx,
            events,
            pending: FuturesUnordered::new(),
            status,
            demand,
            extra_connecting: false,
            joined: HashMap::new(),
            first_answer_seen: false,
            outliers: HashMap::new(),
            failing_tx,
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
        for slot in 0..self.settings.per_endpoint {
            let key = EndpointKey {
                endpoint: endpoint.clone(),
                slot,
            };
            self.slots.insert(key, Slot::default());
        }
        if let Some(detection) = self.settings.outlier {
            self.outliers.insert(
                endpoint.clone(),
                Outlier {
                    health: EndpointHealth::new(
                        endpoint.clone(),
                        detection.consecutive_failures,
                        self.failing_tx.clone(),
                    ),
                    ejections: 0,
                    ejected: false,
                    readmitted_at: None,
                },
            );
        }
        self.endpoints.push(endpoint);
    }

    /// Takes an endpoint out: its connections (extras too) leave the
    /// balancer and drain.
    fn remove_endpoint(&mut self, endpoint: &Uri) {
        self.endpoints.retain(|e| e != endpoint);
        self.outliers.remove(endpoint);
        self.status.set_ejected(endpoint, false);
        let keys: Vec<_> = self
            .slots
            .keys()
            .filter(|key| key.endpoint == *endpoint)
            .cloned()
            .collect();
        for key in keys {
            self.remove_slot(key);
        }
    }

    /// The endpoint's failures reached the threshold: eject it, unless as
    /// many endpoints as allowed are out already.
    fn on_failing(&mut self, endpoint: Uri) {
        let Some(detection) = self.settings.outlier else {
            return;
        };
        let out = self.outliers.values().filter(|o| o.ejected).count();
        let allowed = detection.max_ejected(self.endpoints.len());
        let Some(outlier) = self.outliers.get_mut(&endpoint) else {
            return;
        };
        outlier.health.reset();
        if outlier.ejected {
            return;
        }
        if out >= allowed {
            tracing::warn!(
                endpoint = %endpoint,
                ejected = out,
                "endpoint failing, not ejected: max_ejection_percent reached"
            );
            crate::metrics::ejection_overflow(&endpoint);
            return;
        }
        // Healthy stretches since the last readmission take ejections off.
        if let Some(at) = outlier.readmitted_at {
            let healthy = at.elapsed().as_nanos() / detection.base_ejection_time.as_nanos().max(1);
            outlier.ejections = outlier
                .ejections
                .saturating_sub(u32::try_from(healthy).unwrap_or(u32::MAX));
        }
        outlier.ejections = outlier.ejections.saturating_add(1);
        outlier.ejected = true;
        crate::metrics::ejected(&endpoint);
        let time = detection.ejection_time(outlier.ejections);
        tracing::warn!(
            endpoint = %endpoint,
            ejections = outlier.ejections,
            for_ms = time.as_millis() as u64,
            "endpoint ejected as an outlier"
        );
        self.set_ejected(&endpoint, true);
        self.pending.push(Box::pin(async move {
            tokio::time::sleep(time).await;
            Step::Readmit { endpoint }
        }));
    }

    fn on_readmit(&mut self, endpoint: Uri) {
        let Some(outlier) = self.outliers.get_mut(&endpoint) else {
            return;
        };
        outlier.ejected = false;
        outlier.readmitted_at = Some(tokio::time::Instant::now());
        outlier.health.reset();
        tracing::info!(endpoint = %endpoint, "ejected endpoint readmitted");
        self.set_ejected(&endpoint, false);
    }

    fn set_ejected(&self, endpoint: &Uri, ejected: bool) {
        self.status.set_ejected(endpoint, ejected);
        for (key, slot) in &self.slots {
            if key.endpoint == *endpoint
                && let Some(state) = &slot.current
            {
                state.set_ejected(ejected);
            }
        }
    }

    fn remove_slot(&mut self, key: EndpointKey) {
        if let Some(Slot {
            current: Some(_), ..
        }) = self.slots.remove(&key)
        {
            let _ = self.changes.send(Change::Remove(key));
        }
    }

    /// Every connection is full: one more connection, to the endpoint that
    /// has the fewest, unless each has `max_per_endpoint` already. One
    /// extra opens at a time; the next demand is heard once it is in.
    async fn on_demand(&mut self) {
        if self.extra_connecting || !self.demand.wanted.swap(false, Ordering::AcqRel) {
            return;
        }
        let count = |endpoint: &Uri| {
            self.slots
                .keys()
                .filter(|k| k.endpoint == *endpoint)
                .count()
        };
        let Some(endpoint) = self
            .endpoints
            .iter()
            .filter(|e| count(e) < self.settings.max_per_endpoint)
            .min_by_key(|e| count(e))
            .cloned()
        else {
            return;
        };
        let Some(slot) =
            (self.settings.per_endpoint..self.settings.max_per_endpoint).find(|&slot| {
                !self.slots.contains_key(&EndpointKey {
                    endpoint: endpoint.clone(),
                    slot,
                })
            })
        else {
            return;
        };
        let key = EndpointKey { endpoint, slot };
        tracing::debug!(endpoint = %key, "every connection is full, opening an extra one");
        self.slots.insert(
            key.clone(),
            Slot {
                extra: true,
                ..Slot::default()
            },
        );
        self.extra_connecting = true;
        self.connect(key).await;
    }

    /// Closes the extras that started no request since the last check (and
    /// have none in flight): so an extra idle for `extra_idle` closes within
    /// twice that.
    fn close_idle_extras(&mut self) {
        let idle: Vec<_> = self
            .slots
            .iter_mut()
            .filter(|(_, slot)| slot.extra)
            .filter_map(|(key, slot)| {
                let state = slot.current.as_ref()?;
                let started = state.started();
                let idle = state.in_flight() == 0 && slot.idle_seen == Some(started);
                slot.idle_seen = Some(started);
                idle.then(|| key.clone())
            })
            .collect();
        for key in idle {
            tracing::debug!(endpoint = %key, "extra connection idle, closing it");
            self.remove_slot(key);
        }
    }

    fn has_extras(&self) -> bool {
        self.slots.values().any(|slot| slot.extra)
    }

    pub(crate) async fn run(mut self) {
        self.connect_all_wanted().await;
        let extras_allowed = self.settings.max_per_endpoint > self.settings.per_endpoint;
        let demand = self.demand.clone();
        let mut idle_check = tokio::time::interval(self.settings.extra_idle);
        idle_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let ejected = || self.outliers.values().filter(|o| o.ejected).count();
            self.membership.update(self.endpoints.len(), ejected);
            let has_extras = self.has_extras();
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
                            slot.retry_scheduled = false;
                        }
                        self.connect_if_wanted(key).await;
                    }
                    Step::Resolved(result) => self.on_resolved(result).await,
                    Step::Readmit { endpoint } => self.on_readmit(endpoint),
                },
                Some(endpoint) = self.failing.recv() => self.on_failing(endpoint),
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
        self.status.resolved();
        match result {
            Ok(answer) if !answer.is_empty() || schedule.config.empty_clears => {
                let ttl = answer.ttl();
                let next = schedule.succeeded(ttl);
                let target = &schedule.target;
                let fresh: Vec<Uri> = answer
                    .addrs()
                    .iter()
                    .map(|addr| target.endpoint(*addr))
                    .collect::<HashSet<_>>()
                    .into_iter()
                    .collect();
                let removed: Vec<Uri> = self
                    .endpoints
                    .iter()
                    .filter(|e| !fresh.contains(e))
                    .cloned()
                    .collect();
                let added: Vec<Uri> = fresh
                    .iter()
                    .filter(|e| !self.endpoints.contains(e))
                    .cloned()
                    .collect();
                tracing::debug!(
                    host = %target.host,
                    added = added.len(),
                    removed = removed.len(),
                    unchanged = fresh.len() - added.len(),
                    ttl_s = ttl.map(|t| t.as_secs()),
                    next_in_ms = next.as_millis() as u64,
                    "resolved endpoints"
                );
                self.status.set_error(None);
                for endpoint in &removed {
                    self.remove_endpoint(endpoint);
                }
                let first = !std::mem::replace(&mut self.first_answer_seen, true);
                self.joined
                    .retain(|_, joined| joined.elapsed() < self.settings.slow_start);
                for endpoint in added {
                    if !first && !self.settings.slow_start.is_zero() {
                        self.joined.insert(endpoint.clone(), LoadInstant::now());
                    }
                    self.add_endpoint(endpoint);
                }
            }
            Ok(_) => {
                let delay = schedule.failed();
                tracing::warn!(
                    host = %schedule.target.host,
                    kept = self.endpoints.len(),
                    retry_in_ms = delay.as_millis() as u64,
                    "empty DNS answer, keeping the last known endpoints"
                );
                self.status.set_error(Some(format!(
                    "resolving {} gave no address",
                    schedule.target.host
                )));
            }
            Err(error) => {
                let delay = schedule.failed();
                tracing::warn!(
                    host = %schedule.target.host,
                    error = %error::chain(&error),
                    kept = self.endpoints.len(),
                    retry_in_ms = delay.as_millis() as u64,
                    "resolving failed, keeping the last known endpoints"
                );
                let detail = error.cause().map(|s| format!(": {s}")).unwrap_or_default();
                self.status.set_error(Some(format!("{error}{detail}")));
            }
        }
        self.status.set_endpoints(self.endpoints.clone());
        // New endpoints, and rotations that waited for this answer.
        self.connect_all_wanted().await;
    }

    async fn connect_all_wanted(&mut self) {
        let keys: Vec<_> = self.slots.keys().cloned().collect();
        for key in keys {
            self.connect_if_wanted(key).await;
        }
    }

    async fn connect(&mut self, key: EndpointKey) {
        let Some(slot) = self.slots.get_mut(&key) else {
            return;
        };
        if slot.connecting {
            return;
        }
        slot.connecting = true;
        let future: BoxFuture<Step<S>> = match self.make.ready().await {
            Ok(make) => {
                let connecting = make.call(key.endpoint.clone());
                let timeout = self.settings.connect_timeout;
                Box::pin(async move {
                    let result = match tokio::time::timeout(timeout, connecting).await {
                        Ok(made) => made.map_err(|e| error::from_box(e.into(), ErrorKind::Connect)),
                        Err(_) => {
                            crate::metrics::connect_timed_out(&key.endpoint);
                            Err(Error::new(ErrorKind::Connect)
                                .with_message(format!("{key}: no connection within {timeout:?}")))
                        }
                    };
                    Step::Connected { key, result }
                })
            }
            Err(e) => {
                let result = Err(error::from_box(e.into(), ErrorKind::Connect));
                Box::pin(async move { Step::Connected { key, result } })
            }
        };
        self.pending.push(future);
    }

    async fn connect_if_wanted(&mut self, key: EndpointKey) {
        let wanted = self
            .slots
            .get(&key)
            .is_some_and(|slot| !slot.retry_scheduled && (slot.current.is_none() || slot.due));
        if wanted {
            self.connect(key).await;
        }
    }

    fn schedule_retry(&mut self, key: EndpointKey, delay: Duration) {
        let Some(slot) = self.slots.get_mut(&key) else {
            return;
        };
        if slot.retry_scheduled {
            return;
        }
        slot.retry_scheduled = true;
        self.pending.push(Box::pin(async move {
            tokio::time::sleep(delay).await;
            Step::Retry { key }
        }));
    }

    async fn on_connected(&mut self, key: EndpointKey, result: Result<AgedConnection<S>, Error>) {
        // A connection to an endpoint that left meanwhile is dropped here.
        let Some(slot) = self.slots.get_mut(&key) else {
            if key.slot >= self.settings.per_endpoint {
                // It was the extra being opened.
                self.extra_connecting = false;
            }
            return;
        };
        slot.connecting = false;
        if slot.extra && slot.current.is_none() {
            self.extra_connecting = false;
            // Waiters hear of the new connection and ask again if they
            // still find every connection full.
            self.demand.wanted.store(false, Ordering::Release);
            if result.is_err() {
                // Not retried: the regular connections keep serving.
                self.slots.remove(&key);
                return;
            }
        }
        match result {
            Ok(connection) => {
                self.status.set_connect_error(key.to_string(), None);
                slot.due = false;
                slot.idle_seen = None;
                if let Some(outlier) = self.outliers.get(&key.endpoint) {
                    connection.state().set_health(outlier.health.clone());
                    connection.state().set_ejected(outlier.ejected);
                }
                if let Some(&joined) = self.joined.get(&key.endpoint) {
                    connection.state().set_slow_start(SlowStart {
                        joined,
                        window: self.settings.slow_start,
                    });
                }
                slot.generation += 1;
                let generation = slot.generation;
                let replaced = slot.current.replace(connection.state().clone());
                if replaced.is_some() {
                    crate::metrics::rotated(&key.endpoint);
                }
                let events = self.events_tx.clone();
                let observed_key = key.clone();
                connection.state().observe(move |event| {
                    let _ = events.send((observed_key.clone(), generation, event));
                });
                match &replaced {
                    Some(old) => tracing::debug!(
                        endpoint = %key,
                        old_age_ms = old.age().as_millis() as u64,
                        "connection replaced"
                    ),
                    None => tracing::debug!(endpoint = %key, "connection added"),
                }
                let _ = self.changes.send(Change::Insert(key, connection));
            }
            Err(error) => {
                slot.failures += 1;
                if let Some(outlier) = self.outliers.get(&key.endpoint) {
                    outlier.health.failure();
                }
                let delay = self.settings.backoff.delay(slot.failures);
                let error = error::chain(&error);
                self.status
                    .set_connect_error(key.to_string(), Some(error.clone()));
                tracing::warn!(
                    endpoint = %key,
                    %error,
                    failures = slot.failures,
                    retry_in_ms = delay.as_millis() as u64,
                    "connect failed"
                );
                self.schedule_retry(key, delay);
                // The endpoint may be gone: ask DNS again.
                self.resolve_soon();
            }
        }
    }

    async fn on_event(&mut self, key: EndpointKey, generation: u64, event: Event) {
        let Some(slot) = self.slots.get_mut(&key) else {
            return;
        };
        if slot.generation != generation {
            return;
        }
        match event {
            Event::Deadline => {
                // It lived its whole age: whatever failed before is over.
                slot.failures = 0;
                slot.due = true;
                // Resolve first when allowed, so the replacement goes to a
                // current address; otherwise the last answer is fresh enough.
                if !self.resolve_soon() {
                    self.connect(key).await;
                }
            }
            Event::GoAway => {
                // The server asked for a new connection (its own maximum
                // connection age, a graceful shutdown): a rotation, not a
                // failure. The old connection finishes its in-flight
                // requests; the replacement opens now, with no backoff.
                let Some(old) = slot.current.take() else {
                    return;
                };
                slot.failures = 0;
                tracing::debug!(
                    endpoint = %key,
                    age_ms = old.age().as_millis() as u64,
                    "server sent GOAWAY, rotating the connection"
                );
                let _ = self.changes.send(Change::Remove(key.clone()));
                // A server that sends GOAWAY to each new connection at once
                // is shedding load, not rotating: reconnect no sooner than
                // the backoff's minimum after the connection opened.
                let wait = self.settings.backoff.min.saturating_sub(old.age());
                self.resolve_soon();
                if wait.is_zero() {
                    self.connect(key).await;
                } else {
                    self.schedule_retry(key, wait);
                }
            }
            Event::Lost => {
                let Some(lost) = slot.current.take() else {
                    return;
                };
                tracing::warn!(
                    endpoint = %key,
                    age_ms = lost.age().as_millis() as u64,
                    reason = ?lost.drain_reason(),
                    "connection lost, replacing it"
                );
                let _ = self.changes.send(Change::Remove(key.clone()));
                // The first loss is replaced at once; repeated losses back off, so
                // a server that accepts and closes is not hammered.
                if lost.age() >= self.settings.backoff.max {
                    slot.failures = 0;
                }
                slot.failures += 1;
                let failures = slot.failures;
                self.resolve_soon();
                if failures == 1 {
                    self.connect(key).await;
                } else {
                    let delay = self.settings.backoff.delay(failures - 1);
                    self.schedule_retry(key, delay);
                }
            }
        }
    }
}
