//! Counters and gauges an operator can scrape, through the
//! [`metrics`](https://docs.rs/metrics) facade (cargo feature `metrics`).
//!
//! With the feature on, the crate records into whatever recorder the
//! application installed (`metrics-exporter-prometheus`, StatsD, OpenTelemetry,
//! ...); with no recorder installed they cost a load of the no-op recorder.
//! Without the feature nothing is recorded and nothing is compiled in: every
//! call site calls a function here whose body is empty then.
//!
//! ```toml
//! tower-max-connection-age = { version = "0.1", features = ["metrics"] }
//! ```
//!
//! # Names
//!
//! Every name starts with [`PREFIX`], `tower_max_connection_age_`, followed by
//! the name of the [Envoy cluster statistic] that counts the same thing where
//! one exists (Envoy's `.` becomes `_`: `http2.keepalive_timeout` is
//! `http2_keepalive_timeout`), so dashboards and alerts written for Envoy map
//! one to one, and the names never collide with another library's or with
//! Envoy's own (`envoy_cluster_...`) in one Prometheus. Names follow Envoy's
//! spelling, so most counters have no `_total` suffix. The names are the
//! `pub const`s of this module; a recorder layer such as metrics-util's
//! `PrefixLayer` can put an application prefix in front.
//!
//! | name (after the prefix) | type | labels | what it counts | Envoy |
//! |---|---|---|---|---|
//! | `upstream_cx_total` | counter | `endpoint` | connections opened: connected, HTTP/2 handshake done, the server answered, and put under the age layer | `upstream_cx_total` |
//! | `upstream_cx_active` | gauge | `endpoint` | connections open now: opened and not yet closed (a drained connection counts as closed once its last request ended) | `upstream_cx_active` |
//! | `upstream_cx_connect_fail` | counter | `endpoint` | connects that failed: TCP, TLS, the handshake, no HTTP/2, no `SETTINGS` from the server; timeouts included | `upstream_cx_connect_fail` |
//! | `upstream_cx_connect_timeout` | counter | `endpoint` | connects that did not finish within `connect_timeout` (also counted in `upstream_cx_connect_fail`, as in Envoy) | `upstream_cx_connect_timeout` |
//! | `upstream_cx_max_duration_reached` | counter | `endpoint` | connections whose maximum age (`max_connection_age` + jitter) was reached: a rotation starts, or, with no discovery managing it, the drain | `upstream_cx_max_duration_reached` |
//! | `upstream_cx_rotated` | counter | `endpoint` | aged connections replaced make-before-break: the replacement was ready and took the old one's place, which then drains | – |
//! | `upstream_cx_drained` | counter | `endpoint` | connections that stopped taking requests (rotated, endpoint gone, client dropped, server's `GOAWAY`) and closed once their last request had finished | – |
//! | `upstream_cx_force_closed` | counter | `endpoint` | draining connections closed by force because requests were still running at `drain_timeout`; those requests fail with `ForceClosed` | part of `upstream_cx_destroy_local_with_active_rq` |
//! | `upstream_cx_destroy` | counter | `endpoint` | connections closed, for any reason | `upstream_cx_destroy` |
//! | `upstream_cx_destroy_with_active_rq` | counter | `endpoint` | connections closed with requests still in flight: force-closed, keepalive timeout, transport lost | `upstream_cx_destroy_with_active_rq` |
//! | `upstream_cx_close_notify` | counter | `endpoint`, `code` | connections the server sent `GOAWAY` on; `code` is its error code (`NO_ERROR` for a server's own max age or graceful shutdown, `ENHANCE_YOUR_CALM`, ..., `OTHER`) | `upstream_cx_close_notify` |
//! | `http2_keepalive_timeout` | counter | `endpoint` | connections closed because a keepalive `PING` went unanswered within `keep_alive_timeout` (a dead, hung or black-holed peer) | `http2.keepalive_timeout` |
//! | `upstream_rq_retry` | counter | `reason` | requests sent again: `reason="unsent"` came back unsent from a draining connection, `reason="refused"` the server provably did not process | `upstream_rq_retry` |
//! | `upstream_rq_refused` | counter | – | attempts the server provably did not process (`REFUSED_STREAM`, above a `GOAWAY`'s last-stream-id), replayed or not: minus `upstream_rq_retry{reason="refused"}`, those whose refusal reached the caller | – (Envoy counts resets in `http2.rx_reset`) |
//! | `membership_total` | gauge | – | endpoints discovery knows (given, or in the last usable DNS answer) | `membership_total` |
//! | `membership_healthy` | gauge | – | of those, the ones not ejected as outliers | `membership_healthy` |
//! | `outlier_detection_ejections_active` | gauge | – | endpoints ejected as outliers now | `outlier_detection.ejections_active` |
//! | `outlier_detection_ejections_enforced_total` | counter | `endpoint` | ejections of an endpoint as an outlier | `outlier_detection.ejections_enforced_total` |
//! | `outlier_detection_ejections_overflow` | counter | `endpoint` | ejections not made because `max_ejection_percent` of the endpoints were out already | `outlier_detection.ejections_overflow` |
//!
//! # Where they come from
//!
//! Connections are counted by the age layer, so every connection
//! `MakeService` under [`MaxConnectionAgeLayer`](crate::MaxConnectionAgeLayer)
//! gets the connection metrics, and discovery's by
//! [`RotatingDiscover`](crate::RotatingDiscover) (so by [`Client`](crate::Client)).
//! Connect failures are counted by this crate's connectors and by
//! discovery's `connect_timeout`; a connector of your own under the age layer
//! outside discovery has its failures counted nowhere. The server's `GOAWAY`
//! and keepalive timeouts are seen by [`Http2Connector`](crate::Http2Connector)'s
//! connection task; over [`HyperConnector`](crate::connector::HyperConnector)
//! hyper's own task owns them and does not tell, so
//! `upstream_cx_close_notify` and `http2_keepalive_timeout` stay at zero there.
//! Replays are counted by [`Client`](crate::Client) and
//! [`ReplayLayer`](crate::ReplayLayer) alike.
//!
//! # Labels
//!
//! - [`ENDPOINT`] (`endpoint`) is the endpoint's `ip:port` (the authority of
//!   the URI dialed: `10.0.4.7:8080`), on the metrics of one connection or
//!   endpoint. Its cardinality is the number of endpoints (pods) seen.
//! - [`CODE`] (`code`) is a `GOAWAY`'s error code by its RFC 9113 name.
//! - [`REASON`] (`reason`) is why a request was sent again.
//!
//! The gauges without a label are sums over every client in the process, as
//! is `upstream_cx_active` per endpoint: each client adds its own share and
//! takes it back when it is dropped. There is no per-client label.
//!
//! Replays carry no `endpoint` label: the replay layer sees the request and
//! its error, not the connection that failed it (under tower's `Balance` it
//! cannot know it), and labelling there would mean a lookup per replay on the
//! request path.
//!
//! # Cost
//!
//! Everything here is recorded on events: a connection opened, aged, drained
//! or closed, a connect failed, an endpoint came, left or was ejected, a
//! request was replayed. Nothing is recorded for a request that goes well, so
//! the request path is unchanged with the feature on; count requests and
//! their latency in a layer of your own (tower-http's `Trace`, for example),
//! or read [`Client::stats`](crate::Client::stats).
//!
//! # Descriptions
//!
//! Call [`describe`] once after installing the recorder to give each metric
//! its help text and unit (Prometheus' `# HELP` lines).
//!
//! ```
//! // metrics_exporter_prometheus::PrometheusBuilder::new().install().unwrap();
//! tower_max_connection_age::metrics::describe();
//! ```
//!
//! [Envoy cluster statistic]: https://www.envoyproxy.io/docs/envoy/latest/configuration/upstream/cluster_manager/cluster_stats

