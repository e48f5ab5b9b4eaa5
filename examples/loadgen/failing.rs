//! `loadgen --failing-pod http|grpc`: what share of requests a pod that
//! fails fast draws.
//!
//! Three pods, each a backend process (`loadgen --serve --bind
//! 127.0.0.i:PORT`, one port, under `taskset -c 1` when it exists): the
//! first answers every request at once with a failure (`http`: HTTP 503;
//! `grpc`: HTTP 200 with a trailers-only `grpc-status: 14`, UNAVAILABLE, as
//! tonic answers `Status::unavailable`), the other two after 2 ms. Each
//! client runs `--callers` callers (default 16) for `--seconds` (default 15)
//! on fresh connections, every caller sending one request after another
//! (`grpc`: `POST` with `content-type: application/grpc`) and reading the
//! whole response. The figure is the failing pod's share of the answered
//! requests: its fair share is 1/3.
//!
//! Clients: `Client` with its defaults; with
//! `outlier_detection(OutlierDetection::new())`; with responses not judged
//! (`ResponseClassifier::none()`, no failure penalty: only the transport
//! judges a pod, as before the response counted); tonic's
//! `Channel::balance_list` over the same three endpoints.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use tower::{Service, ServiceExt};
use tower_max_connection_age::Client;
use tower_max_connection_age::classify::ResponseClassifier;
use tower_max_connection_age::client::ClientBuilder;
use tower_max_connection_age::discover::OutlierDetection;

use crate::Options;

/// One way to set up `Client` for a row.
type Configure = fn(ClientBuilder) -> ClientBuilder;

/// How the failing pod fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Form {
    /// HTTP 503 at once.
    Http,
    /// A trailers-only gRPC `UNAVAILABLE` at once.
    Grpc,
}

impl Form {
    pub(crate) fn parse(value: &str) -> Form {
        match value {
            "http" => Form::Http,
            "grpc" => Form::Grpc,
            other => crate::exit_usage(&format!("a failure is `http` or `grpc`, not `{other}`")),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Form::Http => "http",
            Form::Grpc => "grpc",
        }
    }

    /// The failing pod's answer to every request.
    pub(crate) fn answer(self) -> Response<Full<Bytes>> {
        match self {
            Form::Http => Response::builder()
                .status(503)
                .body(Full::default())
                .expect("a 503"),
            Form::Grpc => tonic::Status::unavailable("pod failing").into_http(),
        }
    }
}

/// Whether a response is the failing pod's.
fn failed(response: &Response<impl http_body::Body>) -> bool {
    response.status() == 503 || response.headers().contains_key("grpc-status")
}

async fn start_pod(
    bind: SocketAddr,
    fail: Option<Form>,
    taskset: Option<&PathBuf>,
) -> crate::process::Pod {
    let mut args = vec!["--handler-ms", "2"];
    if let Some(form) = fail {
        args.extend(["--fail", form.name()]);
    }
    crate::process::Pod::start(bind, &args, taskset).await
}

/// Requests answered, and of those the failing pod's.
#[derive(Default)]
struct Tally {
    answered: AtomicU64,
    failed: AtomicU64,
    errors: AtomicU64,
}

