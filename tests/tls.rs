//! TLS with ALPN: rustls servers with certificates made in the test, and
//! hyper-rustls as the client's connector; with feature `rustls`, pods on
//! 127.0.0.1 and 127.0.0.2 whose certificate names only the service, dialed
//! by IP through `RustlsConnector` and `ClientBuilder::tls`.

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use support::bounded;
use tokio::net::TcpListener;
use tower::{Service, ServiceExt};
use tower_max_connection_age::connector::default_builder;
use tower_max_connection_age::{Client, ErrorKind, Http2Connector};

type Body = Full<Bytes>;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A self-signed certificate for 127.0.0.1, and its key.
fn certificate() -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let key = PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der());
    (cert.cert.der().clone(), key.into())
}

/// A TLS server on 127.0.0.1 offering `alpn`, serving hyper's HTTP/2 or
/// HTTP/1.1 (whichever ALPN chose) with a fixed answer.
async fn tls_server(alpn: &[&[u8]]) -> (std::net::SocketAddr, CertificateDer<'static>) {
    let (cert, key) = certificate();
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                let service = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                        Bytes::from_static(b"over tls"),
                    )))
                });
                let io = TokioIo::new(tls);
                if h2 {
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(io, service)
                        .await;
                } else {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await;
                }
            });
        }
    });
    (addr, cert)
}

