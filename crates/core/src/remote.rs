//! What the core does in cluster mode (see [`crate::cluster`]): names granted by the store, the replica of the
//! other nodes' users, relay to them, and what happens when a node or the store goes away.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use serde_json::value::RawValue;
use switchboard_proto::{close_code, event::LeaveReason, names::name_key, Dialect, ErrorCode, OutEvent, RelayKind};

use crate::cluster::{ClaimOutcome, Command, Event, Message, NodeId, Presence, RawJson, Relay, RemoteUser};
use crate::signaling::{relay_frame, ConnId, Origin, SessionId, Signaling};

/// A login that waits for the store to grant its name.
#[derive(Debug)]
struct PendingLogin {
    conn: ConnId,
    id: Option<Box<RawValue>>,
    name: Arc<str>,
    key: Arc<str>,
    dialect: Dialect,
    allowed_rooms: Option<Vec<Arc<str>>>,
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

    /// Asks the store for `key`; the login goes on in [`Self::claimed`].
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn claim_in_cluster(
        &mut self,
        now: Instant,
        conn: ConnId,
        id: Option<&RawValue>,
        name: Arc<str>,
        key: Arc<str>,
        dialect: Dialect,
        allowed_rooms: Option<Vec<Arc<str>>>,
    ) {
        if !self.cluster_up() {
            return self.cluster_unavailable(now, conn, id);
        }
        let replace = self.config.name_policy == crate::NamePolicy::Replace;
        let Some(cluster) = self.cluster.as_mut() else { return };
        let ticket = cluster.ticket();
        cluster.claiming.insert(key.clone());
        let id = id.map(RawValue::to_owned);
        cluster.logins.insert(ticket, PendingLogin { conn, id, name, key: key.clone(), dialect, allowed_rooms });
        if let Some(state) = self.conns.get_mut(&conn) {
            state.logging_in = true;
        }
        self.command(Command::Claim { ticket, key, replace });
    }

    fn claimed(&mut self, now: Instant, ticket: u64, outcome: ClaimOutcome) {
        let Some(cluster) = self.cluster.as_mut() else { return };
        let Some(login) = cluster.logins.remove(&ticket) else { return };
        cluster.claiming.remove(&login.key);
        let waiting = self.conns.get_mut(&login.conn).filter(|c| c.logging_in && c.session.is_none());
        let waiting = match waiting {
            Some(state) => {
                state.logging_in = false;
                true
            }
            None => false,
        };
        let id = login.id.as_deref();
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
                self.open_session(now, login.conn, id, login.name, login.key, login.dialect, login.allowed_rooms);
            }
            ClaimOutcome::Taken if waiting => {
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
            Event::Message { from, message } => self.on_message(now, from, message),
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

    fn on_message(&mut self, now: Instant, from: NodeId, message: Message) {
        if self.cluster.as_ref().is_some_and(|c| c.node == from) {
            return;
        }
        match message {
            Message::Presence { users } => {
                for user in users {
                    self.apply_remote_presence(&from, user);
                }
                self.schedule_flush(now);
            }
            Message::Sync { users, reply } => {
                self.replace_node_users(&from, users);
                self.schedule_flush(now);
                if reply {
                    let users = self.local_users();
                    self.command(Command::Send { node: from, message: Message::Sync { users, reply: false } });
                }
            }
            Message::Relay(relay) => self.receive_relay(&from, *relay),
            Message::Undeliverable { origin, id, target } => {
                self.undeliverable(origin, id.as_ref().map(|id| &*id.0), &target)
            }
            Message::Evict { key } => self.evict(now, &key, "name taken over by a new login"),
            Message::Invite { call, from: caller, to } => self.remote_invite(now, &from, call, caller, &to),
            Message::InviteReply { call, reply } => self.remote_invite_reply(now, &from, &call, reply),
            Message::CallAccepted { call } => self.remote_call_accepted(&from, &call),
            Message::CallEnded { call, reason } => self.remote_call_ended(now, &from, &call, reason),
            Message::CallMoved { call, node } => self.remote_call_moved(&from, &call, node),
            Message::MemberJoined { room, name, members } => self.remote_member_joined(&from, &room, &name, members),
            Message::MemberLeft { room, name, reason } => self.remote_member_left(&from, &room, &name, reason),
            Message::MemberMoved { room, name } => self.remote_member_moved(&from, &room, &name),
            Message::ResumeRequest { token, ticket } => self.resume_requested(now, &from, &token, ticket),
            Message::Resumed { ticket, session } => self.resumed_from(now, &from, ticket, *session),
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
        payload: Option<&RawValue>,
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
            payload: payload.map(RawJson::of),
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
        let payload = relay.payload.as_ref().map(|p| &*p.0);
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

// ---- not yet across nodes (filled in by calls.rs / rooms.rs / resume) ----
impl Signaling {
    pub(crate) fn resumes_lost_node(&mut self, _now: Instant, _node: &NodeId) {}
    pub(crate) fn resume_requested(&mut self, _now: Instant, _from: &NodeId, _token: &str, _ticket: u64) {}
    pub(crate) fn resumed_from(
        &mut self,
        _now: Instant,
        _from: &NodeId,
        _ticket: u64,
        _session: crate::cluster::Transfer,
    ) {
    }
    pub(crate) fn resume_refused(&mut self, _now: Instant, _ticket: u64) {}
}
