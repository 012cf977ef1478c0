//! What the core does in cluster mode (see [`crate::cluster`]): names granted by the store, the replica of the
//! other nodes' users, relay to them, and what happens when a node or the store goes away.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use serde_json::value::RawValue;
use switchboard_proto::{
    close_code, event::LeaveReason, names::name_key, Dialect, ErrorCode, JsonText, OutEvent, RelayKind,
};

use crate::calls::{Call, Party};
use crate::cluster::{
    ClaimOutcome, Command, Event, Member, Message, NodeId, Payload, Presence, RawJson, Relay, RemoteUser, Transfer,
    TransferCall, TransferRoom,
};
use crate::rooms::{Room, RoomMember};
use crate::signaling::{relay_frame, ConnId, Login, Origin, Session, SessionId, Signaling};

/// A login that waits for the store to grant its name.
#[derive(Debug)]
struct PendingLogin {
    login: Login,
    id: Option<Box<RawValue>>,
}

/// A resume that waits for another node to hand its session over.
#[derive(Debug)]
struct PendingResume {
    conn: ConnId,
    id: Option<Box<RawValue>>,
    owner: NodeId,
}

/// The cluster side of a [`Signaling`].
#[derive(Debug)]
pub(crate) struct ClusterState {
    pub(crate) node: NodeId,
    /// Whether the store is reachable, as the backend last said.
    pub(crate) link_up: bool,
    /// Users of other nodes, by name key.
    pub(crate) remote: HashMap<Arc<str>, RemoteUser>,
    /// Name keys with a claim in flight from this node.
    pub(crate) claiming: HashSet<Arc<str>>,
    pub(crate) next_ticket: u64,
    logins: HashMap<u64, PendingLogin>,
    pub(crate) joins: HashMap<u64, crate::rooms::PendingJoin>,
    resumes: HashMap<u64, PendingResume>,
    /// Local users whose presence changed since the last tick (key -> name), for the next [`Message::Presence`].
    changed: HashMap<Arc<str>, Arc<str>>,
}

impl ClusterState {
    pub(crate) fn new(node: NodeId) -> Self {
        Self {
            node,
            link_up: false,
            remote: HashMap::new(),
            claiming: HashSet::new(),
            next_ticket: 1,
            logins: HashMap::new(),
            joins: HashMap::new(),
            resumes: HashMap::new(),
            changed: HashMap::new(),
        }
    }

    pub(crate) fn ticket(&mut self) -> u64 {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        ticket
    }
}

impl Signaling {
    /// Notes that a local user came, went or changed status, for the other nodes.
    pub(crate) fn local_presence_changed(&mut self, key: &Arc<str>, name: &Arc<str>) {
        if let Some(cluster) = &mut self.cluster {
            cluster.changed.insert(key.clone(), name.clone());
        }
    }

    /// A resume token; in cluster mode it starts with this node's id, so that any node knows whom to ask for the
    /// session.
    pub(crate) fn new_resume_token(&mut self) -> String {
        let token = self.random_token(18);
        match &self.cluster {
            Some(cluster) => format!("{}.{token}", cluster.node),
            None => token,
        }
    }

    /// The node of the user named `name`, if it is on another node.
    pub(crate) fn remote_node_of(&self, name: &str) -> Option<NodeId> {
        self.cluster.as_ref()?.remote.get(name_key(name).as_ref()).map(|user| user.node.clone())
    }

    /// The shown name of a remote user.
    pub(crate) fn remote_name(&self, key: &str) -> Option<Arc<str>> {
        self.cluster.as_ref()?.remote.get(key).map(|user| user.name.clone())
    }

    /// Whether the store is reachable (always true on a single node).
    pub(crate) fn cluster_up(&self) -> bool {
        self.cluster.as_ref().is_none_or(|c| c.link_up)
    }

