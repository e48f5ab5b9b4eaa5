//! `loadgen --process --server-max-requests N` and `loadgen --process
//! --nginx`: servers that end every connection after a number of requests,
//! and what that costs a client.
//!
//! The backend: three pods on 127.0.0.1 to 127.0.0.3, one port, on CPU 1
//! (`taskset`, as `--process`). With `--server-max-requests N`, each pod is
//! a `loadgen --serve --server-max-requests N` process: hyper's HTTP/2 server,
//! which ends each connection after N requests with its graceful
//! shutdown. With `--nginx`, one nginx (`nginx-light`) with **its
//! defaults** serves the three addresses: `keepalive_requests 1000` (a
//! `GOAWAY(NO_ERROR)` after 1,000 requests on a connection) and
//! `http2_max_concurrent_streams 128`.
//!
//! Cells: 1 and 3 pods, at each `--concurrency` (default 64 and 256), each
//! for `--seconds` (default 5) per client, `--rounds` rounds (default 5),
//! the clients' order rotated by one each round. Clients:
//!
//! - `raw hyper, new conn. on close`: one hyper `http2::SendRequest` per
//!   pod, requests spread round-robin; a pod's connection is opened again
//!   (one connect at a time) once it has closed. A failed request is not
//!   sent again: it counts as failed.
//! - `raw hyper, new conn. on error`: the same, but a pod's connection is
//!   dropped at the first request that fails on it, so the next request
//!   opens a new one without waiting for the close.
//! - `Client`: [`Client`] with its defaults over the same pods.
//!
//! Figures per client and cell: requests/s, p50 and p99 latency, failed
//! requests, and with nginx the requests nginx served that no caller heard
//! answered (`stub_status`'s count before and after the cell, minus the
//! answered ones: a request lost or run twice shows here), CPU and write
//! syscalls of this process per answered request, and for `Client` its
//! replays and waits. The ratios are the medians of the per-round ratios
//! of `Client` to each raw hyper client.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tower::ServiceExt;
use tower_max_connection_age::Client;

use crate::Options;
use crate::process::{Pinning, Pod};
use crate::support::nginx::Nginx;

type ReqBody = Full<Bytes>;

/// The pods, whichever server runs them.
enum Backend {
    Hyper(Vec<Pod>),
    Nginx(Nginx),
}

impl Backend {
    async fn start(options: &Options, taskset: Option<&PathBuf>) -> Backend {
        if options.nginx {
            return Backend::Nginx(Nginx::start(3, taskset.map(|_| 1)).await);
        }
        let max = options
            .server_max_requests
            .expect("--server-max-requests or --nginx")
            .to_string();
        let args = ["--server-max-requests", max.as_str()];
        let first = Pod::start(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), &args, taskset).await;
        let port = first.addr.port();
        let mut pods = vec![first];
        for i in 2..=3 {
            let bind = SocketAddr::from((Ipv4Addr::new(127, 0, 0, i), port));
            pods.push(Pod::start(bind, &args, taskset).await);
        }
        Backend::Hyper(pods)
    }

    fn addrs(&self) -> Vec<SocketAddr> {
        match self {
            Backend::Hyper(pods) => pods.iter().map(|pod| pod.addr).collect(),
            Backend::Nginx(nginx) => nginx.addrs(),
        }
    }

    /// What the server says it served, when it says.
    async fn served(&self) -> Option<u64> {
        match self {
            Backend::Hyper(_) => None,
            Backend::Nginx(nginx) => Some(nginx.served().await),
        }
    }

    fn describe(&self, options: &Options) -> String {
        match self {
            Backend::Hyper(_) => format!(
                "hyper HTTP/2 server processes (`loadgen --serve --server-max-requests {}`), default settings",
                options.server_max_requests.unwrap_or_default()
            ),
            Backend::Nginx(_) => "nginx with its defaults (keepalive_requests 1000, \
                                  http2_max_concurrent_streams 128), one worker"
                .into(),
        }
    }

    async fn stop(self) {
        match self {
            Backend::Hyper(pods) => {
                for pod in pods {
                    pod.stop().await;
                }
            }
            Backend::Nginx(nginx) => drop(nginx),
        }
    }
}

