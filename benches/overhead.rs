//! The per-request cost of `Client` over a raw hyper HTTP/2 connection, so
//! regressions show in `cargo bench`.
//!
//! One in-process HTTP/2 backend on loopback; each benchmark sends small GET
//! requests and reads the whole response, from 1 or 64 worker tasks, either
//! through hyper's `http2::SendRequest` (one clone per worker) or through a
//! `Client` with no age (one clone per worker). Criterion reports the time per
//! request. Everything runs on a current-thread runtime, so that time is
//! the CPU a request costs (client and server together), which is stable
//! enough to catch regressions. For throughput and latency across threads,
//! run `cargo run --release --example loadgen`, which compares the variants
//! round by round.

#[path = "../tests/support/mod.rs"]
mod support;

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http::{Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use support::backend::Backend;
use tower::{Service, ServiceExt};
use tower_max_connection_age::Client;

type ReqBody = Full<Bytes>;

fn request(uri: &Uri) -> Request<ReqBody> {
    let mut request = Request::new(Full::new(Bytes::new()));
    *request.uri_mut() = uri.clone();
    request
}

async fn raw_connection(backend: &Backend) -> http2::SendRequest<ReqBody> {
    let stream = tokio::net::TcpStream::connect(backend.addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder.timer(TokioTimer::new());
    let (send, connection) = builder.handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    send
}

async fn client(backend: &Backend) -> Client<ReqBody> {
    let client = Client::builder()
        .endpoint(backend.uri())
        .build::<ReqBody>()
        .unwrap();
    while client.connection_count() < 1 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    client
}

/// Runs `concurrency` workers made by `worker` to completion; the elapsed wall time.
async fn run<F, Fut>(concurrency: usize, worker: F) -> Duration
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let start = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        workers.spawn(worker());
    }
    while let Some(joined) = workers.join_next().await {
        joined.expect("worker panicked");
    }
    start.elapsed()
}

fn overhead(c: &mut Criterion) {
    // One thread: client, connection and server tasks take turns, so the time
    // per request is the CPU it costs. On a multi-threaded runtime the figures
    // jump between two levels (about ±35% on two cores) with where tasks land.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let backend = runtime.block_on(Backend::start(Ipv4Addr::LOCALHOST, 0));
    let uri: Uri = format!("http://{}/", backend.addr).parse().unwrap();
    let raw = runtime.block_on(raw_connection(&backend));
    let client = runtime.block_on(client(&backend));

    for concurrency in [1usize, 64] {
        let mut group = c.benchmark_group(format!("overhead/c{concurrency}"));
        group
            .throughput(Throughput::Elements(1))
            .sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(4));

        group.bench_function("raw", |b| {
            b.to_async(&runtime).iter_custom(|iters| {
                let raw = raw.clone();
                let uri = uri.clone();
                async move {
                    let next = Arc::new(AtomicU64::new(0));
                    run(concurrency, || {
                        let (mut raw, uri, next) = (raw.clone(), uri.clone(), next.clone());
                        async move {
                            while next.fetch_add(1, Ordering::Relaxed) < iters {
                                let response = raw.send_request(request(&uri)).await.unwrap();
                                response.into_body().collect().await.unwrap();
                            }
                        }
                    })
                    .await
                }
            })
        });

        group.bench_function("client", |b| {
            b.to_async(&runtime).iter_custom(|iters| {
                let client = client.clone();
                let uri = uri.clone();
                async move {
                    let next = Arc::new(AtomicU64::new(0));
                    run(concurrency, || {
                        let (mut client, uri, next) = (client.clone(), uri.clone(), next.clone());
                        async move {
                            while next.fetch_add(1, Ordering::Relaxed) < iters {
                                let response = client
                                    .ready()
                                    .await
                                    .unwrap()
                                    .call(request(&uri))
                                    .await
                                    .unwrap();
                                response.into_body().collect().await.unwrap();
                            }
                        }
                    })
                    .await
                }
            })
        });
        group.finish();
    }
}

criterion_group!(benches, overhead);
criterion_main!(benches);