    pub(crate) fn cluster_unavailable(&mut self, now: Instant, conn: ConnId, id: Option<&RawValue>) {
        let message = "the cluster's shared state is unreachable; try again shortly";
        self.fail(now, conn, id, ErrorCode::Unavailable, message.into());
    }

    /// Asks the store for the login's name key; the login goes on in [`Self::claimed`].
    pub(crate) fn claim_in_cluster(&mut self, now: Instant, login: Login, id: Option<&RawValue>) {
        let conn = login.conn;
        if !self.cluster_up() {
            return self.cluster_unavailable(now, conn, id);
        }
        let replace = self.config.name_policy == crate::NamePolicy::Replace;
        let Some(cluster) = self.cluster.as_mut() else { return };
        let ticket = cluster.ticket();
        let key = login.key.clone();
        cluster.claiming.insert(key.clone());
        cluster.logins.insert(ticket, PendingLogin { login, id: id.map(RawValue::to_owned) });
        if let Some(state) = self.conns.get_mut(&conn) {
            state.logging_in = true;
        }
        self.command(Command::Claim { ticket, key, replace });
    }

    fn claimed(&mut self, now: Instant, ticket: u64, outcome: ClaimOutcome) {
        let Some(cluster) = self.cluster.as_mut() else { return };
        let Some(PendingLogin { login, id }) = cluster.logins.remove(&ticket) else { return };
        cluster.claiming.remove(&login.key);
        let waiting = self.conns.get_mut(&login.conn).filter(|c| c.logging_in && c.session.is_none());
        let waiting = match waiting {
            Some(state) => {
                state.logging_in = false;
                true
            }
            None => false,
        };
        let id = id.as_deref();
        match outcome {
            ClaimOutcome::Won { evicted } => {
                if let Some(node) = evicted {
                    self.command(Command::Send { node, message: Message::Evict { key: login.key.to_string() } });
                }
                if !waiting || self.names.contains_key(&login.key) {
                    // The connection went away meanwhile: nobody wants the name now.
                    return self.command(Command::Release { key: login.key });
                }
                // The replica may still show the name's previous holder, whose leave has not arrived yet.
                if let Some(previous) = self.cluster.as_mut().and_then(|c| c.remote.remove(&login.key)) {
                    self.presence.left(&login.key, &previous.name, previous.status);
                }
                self.open_session(now, login, id);
            }
            ClaimOutcome::Taken if waiting => {
                self.counters.login(crate::metrics::LoginOutcome::NameTaken);
                let message = format!("{:?} is taken", login.name);
                self.fail(now, login.conn, id, ErrorCode::NameTaken, message.into());
            }
            ClaimOutcome::Unavailable if waiting => self.cluster_unavailable(now, login.conn, id),
            ClaimOutcome::Taken | ClaimOutcome::Unavailable => {}
        }
    }

    /// Processes what the backend says.
    pub(crate) fn handle_cluster(&mut self, now: Instant, event: Event) {
        let Some(cluster) = self.cluster.as_mut() else { return };
        match event {
            Event::LinkUp => {
                cluster.link_up = true;
                let names = self.names.keys().cloned().collect();
                let rooms = self.room_memberships();
                self.command(Command::Resync { names, rooms });
                let users = self.local_users();
                self.command(Command::Broadcast { message: Message::Sync { users, reply: true } });
            }
            Event::LinkDown => cluster.link_up = false,
            Event::NodeDown(node) => self.node_down(now, &node),
            Event::Claimed { ticket, outcome } => self.claimed(now, ticket, outcome),
            Event::Joined { ticket, outcome } => self.joined_in_cluster(now, ticket, outcome),
            Event::Lost { names } => {
                for key in names {
                    self.evict(now, &key, "name taken over on another node");
                }
            }
            Event::Messages { from, messages } => {
                for message in messages {
                    self.on_message(now, &from, message);
                }
            }
            Event::Undelivered { node, message } => self.on_undelivered(now, node, message),
        }
    }

