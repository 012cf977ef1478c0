//! The signaling state machine: connections, sessions, login and resume, relay and delivery.

use rustc_hash::FxHashMap;
use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use base64::Engine;
use bytes::Bytes;
use rand::{rngs::StdRng, RngCore, SeedableRng};
use serde_json::value::RawValue;
use switchboard_proto::{
    close_code,
    event::{CallSnapshot, CallState, LeaveReason, RoomSnapshot, UserEntry},
    names::{name_key, normalize_name},
    relayed::{self, RelayHeader},
    request::{Envelope, RequestError},
    Dialect, ErrorCode, IceServer, JsonText, OutEvent, PresenceFormat, RelayKind, Request, Secret, UserStatus,
    PROTOCOL_VERSION,
};

use crate::auth::{PasswordDigest, PasswordKey, TokenError, MAX_TOKEN_BYTES};

use crate::calls::Call;
use crate::cluster::NodeId;
use crate::frame::{OutFrame, Shared};
use crate::metrics::{Counters, LoginOutcome, MessageKind};
use crate::presence::{Lobby, PresenceBatch, Snapshot};
use crate::rate::TokenBucket;
use crate::remote::ClusterState;
use crate::rooms::{Room, RoomMember};
use crate::timers::{Timer, Timers};
use crate::{Auth, Config};

/// A transport connection, numbered by the IO layer. Never reused within one [`Signaling`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// Something that happened on a connection.
#[derive(Debug)]
pub enum Input<'a> {
    /// A WebSocket connection was accepted.
    Connected(ConnId),
    /// The connection's upgrade request carried a login token (`/ws?token=...`), for a login that brings none of its
    /// own. Follows `Connected`; ignored unless the server runs in token mode.
    UpgradeToken(ConnId, &'a str),
    /// A complete text message arrived.
    Text(ConnId, &'a str),
    /// A binary message arrived (the protocol has none).
    Binary(ConnId),
    /// A message longer than `max_message_bytes` arrived and was discarded by the transport; its length.
    TooLarge(ConnId, usize),
    /// The connection is gone (closed by either side, or failed).
    Disconnected(ConnId),
    /// Cluster mode: the shared store answered, or another node said something.
    Cluster(crate::cluster::Event),
}

/// Work for the IO layer, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send one text frame.
    Send {
        /// To whom.
        conn: ConnId,
        /// A complete JSON text; shared between connections when the same frame goes to many.
        frame: OutFrame,
    },
    /// Send a close frame with this code after the frames queued before it, then drop the connection. The core has
    /// already forgotten the connection: further input for it is ignored.
    Close {
        /// Which connection.
        conn: ConnId,
        /// WebSocket close code (see `switchboard_proto::close_code`).
        code: u16,
        /// Short reason for the close frame.
        reason: &'static str,
    },
    /// Cluster mode: something for the shared store or another node.
    Cluster(crate::cluster::Command),
}

/// Counters for tests, metrics and the admin view.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Connections the core knows.
    pub connections: usize,
    /// Sessions, including those waiting for a resume.
    pub sessions: usize,
    /// Calls ringing or active.
    pub calls: usize,
    /// Rooms with at least one member.
    pub rooms: usize,
}

pub(crate) type SessionId = u64;

#[derive(Debug)]
pub(crate) struct Conn {
    dialect: Option<Dialect>,
    pub(crate) session: Option<SessionId>,
    rate: Option<TokenBucket>,
    strikes: TokenBucket,
    /// The login token of the upgrade URL.
    token: Option<Secret<'static>>,
    /// Cluster mode: a login waits for the store to grant its name (or another node to hand its session over).
    pub(crate) logging_in: bool,
    /// How this connection's v1 client wants its user lists, as its `login` asked.
    presence: PresenceFormat,
}

impl Conn {
    /// The dialect, once the first frame fixed it.
    pub(crate) fn dialect(&self) -> Option<Dialect> {
        self.dialect
    }
}

/// A message waiting for a dropped session to resume.
#[derive(Debug)]
pub(crate) struct Pending {
    pub(crate) frame: Bytes,
    /// Who sent it and under which request id, to report `undeliverable`.
    origin: PendingOrigin,
}

/// Who to tell when a queued message cannot be delivered.
#[derive(Debug)]
enum PendingOrigin {
    Nobody,
    Local(SessionId, Option<Box<RawValue>>),
    Remote(NodeId, u64, Option<Box<RawValue>>),
}

/// A login whose name passed the checks, on its way to a session (at once, or once the cluster grants the name).
#[derive(Debug)]
pub(crate) struct Login {
    pub(crate) conn: ConnId,
    /// The name as shown.
    pub(crate) name: Arc<str>,
    /// The name key (case-folded NFC).
    pub(crate) key: Arc<str>,
    pub(crate) dialect: Dialect,
    /// Rooms a login token limits the user to, if any.
    pub(crate) allowed_rooms: Option<Vec<Arc<str>>>,
}

#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) name: Arc<str>,
    pub(crate) key: Arc<str>,
    pub(crate) dialect: Dialect,
    pub(crate) conn: Option<ConnId>,
    pub(crate) resume_token: Option<String>,
    pub(crate) grace_deadline: Option<Instant>,
    pub(crate) pending: VecDeque<Pending>,
    pub(crate) pending_bytes: usize,
    pub(crate) call: Option<Arc<str>>,
    pub(crate) rooms: Vec<Arc<str>>,
    pub(crate) status: UserStatus,
    /// The room keys of the login token's `rooms` claim; `None`: any room.
    pub(crate) allowed_rooms: Option<Vec<Arc<str>>>,
    /// When the session was created (login), for the admin view.
    pub(crate) since: Instant,
    /// The local session this one sent to last, so that its next message to the same name skips the name lookup.
    pub(crate) last_peer: Option<LastPeer>,
}

/// A sender's last local peer, valid while [`NameIndex::generation`] is what it was then.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LastPeer {
    pub(crate) session: SessionId,
    pub(crate) generation: u64,
}

/// Name key -> local session. Keyed by names that clients choose, so it keeps the standard seeded SipHash; looking
/// a name up for every relayed message cost 3% of its CPU (callgrind: about 400 instructions), which
/// [`Signaling::peer_named`] saves with a per-sender memo. The generation moves with every insert and removal, so a
/// memo made before any change of the index is never trusted after it. Reads go through `Deref`; there is no
/// `DerefMut`, so nothing changes the map without moving the generation.
#[derive(Debug, Default)]
pub(crate) struct NameIndex {
    map: HashMap<Arc<str>, SessionId>,
    generation: u64,
}

