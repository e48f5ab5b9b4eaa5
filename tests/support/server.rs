//! Fixtures for `tests/server.rs`: a tracing subscriber that records the
//! server's events so tests can wait on them, a server on a loopback port,
//! an axum app whose slow responses the test releases, and small HTTP clients.

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tower_max_connection_age::BoxError;
use tower_max_connection_age::server::Server;
use tracing::field::{Field, Visit};
use tracing::instrument::WithSubscriber;
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Dispatch, Metadata, Subscriber};

/// How long a test waits for an event before it fails.
pub const WAIT: Duration = Duration::from_secs(10);

// Messages the server logs, as the tests match them.
pub const ACCEPTED: &str = "connection accepted";
pub const AGE_REACHED: &str = "max connection age reached";
pub const IDLE_REACHED: &str = "max connection idle reached";
pub const SHUTTING_DOWN: &str = "server shutting down";
pub const GOAWAY_SENT: &str = "GOAWAY sent";
pub const H1_CLOSE: &str = "response in flight gets Connection: close";
pub const H1_WINDOW: &str = "HTTP/1.1 connection idle at drain";
pub const H1_LATE_REQUEST: &str = "request arrived in the drain window";
pub const H1_WINDOW_ENDED: &str = "drain window ended with no request";
pub const H1_WINDOW_READING: &str = "drain window ended while a request is being read";
pub const H1_IDLE_CLOSE: &str = "idle between requests; closing it";
pub const CLOSED_GRACEFULLY: &str = "connection closed gracefully";
pub const CLOSED_BY_FORCE: &str = "closed by force";
pub const ACCEPT_BACKOFF: &str = "accepting again after a backoff";
pub const ACCEPT_NEXT: &str = "accepting the next";

/// One recorded event: its message and its fields, rendered as text.
#[derive(Debug, Clone)]
pub struct Event {
    pub at: Instant,
    pub message: String,
    pub fields: HashMap<&'static str, String>,
}

impl Event {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }

    pub fn u64(&self, name: &str) -> u64 {
        self.field(name)
            .unwrap_or_else(|| panic!("event {self:?} has no field {name}"))
            .parse()
            .unwrap_or_else(|_| panic!("field {name} of {self:?} is not a number"))
    }

    pub fn is(&self, message: &str) -> bool {
        self.message.contains(message)
    }
}

struct Fields<'a>(&'a mut Event);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.insert(field, value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.insert(field, format!("{value:?}"));
    }
}

impl Fields<'_> {
    fn insert(&mut self, field: &Field, value: String) {
        if field.name() == "message" {
            self.0.message = value;
        } else {
            self.0.fields.insert(field.name(), value);
        }
    }
}

#[derive(Default)]
struct CaptureInner {
    events: Mutex<Vec<Event>>,
    notify: Notify,
    next_span: AtomicU64,
}

/// A `tracing` subscriber that keeps this crate's events.
#[derive(Clone, Default)]
pub struct Capture {
    inner: Arc<CaptureInner>,
}

impl Capture {
    pub fn new() -> Self {
        Capture::default()
    }

    pub fn dispatch(&self) -> Dispatch {
        Dispatch::new(self.clone())
    }

    pub fn events(&self) -> Vec<Event> {
        self.inner.events.lock().unwrap().clone()
    }

    /// The events whose message contains `message`.
    pub fn matching(&self, message: &str) -> Vec<Event> {
        self.events()
            .into_iter()
            .filter(|e| e.is(message))
            .collect()
    }

    pub fn count(&self, message: &str) -> usize {
        self.matching(message).len()
    }

    /// Waits until `count` events contain `message`; returns them.
    pub async fn wait_for_n(&self, message: &str, count: usize) -> Vec<Event> {
        let deadline = Instant::now() + WAIT;
        loop {
            let notified = self.inner.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let found = self.matching(message);
            if found.len() >= count {
                return found;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!(
                    "waited {WAIT:?} for {count} events {message:?}, saw {}; all events:\n{:#?}",
                    found.len(),
                    self.events()
                );
            }
        }
    }

    /// Waits for the first event containing `message`.
    pub async fn wait_for(&self, message: &str) -> Event {
        self.wait_for_n(message, 1).await.remove(0)
    }
}

