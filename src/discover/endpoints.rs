//! The endpoints in service, and when each joined: what a resolution's
//! answer adds and removes, and which endpoints start slowly.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use http::Uri;

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
}

impl Endpoints {
    pub(super) fn new(slow_start: Duration) -> Self {
        Endpoints {
            in_service: Vec::new(),
            joined: HashMap::new(),
            answered: false,
            slow_start,
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

    #[test]
    fn without_a_window_no_endpoint_starts_slowly() {
        let mut endpoints = Endpoints::new(Duration::ZERO);
        endpoints.diff([uri(1)]);
        endpoints.add(uri(1));
        endpoints.diff([uri(1), uri(2)]);
        assert!(endpoints.joined(&uri(2)).is_none());
    }
}
