//! What does `Client` cost per request compared with a plain hyper HTTP/2
//! connection, and does rotation hurt latency or lose requests?
//!
//! ```text
//! cargo run --release --example loadgen -- [--requests N] [--rounds R] [--body-bytes B] [--json] [--layers]
//! ```
//!
//! One in-process HTTP/2 backend on loopback. Each *cell* sends `--requests`
//! small requests at a fixed concurrency through one variant:
//!
//! - `raw`: hyper's `http2::SendRequest` on one connection, one clone per worker;
//! - `client`: [`Client`] with no age;
//! - `rotating`: [`Client`] with `max_connection_age` 100 ms.
//!
//! at concurrency 1 and 64. Every cell opens fresh connections and runs an
//! untimed warm-up first; every worker builds the same request and reads the
//! whole response body. Throughput on a 2-core machine jumps between levels
//! from cell to cell, so variants are compared *round by round* (their order
//! rotated each round) and the median of the per-round ratios is reported.
//!
//! Cells at concurrency 1 land on scheduling levels of their own (which
//! worker thread each task runs on): `Client, age 100ms`, whose requests run
//! exactly the code of `Client`, often beats `Client` by more than `Client`
//! trails raw. So concurrency 1 is also measured *paired*: one task sends
//! through raw hyper and `Client` by turns, request by request, and the
//! difference is the per-request cost alone.
//!
//! `--layers` measures only that, layer by layer, to show where the cost
//! comes from: raw hyper paired with a second raw connection (the noise
//! floor), with an `Http2Connection` (the connector and its force-close IO),
//! an `AgedConnection` over it, a lean `Client` (`replay_refused(false)`,
//! `PendingRequests`) and the default `Client`, `--rounds` fresh pairs each;
//! last, for reference, h2's own client without hyper.
//!
//! Heap per connection is measured with a counting global allocator: the heap
//! grown by 63 more connections through `Client`, minus the heap grown by 63
//! more raw hyper connections, divided by 63 (`Client` takes at most
//! `discover::MAX_CONNECTIONS_PER_ENDPOINT`, 64, connections per endpoint).
//!
//! # `--process`: the backend in a process of its own
//!
//! ```text
//! cargo run --release --example loadgen -- --process [--concurrency N[,N..]] [--rate R]
//!     [--server-streams N] [--handler-ms M] [--response-bytes N] [--requests N] [--rounds R]
//!     [--body-bytes B] [--json]
//! ```
//!
//! The backend is this executable started again as a child, `loadgen
//! --serve` (module `serve`): hyper's HTTP/2 server with its default
//! settings on 127.0.0.1, `SETTINGS_MAX_CONCURRENT_STREAMS` from
//! `--server-streams` (default hyper's, 200), a handler that sleeps
//! `--handler-ms` (default 0) before it answers a body of
//! `--response-bytes` (default 2). It prints
//! its port on stdout and exits when its stdin closes, so it never outlives
//! `loadgen`. No client shares its process, its cache or its runtime.
//!
//! **Pinning.** When `taskset` is on `PATH` and this process may run on
//! CPUs 0 and 1, `loadgen --process` first executes itself again under
//! `taskset -c 0` (marked by `LOADGEN_PINNED` in its environment; the outer
//! process only waits and passes on the exit status), and starts the
//! backend under `taskset -c 1`. Each process then has one CPU, and Tokio,
//! which sizes its pool by the CPUs a process may use, runs one worker
//! thread in each. This re-execution, rather than `sched_setaffinity`,
//! needs no `libc` and pins the threads before the runtime creates them.
//! Without `taskset` (or without both CPUs) both run unpinned and the
//! header says why.
//!
//! **Rows**, each on fresh connections per cell:
//!
//! - `raw hyper`: hyper's `http2::SendRequest` on one connection, one clone
//!   per worker (the baseline of every ratio);
//! - `Client`: [`Client`] with its defaults, one connection;
//! - `Client, 2 connections`: `connections_per_endpoint(2)`;
//! - `Client, max 4 connections`: one connection, and up to three extra
//!   ones while it is at the server's stream limit with requests waiting
//!   (`max_connections_per_endpoint(4)`);
//! - `h2 client`: h2's own client on one connection, with the settings
//!   hyper's client uses (`connector::default_builder`);
//! - `hyper-util legacy Client`: `hyper_util::client::legacy::Client` with
//!   `http2_only(true)`, `TCP_NODELAY`, Tokio's timer (its pool keeps one
//!   HTTP/2 connection);
//! - `tonic Channel`: `Endpoint::from_shared(..).connect()`, used as the
//!   `tower::Service<http::Request<tonic::body::Body>>` it is (no gRPC
//!   codec: a plain GET, which the backend answers).
//!
//! Concurrencies 1, 64 and 256, or those of `--concurrency`. Each round
//! runs every row at every concurrency, the rows' order rotated by one each
//! round; each cell runs an untimed warm-up (5% of `--requests`, 100 to
//! 2000) and then `--requests` timed requests, every worker building the
//! same request (GET `/`, or a POST with `--body-bytes`) and reading the
//! whole response body frame by frame, dropping each (no row gathers it
//! into a buffer). `--rate R` paces every client to R requests/s in
//! total: request `i` of a cell is not sent before `start + i / R` (on
//! Tokio's millisecond timer), so CPU per request compares at equal work; a
//! row that cannot keep the rate is marked `behind the rate`.
//!
//! **Figures**, per row and concurrency, in two tables (throughput and
//! latency; cost per request), each the median over the rounds and next to
//! it (`x raw`) the median of the per-round ratios to raw hyper in the same
//! round; the `--json` line has them all, per cell, under the same names:
//!
//! - `req/s`: answered timed requests / the timed part's wall time;
//! - `p50 µs`, `p99 µs`, `p99.9 µs`, `max µs`: per request, from the send
//!   until the whole body is read (with `--rate`, from the send, not from
//!   the due time). The tail matters under a stream limit, where a client
//!   that lets some callers wait much longer than others shows it above
//!   p99 (by Little's law, concurrency / throughput is the mean latency);
//! - `cli CPU`, `srv CPU`: µs of CPU per answered request of `loadgen` and
//!   of the backend process over the timed part: the sum over their threads
//!   of the first field of `/proc/PID/task/TID/schedstat` (the scheduler's
//!   runtime in ns, user and system; what `utime + stime` of
//!   `/proc/PID/stat` is made of, there in 10 ms ticks). `loadgen`'s
//!   figure includes its own bookkeeping (two clock reads and a push per
//!   request, with `--rate` a timer), the same for every row;
//! - `cli wr`, `srv wr`: write syscalls per answered request (`syscw` of
//!   `/proc/PID/io`: write, writev, sendto, sendmsg, ...), which shows how
//!   many requests or responses each client and the server batch per
//!   write;
//! - `body wt`: per request, the times the caller found no frame of the
//!   response body ready and waited to be woken, which shows whether a
//!   client wakes its caller once per DATA frame or once per several (with
//!   `--response-bytes 65536`, four 16 KiB frames per response);
//! - `failed` (summed over rounds), the range of the per-round throughput
//!   ratios, and for the `Client` rows the connections opened per cell
//!   (warm-up included).
//!
//! Against a server whose stream limit is below the concurrency
//! (`--server-streams 100 --concurrency 300`), the run also checks two
//! targets: `Client` with one connection at >= 0.95 of raw hyper's
//! throughput and, with `--handler-ms` above 0 (where the limit caps raw
//! hyper at 100 streams / the time a request takes, not 20k requests/s for
//! 5 ms but about 14k: on Tokio's millisecond timer a 5 ms sleep takes 6
//! to 7 ms, and the server answers 100 of them at once), `Client, max 4
//! connections` at >= 2x. The runs behind the figures:
//!
//! ```text
//! cargo run --release --example loadgen -- --process --json
//! cargo run --release --example loadgen -- --process --rate 50000 --concurrency 64,256 --json
//! cargo run --release --example loadgen -- --process --server-streams 100 --concurrency 300 --json
//! cargo run --release --example loadgen -- --process --server-streams 100 --handler-ms 5 --concurrency 300 --json
//! ```

