//! [`DiscoverStatus`]: what discovery knows right now, for health endpoints.

use std::sync::{Arc, Mutex};

use http::Uri;

/// A shared, cheap-to-clone view of a [`RotatingDiscover`](super::RotatingDiscover):
/// its current endpoints and how resolving went.
#[derive(Debug, Clone, Default)]
pub struct DiscoverStatus {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    endpoints: Vec<Uri>,
    last_resolve_error: Option<String>,
    resolutions: u64,
}

impl DiscoverStatus {
    pub(crate) fn new(endpoints: Vec<Uri>) -> Self {
        DiscoverStatus {
            inner: Arc::new(Mutex::new(Inner {
                endpoints,
                ..Inner::default()
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The endpoints in service (after the last usable DNS answer).
    pub fn endpoints(&self) -> Vec<Uri> {
        self.lock().endpoints.clone()
    }

    /// Why the last resolution failed, if it did (cleared by a good answer).
    pub fn last_resolve_error(&self) -> Option<String> {
        self.lock().last_resolve_error.clone()
    }

    /// How many resolutions finished, well or not.
    pub fn resolutions(&self) -> u64 {
        self.lock().resolutions
    }

    pub(crate) fn set_endpoints(&self, endpoints: Vec<Uri>) {
        self.lock().endpoints = endpoints;
    }

    pub(crate) fn set_error(&self, error: Option<String>) {
        self.lock().last_resolve_error = error;
    }

    pub(crate) fn resolved(&self) {
        self.lock().resolutions += 1;
    }
}
