//! Events the server sends to protocol v1 clients.
//!
//! The types serialise (the server) and deserialise (clients, tests). The relayed payload type `P` is a borrowed
//! [`RawValue`] on the server, which writes the client's SDP or candidate through untouched, and any deserialisable
//! type (e.g. `serde_json::Value`) in a client.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::ErrorCode;

/// A user's presence status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UserStatus {
    /// Online and free.
    Idle,
    /// Calling, being called, or in an accepted call.
    InCall,
}

/// One user in a list or presence delta.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserEntry<'a> {
    /// The user's name (NFC, as they logged in).
    pub name: Cow<'a, str>,
    /// Idle or in a call.
    pub status: UserStatus,
}

/// Limits a client must respect; sent in `welcome`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    /// Largest text frame the server accepts, in bytes; larger ones get `too-large`.
    pub max_message_bytes: usize,
    /// The server pings this often; a client that sends nothing (not even a pong) for two intervals is dropped.
    pub heartbeat_ms: u64,
    /// How long a disconnected session waits for its client to resume.
    pub resume_grace_ms: u64,
    /// How long a call may ring before it ends with `no-answer`.
    pub ring_timeout_ms: u64,
    /// Most members in one room.
    pub max_room_size: usize,
    /// Most rooms one user may be in at once.
    pub max_rooms_per_user: usize,
    /// Sustained messages per second allowed per connection (bursts up to `rateBurst`); 0 means unlimited.
    pub rate_per_second: u32,
    /// Burst size of the rate limit.
    pub rate_burst: u32,
}

/// One entry of `iceServers`, shaped like the browser's `RTCIceServer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    /// `stun:`, `turn:` or `turns:` URLs.
    pub urls: Vec<String>,
    /// TURN user name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// TURN password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// A room and its other members, as sent on `joined` and on resume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomSnapshot<'a> {
    /// The room's name.
    pub room: Cow<'a, str>,
    /// Every member, in the order they joined (the receiver included).
    pub members: Vec<Cow<'a, str>>,
    /// Whether joining needs a password (or a token listing the room); only sent when true.
    #[serde(default, skip_serializing_if = "is_false")]
    pub protected: bool,
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// Where a call stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CallState {
    /// The callee has not answered yet.
    Ringing,
    /// The callee accepted.
    Active,
}

/// The call a resumed session is in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CallSnapshot<'a> {
    /// The call's id.
    pub call_id: Cow<'a, str>,
    /// The other party.
    pub peer: Cow<'a, str>,
    /// Whether this user placed the call.
    pub caller: bool,
    /// Ringing or active.
    pub state: CallState,
}

/// Why a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HangupReason {
    /// The other party hung up.
    Hangup,
    /// The callee rejected the call.
    Rejected,
    /// The caller gave up before an answer.
    Cancelled,
    /// Nobody answered within the ring timeout.
    NoAnswer,
    /// The other party's connection dropped and did not resume within the grace period.
    Disconnected,
}

/// Why the server asks clients to go away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GoawayReason {
    /// The server is shutting down (or restarting).
    Shutdown,
}

/// Why a member left a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LeaveReason {
    /// It sent `leave` or logged out.
    Left,
    /// Its connection dropped and did not resume in time.
    Disconnected,
}

