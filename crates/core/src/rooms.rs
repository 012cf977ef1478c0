//! Rooms for group (mesh) calls: membership, member events, limits, and who may enter.
//!
//! A room may need a password: one from the configuration, or one its first member set when the join created it
//! (that one lasts as long as the room: when the last member leaves, the room and its password are gone). A login
//! token with a `rooms` claim admits to the rooms it lists without their passwords, and to no other room.
//!
//! In cluster mode the member list of a room lives in the shared store, which admits joins atomically (size, and the
//! password the first member set); each node keeps a copy of the rooms its users are in, kept in step by member
//! messages from the other nodes. Token claims and configured passwords are checked by the joiner's node, as on a
//! single node.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use serde_json::value::RawValue;
use switchboard_proto::{
    event::LeaveReason,
    names::{name_key, normalize_name},
    Dialect, ErrorCode, OutEvent,
};

use crate::auth::{cluster_room_digest, PasswordDigest, MAX_ROOM_PASSWORD_BYTES};
use crate::cluster::{Command, JoinOutcome, Message, NodeId, RoomMembership};
use crate::signaling::{ConnId, Origin, SessionId, Signaling};

/// A member of a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RoomMember {
    /// A session of this node.
    Local(SessionId),
    /// A user of another node.
    Remote {
        /// Its node.
        node: NodeId,
        /// Its name.
        name: Arc<str>,
    },
}

/// A room with at least one member (in cluster mode: with at least one member on this node).
#[derive(Debug)]
pub(crate) struct Room {
    pub(crate) name: Arc<str>,
    /// In join order.
    pub(crate) members: Vec<RoomMember>,
    /// What a joiner must know, unless its token lists the room (a configured password, or on a single node the
    /// first member's).
    pub(crate) password: Option<PasswordDigest>,
    /// Cluster mode: the first member's password, as the store keeps and checks it.
    pub(crate) cluster_password: Option<Arc<str>>,
}

impl Room {
    pub(crate) fn has(&self, session: SessionId) -> bool {
        self.members.contains(&RoomMember::Local(session))
    }

    fn locals(&self) -> impl Iterator<Item = SessionId> + '_ {
        self.members.iter().filter_map(|m| match m {
            RoomMember::Local(session) => Some(*session),
            RoomMember::Remote { .. } => None,
        })
    }

    /// The other nodes with members, each once.
    fn nodes(&self) -> Vec<NodeId> {
        let mut nodes: Vec<NodeId> = Vec::new();
        for member in &self.members {
            if let RoomMember::Remote { node, .. } = member {
                if !nodes.contains(node) {
                    nodes.push(node.clone());
                }
            }
        }
        nodes
    }
}

/// A join that waits for the store.
#[derive(Debug)]
pub(crate) struct PendingJoin {
    conn: ConnId,
    session: SessionId,
    id: Option<Box<RawValue>>,
    key: Arc<str>,
    member: Arc<str>,
}

/// What a `join` runs into at the door.
enum Door {
    Open,
    /// Open because the login token lists the room.
    Listed,
    Forbidden,
    PasswordRequired,
    WrongPassword,
}

impl Signaling {
    /// A member's name: a session's, or the one another node gave.
    pub(crate) fn member_name(&self, member: &RoomMember) -> Option<Arc<str>> {
        match member {
            RoomMember::Local(session) => self.sessions.get(session).map(|s| s.name.clone()),
            RoomMember::Remote { name, .. } => Some(name.clone()),
        }
    }

