//! What every clone of a [`Client`](super::Client) shares: the connections
//! in service, the wait line, the settings and the counters; and the task
//! that moves discovery's changes into the connection list.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use http::Uri;
use http::uri::{Authority, Scheme};
use tower::discover::Change;

use crate::age::AgedConnection;
use crate::age::waiters::Waiters;
use crate::discover::{AbortOnDrop, Demand, DiscoverStatus, EndpointKey, RotatingDiscover};
use crate::replay::ReplayConfig;

/// Counters of what a [`Client`](super::Client) did, for health endpoints, tests and logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Connections opened and put into service.
    pub opened: u64,
    /// Connections that replaced a live one of the same slot (rotations).
    pub rotated: u64,
    /// Connections removed because they closed or their endpoint left.
    pub removed: u64,
    /// Requests sent again after coming back unsent or refused.
    pub replayed: u64,
    /// Requests that found no serving connection and had to wait for one.
    pub waited: u64,
}

pub(super) struct Shared<C> {
    pub(super) connections: RwLock<Vec<(EndpointKey, AgedConnection<C>)>>,
    /// Requests waiting for a connection with room: woken one at a time,
    /// oldest first, as requests end, and all at once when a connection
    /// comes.
    pub(super) waiters: Arc<Waiters>,
    pub(super) ready_timeout: Duration,
    /// Every request's deadline (`ClientBuilder::timeout`).
    pub(super) timeout: Option<Duration>,
    pub(super) replay: ReplayConfig,
    pub(super) origin: (Scheme, Authority),
    pub(super) status: DiscoverStatus,
    /// Tells discovery when every connection is full.
    pub(super) demand: Arc<Demand>,
    pub(super) opened: AtomicU64,
    pub(super) rotated: AtomicU64,
    pub(super) removed: AtomicU64,
    pub(super) replayed: AtomicU64,
    pub(super) waited: AtomicU64,
    /// Aborts the driver task when the last client goes.
    pub(super) driver: OnceLock<AbortOnDrop>,
}

impl<C> Shared<C> {
    pub(super) fn new(
        ready_timeout: Duration,
        timeout: Option<Duration>,
        replay: ReplayConfig,
        origin: Uri,
        status: DiscoverStatus,
        demand: Arc<Demand>,
    ) -> Self {
        let parts = origin.into_parts();
        Shared {
            connections: RwLock::new(Vec::new()),
            waiters: Arc::default(),
            ready_timeout,
            timeout,
            replay,
            origin: (
                parts.scheme.unwrap_or(Scheme::HTTP),
                parts.authority.expect("validated: endpoint has a host"),
            ),
            status,
            demand,
            opened: AtomicU64::new(0),
            rotated: AtomicU64::new(0),
            removed: AtomicU64::new(0),
            replayed: AtomicU64::new(0),
            waited: AtomicU64::new(0),
            driver: OnceLock::new(),
        }
    }

    pub(super) fn apply(&self, change: Change<EndpointKey, AgedConnection<C>>) {
        let mut connections = self.connections.write().unwrap_or_else(|p| p.into_inner());
        match change {
            Change::Insert(key, mut connection) => {
                self.opened.fetch_add(1, Ordering::Relaxed);
                connection.waited_on_by(self.waiters.clone());
                match connections.iter_mut().find(|(k, _)| *k == key) {
                    // Dropping the old one starts its drain.
                    Some(slot) => {
                        self.rotated.fetch_add(1, Ordering::Relaxed);
                        slot.1 = connection;
                    }
                    None => connections.push((key, connection)),
                }
                drop(connections);
                // Everyone in line looks; those who find no room keep
                // their place.
                self.waiters.admit_up_to(usize::MAX);
            }
            Change::Remove(key) => {
                let before = connections.len();
                connections.retain(|(k, _)| *k != key);
                let removed = before - connections.len();
                self.removed.fetch_add(removed as u64, Ordering::Relaxed);
            }
        }
    }
}

/// Moves the discover's changes into the shared connection list, for as long
/// as a `Client` exists.
pub(super) async fn drive<C>(shared: Weak<Shared<C>>, mut discover: RotatingDiscover<C>) {
    while let Some(Ok(change)) = discover.next().await {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        shared.apply(change);
    }
}
