//! The power-of-two-choices pick, as a plain function over the connection
//! list with its randomness injected (as tower's `p2c::Balance::from_rng`),
//! so that it is tested without sockets.

use std::sync::Arc;

use rand::Rng;

use crate::age::AgedConnection;
use crate::connector::SharedConnection;
use crate::load::LoadInstant;

/// What the pick reads of a connection.
pub(crate) trait Candidate<B> {
    /// Takes a request now: serving, its transport open, and below its
    /// server's stream limit (`SETTINGS_MAX_CONCURRENT_STREAMS`), so that no
    /// request is queued inside h2 while another connection has room.
    fn takes_requests(&self) -> bool;
    /// Out of the pick: its endpoint is ejected as an outlier.
    fn is_ejected(&self) -> bool;
    /// Identifies the connection across picks.
    fn id(&self) -> usize;
    /// The cost of one more request here; lower is better.
    fn cost(&self, now: LoadInstant) -> f64;
    /// The share of its normal traffic it should take: below 1 while its
    /// endpoint is in its slow-start window.
    fn weight(&self, now: LoadInstant) -> f64;
}

impl<B, C: SharedConnection<B>> Candidate<B> for AgedConnection<C> {
    #[inline]
    fn takes_requests(&self) -> bool {
        self.is_serving()
            && self.inner().is_open()
            && self.state().in_flight() < self.inner().max_concurrent_streams()
    }

    #[inline]
    fn is_ejected(&self) -> bool {
        self.balancing().is_ejected()
    }

    /// Its state's address.
    #[inline]
    fn id(&self) -> usize {
        Arc::as_ptr(self.state()) as usize
    }

    #[inline]
    fn cost(&self, now: LoadInstant) -> f64 {
        self.balancing().cost(now)
    }

    #[inline]
    fn weight(&self, now: LoadInstant) -> f64 {
        self.balancing().weight(now)
    }
}

/// Power of two choices: two distinct random connections, the one with the
/// lower load wins; connections that take no request now are skipped, and
/// so is `avoid` (the connection that just refused the request) unless it
/// is the only one that takes it.
pub(crate) fn pick<'a, B, K, T: Candidate<B>>(
    connections: &'a [(K, T)],
    avoid: usize,
    rng: &mut impl Rng,
) -> Option<&'a T> {
    let serving = |c: &T| c.takes_requests() && !c.is_ejected() && c.id() != avoid;
    let n = connections.len();
    let (a, b) = match n {
        0 => return None,
        1 => (0, 0),
        _ => {
            let a = rng.random_range(0..n);
            let b = rng.random_range(0..n - 1);
            (a, if b >= a { b + 1 } else { b })
        }
    };
    let (ca, cb) = (&connections[a].1, &connections[b].1);
    match (serving(ca), serving(cb)) {
        (true, true) if a != b => {
            let now = LoadInstant::now();
            let (won, lost) = if cb.cost(now) < ca.cost(now) {
                (cb, ca)
            } else {
                (ca, cb)
            };
            Some(slow_start(won, lost, now, rng))
        }
        (true, _) => Some(ca),
        (false, true) => Some(cb),
        (false, false) => pick_any(connections, avoid, rng),
    }
}

/// The winner of a pick, unless it is an endpoint in its slow-start window:
/// then it keeps only its weight's share of the wins, the rest going to the
/// other candidate. (A new connection costs nothing, so without this a new
/// pod would win every pick it is part of.)
#[inline]
fn slow_start<'a, B, T: Candidate<B>>(
    won: &'a T,
    lost: &'a T,
    now: LoadInstant,
    rng: &mut impl Rng,
) -> &'a T {
    let weight = won.weight(now);
    if weight < 1.0 && rng.random::<f64>() >= weight {
        lost
    } else {
        won
    }
}

/// The thread's RNG, fetched on the first draw: a pick over one connection
/// draws nothing, and so takes no handle on it (a reference count up and
/// down on every request otherwise).
#[derive(Default)]
pub(crate) struct ThreadRngOnDemand(Option<rand::rngs::ThreadRng>);

impl ThreadRngOnDemand {
    fn rng(&mut self) -> &mut rand::rngs::ThreadRng {
        self.0.get_or_insert_with(rand::rng)
    }
}

impl rand::RngCore for ThreadRngOnDemand {
    fn next_u32(&mut self) -> u32 {
        self.rng().next_u32()
    }

