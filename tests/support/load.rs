//! A bounded load generator: `concurrency` workers send requests for a fixed
//! time and tally what came back, per backend and per time bucket.

use std::collections::HashMap;
use std::fmt::Display;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use tokio::time::Instant;
use tower::{Service, ServiceExt};

/// Request ids are unique across runs and only grow, so a test can tell
/// requests made after some moment from those made before it.
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// The id the next request will get.
pub fn next_id() -> u64 {
    NEXT_ID.load(Ordering::SeqCst)
}

#[derive(Debug, Default)]
pub struct LoadReport {
    pub ok: usize,
    pub failed: Vec<String>,
    /// Responses per backend (the `x-backend` header).
    pub per_backend: HashMap<String, usize>,
    /// Responses per backend in each bucket of `bucket` length.
    pub buckets: Vec<HashMap<String, usize>>,
    /// The longest any request took, response body included.
    pub slowest: Duration,
}

impl LoadReport {
    /// Asserts that no request failed, more than `min_ok` were answered,
    /// and every pod answered some and saw at least `min_connections`
    /// connections (it rotated).
    pub fn assert_rotated_without_failures(
        &self,
        pods: &[super::backend::Backend],
        min_ok: usize,
        min_connections: usize,
    ) {
        assert!(
            self.failed.is_empty(),
            "failed: {:?}",
            &self.failed[..self.failed.len().min(5)]
        );
        assert!(self.ok > min_ok, "only {} requests", self.ok);
        for pod in pods {
            assert!(pod.requests() > 0, "{} got no traffic", pod.addr);
            assert!(
                pod.connections() >= min_connections,
                "{} saw {} connections: no rotation",
                pod.addr,
                pod.connections()
            );
        }
    }

    /// The share each backend had in the last bucket.
    pub fn last_bucket_share(&self, backend: &str) -> f64 {
        let Some(last) = self.buckets.iter().rev().find(|b| !b.is_empty()) else {
            return 0.0;
        };
        let total: usize = last.values().sum();
        *last.get(backend).unwrap_or(&0) as f64 / total.max(1) as f64
    }
}

/// Sends GET `path` (with an `x-request-id`) from `concurrency` workers for
/// `duration`; `bucket` sets the per-time tallies.
pub async fn run<S, RB>(
    service: S,
    uri: &str,
    concurrency: usize,
    duration: Duration,
    bucket: Duration,
) -> LoadReport
where
    S: Service<Request<Full<Bytes>>, Response = Response<RB>> + Clone + Send + 'static,
    S::Error: Display + Send,
    S::Future: Send,
    RB: http_body::Body + Send + 'static,
    RB::Data: Send,
    RB::Error: Display,
{
    let start = Instant::now();
    let end = start + duration;
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let service = service.clone();
        let uri = uri.to_owned();
        workers.spawn(async move {
            let mut report = LoadReport::default();
            while Instant::now() < end {
                let sent = Instant::now();
                let id = NEXT_ID.fetch_add(1, Ordering::SeqCst);
                let request = Request::get(&uri)
                    .header("x-request-id", id.to_string())
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                match service.clone().oneshot(request).await {
                    Ok(response) => {
                        let backend = response
                            .headers()
                            .get("x-backend")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("?")
                            .to_owned();
                        match response.into_body().collect().await {
                            Ok(_) => {
                                report.ok += 1;
                                report.slowest = report.slowest.max(sent.elapsed());
                                let i = (start.elapsed().as_nanos() / bucket.as_nanos()) as usize;
                                if report.buckets.len() <= i {
                                    report.buckets.resize_with(i + 1, HashMap::new);
                                }
                                *report.buckets[i].entry(backend.clone()).or_default() += 1;
                                *report.per_backend.entry(backend).or_default() += 1;
                            }
                            Err(e) => report.failed.push(format!("body: {e}")),
                        }
                    }
                    Err(e) => report.failed.push(e.to_string()),
                }
            }
            report
        });
    }
    let mut total = LoadReport::default();
    while let Some(report) = workers.join_next().await {
        let report = report.expect("load worker panicked");
        total.ok += report.ok;
        total.slowest = total.slowest.max(report.slowest);
        total.failed.extend(report.failed);
        for (backend, n) in report.per_backend {
            *total.per_backend.entry(backend).or_default() += n;
        }
        if total.buckets.len() < report.buckets.len() {
            total
                .buckets
                .resize_with(report.buckets.len(), HashMap::new);
        }
        for (i, bucket) in report.buckets.into_iter().enumerate() {
            for (backend, n) in bucket {
                *total.buckets[i].entry(backend).or_default() += n;
            }
        }
    }
    total
}

/// Sends `n` GET requests to `uri` at once (each with a fresh
/// `x-request-id`), and gives the count that succeeded, body included, and
/// the errors of the others.
pub async fn burst<S, RB>(service: S, uri: &str, n: usize) -> (usize, Vec<String>)
where
    S: Service<Request<Full<Bytes>>, Response = Response<RB>> + Clone + Send + 'static,
    S::Error: Display + Send,
    S::Future: Send,
    RB: http_body::Body + Send + 'static,
    RB::Data: Send,
    RB::Error: Display,
{
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..n {
        let request = Request::get(uri)
            .header(
                "x-request-id",
                NEXT_ID.fetch_add(1, Ordering::SeqCst).to_string(),
            )
            .body(Full::new(Bytes::new()))
            .unwrap();
        let service = service.clone();
        requests.spawn(async move {
            let response = service.oneshot(request).await.map_err(|e| e.to_string())?;
            response
                .into_body()
                .collect()
                .await
                .map(|_| ())
                .map_err(|e| format!("body: {e}"))
        });
    }
    let (mut ok, mut failed) = (0, Vec::new());
    while let Some(done) = requests.join_next().await {
        match done.expect("request task panicked") {
            Ok(()) => ok += 1,
            Err(e) => failed.push(e),
        }
    }
    (ok, failed)
}
