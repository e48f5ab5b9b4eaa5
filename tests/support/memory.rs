//! An in-memory transport for protocol tests: a connector whose every
//! connection is one end of a `tokio::io::duplex` pipe, the other end handed
//! to the test (to run an `h2::server`, or to write raw frames), so a frame
//! sequence can be played exactly, with tokio's paused time.
//!
//! ```ignore
//! let (connector, mut accepted) = memory::connector();
//! let connect = Http2Connector::<_, Body>::new(connector, default_builder()).call(uri);
//! let server_end = accepted.recv().await.unwrap();
//! ```

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use tokio::io::DuplexStream;
use tokio::sync::mpsc;

/// The client's end of an in-memory connection.
pub struct MemoryIo(TokioIo<DuplexStream>);

impl Connection for MemoryIo {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl hyper::rt::Read for MemoryIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for MemoryIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// A connector (`Service<Uri>`) of in-memory connections, and the stream of
/// their server ends, one per connect.
pub fn connector() -> (
    impl tower::Service<
        http::Uri,
        Response = MemoryIo,
        Error = io::Error,
        Future = std::future::Ready<io::Result<MemoryIo>>,
    > + Clone
    + Send
    + 'static,
    mpsc::UnboundedReceiver<DuplexStream>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let connector = tower::service_fn(move |_uri: http::Uri| {
        let (client, server) = tokio::io::duplex(1 << 20);
        let sent = tx
            .send(server)
            .map_err(|_| io::Error::other("test dropped its receiver"));
        std::future::ready(sent.map(|()| MemoryIo(TokioIo::new(client))))
    });
    (connector, rx)
}
