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
//! | `upstream_cx_rotated` | counter | `endpoint` | connections replaced make-before-break: the replacement was ready and took the old one's place, at its maximum age (the old one then drains) or at the server's `GOAWAY` when its request cap was learned and a successor connected ahead | – |
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
//! | `outlier_detection_ejections_enforced_consecutive_5xx` | counter | `endpoint` | of those, ejections for failures in a row (transport failures and failed responses, see `crate::classify`) | `outlier_detection.ejections_enforced_consecutive_5xx` |
//! | `outlier_detection_ejections_enforced_failure_percentage` | counter | `endpoint` | of those, ejections for the share of failures in an interval | `outlier_detection.ejections_enforced_failure_percentage` |
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

mod record;

pub(crate) use record::*;

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
/// Connections replaced make-before-break, at their age or at a server's
/// request cap (counter, `endpoint`).
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
/// Ejections for failures in a row (counter, `endpoint`). Envoy:
/// `outlier_detection.ejections_enforced_consecutive_5xx`.
pub const OUTLIER_DETECTION_EJECTIONS_ENFORCED_CONSECUTIVE_5XX: &str =
    name!("outlier_detection_ejections_enforced_consecutive_5xx");
/// Ejections for a failure percentage (counter, `endpoint`). Envoy:
/// `outlier_detection.ejections_enforced_failure_percentage`.
pub const OUTLIER_DETECTION_EJECTIONS_ENFORCED_FAILURE_PERCENTAGE: &str =
    name!("outlier_detection_ejections_enforced_failure_percentage");
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
        "Connections replaced make-before-break (at their maximum age, or at a server's request cap)",
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
        OUTLIER_DETECTION_EJECTIONS_ENFORCED_CONSECUTIVE_5XX,
        Kind::Counter,
        "Ejections of an endpoint for failures in a row",
    ),
    (
        OUTLIER_DETECTION_EJECTIONS_ENFORCED_FAILURE_PERCENTAGE,
        Kind::Counter,
        "Ejections of an endpoint for its share of failures in an interval",
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

#[cfg(all(test, feature = "metrics"))]
mod tests;
