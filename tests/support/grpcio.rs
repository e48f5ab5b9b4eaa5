//! A gRPC server on grpcio (gRPC C-core, from pip), a peer no one here
//! wrote, with C-core's own HTTP/2 ping policy: `grpcio_silent.py`, one
//! server-streaming method that sends a message, stays silent, sends
//! another and ends with `OK`. Started as a child process; killed on drop.
//!
//! `scripts/test` installs grpcio (`pip install grpcio`) when it is
//! missing; without it [`SilentServer::start`] panics saying so.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A running `grpcio_silent.py`.
pub struct SilentServer {
    pub addr: SocketAddr,
    _child: Child,
}

impl SilentServer {
    /// A server whose stream stays silent for `silence`, enforcing at
    /// least `min_ping` between pings while it sends nothing (C-core's
    /// `grpc.http2.min_ping_interval_without_data_ms`; `None`: its default,
    /// 5 minutes).
    pub async fn start(silence: Duration, min_ping: Option<Duration>) -> SilentServer {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/support/grpcio_silent.py"
        );
        let mut command = Command::new("python3");
        command.arg(script).arg(silence.as_secs_f64().to_string());
        if let Some(min) = min_ping {
            command.arg(min.as_millis().to_string());
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 is needed for the grpcio peer (scripts/test checks it)");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        let read = tokio::time::timeout(Duration::from_secs(20), stdout.read_line(&mut line)).await;
        let port: u16 = match read {
            Ok(Ok(n)) if n > 0 => line.trim().parse().expect("the server's port"),
            _ => {
                let mut err = String::new();
                if let Some(stderr) = child.stderr.take() {
                    let _ = BufReader::new(stderr).read_line(&mut err).await;
                }
                panic!(
                    "the grpcio server did not start ({}); install grpcio: `pip install grpcio` \
                     (scripts/test does)",
                    err.trim()
                );
            }
        };
        SilentServer {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            _child: child,
        }
    }

    pub fn uri(&self) -> http::Uri {
        format!("http://{}", self.addr).parse().unwrap()
    }
}
