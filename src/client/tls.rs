//! TLS (feature `rustls`): [`ClientBuilder::tls`].

use std::sync::Arc;

use super::ClientBuilder;

impl<C> ClientBuilder<C> {
    /// TLS on rustls with `config` to every endpoint, verified against the
    /// service's name although pods are dialed by IP address, as grpc-go
    /// does: SNI and the certificate check use the host of
    /// [`uri`](Self::uri) (`my-svc.ns.svc` in
    /// `https://my-svc.ns.svc:443`), or else of [`origin`](Self::origin),
    /// or else each endpoint's own host. Endpoints and `uri` must be
    /// `https://`.
    ///
    /// Replaces the connector with a
    /// [`RustlsConnector`](crate::connector::RustlsConnector) over
    /// `HttpConnector` (`TCP_NODELAY`) that offers ALPN `h2` alone (it
    /// replaces the config's `alpn_protocols`). Everything else is your
    /// config: roots, client certificates, protocol versions and the
    /// crypto provider. For another transport, or another name, give
    /// `connector(RustlsConnector::with_connector(..).server_name(..))`
    /// instead.
    ///
    /// A host that is no valid TLS server name fails
    /// [`build`](Self::build) with an
    /// [`ErrorKind::Config`](crate::ErrorKind::Config) error; a failed
    /// handshake is a connect error (retried with backoff), whose source is
    /// rustls' error (see [`Client::discover_status`](super::Client::discover_status) for the last ones).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use tower_max_connection_age::Client;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let provider = Arc::new(rustls::crypto::ring::default_provider());
    /// # let roots = rustls::RootCertStore::empty();
    /// let config = rustls::ClientConfig::builder_with_provider(provider)
    ///     .with_safe_default_protocol_versions()?
    ///     .with_root_certificates(roots)
    ///     .with_no_client_auth();
    /// // Each pod is dialed at its IP address; each certificate is checked
    /// // for greeter.demo.svc.cluster.local.
    /// let client = Client::builder()
    ///     .uri("https://greeter.demo.svc.cluster.local:50051".parse()?)
    ///     .tls(Arc::new(config))
    ///     .build::<http_body_util::Full<bytes::Bytes>>()?;
    /// # drop(client);
    /// # Ok(())
    /// # }
    /// ```
    pub fn tls(
        self,
        config: Arc<rustls::ClientConfig>,
    ) -> ClientBuilder<crate::connector::RustlsConnector> {
        let mut connector = crate::connector::RustlsConnector::new(config);
        connector.takes_service_name = true;
        self.connector(connector)
    }
}
