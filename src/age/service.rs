//! [`AgedConnection`]: one connection with a deadline.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use tokio::time::Instant;
use tower_service::Service;

use super::balance::{EndpointHealth, SlowStart};
use super::balancing::{Balancing, InFlight};
use super::body::ResponseBody;
use super::config::Judging;
use super::future::ResponseFuture;
use super::state::{ConnectionState, DrainReason};
use super::waiters::Waiters;
use crate::connector::SharedConnection;
use crate::error::{self, BoxError, Error, ErrorKind};

/// One connection with an age deadline, made by
/// [`MaxConnectionAgeLayer`](crate::MaxConnectionAgeLayer).
///
/// While it serves, it passes requests to the inner service and counts each
/// one in flight until its response body ends. Once draining it refuses new
/// requests with an [`ErrorKind::Draining`] error that carries the request
/// (take it back with [`Error::take_request`]), and `poll_ready` fails, so
/// tower's balancer evicts it. Dropping it starts its drain: in-flight
/// requests finish, and after the drain timeout the transport is closed.
///
/// It implements [`tower::load::Load`] so it can sit in tower's `Balance`
/// directly. It is `Clone` when the connection service is: clones share
/// the connection, and the drain starts when the last one is dropped, so a
/// pool that hands out clones of one made service (hyper-util's
/// `client::pool::singleton::Singleton`) holds it as one connection.
pub struct AgedConnection<S> {
    /// Starts the drain when the last clone goes. First, so that it is
    /// dropped first: the drain has started by the time the connection
    /// service (maybe the last sender, whose drop lets the transport
    /// close) goes, and a closing transport is never taken for a lost one.
    _owner: Arc<DrainOnDrop>,
    inner: S,
    /// What the pick weighs of it, which holds its lifetime.
    balancing: Arc<Balancing>,
}

/// Starts its connection's drain when dropped: held by every clone of an
/// [`AgedConnection`], so the last clone to go starts it.
struct DrainOnDrop(Arc<ConnectionState>);

impl Drop for DrainOnDrop {
    fn drop(&mut self) {
        self.0.start_draining(DrainReason::Replaced);
    }
}

impl<S> AgedConnection<S> {
    pub(crate) fn new(inner: S, state: Arc<ConnectionState>, judging: impl Into<Judging>) -> Self {
        let owner = Arc::new(DrainOnDrop(state.clone()));
        AgedConnection {
            _owner: owner,
            inner,
            balancing: Arc::new(Balancing::new(state, judging)),
        }
    }

    /// Its lifetime: phase, drain, requests in flight.
    pub(crate) fn state(&self) -> &Arc<ConnectionState> {
        &self.balancing.lifetime
    }

    pub(crate) fn balancing(&self) -> &Balancing {
        &self.balancing
    }

    /// Discovery hands in what it owns of the connection's endpoint, as it
    /// takes the connection: its health (with its ejection) and its
    /// slow-start ramp.
    pub(crate) fn weighed_as(
        &mut self,
        health: Option<Arc<EndpointHealth>>,
        slow_start: Option<SlowStart>,
    ) {
        self.balancing_mut().weigh_as(health, slow_start);
    }

    /// The client hands in its wait line, as it takes the connection: each
    /// request that ends here admits the first request waiting for room.
    pub(crate) fn waited_on_by(&mut self, waiters: Arc<Waiters>) {
        self.balancing_mut().wait_on(waiters);
    }

    /// The balancing record, which nobody else holds yet when the owner
    /// that takes the connection completes it. Should a clone of this
    /// connection exist already (a make service that kept one), this one
    /// is weighed on its own from here, rather than changing the clone's.
    fn balancing_mut(&mut self) -> &mut Balancing {
        if Arc::get_mut(&mut self.balancing).is_none() {
            self.balancing = Arc::new(self.balancing.fresh());
        }
        Arc::get_mut(&mut self.balancing).expect("just made, so held by this one alone")
    }

    pub(crate) fn inner(&self) -> &S {
        &self.inner
    }

    // No `into_inner`: dropping the last clone of an `AgedConnection` is
    // what starts its drain, so the connection cannot leave it without
    // that bookkeeping.
    crate::accessors::inner_accessors!(borrow inner: S, "the connection service this wraps");

    /// True while the connection takes new requests.
    pub fn is_serving(&self) -> bool {
        self.state().is_serving()
    }

    /// Why it stopped taking requests, if it has.
    pub fn drain_reason(&self) -> Option<DrainReason> {
        self.state().drain_reason()
    }

    /// How long ago the connection was opened.
    pub fn age(&self) -> Duration {
        self.state().age()
    }

    /// When it stops taking requests (or, when rotated, starts its
    /// replacement); `None` when it never ages.
    pub fn deadline(&self) -> Option<Instant> {
        self.state().deadline
    }

    /// Requests sent on it whose response body has not ended yet.
    pub fn in_flight(&self) -> usize {
        self.state().in_flight()
    }

