//! `loadgen --process`: the backend in a child process (`loadgen --serve`,
//! module `serve`), six HTTP/2 clients against it, and what each costs on
//! both sides. What it runs and how to read it: the docs of `main.rs`.

use std::collections::HashMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tower::ServiceExt;
use tower_max_connection_age::Client;
use tower_max_connection_age::connector::default_builder;

use crate::{
    BODY_WAITS, CELL_LIMIT, H2, Load, Options, Raw, ReqBody, Sender, Via, client, drive,
    h2_connection, json_number, loadavg, median, min_max, raw_connection, wait_connected,
};

// ---------------------------------------------------------------------------
// The rows.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Row {
    Raw,
    Client,
    ClientRotating,
    Client2,
    ClientMax4,
    H2,
    Legacy,
    Tonic,
}

/// In the order they are printed; each round runs them rotated.
const ROWS: [Row; 8] = [
    Row::Raw,
    Row::Client,
    Row::ClientRotating,
    Row::Client2,
    Row::ClientMax4,
    Row::H2,
    Row::Legacy,
    Row::Tonic,
];

const DEFAULT_CONCURRENCY: [usize; 3] = [1, 64, 256];

/// The age of the rotating `Client` row: a new connection every 100 ms
/// (plus jitter), each one made before the old one drains.
const ROTATION_AGE: Duration = Duration::from_millis(100);

impl Row {
    fn name(self) -> &'static str {
        match self {
            Row::Raw => "raw hyper",
            Row::Client => "Client",
            Row::ClientRotating => "Client, 100 ms age",
            Row::Client2 => "Client, 2 connections",
            Row::ClientMax4 => "Client, max 4 connections",
            Row::H2 => "h2 client",
            Row::Legacy => "hyper-util legacy Client",
            Row::Tonic => "tonic Channel",
        }
    }
}

/// hyper-util's pooling client, HTTP/2 only, with `TCP_NODELAY` and Tokio's
/// timer like the others. It connects on its first request (the warm-up).
fn legacy() -> hyper_util::client::legacy::Client<HttpConnector, ReqBody> {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .http2_only(true)
        .timer(TokioTimer::new())
        .build(http)
}

/// tonic's `Channel` (its `Endpoint` defaults: `TCP_NODELAY`, hyper's HTTP/2
/// settings, a `Buffer` of 1024 in front of the connection) used as the
/// `tower::Service<http::Request<tonic::body::Body>>` it is: no gRPC codec.
async fn tonic_channel(addr: SocketAddr) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("the endpoint's URI")
        .connect()
        .await
        .expect("tonic: connect to the backend")
}

fn to_tonic(request: Request<ReqBody>) -> Request<tonic::body::Body> {
    request.map(tonic::body::Body::new)
}

/// `Client` with one connection that may grow to four while it is at the
/// server's stream limit with requests waiting
/// (`max_connections_per_endpoint(4)`).
async fn client_max4(addr: SocketAddr) -> Client<ReqBody> {
    let client = Client::builder()
        .endpoint(format!("http://{addr}").parse().unwrap())
        .max_connections_per_endpoint(4)
        .build::<ReqBody>()
        .expect("build the client");
    wait_connected(&client, 1).await;
    client
}

/// A cell through a `Client`, with the connections it opened.
async fn client_cell(client: Client<ReqBody>, concurrency: usize, run: &Run<'_>) -> Cell {
    let mut cell = cell(Via(client.clone()), concurrency, run).await;
    cell.opened = client.stats().opened as f64;
    cell
}

/// One cell: `row` on fresh connections at `concurrency`.
async fn row_cell(row: Row, addr: SocketAddr, concurrency: usize, run: &Run<'_>) -> Cell {
    match row {
        Row::Raw => cell(Raw(raw_connection(addr).await), concurrency, run).await,
        Row::Client => client_cell(client(addr, None, 1).await, concurrency, run).await,
        Row::ClientRotating => {
            let age = Some(ROTATION_AGE);
            client_cell(client(addr, age, 1).await, concurrency, run).await
        }
        Row::Client2 => client_cell(client(addr, None, 2).await, concurrency, run).await,
        Row::ClientMax4 => client_cell(client_max4(addr).await, concurrency, run).await,
        Row::H2 => {
            let send = h2_connection(addr, &default_builder()).await;
            cell(H2(send), concurrency, run).await
        }
        Row::Legacy => cell(Via(legacy()), concurrency, run).await,
        Row::Tonic => {
            let channel = tonic_channel(addr).await;
            let sender = Via(channel.map_request(to_tonic as fn(_) -> _));
            cell(sender, concurrency, run).await
        }
    }
}

