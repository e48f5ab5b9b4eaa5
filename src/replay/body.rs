//! [`ReplayBody`]: a request body that can be sent again.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::oneshot;

/// A request body that remembers what it sent, up to a limit, so the request
/// can be replayed when the server provably did not process it.
///
/// The body needs no `Clone` bound: when hyper drops it (the stream was
/// refused), it hands back what it sent plus the part of the original body it
/// had not read yet. Requests whose body was read past the limit are not
/// replayed.
pub struct ReplayBody<B> {
    /// What is left of the caller's body.
    rest: Option<B>,
    /// Boxed, so the common case (no replay, empty body) stays as small as `B`.
    replay: Option<Box<Replay>>,
    tap: Option<Box<Tap<B>>>,
}

/// What a replay sends before the rest of the caller's body.
#[derive(Default)]
struct Replay {
    chunks: VecDeque<Bytes>,
    trailers: Option<HeaderMap>,
}

/// Records what a body sent and hands it back when the body is dropped.
struct Tap<B> {
    sent: Vec<Bytes>,
    len: usize,
    limit: usize,
    overflow: bool,
    trailers: Option<HeaderMap>,
    back: Option<oneshot::Sender<Returned<B>>>,
}

/// What a tapped body hands back when hyper drops it.
pub(crate) struct Returned<B> {
    /// `None` when more than the limit was sent.
    sent: Option<Vec<Bytes>>,
    unsent: VecDeque<Bytes>,
    trailers: Option<HeaderMap>,
    rest: Option<B>,
}

impl<B: Body<Data = Bytes> + Unpin> ReplayBody<B> {
    /// Wraps `body` without recording it: it can only be resent while unsent.
    pub fn new(body: B) -> Self {
        ReplayBody {
            rest: Some(body),
            replay: None,
            tap: None,
        }
    }

    /// Wraps `body`, recording up to `limit` bytes of it. The receiver gets
    /// what was sent once hyper drops the body. An empty body needs no tap.
    pub(crate) fn tapped(body: B, limit: usize) -> (Self, Option<oneshot::Receiver<Returned<B>>>) {
        let mut this = ReplayBody::new(body);
        if this.is_end_stream() {
            return (this, None);
        }
        let (tx, rx) = oneshot::channel();
        this.tap = Some(Box::new(Tap {
            sent: Vec::new(),
            len: 0,
            limit,
            overflow: false,
            trailers: None,
            back: Some(tx),
        }));
        (this, Some(rx))
    }

    /// An empty body: the replay of a request whose body was empty.
    pub(crate) fn empty() -> Self {
        ReplayBody {
            rest: None,
            replay: None,
            tap: None,
        }
    }

    /// Rebuilds the body from what a tapped body handed back; `None` when it
    /// sent more than its limit.
    pub(crate) fn from_returned(returned: Returned<B>) -> Option<Self> {
        let mut chunks: VecDeque<Bytes> = returned.sent?.into();
        chunks.extend(returned.unsent);
        Some(ReplayBody {
            rest: returned.rest,
            replay: Some(Box::new(Replay {
                chunks,
                trailers: returned.trailers,
            })),
            tap: None,
        })
    }
}

impl<B> Tap<B> {
    fn record(&mut self, chunk: &Bytes) {
        if self.overflow {
            return;
        }
        self.len += chunk.len();
        if self.len > self.limit {
            self.overflow = true;
            self.sent = Vec::new();
        } else {
            self.sent.push(chunk.clone());
        }
    }
}

impl<B> Drop for ReplayBody<B> {
    fn drop(&mut self) {
        if let Some(mut tap) = self.tap.take()
            && let Some(back) = tap.back.take()
        {
            let replay = self.replay.take().map(|r| *r).unwrap_or_default();
            let _ = back.send(Returned {
                sent: (!tap.overflow).then(|| std::mem::take(&mut tap.sent)),
                unsent: replay.chunks,
                trailers: tap.trailers.take().or(replay.trailers),
                rest: self.rest.take(),
            });
        }
    }
}

impl<B> Body for ReplayBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        if let Some(chunk) = this.replay.as_mut().and_then(|r| r.chunks.pop_front()) {
            if let Some(tap) = &mut this.tap {
                tap.record(&chunk);
            }
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if let Some(rest) = &mut this.rest {
            match ready!(Pin::new(rest).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    if let Some(tap) = &mut this.tap {
                        if let Some(chunk) = frame.data_ref() {
                            tap.record(chunk);
                        } else if let Some(trailers) = frame.trailers_ref() {
                            tap.trailers = Some(trailers.clone());
                        }
                    }
                    return Poll::Ready(Some(Ok(frame)));
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => this.rest = None,
            }
        }
        if let Some(trailers) = this.replay.as_mut().and_then(|r| r.trailers.take()) {
            if let Some(tap) = &mut this.tap {
                tap.trailers = Some(trailers.clone());
            }
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        self.replay
            .as_ref()
            .is_none_or(|r| r.chunks.is_empty() && r.trailers.is_none())
            && self.rest.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let buffered: u64 = self
            .replay
            .iter()
            .flat_map(|r| r.chunks.iter())
            .map(|c| c.len() as u64)
            .sum();
        let rest = self
            .rest
            .as_ref()
            .map(|b| b.size_hint())
            .unwrap_or_else(|| SizeHint::with_exact(0));
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + buffered);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + buffered);
        }
        hint
    }
}

impl<B> std::fmt::Debug for ReplayBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayBody")
            .field(
                "replay_chunks",
                &self.replay.as_ref().map_or(0, |r| r.chunks.len()),
            )
            .field("has_rest", &self.rest.is_some())
            .field("tapped", &self.tap.is_some())
            .finish()
    }
}
