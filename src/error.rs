//! The crate's one error type.

use std::any::Any;
use std::borrow::Cow;
use std::fmt;
use std::sync::{Arc, Mutex};

use crate::outcome::Wire;

/// A boxed error, as tower and hyper pass them around.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What went wrong; see [`Error::kind`].
///
/// The kinds split into two groups that matter for retries: the request was
/// *provably not processed* by the server ([`Draining`](ErrorKind::Draining),
/// [`Refused`](ErrorKind::Refused), [`NoReadyEndpoint`](ErrorKind::NoReadyEndpoint)),
/// or it *may have been processed* ([`ForceClosed`](ErrorKind::ForceClosed),
/// [`KeepAlive`](ErrorKind::KeepAlive), [`Request`](ErrorKind::Request)). This crate replays only the first group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A builder was given a value it cannot work with.
    Config,
    /// Opening a connection (TCP, TLS or the HTTP/2 handshake) failed.
    Connect,
    /// The connection is draining (aged, told to go away, or closed) and did not
    /// take the request; [`Error::take_request`] gives the request back.
    Draining,
    /// No connection became ready within the client's `ready_timeout`.
    NoReadyEndpoint,
    /// The request was still running when the connection's drain timeout ended
    /// and the connection was closed by force. It may have been processed.
    ForceClosed,
    /// The connection's keepalive `PING` went unanswered within
    /// `keep_alive_timeout`: the peer is dead, hung or black-holed, and the
    /// connection was closed. The request may have been processed.
    KeepAlive,
    /// The server provably did not process the request (`REFUSED_STREAM`, or a
    /// `GOAWAY` whose last-stream-id is below it). [`ReplayLayer`](crate::ReplayLayer)
    /// and [`Client`](crate::Client) replay these up to `max_retries` times; this reaches the caller
    /// when the replay was used up or the body could not be rebuilt.
    Refused,
    /// Resolving the endpoints' host name failed.
    Resolve,
    /// The request failed on the wire (I/O error, reset, protocol error) and may
    /// have been processed, so it is not replayed.
    Request,
    /// No response came before the request's deadline: the client's
    /// [`timeout`](crate::client::ClientBuilder::timeout) or the request's
    /// `grpc-timeout` header, whichever ends first. The stream was
    /// cancelled; the request may have been processed.
    Timeout,
}

impl ErrorKind {
    fn describe(self) -> &'static str {
        match self {
            ErrorKind::Config => "invalid configuration",
            ErrorKind::Connect => "connect failed",
            ErrorKind::Draining => "connection is draining and did not take the request",
            ErrorKind::NoReadyEndpoint => "no endpoint became ready within the ready timeout",
            ErrorKind::ForceClosed => "connection closed by force after its drain timeout",
            ErrorKind::KeepAlive => "the peer did not answer a keepalive PING in time",
            ErrorKind::Refused => "server refused the request without processing it",
            ErrorKind::Resolve => "resolving endpoints failed",
            ErrorKind::Request => "request failed",
            ErrorKind::Timeout => "timed out before the response",
        }
    }
}

/// The error of every service, layer and builder in this crate.
///
/// It carries an [`ErrorKind`], an optional message, an optional `source()`
/// (h2's error, an I/O error, ...) and, for requests that were never
/// sent, the request itself so the caller can send it elsewhere.
///
/// ```
/// use tower_max_connection_age::{Error, ErrorKind};
///
/// let err = Error::config("max_connection_age must be greater than zero");
/// assert_eq!(err.kind(), ErrorKind::Config);
/// assert!(err.to_string().contains("max_connection_age"));
/// ```
pub struct Error {
    inner: Box<Inner>,
}