    /// Ends the local session named `key` because another node holds the name now.
    fn evict(&mut self, now: Instant, key: &str, reason: &'static str) {
        let Some(&session) = self.names.get(key) else { return };
        let conn = self.sessions.get(&session).and_then(|s| s.conn);
        self.end_session(now, session, LeaveReason::Disconnected);
        if let Some(conn) = conn {
            self.close(conn, close_code::REPLACED, reason);
        }
    }

    pub(crate) fn local_users(&self) -> Vec<Presence> {
        self.sessions.values().map(|s| Presence { name: s.name.to_string(), status: Some(s.status) }).collect()
    }

    /// Called at each presence tick: tells the other nodes what changed here.
    pub(crate) fn broadcast_local_presence(&mut self) {
        let Some(cluster) = self.cluster.as_mut() else { return };
        if cluster.changed.is_empty() {
            return;
        }
        let changed = std::mem::take(&mut cluster.changed);
        if !cluster.link_up {
            // The Sync after the link comes back tells the others everything.
            return;
        }
        let users = changed
            .into_iter()
            .map(|(key, name)| match self.names.get(&key).and_then(|s| self.sessions.get(s)) {
                Some(session) => Presence { name: session.name.to_string(), status: Some(session.status) },
                None => Presence { name: name.to_string(), status: None },
            })
            .collect();
        self.command(Command::Broadcast { message: Message::Presence { users } });
    }

    fn on_message(&mut self, now: Instant, from: &NodeId, message: Message) {
        if self.cluster.as_ref().is_some_and(|c| c.node == *from) {
            return;
        }
        match message {
            Message::Presence { users } => {
                for user in users {
                    self.apply_remote_presence(from, user);
                }
                self.schedule_flush(now);
            }
            Message::Sync { users, reply } => {
                self.replace_node_users(from, users);
                self.schedule_flush(now);
                if reply {
                    let users = self.local_users();
                    self.command(Command::Send { node: from.clone(), message: Message::Sync { users, reply: false } });
                }
            }
            Message::Relay(relay) => self.receive_relay(from, *relay),
            Message::Undeliverable { origin, id, target } => {
                self.undeliverable(origin, id.as_ref().map(|id| &*id.0), &target)
            }
            Message::Evict { key } => self.evict(now, &key, "name taken over by a new login"),
            Message::Invite { call, from: caller, to } => self.remote_invite(now, from, call, caller, &to),
            Message::InviteReply { call, reply } => self.remote_invite_reply(now, from, &call, reply),
            Message::CallAccepted { call } => self.remote_call_accepted(from, &call),
            Message::CallEnded { call, reason } => self.remote_call_ended(now, from, &call, reason),
            Message::CallMoved { call, node } => self.remote_call_moved(from, &call, node),
            Message::MemberJoined { room, name, members } => self.remote_member_joined(from, &room, &name, members),
            Message::MemberLeft { room, name, reason } => self.remote_member_left(from, &room, &name, reason),
            Message::MemberMoved { room, name } => self.remote_member_moved(from, &room, &name),
            Message::ResumeRequest { token, ticket } => self.resume_requested(now, from, &token, ticket),
            Message::Resumed { ticket, session } => self.resumed_from(now, from, ticket, *session),
            Message::ResumeRefused { ticket } => self.resume_refused(now, ticket),
        }
    }

    fn on_undelivered(&mut self, now: Instant, node: Option<NodeId>, message: Message) {
        match message {
            Message::Relay(relay) => {
                let target = self.remote_name(&relay.to).map_or_else(|| relay.to.clone(), |name| name.to_string());
                self.undeliverable(relay.origin, relay.id.as_ref().map(|id| &*id.0), &target);
            }
            Message::Invite { call, .. } => {
                if let Some(node) = node {
                    self.remote_invite_reply(now, &node, &call, crate::cluster::InviteReply::Unknown);
                }
            }
            Message::ResumeRequest { ticket, .. } => self.resume_refused(now, ticket),
            // Presence and room news are restated by the Sync after the link comes back; call news by the node-down
            // handling if the other node is gone.
            _ => {}
        }
    }

