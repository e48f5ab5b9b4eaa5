//! Soak: does rotation hurt or lose requests while things go wrong?
//!
//! Five pods (127.0.0.1 .. 127.0.0.5, one port) behind an embedded DNS
//! server; the client resolves `svc.soak.local`, ages its connections after
//! `--age-ms` (100 ms) and sends GET and POST requests from `--concurrency`
//! (256) workers for `--seconds` (30), each request bounded by a 1 s
//! `tower::timeout::TimeoutLayer`. Pod 4 is served by this crate's `Server`,
//! which sends `GOAWAY` to its connections by age all the time; pod 5 sits
//! behind a fault-injecting TCP proxy. The client pings with a 1 s keepalive
//! interval and timeout. Meanwhile
//! faults take turns, one per phase (3 s of fault, then 1 s to recover),
//! each on one of pods 1..3:
//!
//! - `goaway`: the pod's next connections answer with `GOAWAY` before
//!   processing anything, or refuse their first streams (`REFUSED_STREAM`);
//! - `kill`: the pod is killed (its connections reset) and restarted on the
//!   same address at once, twice in the phase;
//! - `refuse`: the pod is killed and stays down (connects are refused) until
//!   the fault ends, then restarts on the same address;
//! - `dns`: the DNS server stops answering until the fault ends;
//! - `hang`: the pod's next connections complete the HTTP/2 handshake and
//!   take streams but never answer (the 1 s timeout ends those requests);
//! - `stall`: the pod stops answering on every connection, old and new,
//!   while its connections and PINGs carry on (a hung process);
//! - `blackhole`: pod 5's proxy drops everything both ways and sends no FIN
//!   or RST (a dead node, a partition), for its connections old and new.
//!
//! The slowest request of each phase (response head and body, bounded by
//! the 1 s timeout twice) shows how long callers were blocked.
//!
//! Every request carries a unique `x-request-id`; every pod instance records
//! the ids it executed, and at the end an id executed twice is a duplicate.
//! Failures are sorted: `failed_safe` are `Draining` / `Refused` errors that
//! reached the caller (the crate should have replayed them), `failed_other`
//! everything else. A table breaks failures down by kind and by the phase in
//! which the request was sent. Open file descriptors are counted once the
//! fixtures run (before the client exists) and at the end, once the client
//! is dropped, every pod is back and the count has settled.
//!
//! ```text
//! cargo run --release --features hickory --example soak [-- --seconds 30 --concurrency 256 --age-ms 100 --json]
//! ```
//!
//! With `--json` the last line is
//! `{"requests":..,"ok":..,"failed_safe":..,"failed_other":..,"replayed":..,"duplicates":..,"rotations":..,"open_fds_start":..,"open_fds_end":..}`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use support::backend::{Backend, Record, Script};
use support::dns::DnsServer;
use support::fault::{Fault, FaultProxy};
use tokio::time::Instant;
use tower::timeout::TimeoutLayer;
use tower::{BoxError, ServiceBuilder, ServiceExt};
use tower_max_connection_age::resolve::HickoryResolver;
use tower_max_connection_age::{Client, ErrorKind};

const NAME: &str = "svc.soak.local.";
/// The per-request bound (response head, then again for the body).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a fault lasts, then how long the system gets to recover.
const FAULT: Duration = Duration::from_secs(3);
const RECOVER: Duration = Duration::from_secs(1);
/// The pods faults are injected on (pod 4 ages its connections itself).
const FAULTY_PODS: [u8; 3] = [1, 2, 3];
/// The pod behind the fault proxy.
const PROXIED_POD: u8 = 5;

struct Args {
    seconds: u64,
    concurrency: usize,
    age: Duration,
    json: bool,
}

