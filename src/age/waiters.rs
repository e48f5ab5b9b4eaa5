//! [`Waiters`]: requests waiting for a connection with room, in line.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

/// The requests of one client that found every connection at its server's
/// stream limit, first come, first served.
///
/// A slot that frees *admits* the first waiter in line that is not admitted
/// yet, and wakes it. An admitted waiter that finds the slot taken after
/// all (another admitted waiter was quicker) gives the admission back but
/// keeps its place, so the next slot goes to it again: nobody goes to the
/// back of the line for losing a race. (With tokio's `Notify` a woken
/// waiter that found no room had to wait anew, behind everyone: p99 1.6x
/// raw hyper's with 300 callers on 100 streams.)
///
/// A waiter joins (and adds itself to `count`), then looks at the
/// connections once more before it sleeps; a finishing request lowers its
/// connection's in-flight count, then reads `count`. Both sides use
/// `SeqCst`, so at least one of them sees the other: no wake-up is lost.
#[derive(Default)]
pub(crate) struct Waiters {
    /// Waiters in line: read on every request's path, so kept apart from
    /// the line's lock.
    pub(crate) count: AtomicUsize,
    line: Mutex<Line>,
}

#[derive(Default)]
struct Line {
    turns: VecDeque<Arc<Turn>>,
    /// Turns admitted and not yet used or given back.
    admitted: usize,
}

/// One waiter's place in line.
#[derive(Default)]
pub(crate) struct Turn {
    admitted: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Turn {
    /// Ready once admitted (registers the waker otherwise).
    pub(crate) fn poll_admitted(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.admitted.load(Ordering::SeqCst) {
            return Poll::Ready(());
        }
        let mut waker = self.waker.lock().unwrap_or_else(|p| p.into_inner());
        match &*waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => *waker = Some(cx.waker().clone()),
        }
        drop(waker);
        // Admitted between the first look and the registration.
        if self.admitted.load(Ordering::SeqCst) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    pub(crate) fn is_admitted(&self) -> bool {
        self.admitted.load(Ordering::SeqCst)
    }
}

impl Waiters {
    fn line(&self) -> MutexGuard<'_, Line> {
        self.line.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Gets in line, at the back.
    pub(crate) fn join(&self) -> Arc<Turn> {
        let turn = Arc::new(Turn::default());
        let mut line = self.line();
        line.turns.push_back(turn.clone());
        self.count.fetch_add(1, Ordering::SeqCst);
        turn
    }

    /// Leaves the line (sent, timed out, or dropped by its caller); says
    /// whether the turn held an admission, which the caller passes on with
    /// [`admit_up_to`](Self::admit_up_to).
    pub(crate) fn leave(&self, turn: &Arc<Turn>) -> bool {
        let mut line = self.line();
        if let Some(at) = line.turns.iter().position(|t| Arc::ptr_eq(t, turn)) {
            line.turns.remove(at);
            self.count.fetch_sub(1, Ordering::SeqCst);
        }
        let held = turn.admitted.swap(false, Ordering::SeqCst);
        if held {
            line.admitted -= 1;
        }
        held
    }

    /// An admitted waiter found no room: it gives the admission back and
    /// keeps its place.
    pub(crate) fn refused(&self, turn: &Turn) {
        let mut line = self.line();
        if turn.admitted.swap(false, Ordering::SeqCst) {
            line.admitted -= 1;
        }
    }

    /// A slot freed: admits the first waiter in line not admitted yet.
    pub(crate) fn admit_one(&self) {
        let line = self.line();
        Self::admit(line, 1);
    }

    /// Admits waiters, first in line first, until as many are admitted as
    /// there are `free` slots.
    pub(crate) fn admit_up_to(&self, free: usize) {
        let line = self.line();
        let more = free.saturating_sub(line.admitted);
        if more > 0 {
            Self::admit(line, more);
        }
    }

