//! Serves an axum route and the tonic health service on one port, with a
//! 2 s maximum connection age, and runs two clients against it so the
//! rotation shows in the logs. Stops by itself after `DEMO_SECS` seconds
//! (default 7) or on Ctrl-C.
//!
//! ```text
//! cargo run --example server
//! RUST_LOG=tower_max_connection_age=debug cargo run --example server   # the default
//! DEMO_SECS=60 cargo run --example server   # then try: curl -v http://127.0.0.1:<port>/
//! ```

use std::time::Duration;

use axum::routing::get;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tower_max_connection_age::server::Server;
use tracing_subscriber::EnvFilter;

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new("info,tower_max_connection_age=debug")),
        )
        .init();
    let run_for = Duration::from_secs(
        std::env::var("DEMO_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(7),
    );

    // gRPC and plain HTTP on one port: tonic's routes are an axum router.
    let (_reporter, health) = tonic_health::server::health_reporter();
    let app = tonic::service::Routes::new(health)
        .into_axum_router()
        .route("/", get(|| async { "hello from axum\n" }));

    let mut builder = Server::builder()
        .max_connection_age(Duration::from_secs(2)) // each connection: 1.8 s to 2.2 s
        .max_connection_age_grace(Duration::from_secs(5))
        .max_connection_idle(Duration::from_secs(30));
    builder.http_builder().http2().max_concurrent_streams(100);
    let server = builder.build()?;

    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    println!("serving axum (GET /) and grpc.health.v1.Health on http://{addr} for {run_for:?}");

    let shutdown = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => println!("Ctrl-C: shutting down"),
            () = tokio::time::sleep(run_for) => println!("{run_for:?} passed: shutting down"),
        }
    };
    let serving = tokio::spawn(server.serve_with_shutdown(listener, app, shutdown));

    // A gRPC client: a plain tonic Channel, reconnecting after each GOAWAY.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let grpc = tokio::spawn(async move {
        let mut client = HealthClient::new(channel);
        let (mut ok, mut failed) = (0u32, 0u32);
        loop {
            let request = HealthCheckRequest {
                service: String::new(),
            };
            match client.check(request).await {
                Ok(_) => ok += 1,
                Err(status) if status.code() == tonic::Code::Unavailable => break,
                Err(status) => {
                    failed += 1;
                    println!("grpc client: call failed: {status}");
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
            if ok % 8 == 0 {
                println!("grpc client: {ok} health checks ok, {failed} failed");
            }
        }
    });

    // An HTTP/1.1 client on keep-alive connections: it reconnects when the
    // server closes one (at its age the server answers the request in flight,
    // or the next one within its 500 ms drain window, with `Connection:
    // close`, and closes an idle one when the window ends).
    let http1 = tokio::spawn(async move {
        let mut connections = 0;
        'connect: loop {
            let Ok(tcp) = TcpStream::connect(addr).await else {
                break; // the server stopped listening
            };
            let Ok((mut send, conn)) =
                hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await
            else {
                break;
            };
            tokio::spawn(conn);
            connections += 1;
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                if send.ready().await.is_err() {
                    println!(
                        "http/1.1 client: the server closed connection {connections}; reconnecting"
                    );
                    continue 'connect;
                }
                let request = http::Request::get(format!("http://{addr}/"))
                    .body(Empty::<bytes::Bytes>::new())
                    .expect("a valid request");
                let Ok(response) = send.send_request(request).await else {
                    println!(
                        "http/1.1 client: connection {connections} closed under a request; reconnecting"
                    );
                    continue 'connect;
                };
                let close = response.headers().get(http::header::CONNECTION).cloned();
                let body = response.into_body().collect().await.map(|b| b.to_bytes());
                print!(
                    "http/1.1 client: connection {connections}: {}",
                    String::from_utf8_lossy(&body.unwrap_or_default())
                );
                if let Some(close) = close {
                    println!(
                        "http/1.1 client: the server said `Connection: {close:?}`; reconnecting"
                    );
                    continue 'connect;
                }
            }
        }
    });

    serving.await?;
    grpc.abort();
    http1.abort();
    println!("server stopped");
    Ok(())
}
