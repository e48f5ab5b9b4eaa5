//! Outlier ejection: an endpoint whose requests and connects keep failing is
//! taken out of the pick for a while (Envoy's outlier detection, linkerd's
//! failure accrual).

use std::time::Duration;

use crate::error::Error;

/// When to take a failing endpoint out of the pick, and for how long.
///
/// An endpoint with `consecutive_failures` failures in a row (a connect that
/// failed, a request that ended with no response: reset, I/O error,
/// keepalive timeout, dropped by its caller's timeout; or a failed response:
/// HTTP 5xx, gRPC `UNAVAILABLE`, ..., see [`crate::classify`], as Envoy's
/// `consecutive_5xx` counts both) is ejected:
/// its connections take no request for `base_ejection_time` times the
/// number of times it was ejected (at most `max_ejection_time`), then it is
/// readmitted. Each base ejection time it then stays healthy takes one off
/// that count. At most `max_ejection_percent` of the endpoints are out at
/// once, and at least one may be; if every connection that could take a
/// request is ejected, the pick uses them anyway (no outage from ejection).
/// Unprocessed failures (`Draining`, `Refused`) do not count: the server
/// said no, it did not fail.
///
/// With [`failure_percentage`](Self::failure_percentage) (off by default,
/// as in Envoy and gRFC A50), an endpoint whose requests in an
/// [`interval`](Self::interval) failed at least that often is ejected too,
/// if it had at least
/// [`failure_percentage_minimum_requests`](Self::failure_percentage_minimum_requests):
/// a pod failing half its requests at random is caught by this, where a run
/// of five failures in a row would take a while.
///
/// ```
/// use std::time::Duration;
/// use tower_max_connection_age::discover::OutlierDetection;
///
/// let detection = OutlierDetection::new()
///     .consecutive_failures(3)
///     .base_ejection_time(Duration::from_secs(10));
/// # let _ = detection;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutlierDetection {
    pub(crate) consecutive_failures: u32,
    pub(crate) base_ejection_time: Duration,
    pub(crate) max_ejection_time: Duration,
    pub(crate) max_ejection_percent: u8,
    pub(crate) failure_percentage: Option<u8>,
    pub(crate) failure_percentage_minimum_requests: u32,
    pub(crate) interval: Duration,
}

impl Default for OutlierDetection {
    fn default() -> Self {
        OutlierDetection {
            consecutive_failures: 5,
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 10,
            failure_percentage: None,
            failure_percentage_minimum_requests: 50,
            interval: Duration::from_secs(10),
        }
    }
}

impl OutlierDetection {
    /// Envoy's defaults: 5 consecutive failures, 30 s base ejection time,
    /// 300 s at most, 10% of endpoints at most (and at least one).
    pub fn new() -> Self {
        OutlierDetection::default()
    }

    /// Failures in a row that eject an endpoint. Default: 5.
    pub fn consecutive_failures(mut self, n: u32) -> Self {
        self.consecutive_failures = n;
        self
    }

    /// The first ejection's length; the n-th lasts n times this. Default: 30 s.
    pub fn base_ejection_time(mut self, time: Duration) -> Self {
        self.base_ejection_time = crate::time::saturate(time);
        self
    }

    /// The longest an ejection lasts. Default: 300 s.
    pub fn max_ejection_time(mut self, time: Duration) -> Self {
        self.max_ejection_time = crate::time::saturate(time);
        self
    }

    /// Ejects an endpoint whose requests failed at least `percent` of the
    /// time over an [`interval`](Self::interval) (Envoy's
    /// `failure_percentage_threshold`, gRFC A50's
    /// `failure_percentage_ejection`; Envoy's default threshold is 85).
    /// Default: off.
    pub fn failure_percentage(mut self, percent: u8) -> Self {
        self.failure_percentage = Some(percent);
        self
    }

    /// The requests an endpoint must have had in an interval for its
    /// failure percentage to count (Envoy's
    /// `failure_percentage_request_volume`). Default: 50.
    pub fn failure_percentage_minimum_requests(mut self, n: u32) -> Self {
        self.failure_percentage_minimum_requests = n;
        self
    }

