//! [`MaxConnectionAgeLayer`] and the `MakeService` it builds.

use std::fmt;
use std::task::{Context, Poll};
use std::time::Duration;

use tower_layer::Layer;
use tower_service::Service;

use super::config::AgeConfig;
use super::make::{MakeFuture, Wrap};
use super::service::AgedConnection;
use crate::connector::AgeableConnection;
use crate::error::{self, BoxError, Error, ErrorKind};
use crate::load::LoadKind;

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
    /// Only added, never taken off, so `max_age` is the least a connection
    /// lives (the server side spreads both ways, as grpc-go's
    /// `MaxConnectionAge`). Default: 10% of `max_age`, as gRPC.
    /// `Duration::ZERO` turns it off.
    pub fn jitter(mut self, jitter: Duration) -> Self {
        self.config.jitter = Some(jitter);
        self
    }

    /// How long a draining connection may keep running in-flight requests
    /// before it is closed by force and they fail with
    /// [`ErrorKind::ForceClosed`]. Default: [`DEFAULT_DRAIN_TIMEOUT`](super::DEFAULT_DRAIN_TIMEOUT) (30 s).
    pub fn drain_timeout(mut self, drain_timeout: Duration) -> Self {
        self.config.drain_timeout = drain_timeout;
        self
    }

    /// How each connection measures its load for the balancer. Default:
    /// [`LoadKind::PeakEwma`] with a 10 s decay.
    pub fn load(mut self, load: LoadKind) -> Self {
        self.config.judging.load = load;
        self
    }

    /// What a failed response adds to its connection's peak-EWMA RTT
    /// (Linkerd's response penalty): the full penalty when every response
    /// fails, half when half do (over
    /// [`failure_penalty_decay`](Self::failure_penalty_decay)), fading once
    /// they stop, so a pod that fails fast stops looking like the fastest one.
    /// Default: [`DEFAULT_FAILURE_PENALTY`](crate::load::DEFAULT_FAILURE_PENALTY)
    /// (1 s); `Duration::ZERO` turns it off. No effect with
    /// [`LoadKind::PendingRequests`].
    pub fn failure_penalty(mut self, penalty: Duration) -> Self {
        self.config.judging.penalty.value = penalty;
        self
    }

    /// How fast the [`failure_penalty`](Self::failure_penalty) follows a
    /// change in the share of failed responses, and fades once the
    /// connection gets no requests: a time constant, as the load's decay.
    /// Short, so that a pod that starts failing is steered away within
    /// milliseconds and one that recovers is tried again within seconds,
    /// while one failure among many moves the cost by next to nothing.
    /// Default:
    /// [`DEFAULT_FAILURE_PENALTY_DECAY`](crate::load::DEFAULT_FAILURE_PENALTY_DECAY)
    /// (1 s).
    pub fn failure_penalty_decay(mut self, decay: Duration) -> Self {
        self.config.judging.penalty.decay = decay;
        self
    }

    /// What counts as a failed response (see [`crate::classify`]); default:
    /// [`ResponseClassifier::new`](crate::classify::ResponseClassifier::new).
    pub fn response_classifier(mut self, classifier: crate::classify::ResponseClassifier) -> Self {
        self.config.judging.classifier = classifier;
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
    crate::accessors::inner_accessors!(inner: M, "the wrapped connection `MakeService`");
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
        let wrap = Wrap::new(target.to_string(), self.config.clone());
        MakeFuture::connecting(self.inner.call(target), wrap)
    }
}
