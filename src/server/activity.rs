//! What a connection is doing: how many requests are in flight, since when it
//! has been idle, and which protocol it speaks.
//!
//! The connection task needs this for two things hyper does not expose:
//! `max_connection_idle` (idle means no request in flight, counted until the
//! response *body* is done, as grpc-go counts "outstanding RPCs"), and naming
//! the protocol in its logs (a GOAWAY for HTTP/2, `Connection: close` for
//! HTTP/1.1). Both are learned by wrapping the user's service and each
//! response body.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::{Request, Response, Version};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use pin_project_lite::pin_project;
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};
use tower::ServiceExt;
use tower::util::Oneshot;

/// The protocol a connection speaks, as far as its requests have told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// No request has arrived yet.
    Unknown,
    /// HTTP/1.0 or HTTP/1.1.
    Http1,
    /// HTTP/2 (prior knowledge or ALPN).
    Http2,
}

impl Protocol {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Protocol::Unknown => "unknown",
            Protocol::Http1 => "HTTP/1.1",
            Protocol::Http2 => "HTTP/2",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct State {
    in_flight: usize,
    idle_since: Instant,
}

/// Shared between a connection's task, its service and its response bodies.
#[derive(Debug)]
pub(crate) struct Activity {
    state: watch::Sender<State>,
    protocol: AtomicU8,
}

impl Activity {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Activity {
            state: watch::Sender::new(State {
                in_flight: 0,
                idle_since: Instant::now(),
            }),
            protocol: AtomicU8::new(0),
        })
    }

    /// Counts a request in flight until the returned guard is dropped.
    fn start(self: &Arc<Self>, version: Version) -> Guard {
        let protocol = if version == Version::HTTP_2 { 2 } else { 1 };
        self.protocol.store(protocol, Ordering::Relaxed);
        self.state.send_modify(|s| s.in_flight += 1);
        Guard(Arc::clone(self))
    }

    pub(crate) fn protocol(&self) -> Protocol {
        match self.protocol.load(Ordering::Relaxed) {
            1 => Protocol::Http1,
            2 => Protocol::Http2,
            _ => Protocol::Unknown,
        }
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.state.borrow().in_flight
    }

    /// Resolves once no request has been in flight for `idle`.
    pub(crate) async fn idle_for(&self, idle: Duration) {
        let mut rx = self.state.subscribe();
        loop {
            let state = *rx.borrow_and_update();
            if state.in_flight == 0 {
                let deadline = state.idle_since + idle;
                if Instant::now() >= deadline {
                    return;
                }
                tokio::select! {
                    () = sleep_until(deadline) => {}
                    // `self` owns the sender, so this cannot fail while we run.
                    _ = rx.changed() => {}
                }
            } else {
                let _ = rx.changed().await;
            }
        }
    }
}

/// One request in flight; dropping it ends the request.
#[derive(Debug)]
pub(crate) struct Guard(Arc<Activity>);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.state.send_modify(|s| {
            s.in_flight -= 1;
            if s.in_flight == 0 {
                s.idle_since = Instant::now();
            }
        });
    }
}

/// The user's tower service as a hyper service that reports to [`Activity`].
#[derive(Debug, Clone)]
pub(crate) struct TrackedService<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> TrackedService<S> {
    pub(crate) fn new(inner: S, activity: Arc<Activity>) -> Self {
        TrackedService { inner, activity }
    }
}

impl<S, B> hyper::service::Service<Request<Incoming>> for TrackedService<S>
where
    S: tower::Service<Request<Incoming>, Response = Response<B>> + Clone,
{
    type Response = Response<TrackedBody<B>>;
    type Error = S::Error;
    type Future = TrackedFuture<Oneshot<S, Request<Incoming>>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let guard = self.activity.start(req.version());
        // hyper calls without a readiness check; `oneshot` waits for
        // `poll_ready` on a clone, as tower services expect.
        TrackedFuture {
            inner: self.inner.clone().oneshot(req),
            guard: Some(guard),
        }
    }
}

pin_project! {
    /// The response future: hands the request's guard to the response body.
    #[derive(Debug)]
    pub(crate) struct TrackedFuture<F> {
        #[pin]
        inner: F,
        guard: Option<Guard>,
    }
}

impl<F, B, E> Future for TrackedFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<TrackedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.inner.poll(cx))?;
        let guard = this
            .guard
            .take()
            .expect("TrackedFuture polled after completion");
        Poll::Ready(Ok(response.map(|inner| TrackedBody {
            inner,
            _guard: guard,
        })))
    }
}

pin_project! {
    /// A response body that keeps its request in flight until hyper drops it,
    /// which it does once the body has been sent or the stream was reset.
    #[derive(Debug)]
    pub(crate) struct TrackedBody<B> {
        #[pin]
        inner: B,
        _guard: Guard,
    }
}

impl<B: Body> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_waits_for_the_last_request_to_end() {
        let activity = Activity::new();
        let guard = activity.start(Version::HTTP_2);
        assert_eq!(activity.protocol(), Protocol::Http2);
        let idle = activity.idle_for(Duration::from_secs(1));
        tokio::pin!(idle);
        // In flight for 5 s: never idle, however long the wait.
        assert!(
            tokio::time::timeout(Duration::from_secs(5), idle.as_mut())
                .await
                .is_err()
        );
        drop(guard);
        let ended = Instant::now();
        idle.await;
        assert_eq!(ended.elapsed(), Duration::from_secs(1));
        assert_eq!(activity.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_request_restarts_the_idle_clock() {
        let activity = Activity::new();
        let start = Instant::now();
        let idle = activity.idle_for(Duration::from_secs(1));
        tokio::pin!(idle);
        assert!(
            tokio::time::timeout(Duration::from_millis(600), idle.as_mut())
                .await
                .is_err()
        );
        drop(activity.start(Version::HTTP_11));
        assert_eq!(activity.protocol(), Protocol::Http1);
        idle.await;
        assert_eq!(start.elapsed(), Duration::from_millis(1600));
    }
}
