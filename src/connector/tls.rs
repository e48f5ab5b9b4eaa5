//! [`RustlsConnector`]: TLS on rustls to endpoints dialed by IP address but
//! verified against the service's name, as grpc-go does.
//!
//! Discovery turns `https://my-svc.ns.svc.cluster.local:443` into one
//! endpoint per pod, `https://10.0.0.7:443`, and dials that. A TLS connector
//! that takes its server name from the URI it is called with (hyper-rustls'
//! default) then sends no SNI and checks the pod's certificate for the IP
//! address, which a certificate issued for the service does not list, so
//! every handshake fails. grpc-go dials the address it resolved but keeps
//! the target's host as the "authority" it verifies the certificate
//! against; [`RustlsConnector::server_name`] is that authority, and
//! [`ClientBuilder::tls`](crate::client::ClientBuilder::tls) sets it to the
//! host of the client's `uri(..)` for you.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;
use tower_service::Service;

use crate::error::{self, BoxError, Error, ErrorKind};

/// The one ALPN protocol a [`RustlsConnector`] offers.
const H2: &[u8] = b"h2";

/// A TLS connector on rustls whose certificate check does not depend on the
/// address it dials: a `tower::Service<Uri>` that connects through a
/// transport connector `C` (by default hyper-util's `HttpConnector`) to the
/// URI it is called with, then runs the TLS handshake for the
/// [`server_name`](Self::server_name) it was given, or else for the URI's
/// host.
///
/// Give it the service's name when the URIs it is called with are pods' IP
/// addresses, as [`RotatingDiscover`](crate::RotatingDiscover) makes them:
/// SNI and certificate verification then use the name the certificate was
/// issued for, and no pod needs its IP address in its certificate.
/// [`ClientBuilder::tls`](crate::client::ClientBuilder::tls) does this with
/// the client's `uri(..)` and needs no code of yours.
///
/// ALPN is always `h2` alone: the connector replaces the config's
/// `alpn_protocols`. [`Http2Connector`](crate::Http2Connector) speaks only
/// HTTP/2, and it accepts a TLS connection only when ALPN chose `h2` (a
/// server that was offered `http/1.1` too may pick it, and one that was
/// offered nothing may not speak HTTP/2 at all; grpc-go's servers, 1.67
/// and later, reject TLS clients that negotiate no ALPN protocol). A server that offers only `http/1.1`
/// therefore fails the handshake (rustls' `NoApplicationProtocol` alert)
/// instead of accepting a connection that cannot be used. Everything else
/// (roots, client certificates, protocol versions, the crypto provider,
/// session resumption) is the config you give.
///
/// The connection it returns, [`RustlsStream`], tells hyper-util (and
/// `Http2Connector`) that ALPN negotiated `h2`, through
/// `Connection::connected`.
///
/// Every failure is an [`Error`], never a panic: an `http://` URI, or a
/// host that is neither a DNS name nor an IP address (and no
/// `server_name`), is an [`ErrorKind::Config`] error; the transport's own
/// failure is an [`ErrorKind::Connect`] error with the transport's error as
/// its source; a failed handshake is an [`ErrorKind::Connect`] error that
/// names the server name and has rustls' error
/// ([`rustls::Error`], such as an invalid certificate) as its source, or
/// the I/O error when the peer closed or reset the connection first.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use rustls::pki_types::ServerName;
/// use tower::Layer;
/// use tower_max_connection_age::connector::{RustlsConnector, default_builder};
/// use tower_max_connection_age::{Http2Connector, MaxConnectionAgeLayer, RotatingDiscover};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let provider = Arc::new(rustls::crypto::ring::default_provider());
/// # let roots = rustls::RootCertStore::empty();
/// // Your config: your roots (or a platform verifier) and crypto provider.
/// let config = rustls::ClientConfig::builder_with_provider(provider)
///     .with_safe_default_protocol_versions()?
///     .with_root_certificates(roots)
///     .with_no_client_auth();
///
/// // Pods dialed as https://10.0.0.7:443 are verified as my-svc.ns.svc.
/// let tls = RustlsConnector::new(Arc::new(config))
///     .server_name(ServerName::try_from("my-svc.ns.svc")?);
/// assert_eq!(tls.config().alpn_protocols, [b"h2".to_vec()]);
///
/// let make = MaxConnectionAgeLayer::new(Duration::from_secs(300)).layer(
///     Http2Connector::<_, http_body_util::Empty<bytes::Bytes>>::new(tls, default_builder()),
/// );
/// tokio::runtime::Runtime::new()?.block_on(async {
///     let discover = RotatingDiscover::builder()
///         .endpoints(["https://10.0.0.7:443".parse()?, "https://10.0.0.8:443".parse()?])
///         .build(make)?;
/// #   drop(discover);
///     Ok::<_, Box<dyn std::error::Error>>(())
/// })?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RustlsConnector<C = HttpConnector> {
    inner: C,
    tls: TlsConnector,
    server_name: Option<ServerName<'static>>,
    /// Made by `ClientBuilder::tls`: `build` sets `server_name` to the
    /// service's name.
    pub(crate) takes_service_name: bool,
}