/// hyper-rustls trusting `cert`, asking for ALPN `h2` and `http/1.1`.
fn https_connector(
    cert: CertificateDer<'static>,
) -> hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_only()
        .enable_all_versions()
        .build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_server_offering_only_http1_is_a_typed_connect_error_at_once() {
    let (addr, cert) = tls_server(&[b"http/1.1"]).await;
    let mut connector = Http2Connector::<_, Body>::new(https_connector(cert), default_builder());
    let uri: http::Uri = format!("https://{addr}").parse().unwrap();
    let error = tokio::time::timeout(Duration::from_secs(1), async {
        connector.ready().await.unwrap().call(uri).await
    })
    .await
    .expect("the error came within 1 s")
    .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Connect);
    assert!(
        error.to_string().contains("did not negotiate HTTP/2"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_over_tls_with_alpn_h2_serves() {
    let (addr, cert) = tls_server(&[b"h2", b"http/1.1"]).await;
    let client = Client::builder()
        .endpoint(format!("https://{addr}").parse().unwrap())
        .connector(https_connector(cert))
        .build::<Body>()
        .unwrap();
    let request = http::Request::get(format!("https://{addr}/"))
        .body(Body::default())
        .unwrap();
    let response = bounded(client.oneshot(request)).await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "over tls");
}

/// Pods dialed by IP address, their certificate naming only the service.
#[cfg(feature = "rustls")]
mod pods {
    use std::collections::HashMap;
    use std::net::{Ipv4Addr, SocketAddr};
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use rustls::pki_types::ServerName;
    use tokio::sync::watch;
    use tokio::task::JoinSet;
    use tower::{Layer, ServiceBuilder};
    use tower_max_connection_age::connector::RustlsConnector;
    use tower_max_connection_age::discover::ConnectErrors;
    use tower_max_connection_age::replay::ReplayBody;
    use tower_max_connection_age::resolve::StaticResolver;
    use tower_max_connection_age::{Error, MaxConnectionAgeLayer, ReplayLayer, RotatingDiscover};

    use super::*;

    /// The service's name: the only name in the pods' certificate.
    const SERVICE: &str = "svc.test.local";

    /// A self-signed certificate for `name` alone (no IP address), and its key.
    fn certificate_for(name: &str) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
        let cert = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
        let key = PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der());
        (cert.cert.der().clone(), key.into())
    }

    /// rustls' client config trusting `cert` alone, offering `alpn`.
    fn client_config(cert: CertificateDer<'static>, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).unwrap();
        let mut config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }

    /// A completed handshake as the pod saw it: the SNI and the ALPN protocol.
    type Handshake = (Option<String>, Option<Vec<u8>>);

    /// One TLS pod: what it saw of each handshake, and what it answered.
    struct Pod {
        name: String,
        addr: SocketAddr,
        /// Handshakes completed, as a watch so a test can wait on it.
        handshakes: watch::Sender<usize>,
        /// Handshakes the pod saw fail.
        failed_handshakes: watch::Sender<usize>,
        /// The SNI of each `ClientHello`, completed handshakes or not.
        hellos: Mutex<Vec<Option<String>>>,
        /// The SNI and the ALPN protocol of each completed handshake.
        seen: Mutex<Vec<Handshake>>,
        requests: AtomicUsize,
    }

    impl Pod {
        fn handshakes(&self) -> usize {
            *self.handshakes.borrow()
        }

        fn seen(&self) -> Vec<Handshake> {
            self.seen.lock().unwrap().clone()
        }

        fn uri(&self) -> http::Uri {
            format!("https://{}", self.addr).parse().unwrap()
        }
    }

    /// Two pods on 127.0.0.1 and 127.0.0.2, one port, one certificate,
    /// offering `alpn`; each answers with its name in `x-backend` and the body.
    async fn start_pods(
        cert: &CertificateDer<'static>,
        key: &PrivateKeyDer<'static>,
        alpn: &[&[u8]],
    ) -> Vec<Arc<Pod>> {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key.clone_key())
            .unwrap();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let config = Arc::new(config);
        let (first, second) = bind_pair().await;
        [first, second]
            .into_iter()
            .enumerate()
            .map(|(i, listener)| {
                let pod = Arc::new(Pod {
                    name: format!("pod-{}", i + 1),
                    addr: listener.local_addr().unwrap(),
                    handshakes: watch::Sender::new(0),
                    failed_handshakes: watch::Sender::new(0),
                    hellos: Mutex::new(Vec::new()),
                    seen: Mutex::new(Vec::new()),
                    requests: AtomicUsize::new(0),
                });
                tokio::spawn(serve(listener, config.clone(), pod.clone()));
                pod
            })
            .collect()
    }

    /// Listeners on 127.0.0.1 and 127.0.0.2 with the same free port.
    async fn bind_pair() -> (TcpListener, TcpListener) {
        for _ in 0..50 {
            let first = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = first.local_addr().unwrap().port();
            if let Ok(second) = TcpListener::bind((Ipv4Addr::new(127, 0, 0, 2), port)).await {
                return (first, second);
            }
        }
        panic!("no port free on both 127.0.0.1 and 127.0.0.2 in 50 tries");
    }

    async fn serve(listener: TcpListener, config: Arc<rustls::ServerConfig>, pod: Arc<Pod>) {
        while let Ok((tcp, _)) = listener.accept().await {
            let config = config.clone();
            let pod = pod.clone();
            tokio::spawn(async move {
                let acceptor = rustls::server::Acceptor::default();
                let handshake = async {
                    let start = tokio_rustls::LazyConfigAcceptor::new(acceptor, tcp).await?;
                    let sni = start.client_hello().server_name().map(str::to_owned);
                    pod.hellos.lock().unwrap().push(sni);
                    start.into_stream(config).await
                };
                let tls = match handshake.await {
                    Ok(tls) => tls,
                    Err(_) => {
                        pod.failed_handshakes.send_modify(|n| *n += 1);
                        return;
                    }
                };
                let connection = tls.get_ref().1;
                let sni = connection.server_name().map(str::to_owned);
                let alpn = connection.alpn_protocol().map(<[u8]>::to_vec);
                pod.seen.lock().unwrap().push((sni, alpn));
                pod.handshakes.send_modify(|n| *n += 1);
                let answering = pod.clone();
                let service = hyper::service::service_fn(move |_req| {
                    answering.requests.fetch_add(1, Ordering::Relaxed);
                    let name = answering.name.clone();
                    async move {
                        let response = http::Response::builder()
                            .header("x-backend", &name)
                            .body(Full::new(Bytes::from(name)))
                            .unwrap();
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    }

    /// What came back from [`send_until`].
    #[derive(Debug, Default)]
    struct Tally {
        per_backend: HashMap<String, usize>,
        versions: Vec<http::Version>,
        failed: Vec<String>,
    }

    /// Sends GETs of `uri` from 4 workers until `done()` holds; fails the
    /// test if it does not within 20 s.
    async fn send_until<S, RB>(
        service: S,
        uri: String,
        done: impl Fn() -> bool + Send + Sync + 'static,
    ) -> Tally
    where
        S: Service<http::Request<Body>, Response = http::Response<RB>> + Clone + Send + 'static,
        S::Error: std::fmt::Display + Send,
        S::Future: Send,
        RB: http_body::Body + Send + 'static,
        RB::Data: Send,
        RB::Error: std::fmt::Display,
    {
        let done = Arc::new(done);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let mut workers = JoinSet::new();
        for _ in 0..4 {
            let (service, uri, done) = (service.clone(), uri.clone(), done.clone());
            workers.spawn(async move {
                let mut tally = Tally::default();
                while !done() && tokio::time::Instant::now() < deadline {
                    let request = http::Request::get(&uri).body(Body::default()).unwrap();
                    let service = service.clone();
                    let answer = tokio::time::timeout(Duration::from_secs(5), async move {
                        let response = service.oneshot(request).await.map_err(|e| e.to_string())?;
                        let version = response.version();
                        let backend = response.headers()["x-backend"].to_str().unwrap().to_owned();
                        response
                            .into_body()
                            .collect()
                            .await
                            .map_err(|e| e.to_string())?;
                        Ok::<_, String>((version, backend))
                    })
                    .await;
                    match answer {
                        Ok(Ok((version, backend))) => {
                            tally.versions.push(version);
                            *tally.per_backend.entry(backend).or_default() += 1;
                        }
                        Ok(Err(error)) => tally.failed.push(error),
                        Err(_) => tally.failed.push("no answer within 5 s".into()),
                    }
                }
                tally
            });
        }
        let mut all = Tally::default();
        while let Some(tally) = workers.join_next().await {
            let tally = tally.unwrap();
            for (backend, n) in tally.per_backend {
                *all.per_backend.entry(backend).or_default() += n;
            }
            all.versions.extend(tally.versions);
            all.failed.extend(tally.failed);
        }
        assert!(done(), "not done within 20 s: {all:?}");
        all
    }

    /// Until every pod completed `n` handshakes: each pod's connection was
    /// replaced at least `n - 1` times.
    fn each_pod_handshook(
        pods: &[Arc<Pod>],
        n: usize,
    ) -> impl Fn() -> bool + Send + Sync + 'static {
        let pods = pods.to_vec();
        move || pods.iter().all(|pod| pod.handshakes() >= n)
    }

    /// Every pod answered, over HTTP/2, and every handshake named the
    /// service (SNI) and chose ALPN `h2`.
    fn assert_served_as_the_service(pods: &[Arc<Pod>], tally: &Tally) {
        assert!(tally.failed.is_empty(), "failed: {:?}", tally.failed);
        assert!(
            tally.versions.iter().all(|v| *v == http::Version::HTTP_2),
            "{:?}",
            tally.versions
        );
        for pod in pods {
            assert!(
                tally.per_backend.get(&pod.name).is_some_and(|&n| n > 0),
                "{} answered nothing: {tally:?}",
                pod.name
            );
            for (sni, alpn) in pod.seen() {
                assert_eq!(
                    sni.as_deref(),
                    Some(SERVICE),
                    "{}'s handshake SNI",
                    pod.name
                );
                assert_eq!(
                    alpn.as_deref(),
                    Some(&b"h2"[..]),
                    "{}'s handshake ALPN",
                    pod.name
                );
            }
        }
    }

    /// The first `T` in `error`'s source chain (with feature `tonic`, a
    /// gRPC status comes first).
    fn find<T: std::error::Error + 'static>(error: &Error) -> Option<&T> {
        let mut cur = std::error::Error::source(error);
        while let Some(e) = cur {
            if let Some(found) = e.downcast_ref::<T>() {
                return Some(found);
            }
            cur = e.source();
        }
        None
    }

    /// The `rustls::Error` in `error`'s source chain.
    fn rustls_error(error: &Error) -> Option<&rustls::Error> {
        find::<rustls::Error>(error)
    }

    #[cfg(feature = "hickory")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn client_tls_reaches_pods_found_by_dns_and_verifies_the_service_name_while_rotating() {
        use support::dns::DnsServer;
        use tower_max_connection_age::resolve::HickoryResolver;

        let (cert, key) = certificate_for(SERVICE);
        let pods = start_pods(&cert, &key, &[b"h2"]).await;
        let port = pods[0].addr.port();
        let dns = DnsServer::start().await;
        dns.set_a(
            &format!("{SERVICE}."),
            &[Ipv4Addr::new(127, 0, 0, 1), Ipv4Addr::new(127, 0, 0, 2)],
            1,
        );
        let client = Client::builder()
            .uri(format!("https://{SERVICE}:{port}").parse().unwrap())
            .resolver(HickoryResolver::with_nameserver(dns.addr()).unwrap())
            .tls(client_config(cert, &[]))
            .max_connection_age(Duration::from_millis(300))
            .build::<Body>()
            .unwrap();

        // Until each pod's connection was replaced twice (the pods count
        // the handshakes, the client the swaps, which come a little later).
        let handshook = each_pod_handshook(&pods, 3);
        let rotating = client.clone();
        let tally = send_until(
            client.clone(),
            format!("https://{SERVICE}:{port}/"),
            move || handshook() && rotating.stats().rotated >= 4,
        )
        .await;

        assert_served_as_the_service(&pods, &tally);
        for pod in &pods {
            assert_eq!(*pod.failed_handshakes.borrow(), 0, "{}", pod.name);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rustls_connector_with_a_server_name_under_the_age_layer_and_rotating_discover() {
        let (cert, key) = certificate_for(SERVICE);
        let pods = start_pods(&cert, &key, &[b"h2", b"http/1.1"]).await;
        let port = pods[0].addr.port();
        let tls = RustlsConnector::new(client_config(cert, &[b"http/1.1"]))
            .server_name(ServerName::try_from(SERVICE).unwrap());
        let make = MaxConnectionAgeLayer::new(Duration::from_millis(300)).layer(Http2Connector::<
            _,
            ReplayBody<Body>,
        >::new(
            tls,
            default_builder(),
        ));
        let discover = RotatingDiscover::builder()
            .resolve(
                format!("https://{SERVICE}:{port}").parse().unwrap(),
                StaticResolver::new(pods.iter().map(|pod| pod.addr)),
            )
            .build(make)
            .unwrap();
        let service = ServiceBuilder::new()
            .layer(ReplayLayer::new())
            .buffer(64)
            .service(tower::balance::p2c::Balance::new(discover));

        let tally = send_until(
            service,
            format!("https://{SERVICE}:{port}/"),
            each_pod_handshook(&pods, 3),
        )
        .await;

        // The config asked for http/1.1 alone; the connector offered h2.
        assert_served_as_the_service(&pods, &tally);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_certificate_for_another_name_is_a_typed_connect_error_naming_it() {
        let (cert, key) = certificate_for("other.test");
        let pods = start_pods(&cert, &key, &[b"h2"]).await;
        let tls = RustlsConnector::new(client_config(cert, &[]))
            .server_name(ServerName::try_from(SERVICE).unwrap());
        let mut connector = Http2Connector::<_, Body>::new(tls, default_builder())
            .connect_timeout(Duration::from_secs(2));

        let error = tokio::time::timeout(Duration::from_secs(5), async {
            connector.ready().await.unwrap().call(pods[0].uri()).await
        })
        .await
        .expect("the error came within 5 s")
        .unwrap_err();

        assert_eq!(error.kind(), ErrorKind::Connect, "{error:?}");
        let cause = rustls_error(&error).expect("rustls' error is in the source chain");
        assert!(
            matches!(
                cause,
                rustls::Error::InvalidCertificate(
                    rustls::CertificateError::NotValidForName
                        | rustls::CertificateError::NotValidForNameContext { .. }
                )
            ),
            "{cause:?}"
        );
        // The pod was asked for the service's name, and the client refused
        // its certificate.
        let mut failed = pods[0].failed_handshakes.subscribe();
        bounded(failed.wait_for(|n| *n == 1)).await.unwrap();
        assert_eq!(*pods[0].hellos.lock().unwrap(), [Some(SERVICE.to_owned())]);
        assert_eq!(pods[0].handshakes(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn client_tls_with_a_wrong_certificate_fails_requests_in_time_with_each_pods_error() {
        let (cert, key) = certificate_for("other.test");
        let pods = start_pods(&cert, &key, &[b"h2"]).await;
        let port = pods[0].addr.port();
        let client = Client::builder()
            .uri(format!("https://{SERVICE}:{port}").parse().unwrap())
            .resolver(StaticResolver::new(pods.iter().map(|pod| pod.addr)))
            .tls(client_config(cert, &[]))
            .ready_timeout(Duration::from_millis(500))
            .build::<Body>()
            .unwrap();
        // Both pods were tried (and refused) before the request is sent.
        for pod in &pods {
            let mut failed = pod.failed_handshakes.subscribe();
            bounded(failed.wait_for(|n| *n >= 1)).await.unwrap();
        }

        let request = http::Request::get(format!("https://{SERVICE}:{port}/"))
            .body(Body::default())
            .unwrap();
        let error = tokio::time::timeout(Duration::from_secs(5), client.oneshot(request))
            .await
            .expect("the request failed within 5 s")
            .unwrap_err();

        assert_eq!(error.kind(), ErrorKind::NoReadyEndpoint, "{error:?}");
        let errors = find::<ConnectErrors>(&error).expect("the connect errors are the source");
        for pod in &pods {
            let endpoint = format!("https://{}", pod.addr);
            assert!(
                errors
                    .errors()
                    .iter()
                    .any(|(slot, _)| slot.starts_with(&endpoint)),
                "no connect error for {endpoint}: {errors:?}"
            );
            assert_eq!(pod.requests.load(Ordering::Relaxed), 0);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_pod_offering_only_http1_fails_the_handshake_with_no_application_protocol() {
        let (cert, key) = certificate_for(SERVICE);
        let pods = start_pods(&cert, &key, &[b"http/1.1"]).await;
        let mut tls = RustlsConnector::new(client_config(cert, &[b"http/1.1"]))
            .server_name(ServerName::try_from(SERVICE).unwrap());

        let error = bounded(async { tls.ready().await.unwrap().call(pods[0].uri()).await })
            .await
            .unwrap_err();

        assert_eq!(error.kind(), ErrorKind::Connect, "{error:?}");
        assert!(
            matches!(
                rustls_error(&error),
                Some(rustls::Error::AlertReceived(
                    rustls::AlertDescription::NoApplicationProtocol
                ))
            ),
            "{error:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_stream_reports_alpn_h2_to_hyper_util() {
        use hyper_util::client::legacy::connect::Connection;

        let (cert, key) = certificate_for(SERVICE);
        let pods = start_pods(&cert, &key, &[b"http/1.1", b"h2"]).await;
        let mut tls = RustlsConnector::new(client_config(cert, &[]))
            .server_name(ServerName::try_from(SERVICE).unwrap());

        let stream = bounded(async { tls.ready().await.unwrap().call(pods[1].uri()).await })
            .await
            .unwrap();

        assert!(stream.connected().is_negotiated_h2());
        let (tcp, connection) = stream.get_ref();
        assert_eq!(connection.alpn_protocol(), Some(&b"h2"[..]));
        assert_eq!(tcp.inner().peer_addr().unwrap(), pods[1].addr);
        let mut handshakes = pods[1].handshakes.subscribe();
        bounded(handshakes.wait_for(|n| *n == 1)).await.unwrap();
        assert_eq!(
            pods[1].seen(),
            [(Some(SERVICE.to_owned()), Some(b"h2".to_vec()))]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rustls_connector_is_a_connector_for_hyper_utils_legacy_client_too() {
        let (cert, key) = certificate_for(SERVICE);
        let pods = start_pods(&cert, &key, &[b"h2"]).await;
        let tls = RustlsConnector::new(client_config(cert, &[]))
            .server_name(ServerName::try_from(SERVICE).unwrap());
        let client =
            hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build::<_, Body>(tls);

        let request = http::Request::get(pods[1].uri())
            .body(Body::default())
            .unwrap();
        let response = bounded(client.request(request)).await.unwrap();

        // hyper-util chose HTTP/2 from the stream's `negotiated_h2`.
        assert_eq!(response.version(), http::Version::HTTP_2);
        assert_eq!(response.headers()["x-backend"], "pod-2");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn without_uri_or_origin_each_endpoint_is_verified_as_its_own_host() {
        // A certificate for 127.0.0.1 (an IP address SAN), dialed as such.
        let (addr, cert) = tls_server(&[b"h2"]).await;
        let client = Client::builder()
            .endpoint(format!("https://{addr}").parse().unwrap())
            .tls(client_config(cert, &[]))
            .build::<Body>()
            .unwrap();
        let request = http::Request::get(format!("https://{addr}/"))
            .body(Body::default())
            .unwrap();
        let response = bounded(client.oneshot(request)).await.unwrap();
        assert_eq!(response.version(), http::Version::HTTP_2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn with_ip_endpoints_the_origin_names_the_service() {
        let (cert, key) = certificate_for(SERVICE);
        let pods = start_pods(&cert, &key, &[b"h2"]).await;
        let port = pods[0].addr.port();
        // `tls` before `origin`: the order does not matter.
        let client = Client::builder()
            .tls(client_config(cert, &[]))
            .endpoints(pods.iter().map(|pod| pod.uri()))
            .origin(format!("https://{SERVICE}:{port}").parse().unwrap())
            .build::<Body>()
            .unwrap();

        let tally = send_until(client, format!("https://{SERVICE}:{port}/"), {
            let pods = pods.clone();
            move || {
                pods.iter()
                    .all(|pod| pod.requests.load(Ordering::Relaxed) > 0)
            }
        })
        .await;

        assert_served_as_the_service(&pods, &tally);
    }

    #[tokio::test]
    async fn client_tls_with_plain_http_or_a_bad_host_is_a_config_error() {
        let (cert, _) = certificate_for(SERVICE);
        let config = client_config(cert, &[]);
        let build = |builder: tower_max_connection_age::client::ClientBuilder| {
            builder.tls(config.clone()).build::<Body>().unwrap_err()
        };
        let cases = [
            Client::builder().uri("http://svc.test:80".parse().unwrap()),
            Client::builder().endpoint("http://10.0.0.1:80".parse().unwrap()),
            Client::builder().uri("https://bad..name:443".parse().unwrap()),
            Client::builder()
                .endpoint("https://10.0.0.1:443".parse().unwrap())
                .origin("https://-bad-:443".parse().unwrap()),
        ];
        for builder in cases {
            let error = build(builder);
            assert_eq!(error.kind(), ErrorKind::Config, "{error:?}");
        }
        // The bad name's error carries rustls' reason.
        let error = build(Client::builder().uri("https://bad..name:443".parse().unwrap()));
        assert!(
            find::<rustls::pki_types::InvalidDnsNameError>(&error).is_some(),
            "{error:?}"
        );
        // And `tls` is what makes https:// work: without it, a Config error.
        let error = Client::builder()
            .endpoint("https://10.0.0.1:443".parse().unwrap())
            .build::<Body>()
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Config);
    }

    #[tokio::test]
    async fn rustls_connector_refuses_plain_http_uris() {
        let (cert, _) = certificate_for(SERVICE);
        let mut tls = RustlsConnector::new(client_config(cert, &[]));
        let error = bounded(async {
            tls.ready()
                .await
                .unwrap()
                .call("http://127.0.0.1:1".parse().unwrap())
                .await
        })
        .await
        .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Config, "{error:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refused_transport_is_a_connect_error_with_the_transport_error_as_source() {
        let (cert, _) = certificate_for(SERVICE);
        // A port nothing listens on: bound, then closed.
        let addr = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let mut tls = RustlsConnector::new(client_config(cert, &[]));
        let error = bounded(async {
            tls.ready()
                .await
                .unwrap()
                .call(format!("https://{addr}").parse().unwrap())
                .await
        })
        .await
        .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Connect, "{error:?}");
        assert!(rustls_error(&error).is_none(), "{error:?}");
        let io = find::<std::io::Error>(&error).expect("the I/O error is in the chain");
        assert_eq!(
            io.kind(),
            std::io::ErrorKind::ConnectionRefused,
            "{error:?}"
        );
    }
}
