//! The bounded queue of frames waiting to be written to one connection.
//!
//! The hub pushes (under its lock, never waiting); the connection's task drains. When the queue overflows, the
//! connection is a slow consumer and is closed with 4002 rather than letting its backlog grow without bound.

use std::collections::VecDeque;
use std::sync::Mutex;

use bytes::Bytes;
use switchboard_core::OutFrame;
use tokio::sync::Notify;

/// A frame for the writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A JSON text message.
    Text(OutFrame),
    /// A pong echoing a ping's payload.
    Pong(Bytes),
    /// A heartbeat ping.
    Ping,
}

impl Frame {
    /// Payload bytes, which count against the queue's byte bound.
    fn len(&self) -> usize {
        match self {
            Frame::Text(text) => text.len(),
            Frame::Pong(bytes) => bytes.len(),
            Frame::Ping => 0,
        }
    }
}

#[derive(Debug, Default)]
struct State {
    frames: VecDeque<Frame>,
    bytes: usize,
    /// Set once: send this close frame after the queued frames (or instead of them), then end the connection.
    close: Option<(u16, &'static str)>,
}

/// The queue shared by the hub and one connection task.
#[derive(Debug)]
pub struct Outbox {
    state: Mutex<State>,
    notify: Notify,
    max_frames: usize,
    max_bytes: usize,
}

/// The queue was full: the frame was not queued and the connection is being closed.
#[derive(Debug, PartialEq, Eq)]
pub struct Overflow;

impl Outbox {
    /// An empty queue with these bounds.
    pub fn new(max_frames: usize, max_bytes: usize) -> Self {
        Self { state: Mutex::new(State::default()), notify: Notify::new(), max_frames, max_bytes }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the queue inconsistent (every update is one push or pop), so
        // a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues a frame. On overflow the queue is emptied and closed with 4002.
    pub fn push(&self, frame: Frame) -> Result<(), Overflow> {
        let mut state = self.lock();
        if state.close.is_some() {
            return Ok(());
        }
        let len = frame.len();
        let empty = state.frames.is_empty();
        // A single frame larger than the byte bound still goes through when nothing else is queued, so that a large
        // welcome to a busy server is not mistaken for a slow reader.
        if !empty && (state.frames.len() >= self.max_frames || state.bytes + len > self.max_bytes) {
            state.frames = VecDeque::new();
            state.bytes = 0;
            state.close = Some((switchboard_proto::close_code::SLOW_CONSUMER, "slow consumer"));
            drop(state);
            self.notify.notify_one();
            return Err(Overflow);
        }
        state.bytes += len;
        state.frames.push_back(frame);
        drop(state);
        if empty {
            self.notify.notify_one();
        }
        Ok(())
    }

    /// Asks the writer to send a close frame after what is queued, then end the connection.
    pub fn close(&self, code: u16, reason: &'static str) {
        let mut state = self.lock();
        if state.close.is_none() {
            state.close = Some((code, reason));
        }
        drop(state);
        self.notify.notify_one();
    }

    /// Hands up to `max_bytes` worth of frames (at least one) to `each`, in order; returns the close request once the
    /// queue is drained. `each` runs under the queue's lock, so it must only copy (the writer encodes into its
    /// buffer), which spares a per-batch allocation on the write path.
    pub fn drain(&self, max_bytes: usize, mut each: impl FnMut(Frame)) -> Option<(u16, &'static str)> {
        let mut state = self.lock();
        let mut taken = 0;
        while let Some(len) = state.frames.front().map(Frame::len) {
            if taken > 0 && taken + len > max_bytes {
                break;
            }
            taken += len;
            state.bytes -= len;
            if let Some(frame) = state.frames.pop_front() {
                each(frame);
            }
        }
        if state.frames.is_empty() {
            // Give the ring buffer back: most connections sit idle and should cost nothing here.
            state.frames = VecDeque::new();
            state.close
        } else {
            None
        }
    }

    /// Resolves when frames or a close request may be waiting.
    pub async fn ready(&self) {
        self.notify.notified().await;
    }

    /// Whether a close was requested.
    pub fn close_requested(&self) -> bool {
        self.lock().close.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(n: usize) -> Frame {
        Frame::Text(OutFrame::from(vec![b'x'; n]))
    }

    #[test]
    fn overflow_closes_with_slow_consumer() {
        let outbox = Outbox::new(3, 100);
        assert!(outbox.push(text(10)).is_ok());
        assert!(outbox.push(text(10)).is_ok());
        assert!(outbox.push(text(10)).is_ok());
        assert_eq!(outbox.push(text(10)), Err(Overflow));
        let mut frames = Vec::new();
        assert_eq!(outbox.drain(1000, |f| frames.push(f)), Some((4002, "slow consumer")));
        assert!(frames.is_empty(), "a slow consumer's backlog is dropped");
    }

    #[test]
    fn a_single_large_frame_passes_and_close_waits_for_queued_frames() {
        let outbox = Outbox::new(10, 100);
        assert!(outbox.push(text(500)).is_ok());
        assert_eq!(outbox.push(text(1)), Err(Overflow));
        let outbox = Outbox::new(10, 100);
        outbox.push(text(5)).unwrap();
        outbox.push(text(5)).unwrap();
        outbox.close(4004, "logged out");
        let mut frames = Vec::new();
        assert_eq!(outbox.drain(5, |f| frames.push(f)), None);
        assert_eq!(frames.len(), 1);
        assert_eq!(outbox.drain(5, |f| frames.push(f)), Some((4004, "logged out")));
        assert_eq!(frames.len(), 2);
    }
}
