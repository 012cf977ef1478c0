//! Cluster backends: where the signaling core's cluster commands go, and where its cluster events come from.
//!
//! The core (`switchboard_core::cluster`) states what it needs from the shared state as [`Command`]s and learns the
//! answers, and what other nodes say, from [`Event`]s; it does not know what carries them. A [`Backend`] does:
//!
//! - [`Standalone`], the single-node default: no shared state at all. The core runs without a node id and never
//!   emits a command, so a single node pays nothing (no task, no allocation, no lock) for cluster mode.
//! - [`redis::RedisBackend`], the real one: nodes in separate processes or machines sharing one Redis. Every key and
//!   channel it uses is described in `docs/cluster.md`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod codec;
pub mod redis;
pub mod resp;
mod scripts;

pub use switchboard_core::cluster::{Command, Event, Message, NodeId};

/// Most events waiting for the hub; a backend that gets ahead waits (it never drops an event).
pub const EVENT_QUEUE: usize = 65_536;

/// Most commands waiting for a backend; beyond, a command fails at once (see [`Command::failed`]).
pub const COMMAND_QUEUE: usize = 65_536;

/// Where the core's cluster commands go.
pub trait Backend: Send + Sync + 'static {
    /// Takes a command; never blocks. A command it cannot take is handed back, for the caller to answer the core with
    /// [`Command::failed`] at once.
    fn submit(&self, command: Command) -> Result<(), Command>;

    /// Whether the shared state is reachable: `/readyz` reports a node that cannot reach it as not ready.
    fn ready(&self) -> bool;
}

/// The single-node default: nothing is shared, and nothing is ever asked (the core has no node id).
#[derive(Debug, Default, Clone, Copy)]
pub struct Standalone;

impl Backend for Standalone {
    fn submit(&self, command: Command) -> Result<(), Command> {
        // A core without a node id emits no command; if one ever came, failing it is the honest answer.
        Err(command)
    }

    fn ready(&self) -> bool {
        true
    }
}

/// A random node id: 12 hex digits, new for every process start.
pub fn random_node_id(random: u64) -> NodeId {
    NodeId(std::sync::Arc::from(format!("{:012x}", random & 0xffff_ffff_ffff).as_str()))
}
