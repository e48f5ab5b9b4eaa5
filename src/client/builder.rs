//! [`ClientBuilder`].

use std::time::Duration;

use bytes::Bytes;
use http::Uri;
use http_body::Body;
use hyper::rt::{Read, Write};
use hyper_util::client::legacy::connect::{Connection as TransportInfo, HttpConnector};
use tower_service::Service;

use super::options::Options;
use super::{Client, SharedConnection};
use crate::age::AgeConfig;
use crate::connector::{Http2Connector, KeepAliveConfig, default_builder};
use crate::discover::{BoxResolver, RotatingDiscover, RotatingDiscoverBuilder, validate_endpoint};
use crate::error::{BoxError, Error};
use crate::load::LoadKind;
use crate::replay::{ReplayBody, ReplayConfig};
use crate::resolve::Resolve;

/// The default [`ready_timeout`](ClientBuilder::ready_timeout): 10 s.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Builds a [`Client`]; start with [`Client::builder`].
///
/// Every duration setting takes any value up to `Duration::MAX`; longer than
/// about 30 years counts as 30 years ("never", in practice), so no setting
/// can make a deadline overflow. Values no client can work with (a zero
/// timeout, no endpoint, more than
/// [`MAX_CONNECTIONS_PER_ENDPOINT`](crate::discover::MAX_CONNECTIONS_PER_ENDPOINT)
/// connections per endpoint, an `https://` endpoint with the plain-TCP
/// connector) fail [`build`](Self::build) with an
/// [`ErrorKind::Config`](crate::ErrorKind::Config) error that names them.
#[derive(Debug, Clone)]
pub struct ClientBuilder<C = HttpConnector> {
    pub(super) connector: C,
    http2: h2::client::Builder,
    keep_alive: KeepAliveConfig,
    pub(super) discover: RotatingDiscoverBuilder,
    age: AgeConfig,
    replay: ReplayConfig,
    ready_timeout: Duration,
    timeout: Option<Duration>,
    pub(super) origin: Option<Uri>,
    pub(super) uri: Option<Uri>,
    resolver: Option<BoxResolver>,
    /// Settings of the crate's own connector that were changed, which
    /// [`build_with`](Self::build_with) (bringing its own) cannot honour.
    own_connector_settings: Vec<&'static str>,
}

impl ClientBuilder {
    pub(crate) fn new() -> Self {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        ClientBuilder {
            connector: http,
            http2: default_builder(),
            keep_alive: KeepAliveConfig::default(),
            discover: RotatingDiscover::builder(),
            age: AgeConfig::new(None),
            replay: ReplayConfig::default(),
            ready_timeout: DEFAULT_READY_TIMEOUT,
            timeout: None,
            origin: None,
            uri: None,
            resolver: None,
            own_connector_settings: Vec::new(),
        }
    }
}

impl<C> ClientBuilder<C> {
    /// The service to call, such as `http://my-svc.ns.svc.cluster.local:8080`.
    ///
    /// Its host is resolved (with [`resolver`](Self::resolver)), again and
    /// again, and every address becomes an endpoint with this port; requests
    /// keep the host name as `:authority` / `Host`. With a headless Service
    /// DNS lists every pod; with a virtual IP it lists one address, and
    /// `connections_per_endpoint` with `max_connection_age` spread the load.
    /// Use either this or [`endpoint`](Self::endpoint).
    pub fn uri(mut self, uri: Uri) -> Self {
        self.uri = Some(uri);
        self
    }

    /// The resolver for [`uri`](Self::uri): any hyper-util resolver
    /// (`Service<Name>`), such as [`HickoryResolver`](crate::resolve::HickoryResolver)
    /// to follow record TTLs. Default: the system resolver (`GaiResolver`).
    pub fn resolver<R: Resolve + Sync>(mut self, resolver: R) -> Self {
        self.resolver = Some(BoxResolver::new(resolver));
        self
    }

