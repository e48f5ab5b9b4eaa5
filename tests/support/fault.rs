//! A fault-injecting TCP proxy in front of one backend: it forwards bytes
//! both ways until told to misbehave, on command, for the connections it
//! carries and the ones it accepts later.
//!
//! ```ignore
//! let proxy = FaultProxy::start(Ipv4Addr::new(127, 0, 0, 2), port, backend.addr).await;
//! proxy.set(Fault::BlackHole); // nothing passes either way, no FIN, no RST
//! proxy.set(Fault::None);      // new connections pass again
//! proxy.cut(Cut::Reset);       // every carried connection gets a RST
//! ```
//!
//! A pod's address is the proxy's (`127.0.0.x` on the pods' shared port);
//! the backend behind it listens elsewhere. Black-holed connections stay
//! black-holed after `Fault::None` (as a TCP connection across a healed
//! partition whose packets were dropped); only new ones pass.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the proxy does to the bytes it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forwards everything.
    None,
    /// Reads and drops everything, sends nothing, never closes: a dead node
    /// or a partition. Connections accepted meanwhile are black-holed too.
    BlackHole,
    /// Holds every chunk this long before forwarding it.
    Delay(Duration),
}

/// How [`FaultProxy::cut`] ends the carried connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// TCP RST (SO_LINGER 0, then close).
    Reset,
    /// A clean close (FIN).
    Fin,
}

pub struct FaultProxy {
    addr: SocketAddr,
    fault: watch::Sender<Fault>,
    /// Bumped to cut every connection carried so far.
    cut: watch::Sender<Option<Cut>>,
    accepted: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on `ip:port` and carries each connection to `backend`.
    pub async fn start(ip: Ipv4Addr, port: u16, backend: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind((ip, port))
            .await
            .expect("bind the fault proxy");
        let addr = listener.local_addr().unwrap();
        let (fault, faults) = watch::channel(Fault::None);
        let (cut, cuts) = watch::channel(None);
        let accepted = Arc::new(AtomicUsize::new(0));
        let counted = accepted.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let _ = client.set_nodelay(true);
                let (faults, mut cuts) = (faults.clone(), cuts.clone());
                cuts.mark_unchanged();
                tokio::spawn(async move {
                    let black_holed = *faults.borrow() == Fault::BlackHole;
                    let Ok(server) = TcpStream::connect(backend).await else {
                        return;
                    };
                    let _ = server.set_nodelay(true);
                    carry(client, server, faults, cuts, black_holed).await;
                });
            }
        });
        FaultProxy {
            addr,
            fault,
            cut,
            accepted,
            task,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn uri(&self) -> http::Uri {
        format!("http://{}", self.addr).parse().unwrap()
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    pub fn set(&self, fault: Fault) {
        let _ = self.fault.send(fault);
    }

    /// Ends every connection carried now, with a RST or a FIN.
    pub fn cut(&self, how: Cut) {
        let _ = self.cut.send(Some(how));
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies both ways, obeying the fault of the moment; a connection that
/// was ever black-holed stays so. A cut ends both sides: with a RST
/// (linger 0) or a FIN.
async fn carry(
    mut client: TcpStream,
    mut server: TcpStream,
    faults: watch::Receiver<Fault>,
    mut cuts: watch::Receiver<Option<Cut>>,
    black_holed: bool,
) {
    let hole = std::sync::atomic::AtomicBool::new(black_holed);
    let how = {
        let (mut client_read, mut client_write) = client.split();
        let (mut server_read, mut server_write) = server.split();
        let up = pump(&mut client_read, &mut server_write, &faults, &hole);
        let down = pump(&mut server_read, &mut client_write, &faults, &hole);
        tokio::select! {
            _ = up => None,
            _ = down => None,
            how = async {
                let _ = cuts.changed().await;
                *cuts.borrow()
            } => how,
        }
    };
    match how {
        Some(Cut::Reset) => {
            let _ = client.set_zero_linger();
            let _ = server.set_zero_linger();
        }
        Some(Cut::Fin) | None => {
            let _ = client.shutdown().await;
            let _ = server.shutdown().await;
        }
    }
}

/// One direction, until its read side ends or a write fails.
async fn pump(
    from: &mut tokio::net::tcp::ReadHalf<'_>,
    to: &mut tokio::net::tcp::WriteHalf<'_>,
    faults: &watch::Receiver<Fault>,
    hole: &std::sync::atomic::AtomicBool,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let fault = *faults.borrow();
        if fault == Fault::BlackHole {
            hole.store(true, Ordering::SeqCst);
        }
        if hole.load(Ordering::SeqCst) {
            continue;
        }
        if let Fault::Delay(delay) = fault {
            tokio::time::sleep(delay).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
