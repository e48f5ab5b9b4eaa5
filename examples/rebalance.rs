//! Rebalancing demo: traffic follows backends that come and go.
//!
//! `--mode vip` (the default): three backends sit behind an in-process L4 TCP
//! proxy that hands each new connection to the next backend in turn, as
//! kube-proxy or a cloud NLB does. Two clients send the same load through
//! it: a plain hyper client (one HTTP/2 connection, kept forever) and this
//! crate's `Client` (4 connections, each aged out after `--age-ms`). A fourth
//! backend joins mid-run: the plain client stays pinned, the aged one spreads.
//!
//! `--mode headless` (needs `--features hickory`): a headless Service. An
//! embedded DNS server lists the pods; the client resolves the service name
//! again and again. The service scales 2 -> 4 -> 3 pods.
//!
//! Each second it prints how many requests every backend served. The last
//! line is one JSON summary:
//! `{"mode":..,"pinned_new_share":..,"aged_new_share":..,"min_share_ratio":..,"failed":..,"rotations":..}`
//! where shares are over the last second, and `min_share_ratio` is the
//! smallest per-backend share of the aged client divided by the fair share.
//!
//! `--plot FILE.svg` (vip mode) also draws the share of requests each backend
//! served over time, in quarter-second buckets, for the plain client and the
//! aged one, with the moment the fourth backend joined marked
//! (`docs/rebalance.svg` is one such picture).
//!
//! ```text
//! cargo run --release --example rebalance [-- --mode vip|headless --seconds 9 --age-ms 1000 --json --plot FILE.svg]
//! ```

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use support::backend::{Backend, add_pod, start_pods};
use support::load::LoadReport;
use support::proxy::L4Proxy;
use tower_max_connection_age::Client;

type Body = Full<Bytes>;

struct Args {
    mode: String,
    seconds: u64,
    age: Duration,
    concurrency: usize,
    json: bool,
    plot: Option<PathBuf>,
}

