//! The age layer under hyper-util's composable pools (`client::pool`,
//! feature `client-pool`): the maximum-lifetime layer the pool proposal
//! (hyper #3948) planned as `pool::expire`. An HTTP/2 `Singleton` over
//! `MaxConnectionAgeLayer` and `HyperConnector` hands out clones of one
//! aged connection; at its age the connection drains, its `poll_ready`
//! fails, which empties the singleton (hyper-util's own rule for a dead
//! service), and the next call makes a fresh connection while the old one
//! finishes its requests. A request that met the drained connection comes
//! back unsent (`Draining`, with the request), so sending it again is
//! safe.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::pool::singleton::Singleton;
use support::backend::Backend;
use tower::{Layer, Service, ServiceExt};
use tower_max_connection_age::age::ResponseBody;
use tower_max_connection_age::connector::HyperConnector;
use tower_max_connection_age::{Error, MaxConnectionAgeLayer};

type Body = Full<Bytes>;

/// Sends `request` on the singleton's connection; a request the connection
/// gave back unsent (it was draining) goes again, on the next one.
async fn send<P, S>(
    mut pool: P,
    uri: http::Uri,
    mut request: http::Request<Body>,
) -> http::StatusCode
where
    P: Service<http::Uri, Response = S>,
    P::Error: std::fmt::Debug,
    S: Service<
            http::Request<Body>,
            Response = http::Response<ResponseBody<hyper::body::Incoming>>,
            Error = Error,
        >,
{
    for _ in 0..5 {
        let mut connection = pool.ready().await.unwrap().call(uri.clone()).await.unwrap();
        // A connection that started draining fails `poll_ready` (and the
        // singleton forgets it); the request has not left.
        match connection.ready().await {
            Ok(_) => {}
            Err(error) if error.is_draining() => continue,
            Err(error) => panic!("failed: {error}"),
        }
        match connection.call(request).await {
            Ok(response) => {
                let status = response.status();
                response.into_body().collect().await.expect("the body");
                return status;
            }
            // Refused between `poll_ready` and `call`: handed back unsent.
            Err(mut error) if error.is_draining() => {
                request = error
                    .take_request::<http::Request<Body>>()
                    .expect("an unsent request comes back");
            }
            Err(error) => panic!("failed: {error}"),
        }
    }
    panic!("five connections in a row were draining");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_singleton_pool_rotates_its_aged_connection_and_loses_nothing() {
    let pod = Backend::start(std::net::Ipv4Addr::LOCALHOST, 0).await;
    let make = MaxConnectionAgeLayer::new(Duration::from_millis(200))
        .jitter(Duration::ZERO)
        .layer(HyperConnector::<_, Body>::http());
    let pool = Singleton::new(make);
    let uri = pod.uri();
    let sent = Arc::new(AtomicUsize::new(0));
    let until = Instant::now() + Duration::from_millis(1500);
    let mut callers = tokio::task::JoinSet::new();
    for caller in 0..8 {
        let (pool, uri, sent) = (pool.clone(), uri.clone(), sent.clone());
        callers.spawn(async move {
            let mut i = 0;
            while Instant::now() < until {
                let request = support::get(format!("{uri}sleep/5"), &format!("{caller}-{i}"));
                assert_eq!(send(pool.clone(), uri.clone(), request).await, 200);
                sent.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        });
    }
    support::bounded(async {
        while let Some(done) = callers.join_next().await {
            done.unwrap();
        }
    })
    .await;
    let sent = sent.load(Ordering::Relaxed);
    assert!(sent > 100, "only {sent} requests");
    assert_eq!(pod.requests(), sent, "each request ran once");
    assert!(
        pod.executed().values().all(|&n| n == 1),
        "a request ran twice"
    );
    assert!(
        pod.connections() >= 5,
        "a new connection every 200 ms: {} in 1.5 s",
        pod.connections()
    );
}

/// Clones of an aged connection share it: dropping the ones the singleton
/// handed out does not drain it (only the last clone's drop does), so one
/// connection serves every request until its age.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_singletons_clones_share_one_connection_until_its_age() {
    let pod = Backend::start(std::net::Ipv4Addr::LOCALHOST, 0).await;
    let make = MaxConnectionAgeLayer::new(Duration::from_secs(3600))
        .layer(HyperConnector::<_, Body>::http());
    let pool = Singleton::new(make);
    let uri = pod.uri();
    for i in 0..100 {
        let request = support::get(format!("{uri}"), &format!("r{i}"));
        assert_eq!(send(pool.clone(), uri.clone(), request).await, 200);
    }
    assert_eq!(pod.requests(), 100);
    assert_eq!(pod.connections(), 1, "the connection was kept");
    assert!(!pool.is_empty());
}
