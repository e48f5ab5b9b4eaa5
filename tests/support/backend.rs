//! HTTP/2 backends on loopback, standing in for pods: one per loopback
//! address (127.0.0.1, 127.0.0.2, ...) on one shared port.
//!
//! Normal connections are served by hyper. A connection can instead follow a
//! [`Script`], written with h2 or raw frames, to misbehave on purpose.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

/// How one accepted connection is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Script {
    /// hyper's HTTP/2 server, with its defaults (200 concurrent streams).
    Serve,
    /// hyper's HTTP/2 server advertising this `SETTINGS_MAX_CONCURRENT_STREAMS`.
    ServeLimited(u32),
    /// hyper's HTTP/1.1 server only: it answers the HTTP/2 preface in HTTP/1.1.
    Http1,
    /// Accepts the TCP connection and never sends a byte (a hung or
    /// black-holed peer); holds it until the client closes.
    Silent,
    /// Raw frames: answer the first HEADERS with GOAWAY(last-stream-id 0)
    /// carrying this error code (0 is NO_ERROR) and close, so that stream
    /// provably was not processed.
    GoAwayBeforeProcessing(u32),
    /// Raw frames, as a grpc-go server enforcing its keepalive policy:
    /// every request gets an empty 200 at once; a PING closer than this many
    /// milliseconds to the one before is a strike, and the third strike gets
    /// GOAWAY(last stream, ENHANCE_YOUR_CALM, "too_many_pings"); then it
    /// answers nothing more and closes once the client does.
    PolicePings(u64),
    /// h2: reset the first `n` streams with REFUSED_STREAM (not executed),
    /// then serve.
    RefuseStreams(usize),
    /// h2: count the request as executed, read one body chunk, then drop the
    /// connection.
    DieAfterFirstChunk,
    /// h2: complete the handshake and accept every stream (each counted as
    /// executed), but never answer any; the connection ends when the client
    /// closes it.
    Hang,
}

/// How a backend answers every request, whatever its route: as a healthy
/// pod, or as one that fails fast (its database gone, shedding load).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Failing {
    /// Serves its routes.
    No = 0,
    /// HTTP 503 at once, empty body.
    Http503 = 1,
    /// As a gRPC server that cannot serve: HTTP 200, a trailers-only head
    /// with `grpc-status: 14` (UNAVAILABLE), at once.
    GrpcUnavailable = 2,
    /// As a gRPC server failing inside a call: HTTP 200, one message, then
    /// trailers with `grpc-status: 13` (INTERNAL), at once.
    GrpcInternalInTrailers = 3,
    /// Every other request gets HTTP 503 at once; the rest are served.
    HalfHttp503 = 4,
    /// What tonic answers for `Status::unavailable(..)` (its
    /// `Status::into_http`), at once.
    TonicUnavailable = 5,
}

/// What a backend saw.
#[derive(Default)]
pub struct Record {
    requests: AtomicUsize,
    connections: AtomicUsize,
    /// Executions per `x-request-id`.
    executed: Mutex<HashMap<String, usize>>,
    /// Every `x-request-id` in the order the requests arrived.
    arrivals: Mutex<Vec<String>>,
    /// Wakes waiters whenever a request or connection arrives.
    pub seen: Notify,
    /// While set, requests are received (and counted) but not answered: a
    /// hung pod whose connections stay up and answer PINGs.
    hung: std::sync::atomic::AtomicBool,
    unhung: Notify,
    /// A [`Failing`] mode.
    failing: std::sync::atomic::AtomicU8,
}

impl Record {
    /// Counts a request as executed, under its `x-request-id` if it has one.
    fn request(&self, headers: &http::HeaderMap) {
        let id = headers.get("x-request-id").and_then(|v| v.to_str().ok());
        self.requests.fetch_add(1, Ordering::SeqCst);
        if let Some(id) = id {
            *self
                .executed
                .lock()
                .unwrap()
                .entry(id.to_string())
                .or_default() += 1;
            self.arrivals.lock().unwrap().push(id.to_string());
        }
        self.seen.notify_waiters();
    }

    /// All request ids and how often each ran.
    pub fn executed(&self) -> HashMap<String, usize> {
        self.executed.lock().unwrap().clone()
    }

    /// Every request id, in the order the requests arrived.
    pub fn arrivals(&self) -> Vec<String> {
        self.arrivals.lock().unwrap().clone()
    }

    /// Makes the backend fail (or serve again) as `mode` says.
    pub fn fail(&self, mode: Failing) {
        self.failing.store(mode as u8, Ordering::SeqCst);
    }

