//! TLS with ALPN: a rustls server with a certificate made in the test, and
//! hyper-rustls as the client's connector.

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
