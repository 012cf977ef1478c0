//! Cluster mode: several nodes behind a load balancer share names, presence, calls and rooms.
//!
//! The core never sees the shared store. It states what it needs from it as [`Command`]s (`Output::Cluster`) and
//! learns the answers, and what the other nodes say, from [`Event`]s (`Input::Cluster`). A backend (the Redis one in
//! `crates/cluster`, or a test playing the store) carries them. Without `Config::cluster` the core runs alone, as it
//! always did, and emits neither: a single node pays nothing for cluster mode.
//!
//! Who owns what:
//! - a user belongs to the node its connection is on; that node alone writes its presence, and tells the others
//!   ([`Message::Presence`] once per presence tick, a full [`Message::Sync`] after each (re)connection);
//! - a name is held by one node at a time ([`Command::Claim`], atomic in the store);
//! - a call has one half on each party's node, kept in step by call messages; the caller's node owns the ring timer;
//! - a room's member list lives in the store ([`Command::Join`], atomic: size and password), and each node keeps
//!   the list of the rooms its users are in, kept in step by member messages.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use switchboard_proto::{
    event::{HangupReason, LeaveReason},
    JsonText, RelayKind, UserStatus,
};

/// A node of the cluster; random per process start, so that a restarted node is a new node.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub Arc<str>);

impl Serialize for NodeId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for NodeId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        Ok(Self(Arc::from(text.as_ref())))
    }
}

impl NodeId {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What the core asks of the shared store. Commands are carried out in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Take the name `key` for this node (answered by [`Event::Claimed`]). With `replace`, take it even from another
    /// node (the `replace` name policy), which is then told to end its session with [`Message::Evict`].
    Claim {
        /// Matches the answer to the request.
        ticket: u64,
        /// The name key (case-folded NFC).
        key: Arc<str>,
        /// Take it from its holder.
        replace: bool,
    },
    /// Give the name `key` up, if this node holds it.
    Release {
        /// The name key.
        key: Arc<str>,
    },
    /// After a (re)connection to the store: this node holds exactly these names and room memberships. The store
    /// gets them back if it lost them, forgets what this node no longer holds, and reports names that another node
    /// took meanwhile ([`Event::Lost`]).
    Resync {
        /// Name keys of every local session.
        names: Vec<Arc<str>>,
        /// Rooms with local members.
        rooms: Vec<RoomMembership>,
    },
    /// Enter a room, atomically checking its size and password (answered by [`Event::Joined`]).
    Join {
        /// Matches the answer to the request.
        ticket: u64,
        /// Room key.
        room: Arc<str>,
        /// The room's name as the joiner spelled it, used if the join creates the room.
        room_name: Arc<str>,
        /// The joining user's name.
        member: Arc<str>,
        /// The cluster digest of the password given (hex), if any.
        password: Option<Arc<str>>,
        /// Whether the store checks the password: false when this node already checked a configured password or a
        /// token's `rooms` claim.
        check_password: bool,
        /// Most members.
        max_size: usize,
    },
    /// Leave a room.
    Leave {
        /// Room key.
        room: Arc<str>,
        /// The leaving user's name.
        member: Arc<str>,
    },
    /// Send a message to one node.
    Send {
        /// The addressee.
        node: NodeId,
        /// What.
        message: Message,
    },
    /// Send a message to every other node.
    Broadcast {
        /// What.
        message: Message,
    },
}

impl Command {
    /// The event that tells the core this command could not be carried out (the store is unreachable, or the queue
    /// to it is full); None for commands nobody waits for.
    pub fn failed(self) -> Option<Event> {
        match self {
            Command::Claim { ticket, .. } => Some(Event::Claimed { ticket, outcome: ClaimOutcome::Unavailable }),
            Command::Join { ticket, .. } => Some(Event::Joined { ticket, outcome: JoinOutcome::Unavailable }),
            Command::Send { node, message } => Some(Event::Undelivered { node: Some(node), message }),
            Command::Broadcast { message } => Some(Event::Undelivered { node: None, message }),
            Command::Release { .. } | Command::Resync { .. } | Command::Leave { .. } => None,
        }
    }
}

/// A room and the local users in it, for [`Command::Resync`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomMembership {
    /// Room key.
    pub room: Arc<str>,
    /// Room name as created.
    pub room_name: Arc<str>,
    /// Its cluster password digest.
    pub password: Option<Arc<str>>,
    /// Local members' names.
    pub members: Vec<Arc<str>>,
}