    /// The answer of a backend that fails this request, if it does.
    fn failure(&self) -> Option<Response<http_body_util::combinators::BoxBody<Bytes, Infallible>>> {
        let grpc = |builder: http::response::Builder| {
            builder
                .status(200)
                .header("content-type", "application/grpc")
        };
        match self.failing.load(Ordering::SeqCst) {
            1 => Some(
                Response::builder()
                    .status(503)
                    .body(http_body_util::Empty::new().boxed())
                    .unwrap(),
            ),
            2 => Some(
                grpc(Response::builder())
                    .header("grpc-status", "14")
                    .header("grpc-message", "pod draining")
                    .body(http_body_util::Empty::new().boxed())
                    .unwrap(),
            ),
            3 => {
                let mut trailers = http::HeaderMap::new();
                trailers.insert("grpc-status", http::HeaderValue::from_static("13"));
                let frames = futures_util::stream::iter([
                    Ok::<_, Infallible>(hyper::body::Frame::data(Bytes::from_static(
                        b"\0\0\0\0\0",
                    ))),
                    Ok(hyper::body::Frame::trailers(trailers)),
                ]);
                Some(
                    grpc(Response::builder())
                        .body(BodyExt::boxed(http_body_util::StreamBody::new(frames)))
                        .unwrap(),
                )
            }
            5 => Some(
                tonic::Status::unavailable("pod draining")
                    .into_http::<http_body_util::Empty<Bytes>>()
                    .map(BodyExt::boxed),
            ),
            4 if self.requests.load(Ordering::SeqCst).is_multiple_of(2) => Some(
                Response::builder()
                    .status(503)
                    .body(http_body_util::Empty::new().boxed())
                    .unwrap(),
            ),
            _ => None,
        }
    }

    /// Waits while the backend is hung.
    async fn while_hung(&self) {
        loop {
            let unhung = self.unhung.notified();
            if !self.hung.load(Ordering::SeqCst) {
                return;
            }
            unhung.await;
        }
    }
}

