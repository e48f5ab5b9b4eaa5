//! Spreading connection ages so that connections accepted together do not all
//! drain together.
//!
//! A fleet of clients that connected during one deploy would otherwise hit
//! their age in the same instant and reconnect as a herd. grpc-go draws every
//! connection's age uniformly from `[age - 10%, age + 10%]`; this module does
//! the same with a configurable half-width.

use std::time::Duration;

use rand::Rng;

/// The default jitter: a tenth of the age, as grpc-go uses.
pub(crate) fn default_jitter(age: Duration) -> Duration {
    age / 10
}

/// Draws one connection's age uniformly from `[age - jitter, age + jitter]`.
///
/// The builder guarantees `jitter < age`, so the result is never zero. A zero
/// jitter returns `age` unchanged.
pub(crate) fn jittered_age<R: Rng + ?Sized>(
    age: Duration,
    jitter: Duration,
    rng: &mut R,
) -> Duration {
    if jitter.is_zero() {
        return age;
    }
    // Nanoseconds fit a u64 for 584 years; anything longer is clamped, which
    // only narrows the spread of an age nobody will reach.
    let half = u64::try_from(jitter.as_nanos())
        .unwrap_or(u64::MAX / 2)
        .min(u64::MAX / 2);
    let offset = rng.random_range(0..=2 * half);
    age.saturating_sub(Duration::from_nanos(half))
        .saturating_add(Duration::from_nanos(offset))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn jittered_ages_stay_within_bounds_and_spread() {
        let mut rng = StdRng::seed_from_u64(7);
        let age = Duration::from_millis(1000);
        let jitter = default_jitter(age);
        let ages: Vec<Duration> = (0..1000)
            .map(|_| jittered_age(age, jitter, &mut rng))
            .collect();
        let min = *ages.iter().min().unwrap();
        let max = *ages.iter().max().unwrap();
        assert!(
            min >= Duration::from_millis(900),
            "min {min:?} below age - 10%"
        );
        assert!(
            max <= Duration::from_millis(1100),
            "max {max:?} above age + 10%"
        );
        // 1000 uniform draws over ±100 ms reach within 10 ms of both ends.
        assert!(
            min < Duration::from_millis(910),
            "min {min:?}: draws do not spread down"
        );
        assert!(
            max > Duration::from_millis(1090),
            "max {max:?}: draws do not spread up"
        );
        let below = ages.iter().filter(|a| **a < age).count();
        assert!(
            (400..=600).contains(&below),
            "{below} of 1000 below the age: not centred"
        );
    }

    #[test]
    fn zero_jitter_returns_the_age_unchanged() {
        let mut rng = StdRng::seed_from_u64(1);
        let age = Duration::from_millis(500);
        assert_eq!(jittered_age(age, Duration::ZERO, &mut rng), age);
    }

    #[test]
    fn huge_jitter_does_not_overflow() {
        let mut rng = StdRng::seed_from_u64(3);
        let age = Duration::MAX;
        let a = jittered_age(age, age / 2, &mut rng);
        assert!(a >= age / 2);
    }
}
