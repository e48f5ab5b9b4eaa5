//! [`Options`]: the settings every [`Client`] has, whatever makes its
//! connections, and building the client from them.

use std::sync::Arc;
use std::time::Duration;

use http::Uri;
use tower_layer::Layer;
use tower_service::Service;

use super::{Client, Shared, SharedConnection, drive};
use crate::age::{AgeConfig, MaxConnectionAgeLayer};
use crate::discover::{AbortOnDrop, BoxResolver, RotatingDiscoverBuilder, validate_endpoint};
use crate::error::{BoxError, Error};
use crate::replay::{ReplayBody, ReplayConfig};
use crate::resolve::GaiResolver;

/// The settings every client has, whatever makes its connections.
#[derive(Debug, Clone)]
pub(super) struct Options {
    pub(super) discover: RotatingDiscoverBuilder,
    pub(super) age: AgeConfig,
    pub(super) replay: ReplayConfig,
    pub(super) ready_timeout: Duration,
    pub(super) timeout: Option<Duration>,
    pub(super) origin: Option<Uri>,
    pub(super) uri: Option<Uri>,
    pub(super) resolver: Option<BoxResolver>,
}

impl Options {
    pub(super) fn build<B, M>(self, make: M) -> Result<Client<B, M::Response>, Error>
    where
        M: Service<Uri> + Send + 'static,
        M::Response: SharedConnection<ReplayBody<B>>,
        M::Error: Into<BoxError>,
        M::Future: Send + 'static,
    {
        let discover = match self.uri {
            Some(uri) => {
                let resolver = self
                    .resolver
                    .unwrap_or_else(|| BoxResolver::new(GaiResolver::new()));
                self.discover.resolve_boxed(uri, resolver)
            }
            None => self.discover,
        };
        self.age.validate()?;
        discover.validate()?;
        if self.ready_timeout.is_zero() {
            return Err(Error::config("ready_timeout must be greater than zero"));
        }
        if self.timeout.is_some_and(|t| t.is_zero()) {
            return Err(Error::config(
                "timeout must be greater than zero (leave it unset for no timeout)",
            ));
        }
        let origin = match self.origin {
            Some(origin) => origin,
            None => discover
                .first_endpoint()
                .cloned()
                .ok_or_else(|| Error::config("no endpoints given"))?,
        };
        validate_endpoint(&origin)?;
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| Error::config("a Client must be built inside a Tokio runtime"))?;
        let make = MaxConnectionAgeLayer::from_config(self.age).layer(make);
        let discover = discover.build(make)?;
        let status = discover.status();
        let shared = Arc::new(Shared::new(
            self.ready_timeout,
            self.timeout,
            self.replay,
            origin,
            status,
            discover.demand(),
        ));
        // Spawned once `shared` exists, so the first change always finds it.
        let driver = runtime.spawn(drive(Arc::downgrade(&shared), discover));
        let _ = shared.driver.set(AbortOnDrop(driver.abort_handle()));
        Ok(Client {
            shared,
            _body: std::marker::PhantomData,
        })
    }
}
