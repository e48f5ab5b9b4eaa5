//! Peers started as child processes that print the port they listen on as
//! the first line of their stdout: [`spawn_with_port`] starts one and reads
//! that line, or panics with what the peer wrote to stderr and what to
//! install.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};

/// Starts `command` with stdin, stdout and stderr piped, killed on drop
/// (its stdin stays open as long as the [`Child`] lives: the peers here
/// serve until it closes), and reads its port from the first line of its
/// stdout within 20 s. On failure panics naming `peer` and saying `install`
/// (what to install and how), with the peer's stderr.
pub async fn spawn_with_port(command: &mut Command, peer: &str, install: &str) -> (Child, u16) {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("{peer} could not be started ({e}); {install}"));
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    let read = tokio::time::timeout(Duration::from_secs(20), stdout.read_line(&mut line)).await;
    match read {
        Ok(Ok(n)) if n > 0 => {
            let port = line
                .trim()
                .parse()
                .unwrap_or_else(|e| panic!("{peer} printed {line:?}, not a port: {e}"));
            (child, port)
        }
        _ => {
            // Killed first, so that its stderr ends even if it still runs.
            let _ = child.start_kill();
            let mut err = Vec::new();
            if let Some(mut stderr) = child.stderr.take() {
                let _ = tokio::time::timeout(Duration::from_secs(5), stderr.read_to_end(&mut err))
                    .await;
            }
            panic!(
                "{peer} did not start ({}); {install}",
                String::from_utf8_lossy(&err).trim()
            );
        }
    }
}
