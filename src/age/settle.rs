//! How a request sent on an aged connection is settled, in one place for
//! both send paths ([`AgedConnection`](super::AgedConnection)'s
//! `Service::call`, and [`Client`](crate::Client)'s pick, which sends on
//! the connection it picked without `&mut`): a response is recorded and its
//! body counted until it ends; an error teaches the connection what it
//! says ([`InFlight::failed`], also for a body that fails midway).

use http::Response;

use super::balancing::InFlight;
use super::body::ResponseBody;

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