struct Inner {
    kind: ErrorKind,
    message: Option<Cow<'static, str>>,
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
    /// What the wire said in `source`, read once when it was set.
    wire: Option<Wire>,
    /// The gRPC status this error maps to, made when first asked for:
    /// tonic finds it as the first `source()` (see the `grpc` module).
    #[cfg(feature = "tonic")]
    status: std::sync::OnceLock<Option<tonic::Status>>,
    // `Mutex` only makes the request `Sync` so that `Error` fits in a `BoxError`;
    // it is reached through `&mut self`, which never locks.
    request: Option<Mutex<Box<dyn Any + Send>>>,
    /// A `Refused` request that must not be replayed (the server's `GOAWAY`
    /// may blame it), though its head came back.
    blamed: bool,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind) -> Self {
        Error {
            inner: Box::new(Inner {
                kind,
                message: None,
                source: None,
                wire: None,
                #[cfg(feature = "tonic")]
                status: std::sync::OnceLock::new(),
                request: None,
                blamed: false,
            }),
        }
    }

    pub(crate) fn with_message(mut self, message: impl Into<Cow<'static, str>>) -> Self {
        self.inner.message = Some(message.into());
        self.changed();
        self
    }

    /// Forgets the gRPC status made from what this error said before.
    fn changed(&mut self) {
        #[cfg(feature = "tonic")]
        {
            self.inner.status = std::sync::OnceLock::new();
        }
    }

    /// The error's cause as given to [`with_source`](Self::with_source):
    /// with the `tonic` feature, `source()` puts the gRPC status first.
    pub(crate) fn cause(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner
            .source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }

    /// What the wire said in the cause: the HTTP/2 code, a remote
    /// `GOAWAY`, a broken connection.
    pub(crate) fn wire(&self) -> Option<Wire> {
        self.inner.wire
    }

    /// Puts `context` (the target URI, ...) in front of the message, so
    /// what an inner service said is kept: `context: message`.
    pub(crate) fn context(mut self, context: impl fmt::Display) -> Self {
        let message = match self.inner.message.take() {
            Some(message) => format!("{context}: {message}"),
            None => context.to_string(),
        };
        self.inner.message = Some(message.into());
        self.changed();
        self
    }

    /// Sets the error's cause, its `source()` (an h2 or I/O error, ...).
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        let source: Arc<dyn std::error::Error + Send + Sync> = Arc::from(source.into());
        self.inner.wire = Wire::of(&*source);
        self.inner.source = Some(source);
        self.changed();
        self
    }

    pub(crate) fn with_request<R: Send + 'static>(mut self, request: R) -> Self {
        self.inner.request = Some(Mutex::new(Box::new(request)));
        self
    }

    /// Marks a `Refused` error as not to be replayed: the server's `GOAWAY`
    /// blamed the client, and this request may be the cause.
    pub(crate) fn blamed(mut self) -> Self {
        self.inner.blamed = true;
        self
    }

    /// The `GOAWAY` blamed the connection's keepalive `PING`s, not this
    /// request: it may be replayed after all.
    pub(crate) fn clear_blame(&mut self) {
        self.inner.blamed = false;
    }

    pub(crate) fn is_blamed(&self) -> bool {
        self.inner.blamed
    }

    pub(crate) fn set_kind(&mut self, kind: ErrorKind) {
        self.inner.kind = kind;
        self.changed();
    }

    /// What a connection service returns when it did not send `request` at
    /// all (it was closing, or the server had sent `GOAWAY`): an
    /// [`ErrorKind::Draining`] error carrying the request, so that
    /// [`ReplayLayer`](crate::ReplayLayer) (or the caller, with
    /// [`take_request`](Self::take_request)) can send it elsewhere. `request`
    /// is the request the service was called with.
    ///
    /// ```
    /// use tower_max_connection_age::Error;
    ///
    /// let request = http::Request::get("http://svc/").body(()).unwrap();
    /// let mut err = Error::unsent(request);
    /// assert!(err.is_draining() && err.is_unprocessed());
    /// assert!(err.take_request::<http::Request<()>>().is_some());
    /// ```
    pub fn unsent<R: Send + 'static>(request: R) -> Self {
        Error::new(ErrorKind::Draining).with_request(request)
    }

    /// What a connection service returns when the server provably did not
    /// process the request (`REFUSED_STREAM`, or a stream above a
    /// `GOAWAY`'s last-stream-id, RFC 9113 §8.7): an [`ErrorKind::Refused`]
    /// error carrying the request's head, from which
    /// [`ReplayLayer`](crate::ReplayLayer) rebuilds the request with the body
    /// it recorded. Give only a provable refusal: it is replayed whatever
    /// the method.
    pub fn refused(head: http::Request<()>) -> Self {
        Error::new(ErrorKind::Refused).with_request(head)
    }

    /// An [`ErrorKind::Config`] error with a message naming the bad setting.
    pub fn config(message: impl Into<Cow<'static, str>>) -> Self {
        Error::new(ErrorKind::Config).with_message(message)
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }

    /// The connection was draining and gave the request back unsent.
    pub fn is_draining(&self) -> bool {
        self.kind() == ErrorKind::Draining
    }

    /// No endpoint became ready within `ready_timeout`.
    pub fn is_no_ready_endpoint(&self) -> bool {
        self.kind() == ErrorKind::NoReadyEndpoint
    }

    /// The request was cut when its connection was closed after the drain timeout.
    pub fn is_force_closed(&self) -> bool {
        self.kind() == ErrorKind::ForceClosed
    }

    /// The request was cut because its connection's peer stopped answering
    /// keepalive `PING`s.
    pub fn is_keep_alive(&self) -> bool {
        self.kind() == ErrorKind::KeepAlive
    }

    /// The server provably did not process the request, but it was not replayed.
    pub fn is_refused(&self) -> bool {
        self.kind() == ErrorKind::Refused
    }

    /// A builder rejected its configuration.
    pub fn is_config(&self) -> bool {
        self.kind() == ErrorKind::Config
    }

    /// Opening a connection failed.
    pub fn is_connect(&self) -> bool {
        self.kind() == ErrorKind::Connect
    }

    /// Resolving the endpoints failed.
    pub fn is_resolve(&self) -> bool {
        self.kind() == ErrorKind::Resolve
    }

    /// No response came before the request's deadline.
    pub fn is_timeout(&self) -> bool {
        self.kind() == ErrorKind::Timeout
    }

    /// True when the server provably did not process the request, so sending it
    /// again cannot run it twice.
    pub fn is_unprocessed(&self) -> bool {
        matches!(
            self.kind(),
            ErrorKind::Draining | ErrorKind::Refused | ErrorKind::NoReadyEndpoint
        )
    }

    /// Takes back the request this error carries, if it carries one of type `R`.
    ///
    /// Requests come back with [`ErrorKind::Draining`] errors: they were never
    /// written to the connection. `R` is the request type the failing service
    /// was called with.
    pub fn take_request<R: 'static>(&mut self) -> Option<R> {
        let slot = self.inner.request.take()?;
        let boxed = slot
            .into_inner()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match boxed.downcast::<R>() {
            Ok(request) => Some(*request),
            Err(other) => {
                self.inner.request = Some(Mutex::new(other));
                None
            }
        }
    }

    /// True when this error still carries the request it failed to send.
    pub fn has_request(&self) -> bool {
        self.inner.request.is_some()
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.inner.kind);
        if let Some(message) = &self.inner.message {
            d.field("message", message);
        }
        if let Some(source) = &self.inner.source {
            d.field("source", source);
        }
        d.field("has_request", &self.inner.request.is_some());
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.inner.kind.describe())?;
        if let Some(message) = &self.inner.message {
            write!(f, ": {message}")?;
        }
        Ok(())
    }
}

