//! [`Http2Body`]: a response body read straight from h2.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};

/// The body of a response from an [`Http2Connection`](super::Http2Connection):
/// h2's receive stream, giving back flow-control window as it is read so
/// the server can keep sending. Dropping it before its end resets the stream.
pub struct Http2Body {
    /// `None` for [`Default`]'s empty body.
    recv: Option<h2::RecvStream>,
    /// Bytes the `content-length` header says are still to come.
    remaining: Option<u64>,
    state: State,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Data,
    Trailers,
    Done,
}

impl Http2Body {
    pub(crate) fn new(recv: h2::RecvStream, headers: &HeaderMap) -> Self {
        let remaining = headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        Http2Body {
            recv: Some(recv),
            remaining,
            state: State::Data,
        }
    }
}

/// An empty body, already ended, as middleware that answers by itself needs
/// (tower-http's `Timeout` answers 408 with `ResBody::default()`).
impl Default for Http2Body {
    fn default() -> Self {
        Http2Body {
            recv: None,
            remaining: Some(0),
            state: State::Done,
        }
    }
}

impl Body for Http2Body {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        let this = &mut *self;
        let Some(recv) = &mut this.recv else {
            return Poll::Ready(None);
        };
        while this.state == State::Data {
            match ready!(recv.poll_data(cx)) {
                // An empty DATA frame (often the one that ends the stream)
                // carries nothing for the reader.
                Some(Ok(data)) if data.is_empty() => {}
                Some(Ok(data)) => {
                    let _ = recv.flow_control().release_capacity(data.len());
                    if let Some(remaining) = &mut this.remaining {
                        *remaining = remaining.saturating_sub(data.len() as u64);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => {
                    this.state = State::Done;
                    return Poll::Ready(Some(Err(e)));
                }
                None => this.state = State::Trailers,
            }
        }
        if this.state == State::Trailers {
            let trailers = ready!(recv.poll_trailers(cx));
            this.state = State::Done;
            return Poll::Ready(match trailers {
                Ok(Some(trailers)) => Some(Ok(Frame::trailers(trailers))),
                Ok(None) => None,
                Err(e) => Some(Err(e)),
            });
        }
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        self.state == State::Done || self.recv.as_ref().is_none_or(h2::RecvStream::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        match (self.state, self.remaining) {
            (State::Done, _) => SizeHint::with_exact(0),
            (_, Some(remaining)) => SizeHint::with_exact(remaining),
            (_, None) => SizeHint::default(),
        }
    }
}

impl std::fmt::Debug for Http2Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http2Body")
            .field(
                "stream_id",
                &self.recv.as_ref().map(h2::RecvStream::stream_id),
            )
            .finish()
    }
}
