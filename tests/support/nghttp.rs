//! nghttp2's tools as real peers: `nghttpd`, an HTTP/2 server that is not
//! hyper, and `h2load`, a load generator that speaks HTTP/2 (h2c) and
//! HTTP/1.1 and reports what it lost.
//!
//! ```ignore
//! let nghttpd = Nghttpd::start(Ipv4Addr::new(127, 0, 0, 7), 0, 7).await; // h2c, 7 streams
//! let uri = nghttpd.uri(Nghttpd::PATH);                                    // a small file
//! let report = h2load(&["-n", "200", "-c", "4"], &uri).await;              // bounded
//! assert_eq!(report.failed, 0, "{report}");
//! ```
//!
//! [`Nghttpd::start`] serves a fresh temporary directory holding one small
//! file ([`Nghttpd::PATH`], [`Nghttpd::BODY`]) in plain h2c mode (`--no-tls`:
//! prior knowledge, or the HTTP/1.1 `Upgrade` dance; nghttpd answers no plain
//! HTTP/1.1 request) with the given `SETTINGS_MAX_CONCURRENT_STREAMS`
//! (`--max-concurrent-streams`), and returns once it accepts connections.
//! Dropping [`Nghttpd`] kills the process and removes the directory.
//!
//! nghttpd cannot delay a response: it has no option for it (1.52, Debian
//! 12). Its source has a query meant to make it never answer
//! (`?nghttpd_do_not_respond_to_req=yes`, for testing client timeouts), but
//! in 1.52 the check compares the query *with* its `?` to the string without
//! it, so it never matches and the file is served. Slow answers come from
//! the crate's own test server (`support::server::app`: `/slow`, `/wait`).
//!
//! [`h2load`] runs `h2load` with the given options against a URI, bounded by
//! [`H2LOAD_LIMIT`], and parses its summary into an [`H2LoadReport`].
//!
//! The binaries are looked up on `PATH`, then in `/usr/sbin`, `/usr/bin`,
//! `/usr/local/sbin` and `/usr/local/bin`; the `NGHTTPD` and `H2LOAD`
//! environment variables override that. A missing binary is a panic saying
//! how to install it, not a skipped test: `.ci/run` installs both, so a skip
//! would hide a broken CI set-up.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// Bound on waiting for nghttpd to accept connections.
const START_LIMIT: Duration = Duration::from_secs(10);

/// Bound on one `h2load` run; the tests' runs take a few seconds at most.
pub const H2LOAD_LIMIT: Duration = Duration::from_secs(30);

const INSTALL: &str = "Install nghttp2's tools, for example with \
                       `apt-get install -y nghttp2-server nghttp2-client` on Debian \
                       (.ci/run does), or set NGHTTPD=/path/to/nghttpd and \
                       H2LOAD=/path/to/h2load.";