// ---------------------------------------------------------------------------
// Pinning: loadgen on CPU 0, the backend on CPU 1.

/// Set in the environment of the `loadgen` that runs under `taskset -c 0`.
pub(crate) const PINNED: &str = "LOADGEN_PINNED";

pub(crate) enum Pinning {
    Pinned(PathBuf),
    Unpinned(String),
}

/// Before any runtime exists: unless this process already is the pinned
/// one, re-executes it under `taskset -c 0` and exits with its status (so
/// Tokio, which sizes its pool by the CPUs a process may use, starts one
/// worker). Without `taskset`, or without both CPUs 0 and 1, runs unpinned.
pub(crate) fn pin() -> Pinning {
    let Some(taskset) = on_path("taskset") else {
        return Pinning::Unpinned("no taskset on PATH".into());
    };
    if std::env::var_os(PINNED).is_some() {
        return Pinning::Pinned(taskset);
    }
    match allowed_cpus() {
        Some(cpus) if cpus.contains(&0) && cpus.contains(&1) => {}
        Some(cpus) => {
            return Pinning::Unpinned(format!("this process may run only on CPUs {cpus:?}"));
        }
        None => return Pinning::Unpinned("no Cpus_allowed_list in /proc/self/status".into()),
    }
    let exe = std::env::current_exe().expect("the path of this executable");
    let status = std::process::Command::new(&taskset)
        .arg("-c")
        .arg("0")
        .arg(exe)
        .args(std::env::args_os().skip(1))
        .env(PINNED, "1")
        .status();
    match status {
        Ok(status) => std::process::exit(status.code().unwrap_or(1)),
        Err(e) => Pinning::Unpinned(format!("{} did not start: {e}", taskset.display())),
    }
}

fn on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// The CPUs this process may run on (`Cpus_allowed_list`, such as `0-1,4`).
fn allowed_cpus() -> Option<Vec<usize>> {
    cpus_of("/proc/self/status")
}

fn cpus_of(status: &str) -> Option<Vec<usize>> {
    let status = std::fs::read_to_string(status).ok()?;
    let list = status
        .lines()
        .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))?;
    let mut cpus = Vec::new();
    for part in list.trim().split(',') {
        match part.split_once('-') {
            Some((lo, hi)) => cpus.extend(lo.parse::<usize>().ok()?..=hi.parse().ok()?),
            None => cpus.push(part.parse().ok()?),
        }
    }
    Some(cpus)
}

// ---------------------------------------------------------------------------
// The backend process.

struct BackendProcess {
    child: Child,
    /// Closing it ends the backend.
    stdin: Option<ChildStdin>,
    /// Held so the backend never writes into a closed pipe.
    _stdout: BufReader<ChildStdout>,
    addr: SocketAddr,
    pid: u32,
}

/// `loadgen --serve` (this executable), under `taskset -c 1` if given.
pub(crate) fn backend_command(taskset: Option<&PathBuf>) -> Command {
    let exe = std::env::current_exe().expect("the path of this executable");
    let mut command = match taskset {
        Some(taskset) => {
            let mut command = Command::new(taskset);
            command.arg("-c").arg("1").arg(exe);
            command
        }
        None => Command::new(exe),
    };
    command.arg("--serve");
    command
}

/// The port a backend process prints first, and its stdout (kept open, so
/// that the backend's later writes never fail).
pub(crate) async fn read_port(child: &mut Child) -> (u16, BufReader<ChildStdout>) {
    let mut stdout = BufReader::new(child.stdout.take().expect("the backend's stdout"));
    let mut line = String::new();
    tokio::time::timeout(Duration::from_secs(10), stdout.read_line(&mut line))
        .await
        .expect("the backend printed no port within 10 s")
        .expect("read the backend's port");
    let port = line
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("the backend printed `{}`, not a port", line.trim()));
    (port, stdout)
}

