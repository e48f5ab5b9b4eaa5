//! The worker's connects: starting them, and putting what they bring in a
//! slot's place (or in reserve, as the successor of a connection whose
//! server's request cap is near).

use std::time::Duration;

use http::Uri;
use tower::ServiceExt;
use tower::discover::Change;
use tower_service::Service;

use super::{BoxFuture, Step, Worker};
use crate::age::AgedConnection;
use crate::age::SlowStart;
use crate::discover::EndpointKey;
use crate::discover::slot::{Kind, Slot};
use crate::error::{self, BoxError, Error, ErrorKind};

impl<M, S> Worker<M, S>
where
    M: Service<Uri, Response = AgedConnection<S>> + Send + 'static,
    M::Error: Into<BoxError>,
    M::Future: Send + 'static,
    S: Send + 'static,
{
    pub(super) async fn connect(&mut self, key: EndpointKey) {
        if self
            .slots
            .get_mut(&key)
            .is_some_and(|slot| slot.begin_connect())
        {
            self.dial(key).await;
        }
    }

    /// Starts the connect a slot has begun.
    pub(super) async fn dial(&mut self, key: EndpointKey) {
        let future: BoxFuture<Step<S>> = match self.make.ready().await {
            Ok(make) => {
                let connecting = make.call(key.endpoint.clone());
                let timeout = self.settings.connect_timeout;
                Box::pin(async move {
                    let made = match timeout {
                        None => Ok(connecting.await),
                        Some(timeout) => tokio::time::timeout(timeout, connecting)
                            .await
                            .map_err(|_| timeout),
                    };
                    let result = match made {
                        Ok(made) => made.map_err(|e| error::from_box(e.into(), ErrorKind::Connect)),
                        Err(timeout) => {
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

    pub(super) async fn connect_if_wanted(&mut self, key: EndpointKey) {
        let wanted = self.slots.get(&key).is_some_and(Slot::wants_connect);
        if wanted {
            self.connect(key).await;
        }
    }

    pub(super) fn schedule_retry(&mut self, key: EndpointKey, delay: Duration) {
        if !self
            .slots
            .get_mut(&key)
            .is_some_and(|slot| slot.begin_backoff())
        {
            return;
        }
        self.pending.push(Box::pin(async move {
            tokio::time::sleep(delay).await;
            Step::Retry { key }
        }));
    }

    pub(super) async fn on_connected(
        &mut self,
        key: EndpointKey,
        result: Result<AgedConnection<S>, Error>,
    ) {
        // A connection to an endpoint that left meanwhile is dropped here.
        let Some(slot) = self.slots.get_mut(&key) else {
            if key.slot >= self.settings.per_endpoint {
                // It was the extra being opened.
                self.extra_connecting = false;
            }
            return;
        };
        if matches!(slot.kind(), Kind::Extra { .. }) && slot.current().is_none() {
            self.extra_connecting = false;
            // Waiters hear of the new connection and ask again if they
            // still find every connection full.
            self.demand.clear();
            if result.is_err() {
                // Not retried: the regular connections keep serving.
                self.slots.remove(&key);
                return;
            }
        }
        match result {
            Ok(connection) => {
                self.status.set_connect_error(key.to_string(), None);
                if slot.connecting_standby() {
                    tracing::debug!(endpoint = %key, "successor connected, waiting for the server's cap");
                    slot.stand_by(connection.state().clone(), connection);
                } else {
                    self.install(key, connection);
                }
            }
            Err(error) => {
                let delay = slot.connect_failed(&self.settings.backoff);
                let failures = slot.failures();
                if let Some(health) = self
                    .ejections
                    .as_ref()
                    .and_then(|ejections| ejections.health(&key.endpoint))
                {
                    health.failure();
                }
                let error = error::chain(&error);
                self.status
                    .set_connect_error(key.to_string(), Some(error.clone()));
                tracing::warn!(
                    endpoint = %key,
                    %error,
                    failures,
                    retry_in_ms = delay.as_millis() as u64,
                    "connect failed"
                );
                self.schedule_retry(key, delay);
                // The endpoint may be gone: ask DNS again.
                self.resolve_soon();
            }
        }
    }

    /// Puts a connection in the slot's place and in the balancer's, in
    /// place of the one it replaces (which then drains).
    pub(super) fn install(&mut self, key: EndpointKey, mut connection: AgedConnection<S>) {
        let Some(slot) = self.slots.get_mut(&key) else {
            return;
        };
        let health = self
            .ejections
            .as_ref()
            .and_then(|ejections| ejections.health(&key.endpoint))
            .cloned();
        let slow_start = self
            .endpoints
            .joined(&key.endpoint)
            .map(|joined| SlowStart {
                joined,
                window: self.settings.slow_start,
            });
        connection.weighed_as(health, slow_start);
        let state = connection.state();
        let (generation, replaced) = slot.connected(state.clone());
        let events = self.events_tx.clone();
        let observed_key = key.clone();
        state.observe(
            move |event| {
                let _ = events.send((observed_key.clone(), generation, event));
            },
            self.endpoints.successor_due_at(&key.endpoint),
        );
        match &replaced {
            Some(old) => {
                crate::metrics::rotated(&key.endpoint);
                tracing::debug!(
                    endpoint = %key,
                    old_age_ms = old.age().as_millis() as u64,
                    "connection replaced"
                );
            }
            None => tracing::debug!(endpoint = %key, "connection added"),
        }
        let _ = self.changes.send(Change::Insert(key, connection));
    }

    /// The slot's connection ended (or is due): its successor, connected
    /// ahead, takes its place at once. False when there is none.
    pub(super) fn install_standby(&mut self, key: &EndpointKey) -> bool {
        let Some(slot) = self.slots.get_mut(key) else {
            return false;
        };
        // Due: `install` counts the rotation as it hands the old one back.
        let ended = slot.current().is_none();
        let Some((_, connection)) = slot.take_standby() else {
            return false;
        };
        if ended {
            crate::metrics::rotated(&key.endpoint);
        }
        self.install(key.clone(), connection);
        true
    }
}
