//! Where each metric is recorded: called from where each event is
//! decided; nothing without the `metrics` feature.

use http::Uri;

#[cfg(feature = "metrics")]
use super::*;

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
pub(crate) fn ejected(endpoint: &Uri, for_failure_percentage: bool) {
    #[cfg(feature = "metrics")]
    {
        let endpoint = Endpoint::of(endpoint);
        endpoint.count(OUTLIER_DETECTION_EJECTIONS_ENFORCED_TOTAL);
        endpoint.count(if for_failure_percentage {
            OUTLIER_DETECTION_EJECTIONS_ENFORCED_FAILURE_PERCENTAGE
        } else {
            OUTLIER_DETECTION_EJECTIONS_ENFORCED_CONSECUTIVE_5XX
        });
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (endpoint, for_failure_percentage);
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
