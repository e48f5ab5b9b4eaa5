//! What a response says about the pod that sent it: a pod that answers at
//! once with HTTP 503, or with gRPC `UNAVAILABLE`, is failing, not fast.
//!
//! Every response is sorted into a [`ResponseClass`] by a
//! [`ResponseClassifier`]: from its head (the HTTP status, or a gRPC
//! trailers-only head's `grpc-status`), or, for a gRPC response with a body,
//! from its trailers when the body ends. The class feeds the load (a failure
//! adds a penalty that fades, as Linkerd's response penalty, so a failing
//! pod stops looking like the fastest one) and outlier detection (failures
//! in a row, or a failure percentage, eject the pod, as Envoy's
//! `consecutive_5xx` and `failure_percentage`). It never turns a response
//! into an error, and never makes the crate replay one: a 503 is an answer,
//! and whether to send the request again is the caller's (or its retry
//! layer's) decision.
//!
//! The defaults follow what Envoy and Linkerd count as the server's failure:
//!
//! | response | class |
//! |---|---|
//! | HTTP 502, 503, 504 | [`GatewayFailure`](ResponseClass::GatewayFailure) |
//! | any other HTTP 5xx | [`Failure`](ResponseClass::Failure) |
//! | HTTP 429 | [`Overloaded`](ResponseClass::Overloaded) |
//! | gRPC `UNAVAILABLE` (14) | [`GatewayFailure`](ResponseClass::GatewayFailure) |
//! | gRPC `UNKNOWN` (2), `INTERNAL` (13), `DATA_LOSS` (15); a gRPC body that ends without `grpc-status` | [`Failure`](ResponseClass::Failure) |
//! | gRPC `RESOURCE_EXHAUSTED` (8) | [`Overloaded`](ResponseClass::Overloaded) |
//! | everything else (4xx, gRPC `NOT_FOUND`, `DEADLINE_EXCEEDED`, ...) | [`Success`](ResponseClass::Success) |
//!
//! `DEADLINE_EXCEEDED` is not the pod's failure by default: it is usually the
//! caller's own deadline (propagated in `grpc-timeout`) running out, and a
//! slow pod already costs more through its latency. 4xx answers are the
//! caller's mistakes, which every pod would make alike.

use http::{HeaderMap, StatusCode};

/// What a response says about the pod that sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ResponseClass {
    /// The pod did its job (whatever the caller thinks of the answer).
    Success,
    /// The pod failed the request: HTTP 5xx, gRPC `INTERNAL`, ... Counts
    /// towards outlier detection and adds to the load's penalty.
    Failure,
    /// The pod cannot serve at all now (HTTP 502, 503, 504, gRPC
    /// `UNAVAILABLE`): a [`Failure`](Self::Failure) that Envoy also counts
    /// as a gateway failure.
    GatewayFailure,
    /// The pod asks for less traffic (HTTP 429, gRPC `RESOURCE_EXHAUSTED`):
    /// adds to the load's penalty, so traffic moves away, but is no
    /// failure of the pod's for outlier detection (it is alive, and
    /// shedding load as it should).
    Overloaded,
}

impl ResponseClass {
    /// Counts towards outlier detection.
    pub fn is_failure(self) -> bool {
        matches!(self, ResponseClass::Failure | ResponseClass::GatewayFailure)
    }

    /// Adds to the load's penalty.
    pub fn is_penalized(self) -> bool {
        !matches!(self, ResponseClass::Success)
    }
}

