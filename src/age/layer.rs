//! [`MaxConnectionAgeLayer`] and the `MakeService` it builds.

use std::fmt;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

use super::future::MakeFuture;
use super::state::ConnectionState;
use super::{AgeableConnection, AgedConnection, supervise};
use crate::error::{self, BoxError, Error, ErrorKind};
use crate::load::LoadKind;

/// The default [`drain_timeout`](MaxConnectionAgeLayer::drain_timeout): 30 s.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Gives every connection a `MakeService` makes a maximum age.
///
/// Wrap a connection-making service (a connector stack that yields one
/// `Service` per connection, such as [`Http2Connector`](crate::Http2Connector))
/// and each connection it makes becomes an [`AgedConnection`]. After its
/// deadline, `max_age + U(0, jitter)`, it is *draining*: it takes no new
/// request (a request handed to it comes back inside an
/// [`ErrorKind::Draining`] error that gives the request back), its in-flight
/// requests finish, and after `drain_timeout` it is closed by force.
///
/// Under [`RotatingDiscover`](crate::RotatingDiscover) the deadline instead
/// starts a replacement, and the old connection drains only once that one is
/// ready.
///
/// ```
/// use std::time::Duration;
/// use tower::ServiceBuilder;
/// use tower_max_connection_age::{Http2Connector, MaxConnectionAgeLayer};
///
/// let make = ServiceBuilder::new()
///     .layer(
///         MaxConnectionAgeLayer::new(Duration::from_secs(300))
///             .jitter(Duration::from_secs(30))
///             .drain_timeout(Duration::from_secs(10)),
///     )
///     .service(Http2Connector::<_, http_body_util::Empty<bytes::Bytes>>::http());
/// # let _ = make;
/// ```
#[derive(Debug, Clone)]
pub struct MaxConnectionAgeLayer {
    config: AgeConfig,
}

#[derive(Debug, Clone)]
pub(crate) struct AgeConfig {
    /// `None`: connections never age (the client without a max age).
    pub(crate) max_age: Option<Duration>,
    pub(crate) jitter: Option<Duration>,
    pub(crate) drain_timeout: Duration,
    pub(crate) load: LoadKind,
}

impl AgeConfig {
    pub(crate) fn new(max_age: Option<Duration>) -> Self {
        AgeConfig {
            max_age,
            jitter: None,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            load: LoadKind::default(),
        }
    }

    /// The jitter in force: the one set, or 10% of the age.
    pub(crate) fn jitter(&self) -> Duration {
        self.jitter
            .unwrap_or_else(|| self.max_age.map_or(Duration::ZERO, |age| age / 10))
    }

    pub(crate) fn validate(&self) -> Result<(), Error> {
        if self.max_age.is_some_and(|age| age.is_zero()) {
            return Err(Error::config(
                "max_connection_age must be greater than zero",
            ));
        }
        if self.drain_timeout.is_zero() {
            return Err(Error::config(
                "drain_timeout must be greater than zero (use a small value to close promptly)",
            ));
        }
        Ok(())
    }

    /// A fresh deadline: `max_age + U(0, jitter)`, never shorter than the age.
    /// Each is taken as at most about 30 years (`crate::time::LONGEST`), so
    /// `Duration::MAX` means "never" and cannot overflow.
    pub(crate) fn deadline(&self, now: Instant) -> Option<Instant> {
        let max_age = crate::time::saturate(self.max_age?);
        let jitter = crate::time::saturate(self.jitter());
        let extra = if jitter.is_zero() {
            Duration::ZERO
        } else {
            jitter.mul_f64(rand::random::<f64>())
        };
        Some(now + max_age + extra)
    }
}

impl MaxConnectionAgeLayer {
    /// Connections live `max_age` (plus jitter). A zero age is rejected with an
    /// [`ErrorKind::Config`] error when the first connection is made.
    pub fn new(max_age: Duration) -> Self {
        MaxConnectionAgeLayer {
            config: AgeConfig::new(Some(max_age)),
        }
    }

