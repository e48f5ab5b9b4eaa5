//! A gRPC server on grpc-go, a peer from another stack, with grpc-go's own
//! HTTP/2 ping policy (`keepalive.EnforcementPolicy`): `grpc_go_silent.go`,
//! the same server-streaming method as [`super::grpcio`]'s (a message,
//! silence, another message, `OK`). Built once per test binary with the Go
//! toolchain in GOPATH mode, offline, against Debian's grpc-go; started as a
//! child process; killed on drop.
//!
//! `scripts/test` installs Go and grpc-go (Debian: `golang-go
//! golang-google-grpc-dev`) when they are missing; without them
//! [`GoSilentServer::start`] panics saying so.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use tokio::process::{Child, Command};

/// What to install for this peer, in its panics.
const INSTALL: &str = "install Go and grpc-go (Debian: `sudo apt-get install golang-go \
                       golang-google-grpc-dev`; scripts/test does)";

/// A running `grpc_go_silent`.
pub struct GoSilentServer {
    pub addr: SocketAddr,
    _child: Child,
}

impl GoSilentServer {
    /// A server whose stream stays silent for `silence`, enforcing at
    /// least `min_ping` between pings while it sends nothing
    /// (`keepalive.EnforcementPolicy.MinTime`; `None`: no keepalive options
    /// at all, grpc-go's defaults: 5 minutes, no pings without a stream).
    pub async fn start(silence: Duration, min_ping: Option<Duration>) -> GoSilentServer {
        let mut command = Command::new(binary());
        command.arg(silence.as_secs_f64().to_string());
        if let Some(min) = min_ping {
            command.arg(min.as_millis().to_string());
        }
        let (child, port) =
            super::child::spawn_with_port(&mut command, "the grpc-go server", INSTALL).await;
        GoSilentServer {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            _child: child,
        }
    }

    pub fn uri(&self) -> http::Uri {
        format!("http://{}", self.addr).parse().unwrap()
    }
}

/// The server's binary, built by the first caller in this test binary (the
/// others wait for it; a failed build panics in each of them). Blocking:
/// once, for a few seconds at most (Go's build cache is kept under the
/// target dir).
fn binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(build)
}

fn build() -> PathBuf {
    let source = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/support/grpc_go_silent.go"
    );
    // Cargo sets CARGO_TARGET_TMPDIR for integration tests and benches, not
    // for the examples that include these fixtures too.
    let dir = option_env!("CARGO_TARGET_TMPDIR")
        .map_or_else(std::env::temp_dir, PathBuf::from)
        .join("grpc_go");
    let binary = dir.join("grpc_go_silent");
    // Built under a name of its own and renamed into place: another test
    // process sharing the target dir may be running the binary there.
    let fresh = dir.join(format!("grpc_go_silent.{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a directory for the grpc-go server");
    let output = std::process::Command::new("go")
        .arg("build")
        .arg("-o")
        .arg(&fresh)
        .arg(source)
        // GOPATH mode, offline: grpc-go is Debian's, in /usr/share/gocode.
        .env("GO111MODULE", "off")
        .env("GOPATH", "/usr/share/gocode")
        .env("GOFLAGS", "")
        .env("GOPROXY", "off")
        .env("GOCACHE", dir.join("cache"))
        .output()
        .unwrap_or_else(|e| panic!("`go` could not be run ({e}); {INSTALL}"));
    if !output.status.success() {
        let _ = std::fs::remove_file(&fresh);
        panic!(
            "`go build` of the grpc-go server failed ({}): {}; {INSTALL}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    std::fs::rename(&fresh, &binary).expect("the grpc-go server's binary moved into place");
    binary
}