    /// Applies one presence change of a user of `from`.
    fn apply_remote_presence(&mut self, from: &NodeId, user: Presence) {
        let Some(cluster) = self.cluster.as_mut() else { return };
        let key: Arc<str> = Arc::from(name_key(&user.name).as_ref());
        let local = self.names.contains_key(&key);
        match user.status {
            Some(status) => {
                let name: Arc<str> = Arc::from(user.name);
                match cluster.remote.get_mut(&key) {
                    Some(known) => {
                        known.node = from.clone();
                        let old_status = std::mem::replace(&mut known.status, status);
                        let renamed = known.name != name;
                        known.name = name.clone();
                        if !local && renamed {
                            self.presence.joined(&key, &name, status);
                        } else if !local && old_status != status {
                            self.presence.status(&key, &name, old_status, status);
                        }
                    }
                    None => {
                        cluster
                            .remote
                            .insert(key.clone(), RemoteUser { name: name.clone(), status, node: from.clone() });
                        if !local {
                            self.presence.joined(&key, &name, status);
                        }
                    }
                }
            }
            None => {
                if cluster.remote.get(&key).is_some_and(|known| known.node == *from) {
                    if let Some(gone) = cluster.remote.remove(&key) {
                        if !local {
                            self.presence.left(&key, &gone.name, gone.status);
                        }
                    }
                }
            }
        }
    }

    /// Replaces everything known of the users of `from` by `users`.
    fn replace_node_users(&mut self, from: &NodeId, users: Vec<Presence>) {
        let Some(cluster) = self.cluster.as_mut() else { return };
        let current: HashSet<Arc<str>> = users.iter().map(|u| Arc::from(name_key(&u.name).as_ref())).collect();
        let stale: Vec<Arc<str>> = cluster
            .remote
            .iter()
            .filter(|(key, user)| user.node == *from && !current.contains(*key))
            .map(|(key, _)| key.clone())
            .collect();
        for key in stale {
            if let Some(gone) = cluster.remote.remove(&key) {
                if !self.names.contains_key(&key) {
                    self.presence.left(&key, &gone.name, gone.status);
                }
            }
        }
        for user in users.into_iter().filter(|u| u.status.is_some()) {
            self.apply_remote_presence(from, user);
        }
    }

    /// A node is gone: its users leave presence, calls with them end, rooms lose them.
    fn node_down(&mut self, now: Instant, node: &NodeId) {
        let Some(cluster) = self.cluster.as_mut() else { return };
        let gone: Vec<Arc<str>> =
            cluster.remote.iter().filter(|(_, user)| user.node == *node).map(|(key, _)| key.clone()).collect();
        for key in gone {
            if let Some(user) = cluster.remote.remove(&key) {
                if !self.names.contains_key(&key) {
                    self.presence.left(&key, &user.name, user.status);
                }
            }
        }
        self.schedule_flush(now);
        self.calls_lost_node(now, node);
        self.rooms_lost_node(node);
        self.resumes_lost_node(now, node);
    }