    pub(crate) fn join(
        &mut self,
        now: Instant,
        conn: ConnId,
        session: SessionId,
        id: Option<&RawValue>,
        raw: &str,
        password: Option<&str>,
    ) {
        if self.sessions.get(&session).is_some_and(|s| s.dialect != Dialect::V1) {
            return self.fail(now, conn, id, ErrorCode::NotSupported, "rooms need protocol v1".into());
        }
        let name = match normalize_name(raw) {
            Ok(name) => name,
            Err(error) => return self.fail(now, conn, id, ErrorCode::InvalidRoom, error.to_string().into()),
        };
        let key: Arc<str> = Arc::from(name_key(&name).as_ref());
        let Some(state) = self.sessions.get(&session) else {
            return;
        };
        let member_name = state.name.clone();
        let already_member = state.rooms.contains(&key);
        // An empty password is no password: a form left blank must not protect a room with "".
        let password = password.filter(|p| !p.is_empty());
        if !already_member {
            if password.is_some_and(|p| p.len() > MAX_ROOM_PASSWORD_BYTES) {
                let message = format!("a room password has at most {MAX_ROOM_PASSWORD_BYTES} bytes");
                return self.fail(now, conn, id, ErrorCode::BadRequest, message.into());
            }
            let door = self.door(session, &key, password);
            let (code, message) = match door {
                Door::Open | Door::Listed => (None, String::new()),
                Door::Forbidden => {
                    (Some(ErrorCode::RoomForbidden), format!("your login token does not admit you to room {name:?}"))
                }
                Door::PasswordRequired => {
                    (Some(ErrorCode::RoomPasswordRequired), format!("room {name:?} needs a password"))
                }
                Door::WrongPassword => {
                    (Some(ErrorCode::WrongRoomPassword), format!("wrong password for room {name:?}"))
                }
            };
            if let Some(code) = code {
                return self.fail(now, conn, id, code, message.into());
            }
            let Some(state) = self.sessions.get(&session) else {
                return;
            };
            if state.rooms.len() >= self.config.max_rooms_per_user {
                let message = format!("you are in {} rooms, the most allowed", state.rooms.len());
                return self.fail(now, conn, id, ErrorCode::TooManyRooms, message.into());
            }
            if self.cluster.is_some() {
                // Whoever checked at the door (a token's claim, a configured password) settled it; otherwise the
                // store checks the password the room's first member set.
                let checked = matches!(door, Door::Listed) || self.room_passwords.contains_key(&key);
                let digest = password.filter(|_| !self.room_passwords.contains_key(&key));
                let digest = digest.map(|p| Arc::from(cluster_room_digest(&key, p).as_str()));
                return self.join_in_cluster(now, conn, session, id, key, name.as_str(), member_name, digest, !checked);
            }
            let full = self.rooms.get(&key).is_some_and(|r| r.members.len() >= self.config.max_room_size);
            if full {
                let message = format!("room {name:?} has {} members, the most allowed", self.config.max_room_size);
                return self.fail(now, conn, id, ErrorCode::RoomFull, message.into());
            }
            if !self.rooms.contains_key(&key) {
                // The first joiner's password protects the room, unless the configuration gave it one.
                let password = match self.room_passwords.get(&key) {
                    Some(configured) => Some(configured.clone()),
                    None => password.map(|p| self.password_key.digest(p)),
                };
                let room =
                    Room { name: Arc::from(name.as_str()), members: Vec::new(), password, cluster_password: None };
                self.rooms.insert(key.clone(), room);
                self.ordered_rooms.insert(key.clone());
            }
            let Some(room) = self.rooms.get_mut(&key) else {
                return;
            };
            room.members.push(RoomMember::Local(session));
            let others: Vec<SessionId> = room.locals().filter(|&m| m != session).collect();
            let room_name = room.name.clone();
            if let Some(state) = self.sessions.get_mut(&session) {
                state.rooms.push(key.clone());
            }
            let event = OutEvent::MemberJoined { room: room_name.as_ref().into(), name: member_name.as_ref().into() };
            self.tell_live(&others, Bytes::from(event.to_json()));
        }
        if let Some(room) = self.room_snapshot(&key) {
            let frame = OutEvent::Joined { id, room }.to_json();
            self.send(conn, frame);
        }
    }