impl RustlsConnector<HttpConnector> {
    /// TLS with `config` over hyper-util's `HttpConnector`, with
    /// `TCP_NODELAY` (HTTP/2 multiplexes small frames; Nagle's algorithm
    /// would hold them back) and accepting `https://` URIs
    /// (`enforce_http(false)`).
    pub fn new(config: Arc<ClientConfig>) -> Self {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.enforce_http(false);
        RustlsConnector::with_connector(http, config)
    }
}

impl<C> RustlsConnector<C> {
    /// TLS with `config` over the transport connector `connector`, which
    /// is called with the same `https://` URI (an `HttpConnector` must have
    /// `enforce_http(false)`).
    pub fn with_connector(connector: C, config: Arc<ClientConfig>) -> Self {
        let mut config = Arc::unwrap_or_clone(config);
        config.alpn_protocols = vec![H2.to_vec()];
        RustlsConnector {
            inner: connector,
            tls: TlsConnector::from(Arc::new(config)),
            server_name: None,
            takes_service_name: false,
        }
    }

    /// The name every handshake uses for SNI and verifies the server's
    /// certificate against, whatever address the URI names: the service's
    /// name, when the URIs are its pods' addresses. Default: each URI's
    /// host (an IP address is verified as an IP address and sends no SNI).
    pub fn server_name(mut self, name: ServerName<'static>) -> Self {
        self.server_name = Some(name);
        self
    }

    pub(crate) fn set_server_name(&mut self, name: ServerName<'static>) {
        self.server_name = Some(name);
    }

    /// The rustls config the handshakes use: yours, with `alpn_protocols`
    /// set to `h2` alone.
    pub fn config(&self) -> &Arc<ClientConfig> {
        self.tls.config()
    }

    crate::accessors::inner_accessors!(inner: C, "the wrapped transport connector");

    /// The name to verify a connection to `uri` against.
    fn name_for(&self, uri: &Uri) -> Result<ServerName<'static>, Error> {
        match &self.server_name {
            Some(name) => Ok(name.clone()),
            None => server_name_of(uri),
        }
    }
}

/// The TLS server name for `uri`'s host: an IP address (brackets stripped
/// from an IPv6 one) or a DNS name; [`ErrorKind::Config`] when it is
/// neither, or there is no host.
pub(crate) fn server_name_of(uri: &Uri) -> Result<ServerName<'static>, Error> {
    let Some(host) = uri.host() else {
        return Err(Error::config(format!(
            "`{uri}` has no host to verify the server's TLS certificate against; \
             give one with RustlsConnector::server_name"
        )));
    };
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(ServerName::from(ip));
    }
    ServerName::try_from(bare.to_owned()).map_err(|e| {
        Error::config(format!(
            "`{host}` (the host of `{uri}`) is not a valid TLS server name \
             (a DNS name or an IP address)"
        ))
        .with_source(e)
    })
}

impl<C: fmt::Debug> fmt::Debug for RustlsConnector<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RustlsConnector")
            .field("inner", &self.inner)
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

type ConnectFuture<T> = Pin<Box<dyn Future<Output = Result<RustlsStream<T>, Error>> + Send>>;

impl<C> Service<Uri> for RustlsConnector<C>
where
    C: Service<Uri>,
    C::Response: Read + Write + Connection + Unpin + Send + 'static,
    C::Error: Into<BoxError>,
    C::Future: Send + 'static,
{
    type Response = RustlsStream<C::Response>;
    type Error = Error;
    type Future = ConnectFuture<C::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner
            .poll_ready(cx)
            .map_err(|e| error::from_box(e.into(), ErrorKind::Connect))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        if uri.scheme() != Some(&http::uri::Scheme::HTTPS) {
            let error = Error::config(format!(
                "RustlsConnector speaks TLS only, and `{uri}` is not an https:// URI"
            ));
            return Box::pin(std::future::ready(Err(error)));
        }
        let name = match self.name_for(&uri) {
            Ok(name) => name,
            Err(error) => return Box::pin(std::future::ready(Err(error))),
        };
        let transport = self.inner.call(uri);
        let tls = self.tls.clone();
        Box::pin(async move {
            let io = transport
                .await
                .map_err(|e| error::from_box(e.into(), ErrorKind::Connect))?;
            match tls.connect(name.clone(), TokioIo::new(io)).await {
                Ok(stream) => Ok(RustlsStream {
                    inner: TokioIo::new(stream),
                }),
                Err(e) => Err(handshake_failed(&name, e)),
            }
        })
    }
}

