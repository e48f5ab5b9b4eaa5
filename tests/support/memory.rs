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

/// Sits between the client's end of an in-memory connection and a server:
/// passes every byte both ways until [`cut`](PingTap::cut), after which
/// nothing passes either way, as with a peer that dies without a FIN or
/// RST; and counts the `PING`s the client sends (not its acks), before and
/// after the cut.
pub struct PingTap {
    pings: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    changed: std::sync::Arc<tokio::sync::Notify>,
}

impl PingTap {
    /// Taps `client_end`; the returned stream is the end to run the server on.
    pub fn new(client_end: DuplexStream) -> (DuplexStream, PingTap) {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let (tap_end, server_end) = tokio::io::duplex(1 << 20);
        let tap = PingTap {
            pings: Arc::new(AtomicUsize::new(0)),
            cut: Arc::new(AtomicBool::new(false)),
            changed: Arc::new(tokio::sync::Notify::new()),
        };
        let (mut from_client, mut to_client) = tokio::io::split(client_end);
        let (mut from_server, mut to_server) = tokio::io::split(tap_end);
        let (pings, cut, changed) = (tap.pings.clone(), tap.cut.clone(), tap.changed.clone());
        tokio::spawn(async move {
            let mut frames = FrameReader::default();
            let mut buf = vec![0u8; 16 * 1024];
            while let Ok(n @ 1..) = from_client.read(&mut buf).await {
                pings.fetch_add(frames.pings_in(&buf[..n]), Ordering::AcqRel);
                changed.notify_waiters();
                if cut.load(Ordering::Acquire) {
                    continue;
                }
                if to_server.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        });
        let cut = tap.cut.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 16 * 1024];
            while let Ok(n @ 1..) = from_server.read(&mut buf).await {
                if !cut.load(Ordering::Acquire) && to_client.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        });
        (server_end, tap)
    }

    /// `PING`s (not acks) the client has sent so far.
    pub fn pings(&self) -> usize {
        self.pings.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Waits until the client has sent `n` `PING`s in all.
    pub async fn until_pings(&self, n: usize) {
        loop {
            let changed = self.changed.notified();
            if self.pings() >= n {
                return;
            }
            changed.await;
        }
    }

    /// From now on nothing passes, either way.
    pub fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::Release);
    }
}

/// Splits the client's byte stream (the preface, then frames) into frames,
/// however the reads cut it.
#[derive(Default)]
struct FrameReader {
    buf: Vec<u8>,
    past_preface: bool,
}

impl FrameReader {
    const PREFACE: usize = 24;
    const PING: u8 = 0x6;
    const ACK: u8 = 0x1;

    /// Takes `bytes`; returns the `PING`s (not acks) among the frames they
    /// complete.
    fn pings_in(&mut self, bytes: &[u8]) -> usize {
        self.buf.extend_from_slice(bytes);
        if !self.past_preface {
            if self.buf.len() < Self::PREFACE {
                return 0;
            }
            self.buf.drain(..Self::PREFACE);
            self.past_preface = true;
        }
        let mut pings = 0;
        while self.buf.len() >= 9 {
            let len = usize::from(self.buf[0]) << 16
                | usize::from(self.buf[1]) << 8
                | usize::from(self.buf[2]);
            if self.buf.len() < 9 + len {
                break;
            }
            if self.buf[3] == Self::PING && self.buf[4] & Self::ACK == 0 {
                pings += 1;
            }
            self.buf.drain(..9 + len);
        }
        pings
    }
}
