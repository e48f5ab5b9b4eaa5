//! Every connection slot of every endpoint in service.

use std::collections::HashMap;

use http::Uri;

use super::EndpointKey;
use super::slot::{Kind, Slot};

/// `C`: the connection a slot holds in reserve (see [`Slot`]).
pub(super) struct Slots<C>(HashMap<EndpointKey, Slot<C>>);

impl<C> Default for Slots<C> {
    fn default() -> Self {
        Slots(HashMap::new())
    }
}

impl<C> Slots<C> {
    /// The endpoint's regular slots, `0..per_endpoint`, all empty.
    pub(super) fn add_endpoint(&mut self, endpoint: &Uri, per_endpoint: usize) {
        for slot in 0..per_endpoint {
            let key = EndpointKey {
                endpoint: endpoint.clone(),
                slot,
            };
            self.0.insert(key, Slot::new(Kind::Regular));
        }
    }

    /// Takes out every slot of the endpoint (extras too); returns the keys
    /// of those that held a connection, which leaves the balancer.
    pub(super) fn remove_endpoint(&mut self, endpoint: &Uri) -> Vec<EndpointKey> {
        let keys: Vec<_> = self
            .0
            .keys()
            .filter(|key| key.endpoint == *endpoint)
            .cloned()
            .collect();
        keys.into_iter().filter(|key| self.remove(key)).collect()
    }

    /// Takes out one slot; true when it held a connection.
    pub(super) fn remove(&mut self, key: &EndpointKey) -> bool {
        self.0
            .remove(key)
            .is_some_and(|slot| slot.current().is_some())
    }

    pub(super) fn add_extra(&mut self, key: EndpointKey) {
        self.0
            .insert(key, Slot::new(Kind::Extra { idle_seen: None }));
    }

    pub(super) fn get(&self, key: &EndpointKey) -> Option<&Slot<C>> {
        self.0.get(key)
    }

    pub(super) fn get_mut(&mut self, key: &EndpointKey) -> Option<&mut Slot<C>> {
        self.0.get_mut(key)
    }

    pub(super) fn keys(&self) -> impl Iterator<Item = &EndpointKey> + Clone {
        self.0.keys()
    }

    /// The extras that started no request since the last check and have
    /// none in flight.
    pub(super) fn idle_extras(&mut self) -> Vec<EndpointKey> {
        self.0
            .iter_mut()
            .filter_map(|(key, slot)| slot.idle_since_last_check().then(|| key.clone()))
            .collect()
    }

    pub(super) fn has_extras(&self) -> bool {
        self.0
            .values()
            .any(|slot| matches!(slot.kind(), Kind::Extra { .. }))
    }
}