    fn admit(mut line: MutexGuard<'_, Line>, n: usize) {
        let mut wakers = Vec::new();
        let mut admitted = 0;
        for turn in &line.turns {
            if admitted == n {
                break;
            }
            if !turn.admitted.swap(true, Ordering::SeqCst) {
                admitted += 1;
                if let Some(waker) = turn.waker.lock().unwrap_or_else(|p| p.into_inner()).take() {
                    wakers.push(waker);
                }
            }
        }
        line.admitted += admitted;
        drop(line);
        for waker in wakers {
            waker.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    use super::*;

    /// Counts its wake-ups.
    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Joins and registers a waker that counts.
    fn waiting(waiters: &Waiters) -> (Arc<Turn>, Arc<Count>) {
        let turn = waiters.join();
        let count = Arc::new(Count::default());
        let waker = Waker::from(count.clone());
        assert!(
            turn.poll_admitted(&mut Context::from_waker(&waker))
                .is_pending()
        );
        (turn, count)
    }

    fn admitted(turns: &[&Arc<Turn>]) -> Vec<bool> {
        turns.iter().map(|t| t.is_admitted()).collect()
    }

    #[test]
    fn a_freed_slot_admits_the_first_in_line_and_wakes_only_it() {
        let waiters = Waiters::default();
        let (a, wa) = waiting(&waiters);
        let (b, wb) = waiting(&waiters);
        assert_eq!(waiters.count.load(Ordering::SeqCst), 2);
        waiters.admit_one();
        assert_eq!(admitted(&[&a, &b]), [true, false]);
        assert_eq!(
            (wa.0.load(Ordering::SeqCst), wb.0.load(Ordering::SeqCst)),
            (1, 0)
        );
        waiters.admit_one();
        assert_eq!(admitted(&[&a, &b]), [true, true]);
        assert_eq!(wb.0.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_waiter_that_lost_the_race_keeps_its_place() {
        let waiters = Waiters::default();
        let (a, _) = waiting(&waiters);
        let (b, _) = waiting(&waiters);
        waiters.admit_one();
        // `a` found the slot taken: it gives the admission back, and the
        // next slot goes to it again, not to `b`.
        waiters.refused(&a);
        assert_eq!(admitted(&[&a, &b]), [false, false]);
        waiters.admit_one();
        assert_eq!(admitted(&[&a, &b]), [true, false]);
    }

    #[test]
    fn leaving_with_an_admission_says_so_and_leaving_without_does_not() {
        let waiters = Waiters::default();
        let (a, _) = waiting(&waiters);
        let (b, _) = waiting(&waiters);
        waiters.admit_one();
        assert!(waiters.leave(&a), "held an admission, to pass on");
        assert!(!waiters.leave(&b));
        assert_eq!(waiters.count.load(Ordering::SeqCst), 0);
        // Leaving twice (sent, then dropped) changes nothing.
        assert!(!waiters.leave(&a));
        assert_eq!(waiters.count.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn admit_up_to_counts_admissions_already_out() {
        let waiters = Waiters::default();
        let turns: Vec<_> = (0..4).map(|_| waiting(&waiters).0).collect();
        waiters.admit_up_to(2);
        waiters.admit_up_to(2);
        let all: Vec<_> = turns.iter().collect();
        assert_eq!(
            admitted(&all),
            [true, true, false, false],
            "two free slots, two admitted"
        );
        waiters.admit_up_to(3);
        assert_eq!(admitted(&all), [true, true, true, false]);
        waiters.admit_up_to(usize::MAX);
        assert_eq!(admitted(&all), [true; 4]);
    }

    #[test]
    fn an_admission_between_the_look_and_the_registration_is_not_lost() {
        let waiters = Waiters::default();
        let turn = waiters.join();
        waiters.admit_one();
        let count = Arc::new(Count::default());
        let waker = Waker::from(count);
        assert!(
            turn.poll_admitted(&mut Context::from_waker(&waker))
                .is_ready()
        );
    }
}