#[path = "../../tests/support/mod.rs"]
mod support;

mod capped;
mod failing;
mod process;
mod serve;

use std::alloc::{GlobalAlloc, Layout, System};
use std::future::Future;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicU64, AtomicUsize, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use support::backend::Backend;
use tower::{Layer, Service, ServiceExt};
use tower_max_connection_age::discover::MAX_CONNECTIONS_PER_ENDPOINT;
use tower_max_connection_age::{Client, Http2Connector, LoadKind, MaxConnectionAgeLayer};

// ---------------------------------------------------------------------------
// A counting allocator, switched on only while heap or allocations are
// measured, so it costs one relaxed load per allocation otherwise.

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static HEAP: AtomicIsize = AtomicIsize::new(0);
static ALLOCS: AtomicU64 = AtomicU64::new(0);

#[global_allocator]
static GLOBAL: Counting = Counting;

// SAFETY: every call is forwarded unchanged to the system allocator; the
// counters only observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as ours.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() && COUNTING.load(Ordering::Relaxed) {
            HEAP.fetch_add(layout.size() as isize, Ordering::Relaxed);
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as ours.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() && COUNTING.load(Ordering::Relaxed) {
            HEAP.fetch_add(layout.size() as isize, Ordering::Relaxed);
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if COUNTING.load(Ordering::Relaxed) {
            HEAP.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        }
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as ours.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() && COUNTING.load(Ordering::Relaxed) {
            HEAP.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        new
    }
}

// ---------------------------------------------------------------------------
// Options.

struct Options {
    requests: usize,
    rounds: usize,
    body_bytes: usize,
    json: bool,
    layers: bool,
    /// `--process`: the backend in a child process (module `process`).
    process: bool,
    /// `--serve`: be that child (module `serve`).
    serve: bool,
    /// `--concurrency`, for `--process` (default 1, 64, 256).
    concurrency: Vec<usize>,
    /// `--rate`, for `--process`: requests/s, all workers together.
    rate: Option<f64>,
    /// `--server-streams`, for `--process` and `--serve`.
    server_streams: Option<u32>,
    /// `--handler-ms`, for `--process` and `--serve`.
    handler_ms: u64,
    /// `--response-bytes`, for `--process` and `--serve`.
    response_bytes: usize,
    /// `--failing-pod`: three pods, one failing fast (module `failing`).
    failing_pod: Option<failing::Form>,
    /// `--seconds`, for `--failing-pod` (default 15) and the request-cap
    /// runs (default 5): how long each row (cell) runs.
    seconds: Option<u64>,
    /// `--rounds` was given.
    rounds_given: bool,
    /// `--server-max-requests`, for `--process` and `--serve`: the backend
    /// ends each connection after this many requests (module `capped`).
    server_max_requests: Option<u32>,
    /// `--nginx`, for `--process`: nginx with its defaults as the backend
    /// (module `capped`).
    nginx: bool,
    /// `--callers`, for `--failing-pod`.
    callers: usize,
    /// `--bind`, for `--serve`: the address to serve on.
    bind: Option<SocketAddr>,
    /// `--fail`, for `--serve`: answer every request at once with this failure.
    fail: Option<failing::Form>,
}

