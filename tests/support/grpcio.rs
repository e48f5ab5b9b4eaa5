//! A gRPC server on grpcio (gRPC C-core, from pip), a peer no one here
//! wrote, with C-core's own HTTP/2 ping policy: `grpcio_silent.py`, one
//! server-streaming method that sends a message, stays silent, sends
//! another and ends with `OK`. Started as a child process; killed on drop.
//!
//! `scripts/test` installs grpcio (`pip install grpcio`) when it is
//! missing; without it [`SilentServer::start`] panics saying so. The same
//! server on grpc-go is [`super::grpcgo`].

use std::net::SocketAddr;
use std::time::Duration;

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
        let (child, port) = super::child::spawn_with_port(
            &mut command,
            "the grpcio server (python3 grpcio_silent.py)",
            "install Python 3 and grpcio: `pip install grpcio` (scripts/test does)",
        )
        .await;
        SilentServer {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            _child: child,
        }
    }

    pub fn uri(&self) -> http::Uri {
        format!("http://{}", self.addr).parse().unwrap()
    }
}