    /// Relays to a user of another node.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn relay_remote(
        &mut self,
        now: Instant,
        conn: ConnId,
        session: SessionId,
        id: Option<&RawValue>,
        node: NodeId,
        kind: RelayKind,
        to: &str,
        room: Option<&str>,
        call_id: Option<&str>,
        payload: Option<JsonText<'_>>,
    ) {
        let key = name_key(to);
        let target_name = self.remote_name(&key).unwrap_or_else(|| Arc::from(to));
        let room = match room {
            None => None,
            Some(room) => match self.shared_room_with_remote(session, room, &target_name) {
                Some(room) => Some(room.to_string()),
                None => {
                    let message = format!("you and {to} are not both in room {room:?}");
                    return self.fail(now, conn, id, ErrorCode::NotInRoom, message.into());
                }
            },
        };
        if !self.cluster_up() {
            return self.undeliverable_now(conn, id, &target_name, "the cluster is unreachable");
        }
        let Some(from) = self.sessions.get(&session).map(|s| s.name.to_string()) else { return };
        let relay = Relay {
            from,
            to: key.into_owned(),
            kind: kind.into(),
            room,
            call_id: call_id.map(str::to_owned),
            payload: payload.map(Payload::of),
            origin: session,
            id: id.map(RawJson::of),
        };
        self.command(Command::Send { node, message: Message::Relay(Box::new(relay)) });
        if let Some(id) = id {
            self.send(conn, OutEvent::Ack { id }.to_json());
        }
    }

    /// `undeliverable` at once, for a message that cannot even leave this node.
    pub(crate) fn undeliverable_now(&mut self, conn: ConnId, id: Option<&RawValue>, target: &str, why: &str) {
        let message = format!("{target} is on another node and {why}");
        let error =
            OutEvent::Error { id, code: ErrorCode::Undeliverable, message: message.into(), to: Some(target.into()) };
        self.counters.error(ErrorCode::Undeliverable);
        self.send(conn, error.to_json());
    }

    /// A relayed message from a user of `from` to a user of this node.
    fn receive_relay(&mut self, from: &NodeId, relay: Relay) {
        let id = relay.id.as_ref().map(|id| &*id.0);
        let Some(&target) = self.names.get(relay.to.as_str()) else {
            let origin = Origin::Remote(from, relay.origin, id);
            return self.report_undeliverable(origin, &relay.to);
        };
        let Some(receiver) = self.sessions.get(&target) else { return };
        let payload = relay.payload.as_ref().map(Payload::as_str);
        let frame = relay_frame(
            receiver.dialect,
            &receiver.name,
            &relay.from,
            relay.kind.into(),
            relay.room.as_deref(),
            relay.call_id.as_deref(),
            payload,
        );
        if let Some(frame) = frame {
            self.deliver(target, Bytes::from(frame), Origin::Remote(from, relay.origin, id));
        }
    }
}

// ---- resume through another node ----

impl Signaling {
    /// The node that issued a resume token, if another one.
    pub(crate) fn token_owner(&self, token: &str) -> Option<NodeId> {
        let cluster = self.cluster.as_ref()?;
        let (node, _) = token.split_once('.')?;
        (node != cluster.node.as_str() && !node.is_empty() && node.len() <= 64).then(|| NodeId(Arc::from(node)))
    }

    /// Asks `owner` to hand over the session of `token`; the resume goes on in [`Self::resumed_from`].
    pub(crate) fn resume_from(
        &mut self,
        now: Instant,
        conn: ConnId,
        id: Option<&RawValue>,
        owner: NodeId,
        token: &str,
    ) {
        if !self.cluster_up() {
            return self.cluster_unavailable(now, conn, id);
        }
        let Some(cluster) = self.cluster.as_mut() else { return };
        let ticket = cluster.ticket();
        cluster.resumes.insert(ticket, PendingResume { conn, id: id.map(RawValue::to_owned), owner: owner.clone() });
        if let Some(state) = self.conns.get_mut(&conn) {
            state.logging_in = true;
        }
        let message = Message::ResumeRequest { token: token.to_owned(), ticket };
        self.command(Command::Send { node: owner, message });
    }