use http::Uri;

/// Names a metric: [`PREFIX`] and Envoy's name.
macro_rules! name {
    ($name:literal) => {
        concat!("tower_max_connection_age_", $name)
    };
}

/// The start of every metric name here.
pub const PREFIX: &str = name!("");

/// Connections opened (counter, `endpoint`). Envoy: `upstream_cx_total`.
pub const UPSTREAM_CX_TOTAL: &str = name!("upstream_cx_total");
/// Connections open now (gauge, `endpoint`). Envoy: `upstream_cx_active`.
pub const UPSTREAM_CX_ACTIVE: &str = name!("upstream_cx_active");
/// Connects that failed, timeouts included (counter, `endpoint`). Envoy:
/// `upstream_cx_connect_fail`.
pub const UPSTREAM_CX_CONNECT_FAIL: &str = name!("upstream_cx_connect_fail");
/// Connects that timed out (counter, `endpoint`). Envoy:
/// `upstream_cx_connect_timeout`.
pub const UPSTREAM_CX_CONNECT_TIMEOUT: &str = name!("upstream_cx_connect_timeout");
/// Connections whose maximum age was reached (counter, `endpoint`). Envoy:
/// `upstream_cx_max_duration_reached`.
pub const UPSTREAM_CX_MAX_DURATION_REACHED: &str = name!("upstream_cx_max_duration_reached");
/// Aged connections replaced make-before-break (counter, `endpoint`).
pub const UPSTREAM_CX_ROTATED: &str = name!("upstream_cx_rotated");
/// Connections that drained and closed once their last request ended
/// (counter, `endpoint`).
pub const UPSTREAM_CX_DRAINED: &str = name!("upstream_cx_drained");
/// Draining connections closed by force at `drain_timeout` (counter,
/// `endpoint`).
pub const UPSTREAM_CX_FORCE_CLOSED: &str = name!("upstream_cx_force_closed");
/// Connections closed, for any reason (counter, `endpoint`). Envoy:
/// `upstream_cx_destroy`.
pub const UPSTREAM_CX_DESTROY: &str = name!("upstream_cx_destroy");
/// Connections closed with requests in flight (counter, `endpoint`). Envoy:
/// `upstream_cx_destroy_with_active_rq`.
pub const UPSTREAM_CX_DESTROY_WITH_ACTIVE_RQ: &str = name!("upstream_cx_destroy_with_active_rq");
/// Connections the server sent `GOAWAY` on (counter, `endpoint`, `code`).
/// Envoy: `upstream_cx_close_notify`.
pub const UPSTREAM_CX_CLOSE_NOTIFY: &str = name!("upstream_cx_close_notify");
/// Connections closed for an unanswered keepalive `PING` (counter,
/// `endpoint`). Envoy: `http2.keepalive_timeout`.
pub const HTTP2_KEEPALIVE_TIMEOUT: &str = name!("http2_keepalive_timeout");
/// Requests sent again (counter, `reason`). Envoy: `upstream_rq_retry`.
pub const UPSTREAM_RQ_RETRY: &str = name!("upstream_rq_retry");
/// Attempts the server provably did not process (counter).
pub const UPSTREAM_RQ_REFUSED: &str = name!("upstream_rq_refused");
/// Endpoints known (gauge). Envoy: `membership_total`.
pub const MEMBERSHIP_TOTAL: &str = name!("membership_total");
/// Endpoints known and not ejected (gauge). Envoy: `membership_healthy`.
pub const MEMBERSHIP_HEALTHY: &str = name!("membership_healthy");
/// Endpoints ejected now (gauge). Envoy: `outlier_detection.ejections_active`.
pub const OUTLIER_DETECTION_EJECTIONS_ACTIVE: &str = name!("outlier_detection_ejections_active");
/// Ejections (counter, `endpoint`). Envoy:
/// `outlier_detection.ejections_enforced_total`.
pub const OUTLIER_DETECTION_EJECTIONS_ENFORCED_TOTAL: &str =
    name!("outlier_detection_ejections_enforced_total");