    /// Whether `session` may enter the room `key`, giving `password`.
    fn door(&self, session: SessionId, key: &Arc<str>, password: Option<&str>) -> Door {
        match self.sessions.get(&session).and_then(|s| s.allowed_rooms.as_ref()) {
            Some(allowed) if allowed.contains(key) => return Door::Listed,
            Some(_) => return Door::Forbidden,
            None => {}
        }
        let required = match self.rooms.get(key) {
            Some(room) => room.password.as_ref(),
            None => self.room_passwords.get(key),
        };
        match (required, password) {
            (None, _) => Door::Open,
            (Some(_), None) => Door::PasswordRequired,
            (Some(digest), Some(given)) if self.password_key.matches(digest, given) => Door::Open,
            (Some(_), Some(_)) => Door::WrongPassword,
        }
    }

    /// Cluster mode: asks the store to admit `session`; the join goes on in [`Self::joined_in_cluster`].
    #[allow(clippy::too_many_arguments)]
    fn join_in_cluster(
        &mut self,
        now: Instant,
        conn: ConnId,
        session: SessionId,
        id: Option<&RawValue>,
        key: Arc<str>,
        room_name: &str,
        member: Arc<str>,
        password: Option<Arc<str>>,
        check_password: bool,
    ) {
        if !self.cluster_up() {
            return self.cluster_unavailable(now, conn, id);
        }
        let max_size = self.config.max_room_size;
        let Some(cluster) = self.cluster.as_mut() else { return };
        let ticket = cluster.ticket();
        let id = id.map(RawValue::to_owned);
        cluster.joins.insert(ticket, PendingJoin { conn, session, id, key: key.clone(), member: member.clone() });
        let room_name = Arc::from(room_name);
        self.command(Command::Join { ticket, room: key, room_name, member, password, check_password, max_size });
    }

    /// The store answered a join.
    pub(crate) fn joined_in_cluster(&mut self, now: Instant, ticket: u64, outcome: JoinOutcome) {
        let Some(join) = self.cluster.as_mut().and_then(|c| c.joins.remove(&ticket)) else { return };
        let Some(state) = self.sessions.get(&join.session).filter(|s| s.name == join.member) else {
            if matches!(outcome, JoinOutcome::Joined { .. }) {
                // The session ended meanwhile: undo its entry.
                self.command(Command::Leave { room: join.key, member: join.member });
            }
            return;
        };
        let conn = state.conn.filter(|&c| c == join.conn);
        let id = join.id.as_deref();
        let (me, member_name) = match self.cluster.as_ref() {
            Some(cluster) => (cluster.node.clone(), state.name.clone()),
            None => return,
        };
        let (members, room_password, room_name) = match outcome {
            JoinOutcome::Joined { members, password, room_name } => (members, password, room_name),
            failure => {
                let Some(conn) = conn else { return };
                let room = self.rooms.get(&join.key).map_or_else(|| join.key.clone(), |r| r.name.clone());
                let (code, message) = match failure {
                    JoinOutcome::Full => (
                        ErrorCode::RoomFull,
                        format!("room {room:?} has {} members, the most allowed", self.config.max_room_size),
                    ),
                    JoinOutcome::PasswordRequired => {
                        (ErrorCode::RoomPasswordRequired, format!("room {room:?} needs a password"))
                    }
                    JoinOutcome::WrongPassword => {
                        (ErrorCode::WrongRoomPassword, format!("wrong password for room {room:?}"))
                    }
                    _ => return self.cluster_unavailable(now, conn, id),
                };
                return self.fail(now, conn, id, code, message.into());
            }
        };
        let already = state.rooms.contains(&join.key);
        if !already {
            let mut list: Vec<RoomMember> = members
                .iter()
                .filter_map(|m| {
                    if m.node != me {
                        return Some(RoomMember::Remote { node: m.node.clone(), name: Arc::from(m.name.as_str()) });
                    }
                    self.names.get(name_key(&m.name).as_ref()).map(|&s| RoomMember::Local(s))
                })
                .collect();
            // Local members the store did not list (it lost them) stay: the next resync restores them there.
            if let Some(previous) = self.rooms.get(&join.key) {
                for member in previous.locals() {
                    if !list.contains(&RoomMember::Local(member)) {
                        list.push(RoomMember::Local(member));
                    }
                }
            }
            list.retain(|m| *m != RoomMember::Local(join.session));
            list.push(RoomMember::Local(join.session));
            let room = Room {
                name: room_name.clone(),
                members: list,
                password: self.room_passwords.get(&join.key).cloned(),
                cluster_password: room_password,
            };
            let others: Vec<SessionId> = room.locals().filter(|&m| m != join.session).collect();
            let nodes = room.nodes();
            let remote_members: Vec<(NodeId, String)> = room
                .members
                .iter()
                .filter_map(|m| match m {
                    RoomMember::Remote { node, name } => Some((node.clone(), name.to_string())),
                    RoomMember::Local(_) => None,
                })
                .collect();
            self.rooms.insert(join.key.clone(), room);
            self.ordered_rooms.insert(join.key.clone());
            if let Some(state) = self.sessions.get_mut(&join.session) {
                state.rooms.push(join.key.clone());
            }
            let event = OutEvent::MemberJoined { room: room_name.as_ref().into(), name: member_name.as_ref().into() };
            self.tell_live(&others, Bytes::from(event.to_json()));
            for node in nodes {
                let members = remote_members.iter().filter(|(n, _)| *n == node).map(|(_, name)| name.clone()).collect();
                let message =
                    Message::MemberJoined { room: join.key.to_string(), name: member_name.to_string(), members };
                self.command(Command::Send { node, message });
            }
        }
        if let (Some(conn), Some(room)) = (conn, self.room_snapshot(&join.key)) {
            let frame = OutEvent::Joined { id, room }.to_json();
            self.send(conn, frame);
        }
    }

