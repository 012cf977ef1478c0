//! Deadlines of the core, kept in one min-heap. Entries are never removed early: when a timer fires, the handler
//! checks that its subject still exists and still has that deadline (lazy deletion), which keeps cancelling O(1).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::Instant;

/// What a deadline is for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Timer {
    /// Send the collected presence changes.
    PresenceFlush,
    /// A dropped session's grace period ends.
    Grace(u64),
    /// A ringing call times out.
    Ring(Arc<str>),
    /// A connection that has not logged in by now is closed.
    Login(u64),
    /// A session's TURN credentials are due for renewal.
    IceRefresh(u64),
}

/// A min-heap of deadlines.
#[derive(Debug, Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(Instant, Timer)>>,
}

impl Timers {
    /// Adds a deadline.
    pub fn at(&mut self, when: Instant, timer: Timer) {
        self.heap.push(Reverse((when, timer)));
    }

    /// The earliest deadline.
    pub fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((when, _))| *when)
    }

    /// Removes and returns one timer due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Instant, Timer)> {
        if self.next()? <= now {
            self.heap.pop().map(|Reverse(entry)| entry)
        } else {
            None
        }
    }
}
