//! A gRPC health server (tonic-health) that ignores `grpc-timeout`: hyper's
//! HTTP/2 server with its defaults, no tonic transport in front. A call
//! whose metadata says `x-delay-ms: N` is answered after N ms, so tests can
//! hold calls past their deadline or past a connection's drain timeout.

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic_health::ServingStatus;
use tower::ServiceExt;

/// The metadata key that delays a call's answer (milliseconds).
pub const DELAY: &str = "x-delay-ms";

/// A running health server; reports `demo` as serving. Aborted on drop.
pub struct HealthServer {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl HealthServer {
    pub async fn start(ip: Ipv4Addr) -> HealthServer {
        let (reporter, health) = tonic_health::server::health_reporter();
        reporter
            .set_service_status("demo", ServingStatus::Serving)
            .await;
        let listener = TcpListener::bind((ip, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            // The reporter owns the status; it must live as long as the server.
            let _reporter = reporter;
            while let Ok((tcp, _)) = listener.accept().await {
                let health = health.clone();
                let service =
                    tower::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                        let health = health.clone();
                        async move {
                            let delay = request
                                .headers()
                                .get(DELAY)
                                .and_then(|v| v.to_str().ok())
                                .and_then(|v| v.parse::<u64>().ok());
                            if let Some(ms) = delay {
                                tokio::time::sleep(Duration::from_millis(ms)).await;
                            }
                            Ok::<_, Infallible>(health.oneshot(request).await.unwrap())
                        }
                    });
                tokio::spawn(async move {
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .http2_only()
                        .serve_connection(TokioIo::new(tcp), TowerToHyperService::new(service))
                        .await;
                });
            }
        });
        HealthServer { addr, task }
    }

    pub fn uri(&self) -> http::Uri {
        format!("http://{}", self.addr).parse().unwrap()
    }
}

impl Drop for HealthServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