fn args() -> Result<Args, String> {
    let mut args = Args {
        seconds: 30,
        concurrency: 256,
        age: Duration::from_millis(100),
        json: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut number = |name: &str| {
            it.next()
                .ok_or(format!("{name} needs a value"))?
                .parse::<u64>()
                .map_err(|_| format!("{name} needs a number"))
        };
        match flag.as_str() {
            "--seconds" => args.seconds = number("--seconds")?,
            "--concurrency" => args.concurrency = number("--concurrency")? as usize,
            "--age-ms" => args.age = Duration::from_millis(number("--age-ms")?),
            "--json" => args.json = true,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if args.seconds == 0 || args.concurrency == 0 || args.age.is_zero() {
        return Err("need --seconds > 0, --concurrency > 0, --age-ms > 0".into());
    }
    Ok(args)
}

/// What is going on while a request is sent: the phase's fault (a phase is
/// the fault and the recovery after it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Phase {
    Warmup = 0,
    GoAway,
    Kill,
    Refuse,
    Dns,
    Hang,
    Stall,
    BlackHole,
}

const CYCLE: [Phase; 7] = [
    Phase::GoAway,
    Phase::Kill,
    Phase::Refuse,
    Phase::Dns,
    Phase::Hang,
    Phase::Stall,
    Phase::BlackHole,
];
const PHASES: [Phase; 8] = [
    Phase::Warmup,
    Phase::GoAway,
    Phase::Kill,
    Phase::Refuse,
    Phase::Dns,
    Phase::Hang,
    Phase::Stall,
    Phase::BlackHole,
];

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Warmup => "warmup",
            Phase::GoAway => "goaway",
            Phase::Kill => "kill",
            Phase::Refuse => "refuse",
            Phase::Dns => "dns",
            Phase::Hang => "hang",
            Phase::Stall => "stall",
            Phase::BlackHole => "blackhole",
        }
    }

    fn from_index(i: usize) -> Phase {
        PHASES[i]
    }
}

/// The pods, and the record of every instance ever started (killed ones too).
struct Pods {
    port: u16,
    live: Vec<Option<Backend>>,
    records: Vec<Arc<Record>>,
    aged: tower_max_connection_age::server::Server,
    /// Pod 5: a backend on 127.0.1.5 behind a fault proxy on 127.0.0.5.
    proxy: FaultProxy,
    _proxied: Backend,
}

impl Pods {
    async fn start() -> Pods {
        let aged = tower_max_connection_age::server::Server::builder()
            .max_connection_age(Duration::from_millis(250))
            .build()
            .expect("valid server configuration");
        let first = Backend::start(Ipv4Addr::new(127, 0, 0, 1), 0).await;
        let port = first.addr.port();
        let proxied = Backend::start(Ipv4Addr::new(127, 0, 1, PROXIED_POD), 0).await;
        let proxy =
            FaultProxy::start(Ipv4Addr::new(127, 0, 0, PROXIED_POD), port, proxied.addr).await;
        let mut pods = Pods {
            port,
            records: vec![first.record.clone(), proxied.record.clone()],
            live: vec![Some(first)],
            aged,
            proxy,
            _proxied: proxied,
        };
        for i in 2..=4 {
            let pod = pods.spawn(i).await;
            pods.live.push(Some(pod));
        }
        pods
    }

    fn ips(&self) -> Vec<Ipv4Addr> {
        (1..=self.live.len() as u8)
            .chain([PROXIED_POD])
            .map(|i| Ipv4Addr::new(127, 0, 0, i))
            .collect()
    }

    async fn spawn(&mut self, i: u8) -> Backend {
        let ip = Ipv4Addr::new(127, 0, 0, i);
        let pod = if i == 4 {
            Backend::start_aged(ip, self.port, self.aged.clone()).await
        } else {
            Backend::start(ip, self.port).await
        };
        self.records.push(pod.record.clone());
        pod
    }

    fn pod(&self, i: u8) -> &Backend {
        self.live[i as usize - 1].as_ref().expect("pod is running")
    }

    async fn kill(&mut self, i: u8) {
        if let Some(pod) = self.live[i as usize - 1].take() {
            pod.kill().await;
        }
    }

    async fn restart(&mut self, i: u8) {
        if self.live[i as usize - 1].is_none() {
            let pod = self.spawn(i).await;
            self.live[i as usize - 1] = Some(pod);
        }
    }

