//! Switchboard's STUN/TURN server logic, sans-IO.
//!
//! Layout:
//! - [`credentials`]: the TURN REST credential scheme (coturn's `use-auth-secret`) and static users.
//! - [`policy`]: which peer addresses a relay may reach.
//! - [`server`]: request handling and allocations of one worker or connection ([`server::TurnServer`]).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod credentials;
pub mod policy;
pub mod server;

pub use credentials::{Credentials, Minted};
pub use policy::PeerPolicy;