    /// Another node's client resumes with a token of this node: the session leaves for `from`, without anyone
    /// seeing it go (it stays online, in its rooms and its call).
    pub(crate) fn resume_requested(&mut self, _now: Instant, from: &NodeId, token: &str, ticket: u64) {
        let Some(me) = self.cluster.as_ref().map(|c| c.node.clone()) else { return };
        let found =
            self.resume_tokens.remove(token).and_then(|session| Some(session).zip(self.sessions.remove(&session)));
        let Some((session, state)) = found else {
            return self.command(Command::Send { node: from.clone(), message: Message::ResumeRefused { ticket } });
        };
        if self.names.get(&state.key) == Some(&session) {
            self.names.remove(&state.key);
            self.ordered_names.remove(&state.key);
        }
        if let Some(conn) = state.conn {
            if let Some(conn_state) = self.conns.get_mut(&conn) {
                conn_state.session = None;
            }
            self.close(conn, close_code::REPLACED, "session resumed on another node");
        }
        let moved = RemoteUser { name: state.name.clone(), status: state.status, node: from.clone() };
        if let Some(cluster) = self.cluster.as_mut() {
            cluster.changed.remove(&state.key);
            cluster.remote.insert(state.key.clone(), moved);
        }
        let call =
            state.call.as_ref().and_then(|call_id| self.hand_over_call(&me, from, session, &state.name, call_id));
        let mut rooms = Vec::new();
        for key in &state.rooms {
            let Some(room) = self.rooms.get_mut(key) else { continue };
            let members = room
                .members
                .iter()
                .filter_map(|member| match member {
                    RoomMember::Local(s) if *s == session => {
                        Some(Member { node: from.clone(), name: state.name.to_string() })
                    }
                    RoomMember::Local(s) => {
                        self.sessions.get(s).map(|s| Member { node: me.clone(), name: s.name.to_string() })
                    }
                    RoomMember::Remote { node, name } => Some(Member { node: node.clone(), name: name.to_string() }),
                })
                .collect();
            for member in &mut room.members {
                if *member == RoomMember::Local(session) {
                    *member = RoomMember::Remote { node: from.clone(), name: state.name.clone() };
                }
            }
            rooms.push(TransferRoom {
                key: key.to_string(),
                name: room.name.to_string(),
                password: room.cluster_password.as_deref().map(str::to_owned),
                members,
            });
            if !room.members.iter().any(|m| matches!(m, RoomMember::Local(_))) {
                self.rooms.remove(key);
                self.ordered_rooms.remove(key);
            }
            self.command(Command::Leave { room: key.clone(), member: state.name.clone() });
        }
        let pending =
            state.pending.iter().filter_map(|p| std::str::from_utf8(&p.frame).ok()).map(str::to_owned).collect();
        let transfer = Transfer {
            name: state.name.to_string(),
            status: state.status,
            rooms,
            call,
            allowed_rooms: state.allowed_rooms.as_ref().map(|rooms| rooms.iter().map(|r| r.to_string()).collect()),
            pending,
        };
        let message = Message::Resumed { ticket, session: Box::new(transfer) };
        self.command(Command::Send { node: from.clone(), message });
    }

    /// This node's half of the call of a session that leaves for `to`.
    fn hand_over_call(
        &mut self,
        me: &NodeId,
        to: &NodeId,
        session: SessionId,
        name: &Arc<str>,
        call_id: &Arc<str>,
    ) -> Option<TransferCall> {
        let call = self.calls.get_mut(call_id)?;
        let caller = call.caller.is(session);
        let (peer, peer_node) = match call.other(session).clone() {
            Party::Local(peer) => {
                // The peer stays here: the moved party becomes remote in this node's half.
                let moved = Party::Remote { node: to.clone(), name: name.clone() };
                if caller {
                    call.caller = moved;
                } else {
                    call.callee = moved;
                }
                (self.sessions.get(&peer)?.name.to_string(), me.clone())
            }
            Party::Remote { node, name } => {
                // Both parties are elsewhere now: this node has no half any more.
                let active = call.active;
                self.remove_call(call_id);
                return Some(TransferCall {
                    id: call_id.to_string(),
                    peer: name.to_string(),
                    peer_node: node,
                    caller,
                    active,
                });
            }
        };
        let active = call.active;
        Some(TransferCall { id: call_id.to_string(), peer, peer_node, caller, active })
    }

