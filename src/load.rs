//! The load metric each connection reports to the balancer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The clock of load measurements. The load is measured per request, so it
/// uses `std`'s clock: tokio's `Instant::now` takes a lock whenever tokio's
/// `test-util` feature is on anywhere in the build.
pub(crate) type LoadInstant = std::time::Instant;

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
    /// a fresh replacement is tried at once. Two additions keep a hung
    /// connection from drawing traffic (tower's `PeakEwma` decays a silent
    /// connection's cost towards 0): a request that ends with no response
    /// (its caller's timeout, a drop, a failure) counts its wait as a
    /// sample when that is above the estimate, and while requests are
    /// pending the time since the connection last answered is a floor under
    /// its RTT.
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

    /// `since_sample_ns`: time since the last sample, for the decay.
    /// `quiet_ns`: with requests pending, how long since the connection last
    /// answered (or became busy).
    #[inline]
    pub(crate) fn cost(&self, pending: usize, since_sample_ns: u64, quiet_ns: u64) -> f64 {
        match self.kind {
            LoadKind::PendingRequests => pending as f64,
            LoadKind::PeakEwma { .. } => {
                if pending == 0 {
                    let rtt = f64::from_bits(self.rtt_ns.load(Ordering::Relaxed));
                    return rtt * self.recency(since_sample_ns);
                }
                // With requests waiting, the time since the connection last
                // answered is a floor under its RTT: the estimate decays
                // while no response comes, and without the floor a
                // connection that stops answering (or never did) would look
                // cheaper the longer it hangs, and draw every request.
                let rtt = f64::from_bits(self.rtt_ns.load(Ordering::Relaxed));
                (rtt * self.recency(since_sample_ns)).max(quiet_ns as f64) * (pending as f64 + 1.0)
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

    /// Raises the estimate to `waited_ns` if that is higher (a request that
    /// got no answer); true when it did.
    pub(crate) fn record_peak(&self, waited_ns: u64) -> bool {
        let waited = waited_ns as f64;
        let estimate = f64::from_bits(self.rtt_ns.load(Ordering::Relaxed));
        let raised = waited > estimate;
        if raised {
            self.rtt_ns.store(waited.to_bits(), Ordering::Relaxed);
        }
        raised
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
        assert_eq!(load.cost(5, 0, 0), 0.0, "no sample yet costs nothing");
        assert_eq!(
            load.cost(0, 5_000_000, 5_000_000),
            0.0,
            "idle and unsampled: tried at once"
        );
        assert_eq!(
            load.cost(1, 5_000_000, 5_000_000),
            10e6,
            "unsampled with requests pending: the wait stands in for the RTT"
        );
        load.record(10_000_000, 0);
        assert_eq!(load.cost(0, 0, 0), 10e6);
        assert_eq!(
            load.cost(1, 0, 0),
            20e6,
            "pending requests multiply the cost"
        );
        load.record(1_000_000, 1_000);
        assert!(
            load.cost(0, 0, 0) > 9.9e6,
            "a fast sample right after moves it little"
        );
        assert!(load.cost(0, 60_000_000_000, 0) < 1e5, "idle time decays it");
    }

    #[test]
    fn a_connection_that_stops_answering_costs_more_the_longer_it_is_quiet() {
        let load = Load::new(LoadKind::default());
        load.record(1_000_000, 0);
        // A minute with requests pending and no answer: the decayed
        // estimate would cost next to nothing; the quiet time does not.
        let hung = load.cost(1, 60_000_000_000, 60_000_000_000);
        assert_eq!(hung, 120e9);
        assert!(hung > load.cost(1, 0, 0), "hung must cost more than fresh");
    }

    #[test]
    fn an_unanswered_request_raises_the_estimate_and_a_quick_one_does_not_lower_it() {
        let load = Load::new(LoadKind::default());
        load.record(1_000_000, 0);
        assert!(load.record_peak(300_000_000));
        assert_eq!(load.cost(0, 0, 0), 300e6);
        assert!(!load.record_peak(10_000));
        assert_eq!(load.cost(0, 0, 0), 300e6);
    }

    #[test]
    fn pending_requests_counts_only_pending() {
        let load = Load::new(LoadKind::PendingRequests);
        load.record(1_000_000_000, 0);
        assert_eq!(load.cost(3, 0, 0), 3.0);
    }
}