fn args() -> Result<Args, String> {
    let mut args = Args {
        mode: "vip".into(),
        seconds: 9,
        age: Duration::from_millis(1000),
        concurrency: 8,
        json: false,
        plot: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        let number = |v: String, name: &str| {
            v.parse::<u64>()
                .map_err(|_| format!("{name} needs a number"))
        };
        match flag.as_str() {
            "--mode" => args.mode = value("--mode")?,
            "--seconds" => args.seconds = number(value("--seconds")?, "--seconds")?,
            "--age-ms" => args.age = Duration::from_millis(number(value("--age-ms")?, "--age-ms")?),
            "--concurrency" => {
                args.concurrency = number(value("--concurrency")?, "--concurrency")? as usize
            }
            "--json" => args.json = true,
            "--plot" => args.plot = Some(value("--plot")?.into()),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if !["vip", "headless"].contains(&args.mode.as_str()) {
        return Err(format!("unknown mode {}: use vip or headless", args.mode));
    }
    if args.plot.is_some() && args.mode != "vip" {
        return Err("--plot draws the vip mode only".into());
    }
    if args.seconds < 6 || args.age.is_zero() || args.concurrency == 0 {
        return Err("need --seconds >= 6, --age-ms > 0, --concurrency > 0".into());
    }
    Ok(args)
}

/// Requests per backend, in the backends' order.
fn row(label: &str, backends: &[SocketAddr], report: &LoadReport) -> String {
    let counts: Vec<String> = backends
        .iter()
        .map(|b| {
            format!(
                "{:>10}",
                report.per_backend.get(&b.to_string()).unwrap_or(&0)
            )
        })
        .collect();
    format!("  {label:<6}{}", counts.join(""))
}

fn header(second: u64, backends: &[SocketAddr]) -> String {
    let names: Vec<String> = backends.iter().map(|b| format!("{:>10}", b.ip())).collect();
    format!("t={second:<2}s   {}", names.join(""))
}

fn share(report: &LoadReport, backend: SocketAddr) -> f64 {
    let total: usize = report.per_backend.values().sum();
    *report.per_backend.get(&backend.to_string()).unwrap_or(&0) as f64 / total.max(1) as f64
}

/// The smallest share any of `backends` had, over the fair share.
fn min_share_ratio(report: &LoadReport, backends: &[SocketAddr]) -> f64 {
    let fair = 1.0 / backends.len() as f64;
    backends
        .iter()
        .map(|b| share(report, *b) / fair)
        .fold(f64::INFINITY, f64::min)
}

struct Summary {
    mode: &'static str,
    pinned_new_share: Option<f64>,
    aged_new_share: Option<f64>,
    min_share_ratio: f64,
    failed: usize,
    rotations: u64,
}

impl Summary {
    fn json(&self) -> String {
        let opt = |v: Option<f64>| v.map_or("null".to_owned(), |v| format!("{v:.3}"));
        format!(
            "{{\"mode\":\"{}\",\"pinned_new_share\":{},\"aged_new_share\":{},\"min_share_ratio\":{:.3},\"failed\":{},\"rotations\":{}}}",
            self.mode,
            opt(self.pinned_new_share),
            opt(self.aged_new_share),
            self.min_share_ratio,
            self.failed,
            self.rotations
        )
    }
}

async fn vip(args: &Args) -> Summary {
    let mut pods = start_pods(3).await;
    let proxy = L4Proxy::start(pods.iter().map(|p| p.addr).collect()).await;
    let uri = format!("http://{}/", proxy.addr());
    let pinned = HyperClient::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<Body>();
    let aged = Client::builder()
        .endpoint(uri.parse().unwrap())
        .connections_per_endpoint(4)
        .max_connection_age(args.age)
        .build::<Body>()
        .expect("valid configuration");
    let join_at = args.seconds / 3;
    println!(
        "3 backends behind an L4 proxy at {}; a 4th joins at {join_at}s. Requests per backend per second:",
        proxy.addr()
    );
    let mut failed = 0;
    let (mut last_pinned, mut last_aged) = (LoadReport::default(), LoadReport::default());
    let (mut plain_shares, mut aged_shares) = (Vec::new(), Vec::new());
    for second in 0..args.seconds {
        if second == join_at {
            let pod = add_pod(&pods, 4).await;
            proxy.add_backend(pod.addr);
            println!("-- backend {} joined --", pod.addr);
            pods.push(pod);
        }
        let slice = Duration::from_secs(1);
        let (p, a) = tokio::join!(
            support::load::run(pinned.clone(), &uri, args.concurrency, slice, PLOT_BUCKET),
            support::load::run(aged.clone(), &uri, args.concurrency, slice, PLOT_BUCKET),
        );
        failed += p.failed.len() + a.failed.len();
        plain_shares.extend(bucket_shares(second, &p));
        aged_shares.extend(bucket_shares(second, &a));
        let addrs: Vec<SocketAddr> = pods.iter().map(|p| p.addr).collect();
        println!("{}", header(second, &addrs));
        println!("{}", row("plain", &addrs, &p));
        println!("{}", row("aged", &addrs, &a));
        (last_pinned, last_aged) = (p, a);
    }
    let new = pods[3].addr;
    let addrs: Vec<SocketAddr> = pods.iter().map(|p| p.addr).collect();
    println!(
        "last second, the new backend served {:.0}% of the plain client's requests and {:.0}% of the aged client's",
        100.0 * share(&last_pinned, new),
        100.0 * share(&last_aged, new)
    );
    if let Some(path) = &args.plot {
        let panels = [
            Panel {
                title: "plain hyper client: 1 HTTP/2 connection, kept forever".into(),
                shares: plain_shares,
            },
            Panel {
                title: format!(
                    "this crate: 4 connections, max_connection_age {} ms",
                    args.age.as_millis()
                ),
                shares: aged_shares,
            },
        ];
        match plot(path, args.seconds, join_at, &addrs, &panels) {
            Ok(()) => println!("plot written to {}", path.display()),
            Err(e) => {
                eprintln!("rebalance: cannot draw {}: {e}", path.display());
                std::process::exit(1);
            }
        }
    }
    let summary = Summary {
        mode: "vip",
        pinned_new_share: Some(share(&last_pinned, new)),
        aged_new_share: Some(share(&last_aged, new)),
        min_share_ratio: min_share_ratio(&last_aged, &addrs),
        failed,
        rotations: aged.stats().rotated,
    };
    stop(pods).await;
    summary
}

/// The time buckets the load is tallied in (for `--plot`).
const PLOT_BUCKET: Duration = Duration::from_millis(250);

/// One point per bucket of one second's report: (time in s, backend -> share).
/// A response that lands just after the second ends counts in its last bucket.
fn bucket_shares(second: u64, report: &LoadReport) -> Vec<(f64, HashMap<String, f64>)> {
    let per_second = (Duration::from_secs(1).as_nanos() / PLOT_BUCKET.as_nanos()) as usize;
    let mut buckets: Vec<HashMap<String, usize>> = vec![HashMap::new(); per_second];
    for (i, bucket) in report.buckets.iter().enumerate() {
        for (backend, n) in bucket {
            *buckets[i.min(per_second - 1)]
                .entry(backend.clone())
                .or_default() += n;
        }
    }
    let width = PLOT_BUCKET.as_secs_f64();
    buckets
        .into_iter()
        .enumerate()
        .filter(|(_, b)| !b.is_empty())
        .map(|(i, bucket)| {
            let total: usize = bucket.values().sum();
            let shares = bucket
                .into_iter()
                .map(|(backend, n)| (backend, n as f64 / total as f64))
                .collect();
            (second as f64 + (i as f64 + 0.5) * width, shares)
        })
        .collect()
}

/// One client's shares over time.
struct Panel {
    title: String,
    shares: Vec<(f64, HashMap<String, f64>)>,
}

/// Draws one panel per client, one line per backend (share of that client's
/// requests per bucket), and a dashed marker where the last backend joined.
/// Text goes out as SVG `<text>` elements: no font files are read.
fn plot(
    path: &std::path::Path,
    seconds: u64,
    join_at: u64,
    backends: &[SocketAddr],
    panels: &[Panel],
) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;

    let colors = [BLUE, RED, GREEN, MAGENTA, CYAN];
    let root = SVGBackend::new(path, (960, 720)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(360);
    for (area, panel) in [top, bottom].iter().zip(panels) {
        let mut chart = ChartBuilder::on(area)
            .caption(&panel.title, ("sans-serif", 24))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(52)
            .build_cartesian_2d(0f64..seconds as f64, 0f64..1.05f64)?;
        chart
            .configure_mesh()
            .x_desc("seconds")
            .y_desc("share of requests")
            .x_labels(seconds as usize + 1)
            .y_labels(6)
            .label_style(("sans-serif", 16))
            .axis_desc_style(("sans-serif", 17))
            .light_line_style(WHITE.mix(0.0))
            .draw()?;
        let joined = join_at as f64;
        chart
            .draw_series(DashedLineSeries::new(
                [(joined, 0.0), (joined, 1.05)],
                6,
                4,
                BLACK.stroke_width(1),
            ))?
            .label(format!("backend {} joins", backends.len()))
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLACK));
        for (i, backend) in backends.iter().enumerate() {
            let name = backend.to_string();
            let color = colors[i % colors.len()];
            // A backend has a share (0 if it served nothing) from its first
            // bucket on; the joining one from when it joined.
            let from = if i + 1 == backends.len() { joined } else { 0.0 };
            let points = panel
                .shares
                .iter()
                .filter(|(t, _)| *t >= from)
                .map(|(t, shares)| (*t, shares.get(&name).copied().unwrap_or(0.0)));
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))?
                .label(backend.ip().to_string())
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::MiddleRight)
            .label_font(("sans-serif", 16))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .draw()?;
    }
    root.present()?;
    Ok(())
}

