//! Connections with a maximum age: [`MaxConnectionAgeLayer`] and [`AgedConnection`].
//!
//! Each connection gets a deadline, `max_age + U(0, jitter)`. A supervisor task
//! per connection (cheap: it sleeps) acts on it even while nobody sends
//! requests: it starts the drain (or, under
//! [`RotatingDiscover`](crate::RotatingDiscover), asks for a replacement),
//! waits for in-flight requests, and closes the transport by force after the
//! drain timeout.

mod balance;
pub(crate) mod balancing;
mod body;
mod config;
mod future;
mod layer;
mod make;
mod service;
mod settle;
pub(crate) mod state;
mod supervise;
pub(crate) mod waiters;

pub use crate::connector::{AgeableConnection, ClosedOnDrop, ConnectionHandle};
pub use body::ResponseBody;
pub use config::DEFAULT_DRAIN_TIMEOUT;
pub use future::ResponseFuture;
pub use layer::{MaxConnectionAge, MaxConnectionAgeLayer};
pub use make::MakeFuture;
pub use service::AgedConnection;
pub use state::DrainReason;

pub(crate) use balance::{EndpointHealth, SlowStart};
pub(crate) use config::AgeConfig;
pub(crate) use settle::answered;