impl Subscriber for Capture {
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        if self.enabled(metadata) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.target().starts_with("tower_max_connection_age")
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(self.inner.next_span.fetch_add(1, Ordering::Relaxed) + 1)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        let mut recorded = Event {
            at: Instant::now(),
            message: String::new(),
            fields: HashMap::new(),
        };
        event.record(&mut Fields(&mut recorded));
        self.inner.events.lock().unwrap().push(recorded);
        self.inner.notify.notify_waiters();
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

/// A server running on a loopback port, logging into `capture`.
pub struct TestServer {
    pub addr: SocketAddr,
    pub capture: Capture,
    shutdown: Option<oneshot::Sender<()>>,
    handle: JoinHandle<()>,
}

impl TestServer {
    /// Binds `127.0.0.1:0` and runs `server.serve_with_shutdown` on it.
    pub async fn start<S, B>(server: Server, service: S) -> TestServer
    where
        S: tower::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let capture = Capture::new();
        let (tx, rx) = oneshot::channel::<()>();
        let serve = server.serve_with_shutdown(listener, service, async {
            let _ = rx.await;
        });
        let handle = tokio::spawn(serve.with_subscriber(capture.dispatch()));
        TestServer {
            addr,
            capture,
            shutdown: Some(tx),
            handle,
        }
    }

    /// Signals shutdown; the returned handle completes when the server has
    /// drained every connection and returned.
    pub fn shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Waits (bounded) for the serve future to return.
    pub async fn stopped(self) {
        tokio::time::timeout(WAIT, self.handle)
            .await
            .expect("server did not stop in time")
            .expect("server task panicked");
    }
}

/// Lets a test hold slow responses open and release them when it chooses.
#[derive(Clone)]
pub struct Gate {
    tx: Arc<watch::Sender<bool>>,
}

impl Gate {
    pub fn new() -> Self {
        Gate {
            tx: Arc::new(watch::Sender::new(false)),
        }
    }

    pub fn open(&self) {
        self.tx.send_replace(true);
    }

    pub async fn wait(&self) {
        let mut rx = self.tx.subscribe();
        let _ = rx.wait_for(|open| *open).await;
    }
}

/// An axum app:
/// - `GET /fast` answers `ok`;
/// - `GET /slow` sends the headers and a `first` chunk at once, and `last`
///   and the end of the body when the gate opens;
/// - `GET /wait` sends nothing until the gate opens, then `done`.
pub fn app(gate: Gate) -> Router {
    let slow_gate = gate.clone();
    Router::new()
        .route("/fast", get(|| async { "ok" }))
        .route(
            "/slow",
            get(move || {
                let gate = slow_gate.clone();
                async move {
                    let chunks = futures_util::stream::unfold(0u8, move |step| {
                        let gate = gate.clone();
                        async move {
                            match step {
                                0 => Some((Ok::<_, Infallible>(Bytes::from_static(b"first")), 1)),
                                1 => {
                                    gate.wait().await;
                                    Some((Ok(Bytes::from_static(b"last")), 2))
                                }
                                _ => None,
                            }
                        }
                    });
                    Body::from_stream(chunks)
                }
            }),
        )
        .route(
            "/wait",
            get(move || {
                let gate = gate.clone();
                async move {
                    gate.wait().await;
                    "done"
                }
            }),
        )
}

/// An HTTP/2 (prior knowledge) client connection made with hyper, and a
/// receiver that fires when the connection has closed.
pub async fn h2_client(
    addr: SocketAddr,
) -> (
    hyper::client::conn::http2::SendRequest<http_body_util::Empty<Bytes>>,
    oneshot::Receiver<Result<(), hyper::Error>>,
) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    let (closed_tx, closed_rx) = oneshot::channel();
    tokio::spawn(async move {
        let _ = closed_tx.send(conn.await);
    });
    (send, closed_rx)
}

/// An HTTP/1.1 client connection made with hyper, and a receiver that fires
/// when the connection has closed.
pub async fn h1_client(
    addr: SocketAddr,
) -> (
    hyper::client::conn::http1::SendRequest<http_body_util::Empty<Bytes>>,
    oneshot::Receiver<Result<(), hyper::Error>>,
) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    let (closed_tx, closed_rx) = oneshot::channel();
    tokio::spawn(async move {
        let _ = closed_tx.send(conn.await);
    });
    (send, closed_rx)
}

/// A `GET` for `path` on the server at `addr`.
pub fn get_request(addr: SocketAddr, path: &str) -> Request<http_body_util::Empty<Bytes>> {
    Request::get(format!("http://{addr}{path}"))
        .body(http_body_util::Empty::new())
        .unwrap()
}

