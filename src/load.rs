//! The load metric each connection reports to the balancer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How a connection's load is measured for power-of-two-choices.
///
/// Both count a request as pending until its response *body* has ended (or
/// was dropped), not only until its headers arrived, so long streams weigh
/// on the connection they occupy.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum LoadKind {
    /// Peak-EWMA of the time to response headers, times pending requests + 1,
    /// as in Finagle and tower's `PeakEwma`. `decay` is how fast old samples
    /// are forgotten. An idle connection with no sample yet costs nothing, so
    /// a fresh replacement is tried at once; while requests wait on it for
    /// its first response, its age stands in for the RTT, so a connection
    /// that never answers stops drawing requests.
    PeakEwma {
        /// The decay time of the moving average (default 10 s).
        decay: Duration,
    },
    /// The number of requests in flight.
    PendingRequests,
}

impl Default for LoadKind {
    fn default() -> Self {
        LoadKind::PeakEwma {
            decay: Duration::from_secs(10),
        }
    }
}

/// Lock-free load state: the RTT estimate is one atomic `f64`. Concurrent
/// updates may lose a sample, which a load heuristic can afford.
pub(crate) struct Load {
    kind: LoadKind,
    decay_ns: f64,
    rtt_ns: AtomicU64,
}

impl Load {
    pub(crate) fn new(kind: LoadKind) -> Self {
        let decay_ns = match kind {
            LoadKind::PeakEwma { decay } => decay.as_nanos().max(1) as f64,
            LoadKind::PendingRequests => 1.0,
        };
        Load {
            kind,
            decay_ns,
            rtt_ns: AtomicU64::new(0f64.to_bits()),
        }
    }

    /// `since_sample_ns`: time since the last sample, for the decay; before
    /// the first sample, the connection's age.
    #[inline]
    pub(crate) fn cost(&self, pending: usize, since_sample_ns: u64) -> f64 {
        match self.kind {
            LoadKind::PendingRequests => pending as f64,
            LoadKind::PeakEwma { .. } => {
                let rtt = f64::from_bits(self.rtt_ns.load(Ordering::Relaxed));
                if rtt == 0.0 {
                    // No sample yet. Costing nothing whatever is pending
                    // would make a connection that never answers win every
                    // pick it is part of, until every caller waits on it.
                    // Its pending requests have waited at most its age, and
                    // as long as no response came back that age is the best
                    // lower bound of its RTT we have.
                    return if pending == 0 {
                        0.0
                    } else {
                        since_sample_ns as f64 * (pending as f64 + 1.0)
                    };
                }
                rtt * self.recency(since_sample_ns) * (pending as f64 + 1.0)
            }
        }
    }

    /// Whether [`record`](Self::record) uses its samples: the caller can
    /// skip reading the clock when not.
    #[inline]
    pub(crate) fn samples_rtt(&self) -> bool {
        matches!(self.kind, LoadKind::PeakEwma { .. })
    }

    /// The weight left to what was learned `elapsed_ns` ago: `e^(-t/decay)`.
    /// Samples come microseconds apart against a decay of seconds, where
    /// `1 - x` is exact to 5e-7 and `exp` is the costliest step of a request's
    /// bookkeeping.
    #[inline]
    fn recency(&self, elapsed_ns: u64) -> f64 {
        let x = elapsed_ns as f64 / self.decay_ns;
        if x < 1e-3 { 1.0 - x } else { (-x).exp() }
    }

    /// Takes one RTT sample (time to response headers), `since_last_ns`
    /// after the previous one.
    pub(crate) fn record(&self, rtt_ns: u64, since_last_ns: u64) {
        if let LoadKind::PeakEwma { .. } = self.kind {
            let sample = rtt_ns as f64;
            let estimate = f64::from_bits(self.rtt_ns.load(Ordering::Relaxed));
            let next = if sample > estimate {
                sample
            } else {
                let recency = self.recency(since_last_ns);
                estimate * recency + sample * (1.0 - recency)
            };
            self.rtt_ns.store(next.to_bits(), Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_ewma_jumps_to_peaks_and_decays_slowly() {
        let load = Load::new(LoadKind::default());
        assert_eq!(load.cost(5, 0), 0.0, "no sample yet costs nothing");
        assert_eq!(
            load.cost(0, 5_000_000),
            0.0,
            "idle and unsampled: tried at once"
        );
        assert_eq!(
            load.cost(1, 5_000_000),
            10e6,
            "unsampled with requests pending: the wait stands in for the RTT"
        );
        load.record(10_000_000, 0);
        assert_eq!(load.cost(0, 0), 10e6);
        assert_eq!(load.cost(1, 0), 20e6, "pending requests multiply the cost");
        load.record(1_000_000, 1_000);
        assert!(
            load.cost(0, 0) > 9.9e6,
            "a fast sample right after moves it little"
        );
        assert!(load.cost(0, 60_000_000_000) < 1e5, "idle time decays it");
    }

    #[test]
    fn pending_requests_counts_only_pending() {
        let load = Load::new(LoadKind::PendingRequests);
        load.record(1_000_000_000, 0);
        assert_eq!(load.cost(3, 0), 3.0);
    }
}
