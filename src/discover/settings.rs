//! The discovery worker's fixed settings, as its builder made them.

use std::time::Duration;

use super::backoff::Backoff;
use super::outlier::OutlierDetection;

/// The worker's fixed settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    pub(crate) per_endpoint: usize,
    /// New endpoints (found by a resolution after the first) take a growing
    /// share of traffic over this window; zero turns it off.
    pub(crate) slow_start: Duration,
    pub(crate) outlier: Option<OutlierDetection>,
    /// At least `per_endpoint`; above it, extras open on demand.
    pub(crate) max_per_endpoint: usize,
    /// An extra that started no request for this long is closed.
    pub(crate) extra_idle: Duration,
    pub(crate) backoff: Backoff,
    /// Discovery's bound on a connect; `None` when the connector bounds
    /// its connects itself.
    pub(crate) connect_timeout: Option<Duration>,
}