const USAGE: &str = "usage: loadgen [--requests N] [--rounds R] [--body-bytes B] [--json] [--layers]
       loadgen --process [--concurrency N[,N..]] [--rate R] [--server-streams N] [--handler-ms M]
               [--response-bytes N] [--requests N] [--rounds R] [--body-bytes B] [--json]
       loadgen --process --server-max-requests N | --nginx [--concurrency N[,N..]] [--seconds S] [--rounds R]
       loadgen --serve [--server-streams N] [--handler-ms M] [--response-bytes N] [--bind IP:PORT] [--fail http|grpc]
               [--server-max-requests N]
       loadgen --failing-pod http|grpc [--seconds S] [--callers N]
  --requests N        timed requests per cell (default 20000)
  --rounds R          rounds, each runs every variant at every concurrency (default 9, at least 1)
  --body-bytes B      request body size; 0 sends GET, more sends POST (default 0)
  --json              print one JSON line with the summary last
  --layers            instead: each layer of Client paired with raw hyper at concurrency 1
  --process           instead: the backend in a child process (pinned to core 1, loadgen to
                      core 0, when taskset exists); eight clients, one of them rotating every
                      100 ms; CPU and write syscalls per request
  --concurrency N     with --process: the concurrencies, comma-separated or repeated (default 1,64,256)
  --rate R            with --process: every client sends R requests/s in total (default: as fast as it can)
  --server-streams N  with --process: the backend's SETTINGS_MAX_CONCURRENT_STREAMS (default hyper's, 200)
  --handler-ms M      with --process: the backend's handler sleeps M ms before answering (default 0)
  --response-bytes N  with --process: the size of the backend's response body (default 2)
  --server-max-requests N
                      with --process: instead, servers that end each connection after N requests
                      (three `loadgen --serve --server-max-requests N` pods on 127.0.0.1-3, one port);
                      raw hyper reconnecting vs Client, 1 and 3 pods, concurrency 64 and 256,
                      --seconds (default 5) per cell, --rounds (default 5); with --serve: the backend
                      ends each connection after N requests with a graceful GOAWAY
  --nginx             with --process: the same against nginx with its defaults (keepalive_requests
                      1000, 128 streams) serving 127.0.0.1-3
  --serve             the backend of --process: prints its port, exits when stdin closes
  --bind IP:PORT      with --serve: serve there (default 127.0.0.1, a port the system picks)
  --fail http|grpc    with --serve: answer every request at once with HTTP 503, or gRPC UNAVAILABLE
  --failing-pod FORM  instead: three pods (backend processes on 127.0.0.1-3, one port), 127.0.0.1
                      failing fast (http: 503; grpc: trailers-only grpc-status 14), the others
                      answering in 2 ms; the failing pod's share of requests per client
  --seconds S         with --failing-pod: how long each client runs (default 15); with
                      --server-max-requests or --nginx: each cell (default 5)
  --callers N         with --failing-pod: callers sending at once (default 16)";

fn options() -> Options {
    let mut options = Options {
        requests: 20_000,
        rounds: 9,
        body_bytes: 0,
        json: false,
        layers: false,
        process: false,
        serve: false,
        concurrency: Vec::new(),
        rate: None,
        server_streams: None,
        handler_ms: 0,
        response_bytes: 2,
        failing_pod: None,
        seconds: None,
        rounds_given: false,
        server_max_requests: None,
        nginx: false,
        callers: 16,
        bind: None,
        fail: None,
    };
    // Options only `--process` (and `--serve`) take, so that no other mode
    // silently ignores them.
    let mut process_only = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| -> String {
            args.next()
                .unwrap_or_else(|| exit_usage(&format!("{name} needs a value")))
        };
        let number = |name: &str, v: &str| -> usize {
            v.parse()
                .unwrap_or_else(|_| exit_usage(&format!("{name} needs a number, not `{v}`")))
        };
        match arg.as_str() {
            "--requests" => options.requests = number(&arg, &value(&arg)).max(1),
            "--rounds" => {
                options.rounds = number(&arg, &value(&arg)).max(1);
                options.rounds_given = true;
            }
            "--body-bytes" => options.body_bytes = number(&arg, &value(&arg)),
            "--json" => options.json = true,
            "--layers" => options.layers = true,
            "--process" => options.process = true,
            "--serve" => options.serve = true,
            "--concurrency" => {
                for v in value(&arg).split(',') {
                    options.concurrency.push(number(&arg, v.trim()).max(1));
                }
                process_only.get_or_insert("--concurrency");
            }
            "--rate" => {
                let v = value(&arg);
                let rate: f64 = v
                    .parse()
                    .ok()
                    .filter(|r: &f64| r.is_finite() && *r > 0.0)
                    .unwrap_or_else(|| {
                        exit_usage(&format!("--rate needs a positive number, not `{v}`"))
                    });
                options.rate = Some(rate);
                process_only.get_or_insert("--rate");
            }
            "--server-streams" => {
                let n = number(&arg, &value(&arg));
                options.server_streams = Some(
                    u32::try_from(n)
                        .ok()
                        .filter(|&n| n > 0)
                        .unwrap_or_else(|| exit_usage("--server-streams needs 1 to 2^32-1")),
                );
                process_only.get_or_insert("--server-streams");
            }
            "--handler-ms" => {
                options.handler_ms = number(&arg, &value(&arg)) as u64;
                process_only.get_or_insert("--handler-ms");
            }
            "--response-bytes" => {
                options.response_bytes = number(&arg, &value(&arg));
                process_only.get_or_insert("--response-bytes");
            }
            "--failing-pod" => options.failing_pod = Some(failing::Form::parse(&value(&arg))),
            "--seconds" => options.seconds = Some(number(&arg, &value(&arg)).max(1) as u64),
            "--server-max-requests" => {
                let n = number(&arg, &value(&arg));
                options.server_max_requests = Some(
                    u32::try_from(n)
                        .ok()
                        .filter(|&n| n > 0)
                        .unwrap_or_else(|| exit_usage("--server-max-requests needs 1 to 2^32-1")),
                );
                process_only.get_or_insert("--server-max-requests");
            }
            "--nginx" => {
                options.nginx = true;
                process_only.get_or_insert("--nginx");
            }
            "--callers" => options.callers = number(&arg, &value(&arg)).max(1),
            "--bind" => {
                let v = value(&arg);
                options.bind = Some(v.parse().unwrap_or_else(|_| {
                    exit_usage(&format!("--bind needs an IP:PORT, not `{v}`"))
                }));
            }
            "--fail" => options.fail = Some(failing::Form::parse(&value(&arg))),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => exit_usage(&format!("unknown argument `{other}`")),
        }
    }
    let modes = [
        options.layers,
        options.process,
        options.serve,
        options.failing_pod.is_some(),
    ];
    if modes.iter().filter(|&&m| m).count() > 1 {
        exit_usage("--layers, --process, --serve and --failing-pod exclude each other");
    }
    if (options.bind.is_some() || options.fail.is_some()) && !options.serve {
        exit_usage("--bind and --fail go with --serve");
    }
    if let Some(name) = process_only
        && !options.process
        && !options.serve
    {
        exit_usage(&format!("{name} goes with --process"));
    }
    if options.serve && (!options.concurrency.is_empty() || options.rate.is_some()) {
        exit_usage("--serve takes only --server-streams, --handler-ms and --response-bytes");
    }
    options
}

