//! What the pick weighs besides load, per endpoint: its run of failures
//! and its ejection (outlier detection), and its slow-start ramp.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use crate::load::LoadInstant;

/// One endpoint's failures in a row, shared by its connections and the
/// discovery worker; the worker hears when they reach the threshold, and
/// decides on ejection, which it publishes here for every connection to
/// the endpoint at once.
pub(crate) struct EndpointHealth {
    consecutive: AtomicU32,
    /// Out of the pick: ejected as an outlier (set by the worker's
    /// ejection timeline, read by the pick).
    ejected: AtomicBool,
    threshold: u32,
    /// Counts every request's end for the failure percentage (only when it
    /// is on: two atomic adds per request otherwise spared).
    counting: bool,
    /// Requests that ended (answered or failed) since the last interval.
    ended: AtomicU32,
    /// Of those, the failed ones.
    failed: AtomicU32,
    endpoint: http::Uri,
    report: tokio::sync::mpsc::UnboundedSender<http::Uri>,
}

impl EndpointHealth {
    pub(crate) fn new(
        endpoint: http::Uri,
        threshold: u32,
        counting: bool,
        report: tokio::sync::mpsc::UnboundedSender<http::Uri>,
    ) -> Arc<Self> {
        Arc::new(EndpointHealth {
            consecutive: AtomicU32::new(0),
            ejected: AtomicBool::new(false),
            threshold,
            counting,
            ended: AtomicU32::new(0),
            failed: AtomicU32::new(0),
            endpoint,
            report,
        })
    }

    /// A response came: the run of failures is over. (A read, and a write
    /// only when there was a run, so healthy traffic dirties no cache line.)
    #[inline]
    pub(crate) fn success(&self) {
        if self.counting {
            self.ended.fetch_add(1, Ordering::Relaxed);
        }
        if self.consecutive.load(Ordering::Relaxed) != 0 {
            self.consecutive.store(0, Ordering::Relaxed);
        }
    }

    pub(crate) fn failure(&self) {
        if self.counting {
            self.ended.fetch_add(1, Ordering::Relaxed);
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        if self
            .consecutive
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_add(1)
            == self.threshold
        {
            let _ = self.report.send(self.endpoint.clone());
        }
    }

    /// A response was judged: a failed one continues the run, any other
    /// ends it.
    #[inline]
    pub(crate) fn response(&self, failed: bool) {
        if failed {
            self.failure();
        } else {
            self.success();
        }
    }

    /// The requests that ended, and of those the failed ones, since the
    /// last call; the counts start over.
    pub(crate) fn take_interval(&self) -> (u32, u32) {
        // Failed first: a request counted in between is at worst a failure
        // without its request, never the other way round within one call.
        let failed = self.failed.swap(0, Ordering::Relaxed);
        let ended = self.ended.swap(0, Ordering::Relaxed);
        (ended.max(failed), failed)
    }

    #[inline]
    pub(crate) fn is_ejected(&self) -> bool {
        self.ejected.load(Ordering::Relaxed)
    }

    pub(crate) fn set_ejected(&self, ejected: bool) {
        self.ejected.store(ejected, Ordering::Relaxed);
    }

    pub(crate) fn reset(&self) {
        self.consecutive.store(0, Ordering::Relaxed);
    }
}

/// Envoy's `slow_start_config`, linear: an endpoint that joined at `joined`
/// takes `max(elapsed / window, MIN_WEIGHT)` of its normal share until the
/// window has passed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SlowStart {
    pub(crate) joined: LoadInstant,
    pub(crate) window: Duration,
}

impl SlowStart {
    /// The least share a new endpoint takes (Envoy's `min_weight_percent`
    /// default, 10%), so it is never starved of the requests that warm it.
    const MIN_WEIGHT: f64 = 0.1;

    pub(crate) fn weight(&self, now: LoadInstant) -> f64 {
        let elapsed = now.saturating_duration_since(self.joined);
        if elapsed >= self.window {
            return 1.0;
        }
        (elapsed.as_secs_f64() / self.window.as_secs_f64()).max(Self::MIN_WEIGHT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_health_reports_once_at_the_threshold_and_a_response_resets_the_run() {
        let (report, mut reports) = tokio::sync::mpsc::unbounded_channel();
        let health = EndpointHealth::new("http://10.0.0.1".parse().unwrap(), 3, false, report);
        health.failure();
        health.failure();
        health.success();
        health.failure();
        health.failure();
        assert!(reports.try_recv().is_err(), "a response broke the run");
        health.failure();
        assert!(reports.try_recv().is_ok(), "three in a row");
        health.failure();
        assert!(reports.try_recv().is_err(), "reported once per run");
        health.reset();
        for _ in 0..3 {
            health.failure();
        }
        assert!(reports.try_recv().is_ok());
    }

    #[test]
    fn slow_start_ramps_linearly_from_its_floor_to_one() {
        let joined = LoadInstant::now();
        let slow = SlowStart {
            joined,
            window: Duration::from_secs(100),
        };
        assert_eq!(slow.weight(joined), SlowStart::MIN_WEIGHT);
        assert_eq!(
            slow.weight(joined + Duration::from_secs(5)),
            SlowStart::MIN_WEIGHT
        );
        assert!((slow.weight(joined + Duration::from_secs(50)) - 0.5).abs() < 1e-9);
        assert_eq!(slow.weight(joined + Duration::from_secs(100)), 1.0);
        assert_eq!(slow.weight(joined + Duration::from_secs(500)), 1.0);
    }
}
