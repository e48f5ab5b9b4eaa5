//! Turning a configured duration into a point in time without a panic.
//!
//! `Instant + Duration` panics when the sum does not fit the clock (with
//! `Duration::MAX` it never does), and tokio's timer adds a millisecond of
//! rounding to every deadline it is given, which panics just as well for a
//! deadline at the clock's very end. Every setting of the server may be
//! `Duration::MAX` (meaning "never"), so deadlines are made here: anything
//! beyond [`NEVER`] is no deadline at all.

use std::time::Duration;

use tokio::time::{Instant, sleep_until};

/// Durations longer than this (about a century) never end: no connection
/// lives that long, and the sum stays far from the clock's limit.
pub(crate) const NEVER: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// `start + after`, or `None` when that is beyond [`NEVER`] (or the clock).
pub(crate) fn deadline(start: Instant, after: Duration) -> Option<Instant> {
    if after > NEVER {
        None
    } else {
        start.checked_add(after)
    }
}

/// Sleeps until `deadline`, or forever when there is none.
pub(crate) async fn sleep_until_or_never(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_durations_have_no_deadline_and_short_ones_add_up() {
        let now = Instant::now();
        assert_eq!(deadline(now, Duration::MAX), None);
        assert_eq!(deadline(now, NEVER + Duration::from_nanos(1)), None);
        assert_eq!(deadline(now, NEVER), Some(now + NEVER));
        assert_eq!(
            deadline(now, Duration::from_millis(5)),
            Some(now + Duration::from_millis(5))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn sleeping_until_the_longest_deadline_does_not_panic() {
        let never = deadline(Instant::now(), NEVER);
        let slept =
            tokio::time::timeout(Duration::from_secs(3600), sleep_until_or_never(never)).await;
        assert!(slept.is_err(), "a century passed in an hour");
        let none = tokio::time::timeout(Duration::from_secs(1), sleep_until_or_never(None)).await;
        assert!(none.is_err());
    }
}