fn exit_usage(message: &str) -> ! {
    eprintln!("loadgen: {message}\n{USAGE}");
    std::process::exit(2)
}

// ---------------------------------------------------------------------------
// The variants, behind one small trait so every worker loop is the same code.

type ReqBody = Full<Bytes>;

/// Sends one request and reads the whole response body. (Clones, one per
/// worker, are asked for only where several workers share a variant.)
trait Sender: Send + 'static {
    fn send(
        &mut self,
        request: Request<ReqBody>,
    ) -> impl Future<Output = Result<(), String>> + Send;
}

#[derive(Clone)]
struct Raw(http2::SendRequest<ReqBody>);

impl Sender for Raw {
    async fn send(&mut self, request: Request<ReqBody>) -> Result<(), String> {
        let response = self
            .0
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        drain(response.into_body()).await
    }
}

/// Reads every frame of `body` and drops it, as the `H2` row reads h2's
/// `RecvStream`: every row does the same work per response, and none pays
/// for gathering the body into a buffer (`collect`), which is the same
/// cost whatever the client and would favour the row that skips it.
/// Counts in [`BODY_WAITS`] each time the body had no frame ready.
async fn drain<B>(body: B) -> Result<(), String>
where
    B: http_body::Body,
    B::Error: std::fmt::Display,
{
    let mut body = std::pin::pin!(body);
    let mut waits = 0;
    let read = std::future::poll_fn(|cx| {
        loop {
            match body.as_mut().poll_frame(cx) {
                Poll::Pending => {
                    waits += 1;
                    return Poll::Pending;
                }
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e.to_string())),
                Poll::Ready(Some(Ok(_))) => {}
            }
        }
    })
    .await;
    BODY_WAITS.fetch_add(waits, Ordering::Relaxed);
    read
}

/// The times a caller found the response body it reads with no frame
/// ready and waited to be woken (the response's HEADERS not counted), over
/// the whole run: `--process` reports it per request (`body wt`), which
/// shows whether a client wakes its caller once per DATA frame or once per
/// read of several.
static BODY_WAITS: AtomicU64 = AtomicU64::new(0);

/// h2's own client, without hyper: `--layers`' reference row and a
/// `--process` row.
#[derive(Clone)]
struct H2(h2::client::SendRequest<Bytes>);

impl Sender for H2 {
    async fn send(&mut self, request: Request<ReqBody>) -> Result<(), String> {
        let (head, body) = request.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        let mut send = self.0.clone().ready().await.map_err(|e| e.to_string())?;
        let (response, mut stream) = send
            .send_request(Request::from_parts(head, ()), body.is_empty())
            .map_err(|e| e.to_string())?;
        if !body.is_empty() {
            stream.send_data(body, true).map_err(|e| e.to_string())?;
        }
        let mut body = response.await.map_err(|e| e.to_string())?.into_body();
        let mut waits = 0;
        let read = std::future::poll_fn(|cx| {
            loop {
                match body.poll_data(cx) {
                    Poll::Pending => {
                        waits += 1;
                        return Poll::Pending;
                    }
                    Poll::Ready(Some(Ok(chunk))) => {
                        let _ = body.flow_control().release_capacity(chunk.len());
                    }
                    Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e.to_string())),
                    Poll::Ready(None) => break,
                }
            }
            match body.poll_trailers(cx) {
                Poll::Pending => {
                    waits += 1;
                    Poll::Pending
                }
                Poll::Ready(result) => Poll::Ready(result.map(drop).map_err(|e| e.to_string())),
            }
        })
        .await;
        BODY_WAITS.fetch_add(waits, Ordering::Relaxed);
        read
    }
}

/// One h2 connection with `builder`'s settings (`h2::client::Builder::new()`
/// is what `h2::client::handshake` uses).
async fn h2_connection(
    addr: SocketAddr,
    builder: &h2::client::Builder,
) -> h2::client::SendRequest<Bytes> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the backend");
    stream.set_nodelay(true).expect("TCP_NODELAY");
    let (send, connection) = builder.handshake(stream).await.expect("HTTP/2 handshake");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    send
}

/// Through a tower service: `Client`, or (with `--layers`) one of the
/// layers it is built of.
#[derive(Clone)]
struct Via<S>(S);

impl<S, RB> Sender for Via<S>
where
    S: Service<Request<ReqBody>, Response = http::Response<RB>> + Send + 'static,
    S::Future: Send,
    S::Error: std::fmt::Display,
    RB: http_body::Body + Send,
    RB::Data: Send,
    RB::Error: std::fmt::Display,
{
    async fn send(&mut self, request: Request<ReqBody>) -> Result<(), String> {
        let response = self
            .0
            .ready()
            .await
            .map_err(|e| e.to_string())?
            .call(request)
            .await
            .map_err(|e| e.to_string())?;
        drain(response.into_body()).await
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    Raw,
    Client,
    Rotating,
}

const VARIANTS: [Variant; 3] = [Variant::Raw, Variant::Client, Variant::Rotating];
const CONCURRENCY: [usize; 2] = [1, 64];
const ROTATION_AGE: Duration = Duration::from_millis(100);

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Raw => "raw hyper",
            Variant::Client => "Client",
            Variant::Rotating => "Client, age 100ms",
        }
    }
}

/// One raw hyper HTTP/2 connection, with the settings `Client` uses by
/// default (hyper's defaults, its Tokio timer, `TCP_NODELAY`).
async fn raw_connection(addr: SocketAddr) -> http2::SendRequest<ReqBody> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the backend");
    stream.set_nodelay(true).expect("TCP_NODELAY");
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder.timer(TokioTimer::new());
    let (send, connection) = builder
        .handshake(TokioIo::new(stream))
        .await
        .expect("HTTP/2 handshake");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    send
}

async fn client(addr: SocketAddr, age: Option<Duration>, connections: usize) -> Client<ReqBody> {
    let mut builder = Client::builder()
        .endpoint(format!("http://{addr}").parse().unwrap())
        .connections_per_endpoint(connections);
    if let Some(age) = age {
        builder = builder.max_connection_age(age);
    }
    let client = builder.build::<ReqBody>().expect("build the client");
    wait_connected(&client, connections).await;
    client
}

