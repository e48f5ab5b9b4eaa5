//! Building a [`Client`] from its [`ClientBuilder`]: with the crate's own
//! connector ([`build`](ClientBuilder::build)) or connections made by
//! another ([`build_with`](ClientBuilder::build_with)).

use bytes::Bytes;
use http::Uri;
use http_body::Body;
use hyper::rt::{Read, Write};
use hyper_util::client::legacy::connect::{Connection as TransportInfo, HttpConnector};
use tower_service::Service;

use super::options::Options;
use super::{Client, ClientBuilder, SharedConnection};
use crate::connector::{Http2Connector, KeepAliveConfig};
use crate::error::{BoxError, Error};
use crate::replay::ReplayBody;

impl<C> ClientBuilder<C> {
    /// Checks the configuration and starts the client's background task.
    /// Must be called inside a Tokio runtime.
    pub fn build<B>(mut self) -> Result<Client<B>, Error>
    where
        C: Service<Uri> + Clone + Send + 'static,
        C::Response: Read + Write + TransportInfo + Unpin + Send + 'static,
        C::Error: Into<BoxError>,
        C::Future: Send,
        B: Body<Data = Bytes> + Unpin + Send + 'static,
        B::Error: Into<BoxError>,
    {
        self.give_tls_the_service_name()?;
        self.keep_alive.validate()?;
        if std::any::TypeId::of::<C>() == std::any::TypeId::of::<HttpConnector>()
            && self.uses_https()
        {
            return Err(Error::config(
                "an https:// endpoint needs a TLS connector: the default HttpConnector speaks \
                 plain TCP only; use `tls(..)` (feature `rustls`), or give one with \
                 `connector(..)` (for example hyper-rustls' HttpsConnector asking for ALPN h2)",
            ));
        }
        let (mut options, connector, http2, keep_alive) = self.split();
        // One timeout per connect: the connector's, which says which step
        // did not finish.
        let connector = Http2Connector::new(connector, http2)
            .connect_timeout(options.discover.connect_timeout_setting())
            .keep_alive_config(keep_alive);
        options.discover = options.discover.connector_times_out();
        options.build(connector)
    }

    /// The settings every client has, and those of the crate's own
    /// connector.
    fn split(self) -> (Options, C, h2::client::Builder, KeepAliveConfig) {
        (self.options, self.connector, self.http2, self.keep_alive)
    }

    /// Builds the client over connections that `make` makes (any
    /// connection `MakeService` of [`SharedConnection`]s, such as
    /// [`HyperConnector`](crate::connector::HyperConnector) for hyper's own
    /// HTTP/2 client), with everything else as configured: ages, discovery,
    /// the pick, replay. `make` is called with each endpoint's URI
    /// (`scheme://ip:port`) and connects on its own terms, so the settings
    /// of the crate's own connector ([`connector`](Self::connector),
    /// [`http2`](Self::http2), the keepalive ones) are an
    /// [`ErrorKind::Config`](crate::ErrorKind::Config) error here, not
    /// silently ignored. Connects are still bounded by
    /// [`connect_timeout`](Self::connect_timeout).
    ///
    /// `M` makes connections for `ReplayBody<B>` requests, so that requests
    /// the server never processed can be sent again. See
    /// [`HyperConnector`](crate::connector::HyperConnector) for an example.
    pub fn build_with<B, M>(self, make: M) -> Result<Client<B, M::Response>, Error>
    where
        M: Service<Uri> + Send + 'static,
        M::Response: SharedConnection<ReplayBody<B>>,
        M::Error: Into<BoxError>,
        M::Future: Send + 'static,
        B: Body<Data = Bytes> + Unpin + Send + 'static,
        B::Error: Into<BoxError>,
    {
        if !self.own_connector_settings.is_empty() {
            let mut names = self.own_connector_settings.clone();
            names.sort_unstable();
            names.dedup();
            return Err(Error::config(format!(
                "build_with uses the connections `make` makes; {} configure the crate's own \
                 Http2Connector and would be ignored: set them on your connector instead",
                names.join(", ")
            )));
        }
        self.split().0.build(make)
    }

    fn uses_https(&self) -> bool {
        self.options.discover.uses_https()
            || self
                .options
                .uri
                .as_ref()
                .is_some_and(|u| u.scheme() == Some(&http::uri::Scheme::HTTPS))
    }
}

// The hook `build` calls first to give the connector `tls(..)` made the
// service's name (a no-op without the feature `rustls`).
#[cfg(not(feature = "rustls"))]
impl<C> ClientBuilder<C> {
    fn give_tls_the_service_name(&mut self) -> Result<(), Error> {
        Ok(())
    }
}

#[cfg(feature = "rustls")]
impl<C> ClientBuilder<C> {
    /// When the connector is the one [`tls`](Self::tls) made: checks the
    /// schemes and sets its server name to the host of `uri`, else of
    /// `origin` (without either, each endpoint's host is used).
    fn give_tls_the_service_name(&mut self) -> Result<(), Error>
    where
        C: 'static,
    {
        let connector: &mut dyn std::any::Any = &mut self.connector;
        let Some(tls) = connector.downcast_mut::<crate::connector::RustlsConnector>() else {
            return Ok(());
        };
        if !tls.takes_service_name {
            return Ok(());
        }
        let plain = |uri: &Uri| uri.scheme() != Some(&http::uri::Scheme::HTTPS);
        if let Some(uri) = self.options.uri.as_ref().filter(|u| plain(u)) {
            return Err(Error::config(format!(
                "tls(..) needs an https:// uri, not `{uri}`"
            )));
        }
        if let Some(endpoint) = self.options.discover.plain_http_endpoint() {
            return Err(Error::config(format!(
                "tls(..) needs https:// endpoints, not `{endpoint}`"
            )));
        }
        if let Some(service) = self.options.uri.as_ref().or(self.options.origin.as_ref()) {
            tls.set_server_name(crate::connector::server_name_of(service)?);
        }
        Ok(())
    }
}
