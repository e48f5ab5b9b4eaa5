//! A real HAProxy in TCP mode on loopback: the L4 balancer of a virtual IP.
//!
//! ```ignore
//! let haproxy = HaProxy::start(&[pod1, pod2, pod3], &[pod4]).await; // pod4 declared, disabled
//! let stream = TcpStream::connect(haproxy.addr()).await?;            // round-robin over 1..3
//! haproxy.enable_server("s4").await;                                 // pod4 joins the rotation
//! ```
//!
//! The test writes a configuration into a fresh temporary directory (`mode
//! tcp`, `balance roundrobin`, one `server sN` line per backend; the
//! `standby` ones carry `disabled`, i.e. maintenance), starts `haproxy -f cfg
//! -db` as a child process and waits until its listener and its admin
//! `stats socket` answer. Servers are enabled at run time over that socket
//! (HAProxy's runtime API, written to with a plain `UnixStream`). No health
//! checks run, so the backends see only the connections clients make.
//!
//! Dropping [`HaProxy`] kills the process and removes the directory.
//!
//! The `haproxy` binary is looked up on `PATH`, then in `/usr/sbin` and
//! `/usr/local/sbin`; the `HAPROXY` environment variable overrides that. If
//! it is missing, [`HaProxy::start`] panics with a message saying how to
//! install it: `.ci/run` installs it, so a silently skipped test would hide a
//! broken CI set-up.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio::process::{Child, Command};

/// Bound on waiting for HAProxy to start and to apply a runtime command.
const START_LIMIT: Duration = Duration::from_secs(10);

/// The backend section's name in the generated configuration.
pub const BACKEND: &str = "be";

/// A running HAProxy. Dropping it kills the process.
pub struct HaProxy {
    addr: SocketAddr,
    dir: PathBuf,
    socket: PathBuf,
    child: Child,
}

/// Where the `haproxy` binary is, if anywhere.
pub fn binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("HAPROXY") {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/local/sbin".into()])
        .map(|dir| dir.join("haproxy"))
        .find(|candidate| candidate.is_file())
}

/// The configuration: `servers` are `s1..sN` in rotation, `standby` follow as
/// `s(N+1)..` in maintenance (`disabled`) until enabled.
pub fn config(
    listen: SocketAddr,
    socket: &Path,
    servers: &[SocketAddr],
    standby: &[SocketAddr],
) -> String {
    let mut cfg = format!(
        "global
    maxconn 512
    stats socket {socket} mode 600 level admin
    stats timeout 10s

defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s

frontend fe
    bind {listen}
    default_backend {BACKEND}

backend {BACKEND}
    balance roundrobin
",
        socket = socket.display()
    );
    let all = servers
        .iter()
        .map(|a| (a, ""))
        .chain(standby.iter().map(|a| (a, " disabled")));
    for (i, (addr, flag)) in all.enumerate() {
        cfg.push_str(&format!("    server s{} {addr}{flag}\n", i + 1));
    }
    cfg
}

impl HaProxy {
    /// Starts HAProxy on a free port of `127.0.0.1` balancing over `servers`
    /// (`s1..`), with `standby` declared after them but disabled. Panics if
    /// `haproxy` is not installed or does not come up within 10 s.
    pub async fn start(servers: &[SocketAddr], standby: &[SocketAddr]) -> HaProxy {
        const INSTALL: &str = "Install it, for example with `apt-get install -y haproxy` \
                               on Debian (.ci/run does), or set HAPROXY=/path/to/haproxy.";
        let binary = binary().unwrap_or_else(|| {
            panic!("haproxy is not installed (looked on PATH, in /usr/sbin and /usr/local/sbin). {INSTALL}")
        });
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tmca-haproxy-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).expect("create the HAProxy directory");
        let socket = dir.join("admin.sock");
        let addr = free_port();
        let cfg_path = dir.join("haproxy.cfg");
        std::fs::write(&cfg_path, config(addr, &socket, servers, standby))
            .expect("write the HAProxy configuration");
        let child = Command::new(&binary)
            .arg("-f")
            .arg(&cfg_path)
            .arg("-db")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                let _ = std::fs::remove_dir_all(&dir);
                panic!("cannot run {}: {e}. {INSTALL}", binary.display())
            });
        let mut haproxy = HaProxy {
            addr,
            dir,
            socket,
            child,
        };
        haproxy.wait_ready().await;
        haproxy
    }

    /// The address clients connect to (the "virtual IP").
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits until the frontend accepts and the admin socket answers, failing
    /// with HAProxy's own output if it exits first.
    async fn wait_ready(&mut self) {
        let deadline = tokio::time::Instant::now() + START_LIMIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll haproxy") {
                let mut stderr = String::new();
                if let Some(mut err) = self.child.stderr.take() {
                    let _ = err.read_to_string(&mut stderr).await;
                }
                panic!("haproxy exited at start ({status}):\n{stderr}");
            }
            if self.socket.exists()
                && self.command("show info").await.is_ok()
                && TcpStream::connect(self.addr).await.is_ok()
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "haproxy did not come up within {START_LIMIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends one command to the runtime API and returns HAProxy's answer.
    pub async fn command(&self, command: &str) -> std::io::Result<String> {
        let mut stream = UnixStream::connect(&self.socket).await?;
        stream.write_all(format!("{command}\n").as_bytes()).await?;
        // Non-interactive mode: HAProxy answers and closes.
        let mut answer = String::new();
        tokio::time::timeout(START_LIMIT, stream.read_to_string(&mut answer))
            .await
            .map_err(|_| std::io::Error::other("no answer from the HAProxy socket"))??;
        Ok(answer)
    }

    /// The status of each server of the backend, from `show stat`: `no check`
    /// for a server in rotation (no health checks run), `MAINT` for a disabled
    /// one (`UP` / `DOWN` would need health checks).
    pub async fn server_status(&self) -> Vec<(String, String)> {
        let csv = self.command("show stat").await.expect("show stat");
        let mut lines = csv.lines();
        let header: Vec<&str> = lines
            .next()
            .expect("show stat header")
            .trim_start_matches("# ")
            .split(',')
            .collect();
        let column = |name: &str| {
            header
                .iter()
                .position(|h| *h == name)
                .unwrap_or_else(|| panic!("show stat has no {name} column: {header:?}"))
        };
        let (px, sv, status) = (column("pxname"), column("svname"), column("status"));
        lines
            .map(|line| line.split(',').collect::<Vec<_>>())
            .filter(|f| f.len() > status && f[px] == BACKEND && f[sv] != "BACKEND")
            .map(|f| (f[sv].to_owned(), f[status].to_owned()))
            .collect()
    }

    /// Takes server `name` (`s4`, ...) out of maintenance and waits until
    /// `show stat` reports it in rotation.
    pub async fn enable_server(&self, name: &str) {
        let answer = self
            .command(&format!("enable server {BACKEND}/{name}"))
            .await
            .expect("enable server");
        assert!(
            answer.trim().is_empty(),
            "enable server {name} failed: {answer}"
        );
        tokio::time::timeout(START_LIMIT, async {
            loop {
                let status = self.server_status().await;
                if status.iter().any(|(s, st)| s == name && in_rotation(st)) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("server {name} not in rotation after {START_LIMIT:?}"));
    }
}

/// Whether a `show stat` status means the server takes new connections.
pub fn in_rotation(status: &str) -> bool {
    status == "UP" || status == "no check"
}

impl Drop for HaProxy {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A port of `127.0.0.1` nobody listens on right now.
fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr")
}