/// Sorts responses into [`ResponseClass`]es: one function for HTTP statuses
/// and one for gRPC codes (from a trailers-only head or the trailers).
/// Plain function pointers, so that classifying a healthy response costs a
/// comparison or two and no allocation.
///
/// ```
/// use http::StatusCode;
/// use tower_max_connection_age::classify::{ResponseClass, ResponseClassifier};
///
/// // Count 500 only; a 503 from this service means "try another shard".
/// let classifier = ResponseClassifier::new().http(|status| match status.as_u16() {
///     500 => ResponseClass::Failure,
///     _ => ResponseClass::Success,
/// });
/// assert_eq!(classifier.classify_status(StatusCode::SERVICE_UNAVAILABLE), ResponseClass::Success);
/// ```
#[derive(Clone, Copy)]
pub struct ResponseClassifier {
    http: fn(StatusCode) -> ResponseClass,
    grpc: fn(i32) -> ResponseClass,
}

impl Default for ResponseClassifier {
    fn default() -> Self {
        ResponseClassifier::new()
    }
}

impl std::fmt::Debug for ResponseClassifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseClassifier").finish_non_exhaustive()
    }
}

/// `grpc-status` of `UNKNOWN`, for a gRPC body that ended without one (as
/// tonic reports a missing status).
const GRPC_UNKNOWN: i32 = 2;

impl ResponseClassifier {
    /// The defaults in the [module's table](self).
    pub const fn new() -> Self {
        ResponseClassifier {
            http: default_http,
            grpc: default_grpc,
        }
    }

    /// Every response is a [`Success`](ResponseClass::Success): only the
    /// transport (connects, resets, keepalive, latency) judges a pod, as
    /// before this classification existed.
    pub const fn none() -> Self {
        ResponseClassifier {
            http: |_| ResponseClass::Success,
            grpc: |_| ResponseClass::Success,
        }
    }

    /// Classifies HTTP statuses (of responses that are not gRPC) with `f`.
    pub const fn http(mut self, f: fn(StatusCode) -> ResponseClass) -> Self {
        self.http = f;
        self
    }

    /// Classifies gRPC status codes (`grpc-status`) with `f`.
    pub const fn grpc(mut self, f: fn(i32) -> ResponseClass) -> Self {
        self.grpc = f;
        self
    }

    /// The class of an HTTP status alone.
    pub fn classify_status(&self, status: StatusCode) -> ResponseClass {
        (self.http)(status)
    }

    /// The class of a gRPC status code alone.
    pub fn classify_grpc_code(&self, code: i32) -> ResponseClass {
        (self.grpc)(code)
    }

    /// The class of a response from its head, or `None` for a gRPC
    /// response whose status comes in its trailers.
    ///
    /// gRPC answers with HTTP 200; its `content-type` is looked up only
    /// then, so other statuses cost a comparison.
    pub fn classify_head(&self, status: StatusCode, headers: &HeaderMap) -> Option<ResponseClass> {
        if status != StatusCode::OK || !is_grpc(headers) {
            return Some((self.http)(status));
        }
        // A trailers-only response carries its status in the head.
        grpc_status(headers).map(self.grpc)
    }

    /// The class of a gRPC response from its trailers (`None`: the body
    /// ended without any, which gRPC counts as `UNKNOWN`).
    pub fn classify_trailers(&self, trailers: Option<&HeaderMap>) -> ResponseClass {
        let code = trailers.and_then(grpc_status).unwrap_or(GRPC_UNKNOWN);
        (self.grpc)(code)
    }
}

/// The default for HTTP statuses (see the [module's table](self)).
pub fn default_http(status: StatusCode) -> ResponseClass {
    match status.as_u16() {
        502..=504 => ResponseClass::GatewayFailure,
        500..=599 => ResponseClass::Failure,
        429 => ResponseClass::Overloaded,
        _ => ResponseClass::Success,
    }
}

/// The default for gRPC codes (see the [module's table](self)).
pub fn default_grpc(code: i32) -> ResponseClass {
    match code {
        14 => ResponseClass::GatewayFailure,
        2 | 13 | 15 => ResponseClass::Failure,
        8 => ResponseClass::Overloaded,
        _ => ResponseClass::Success,
    }
}