/// A failed handshake as an [`ErrorKind::Connect`] error whose source is
/// rustls' own error when there is one (tokio-rustls wraps it in an
/// `io::Error`, whose `source()` would skip it).
fn handshake_failed(name: &ServerName<'_>, error: io::Error) -> Error {
    let failed = Error::new(ErrorKind::Connect).with_message(format!(
        "TLS handshake for server name `{}` failed",
        name.to_str()
    ));
    match error.downcast::<rustls::Error>() {
        Ok(tls) => failed.with_source(tls),
        Err(io) => failed.with_source(io),
    }
}

/// A TLS connection made by [`RustlsConnector`] over the transport `T`.
///
/// It is hyper's `Read` and `Write`, and hyper-util's `Connection`, whose
/// `connected()` is the transport's with `negotiated_h2()` when ALPN chose
/// `h2` (which is what [`Http2Connector`](crate::Http2Connector) checks).
pub struct RustlsStream<T> {
    inner: TokioIo<tokio_rustls::client::TlsStream<TokioIo<T>>>,
}

impl<T> RustlsStream<T> {
    /// The transport and rustls' connection state (the negotiated ALPN
    /// protocol, the peer's certificates, ...).
    pub fn get_ref(&self) -> (&T, &rustls::ClientConnection) {
        let (io, tls) = self.inner.inner().get_ref();
        (io.inner(), tls)
    }

    /// The transport and rustls' connection state, mutably.
    pub fn get_mut(&mut self) -> (&mut T, &mut rustls::ClientConnection) {
        let (io, tls) = self.inner.inner_mut().get_mut();
        (io.inner_mut(), tls)
    }

    /// The transport and rustls' connection state.
    pub fn into_inner(self) -> (T, rustls::ClientConnection) {
        let (io, tls) = self.inner.into_inner().into_inner();
        (io.into_inner(), tls)
    }
}

impl<T: Connection> Connection for RustlsStream<T> {
    fn connected(&self) -> Connected {
        let (io, tls) = self.get_ref();
        let connected = io.connected();
        if tls.alpn_protocol() == Some(H2) {
            connected.negotiated_h2()
        } else {
            connected
        }
    }
}

impl<T> fmt::Debug for RustlsStream<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (_, tls) = self.inner.inner().get_ref();
        f.debug_struct("RustlsStream")
            .field("alpn_protocol", &tls.alpn_protocol())
            .field("protocol_version", &tls.protocol_version())
            .finish_non_exhaustive()
    }
}

impl<T: Read + Write + Unpin> Read for RustlsStream<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: Read + Write + Unpin> Write for RustlsStream<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(uri: &str) -> Result<ServerName<'static>, Error> {
        server_name_of(&uri.parse().unwrap())
    }

    #[test]
    fn the_server_name_is_the_uri_host() {
        assert_eq!(
            name("https://my-svc.ns.svc:443").unwrap(),
            ServerName::try_from("my-svc.ns.svc").unwrap()
        );
        let v4: IpAddr = "10.0.0.7".parse().unwrap();
        assert_eq!(name("https://10.0.0.7:443").unwrap(), ServerName::from(v4));
        let v6: IpAddr = "fd00::7".parse().unwrap();
        assert_eq!(name("https://[fd00::7]:443").unwrap(), ServerName::from(v6));
    }

    #[test]
    fn a_host_that_is_no_server_name_is_a_config_error_with_the_reason() {
        let error = name("https://bad..name:443").unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Config);
        let cause = error.cause().unwrap();
        assert!(cause.is::<rustls::pki_types::InvalidDnsNameError>());
        assert_eq!(name("/path-only").unwrap_err().kind(), ErrorKind::Config);
    }

    #[test]
    fn the_config_offers_h2_alone_and_is_otherwise_the_callers() {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config.enable_sni = false;
        let given = Arc::new(config);
        let connector = RustlsConnector::new(given.clone());
        assert_eq!(connector.config().alpn_protocols, [b"h2".to_vec()]);
        assert!(!connector.config().enable_sni);
        assert_eq!(
            given.alpn_protocols,
            [b"http/1.1".to_vec()],
            "the caller's config is untouched"
        );
    }
}