    /// How often [`uri`](Self::uri) is resolved again without a TTL, and
    /// the longest a TTL is followed. Default: 10 s.
    pub fn resolve_interval(mut self, interval: Duration) -> Self {
        self.discover = self.discover.resolve_interval(interval);
        self
    }

    /// The least time between two resolutions, whatever triggers them.
    /// Default: 1 s.
    pub fn min_resolve_interval(mut self, interval: Duration) -> Self {
        self.discover = self.discover.min_resolve_interval(interval);
        self
    }

    /// A lookup slower than this counts as failed. Default: 5 s.
    pub fn resolve_timeout(mut self, timeout: Duration) -> Self {
        self.discover = self.discover.resolve_timeout(timeout);
        self
    }

    /// Whether an empty DNS answer empties the endpoint set. Default: false,
    /// the last known endpoints are kept (see
    /// [`RotatingDiscoverBuilder::empty_answer_clears`](crate::discover::RotatingDiscoverBuilder::empty_answer_clears)).
    pub fn empty_answer_clears(mut self, clears: bool) -> Self {
        self.discover = self.discover.empty_answer_clears(clears);
        self
    }

    /// Adds an endpoint (`http://10.0.0.1:8080`); the client keeps
    /// `connections_per_endpoint` connections to each.
    pub fn endpoint(mut self, endpoint: Uri) -> Self {
        self.discover = self.discover.endpoint(endpoint);
        self
    }

    /// Adds endpoints.
    pub fn endpoints(mut self, endpoints: impl IntoIterator<Item = Uri>) -> Self {
        self.discover = self.discover.endpoints(endpoints);
        self
    }

    /// Parses and adds an endpoint; a malformed one fails [`build`](Self::build).
    pub fn endpoint_str(self, endpoint: &str) -> Result<Self, Error> {
        let uri = endpoint
            .parse::<Uri>()
            .map_err(|e| Error::config(format!("endpoint `{endpoint}` is not a URI: {e}")))?;
        validate_endpoint(&uri)?;
        Ok(self.endpoint(uri))
    }

    /// The scheme and authority put on requests whose URI has none (tonic
    /// sends path-only URIs). Default: the first endpoint.
    pub fn origin(mut self, origin: Uri) -> Self {
        self.origin = Some(origin);
        self
    }

    /// Connections live this long (plus jitter), then are replaced
    /// make-before-break. Default: unset, connections never age.
    pub fn max_connection_age(mut self, age: Duration) -> Self {
        self.age.max_age = Some(age);
        self
    }

    /// The most added to each connection's age, uniformly at random: only
    /// added, so `max_connection_age` is the least a connection lives (the
    /// server side spreads both ways, as grpc-go). Default: 10% of
    /// `max_connection_age`, as gRPC; `Duration::ZERO` turns it off.
    pub fn max_connection_age_jitter(mut self, jitter: Duration) -> Self {
        self.age.jitter = Some(jitter);
        self
    }