impl NameIndex {
    pub(crate) fn insert(&mut self, key: Arc<str>, session: SessionId) -> Option<SessionId> {
        self.generation += 1;
        self.map.insert(key, session)
    }

    pub(crate) fn remove(&mut self, key: &str) -> Option<SessionId> {
        self.generation += 1;
        self.map.remove(key)
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }
}

impl std::ops::Deref for NameIndex {
    type Target = HashMap<Arc<str>, SessionId>;

    fn deref(&self) -> &Self::Target {
        &self.map
    }
}

/// Who a login may be, once its token (if the server wants one) is checked.
struct Grant<'a> {
    name: Cow<'a, str>,
    allowed_rooms: Option<Vec<Arc<str>>>,
}

/// Where a frame addressed to a session came from, for `undeliverable` reports.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Origin<'a> {
    /// Nobody waits to hear about it.
    Nobody,
    /// A session of this node, and its request id.
    Local(SessionId, Option<&'a RawValue>),
    /// A session of another node, and its request id.
    Remote(&'a NodeId, u64, Option<&'a RawValue>),
}

/// The signaling state machine. See the crate documentation.
#[derive(Debug)]
pub struct Signaling {
    pub(crate) config: Config,
    pub(crate) rng: StdRng,
    // Keyed by ids the server makes, never by client input, so a fast non-keyed hash is safe here (SipHash was
    // about 2% of the CPU of a relayed message); maps keyed by names keep the standard, seeded one.
    pub(crate) conns: FxHashMap<ConnId, Conn>,
    pub(crate) sessions: FxHashMap<SessionId, Session>,
    next_session: SessionId,
    /// Name key -> session.
    pub(crate) names: NameIndex,
    pub(crate) resume_tokens: HashMap<String, SessionId>,
    pub(crate) calls: HashMap<Arc<str>, Call>,
    pub(crate) rooms: HashMap<Arc<str>, Room>,
    /// The keys of `names`, `rooms` and `calls` in order, so that the admin view pages through them without walking
    /// (or sorting) whole maps under the server's lock.
    pub(crate) ordered_names: BTreeSet<Arc<str>>,
    pub(crate) ordered_rooms: BTreeSet<Arc<str>>,
    pub(crate) ordered_calls: BTreeSet<Arc<str>>,
    pub(crate) counters: Counters,
    pub(crate) presence: PresenceBatch,
    pub(crate) snapshot: Snapshot,
    /// Which online users presence shows (bounded by `max_presence_users`).
    lobby: Lobby,
    flush_scheduled: bool,
    /// The frame budget's clock: flushes so far are paid for at `presence_frames_per_second` up to this instant
    /// (None: nothing sent yet). See [`Signaling::presence_flush_allowed_at`].
    presence_paid_until: Option<Instant>,
    /// The latest presence change, to tell a flush while changes keep coming from the one after they stop.
    last_presence_change: Option<Instant>,
    pub(crate) timers: Timers,
    pub(crate) out: VecDeque<Output>,
    /// An instant and the Unix time (seconds) at that instant, to mint TURN credentials and check token expiry
    /// without reading a clock.
    wall_clock: (Option<Instant>, u64),
    /// Digests room passwords.
    pub(crate) password_key: PasswordKey,
    /// Configured room passwords by room key.
    pub(crate) room_passwords: HashMap<Arc<str>, PasswordDigest>,
    /// Cluster mode: what this node knows of the others and what it waits for (None on a single node).
    pub(crate) cluster: Option<Box<ClusterState>>,
}

impl Signaling {
    /// A core with no connections. `seed` feeds the CSPRNG behind resume tokens and call ids; the server passes
    /// OS randomness, tests a constant.
    pub fn new(config: Config, seed: [u8; 32]) -> Self {
        let lobby = Lobby::new(config.max_presence_users);
        let password_key = PasswordKey::derive(&seed);
        let room_passwords = config
            .room_passwords
            .iter()
            .filter_map(|(name, password)| {
                let name = normalize_name(name).ok()?;
                Some((Arc::from(name_key(&name).as_ref()), password_key.digest(password.expose())))
            })
            .collect();
        let cluster = config.cluster.clone().map(|node| Box::new(ClusterState::new(node)));
        Self {
            config,
            rng: StdRng::from_seed(seed),
            conns: FxHashMap::default(),
            sessions: FxHashMap::default(),
            next_session: 1,
            names: NameIndex::default(),
            resume_tokens: HashMap::new(),
            calls: HashMap::new(),
            rooms: HashMap::new(),
            ordered_names: BTreeSet::new(),
            ordered_rooms: BTreeSet::new(),
            ordered_calls: BTreeSet::new(),
            counters: Counters::default(),
            presence: PresenceBatch::default(),
            snapshot: Snapshot::default(),
            lobby,
            flush_scheduled: false,
            presence_paid_until: None,
            last_presence_change: None,
            timers: Timers::default(),
            out: VecDeque::new(),
            wall_clock: (None, 0),
            password_key,
            room_passwords,
            cluster,
        }
    }

    /// Tells the core that `at` is `unix_secs` in Unix time; needed to mint TURN credentials and to check the expiry
    /// of login tokens (without it, the core believes it is 1970 and no token has expired).
    pub fn with_wall_clock(mut self, at: Instant, unix_secs: u64) -> Self {
        self.wall_clock = (Some(at), unix_secs);
        self
    }

    fn unix_time(&self, now: Instant) -> u64 {
        match self.wall_clock {
            (Some(at), unix) => unix.saturating_add(now.saturating_duration_since(at).as_secs()),
            (None, unix) => unix,
        }
    }

    /// The ICE servers for `name` at `now`: the configured ones, plus TURN with freshly minted credentials.
    fn ice_servers_for(&self, name: &str, now: Instant) -> Vec<IceServer> {
        let mut servers = self.config.ice_servers.clone();
        if let Some(turn) = &self.config.turn {
            if let Some(minted) = turn.credentials.mint(name, self.unix_time(now), turn.ttl.as_secs()) {
                servers.push(IceServer {
                    urls: turn.urls.clone(),
                    username: Some(minted.username),
                    credential: Some(minted.password),
                });
            }
        }
        servers
    }

    pub(crate) fn schedule_ice_refresh(&mut self, now: Instant, session: SessionId) {
        if let Some(turn) = &self.config.turn {
            self.timers.at(now + turn.ttl.mul_f64(0.75), Timer::IceRefresh(session));
        }
    }

