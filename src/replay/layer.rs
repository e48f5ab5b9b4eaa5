//! [`ReplayLayer`] and its [`Replay`] service.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::Request;
use http_body::Body;
use tower::ServiceExt;
use tower_layer::Layer;
use tower_service::Service;

use super::{ReplayBody, ReplayConfig, Replayer};
use crate::error::{self, BoxError, Error, ErrorKind};

/// Replays requests that provably did not run; see [the module](super).
///
/// The wrapped service sees request bodies as [`ReplayBody<B>`]. It must be
/// `Clone` (put a `Buffer` under it, as tower's `Retry` needs too).
///
/// A refused request is rebuilt from the head its connection hands back
/// with the [`ErrorKind::Refused`] error, as
/// [`Http2Connection`](crate::Http2Connection) does, so no copy of every
/// request's head is kept here; a `Refused` error without one reaches the
/// caller as it is.
///
/// ```
/// use tower_max_connection_age::ReplayLayer;
///
/// let layer = ReplayLayer::new().max_retries(3).buffer_limit(16 * 1024);
/// # let _ = layer;
/// ```
#[derive(Debug, Clone, Default)]
pub struct ReplayLayer {
    config: ReplayConfig,
}

impl ReplayLayer {
    /// Replays unsent requests up to 3 times, and refused ones up to 3 times
    /// with a 64 KiB body buffer.
    pub fn new() -> Self {
        ReplayLayer::default()
    }

    /// How many times a request that came back unsent is sent again, and,
    /// counted apart, one the server refused.
    /// Default: [`DEFAULT_MAX_RETRIES`](super::DEFAULT_MAX_RETRIES) (3).
    pub fn max_retries(mut self, max_retries: usize) -> Self {
        self.config.max_retries = max_retries;
        self
    }

    /// How many body bytes are kept per request so that a refused request can
    /// be replayed. A request that sent more is not replayed. Default:
    /// [`DEFAULT_BUFFER_LIMIT`](super::DEFAULT_BUFFER_LIMIT) (64 KiB).
    pub fn buffer_limit(mut self, bytes: usize) -> Self {
        self.config.buffer_limit = bytes;
        self
    }

    /// Whether requests the server provably did not process are replayed
    /// (default: true). Turning it off saves recording request bodies.
    pub fn replay_refused(mut self, enabled: bool) -> Self {
        self.config.replay_refused = enabled;
        self
    }
}

impl<S> Layer<S> for ReplayLayer {
    type Service = Replay<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Replay {
            inner,
            config: self.config,
        }
    }
}

/// The service [`ReplayLayer`] builds.
#[derive(Debug, Clone)]
pub struct Replay<S> {
    inner: S,
    config: ReplayConfig,
}

impl<S> Replay<S> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The wrapped service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B> Service<Request<B>> for Replay<S>
where
    S: Service<Request<ReplayBody<B>>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    S::Response: Send,
    B: Body<Data = Bytes> + Unpin + Send + 'static,
{
    type Response = S::Response;
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner
            .poll_ready(cx)
            .map_err(|e| error::from_box(e.into(), ErrorKind::Request))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // The ready service goes with this call; keep a fresh clone.
        let clone = self.inner.clone();
        let mut service = std::mem::replace(&mut self.inner, clone);
        let (mut replayer, mut request) = Replayer::wrap(request, self.config);
        Box::pin(async move {
            let mut first = true;
            loop {
                if !std::mem::take(&mut first) {
                    service
                        .ready()
                        .await
                        .map_err(|e| error::from_box(e.into(), ErrorKind::Request))?;
                }
                let error = match service.call(request).await {
                    Ok(response) => return Ok(response),
                    Err(e) => error::from_box(e.into(), ErrorKind::Request),
                };
                request = replayer.after(error).await?;
            }
        })
    }
}
