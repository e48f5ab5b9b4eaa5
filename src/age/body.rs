//! [`ResponseBody`]: keeps a request counted in flight until its body ends.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::balancing::InFlight;
use crate::error::{BoxError, Error, ErrorKind};

pin_project! {
    /// A response body that keeps its request counted on its connection
    /// (for draining and for the load) until the body has ended, failed or
    /// been dropped.
    pub struct ResponseBody<B> {
        #[pin]
        inner: B,
        in_flight: Option<InFlight>,
    }
}

impl<B: Body> ResponseBody<B> {
    pub(crate) fn new(inner: B, mut in_flight: InFlight) -> Self {
        let in_flight = if has_ended(&inner) {
            // No trailers can come now.
            in_flight.record_trailers(None);
            None
        } else {
            Some(in_flight)
        };
        ResponseBody { inner, in_flight }
    }

    /// The wrapped body.
    pub fn into_inner(self) -> B {
        self.inner
    }
}

/// True when `body` has ended before it was read (a response without a
/// body). `is_end_stream` on an HTTP/2 body takes h2's connection-wide lock
/// (contended with the connection task), so the lock-free size hint is
/// asked first: only a body with no bytes left can have ended.
#[inline]
fn has_ended<B: Body>(body: &B) -> bool {
    body.size_hint().upper() == Some(0) && body.is_end_stream()
}

/// An empty body not counted on any connection, for middleware that
/// answers by itself (tower-http's `Timeout`).
impl<B: Default> Default for ResponseBody<B> {
    fn default() -> Self {
        ResponseBody {
            inner: B::default(),
            in_flight: None,
        }
    }
}

/// A body that fails (its stream reset, its connection lost or closed by
/// force) fails with this crate's [`Error`], sorted as a failed request is
/// (`KeepAlive`, `ForceClosed`, or `Request` with what the wire said), so
/// that with the `tonic` feature a transport lost midway reaches tonic as
/// `UNAVAILABLE`; the body's own error is its source.
impl<B> Body for ResponseBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        // The request ends with the body's end (or error), or when the body
        // is dropped. Not asked after every frame: on an HTTP/2 body that
        // takes h2's connection lock once more per response, and a reader
        // that stops after the last frame drops the body anyway.
        // A gRPC response is judged by its trailers (read in place, no
        // allocation); one that ends or fails without them by their absence.
        let this = self.project();
        match ready!(this.inner.poll_frame(cx)) {
            Some(Ok(frame)) => {
                if let Some(in_flight) = this.in_flight {
                    in_flight.record_frame();
                    if let Some(trailers) = frame.trailers_ref() {
                        in_flight.record_trailers(Some(trailers));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            None => {
                if let Some(mut in_flight) = this.in_flight.take() {
                    in_flight.record_trailers(None);
                }
                Poll::Ready(None)
            }
            Some(Err(e)) => Poll::Ready(Some(Err(failed(e.into(), this.in_flight.take())))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> std::fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody")
            .field("in_flight", &self.in_flight.is_some())
            .finish()
    }
}

/// A body's failure as this crate's error, sorted by the request's
/// connection when it is still counted. Out of line: rare.
#[cold]
#[inline(never)]
fn failed(e: BoxError, in_flight: Option<InFlight>) -> Error {
    let error = crate::error::from_box(e, ErrorKind::Request);
    match in_flight {
        Some(mut in_flight) => {
            in_flight.record_trailers(None);
            in_flight.failed(error)
        }
        None => error,
    }
}
