//! Sequence tracking of one stream: what arrived, in which order, twice or never.

use std::collections::BTreeSet;

/// Largest forward jump accepted; a bigger one means a corrupted stamp, not a million lost messages.
const MAX_GAP: u64 = 1 << 20;

/// What one arrival was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// The next expected number.
    InOrder,
    /// Ahead of the next expected number: the ones between are missing (so far).
    Ahead,
    /// One that was missing, arriving late.
    Late,
    /// Seen before.
    Duplicate,
    /// Too far ahead to be real.
    Bogus,
}

impl Arrival {
    /// Whether this arrival is new (counts as a delivery and frees a window slot).
    pub fn is_new(self) -> bool {
        matches!(self, Arrival::InOrder | Arrival::Ahead | Arrival::Late)
    }
}

/// Tracks the sequence numbers received on one stream whose sender numbers from 0.
#[derive(Debug, Default, Clone)]
pub struct SeqTracker {
    /// One past the highest number seen.
    next: u64,
    /// Numbers below `next` not seen yet.
    missing: BTreeSet<u64>,
    /// Distinct numbers received.
    pub received: u64,
    pub duplicates: u64,
    /// Late arrivals (received after a higher number).
    pub reordered: u64,
    pub bogus: u64,
}

impl SeqTracker {
    pub fn record(&mut self, seq: u64) -> Arrival {
        let arrival = if seq == self.next {
            self.next += 1;
            Arrival::InOrder
        } else if seq > self.next {
            if seq - self.next > MAX_GAP {
                self.bogus += 1;
                return Arrival::Bogus;
            }
            self.missing.extend(self.next..seq);
            self.next = seq + 1;
            Arrival::Ahead
        } else if self.missing.remove(&seq) {
            self.reordered += 1;
            Arrival::Late
        } else {
            self.duplicates += 1;
            Arrival::Duplicate
        };
        if arrival.is_new() {
            self.received += 1;
        }
        arrival
    }

    /// Messages sent (numbered `0..sent`) that never arrived.
    pub fn lost(&self, sent: u64) -> u64 {
        sent.saturating_sub(self.received)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_stream() {
        let mut t = SeqTracker::default();
        for seq in 0..100 {
            assert_eq!(t.record(seq), Arrival::InOrder);
        }
        assert_eq!((t.received, t.duplicates, t.reordered, t.lost(100)), (100, 0, 0, 0));
        assert_eq!(t.lost(105), 5, "five still unseen");
    }

    #[test]
    fn gaps_late_arrivals_and_duplicates() {
        let mut t = SeqTracker::default();
        assert_eq!(t.record(0), Arrival::InOrder);
        assert_eq!(t.record(3), Arrival::Ahead);
        assert_eq!(t.record(1), Arrival::Late);
        assert_eq!(t.record(1), Arrival::Duplicate);
        assert_eq!(t.record(3), Arrival::Duplicate);
        assert_eq!(t.record(0), Arrival::Duplicate);
        assert_eq!(t.record(4), Arrival::InOrder);
        // 2 never came.
        assert_eq!((t.received, t.duplicates, t.reordered, t.lost(5)), (4, 3, 1, 1));
    }

    #[test]
    fn absurd_jumps_are_bogus_and_change_nothing() {
        let mut t = SeqTracker::default();
        t.record(0);
        assert_eq!(t.record(u64::MAX / 2), Arrival::Bogus);
        assert_eq!(t.record(1), Arrival::InOrder);
        assert_eq!((t.received, t.bogus), (2, 1));
    }
}