    async fn kill_all(&mut self) {
        for i in 1..=self.live.len() as u8 {
            self.kill(i).await;
        }
    }
}

/// Runs one phase's fault on `pod` for at most `length`, and always undoes it.
async fn run_fault(phase: Phase, pod: u8, pods: &mut Pods, dns: &DnsServer, length: Duration) {
    let start = Instant::now();
    let fault_end = start + FAULT.min(length);
    match phase {
        Phase::Warmup => {}
        Phase::GoAway => pods.pod(pod).script([
            Script::GoAwayBeforeProcessing(0),
            Script::RefuseStreams(2),
            Script::GoAwayBeforeProcessing(0),
            Script::RefuseStreams(8),
            Script::GoAwayBeforeProcessing(0),
            Script::RefuseStreams(32),
        ]),
        Phase::Kill => {
            let second = start + FAULT / 2;
            tokio::time::sleep_until(start + Duration::from_millis(200)).await;
            pods.kill(pod).await;
            pods.restart(pod).await;
            if second < fault_end {
                tokio::time::sleep_until(second).await;
                pods.kill(pod).await;
                pods.restart(pod).await;
            }
        }
        Phase::Refuse => {
            pods.kill(pod).await;
            tokio::time::sleep_until(fault_end).await;
            pods.restart(pod).await;
        }
        Phase::Dns => {
            dns.pause();
            tokio::time::sleep_until(fault_end).await;
            dns.resume();
        }
        Phase::Hang => pods.pod(pod).script([Script::Hang; 3]),
        Phase::Stall => {
            pods.pod(pod).hang(true);
            tokio::time::sleep_until(fault_end).await;
            pods.pod(pod).hang(false);
        }
        Phase::BlackHole => {
            pods.proxy.set(Fault::BlackHole);
            tokio::time::sleep_until(fault_end).await;
            pods.proxy.set(Fault::None);
        }
    }
    tokio::time::sleep_until(start + length).await;
}

/// How one request ended.
enum Outcome {
    Ok,
    Safe(String),
    Other(String),
}

/// The innermost error of a chain, as text.
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = err;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

fn classify(err: BoxError) -> Outcome {
    if err.is::<tower::timeout::error::Elapsed>() {
        return Outcome::Other("Timeout (1 s per request)".into());
    }
    match err.downcast::<tower_max_connection_age::Error>() {
        Ok(err) => {
            let label = match std::error::Error::source(&*err) {
                Some(source) => format!("{:?}: {}", err.kind(), root_cause(source)),
                None => format!("{:?}", err.kind()),
            };
            match err.kind() {
                ErrorKind::Draining | ErrorKind::Refused => Outcome::Safe(label),
                _ => Outcome::Other(label),
            }
        }
        Err(other) => Outcome::Other(format!("other: {}", root_cause(&*other))),
    }
}

/// Counters the progress line reads.
#[derive(Default)]
struct Live {
    requests: AtomicU64,
    ok: AtomicU64,
    failed_safe: AtomicU64,
    failed_other: AtomicU64,
    phase: AtomicUsize,
    /// The slowest request sent in each phase, in microseconds.
    slowest_us: [AtomicU64; PHASES.len()],
}

/// Failures per (safe?, label, phase).
type Tally = BTreeMap<(bool, String, Phase), u64>;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|dir| dir.count())
        .unwrap_or(0)
}

/// What each open fd points to (`socket:[inode]`, `anon_inode:[eventfd]`, ...).
fn fd_targets() -> BTreeMap<String, String> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return BTreeMap::new();
    };
    dir.filter_map(|entry| {
        let entry = entry.ok()?;
        let target = std::fs::read_link(entry.path()).ok()?;
        Some((
            entry.file_name().to_string_lossy().into_owned(),
            target.to_string_lossy().into_owned(),
        ))
    })
    .collect()
}

