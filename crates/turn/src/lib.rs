//! Switchboard's STUN/TURN server logic, sans-IO.
//!
//! Layout:
//! - [`client`]: a blocking STUN/TURN client for tools (the load generator, `switchboard check`).
//! - [`credentials`]: the TURN REST credential scheme (coturn's `use-auth-secret`) and static users.
//! - [`policy`]: which peer addresses a relay may reach.
//! - [`observe`]: authentication counters and the registry of live allocations, for metrics and the admin view.
//! - [`server`]: request handling and allocations of one worker or connection ([`server::TurnServer`]).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod client;
pub mod credentials;
pub mod observe;
pub mod policy;
pub mod server;

pub use credentials::{Credentials, Minted};
pub use policy::PeerPolicy;
