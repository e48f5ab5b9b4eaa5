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
mod ejection;
mod endpoints;
mod extra;
mod outlier;
mod resolution;
mod settings;
mod slot;
mod slots;
mod status;
mod worker;

use std::convert::Infallible;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use http::Uri;
use tokio::sync::mpsc;
use tower::discover::Change;
use tower_service::Service;

use crate::age::AgedConnection;
use crate::error::{BoxError, Error};
use crate::resolve::Resolve;
use backoff::Backoff;
pub use ejection::EjectionReason;
pub(crate) use extra::Demand;
pub use outlier::OutlierDetection;
pub(crate) use resolution::BoxResolver;
pub use resolution::{
    DEFAULT_MIN_RESOLVE_INTERVAL, DEFAULT_RESOLVE_INTERVAL, DEFAULT_RESOLVE_TIMEOUT,
};
use resolution::{DnsTarget, ResolveConfig, Schedule};
use settings::Settings;
pub use status::{ConnectErrors, DiscoverStatus};
use worker::Worker;

/// Default [`connect_timeout`](RotatingDiscoverBuilder::connect_timeout): 10 s,
/// as [`Http2Connector`](crate::Http2Connector)'s.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = crate::connector::DEFAULT_CONNECT_TIMEOUT;

/// The most [`connections_per_endpoint`](RotatingDiscoverBuilder::connections_per_endpoint)
/// may be: 64. Each connection costs a socket, a task and h2's buffers; an
/// endpoint that needs more is better served by more endpoints.
pub const MAX_CONNECTIONS_PER_ENDPOINT: usize = 64;

/// The default [`extra_connection_idle_timeout`](RotatingDiscoverBuilder::extra_connection_idle_timeout): 10 s.
pub const DEFAULT_EXTRA_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

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
    status: DiscoverStatus,
    demand: Arc<Demand>,
    _worker: AbortOnDrop,
}

impl<S> RotatingDiscover<S> {
    /// What the discover currently knows: endpoints, last resolve error.
    pub fn status(&self) -> DiscoverStatus {
        self.status.clone()
    }

    /// Where a balancer says every connection is full (see
    /// [`RotatingDiscoverBuilder::max_connections_per_endpoint`]).
    pub(crate) fn demand(&self) -> Arc<Demand> {
        self.demand.clone()
    }
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
    dns: Option<(Uri, BoxResolver)>,
    resolve: ResolveConfig,
    connections_per_endpoint: usize,
    max_connections_per_endpoint: Option<usize>,
    extra_idle: Duration,
    slow_start: Duration,
    outlier: Option<OutlierDetection>,
    backoff: Backoff,
    connect_timeout: Duration,
    /// The connector bounds its connects with `connect_timeout` itself.
    connector_times_out: bool,
}