/// One backend ("pod").
pub struct Backend {
    pub addr: SocketAddr,
    pub record: Arc<Record>,
    scripts: Arc<Mutex<VecDeque<Script>>>,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Backend {
    /// Starts a backend on `ip:port` (`port` 0 picks one).
    pub async fn start(ip: Ipv4Addr, port: u16) -> Backend {
        let listener = TcpListener::bind((ip, port)).await.expect("bind backend");
        Backend::serve(listener)
    }

    /// Starts a backend served by this crate's [`Server`](tower_max_connection_age::server::Server),
    /// so its connections age on the server side.
    pub async fn start_aged(
        ip: Ipv4Addr,
        port: u16,
        server: tower_max_connection_age::server::Server,
    ) -> Backend {
        let listener = TcpListener::bind((ip, port)).await.expect("bind backend");
        let addr = listener.local_addr().unwrap();
        let record = Arc::new(Record::default());
        let (stop, _) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let counted = record.clone();
        let incoming = futures_util::stream::unfold(listener, move |listener| {
            let record = counted.clone();
            async move {
                let accepted = listener.accept().await.map(|(stream, _)| {
                    record.connections.fetch_add(1, Ordering::SeqCst);
                    record.seen.notify_waiters();
                    stream
                });
                Some((accepted, listener))
            }
        });
        let routes = record.clone();
        let service = tower::service_fn(move |request| handle(request, addr, routes.clone()));
        tasks.spawn(server.serve_incoming(Box::pin(incoming), service));
        Backend {
            addr,
            record,
            scripts: Arc::default(),
            stop,
            tasks,
        }
    }

    /// Serves on an already bound listener.
    pub fn serve(listener: TcpListener) -> Backend {
        let addr = listener.local_addr().unwrap();
        let record = Arc::new(Record::default());
        let scripts = Arc::new(Mutex::new(VecDeque::new()));
        let (stop, stopped) = watch::channel(false);
        let mut tasks = JoinSet::new();
        tasks.spawn(accept_loop(
            listener,
            addr,
            record.clone(),
            scripts.clone(),
            stopped,
        ));
        Backend {
            addr,
            record,
            scripts,
            stop,
            tasks,
        }
    }

    /// The next accepted connections follow these scripts, in order.
    pub fn script(&self, scripts: impl IntoIterator<Item = Script>) {
        self.scripts.lock().unwrap().extend(scripts);
    }

    pub fn requests(&self) -> usize {
        self.record.requests.load(Ordering::SeqCst)
    }

    /// Makes the backend fail every request (or serve again): see [`Failing`].
    pub fn fail(&self, mode: Failing) {
        self.record.fail(mode);
    }

    /// Hangs (or un-hangs) the backend: requests arrive and are counted but
    /// get no answer until it is un-hung; connections and PINGs carry on.
    pub fn hang(&self, hung: bool) {
        self.record.hung.store(hung, Ordering::SeqCst);
        if !hung {
            self.record.unhung.notify_waiters();
        }
    }

    pub fn connections(&self) -> usize {
        self.record.connections.load(Ordering::SeqCst)
    }

    /// How many times the request with this `x-request-id` ran here.
    pub fn executions(&self, id: &str) -> usize {
        self.record
            .executed
            .lock()
            .unwrap()
            .get(id)
            .copied()
            .unwrap_or(0)
    }

    /// All request ids and how often each ran.
    pub fn executed(&self) -> HashMap<String, usize> {
        self.record.executed()
    }

    /// Every request id, in the order the requests arrived here.
    pub fn arrivals(&self) -> Vec<String> {
        self.record.arrivals()
    }

    /// Stops accepting and resets every open connection (a killed pod).
    pub async fn kill(mut self) {
        let _ = self.stop.send(true);
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
    }

    pub fn uri(&self) -> http::Uri {
        format!("http://{}", self.addr).parse().unwrap()
    }
}

/// `n` backends on 127.0.0.1 .. 127.0.0.n, all on one port.
pub async fn start_pods(n: u8) -> Vec<Backend> {
    let first = Backend::start(Ipv4Addr::new(127, 0, 0, 1), 0).await;
    let port = first.addr.port();
    let mut pods = vec![first];
    for i in 2..=n {
        pods.push(Backend::start(Ipv4Addr::new(127, 0, 0, i), port).await);
    }
    pods
}

/// Adds pod number `i` (127.0.0.i) on the pods' port.
pub async fn add_pod(pods: &[Backend], i: u8) -> Backend {
    Backend::start(Ipv4Addr::new(127, 0, 0, i), pods[0].addr.port()).await
}

async fn accept_loop(
    listener: TcpListener,
    addr: SocketAddr,
    record: Arc<Record>,
    scripts: Arc<Mutex<VecDeque<Script>>>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(_) => continue,
            },
            _ = stopped.changed() => return,
        };
        let _ = stream.set_nodelay(true);
        record.connections.fetch_add(1, Ordering::SeqCst);
        record.seen.notify_waiters();
        let script = scripts.lock().unwrap().pop_front().unwrap_or(Script::Serve);
        let record = record.clone();
        connections.spawn(async move {
            match script {
                Script::Serve => serve_hyper(stream, addr, record, None).await,
                Script::ServeLimited(n) => serve_hyper(stream, addr, record, Some(n)).await,
                Script::Http1 => serve_http1(stream, addr, record).await,
                Script::Silent => silent(stream).await,
                Script::GoAwayBeforeProcessing(code) => {
                    goaway_before_processing(stream, code).await
                }
                Script::PolicePings(ms) => {
                    police_pings(stream, record, Duration::from_millis(ms)).await
                }
                Script::RefuseStreams(n) => serve_h2(stream, addr, record, n, false).await,
                Script::DieAfterFirstChunk => serve_h2(stream, addr, record, 0, true).await,
                Script::Hang => hang(stream, record).await,
            }
        });
    }
}

/// The routes every backend serves:
/// - `/sleep/{ms}`: answers after `ms` milliseconds;
/// - `/stream/{ms}`: answers at once, ends the body after `ms` milliseconds;
/// - anything else: answers with the backend address and the body length.
async fn handle(
    request: Request<Incoming>,
    addr: SocketAddr,
    record: Arc<Record>,
) -> Result<Response<http_body_util::combinators::BoxBody<Bytes, Infallible>>, Infallible> {
    record.request(request.headers());
    record.while_hung().await;
    if let Some(failure) = record.failure() {
        return Ok(failure);
    }
    let path = request.uri().path().to_owned();
    let authority = request
        .uri()
        .authority()
        .map(|a| a.to_string())
        .unwrap_or_default();
    if let Some(ms) = path.strip_prefix("/sleep/") {
        tokio::time::sleep(Duration::from_millis(ms.parse().unwrap())).await;
    }
    if path == "/echo" {
        // Answers at once and sends the request body back as it arrives,
        // so the response begins before the request body has ended.
        let echo = futures_util::stream::unfold(request.into_body(), |mut body| async move {
            let data = body.frame().await?.ok()?.into_data().ok()?;
            Some((Ok::<_, Infallible>(hyper::body::Frame::data(data)), body))
        });
        return Ok(Response::new(BodyExt::boxed(
            http_body_util::StreamBody::new(echo),
        )));
    }
    if let Some(ms) = path.strip_prefix("/stream/") {
        let ms: u64 = ms.parse().unwrap();
        let body = http_body_util::StreamBody::new(futures_util::stream::once(async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, Infallible>(hyper::body::Frame::data(Bytes::from_static(b"done")))
        }));
        return Ok(Response::new(BodyExt::boxed(body)));
    }
    let body = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let text = format!("{addr} {} {authority}", body.len());
    Ok(Response::builder()
        .header("x-backend", addr.to_string())
        .body(Full::new(Bytes::from(text)).boxed())
        .unwrap())
}

