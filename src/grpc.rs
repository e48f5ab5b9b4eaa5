//! gRPC status codes for this crate's errors (feature `tonic`).
//!
//! tonic turns a transport's error into a `Status` with
//! `Status::from_error`, which looks for a `Status` along the error's
//! `source()` chain and says `UNKNOWN` when it finds none. So with this
//! feature an [`Error`]'s first source is the `Status` it maps to (whose
//! own source is the error's cause), and a tonic client over
//! [`Client`](crate::Client) sees the codes that retry policies and
//! `tonic::Code` matches expect, as with tonic's own `Channel`:
//!
//! | [`ErrorKind`](crate::ErrorKind) | gRPC code | why |
//! |---|---|---|
//! | `NoReadyEndpoint`, `Connect`, `Resolve` | `UNAVAILABLE` | no connection could take the call (gRPC: "most likely a transient condition") |
//! | `Draining`, `Refused` | `UNAVAILABLE` | the server did not process the call: safe to retry |
//! | `ForceClosed`, `KeepAlive` | `UNAVAILABLE` | the connection was closed under the call, as grpc-go and tonic report a lost connection or an unanswered keepalive `PING` |
//! | `Timeout` | `CANCELLED` | the call's deadline (`grpc-timeout` or the client's `timeout`) passed; tonic's `Channel` says `CANCELLED` too (grpc-go says `DEADLINE_EXCEEDED`) |
//! | `Request`, from a stream reset or `GOAWAY` | by its HTTP/2 code, as gRPC's PROTOCOL-HTTP2.md and tonic map them: `REFUSED_STREAM` `UNAVAILABLE`, `CANCEL` `CANCELLED`, `ENHANCE_YOUR_CALM` `RESOURCE_EXHAUSTED`, `INADEQUATE_SECURITY` `PERMISSION_DENIED`, other codes `INTERNAL` |
//! | `Request`, from an I/O error | `UNAVAILABLE` | the connection broke |
//! | `Config`, and other `Request` errors | none: tonic goes on down the chain (`UNKNOWN` if it finds nothing) |
//!
//! ```
//! use tower_max_connection_age::{Error, ErrorKind};
//!
//! let request = http::Request::get("http://svc/").body(()).unwrap();
//! let status = tonic::Status::from_error(Box::new(Error::unsent(request)));
//! assert_eq!(status.code(), tonic::Code::Unavailable);
//! ```
//!
//! A consequence to know: with this feature on, `std::error::Error::source`
//! of an [`Error`] that maps is the `Status`, one step before the cause;
//! walk the chain (as you would anyway) rather than read only the first
//! source.

use tonic::Status;

use crate::error::Error;

/// For a handler that returns this crate's errors as statuses itself: the
/// mapped status, or `UNKNOWN` with the error as its source.
impl From<Error> for Status {
    fn from(error: Error) -> Status {
        match error.grpc_status() {
            Some(status) => status,
            None => {
                let mut status = Status::unknown(error.to_string());
                status.set_source(std::sync::Arc::new(error));
                status
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use tonic::Code;

    #[test]
    fn every_kind_that_means_unavailable_maps_to_it() {
        for kind in [
            ErrorKind::NoReadyEndpoint,
            ErrorKind::Connect,
            ErrorKind::Resolve,
            ErrorKind::Draining,
            ErrorKind::Refused,
            ErrorKind::ForceClosed,
            ErrorKind::KeepAlive,
        ] {
            let status = Status::from_error(Box::new(Error::new(kind)));
            assert_eq!(status.code(), Code::Unavailable, "{kind:?}");
        }
        let timeout = Status::from_error(Box::new(Error::new(ErrorKind::Timeout)));
        assert_eq!(timeout.code(), Code::Cancelled);
        let config = Status::from_error(Box::new(Error::config("bad")));
        assert_eq!(config.code(), Code::Unknown);
    }

    #[test]
    fn the_cause_stays_in_the_chain_behind_the_status() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        let error = Error::new(ErrorKind::Request).with_source(io);
        let status = std::error::Error::source(&error)
            .and_then(|s| s.downcast_ref::<Status>())
            .expect("the status comes first");
        assert_eq!(status.code(), Code::Unavailable);
        let cause = std::error::Error::source(status).expect("the cause follows");
        assert!(cause.is::<std::io::Error>());
        assert!(error.cause().unwrap().is::<std::io::Error>());
    }

    #[test]
    fn a_reset_maps_by_its_http2_code() {
        for (reason, code) in [
            (h2::Reason::CANCEL, Code::Cancelled),
            (h2::Reason::REFUSED_STREAM, Code::Unavailable),
            (h2::Reason::ENHANCE_YOUR_CALM, Code::ResourceExhausted),
            (h2::Reason::INTERNAL_ERROR, Code::Internal),
        ] {
            let error = Error::new(ErrorKind::Request).with_source(h2::Error::from(reason));
            assert_eq!(
                Status::from_error(Box::new(error)).code(),
                code,
                "{reason:?}"
            );
        }
    }
}