/// Where binary `name` is, if anywhere: the environment variable `var`, then
/// `PATH` and the usual system directories.
fn find_binary(var: &str, name: &str) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(var) {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(
            ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"]
                .into_iter()
                .map(PathBuf::from),
        )
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

fn require_binary(var: &str, name: &str) -> PathBuf {
    find_binary(var, name).unwrap_or_else(|| {
        panic!(
            "{name} is not installed (looked at ${var}, on PATH, in /usr/sbin, /usr/bin, \
             /usr/local/sbin and /usr/local/bin). {INSTALL}"
        )
    })
}

/// A fresh directory under the system's temporary directory.
fn temp_dir(kind: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "tmca-{kind}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir).expect("create a temporary directory");
    dir
}

/// A running `nghttpd`. Dropping it kills the process and removes its
/// directory.
pub struct Nghttpd {
    addr: SocketAddr,
    dir: PathBuf,
    child: Child,
}

impl Nghttpd {
    /// The path of the one file nghttpd serves.
    pub const PATH: &'static str = "/hello.txt";
    /// That file's content.
    pub const BODY: &'static str = "hello from nghttpd\n";

    /// Starts nghttpd in h2c mode on `ip:port` (a free port when `port` is
    /// 0), announcing `max_concurrent_streams`. Panics if nghttpd is not
    /// installed, exits, or does not accept connections within 10 s.
    pub async fn start(ip: Ipv4Addr, port: u16, max_concurrent_streams: u32) -> Nghttpd {
        let binary = require_binary("NGHTTPD", "nghttpd");
        let addr = if port == 0 {
            free_port(ip)
        } else {
            SocketAddr::from((ip, port))
        };
        let dir = temp_dir("nghttpd");
        let htdocs = dir.join("htdocs");
        std::fs::create_dir_all(&htdocs).expect("create the document root");
        std::fs::write(htdocs.join(Self::PATH.trim_start_matches('/')), Self::BODY)
            .expect("write the served file");
        // Output goes to a file, not a pipe nobody reads: a full pipe would
        // block nghttpd mid-test.
        let log = std::fs::File::create(dir.join("nghttpd.log")).expect("create the log file");
        let child = Command::new(&binary)
            .arg("--no-tls")
            .arg(format!("--address={ip}"))
            .arg(format!("--htdocs={}", htdocs.display()))
            .arg(format!("--max-concurrent-streams={max_concurrent_streams}"))
            .arg(addr.port().to_string())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log file"))
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                let _ = std::fs::remove_dir_all(&dir);
                panic!("cannot run {}: {e}. {INSTALL}", binary.display())
            });
        let mut nghttpd = Nghttpd { addr, dir, child };
        nghttpd.wait_ready().await;
        nghttpd
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://addr` followed by `path`.
    pub fn uri(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// What nghttpd has written to stdout and stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("nghttpd.log")).unwrap_or_default()
    }

    /// Waits until a TCP connect succeeds, failing with nghttpd's own output
    /// if it exits first.
    async fn wait_ready(&mut self) {
        let deadline = tokio::time::Instant::now() + START_LIMIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll nghttpd") {
                panic!("nghttpd exited at start ({status}):\n{}", self.log());
            }
            if TcpStream::connect(self.addr).await.is_ok() {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "nghttpd did not accept connections on {} within {START_LIMIT:?}:\n{}",
                self.addr,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Nghttpd {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A port of `ip` nobody listens on right now.
fn free_port(ip: Ipv4Addr) -> SocketAddr {
    let listener = std::net::TcpListener::bind((ip, 0)).expect("bind a free port");
    listener.local_addr().expect("local addr")
}

/// `h2load`'s summary, as it counts.
///
/// In h2load's terms a request is *succeeded* when its response had a 2xx or
/// 3xx status, *failed* when it was not succeeded (a 4xx or 5xx answer, or
/// never answered), *errored* when it was never answered (its stream or
/// connection failed, or it was never sent), and *timeout* when `-T`/`-N`
/// cut it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct H2LoadReport {
    pub total: u64,
    pub started: u64,
    pub done: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub errored: u64,
    pub timeout: u64,
    pub status_2xx: u64,
    pub status_3xx: u64,
    pub status_4xx: u64,
    pub status_5xx: u64,
    /// The `finished in ...` line, e.g. `finished in 5.10ms, 19623.23 req/s, 712.88KB/s`.
    pub finished: String,
    /// Everything h2load printed, for failure messages.
    pub output: String,
}

impl fmt::Display for H2LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}; requests: {} total, {} started, {} done, {} succeeded, {} failed, \
             {} errored, {} timeout; status codes: {} 2xx, {} 3xx, {} 4xx, {} 5xx",
            self.finished,
            self.total,
            self.started,
            self.done,
            self.succeeded,
            self.failed,
            self.errored,
            self.timeout,
            self.status_2xx,
            self.status_3xx,
            self.status_4xx,
            self.status_5xx
        )
    }
}

/// The numbers before each of `labels` in `line`, which reads like
/// `"12 total, 3 started"`; `None` if one is missing.
fn counts<const N: usize>(line: &str, labels: [&str; N]) -> Option<[u64; N]> {
    let mut out = [0; N];
    for (slot, label) in out.iter_mut().zip(labels) {
        *slot = line
            .split(',')
            .map(str::trim)
            .find_map(|part| part.strip_suffix(label)?.trim().parse().ok())?;
    }
    Some(out)
}

impl H2LoadReport {
    /// Parses h2load's output; `None` if its summary lines are missing.
    pub fn parse(output: &str) -> Option<H2LoadReport> {
        let line = |prefix: &str| {
            output
                .lines()
                .find_map(|l| l.trim().strip_prefix(prefix).map(str::to_owned))
        };
        let [total, started, done, succeeded, failed, errored, timeout] = counts(
            &line("requests:")?,
            [
                " total",
                " started",
                " done",
                " succeeded",
                " failed",
                " errored",
                " timeout",
            ],
        )?;
        let [status_2xx, status_3xx, status_4xx, status_5xx] =
            counts(&line("status codes:")?, [" 2xx", " 3xx", " 4xx", " 5xx"])?;
        Some(H2LoadReport {
            total,
            started,
            done,
            succeeded,
            failed,
            errored,
            timeout,
            status_2xx,
            status_3xx,
            status_4xx,
            status_5xx,
            finished: format!("finished {}", line("finished ")?),
            output: output.to_owned(),
        })
    }
}

/// Runs `h2load ARGS URI` (add `--h1` to `args` for HTTP/1.1) and returns its
/// summary. Panics if h2load is not installed, runs longer than
/// [`H2LOAD_LIMIT`] (it is killed), or prints no summary.
pub async fn h2load(args: &[&str], uri: &str) -> H2LoadReport {
    let binary = require_binary("H2LOAD", "h2load");
    let child = Command::new(&binary)
        .args(args)
        .arg(uri)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}. {INSTALL}", binary.display()));
    let out = tokio::time::timeout(H2LOAD_LIMIT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("h2load {args:?} {uri} ran longer than {H2LOAD_LIMIT:?}"))
        .expect("wait for h2load");
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    H2LoadReport::parse(&output).unwrap_or_else(|| {
        panic!(
            "h2load {args:?} {uri} ({}) printed no summary:\n{output}",
            out.status
        )
    })
}
