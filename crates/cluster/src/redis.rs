//! The Redis backend: nodes share names, room member lists and liveness through Redis keys, and talk through Redis
//! pub/sub (one channel per node, plus one for news every node needs).
//!
//! One task per node owns one RESP3 connection, used both for commands and for the subscriptions (RESP3 delivers
//! published messages as push frames on a normal connection). Commands from the core run in order, batched into
//! pipelines; published messages and heartbeat results become events in the order the task sees them. When the
//! connection fails the task reports `LinkDown`, fails what it is asked meanwhile, reconnects with backoff,
//! subscribes again and reports `LinkUp`, on which the core resynchronises. A node that cannot keep up with what is
//! published to it (its push queue overflows) reconnects the same way, since it has lost messages.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, IntoConnectionInfo, ProtocolVersion, PushInfo, PushKind, Value};
use switchboard_core::cluster::{ClaimOutcome, JoinOutcome, Member};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::{codec, scripts, Backend, Command, Event, Message, NodeId, COMMAND_QUEUE};

/// Key and channel prefix.
pub const PREFIX: &str = "sb:";

/// Most published messages waiting to be read; beyond, the node reconnects and resynchronises.
const PUSH_QUEUE: usize = 65_536;

/// Most commands in one pipeline.
const BATCH: usize = 512;

/// Most messages in one published envelope.
const BUNDLE: usize = 128;

/// How long a connection attempt, and any reply, may take.
const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// A bad `cluster` setting.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The URL does not parse.
    #[error("cluster: {0:?} is not a redis:// URL: {1}")]
    Url(String, String),
}

/// Settings of the Redis backend.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `redis://[user:password@]host:port[/db]`.
    pub url: String,
    /// This node.
    pub node: NodeId,
    /// Bound on how long a dead node's users stay visible: its lease lasts 6/10 of it, and live nodes check every
    /// 1/10.
    pub node_timeout: Duration,
}

impl RedisSettings {
    fn heartbeat(&self) -> Duration {
        (self.node_timeout / 10).max(Duration::from_millis(50))
    }

    fn lease(&self) -> Duration {
        (self.node_timeout * 6 / 10).max(self.heartbeat() * 3)
    }
}

/// A node's link to Redis. Dropping it (and its task) stops the node's heartbeat: the others see it go within the
/// node timeout. [`RedisBackend::depart`] leaves at once instead.
pub struct RedisBackend {
    commands: mpsc::Sender<Op>,
    ready: Arc<AtomicBool>,
}

/// What the task is asked.
enum Op {
    Command(Command),
    /// Leave the cluster now (clean shutdown), then stop.
    Depart(tokio::sync::oneshot::Sender<()>),
}

impl RedisBackend {
    /// Starts the node's task; events go to `events`. Fails only on a malformed URL: an unreachable Redis is retried
    /// for as long as the node runs.
    pub fn start(settings: RedisSettings, events: mpsc::Sender<Event>) -> Result<(Self, JoinHandle<()>), ConfigError> {
        let info = settings
            .url
            .as_str()
            .into_connection_info()
            .map_err(|e| ConfigError::Url(redacted(&settings.url), e.to_string()))?;
        let redis = info.redis_settings().clone().set_protocol(ProtocolVersion::RESP3);
        let client = Client::open(info.set_redis_settings(redis))
            .map_err(|e| ConfigError::Url(redacted(&settings.url), e.to_string()))?;
        let (commands, rx) = mpsc::channel(COMMAND_QUEUE);
        let ready = Arc::new(AtomicBool::new(false));
        let task = Task {
            client,
            settings,
            events,
            ready: ready.clone(),
            liveness: Liveness::default(),
            encodings: codec::Encodings::default(),
        };
        let handle = tokio::spawn(task.run(rx));
        Ok((Self { commands, ready }, handle))
    }

    /// Leaves the cluster at once (clean shutdown): the other nodes drop this node's users now rather than when its
    /// lease runs out. Waits at most `IO_TIMEOUT`.
    pub async fn depart(&self) {
        let (done, wait) = tokio::sync::oneshot::channel();
        if self.commands.send(Op::Depart(done)).await.is_ok() {
            let _ = tokio::time::timeout(IO_TIMEOUT * 2, wait).await;
        }
    }
}

