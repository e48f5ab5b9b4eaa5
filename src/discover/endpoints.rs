//! The endpoints in service, when each joined, and the request cap each
//! server showed: what a resolution's answer adds and removes, which
//! endpoints start slowly, and when a connection's successor is wanted.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use http::Uri;

use crate::age::state::ConnectionState;
use crate::load::LoadInstant;

/// What an answer changes.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Diff {
    pub(super) added: Vec<Uri>,
    pub(super) removed: Vec<Uri>,
}

pub(super) struct Endpoints {
    /// In the order they were added.
    in_service: Vec<Uri>,
    /// When endpoints found after the first answer joined, for slow start;
    /// the first answer's endpoints (and fixed ones) start at full weight,
    /// since the whole fleet is new to this client then.
    joined: HashMap<Uri, LoadInstant>,
    answered: bool,
    slow_start: Duration,
    /// The last two connections each server ended with a routine `GOAWAY`
    /// after many requests (nginx's `keepalive_requests`, Envoy's
    /// `max_requests_per_connection`): what they served is its request cap.
    request_caps: HashMap<Uri, CapsSeen>,
}

/// The connections a server last ended at its request cap. Read when
/// needed, not when they ended: a request above the cap counts as refused
/// only once its caller hears of it, so just after the `GOAWAY` the count
/// may be a little high.
struct CapsSeen {
    last: Arc<ConnectionState>,
    before: Option<Arc<ConnectionState>>,
    /// Connections told to stop at the fixed cap since these were seen.
    stopped: u32,
}

/// Every this many connections, one is not stopped at a fixed cap but left
/// to the server's `GOAWAY`, so a cap the server raised is heard. It costs
/// that connection the requests sent above the cap (refused, sent again).
const CAP_PROBE_EVERY: u32 = 16;

impl Endpoints {
    pub(super) fn new(slow_start: Duration) -> Self {
        Endpoints {
            in_service: Vec::new(),
            joined: HashMap::new(),
            answered: false,
            slow_start,
            request_caps: HashMap::new(),
        }
    }

    pub(super) fn list(&self) -> &[Uri] {
        &self.in_service
    }

    pub(super) fn len(&self) -> usize {
        self.in_service.len()
    }

    pub(super) fn add(&mut self, endpoint: Uri) {
        self.in_service.push(endpoint);
    }

    pub(super) fn remove(&mut self, endpoint: &Uri) {
        self.in_service.retain(|e| e != endpoint);
        self.request_caps.remove(endpoint);
    }

    /// The server ended `ended` with a routine `GOAWAY` after many
    /// requests: what it served is the server's cap per connection, until
    /// the next one says otherwise.
    pub(super) fn learn_request_cap(&mut self, endpoint: &Uri, ended: Arc<ConnectionState>) {
        if !self.in_service.contains(endpoint) {
            return;
        }
        let before = self.request_caps.remove(endpoint).map(|seen| seen.last);
        self.request_caps.insert(
            endpoint.clone(),
            CapsSeen {
                last: ended,
                before,
                stopped: 0,
            },
        );
    }

    /// After how many requests a connection to the endpoint wants its
    /// successor: a quarter before the server's cap, which leaves the
    /// successor the time of a quarter of the connection's requests to
    /// connect (and room for a cap counted a little high).
    pub(super) fn successor_due_at(&self, endpoint: &Uri) -> Option<u32> {
        let cap = self.request_caps.get(endpoint)?.last.served();
        Some((cap - cap / 4).max(1))
    }

    /// The server's request cap, when its last two capped connections
    /// served exactly as many requests: a fixed cap (nginx, Envoy), where
    /// a connection may stop at it before the server says so and no
    /// request goes above it to be refused. A `GOAWAY` for another reason
    /// (the server's age, a shutdown) never repeats a count, and a server
    /// that ends connections a little after a count (hyper's two-phase
    /// graceful shutdown takes what comes during a round trip) neither:
    /// for those the successor waits for the server's `GOAWAY`. Asked once
    /// per connection: every [`CAP_PROBE_EVERY`]th gets `None` and runs to
    /// the server's `GOAWAY`, which tells a cap the server changed since.
    pub(super) fn fixed_request_cap(&mut self, endpoint: &Uri) -> Option<u32> {
        let seen = self.request_caps.get_mut(endpoint)?;
        let cap = seen.last.served();
        if seen.before.as_ref()?.served() != cap {
            return None;
        }
        seen.stopped += 1;
        (seen.stopped % CAP_PROBE_EVERY != 0).then_some(cap)
    }

    /// When the endpoint joined, while it is within its slow-start window.
    pub(super) fn joined(&self, endpoint: &Uri) -> Option<LoadInstant> {
        self.joined.get(endpoint).copied()
    }

