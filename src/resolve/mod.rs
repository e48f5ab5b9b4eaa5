//! Resolving a host name into the endpoints' addresses.
//!
//! A resolver is any [`tower::Service`] of hyper-util's [`Name`], exactly as
//! hyper-util's `HttpConnector` takes it, whose response is an iterator of
//! [`SocketAddr`]s that implements [`Resolved`]. [`Resolved`] adds an optional
//! TTL so that a caller re-resolving periodically can follow the records' TTL.
//! Every such service that is also `Clone + Send + 'static` implements
//! [`Resolve`], which gives the one async method callers need:
//! [`Resolve::resolve`], returning a [`Resolution`] or an [`Error`] of kind
//! [`ErrorKind::Resolve`].
//!
//! Resolvers provided:
//!
//! | resolver | TTL | use |
//! |---|---|---|
//! | [`GaiResolver`] | none | the system resolver (`getaddrinfo` on a blocking thread); the default |
//! | [`StaticResolver`] | none | a fixed list of addresses that can be replaced at runtime; tests and fixed deployments |
//! | `HickoryResolver` (feature `hickory`) | the records' | a DNS stub resolver that reports the answer's TTL |
//!
//! Ports: a resolver answers with addresses, and most (including
//! [`GaiResolver`] and `HickoryResolver`) set port 0. The caller puts the
//! endpoint's port on them, as `HttpConnector` does.
//!
//! ```
//! # async fn doc() -> Result<(), tower_max_connection_age::Error> {
//! use std::net::SocketAddr;
//! use tower_max_connection_age::resolve::{Name, Resolve, StaticResolver};
//!
//! let a: SocketAddr = "10.0.0.1:0".parse().unwrap();
//! let b: SocketAddr = "10.0.0.2:0".parse().unwrap();
//! let resolver = StaticResolver::new([a]);
//! let name: Name = "svc.default.svc.cluster.local".parse().unwrap();
//!
//! assert_eq!(resolver.resolve(name.clone()).await?.addrs(), &[a]);
//! resolver.set([a, b]);
//! assert_eq!(resolver.resolve(name).await?.addrs(), &[a, b]);
//! # Ok(())
//! # }
//! ```
//!
//! [`GaiResolver`]: hyper_util::client::legacy::connect::dns::GaiResolver

use std::fmt;
use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::time::Duration;

use tower_service::Service;

use crate::error::{BoxError, Error, ErrorKind, from_box};

mod fixed;
#[cfg(feature = "hickory")]
mod hickory;

pub use fixed::StaticResolver;
#[cfg(feature = "hickory")]
pub use hickory::{HickoryFuture, HickoryResolver};
/// The hickory-resolver crate this module is built on, for its
/// `ResolverConfig` and `ResolverOpts` (same version as
/// [`HickoryResolver::with_config`] takes).
#[cfg(feature = "hickory")]
pub use hickory_resolver;
pub use hyper_util::client::legacy::connect::dns::{GaiAddrs, GaiResolver, Name};

/// The response of a resolver: the addresses, plus how long they may be used.
///
/// Implemented for hyper-util's [`GaiAddrs`] (no TTL), for [`Addrs`] (the
/// response of this module's resolvers), and for plain `Vec<SocketAddr>` and
/// [`std::iter::Once`] iterators so that a `tower::service_fn` can be a resolver.
pub trait Resolved: Iterator<Item = SocketAddr> {
    /// How long the answer may be used before it should be resolved again, if
    /// the resolver knows (the records' TTL). `None` when it does not.
    fn ttl(&self) -> Option<Duration> {
        None
    }
}

impl Resolved for GaiAddrs {}
impl Resolved for std::vec::IntoIter<SocketAddr> {}
impl Resolved for std::iter::Once<SocketAddr> {}

