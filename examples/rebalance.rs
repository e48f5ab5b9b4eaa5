//! Rebalancing demo: a new backend joins behind an L4 load balancer.
//!
//! Three backends sit behind an in-process L4 TCP proxy that hands each new
//! connection to the next backend in turn, as kube-proxy or a cloud NLB does.
//! Two clients send the same load through it: a plain hyper client (one
//! HTTP/2 connection, kept forever) and this crate's `Client` (4 connections,
//! each aged out after `--age-ms`). A fourth backend joins mid-run. Each second
//! the example prints how many requests every backend served for each client;
//! the plain client stays pinned, the aged one spreads onto the new backend.
//!
//! ```text
//! cargo run --release --example rebalance [-- --seconds 8 --join-at 3 --age-ms 1000 --json]
//! ```
//! The last line is one JSON summary:
//! `{"pinned_new_share":..,"aged_new_share":..,"failed":..,"rotations":..}`
//! (share of requests the added backend served in the last second).

#[path = "../tests/support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use support::backend::{add_pod, start_pods};
use support::load::LoadReport;
use support::proxy::L4Proxy;
use tower_max_connection_age::Client;

struct Args {
    seconds: u64,
    join_at: u64,
    age: Duration,
    concurrency: usize,
    json: bool,
}

fn args() -> Result<Args, String> {
    let mut args = Args {
        seconds: 8,
        join_at: 3,
        age: Duration::from_millis(1000),
        concurrency: 8,
        json: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| -> Result<u64, String> {
            it.next()
                .and_then(|v| v.parse().ok())
                .ok_or(format!("{name} needs a number"))
        };
        match flag.as_str() {
            "--seconds" => args.seconds = value("--seconds")?,
            "--join-at" => args.join_at = value("--join-at")?,
            "--age-ms" => args.age = Duration::from_millis(value("--age-ms")?),
            "--concurrency" => args.concurrency = value("--concurrency")? as usize,
            "--json" => args.json = true,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if args.join_at >= args.seconds || args.age.is_zero() || args.concurrency == 0 {
        return Err("need --join-at < --seconds, --age-ms > 0, --concurrency > 0".into());
    }
    Ok(args)
}

fn row(label: &str, backends: &[SocketAddr], report: &LoadReport) -> String {
    let counts: Vec<String> = backends
        .iter()
        .map(|b| {
            format!(
                "{:>6}",
                report.per_backend.get(&b.to_string()).unwrap_or(&0)
            )
        })
        .collect();
    format!("{label:<7}{}", counts.join(" "))
}

fn share(report: &LoadReport, backend: SocketAddr) -> f64 {
    let total: usize = report.per_backend.values().sum();
    *report.per_backend.get(&backend.to_string()).unwrap_or(&0) as f64 / total.max(1) as f64
}

#[tokio::main]
async fn main() {
    let args = match args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("rebalance: {e}");
            std::process::exit(2);
        }
    };
    let mut pods = start_pods(3).await;
    let proxy = L4Proxy::start(pods.iter().map(|p| p.addr).collect()).await;
    let uri = format!("http://{}/", proxy.addr());

    let pinned = HyperClient::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let aged = Client::builder()
        .endpoint(uri.parse().unwrap())
        .connections_per_endpoint(4)
        .max_connection_age(args.age)
        .build::<Full<Bytes>>()
        .expect("valid configuration");

    println!(
        "3 backends behind an L4 proxy at {}; a 4th joins at {}s. Requests per backend per second:",
        proxy.addr(),
        args.join_at
    );
    let mut failed = 0;
    let (mut last_pinned, mut last_aged) = (LoadReport::default(), LoadReport::default());
    for second in 0..args.seconds {
        if second == args.join_at {
            let pod = add_pod(&pods, 4).await;
            proxy.add_backend(pod.addr);
            println!("-- backend {} joined --", pod.addr);
            pods.push(pod);
        }
        let slice = Duration::from_secs(1);
        let (p, a) = tokio::join!(
            support::load::run(pinned.clone(), &uri, args.concurrency, slice, slice),
            support::load::run(aged.clone(), &uri, args.concurrency, slice, slice),
        );
        failed += p.failed.len() + a.failed.len();
        let addrs: Vec<SocketAddr> = pods.iter().map(|p| p.addr).collect();
        let header: Vec<String> = addrs.iter().map(|a| format!("{:>6}", a.ip())).collect();
        println!("t={second}s {}", header.join(" "));
        println!("{}", row("plain", &addrs, &p));
        println!("{}", row("aged", &addrs, &a));
        (last_pinned, last_aged) = (p, a);
    }
    let new = pods.last().map(|p| p.addr).expect("four pods");
    let summary = format!(
        "{{\"pinned_new_share\":{:.3},\"aged_new_share\":{:.3},\"failed\":{},\"rotations\":{}}}",
        share(&last_pinned, new),
        share(&last_aged, new),
        failed,
        aged.stats().rotated
    );
    if !args.json {
        println!(
            "in the last second the new backend served {:.0}% of the plain client's requests and {:.0}% of the aged client's",
            100.0 * share(&last_pinned, new),
            100.0 * share(&last_aged, new)
        );
    }
    println!("{summary}");
    for pod in pods {
        pod.kill().await;
    }
}
