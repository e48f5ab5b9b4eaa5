//! [`ClientBuilder`].

use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::connect::HttpConnector;

use super::options::Options;
use crate::age::AgeConfig;
use crate::connector::{KeepAliveConfig, default_builder};
use crate::discover::{BoxResolver, RotatingDiscover, validate_endpoint};
use crate::error::Error;
use crate::load::LoadKind;
use crate::replay::ReplayConfig;
use crate::resolve::Resolve;

/// The default [`ready_timeout`](ClientBuilder::ready_timeout): 10 s.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Builds a [`Client`](super::Client); start with [`Client::builder`](super::Client::builder).
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
    pub(super) http2: h2::client::Builder,
    pub(super) keep_alive: KeepAliveConfig,
    /// The settings every client has, whatever makes its connections.
    pub(super) options: Options,
    /// Settings of the crate's own connector that were changed, which
    /// [`build_with`](Self::build_with) (bringing its own) cannot honour.
    pub(super) own_connector_settings: Vec<&'static str>,
}

impl ClientBuilder {
    pub(crate) fn new() -> Self {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        ClientBuilder {
            connector: http,
            http2: default_builder(),
            keep_alive: KeepAliveConfig::default(),
            options: Options {
                discover: RotatingDiscover::builder(),
                age: AgeConfig::new(None),
                replay: ReplayConfig::default(),
                ready_timeout: DEFAULT_READY_TIMEOUT,
                timeout: None,
                origin: None,
                uri: None,
                resolver: None,
            },
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
        self.options.uri = Some(uri);
        self
    }

    /// The resolver for [`uri`](Self::uri): any hyper-util resolver
    /// (`Service<Name>`), such as `HickoryResolver` (feature `hickory`)
    /// to follow record TTLs. Default: the system resolver (`GaiResolver`).
    pub fn resolver<R: Resolve + Sync>(mut self, resolver: R) -> Self {
        self.options.resolver = Some(BoxResolver::new(resolver));
        self
    }

    /// How often [`uri`](Self::uri) is resolved again without a TTL, and
    /// the longest a TTL is followed. Default: 10 s.
    pub fn resolve_interval(mut self, interval: Duration) -> Self {
        self.options.discover = self.options.discover.resolve_interval(interval);
        self
    }

    /// The least time between two resolutions, whatever triggers them.
    /// Default: 1 s.
    pub fn min_resolve_interval(mut self, interval: Duration) -> Self {
        self.options.discover = self.options.discover.min_resolve_interval(interval);
        self
    }

    /// A lookup slower than this counts as failed. Default: 5 s.
    pub fn resolve_timeout(mut self, timeout: Duration) -> Self {
        self.options.discover = self.options.discover.resolve_timeout(timeout);
        self
    }

    /// Whether an empty DNS answer empties the endpoint set. Default: false,
    /// the last known endpoints are kept (see
    /// [`RotatingDiscoverBuilder::empty_answer_clears`](crate::discover::RotatingDiscoverBuilder::empty_answer_clears)).
    pub fn empty_answer_clears(mut self, clears: bool) -> Self {
        self.options.discover = self.options.discover.empty_answer_clears(clears);
        self
    }

    /// Adds an endpoint (`http://10.0.0.1:8080`); the client keeps
    /// `connections_per_endpoint` connections to each.
    pub fn endpoint(mut self, endpoint: Uri) -> Self {
        self.options.discover = self.options.discover.endpoint(endpoint);
        self
    }

    /// Adds endpoints.
    pub fn endpoints(mut self, endpoints: impl IntoIterator<Item = Uri>) -> Self {
        self.options.discover = self.options.discover.endpoints(endpoints);
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
        self.options.origin = Some(origin);
        self
    }

    /// Connections live this long (plus jitter), then are replaced
    /// make-before-break. Default: unset, connections never age.
    pub fn max_connection_age(mut self, age: Duration) -> Self {
        self.options.age.max_age = Some(age);
        self
    }

    /// The most added to each connection's age, uniformly at random: only
    /// added, so `max_connection_age` is the least a connection lives (the
    /// server side spreads both ways, as grpc-go). Default: 10% of
    /// `max_connection_age`, as gRPC; `Duration::ZERO` turns it off.
    pub fn max_connection_age_jitter(mut self, jitter: Duration) -> Self {
        self.options.age.jitter = Some(jitter);
        self
    }

    /// How long a replaced connection may finish its in-flight requests
    /// before it is closed by force. Default: 30 s.
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.options.age.drain_timeout = timeout;
        self
    }

    /// Connections kept to each endpoint. Default: 1. Behind an L4 load
    /// balancer (a virtual IP), more connections reach more backends.
    pub fn connections_per_endpoint(mut self, n: usize) -> Self {
        self.options.discover = self.options.discover.connections_per_endpoint(n);
        self
    }

    /// Up to `n` connections per endpoint while its
    /// `connections_per_endpoint` are all at their server's stream limit
    /// with requests waiting; the extras close once idle. Default:
    /// `connections_per_endpoint` (no extras). See
    /// [`RotatingDiscoverBuilder::max_connections_per_endpoint`](crate::discover::RotatingDiscoverBuilder::max_connections_per_endpoint).
    pub fn max_connections_per_endpoint(mut self, n: usize) -> Self {
        self.options.discover = self.options.discover.max_connections_per_endpoint(n);
        self
    }