/// A resolver: a `Service<Name>` whose response is [`Resolved`].
///
/// Implemented for every `tower::Service<Name>` that is `Clone + Send +
/// 'static`, whose `Response` implements [`Resolved`], whose `Error` converts
/// into a [`BoxError`] and whose `Future` is `Send`: [`GaiResolver`],
/// [`StaticResolver`], `HickoryResolver`, or a `tower::service_fn`. To make a
/// resolver of your own, implement `Service<Name>`; this trait comes with it.
///
/// ```
/// # async fn doc() -> Result<(), tower_max_connection_age::Error> {
/// use std::{convert::Infallible, net::SocketAddr};
/// use tower_max_connection_age::resolve::{Name, Resolve};
///
/// let resolver = tower::service_fn(|_name: Name| async {
///     Ok::<_, Infallible>(vec![SocketAddr::from(([127, 0, 0, 1], 0))].into_iter())
/// });
/// let resolution = resolver.resolve("localhost".parse().unwrap()).await?;
/// assert_eq!(resolution.addrs().len(), 1);
/// assert_eq!(resolution.ttl(), None);
/// # Ok(())
/// # }
/// ```
pub trait Resolve:
    Service<Name, Response: Resolved, Error: Into<BoxError>, Future: Send> + Clone + Send + 'static
{
    /// Resolves `name` once: waits for a clone of the resolver to be ready,
    /// calls it, and collects the answer.
    ///
    /// The future owns its clone of the resolver, so it is `'static` and can be
    /// stored or spawned. A resolver's error (or its `poll_ready` error)
    /// becomes an [`Error`] of kind [`ErrorKind::Resolve`] with the resolver's
    /// error as its `source()`; an [`Error`] returned by the resolver itself is
    /// passed on as it is. An empty answer is a `Resolution` with no addresses,
    /// not an error: the caller decides what it means.
    fn resolve(
        &self,
        name: Name,
    ) -> impl Future<Output = Result<Resolution, Error>> + Send + 'static {
        let mut resolver = self.clone();
        async move {
            if let Err(err) = poll_fn(|cx| resolver.poll_ready(cx)).await {
                return Err(resolve_error(err.into(), &name));
            }
            match resolver.call(name.clone()).await {
                Ok(answer) => {
                    let ttl = answer.ttl();
                    Ok(Resolution {
                        addrs: answer.collect(),
                        ttl,
                    })
                }
                Err(err) => Err(resolve_error(err.into(), &name)),
            }
        }
    }
}

/// A resolver's error as an [`ErrorKind::Resolve`] error: ours of that kind
/// pass as they are, anything else becomes the source of one naming the host.
fn resolve_error(err: BoxError, name: &Name) -> Error {
    let source: BoxError = if err.is::<Error>() {
        match from_box(err, ErrorKind::Resolve) {
            ours if ours.kind() == ErrorKind::Resolve => return ours,
            ours => Box::new(ours),
        }
    } else {
        err
    };
    Error::new(ErrorKind::Resolve)
        .with_message(format!("resolving {name}"))
        .with_source(source)
}

impl<S> Resolve for S
where
    S: Service<Name> + Clone + Send + 'static,
    S::Response: Resolved,
    S::Error: Into<BoxError>,
    S::Future: Send,
{
}

/// One answer of a resolver: its addresses, in the resolver's order, and its
/// TTL if the resolver reported one.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Resolution {
    addrs: Vec<SocketAddr>,
    ttl: Option<Duration>,
}

impl Resolution {
    /// A resolution of `addrs`, valid for `ttl` if known.
    pub fn new(addrs: Vec<SocketAddr>, ttl: Option<Duration>) -> Self {
        Resolution { addrs, ttl }
    }

    /// The addresses, in the order the resolver gave them.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// How long the answer may be used, if the resolver reported it.
    pub fn ttl(&self) -> Option<Duration> {
        self.ttl
    }

    /// True when the answer holds no address.
    pub fn is_empty(&self) -> bool {
        self.addrs.is_empty()
    }

    /// The addresses, by value.
    pub fn into_addrs(self) -> Vec<SocketAddr> {
        self.addrs
    }
}

