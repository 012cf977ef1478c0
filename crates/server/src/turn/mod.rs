//! The STUN/TURN listeners around the sans-IO `switchboard_turn::TurnServer`: UDP worker threads, and TCP on the same
//! port.

pub mod tcp;
pub mod tls;
pub mod udp;

pub use udp::{start, RunningTurn, TurnListener};

/// Seconds since the Unix epoch, which date nonces and REST credentials.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}
