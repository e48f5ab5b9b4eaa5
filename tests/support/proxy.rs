//! An in-process L4 (TCP) proxy on `127.0.0.1`, standing in for kube-proxy or
//! a cloud network load balancer: it balances *connections*, not requests.
//!
//! ```ignore
//! let proxy = L4Proxy::start(vec![backend_a, backend_b]).await;
//! let stream = TcpStream::connect(proxy.addr()).await?; // goes to backend_a
//! proxy.add_backend(backend_c);
//! proxy.remove_backend(backend_a); // new connections only; open ones stay
//! assert_eq!(proxy.connections_per_backend()[&backend_b], 1);
//! ```
//!
//! Each accepted connection is connected to the next backend in round-robin
//! order and the bytes are copied both ways until either side closes. When
//! there is no backend, or the backend refuses, the accepted connection is
//! closed at once. Dropping the proxy closes its listener and every connection
//! it carries.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

#[derive(Default)]
struct Backends {
    list: Vec<SocketAddr>,
    next: usize,
    /// Connections carried to each backend so far (closed ones included).
    connections: HashMap<SocketAddr, usize>,
}

struct State {
    backends: Mutex<Backends>,
    /// Connections accepted so far, carried or not.
    accepted: watch::Sender<usize>,
    /// Connections closed at once: no backend, or the backend refused.
    failed: watch::Sender<usize>,
}

impl State {
    fn backends(&self) -> MutexGuard<'_, Backends> {
        self.backends.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The running proxy. Dropping it stops it and closes its connections.
pub struct L4Proxy {
    addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl L4Proxy {
    /// Listens on an ephemeral port of `127.0.0.1` and spreads connections
    /// over `backends`, starting with the first.
    pub async fn start(backends: Vec<SocketAddr>) -> L4Proxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy listener");
        let addr = listener.local_addr().expect("proxy local addr");
        let state = Arc::new(State {
            backends: Mutex::new(Backends {
                list: backends,
                ..Backends::default()
            }),
            accepted: watch::Sender::new(0),
            failed: watch::Sender::new(0),
        });
        let task = tokio::spawn(accept_loop(listener, state.clone()));
        L4Proxy { addr, state, task }
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Adds `backend` at the end of the rotation (no-op if it is already in).
    pub fn add_backend(&self, backend: SocketAddr) {
        let mut backends = self.state.backends();
        if !backends.list.contains(&backend) {
            backends.list.push(backend);
        }
    }

    /// Takes `backend` out of the rotation: new connections no longer go
    /// there; connections already carried to it stay open, as with
    /// kube-proxy's connection tracking.
    pub fn remove_backend(&self, backend: SocketAddr) {
        self.state.backends().list.retain(|b| *b != backend);
    }

    /// The backends in rotation, in order.
    pub fn backends(&self) -> Vec<SocketAddr> {
        self.state.backends().list.clone()
    }

    /// How many connections were carried to each backend so far (closed ones
    /// included). Backends that got none are absent.
    pub fn connections_per_backend(&self) -> HashMap<SocketAddr, usize> {
        self.state.backends().connections.clone()
    }

    /// How many connections the proxy accepted so far.
    pub fn accepted_count(&self) -> usize {
        *self.state.accepted.borrow()
    }

    /// How many accepted connections were closed at once because there was no
    /// backend or the backend refused.
    pub fn failed_count(&self) -> usize {
        *self.state.failed.borrow()
    }

    /// Waits until at least `n` connections were accepted and either carried
    /// or closed. Wrap it in a timeout.
    pub async fn wait_for_connections(&self, n: usize) {
        let mut rx = self.state.accepted.subscribe();
        rx.wait_for(|&count| count >= n)
            .await
            .expect("the sender lives in self");
    }
}

impl Drop for L4Proxy {
    fn drop(&mut self) {
        // The accept task owns the listener and the JoinSet of connection
        // tasks: aborting it drops both, which aborts every connection.
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>) {
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let (client, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            // Out of file descriptors and the like: keep serving.
            Err(_) => continue,
        };
        let backend = {
            let mut backends = state.backends();
            if backends.list.is_empty() {
                None
            } else {
                let i = backends.next % backends.list.len();
                backends.next = i + 1;
                Some(backends.list[i])
            }
        };
        let Some(backend) = backend else {
            drop(client);
            state.failed.send_modify(|n| *n += 1);
            state.accepted.send_modify(|n| *n += 1);
            continue;
        };
        // Connect inline so the per-backend count is updated before the
        // accepted count that tests wait on.
        match TcpStream::connect(backend).await {
            Ok(upstream) => {
                *state.backends().connections.entry(backend).or_default() += 1;
                state.accepted.send_modify(|n| *n += 1);
                connections.spawn(carry(client, upstream));
            }
            Err(_) => {
                drop(client);
                state.failed.send_modify(|n| *n += 1);
                state.accepted.send_modify(|n| *n += 1);
            }
        }
    }
}

async fn carry(mut client: TcpStream, mut upstream: TcpStream) {
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    // An error is a reset on either side; both sockets close when dropped.
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}