async fn serve_hyper(
    stream: TcpStream,
    addr: SocketAddr,
    record: Arc<Record>,
    max_streams: Option<u32>,
) {
    let service = hyper::service::service_fn(move |request| handle(request, addr, record.clone()));
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    if let Some(n) = max_streams {
        builder.max_concurrent_streams(n);
    }
    let _ = builder
        .serve_connection(BackendIo(TokioIo::new(stream)), service)
        .await;
}

async fn serve_http1(stream: TcpStream, addr: SocketAddr, record: Arc<Record>) {
    let service = hyper::service::service_fn(move |request| handle(request, addr, record.clone()));
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

/// Reads (and discards) until the client closes, never writing.
async fn silent(mut stream: TcpStream) {
    let mut sink = Vec::new();
    let _ = stream.read_to_end(&mut sink).await;
}

/// The backend's transport, a type of its own so that no client shares the
/// backend's copy of h2's generic code (its codec is generic over the IO
/// type). Client and backend share one process and two cores: a raw hyper
/// client over `TokioIo<TcpStream>` would otherwise run the very code the
/// backend just ran, hot in the instruction cache, while any client with an
/// IO wrapper (such as this crate's) runs its own copy. That measured 1.5 µs
/// of a 68 µs request at concurrency 1 in the raw client's favour, which a
/// backend in another process never gives.
struct BackendIo<T>(T);

impl<T: hyper::rt::Read + Unpin> hyper::rt::Read for BackendIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<T: hyper::rt::Write + Unpin> hyper::rt::Write for BackendIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Streams are handled in their own tasks while this one keeps polling the
/// connection (h2 reads request bodies only while the connection is polled).
async fn serve_h2(
    stream: TcpStream,
    addr: SocketAddr,
    record: Arc<Record>,
    refuse: usize,
    die: bool,
) {
    let Ok(mut connection) = h2::server::handshake(stream).await else {
        return;
    };
    let died = Arc::new(Notify::new());
    let mut streams = JoinSet::new();
    let mut refused = 0;
    loop {
        let next = tokio::select! {
            next = connection.accept() => next,
            // Drops the connection mid-request.
            _ = died.notified() => return,
        };
        let Some(Ok((request, mut respond))) = next else {
            return;
        };
        if refused < refuse {
            refused += 1;
            respond.send_reset(h2::Reason::REFUSED_STREAM);
            continue;
        }
        record.request(request.headers());
        let died = died.clone();
        streams.spawn(async move {
            let mut body = request.into_body();
            if die {
                let _ = body.data().await;
                died.notify_one();
                return;
            }
            let mut len = 0;
            while let Some(Ok(chunk)) = body.data().await {
                len += chunk.len();
                let _ = body.flow_control().release_capacity(chunk.len());
            }
            let response = Response::builder()
                .header("x-backend", addr.to_string())
                .body(())
                .unwrap();
            if let Ok(mut send) = respond.send_response(response, false) {
                let _ = send.send_data(Bytes::from(format!("{addr} {len}")), true);
            }
        });
    }
}

/// Accepts streams and never answers them. The streams' response handles
/// are kept so that none is reset; they go when the client closes the
/// connection (then `accept` ends).
async fn hang(stream: TcpStream, record: Arc<Record>) {
    let Ok(mut connection) = h2::server::handshake(stream).await else {
        return;
    };
    let mut held = Vec::new();
    while let Some(Ok((request, respond))) = connection.accept().await {
        record.request(request.headers());
        held.push((request, respond));
    }
}

/// Reads the client preface and frames, acknowledging SETTINGS and PING; on
/// the first HEADERS answers GOAWAY(last-stream-id 0, `code`), then closes
/// once the client does.
async fn goaway_before_processing(mut stream: TcpStream, code: u32) {
    let mut preface = [0u8; 24];
    if stream.read_exact(&mut preface).await.is_err() {
        return;
    }
    // Our SETTINGS (empty).
    if stream
        .write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0])
        .await
        .is_err()
    {
        return;
    }
    loop {
        let mut header = [0u8; 9];
        if stream.read_exact(&mut header).await.is_err() {
            return;
        }
        let len = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
        let (kind, flags) = (header[3], header[4]);
        let mut payload = vec![0u8; len];
        if stream.read_exact(&mut payload).await.is_err() {
            return;
        }
        match kind {
            // SETTINGS without ACK: acknowledge it.
            4 if flags & 1 == 0 => {
                let ack = [0, 0, 0, 4, 1, 0, 0, 0, 0];
                let Ok(()) = stream.write_all(&ack).await else {
                    return;
                };
            }
            // PING without ACK: answer it, as every HTTP/2 server does.
            6 if flags & 1 == 0 => {
                let mut ack = vec![0, 0, 8, 6, 1, 0, 0, 0, 0];
                ack.extend_from_slice(&payload);
                let Ok(()) = stream.write_all(&ack).await else {
                    return;
                };
            }
            // HEADERS: refuse everything with GOAWAY(0).
            1 => {
                let mut goaway = vec![0, 0, 8, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0];
                goaway.extend_from_slice(&code.to_be_bytes());
                let _ = stream.write_all(&goaway).await;
                let _ = stream.flush().await;
                // Wait for the client to close.
                let mut rest = Vec::new();
                let _ = stream.read_to_end(&mut rest).await;
                return;
            }
            _ => {}
        }
    }
}