    pub(crate) fn from_config(config: AgeConfig) -> Self {
        MaxConnectionAgeLayer { config }
    }

    /// The most added to each connection's age, uniformly at random, so that
    /// connections opened together do not all rotate together.
    ///
    /// Default: 10% of `max_age`, as gRPC does. `Duration::ZERO` turns it off.
    pub fn jitter(mut self, jitter: Duration) -> Self {
        self.config.jitter = Some(jitter);
        self
    }

    /// How long a draining connection may keep running in-flight requests
    /// before it is closed by force and they fail with
    /// [`ErrorKind::ForceClosed`]. Default: [`DEFAULT_DRAIN_TIMEOUT`] (30 s).
    pub fn drain_timeout(mut self, drain_timeout: Duration) -> Self {
        self.config.drain_timeout = drain_timeout;
        self
    }

    /// How each connection measures its load for the balancer. Default:
    /// [`LoadKind::PeakEwma`] with a 10 s decay.
    pub fn load(mut self, load: LoadKind) -> Self {
        self.config.load = load;
        self
    }
}

impl<M> Layer<M> for MaxConnectionAgeLayer {
    type Service = MaxConnectionAge<M>;

    fn layer(&self, inner: M) -> Self::Service {
        MaxConnectionAge {
            inner,
            config: self.config.clone(),
        }
    }
}

/// A `MakeService` whose connections are [`AgedConnection`]s; built by
/// [`MaxConnectionAgeLayer`].
#[derive(Debug, Clone)]
pub struct MaxConnectionAge<M> {
    inner: M,
    config: AgeConfig,
}

impl<M> MaxConnectionAge<M> {
    /// The wrapped connection `MakeService`.
    pub fn get_ref(&self) -> &M {
        &self.inner
    }

    /// The wrapped connection `MakeService`, mutably.
    pub fn get_mut(&mut self) -> &mut M {
        &mut self.inner
    }

    /// The wrapped connection `MakeService`.
    pub fn into_inner(self) -> M {
        self.inner
    }
}

impl<M, T> Service<T> for MaxConnectionAge<M>
where
    M: Service<T>,
    M::Response: AgeableConnection,
    M::Error: Into<BoxError>,
    T: fmt::Display,
{
    type Response = AgedConnection<M::Response>;
    type Error = Error;
    type Future = MakeFuture<M::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.config.validate()?;
        self.inner
            .poll_ready(cx)
            .map_err(|e| error::from_box(e.into(), ErrorKind::Connect))
    }

    fn call(&mut self, target: T) -> Self::Future {
        if let Err(e) = self.config.validate() {
            return MakeFuture::failed(e);
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return MakeFuture::failed(Error::config(
                "connections must be made inside a Tokio runtime",
            ));
        }
        let wrap = Wrap {
            endpoint: target.to_string(),
            config: self.config.clone(),
        };
        MakeFuture::connecting(self.inner.call(target), wrap)
    }
}

/// What the make future needs to wrap the connection once it is made.
pub(crate) struct Wrap {
    endpoint: String,
    config: AgeConfig,
}

impl Wrap {
    pub(crate) fn wrap<S: AgeableConnection>(self, service: S) -> AgedConnection<S> {
        let now = Instant::now();
        let deadline = self.config.deadline(now);
        let state = ConnectionState::new(
            self.endpoint,
            deadline,
            self.config.drain_timeout,
            service.handle(),
            self.config.load,
        );
        tracing::debug!(
            endpoint = %state.endpoint,
            max_age_ms = deadline.map(|d| (d - now).as_millis() as u64),
            "connection opened"
        );
        state
            .handle
            .set_busy_probe(std::sync::Arc::downgrade(&state));
        tokio::spawn(supervise(state.clone()));
        AgedConnection::new(service, state)
    }
}