    /// How long a replaced connection may finish its in-flight requests
    /// before it is closed by force. Default: 30 s.
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.age.drain_timeout = timeout;
        self
    }

    /// Connections kept to each endpoint. Default: 1. Behind an L4 load
    /// balancer (a virtual IP), more connections reach more backends.
    pub fn connections_per_endpoint(mut self, n: usize) -> Self {
        self.discover = self.discover.connections_per_endpoint(n);
        self
    }

    /// Up to `n` connections per endpoint while its
    /// `connections_per_endpoint` are all at their server's stream limit
    /// with requests waiting; the extras close once idle. Default:
    /// `connections_per_endpoint` (no extras). See
    /// [`RotatingDiscoverBuilder::max_connections_per_endpoint`](crate::discover::RotatingDiscoverBuilder::max_connections_per_endpoint).
    pub fn max_connections_per_endpoint(mut self, n: usize) -> Self {
        self.discover = self.discover.max_connections_per_endpoint(n);
        self
    }

    /// How long an extra connection may start no request before it closes.
    /// Default: 10 s.
    pub fn extra_connection_idle_timeout(mut self, timeout: Duration) -> Self {
        self.discover = self.discover.extra_connection_idle_timeout(timeout);
        self
    }

    /// Takes endpoints whose connects and requests keep failing out of the
    /// pick for a while (Envoy's outlier detection). Default: off. See
    /// [`OutlierDetection`](crate::discover::OutlierDetection).
    pub fn outlier_detection(mut self, detection: crate::discover::OutlierDetection) -> Self {
        self.discover = self.discover.outlier_detection(detection);
        self
    }

    /// New endpoints found by DNS take a share of traffic growing over
    /// `window`, instead of a burst. Default: off. See
    /// [`RotatingDiscoverBuilder::slow_start_window`](crate::discover::RotatingDiscoverBuilder::slow_start_window).
    pub fn slow_start_window(mut self, window: Duration) -> Self {
        self.discover = self.discover.slow_start_window(window);
        self
    }

    /// How many times a request that came back unsent is sent again, and,
    /// counted apart, one the server provably did not process. Default: 3.
    pub fn max_retries(mut self, n: usize) -> Self {
        self.replay.max_retries = n;
        self
    }

    /// Body bytes kept per request so a refused request can be replayed.
    /// Default: 64 KiB.
    pub fn replay_buffer_limit(mut self, bytes: usize) -> Self {
        self.replay.buffer_limit = bytes;
        self
    }

    /// Whether requests the server provably did not process are replayed
    /// (up to `max_retries` times, each to another connection when there is
    /// one). Default: true.
    pub fn replay_refused(mut self, enabled: bool) -> Self {
        self.replay.replay_refused = enabled;
        self
    }

    /// How long a request waits for a ready connection before it fails with
    /// [`ErrorKind::NoReadyEndpoint`](crate::ErrorKind::NoReadyEndpoint).
    /// Default: [`DEFAULT_READY_TIMEOUT`] (10 s).
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = crate::time::saturate(timeout);
        self
    }

    /// How long a request may wait for its response headers, from `call`
    /// (waiting for a connection and replays included); then it fails with
    /// [`ErrorKind::Timeout`](crate::ErrorKind::Timeout) and its stream is
    /// cancelled. A request's own `grpc-timeout` header (what tonic sends
    /// for `Request::set_timeout`) applies too: the earlier deadline wins,
    /// as with tonic's `Channel` and its `Endpoint::timeout`. The response
    /// body is not timed (a stream may run for long). Default: none.
    ///
    /// ```no_run
    /// # async fn doc() -> Result<(), tower_max_connection_age::Error> {
    /// use std::time::Duration;
    /// use tower::ServiceExt;
    /// use tower_max_connection_age::Client;
    ///
    /// let client = Client::builder()
    ///     .endpoint("http://10.0.0.1:50051".parse().unwrap())
    ///     .timeout(Duration::from_secs(2))
    ///     .build::<http_body_util::Empty<bytes::Bytes>>()?;
    /// // This call's own deadline is shorter, so it wins.
    /// let request = http::Request::get("http://svc/slow")
    ///     .header("grpc-timeout", "300m")
    ///     .body(http_body_util::Empty::new())
    ///     .unwrap();
    /// match client.oneshot(request).await {
    ///     Err(e) if e.is_timeout() => println!("no answer within 300 ms"),
    ///     other => drop(other),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// How connections measure load for the balancer. Default: peak-EWMA.
    pub fn load(mut self, load: LoadKind) -> Self {
        self.age.load = load;
        self
    }

    /// A connect (TCP, TLS, HTTP/2 handshake) slower than this fails and is
    /// retried with backoff. Default: 10 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.discover = self.discover.connect_timeout(timeout);
        self
    }

    /// The delay before reconnecting after a failure: from `min`, doubling
    /// up to `max`, jittered. Default: 50 ms to 5 s.
    pub fn reconnect_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.discover = self.discover.reconnect_backoff(min, max);
        self
    }

    /// How often each connection `PING`s its server while requests are in
    /// flight, to find a peer that died without a FIN or RST; `None` turns
    /// it off. Default: 10 s (see
    /// [`Http2Connector::keep_alive_interval`](crate::Http2Connector::keep_alive_interval)).
    pub fn keep_alive_interval(mut self, interval: impl Into<Option<Duration>>) -> Self {
        self.keep_alive.interval = interval.into();
        self.own_connector_settings.push("keep_alive_interval");
        self
    }

    /// How long a keepalive `PING` may go unanswered before the connection
    /// is closed and its requests fail with
    /// [`ErrorKind::KeepAlive`](crate::ErrorKind::KeepAlive). Default: 10 s.
    pub fn keep_alive_timeout(mut self, timeout: Duration) -> Self {
        self.keep_alive.timeout = timeout;
        self.own_connector_settings.push("keep_alive_timeout");
        self
    }

    /// Whether to `PING` idle connections too. Default: false.
    pub fn keep_alive_while_idle(mut self, enabled: bool) -> Self {
        self.keep_alive.while_idle = enabled;
        self.own_connector_settings.push("keep_alive_while_idle");
        self
    }

    /// h2's HTTP/2 settings (window sizes, frame sizes, stream limits, ...).
    /// Default: [`default_builder`](crate::connector::default_builder), h2
    /// with hyper's client defaults.
    pub fn http2(mut self, builder: h2::client::Builder) -> Self {
        self.http2 = builder;
        self.own_connector_settings.push("http2");
        self
    }

    /// The transport connector: any hyper-util connector, such as a TLS
    /// connector around `HttpConnector`. Default: `HttpConnector` with
    /// `TCP_NODELAY`.
    pub fn connector<C2>(mut self, connector: C2) -> ClientBuilder<C2> {
        self.own_connector_settings.push("connector");
        ClientBuilder {
            connector,
            http2: self.http2,
            keep_alive: self.keep_alive,
            discover: self.discover,
            age: self.age,
            replay: self.replay,
            ready_timeout: self.ready_timeout,
            timeout: self.timeout,
            origin: self.origin,
            uri: self.uri,
            resolver: self.resolver,
            own_connector_settings: self.own_connector_settings,
        }
    }

    /// Checks the configuration and starts the client's background task.
    /// Must be called inside a Tokio runtime.
    pub fn build<B>(mut self) -> Result<Client<B>, Error>
    where
        C: Service<Uri> + Clone + Send + 'static,
        C::Response: Read + Write + TransportInfo + Unpin + Send + 'static,
        C::Error: Into<BoxError>,
        C::Future: Send,
        B: Body<Data = Bytes> + Unpin + Send + 'static,
        B::Error: Into<BoxError>,
    {
        self.give_tls_the_service_name()?;
        self.keep_alive.validate()?;
        if std::any::TypeId::of::<C>() == std::any::TypeId::of::<HttpConnector>()
            && self.uses_https()
        {
            return Err(Error::config(
                "an https:// endpoint needs a TLS connector: the default HttpConnector speaks \
                 plain TCP only; use `tls(..)` (feature `rustls`), or give one with \
                 `connector(..)` (for example hyper-rustls' HttpsConnector asking for ALPN h2)",
            ));
        }
        let (options, connector, http2, keep_alive) = self.split();
        let connector = Http2Connector::new(connector, http2)
            .connect_timeout(options.discover.connect_timeout_setting())
            .keep_alive_config(keep_alive);
        options.build(connector)
    }

    /// The settings every client has, and those of the crate's own
    /// connector.
    fn split(self) -> (Options, C, h2::client::Builder, KeepAliveConfig) {
        let options = Options {
            discover: self.discover,
            age: self.age,
            replay: self.replay,
            ready_timeout: self.ready_timeout,
            timeout: self.timeout,
            origin: self.origin,
            uri: self.uri,
            resolver: self.resolver,
        };
        (options, self.connector, self.http2, self.keep_alive)
    }

    /// Builds the client over connections that `make` makes (any
    /// connection `MakeService` of [`SharedConnection`]s, such as
    /// [`HyperConnector`](crate::connector::HyperConnector) for hyper's own
    /// HTTP/2 client), with everything else as configured: ages, discovery,
    /// the pick, replay. `make` is called with each endpoint's URI
    /// (`scheme://ip:port`) and connects on its own terms, so the settings
    /// of the crate's own connector ([`connector`](Self::connector),
    /// [`http2`](Self::http2), the keepalive ones) are an
    /// [`ErrorKind::Config`](crate::ErrorKind::Config) error here, not
    /// silently ignored. Connects are still bounded by
    /// [`connect_timeout`](Self::connect_timeout).
    ///
    /// `M` makes connections for `ReplayBody<B>` requests, so that requests
    /// the server never processed can be sent again. See
    /// [`HyperConnector`](crate::connector::HyperConnector) for an example.
    pub fn build_with<B, M>(self, make: M) -> Result<Client<B, M::Response>, Error>
    where
        M: Service<Uri> + Send + 'static,
        M::Response: SharedConnection<ReplayBody<B>>,
        M::Error: Into<BoxError>,
        M::Future: Send + 'static,
        B: Body<Data = Bytes> + Unpin + Send + 'static,
        B::Error: Into<BoxError>,
    {
        if !self.own_connector_settings.is_empty() {
            let mut names = self.own_connector_settings.clone();
            names.sort_unstable();
            names.dedup();
            return Err(Error::config(format!(
                "build_with uses the connections `make` makes; {} configure the crate's own \
                 Http2Connector and would be ignored: set them on your connector instead",
                names.join(", ")
            )));
        }
        self.split().0.build(make)
    }

    fn uses_https(&self) -> bool {
        self.discover.uses_https()
            || self
                .uri
                .as_ref()
                .is_some_and(|u| u.scheme() == Some(&http::uri::Scheme::HTTPS))
    }
}