// ---------------------------------------------------------------------------
// Raw hyper, reconnecting.

/// One pod's connection, opened again when it fails.
struct RawPod {
    addr: SocketAddr,
    /// The connection, with a number that tells it from the next one.
    current: Mutex<Option<(u64, http2::SendRequest<ReqBody>)>>,
    opened: AtomicU64,
    /// One connect at a time.
    connecting: tokio::sync::Mutex<()>,
}

#[derive(Clone)]
struct Reconnecting {
    pods: Arc<Vec<RawPod>>,
    next: Arc<AtomicUsize>,
    /// Drops a pod's connection at the first request that fails on it,
    /// rather than when it has closed.
    on_error: bool,
}

impl Reconnecting {
    fn new(addrs: &[SocketAddr], on_error: bool) -> Self {
        Reconnecting {
            pods: Arc::new(
                addrs
                    .iter()
                    .map(|&addr| RawPod {
                        addr,
                        current: Mutex::new(None),
                        opened: AtomicU64::new(0),
                        connecting: tokio::sync::Mutex::new(()),
                    })
                    .collect(),
            ),
            next: Arc::new(AtomicUsize::new(0)),
            on_error,
        }
    }

    fn open(pod: &RawPod) -> Option<(u64, http2::SendRequest<ReqBody>)> {
        pod.current
            .lock()
            .unwrap()
            .as_ref()
            .filter(|(_, sender)| !sender.is_closed())
            .cloned()
    }

    async fn sender(pod: &RawPod) -> Result<(u64, http2::SendRequest<ReqBody>), String> {
        if let Some(sender) = Self::open(pod) {
            return Ok(sender);
        }
        let _turn = pod.connecting.lock().await;
        if let Some(sender) = Self::open(pod) {
            return Ok(sender);
        }
        let stream = tokio::net::TcpStream::connect(pod.addr)
            .await
            .map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        let id = pod.opened.fetch_add(1, Ordering::Relaxed);
        *pod.current.lock().unwrap() = Some((id, sender.clone()));
        Ok((id, sender))
    }

