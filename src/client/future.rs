//! The response future of [`Client`]'s requests.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;
use hyper::client::conn::TrySendError;
use pin_project_lite::pin_project;

use super::{Client, First, ResponseFuture};
use crate::age::ResponseBody;
use crate::age::state::InFlight;
use crate::error::{BoxError, Error};
use crate::replay::{ReplayBody, Replayer};

pin_project! {
    /// A request handed to hyper on one connection. One poll does what a
    /// stack of adapters would: counts the request in flight, samples the
    /// RTT, sorts hyper's error, and, on an error the client may replay,
    /// hands over to the boxed slow path, which most requests never build.
    /// (Each adapter would move hyper's large `Result` once more.)
    pub(super) struct Sent<F, B> {
        #[pin]
        sent: F,
        in_flight: Option<InFlight>,
        retry: Option<Retry<B>>,
        slow: Option<ResponseFuture>,
    }
}

/// What the slow path needs to replay the request.
pub(super) struct Retry<B> {
    pub(super) client: Client<B>,
    pub(super) replayer: Replayer<B>,
    /// The connection the request went to.
    pub(super) used: usize,
}

impl<F, B> Sent<F, B> {
    /// `retry`: `None` gives errors straight to the caller (the slow path's
    /// own attempts, which loop themselves).
    pub(super) fn new(sent: F, in_flight: InFlight, retry: Option<Retry<B>>) -> Self {
        Sent {
            sent,
            in_flight: Some(in_flight),
            retry,
            slow: None,
        }
    }
}

impl<F, B> Future for Sent<F, B>
where
    F: Future<Output = Result<Response<Incoming>, TrySendError<Request<ReplayBody<B>>>>>,
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Output = Result<Response<ResponseBody<Incoming>>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Some(slow) = this.slow {
            return slow.as_mut().poll(cx);
        }
        let result = ready!(this.sent.poll(cx));
        let in_flight = this.in_flight.take().expect("Sent polled after completion");
        match result {
            Ok(response) => {
                in_flight.record_response();
                Poll::Ready(Ok(response.map(|body| ResponseBody::new(body, in_flight))))
            }
            Err(error) => match failed(error, in_flight, this.retry.take()) {
                Ok(slow) => this.slow.insert(slow).as_mut().poll(cx),
                Err(error) => Poll::Ready(Err(error)),
            },
        }
    }
}

/// Sorts a failed attempt's error and, when the client may replay it,
/// builds the slow path. Kept out of line, so that the few instructions
/// every request runs in [`Sent::poll`] share cache lines with no error
/// handling (most of a request's time at low load is spent fetching cold
/// code).
#[cold]
#[inline(never)]
fn failed<B>(
    error: TrySendError<Request<ReplayBody<B>>>,
    in_flight: InFlight,
    retry: Option<Retry<B>>,
) -> Result<ResponseFuture, Error>
where
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<BoxError>,
{
    let error = crate::age::classify(crate::connector::classify(error), in_flight.state());
    drop(in_flight);
    match retry {
        Some(Retry {
            client,
            replayer,
            used,
        }) => Ok(Box::pin(
            client.send_slow(replayer, First::Failed(error, used)),
        )),
        None => Err(error),
    }
}