/// One backend process serving at an address of its own: a pod.
pub(crate) struct Pod {
    child: Child,
    _stdout: BufReader<ChildStdout>,
    pub(crate) addr: SocketAddr,
}

impl Pod {
    /// `loadgen --serve --bind BIND ARGS..` (under `taskset -c 1` if
    /// given); the port it prints completes the address.
    pub(crate) async fn start(bind: SocketAddr, args: &[&str], taskset: Option<&PathBuf>) -> Pod {
        let mut command = backend_command(taskset);
        command
            .arg("--bind")
            .arg(bind.to_string())
            .args(args)
            .env_remove(PINNED)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("start a backend process");
        let (port, stdout) = read_port(&mut child).await;
        Pod {
            child,
            _stdout: stdout,
            addr: SocketAddr::new(bind.ip(), port),
        }
    }

    pub(crate) async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

impl BackendProcess {
    /// `loadgen --serve` (this executable), under `taskset -c 1` if given.
    async fn start(options: &Options, taskset: Option<&PathBuf>) -> BackendProcess {
        let mut command = backend_command(taskset);
        if let Some(n) = options.server_streams {
            command.arg("--server-streams").arg(n.to_string());
        }
        command
            .arg("--handler-ms")
            .arg(options.handler_ms.to_string())
            .arg("--response-bytes")
            .arg(options.response_bytes.to_string())
            .env_remove(PINNED)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("start the backend process");
        // taskset execs the backend: one process, one pid.
        let pid = child.id().expect("the backend's pid");
        let stdin = child.stdin.take();
        let (port, stdout) = read_port(&mut child).await;
        BackendProcess {
            child,
            stdin,
            _stdout: stdout,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            pid,
        }
    }

    /// Closes its stdin and waits for it to exit (kills it after 5 s).
    async fn stop(mut self) {
        drop(self.stdin.take());
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            eprintln!(
                "loadgen: the backend did not exit within 5 s of its stdin closing; killing it"
            );
            let _ = self.child.kill().await;
        }
    }
}

// ---------------------------------------------------------------------------
// CPU time and write syscalls of a process, from /proc.

/// One process at one moment: CPU time per thread (ns) and write syscalls.
pub(crate) struct Usage {
    threads: HashMap<u64, u64>,
    syscw: u64,
}

/// `pid`, or this process with `None`. CPU time per thread is the first
/// field of `/proc/PID/task/TID/schedstat`: the scheduler's runtime in ns,
/// what `utime + stime` in `/proc/PID/stat` is made of, there in 10 ms
/// ticks. Write syscalls are `syscw` in `/proc/PID/io` (write, writev,
/// sendmsg, ... counted for the whole process).
pub(crate) fn usage(pid: Option<u32>) -> Option<Usage> {
    let dir = match pid {
        Some(pid) => format!("/proc/{pid}"),
        None => "/proc/self".to_string(),
    };
    let mut threads = HashMap::new();
    for entry in std::fs::read_dir(format!("{dir}/task")).ok()?.flatten() {
        let Ok(tid) = entry.file_name().to_string_lossy().parse::<u64>() else {
            continue;
        };
        // A thread that ended while we listed them is skipped.
        let Ok(text) = std::fs::read_to_string(entry.path().join("schedstat")) else {
            continue;
        };
        if let Some(ns) = text.split_whitespace().next().and_then(|v| v.parse().ok()) {
            threads.insert(tid, ns);
        }
    }
    let io = std::fs::read_to_string(format!("{dir}/io")).ok()?;
    let syscw = io
        .lines()
        .find_map(|line| line.strip_prefix("syscw:"))
        .and_then(|v| v.trim().parse().ok())?;
    Some(Usage { threads, syscw })
}

impl Usage {
    /// CPU ns and write syscalls since `before`. A thread started since
    /// counts from 0; the CPU of one that ended in between is lost (Tokio's
    /// workers live for the whole run, and nothing here uses its blocking
    /// pool).
    pub(crate) fn since(&self, before: &Usage) -> (u64, u64) {
        let cpu = self
            .threads
            .iter()
            .map(|(tid, ns)| ns.saturating_sub(before.threads.get(tid).copied().unwrap_or(0)))
            .sum();
        (cpu, self.syscw.saturating_sub(before.syscw))
    }
}