    /// Stops taking new requests now; in-flight ones finish as usual.
    pub fn start_draining(&self) {
        self.state().start_draining(DrainReason::Replaced);
    }
}

impl<S: Clone> Clone for AgedConnection<S> {
    fn clone(&self) -> Self {
        AgedConnection {
            _owner: self._owner.clone(),
            inner: self.inner.clone(),
            balancing: self.balancing.clone(),
        }
    }
}

impl<S> fmt::Debug for AgedConnection<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgedConnection")
            .field("state", &self.balancing)
            .finish()
    }
}

pub(crate) fn draining<B: Send + 'static>(state: &ConnectionState, request: Request<B>) -> Error {
    let reason = state.drain_reason();
    Error::new(ErrorKind::Draining)
        .with_message(format!("{} ({reason:?})", state.endpoint))
        .with_request(request)
}

impl<S, B, RB> Service<Request<B>> for AgedConnection<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
    B: Send + 'static,
    RB: http_body::Body,
{
    type Response = Response<ResponseBody<RB>>;
    type Error = Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if !self.state().is_serving() {
            return Poll::Ready(Err(
                Error::new(ErrorKind::Draining).with_message(self.state().endpoint.clone())
            ));
        }
        self.inner.poll_ready(cx).map_err(|e| {
            self.state().start_draining(DrainReason::Closed);
            error::from_box(e.into(), ErrorKind::Draining)
        })
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if !self.state().is_serving() {
            return ResponseFuture::rejected(draining(self.state(), request));
        }
        let in_flight = self.balancing.begin();
        ResponseFuture::sent(self.inner.call(request), in_flight)
    }
}

impl<C> AgedConnection<C> {
    /// The send path of a connection shared by many callers (what
    /// [`Client`](crate::Client) picked): counts the request in flight and
    /// opens its stream, with no `&mut` and no `poll_ready` (the pick
    /// checked that it serves and has room). The response is settled as
    /// `call`'s is ([`answered`](super::answered), `InFlight::failed`).
    #[inline]
    #[allow(clippy::type_complexity)]
    pub(crate) fn send<B>(&self, request: Request<B>) -> (InFlight, Result<C::Future, Error>)
    where
        C: SharedConnection<B>,
    {
        (self.balancing.begin(), self.inner.send(request))
    }
}

impl<S> tower::load::Load for AgedConnection<S> {
    type Metric = f64;

    fn load(&self) -> f64 {
        self.balancing.cost(crate::load::LoadInstant::now())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::load::LoadKind;

    fn state() -> Arc<ConnectionState> {
        ConnectionState::for_test(None)
    }

    /// A connection service that notes, when dropped, whether its
    /// connection was draining then.
    struct Probe {
        state: Arc<ConnectionState>,
        seen: Arc<Mutex<Option<Option<DrainReason>>>>,
    }

    impl Drop for Probe {
        fn drop(&mut self) {
            *self.seen.lock().unwrap() = Some(self.state.drain_reason());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_drain_starts_before_the_connection_service_goes() {
        let state = state();
        let seen = Arc::new(Mutex::new(None));
        let probe = Probe {
            state: state.clone(),
            seen: seen.clone(),
        };
        drop(AgedConnection::new(probe, state, LoadKind::default()));
        // Dropping the service may let the transport close; by then the
        // connection must be draining, or its close reads as a loss.
        assert_eq!(*seen.lock().unwrap(), Some(Some(DrainReason::Replaced)));
    }

    #[tokio::test(start_paused = true)]
    async fn clones_share_the_connection_and_the_last_one_starts_the_drain() {
        let state = state();
        let first = AgedConnection::new((), state.clone(), LoadKind::default());
        let second = first.clone();
        drop(first);
        assert!(state.is_serving(), "a clone is left");
        drop(second);
        assert_eq!(state.drain_reason(), Some(DrainReason::Replaced));
    }

    #[tokio::test(start_paused = true)]
    async fn an_owner_hands_its_parts_in_as_it_takes_the_connection() {
        let (report, _reports) = tokio::sync::mpsc::unbounded_channel();
        let health = EndpointHealth::new("http://10.0.0.1:80".parse().unwrap(), 3, false, report);
        health.set_ejected(true);
        let mut taken = AgedConnection::new((), state(), LoadKind::default());
        let record = Arc::as_ptr(&taken.balancing);
        taken.weighed_as(Some(health.clone()), None);
        assert_eq!(Arc::as_ptr(&taken.balancing), record, "completed in place");
        assert!(taken.balancing().is_ejected());

        // A clone made before the hand-over keeps its own record.
        let mut first = AgedConnection::new((), state(), LoadKind::default());
        let kept = first.clone();
        first.weighed_as(Some(health), None);
        assert!(first.balancing().is_ejected());
        assert!(!kept.balancing().is_ejected(), "the clone is unchanged");
        assert!(
            Arc::ptr_eq(first.state(), kept.state()),
            "one connection still"
        );
    }
}
