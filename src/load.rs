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

/// The default [`failure_penalty`](crate::client::ClientBuilder::failure_penalty):
/// 1 s, added to the RTT estimate of a connection whose responses all fail,
/// in proportion to the share that fail.
pub const DEFAULT_FAILURE_PENALTY: Duration = Duration::from_secs(1);

/// The default [`failure_penalty_decay`](crate::client::ClientBuilder::failure_penalty_decay):
/// 1 s, the time over which the penalty follows a change in the share of
/// failed responses (and fades once nothing is sent).
pub const DEFAULT_FAILURE_PENALTY_DECAY: Duration = Duration::from_secs(1);

/// What failed responses weigh in the load (Linkerd's response penalty).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Penalty {
    /// Added to the RTT when every response fails; zero turns it off.
    pub(crate) value: Duration,
    /// How fast it follows the share of failures, and fades.
    pub(crate) decay: Duration,
}

impl Default for Penalty {
    fn default() -> Self {
        Penalty {
            value: DEFAULT_FAILURE_PENALTY,
            decay: DEFAULT_FAILURE_PENALTY_DECAY,
        }
    }
}

/// The weight left after `elapsed_ns` of a decay of `decay_ns`:
/// `e^(-t/decay)`, `1 - t/decay` where that is exact to 5e-7 (samples come
/// microseconds apart, and `exp` is the costliest step of a request's
/// bookkeeping).
#[inline]
fn fade(elapsed_ns: u64, decay_ns: f64) -> f64 {
    let x = elapsed_ns as f64 / decay_ns;
    if x < 1e-3 { 1.0 - x } else { (-x).exp() }
}

/// Lock-free load state: the RTT estimate and the failure penalty are
/// atomic `f64`s. Concurrent updates may lose a sample, which a load
/// heuristic can afford.
pub(crate) struct Load {
    kind: LoadKind,
    decay_ns: f64,
    rtt_ns: AtomicU64,
    /// What a failed response weighs, in nanoseconds (0: off).
    penalty_ns: f64,
    penalty_decay_ns: f64,
    /// The moving average of penalties (`penalty_ns` for a failed
    /// response, 0 for a good one) over time, with its own decay
    /// (Linkerd's response penalty): a pod that fails fast stops looking
    /// like the fastest pod there is. Its decay is short (a second by
    /// default) against the RTT's, so a pod that starts failing is steered
    /// away within milliseconds, and one that recovers is tried again
    /// within seconds; one failure among many moves it by next to nothing.
    penalty: AtomicU64,
    /// When `penalty` was last updated, in nanoseconds on the caller's
    /// clock (the connection's age).
    penalty_stamp_ns: AtomicU64,
}

impl Load {
    pub(crate) fn new(kind: LoadKind, penalty: Penalty) -> Self {
        let decay_ns = match kind {
            LoadKind::PeakEwma { decay } => decay.as_nanos().max(1) as f64,
            LoadKind::PendingRequests => 1.0,
        };
        let penalty_ns = match kind {
            LoadKind::PeakEwma { .. } => crate::time::saturate(penalty.value).as_nanos() as f64,
            LoadKind::PendingRequests => 0.0,
        };
        Load {
            kind,
            decay_ns,
            rtt_ns: AtomicU64::new(0f64.to_bits()),
            penalty_ns,
            penalty_decay_ns: penalty.decay.as_nanos().max(1) as f64,
            penalty: AtomicU64::new(0f64.to_bits()),
            penalty_stamp_ns: AtomicU64::new(0),
        }
    }

    /// The penalty now (`now_ns` on the same clock as the updates), faded
    /// since its last update.
    #[inline]
    fn penalty(&self, now_ns: u64) -> f64 {
        let penalty = f64::from_bits(self.penalty.load(Ordering::Relaxed));
        if penalty == 0.0 {
            return 0.0;
        }
        let since = now_ns.saturating_sub(self.penalty_stamp_ns.load(Ordering::Relaxed));
        penalty * fade(since, self.penalty_decay_ns)
    }