/// Ejections not made for `max_ejection_percent` (counter, `endpoint`).
/// Envoy: `outlier_detection.ejections_overflow`.
pub const OUTLIER_DETECTION_EJECTIONS_OVERFLOW: &str =
    name!("outlier_detection_ejections_overflow");

/// Label: the endpoint's `ip:port`.
pub const ENDPOINT: &str = "endpoint";
/// Label of [`UPSTREAM_CX_CLOSE_NOTIFY`]: the `GOAWAY`'s error code.
pub const CODE: &str = "code";
/// Label of [`UPSTREAM_RQ_RETRY`]: `unsent` or `refused`.
pub const REASON: &str = "reason";

#[cfg(feature = "metrics")]
#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
}

/// Every metric with its help text, for [`describe`].
#[cfg(feature = "metrics")]
const DESCRIPTIONS: &[(&str, Kind, &str)] = &[
    (
        UPSTREAM_CX_TOTAL,
        Kind::Counter,
        "HTTP/2 connections opened",
    ),
    (
        UPSTREAM_CX_ACTIVE,
        Kind::Gauge,
        "HTTP/2 connections open now",
    ),
    (
        UPSTREAM_CX_CONNECT_FAIL,
        Kind::Counter,
        "Connects that failed (timeouts included)",
    ),
    (
        UPSTREAM_CX_CONNECT_TIMEOUT,
        Kind::Counter,
        "Connects that did not finish within connect_timeout",
    ),
    (
        UPSTREAM_CX_MAX_DURATION_REACHED,
        Kind::Counter,
        "Connections whose maximum age (max_connection_age + jitter) was reached",
    ),
    (
        UPSTREAM_CX_ROTATED,
        Kind::Counter,
        "Aged connections replaced make-before-break",
    ),
    (
        UPSTREAM_CX_DRAINED,
        Kind::Counter,
        "Connections that stopped taking requests and closed once their last request ended",
    ),
    (
        UPSTREAM_CX_FORCE_CLOSED,
        Kind::Counter,
        "Draining connections closed by force with requests still running at drain_timeout",
    ),
    (
        UPSTREAM_CX_DESTROY,
        Kind::Counter,
        "Connections closed, for any reason",
    ),
    (
        UPSTREAM_CX_DESTROY_WITH_ACTIVE_RQ,
        Kind::Counter,
        "Connections closed with requests in flight",
    ),
    (
        UPSTREAM_CX_CLOSE_NOTIFY,
        Kind::Counter,
        "Connections the server sent GOAWAY on, by error code",
    ),
    (
        HTTP2_KEEPALIVE_TIMEOUT,
        Kind::Counter,
        "Connections closed because a keepalive PING went unanswered",
    ),
    (
        UPSTREAM_RQ_RETRY,
        Kind::Counter,
        "Requests sent again: unsent (the connection was draining) or refused (provably not processed)",
    ),
    (
        UPSTREAM_RQ_REFUSED,
        Kind::Counter,
        "Attempts the server provably did not process (REFUSED_STREAM, above a GOAWAY's last-stream-id)",
    ),
    (MEMBERSHIP_TOTAL, Kind::Gauge, "Endpoints discovery knows"),
    (
        MEMBERSHIP_HEALTHY,
        Kind::Gauge,
        "Endpoints discovery knows that are not ejected as outliers",
    ),
    (
        OUTLIER_DETECTION_EJECTIONS_ACTIVE,
        Kind::Gauge,
        "Endpoints ejected as outliers now",
    ),
    (
        OUTLIER_DETECTION_EJECTIONS_ENFORCED_TOTAL,
        Kind::Counter,
        "Ejections of an endpoint as an outlier",
    ),
    (
        OUTLIER_DETECTION_EJECTIONS_OVERFLOW,
        Kind::Counter,
        "Ejections not made because max_ejection_percent of the endpoints were out already",
    ),
];