    pub(crate) fn leave(&mut self, now: Instant, conn: ConnId, session: SessionId, id: Option<&RawValue>, raw: &str) {
        let key = name_key(raw);
        let Some(room_name) = self.rooms.get(key.as_ref()).filter(|r| r.has(session)).map(|r| r.name.clone()) else {
            let shown: String = raw.chars().take(32).collect();
            return self.fail(now, conn, id, ErrorCode::NotInRoom, format!("you are not in room {shown:?}").into());
        };
        let key: Arc<str> = Arc::from(key.as_ref());
        self.remove_from_room(session, &key, LeaveReason::Left);
        self.send(conn, OutEvent::Left { id, room: room_name.as_ref().into() }.to_json());
    }

    /// Takes `session` out of the room `key` and tells the other members.
    pub(crate) fn remove_from_room(&mut self, session: SessionId, key: &Arc<str>, reason: LeaveReason) {
        let Some(state) = self.sessions.get_mut(&session) else {
            return;
        };
        state.rooms.retain(|r| r != key);
        let name = state.name.clone();
        let Some(room) = self.rooms.get_mut(key) else {
            return;
        };
        room.members.retain(|m| *m != RoomMember::Local(session));
        let room_name = room.name.clone();
        let others: Vec<SessionId> = room.locals().collect();
        let nodes = room.nodes();
        if others.is_empty() {
            self.rooms.remove(key);
            self.ordered_rooms.remove(key);
        }
        if self.cluster.is_some() {
            self.command(Command::Leave { room: key.clone(), member: name.clone() });
            for node in nodes {
                let message = Message::MemberLeft { room: key.to_string(), name: name.to_string(), reason };
                self.command(Command::Send { node, message });
            }
        }
        if others.is_empty() {
            return;
        }
        let event = OutEvent::MemberLeft { room: room_name.as_ref().into(), name: name.as_ref().into(), reason };
        self.tell_live(&others, Bytes::from(event.to_json()));
    }

    /// Sends `frame` to those of `sessions` that are connected; a resuming session learns the room's state from its
    /// `welcome` instead.
    fn tell_live(&mut self, sessions: &[SessionId], frame: Bytes) {
        for session in sessions {
            if self.sessions.get(session).is_some_and(|s| s.conn.is_some()) {
                self.deliver(*session, frame.clone(), Origin::Nobody);
            }
        }
    }

    /// The local members of room `key`.
    fn local_members(&self, key: &str) -> Vec<SessionId> {
        self.rooms.get(key).map(|room| room.locals().collect()).unwrap_or_default()
    }

