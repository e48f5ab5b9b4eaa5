//! [`ResponseFuture`]: the response future of [`AgedConnection`](super::AgedConnection).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::Response;
use pin_project_lite::pin_project;

use super::body::ResponseBody;
use super::state::{DrainReason, InFlight};
use crate::error::{self, BoxError, Error, ErrorKind};
use crate::outcome::blames_pings;

pin_project! {
    /// The response future of an [`AgedConnection`](super::AgedConnection).
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Sent { #[pin] future: F, in_flight: Option<InFlight> },
        Rejected { error: Option<Error> },
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn sent(future: F, in_flight: InFlight) -> Self {
        ResponseFuture {
            kind: Kind::Sent {
                future,
                in_flight: Some(in_flight),
            },
        }
    }

    pub(crate) fn rejected(error: Error) -> Self {
        ResponseFuture {
            kind: Kind::Rejected { error: Some(error) },
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: http_body::Body,
    E: Into<BoxError>,
{
    type Output = Result<Response<ResponseBody<B>>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Rejected { error } => Poll::Ready(Err(error
                .take()
                .expect("ResponseFuture polled after completion"))),
            KindProj::Sent { future, in_flight } => {
                let result = ready!(future.poll(cx));
                let mut in_flight = in_flight
                    .take()
                    .expect("ResponseFuture polled after completion");
                Poll::Ready(match result {
                    Ok(response) => {
                        in_flight.record_response();
                        Ok(response.map(|body| ResponseBody::new(body, in_flight)))
                    }
                    Err(e) => Err(classify(
                        error::from_box(e.into(), ErrorKind::Request),
                        &mut in_flight,
                    )),
                })
            }
        }
    }
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
