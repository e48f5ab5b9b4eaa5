//! [`HickoryResolver`]: DNS through hickory-resolver, reporting the records' TTL.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use tower_service::Service;

use super::{Addrs, Name};
use crate::error::{Error, ErrorKind};

/// A DNS resolver on [hickory-resolver](hickory_resolver) whose answers carry
/// the records' TTL (the smallest TTL of the A/AAAA records answered).
///
/// It is a `tower::Service<Name>`, so it fits hyper-util's `HttpConnector`
/// and this crate's [`Resolve`](super::Resolve). Clones share the resolver
/// (and its cache). Answers:
///
/// - addresses found: them, with port 0, and the TTL;
/// - the name exists with no address (`NOERROR`, empty answer) or does not
///   exist (`NXDOMAIN`): an empty answer, with the negative-caching TTL if the
///   server sent an SOA record; the caller decides what an empty answer means;
/// - time-outs, connection and protocol errors, `SERVFAIL`, `REFUSED`: an
///   [`Error`] of kind [`ErrorKind::Resolve`] with hickory's error as source.
///
/// ```no_run
/// # async fn doc() -> Result<(), tower_max_connection_age::Error> {
/// use std::time::Duration;
/// use tower_max_connection_age::resolve::{HickoryResolver, Resolve};
///
/// let resolver = HickoryResolver::from_system_conf()?
///     .lookup_timeout(Duration::from_secs(2));
/// let resolution = resolver.resolve("my-svc.default.svc.cluster.local".parse().unwrap()).await?;
/// println!("{:?} for {:?}", resolution.addrs(), resolution.ttl());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct HickoryResolver {
    resolver: TokioResolver,
    caching: bool,
    lookup_timeout: Option<Duration>,
}

impl HickoryResolver {
    /// A resolver with the system's configuration (`/etc/resolv.conf` on Unix)
    /// and hickory's cache, which keeps answers no longer than their TTL.
    ///
    /// Fails with [`ErrorKind::Resolve`] when the configuration cannot be read.
    pub fn from_system_conf() -> Result<Self, Error> {
        let builder = TokioResolver::builder_tokio().map_err(|err| {
            Error::new(ErrorKind::Resolve)
                .with_message("reading the system's DNS configuration")
                .with_source(err)
        })?;
        Self::build(builder.build(), true)
    }

    /// A resolver with the given name servers and options, with hickory's
    /// cache (sized by `opts.cache_size`, bounded by the records' TTL).
    ///
    /// Fails with [`ErrorKind::Resolve`] when hickory rejects the configuration.
    pub fn with_config(config: ResolverConfig, opts: ResolverOpts) -> Result<Self, Error> {
        let builder = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
            .with_options(opts);
        Self::build(builder.build(), true)
    }

    /// A resolver that asks the one name server at `addr`, over UDP and, when
    /// an answer is truncated, TCP, with no cache: every lookup reaches the
    /// server, so a changed record is seen at the next lookup. The hosts
    /// file is not read. Each query times out after 5 s and is tried twice
    /// (hickory's defaults); [`lookup_timeout`](Self::lookup_timeout) bounds
    /// a whole lookup.
    ///
    /// Fails with [`ErrorKind::Resolve`] when hickory rejects the configuration.
    pub fn with_nameserver(addr: SocketAddr) -> Result<Self, Error> {
        let mut server = NameServerConfig::udp_and_tcp(addr.ip());
        for connection in &mut server.connections {
            connection.port = addr.port();
        }
        let config = ResolverConfig::from_name_servers(vec![server]);
        let mut opts = ResolverOpts::default();
        opts.use_hosts_file = ResolveHosts::Never;
        let builder = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
            .with_options(opts);
        Self::build(builder.build(), false)
    }

    /// Wraps a hickory resolver built elsewhere (with its cache, if it has one).
    pub fn from_resolver(resolver: TokioResolver) -> Self {
        HickoryResolver {
            resolver,
            caching: true,
            lookup_timeout: None,
        }
    }