    /// A user of `from` joined a room users of this node are in.
    pub(crate) fn remote_member_joined(&mut self, from: &NodeId, key: &str, name: &str, expected: Vec<String>) {
        let Some(room) = self.rooms.get_mut(key) else {
            // None of ours is in it (any more): whoever the joiner's node counted here has left.
            for gone in expected {
                let message = Message::MemberLeft { room: key.to_owned(), name: gone, reason: LeaveReason::Left };
                self.command(Command::Send { node: from.clone(), message });
            }
            return;
        };
        let member = RoomMember::Remote { node: from.clone(), name: Arc::from(name) };
        if room.members.contains(&member) {
            return;
        }
        room.members.push(member);
        let room_name = room.name.clone();
        let here: HashSet<Arc<str>> =
            room.locals().filter_map(|s| self.sessions.get(&s)).map(|s| s.key.clone()).collect();
        for gone in expected.into_iter().filter(|n| !here.contains(name_key(n).as_ref())) {
            let message = Message::MemberLeft { room: key.to_owned(), name: gone, reason: LeaveReason::Left };
            self.command(Command::Send { node: from.clone(), message });
        }
        let event = OutEvent::MemberJoined { room: room_name.as_ref().into(), name: name.into() };
        let locals = self.local_members(key);
        self.tell_live(&locals, Bytes::from(event.to_json()));
    }

    /// A user of `from` left a room users of this node are in.
    pub(crate) fn remote_member_left(&mut self, from: &NodeId, key: &str, name: &str, reason: LeaveReason) {
        let Some(room) = self.rooms.get_mut(key) else { return };
        let before = room.members.len();
        room.members
            .retain(|m| !matches!(m, RoomMember::Remote { node, name: n } if node == from && n.as_ref() == name));
        if room.members.len() == before {
            return;
        }
        let event = OutEvent::MemberLeft { room: room.name.as_ref().into(), name: name.into(), reason };
        let frame = Bytes::from(event.to_json());
        let locals = self.local_members(key);
        self.tell_live(&locals, frame);
    }

    /// A member of a room moved to `from` (it resumed there).
    pub(crate) fn remote_member_moved(&mut self, from: &NodeId, key: &str, name: &str) {
        let Some(room) = self.rooms.get_mut(key) else { return };
        for member in &mut room.members {
            if let RoomMember::Remote { node, name: n } = member {
                if n.as_ref() == name {
                    *node = from.clone();
                }
            }
        }
    }

    /// A node is gone: its users leave every room, as if they had disconnected.
    pub(crate) fn rooms_lost_node(&mut self, node: &NodeId) {
        let keys: Vec<Arc<str>> = self.rooms.keys().cloned().collect();
        for key in keys {
            let Some(room) = self.rooms.get(&key) else { continue };
            let gone: Vec<Arc<str>> = room
                .members
                .iter()
                .filter_map(|m| match m {
                    RoomMember::Remote { node: at, name } if at == node => Some(name.clone()),
                    _ => None,
                })
                .collect();
            for name in gone {
                self.remote_member_left(node, &key, &name, LeaveReason::Disconnected);
            }
        }
    }

    /// The room `room` if `session` is in it with the remote user `target`.
    pub(crate) fn shared_room_with_remote(&self, session: SessionId, room: &str, target: &str) -> Option<Arc<str>> {
        let room = self.rooms.get(name_key(room).as_ref())?;
        let target = name_key(target);
        let shared = room.has(session)
            && room.members.iter().any(|m| matches!(m, RoomMember::Remote { name, .. } if name_key(name) == target));
        shared.then(|| room.name.clone())
    }

    /// Rooms with members here, as the store should have them (see [`Command::Resync`]).
    pub(crate) fn room_memberships(&self) -> Vec<RoomMembership> {
        self.rooms
            .iter()
            .map(|(key, room)| RoomMembership {
                room: key.clone(),
                room_name: room.name.clone(),
                password: room.cluster_password.clone(),
                members: room.locals().filter_map(|s| self.sessions.get(&s)).map(|s| s.name.clone()).collect(),
            })
            .filter(|membership| !membership.members.is_empty())
            .collect()
    }
}