/// What the backend tells the core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The store is reachable (again): the core resynchronises.
    LinkUp,
    /// The store is unreachable: the core keeps serving its local users and refuses what needs the store.
    LinkDown,
    /// A node stopped renewing its lease: its users are gone.
    NodeDown(NodeId),
    /// Answer to [`Command::Claim`].
    Claimed {
        /// The request's ticket.
        ticket: u64,
        /// What happened.
        outcome: ClaimOutcome,
    },
    /// Answer to [`Command::Join`].
    Joined {
        /// The request's ticket.
        ticket: u64,
        /// What happened.
        outcome: JoinOutcome,
    },
    /// Answer to [`Command::Resync`]: names of local sessions that another node holds now.
    Lost {
        /// Name keys.
        names: Vec<Arc<str>>,
    },
    /// Messages from another node, in order (one envelope): one event, not one per message.
    Messages {
        /// The sender.
        from: NodeId,
        /// What it says.
        messages: Vec<Message>,
    },
    /// A message that could not be sent (to `node`, or broadcast when None).
    Undelivered {
        /// The addressee.
        node: Option<NodeId>,
        /// The message.
        message: Message,
    },
}

/// How a [`Command::Claim`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// The name is this node's; `evicted` held it before (replace policy) and has been told to let go.
    Won {
        /// The previous holder, if another node.
        evicted: Option<NodeId>,
    },
    /// Another node holds it.
    Taken,
    /// The store is unreachable.
    Unavailable,
}

/// How a [`Command::Join`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinOutcome {
    /// In: the members in join order (the joiner last), and the room's password digest, if it has one.
    Joined {
        /// Every member, the joiner included.
        members: Vec<Member>,
        /// Whether the room needs a password.
        password: Option<Arc<str>>,
        /// The room's name as created.
        room_name: Arc<str>,
    },
    /// At its size limit.
    Full,
    /// It needs a password and none was given.
    PasswordRequired,
    /// The password is wrong.
    WrongPassword,
    /// The store is unreachable.
    Unavailable,
}

/// A room member somewhere in the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Its node.
    pub node: NodeId,
    /// Its name.
    pub name: String,
}

/// A JSON value carried through untouched (SDP, candidates, request ids).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RawJson(pub Box<RawValue>);

impl PartialEq for RawJson {
    fn eq(&self, other: &Self) -> bool {
        self.0.get() == other.0.get()
    }
}

impl Eq for RawJson {}

impl RawJson {
    pub(crate) fn of(value: &RawValue) -> Self {
        Self(value.to_owned())
    }
}

/// A relayed payload (SDP, candidate): JSON text that the node where it entered the cluster validated, carried as
/// text so that the nodes it passes through do not scan it again (they write it into frames as it is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload(Box<str>);

impl Payload {
    pub(crate) fn of(json: JsonText<'_>) -> Self {
        Self(json.get().into())
    }

    /// JSON text that the caller vouches for: a node of the cluster validated it when it entered.
    pub fn trusted(json: Box<str>) -> Self {
        Self(json)
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Serialize for Payload {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Only the JSON envelope (to nodes of an earlier version) takes this path; it has to validate once more,
        // as serde_json writes text through untouched only as a RawValue.
        let raw = RawValue::from_string(self.0.to_string()).map_err(serde::ser::Error::custom)?;
        raw.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Self(Box::<RawValue>::deserialize(deserializer)?.into()))
    }
}

/// A user's presence as nodes tell each other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presence {
    /// The name as shown.
    pub name: String,
    /// Its status; None: gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<UserStatus>,
}

/// The relayed kinds, as nodes tell each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// `offer`
    Offer,
    /// `answer`
    Answer,
    /// `candidate`
    Candidate,
    /// `end-of-candidates`
    EndOfCandidates,
}

impl From<RelayKind> for Kind {
    fn from(kind: RelayKind) -> Self {
        match kind {
            RelayKind::Offer => Kind::Offer,
            RelayKind::Answer => Kind::Answer,
            RelayKind::Candidate => Kind::Candidate,
            RelayKind::EndOfCandidates => Kind::EndOfCandidates,
        }
    }
}

impl From<Kind> for RelayKind {
    fn from(kind: Kind) -> Self {
        match kind {
            Kind::Offer => RelayKind::Offer,
            Kind::Answer => RelayKind::Answer,
            Kind::Candidate => RelayKind::Candidate,
            Kind::EndOfCandidates => RelayKind::EndOfCandidates,
        }
    }
}