    /// How long an extra connection may start no request before it closes.
    /// Default: 10 s.
    pub fn extra_connection_idle_timeout(mut self, timeout: Duration) -> Self {
        self.options.discover = self.options.discover.extra_connection_idle_timeout(timeout);
        self
    }

    /// Takes endpoints whose connects and requests keep failing out of the
    /// pick for a while (Envoy's outlier detection). Default: off. See
    /// [`OutlierDetection`](crate::discover::OutlierDetection).
    pub fn outlier_detection(mut self, detection: crate::discover::OutlierDetection) -> Self {
        self.options.discover = self.options.discover.outlier_detection(detection);
        self
    }

    /// New endpoints found by DNS take a share of traffic growing over
    /// `window`, instead of a burst. Default: off. See
    /// [`RotatingDiscoverBuilder::slow_start_window`](crate::discover::RotatingDiscoverBuilder::slow_start_window).
    pub fn slow_start_window(mut self, window: Duration) -> Self {
        self.options.discover = self.options.discover.slow_start_window(window);
        self
    }

    /// How many times a request that came back unsent is sent again, and,
    /// counted apart, one the server provably did not process. Default: 3.
    pub fn max_retries(mut self, n: usize) -> Self {
        self.options.replay.max_retries = n;
        self
    }

    /// Body bytes kept per request so a refused request can be replayed.
    /// Default: 64 KiB.
    pub fn replay_buffer_limit(mut self, bytes: usize) -> Self {
        self.options.replay.buffer_limit = bytes;
        self
    }

    /// Whether requests the server provably did not process are replayed
    /// (up to `max_retries` times, each to another connection when there is
    /// one). Default: true.
    pub fn replay_refused(mut self, enabled: bool) -> Self {
        self.options.replay.replay_refused = enabled;
        self
    }

    /// How long a request waits for a ready connection before it fails with
    /// [`ErrorKind::NoReadyEndpoint`](crate::ErrorKind::NoReadyEndpoint).
    /// Default: [`DEFAULT_READY_TIMEOUT`] (10 s).
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.options.ready_timeout = crate::time::saturate(timeout);
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
        self.options.timeout = Some(timeout);
        self
    }

    /// How connections measure load for the balancer. Default: peak-EWMA.
    pub fn load(mut self, load: LoadKind) -> Self {
        self.options.age.judging.load = load;
        self
    }

    /// What a failed response (HTTP 5xx, gRPC `UNAVAILABLE`, ... see
    /// [`crate::classify`]) adds to its connection's peak-EWMA RTT, as
    /// Linkerd's response penalty: the full penalty when every response
    /// fails, half when half do (over
    /// [`failure_penalty_decay`](Self::failure_penalty_decay)), fading once
    /// they stop. A pod that answers 503 at once then draws a trickle of
    /// requests instead of most of them. Default:
    /// [`DEFAULT_FAILURE_PENALTY`](crate::load::DEFAULT_FAILURE_PENALTY)
    /// (1 s); `Duration::ZERO` turns it off. No effect with
    /// [`LoadKind::PendingRequests`].
    pub fn failure_penalty(mut self, penalty: Duration) -> Self {
        self.options.age.judging.penalty.value = penalty;
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
        self.options.age.judging.penalty.decay = decay;
        self
    }

    /// What counts as a failed response, for the penalty and
    /// [`outlier_detection`](Self::outlier_detection). Default:
    /// [`ResponseClassifier::new`](crate::classify::ResponseClassifier::new)
    /// (HTTP 5xx; gRPC `UNAVAILABLE`, `INTERNAL`, `UNKNOWN`, `DATA_LOSS`;
    /// 429 and `RESOURCE_EXHAUSTED` penalized only).
    pub fn response_classifier(mut self, classifier: crate::classify::ResponseClassifier) -> Self {
        self.options.age.judging.classifier = classifier;
        self
    }

    /// A connect (TCP, TLS, HTTP/2 handshake) slower than this fails and is
    /// retried with backoff. Default: 10 s. One timer bounds each connect:
    /// the crate's own connector's, whose error says which step did not
    /// finish, or with [`build_with`](Self::build_with) discovery's.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.options.discover = self.options.discover.connect_timeout(timeout);
        self
    }

    /// The delay before reconnecting after a failure: from `min`, doubling
    /// up to `max`, jittered. Default: 50 ms to 5 s.
    pub fn reconnect_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.options.discover = self.options.discover.reconnect_backoff(min, max);
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

    /// Keepalive `PING`s allowed while the server sends no HEADERS or DATA,
    /// before the next ones keep 5 minutes apart (gRPC servers' policy; see
    /// [`Http2Connector::keep_alive_max_pings_without_data`](crate::Http2Connector::keep_alive_max_pings_without_data)).
    /// `0` removes the limit. Default: 2.
    pub fn keep_alive_max_pings_without_data(mut self, n: u32) -> Self {
        self.keep_alive.max_pings_without_data = n;
        self.own_connector_settings
            .push("keep_alive_max_pings_without_data");
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
            options: self.options,
            own_connector_settings: self.own_connector_settings,
        }
    }
}