    /// The settings in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Current counts.
    pub fn stats(&self) -> Stats {
        Stats {
            connections: self.conns.len(),
            sessions: self.sessions.len(),
            calls: self.calls.len(),
            rooms: self.rooms.len(),
        }
    }

    /// Counters since start (messages, errors, logins, call setup times...), for metrics.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The next output, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When [`Self::handle_timeout`] wants to run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// Processes one input.
    pub fn handle_input(&mut self, now: Instant, input: Input<'_>) {
        match input {
            Input::Connected(conn) => {
                let strikes = TokenBucket::new(now, self.config.strike_burst, 1);
                let rate = (self.config.rate_per_second > 0)
                    .then(|| TokenBucket::new(now, self.config.rate_burst, self.config.rate_per_second));
                self.conns.insert(
                    conn,
                    Conn {
                        dialect: None,
                        session: None,
                        rate,
                        strikes,
                        token: None,
                        logging_in: false,
                        presence: PresenceFormat::Full,
                    },
                );
                self.timers.at(now + self.config.login_timeout, Timer::Login(conn.0));
            }
            Input::UpgradeToken(conn, token) => {
                if matches!(self.config.auth, Auth::Token(_)) {
                    if let Some(state) = self.conns.get_mut(&conn) {
                        // An oversized token is kept as an empty one: still "a token was given", refused at login.
                        let token = if token.len() <= MAX_TOKEN_BYTES { token } else { "" };
                        state.token = Some(Secret(Cow::Owned(token.to_owned())));
                    }
                }
            }
            Input::Text(conn, text) => self.handle_text(now, conn, text),
            Input::Binary(conn) => {
                if self.admit(now, conn) {
                    self.counters.received(MessageKind::Binary);
                    self.fail(
                        now,
                        conn,
                        None,
                        ErrorCode::BinaryFrame,
                        "binary frames are not part of the protocol".into(),
                    );
                }
            }
            Input::TooLarge(conn, len) => {
                if self.admit(now, conn) {
                    self.counters.received(MessageKind::TooLarge);
                    self.too_large(now, conn, len);
                }
            }
            Input::Disconnected(conn) => self.handle_disconnect(now, conn),
            Input::Cluster(event) => self.handle_cluster(now, event),
        }
    }

