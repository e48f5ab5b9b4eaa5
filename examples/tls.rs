//! TLS to discovered pods: two pods on 127.0.0.1 and 127.0.0.2 (one port)
//! hold a certificate for the service name `svc.test` only, with no IP
//! address in it, as a pod behind a headless Service would. The client is
//! told `https://svc.test:<port>`, finds both pods by "DNS" (a
//! `StaticResolver` standing in for it), dials each by its IP address and
//! verifies it as `svc.test`, with `.tls(config)` and nothing else. Each
//! answer says which pod sent it and the SNI that pod saw; connections age
//! out after 1 s, so new TLS connections keep being made while it runs.
//!
//! ```text
//! cargo run --example tls --features rustls
//! ```
//!
//! Needs 127.0.0.2 on the loopback interface (Linux has all of 127/8).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tower::ServiceExt;
use tower_max_connection_age::Client;
use tower_max_connection_age::resolve::StaticResolver;

type Error = Box<dyn std::error::Error + Send + Sync>;

const SERVICE: &str = "svc.test";

#[tokio::main]
async fn main() -> Result<(), Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());

    // A self-signed certificate for the service name alone.
    let certified = rcgen::generate_simple_self_signed(vec![SERVICE.to_string()])?;
    let cert = certified.cert.der().clone();
    let key = PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der());

    // Two pods, as a headless Service's DNS would list them.
    let (first, port) = bind_pod(Ipv4Addr::new(127, 0, 0, 1), 0).await?;
    let (second, _) = bind_pod(Ipv4Addr::new(127, 0, 0, 2), port).await?;
    let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], PrivateKeyDer::from(key))?;
    server.alpn_protocols = vec![b"h2".to_vec()];
    let server = Arc::new(server);
    let pods = [
        ("pod-1", first.local_addr()?),
        ("pod-2", second.local_addr()?),
    ];
    tokio::spawn(serve_pod("pod-1", first, server.clone()));
    tokio::spawn(serve_pod("pod-2", second, server));
    for (name, addr) in pods {
        println!("{name} serves TLS on {addr} with a certificate for {SERVICE} only");
    }

    // The client trusts the certificate and knows the service by name.
    let client_config = client_config(provider, cert)?;
    let resolver = StaticResolver::new(pods.map(|(_, addr)| addr));
    let client = Client::builder()
        .uri(format!("https://{SERVICE}:{port}").parse()?)
        .resolver(resolver)
        .tls(Arc::new(client_config))
        .max_connection_age(Duration::from_secs(1))
        .build::<Full<Bytes>>()?;

    for i in 0..12 {
        let request =
            http::Request::get(format!("https://{SERVICE}:{port}/")).body(Full::default())?;
        let response = client.clone().oneshot(request).await?;
        let version = response.version();
        let body = response.into_body().collect().await?.to_bytes();
        println!(
            "request {i:2}: {version:?}, {}",
            String::from_utf8_lossy(&body)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let stats = client.stats();
    println!(
        "connections opened: {}, rotated: {} (every TLS handshake verified {SERVICE})",
        stats.opened, stats.rotated
    );
    Ok(())
}

/// Binds `ip:port`; port 0 picks a free one.
async fn bind_pod(ip: Ipv4Addr, port: u16) -> Result<(TcpListener, u16), Error> {
    let listener = TcpListener::bind(SocketAddr::from((ip, port))).await?;
    let port = listener.local_addr()?.port();
    Ok((listener, port))
}

/// rustls' client config trusting `cert` alone.
fn client_config(
    provider: Arc<rustls::crypto::CryptoProvider>,
    cert: CertificateDer<'static>,
) -> Result<rustls::ClientConfig, Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert)?;
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Serves HTTP/2 over TLS; each answer names the pod and the SNI it saw.
async fn serve_pod(name: &'static str, listener: TcpListener, config: Arc<rustls::ServerConfig>) {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    while let Ok((tcp, _)) = listener.accept().await {
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(tls) => tls,
                Err(e) => return eprintln!("{name}: TLS handshake failed: {e}"),
            };
            let sni = tls.get_ref().1.server_name().unwrap_or("none").to_string();
            let service = hyper::service::service_fn(move |_request| {
                let answer = format!("answered by {name} (SNI {sni})");
                async move {
                    Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from(
                        answer,
                    ))))
                }
            });
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}
