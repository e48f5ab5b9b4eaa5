//! [`RotatingDiscover`]: a `tower::discover::Discover` that rotates aged
//! connections make-before-break.
//!
//! A worker task (so rotation progresses while nobody polls the balancer)
//! keeps `connections_per_endpoint` connections to every endpoint. When a
//! connection's deadline passes it opens the replacement, and yields it under
//! the *same key*: tower's `ReadyCache` keeps serving the old service under
//! that key until the new one is ready, then drops the old one, which starts
//! its drain. A connection that closes (server `GOAWAY`, reset) is removed and
//! replaced, with backoff when connects fail. The stream never yields `Err`
//! (that would kill tower's `Balance`) and never ends while it is alive.

mod backoff;
mod worker;

use std::convert::Infallible;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use http::Uri;
use tokio::sync::mpsc;
use tower::discover::Change;
use tower_service::Service;

use crate::age::AgedConnection;
use crate::error::{BoxError, Error};
use backoff::Backoff;
use worker::Worker;

/// Identifies one connection slot: an endpoint and the index of the
/// connection to it. A replacement comes under the key of the connection it
/// replaces.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EndpointKey {
    endpoint: Uri,
    slot: usize,
}

impl EndpointKey {
    /// The endpoint the connection goes to.
    pub fn endpoint(&self) -> &Uri {
        &self.endpoint
    }

    /// Which of the endpoint's connections this is (`0..connections_per_endpoint`).
    pub fn slot(&self) -> usize {
        self.slot
    }
}

impl fmt::Display for EndpointKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.endpoint, self.slot)
    }
}

/// A `Discover` of aged connections to a set of endpoints; see [the module](self).
///
/// ```no_run
/// # async fn doc() -> Result<(), tower_max_connection_age::Error> {
/// use std::time::Duration;
/// use tower::{ServiceBuilder, balance::p2c::Balance};
/// use tower_max_connection_age::{Http2Connector, MaxConnectionAgeLayer, RotatingDiscover};
///
/// let make = ServiceBuilder::new()
///     .layer(MaxConnectionAgeLayer::new(Duration::from_secs(60)))
///     .service(Http2Connector::<_, http_body_util::Full<bytes::Bytes>>::http());
/// let discover = RotatingDiscover::builder()
///     .endpoint("http://10.0.0.1:8080".parse().unwrap())
///     .endpoint("http://10.0.0.2:8080".parse().unwrap())
///     .connections_per_endpoint(2)
///     .build(make)?;
/// let balance = Balance::new(discover);
/// # let _ = balance;
/// # Ok(())
/// # }
/// ```
pub struct RotatingDiscover<S> {
    changes: mpsc::UnboundedReceiver<Change<EndpointKey, AgedConnection<S>>>,
    _worker: AbortOnDrop,
}

impl RotatingDiscover<()> {
    /// Starts a builder.
    pub fn builder() -> RotatingDiscoverBuilder {
        RotatingDiscoverBuilder::default()
    }
}

impl<S> fmt::Debug for RotatingDiscover<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RotatingDiscover").finish_non_exhaustive()
    }
}

impl<S> Stream for RotatingDiscover<S> {
    type Item = Result<Change<EndpointKey, AgedConnection<S>>, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.changes.poll_recv(cx).map(|change| change.map(Ok))
    }
}

/// Aborts the worker when the discover is dropped.
pub(crate) struct AbortOnDrop(pub(crate) tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Builds a [`RotatingDiscover`].
#[derive(Debug, Clone)]
pub struct RotatingDiscoverBuilder {
    endpoints: Vec<Uri>,
    connections_per_endpoint: usize,
    backoff: Backoff,
}

impl Default for RotatingDiscoverBuilder {
    fn default() -> Self {
        RotatingDiscoverBuilder {
            endpoints: Vec::new(),
            connections_per_endpoint: 1,
            backoff: Backoff::default(),
        }
    }
}

impl RotatingDiscoverBuilder {
    /// Adds an endpoint, such as `http://10.0.0.1:8080`.
    pub fn endpoint(mut self, endpoint: Uri) -> Self {
        self.endpoints.push(endpoint);
        self
    }

    /// Adds endpoints.
    pub fn endpoints(mut self, endpoints: impl IntoIterator<Item = Uri>) -> Self {
        self.endpoints.extend(endpoints);
        self
    }

    /// Connections kept to each endpoint (default 1). Behind an L4 load
    /// balancer, more connections spread over more backends.
    pub fn connections_per_endpoint(mut self, n: usize) -> Self {
        self.connections_per_endpoint = n;
        self
    }

    /// The delay before reconnecting after a failed connect: from `min`,
    /// doubling per failure up to `max`, jittered (default 50 ms to 5 s).
    pub fn reconnect_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.backoff = Backoff { min, max };
        self
    }

    pub(crate) fn first_endpoint(&self) -> Option<&Uri> {
        self.endpoints.first()
    }

    pub(crate) fn validate(&self) -> Result<(), Error> {
        if self.endpoints.is_empty() {
            return Err(Error::config("no endpoints given"));
        }
        for endpoint in &self.endpoints {
            validate_endpoint(endpoint)?;
        }
        if self.connections_per_endpoint == 0 {
            return Err(Error::config("connections_per_endpoint must be at least 1"));
        }
        if self.backoff.min.is_zero() || self.backoff.min > self.backoff.max {
            return Err(Error::config("reconnect_backoff needs 0 < min <= max"));
        }
        Ok(())
    }

    /// Starts the worker, which connects with `make` (a `MakeService` of
    /// [`AgedConnection`]s, such as `MaxConnectionAgeLayer` over
    /// `Http2Connector`). Must be called inside a Tokio runtime.
    pub fn build<M, S>(self, make: M) -> Result<RotatingDiscover<S>, Error>
    where
        M: Service<Uri, Response = AgedConnection<S>> + Send + 'static,
        M::Error: Into<BoxError>,
        M::Future: Send + 'static,
        S: Send + 'static,
    {
        self.validate()?;
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| Error::config("RotatingDiscover must be built inside a Tokio runtime"))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let keys = self.endpoints.iter().flat_map(|endpoint| {
            (0..self.connections_per_endpoint).map(|slot| EndpointKey {
                endpoint: endpoint.clone(),
                slot,
            })
        });
        let worker = Worker::new(make, keys.collect(), tx, self.backoff);
        let task = runtime.spawn(worker.run());
        Ok(RotatingDiscover {
            changes: rx,
            _worker: AbortOnDrop(task.abort_handle()),
        })
    }
}

pub(crate) fn validate_endpoint(endpoint: &Uri) -> Result<(), Error> {
    match endpoint.scheme_str() {
        Some("http") | Some("https") => {}
        _ => {
            return Err(Error::config(format!(
                "endpoint `{endpoint}` needs an http:// or https:// scheme"
            )));
        }
    }
    if endpoint.host().is_none_or(str::is_empty) {
        return Err(Error::config(format!("endpoint `{endpoint}` has no host")));
    }
    Ok(())
}
