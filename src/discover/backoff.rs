//! Exponential backoff with jitter for reconnects.

use std::time::Duration;

/// Reconnect delays: `min * 2^failures`, capped at `max`, each drawn
/// uniformly from its upper half so a fleet does not reconnect in lockstep.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backoff {
    pub(crate) min: Duration,
    pub(crate) max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            min: Duration::from_millis(50),
            max: Duration::from_secs(5),
        }
    }
}

impl Backoff {
    pub(crate) fn delay(&self, failures: u32) -> Duration {
        let exp = self
            .min
            .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
            .min(self.max);
        exp.mul_f64(0.5 + rand::random::<f64>() / 2.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_and_caps() {
        let b = Backoff::default();
        let first = b.delay(1);
        assert!(first >= Duration::from_millis(25) && first <= Duration::from_millis(50));
        let tenth = b.delay(10);
        assert!(tenth >= Duration::from_millis(2500) && tenth <= Duration::from_secs(5));
        assert!(b.delay(1000) <= Duration::from_secs(5));
    }
}