// The hook `build` calls first to give the connector `tls(..)` made the
// service's name (a no-op without the feature `rustls`).
#[cfg(not(feature = "rustls"))]
impl<C> ClientBuilder<C> {
    fn give_tls_the_service_name(&mut self) -> Result<(), Error> {
        Ok(())
    }
}

#[cfg(feature = "rustls")]
impl<C> ClientBuilder<C> {
    /// When the connector is the one [`tls`](Self::tls) made: checks the
    /// schemes and sets its server name to the host of `uri`, else of
    /// `origin` (without either, each endpoint's host is used).
    fn give_tls_the_service_name(&mut self) -> Result<(), Error>
    where
        C: 'static,
    {
        let connector: &mut dyn std::any::Any = &mut self.connector;
        let Some(tls) = connector.downcast_mut::<crate::connector::RustlsConnector>() else {
            return Ok(());
        };
        if !tls.takes_service_name {
            return Ok(());
        }
        let plain = |uri: &Uri| uri.scheme() != Some(&http::uri::Scheme::HTTPS);
        if let Some(uri) = self.uri.as_ref().filter(|u| plain(u)) {
            return Err(Error::config(format!(
                "tls(..) needs an https:// uri, not `{uri}`"
            )));
        }
        if let Some(endpoint) = self.discover.plain_http_endpoint() {
            return Err(Error::config(format!(
                "tls(..) needs https:// endpoints, not `{endpoint}`"
            )));
        }
        if let Some(service) = self.uri.as_ref().or(self.origin.as_ref()) {
            tls.set_server_name(crate::connector::server_name_of(service)?);
        }
        Ok(())
    }
}