// ---------------------------------------------------------------------------
// One cell.

/// What every cell of a run shares.
struct Run<'a> {
    load: Load,
    options: &'a Options,
    backend_pid: u32,
}

#[derive(Debug, Clone)]
struct Cell {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    /// The slowest 0.1%, and the slowest request: where requests that
    /// waited long for room under a stream limit show.
    p999_us: f64,
    max_us: f64,
    /// Per timed request (answered ones): this process's CPU µs, the
    /// backend's CPU µs, this process's and the backend's write syscalls.
    client_cpu_us: f64,
    server_cpu_us: f64,
    client_writes: f64,
    server_writes: f64,
    /// Per timed request: the times the caller waited for a frame of the
    /// response body (`BODY_WAITS`).
    body_waits: f64,
    /// Connections a `Client` opened in the cell (warm-up included); NaN
    /// for the other rows.
    opened: f64,
    failed: usize,
    first_error: Option<String>,
}

impl Cell {
    fn hung(failed: usize, limit: Duration) -> Cell {
        Cell {
            rps: f64::NAN,
            p50_us: f64::NAN,
            p99_us: f64::NAN,
            p999_us: f64::NAN,
            max_us: f64::NAN,
            client_cpu_us: f64::NAN,
            server_cpu_us: f64::NAN,
            client_writes: f64::NAN,
            server_writes: f64::NAN,
            body_waits: f64::NAN,
            opened: f64::NAN,
            failed,
            first_error: Some(format!("the cell did not finish within {limit:?}")),
        }
    }
}