    /// How often failure percentages are computed (Envoy's `interval`).
    /// Default: 10 s.
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = crate::time::saturate(interval);
        self
    }

    /// The most endpoints out at once, in percent (one may always be).
    /// Default: 10.
    pub fn max_ejection_percent(mut self, percent: u8) -> Self {
        self.max_ejection_percent = percent;
        self
    }

    pub(crate) fn validate(&self) -> Result<(), Error> {
        if self.consecutive_failures == 0 {
            return Err(Error::config(
                "outlier detection: consecutive_failures must be at least 1",
            ));
        }
        if self.base_ejection_time.is_zero() || self.base_ejection_time > self.max_ejection_time {
            return Err(Error::config(
                "outlier detection needs 0 < base_ejection_time <= max_ejection_time",
            ));
        }
        if self.failure_percentage.is_some_and(|p| p > 100) {
            return Err(Error::config(
                "outlier detection: failure_percentage must be at most 100",
            ));
        }
        if self.interval.is_zero() {
            return Err(Error::config(
                "outlier detection: interval must be greater than zero",
            ));
        }
        if self.max_ejection_percent > 100 {
            return Err(Error::config(
                "outlier detection: max_ejection_percent must be at most 100",
            ));
        }
        Ok(())
    }

    /// How many of `endpoints` may be out at once.
    pub(crate) fn max_ejected(&self, endpoints: usize) -> usize {
        (endpoints * usize::from(self.max_ejection_percent) / 100).max(1)
    }

    /// The length of an endpoint's `n`-th ejection in a row.
    /// Whether `failures` of `requests` in an interval eject.
    pub(crate) fn fails_percentage(&self, requests: u32, failures: u32) -> bool {
        self.failure_percentage.is_some_and(|threshold| {
            requests > 0
                && requests >= self.failure_percentage_minimum_requests
                && u64::from(failures) * 100 >= u64::from(threshold) * u64::from(requests)
        })
    }

    pub(crate) fn ejection_time(&self, n: u32) -> Duration {
        self.base_ejection_time
            .saturating_mul(n.max(1))
            .min(self.max_ejection_time)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_least_one_endpoint_may_be_ejected_and_never_more_than_the_percent() {
        let detection = OutlierDetection::new();
        assert_eq!(
            detection.max_ejected(3),
            1,
            "10% of 3 rounds to 0; one may go"
        );
        assert_eq!(detection.max_ejected(30), 3);
        let half = detection.max_ejection_percent(50);
        assert_eq!(half.max_ejected(4), 2);
        assert_eq!(half.max_ejection_percent(0).max_ejected(10), 1);
    }

    #[test]
    fn ejections_grow_with_repeats_up_to_the_maximum() {
        let detection = OutlierDetection::new();
        assert_eq!(detection.ejection_time(1), Duration::from_secs(30));
        assert_eq!(detection.ejection_time(3), Duration::from_secs(90));
        assert_eq!(detection.ejection_time(1000), Duration::from_secs(300));
    }

    #[test]
    fn a_failure_percentage_counts_only_with_enough_requests() {
        let off = OutlierDetection::new();
        assert!(!off.fails_percentage(1000, 1000), "off by default");
        let on = OutlierDetection::new()
            .failure_percentage(50)
            .failure_percentage_minimum_requests(20);
        assert!(on.fails_percentage(20, 10));
        assert!(!on.fails_percentage(20, 9));
        assert!(!on.fails_percentage(19, 19), "too few requests to judge");
        assert!(
            !OutlierDetection::new()
                .failure_percentage(0)
                .failure_percentage_minimum_requests(0)
                .fails_percentage(0, 0)
        );
    }

    #[test]
    fn bad_settings_are_config_errors() {
        assert!(
            OutlierDetection::new()
                .consecutive_failures(0)
                .validate()
                .is_err()
        );
        assert!(
            OutlierDetection::new()
                .max_ejection_percent(101)
                .validate()
                .is_err()
        );
        assert!(
            OutlierDetection::new()
                .base_ejection_time(Duration::from_secs(600))
                .validate()
                .is_err()
        );
        assert!(
            OutlierDetection::new()
                .failure_percentage(101)
                .validate()
                .is_err()
        );
        assert!(
            OutlierDetection::new()
                .interval(Duration::ZERO)
                .validate()
                .is_err()
        );
        assert!(OutlierDetection::new().validate().is_ok());
    }
}
