//! [`Client`]: aged connections, discovery, balancing and replay, composed.

mod build;
mod builder;
mod deadline;
mod future;
mod options;
mod pick;
mod shared;
#[cfg(feature = "rustls")]
mod tls;
mod waiting;

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body::Body;
use tokio::time::Instant;
use tower_service::Service;

pub use crate::connector::SharedConnection;
pub use builder::{ClientBuilder, DEFAULT_READY_TIMEOUT};

use crate::age::{AgedConnection, ResponseBody};
use crate::connector::Http2Connection;
use crate::discover::{DiscoverStatus, EndpointKey};
use crate::error::{BoxError, Error, ErrorKind};
use crate::replay::{ReplayBody, Replayer};

pub use future::ResponseFuture;
use pick::{Candidate, ThreadRngOnDemand, pick};
pub use shared::Stats;
use shared::{Shared, drive};
use waiting::Waiting;

/// An HTTP/2 client whose connections age out and rotate make-before-break,
/// balanced by power-of-two-choices over their load, replaying the requests
/// that provably did not run.
///
/// `Client` is cheap to clone (all clones share the connections) and is a
/// `tower::Service<http::Request<B>>`, so it serves as a tonic `GrpcService`
/// and inside axum handlers. Requests are balanced in the caller's task: no
/// `Buffer` worker hop.
///
/// ```no_run
/// # async fn doc() -> Result<(), tower_max_connection_age::Error> {
/// use std::time::Duration;
/// use http_body_util::Full;
/// use bytes::Bytes;
/// use tower::ServiceExt;
/// use tower_max_connection_age::Client;
///
/// let client = Client::builder()
///     .endpoint("http://10.0.0.1:8080".parse().unwrap())
///     .endpoint("http://10.0.0.2:8080".parse().unwrap())
///     .max_connection_age(Duration::from_secs(60))
///     .build::<Full<Bytes>>()?;
/// let request = http::Request::get("http://my-svc:8080/").body(Full::default()).unwrap();
/// let response = client.oneshot(request).await?;
/// # let _ = response;
/// # Ok(())
/// # }
/// ```
///
/// `C` is the connection type: [`Http2Connection`] by default, or any
/// [`SharedConnection`] given to [`ClientBuilder::build_with`] (hyper's own
/// HTTP/2 connection through [`HyperConnector`](crate::connector::HyperConnector)).
pub struct Client<B, C = Http2Connection<ReplayBody<B>>> {
    shared: Arc<Shared<C>>,
    _body: PhantomData<fn(B)>,
}

impl<B, C> Clone for Client<B, C> {
    fn clone(&self) -> Self {
        Client {
            shared: self.shared.clone(),
            _body: PhantomData,
        }
    }
}

impl<B, C> fmt::Debug for Client<B, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("connections", &self.connection_count())
            .field("stats", &self.stats())
            .finish()
    }
}

impl Client<()> {
    /// Starts a [`ClientBuilder`].
    pub fn builder() -> ClientBuilder {
        ClientBuilder::new()
    }
}

impl<B, C> Client<B, C> {
    /// Connections currently in service.
    pub fn connection_count(&self) -> usize {
        self.read().len()
    }

    /// The endpoint of each connection in service (one entry per connection).
    pub fn endpoints(&self) -> Vec<Uri> {
        self.read()
            .iter()
            .map(|(k, _)| k.endpoint().clone())
            .collect()
    }

    /// What discovery knows: the endpoints in service and how resolving went.
    pub fn discover_status(&self) -> DiscoverStatus {
        self.shared.status.clone()
    }