/// The addresses answered by [`StaticResolver`] and `HickoryResolver`, with
/// their TTL: an iterator of [`SocketAddr`] that implements [`Resolved`].
///
/// It can also serve as the response of a resolver of your own.
#[derive(Clone)]
pub struct Addrs {
    iter: std::vec::IntoIter<SocketAddr>,
    ttl: Option<Duration>,
}

impl Addrs {
    /// An answer of `addrs`, valid for `ttl` if known.
    pub fn new(addrs: Vec<SocketAddr>, ttl: Option<Duration>) -> Self {
        Addrs {
            iter: addrs.into_iter(),
            ttl,
        }
    }
}

impl Iterator for Addrs {
    type Item = SocketAddr;

    fn next(&mut self) -> Option<SocketAddr> {
        self.iter.next()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.iter.size_hint()
    }
}

impl ExactSizeIterator for Addrs {}

impl Resolved for Addrs {
    fn ttl(&self) -> Option<Duration> {
        self.ttl
    }
}

impl fmt::Debug for Addrs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Addrs")
            .field("addrs", &self.iter.as_slice())
            .field("ttl", &self.ttl)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::{Context, Poll};

    fn name(s: &str) -> Name {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn ttl_of_the_response_is_kept() {
        let addr = SocketAddr::from(([10, 0, 0, 7], 0));
        let resolver = tower::service_fn(move |_: Name| async move {
            Ok::<_, std::convert::Infallible>(Addrs::new(vec![addr], Some(Duration::from_secs(5))))
        });
        let resolution = resolver.resolve(name("svc")).await.unwrap();
        assert_eq!(resolution.addrs(), &[addr]);
        assert_eq!(resolution.ttl(), Some(Duration::from_secs(5)));
    }

    #[tokio::test]
    async fn call_errors_become_resolve_errors_with_their_source() {
        let resolver = tower::service_fn(|_: Name| async {
            Err::<Addrs, _>(std::io::Error::other("no such host"))
        });
        let err = resolver.resolve(name("missing.example")).await.unwrap_err();
        assert!(err.is_resolve());
        assert!(err.to_string().contains("missing.example"), "{err}");
        let source = err.cause().unwrap();
        assert_eq!(source.to_string(), "no such host");
    }

    #[tokio::test]
    async fn our_errors_of_another_kind_are_wrapped_as_resolve() {
        let resolver =
            tower::service_fn(|_: Name| async { Err::<Addrs, _>(Error::new(ErrorKind::Connect)) });
        let err = resolver.resolve(name("svc")).await.unwrap_err();
        assert!(err.is_resolve());
        let source = err.cause().unwrap();
        assert!(source.downcast_ref::<Error>().unwrap().is_connect());
    }

    #[derive(Clone)]
    struct NeverReady;

    impl Service<Name> for NeverReady {
        type Response = Addrs;
        type Error = std::io::Error;
        type Future = std::future::Ready<Result<Addrs, std::io::Error>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Err(std::io::Error::other("resolver is closed")))
        }

        fn call(&mut self, _: Name) -> Self::Future {
            std::future::ready(Ok(Addrs::new(
                vec![SocketAddr::from(([10, 9, 9, 9], 0))],
                None,
            )))
        }
    }

    #[tokio::test]
    async fn poll_ready_errors_become_resolve_errors() {
        let err = NeverReady.resolve(name("svc")).await.unwrap_err();
        assert!(err.is_resolve());
        assert_eq!(err.cause().unwrap().to_string(), "resolver is closed");
    }

    #[tokio::test]
    async fn gai_resolver_resolves_an_ip_literal() {
        let resolution = GaiResolver::new().resolve(name("127.0.0.1")).await.unwrap();
        assert_eq!(resolution.addrs(), &[SocketAddr::from(([127, 0, 0, 1], 0))]);
        assert_eq!(resolution.ttl(), None);
    }
}
