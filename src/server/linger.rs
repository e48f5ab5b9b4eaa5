//! Lingering close: after the server is done with a connection, it shuts down
//! its sending side and reads (and discards) until the client closes too, for
//! at most [`LINGER`].
//!
//! Without it, closing a socket whose receive buffer still holds bytes makes
//! the kernel send a TCP RST instead of a FIN, and an RST can destroy data
//! the server has written but the network has not yet delivered: the last
//! responses of a drained connection. HTTP/2 clients keep sending on a
//! connection after a `GOAWAY` (hyper's and tonic's do, until the connection
//! closes), so after an age drain there usually are unread bytes. Apache and
//! nginx do the same for HTTP/1.1 (`lingering_close`).
//!
//! hyper owns the IO while it serves, so the IO is wrapped in [`Reclaim`],
//! which hands it back to the connection task when hyper drops it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::oneshot;

/// How long a closed connection may linger waiting for the client to close.
pub(crate) const LINGER: Duration = Duration::from_secs(1);

/// An IO that returns itself through a channel when dropped.
#[derive(Debug)]
pub(crate) struct Reclaim<IO> {
    io: Option<IO>,
    back: Option<oneshot::Sender<IO>>,
}

impl<IO> Reclaim<IO> {
    pub(crate) fn new(io: IO) -> (Self, oneshot::Receiver<IO>) {
        let (tx, rx) = oneshot::channel();
        (
            Reclaim {
                io: Some(io),
                back: Some(tx),
            },
            rx,
        )
    }

    fn io(&mut self) -> Pin<&mut IO>
    where
        IO: Unpin,
    {
        // `io` is only taken in `drop`.
        Pin::new(self.io.as_mut().expect("IO taken before drop"))
    }
}

impl<IO> Drop for Reclaim<IO> {
    fn drop(&mut self) {
        if let (Some(io), Some(back)) = (self.io.take(), self.back.take()) {
            let _ = back.send(io);
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Reclaim<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.io().poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Reclaim<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.io().poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.io().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.as_ref().is_some_and(AsyncWrite::is_write_vectored)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.io().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.io().poll_shutdown(cx)
    }
}

/// Sends FIN (if hyper has not) and discards what the client still sends
/// until it closes, an error, or `limit`.
pub(crate) async fn linger<IO: AsyncRead + AsyncWrite + Unpin>(mut io: IO, limit: Duration) {
    let _ = tokio::time::timeout(limit, async {
        let _ = io.shutdown().await;
        let mut buf = vec![0u8; 8 * 1024];
        while let Ok(n) = io.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn dropping_the_wrapper_hands_the_io_back() {
        let (a, mut b) = tokio::io::duplex(64);
        let (mut wrapped, back) = Reclaim::new(a);
        wrapped.write_all(b"hi").await.unwrap();
        drop(wrapped);
        let a = back.await.expect("IO handed back");
        let mut got = [0u8; 2];
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hi");
        // The peer sends more, then closes: linger reads it all and returns.
        b.write_all(b"late frames").await.unwrap();
        drop(b);
        tokio::time::timeout(Duration::from_secs(5), linger(a, LINGER))
            .await
            .expect("linger returns when the peer closes");
    }

    #[tokio::test(start_paused = true)]
    async fn linger_gives_up_after_its_limit() {
        let (a, _b) = tokio::io::duplex(64); // the peer never closes
        let started = tokio::time::Instant::now();
        linger(a, LINGER).await;
        assert_eq!(started.elapsed(), LINGER);
    }
}
