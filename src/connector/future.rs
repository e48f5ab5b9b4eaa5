//! [`ResponseFuture`]: one request on an [`Http2Connection`](super::Http2Connection).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::request::Parts;
use http::{Request, Response};
use http_body::Body;

use super::body::Http2Body;
use super::pipe::Pipe;
use crate::error::{BoxError, Error, ErrorKind};
use crate::outcome::{Stage, Verdict, classify};

/// Waits for the response headers in the caller's task, writing the request
/// body meanwhile. (hyper hands each request to its dispatch task, which
/// spawns one more task per request to wait for the response; here the
/// caller's task is woken by h2 directly.) A body still being written when
/// the response arrives (a bidirectional stream) goes on in a task of its
/// own.
///
/// A request the server provably did not process fails as
/// [`ErrorKind::Refused`] carrying its head, `Request<()>` (take it with
/// [`Error::take_request`]), so it can be sent again without a copy kept
/// for every request.
pub struct ResponseFuture<B> {
    response: h2::client::ResponseFuture,
    pipe: Option<Pipe<B>>,
    /// The request's own head (h2 sent a copy), until the response arrives.
    head: Option<Parts>,
    /// Why the body could not be written, for the caller if the stream fails.
    body_error: Option<Error>,
}

impl<B> ResponseFuture<B> {
    pub(crate) fn new(
        response: h2::client::ResponseFuture,
        pipe: Option<Pipe<B>>,
        head: Parts,
    ) -> Self {
        ResponseFuture {
            response,
            pipe,
            head: Some(head),
            body_error: None,
        }
    }
}

/// A failed stream as this crate's error: `Refused` when the server
/// provably did not process it (see [`classify`]), and
/// marked blamed (not to be replayed) when the server's `GOAWAY` blamed the
/// client.
pub(crate) fn stream_error(e: h2::Error) -> Error {
    sorted(classify(&e, Stage::Stream), e)
}

/// A failed stream's [`Verdict`] as this crate's error, with `source` (the
/// h2 error, or an error that wraps one, as hyper's does).
pub(crate) fn sorted(verdict: Verdict, e: impl Into<BoxError>) -> Error {
    match verdict {
        Verdict::Unprocessed => Error::new(ErrorKind::Refused).with_source(e),
        Verdict::UnprocessedBlamed(reason) => Error::new(ErrorKind::Refused)
            .with_message(format!(
                "the server sent GOAWAY({reason:?}): this request, or one sent with it on the \
                 same connection, broke a server limit; not replayed, so one request costs at \
                 most one connection"
            ))
            .with_source(e)
            .blamed(),
        _ => Error::new(ErrorKind::Request).with_source(e),
    }
}

impl<B> Future for ResponseFuture<B>
where
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Output = Result<Response<Http2Body>, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if let Some(pipe) = &mut this.pipe
            && let Poll::Ready(written) = Pin::new(pipe).poll(cx)
        {
            this.pipe = None;
            // The stream was reset or failed: its response (an error now)
            // says whether the server processed the request.
            this.body_error = written.err();
        }
        match Pin::new(&mut this.response).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(response)) => {
                if let Some(pipe) = this.pipe.take() {
                    tokio::spawn(async move {
                        if let Err(e) = pipe.await {
                            tracing::debug!(error = %e, "request body not written");
                        }
                    });
                }
                let (parts, recv) = response.into_parts();
                let body = Http2Body::new(recv, &parts.headers);
                Poll::Ready(Ok(Response::from_parts(parts, body)))
            }
            Poll::Ready(Err(e)) => {
                // Drop the body now: a replayable one hands back what it sent.
                this.pipe = None;
                let error = stream_error(e);
                Poll::Ready(Err(match (error.kind(), this.head.take()) {
                    (ErrorKind::Refused, Some(head)) => {
                        error.with_request(Request::from_parts(head, ()))
                    }
                    (ErrorKind::Refused, None) => error,
                    _ => this.body_error.take().unwrap_or(error),
                }))
            }
        }
    }
}

impl<B> std::fmt::Debug for ResponseFuture<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("stream_id", &self.response.stream_id())
            .field("writing_body", &self.pipe.is_some())
            .finish()
    }
}
