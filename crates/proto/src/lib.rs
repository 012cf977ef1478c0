//! Wire types of Switchboard's signaling protocol, and nothing else.
//!
//! Layout:
//! - [`request`]: what clients send, for both dialects. One flat, borrowing [`request::Envelope`] is parsed per frame
//!   (payloads such as SDP stay raw JSON), then turned into a typed [`request::Request`].
//! - [`event`]: what the server sends to protocol v1 clients.
//! - [`tutorial`]: what the server sends to clients of the classic tutorial dialect.
//! - [`error`]: the typed error codes and the WebSocket close codes.
//! - [`names`]: validation and normalisation of user and room names.
//!
//! The crate is sans-IO and has no opinion about transport: the signaling core and the Rust client both build on it.
// One measured exception, allowed at its call sites: the SSE2 scan of JSON strings in `fast` (see `special_mask_16`).
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod error;
pub mod event;
pub mod fast;
pub mod names;
pub mod relayed;
pub mod request;
pub mod tutorial;

pub use error::{close_code, ErrorCode};
pub use event::{Event, IceServer, Limits, OutEvent, UserEntry, UserStatus};
pub use request::{Dialect, Envelope, JsonText, Parsed, PresenceFormat, RelayKind, Request, Secret};

/// The protocol version this crate speaks; stated in the `hello` event, the first server message of a v1 connection.
pub const PROTOCOL_VERSION: u32 = 1;