async fn wait_connected(client: &Client<ReqBody>, connections: usize) {
    let connected = async {
        while client.connection_count() < connections {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), connected)
        .await
        .expect("the client did not connect in 10 s");
}

// ---------------------------------------------------------------------------
// One cell: `requests` requests from `concurrency` workers.

struct Cell {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    failed: usize,
    first_error: Option<String>,
}

impl Cell {
    fn hung(failed: usize) -> Cell {
        Cell {
            rps: f64::NAN,
            p50_us: f64::NAN,
            p99_us: f64::NAN,
            failed,
            first_error: Some(format!("the cell did not finish within {CELL_LIMIT:?}")),
        }
    }
}

#[derive(Clone)]
struct Load {
    uri: Uri,
    method: Method,
    body: Bytes,
}

impl Load {
    fn request(&self) -> Request<ReqBody> {
        let mut request = Request::new(Full::new(self.body.clone()));
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        request
    }
}

/// Sends `requests` requests through `sender` from `concurrency` worker tasks,
/// each with its own clone; returns per-request latencies (ns) and failures.
///
/// With a `rate` (requests/s, all workers together), request number `i` is
/// not sent before `start + i / rate`: the worker that takes it sleeps until
/// then (on Tokio's timer, so in bursts of a millisecond's worth). Latency
/// counts from the send, not from the due time.
async fn drive<S: Sender + Clone>(
    sender: &S,
    load: &Load,
    concurrency: usize,
    requests: usize,
    rate: Option<f64>,
) -> (Duration, Vec<u64>, usize, Option<String>) {
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    let start = Instant::now();
    for _ in 0..concurrency {
        let mut sender = sender.clone();
        let load = load.clone();
        let next = next.clone();
        workers.spawn(async move {
            let mut latencies = Vec::with_capacity(requests / concurrency + 1);
            let mut failed = 0;
            let mut first_error = None;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= requests {
                    break;
                }
                if let Some(rate) = rate {
                    let due = start + Duration::from_secs_f64(i as f64 / rate);
                    if due > Instant::now() {
                        tokio::time::sleep_until(due.into()).await;
                    }
                }
                let request = load.request();
                let sent = Instant::now();
                match sender.send(request).await {
                    Ok(()) => latencies.push(sent.elapsed().as_nanos() as u64),
                    Err(e) => {
                        failed += 1;
                        first_error.get_or_insert(e);
                    }
                }
            }
            (latencies, failed, first_error)
        });
    }
    let mut latencies = Vec::with_capacity(requests);
    let mut failed = 0;
    let mut first_error = None;
    while let Some(joined) = workers.join_next().await {
        let (l, f, e) = joined.expect("load worker panicked");
        latencies.extend(l);
        failed += f;
        if first_error.is_none() {
            first_error = e;
        }
    }
    (start.elapsed(), latencies, failed, first_error)
}

/// A cell normally takes a second or two; one that hangs is stopped (its
/// workers aborted) and every one of its requests counted as failed, so the
/// run always ends.
const CELL_LIMIT: Duration = Duration::from_secs(60);