    /// Fires every deadline due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some((deadline, timer)) = self.timers.pop_due(now) {
            match timer {
                Timer::PresenceFlush => self.flush_presence(now),
                Timer::Grace(session) => {
                    let expired = self
                        .sessions
                        .get(&session)
                        .is_some_and(|s| s.conn.is_none() && s.grace_deadline == Some(deadline));
                    if expired {
                        self.end_session(now, session, LeaveReason::Disconnected);
                    }
                }
                Timer::Ring(call_id) => self.ring_timeout(now, &call_id, deadline),
                Timer::IceRefresh(session) => {
                    let Some(state) = self.sessions.get(&session) else { continue };
                    if let Some(conn) = state.conn {
                        let ice_servers = self.ice_servers_for(&state.name, now);
                        self.send(conn, OutEvent::IceServers { ice_servers }.to_json());
                    }
                    // A session waiting for a resume gets fresh ones in its `welcome`.
                    self.schedule_ice_refresh(now, session);
                }
                Timer::Login(conn) => {
                    let conn = ConnId(conn);
                    if self.conns.get(&conn).is_some_and(|c| c.session.is_none()) {
                        self.close(conn, close_code::POLICY_VIOLATION, "no login in time");
                    }
                }
            }
        }
    }

    fn too_large(&mut self, now: Instant, conn: ConnId, len: usize) {
        let message = format!("{len} bytes is over the {} byte limit", self.config.max_message_bytes);
        self.fail(now, conn, None, ErrorCode::TooLarge, message.into());
    }

    /// Checks the connection exists and the message fits its rate limit.
    fn admit(&mut self, now: Instant, conn: ConnId) -> bool {
        let Some(state) = self.conns.get_mut(&conn) else {
            return false;
        };
        let within_rate = state.rate.as_mut().is_none_or(|rate| rate.take(now));
        if !within_rate {
            self.counters.received(MessageKind::RateLimited);
            self.fail(now, conn, None, ErrorCode::RateLimited, "too many messages; slow down".into());
        }
        within_rate
    }

    fn handle_text(&mut self, now: Instant, conn: ConnId, text: &str) {
        if !self.admit(now, conn) {
            return;
        }
        if text.len() > self.config.max_message_bytes {
            self.counters.received(MessageKind::TooLarge);
            return self.too_large(now, conn, text.len());
        }
        let envelope = Envelope::parse(text);
        let tutorial_login = envelope.as_ref().is_ok_and(Envelope::is_tutorial_login);
        let dialect = self.dialect_of(conn, tutorial_login);
        let envelope = match envelope {
            Ok(envelope) => envelope,
            Err(error) => {
                self.counters.received(MessageKind::Invalid);
                return self.reject(now, conn, error);
            }
        };
        let parsed = match envelope.into_request(dialect) {
            Ok(parsed) => parsed,
            Err(error) => {
                self.counters.received(MessageKind::Invalid);
                return self.reject(now, conn, error);
            }
        };
        self.counters.received(message_kind(&parsed.request));
        let id = parsed.id;
        let session = self.conns.get(&conn).and_then(|c| c.session);
        if matches!(parsed.request, Request::Login { .. } | Request::TutorialLogin { .. })
            && self.conns.get(&conn).is_some_and(|c| c.logging_in)
        {
            let message = "a login on this connection is in progress";
            return self.fail(now, conn, id, ErrorCode::AlreadyLoggedIn, message.into());
        }
        match (parsed.request, session) {
            (Request::Login { name, resume, protocol, token, presence }, None) => {
                if let Some(state) = self.conns.get_mut(&conn) {
                    state.presence = presence;
                }
                self.login(now, conn, id, name, resume, protocol, token)
            }
            (Request::TutorialLogin { user_name, token }, None) => {
                self.tutorial_login(now, conn, id, &user_name, token)
            }
            (Request::Login { .. } | Request::TutorialLogin { .. }, Some(_)) => {
                self.fail(now, conn, id, ErrorCode::AlreadyLoggedIn, "this connection is logged in already".into())
            }
            (Request::Ping, _) => self.send(conn, OutEvent::Pong { id }.to_json()),
            (_, None) => self.fail(now, conn, id, ErrorCode::NotLoggedIn, "log in first".into()),
            (Request::Logout, Some(session)) => {
                if let Some(id) = id {
                    self.send(conn, OutEvent::Ack { id }.to_json());
                }
                self.end_session(now, session, LeaveReason::Left);
                self.close(conn, close_code::LOGGED_OUT, "logged out");
            }
            (Request::Users, Some(session)) => {
                let head = OutEvent::Users { id, users: Vec::new(), idle: Vec::new(), in_call: Vec::new() }.to_json();
                let me = self
                    .sessions
                    .get(&session)
                    .filter(|s| !self.snapshot.contains(&s.key))
                    .map(|s| UserEntry { name: s.name.as_ref().into(), status: s.status });
                let frame = self.snapshot.splice_users(head, me, self.presence_format(conn));
                self.send(conn, frame);
            }
            (Request::Relay { kind, to, room, call_id, payload }, Some(session)) => {
                self.relay(now, conn, session, id, kind, &to, room.as_deref(), call_id.as_deref(), payload)
            }
            (Request::Call { to }, Some(session)) => self.call(now, conn, session, id, &to),
            (Request::Accept { call_id }, Some(session)) => self.accept(now, conn, session, id, &call_id),
            (Request::Reject { call_id }, Some(session)) => self.end_ringing(now, conn, session, id, &call_id, false),
            (Request::Cancel { call_id }, Some(session)) => self.end_ringing(now, conn, session, id, &call_id, true),
            (Request::Hangup { call_id }, Some(session)) => self.hangup(now, conn, session, id, &call_id),
            (Request::Join { room, password }, Some(session)) => {
                self.join(now, conn, session, id, &room, password.as_ref().map(Secret::expose))
            }
            (Request::Leave { room }, Some(session)) => self.leave(now, conn, session, id, &room),
        }
    }

    /// The connection's dialect, fixed by its first frame: a tutorial `Login` makes it a tutorial connection,
    /// anything else (even a frame that fails) a v1 connection, which is greeted with `hello` first.
    fn dialect_of(&mut self, conn: ConnId, tutorial_login: bool) -> Dialect {
        let Some(state) = self.conns.get_mut(&conn) else {
            return Dialect::V1;
        };
        if let Some(dialect) = state.dialect {
            return dialect;
        }
        let dialect = if tutorial_login { Dialect::Tutorial } else { Dialect::V1 };
        state.dialect = Some(dialect);
        if dialect == Dialect::V1 {
            let hello = OutEvent::Hello { protocol: PROTOCOL_VERSION, server: self.config.server_id.as_str().into() };
            self.send(conn, hello.to_json());
        }
        dialect
    }

    fn reject(&mut self, now: Instant, conn: ConnId, error: RequestError<'_>) {
        self.fail(now, conn, error.id, error.code, error.message);
    }

    /// Sends an `error` and charges a strike; a connection out of strikes is closed with 1008.
    pub(crate) fn fail(
        &mut self,
        now: Instant,
        conn: ConnId,
        id: Option<&RawValue>,
        code: ErrorCode,
        message: Cow<'_, str>,
    ) {
        self.dialect_of(conn, false);
        let Some(state) = self.conns.get_mut(&conn) else {
            return;
        };
        // Only the client's own mistakes count against it, not errors caused by other users' state.
        let out_of_strikes = code.is_misbehaviour() && !state.strikes.take(now);
        self.counters.error(code);
        self.send(conn, OutEvent::Error { id, code, message, to: None }.to_json());
        if out_of_strikes {
            self.handle_disconnect(now, conn);
            self.push_close(conn, close_code::POLICY_VIOLATION, "too many errors");
        }
    }

    pub(crate) fn send(&mut self, conn: ConnId, frame: impl Into<OutFrame>) {
        self.out.push_back(Output::Send { conn, frame: frame.into() });
    }

    /// Hands a command to the cluster backend.
    pub(crate) fn command(&mut self, command: crate::cluster::Command) {
        self.out.push_back(Output::Cluster(command));
    }

    fn push_close(&mut self, conn: ConnId, code: u16, reason: &'static str) {
        self.out.push_back(Output::Close { conn, code, reason });
    }

    /// Forgets `conn` and tells the IO layer to close it.
    pub(crate) fn close(&mut self, conn: ConnId, code: u16, reason: &'static str) {
        self.conns.remove(&conn);
        self.push_close(conn, code, reason);
    }

    /// Delivers `frame` to a session: now if it is connected, queued if it waits for a resume, otherwise (queue
    /// full) reported back to its origin as `undeliverable`.
    pub(crate) fn deliver(&mut self, session: SessionId, frame: Bytes, origin: Origin<'_>) -> bool {
        let Some(target) = self.sessions.get_mut(&session) else {
            return false;
        };
        if let Some(conn) = target.conn {
            self.send(conn, frame);
            return true;
        }
        let fits = target.pending.len() < self.config.resume_queue_messages
            && target.pending_bytes + frame.len() <= self.config.resume_queue_bytes;
        if fits {
            target.pending_bytes += frame.len();
            let origin = match origin {
                Origin::Nobody => PendingOrigin::Nobody,
                Origin::Local(session, id) => PendingOrigin::Local(session, id.map(RawValue::to_owned)),
                Origin::Remote(node, session, id) => {
                    PendingOrigin::Remote(node.clone(), session, id.map(RawValue::to_owned))
                }
            };
            target.pending.push_back(Pending { frame, origin });
            return true;
        }
        self.counters.resume_queue_drops += 1;
        let name = target.name.clone();
        self.report_undeliverable(origin, &name);
        false
    }

    /// Tells the sender of a message that it could not reach `target`.
    pub(crate) fn report_undeliverable(&mut self, origin: Origin<'_>, target: &str) {
        match origin {
            Origin::Nobody => {}
            Origin::Local(sender, id) => self.undeliverable(sender, id, target),
            Origin::Remote(node, origin, id) => {
                let message = crate::cluster::Message::Undeliverable {
                    origin,
                    id: id.map(crate::cluster::RawJson::of),
                    target: target.to_owned(),
                };
                self.command(crate::cluster::Command::Send { node: node.clone(), message });
            }
        }
    }

    pub(crate) fn undeliverable(&mut self, sender: SessionId, id: Option<&RawValue>, target: &str) {
        let Some(conn) = self.sessions.get(&sender).and_then(|s| s.conn) else {
            return;
        };
        let message = format!("{target} disconnected and did not come back in time");
        let error =
            OutEvent::Error { id, code: ErrorCode::Undeliverable, message: message.into(), to: Some(target.into()) };
        self.counters.error(ErrorCode::Undeliverable);
        self.send(conn, error.to_json());
    }

    pub(crate) fn session_by_name(&self, name: &str) -> Option<SessionId> {
        self.names.get(name_key(name).as_ref()).copied()
    }

    /// The local session named `to`, for a message from `sender`: a sender's messages nearly all go to one peer, so
    /// the peer it sent to last is checked first (its key against `to`'s) while the name index is unchanged.
    fn peer_named(&mut self, sender: SessionId, to: &str) -> Option<SessionId> {
        let generation = self.names.generation();
        let remembered = self.sessions.get(&sender).and_then(|s| s.last_peer).filter(|m| m.generation == generation);
        if let Some(peer) = remembered {
            // The name as the peer wrote it is what senders nearly always write: a byte compare before folding.
            if self.sessions.get(&peer.session).is_some_and(|p| *p.name == *to || *p.key == *name_key(to)) {
                return Some(peer.session);
            }
        }
        let peer = self.session_by_name(to)?;
        if let Some(state) = self.sessions.get_mut(&sender) {
            state.last_peer = Some(LastPeer { session: peer, generation });
        }
        Some(peer)
    }

    /// A fresh session id.
    pub(crate) fn new_session_id(&mut self) -> SessionId {
        let session = self.next_session;
        self.next_session += 1;
        session
    }

    pub(crate) fn random_token(&mut self, bytes: usize) -> String {
        let mut buf = [0u8; 32];
        let len = bytes.min(buf.len());
        self.rng.fill_bytes(&mut buf[..len]);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&buf[..len])
    }

    pub(crate) fn random_id(&mut self) -> Arc<str> {
        Arc::from(format!("{:016x}", self.rng.next_u64()))
    }

    // ---- login, resume, logout ----

    #[allow(clippy::too_many_arguments)]
    fn login(
        &mut self,
        now: Instant,
        conn: ConnId,
        id: Option<&RawValue>,
        name: Option<Cow<'_, str>>,
        resume: Option<Cow<'_, str>>,
        protocol: Option<u32>,
        token: Option<Secret<'_>>,
    ) {
        if protocol.is_some_and(|p| p != PROTOCOL_VERSION) {
            let message = format!("this server speaks protocol {PROTOCOL_VERSION}");
            self.counters.login(LoginOutcome::UnsupportedProtocol);
            return self.fail(now, conn, id, ErrorCode::UnsupportedProtocol, message.into());
        }
        // The resume token was handed out after the login was authenticated, and is as good as that login: a session
        // comes back without a fresh login token (which may well have expired meanwhile).
        if let Some(token) = resume {
            return self.resume(now, conn, id, &token);
        }
        let Some(grant) = self.authenticate(now, conn, id, name, token.as_ref()) else {
            return;
        };
        self.begin_session(now, conn, id, &grant.name, Dialect::V1, grant.allowed_rooms);
    }

    fn tutorial_login(
        &mut self,
        now: Instant,
        conn: ConnId,
        id: Option<&RawValue>,
        user_name: &str,
        token: Option<Secret<'_>>,
    ) {
        let Some(grant) = self.authenticate(now, conn, id, Some(Cow::Borrowed(user_name)), token.as_ref()) else {
            return;
        };
        self.begin_session(now, conn, id, &grant.name, Dialect::Tutorial, grant.allowed_rooms);
    }

    /// Decides under which name a login may proceed: in open mode the name it asks for; in token mode the token's
    /// `sub` (from the login message, else from the upgrade URL), which a requested name must match
    /// (case-insensitively, as names do). Sends the error and returns `None` otherwise.
    fn authenticate<'a>(
        &mut self,
        now: Instant,
        conn: ConnId,
        id: Option<&RawValue>,
        requested: Option<Cow<'a, str>>,
        token: Option<&Secret<'_>>,
    ) -> Option<Grant<'a>> {
        let Auth::Token(keys) = &self.config.auth else {
            let Some(name) = requested else {
                self.fail(now, conn, id, ErrorCode::BadRequest, "`login` needs the field `name`".into());
                return None;
            };
            return Some(Grant { name, allowed_rooms: None });
        };
        let token = token.or_else(|| self.conns.get(&conn).and_then(|c| c.token.as_ref()));
        let verdict = token.map(|token| keys.verify(token.expose(), self.unix_time(now)));
        let claims = match verdict {
            Some(Ok(claims)) => claims,
            None => {
                let message = "this server admits logins with a token only";
                self.counters.login(LoginOutcome::AuthRequired);
                self.fail(now, conn, id, ErrorCode::AuthRequired, message.into());
                return None;
            }
            Some(Err(error)) => {
                let (code, outcome) = match error {
                    TokenError::Invalid => (ErrorCode::InvalidToken, LoginOutcome::InvalidToken),
                    TokenError::Expired => (ErrorCode::TokenExpired, LoginOutcome::TokenExpired),
                };
                self.counters.login(outcome);
                self.fail(now, conn, id, code, error.to_string().into());
                return None;
            }
        };
        if requested.is_some_and(|name| name_key(&name) != name_key(&claims.sub)) {
            let message = "the token was issued for another name";
            self.counters.login(LoginOutcome::TokenNameMismatch);
            self.fail(now, conn, id, ErrorCode::TokenNameMismatch, message.into());
            return None;
        }
        let allowed_rooms = claims.rooms.map(|rooms| {
            rooms
                .iter()
                .filter_map(|room| normalize_name(room).ok())
                .map(|room| Arc::from(name_key(&room).as_ref()))
                .collect()
        });
        Some(Grant { name: Cow::Owned(claims.sub), allowed_rooms })
    }

    /// Validates the name, applies the name policy and opens the session: at once on a single node, once the store
    /// grants the name in cluster mode.
    fn begin_session(
        &mut self,
        now: Instant,
        conn: ConnId,
        id: Option<&RawValue>,
        raw: &str,
        dialect: Dialect,
        allowed_rooms: Option<Vec<Arc<str>>>,
    ) {
        let name = match normalize_name(raw) {
            Ok(name) => name,
            Err(error) => {
                self.counters.login(LoginOutcome::InvalidName);
                return self.fail(now, conn, id, ErrorCode::InvalidName, error.to_string().into());
            }
        };
        let key: Arc<str> = Arc::from(name_key(&name).as_ref());
        if self.cluster.as_ref().is_some_and(|c| c.claiming.contains(&key)) {
            self.counters.login(LoginOutcome::NameTaken);
            return self.fail(now, conn, id, ErrorCode::NameTaken, format!("{name:?} is taken").into());
        }
        if let Some(&holder) = self.names.get(&key) {
            match self.config.name_policy {
                crate::NamePolicy::Reject => {
                    let message = format!("{name:?} is taken");
                    self.counters.login(LoginOutcome::NameTaken);
                    return self.fail(now, conn, id, ErrorCode::NameTaken, message.into());
                }
                crate::NamePolicy::Replace => {
                    let old_conn = self.sessions.get(&holder).and_then(|s| s.conn);
                    self.end_session(now, holder, LeaveReason::Disconnected);
                    if let Some(old_conn) = old_conn {
                        self.close(old_conn, close_code::REPLACED, "name taken over by a new login");
                    }
                }
            }
        }
        let login = Login { conn, name: Arc::from(name), key, dialect, allowed_rooms };
        if self.cluster.is_some() {
            return self.claim_in_cluster(now, login, id);
        }
        self.open_session(now, login, id);
    }

    /// Creates the session of a login whose name is free, and greets it.
    pub(crate) fn open_session(&mut self, now: Instant, login: Login, id: Option<&RawValue>) -> SessionId {
        let Login { conn, name, key, dialect, allowed_rooms } = login;
        let session = self.new_session_id();
        let resume_token = (dialect == Dialect::V1).then(|| self.new_resume_token());
        if let Some(token) = &resume_token {
            self.resume_tokens.insert(token.clone(), session);
        }
        self.names.insert(key.clone(), session);
        self.ordered_names.insert(key.clone());
        self.counters.login(LoginOutcome::Ok);
        self.sessions.insert(
            session,
            Session {
                name: name.clone(),
                key: key.clone(),
                dialect,
                conn: Some(conn),
                resume_token,
                grace_deadline: None,
                pending: VecDeque::new(),
                pending_bytes: 0,
                call: None,
                rooms: Vec::new(),
                status: UserStatus::Idle,
                allowed_rooms,
                since: now,
                last_peer: None,
            },
        );
        if let Some(state) = self.conns.get_mut(&conn) {
            state.session = Some(session);
            // Logged in: the URL's token has served its purpose and is not kept around.
            state.token = None;
        }
        if self.lobby.admit(&key) {
            self.presence.joined(&key, &name, UserStatus::Idle);
        }
        self.local_presence_changed(&key, &name);
        self.schedule_flush(now);
        match dialect {
            Dialect::V1 => {
                self.welcome(now, conn, session, id, false);
                self.schedule_ice_refresh(now, session);
            }
            Dialect::Tutorial => {
                let extra = (!self.snapshot.contains(&key)).then_some(name.as_ref());
                let frame = self.snapshot.render_user_list(extra);
                self.send(conn, frame);
            }
        }
        session
    }

    fn resume(&mut self, now: Instant, conn: ConnId, id: Option<&RawValue>, token: &str) {
        let Some(session) = self.resume_tokens.remove(token).filter(|s| self.sessions.contains_key(s)) else {
            if let Some(owner) = self.token_owner(token) {
                // Issued by another node of the cluster: that node hands the session over.
                return self.resume_from(now, conn, id, owner, token);
            }
            self.counters.login(LoginOutcome::ResumeFailed);
            return self.fail(now, conn, id, ErrorCode::ResumeFailed, "unknown or expired resume token".into());
        };
        let new_token = self.new_resume_token();
        self.resume_tokens.insert(new_token.clone(), session);
        self.counters.login(LoginOutcome::Resumed);
        let Some(state) = self.sessions.get_mut(&session) else {
            return;
        };
        let old_conn = state.conn.replace(conn);
        state.grace_deadline = None;
        state.resume_token = Some(new_token);
        let pending = std::mem::take(&mut state.pending);
        state.pending_bytes = 0;
        if let Some(old_conn) = old_conn {
            self.close(old_conn, close_code::REPLACED, "session resumed on another connection");
        }
        if let Some(state) = self.conns.get_mut(&conn) {
            state.session = Some(session);
        }
        self.welcome(now, conn, session, id, true);
        for message in pending {
            self.send(conn, message.frame);
        }
    }

    pub(crate) fn welcome(
        &mut self,
        now: Instant,
        conn: ConnId,
        session: SessionId,
        id: Option<&RawValue>,
        resumed: bool,
    ) {
        let Some(state) = self.sessions.get(&session) else {
            return;
        };
        let rooms = state.rooms.iter().filter_map(|key| self.room_snapshot(key)).collect();
        let call = state.call.as_ref().and_then(|call_id| {
            let call = self.calls.get(call_id)?;
            let caller = call.caller.is(session);
            let peer = self.party_name(call.other(session))?;
            Some(CallSnapshot {
                call_id: call_id.as_ref().into(),
                peer: peer.to_string().into(),
                caller,
                state: if call.active { CallState::Active } else { CallState::Ringing },
            })
        });
        let head = OutEvent::Welcome {
            id,
            protocol: PROTOCOL_VERSION,
            name: state.name.as_ref().into(),
            resume_token: state.resume_token.as_deref().unwrap_or_default().into(),
            resumed,
            users: Vec::new(),
            idle: Vec::new(),
            in_call: Vec::new(),
            limits: self.config.limits(),
            ice_servers: self.ice_servers_for(&state.name, now),
            rooms,
            call,
        }
        .to_json();
        // The snapshot is as of the last tick: a user who logged in since is added here.
        let me = (!self.snapshot.contains(&state.key))
            .then(|| UserEntry { name: state.name.as_ref().into(), status: state.status });
        let frame = self.snapshot.splice_users(head, me, self.presence_format(conn));
        self.send(conn, frame);
    }

    fn presence_format(&self, conn: ConnId) -> PresenceFormat {
        self.conns.get(&conn).map_or(PresenceFormat::Full, |c| c.presence)
    }

    fn handle_disconnect(&mut self, now: Instant, conn: ConnId) {
        let Some(state) = self.conns.remove(&conn) else {
            return;
        };
        let Some(session) = state.session else {
            return;
        };
        let Some(target) = self.sessions.get_mut(&session) else {
            return;
        };
        if target.conn != Some(conn) {
            return;
        }
        target.conn = None;
        if target.dialect == Dialect::Tutorial {
            // The tutorial has no resume: closing the page is leaving.
            self.end_session(now, session, LeaveReason::Disconnected);
        } else {
            let deadline = now + self.config.resume_grace;
            target.grace_deadline = Some(deadline);
            self.timers.at(deadline, Timer::Grace(session));
        }
    }

    /// Ends a session for good: its call, rooms, name, token and queued messages. Does not close its connection.
    pub(crate) fn end_session(&mut self, now: Instant, session: SessionId, reason: LeaveReason) {
        let Some(state) = self.sessions.get(&session) else {
            return;
        };
        if let Some(call_id) = state.call.clone() {
            let hangup_reason = match reason {
                LeaveReason::Left => switchboard_proto::event::HangupReason::Hangup,
                LeaveReason::Disconnected => switchboard_proto::event::HangupReason::Disconnected,
            };
            self.end_call(now, &call_id, session, hangup_reason);
        }
        let rooms = self.sessions.get(&session).map(|s| s.rooms.clone()).unwrap_or_default();
        for room in rooms {
            self.remove_from_room(session, &room, reason);
        }
        let Some(state) = self.sessions.remove(&session) else {
            return;
        };
        if self.names.get(&state.key) == Some(&session) {
            self.names.remove(&state.key);
            self.ordered_names.remove(&state.key);
        }
        if let Some(token) = &state.resume_token {
            self.resume_tokens.remove(token);
        }
        if let Some(conn) = state.conn {
            if let Some(conn_state) = self.conns.get_mut(&conn) {
                conn_state.session = None;
            }
        }
        self.counters.resume_queue_drops += state.pending.len() as u64;
        for message in state.pending {
            let origin = match &message.origin {
                PendingOrigin::Nobody => Origin::Nobody,
                PendingOrigin::Local(sender, id) => Origin::Local(*sender, id.as_deref()),
                PendingOrigin::Remote(node, sender, id) => Origin::Remote(node, *sender, id.as_deref()),
            };
            self.report_undeliverable(origin, &state.name);
        }
        if self.lobby.remove(&state.key) {
            self.presence.left(&state.key, &state.name, state.status);
            // Someone listed left: the longest-waiting unlisted user takes the place.
            if let Some(promoted) = self.lobby.promote() {
                if let Some(user) = self.names.get(&promoted).and_then(|session| self.sessions.get(session)) {
                    self.presence.joined(&user.key, &user.name, user.status);
                }
            }
        }
        self.local_presence_changed(&state.key, &state.name);
        self.schedule_flush(now);
        if self.cluster.as_ref().is_some_and(|c| c.link_up) {
            self.command(crate::cluster::Command::Release { key: state.key.clone() });
        }
    }

    // ---- presence ----

    pub(crate) fn set_status(&mut self, now: Instant, session: SessionId, status: UserStatus) {
        let Some(state) = self.sessions.get_mut(&session) else {
            return;
        };
        if state.status != status {
            let old = std::mem::replace(&mut state.status, status);
            let (key, name) = (state.key.clone(), state.name.clone());
            if self.lobby.is_listed(&key) {
                self.presence.status(&key, &name, old, status);
            }
            self.local_presence_changed(&key, &name);
            self.schedule_flush(now);
        }
    }

    pub(crate) fn schedule_flush(&mut self, now: Instant) {
        self.last_presence_change = Some(now);
        if !self.flush_scheduled {
            self.flush_scheduled = true;
            // The budget is checked when the timer fires, with the sessions online then.
            self.timers.at(now + self.config.presence_interval, Timer::PresenceFlush);
        }
    }

    /// The frame budget. A flush sends a frame to each of the N sessions online and costs N / budget of time: the
    /// budget's clock, `presence_paid_until`, moves on by that much at every flush (and never lags behind the
    /// flush). Changes are collected for `presence_interval` in any case; then
    /// - while changes keep coming (the latest less than an interval ago), a flush is paid for in advance: it waits
    ///   until the clock plus its own cost, so that a login storm gets a flush every N / budget and no more (while
    ///   sessions grow faster than the budget pays, it waits for them, at most until the clock plus all the sessions
    ///   the server allows / budget);
    /// - once they stop, a flush may run into debt: it goes out when the clock is at most its own cost ahead of now,
    ///   and the flushes after it wait for the debt. The last changes of a burst (the end of a login storm, or a
    ///   pause in it that looked like one) are then not held back for a whole spacing.
    ///
    /// Over any stretch of time, presence sends at most the budget's frames plus those of three flushes (the one
    /// that opens the stretch, and a debt of at most two).
    ///
    /// Returns None if the flush may go out at `now`, else when to look again.
    fn presence_flush_allowed_at(&self, now: Instant) -> Option<Instant> {
        let (Some(paid_until), Some(cost)) = (self.presence_paid_until, self.presence_flush_cost()) else {
            return None;
        };
        let quiet_at = self.last_presence_change.map_or(now, |last| last + self.config.presence_interval);
        let in_debt_by_one_at = paid_until.checked_sub(cost).unwrap_or(now);
        let allowed_at = if quiet_at <= now {
            in_debt_by_one_at
        } else {
            // Whichever comes first: paid for in advance, or a quiet spell with the debt low enough.
            (paid_until + cost).min(quiet_at.max(in_debt_by_one_at))
        };
        (allowed_at > now).then_some(allowed_at)
    }

    /// How long the frame budget takes to pay for a flush to every session online now (None: no budget).
    fn presence_flush_cost(&self) -> Option<std::time::Duration> {
        let per_frame = std::time::Duration::from_secs(1).checked_div(self.config.presence_frames_per_second)?;
        Some(per_frame.saturating_mul(u32::try_from(self.sessions.len()).unwrap_or(u32::MAX)))
    }

    fn flush_presence(&mut self, now: Instant) {
        if let Some(later) = self.presence_flush_allowed_at(now) {
            self.timers.at(later, Timer::PresenceFlush);
            return;
        }
        self.flush_scheduled = false;
        self.broadcast_local_presence();
        let (frames, membership_changed) = self.presence.take();
        if frames.is_none() && !membership_changed {
            // No frame for any client, so nothing to pay for. (What went to the cluster above is one message per
            // flush, not one per user.)
            return;
        }
        self.presence_paid_until = Some(match (self.presence_paid_until, self.presence_flush_cost()) {
            (Some(paid_until), Some(cost)) => now.max(paid_until + cost),
            _ => now,
        });
        // Local users beyond `max_presence_users` wait unlisted (see `Lobby`).
        let lobby = &self.lobby;
        let local =
            self.sessions.values().filter(|s| lobby.is_listed(&s.key)).map(|s| (&s.key, s.name.as_ref(), s.status));
        match &self.cluster {
            None => self.snapshot.rebuild(local),
            Some(cluster) => {
                let names = &self.names;
                let remote = cluster
                    .remote
                    .iter()
                    .filter(|(key, _)| !names.contains_key(*key))
                    .map(|(key, user)| (key, user.name.as_ref(), user.status));
                self.snapshot.rebuild(local.chain(remote));
            }
        }
        let frames = frames.map(|frames| (Shared::new(frames.full), Shared::new(frames.compact)));
        let user_list = membership_changed.then(|| Shared::new(self.snapshot.render_user_list(None).to_bytes()));
        for state in self.sessions.values() {
            let Some(conn) = state.conn else { continue };
            let shared = match state.dialect {
                Dialect::V1 => frames.as_ref().map(|(full, compact)| match self.presence_format(conn) {
                    PresenceFormat::Full => full,
                    PresenceFormat::Compact => compact,
                }),
                Dialect::Tutorial => user_list.as_ref(),
            };
            if let Some(shared) = shared {
                self.out.push_back(Output::Send { conn, frame: OutFrame::Shared(shared.clone()) });
            }
        }
    }

    // ---- relay ----

    #[allow(clippy::too_many_arguments)]
    fn relay(
        &mut self,
        now: Instant,
        conn: ConnId,
        session: SessionId,
        id: Option<&RawValue>,
        kind: RelayKind,
        to: &str,
        room: Option<&str>,
        call_id: Option<&str>,
        payload: Option<JsonText<'_>>,
    ) {
        let cap = match kind {
            RelayKind::Offer | RelayKind::Answer => self.config.max_sdp_bytes,
            RelayKind::Candidate | RelayKind::EndOfCandidates => self.config.max_candidate_bytes,
        };
        if let Some(payload) = payload.filter(|p| p.get().len() > cap) {
            let message =
                format!("the {} payload is {} bytes, over the {cap} byte limit", kind.as_str(), payload.get().len());
            return self.fail(now, conn, id, ErrorCode::TooLarge, message.into());
        }
        let Some(target) = self.peer_named(session, to) else {
            if let Some(node) = self.remote_node_of(to) {
                return self.relay_remote(now, conn, session, id, node, kind, to, room, call_id, payload);
            }
            return self.unknown_peer(now, conn, id, to);
        };
        if target == session {
            return self.fail(now, conn, id, ErrorCode::BadRequest, "cannot send to yourself".into());
        }
        let room = match room {
            None => None,
            Some(room) => {
                let shared = self.rooms.get(name_key(room).as_ref()).filter(|r| r.has(session) && r.has(target));
                match shared {
                    Some(shared) => Some(shared.name.clone()),
                    None => {
                        let message = format!("you and {to} are not both in room {room:?}");
                        return self.fail(now, conn, id, ErrorCode::NotInRoom, message.into());
                    }
                }
            }
        };
        let (Some(sender), Some(receiver)) = (self.sessions.get(&session), self.sessions.get(&target)) else {
            return;
        };
        let frame = relay_frame(
            receiver.dialect,
            &receiver.name,
            &sender.name,
            kind,
            room.as_deref(),
            call_id,
            payload.map(JsonText::get),
        );
        let delivered = frame.is_none_or(|frame| self.deliver(target, Bytes::from(frame), Origin::Local(session, id)));
        if let (true, Some(id)) = (delivered, id) {
            self.send(conn, OutEvent::Ack { id }.to_json());
        }
    }

    pub(crate) fn unknown_peer(&mut self, now: Instant, conn: ConnId, id: Option<&RawValue>, to: &str) {
        let shown: String = to.chars().take(64).collect();
        self.fail(now, conn, id, ErrorCode::UnknownPeer, format!("no user named {shown:?} is online").into());
    }

    pub(crate) fn room_snapshot(&self, key: &str) -> Option<RoomSnapshot<'_>> {
        let room = self.rooms.get(key)?;
        Some(RoomSnapshot {
            room: room.name.as_ref().into(),
            members: room
                .members
                .iter()
                .filter_map(|m| match m {
                    RoomMember::Local(session) => self.sessions.get(session).map(|s| s.name.as_ref().into()),
                    RoomMember::Remote { name, .. } => Some(name.as_ref().into()),
                })
                .collect(),
            protected: room.password.is_some() || room.cluster_password.is_some(),
        })
    }
}

