//! [`Waiting`]: a request's place in the wait line for a connection with room.

use std::sync::Arc;

use crate::age::waiters::{Turn, Waiters};

/// A request's place among the [`Waiters`] for as long as it waits, however
/// its wait ends: sent, or timed out or dropped by its caller, which passes
/// an admission it held on to the next in line.
pub(super) struct Waiting<'a> {
    waiters: &'a Waiters,
    pub(super) turn: Arc<Turn>,
    sent: bool,
}

impl<'a> Waiting<'a> {
    pub(super) fn new(waiters: &'a Waiters) -> Self {
        Waiting {
            waiters,
            turn: waiters.join(),
            sent: false,
        }
    }

    /// Leaves the line having used the slot (its admission with it).
    pub(super) fn sent(mut self) {
        self.sent = true;
        self.waiters.leave(&self.turn);
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if !self.sent && self.waiters.leave(&self.turn) {
            self.waiters.admit_one();
        }
    }
}