    /// Compares an answer (duplicates allowed) with the endpoints in
    /// service, and stamps the new ones for slow start unless this is the
    /// first answer. The caller adds and removes them.
    pub(super) fn diff(&mut self, answer: impl IntoIterator<Item = Uri>) -> Diff {
        let fresh: HashSet<Uri> = answer.into_iter().collect();
        let removed = self
            .in_service
            .iter()
            .filter(|e| !fresh.contains(*e))
            .cloned()
            .collect();
        let added: Vec<Uri> = fresh
            .into_iter()
            .filter(|e| !self.in_service.contains(e))
            .collect();
        let first = !std::mem::replace(&mut self.answered, true);
        let window = self.slow_start;
        self.joined.retain(|_, joined| joined.elapsed() < window);
        if !first && !window.is_zero() {
            let now = LoadInstant::now();
            for endpoint in &added {
                self.joined.insert(endpoint.clone(), now);
            }
        }
        Diff { added, removed }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(n: u8) -> Uri {
        format!("http://10.0.0.{n}:80").parse().unwrap()
    }

    fn sorted(mut uris: Vec<Uri>) -> Vec<Uri> {
        uris.sort_by_key(|u| u.to_string());
        uris
    }

    #[test]
    fn an_answer_adds_what_is_new_and_removes_what_is_gone() {
        let mut endpoints = Endpoints::new(Duration::ZERO);
        endpoints.add(uri(1));
        endpoints.add(uri(2));
        let diff = endpoints.diff([uri(2), uri(3), uri(3), uri(4)]);
        assert_eq!(
            sorted(diff.added),
            vec![uri(3), uri(4)],
            "duplicates count once"
        );
        assert_eq!(diff.removed, vec![uri(1)]);
        assert_eq!(endpoints.diff([uri(1), uri(2)]), Diff::default());
    }

    #[test]
    fn endpoints_of_the_first_answer_start_at_full_weight_and_later_ones_slowly() {
        let mut endpoints = Endpoints::new(Duration::from_secs(3600));
        let first = endpoints.diff([uri(1), uri(2)]);
        for endpoint in first.added {
            assert!(endpoints.joined(&endpoint).is_none());
            endpoints.add(endpoint);
        }
        let later = endpoints.diff([uri(1), uri(2), uri(3)]);
        assert_eq!(later.added, vec![uri(3)]);
        assert!(endpoints.joined(&uri(3)).is_some(), "a new pod warms up");
        assert!(endpoints.joined(&uri(1)).is_none());
    }

    /// A connection that started `n` requests.
    fn served(n: u32) -> Arc<ConnectionState> {
        let state = ConnectionState::for_test(None);
        for _ in 0..n {
            drop(state.begin());
        }
        state
    }

    #[test]
    fn a_learned_request_cap_wants_a_successor_a_quarter_before_it() {
        let mut endpoints = Endpoints::new(Duration::ZERO);
        endpoints.add(uri(1));
        assert_eq!(endpoints.successor_due_at(&uri(1)), None);
        endpoints.learn_request_cap(&uri(1), served(1000));
        assert_eq!(endpoints.successor_due_at(&uri(1)), Some(750));
        endpoints.learn_request_cap(&uri(1), served(100));
        assert_eq!(
            endpoints.successor_due_at(&uri(1)),
            Some(75),
            "the last one counts"
        );
        endpoints.learn_request_cap(&uri(2), served(100));
        assert_eq!(endpoints.successor_due_at(&uri(2)), None, "not in service");
        endpoints.remove(&uri(1));
        endpoints.add(uri(1));
        assert_eq!(
            endpoints.successor_due_at(&uri(1)),
            None,
            "forgotten with it"
        );
    }

    #[test]
    fn a_cap_is_fixed_when_two_connections_in_a_row_served_exactly_as_many() {
        let mut endpoints = Endpoints::new(Duration::ZERO);
        endpoints.add(uri(1));
        endpoints.learn_request_cap(&uri(1), served(1000));
        assert_eq!(
            endpoints.fixed_request_cap(&uri(1)),
            None,
            "once proves little"
        );
        endpoints.learn_request_cap(&uri(1), served(1003));
        assert_eq!(
            endpoints.fixed_request_cap(&uri(1)),
            None,
            "a shutdown, an age"
        );
        endpoints.learn_request_cap(&uri(1), served(1003));
        assert_eq!(endpoints.fixed_request_cap(&uri(1)), Some(1003));
    }

    #[test]
    fn one_connection_in_sixteen_runs_to_the_servers_goaway_and_hears_a_raised_cap() {
        let mut endpoints = Endpoints::new(Duration::ZERO);
        endpoints.add(uri(1));
        endpoints.learn_request_cap(&uri(1), served(1000));
        endpoints.learn_request_cap(&uri(1), served(1000));
        let stopped: Vec<bool> = (0..32)
            .map(|_| endpoints.fixed_request_cap(&uri(1)).is_some())
            .collect();
        assert_eq!(stopped.iter().filter(|s| !**s).count(), 2);
        assert!(!stopped[15] && !stopped[31], "the 16th and the 32nd probe");
        // The probe ran to the server's GOAWAY: its cap is now 2,000.
        endpoints.learn_request_cap(&uri(1), served(2000));
        assert_eq!(
            endpoints.fixed_request_cap(&uri(1)),
            None,
            "heard, not yet fixed"
        );
        assert_eq!(endpoints.successor_due_at(&uri(1)), Some(1500));
        endpoints.learn_request_cap(&uri(1), served(2000));
        assert_eq!(endpoints.fixed_request_cap(&uri(1)), Some(2000));
    }

    #[test]
    fn without_a_window_no_endpoint_starts_slowly() {
        let mut endpoints = Endpoints::new(Duration::ZERO);
        endpoints.diff([uri(1)]);
        endpoints.add(uri(1));
        endpoints.diff([uri(1), uri(2)]);
        assert!(endpoints.joined(&uri(2)).is_none());
    }
}