/// Gives every metric above its description and unit (a count) in the
/// installed recorder. Call it once, after installing the recorder
/// (descriptions given to no recorder are lost). Without the feature
/// `metrics` it does nothing, so an application may call it either way.
pub fn describe() {
    #[cfg(feature = "metrics")]
    for &(name, kind, help) in DESCRIPTIONS {
        match kind {
            Kind::Counter => ::metrics::describe_counter!(name, ::metrics::Unit::Count, help),
            Kind::Gauge => ::metrics::describe_gauge!(name, ::metrics::Unit::Count, help),
        }
    }
}

/// An endpoint's label value, made once per connection: the `ip:port` of
/// the URI dialed. Nothing without the feature.
#[derive(Clone)]
pub(crate) struct Endpoint {
    #[cfg(feature = "metrics")]
    label: std::sync::Arc<str>,
}

impl Endpoint {
    /// The authority of `endpoint` (`ip:port`), or the whole URI if it has
    /// none.
    pub(crate) fn of(endpoint: &Uri) -> Self {
        #[cfg(not(feature = "metrics"))]
        let _ = endpoint;
        Endpoint {
            #[cfg(feature = "metrics")]
            label: match endpoint.authority() {
                Some(authority) => authority.as_str().into(),
                None => endpoint.to_string().into(),
            },
        }
    }