/// An untimed warm-up, then `--requests` timed requests, with both
/// processes' CPU time and write syscalls read just before and after the
/// timed part.
async fn cell<S: Sender + Clone>(sender: S, concurrency: usize, run: &Run<'_>) -> Cell {
    let options = run.options;
    let requests = options.requests;
    let warm_up = (requests / 20).clamp(100, 2_000);
    // Long enough for slow handlers and low rates: twice the least time the
    // cell can take, on top of the usual limit.
    let least = options.rate.map_or(0.0, |rate| requests as f64 / rate)
        + (options.handler_ms as f64 / 1000.0) * (requests as f64 / concurrency as f64);
    let limit = CELL_LIMIT + Duration::from_secs_f64(2.0 * least);
    let limited = |n| {
        tokio::time::timeout(
            limit,
            drive(&sender, &run.load, concurrency, n, options.rate),
        )
    };
    let Ok((_, _, warm_failed, warm_error)) = limited(warm_up).await else {
        return Cell::hung(warm_up + requests, limit);
    };
    let before = (usage(None), usage(Some(run.backend_pid)));
    let waits_before = BODY_WAITS.load(Ordering::Relaxed);
    let Ok((elapsed, mut latencies, failed, first_error)) = limited(requests).await else {
        return Cell::hung(requests, limit);
    };
    let waits = BODY_WAITS.load(Ordering::Relaxed) - waits_before;
    let after = (usage(None), usage(Some(run.backend_pid)));
    let answered = latencies.len() as f64;
    let per_request = |before: &Option<Usage>, after: &Option<Usage>| match (before, after) {
        (Some(before), Some(after)) if answered > 0.0 => {
            let (cpu_ns, writes) = after.since(before);
            (cpu_ns as f64 / 1_000.0 / answered, writes as f64 / answered)
        }
        _ => (f64::NAN, f64::NAN),
    };
    let (client_cpu_us, client_writes) = per_request(&before.0, &after.0);
    let (server_cpu_us, server_writes) = per_request(&before.1, &after.1);
    latencies.sort_unstable();
    let quantile = |q: f64| -> f64 {
        if latencies.is_empty() {
            return f64::NAN;
        }
        let i = ((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[i] as f64 / 1_000.0
    };
    Cell {
        rps: answered / elapsed.as_secs_f64(),
        p50_us: quantile(0.50),
        p99_us: quantile(0.99),
        p999_us: quantile(0.999),
        max_us: quantile(1.0),
        client_cpu_us,
        server_cpu_us,
        client_writes,
        server_writes,
        body_waits: if answered > 0.0 {
            waits as f64 / answered
        } else {
            f64::NAN
        },
        opened: f64::NAN,
        failed: failed + warm_failed,
        first_error: first_error.or(warm_error),
    }
}

// ---------------------------------------------------------------------------
// The run and its report.

/// The two tables printed per concurrency.
const TABLES: [&str; 2] = ["throughput, latency", "cost per request"];

/// The figures of a cell, in the tables' order: name in the JSON, heading,
/// table, decimals, and how to read it from a cell.
type Figure = (&'static str, &'static str, usize, usize, fn(&Cell) -> f64);

const FIGURES: [Figure; 10] = [
    ("rps", "req/s", 0, 0, |c| c.rps),
    ("p50_us", "p50 µs", 0, 1, |c| c.p50_us),
    ("p99_us", "p99 µs", 0, 1, |c| c.p99_us),
    ("p999_us", "p99.9 µs", 0, 0, |c| c.p999_us),
    ("max_us", "max µs", 0, 0, |c| c.max_us),
    ("client_cpu_us", "cli CPU", 1, 2, |c| c.client_cpu_us),
    ("server_cpu_us", "srv CPU", 1, 2, |c| c.server_cpu_us),
    ("client_writes", "cli wr", 1, 3, |c| c.client_writes),
    ("server_writes", "srv wr", 1, 3, |c| c.server_writes),
    ("body_waits", "body wt", 1, 3, |c| c.body_waits),
];

/// Runs `--process` and prints its tables (and JSON line).
pub(crate) fn main(options: &Options) {
    let pinning = pin();
    crate::runtime().block_on(run(options, pinning));
}

async fn run(options: &Options, pinning: Pinning) {
    let taskset = match &pinning {
        Pinning::Pinned(taskset) => Some(taskset),
        Pinning::Unpinned(_) => None,
    };
    let backend = BackendProcess::start(options, taskset).await;
    let backend_cpus = cpus_of(&format!("/proc/{}/status", backend.pid));
    let client_cpus = allowed_cpus();
    let workers = tokio::runtime::Handle::current().metrics().num_workers();
    let load = Load {
        uri: format!("http://{}/", backend.addr).parse().unwrap(),
        method: if options.body_bytes == 0 {
            Method::GET
        } else {
            Method::POST
        },
        body: Bytes::from(vec![b'x'; options.body_bytes]),
    };
    let run = Run {
        load,
        options,
        backend_pid: backend.pid,
    };
    let concurrency = if options.concurrency.is_empty() {
        DEFAULT_CONCURRENCY.to_vec()
    } else {
        options.concurrency.clone()
    };
    let load_before = loadavg();
    let started = Instant::now();
    // results[round][concurrency index][row index]
    let mut results: Vec<Vec<Vec<Cell>>> = Vec::with_capacity(options.rounds);
    let cells = options.rounds * concurrency.len() * ROWS.len();
    let mut done = 0;
    for round in 0..options.rounds {
        let mut by_concurrency = Vec::with_capacity(concurrency.len());
        for &c in &concurrency {
            let mut by_row: Vec<Option<Cell>> = vec![None; ROWS.len()];
            for k in 0..ROWS.len() {
                let ri = (k + round) % ROWS.len();
                let row = ROWS[ri];
                eprint!(
                    "\rloadgen --process: round {}/{}, concurrency {c:>3}, {:<26} cell {:>3}/{cells}, {:>4.0} s",
                    round + 1,
                    options.rounds,
                    row.name(),
                    done + 1,
                    started.elapsed().as_secs_f64()
                );
                let _ = std::io::stderr().flush();
                let result = row_cell(row, backend.addr, c, &run).await;
                if let Some(e) = &result.first_error {
                    eprintln!(
                        "\nloadgen --process: {} at concurrency {c}: {} failed requests, first: {e}",
                        row.name(),
                        result.failed
                    );
                }
                by_row[ri] = Some(result);
                done += 1;
            }
            by_concurrency.push(
                by_row
                    .into_iter()
                    .map(|c| c.expect("every cell ran"))
                    .collect(),
            );
        }
        results.push(by_concurrency);
    }
    let elapsed = started.elapsed();
    eprintln!(
        "\rloadgen --process: {cells} cells in {:.1} s{:60}",
        elapsed.as_secs_f64(),
        ""
    );
    backend.stop().await;

    // The header.
    let cpus = |cpus: &Option<Vec<usize>>| match cpus {
        Some(cpus) => cpus
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(","),
        None => "?".into(),
    };
    let streams = match options.server_streams {
        Some(n) => n.to_string(),
        None => "hyper's default (200)".into(),
    };
    println!(
        "loadgen --process: backend `loadgen --serve` (hyper HTTP/2 server, max concurrent streams {streams}, handler {} ms, {} B response body) in a child process",
        options.handler_ms, options.response_bytes
    );
    match &pinning {
        Pinning::Pinned(_) => println!(
            "  pinned with taskset: loadgen on CPU {} ({workers} Tokio worker{}), backend on CPU {}",
            cpus(&client_cpus),
            if workers == 1 { "" } else { "s" },
            cpus(&backend_cpus)
        ),
        Pinning::Unpinned(why) => println!(
            "  not pinned ({why}): loadgen on CPUs {} ({workers} Tokio workers), backend on CPUs {}",
            cpus(&client_cpus),
            cpus(&backend_cpus)
        ),
    }
    println!(
        "  {} timed requests per cell, {} rounds, {}, {}; load average {load_before} before, {} after, {:.1} s",
        options.requests,
        options.rounds,
        if options.body_bytes == 0 {
            "GET, empty body".to_string()
        } else {
            format!("POST, {} B body", options.body_bytes)
        },
        match options.rate {
            Some(rate) => format!("every client paced to {rate:.0} requests/s"),
            None => "as fast as each client goes".into(),
        },
        loadavg(),
        elapsed.as_secs_f64(),
    );
    println!(
        "  per request: cli/srv CPU = µs of CPU of loadgen / of the backend (schedstat), cli/srv wr = write syscalls (syscw),"
    );
    println!("  body wt = times the caller waited for a frame of the response body");
    println!(
        "  figures: medians over rounds; x raw: median of the per-round ratios to raw hyper; [..]: range of the throughput ratios"
    );

    let mut json_cells = Vec::new();
    let mut failed_total = 0;
    let mut targets = Vec::new();
    for (ci, &c) in concurrency.iter().enumerate() {
        let raw = ROWS.iter().position(|&r| r == Row::Raw).unwrap();
        let raws: Vec<&Cell> = results.iter().map(|round| &round[ci][raw]).collect();
        let mut throughput = vec![f64::NAN; ROWS.len()];
        // Per row: each figure's (median, median ratio), and what follows
        // the first table's figures.
        let mut figures = Vec::with_capacity(ROWS.len());
        let mut notes = Vec::with_capacity(ROWS.len());
        for (ri, row) in ROWS.iter().enumerate() {
            let cells: Vec<&Cell> = results.iter().map(|round| &round[ci][ri]).collect();
            let failed: usize = cells.iter().map(|c| c.failed).sum();
            failed_total += failed;
            let mut json = format!("{{\"variant\":\"{}\",\"concurrency\":{c}", row.name());
            let mut values = Vec::with_capacity(FIGURES.len());
            for (key, _, _, _, get) in FIGURES {
                let value = median(&cells.iter().map(|c| get(c)).collect::<Vec<_>>());
                let ratio = median(
                    &cells
                        .iter()
                        .zip(&raws)
                        .map(|(c, r)| get(c) / get(r))
                        .collect::<Vec<_>>(),
                );
                json.push_str(&format!(
                    ",\"{key}\":{},\"{key}_ratio\":{}",
                    json_number(value),
                    json_number(ratio)
                ));
                if key == "rps" {
                    throughput[ri] = ratio;
                }
                values.push((value, ratio));
            }
            let ratios: Vec<f64> = cells
                .iter()
                .zip(&raws)
                .map(|(c, r)| c.rps / r.rps)
                .collect();
            let (lo, hi) = min_max(&ratios);
            let mut note = format!(" {failed:>6}  [{lo:.2}..{hi:.2}]");
            let opened = median(&cells.iter().map(|c| c.opened).collect::<Vec<_>>());
            if opened.is_finite() {
                note.push_str(&format!("  opened {opened:.0}"));
            }
            if let Some(rate) = options.rate {
                let rps = median(&cells.iter().map(|c| c.rps).collect::<Vec<_>>());
                if rps.is_nan() || rps < 0.95 * rate {
                    note.push_str("  behind the rate");
                }
            }
            json.push_str(&format!(
                ",\"connections_opened\":{},\"failed\":{failed}}}",
                json_number(opened)
            ));
            json_cells.push(json);
            figures.push(values);
            notes.push(note);
        }
        for (table, title) in TABLES.iter().enumerate() {
            println!();
            println!("concurrency {c}: {title}");
            let mut header = format!("  {:<30}", "variant");
            for (_, heading, _, _, _) in FIGURES.iter().filter(|f| f.2 == table) {
                header.push_str(&format!(" {heading:>9} {:>6}", "x raw"));
            }
            if table == 0 {
                header.push_str(&format!(" {:>6}  [rps ratios]", "failed"));
            }
            println!("{header}");
            for (ri, row) in ROWS.iter().enumerate() {
                let mut line = format!("  {:<30}", row.name());
                for (figure, &(value, ratio)) in FIGURES.iter().zip(&figures[ri]) {
                    if figure.2 == table {
                        let decimals = figure.3;
                        line.push_str(&format!(" {value:>9.decimals$} {ratio:>6.3}"));
                    }
                }
                if table == 0 {
                    line.push_str(&notes[ri]);
                }
                println!("{line}");
            }
        }
        // Rotation costs the tail nothing: p99 with a new connection every
        // 100 ms against `Client` without an age, per round.
        {
            let at = |row: Row| ROWS.iter().position(|&r| r == row).unwrap();
            let (rotating, still) = (at(Row::ClientRotating), at(Row::Client));
            let p99_ratio = median(
                &results
                    .iter()
                    .map(|round| round[ci][rotating].p99_us / round[ci][still].p99_us)
                    .collect::<Vec<_>>(),
            );
            targets.push(format!(
                "concurrency {c}: p99 rotating every {} ms / no age {p99_ratio:.3}, target <= 1.05: {}",
                ROTATION_AGE.as_millis(),
                if p99_ratio <= 1.05 { "met" } else { "MISSED" }
            ));
        }
        // The stream-limit targets: more callers than the server takes streams.
        if let Some(streams) = options.server_streams
            && c > streams as usize
        {
            let ratio = |row: Row| throughput[ROWS.iter().position(|&r| r == row).unwrap()];
            let verdict = |met: bool| if met { "met" } else { "MISSED" };
            let client = ratio(Row::Client);
            targets.push(format!(
                "concurrency {c} vs a {streams}-stream server: throughput Client / raw {client:.3}, target >= 0.95: {}",
                verdict(client >= 0.95)
            ));
            // With a handler that takes time, the limit caps raw hyper at
            // streams / handler time; extra connections lift the cap.
            if options.handler_ms > 0 {
                let max4 = ratio(Row::ClientMax4);
                targets.push(format!(
                    "concurrency {c} vs a {streams}-stream server, {} ms handler: throughput Client max 4 connections / raw {max4:.3}, target >= 2: {}",
                    options.handler_ms,
                    verdict(max4 >= 2.0)
                ));
            }
        }
    }
    if !targets.is_empty() {
        println!();
        for target in &targets {
            println!("{target}");
        }
    }
    println!();
    println!(
        "failed requests, all cells: {failed_total}{}",
        if failed_total == 0 {
            "  target 0: met"
        } else {
            "  target 0: MISSED"
        }
    );

    if options.json {
        let option_number = |x: Option<f64>| x.map_or("null".to_string(), json_number);
        println!(
            "{{\"mode\":\"process\",\"requests\":{},\"rounds\":{},\"server_streams\":{},\"handler_ms\":{},\"response_bytes\":{},\"rate\":{},\"pinned\":{},\"client_workers\":{workers},\"failed\":{failed_total},\"cells\":[{}]}}",
            options.requests,
            options.rounds,
            options
                .server_streams
                .map_or("null".to_string(), |n| n.to_string()),
            options.handler_ms,
            options.response_bytes,
            option_number(options.rate),
            matches!(pinning, Pinning::Pinned(_)),
            json_cells.join(","),
        );
    }
}