async fn cell<S: Sender + Clone>(
    sender: S,
    load: &Load,
    concurrency: usize,
    requests: usize,
) -> Cell {
    // Untimed warm-up on the same fresh connection(s).
    let warm_up = (requests / 20).clamp(100, 2_000);
    let limited = |n| tokio::time::timeout(CELL_LIMIT, drive(&sender, load, concurrency, n, None));
    let Ok((_, _, warm_failed, warm_error)) = limited(warm_up).await else {
        return Cell::hung(warm_up + requests);
    };
    let Ok((elapsed, mut latencies, failed, first_error)) = limited(requests).await else {
        return Cell::hung(requests);
    };
    latencies.sort_unstable();
    let quantile = |q: f64| -> f64 {
        if latencies.is_empty() {
            return f64::NAN;
        }
        let i = ((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[i] as f64 / 1_000.0
    };
    Cell {
        rps: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50_us: quantile(0.50),
        p99_us: quantile(0.99),
        failed: failed + warm_failed,
        first_error: first_error.or(warm_error),
    }
}

/// Concurrency 1 measured *paired*: one task sends through raw hyper and
/// another variant by turns, request by request (which goes first swapped
/// every pair). Both then run under the same scheduling, so the difference
/// is the per-request cost alone, without the levels separate cells land on.
struct Paired {
    /// The variant's p50 minus raw hyper's.
    p50_delta_us: f64,
    /// Raw mean latency / the variant's mean latency: the c1 throughput ratio.
    throughput_ratio: f64,
    failed: usize,
}

async fn paired_c1(backend: &Backend, load: &Load, requests: usize) -> Paired {
    let raw = Raw(raw_connection(backend.addr).await);
    let via = Via(client(backend.addr, None, 1).await);
    paired(raw, via, load, requests).await
}

/// `raw` and `other` by turns from one task, `requests` timed requests each.
async fn paired<A: Sender, B: Sender>(
    mut raw: A,
    mut other: B,
    load: &Load,
    requests: usize,
) -> Paired {
    let load = load.clone();
    let run = tokio::spawn(async move {
        let warm_up = (requests / 20).clamp(100, 2_000);
        let mut latencies = [Vec::with_capacity(requests), Vec::with_capacity(requests)];
        let mut failed = 0;
        for i in 0..warm_up + requests {
            for turn in 0..2 {
                let v = (i + turn) % 2;
                let request = load.request();
                let sent = Instant::now();
                let result = if v == 0 {
                    raw.send(request).await
                } else {
                    other.send(request).await
                };
                let ns = sent.elapsed().as_nanos() as u64;
                match result {
                    Ok(()) if i >= warm_up => latencies[v].push(ns),
                    Ok(()) => {}
                    Err(_) => failed += 1,
                }
            }
        }
        (latencies, failed)
    });
    let Ok(Ok(([mut raw_ns, mut other_ns], failed))) = tokio::time::timeout(CELL_LIMIT, run).await
    else {
        return Paired {
            p50_delta_us: f64::NAN,
            throughput_ratio: f64::NAN,
            failed: 2 * requests,
        };
    };
    let mean = |v: &[u64]| v.iter().sum::<u64>() as f64 / v.len().max(1) as f64;
    let p50 = |v: &mut Vec<u64>| {
        v.sort_unstable();
        v.get(v.len() / 2).map_or(f64::NAN, |&x| x as f64 / 1_000.0)
    };
    Paired {
        throughput_ratio: mean(&raw_ns) / mean(&other_ns),
        p50_delta_us: p50(&mut other_ns) - p50(&mut raw_ns),
        failed,
    }
}

// ---------------------------------------------------------------------------
// `--layers`: where the cost at concurrency 1 comes from.

/// The layers `Client` is built of, each paired with raw hyper at
/// concurrency 1 (one fresh pair of connections per round), from a second
/// raw connection (the noise floor) up to the whole `Client`.
/// Last, for reference, a client on h2 without hyper: what hyper's own
/// dispatch costs (a task hop to its dispatch task and a task spawned per
/// request).
const LAYERS: [&str; 6] = [
    "raw hyper, a 2nd connection",
    "Http2Connection",
    "AgedConnection",
    "Client, lean",
    "Client",
    "h2 without hyper (reference)",
];

async fn layer_round(backend: &Backend, load: &Load, layer: usize, requests: usize) -> Paired {
    let raw = Raw(raw_connection(backend.addr).await);
    match layer {
        0 => paired(raw, Raw(raw_connection(backend.addr).await), load, requests).await,
        1 => {
            let connection = connect(Http2Connector::<_, ReqBody>::http(), backend).await;
            paired(raw, Via(connection), load, requests).await
        }
        2 => {
            let aging = MaxConnectionAgeLayer::new(Duration::from_secs(3600))
                .layer(Http2Connector::<_, ReqBody>::http());
            paired(raw, Via(connect(aging, backend).await), load, requests).await
        }
        3 => {
            let lean = Client::builder()
                .endpoint(backend.uri())
                .replay_refused(false)
                .load(LoadKind::PendingRequests)
                .build::<ReqBody>()
                .expect("build the client");
            wait_connected(&lean, 1).await;
            paired(raw, Via(lean), load, requests).await
        }
        4 => {
            paired(
                raw,
                Via(client(backend.addr, None, 1).await),
                load,
                requests,
            )
            .await
        }
        _ => {
            paired(
                raw,
                H2(h2_connection(backend.addr, &h2::client::Builder::new()).await),
                load,
                requests,
            )
            .await
        }
    }
}

/// One connection to the backend from a connection `MakeService`.
async fn connect<M>(mut make: M, backend: &Backend) -> M::Response
where
    M: Service<Uri>,
    M::Error: std::fmt::Debug,
{
    make.ready()
        .await
        .expect("connector ready")
        .call(backend.uri())
        .await
        .expect("connect to the backend")
}

/// Runs `--layers` and prints its table (and JSON line).
async fn layers(backend: &Backend, load: &Load, options: &Options) {
    let started = Instant::now();
    let mut results: Vec<Vec<Paired>> = (0..LAYERS.len()).map(|_| Vec::new()).collect();
    for round in 0..options.rounds {
        for k in 0..LAYERS.len() {
            let layer = (k + round) % LAYERS.len();
            eprint!(
                "\rloadgen --layers: round {}/{}, {:<28} {:>4.0} s",
                round + 1,
                options.rounds,
                LAYERS[layer],
                started.elapsed().as_secs_f64()
            );
            let _ = std::io::stderr().flush();
            results[layer].push(layer_round(backend, load, layer, options.requests).await);
        }
    }
    eprintln!(
        "\rloadgen --layers: {:.1} s{:50}",
        started.elapsed().as_secs_f64(),
        ""
    );
    println!(
        "concurrency 1, each layer paired with raw hyper request by request, {} requests each, {} rounds:",
        options.requests, options.rounds
    );
    println!(
        "  {:<30} {:>16} {:>16} {:>7}",
        "layer", "p50 - raw (µs)", "throughput/raw", "failed"
    );
    let mut json = Vec::new();
    for (name, rounds) in LAYERS.iter().zip(&results) {
        let delta: Vec<f64> = rounds.iter().map(|p| p.p50_delta_us).collect();
        let ratio: Vec<f64> = rounds.iter().map(|p| p.throughput_ratio).collect();
        let failed: usize = rounds.iter().map(|p| p.failed).sum();
        let (lo, hi) = min_max(&delta);
        println!(
            "  {name:<30} {:>+7.2} [{lo:+.1}..{hi:+.1}] {:>8.3} {failed:>7}",
            median(&delta),
            median(&ratio)
        );
        json.push(format!(
            "{{\"layer\":\"{name}\",\"p50_delta_us\":{},\"throughput_ratio\":{},\"failed\":{failed}}}",
            json_number(median(&delta)),
            json_number(median(&ratio))
        ));
    }
    if options.json {
        println!("{{\"layers\":[{}]}}", json.join(","));
    }
}

// ---------------------------------------------------------------------------
// Heap and allocations.

fn heap() -> isize {
    HEAP.load(Ordering::Relaxed)
}

/// Lets connection tasks on both sides finish their handshakes.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(150)).await;
}

/// Heap grown by opening `n` raw connections (client and server side).
async fn raw_heap(backend: &Backend, n: usize) -> isize {
    let before = heap();
    let mut senders = Vec::with_capacity(n);
    for _ in 0..n {
        senders.push(raw_connection(backend.addr).await);
    }
    settle().await;
    let grown = heap() - before;
    drop(senders);
    settle().await;
    grown
}

/// Heap grown by a `Client` with `n` connections (client and server side).
async fn client_heap(backend: &Backend, n: usize) -> isize {
    let before = heap();
    let client = client(backend.addr, None, n).await;
    settle().await;
    let grown = heap() - before;
    drop(client);
    settle().await;
    grown
}

struct Memory {
    raw_per_connection: f64,
    client_per_connection: f64,
}

/// The connections added for the heap's slope: 1 + this many is as many as
/// one `Client` keeps to an endpoint.
const MEMORY_EXTRA: usize = MAX_CONNECTIONS_PER_ENDPOINT - 1;

/// The per-connection heap: the slope between 1 and 1 + `MEMORY_EXTRA`
/// connections, so fixed costs (the client's background task, ...) drop out.
async fn memory(backend: &Backend) -> Memory {
    const EXTRA: usize = MEMORY_EXTRA;
    COUNTING.store(true, Ordering::SeqCst);
    // Once untimed, so lazily allocated runtime structures exist already.
    raw_heap(backend, 1).await;
    client_heap(backend, 1).await;
    let raw = raw_heap(backend, 1 + EXTRA).await - raw_heap(backend, 1).await;
    let via = client_heap(backend, 1 + EXTRA).await - client_heap(backend, 1).await;
    COUNTING.store(false, Ordering::SeqCst);
    Memory {
        raw_per_connection: raw as f64 / EXTRA as f64,
        client_per_connection: via as f64 / EXTRA as f64,
    }
}

/// Allocations per request (client and server side together), sequentially.
async fn allocations_per_request<S: Sender + Clone>(sender: S, load: &Load) -> f64 {
    const N: usize = 2_000;
    drive(&sender, load, 1, 200, None).await;
    COUNTING.store(true, Ordering::SeqCst);
    let before = ALLOCS.load(Ordering::SeqCst);
    drive(&sender, load, 1, N, None).await;
    let allocs = ALLOCS.load(Ordering::SeqCst) - before;
    COUNTING.store(false, Ordering::SeqCst);
    allocs as f64 / N as f64
}

// ---------------------------------------------------------------------------
// Statistics.

fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn min_max(values: &[f64]) -> (f64, f64) {
    values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        })
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "n/a".into())
}