/// See [`Script::PolicePings`].
async fn police_pings(mut stream: TcpStream, record: Arc<Record>, min: Duration) {
    let mut preface = [0u8; 24];
    if stream.read_exact(&mut preface).await.is_err()
        || stream
            .write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0])
            .await
            .is_err()
    {
        return;
    }
    let (mut last_ping, mut strikes, mut last_stream) = (None::<tokio::time::Instant>, 0, 0u32);
    loop {
        let mut header = [0u8; 9];
        if stream.read_exact(&mut header).await.is_err() {
            return;
        }
        let len = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
        let (kind, flags) = (header[3], header[4]);
        let id = u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        if stream.read_exact(&mut payload).await.is_err() {
            return;
        }
        let reply = match kind {
            4 if flags & 1 == 0 => vec![0, 0, 0, 4, 1, 0, 0, 0, 0],
            6 if flags & 1 == 0 => {
                let now = tokio::time::Instant::now();
                if last_ping.is_some_and(|at| now - at < min) {
                    strikes += 1;
                }
                last_ping = Some(now);
                if strikes > 2 {
                    let debug = b"too_many_pings";
                    let mut goaway = vec![0, 0, (8 + debug.len()) as u8, 7, 0, 0, 0, 0, 0];
                    goaway.extend_from_slice(&last_stream.to_be_bytes());
                    goaway.extend_from_slice(&0xbu32.to_be_bytes());
                    goaway.extend_from_slice(debug);
                    let _ = stream.write_all(&goaway).await;
                    let _ = stream.flush().await;
                    // Streams above `last_stream` go unanswered; read until
                    // the client closes, so closing sends no RST that could
                    // destroy the GOAWAY in flight.
                    let mut rest = Vec::new();
                    let _ = stream.read_to_end(&mut rest).await;
                    return;
                }
                let mut ack = vec![0, 0, 8, 6, 1, 0, 0, 0, 0];
                ack.extend_from_slice(&payload);
                ack
            }
            // HEADERS: an empty 200 (HPACK static index 8), ending the stream.
            1 => {
                last_stream = id;
                record.request(&http::HeaderMap::new());
                let mut response = vec![0, 0, 1, 1, 0x5];
                response.extend_from_slice(&id.to_be_bytes());
                response.push(0x88);
                response
            }
            _ => continue,
        };
        if stream.write_all(&reply).await.is_err() {
            return;
        }
    }
}

/// Waits until `check` holds, re-checking whenever the record sees traffic,
/// for at most `limit`.
pub async fn wait_until(record: &Record, limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    tokio::time::timeout(limit, async {
        loop {
            let seen = record.seen.notified();
            if check() {
                return;
            }
            seen.await;
        }
    })
    .await
    .is_ok()
}