/// With the `tonic` feature the first source is the `tonic::Status`
/// this error maps to (whose own source is the cause), so that tonic's
/// `Status::from_error` finds it; see the `grpc` module.
impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        #[cfg(feature = "tonic")]
        if let Some(status) = self.inner.status.get_or_init(|| self.grpc_status()) {
            return Some(status);
        }
        self.cause()
    }
}

/// `error` and all its sources, `a: b: c`, for log lines (an error's own
/// `Display` leaves its causes out).
pub(crate) fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cur = error.source();
    while let Some(e) = cur {
        // The status the `tonic` feature puts after each of our errors says
        // what the error said already.
        #[cfg(feature = "tonic")]
        if e.is::<tonic::Status>() {
            cur = e.source();
            continue;
        }
        text.push_str(": ");
        text.push_str(&e.to_string());
        cur = e.source();
    }
    text
}

/// Turns any boxed error into this crate's [`Error`], keeping ours as they are.
pub(crate) fn from_box(err: BoxError, kind: ErrorKind) -> Error {
    match err.downcast::<Error>() {
        Ok(ours) => *ours,
        Err(other) => Error::new(kind).with_source(other),
    }
}

#[cfg(feature = "tonic")]
impl Error {
    /// The gRPC status this error maps to (the `grpc` module's table), with
    /// its cause as the status's source.
    pub(crate) fn grpc_status(&self) -> Option<tonic::Status> {
        use tonic::Code;
        let code = match self.kind() {
            ErrorKind::NoReadyEndpoint
            | ErrorKind::Connect
            | ErrorKind::Resolve
            | ErrorKind::Draining
            | ErrorKind::Refused
            | ErrorKind::ForceClosed
            | ErrorKind::KeepAlive => Code::Unavailable,
            ErrorKind::Timeout => Code::Cancelled,
            ErrorKind::Request => self.wire().and_then(grpc_code)?,
            ErrorKind::Config => return None,
            #[allow(unreachable_patterns)]
            _ => return None,
        };
        let mut status = tonic::Status::new(code, self.to_string());
        if let Some(cause) = &self.inner.source {
            status.set_source(cause.clone());
        }
        Some(status)
    }
}

