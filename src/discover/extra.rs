//! Extra connections: opened above `connections_per_endpoint` when every
//! connection is at its server's stream limit, closed again once idle.

use std::sync::atomic::{AtomicBool, Ordering};

use http::Uri;
use tokio::sync::Notify;

use super::EndpointKey;

/// A client's word that every connection is at its server's stream limit,
/// so the worker may open an extra one (up to `max_connections_per_endpoint`).
#[derive(Default)]
pub(crate) struct Demand {
    wanted: AtomicBool,
    pub(super) notify: Notify,
}

impl Demand {
    /// Asks for one more connection; repeated asks before the worker acts
    /// count once.
    pub(crate) fn all_full(&self) {
        if !self.wanted.swap(true, Ordering::AcqRel) {
            self.notify.notify_one();
        }
    }

    /// Takes the ask, if there was one.
    pub(super) fn take(&self) -> bool {
        self.wanted.swap(false, Ordering::AcqRel)
    }

    /// Forgets an ask: a connection just came, and waiters that still find
    /// every connection full will ask again.
    pub(super) fn clear(&self) {
        self.wanted.store(false, Ordering::Release);
    }
}

/// Where the extra goes: the endpoint with the fewest connections (the
/// first listed among equals), in its first free slot above `regular`,
/// unless each endpoint has `max` already.
pub(super) fn extra_key<'a>(
    endpoints: &[Uri],
    slots: impl Iterator<Item = &'a EndpointKey> + Clone,
    regular: usize,
    max: usize,
) -> Option<EndpointKey> {
    let count = |endpoint: &Uri| slots.clone().filter(|k| k.endpoint == *endpoint).count();
    let endpoint = endpoints
        .iter()
        .filter(|e| count(e) < max)
        .min_by_key(|e| count(e))?;
    let slot = (regular..max).find(|&slot| {
        !slots
            .clone()
            .any(|k| k.endpoint == *endpoint && k.slot == slot)
    })?;
    Some(EndpointKey {
        endpoint: endpoint.clone(),
        slot,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(n: u8) -> Uri {
        format!("http://10.0.0.{n}:80").parse().unwrap()
    }

    fn key(n: u8, slot: usize) -> EndpointKey {
        EndpointKey {
            endpoint: uri(n),
            slot,
        }
    }

    #[test]
    fn the_extra_goes_to_the_endpoint_with_the_fewest_connections() {
        let slots = [key(1, 0), key(1, 1), key(2, 0)];
        assert_eq!(
            extra_key(&[uri(1), uri(2)], slots.iter(), 1, 4),
            Some(key(2, 1))
        );
    }

    #[test]
    fn the_extra_takes_the_first_free_slot_above_the_regular_ones() {
        let slots = [key(1, 0), key(1, 2)];
        assert_eq!(extra_key(&[uri(1)], slots.iter(), 1, 4), Some(key(1, 1)));
    }

    #[test]
    fn no_extra_once_each_endpoint_has_the_maximum() {
        let slots = [key(1, 0), key(1, 1), key(2, 0), key(2, 1)];
        assert_eq!(extra_key(&[uri(1), uri(2)], slots.iter(), 1, 2), None);
        assert_eq!(extra_key(&[], [].iter(), 1, 2), None);
    }

    #[test]
    fn repeated_asks_count_once_until_taken() {
        let demand = Demand::default();
        demand.all_full();
        demand.all_full();
        assert!(demand.take());
        assert!(!demand.take());
        demand.all_full();
        demand.clear();
        assert!(!demand.take());
    }
}