    fn next_u64(&mut self) -> u64 {
        self.rng().next_u64()
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        self.rng().fill_bytes(dest)
    }
}

/// When neither random pick takes the request: the first connection that
/// does, else `avoid` if it does. When every connection that takes
/// requests is ejected (one endpoint behind a virtual IP, or all of them
/// failing), ejection must not make an outage, nor send everything to
/// whichever connection comes first: the pick goes on among them as usual,
/// by cost. Out of line: rare.
#[cold]
#[inline(never)]
fn pick_any<'a, B, K, T: Candidate<B>>(
    connections: &'a [(K, T)],
    avoid: usize,
    rng: &mut impl Rng,
) -> Option<&'a T> {
    let candidates = || {
        connections
            .iter()
            .map(|(_, c)| c)
            .filter(|c| c.takes_requests())
    };
    if let Some(c) = candidates()
        .find(|c| !c.is_ejected() && c.id() != avoid)
        .or_else(|| candidates().find(|c| !c.is_ejected()))
    {
        return Some(c);
    }
    let n = candidates().count();
    if n < 2 {
        return candidates().next();
    }
    let a = rng.random_range(0..n);
    let b = rng.random_range(0..n - 1);
    let b = if b >= a { b + 1 } else { b };
    let (ca, cb) = (candidates().nth(a)?, candidates().nth(b)?);
    let now = LoadInstant::now();
    Some(if cb.cost(now) < ca.cost(now) { cb } else { ca })
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    /// A connection as the pick sees it.
    #[derive(Debug, Clone, Copy)]
    struct Fake {
        id: usize,
        cost: f64,
        weight: f64,
        open: bool,
        ejected: bool,
    }

    fn fake(id: usize, cost: f64) -> (u8, Fake) {
        (
            0,
            Fake {
                id,
                cost,
                weight: 1.0,
                open: true,
                ejected: false,
            },
        )
    }

    impl Candidate<()> for Fake {
        fn takes_requests(&self) -> bool {
            self.open
        }
        fn is_ejected(&self) -> bool {
            self.ejected
        }
        fn id(&self) -> usize {
            self.id
        }
        fn cost(&self, _: LoadInstant) -> f64 {
            self.cost
        }
        fn weight(&self, _: LoadInstant) -> f64 {
            self.weight
        }
    }

    /// How many of `rounds` picks each connection won.
    fn shares(connections: &[(u8, Fake)], avoid: usize, rounds: usize) -> Vec<usize> {
        let mut rng = StdRng::seed_from_u64(7);
        let mut won = vec![0; connections.len()];
        for _ in 0..rounds {
            let c = pick::<(), _, _>(connections, avoid, &mut rng).expect("one takes it");
            won[c.id] += 1;
        }
        won
    }

    /// An RNG that must not be drawn from.
    struct NoDraws;

    impl rand::RngCore for NoDraws {
        fn next_u32(&mut self) -> u32 {
            panic!("drew from the RNG")
        }
        fn next_u64(&mut self) -> u64 {
            panic!("drew from the RNG")
        }
        fn fill_bytes(&mut self, _: &mut [u8]) {
            panic!("drew from the RNG")
        }
    }

    #[test]
    fn one_connection_is_picked_without_drawing_and_the_thread_rng_is_fetched_on_demand() {
        let one = [fake(0, 0.0)];
        assert_eq!(pick::<(), _, _>(&one, 0, &mut NoDraws).unwrap().id, 0);
        let mut on_demand = ThreadRngOnDemand::default();
        pick::<(), _, _>(&one, 0, &mut on_demand);
        assert!(on_demand.0.is_none(), "no handle taken for one connection");
        pick::<(), _, _>(&[fake(0, 0.0), fake(1, 0.0)], 0, &mut on_demand);
        assert!(on_demand.0.is_some());
    }

    #[test]
    fn nothing_to_pick_from_picks_nothing() {
        let mut rng = StdRng::seed_from_u64(1);
        assert!(pick::<(), u8, Fake>(&[], 0, &mut rng).is_none());
        let mut closed = fake(0, 0.0);
        closed.1.open = false;
        assert!(pick::<(), _, _>(&[closed], 0, &mut rng).is_none());
    }

    #[test]
    fn the_cheaper_of_two_always_wins_and_the_dearest_never_does() {
        // Three connections: every pair drawn includes a cheaper one than
        // the dearest, so it never wins; the cheapest wins whenever drawn
        // (2/3 of pairs).
        let won = shares(
            &[fake(0, 1.0), fake(1, 5.0), fake(2, 9.0)],
            usize::MAX,
            3_000,
        );
        assert_eq!(won[2], 0, "{won:?}");
        assert!((1_850..=2_150).contains(&won[0]), "{won:?}");
        assert_eq!(won.iter().sum::<usize>(), 3_000);
    }

    #[test]
    fn equal_costs_spread_evenly() {
        let won = shares(
            &[fake(0, 1.0), fake(1, 1.0), fake(2, 1.0), fake(3, 1.0)],
            usize::MAX,
            8_000,
        );
        for w in &won {
            assert!((1_800..=2_200).contains(w), "{won:?}");
        }
    }

    #[test]
    fn the_same_seed_picks_the_same_sequence() {
        let connections = [fake(0, 1.0), fake(1, 1.0), fake(2, 1.0)];
        let run = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            (0..50)
                .map(|_| {
                    pick::<(), _, _>(&connections, usize::MAX, &mut rng)
                        .unwrap()
                        .id
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(run(3), run(3));
        assert_ne!(run(3), run(4), "the RNG decides ties");
    }

    #[test]
    fn a_full_or_closed_connection_is_skipped() {
        let mut full = fake(1, 0.0);
        full.1.open = false;
        let won = shares(&[fake(0, 100.0), full, fake(2, 100.0)], usize::MAX, 1_000);
        assert_eq!(won[1], 0, "{won:?}");
    }

    #[test]
    fn the_connection_that_refused_is_avoided_unless_it_is_the_only_one() {
        let won = shares(&[fake(0, 0.0), fake(1, 9.0)], 0, 500);
        assert_eq!(won, vec![0, 500], "avoided though cheaper");
        let won = shares(&[fake(0, 0.0)], 0, 10);
        assert_eq!(won, vec![10], "the only one left takes it");
    }

    #[test]
    fn an_ejected_endpoint_is_picked_only_when_nothing_else_takes_requests() {
        let mut ejected = fake(0, 0.0);
        ejected.1.ejected = true;
        let won = shares(&[ejected, fake(1, 50.0), fake(2, 50.0)], usize::MAX, 1_000);
        assert_eq!(won[0], 0, "{won:?}");
        let mut closed = fake(1, 0.0);
        closed.1.open = false;
        let won = shares(&[ejected, closed], usize::MAX, 100);
        assert_eq!(won, vec![100, 0], "ejection never makes an outage");
    }

    #[test]
    fn when_every_connection_is_ejected_the_pick_goes_on_by_cost_among_them() {
        // One endpoint behind a virtual IP, ejected as a whole: its
        // connections to a failing pod cost more, and the first in the
        // list must not take everything.
        let ejected = |id, cost| {
            let mut c = fake(id, cost);
            c.1.ejected = true;
            c
        };
        let won = shares(
            &[
                ejected(0, 90.0),
                ejected(1, 1.0),
                ejected(2, 1.0),
                ejected(3, 90.0),
            ],
            usize::MAX,
            3_000,
        );
        // Power of two choices: a dear one wins only when drawn with the
        // other dear one, one pick in six.
        assert!(won[1] + won[2] > 2_300, "the cheap ones win: {won:?}");
        assert!(
            won[1] > 1_000 && won[2] > 1_000,
            "spread over them: {won:?}"
        );
    }

    #[test]
    fn slow_start_gives_a_new_endpoint_its_weights_share_of_wins() {
        // The new endpoint costs nothing, so it wins every pair it is in
        // (2/3 of pairs among three) unless slow start holds it back: at
        // weight 0.25 it keeps a quarter of those wins.
        let mut joining = fake(0, 0.0);
        joining.1.weight = 0.25;
        let won = shares(&[joining, fake(1, 5.0), fake(2, 5.0)], usize::MAX, 6_000);
        let expected = 6_000.0 * 2.0 / 3.0 * 0.25;
        assert!(
            (won[0] as f64 - expected).abs() < expected * 0.1,
            "{won:?}, expected about {expected}"
        );
        let mut ramped = joining;
        ramped.1.weight = 1.0;
        let won = shares(&[ramped, fake(1, 5.0), fake(2, 5.0)], usize::MAX, 6_000);
        assert!((3_800..=4_200).contains(&won[0]), "{won:?}");
    }
}
