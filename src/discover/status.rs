//! [`DiscoverStatus`]: what discovery knows right now, for health endpoints.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use http::Uri;

use super::ejection::EjectionReason;

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
    /// The last connect error of each connection slot that has not connected
    /// since, with its whole source chain.
    connect_errors: BTreeMap<String, String>,
    /// Endpoints out of the pick as outliers, and why.
    ejected: Vec<(Uri, EjectionReason)>,
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

    /// The last connect error of each connection slot (`endpoint#slot`)
    /// that failed to connect and has not connected since.
    pub fn connect_errors(&self) -> Vec<(String, String)> {
        let inner = self.lock();
        inner
            .connect_errors
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// [`connect_errors`](Self::connect_errors) as an error, for the source
    /// chain of a request that found no connection.
    pub(crate) fn connect_errors_error(&self) -> Option<ConnectErrors> {
        let errors = self.connect_errors();
        (!errors.is_empty()).then_some(ConnectErrors { errors })
    }

    /// The endpoints outlier detection has taken out of the pick now.
    pub fn ejected(&self) -> Vec<Uri> {
        self.lock().ejected.iter().map(|(e, _)| e.clone()).collect()
    }

    /// The endpoints outlier detection has taken out of the pick now, with
    /// the reason for each.
    pub fn ejections(&self) -> Vec<(Uri, EjectionReason)> {
        self.lock().ejected.clone()
    }

    pub(crate) fn set_ejected(&self, endpoint: &Uri, reason: Option<EjectionReason>) {
        let mut inner = self.lock();
        inner.ejected.retain(|(e, _)| e != endpoint);
        if let Some(reason) = reason {
            inner.ejected.push((endpoint.clone(), reason));
        }
    }

    pub(crate) fn set_connect_error(&self, slot: String, error: Option<String>) {
        let mut inner = self.lock();
        match error {
            Some(error) => inner.connect_errors.insert(slot, error),
            None => inner.connect_errors.remove(&slot),
        };
    }

    pub(crate) fn set_endpoints(&self, endpoints: Vec<Uri>) {
        let mut inner = self.lock();
        inner
            .connect_errors
            .retain(|slot, _| endpoints.iter().any(|e| slot.starts_with(&e.to_string())));
        inner.endpoints = endpoints;
    }

    pub(crate) fn set_error(&self, error: Option<String>) {
        self.lock().last_resolve_error = error;
    }

    pub(crate) fn resolved(&self) {
        self.lock().resolutions += 1;
    }
}

/// Why the connections could not be made: each connection slot's last
/// connect error. It is the source of a
/// [`NoReadyEndpoint`](crate::ErrorKind::NoReadyEndpoint) error when
/// connects were failing.
#[derive(Debug, Clone)]
pub struct ConnectErrors {
    errors: Vec<(String, String)>,
}

impl ConnectErrors {
    /// `(endpoint#slot, error with its causes)`, one per failing slot.
    pub fn errors(&self) -> &[(String, String)] {
        &self.errors
    }
}

impl std::fmt::Display for ConnectErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("last connect errors: ")?;
        for (i, (slot, error)) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{slot}: {error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConnectErrors {}
