//! The crate's one jitter: spreading connection ages so that connections
//! opened together do not all reach their age together.
//!
//! A fleet of clients that connected during one deploy would otherwise hit
//! their age in the same instant and reconnect as a herd. Both sides default
//! to a tenth of the age, and draw uniformly; they differ in where the
//! spread goes, each as the peer its users know:
//!
//! - the server draws from `[age - jitter, age + jitter]`, as grpc-go's
//!   `MaxConnectionAge` ("a random jitter of +/-10%");
//! - the client draws from `[age, age + jitter]`, so its
//!   `max_connection_age` is the least a connection lives: a client's age
//!   is set below the servers' to rotate first, and a jitter below it would
//!   rotate connections younger than the user allowed.

use std::time::Duration;

use rand::Rng;

/// The default jitter: a tenth of the age, as grpc-go uses.
pub(crate) fn default_jitter(age: Duration) -> Duration {
    age / 10
}

/// Draws one age uniformly from `[age - below, age + above]` (clamped to
/// `Duration`'s range). Zero jitter returns `age` unchanged.
pub(crate) fn jittered<R: Rng + ?Sized>(
    age: Duration,
    below: Duration,
    above: Duration,
    rng: &mut R,
) -> Duration {
    if below.is_zero() && above.is_zero() {
        return age;
    }
    // Nanoseconds fit a u64 for 584 years; anything longer is clamped, which
    // only narrows the spread of an age nobody will reach.
    let nanos = |d: Duration| {
        u64::try_from(d.as_nanos())
            .unwrap_or(u64::MAX / 2)
            .min(u64::MAX / 2)
    };
    let (below, above) = (nanos(below), nanos(above));
    let offset = rng.random_range(0..=below + above);
    age.saturating_sub(Duration::from_nanos(below))
        .saturating_add(Duration::from_nanos(offset))
}

/// The server's: uniformly from `[age - jitter, age + jitter]`. Its builder
/// guarantees `jitter < age`, so the result is never zero.
pub(crate) fn around<R: Rng + ?Sized>(age: Duration, jitter: Duration, rng: &mut R) -> Duration {
    jittered(age, jitter, jitter, rng)
}

/// The client's: uniformly from `[age, age + jitter]`.
pub(crate) fn above<R: Rng + ?Sized>(age: Duration, jitter: Duration, rng: &mut R) -> Duration {
    jittered(age, Duration::ZERO, jitter, rng)
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
        let ages: Vec<Duration> = (0..1000).map(|_| around(age, jitter, &mut rng)).collect();
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
        assert_eq!(around(age, Duration::ZERO, &mut rng), age);
    }

    #[test]
    fn huge_jitter_does_not_overflow() {
        let mut rng = StdRng::seed_from_u64(3);
        let age = Duration::MAX;
        let a = around(age, age / 2, &mut rng);
        assert!(a >= age / 2);
    }

    #[test]
    fn the_clients_jitter_never_shortens_the_age() {
        let mut rng = StdRng::seed_from_u64(11);
        let age = Duration::from_millis(1000);
        let ages: Vec<Duration> = (0..1000)
            .map(|_| above(age, default_jitter(age), &mut rng))
            .collect();
        let min = *ages.iter().min().unwrap();
        let max = *ages.iter().max().unwrap();
        assert!(min >= age, "min {min:?} below the age");
        assert!(max <= Duration::from_millis(1100), "max {max:?}");
        assert!(min < Duration::from_millis(1010) && max > Duration::from_millis(1090));
        assert_eq!(above(age, Duration::ZERO, &mut rng), age);
    }
}
