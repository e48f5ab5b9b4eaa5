//! Which endpoints are ejected as outliers, and for how long: outlier
//! detection's state, apart from the worker that acts on its decisions (so
//! its timeline is tested in paused time, without sockets).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::Uri;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::outlier::OutlierDetection;
use crate::age::EndpointHealth;

/// Why an endpoint was ejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EjectionReason {
    /// Failures in a row: transport failures and failed responses
    /// ([`OutlierDetection::consecutive_failures`](super::OutlierDetection::consecutive_failures);
    /// Envoy's `consecutive_5xx`).
    ConsecutiveFailures,
    /// Its share of failed requests over an interval
    /// ([`OutlierDetection::failure_percentage`](super::OutlierDetection::failure_percentage)).
    FailurePercentage,
}

/// Where one endpoint stands.
enum Standing {
    /// In the pick; `readmitted` is when it came back from its last
    /// ejection, if it ever was ejected.
    In { readmitted: Option<Instant> },
    /// Out of the pick until its ejection time is up.
    Ejected,
}

struct Outlier {
    health: Arc<EndpointHealth>,
    /// Ejections in a row; one comes off per base ejection time healthy.
    ejections: u32,
    standing: Standing,
}

/// What to do about an endpoint whose failures reached the threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Decision {
    /// Nothing: it is ejected already, or no longer known.
    Nothing,
    /// Not ejected: `ejected` endpoints are out already, as many as
    /// `max_ejection_percent` allows.
    Overflow { ejected: usize },
    /// Ejected for `time`, its `ejections`-th in a row.
    Eject { time: Duration, ejections: u32 },
}

pub(super) struct Ejections {
    detection: OutlierDetection,
    endpoints: HashMap<Uri, Outlier>,
    /// Where an endpoint's health reports reaching the threshold.
    report: mpsc::UnboundedSender<Uri>,
}

impl Ejections {
    pub(super) fn new(detection: OutlierDetection, report: mpsc::UnboundedSender<Uri>) -> Self {
        Ejections {
            detection,
            endpoints: HashMap::new(),
            report,
        }
    }

    pub(super) fn add(&mut self, endpoint: Uri) {
        let health = EndpointHealth::new(
            endpoint.clone(),
            self.detection.consecutive_failures,
            self.detection.failure_percentage.is_some(),
            self.report.clone(),
        );
        self.endpoints.insert(
            endpoint,
            Outlier {
                health,
                ejections: 0,
                standing: Standing::In { readmitted: None },
            },
        );
    }

    pub(super) fn remove(&mut self, endpoint: &Uri) {
        self.endpoints.remove(endpoint);
    }

    /// The endpoint's failure count, which its connections feed.
    pub(super) fn health(&self, endpoint: &Uri) -> Option<&Arc<EndpointHealth>> {
        self.endpoints.get(endpoint).map(|o| &o.health)
    }

    /// Ejected, by its standing; and the flag its connections read says
    /// the same.
    #[cfg(test)]
    pub(super) fn is_ejected(&self, endpoint: &Uri) -> bool {
        self.endpoints.get(endpoint).is_some_and(|o| {
            let ejected = matches!(o.standing, Standing::Ejected);
            assert_eq!(o.health.is_ejected(), ejected, "published as decided");
            ejected
        })
    }

    pub(super) fn ejected(&self) -> usize {
        self.endpoints
            .values()
            .filter(|o| matches!(o.standing, Standing::Ejected))
            .count()
    }

    /// How often [`interval_over`](Self::interval_over) is due, when a
    /// failure percentage is set.
    pub(super) fn interval(&self) -> Option<Duration> {
        self.detection
            .failure_percentage
            .map(|_| self.detection.interval)
    }

    /// An interval ended: the endpoints whose failure percentage over it
    /// ejects them (each endpoint's counts start over).
    pub(super) fn interval_over(&mut self) -> Vec<Uri> {
        let detection = self.detection;
        self.endpoints
            .iter()
            .filter_map(|(endpoint, outlier)| {
                let (requests, failures) = outlier.health.take_interval();
                detection
                    .fails_percentage(requests, failures)
                    .then(|| endpoint.clone())
            })
            .collect()
    }

    /// The endpoint's failures reached the threshold (of `in_service`
    /// endpoints): eject it, unless as many as allowed are out already.
    /// Its count starts over either way.
    /// Says so in the log and the metrics; returns the ejection time when
    /// ejected.
    pub(super) fn failing(
        &mut self,
        endpoint: &Uri,
        in_service: usize,
        reason: EjectionReason,
    ) -> Option<Duration> {
        match self.decide(endpoint, in_service) {
            Decision::Nothing => None,
            Decision::Overflow { ejected } => {
                tracing::warn!(
                    endpoint = %endpoint,
                    ejected,
                    "endpoint failing, not ejected: max_ejection_percent reached"
                );
                crate::metrics::ejection_overflow(endpoint);
                None
            }
            Decision::Eject { time, ejections } => {
                crate::metrics::ejected(endpoint, reason == EjectionReason::FailurePercentage);
                tracing::warn!(
                    endpoint = %endpoint,
                    ?reason,
                    ejections,
                    for_ms = time.as_millis() as u64,
                    "endpoint ejected as an outlier"
                );
                Some(time)
            }
        }
    }

    fn decide(&mut self, endpoint: &Uri, in_service: usize) -> Decision {
        let out = self.ejected();
        let allowed = self.detection.max_ejected(in_service);
        let detection = self.detection;
        let Some(outlier) = self.endpoints.get_mut(endpoint) else {
            return Decision::Nothing;
        };
        outlier.health.reset();
        let Standing::In { readmitted } = outlier.standing else {
            return Decision::Nothing;
        };
        if out >= allowed {
            return Decision::Overflow { ejected: out };
        }
        // Healthy stretches since the last readmission take ejections off.
        if let Some(at) = readmitted {
            let healthy = at.elapsed().as_nanos() / detection.base_ejection_time.as_nanos().max(1);
            outlier.ejections = outlier
                .ejections
                .saturating_sub(u32::try_from(healthy).unwrap_or(u32::MAX));
        }
        outlier.ejections = outlier.ejections.saturating_add(1);
        outlier.standing = Standing::Ejected;
        // Every connection to it, now and later, reads it out of the pick.
        outlier.health.set_ejected(true);
        Decision::Eject {
            time: detection.ejection_time(outlier.ejections),
            ejections: outlier.ejections,
        }
    }

    /// The endpoint's ejection time is up: back in the pick, with its
    /// failure count at zero. False when it is no longer known.
    pub(super) fn readmit(&mut self, endpoint: &Uri) -> bool {
        let Some(outlier) = self.endpoints.get_mut(endpoint) else {
            return false;
        };
        outlier.standing = Standing::In {
            readmitted: Some(Instant::now()),
        };
        outlier.health.set_ejected(false);
        outlier.health.reset();
        tracing::info!(endpoint = %endpoint, "ejected endpoint readmitted");
        true
    }
}

#[cfg(test)]
mod tests;
