//! An async Rust client of the Switchboard signaling protocol.
//!
//! Switchboard is a WebRTC signaling server (see `docs/protocol.md`). This crate talks to it over a real WebSocket
//! and is used by the server's integration tests and by load generators. It has three layers:
//!
//! - [`Client`]: one WebSocket connection speaking protocol v1. It sends JSON, text or binary frames
//!   ([`Client::send_json`], [`Client::send_text`], [`Client::send_binary`]), receives them as [`Incoming`] values
//!   (a parsed [`switchboard_proto::Event`], raw JSON, or the close frame) and offers waiting helpers that skip
//!   frames a caller does not care about, such as presence deltas ([`Client::expect`], [`Client::expect_type`],
//!   [`Client::expect_error`], [`Client::expect_close`]). Typed convenience requests ([`Client::login`],
//!   [`Client::login_resume`], [`Client::call`], [`Client::join`], ...) wait for the reply that carries their
//!   request `id`, and keep every other frame that arrives meanwhile for the next [`Client::recv`]. The client also
//!   keeps its own view of the lobby from `welcome`, `users` and `presence` ([`Client::presence_view`]).
//! - [`TutorialClient`]: the same socket speaking the classic tutorial dialect (`Login`, `RenderUserList`, `offer`,
//!   `answer`, `ICE` with the tutorial's field names), as an unmodified tutorial page would.
//! - [`raw::RawWebSocket`]: a hand-rolled WebSocket over a plain TCP socket, for what a well-behaved library refuses
//!   to do: invalid UTF-8 in text frames, unmasked frames, oversized frames, and never reading at all (slow
//!   consumers).
//!
//! Every wait has a timeout (the client's default, [`DEFAULT_TIMEOUT`], unless given), so a test built on this crate
//! fails instead of hanging.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod client;
mod error;
mod incoming;
pub mod raw;
mod tutorial;

pub use client::{Client, Welcome, DEFAULT_TIMEOUT};
pub use error::{Error, Result};
pub use incoming::Incoming;
pub use tutorial::TutorialClient;

pub use switchboard_proto as proto;
pub use switchboard_proto::{
    event::{CallSnapshot, CallState, HangupReason, LeaveReason, RoomSnapshot},
    tutorial::TutorialEvent,
    ErrorCode, Event, IceServer, Limits, UserEntry, UserStatus,
};

/// A v1 event whose relayed payloads are owned JSON values, as this client receives them.
pub type OwnedEvent = Event<'static, serde_json::Value>;

/// A tutorial-dialect event whose relayed payloads are owned JSON values.
pub type OwnedTutorialEvent = TutorialEvent<'static, serde_json::Value>;