    /// The same for an endpoint known as text (the age layer's target, as
    /// the connection `MakeService` was called with it): a URI's authority,
    /// or the text as it is.
    pub(crate) fn parse(endpoint: &str) -> Self {
        #[cfg(feature = "metrics")]
        if let Ok(uri) = endpoint.parse::<Uri>() {
            return Endpoint::of(&uri);
        }
        #[cfg(not(feature = "metrics"))]
        let _ = endpoint;
        Endpoint {
            #[cfg(feature = "metrics")]
            label: endpoint.into(),
        }
    }

    #[cfg(feature = "metrics")]
    fn count(&self, name: &'static str) {
        ::metrics::counter!(name, ENDPOINT => self.label.clone()).increment(1);
    }

    #[cfg(feature = "metrics")]
    fn active(&self) -> ::metrics::Gauge {
        ::metrics::gauge!(UPSTREAM_CX_ACTIVE, ENDPOINT => self.label.clone())
    }

    /// Runs a connect of one of this crate's connectors
    /// ([`Http2Connector`](crate::Http2Connector),
    /// [`HyperConnector`](crate::connector::HyperConnector)) and counts it in
    /// `upstream_cx_connect_fail` if it fails (the connector's own timeouts
    /// too).
    pub(crate) async fn connecting<T, E>(
        self,
        connect: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let made = connect.await;
        #[cfg(feature = "metrics")]
        if made.is_err() {
            self.count(UPSTREAM_CX_CONNECT_FAIL);
        }
        made
    }

    /// The server sent `GOAWAY` with `reason`.
    pub(crate) fn go_away(&self, reason: h2::Reason) {
        #[cfg(feature = "metrics")]
        ::metrics::counter!(
            UPSTREAM_CX_CLOSE_NOTIFY,
            ENDPOINT => self.label.clone(),
            CODE => code(reason),
        )
        .increment(1);
        #[cfg(not(feature = "metrics"))]
        let _ = reason;
    }

    /// A keepalive `PING` went unanswered: the connection is closed.
    pub(crate) fn keep_alive_timed_out(&self) {
        #[cfg(feature = "metrics")]
        self.count(HTTP2_KEEPALIVE_TIMEOUT);
    }
}

/// A `GOAWAY` error code as a label: its RFC 9113 name, `OTHER` for codes
/// RFC 9113 does not define (so a peer cannot grow the label set).
#[cfg(feature = "metrics")]
fn code(reason: h2::Reason) -> &'static str {
    use h2::Reason;
    match reason {
        Reason::NO_ERROR => "NO_ERROR",
        Reason::PROTOCOL_ERROR => "PROTOCOL_ERROR",
        Reason::INTERNAL_ERROR => "INTERNAL_ERROR",
        Reason::FLOW_CONTROL_ERROR => "FLOW_CONTROL_ERROR",
        Reason::SETTINGS_TIMEOUT => "SETTINGS_TIMEOUT",
        Reason::STREAM_CLOSED => "STREAM_CLOSED",
        Reason::FRAME_SIZE_ERROR => "FRAME_SIZE_ERROR",
        Reason::REFUSED_STREAM => "REFUSED_STREAM",
        Reason::CANCEL => "CANCEL",
        Reason::COMPRESSION_ERROR => "COMPRESSION_ERROR",
        Reason::CONNECT_ERROR => "CONNECT_ERROR",
        Reason::ENHANCE_YOUR_CALM => "ENHANCE_YOUR_CALM",
        Reason::INADEQUATE_SECURITY => "INADEQUATE_SECURITY",
        Reason::HTTP_1_1_REQUIRED => "HTTP_1_1_REQUIRED",
        _ => "OTHER",
    }
}

/// A connect timed out in the transport or the handshake
/// ([`Http2Connector`](crate::Http2Connector)'s own timeout; the failure
/// itself is counted by [`Endpoint::connecting`]).
pub(crate) fn connect_timeout(endpoint: &Uri) {
    #[cfg(feature = "metrics")]
    Endpoint::of(endpoint).count(UPSTREAM_CX_CONNECT_TIMEOUT);
    #[cfg(not(feature = "metrics"))]
    let _ = endpoint;
}

