//! Durations from settings, made safe to add to an `Instant`: the crate's
//! one "never".
//!
//! `Instant + Duration` panics when the sum does not fit the clock (with
//! `Duration::MAX` it never does), and tokio's timer adds a millisecond of
//! rounding to every deadline it is given, which panics just as well for a
//! deadline at the clock's very end. Every duration setting may be
//! `Duration::MAX` (meaning "never"), so they pass through here.

use std::time::Duration;

use tokio::time::{Instant, sleep_until};

/// The longest wait any setting stands for: about 30 years, tokio's own
/// "far future". Longer settings (up to `Duration::MAX`) mean "never" in
/// practice: the client's are treated as this ([`saturate`]), the server's
/// as no deadline at all ([`deadline`]). Either way no deadline computed
/// from a setting can overflow.
pub(crate) const LONGEST: Duration = Duration::from_secs(86_400 * 365 * 30);

/// `d`, at most [`LONGEST`].
pub(crate) fn saturate(d: Duration) -> Duration {
    d.min(LONGEST)
}

/// `start + after`, or `None` ("never") when `after` is beyond [`LONGEST`]
/// (or the clock).
pub(crate) fn deadline(start: Instant, after: Duration) -> Option<Instant> {
    if after > LONGEST {
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
        assert_eq!(deadline(now, LONGEST + Duration::from_nanos(1)), None);
        assert_eq!(deadline(now, LONGEST), Some(now + LONGEST));
        assert_eq!(
            deadline(now, Duration::from_millis(5)),
            Some(now + Duration::from_millis(5))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn sleeping_until_the_longest_deadline_does_not_panic() {
        let never = deadline(Instant::now(), LONGEST);
        let slept =
            tokio::time::timeout(Duration::from_secs(3600), sleep_until_or_never(never)).await;
        assert!(slept.is_err(), "30 years passed in an hour");
        let none = tokio::time::timeout(Duration::from_secs(1), sleep_until_or_never(None)).await;
        assert!(none.is_err());
    }
}