    async fn send(&self, request: Request<ReqBody>) -> Result<(), String> {
        let pod = &self.pods[self.next.fetch_add(1, Ordering::Relaxed) % self.pods.len()];
        let (id, mut sender) = Self::sender(pod).await?;
        let result = async {
            sender.ready().await?;
            let response = sender.send_request(request).await?;
            response.into_body().collect().await.map(drop)
        }
        .await;
        if let Err(e) = result {
            if self.on_error {
                // The connection failed or went away: the next caller
                // opens a new one.
                let mut current = pod.current.lock().unwrap();
                if current.as_ref().is_some_and(|(current, _)| *current == id) {
                    *current = None;
                }
            }
            return Err(e.to_string());
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// The cells.

#[derive(Clone, Copy)]
enum Row {
    /// Reconnects when the connection has closed.
    RawOnClose,
    /// Reconnects at the first failed request.
    RawOnError,
    Client,
}

const ROWS: [Row; 3] = [Row::RawOnClose, Row::RawOnError, Row::Client];

impl Row {
    fn name(self) -> &'static str {
        match self {
            Row::RawOnClose => "raw hyper, new conn. on close",
            Row::RawOnError => "raw hyper, new conn. on error",
            Row::Client => "Client",
        }
    }
}

#[derive(Default, Clone)]
struct Cell {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    failed: u64,
    /// Served by the server beyond the answered requests (nginx only).
    unheard: Option<i64>,
    /// `Client` only: requests sent again (refused above a `GOAWAY`'s
    /// last-stream-id), and requests that found no connection serving and
    /// waited for one ([`Client::stats`]).
    replayed: Option<u64>,
    waited: Option<u64>,
    /// µs of this process's CPU per answered request.
    cpu_us: f64,
    /// This process's write syscalls per answered request.
    writes: f64,
}

/// `callers` callers, each sending one request after another for `time`.
async fn drive<F, Fut>(send: F, callers: usize, time: Duration) -> (u64, Vec<u32>, u64, Duration)
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send,
{
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    let started = Instant::now();
    for _ in 0..callers {
        let (send, stop, failed) = (send.clone(), stop.clone(), failed.clone());
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let sent = Instant::now();
                match send().await {
                    Ok(()) => {
                        latencies.push(sent.elapsed().as_micros().min(u32::MAX as u128) as u32)
                    }
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            latencies
        });
    }
    tokio::time::sleep(time).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    while let Some(done) = tasks.join_next().await {
        latencies.extend(done.expect("a caller panicked"));
    }
    let elapsed = started.elapsed();
    (
        latencies.len() as u64,
        latencies,
        failed.load(Ordering::Relaxed),
        elapsed,
    )
}

async fn cell(row: Row, backend: &Backend, pods: usize, callers: usize, time: Duration) -> Cell {
    let addrs = &backend.addrs()[..pods];
    let before = backend.served().await;
    let cpu_before = crate::process::usage(None);
    let mut stats = None;
    let (answered, mut latencies, failed, elapsed) = match row {
        Row::RawOnClose | Row::RawOnError => {
            let raw = Reconnecting::new(addrs, matches!(row, Row::RawOnError));
            let send = move || {
                let raw = raw.clone();
                async move { raw.send(request()).await }
            };
            drive(send, callers, time).await
        }
        Row::Client => {
            let client = Client::builder()
                .endpoints(addrs.iter().map(|addr| {
                    format!("http://{addr}")
                        .parse::<http::Uri>()
                        .expect("a URI")
                }))
                .build::<ReqBody>()
                .expect("build the client");
            let counted = client.clone();
            let send = move || {
                let client = client.clone();
                async move {
                    let response = client.oneshot(request()).await.map_err(|e| e.to_string())?;
                    response
                        .into_body()
                        .collect()
                        .await
                        .map(drop)
                        .map_err(|e| e.to_string())
                }
            };
            let driven = drive(send, callers, time).await;
            stats = Some(counted.stats());
            driven
        }
    };
    let (cpu_ns, writes) = cpu_before.zip(crate::process::usage(None)).map_or(
        (f64::NAN, f64::NAN),
        |(before, after)| {
            let (cpu_ns, writes) = after.since(&before);
            (cpu_ns as f64, writes as f64)
        },
    );
    let after = backend.served().await;
    latencies.sort_unstable();
    let quantile = |q: f64| {
        if latencies.is_empty() {
            return f64::NAN;
        }
        let i = ((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1;
        f64::from(latencies[i])
    };
    Cell {
        rps: answered as f64 / elapsed.as_secs_f64(),
        p50_us: quantile(0.5),
        p99_us: quantile(0.99),
        failed,
        // The status request counts itself once per read.
        unheard: before
            .zip(after)
            .map(|(before, after)| after as i64 - before as i64 - 1 - answered as i64),
        replayed: stats.as_ref().map(|s| s.replayed),
        waited: stats.as_ref().map(|s| s.waited),
        cpu_us: cpu_ns / 1_000.0 / answered.max(1) as f64,
        writes: writes / answered.max(1) as f64,
    }
}

fn request() -> Request<ReqBody> {
    Request::get("http://svc/")
        .body(ReqBody::default())
        .expect("a request")
}

fn median(mut values: Vec<f64>) -> f64 {
    values.retain(|v| v.is_finite());
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

pub(crate) fn main(options: &Options) {
    let pinning = crate::process::pin();
    crate::runtime().block_on(run(options, pinning));
}

async fn run(options: &Options, pinning: Pinning) {
    let taskset = match &pinning {
        Pinning::Pinned(taskset) => Some(taskset),
        Pinning::Unpinned(_) => None,
    };
    let backend = Backend::start(options, taskset).await;
    let seconds = options.seconds.unwrap_or(5);
    let rounds = if options.rounds_given {
        options.rounds
    } else {
        5
    };
    let concurrency = if options.concurrency.is_empty() {
        vec![64, 256]
    } else {
        options.concurrency.clone()
    };
    println!(
        "loadgen --process: {}; pods on 127.0.0.1-3; {}; {seconds} s per cell, {rounds} rounds",
        backend.describe(options),
        match &pinning {
            Pinning::Pinned(_) => "loadgen on CPU 0, the backend on CPU 1".to_string(),
            Pinning::Unpinned(why) => format!("unpinned ({why})"),
        }
    );
    let time = Duration::from_secs(seconds);
    let mut summary = Vec::new();
    for pods in [1, 3] {
        for &callers in &concurrency {
            // [round][row]
            let mut cells: Vec<[Cell; 3]> = Vec::new();
            for round in 0..rounds {
                let mut pair: [Cell; 3] = Default::default();
                // The rows' order rotated by one each round.
                for i in (0..ROWS.len()).map(|i| (i + round) % ROWS.len()) {
                    eprint!(
                        "\r{pods} pod(s), {callers:>3} callers, round {}/{rounds}, {:<24}",
                        round + 1,
                        ROWS[i].name()
                    );
                    pair[i] = cell(ROWS[i], &backend, pods, callers, time).await;
                }
                cells.push(pair);
            }
            eprint!("\r{:72}\r", "");
            let ratio = |f: fn(&Cell) -> f64, raw: usize| {
                median(
                    cells
                        .iter()
                        .map(|pair| f(&pair[2]) / f(&pair[raw]))
                        .collect(),
                )
            };
            println!("\n{pods} pod(s), {callers} callers:");
            println!(
                "  {:<30} {:>9} {:>9} {:>9} {:>8} {:>7} {:>9} {:>14} {:>9} {:>9}",
                "client",
                "req/s",
                "p50 µs",
                "p99 µs",
                "CPU µs",
                "writes",
                "failed",
                "served unheard",
                "replayed",
                "waited"
            );
            for (i, row) in ROWS.iter().enumerate() {
                let column =
                    |f: fn(&Cell) -> f64| median(cells.iter().map(|pair| f(&pair[i])).collect());
                let failed: u64 = cells.iter().map(|pair| pair[i].failed).sum();
                let unheard: Option<i64> = cells.iter().map(|pair| pair[i].unheard).sum();
                let replayed: Option<u64> = cells.iter().map(|pair| pair[i].replayed).sum();
                let waited: Option<u64> = cells.iter().map(|pair| pair[i].waited).sum();
                let or_dash = |n: Option<String>| n.unwrap_or_else(|| "-".into());
                println!(
                    "  {:<30} {:>9.0} {:>9.0} {:>9.0} {:>8.2} {:>7.3} {:>9} {:>14} {:>9} {:>9}",
                    row.name(),
                    column(|c| c.rps),
                    column(|c| c.p50_us),
                    column(|c| c.p99_us),
                    column(|c| c.cpu_us),
                    column(|c| c.writes),
                    failed,
                    or_dash(unheard.map(|n| n.to_string())),
                    or_dash(replayed.map(|n| n.to_string())),
                    or_dash(waited.map(|n| n.to_string())),
                );
            }
            let mut ratios = [(0.0, 0.0); 2];
            for (raw, ratios) in ratios.iter_mut().enumerate() {
                *ratios = (ratio(|c| c.rps, raw), ratio(|c| c.p99_us, raw));
                println!(
                    "  Client / {}: throughput {:.2}x, p99 {:.2}x",
                    ROWS[raw].name(),
                    ratios.0,
                    ratios.1
                );
            }
            summary.push(ratios);
        }
    }
    for raw in 0..2 {
        let throughputs: Vec<f64> = summary.iter().map(|s| s[raw].0).collect();
        println!(
            "\nClient / {}: median throughput ratio {:.2}x (lowest {:.2}x), highest p99 ratio {:.2}x",
            ROWS[raw].name(),
            median(throughputs.clone()),
            throughputs.iter().copied().fold(f64::INFINITY, f64::min),
            summary.iter().map(|s| s[raw].1).fold(0.0, f64::max),
        );
    }
    backend.stop().await;
}
