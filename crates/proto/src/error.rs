//! Error codes carried by `error` events, and WebSocket close codes.

use serde::{Deserialize, Serialize};

/// Why a request failed. Serialised in kebab-case (`"name-taken"`), stable across versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorCode {
    /// The frame is not valid JSON, or not a JSON object, or a field has the wrong type.
    BadJson,
    /// A binary frame: the protocol uses text frames only.
    BinaryFrame,
    /// The `type` is not one this dialect knows.
    UnknownType,
    /// A required field is missing or a field value is out of range.
    BadRequest,
    /// The request needs a login first.
    NotLoggedIn,
    /// A second login on the same connection.
    AlreadyLoggedIn,
    /// The requested protocol version is not supported.
    UnsupportedProtocol,
    /// The user name breaks the naming rules.
    InvalidName,
    /// The user name is held by another live session.
    NameTaken,
    /// The resume token is unknown or its grace period is over.
    ResumeFailed,
    /// No user of that name is online.
    UnknownPeer,
    /// The target was addressed while disconnected and did not come back in time, or its queue was full.
    Undeliverable,
    /// The frame or one of its payloads is larger than the server accepts.
    TooLarge,
    /// Too many messages: slow down.
    RateLimited,
    /// The callee is in another call or is being called.
    Busy,
    /// The caller is already in a call.
    AlreadyInCall,
    /// No call with that id involves this user in a state that allows the request.
    UnknownCall,
    /// The room name breaks the naming rules.
    InvalidRoom,
    /// The room has reached its member limit.
    RoomFull,
    /// The user is not a member of that room (or the target is not).
    NotInRoom,
    /// The user has joined as many rooms as allowed.
    TooManyRooms,
    /// The request is not available in this dialect.
    NotSupported,
    /// The server only admits logins with a signed token, and none came (in `login` or the upgrade URL).
    AuthRequired,
    /// The token is malformed, or not signed by a key this server knows.
    InvalidToken,
    /// The token was valid once; its `exp` has passed.
    TokenExpired,
    /// The login asks for a name other than the one the token was issued for.
    TokenNameMismatch,
    /// The room has a password and the `join` gave none.
    RoomPasswordRequired,
    /// The `join` gave the wrong room password.
    WrongRoomPassword,
    /// The login token lists the rooms its holder may join, and this room is not among them.
    RoomForbidden,
    /// The server runs in a cluster and cannot reach the cluster's shared state right now; try again shortly.
    Unavailable,
}

impl ErrorCode {
    /// Every code, in declaration order (`code as usize` indexes this), for per-code counters.
    pub const ALL: [ErrorCode; 29] = [
        Self::BadJson,
        Self::BinaryFrame,
        Self::UnknownType,
        Self::BadRequest,
        Self::NotLoggedIn,
        Self::AlreadyLoggedIn,
        Self::UnsupportedProtocol,
        Self::InvalidName,
        Self::NameTaken,
        Self::ResumeFailed,
        Self::UnknownPeer,
        Self::Undeliverable,
        Self::TooLarge,
        Self::RateLimited,
        Self::Busy,
        Self::AlreadyInCall,
        Self::UnknownCall,
        Self::InvalidRoom,
        Self::RoomFull,
        Self::NotInRoom,
        Self::TooManyRooms,
        Self::NotSupported,
        Self::AuthRequired,
        Self::InvalidToken,
        Self::TokenExpired,
        Self::TokenNameMismatch,
        Self::RoomPasswordRequired,
        Self::WrongRoomPassword,
        Self::RoomForbidden,
    ];

    /// Whether the error is the client's own fault (a malformed, oversized or ill-timed request), as opposed to one
    /// caused by the state of other users (an offline peer, a busy callee, a full room). Only the former count
    /// towards closing a misbehaving connection. Bad tokens and wrong room passwords count too, so that guessing on
    /// one connection runs at the strike refill rate (one a second) at most.
    pub fn is_misbehaviour(self) -> bool {
        matches!(
            self,
            Self::BadJson
                | Self::BinaryFrame
                | Self::UnknownType
                | Self::BadRequest
                | Self::NotLoggedIn
                | Self::AlreadyLoggedIn
                | Self::UnsupportedProtocol
                | Self::InvalidName
                | Self::TooLarge
                | Self::RateLimited
                | Self::UnknownCall
                | Self::InvalidRoom
                | Self::NotSupported
                | Self::InvalidToken
                | Self::TokenNameMismatch
                | Self::WrongRoomPassword
        )
    }

    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadJson => "bad-json",
            Self::BinaryFrame => "binary-frame",
            Self::UnknownType => "unknown-type",
            Self::BadRequest => "bad-request",
            Self::NotLoggedIn => "not-logged-in",
            Self::AlreadyLoggedIn => "already-logged-in",
            Self::UnsupportedProtocol => "unsupported-protocol",
            Self::InvalidName => "invalid-name",
            Self::NameTaken => "name-taken",
            Self::ResumeFailed => "resume-failed",
            Self::UnknownPeer => "unknown-peer",
            Self::Undeliverable => "undeliverable",
            Self::TooLarge => "too-large",
            Self::RateLimited => "rate-limited",
            Self::Busy => "busy",
            Self::AlreadyInCall => "already-in-call",
            Self::UnknownCall => "unknown-call",
            Self::InvalidRoom => "invalid-room",
            Self::RoomFull => "room-full",
            Self::NotInRoom => "not-in-room",
            Self::TooManyRooms => "too-many-rooms",
            Self::NotSupported => "not-supported",
            Self::Unavailable => "unavailable",
            Self::AuthRequired => "auth-required",
            Self::InvalidToken => "invalid-token",
            Self::TokenExpired => "token-expired",
            Self::TokenNameMismatch => "token-name-mismatch",
            Self::RoomPasswordRequired => "room-password-required",
            Self::WrongRoomPassword => "wrong-room-password",
            Self::RoomForbidden => "room-forbidden",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// WebSocket close codes the server uses (RFC 6455 section 7.4; 4000-4999 are ours).
pub mod close_code {
    /// Server shutting down; reconnect (and resume) elsewhere or later.
    pub const GOING_AWAY: u16 = 1001;
    /// WebSocket protocol violation by the client.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A text frame that is not UTF-8.
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// The client kept misbehaving (too many errors in a row).
    pub const POLICY_VIOLATION: u16 = 1008;
    /// A frame beyond the hard transport limit.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// Another connection took over this session (resume from elsewhere, or the `replace` name policy).
    pub const REPLACED: u16 = 4001;
    /// The client read too slowly and its outbound queue overflowed.
    pub const SLOW_CONSUMER: u16 = 4002;
    /// No traffic (not even a pong) for two heartbeat intervals.
    pub const HEARTBEAT_TIMEOUT: u16 = 4003;
    /// The client logged out.
    pub const LOGGED_OUT: u16 = 4004;
    /// An administrator disconnected the user (admin API); the session ended, so a resume fails.
    pub const DISCONNECTED_BY_ADMIN: u16 = 4005;
}

#[cfg(test)]
mod tests {
    use super::ErrorCode;

    #[test]
    fn all_lists_every_code_at_its_own_index() {
        for (index, code) in ErrorCode::ALL.iter().enumerate() {
            assert_eq!(*code as usize, index, "{code}");
        }
    }
}
