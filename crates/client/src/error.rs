//! The client's error type.

use std::time::Duration;

use serde_json::Value;
use switchboard_proto::ErrorCode;

/// What went wrong talking to the server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The WebSocket library failed (handshake, protocol, IO).
    #[error("websocket: {0}")]
    WebSocket(#[from] Box<tokio_tungstenite::tungstenite::Error>),
    /// A socket operation failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// A JSON value could not be serialised or parsed.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// Nothing expected arrived in time.
    #[error("timed out after {after:?} waiting for {waiting_for}")]
    Timeout {
        /// How long the wait lasted.
        after: Duration,
        /// What the caller waited for.
        waiting_for: String,
    },
    /// The connection is closed (close frame or end of stream) while something else was expected.
    #[error("connection closed (code {code:?}, reason {reason:?}) while waiting for {waiting_for}")]
    Closed {
        /// The close code the server sent, if it sent a close frame.
        code: Option<u16>,
        /// The close reason.
        reason: String,
        /// What the caller waited for.
        waiting_for: String,
    },
    /// The server answered a request with an `error` event.
    #[error("server error {code}: {message}")]
    Server {
        /// The error code.
        code: ErrorCode,
        /// The server's explanation.
        message: String,
        /// The whole `error` event as received.
        raw: Value,
    },
    /// The server sent something the helper did not expect.
    #[error("unexpected message while waiting for {waiting_for}: {got}")]
    Unexpected {
        /// What arrived, as text.
        got: String,
        /// What the caller waited for.
        waiting_for: String,
    },
    /// A raw WebSocket handshake was refused or malformed.
    #[error("handshake failed: {0}")]
    Handshake(String),
}

impl From<tokio_tungstenite::tungstenite::Error> for Error {
    fn from(e: tokio_tungstenite::tungstenite::Error) -> Self {
        Self::WebSocket(Box::new(e))
    }
}

impl Error {
    /// The server's error code, when this is an [`Error::Server`].
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Server { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The HTTP status of a refused WebSocket upgrade (e.g. 403 for an `Origin` the server does not allow).
    pub fn http_status(&self) -> Option<u16> {
        match self {
            Self::WebSocket(error) => match error.as_ref() {
                tokio_tungstenite::tungstenite::Error::Http(response) => Some(response.status().as_u16()),
                _ => None,
            },
            _ => None,
        }
    }

    /// The close code, when this is an [`Error::Closed`] with a close frame.
    pub fn close_code(&self) -> Option<u16> {
        match self {
            Self::Closed { code, .. } => *code,
            _ => None,
        }
    }
}

/// Result with the client's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
