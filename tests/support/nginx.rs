//! nginx (Debian's `nginx-light`) as a child process: an HTTP/2 server no
//! one here wrote, with **its default** request cap and stream limit
//! (`keepalive_requests 1000`: after 1,000 requests on a connection it
//! sends `GOAWAY(NO_ERROR)` and closes once they finish;
//! `http2_max_concurrent_streams 128`).
//!
//! One nginx serves h2c (prior knowledge, `listen ADDR http2`) on
//! 127.0.0.1 to 127.0.0.`pods`, one port: each address stands in for a
//! pod. Every request is answered `200 ok`. A second port on 127.0.0.1
//! speaks HTTP/1.1 and serves nginx's `stub_status`, whose request count
//! tells what nginx served (so a test sees that nothing was lost or run
//! twice). Its own prefix in a
//! temporary directory, `daemon off` and `master_process off` (one
//! process, killed on drop). `scripts/test` installs `nginx-light`.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

/// A running nginx.
pub struct Nginx {
    pub port: u16,
    status_port: u16,
    pods: u8,
    child: Child,
    prefix: PathBuf,
}

/// Where Debian puts nginx (`/usr/sbin`, not on a user's `PATH`).
fn binary() -> PathBuf {
    let sbin = Path::new("/usr/sbin/nginx");
    if sbin.exists() {
        sbin.to_path_buf()
    } else {
        PathBuf::from("nginx")
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn config(prefix: &Path, port: u16, status_port: u16, pods: u8) -> String {
    let prefix = prefix.display();
    let listen: String = (1..=pods)
        .map(|i| format!("        listen 127.0.0.{i}:{port} http2;\n"))
        .collect();
    format!(
        "daemon off;
master_process off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
{listen}        location / {{ return 200 \"ok\\n\"; }}
    }}
    server {{
        listen 127.0.0.1:{status_port};
        location = /nginx_status {{ stub_status; }}
    }}
}}
"
    )
}

impl Nginx {
    /// Starts nginx on `pods` addresses (127.0.0.1 up), one port; under
    /// `taskset -c CPU` when `cpu` is given. Panics, naming the package,
    /// when nginx is missing or does not start.
    pub async fn start(pods: u8, cpu: Option<usize>) -> Nginx {
        let mut last_error = String::new();
        // A port free on 127.0.0.1 may be taken on another address:
        // another try takes another port.
        for _ in 0..5 {
            let (port, status_port) = (free_port(), free_port());
            let prefix =
                std::env::temp_dir().join(format!("tower-mca-nginx-{}-{port}", std::process::id()));
            std::fs::create_dir_all(&prefix).expect("nginx's prefix directory");
            let conf = prefix.join("nginx.conf");
            std::fs::write(&conf, config(&prefix, port, status_port, pods))
                .expect("nginx's config");
            let mut command = match cpu {
                Some(cpu) => {
                    let mut command = Command::new("taskset");
                    command.arg("-c").arg(cpu.to_string()).arg(binary());
                    command
                }
                None => Command::new(binary()),
            };
            command
                .arg("-p")
                .arg(&prefix)
                .arg("-c")
                .arg(&conf)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true);
            let child = command.spawn().unwrap_or_else(|e| {
                panic!(
                    "nginx did not start ({e}); install it: `apt-get install nginx-light` \
                     (scripts/test does)"
                )
            });
            let mut nginx = Nginx {
                port,
                status_port,
                pods,
                child,
                prefix,
            };
            match nginx.until_listening().await {
                Ok(()) => return nginx,
                Err(e) => last_error = e,
            }
        }
        panic!("nginx did not start: {last_error}");
    }

    /// Waits (bounded) until nginx accepts on every address, or exits.
    async fn until_listening(&mut self) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let status = SocketAddr::from((Ipv4Addr::LOCALHOST, self.status_port));
        for addr in self.addrs().into_iter().chain([status]) {
            loop {
                if let Ok(Some(status)) = self.child.try_wait() {
                    let log =
                        std::fs::read_to_string(self.prefix.join("error.log")).unwrap_or_default();
                    return Err(format!("it exited ({status}): {}", log.trim()));
                }
                if tokio::net::TcpStream::connect(addr).await.is_ok() {
                    break;
                }
                if tokio::time::Instant::now() > deadline {
                    return Err(format!("nothing listens on {addr} after 10 s"));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(())
    }

    pub fn addrs(&self) -> Vec<SocketAddr> {
        (1..=self.pods)
            .map(|i| SocketAddr::from((Ipv4Addr::new(127, 0, 0, i), self.port)))
            .collect()
    }

    /// One URI per pod.
    pub fn uris(&self) -> Vec<http::Uri> {
        self.addrs()
            .iter()
            .map(|addr| format!("http://{addr}").parse().unwrap())
            .collect()
    }

    /// The requests nginx has served so far, this status request included
    /// (`stub_status`'s third figure), asked over HTTP/1.1 on the status
    /// port.
    pub async fn served(&self) -> u64 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, self.status_port))
            .await
            .expect("connect to nginx");
        stream
            .write_all(b"GET /nginx_status HTTP/1.1\r\nHost: nginx\r\nConnection: close\r\n\r\n")
            .await
            .expect("ask nginx");
        let mut answer = String::new();
        stream
            .read_to_string(&mut answer)
            .await
            .expect("nginx's answer");
        // "Active connections: N\nserver accepts handled requests\n A H R\n..."
        let figures = answer
            .lines()
            .skip_while(|line| !line.starts_with("server accepts"))
            .nth(1)
            .unwrap_or_else(|| panic!("no stub_status in {answer:?}"));
        figures
            .split_whitespace()
            .nth(2)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no request count in {figures:?}"))
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.prefix);
    }
}
