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
/// The body needs no `Clone` bound: when the connection drops it (the stream
/// was refused), it hands back what it sent plus the part of the original
/// body it had not read yet. Requests whose body was read past the limit are not
/// replayed.
///
/// Empty bodies are not tapped: there is nothing to record.
pub struct ReplayBody<B> {
    /// What is left of the caller's body.
    rest: Option<B>,
    /// Boxed, so the common case (no replay, empty body) stays as small as `B`.
    replay: Option<Box<Replay>>,
    /// Boxed too: the request (body included) is moved several times on
    /// its way to h2, so every byte here is copied on every request, while
    /// only requests with a body carry a tap.
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
    trailers: Option<Box<HeaderMap>>,
    back: Option<oneshot::Sender<Returned<B>>>,
}

/// What a tapped body hands back when the connection drops it.
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
    /// what was sent and what was not, once the connection drops it.
    /// An empty body needs no tap: `None`.
    pub(crate) fn tapped(body: B, limit: usize) -> (Self, Option<oneshot::Receiver<Returned<B>>>) {
        ReplayBody::new(body).tap(limit)
    }

    /// Starts recording this body (again, for a replay that may be refused too).
    pub(crate) fn tap(mut self, limit: usize) -> (Self, Option<oneshot::Receiver<Returned<B>>>) {
        if self.is_end_stream() {
            return (self, None);
        }
        let (tx, rx) = oneshot::channel();
        self.tap = Some(Box::new(Tap {
            sent: Vec::new(),
            len: 0,
            limit,
            overflow: false,
            trailers: None,
            back: Some(tx),
        }));
        (self, Some(rx))
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
                trailers: tap.trailers.take().map(|t| *t).or(replay.trailers),
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
                            tap.trailers = Some(Box::new(trailers.clone()));
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
                tap.trailers = Some(Box::new(trailers.clone()));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Empty;

    impl Body for Empty {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(None)
        }

        fn is_end_stream(&self) -> bool {
            true
        }
    }

    #[test]
    fn an_empty_body_needs_no_tap() {
        let (body, returned) = ReplayBody::tapped(Empty, 16);
        assert!(body.is_end_stream());
        assert!(returned.is_none());
    }

    #[tokio::test]
    async fn an_unread_body_comes_back_whole() {
        let chunks = vec![Ok::<_, std::convert::Infallible>(Frame::data(
            Bytes::from_static(b"ab"),
        ))];
        let stream = http_body_util::StreamBody::new(futures_util::stream::iter(chunks));
        let (body, returned) = ReplayBody::tapped(stream, 16);
        drop(body);
        let mut replay = ReplayBody::from_returned(returned.unwrap().await.unwrap())
            .expect("nothing sent, so within the limit");
        let frame = std::future::poll_fn(|cx| Pin::new(&mut replay).poll_frame(cx)).await;
        assert_eq!(frame.unwrap().unwrap().into_data().unwrap(), "ab");
    }

    #[tokio::test]
    async fn a_polled_body_hands_back_what_it_sent_and_the_rest() {
        let chunks = vec![
            Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(b"ab"))),
            Ok(Frame::data(Bytes::from_static(b"cd"))),
        ];
        let stream = http_body_util::StreamBody::new(futures_util::stream::iter(chunks));
        let (mut body, returned) = ReplayBody::tapped(stream, 16);
        let returned = returned.unwrap();
        let first = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
        assert_eq!(first.unwrap().unwrap().into_data().unwrap(), "ab");
        drop(body);
        let returned = returned.await.unwrap();
        let mut replay = ReplayBody::from_returned(returned).expect("within the limit");
        let mut all = Vec::new();
        while let Some(frame) =
            std::future::poll_fn(|cx| Pin::new(&mut replay).poll_frame(cx)).await
        {
            all.extend_from_slice(&frame.unwrap().into_data().unwrap());
        }
        assert_eq!(all, b"abcd", "what was sent, then what was not read yet");
    }

    #[tokio::test]
    async fn a_body_past_the_limit_cannot_be_replayed() {
        let chunks = vec![Ok::<_, std::convert::Infallible>(Frame::data(
            Bytes::from_static(b"0123456789"),
        ))];
        let stream = http_body_util::StreamBody::new(futures_util::stream::iter(chunks));
        let (mut body, returned) = ReplayBody::tapped(stream, 4);
        let _ = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
        drop(body);
        assert!(ReplayBody::from_returned(returned.unwrap().await.unwrap()).is_none());
    }
}