fn json_number(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.4}")
    } else {
        "null".into()
    }
}

// ---------------------------------------------------------------------------

fn main() {
    let options = options();
    if options.serve {
        serve::main(&options);
    }
    if options.process && (options.nginx || options.server_max_requests.is_some()) {
        capped::main(&options);
        return;
    }
    if options.process {
        process::main(&options);
        return;
    }
    if let Some(form) = options.failing_pod {
        runtime().block_on(failing::main(&options, form));
        return;
    }
    runtime().block_on(in_process(options));
}

/// The runtime `#[tokio::main]` builds: multi-threaded, one worker per CPU
/// this process may run on, IO and time enabled.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("build the Tokio runtime")
}

/// The default mode (and `--layers`): client and backend in this process.
async fn in_process(options: Options) {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let load_before = loadavg();
    let backend = Backend::start(Ipv4Addr::LOCALHOST, 0).await;
    let load = Load {
        uri: format!("http://{}/", backend.addr).parse().unwrap(),
        method: if options.body_bytes == 0 {
            Method::GET
        } else {
            Method::POST
        },
        body: Bytes::from(vec![b'x'; options.body_bytes]),
    };
    if options.layers {
        layers(&backend, &load, &options).await;
        return;
    }
    let started = Instant::now();

    eprint!("loadgen: measuring heap per connection and allocations per request ...");
    let memory = memory(&backend).await;
    let raw_allocs = allocations_per_request(Raw(raw_connection(backend.addr).await), &load).await;
    let client_allocs =
        allocations_per_request(Via(client(backend.addr, None, 1).await), &load).await;
    eprintln!(" done");
    eprint!("loadgen: concurrency 1, raw and Client paired request by request ...");
    let paired = paired_c1(&backend, &load, options.requests).await;
    eprintln!(" done");

    // results[round][concurrency index][variant index]
    let mut results: Vec<[[Option<Cell>; 3]; 2]> = Vec::with_capacity(options.rounds);
    let mut rotated = 0;
    let mut replayed = 0;
    let cells = options.rounds * CONCURRENCY.len() * VARIANTS.len();
    let mut done = 0;
    for round in 0..options.rounds {
        let mut row: [[Option<Cell>; 3]; 2] = Default::default();
        for (ci, &concurrency) in CONCURRENCY.iter().enumerate() {
            for k in 0..VARIANTS.len() {
                let vi = (k + round) % VARIANTS.len();
                let variant = VARIANTS[vi];
                eprint!(
                    "\rloadgen: round {}/{}, concurrency {concurrency:>2}, {:<18} cell {:>2}/{cells}, {:>4.0} s",
                    round + 1,
                    options.rounds,
                    variant.name(),
                    done + 1,
                    started.elapsed().as_secs_f64()
                );
                let _ = std::io::stderr().flush();
                let result = match variant {
                    Variant::Raw => {
                        let sender = Raw(raw_connection(backend.addr).await);
                        cell(sender, &load, concurrency, options.requests).await
                    }
                    Variant::Client | Variant::Rotating => {
                        let age = (variant == Variant::Rotating).then_some(ROTATION_AGE);
                        let client = client(backend.addr, age, 1).await;
                        let result =
                            cell(Via(client.clone()), &load, concurrency, options.requests).await;
                        let stats = client.stats();
                        rotated += stats.rotated;
                        replayed += stats.replayed;
                        result
                    }
                };
                if let Some(e) = &result.first_error {
                    eprintln!("\nloadgen: {} failed requests, first: {e}", result.failed);
                }
                row[ci][vi] = Some(result);
                done += 1;
            }
        }
        results.push(row);
    }
    let elapsed = started.elapsed();
    eprintln!(
        "\rloadgen: {cells} cells in {:.1} s{:40}",
        elapsed.as_secs_f64(),
        ""
    );

    // Per-round figures.
    let get = |round: usize, ci: usize, v: Variant| -> &Cell {
        let vi = VARIANTS.iter().position(|&x| x == v).unwrap();
        results[round][ci][vi].as_ref().expect("every cell ran")
    };
    let per_round = |f: &dyn Fn(usize) -> f64| -> Vec<f64> { (0..options.rounds).map(f).collect() };
    let c1 = 0;
    let c64 = 1;
    let throughput_ratio =
        per_round(&|r| get(r, c64, Variant::Client).rps / get(r, c64, Variant::Raw).rps);
    let throughput_ratio_c1 =
        per_round(&|r| get(r, c1, Variant::Client).rps / get(r, c1, Variant::Raw).rps);
    let rotating_ratio_c64 =
        per_round(&|r| get(r, c64, Variant::Rotating).rps / get(r, c64, Variant::Raw).rps);
    let p50_delta_c1 =
        per_round(&|r| get(r, c1, Variant::Client).p50_us - get(r, c1, Variant::Raw).p50_us);
    let p50_delta_c64 =
        per_round(&|r| get(r, c64, Variant::Client).p50_us - get(r, c64, Variant::Raw).p50_us);
    let rotation_p99_ratio =
        per_round(&|r| get(r, c64, Variant::Rotating).p99_us / get(r, c64, Variant::Client).p99_us);
    let rotation_p99_ratio_c1 =
        per_round(&|r| get(r, c1, Variant::Rotating).p99_us / get(r, c1, Variant::Client).p99_us);
    let failed: usize = results
        .iter()
        .flat_map(|row| row.iter().flatten())
        .map(|c| c.as_ref().map_or(0, |c| c.failed))
        .sum::<usize>()
        + paired.failed;

    println!(
        "loadgen: {} timed requests per cell, {} rounds, {}, {cpus} CPUs, load average {load_before} before, {} after, {:.1} s",
        options.requests,
        options.rounds,
        if options.body_bytes == 0 {
            "GET, empty body".to_string()
        } else {
            format!("POST, {} B body", options.body_bytes)
        },
        loadavg(),
        elapsed.as_secs_f64(),
    );
    println!();
    println!(
        "{:>11}  {:<18} {:>10} {:>9} {:>9}   (medians over rounds; rps [min..max])",
        "concurrency", "variant", "rps", "p50 µs", "p99 µs"
    );
    for (ci, &concurrency) in CONCURRENCY.iter().enumerate() {
        for &v in &VARIANTS {
            let rps = per_round(&|r| get(r, ci, v).rps);
            let (lo, hi) = min_max(&rps);
            println!(
                "{:>11}  {:<18} {:>10.0} {:>9.1} {:>9.1}   [{lo:.0}..{hi:.0}]",
                concurrency,
                v.name(),
                median(&rps),
                median(&per_round(&|r| get(r, ci, v).p50_us)),
                median(&per_round(&|r| get(r, ci, v).p99_us)),
            );
        }
    }
    println!();
    println!(
        "per-round comparisons, median [min..max] over {} rounds:",
        options.rounds
    );
    let line = |name: &str, values: &[f64], target: Option<(&str, bool)>| {
        let (lo, hi) = min_max(values);
        let target = match target {
            Some((t, ok)) => format!("  target {t}: {}", if ok { "met" } else { "MISSED" }),
            None => String::new(),
        };
        println!(
            "  {name:<40} {:>8.3}  [{lo:.3}..{hi:.3}]{target}",
            median(values)
        );
    };
    let m = |v: &[f64]| median(v);
    line(
        "throughput Client / raw, c64",
        &throughput_ratio,
        Some((">= 0.98", m(&throughput_ratio) >= 0.98)),
    );
    line(
        "throughput Client / raw, c1",
        &throughput_ratio_c1,
        Some((">= 0.98", m(&throughput_ratio_c1) >= 0.98)),
    );
    line(
        "p50 Client - raw, c1 (µs)",
        &p50_delta_c1,
        Some(("<= 2", m(&p50_delta_c1) <= 2.0)),
    );
    line("p50 Client - raw, c64 (µs)", &p50_delta_c64, None);
    line("throughput rotating / raw, c64", &rotating_ratio_c64, None);
    line(
        "p99 rotating / no age, c64",
        &rotation_p99_ratio,
        Some(("<= 1.10", m(&rotation_p99_ratio) <= 1.10)),
    );
    line("p99 rotating / no age, c1", &rotation_p99_ratio_c1, None);
    println!(
        "  {:<40} {:>8.3}  (one task, {} requests each, alternating)",
        "paired c1: throughput Client / raw", paired.throughput_ratio, options.requests
    );
    println!(
        "  {:<40} {:>8.3}",
        "paired c1: p50 Client - raw (µs)", paired.p50_delta_us
    );
    println!(
        "  {:<40} {:>8}  (rotations {rotated}, replayed {replayed}){}",
        "failed requests, all cells",
        failed,
        if failed == 0 {
            "  target 0: met"
        } else {
            "  target 0: MISSED"
        }
    );
    let bytes_per_connection = memory.client_per_connection - memory.raw_per_connection;
    println!();
    println!(
        "heap per connection: raw hyper {:.0} B, via Client {:.0} B, Client's own {:.0} B (client and server side; slope over {MEMORY_EXTRA} connections)",
        memory.raw_per_connection, memory.client_per_connection, bytes_per_connection
    );
    println!(
        "allocations per request (client and server side, c1): raw hyper {raw_allocs:.2}, Client {client_allocs:.2}"
    );

    if options.json {
        let raw_rps = m(&per_round(&|r| get(r, c64, Variant::Raw).rps));
        let client_rps = m(&per_round(&|r| get(r, c64, Variant::Client).rps));
        let raw_p99 = m(&per_round(&|r| get(r, c64, Variant::Raw).p99_us));
        let client_p99 = m(&per_round(&|r| get(r, c64, Variant::Client).p99_us));
        let rotating_p99 = m(&per_round(&|r| get(r, c64, Variant::Rotating).p99_us));
        println!(
            "{{\"raw_rps\":{},\"client_rps\":{},\"throughput_ratio\":{},\"throughput_ratio_c1\":{},\"p50_delta_us_c1\":{},\"raw_p99_us\":{},\"client_p99_us\":{},\"rotating_p99_us\":{},\"rotation_p99_ratio\":{},\"failed\":{},\"bytes_per_connection\":{},\"rotations\":{},\"allocs_per_request_raw\":{},\"allocs_per_request_client\":{},\"paired_throughput_ratio_c1\":{},\"paired_p50_delta_us_c1\":{},\"requests\":{},\"rounds\":{}}}",
            json_number(raw_rps),
            json_number(client_rps),
            json_number(m(&throughput_ratio)),
            json_number(m(&throughput_ratio_c1)),
            json_number(m(&p50_delta_c1)),
            json_number(raw_p99),
            json_number(client_p99),
            json_number(rotating_p99),
            json_number(m(&rotation_p99_ratio)),
            failed,
            json_number(bytes_per_connection.round()),
            rotated,
            json_number(raw_allocs),
            json_number(client_allocs),
            json_number(paired.throughput_ratio),
            json_number(paired.p50_delta_us),
            options.requests,
            options.rounds,
        );
    }
}