/// Discovery's connect timeout passed first: the connect is dropped unfinished,
/// so this counts both the timeout and the failure.
pub(crate) fn connect_timed_out(endpoint: &Uri) {
    #[cfg(feature = "metrics")]
    {
        let endpoint = Endpoint::of(endpoint);
        endpoint.count(UPSTREAM_CX_CONNECT_TIMEOUT);
        endpoint.count(UPSTREAM_CX_CONNECT_FAIL);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = endpoint;
}

/// A ready replacement took the place of an aged connection.
pub(crate) fn rotated(endpoint: &Uri) {
    #[cfg(feature = "metrics")]
    Endpoint::of(endpoint).count(UPSTREAM_CX_ROTATED);
    #[cfg(not(feature = "metrics"))]
    let _ = endpoint;
}

/// Outlier detection ejected the endpoint.
pub(crate) fn ejected(endpoint: &Uri) {
    #[cfg(feature = "metrics")]
    Endpoint::of(endpoint).count(OUTLIER_DETECTION_EJECTIONS_ENFORCED_TOTAL);
    #[cfg(not(feature = "metrics"))]
    let _ = endpoint;
}

/// The endpoint was failing but not ejected: too many were out already.
pub(crate) fn ejection_overflow(endpoint: &Uri) {
    #[cfg(feature = "metrics")]
    Endpoint::of(endpoint).count(OUTLIER_DETECTION_EJECTIONS_OVERFLOW);
    #[cfg(not(feature = "metrics"))]
    let _ = endpoint;
}

/// Why a request is sent again.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Replayed {
    /// It came back unsent from a draining connection.
    Unsent,
    /// The server provably did not process it.
    Refused,
}

