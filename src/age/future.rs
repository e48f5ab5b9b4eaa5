//! [`ResponseFuture`]: the response future of [`AgedConnection`](super::AgedConnection).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::Response;
use pin_project_lite::pin_project;

use super::balancing::InFlight;
use super::body::ResponseBody;
use super::settle::answered;
use crate::error::{self, BoxError, Error, ErrorKind};

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
                    Ok(response) => Ok(answered(response, in_flight)),
                    Err(e) => Err(in_flight.failed(error::from_box(e.into(), ErrorKind::Request))),
                })
            }
        }
    }
}