/// The TCP and UDP sockets of this network namespace by inode: protocol,
/// local and remote address, state (from /proc/net).
fn sockets() -> HashMap<String, String> {
    let mut found = HashMap::new();
    for proto in ["tcp", "udp"] {
        let Ok(table) = std::fs::read_to_string(format!("/proc/net/{proto}")) else {
            continue;
        };
        for line in table.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() < 10 {
                continue;
            }
            let addr = |hex: &str| {
                let (ip, port) = hex.split_once(':').unwrap_or((hex, "0"));
                let ip = u32::from_str_radix(ip, 16).unwrap_or(0);
                let port = u16::from_str_radix(port, 16).unwrap_or(0);
                format!("{}:{port}", Ipv4Addr::from(u32::from_be(ip)))
            };
            let state = match cols[3] {
                "01" => "ESTABLISHED",
                "06" => "TIME_WAIT",
                "07" => "CLOSE",
                "08" => "CLOSE_WAIT",
                "0A" => "LISTEN",
                "04" => "FIN_WAIT1",
                "05" => "FIN_WAIT2",
                "09" => "LAST_ACK",
                other => other,
            };
            found.insert(
                cols[9].to_owned(),
                format!("{proto} {} -> {} {state}", addr(cols[1]), addr(cols[2])),
            );
        }
    }
    found
}

/// Prints the fds open now that were not open (or pointed elsewhere) at start.
fn print_new_fds(start: &BTreeMap<String, String>) {
    let sockets = sockets();
    for (fd, target) in fd_targets() {
        if start.get(&fd) == Some(&target) {
            continue;
        }
        let socket = target
            .strip_prefix("socket:[")
            .and_then(|inode| sockets.get(inode.trim_end_matches(']')));
        println!(
            "  fd {fd} -> {target} {}",
            socket.map(String::as_str).unwrap_or("")
        );
    }
}