/// A request is sent again.
pub(crate) fn replayed(why: Replayed) {
    #[cfg(feature = "metrics")]
    {
        let reason = match why {
            Replayed::Unsent => "unsent",
            Replayed::Refused => "refused",
        };
        ::metrics::counter!(UPSTREAM_RQ_RETRY, REASON => reason).increment(1);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = why;
}

/// An attempt failed with `kind`; a refusal is counted.
pub(crate) fn attempt_failed(kind: crate::ErrorKind) {
    #[cfg(feature = "metrics")]
    if kind == crate::ErrorKind::Refused {
        ::metrics::counter!(UPSTREAM_RQ_REFUSED).increment(1);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = kind;
}

/// One connection's metrics from open to close, held by its supervisor:
/// dropping it (also when the runtime drops the task) takes the connection
/// out of `upstream_cx_active`.
pub(crate) struct Connection {
    #[cfg(feature = "metrics")]
    endpoint: Endpoint,
    #[cfg(feature = "metrics")]
    forced: bool,
    #[cfg(feature = "metrics")]
    closed: bool,
}

impl Connection {
    /// The connection was made and put under the age layer.
    pub(crate) fn opened(endpoint: &str) -> Self {
        let endpoint = Endpoint::parse(endpoint);
        #[cfg(feature = "metrics")]
        {
            endpoint.count(UPSTREAM_CX_TOTAL);
            endpoint.active().increment(1);
            Connection {
                endpoint,
                forced: false,
                closed: false,
            }
        }
        #[cfg(not(feature = "metrics"))]
        {
            let _ = endpoint;
            Connection {}
        }
    }

    /// Its deadline (age + jitter) passed.
    pub(crate) fn max_duration_reached(&self) {
        #[cfg(feature = "metrics")]
        self.endpoint.count(UPSTREAM_CX_MAX_DURATION_REACHED);
    }

    /// Its drain timeout passed with requests in flight: closed by force.
    pub(crate) fn force_closed(&mut self) {
        #[cfg(feature = "metrics")]
        {
            self.forced = true;
            self.endpoint.count(UPSTREAM_CX_FORCE_CLOSED);
        }
    }

    /// Its supervisor is done: it stopped serving, `graceful`ly (aged,
    /// replaced, told to go away) or because its transport closed, with
    /// `in_flight` requests left (none once it drained).
    pub(crate) fn closed(&mut self, graceful: bool, in_flight: usize) {
        #[cfg(feature = "metrics")]
        {
            self.closed = true;
            if in_flight == 0 && graceful && !self.forced {
                self.endpoint.count(UPSTREAM_CX_DRAINED);
            }
            // A force-close had requests in flight by definition, even if
            // one ended just as the drain timeout fired.
            if in_flight > 0 || self.forced {
                self.endpoint.count(UPSTREAM_CX_DESTROY_WITH_ACTIVE_RQ);
            }
            self.endpoint.count(UPSTREAM_CX_DESTROY);
        }
        #[cfg(not(feature = "metrics"))]
        let _ = (graceful, in_flight);
    }
}

#[cfg(feature = "metrics")]
impl Drop for Connection {
    fn drop(&mut self) {
        if !self.closed {
            // The task was dropped (its runtime shut down): the connection
            // goes with it.
            self.endpoint.count(UPSTREAM_CX_DESTROY);
        }
        self.endpoint.active().decrement(1);
    }
}

/// What one discovery worker adds to the membership gauges; given back when
/// it is dropped, so the gauges sum over the clients alive.
#[derive(Default)]
pub(crate) struct Membership {
    #[cfg(feature = "metrics")]
    published: (usize, usize),
}

impl Membership {
    /// The worker knows `endpoints`, of which `ejected()` are ejected.
    /// Records only changes; `ejected` is called only with the feature.
    pub(crate) fn update(&mut self, endpoints: usize, ejected: impl FnOnce() -> usize) {
        #[cfg(feature = "metrics")]
        self.set(endpoints, ejected().min(endpoints));
        #[cfg(not(feature = "metrics"))]
        let _ = (endpoints, ejected);
    }

    #[cfg(feature = "metrics")]
    fn set(&mut self, endpoints: usize, ejected: usize) {
        let (known, out) = self.published;
        if (known, out) == (endpoints, ejected) {
            return;
        }
        adjust(MEMBERSHIP_TOTAL, known, endpoints);
        adjust(MEMBERSHIP_HEALTHY, known - out, endpoints - ejected);
        adjust(OUTLIER_DETECTION_EJECTIONS_ACTIVE, out, ejected);
        self.published = (endpoints, ejected);
    }
}

#[cfg(feature = "metrics")]
impl Drop for Membership {
    fn drop(&mut self) {
        self.set(0, 0);
    }
}

/// Moves a gauge this worker contributes `from` to `to`.
#[cfg(feature = "metrics")]
fn adjust(name: &'static str, from: usize, to: usize) {
    let gauge = ::metrics::gauge!(name);
    if to > from {
        gauge.increment((to - from) as f64);
    } else if from > to {
        gauge.decrement((from - to) as f64);
    }
}

#[cfg(all(test, feature = "metrics"))]
mod tests {
    use super::*;

    #[test]
    fn every_metric_has_the_prefix_a_description_and_a_row_in_both_tables() {
        let module = include_str!("metrics.rs");
        let readme = include_str!("../README.md");
        assert!(
            readme.contains(
                "| name (after the prefix) | type | labels | what it counts | Envoy |\n\
                 |---|---|---|---|---|\n"
            ),
            "the README's table has its header"
        );
        for &(name, _, help) in DESCRIPTIONS {
            let short = name
                .strip_prefix(PREFIX)
                .expect("every name has the prefix");
            assert!(!help.is_empty());
            let row = format!("| `{short}` |");
            assert!(
                module.contains(&format!("//! {row}")),
                "no row for {short} here"
            );
            assert!(readme.contains(&row), "no row for {short} in the README");
        }
        let rows = module.lines().filter(|l| l.starts_with("//! | `")).count();
        assert_eq!(rows, DESCRIPTIONS.len(), "a table row names no metric");
    }

    #[test]
    fn endpoint_labels_are_the_authority() {
        let uri: Uri = "http://10.0.0.1:8080".parse().unwrap();
        assert_eq!(&*Endpoint::of(&uri).label, "10.0.0.1:8080");
        // The age layer knows the target as text: `Uri`'s Display adds a `/`.
        assert_eq!(&*Endpoint::parse(&uri.to_string()).label, "10.0.0.1:8080");
        assert_eq!(&*Endpoint::parse("not a uri").label, "not a uri");
    }

    #[test]
    fn goaway_codes_are_bounded() {
        assert_eq!(code(h2::Reason::NO_ERROR), "NO_ERROR");
        assert_eq!(code(h2::Reason::ENHANCE_YOUR_CALM), "ENHANCE_YOUR_CALM");
        assert_eq!(code(h2::Reason::from(0x1234)), "OTHER");
    }
}
