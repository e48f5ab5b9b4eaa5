//! The response future of [`Client`]'s requests.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::Response;
use http_body::Body;

use super::deadline::Deadline;
use super::{Client, First, SharedConnection};
use crate::age::ResponseBody;
use crate::age::balancing::InFlight;
use crate::connector::Http2Connection;
use crate::error::{BoxError, Error};
use crate::replay::{ReplayBody, Replayer};

/// The boxed slow path: waiting for a connection, replays.
pub(super) type Slow<T> =
    Pin<Box<dyn Future<Output = Result<Response<ResponseBody<T>>, Error>> + Send>>;

/// The future of [`Client`]'s `call`.
///
/// Most requests go out in `call` and this future only waits for the
/// response on its connection: one poll counts the request in flight,
/// samples the RTT and sorts an error, with nothing boxed. A request that
/// fails in a way the client may replay, or finds no connection serving,
/// continues on a boxed slow path, which most requests never build.
pub struct ResponseFuture<B, C = Http2Connection<ReplayBody<B>>>
where
    C: SharedConnection<ReplayBody<B>>,
{
    state: State<B, C>,
    /// The request's `timeout` or `grpc-timeout`, when it has one.
    deadline: Option<Pin<Box<Deadline>>>,
}

// `Sent` is the common state; the others are rare and small.
#[allow(clippy::large_enum_variant)]
enum State<B, C: SharedConnection<ReplayBody<B>>> {
    Sent {
        sent: C::Future,
        in_flight: Option<InFlight>,
        /// `None` gives errors straight to the caller (the slow path's own
        /// attempts, which loop themselves).
        retry: Option<Retry<B, C>>,
    },
    Slow(Slow<C::Body>),
    Failed(Option<Error>),
}

/// What the slow path needs to replay the request.
pub(super) struct Retry<B, C> {
    pub(super) client: Client<B, C>,
    pub(super) replayer: Replayer<B>,
    /// The connection the request went to.
    pub(super) used: usize,
}

impl<B, C> ResponseFuture<B, C>
where
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<BoxError>,
    C: SharedConnection<ReplayBody<B>>,
{
    /// A request handed to a connection (`sent`), or refused by it before
    /// it was sent (`Err`). The deadline is given here rather than by
    /// [`with_deadline`](Self::with_deadline), which would move this future
    /// twice more on every request.
    pub(super) fn sent(
        sent: Result<C::Future, Error>,
        in_flight: InFlight,
        retry: Option<Retry<B, C>>,
        deadline: Option<Pin<Box<Deadline>>>,
    ) -> Self {
        let state = match sent {
            Ok(sent) => State::Sent {
                sent,
                in_flight: Some(in_flight),
                retry,
            },
            Err(error) => match failed(error, in_flight, retry) {
                Ok(slow) => State::Slow(slow),
                Err(error) => State::Failed(Some(error)),
            },
        };
        ResponseFuture { state, deadline }
    }

    pub(super) fn slow(slow: Slow<C::Body>) -> Self {
        ResponseFuture {
            state: State::Slow(slow),
            deadline: None,
        }
    }

    pub(super) fn failed(error: Error) -> Self {
        ResponseFuture {
            state: State::Failed(Some(error)),
            deadline: None,
        }
    }

    /// Fails the request with [`ErrorKind::Timeout`](crate::ErrorKind::Timeout)
    /// once `deadline` passes (dropping its stream, which h2 cancels).
    pub(super) fn with_deadline(mut self, deadline: Option<Pin<Box<Deadline>>>) -> Self {
        self.deadline = deadline;
        self
    }
}

impl<B, C> Future for ResponseFuture<B, C>
where
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<BoxError>,
    C: SharedConnection<ReplayBody<B>>,
{
    type Output = Result<Response<ResponseBody<C::Body>>, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if this.deadline.is_none() {
            // Most requests: the response is returned where it is made,
            // not moved once more through a local.
            return this.poll_response(cx);
        }
        let polled = this.poll_response(cx);
        if polled.is_pending()
            && let Some(deadline) = &mut this.deadline
            && let Poll::Ready(error) = deadline.as_mut().poll_expired(cx)
        {
            // Drops the stream (h2 resets it with CANCEL) and its count.
            this.state = State::Failed(None);
            this.deadline = None;
            return Poll::Ready(Err(error));
        }
        polled
    }
}

impl<B, C> ResponseFuture<B, C>
where
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<BoxError>,
    C: SharedConnection<ReplayBody<B>>,
{
    #[inline]
    fn poll_response(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Response<ResponseBody<C::Body>>, Error>> {
        let this = self;
        let (result, in_flight, retry) = match &mut this.state {
            State::Slow(slow) => return slow.as_mut().poll(cx),
            State::Failed(error) => {
                return Poll::Ready(Err(error.take().expect("polled after completion")));
            }
            State::Sent {
                sent,
                in_flight,
                retry,
            } => (
                ready!(Pin::new(sent).poll(cx)),
                in_flight.take().expect("polled after completion"),
                retry,
            ),
        };
        match result {
            Ok(response) => Poll::Ready(Ok(crate::age::answered(response, in_flight))),
            Err(error) => match failed(error, in_flight, retry.take()) {
                Ok(slow) => this.state.insert_slow(slow).as_mut().poll(cx),
                Err(error) => Poll::Ready(Err(error)),
            },
        }
    }
}

impl<B, C: SharedConnection<ReplayBody<B>>> State<B, C> {
    fn insert_slow(&mut self, slow: Slow<C::Body>) -> &mut Slow<C::Body> {
        *self = State::Slow(slow);
        match self {
            State::Slow(slow) => slow,
            _ => unreachable!("just set"),
        }
    }
}

/// Lets the connection learn from a failed attempt and, when the client may
/// replay it, builds the slow path. Kept out of line, so that the few
/// instructions every request runs share cache lines with no error handling
/// (most of a request's time at low load is spent fetching cold code).
#[cold]
#[inline(never)]
fn failed<B, C>(
    error: Error,
    mut in_flight: InFlight,
    retry: Option<Retry<B, C>>,
) -> Result<Slow<C::Body>, Error>
where
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<BoxError>,
    C: SharedConnection<ReplayBody<B>>,
{
    let error = in_flight.failed(error);
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

impl<B, C: SharedConnection<ReplayBody<B>>> std::fmt::Debug for ResponseFuture<B, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.state {
            State::Sent { .. } => "sent",
            State::Slow(_) => "waiting or replaying",
            State::Failed(_) => "failed",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}