/// Polls the fd count until it is back to `target` or has not moved for
/// 2 s, for at most 15 s.
async fn settled_fds(target: usize) -> usize {
    let limit = Instant::now() + Duration::from_secs(15);
    let mut last = open_fds();
    let mut since = Instant::now();
    loop {
        if last <= target || since.elapsed() >= Duration::from_secs(2) || Instant::now() >= limit {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = open_fds();
        if now != last {
            last = now;
            since = Instant::now();
        }
    }
}

type Service = tower::timeout::Timeout<Client<Full<Bytes>>>;

async fn worker(
    service: Service,
    uri: String,
    next_id: Arc<AtomicU64>,
    live: Arc<Live>,
    stop: Arc<AtomicBool>,
) -> Tally {
    let mut tally = Tally::new();
    while !stop.load(Ordering::Relaxed) {
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        let phase = Phase::from_index(live.phase.load(Ordering::Relaxed));
        let request = if id.is_multiple_of(2) {
            Request::get(&uri)
                .header("x-request-id", id.to_string())
                .body(Full::new(Bytes::new()))
        } else {
            let body = Bytes::from(vec![b'p'; 64 + (id % 512) as usize]);
            Request::post(&uri)
                .header("x-request-id", id.to_string())
                .header("content-type", "application/octet-stream")
                .body(Full::new(body))
        }
        .expect("valid request");
        live.requests.fetch_add(1, Ordering::Relaxed);
        let sent = Instant::now();
        let outcome = match service.clone().oneshot(request).await {
            Ok(response) => {
                let status = response.status();
                match tokio::time::timeout(REQUEST_TIMEOUT, response.into_body().collect()).await {
                    Ok(Ok(_)) if status.is_success() => Outcome::Ok,
                    Ok(Ok(_)) => Outcome::Other(format!("status {status}")),
                    Ok(Err(e)) => Outcome::Other(format!("body: {}", root_cause(&e))),
                    Err(_) => Outcome::Other("Timeout reading the body (1 s)".into()),
                }
            }
            Err(e) => classify(e),
        };
        live.slowest_us[phase as usize]
            .fetch_max(sent.elapsed().as_micros() as u64, Ordering::Relaxed);
        match outcome {
            Outcome::Ok => {
                live.ok.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Safe(label) => {
                live.failed_safe.fetch_add(1, Ordering::Relaxed);
                *tally.entry((true, label, phase)).or_default() += 1;
            }
            Outcome::Other(label) => {
                live.failed_other.fetch_add(1, Ordering::Relaxed);
                *tally.entry((false, label, phase)).or_default() += 1;
            }
        }
    }
    tally
}

fn print_table(tally: &Tally) {
    let mut rows: BTreeMap<(bool, &str), HashMap<Phase, u64>> = BTreeMap::new();
    for ((safe, label, phase), n) in tally {
        *rows
            .entry((*safe, label.as_str()))
            .or_default()
            .entry(*phase)
            .or_default() += n;
    }
    let width = rows
        .keys()
        .map(|(_, l)| l.len())
        .max()
        .unwrap_or(5)
        .clamp(5, 90);
    let mut header = format!("{:<6} {:<width$}", "class", "error");
    for phase in PHASES {
        header.push_str(&format!(" {:>7}", phase.name()));
    }
    header.push_str(&format!(" {:>7}", "total"));
    println!("failures by kind and by the phase the request was sent in:");
    println!("{header}");
    if rows.is_empty() {
        println!("(none)");
    }
    for ((safe, label), per_phase) in &rows {
        let class = if *safe { "safe" } else { "other" };
        let label: String = label.chars().take(width).collect();
        let mut line = format!("{class:<6} {label:<width$}");
        for phase in PHASES {
            line.push_str(&format!(" {:>7}", per_phase.get(&phase).unwrap_or(&0)));
        }
        line.push_str(&format!(" {:>7}", per_phase.values().sum::<u64>()));
        println!("{line}");
    }
}

#[tokio::main]
async fn main() {
    let args = match args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("soak: {e}");
            std::process::exit(2);
        }
    };

    let mut pods = Pods::start().await;
    let dns = DnsServer::start().await;
    dns.set_a(NAME, &pods.ips(), 1);
    let open_fds_start = open_fds();
    let fds_at_start = fd_targets();

    let resolver = HickoryResolver::with_nameserver(dns.addr()).expect("resolver");
    let client = Client::builder()
        .uri(
            format!("http://svc.soak.local:{}", pods.port)
                .parse()
                .unwrap(),
        )
        .resolver(resolver)
        .resolve_interval(Duration::from_secs(1))
        .max_connection_age(args.age)
        .ready_timeout(Duration::from_millis(500))
        .keep_alive_interval(Duration::from_secs(1))
        .keep_alive_timeout(Duration::from_secs(1))
        .build::<Full<Bytes>>()
        .expect("valid configuration");
    let service = ServiceBuilder::new()
        .layer(TimeoutLayer::new(REQUEST_TIMEOUT))
        .service(client.clone());
    let uri = format!("http://svc.soak.local:{}/", pods.port);
    println!(
        "soak: 5 pods on 127.0.0.1-5:{} via DNS {} ({NAME}), concurrency {}, age {:?}, {} s; faults on pods 1-3, pod 4 ages connections server-side, pod 5 behind a fault proxy",
        pods.port,
        dns.addr(),
        args.concurrency,
        args.age,
        args.seconds
    );

    let live = Arc::new(Live::default());
    let stop = Arc::new(AtomicBool::new(false));
    let next_id = Arc::new(AtomicU64::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency {
        workers.spawn(worker(
            service.clone(),
            uri.clone(),
            next_id.clone(),
            live.clone(),
            stop.clone(),
        ));
    }

    let progress = {
        let live = live.clone();
        let client = client.clone();
        tokio::spawn(async move {
            let start = Instant::now();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tick.tick().await;
                let phase = Phase::from_index(live.phase.load(Ordering::Relaxed));
                let stats = client.stats();
                eprintln!(
                    "t={:>3}s requests {:>8} ok {:>8} failed_safe {:>5} failed_other {:>6} | fault {:<6} connections {} rotations {} replayed {}",
                    start.elapsed().as_secs(),
                    live.requests.load(Ordering::Relaxed),
                    live.ok.load(Ordering::Relaxed),
                    live.failed_safe.load(Ordering::Relaxed),
                    live.failed_other.load(Ordering::Relaxed),
                    phase.name(),
                    client.connection_count(),
                    stats.rotated,
                    stats.replayed,
                );
            }
        })
    };

    // The schedule: a warm-up second, then the faults in turn.
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let mut schedule =
        std::iter::once((Phase::Warmup, 1u8)).chain((0..).flat_map(|cycle: usize| {
            CYCLE
                .iter()
                .enumerate()
                .map(move |(i, phase)| (*phase, FAULTY_PODS[(cycle + i) % FAULTY_PODS.len()]))
        }));
    while Instant::now() < deadline {
        let (phase, pod) = schedule.next().expect("endless schedule");
        let length = if phase == Phase::Warmup {
            RECOVER
        } else {
            FAULT + RECOVER
        };
        let length = length.min(deadline - Instant::now());
        live.phase.store(phase as usize, Ordering::Relaxed);
        if phase != Phase::Warmup {
            eprintln!("-- fault {} on pod 127.0.0.{pod} --", phase.name());
        }
        run_fault(phase, pod, &mut pods, &dns, length).await;
    }
    stop.store(true, Ordering::Relaxed);

    let mut tally = Tally::new();
    while let Some(done) = workers.join_next().await {
        for (key, n) in done.expect("worker panicked") {
            *tally.entry(key).or_default() += n;
        }
    }
    progress.abort();
    let _ = progress.await;
    let stats = client.stats();
    drop(service);
    drop(client);
    // Every pod is running again (faults undo themselves); let connections close.
    let open_fds_end = settled_fds(open_fds_start).await;
    if open_fds_end > open_fds_start {
        println!("fds open at the end that were not at the start:");
        print_new_fds(&fds_at_start);
    }

    let mut executions: HashMap<String, usize> = HashMap::new();
    for record in &pods.records {
        for (id, n) in record.executed() {
            *executions.entry(id).or_default() += n;
        }
    }
    let duplicates = executions.values().filter(|n| **n > 1).count();
    let requests = live.requests.load(Ordering::Relaxed);
    let ok = live.ok.load(Ordering::Relaxed);
    let failed_safe = live.failed_safe.load(Ordering::Relaxed);
    let failed_other = live.failed_other.load(Ordering::Relaxed);
    pods.kill_all().await;

    println!();
    print_table(&tally);
    let slowest: Vec<(Phase, u64)> = PHASES
        .iter()
        .map(|phase| {
            let us = live.slowest_us[*phase as usize].load(Ordering::Relaxed);
            (*phase, us / 1000)
        })
        .collect();
    println!(
        "slowest request per phase (ms): {}",
        slowest
            .iter()
            .map(|(phase, ms)| format!("{} {ms}", phase.name()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!();
    println!(
        "requests {requests}, ok {ok}, failed_safe {failed_safe}, failed_other {failed_other}, executed ids {}, duplicates {duplicates}",
        executions.len()
    );
    println!(
        "client: opened {} rotated {} removed {} replayed {} waited {}; open fds {open_fds_start} at start, {open_fds_end} at the end",
        stats.opened, stats.rotated, stats.removed, stats.replayed, stats.waited
    );
    if args.json {
        println!(
            "{{\"requests\":{requests},\"ok\":{ok},\"failed_safe\":{failed_safe},\"failed_other\":{failed_other},\"replayed\":{},\"duplicates\":{duplicates},\"rotations\":{},\"open_fds_start\":{open_fds_start},\"open_fds_end\":{open_fds_end},\"slowest_ms\":{{{}}}}}",
            stats.replayed,
            stats.rotated,
            slowest
                .iter()
                .map(|(phase, ms)| format!("\"{}\":{ms}", phase.name()))
                .collect::<Vec<_>>()
                .join(",")
        );
    }
}