/// `content-type: application/grpc`, `application/grpc+proto`, ... (gRPC
/// over HTTP/2's spec).
fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The `grpc-status` header's code, read from its bytes (no allocation).
/// A value that is no number counts as `UNKNOWN`, as gRPC libraries read
/// it.
fn grpc_status(headers: &HeaderMap) -> Option<i32> {
    let value = headers.get("grpc-status")?;
    let code = std::str::from_utf8(value.as_bytes())
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .unwrap_or(GRPC_UNKNOWN);
    Some(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, http::HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn http_statuses_by_default() {
        let c = ResponseClassifier::new();
        let none = HeaderMap::new();
        let class = |code: u16| c.classify_head(StatusCode::from_u16(code).unwrap(), &none);
        assert_eq!(class(200), Some(ResponseClass::Success));
        assert_eq!(
            class(404),
            Some(ResponseClass::Success),
            "the caller's mistake"
        );
        assert_eq!(class(429), Some(ResponseClass::Overloaded));
        assert_eq!(class(500), Some(ResponseClass::Failure));
        assert_eq!(class(503), Some(ResponseClass::GatewayFailure));
        assert_eq!(class(504), Some(ResponseClass::GatewayFailure));
        assert_eq!(class(599), Some(ResponseClass::Failure));
        assert!(ResponseClass::GatewayFailure.is_failure());
        assert!(!ResponseClass::Overloaded.is_failure());
        assert!(ResponseClass::Overloaded.is_penalized());
    }

    #[test]
    fn grpc_waits_for_its_trailers_unless_the_head_carries_the_status() {
        let c = ResponseClassifier::new();
        let grpc = headers(&[("content-type", "application/grpc+proto")]);
        assert_eq!(c.classify_head(StatusCode::OK, &grpc), None);
        let trailers_only = headers(&[("content-type", "application/grpc"), ("grpc-status", "14")]);
        assert_eq!(
            c.classify_head(StatusCode::OK, &trailers_only),
            Some(ResponseClass::GatewayFailure)
        );
        assert_eq!(
            c.classify_trailers(Some(&headers(&[("grpc-status", "0")]))),
            ResponseClass::Success
        );
        assert_eq!(
            c.classify_trailers(Some(&headers(&[("grpc-status", "13")]))),
            ResponseClass::Failure
        );
        assert_eq!(
            c.classify_trailers(Some(&headers(&[("grpc-status", "8")]))),
            ResponseClass::Overloaded
        );
        assert_eq!(
            c.classify_trailers(Some(&headers(&[("grpc-status", "4")]))),
            ResponseClass::Success,
            "DEADLINE_EXCEEDED is the caller's deadline"
        );
        assert_eq!(
            c.classify_trailers(None),
            ResponseClass::Failure,
            "no status: UNKNOWN"
        );
        assert_eq!(
            c.classify_trailers(Some(&headers(&[("grpc-status", "x")]))),
            ResponseClass::Failure,
            "garbage: UNKNOWN"
        );
        // A gRPC server behind a proxy that answers 503 itself.
        assert_eq!(
            c.classify_head(StatusCode::SERVICE_UNAVAILABLE, &grpc),
            Some(ResponseClass::GatewayFailure)
        );
    }

    #[test]
    fn none_counts_nothing_and_user_functions_replace_the_defaults() {
        let none = ResponseClassifier::none();
        assert_eq!(
            none.classify_status(StatusCode::SERVICE_UNAVAILABLE),
            ResponseClass::Success
        );
        assert_eq!(none.classify_trailers(None), ResponseClass::Success);
        let only_internal = ResponseClassifier::new().grpc(|code| match code {
            13 => ResponseClass::Failure,
            _ => ResponseClass::Success,
        });
        assert_eq!(only_internal.classify_grpc_code(14), ResponseClass::Success);
        assert_eq!(only_internal.classify_grpc_code(13), ResponseClass::Failure);
        assert_eq!(
            only_internal.classify_status(StatusCode::BAD_GATEWAY),
            ResponseClass::GatewayFailure,
            "HTTP keeps its default"
        );
    }
}
