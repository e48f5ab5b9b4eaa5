//! [`StaticResolver`]: a fixed list of addresses, replaceable at runtime.

use std::convert::Infallible;
use std::fmt;
use std::future::{Ready, ready};
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use tower_service::Service;

use super::{Addrs, Name};

/// A resolver that answers every name with the same list of addresses.
///
/// Clones share the list: [`set`](StaticResolver::set) on any clone changes
/// what every clone answers from then on. Useful for tests and for fixed
/// deployments that list their endpoints' addresses in configuration. Its
/// answers carry no TTL.
///
/// ```
/// # async fn doc() -> Result<(), tower_max_connection_age::Error> {
/// use std::net::SocketAddr;
/// use tower_max_connection_age::resolve::{Resolve, StaticResolver};
///
/// let one: SocketAddr = "127.0.0.1:8080".parse().unwrap();
/// let two: SocketAddr = "127.0.0.2:8080".parse().unwrap();
/// let resolver = StaticResolver::new([one]);
/// let handle = resolver.clone();
///
/// handle.set([one, two]);
/// let resolution = resolver.resolve("anything".parse().unwrap()).await?;
/// assert_eq!(resolution.addrs(), &[one, two]);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct StaticResolver {
    addrs: Arc<RwLock<Arc<[SocketAddr]>>>,
}

impl StaticResolver {
    /// A resolver answering `addrs`, in this order.
    pub fn new(addrs: impl IntoIterator<Item = SocketAddr>) -> Self {
        StaticResolver {
            addrs: Arc::new(RwLock::new(addrs.into_iter().collect())),
        }
    }

    /// Replaces the addresses every clone of this resolver answers from now on.
    pub fn set(&self, addrs: impl IntoIterator<Item = SocketAddr>) {
        let addrs: Arc<[SocketAddr]> = addrs.into_iter().collect();
        *self.addrs.write().unwrap_or_else(|e| e.into_inner()) = addrs;
    }

    /// The addresses it answers now.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.current().to_vec()
    }

    fn current(&self) -> Arc<[SocketAddr]> {
        self.addrs.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Service<Name> for StaticResolver {
    type Response = Addrs;
    type Error = Infallible;
    type Future = Ready<Result<Addrs, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _name: Name) -> Self::Future {
        ready(Ok(Addrs::new(self.current().to_vec(), None)))
    }
}

impl fmt::Debug for StaticResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("StaticResolver")
            .field(&self.current())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolve::Resolve;

    #[tokio::test]
    async fn clones_share_the_list() {
        let a = SocketAddr::from(([10, 0, 0, 1], 80));
        let b = SocketAddr::from(([10, 0, 0, 2], 80));
        let resolver = StaticResolver::new([a, b]);
        let clone = resolver.clone();
        let name: Name = "svc".parse().unwrap();

        assert_eq!(clone.resolve(name.clone()).await.unwrap().addrs(), &[a, b]);
        resolver.set([b]);
        assert_eq!(clone.addrs(), vec![b]);
        assert_eq!(clone.resolve(name.clone()).await.unwrap().addrs(), &[b]);
        resolver.set([]);
        let empty = clone.resolve(name).await.unwrap();
        assert!(empty.is_empty());
        assert_eq!(empty.ttl(), None);
    }
}
