//! WebSocket transport: the handshake, the frame codec, and the task that runs one connection.

pub mod connection;
pub mod deflate;
pub mod frame;
pub mod handshake;
pub mod transport;
