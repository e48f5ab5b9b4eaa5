//! Requests one after another through one client, for a profiler: what one
//! request costs at concurrency 1, instruction by instruction.
//!
//! ```text
//! cargo build --release --example loadgen --example sequential
//! sleep infinity | taskset -c 1 target/release/examples/loadgen --serve &   # prints its port
//! taskset -c 0 valgrind --tool=callgrind target/release/examples/sequential client 127.0.0.1:PORT 4000
//! ```
//!
//! `CLIENT` is `h2` (h2's own client on one connection, with
//! `connector::default_builder`'s settings, as `loadgen`'s h2 row),
//! `client` ([`Client`] with its defaults) or `client-lean` (keepalive off,
//! `replay_refused(false)`, `PendingRequests` load). Each request is a GET
//! whose response is read frame by frame and dropped, as in `loadgen`.
//! One warm-up request first; the run prints the time per request.
//! Instructions per request: the difference between runs of 4000 and 1000
//! requests, divided by 3000 (the connection setup cancels out).
//!
//! One Tokio worker thread (`loadgen --process` runs one per process too),
//! the requests sent from a task spawned on it.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use http::{Request, Uri};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use tower::{Service, ServiceExt};
use tower_max_connection_age::Client;
use tower_max_connection_age::connector::default_builder;
use tower_max_connection_age::load::LoadKind;

type ReqBody = Full<Bytes>;

const USAGE: &str = "usage: sequential h2|client|client-lean ADDRESS REQUESTS";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [kind, address, requests] = args.as_slice() else {
        exit_usage("three arguments");
    };
    let address: SocketAddr = address
        .parse()
        .unwrap_or_else(|_| exit_usage(&format!("`{address}` is not an address")));
    let requests: usize = requests
        .parse()
        .unwrap_or_else(|_| exit_usage(&format!("`{requests}` is not a number")));
    if !matches!(kind.as_str(), "h2" | "client" | "client-lean") {
        exit_usage(&format!("unknown client `{kind}`"));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("build the Tokio runtime");
    let kind = kind.clone();
    let took = runtime
        .block_on(async { tokio::spawn(run(kind.clone(), address, requests)).await })
        .expect("the run finished");
    println!(
        "{kind}: {requests} requests in {took:?}, {:.1} µs per request",
        took.as_secs_f64() * 1e6 / requests as f64
    );
}

fn exit_usage(message: &str) -> ! {
    eprintln!("sequential: {message}\n{USAGE}");
    std::process::exit(2)
}

/// Sends one warm-up request and then `requests` timed ones; the time
/// they took.
async fn run(kind: String, address: SocketAddr, requests: usize) -> std::time::Duration {
    let uri: Uri = format!("http://{address}/").parse().expect("a URI");
    let request = || Request::get(uri.clone()).body(ReqBody::default()).unwrap();
    if kind == "h2" {
        let stream = tokio::net::TcpStream::connect(address)
            .await
            .expect("connect to the backend");
        stream.set_nodelay(true).expect("TCP_NODELAY");
        let (send, connection) = default_builder()
            .handshake::<_, Bytes>(stream)
            .await
            .expect("HTTP/2 handshake");
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let send_one = |request: Request<ReqBody>| {
            let send = send.clone();
            async move {
                let mut send = send.ready().await.expect("h2 ready");
                let (head, _) = request.into_parts();
                let (response, _stream) = send
                    .send_request(Request::from_parts(head, ()), true)
                    .expect("h2 took the request");
                let mut body = response.await.expect("a response").into_body();
                while let Some(chunk) = body.data().await {
                    let chunk = chunk.expect("a DATA frame");
                    let _ = body.flow_control().release_capacity(chunk.len());
                }
                body.trailers().await.expect("the end of the stream");
            }
        };
        send_one(request()).await;
        let started = Instant::now();
        for _ in 0..requests {
            send_one(request()).await;
        }
        return started.elapsed();
    }
    let mut builder = Client::builder().endpoint(uri.clone());
    if kind == "client-lean" {
        builder = builder
            .keep_alive_interval(None)
            .replay_refused(false)
            .load(LoadKind::PendingRequests);
    }
    let mut client = builder.build::<ReqBody>().expect("build the client");
    let mut send_one = async |request: Request<ReqBody>| {
        let response = client
            .ready()
            .await
            .expect("the client is always ready")
            .call(request)
            .await
            .expect("a response");
        drain(response.into_body()).await;
    };
    // The first request waits for the connection.
    send_one(request()).await;
    let started = Instant::now();
    for _ in 0..requests {
        send_one(request()).await;
    }
    started.elapsed()
}

/// Reads every frame of `body` and drops it.
async fn drain<B>(body: B)
where
    B: Body,
    B::Error: std::fmt::Debug,
{
    let mut body = std::pin::pin!(body);
    while let Some(frame) = body.frame().await {
        frame.expect("a frame of the response body");
    }
}