/// A relayed message for a user on another node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Relay {
    /// Sender's name.
    pub from: String,
    /// Target's name key.
    pub to: String,
    /// What.
    pub kind: Kind,
    /// Room as created, when relayed within one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// Passed through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_id: Option<String>,
    /// `sdp` or `candidate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Payload>,
    /// The sender's session on its node, for an `undeliverable` report.
    pub origin: u64,
    /// The request id, for that report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<RawJson>,
}

/// How the callee's node answers an invitation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InviteReply {
    /// The callee is ringing.
    Ringing,
    /// The callee (a tutorial page) took it at once.
    Accepted,
    /// In another call.
    Busy,
    /// Not (or no longer) on that node.
    Unknown,
}

/// A session handed from one node to another, when its client resumes through another node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    /// Its name.
    pub name: String,
    /// Its status.
    pub status: UserStatus,
    /// The rooms it is in, as the handing node knew them.
    pub rooms: Vec<TransferRoom>,
    /// Its call, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call: Option<TransferCall>,
    /// Room keys its login token allows (None: any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_rooms: Option<Vec<String>>,
    /// Frames queued while it was away, in order.
    pub pending: Vec<String>,
}

/// A room of a [`Transfer`]red session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferRoom {
    /// Room key.
    pub key: String,
    /// Room name as created.
    pub name: String,
    /// Its cluster password digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// Its members in join order, the transferred session among them.
    pub members: Vec<Member>,
}

/// The call of a [`Transfer`]red session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferCall {
    /// Call id.
    pub id: String,
    /// The other party's name.
    pub peer: String,
    /// The other party's node.
    pub peer_node: NodeId,
    /// Whether the transferred session placed the call.
    pub caller: bool,
    /// Accepted.
    pub active: bool,
}

/// What nodes tell each other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Message {
    /// Presence changes of the sender's users since its last tick.
    Presence {
        /// Changed users.
        users: Vec<Presence>,
    },
    /// Every user of the sender: replaces what the receiver knew of that node. With `reply`, the receiver answers
    /// with its own.
    Sync {
        /// All of them.
        users: Vec<Presence>,
        /// Whether to answer.
        reply: bool,
    },
    /// A relayed message.
    Relay(Box<Relay>),
    /// A relayed message could not reach its target.
    Undeliverable {
        /// The sender's session.
        origin: u64,
        /// Its request id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RawJson>,
        /// The target's name.
        target: String,
    },
    /// Another node took this name (replace policy): end the session holding it.
    Evict {
        /// Name key.
        key: String,
    },
    /// A call to a user of the receiver.
    Invite {
        /// Call id.
        call: String,
        /// Caller's name.
        from: String,
        /// Callee's name key.
        to: String,
    },
    /// The callee's node answers an [`Message::Invite`].
    InviteReply {
        /// Call id.
        call: String,
        /// The answer.
        reply: InviteReply,
    },
    /// The callee accepted.
    CallAccepted {
        /// Call id.
        call: String,
    },
    /// The other half ended the call.
    CallEnded {
        /// Call id.
        call: String,
        /// Why, as the receiver's party is told.
        reason: HangupReason,
    },
    /// The party of a call moved to another node (resumed there).
    CallMoved {
        /// Call id.
        call: String,
        /// Its new node.
        node: NodeId,
    },
    /// Someone joined a room that users of the receiver are in.
    MemberJoined {
        /// Room key.
        room: String,
        /// The joiner.
        name: String,
        /// The members the joiner's node believes are on the receiver; those that are not answer with
        /// [`Message::MemberLeft`], so that a leave that crossed the join is not missed.
        members: Vec<String>,
    },
    /// Someone left such a room.
    MemberLeft {
        /// Room key.
        room: String,
        /// Who.
        name: String,
        /// Why.
        reason: LeaveReason,
    },
    /// A member of such a room moved to another node (resumed there).
    MemberMoved {
        /// Room key.
        room: String,
        /// Who.
        name: String,
    },
    /// A client resumed through another node with a token of the receiver's: hand the session over.
    ResumeRequest {
        /// The resume token.
        token: String,
        /// Matches the answer.
        ticket: u64,
    },
    /// The session, handed over.
    Resumed {
        /// The request's ticket.
        ticket: u64,
        /// The session.
        session: Box<Transfer>,
    },
    /// No such session (any more).
    ResumeRefused {
        /// The request's ticket.
        ticket: u64,
    },
}

/// What the presence replica knows of a user on another node.
#[derive(Debug, Clone)]
pub(crate) struct RemoteUser {
    pub(crate) name: Arc<str>,
    pub(crate) status: UserStatus,
    pub(crate) node: NodeId,
}