    /// What the client did so far.
    pub fn stats(&self) -> Stats {
        let s = &self.shared;
        Stats {
            opened: s.opened.load(Ordering::Relaxed),
            rotated: s.rotated.load(Ordering::Relaxed),
            removed: s.removed.load(Ordering::Relaxed),
            replayed: s.replayed.load(Ordering::Relaxed),
            waited: s.waited.load(Ordering::Relaxed),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<(EndpointKey, AgedConnection<C>)>> {
        self.shared
            .connections
            .read()
            .unwrap_or_else(|p| p.into_inner())
    }
}

impl<B, C> Client<B, C>
where
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<BoxError>,
    C: SharedConnection<ReplayBody<B>>,
{
    /// Sends on a picked connection (and says which), or gives the request
    /// back if none serves. Errors go to the caller of the future.
    #[allow(clippy::result_large_err, clippy::type_complexity)]
    fn try_send(
        &self,
        request: Request<ReplayBody<B>>,
        avoid: usize,
    ) -> Result<(usize, ResponseFuture<B, C>), Request<ReplayBody<B>>> {
        let connections = self.read();
        let Some(connection) =
            pick::<ReplayBody<B>, _, _>(&connections, avoid, &mut ThreadRngOnDemand::default())
        else {
            return Err(request);
        };
        let (in_flight, sent) = connection.send(request);
        let id = Candidate::<ReplayBody<B>>::id(connection);
        // A refusal is sorted (and may drain the connection) without the lock.
        drop(connections);
        Ok((id, ResponseFuture::sent(sent, in_flight, None, None)))
    }

    /// Waits until a connection takes the request (one opens, or one below
    /// its server's stream limit has room again), oldest waiter first, up
    /// to the ready timeout.
    async fn send_when_ready(
        &self,
        mut request: Request<ReplayBody<B>>,
        wait_until: &mut Option<Instant>,
        used: &mut usize,
    ) -> Result<Response<ResponseBody<C::Body>>, Error> {
        self.shared.waited.fetch_add(1, Ordering::Relaxed);
        let waiters = &self.shared.waiters;
        let deadline = *wait_until.get_or_insert_with(|| {
            Instant::now() + crate::time::saturate(self.shared.ready_timeout)
        });
        // With others waiting already, a request queues behind them instead
        // of taking the slot that frees next: a caller whose request just
        // ended would otherwise always beat the waiter it woke.
        let mut behind_others = waiters.count.load(Ordering::SeqCst) > 0;
        let waiting = Waiting::new(waiters);
        loop {
            if !std::mem::take(&mut behind_others) || waiting.turn.is_admitted() {
                match self.try_send(request, 0) {
                    Ok((id, sent)) => {
                        waiting.sent();
                        // The next in line may find room too (a connection
                        // came, or the server allowed more streams).
                        if waiters.count.load(Ordering::SeqCst) > 0 {
                            waiters.admit_up_to(self.free_slots());
                        }
                        *used = id;
                        return sent.await;
                    }
                    Err(back) => request = back,
                }
                if waiting.turn.is_admitted() {
                    // Another admitted waiter took the slot: this one keeps
                    // its place, and is admitted again at once if room
                    // freed meanwhile.
                    waiters.refused(&waiting.turn);
                    waiters.admit_up_to(self.free_slots());
                }
                if self.any_serving() {
                    // Serving, but all full: discovery may open one more.
                    self.shared.demand.all_full();
                }
            }
            let admitted = std::future::poll_fn(|cx| waiting.turn.poll_admitted(cx));
            if tokio::time::timeout_at(deadline, admitted).await.is_err() {
                return Err(self.not_ready());
            }
        }
    }

    /// Requests the connections that take requests now could still start.
    fn free_slots(&self) -> usize {
        self.read()
            .iter()
            .filter(|(_, c)| Candidate::<ReplayBody<B>>::takes_requests(c))
            .fold(0usize, |free, (_, c)| {
                free.saturating_add(
                    c.inner()
                        .max_concurrent_streams()
                        .saturating_sub(c.state().in_flight()),
                )
            })
    }

    fn any_serving(&self) -> bool {
        self.read()
            .iter()
            .any(|(_, c)| c.is_serving() && c.inner().is_open())
    }

    /// Why no connection took the request within the ready timeout.
    fn not_ready(&self) -> Error {
        let waited = self.shared.ready_timeout;
        let status = &self.shared.status;
        if let Some(error) = status.last_resolve_error()
            && status.endpoints().is_empty()
        {
            return Error::new(ErrorKind::Resolve)
                .with_message(format!("no endpoint after waiting {waited:?}: {error}"));
        }
        let connections = self.read();
        let open = connections
            .iter()
            .filter(|(_, c)| c.is_serving() && c.inner().is_open())
            .count();
        let message = if open > 0 {
            format!(
                "waited {waited:?}; all {open} serving connection(s) are at their server's \
                 stream limit (SETTINGS_MAX_CONCURRENT_STREAMS)"
            )
        } else {
            format!(
                "waited {waited:?}; {} connection(s) known, none serving",
                connections.len()
            )
        };
        drop(connections);
        let error = Error::new(ErrorKind::NoReadyEndpoint).with_message(message);
        match status.connect_errors_error() {
            Some(errors) => error.with_source(errors),
            None => error,
        }
    }

    /// Puts the origin on a path-only URI (as tonic sends them).
    #[cold]
    #[inline(never)]
    fn with_origin(&self, request: &mut Request<B>) -> Result<(), Error> {
        let mut parts = std::mem::take(request.uri_mut()).into_parts();
        parts.scheme = Some(self.shared.origin.0.clone());
        parts.authority = Some(self.shared.origin.1.clone());
        if parts.path_and_query.is_none() {
            parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
        }
        *request.uri_mut() = Uri::from_parts(parts).map_err(|e| {
            Error::new(ErrorKind::Request)
                .with_message("bad request URI")
                .with_source(e)
        })?;
        Ok(())
    }

    /// No connection serves yet: the boxed slow path waits for one.
    #[cold]
    #[inline(never)]
    fn wait_for_connection(
        &self,
        replayer: Replayer<B>,
        request: Request<ReplayBody<B>>,
    ) -> ResponseFuture<B, C> {
        ResponseFuture::slow(Box::pin(
            self.clone()
                .send_slow(replayer, First::NoConnection(request)),
        ))
    }

    /// The slow path: wait for a serving connection, replay what may be
    /// replayed, until a response or an error for the caller.
    async fn send_slow(
        self,
        mut replayer: Replayer<B>,
        first: First<B>,
    ) -> Result<Response<ResponseBody<C::Body>>, Error> {
        let mut wait_until = None;
        let mut used = 0;
        let mut result = match first {
            First::NoConnection(request) => {
                self.send_when_ready(request, &mut wait_until, &mut used)
                    .await
            }
            First::Failed(error, on) => {
                used = on;
                Err(error)
            }
        };
        loop {
            match result {
                Ok(response) => return Ok(response),
                Err(error) => {
                    // A connection that refused (overloaded, or going away)
                    // would likely refuse the replay too: pick another.
                    let avoid = match error.kind() {
                        ErrorKind::Refused => used,
                        _ => 0,
                    };
                    let request = replayer.after(error).await?;
                    self.shared.replayed.fetch_add(1, Ordering::Relaxed);
                    result = match self.try_send(request, avoid) {
                        Ok((id, sent)) => {
                            used = id;
                            sent.await
                        }
                        Err(back) => self.send_when_ready(back, &mut wait_until, &mut used).await,
                    };
                }
            }
        }
    }
}

/// How the fast path's first attempt ended, for [`Client::send_slow`].
// Built only on the slow path and moved once into its boxed future.
#[allow(clippy::large_enum_variant)]
enum First<B> {
    /// No connection served; the request was not sent.
    NoConnection(Request<ReplayBody<B>>),
    /// It was sent on the connection with this id, and failed.
    Failed(Error, usize),
}

impl<B, C> Service<Request<B>> for Client<B, C>
where
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<BoxError>,
    C: SharedConnection<ReplayBody<B>>,
{
    type Response = Response<ResponseBody<C::Body>>;
    type Error = Error;
    type Future = ResponseFuture<B, C>;

    /// Always ready: waiting for a connection happens per request, bounded by
    /// `ready_timeout`, so one slow endpoint never blocks callers' readiness.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    /// Opens the request's stream before returning, so the returned future
    /// holds only h2's response future and what a retry needs: the fast
    /// path moves no request through an `async` state machine and boxes
    /// nothing.
    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        if request.uri().scheme().is_none()
            && let Err(error) = self.with_origin(&mut request)
        {
            return ResponseFuture::failed(error);
        }
        // Most requests carry headers; `grpc-timeout` is looked up only
        // then, or when the client has a timeout of its own.
        let deadline = if request.headers().is_empty() && self.shared.timeout.is_none() {
            None
        } else {
            match deadline::of(request.headers(), self.shared.timeout) {
                Ok(limit) => limit.map(deadline::Limit::start),
                Err(error) => return ResponseFuture::failed(error),
            }
        };
        let (replayer, request) = Replayer::wrap(request, self.shared.replay);
        // Not `try_send`: its `Result` would move the future once more.
        let connections = self.read();
        // Requests already waiting for room go first.
        let queued = self.shared.waiters.count.load(Ordering::SeqCst) > 0;
        if let Some(connection) =
            pick::<ReplayBody<B>, _, _>(&connections, 0, &mut ThreadRngOnDemand::default())
                .filter(|_| !queued)
        {
            let (in_flight, sent) = connection.send(request);
            let retry = future::Retry {
                client: self.clone(),
                replayer,
                used: Candidate::<ReplayBody<B>>::id(connection),
            };
            drop(connections);
            return ResponseFuture::sent(sent, in_flight, Some(retry), deadline);
        }
        drop(connections);
        self.wait_for_connection(replayer, request)
            .with_deadline(deadline)
    }
}
