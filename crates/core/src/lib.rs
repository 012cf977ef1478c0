//! Switchboard's signaling core: a sans-IO state machine.
//!
//! It never touches a socket or a clock. The server feeds it [`Input`]s with the current time through
//! [`Signaling::handle_input`], calls [`Signaling::handle_timeout`] when [`Signaling::poll_timeout`] says so, and
//! drains [`Output`]s (frames to send, connections to close) with [`Signaling::poll_output`]. Tests drive it the same
//! way with simulated time: no sleeps, no sockets, deterministic.
//!
//! Layout:
//! - [`signaling`]: the [`Signaling`] state machine: connections, sessions, login, resume, relay, delivery.
//! - `calls.rs`, `rooms.rs`: call control and rooms, as further `impl Signaling` blocks.
//! - [`presence`]: coalescing of presence changes and the cached user-list snapshot.
//! - [`rate`]: token buckets (message rate, error strikes).
//! - [`config`]: the settings ([`Config`]).
//! - [`auth`]: signed login tokens (JWT, HS256) and room password digests.
//! - [`cluster`]: cluster mode, the commands and events between the core and a shared store; `remote.rs` holds what
//!   the core does with them.
//! - [`metrics`]: counters the IO layer exports ([`Counters`]).
//! - [`admin`]: paged read-only views of users, rooms and calls; disconnecting a user; `goaway` before shutdown.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
pub mod auth;
mod calls;
pub mod cluster;
pub mod config;
pub mod frame;
pub mod metrics;
pub mod presence;
pub mod rate;
mod remote;
mod rooms;
pub mod signaling;
mod timers;

pub use admin::{CallInfo, Page, RoomInfo, UserCall, UserInfo};
pub use auth::{Claims, TokenError, TokenKeys};
pub use config::{Auth, Config, NamePolicy, TurnAuth};
pub use frame::{OutFrame, Piece, Shared};
pub use metrics::{Counters, LoginOutcome, MessageKind};
pub use signaling::{ConnId, Input, Output, Signaling, Stats};
