//! [`MakeFuture`]: the connect of [`MaxConnectionAge`](super::MaxConnectionAge),
//! then the connection wrapped with its deadline.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tokio::time::Instant;

use super::config::AgeConfig;
use super::service::AgedConnection;
use super::state::ConnectionState;
use super::supervise::supervise;
use crate::connector::AgeableConnection;
use crate::error::{self, BoxError, Error, ErrorKind};

pin_project! {
    /// The future of [`MaxConnectionAge`](super::MaxConnectionAge): the inner
    /// connect, then the connection wrapped with its deadline.
    pub struct MakeFuture<F> {
        #[pin]
        kind: MakeKind<F>,
    }
}

pin_project! {
    #[project = MakeKindProj]
    enum MakeKind<F> {
        Connecting { #[pin] future: F, wrap: Option<Wrap> },
        Failed { error: Option<Error> },
    }
}

impl<F> MakeFuture<F> {
    pub(crate) fn connecting(future: F, wrap: Wrap) -> Self {
        MakeFuture {
            kind: MakeKind::Connecting {
                future,
                wrap: Some(wrap),
            },
        }
    }

    pub(crate) fn failed(error: Error) -> Self {
        MakeFuture {
            kind: MakeKind::Failed { error: Some(error) },
        }
    }
}

impl<F, S, E> Future for MakeFuture<F>
where
    F: Future<Output = Result<S, E>>,
    S: AgeableConnection,
    E: Into<BoxError>,
{
    type Output = Result<AgedConnection<S>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            MakeKindProj::Failed { error } => Poll::Ready(Err(error
                .take()
                .expect("MakeFuture polled after completion"))),
            MakeKindProj::Connecting { future, wrap } => {
                let result = ready!(future.poll(cx));
                let wrap = wrap.take().expect("MakeFuture polled after completion");
                Poll::Ready(match result {
                    Ok(service) => Ok(wrap.wrap(service)),
                    Err(e) => Err(error::from_box(e.into(), ErrorKind::Connect)),
                })
            }
        }
    }
}

/// What the make future needs to wrap the connection once it is made.
pub(crate) struct Wrap {
    endpoint: String,
    config: AgeConfig,
}

impl Wrap {
    pub(crate) fn new(endpoint: String, config: AgeConfig) -> Self {
        Wrap { endpoint, config }
    }

    pub(crate) fn wrap<S: AgeableConnection>(self, service: S) -> AgedConnection<S> {
        let now = Instant::now();
        let deadline = self.config.deadline(now);
        let state = ConnectionState::new(
            self.endpoint,
            deadline,
            self.config.drain_timeout,
            service.handle(),
        );
        tracing::debug!(
            endpoint = %state.endpoint,
            max_age_ms = deadline.map(|d| (d - now).as_millis() as u64),
            "connection opened"
        );
        state.handle.count_streams();
        tokio::spawn(supervise(state.clone()));
        AgedConnection::new(service, state, self.config.judging)
    }
}
