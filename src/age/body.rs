//! [`ResponseBody`]: keeps a request counted in flight until its body ends.

use std::pin::Pin;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::state::InFlight;

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
    pub(crate) fn new(inner: B, in_flight: InFlight) -> Self {
        let in_flight = (!has_ended(&inner)).then_some(in_flight);
        ResponseBody { inner, in_flight }
    }

    /// The wrapped body.
    pub fn into_inner(self) -> B {
        self.inner
    }
}

/// True when `body` has ended. `is_end_stream` on hyper's HTTP/2 body takes
/// h2's connection-wide lock (contended with the connection task), so the
/// lock-free size hint is asked first: only a body with no bytes left can
/// have ended. A body that says nothing about its size is seen to end at its
/// next poll (or drop) instead.
#[inline]
fn has_ended<B: Body>(body: &B) -> bool {
    body.size_hint().upper() == Some(0) && body.is_end_stream()
}

impl<B: Body> Body for ResponseBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let mut inner = this.inner;
        let frame = inner.as_mut().poll_frame(cx);
        match &frame {
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => *this.in_flight = None,
            Poll::Ready(Some(Ok(_))) if has_ended(&*inner) => *this.in_flight = None,
            _ => {}
        }
        frame
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
