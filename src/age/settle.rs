//! How a request sent on an aged connection is settled, in one place for
//! both send paths ([`AgedConnection`](super::AgedConnection)'s
//! `Service::call`, and [`Client`](crate::Client)'s pick, which sends on
//! the connection it picked without `&mut`): a response is recorded and its
//! body counted until it ends; an error teaches the connection what it
//! says.

use http::Response;

use super::body::ResponseBody;
use super::state::{DrainReason, InFlight};
use crate::error::{Error, ErrorKind};
use crate::outcome::blames_pings;

/// The response came: its time is a load sample, what it says about the pod
/// (see [`crate::classify`]) goes to the load and outlier detection, and the
/// request stays in flight until its body ends.
#[inline]
pub(crate) fn answered<B: http_body::Body>(
    response: Response<B>,
    mut in_flight: InFlight,
) -> Response<ResponseBody<B>> {
    in_flight.record_response(response.status(), response.headers());
    response.map(|body| ResponseBody::new(body, in_flight))
}

/// Lets the connection learn from a failed request: a `GOAWAY` means it takes
/// no more requests, a request cut by our own force-close or by a keepalive
/// timeout says so, and one the server provably did not process is no
/// failure of the connection's.
pub(crate) fn classify(mut err: Error, in_flight: &mut InFlight) -> Error {
    let state = in_flight.state().clone();
    let state = &state;
    let wire = err.wire().unwrap_or_default();
    if wire.remote_go_away {
        state.start_draining(DrainReason::GoAway);
    } else if err.is_draining() {
        state.start_draining(DrainReason::Closed);
    }
    // grpc-go answers pings it finds too frequent with
    // GOAWAY(ENHANCE_YOUR_CALM, "too_many_pings"): on a connection that sent
    // keepalive pings, that code blames the pings, not the request.
    if err.is_blamed() && blames_pings(wire.reason, state.handle.pinged()) {
        err.clear_blame();
    }
    if err.is_unprocessed() {
        in_flight.set_unprocessed();
    }
    if err.kind() == ErrorKind::Request {
        if state.handle.keep_alive_timed_out() {
            err.set_kind(ErrorKind::KeepAlive);
        } else if state.handle.was_forced() {
            err.set_kind(ErrorKind::ForceClosed);
        }
    }
    err
}
