//! The Switchboard server: configuration, listeners, and the IO around the sans-IO signaling core.
//!
//! Layout:
//! - [`config`]: command line, environment and TOML file, merged into one [`Config`].
//! - [`server`]: binds the listener, runs the accept loop, the timer task and shutdown ([`Server`]).
//! - [`http`]: routes: the page, the WebSocket upgrade, health.
//! - [`ops`]: operator routes (`/readyz`, `/metrics`, the admin API) and their optional separate listener;
//!   [`readiness`], [`metrics`] and [`admin`] behind them.
//! - [`assets`]: the web client and JS SDK from `web/`, embedded in the binary.
//! - [`ws`]: the WebSocket transport: handshake, frame codec, the task that runs one connection.
//! - [`hub`]: the signaling core behind a lock, with the outboxes of all connections and the timer task.
//! - [`outbox`]: the bounded per-connection queue of frames to write.
//! - [`turn`]: the STUN/TURN listeners (UDP workers, TCP, TLS) around `switchboard_turn`.
//! - [`tls`]: the certificate store of HTTPS/WSS and `turns:` (PEM files reloaded on change, or self-signed).
//! - [`limits`]: accept-time limits per client address (connections, attempt rate) and their counters.
//! - [`redirect`]: the plain HTTP listener that redirects to HTTPS.
//! - [`auth`]: the `Origin` allow list, the token of the upgrade URL, auth options.
//! - [`cli`]: subcommands of the binary (`switchboard token`, `switchboard check`).
//! - [`check`]: `switchboard check`, a STUN/TURN test from the client's side.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
pub mod assets;
pub mod auth;
pub mod check;
pub mod cli;
pub mod config;
pub mod http;
pub mod hub;
pub mod limits;
pub mod metrics;
pub mod ops;
pub mod outbox;
pub mod readiness;
pub mod redirect;
pub mod server;
pub mod tls;
pub mod turn;
pub mod ws;

pub use config::Config;
pub use server::Server;
