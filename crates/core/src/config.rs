//! Settings of the signaling core. The server fills them from its configuration; tests set them directly.

use std::time::Duration;

use switchboard_proto::{IceServer, Limits, Secret};
use switchboard_turn::Credentials;

use crate::auth::TokenKeys;

/// Who may log in.
#[derive(Debug, Clone, Default)]
pub enum Auth {
    /// Anyone, under any free name (tokens are ignored).
    #[default]
    Open,
    /// Only holders of a login token signed with one of these keys (see [`crate::auth`]).
    Token(TokenKeys),
}

/// What a login with a name that a live session holds does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NamePolicy {
    /// Refuse it with `name-taken` (the default: nobody can steal a name).
    #[default]
    Reject,
    /// End the old session (its connection is closed with 4001) and give the name to the new login.
    Replace,
}

/// How the core hands out TURN credentials (the TURN REST scheme, see `switchboard_turn::credentials`).
#[derive(Debug, Clone)]
pub struct TurnAuth {
    /// The secrets that mint (and the TURN server that verifies).
    pub credentials: Credentials,
    /// How long a minted credential is valid. Users get fresh ones in an `ice-servers` event at 3/4 of it.
    pub ttl: Duration,
    /// The `turn:`/`turns:` URLs the credentials are for.
    pub urls: Vec<String>,
}

/// Settings of [`crate::Signaling`].
#[derive(Debug, Clone)]
pub struct Config {
    /// Name collisions: reject or replace.
    pub name_policy: NamePolicy,
    /// How long a dropped v1 session waits for a resume.
    pub resume_grace: Duration,
    /// How long a call may ring.
    pub ring_timeout: Duration,
    /// How long a new connection may take to log in before it is closed (1008).
    pub login_timeout: Duration,
    /// Presence changes are collected for at least this long and sent as one event.
    pub presence_interval: Duration,
    /// Budget of presence frames per second: with N sessions online, ticks while changes keep coming are N / this
    /// apart, so that a login storm on a full server costs a bounded number of frames; the tick after the changes
    /// stop goes out at once unless presence is more than a tick ahead of the budget (0 turns the budget off).
    pub presence_frames_per_second: u32,
    /// The transport's ping interval; the core only reports it to clients.
    pub heartbeat: Duration,
    /// Largest text frame accepted (`too-large` above).
    pub max_message_bytes: usize,
    /// Largest `sdp` payload relayed.
    pub max_sdp_bytes: usize,
    /// Largest `candidate` payload relayed.
    pub max_candidate_bytes: usize,
    /// Most users presence lists to a client (welcome, `users`, presence events, the tutorial's user list): the
    /// first ones online; later ones are listed as earlier ones leave, and can be called by name meanwhile.
    pub max_presence_users: usize,
    /// Most members per room.
    pub max_room_size: usize,
    /// Most rooms per user.
    pub max_rooms_per_user: usize,
    /// Sustained messages per second per connection; 0 turns the limit off.
    pub rate_per_second: u32,
    /// Burst size of the message rate limit.
    pub rate_burst: u32,
    /// Errors a connection may cause in a burst (refilling one per second) before it is closed with 1008.
    pub strike_burst: u32,
    /// Most messages queued for a session that waits for its resume.
    pub resume_queue_messages: usize,
    /// Most bytes queued for a session that waits for its resume.
    pub resume_queue_bytes: usize,
    /// ICE servers handed to every client in `welcome` as they are (STUN servers, external TURN servers).
    pub ice_servers: Vec<IceServer>,
    /// Short-lived TURN credentials minted for each user and added to its ICE servers.
    pub turn: Option<TurnAuth>,
    /// `name/version` sent in `hello`.
    pub server_id: String,
    /// Who may log in: anyone, or holders of a signed token.
    pub auth: Auth,
    /// Rooms with a fixed password, by name: joining them needs it (or a token listing the room). Names that break the
    /// name rules are ignored (the server validates them first).
    pub room_passwords: Vec<(String, Secret<'static>)>,
    /// Cluster mode: this node's id. None (the default): a single node that shares nothing (see [`crate::cluster`]).
    pub cluster: Option<crate::cluster::NodeId>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            name_policy: NamePolicy::Reject,
            resume_grace: Duration::from_secs(30),
            ring_timeout: Duration::from_secs(30),
            login_timeout: Duration::from_secs(20),
            presence_interval: Duration::from_millis(50),
            presence_frames_per_second: 10_000,
            heartbeat: Duration::from_secs(20),
            max_message_bytes: 64 * 1024,
            max_sdp_bytes: 48 * 1024,
            max_candidate_bytes: 4 * 1024,
            max_presence_users: 10_000,
            max_room_size: 16,
            max_rooms_per_user: 8,
            rate_per_second: 100,
            rate_burst: 200,
            strike_burst: 30,
            resume_queue_messages: 64,
            resume_queue_bytes: 256 * 1024,
            ice_servers: Vec::new(),
            turn: None,
            server_id: concat!("switchboard/", env!("CARGO_PKG_VERSION")).to_owned(),
            auth: Auth::Open,
            room_passwords: Vec::new(),
            cluster: None,
        }
    }
}

impl Config {
    /// The limits as clients see them in `welcome`.
    pub fn limits(&self) -> Limits {
        Limits {
            max_message_bytes: self.max_message_bytes,
            heartbeat_ms: millis(self.heartbeat),
            resume_grace_ms: millis(self.resume_grace),
            ring_timeout_ms: millis(self.ring_timeout),
            max_room_size: self.max_room_size,
            max_rooms_per_user: self.max_rooms_per_user,
            rate_per_second: self.rate_per_second,
            rate_burst: self.rate_burst,
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