impl Default for RotatingDiscoverBuilder {
    fn default() -> Self {
        RotatingDiscoverBuilder {
            endpoints: Vec::new(),
            dns: None,
            resolve: ResolveConfig::default(),
            connections_per_endpoint: 1,
            max_connections_per_endpoint: None,
            extra_idle: DEFAULT_EXTRA_IDLE_TIMEOUT,
            slow_start: Duration::ZERO,
            outlier: None,
            backoff: Backoff::default(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            connector_times_out: false,
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

    /// Takes the endpoints from resolving `uri`'s host with `resolver`, again
    /// and again: periodically, at every rotation, and when a connection is
    /// lost or refused. Each address becomes an endpoint `scheme://ip:port`
    /// with `uri`'s scheme and port (default 80 or 443).
    ///
    /// Use hyper-util's `GaiResolver` for the system resolver, or
    /// `HickoryResolver` (feature `hickory`) to follow the records' TTL.
    pub fn resolve<R: Resolve + Sync>(self, uri: Uri, resolver: R) -> Self {
        self.resolve_boxed(uri, BoxResolver::new(resolver))
    }

    pub(crate) fn resolve_boxed(mut self, uri: Uri, resolver: BoxResolver) -> Self {
        self.dns = Some((uri, resolver));
        self
    }

    /// How often the host is resolved again when the answer carries no TTL,
    /// and the longest a TTL is followed. Default:
    /// [`DEFAULT_RESOLVE_INTERVAL`] (10 s).
    pub fn resolve_interval(mut self, interval: Duration) -> Self {
        self.resolve.interval = crate::time::saturate(interval);
        self
    }

    /// Resolutions are never closer than this, whatever triggers them (TTL,
    /// rotations, lost connections). Default:
    /// [`DEFAULT_MIN_RESOLVE_INTERVAL`] (1 s), or `resolve_interval` if that
    /// is shorter.
    pub fn min_resolve_interval(mut self, interval: Duration) -> Self {
        self.resolve.min_interval = Some(crate::time::saturate(interval));
        self
    }

    /// A lookup that takes longer counts as failed. Default:
    /// [`DEFAULT_RESOLVE_TIMEOUT`] (5 s).
    pub fn resolve_timeout(mut self, timeout: Duration) -> Self {
        self.resolve.timeout = crate::time::saturate(timeout);
        self
    }

    /// Whether a successful answer with no address empties the endpoint set.
    ///
    /// Default: false. An empty answer, like a failed or timed-out lookup,
    /// keeps the last known endpoints and is retried with backoff, because
    /// dropping every endpoint on a DNS blip is worse than serving a slightly
    /// stale set (Envoy's STRICT_DNS and ginepro do the same). Set it when
    /// an empty answer reliably means "scaled to zero".
    pub fn empty_answer_clears(mut self, clears: bool) -> Self {
        self.resolve.empty_clears = clears;
        self
    }

    /// Connections kept to each endpoint (default 1, at most
    /// [`MAX_CONNECTIONS_PER_ENDPOINT`]). Behind an L4 load balancer, more
    /// connections spread over more backends.
    pub fn connections_per_endpoint(mut self, n: usize) -> Self {
        self.connections_per_endpoint = n;
        self
    }

    /// Lets an endpoint have up to `n` connections while its
    /// `connections_per_endpoint` are all full: at their server's
    /// `SETTINGS_MAX_CONCURRENT_STREAMS`, with requests waiting. Extras open
    /// one at a time while requests keep waiting, and close after
    /// [`extra_connection_idle_timeout`](Self::extra_connection_idle_timeout).
    /// hyper, tonic and grpc-go queue on a full connection instead (hyper
    /// #3623 asks for this). Only [`Client`](crate::Client) says when its
    /// connections are full; under tower's `Balance` no extra opens.
    ///
    /// Default: `connections_per_endpoint` (no extras). At most
    /// [`MAX_CONNECTIONS_PER_ENDPOINT`]; below `connections_per_endpoint` is
    /// a `Config` error.
    pub fn max_connections_per_endpoint(mut self, n: usize) -> Self {
        self.max_connections_per_endpoint = Some(n);
        self
    }

    /// How long an extra connection (see
    /// [`max_connections_per_endpoint`](Self::max_connections_per_endpoint))
    /// may start no request before it is closed; it closes within twice
    /// this. Default: [`DEFAULT_EXTRA_IDLE_TIMEOUT`] (10 s).
    pub fn extra_connection_idle_timeout(mut self, timeout: Duration) -> Self {
        self.extra_idle = crate::time::saturate(timeout);
        self
    }

    /// Takes endpoints whose connects and requests keep failing out of the
    /// pick for a while; see [`OutlierDetection`]. Default: off, as in
    /// Envoy. Only [`Client`](crate::Client)'s pick honours it.
    pub fn outlier_detection(mut self, detection: OutlierDetection) -> Self {
        self.outlier = Some(detection);
        self
    }

    /// Slow start (Envoy's `slow_start_config`): an endpoint that a
    /// resolution adds after the first takes a share of traffic growing
    /// linearly over `window` (at least 10% of its share from the start),
    /// instead of a burst: a fresh connection costs nothing, so without it a
    /// new pod wins every pick it is part of. Default: off
    /// (`Duration::ZERO`), as in Envoy. Endpoints given up front, and the
    /// first answer's, start at full weight.
    pub fn slow_start_window(mut self, window: Duration) -> Self {
        self.slow_start = crate::time::saturate(window);
        self
    }

    /// A connect (TCP, TLS and the HTTP/2 handshake) that takes longer fails
    /// and is retried with backoff, so a peer that accepts and never speaks
    /// does not hold a slot. Default: [`DEFAULT_CONNECT_TIMEOUT`] (10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = crate::time::saturate(timeout);
        self
    }

    /// The delay before reconnecting after a failed connect: from `min`,
    /// doubling per failure up to `max`, jittered (default 50 ms to 5 s).
    pub fn reconnect_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.backoff = Backoff {
            min: crate::time::saturate(min),
            max: crate::time::saturate(max),
        };
        self
    }

    /// Whether any endpoint (or the URI to resolve) wants TLS.
    pub(crate) fn uses_https(&self) -> bool {
        let https = |uri: &Uri| uri.scheme() == Some(&http::uri::Scheme::HTTPS);
        self.endpoints.iter().any(https) || self.dns.as_ref().is_some_and(|(uri, _)| https(uri))
    }

    /// The first endpoint given as plain `http://`, if any.
    #[cfg(feature = "rustls")]
    pub(crate) fn plain_http_endpoint(&self) -> Option<&Uri> {
        self.endpoints
            .iter()
            .find(|uri| uri.scheme() == Some(&http::uri::Scheme::HTTP))
    }

    pub(crate) fn connect_timeout_setting(&self) -> Duration {
        self.connect_timeout
    }

    /// The connector bounds each connect with
    /// [`connect_timeout`](Self::connect_timeout) itself (the crate's own
    /// connector under `Client`): discovery sets no timer of its own, so a
    /// connect has one timeout, whose error says which step did not finish.
    pub(crate) fn connector_times_out(mut self) -> Self {
        self.connector_times_out = true;
        self
    }

    pub(crate) fn first_endpoint(&self) -> Option<&Uri> {
        self.dns
            .as_ref()
            .map(|(uri, _)| uri)
            .or(self.endpoints.first())
    }

    pub(crate) fn validate(&self) -> Result<(), Error> {
        match (&self.dns, self.endpoints.is_empty()) {
            (None, true) => return Err(Error::config("no endpoints given")),
            (Some(_), false) => {
                return Err(Error::config(
                    "give either endpoints or a URI to resolve, not both",
                ));
            }
            (Some((uri, resolver)), true) => {
                DnsTarget::from_uri(uri, resolver.clone())?;
                self.resolve.validate()?;
            }
            (None, false) => {}
        }
        for endpoint in &self.endpoints {
            validate_endpoint(endpoint)?;
        }
        if !(1..=MAX_CONNECTIONS_PER_ENDPOINT).contains(&self.connections_per_endpoint) {
            return Err(Error::config(format!(
                "connections_per_endpoint must be 1 to {MAX_CONNECTIONS_PER_ENDPOINT}, not {}",
                self.connections_per_endpoint
            )));
        }
        if let Some(max) = self.max_connections_per_endpoint
            && !(self.connections_per_endpoint..=MAX_CONNECTIONS_PER_ENDPOINT).contains(&max)
        {
            return Err(Error::config(format!(
                "max_connections_per_endpoint must be from connections_per_endpoint ({}) to \
                 {MAX_CONNECTIONS_PER_ENDPOINT}, not {max}",
                self.connections_per_endpoint
            )));
        }
        if let Some(detection) = &self.outlier {
            detection.validate()?;
        }
        if self.extra_idle.is_zero() {
            return Err(Error::config(
                "extra_connection_idle_timeout must be greater than zero",
            ));
        }
        if self.connect_timeout.is_zero() {
            return Err(Error::config("connect_timeout must be greater than zero"));
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
        let schedule = match self.dns {
            Some((uri, resolver)) => Some(Schedule::new(
                DnsTarget::from_uri(&uri, resolver)?,
                self.resolve,
            )),
            None => None,
        };
        let status = DiscoverStatus::new(self.endpoints.clone());
        let demand = Arc::new(Demand::default());
        let worker = Worker::new(
            make,
            self.endpoints,
            Settings {
                per_endpoint: self.connections_per_endpoint,
                max_per_endpoint: self
                    .max_connections_per_endpoint
                    .unwrap_or(self.connections_per_endpoint),
                extra_idle: self.extra_idle,
                slow_start: self.slow_start,
                outlier: self.outlier,
                backoff: self.backoff,
                connect_timeout: (!self.connector_times_out).then_some(self.connect_timeout),
            },
            schedule,
            tx,
            status.clone(),
            demand.clone(),
        );
        let task = runtime.spawn(worker.run());
        Ok(RotatingDiscover {
            changes: rx,
            status,
            demand,
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