impl Backend for RedisBackend {
    fn submit(&self, command: Command) -> Result<(), Command> {
        match self.commands.try_send(Op::Command(command)) {
            Ok(()) => Ok(()),
            Err(
                mpsc::error::TrySendError::Full(Op::Command(c)) | mpsc::error::TrySendError::Closed(Op::Command(c)),
            ) => Err(c),
            // Only commands are submitted.
            Err(_) => Ok(()),
        }
    }

    fn ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
}

/// The URL without its password, for messages.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://***@{}", &url[..scheme], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

/// Which nodes are alive, from successive heartbeat results.
#[derive(Default)]
struct Liveness {
    /// Until then, missing nodes are not reported: right after this node (re)connects, the others may not have
    /// renewed their leases yet (after a Redis restart nobody has one).
    quiet_until: Option<tokio::time::Instant>,
    /// Nodes seen in a heartbeat result.
    seen: HashSet<NodeId>,
    /// Nodes only heard from (a message) so far, with the number of results they were missing from.
    heard: HashMap<NodeId, u32>,
}

impl Liveness {
    /// Takes one heartbeat result; returns the nodes that went away.
    fn update(&mut self, me: &NodeId, alive: Vec<String>) -> Vec<NodeId> {
        let alive: HashSet<NodeId> = alive.into_iter().map(|n| NodeId(Arc::from(n.as_str()))).collect();
        if self.quiet_until.is_some_and(|until| tokio::time::Instant::now() < until) {
            self.seen.extend(alive.into_iter().filter(|n| n != me));
            return Vec::new();
        }
        let mut down: Vec<NodeId> = self.seen.iter().filter(|n| !alive.contains(*n)).cloned().collect();
        self.seen.retain(|n| alive.contains(n));
        // A node heard from before any result listed it may be one that registered just after this result was
        // computed: it is only gone once two results missed it.
        self.heard.retain(|node, misses| {
            if alive.contains(node) {
                return false;
            }
            *misses += 1;
            if *misses >= 2 {
                down.push(node.clone());
                return false;
            }
            true
        });
        self.seen.extend(alive.into_iter().filter(|n| n != me));
        down
    }

    fn heard_from(&mut self, node: &NodeId) {
        if !self.seen.contains(node) {
            self.heard.entry(node.clone()).or_insert(0);
        }
    }
}

struct Task {
    client: Client,
    settings: RedisSettings,
    events: mpsc::Sender<Event>,
    ready: Arc<AtomicBool>,
    liveness: Liveness,
    /// Which encoding each other node reads.
    encodings: codec::Encodings,
}

/// Why serving a connection ended.
enum End {
    /// The connection failed: reconnect.
    Failed(String),
    /// The node stops.
    Stop,
}

/// The scripts, loaded on each connection.
struct Shas {
    heartbeat: String,
    claim: String,
    release: String,
    join: String,
    leave: String,
    resync: String,
    depart: String,
}