/// A relayed message as the receiver's dialect has it; None when that dialect has no such message (the tutorial's
/// end-of-candidates).
pub(crate) fn relay_frame(
    dialect: Dialect,
    receiver: &str,
    from: &str,
    kind: RelayKind,
    room: Option<&str>,
    call_id: Option<&str>,
    payload: Option<&str>,
) -> Option<Vec<u8>> {
    match (dialect, payload) {
        (Dialect::V1, payload) => Some(relayed::v1_relay_frame(kind, RelayHeader { from, room, call_id }, payload)),
        (Dialect::Tutorial, Some(payload)) => relayed::tutorial_relay_frame(kind, from, receiver, payload),
        // The tutorial has no end-of-candidates; its pages do fine without.
        (Dialect::Tutorial, None) => None,
    }
}

/// The counter a request goes to.
fn message_kind(request: &Request<'_>) -> MessageKind {
    match request {
        Request::Login { .. } => MessageKind::Login,
        Request::Logout => MessageKind::Logout,
        Request::Users => MessageKind::Users,
        Request::Ping => MessageKind::Ping,
        Request::Relay { kind: RelayKind::Offer, .. } => MessageKind::Offer,
        Request::Relay { kind: RelayKind::Answer, .. } => MessageKind::Answer,
        Request::Relay { kind: RelayKind::Candidate, .. } => MessageKind::Candidate,
        Request::Relay { kind: RelayKind::EndOfCandidates, .. } => MessageKind::EndOfCandidates,
        Request::Call { .. } => MessageKind::Call,
        Request::Accept { .. } => MessageKind::Accept,
        Request::Reject { .. } => MessageKind::Reject,
        Request::Cancel { .. } => MessageKind::Cancel,
        Request::Hangup { .. } => MessageKind::Hangup,
        Request::Join { .. } => MessageKind::Join,
        Request::Leave { .. } => MessageKind::Leave,
        Request::TutorialLogin { .. } => MessageKind::TutorialLogin,
    }
}
