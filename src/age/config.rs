//! [`AgeConfig`]: a connection's age, jitter, drain timeout and load kind.

use std::time::Duration;

use tokio::time::Instant;

use crate::classify::ResponseClassifier;
use crate::error::Error;
use crate::load::{LoadKind, Penalty};

/// The default [`drain_timeout`](crate::MaxConnectionAgeLayer::drain_timeout): 30 s.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub(crate) struct AgeConfig {
    /// `None`: connections never age (the client without a max age).
    pub(crate) max_age: Option<Duration>,
    pub(crate) jitter: Option<Duration>,
    pub(crate) drain_timeout: Duration,
    pub(crate) judging: Judging,
}

/// How a connection's requests are judged for the pick: the load model,
/// what a failed response weighs in it, and what counts as failed.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Judging {
    pub(crate) load: LoadKind,
    pub(crate) penalty: Penalty,
    pub(crate) classifier: ResponseClassifier,
}

impl From<LoadKind> for Judging {
    fn from(load: LoadKind) -> Self {
        Judging {
            load,
            ..Judging::default()
        }
    }
}

impl AgeConfig {
    pub(crate) fn new(max_age: Option<Duration>) -> Self {
        AgeConfig {
            max_age,
            jitter: None,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            judging: Judging::default(),
        }
    }

    /// The jitter in force: the one set, or 10% of the age.
    pub(crate) fn jitter(&self) -> Duration {
        self.jitter.unwrap_or_else(|| {
            self.max_age
                .map_or(Duration::ZERO, crate::jitter::default_jitter)
        })
    }

    pub(crate) fn validate(&self) -> Result<(), Error> {
        if self.max_age.is_some_and(|age| age.is_zero()) {
            return Err(Error::config(
                "max_connection_age must be greater than zero",
            ));
        }
        if self.judging.penalty.decay.is_zero() {
            return Err(Error::config(
                "failure_penalty_decay must be greater than zero",
            ));
        }
        if self.drain_timeout.is_zero() {
            return Err(Error::config(
                "drain_timeout must be greater than zero (use a small value to close promptly)",
            ));
        }
        Ok(())
    }

    /// A fresh deadline: `max_age + U(0, jitter)`, never shorter than the age
    /// (see [`crate::jitter`] for why the client's spread is above the age).
    /// Each is taken as at most about 30 years (`crate::time::LONGEST`), so
    /// `Duration::MAX` means "never" and cannot overflow.
    pub(crate) fn deadline(&self, now: Instant) -> Option<Instant> {
        let max_age = crate::time::saturate(self.max_age?);
        let jitter = crate::time::saturate(self.jitter());
        Some(now + crate::jitter::above(max_age, jitter, &mut rand::rng()))
    }
}