    fn build(built: Result<TokioResolver, NetError>, caching: bool) -> Result<Self, Error> {
        let resolver = built.map_err(|err| {
            Error::new(ErrorKind::Resolve)
                .with_message("building the DNS resolver")
                .with_source(err)
        })?;
        Ok(HickoryResolver {
            resolver,
            caching,
            lookup_timeout: None,
        })
    }

    /// Whether answers may come from hickory's cache (until their TTL runs
    /// out) rather than from the name server. With `false` every lookup asks
    /// the name server. On by default, except for
    /// [`with_nameserver`](Self::with_nameserver). Clones share one cache, and
    /// a lookup with caching off empties it.
    pub fn caching(mut self, enabled: bool) -> Self {
        self.caching = enabled;
        self
    }

    /// Bounds a whole lookup (all its attempts) by `timeout`; past it the
    /// lookup fails with [`ErrorKind::Resolve`]. Unbounded by default, which
    /// leaves hickory's per-query timeout and attempts in charge.
    pub fn lookup_timeout(mut self, timeout: Duration) -> Self {
        self.lookup_timeout = Some(timeout);
        self
    }

    /// The hickory resolver underneath.
    pub fn resolver(&self) -> &TokioResolver {
        &self.resolver
    }
}

impl Service<Name> for HickoryResolver {
    type Response = Addrs;
    type Error = Error;
    type Future = HickoryFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> HickoryFuture {
        let resolver = self.resolver.clone();
        let caching = self.caching;
        let lookup_timeout = self.lookup_timeout;
        HickoryFuture {
            inner: Box::pin(async move {
                if !caching {
                    resolver.clear_cache();
                }
                let lookup = resolver.lookup_ip(name.as_str());
                let result = match lookup_timeout {
                    None => lookup.await,
                    Some(timeout) => match tokio::time::timeout(timeout, lookup).await {
                        Ok(result) => result,
                        Err(elapsed) => {
                            return Err(Error::new(ErrorKind::Resolve)
                                .with_message(format!(
                                    "looking up {name}: no answer within {timeout:?}"
                                ))
                                .with_source(elapsed));
                        }
                    },
                };
                answer(result, &name)
            }),
        }
    }
}

/// The answer of a lookup as [`Addrs`], or the error of kind `Resolve`.
fn answer(
    result: Result<hickory_resolver::lookup_ip::LookupIp, NetError>,
    name: &Name,
) -> Result<Addrs, Error> {
    match result {
        Ok(lookup) => {
            let mut ttl: Option<u32> = None;
            let mut addrs = Vec::new();
            for record in lookup.as_lookup().answers() {
                if let Some(ip) = record.data.ip_addr() {
                    addrs.push(SocketAddr::new(ip, 0));
                    ttl = Some(ttl.map_or(record.ttl, |t| t.min(record.ttl)));
                }
            }
            Ok(Addrs::new(
                addrs,
                ttl.map(|s| Duration::from_secs(s.into())),
            ))
        }
        Err(NetError::Dns(hickory_resolver::net::DnsError::NoRecordsFound(no_records))) => {
            let ttl = no_records
                .negative_ttl
                .map(|s| Duration::from_secs(s.into()));
            Ok(Addrs::new(Vec::new(), ttl))
        }
        Err(err) => Err(Error::new(ErrorKind::Resolve)
            .with_message(format!("looking up {name}"))
            .with_source(err)),
    }
}

impl fmt::Debug for HickoryResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HickoryResolver")
            .field("caching", &self.caching)
            .field("lookup_timeout", &self.lookup_timeout)
            .finish_non_exhaustive()
    }
}

/// The future of a [`HickoryResolver`] lookup.
pub struct HickoryFuture {
    inner: Pin<Box<dyn Future<Output = Result<Addrs, Error>> + Send>>,
}

impl Future for HickoryFuture {
    type Output = Result<Addrs, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl fmt::Debug for HickoryFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad("HickoryFuture")
    }
}
