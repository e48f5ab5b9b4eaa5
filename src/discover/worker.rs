//! The task behind [`RotatingDiscover`](super::RotatingDiscover).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use http::Uri;
use tokio::sync::mpsc;
use tower::ServiceExt;
use tower::discover::Change;
use tower_service::Service;

use super::EndpointKey;
use super::backoff::Backoff;
use crate::age::AgedConnection;
use crate::age::state::{ConnectionState, Event};
use crate::error::{self, BoxError, Error, ErrorKind};

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
}

pub(crate) struct Worker<M, S> {
    make: M,
    slots: HashMap<EndpointKey, Slot>,
    changes: Changes<S>,
    events_tx: mpsc::UnboundedSender<(EndpointKey, u64, Event)>,
    events: mpsc::UnboundedReceiver<(EndpointKey, u64, Event)>,
    pending: FuturesUnordered<BoxFuture<Step<S>>>,
    backoff: Backoff,
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
        keys: Vec<EndpointKey>,
        changes: Changes<S>,
        backoff: Backoff,
    ) -> Self {
        let (events_tx, events) = mpsc::unbounded_channel();
        Worker {
            make,
            slots: keys.into_iter().map(|k| (k, Slot::default())).collect(),
            changes,
            events_tx,
            events,
            pending: FuturesUnordered::new(),
            backoff,
        }
    }

    pub(crate) async fn run(mut self) {
        let keys: Vec<_> = self.slots.keys().cloned().collect();
        for key in keys {
            self.connect(key).await;
        }
        loop {
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
                },
                _ = self.changes.closed() => return,
            }
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
                Box::pin(async move {
                    let result = connecting
                        .await
                        .map_err(|e| error::from_box(e.into(), ErrorKind::Connect));
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
            .is_some_and(|slot| slot.current.is_none() || slot.due);
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
        let Some(slot) = self.slots.get_mut(&key) else {
            return;
        };
        slot.connecting = false;
        match result {
            Ok(connection) => {
                slot.due = false;
                slot.generation += 1;
                let generation = slot.generation;
                let replaced = slot.current.replace(connection.state().clone());
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
                let delay = self.backoff.delay(slot.failures);
                tracing::warn!(
                    endpoint = %key,
                    %error,
                    failures = slot.failures,
                    retry_in_ms = delay.as_millis() as u64,
                    "connect failed"
                );
                self.schedule_retry(key, delay);
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
                self.connect(key).await;
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
                if lost.age() >= self.backoff.max {
                    slot.failures = 0;
                }
                slot.failures += 1;
                if slot.failures == 1 {
                    self.connect(key).await;
                } else {
                    let delay = self.backoff.delay(slot.failures - 1);
                    self.schedule_retry(key, delay);
                }
            }
        }
    }
}