impl Task {
    fn node_channel(&self, node: &NodeId) -> String {
        format!("{PREFIX}to:{node}")
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Op>) {
        let mut backoff = Duration::from_millis(50);
        let mut failures: u64 = 0;
        loop {
            match self.connect().await {
                Ok((con, pushes, overflow, shas)) => {
                    backoff = Duration::from_millis(50);
                    if failures > 0 {
                        tracing::info!(node = %self.settings.node, "cluster: connected to Redis again");
                    }
                    failures = 0;
                    self.ready.store(true, Ordering::Relaxed);
                    if self.events.send(Event::LinkUp).await.is_err() {
                        return;
                    }
                    let end = self.serve(con, pushes, &overflow, &shas, &mut rx).await;
                    self.ready.store(false, Ordering::Relaxed);
                    match end {
                        End::Stop => return,
                        End::Failed(error) => {
                            tracing::warn!(node = %self.settings.node, %error, "cluster: lost Redis; serving local users only");
                        }
                    }
                    if self.events.send(Event::LinkDown).await.is_err() {
                        return;
                    }
                }
                Err(error) => {
                    failures += 1;
                    if failures.is_power_of_two() {
                        tracing::warn!(node = %self.settings.node, %error, failures, "cluster: cannot reach Redis");
                    }
                }
            }
            // Until the next attempt, whatever is asked fails at once rather than waiting.
            let retry = tokio::time::sleep(backoff);
            tokio::pin!(retry);
            loop {
                tokio::select! {
                    () = &mut retry => break,
                    op = rx.recv() => match op {
                        None => return,
                        Some(Op::Depart(done)) => {
                            let _ = done.send(());
                            return;
                        }
                        Some(Op::Command(command)) => self.fail(command).await,
                    },
                }
            }
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }

    async fn fail(&self, command: Command) {
        if let Some(event) = command.failed() {
            let _ = self.events.send(event).await;
        }
    }

    async fn connect(
        &mut self,
    ) -> redis::RedisResult<(MultiplexedConnection, mpsc::Receiver<PushInfo>, Arc<AtomicBool>, Shas)> {
        let (push_tx, pushes) = mpsc::channel(PUSH_QUEUE);
        let overflow = Arc::new(AtomicBool::new(false));
        let flag = overflow.clone();
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(IO_TIMEOUT))
            .set_response_timeout(Some(IO_TIMEOUT))
            .set_push_sender(move |info: PushInfo| match push_tx.try_send(info) {
                Ok(()) => Ok(()),
                Err(_) => {
                    flag.store(true, Ordering::Relaxed);
                    Err(())
                }
            });
        let mut con = self.client.get_multiplexed_async_connection_with_config(&config).await?;
        if !self.liveness.seen.is_empty() || !self.liveness.heard.is_empty() {
            self.liveness.quiet_until = Some(tokio::time::Instant::now() + self.settings.lease());
        }
        let load = |script: &str| redis::cmd("SCRIPT").arg("LOAD").arg(script).clone();
        let mut pipe = redis::pipe();
        for script in [
            scripts::HEARTBEAT,
            scripts::CLAIM,
            scripts::RELEASE,
            scripts::JOIN,
            scripts::LEAVE,
            scripts::RESYNC,
            scripts::DEPART,
        ] {
            pipe.add_command(load(script));
        }
        let loaded: Vec<String> = pipe.query_async(&mut con).await?;
        let [heartbeat, claim, release, join, leave, resync, depart]: [String; 7] = loaded
            .try_into()
            .map_err(|_| redis::RedisError::from((redis::ErrorKind::Client, "SCRIPT LOAD answered oddly")))?;
        let shas = Shas { heartbeat, claim, release, join, leave, resync, depart };
        con.subscribe(&[self.node_channel(&self.settings.node), format!("{PREFIX}all")]).await?;
        // Registered (and the lease taken) before the core announces itself, so that peers that hear from this node
        // find it alive.
        let alive = self.heartbeat(&mut con, &shas).await?;
        self.liveness_update(alive).await;
        Ok((con, pushes, overflow, shas))
    }

    async fn heartbeat(&self, con: &mut MultiplexedConnection, shas: &Shas) -> redis::RedisResult<Vec<String>> {
        let lease = u64::try_from(self.settings.lease().as_millis()).unwrap_or(u64::MAX);
        redis::cmd("EVALSHA")
            .arg(&shas.heartbeat)
            .arg(0)
            .arg(PREFIX)
            .arg(self.settings.node.as_str())
            .arg(lease)
            .query_async(con)
            .await
    }

    async fn liveness_update(&mut self, alive: Vec<String>) {
        for node in self.liveness.update(&self.settings.node, alive) {
            self.encodings.forget(&node);
            tracing::info!(node = %self.settings.node, down = %node, "cluster: a node's lease ran out");
            let _ = self.events.send(Event::NodeDown(node)).await;
        }
    }

