//! Replaying requests that provably did not run: [`ReplayLayer`].
//!
//! Two kinds of failed request are sent again, and nothing else:
//!
//! - requests that came back **unsent**: the connection was draining or closed
//!   before it wrote them ([`ErrorKind::Draining`] carries the request), up to
//!   `max_retries` times (default 3);
//! - requests the server **provably never processed**: `REFUSED_STREAM`, or a
//!   stream above a `GOAWAY`'s last-stream-id (RFC 9113 §8.7), up to
//!   `max_retries` times too (a [`Client`](crate::Client) sends each replay
//!   to another connection than the one that refused), and only when the
//!   body can be rebuilt: it was empty, or everything it sent fit in the
//!   replay buffer (default 64 KiB).
//!
//! h2 fails a stream with the server's `GOAWAY` only when the stream is above
//! the `GOAWAY`'s last-stream-id, so such a failure is proof enough, with or
//! without a body. (hyper's HTTP/2 client also reports a `GOAWAY` for a
//! stream its dispatch had just opened and maybe sent; this crate sends on
//! h2 directly and does not have that ambiguity.)
//!
//! An I/O error, a timeout, a reset after the server took the stream, or a
//! force-close may have left the request processed: the caller gets the typed
//! error and decides. So this crate never runs a request twice.

mod body;
mod layer;

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body::Body;
use tokio::sync::oneshot;

pub use body::ReplayBody;
pub use layer::{Replay, ReplayLayer};

use crate::error::{Error, ErrorKind};
use body::Returned;

/// The default number of times an unsent request is sent again.
pub const DEFAULT_MAX_RETRIES: usize = 3;
/// The default replay buffer per request body: 64 KiB.
pub const DEFAULT_BUFFER_LIMIT: usize = 64 * 1024;

/// How long to wait for a refused request's body to come back. The
/// connection drops it as soon as the stream fails; this bound only keeps a
/// lost body from holding the caller.
const BODY_RETURN_WAIT: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy)]
pub(crate) struct ReplayConfig {
    pub(crate) max_retries: usize,
    pub(crate) buffer_limit: usize,
    pub(crate) replay_refused: bool,
}

impl Default for ReplayConfig {
    fn default() -> Self {
        ReplayConfig {
            max_retries: DEFAULT_MAX_RETRIES,
            buffer_limit: DEFAULT_BUFFER_LIMIT,
            replay_refused: true,
        }
    }
}

/// One request's replay bookkeeping.
pub(crate) struct Replayer<B> {
    config: ReplayConfig,
    returned: Option<oneshot::Receiver<Returned<B>>>,
    unsent_retries: usize,
    refused_replays: usize,
}

impl<B> Replayer<B>
where
    B: Body<Data = Bytes> + Unpin + Send + 'static,
{
    /// Wraps the body so it can be replayed.
    pub(crate) fn wrap(
        request: Request<B>,
        config: ReplayConfig,
    ) -> (Self, Request<ReplayBody<B>>) {
        let (parts, body) = request.into_parts();
        let (body, returned) = if config.replay_refused {
            ReplayBody::tapped(body, config.buffer_limit)
        } else {
            (ReplayBody::new(body), None)
        };
        let replayer = Replayer {
            config,
            returned,
            unsent_retries: 0,
            refused_replays: 0,
        };
        (replayer, Request::from_parts(parts, body))
    }

    /// Decides about a failed attempt: `Ok` is the request to send again,
    /// `Err` the error to give the caller.
    pub(crate) async fn after(&mut self, mut err: Error) -> Result<Request<ReplayBody<B>>, Error> {
        crate::metrics::attempt_failed(err.kind());
        match err.kind() {
            ErrorKind::Draining if self.unsent_retries < self.config.max_retries => {
                match err.take_request::<Request<ReplayBody<B>>>() {
                    Some(request) => {
                        self.unsent_retries += 1;
                        crate::metrics::replayed(crate::metrics::Replayed::Unsent);
                        tracing::debug!(attempt = self.unsent_retries, error = %err, "replaying unsent request");
                        Ok(request)
                    }
                    None => Err(err),
                }
            }
            ErrorKind::Refused
                if self.config.replay_refused
                    && self.refused_replays < self.config.max_retries
                    && !err.is_blamed() =>
            {
                // The connection gives the head back with the refusal.
                let Some(head) = err.take_request::<Request<()>>() else {
                    return Err(err);
                };
                let body = match self.returned.take() {
                    None => ReplayBody::empty(),
                    Some(returned) => {
                        let Ok(Ok(returned)) =
                            tokio::time::timeout(BODY_RETURN_WAIT, returned).await
                        else {
                            return Err(
                                err.with_message("not replayed: the body was not handed back")
                            );
                        };
                        let Some(body) = ReplayBody::from_returned(returned) else {
                            return Err(err.with_message(
                                "not replayed: the body was larger than the replay buffer",
                            ));
                        };
                        // Recorded again, in case the replay is refused too.
                        let (body, returned) = body.tap(self.config.buffer_limit);
                        self.returned = returned;
                        body
                    }
                };
                self.refused_replays += 1;
                crate::metrics::replayed(crate::metrics::Replayed::Refused);
                tracing::debug!(attempt = self.refused_replays, error = %err, "replaying request the server did not process");
                Ok(head.map(|()| body))
            }
            _ => Err(err),
        }
    }
}