    /// `from` handed over the session a client resumes here.
    pub(crate) fn resumed_from(&mut self, now: Instant, from: &NodeId, ticket: u64, transfer: Transfer) {
        let Some(cluster) = self.cluster.as_mut() else { return };
        let me = cluster.node.clone();
        let pending = cluster.resumes.remove(&ticket);
        let waiting = pending.as_ref().and_then(|p| {
            let state = self.conns.get_mut(&p.conn).filter(|c| c.logging_in && c.session.is_none())?;
            state.logging_in = false;
            Some(p.conn)
        });
        let name: Arc<str> = Arc::from(transfer.name.as_str());
        let key: Arc<str> = Arc::from(name_key(&name).as_ref());
        if self.names.contains_key(&key) {
            // Cannot happen while names are unique; refusing keeps this node consistent if it does.
            if let (Some(conn), Some(pending)) = (waiting, &pending) {
                let message = "the session could not be taken over";
                self.fail(now, conn, pending.id.as_deref(), ErrorCode::ResumeFailed, message.into());
            }
            return;
        }
        let session = self.new_session_id();
        let resume_token = self.new_resume_token();
        self.resume_tokens.insert(resume_token.clone(), session);
        let grace_deadline = waiting.is_none().then(|| now + self.config.resume_grace);
        let rooms: Vec<Arc<str>> = transfer.rooms.iter().map(|r| Arc::from(r.key.as_str())).collect();
        let allowed_rooms =
            transfer.allowed_rooms.map(|rooms| rooms.iter().map(|r| Arc::from(r.as_str())).collect::<Vec<Arc<str>>>());
        self.sessions.insert(
            session,
            Session {
                name: name.clone(),
                key: key.clone(),
                dialect: Dialect::V1,
                conn: waiting,
                resume_token: Some(resume_token),
                grace_deadline,
                pending: Default::default(),
                pending_bytes: 0,
                call: None,
                rooms,
                status: transfer.status,
                allowed_rooms,
                since: now,
                last_peer: None,
            },
        );
        self.names.insert(key.clone(), session);
        self.ordered_names.insert(key.clone());
        if let Some(conn) = waiting.and_then(|conn| self.conns.get_mut(&conn)) {
            conn_session(conn, session);
        }
        // Still online all along: the replica entry just moves here, and the others learn the new node from this
        // node's next presence tick.
        if let Some(cluster) = self.cluster.as_mut() {
            cluster.remote.remove(&key);
            let ticket = cluster.ticket();
            self.command(Command::Claim { ticket, key: key.clone(), replace: true });
        }
        self.local_presence_changed(&key, &name);
        self.schedule_flush(now);
        if let Some(call) = transfer.call {
            self.take_over_call(now, &me, from, session, &name, call);
        }
        for room in transfer.rooms {
            self.take_over_room(&me, from, session, &name, room);
        }
        match (waiting, pending) {
            (Some(conn), Some(pending)) => {
                self.counters.login(crate::metrics::LoginOutcome::Resumed);
                self.welcome(now, conn, session, pending.id.as_deref(), true);
                for frame in transfer.pending {
                    self.send(conn, frame.into_bytes());
                }
            }
            _ => {
                if let Some(deadline) = grace_deadline {
                    self.timers.at(deadline, crate::timers::Timer::Grace(session));
                }
            }
        }
        self.schedule_ice_refresh(now, session);
    }