    async fn serve(
        &mut self,
        mut con: MultiplexedConnection,
        mut pushes: mpsc::Receiver<PushInfo>,
        overflow: &AtomicBool,
        shas: &Shas,
        rx: &mut mpsc::Receiver<Op>,
    ) -> End {
        let mut heartbeat = tokio::time::interval(self.settings.heartbeat());
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        heartbeat.tick().await;
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            if overflow.load(Ordering::Relaxed) {
                return End::Failed("too many published messages queued; resynchronising".into());
            }
            tokio::select! {
                biased;
                push = pushes.recv() => {
                    let Some(push) = push else { return End::Failed("the connection closed".into()) };
                    if let Err(error) = self.on_push(push).await {
                        return End::Failed(error);
                    }
                }
                op = rx.recv() => {
                    match op {
                        None => return End::Stop,
                        Some(Op::Depart(done)) => {
                            self.depart(&mut con, shas).await;
                            let _ = done.send(());
                            return End::Stop;
                        }
                        Some(Op::Command(command)) => batch.push(command),
                    }
                    let mut depart = None;
                    while batch.len() < BATCH {
                        match rx.try_recv() {
                            Ok(Op::Command(command)) => batch.push(command),
                            Ok(Op::Depart(done)) => {
                                depart = Some(done);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    if let Err(error) = self.execute(&mut con, shas, &mut batch).await {
                        return End::Failed(error);
                    }
                    if let Some(done) = depart {
                        self.depart(&mut con, shas).await;
                        let _ = done.send(());
                        return End::Stop;
                    }
                }
                _ = heartbeat.tick() => {
                    match self.heartbeat(&mut con, shas).await {
                        Ok(alive) => self.liveness_update(alive).await,
                        Err(error) => return End::Failed(error.to_string()),
                    }
                }
            }
        }
    }

    async fn depart(&self, con: &mut MultiplexedConnection, shas: &Shas) {
        let messages = [Message::Sync { users: Vec::new(), reply: false }];
        let mut pipe = redis::pipe();
        pipe.cmd("PUBLISH")
            .arg(format!("{PREFIX}all"))
            .arg(codec::encode_json(&self.settings.node, &messages))
            .ignore();
        pipe.cmd("EVALSHA").arg(&shas.depart).arg(0).arg(PREFIX).arg(self.settings.node.as_str()).ignore();
        if let Err(error) = pipe.query_async::<()>(con).await {
            tracing::warn!(%error, "cluster: could not leave cleanly; peers will notice when the lease runs out");
        }
    }

    async fn on_push(&mut self, push: PushInfo) -> Result<(), String> {
        match push.kind {
            PushKind::Disconnection => Err("disconnected".into()),
            PushKind::Message => {
                let Some(Value::BulkString(payload)) = push.data.get(1) else { return Ok(()) };
                match codec::decode(payload) {
                    Ok(envelope) => {
                        if envelope.from != self.settings.node {
                            self.liveness.heard_from(&envelope.from);
                            self.encodings.heard(&envelope);
                            let event = Event::Messages { from: envelope.from, messages: envelope.messages };
                            if self.events.send(event).await.is_err() {
                                return Err("the node is stopping".into());
                            }
                        }
                    }
                    Err(error) => tracing::warn!(%error, "cluster: ignoring a malformed message"),
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Runs `batch` as one pipeline, in order, and reports the answers.
    async fn execute(
        &mut self,
        con: &mut MultiplexedConnection,
        shas: &Shas,
        batch: &mut Vec<Command>,
    ) -> Result<(), String> {
        let entries = bundle_sends(batch.drain(..));
        let mut pipe = redis::pipe();
        let node = self.settings.node.as_str();
        for entry in &entries {
            let command = match entry {
                Entry::Bundle { node: to, messages } => {
                    pipe.cmd("PUBLISH").arg(self.node_channel(to)).arg(self.encode(Some(to), messages));
                    continue;
                }
                Entry::Command(command) => command,
            };
            match command {
                Command::Claim { key, replace, .. } => {
                    pipe.cmd("EVALSHA")
                        .arg(&shas.claim)
                        .arg(0)
                        .arg(PREFIX)
                        .arg(node)
                        .arg(key.as_ref())
                        .arg(if *replace { "1" } else { "0" });
                }
                Command::Release { key } => {
                    pipe.cmd("EVALSHA").arg(&shas.release).arg(0).arg(PREFIX).arg(node).arg(key.as_ref());
                }
                Command::Join { room, room_name, member, password, check_password, max_size, .. } => {
                    pipe.cmd("EVALSHA")
                        .arg(&shas.join)
                        .arg(0)
                        .arg(PREFIX)
                        .arg(node)
                        .arg(room.as_ref())
                        .arg(room_name.as_ref())
                        .arg(member.as_ref())
                        .arg(password.as_deref().unwrap_or(""))
                        .arg(if *check_password { "1" } else { "0" })
                        .arg(*max_size);
                }
                Command::Leave { room, member } => {
                    pipe.cmd("EVALSHA")
                        .arg(&shas.leave)
                        .arg(0)
                        .arg(PREFIX)
                        .arg(node)
                        .arg(room.as_ref())
                        .arg(member.as_ref());
                }
                Command::Resync { names, rooms } => {
                    let cmd = pipe.cmd("EVALSHA").arg(&shas.resync).arg(0).arg(PREFIX).arg(node).arg(names.len());
                    for name in names {
                        cmd.arg(name.as_ref());
                    }
                    cmd.arg(rooms.len());
                    for room in rooms {
                        cmd.arg(room.room.as_ref())
                            .arg(room.room_name.as_ref())
                            .arg(room.password.as_deref().unwrap_or(""))
                            .arg(room.members.len());
                        for member in &room.members {
                            cmd.arg(member.as_ref());
                        }
                    }
                }
                // `bundle_sends` folds every Send into a bundle; this arm is the same thing for one message.
                Command::Send { node: to, message } => {
                    let payload = self.encode(Some(to), std::slice::from_ref(message));
                    pipe.cmd("PUBLISH").arg(self.node_channel(to)).arg(payload);
                }
                Command::Broadcast { message } => {
                    let payload = self.encode(None, std::slice::from_ref(message));
                    pipe.cmd("PUBLISH").arg(format!("{PREFIX}all")).arg(payload);
                }
            }
        }
        let replies: Vec<Value> = match pipe.query_async(con).await {
            Ok(replies) => replies,
            Err(error) => {
                for command in entries.into_iter().flat_map(Entry::into_commands) {
                    self.fail(command).await;
                }
                return Err(error.to_string());
            }
        };
        for (entry, reply) in entries.into_iter().zip(replies) {
            let events: Vec<Event> = match entry {
                Entry::Command(command) => answer(command, reply).into_iter().collect(),
                // Somebody received the bundle: nothing to report for any of its messages.
                Entry::Bundle { .. } if reply != Value::Int(0) => continue,
                bundle => bundle.into_commands().into_iter().filter_map(|c| answer(c, reply.clone())).collect(),
            };
            for event in events {
                if self.events.send(event).await.is_err() {
                    return Err("the node is stopping".into());
                }
            }
        }
        Ok(())
    }

    fn encode(&self, to: Option<&NodeId>, messages: &[Message]) -> Vec<u8> {
        self.encodings.encode(&self.settings.node, to, messages)
    }
}

/// One command of a pipeline, or several messages to one node published as one envelope.
#[derive(Debug)]
enum Entry {
    Command(Command),
    Bundle { node: NodeId, messages: Vec<Message> },
}

impl Entry {
    /// The commands it stands for, each answered by the entry's one reply.
    fn into_commands(self) -> Vec<Command> {
        match self {
            Entry::Command(command) => vec![command],
            Entry::Bundle { node, messages } => {
                messages.into_iter().map(|message| Command::Send { node: node.clone(), message }).collect()
            }
        }
    }
}

/// Folds consecutive `Send`s to one node into one bundle (at most [`BUNDLE`] messages), so the pipeline keeps its
/// exact order: Redis runs a pipeline's commands in order, and a node that reacts to a message of a later command
/// must not be able to overtake an earlier one to another node. Interleaved destinations therefore bundle less; the
/// common case, a burst of relayed messages to one other node, bundles fully.
fn bundle_sends(commands: impl Iterator<Item = Command>) -> Vec<Entry> {
    let mut entries: Vec<Entry> = Vec::new();
    for command in commands {
        match command {
            Command::Send { node, message } => match entries.last_mut() {
                Some(Entry::Bundle { node: to, messages }) if *to == node && messages.len() < BUNDLE => {
                    messages.push(message);
                }
                _ => entries.push(Entry::Bundle { node, messages: vec![message] }),
            },
            other => entries.push(Entry::Command(other)),
        }
    }
    entries
}

/// The event a command's reply makes, if anyone waits for it.
fn answer(command: Command, reply: Value) -> Option<Event> {
    match command {
        Command::Claim { ticket, .. } => {
            let outcome = match strings(&reply).as_slice() {
                [won, evicted] if won == "1" => {
                    ClaimOutcome::Won { evicted: (!evicted.is_empty()).then(|| NodeId(Arc::from(evicted.as_str()))) }
                }
                [refused, _] if refused == "0" => ClaimOutcome::Taken,
                _ => ClaimOutcome::Unavailable,
            };
            Some(Event::Claimed { ticket, outcome })
        }
        Command::Join { ticket, .. } => {
            let reply = strings(&reply);
            let outcome = match reply.first().map(String::as_str) {
                Some("ok") if reply.len() >= 3 => JoinOutcome::Joined {
                    room_name: Arc::from(reply[1].as_str()),
                    password: (!reply[2].is_empty()).then(|| Arc::from(reply[2].as_str())),
                    members: reply[3..]
                        .iter()
                        .filter_map(|entry| entry.split_once('|'))
                        .map(|(node, name)| Member { node: NodeId(Arc::from(node)), name: name.to_owned() })
                        .collect(),
                },
                Some("full") => JoinOutcome::Full,
                Some("password-required") => JoinOutcome::PasswordRequired,
                Some("wrong-password") => JoinOutcome::WrongPassword,
                _ => JoinOutcome::Unavailable,
            };
            Some(Event::Joined { ticket, outcome })
        }
        Command::Resync { .. } => {
            let names = strings(&reply).into_iter().map(|k| Arc::from(k.as_str())).collect::<Vec<_>>();
            (!names.is_empty()).then_some(Event::Lost { names })
        }
        Command::Send { node, message } => {
            // Nobody subscribed to the node's channel: it is gone (or reconnecting), and the message is lost.
            let receivers = match reply {
                Value::Int(n) => n,
                _ => 1,
            };
            (receivers == 0).then_some(Event::Undelivered { node: Some(node), message })
        }
        Command::Release { .. } | Command::Leave { .. } | Command::Broadcast { .. } => None,
    }
}

/// The strings of an array reply (numbers as text).
fn strings(reply: &Value) -> Vec<String> {
    let Value::Array(items) = reply else { return Vec::new() };
    items
        .iter()
        .map(|item| match item {
            Value::BulkString(bytes) => String::from_utf8_lossy(bytes).into_owned(),
            Value::SimpleString(text) => text.clone(),
            Value::Int(n) => n.to_string(),
            _ => String::new(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_core::cluster::Presence;

    fn node(id: &str) -> NodeId {
        NodeId(Arc::from(id))
    }

    #[test]
    fn a_node_seen_alive_is_down_once_missing_and_one_only_heard_from_after_two_misses() {
        let me = node("me");
        let mut liveness = Liveness::default();
        assert!(liveness.update(&me, vec!["me".into(), "a".into()]).is_empty());
        liveness.heard_from(&node("b"));
        assert_eq!(liveness.update(&me, vec!["me".into()]), vec![node("a")]);
        assert!(liveness.update(&me, vec!["me".into()]).contains(&node("b")));
        assert!(liveness.update(&me, vec!["me".into()]).is_empty(), "reported once");
        liveness.heard_from(&node("c"));
        assert!(liveness.update(&me, vec!["me".into(), "c".into()]).is_empty());
        assert_eq!(liveness.update(&me, vec!["me".into()]), vec![node("c")]);
    }

    #[test]
    fn replies_become_events() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let claim = |replace| Command::Claim { ticket: 3, key: Arc::from("bob"), replace };
        let won = answer(claim(false), Value::Array(vec![Value::Int(1), bulk("")]));
        assert_eq!(won, Some(Event::Claimed { ticket: 3, outcome: ClaimOutcome::Won { evicted: None } }));
        let evicted = answer(claim(true), Value::Array(vec![Value::Int(1), bulk("n2")]));
        assert_eq!(
            evicted,
            Some(Event::Claimed { ticket: 3, outcome: ClaimOutcome::Won { evicted: Some(node("n2")) } })
        );
        let taken = answer(claim(false), Value::Array(vec![Value::Int(0), bulk("n2")]));
        assert_eq!(taken, Some(Event::Claimed { ticket: 3, outcome: ClaimOutcome::Taken }));
        let join = Command::Join {
            ticket: 4,
            room: Arc::from("standup"),
            room_name: Arc::from("Standup"),
            member: Arc::from("bob"),
            password: None,
            check_password: true,
            max_size: 16,
        };
        let joined = answer(
            join.clone(),
            Value::Array(vec![bulk("ok"), bulk("Standup"), bulk(""), bulk("n1|alice"), bulk("n2|bob")]),
        );
        let members =
            vec![Member { node: node("n1"), name: "alice".into() }, Member { node: node("n2"), name: "bob".into() }];
        let expected = JoinOutcome::Joined { members, password: None, room_name: Arc::from("Standup") };
        assert_eq!(joined, Some(Event::Joined { ticket: 4, outcome: expected }));
        assert_eq!(
            answer(join, Value::Array(vec![bulk("full")])),
            Some(Event::Joined { ticket: 4, outcome: JoinOutcome::Full })
        );
        let send = Command::Send { node: node("gone"), message: Message::Presence { users: Vec::new() } };
        assert!(matches!(answer(send.clone(), Value::Int(0)), Some(Event::Undelivered { .. })));
        assert_eq!(answer(send, Value::Int(1)), None);
    }

    #[test]
    fn consecutive_sends_to_one_node_are_bundled_without_reordering_anything() {
        let send = |to: &str, n: usize| Command::Send {
            node: node(to),
            message: Message::Presence { users: vec![Presence { name: format!("u{n}"), status: None }] },
        };
        let claim = Command::Claim { ticket: 1, key: Arc::from("k"), replace: false };
        let mut commands = vec![send("a", 0), send("a", 1), send("b", 2), send("a", 3), claim, send("a", 4)];
        commands.extend((5..5 + BUNDLE + 1).map(|n| send("b", n)));
        let entries = bundle_sends(commands.into_iter());
        let shape: Vec<(String, Vec<usize>)> = entries
            .iter()
            .map(|entry| match entry {
                Entry::Command(_) => ("claim".to_string(), Vec::new()),
                Entry::Bundle { node, messages } => (
                    node.0.to_string(),
                    messages
                        .iter()
                        .map(|m| match m {
                            Message::Presence { users } => users[0].name[1..].parse().unwrap(),
                            _ => unreachable!(),
                        })
                        .collect(),
                ),
            })
            .collect();
        let b_run: Vec<usize> = (5..5 + BUNDLE).collect();
        assert_eq!(
            shape,
            vec![
                ("a".to_string(), vec![0, 1]),
                ("b".to_string(), vec![2]),
                ("a".to_string(), vec![3]),
                ("claim".to_string(), vec![]),
                ("a".to_string(), vec![4]),
                ("b".to_string(), b_run),
                ("b".to_string(), vec![5 + BUNDLE]),
            ]
        );
        // One reply answers every message of a bundle: nobody listening makes each of them undelivered.
        let Some(Entry::Bundle { .. }) = entries.first() else { panic!("a bundle first") };
        let commands = entries.into_iter().next().unwrap().into_commands();
        let undelivered = commands.into_iter().filter_map(|c| answer(c, Value::Int(0))).count();
        assert_eq!(undelivered, 2);
    }

    #[test]
    fn urls_are_shown_without_their_password() {
        assert_eq!(redacted("redis://user:secret@redis.internal:6379/2"), "redis://***@redis.internal:6379/2");
        assert_eq!(redacted("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }
}