/// Waits (bounded) for a client connection to close.
pub async fn closed(rx: oneshot::Receiver<Result<(), hyper::Error>>) -> Result<(), hyper::Error> {
    tokio::time::timeout(WAIT, rx)
        .await
        .expect("connection did not close in time")
        .expect("connection task gone")
}

/// True when a failed tonic call provably never reached the server's
/// service, so sending it again cannot run it twice:
/// - an h2 `GOAWAY(NO_ERROR)` error from the server: the stream was above the
///   final `GOAWAY`'s last-stream-id (RFC 9113 §6.8, §8.7);
/// - hyper's `Canceled("connection closed")`: the request was still queued in
///   hyper's dispatch channel when the connection task ended, never written;
///   `Canceled("connection was not ready")`: hyper refused it unsent.
pub fn is_unprocessed(status: &tonic::Status) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(err) = source {
        if let Some(h2) = err.downcast_ref::<h2::Error>() {
            return h2.is_go_away() && h2.is_remote() && h2.reason() == Some(h2::Reason::NO_ERROR);
        }
        if let Some(hyper) = err.downcast_ref::<hyper::Error>() {
            // hyper keeps the reason as the canceled error's cause; both
            // reasons mean hyper handed the request back unsent.
            if hyper.is_canceled() {
                return std::error::Error::source(hyper).is_some_and(|cause| {
                    let cause = cause.to_string();
                    cause == "connection closed" || cause == "connection was not ready"
                });
            }
        }
        source = err.source();
    }
    false
}

/// True when a failed tonic call failed in the client's transport (hyper or
/// h2 error somewhere in its sources) rather than with a status the server
/// sent.
pub fn is_transport(status: &tonic::Status) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(err) = source {
        if err.is::<hyper::Error>() || err.is::<h2::Error>() {
            return true;
        }
        source = err.source();
    }
    false
}

/// One HTTP/1.1 response as read off a raw TCP connection.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    /// Header names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The values of header `name` (lower case), joined with `, `.
    pub fn header(&self, name: &str) -> Option<String> {
        let values: Vec<&str> = self
            .headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect();
        (!values.is_empty()).then(|| values.join(", "))
    }

    /// Whether a `Connection` header lists `close`.
    pub fn says_close(&self) -> bool {
        self.header("connection").is_some_and(|v| {
            v.split(',')
                .any(|token| token.trim().eq_ignore_ascii_case("close"))
        })
    }
}

/// Reads one response with a `Content-Length` body from `tcp` (bounded by
/// [`WAIT`]); `None` if the connection closed before a whole response came.
/// Bytes after the response are left unread.
pub async fn read_raw_response(tcp: &mut TcpStream) -> Option<RawResponse> {
    use tokio::io::AsyncReadExt;

    tokio::time::timeout(WAIT, async {
        let mut buf = Vec::new();
        let head_end = loop {
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            let mut byte = [0u8; 1];
            // One byte at a time: what follows the response stays unread.
            match tcp.read(&mut byte).await {
                Ok(1) => buf.push(byte[0]),
                _ => return None,
            }
        };
        let head = String::from_utf8(buf[..head_end].to_vec()).expect("a UTF-8 head");
        let mut lines = head.split("\r\n");
        let status = lines
            .next()?
            .split(' ')
            .nth(1)?
            .parse()
            .expect("a numeric status");
        let headers: Vec<(String, String)> = lines
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (name, value) = l.split_once(':').expect("a header line");
                (name.trim().to_ascii_lowercase(), value.trim().to_owned())
            })
            .collect();
        let length: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .map(|(_, v)| v.parse().expect("a numeric content-length"))
            .expect("a content-length (the test routes send one)");
        let mut body = vec![0u8; length];
        tcp.read_exact(&mut body).await.ok()?;
        Some(RawResponse {
            status,
            headers,
            body,
        })
    })
    .await
    .expect("no response (nor close) within the wait")
}

/// Waits (bounded by [`WAIT`]) until the server closes `tcp`; fails if it
/// sends anything first.
pub async fn read_eof(tcp: &mut TcpStream) {
    use tokio::io::AsyncReadExt;

    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(WAIT, tcp.read(&mut buf))
        .await
        .expect("the connection was not closed within the wait");
    match read {
        Ok(0) | Err(_) => {}
        Ok(n) => panic!(
            "expected the close, got {:?}",
            String::from_utf8_lossy(&buf[..n])
        ),
    }
}