    fn take_over_call(
        &mut self,
        now: Instant,
        me: &NodeId,
        from: &NodeId,
        session: SessionId,
        name: &Arc<str>,
        transfer: TransferCall,
    ) {
        let call_id: Arc<str> = Arc::from(transfer.id.as_str());
        if transfer.peer_node == *me {
            // The peer is here: this node's half names the moved party as remote; it is local now.
            let Some(call) = self.calls.get_mut(&call_id) else { return };
            for party in [&mut call.caller, &mut call.callee] {
                if matches!(party, Party::Remote { name: n, .. } if n == name) {
                    *party = Party::Local(session);
                }
            }
        } else {
            let peer = Party::Remote { node: transfer.peer_node.clone(), name: Arc::from(transfer.peer.as_str()) };
            let (caller, callee) =
                if transfer.caller { (Party::Local(session), peer) } else { (peer, Party::Local(session)) };
            let deadline = now + self.config.ring_timeout;
            self.insert_call(call_id.clone(), Call::new(caller, callee, transfer.active, deadline, now));
            if !transfer.active && transfer.caller {
                // The caller's node keeps the ring timer; the ring starts over from here.
                self.timers.at(deadline, crate::timers::Timer::Ring(call_id.clone()));
            }
            if transfer.peer_node != *from {
                let message = Message::CallMoved { call: call_id.to_string(), node: me.clone() };
                self.command(Command::Send { node: transfer.peer_node, message });
            }
        }
        if let Some(state) = self.sessions.get_mut(&session) {
            state.call = Some(call_id);
        }
    }

    fn take_over_room(
        &mut self,
        me: &NodeId,
        from: &NodeId,
        session: SessionId,
        name: &Arc<str>,
        transfer: TransferRoom,
    ) {
        let key: Arc<str> = Arc::from(transfer.key.as_str());
        let members: Vec<RoomMember> = transfer
            .members
            .iter()
            .filter_map(|member| {
                if member.name == name.as_ref() {
                    return Some(RoomMember::Local(session));
                }
                if member.node == *me {
                    return self.names.get(name_key(&member.name).as_ref()).map(|&s| RoomMember::Local(s));
                }
                Some(RoomMember::Remote { node: member.node.clone(), name: Arc::from(member.name.as_str()) })
            })
            .collect();
        let room = Room {
            name: Arc::from(transfer.name.as_str()),
            members,
            password: self.room_passwords.get(&key).cloned(),
            cluster_password: transfer.password.as_deref().map(Arc::from),
        };
        let nodes: Vec<NodeId> = room
            .members
            .iter()
            .filter_map(|m| match m {
                RoomMember::Remote { node, .. } if node != from => Some(node.clone()),
                _ => None,
            })
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        self.rooms.insert(key.clone(), room);
        self.ordered_rooms.insert(key.clone());
        // The store's entry moves here; no size or password check for a member that is in already.
        if let Some(cluster) = self.cluster.as_mut() {
            let ticket = cluster.ticket();
            let room_name = Arc::from(transfer.name.as_str());
            let password = transfer.password.as_deref().map(Arc::from);
            self.command(Command::Join {
                ticket,
                room: key.clone(),
                room_name,
                member: name.clone(),
                password,
                check_password: false,
                max_size: usize::MAX,
            });
        }
        for node in nodes {
            let message = Message::MemberMoved { room: key.to_string(), name: name.to_string() };
            self.command(Command::Send { node, message });
        }
    }

    /// The owner of a token refused to hand its session over (or could not be reached).
    pub(crate) fn resume_refused(&mut self, now: Instant, ticket: u64) {
        let Some(pending) = self.cluster.as_mut().and_then(|c| c.resumes.remove(&ticket)) else { return };
        let Some(state) = self.conns.get_mut(&pending.conn).filter(|c| c.logging_in && c.session.is_none()) else {
            return;
        };
        state.logging_in = false;
        self.counters.login(crate::metrics::LoginOutcome::ResumeFailed);
        let message = "unknown or expired resume token";
        self.fail(now, pending.conn, pending.id.as_deref(), ErrorCode::ResumeFailed, message.into());
    }

    /// Resumes waiting for a node that is gone fail.
    pub(crate) fn resumes_lost_node(&mut self, now: Instant, node: &NodeId) {
        let Some(cluster) = self.cluster.as_ref() else { return };
        let lost: Vec<u64> = cluster.resumes.iter().filter(|(_, p)| p.owner == *node).map(|(t, _)| *t).collect();
        for ticket in lost {
            self.resume_refused(now, ticket);
        }
    }
}

fn conn_session(conn: &mut crate::signaling::Conn, session: SessionId) {
    conn.session = Some(session);
}