    /// A response was classified: a penalized one pulls the penalty towards
    /// the full penalty, a good one towards 0, each by the time since the
    /// last response (a time-weighted average, so a pod failing half its
    /// requests settles at half the penalty, and one failure among many
    /// moves it by little). `clock` gives the time now and since the
    /// connection's previous response; a good response with no penalty
    /// standing does not read it, and costs one atomic load.
    #[inline]
    pub(crate) fn record_class(&self, penalized: bool, clock: impl FnOnce() -> (u64, u64)) {
        if self.penalty_ns == 0.0 {
            return;
        }
        let standing = f64::from_bits(self.penalty.load(Ordering::Relaxed));
        if !penalized && standing == 0.0 {
            return;
        }
        let (now_ns, since_previous_ns) = clock();
        // Good responses with no penalty standing leave the stamp behind:
        // the time since the previous response is the weight then.
        let since = now_ns
            .saturating_sub(self.penalty_stamp_ns.swap(now_ns, Ordering::Relaxed))
            .min(since_previous_ns);
        let recency = fade(since, self.penalty_decay_ns);
        let sample = if penalized { self.penalty_ns } else { 0.0 };
        let next = standing * recency + sample * (1.0 - recency);
        self.penalty.store(next.to_bits(), Ordering::Relaxed);
    }

    /// `since_sample_ns`: time since the last sample, for the decay.
    /// `quiet_ns`: with requests pending, how long since the connection last
    /// answered (or became busy).
    /// `now_ns`: the clock of [`record_class`](Self::record_class), for
    /// the penalty's fading.
    #[inline]
    pub(crate) fn cost(
        &self,
        pending: usize,
        since_sample_ns: u64,
        quiet_ns: u64,
        now_ns: u64,
    ) -> f64 {
        match self.kind {
            LoadKind::PendingRequests => pending as f64,
            LoadKind::PeakEwma { .. } => {
                let rtt = f64::from_bits(self.rtt_ns.load(Ordering::Relaxed));
                let rtt = rtt * self.recency(since_sample_ns) + self.penalty(now_ns);
                if pending == 0 {
                    return rtt;
                }
                // With requests waiting, the time since the connection last
                // answered is a floor under its RTT: the estimate decays
                // while no response comes, and without the floor a
                // connection that stops answering (or never did) would look
                // cheaper the longer it hangs, and draw every request.
                rtt.max(quiet_ns as f64) * (pending as f64 + 1.0)
            }
        }
    }

    /// Whether [`record`](Self::record) uses its samples: the caller can
    /// skip reading the clock when not.
    #[inline]
    pub(crate) fn samples_rtt(&self) -> bool {
        matches!(self.kind, LoadKind::PeakEwma { .. })
    }

    /// The weight left to what was learned `elapsed_ns` ago.
    #[inline]
    fn recency(&self, elapsed_ns: u64) -> f64 {
        fade(elapsed_ns, self.decay_ns)
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
        let load = Load::new(LoadKind::default(), Penalty::default());
        assert_eq!(load.cost(5, 0, 0, 0), 0.0, "no sample yet costs nothing");
        assert_eq!(
            load.cost(0, 5_000_000, 5_000_000, 0),
            0.0,
            "idle and unsampled: tried at once"
        );
        assert_eq!(
            load.cost(1, 5_000_000, 5_000_000, 0),
            10e6,
            "unsampled with requests pending: the wait stands in for the RTT"
        );
        load.record(10_000_000, 0);
        assert_eq!(load.cost(0, 0, 0, 0), 10e6);
        assert_eq!(
            load.cost(1, 0, 0, 0),
            20e6,
            "pending requests multiply the cost"
        );
        load.record(1_000_000, 1_000);
        assert!(
            load.cost(0, 0, 0, 0) > 9.9e6,
            "a fast sample right after moves it little"
        );
        assert!(
            load.cost(0, 60_000_000_000, 0, 0) < 1e5,
            "idle time decays it"
        );
    }