#[cfg(feature = "hickory")]
async fn headless(args: &Args) -> Summary {
    use std::net::Ipv4Addr;

    use support::dns::DnsServer;
    use tower_max_connection_age::resolve::HickoryResolver;

    const NAME: &str = "svc.demo.local.";
    let ips = |pods: &[u8]| {
        pods.iter()
            .map(|i| Ipv4Addr::new(127, 0, 0, *i))
            .collect::<Vec<_>>()
    };
    let mut pods: Vec<Backend> = start_pods(4).await;
    let port = pods[0].addr.port();
    let dns = DnsServer::start().await;
    dns.set_a(NAME, &ips(&[1, 2]), 1);
    let resolve_interval = Duration::from_millis(500);
    let client = Client::builder()
        .uri(format!("http://svc.demo.local:{port}").parse().unwrap())
        .resolver(HickoryResolver::with_nameserver(dns.addr()).expect("resolver"))
        .resolve_interval(resolve_interval)
        .max_connection_age(args.age)
        .build::<Body>()
        .expect("valid configuration");
    let uri = format!("http://svc.demo.local:{port}/");
    let (out_at, in_at) = (args.seconds / 3, 2 * args.seconds / 3);
    println!(
        "headless service svc.demo.local (DNS at {}, resolved every {resolve_interval:?} or at the TTL): 2 pods, 4 at {out_at}s, 3 at {in_at}s",
        dns.addr()
    );
    let mut live: Vec<u8> = vec![1, 2];
    let mut failed = 0;
    let mut last = LoadReport::default();
    for second in 0..args.seconds {
        if second == out_at {
            live = vec![1, 2, 3, 4];
            dns.set_a(NAME, &ips(&live), 1);
            println!("-- DNS now lists 4 pods --");
        }
        if second == in_at {
            live = vec![1, 2, 4];
            dns.set_a(NAME, &ips(&live), 1);
            println!("-- DNS now lists 3 pods (127.0.0.3 left) --");
        }
        let slice = Duration::from_secs(1);
        let report = support::load::run(client.clone(), &uri, args.concurrency, slice, slice).await;
        failed += report.failed.len();
        let addrs: Vec<SocketAddr> = pods.iter().map(|p| p.addr).collect();
        println!("{}", header(second, &addrs));
        println!("{}", row("aged", &addrs, &report));
        last = report;
    }
    let live_addrs: Vec<SocketAddr> = live.iter().map(|i| pods[*i as usize - 1].addr).collect();
    let summary = Summary {
        mode: "headless",
        pinned_new_share: None,
        aged_new_share: None,
        min_share_ratio: min_share_ratio(&last, &live_addrs),
        failed,
        rotations: client.stats().rotated,
    };
    for pod in pods.drain(..) {
        pod.kill().await;
    }
    summary
}

#[cfg(not(feature = "hickory"))]
async fn headless(_: &Args) -> Summary {
    eprintln!("rebalance: --mode headless needs the DNS resolver: add --features hickory");
    std::process::exit(2);
}

async fn stop(pods: Vec<Backend>) {
    for pod in pods {
        pod.kill().await;
    }
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
    let summary = match args.mode.as_str() {
        "headless" => headless(&args).await,
        _ => vip(&args).await,
    };
    if !args.json {
        println!(
            "min share ratio {:.2} (1.00 = perfectly even), {} failed requests, {} rotations",
            summary.min_share_ratio, summary.failed, summary.rotations
        );
    }
    println!("{}", summary.json());
}