/// Runs `callers` callers through `service` for `seconds`.
async fn drive<S, B>(
    service: S,
    body: fn() -> B,
    form: Form,
    options: &Options,
) -> (Arc<Tally>, Duration)
where
    S: Service<Request<B>> + Clone + Send + 'static,
    S::Response: IntoResponse,
    S::Future: Send,
    S::Error: std::fmt::Debug + Send,
    B: Send + 'static,
{
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut callers = tokio::task::JoinSet::new();
    let started = Instant::now();
    for _ in 0..options.callers {
        let (service, tally, stop) = (service.clone(), tally.clone(), stop.clone());
        callers.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let request = match form {
                    Form::Http => Request::get("http://svc/"),
                    Form::Grpc => Request::post("http://svc/failing.Pod/Call")
                        .header("content-type", "application/grpc"),
                };
                let request = request.body(body()).expect("a request");
                match service.clone().oneshot(request).await {
                    Ok(response) => {
                        let failure = response.read().await;
                        tally.answered.fetch_add(1, Ordering::Relaxed);
                        if failure {
                            tally.failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(_) => {
                        tally.errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
    }
    tokio::time::sleep(Duration::from_secs(options.seconds.unwrap_or(15))).await;
    stop.store(true, Ordering::Relaxed);
    while callers.join_next().await.is_some() {}
    (tally, started.elapsed())
}

/// A response read to its end; true when it is the failing pod's.
trait IntoResponse: Send {
    fn read(self) -> impl std::future::Future<Output = bool> + Send;
}

impl<B> IntoResponse for Response<B>
where
    B: http_body::Body + Send,
    B::Data: Send,
{
    async fn read(self) -> bool {
        let failure = failed(&self);
        let _ = self.into_body().collect().await;
        failure
    }
}

pub(crate) async fn main(options: &Options, form: Form) {
    let taskset = ["/usr/bin/taskset", "/bin/taskset"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    let first = start_pod(
        SocketAddr::from((Ipv4Addr::new(127, 0, 0, 1), 0)),
        Some(form),
        taskset.as_ref(),
    )
    .await;
    let port = first.addr.port();
    let mut pods = vec![first];
    for i in 2..=3 {
        pods.push(
            start_pod(
                SocketAddr::from((Ipv4Addr::new(127, 0, 0, i), port)),
                None,
                taskset.as_ref(),
            )
            .await,
        );
    }
    let endpoints: Vec<http::Uri> = pods
        .iter()
        .map(|pod| format!("http://{}", pod.addr).parse().expect("a URI"))
        .collect();
    println!(
        "failing pod ({} form) at {}, healthy at {} and {} (2 ms); {} callers, {} s per client{}",
        form.name(),
        pods[0].addr,
        pods[1].addr,
        pods[2].addr,
        options.callers,
        options.seconds.unwrap_or(15),
        if taskset.is_some() {
            "; backends on CPU 1"
        } else {
            ""
        },
    );
    println!(
        "  {:<52} {:>9} {:>14} {:>8}",
        "client", "req/s", "failing share", "errors"
    );
    let report = |name: &str, tally: &Tally, elapsed: Duration| {
        let answered = tally.answered.load(Ordering::Relaxed);
        let share = tally.failed.load(Ordering::Relaxed) as f64 / answered.max(1) as f64;
        println!(
            "  {:<52} {:>9.0} {:>14.4} {:>8}",
            name,
            answered as f64 / elapsed.as_secs_f64(),
            share,
            tally.errors.load(Ordering::Relaxed)
        );
    };
    let clients: [(&str, Configure); 3] = [
        ("Client (defaults)", |b| b),
        ("Client, outlier_detection(OutlierDetection::new())", |b| {
            b.outlier_detection(OutlierDetection::new())
        }),
        ("Client, responses not judged (before)", |b| {
            b.response_classifier(ResponseClassifier::none())
                .failure_penalty(Duration::ZERO)
        }),
    ];
    for (name, configure) in clients {
        let client = configure(Client::builder().endpoints(endpoints.clone()))
            .build::<Full<Bytes>>()
            .expect("build the client");
        let (tally, elapsed) = drive(client, Full::default, form, options).await;
        report(name, &tally, elapsed);
    }
    let channel = tonic::transport::Channel::balance_list(
        endpoints
            .iter()
            .map(|uri| tonic::transport::Endpoint::from(uri.clone())),
    );
    let (tally, elapsed) = drive(channel, tonic::body::Body::empty, form, options).await;
    report("tonic Channel::balance_list", &tally, elapsed);
    for pod in pods {
        pod.stop().await;
    }
}