    #[test]
    fn a_connection_that_stops_answering_costs_more_the_longer_it_is_quiet() {
        let load = Load::new(LoadKind::default(), Penalty::default());
        load.record(1_000_000, 0);
        // A minute with requests pending and no answer: the decayed
        // estimate would cost next to nothing; the quiet time does not.
        let hung = load.cost(1, 60_000_000_000, 60_000_000_000, 0);
        assert_eq!(hung, 120e9);
        assert!(
            hung > load.cost(1, 0, 0, 0),
            "hung must cost more than fresh"
        );
    }

    #[test]
    fn an_unanswered_request_raises_the_estimate_and_a_quick_one_does_not_lower_it() {
        let load = Load::new(LoadKind::default(), Penalty::default());
        load.record(1_000_000, 0);
        assert!(load.record_peak(300_000_000));
        assert_eq!(load.cost(0, 0, 0, 0), 300e6);
        assert!(!load.record_peak(10_000));
        assert_eq!(load.cost(0, 0, 0, 0), 300e6);
    }

    #[test]
    fn pending_requests_counts_only_pending() {
        let load = Load::new(LoadKind::PendingRequests, Penalty::default());
        load.record(1_000_000_000, 0);
        assert_eq!(load.cost(3, 0, 0, 0), 3.0);
    }

    #[test]
    fn failed_responses_add_a_penalty_in_proportion_that_fades() {
        let load = Load::new(LoadKind::default(), Penalty::default());
        load.record(100_000, 0); // a fail-fast pod: 0.1 ms
        const MS: u64 = 1_000_000;
        // Failures every millisecond for a whole decay (1 s).
        let mut now = 0;
        for _ in 0..1_000 {
            now += MS;
            load.record_class(true, || (now, MS));
        }
        let failing = load.cost(0, 0, 0, now);
        assert!(
            (0.62e9..0.64e9).contains(&failing),
            "1 - 1/e of the penalty after one decay: {failing}"
        );
        // One failure among many moves it by next to nothing.
        let healthy = Load::new(LoadKind::default(), Penalty::default());
        let mut now = 0;
        for i in 0..10_000u64 {
            now += MS;
            healthy.record_class(i == 5_000, || (now, MS));
        }
        assert!(
            healthy.cost(0, 0, 0, now) < 0.01e6,
            "{}",
            healthy.cost(0, 0, 0, now)
        );
        // A pod failing every other request settles near half the penalty.
        let half = Load::new(LoadKind::default(), Penalty::default());
        let mut now = 0;
        for i in 0..200_000u64 {
            now += MS;
            half.record_class(i % 2 == 0, || (now, MS));
        }
        let half_cost = half.cost(0, 0, 0, now);
        assert!((0.45e9..0.55e9).contains(&half_cost), "{half_cost}");
        // Quiet for three decays: the penalty fades to about 5%.
        let faded = half.cost(0, 0, 0, now + 3_000 * MS);
        assert!(faded < 0.03e9, "{faded}");
        // Good responses pull it down.
        for _ in 0..100_000 {
            now += MS;
            half.record_class(false, || (now, MS));
        }
        assert!(half.cost(0, 0, 0, now) < 0.01e9);
    }

    #[test]
    fn a_good_response_with_no_penalty_standing_reads_no_clock() {
        let load = Load::new(LoadKind::default(), Penalty::default());
        load.record_class(false, || panic!("read the clock"));
        let off = Load::new(
            LoadKind::default(),
            Penalty {
                value: Duration::ZERO,
                ..Penalty::default()
            },
        );
        off.record_class(true, || panic!("read the clock"));
        assert_eq!(off.cost(0, 0, 0, 0), 0.0, "a zero penalty is off");
        let pending = Load::new(LoadKind::PendingRequests, Penalty::default());
        pending.record_class(true, || panic!("read the clock"));
    }
}