/// A server-to-client message of protocol v1.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
#[allow(missing_docs)]
pub enum Event<'a, P = &'a RawValue> {
    /// First message on a v1 connection.
    Hello { protocol: u32, server: Cow<'a, str> },
    /// Reply to `login` (fresh or resumed).
    #[serde(rename_all = "camelCase")]
    Welcome {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<P>,
        protocol: u32,
        name: Cow<'a, str>,
        resume_token: Cow<'a, str>,
        resumed: bool,
        /// Spliced in by the server from its cached snapshot; never empty on the wire (the user is in it) unless the
        /// client asked for compact presence, which gets `idle` and `inCall` instead.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        users: Vec<UserEntry<'a>>,
        /// Compact presence: online idle users (spliced in like `users`, instead of it).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        idle: Vec<Cow<'a, str>>,
        /// Compact presence: online users in a call.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        in_call: Vec<Cow<'a, str>>,
        limits: Limits,
        ice_servers: Vec<IceServer>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        rooms: Vec<RoomSnapshot<'a>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        call: Option<CallSnapshot<'a>>,
    },
    /// Reply to `users`: everyone online.
    #[serde(rename_all = "camelCase")]
    Users {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<P>,
        /// Spliced in by the server from its cached snapshot.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        users: Vec<UserEntry<'a>>,
        /// Compact presence: online idle users (instead of `users`).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        idle: Vec<Cow<'a, str>>,
        /// Compact presence: online users in a call.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        in_call: Vec<Cow<'a, str>>,
    },
    /// Coalesced presence changes since the previous `presence` event. Full format: `joined`, `changed`, `left`;
    /// compact format: `left`, then `idle` and `inCall` (names whose status is now that, joined or changed).
    #[serde(rename_all = "camelCase")]
    Presence {
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        joined: Vec<UserEntry<'a>>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        left: Vec<Cow<'a, str>>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        changed: Vec<UserEntry<'a>>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        idle: Vec<Cow<'a, str>>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        in_call: Vec<Cow<'a, str>>,
    },
    /// Reply to a request that has nothing else to say (relay with an `id`, `accept`, `logout`, ...).
    Ack { id: P },
    /// Reply to `ping`.
    Pong {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<P>,
    },
    #[serde(rename_all = "camelCase")]
    Offer {
        from: Cow<'a, str>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        room: Option<Cow<'a, str>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        call_id: Option<Cow<'a, str>>,
        sdp: P,
    },
    #[serde(rename_all = "camelCase")]
    Answer {
        from: Cow<'a, str>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        room: Option<Cow<'a, str>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        call_id: Option<Cow<'a, str>>,
        sdp: P,
    },
    #[serde(rename_all = "camelCase")]
    Candidate {
        from: Cow<'a, str>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        room: Option<Cow<'a, str>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        call_id: Option<Cow<'a, str>>,
        candidate: P,
    },
    #[serde(rename_all = "camelCase")]
    EndOfCandidates {
        from: Cow<'a, str>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        room: Option<Cow<'a, str>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        call_id: Option<Cow<'a, str>>,
    },
    /// Reply to `call`: the callee is being rung.
    #[serde(rename_all = "camelCase")]
    Ringing {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<P>,
        call_id: Cow<'a, str>,
        to: Cow<'a, str>,
    },
    /// To the callee: someone is calling.
    #[serde(rename_all = "camelCase")]
    Ring { call_id: Cow<'a, str>, from: Cow<'a, str> },
    /// To the caller: the callee accepted.
    #[serde(rename_all = "camelCase")]
    Accepted { call_id: Cow<'a, str>, from: Cow<'a, str> },
    /// The call ended, for the reason given.
    #[serde(rename_all = "camelCase")]
    Hangup { call_id: Cow<'a, str>, from: Cow<'a, str>, reason: HangupReason },
    /// Reply to `join`.
    Joined {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<P>,
        #[serde(flatten)]
        room: RoomSnapshot<'a>,
    },
    /// Reply to `leave`.
    Left {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<P>,
        room: Cow<'a, str>,
    },
    /// To the other members: someone joined.
    MemberJoined { room: Cow<'a, str>, name: Cow<'a, str> },
    /// To the other members: someone left.
    MemberLeft { room: Cow<'a, str>, name: Cow<'a, str>, reason: LeaveReason },
    /// Fresh ICE servers (new TURN credentials) before the previous ones expire; replaces `iceServers` of `welcome`.
    #[serde(rename_all = "camelCase")]
    IceServers { ice_servers: Vec<IceServer> },
    /// The server is going away: reconnect (and resume) after about `reconnectAfterMs`. The connection stays open
    /// until the client closes it or the server's drain timeout ends it with 1001.
    #[serde(rename_all = "camelCase")]
    Goaway { reason: GoawayReason, reconnect_after_ms: u64 },
    /// A request failed.
    Error {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<P>,
        code: ErrorCode,
        message: Cow<'a, str>,
        /// For `undeliverable`: the addressee.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<Cow<'a, str>>,
    },
}

impl<P: Serialize> Event<'_, P> {
    /// The event as one JSON text frame.
    pub fn to_json(&self) -> Vec<u8> {
        self.to_json_sized(0)
    }

    /// The event as one JSON text frame, for an event carrying about `payload_bytes` of relayed payload: the buffer
    /// is allocated once at the right size instead of doubling its way up to a 3 KB offer.
    pub fn to_json_sized(&self, payload_bytes: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(128 + payload_bytes);
        // Serialising these types into a Vec cannot fail: every key is a string and no Serialize impl errors.
        if serde_json::to_writer(&mut out, self).is_err() {
            out.clear();
        }
        out
    }
}

/// [`Event`] as the server builds it: relayed payloads are borrowed raw JSON.
pub type OutEvent<'a> = Event<'a, &'a RawValue>;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn relay_event_writes_payload_verbatim() {
        let sdp: &RawValue = serde_json::from_str(r#"{"type":"offer", "sdp":"v=0"}"#).unwrap();
        let event: Event<'_> = Event::Offer { from: "alice".into(), room: None, call_id: Some("c1".into()), sdp };
        assert_eq!(
            String::from_utf8(event.to_json()).unwrap(),
            r#"{"type":"offer","from":"alice","callId":"c1","sdp":{"type":"offer", "sdp":"v=0"}}"#
        );
    }

    #[test]
    fn events_round_trip_into_owned_values() {
        let event: Event<'_> = Event::Joined {
            id: None,
            room: RoomSnapshot { room: "r".into(), members: vec!["a".into(), "b".into()], protected: false },
        };
        let json = event.to_json();
        assert_eq!(std::str::from_utf8(&json).unwrap(), r#"{"type":"joined","room":"r","members":["a","b"]}"#);
        let back: Event<'static, Value> = serde_json::from_slice(&json).unwrap();
        assert!(matches!(back, Event::Joined { room, .. } if room.members.len() == 2));
        let goaway: Event<'_> = Event::Goaway { reason: GoawayReason::Shutdown, reconnect_after_ms: 1500 };
        assert_eq!(
            std::str::from_utf8(&goaway.to_json()).unwrap(),
            r#"{"type":"goaway","reason":"shutdown","reconnectAfterMs":1500}"#
        );
        let error: Event<'_> = Event::Error { id: None, code: ErrorCode::NameTaken, message: "taken".into(), to: None };
        assert_eq!(
            std::str::from_utf8(&error.to_json()).unwrap(),
            r#"{"type":"error","code":"name-taken","message":"taken"}"#
        );
    }
}