/// A request that failed on the wire: by the HTTP/2 error code that ended
/// it, `UNAVAILABLE` when the connection broke.
#[cfg(feature = "tonic")]
fn grpc_code(wire: Wire) -> Option<tonic::Code> {
    match wire.reason {
        Some(reason) => Some(code_of(reason)),
        None => wire.io.then_some(tonic::Code::Unavailable),
    }
}

#[cfg(feature = "tonic")]
/// gRPC's mapping of HTTP/2 error codes (PROTOCOL-HTTP2.md, "Errors"),
/// as tonic's.
fn code_of(reason: h2::Reason) -> tonic::Code {
    use tonic::Code;
    match reason {
        h2::Reason::REFUSED_STREAM => Code::Unavailable,
        h2::Reason::CANCEL => Code::Cancelled,
        h2::Reason::ENHANCE_YOUR_CALM => Code::ResourceExhausted,
        h2::Reason::INADEQUATE_SECURITY => Code::PermissionDenied,
        h2::Reason::NO_ERROR
        | h2::Reason::PROTOCOL_ERROR
        | h2::Reason::INTERNAL_ERROR
        | h2::Reason::FLOW_CONTROL_ERROR
        | h2::Reason::SETTINGS_TIMEOUT
        | h2::Reason::COMPRESSION_ERROR
        | h2::Reason::CONNECT_ERROR => Code::Internal,
        _ => Code::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trips_through_a_box() {
        let err = Error::new(ErrorKind::Draining).with_request(String::from("req"));
        let boxed: BoxError = Box::new(err);
        let mut back = from_box(boxed, ErrorKind::Request);
        assert!(back.is_draining());
        assert_eq!(back.take_request::<u32>(), None);
        assert!(
            back.has_request(),
            "a wrong type must leave the request in place"
        );
        assert_eq!(back.take_request::<String>().as_deref(), Some("req"));
        assert!(!back.has_request());
    }

    #[test]
    fn context_keeps_the_inner_message() {
        let inner = Error::new(ErrorKind::Connect).with_message("TLS handshake failed");
        let err = from_box(Box::new(inner), ErrorKind::Request).context("https://10.0.0.1:443/");
        assert!(err.is_connect());
        assert_eq!(
            err.to_string(),
            "connect failed: https://10.0.0.1:443/: TLS handshake failed"
        );
        let bare = Error::new(ErrorKind::Connect).context("https://10.0.0.1:443/");
        assert_eq!(bare.to_string(), "connect failed: https://10.0.0.1:443/");
    }

    #[test]
    fn foreign_errors_are_wrapped_with_their_source() {
        let io = std::io::Error::other("boom");
        let err = from_box(Box::new(io), ErrorKind::Connect);
        assert!(err.is_connect());
        assert_eq!(err.cause().unwrap().to_string(), "boom");
    }
}
