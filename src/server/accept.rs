//! Where connections come from: a `TcpListener` or any stream of accepted IO.
//!
//! An accept error must not stop a server. Some are about one connection only
//! (the peer reset it while it waited in the backlog) and the next accept can
//! follow at once; others are about the process (`EMFILE`, out of file
//! descriptors) and would spin the loop, so the server waits a short backoff
//! before trying again. Either way it logs and keeps going.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::Stream;
use tokio::net::{TcpListener, TcpStream};

use crate::BoxError;

/// One accepted connection: its IO and, when known, the peer's address.
pub(crate) type Accepted<IO> = (IO, Option<SocketAddr>);

/// A source of connections. `None` means it will never yield another.
pub(crate) trait Accept {
    type Io;

    fn poll_accept(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Accepted<Self::Io>, BoxError>>>;
}

/// Accepts from a `TcpListener`, setting `TCP_NODELAY` when asked to.
#[derive(Debug)]
pub(crate) struct TcpAccept {
    pub(crate) listener: TcpListener,
    pub(crate) nodelay: bool,
}

impl Accept for TcpAccept {
    type Io = TcpStream;

    fn poll_accept(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Accepted<TcpStream>, BoxError>>> {
        self.listener.poll_accept(cx).map(|res| {
            Some(match res {
                Ok((stream, peer)) => {
                    if self.nodelay
                        && let Err(err) = stream.set_nodelay(true)
                    {
                        tracing::debug!(%peer, error = %err, "setting TCP_NODELAY failed");
                    }
                    Ok((stream, Some(peer)))
                }
                Err(err) => Err(err.into()),
            })
        })
    }
}

/// Accepts from any stream of IO; the peer's address is not known.
pub(crate) struct StreamAccept<I> {
    pub(crate) incoming: Pin<Box<I>>,
}

impl<I, IO, E> Accept for StreamAccept<I>
where
    I: Stream<Item = Result<IO, E>>,
    E: Into<BoxError>,
{
    type Io = IO;

    fn poll_accept(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Accepted<IO>, BoxError>>> {
        self.incoming
            .as_mut()
            .poll_next(cx)
            .map(|item| item.map(|res| res.map(|io| (io, None)).map_err(Into::into)))
    }
}

/// True for errors that concern one connection only, after which the next
/// accept can follow without a pause.
pub(crate) fn is_connection_error(err: &BoxError) -> bool {
    err.downcast_ref::<io::Error>().is_some_and(|err| {
        matches!(
            err.kind(),
            io::ErrorKind::ConnectionRefused
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::ConnectionReset
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resets_are_connection_errors_and_emfile_is_not() {
        let reset: BoxError = io::Error::from(io::ErrorKind::ConnectionReset).into();
        let aborted: BoxError = io::Error::from(io::ErrorKind::ConnectionAborted).into();
        let emfile: BoxError = io::Error::from_raw_os_error(24).into();
        let other: BoxError = "not io".into();
        assert!(is_connection_error(&reset));
        assert!(is_connection_error(&aborted));
        assert!(!is_connection_error(&emfile));
        assert!(!is_connection_error(&other));
    }
}
