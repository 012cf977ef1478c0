//! The Redis backend: nodes share names, room member lists and liveness through Redis keys, and talk through Redis
//! pub/sub (one channel per node, plus one for news every node needs).
//!
//! One task per node owns one RESP3 connection, used both for commands and for the subscriptions (RESP3 delivers
//! published messages as push frames on a normal connection). The task speaks the protocol itself ([`resp`]): an
//! envelope is encoded once into the connection's write buffer and decoded in place from its read buffer. Commands
//! from the core run in order, batched into pipelines, one pipeline in flight at a time (the next batch gathers
//! meanwhile); published messages and heartbeat results become events in the order the connection delivers them.
//! When the connection fails the task reports `LinkDown`, fails what it is asked meanwhile, reconnects with backoff,
//! subscribes again and reports `LinkUp`, on which the core resynchronises. A node that cannot keep up with what is
//! published to it stops reading; Redis then closes the connection when the node's output buffer passes its
//! `client-output-buffer-limit`, and the node reconnects and resynchronises the same way, since it has lost
//! messages.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::{ConnectionAddr, IntoConnectionInfo};
use switchboard_core::cluster::{ClaimOutcome, JoinOutcome, Member};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::resp::{self, Frame, Value};
use crate::{codec, scripts, Backend, Command, Event, Message, NodeId, COMMAND_QUEUE};

/// Key and channel prefix.
pub const PREFIX: &str = "sb:";

/// After [`PREFIX`]: the channel every node reads, and the start of each node's own channel (its id follows).
const ALL_CHANNEL: &str = "all";
const NODE_CHANNEL: &str = "to:";

/// Most published messages held back while the connection comes up (between subscribing and the first heartbeat
/// result, one round trip); beyond, the node reconnects and resynchronises.
const EARLY_EVENTS: usize = 65_536;

/// Most commands in one pipeline.
const BATCH: usize = 512;

/// Most messages in one published envelope.
const BUNDLE: usize = 128;

/// How long a connection attempt, and any reply, may take.
const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 64 * 1024;

/// Largest frame read from Redis: a few of the largest strings the parser takes. Envelopes are far smaller.
const MAX_FRAME: usize = 4 * resp::MAX_STRING;

/// A buffer grown past this by a burst is given back once drained, so an idle node holds little.
const KEEP_BUFFER: usize = 1 << 20;

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

/// Where Redis is, and who this node is to it, as the URL says. Not `Debug`: it holds the password.
struct Target {
    host: String,
    port: u16,
    username: Option<String>,
    password: Option<String>,
    db: i64,
}

impl Target {
    /// Reads the URL (the redis crate's parser, so every form its users know works the same here).
    fn parse(url: &str) -> Result<Self, ConfigError> {
        let bad = |reason: String| ConfigError::Url(redacted(url), reason);
        let info = url.into_connection_info().map_err(|e| bad(e.to_string()))?;
        let ConnectionAddr::Tcp(host, port) = info.addr() else {
            return Err(bad("only redis:// (TCP, without TLS) is supported".into()));
        };
        let settings = info.redis_settings();
        Ok(Self {
            host: host.clone(),
            port: *port,
            username: settings.username().map(str::to_owned),
            password: settings.password().map(str::to_owned),
            db: settings.db(),
        })
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
        let target = Target::parse(&settings.url)?;
        let (commands, rx) = mpsc::channel(COMMAND_QUEUE);
        let ready = Arc::new(AtomicBool::new(false));
        let task = Task {
            target,
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

/// One connection to Redis and its buffers. Replies come in the order of the commands they answer; pushes (published
/// messages, subscription confirmations) come in between.
struct Link {
    stream: tokio::net::TcpStream,
    /// Bytes read and not parsed yet start at `parsed`.
    input: Vec<u8>,
    parsed: usize,
    /// Commands not written yet.
    output: Vec<u8>,
    /// Where an envelope is encoded before it is copied behind its length.
    scratch: Vec<u8>,
}

impl Link {
    async fn open(target: &Target) -> Result<Self, String> {
        let connect = async {
            let stream = tokio::net::TcpStream::connect((target.host.as_str(), target.port)).await?;
            // Pipelines are written whole; waiting for more would only add latency to every relayed message.
            stream.set_nodelay(true)?;
            Ok::<_, std::io::Error>(stream)
        };
        let stream = match tokio::time::timeout(IO_TIMEOUT, connect).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => return Err(error.to_string()),
            Err(_) => return Err("connecting timed out".into()),
        };
        Ok(Self { stream, input: Vec::with_capacity(READ_CHUNK), parsed: 0, output: Vec::new(), scratch: Vec::new() })
    }

    /// Writes every command queued in `output`.
    async fn flush(&mut self) -> Result<(), String> {
        match tokio::time::timeout(IO_TIMEOUT, self.stream.write_all(&self.output)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => return Err(error.to_string()),
            Err(_) => return Err("writing to Redis timed out".into()),
        }
        self.output.clear();
        if self.output.capacity() > KEEP_BUFFER {
            self.output = Vec::new();
        }
        if self.scratch.capacity() > KEEP_BUFFER {
            self.scratch = Vec::new();
        }
        Ok(())
    }

    /// Reads what the socket has. Cancel-safe: nothing read is lost if the future is dropped.
    async fn fill(&mut self) -> Result<(), String> {
        if self.parsed > 0 {
            self.input.drain(..self.parsed);
            self.parsed = 0;
            if self.input.len() < READ_CHUNK && self.input.capacity() > KEEP_BUFFER {
                self.input.shrink_to(READ_CHUNK);
            }
        }
        // One frame this large is not one this backend asked for: a broken stream, not a reason to grow forever.
        if self.input.len() > MAX_FRAME {
            return Err("a frame from Redis beyond this node's bounds".into());
        }
        self.input.reserve(READ_CHUNK);
        match self.stream.read_buf(&mut self.input).await {
            Ok(0) => Err("Redis closed the connection".into()),
            Ok(_) => Ok(()),
            Err(error) => Err(error.to_string()),
        }
    }

    /// The next whole frame read, if any; a message's ranges index `self.input`.
    fn next_frame(&mut self) -> Result<Option<Frame>, String> {
        let offset = self.parsed;
        match resp::parse(&self.input[offset..]) {
            Ok(None) => Ok(None),
            Ok(Some((frame, used))) => {
                self.parsed += used;
                Ok(Some(match frame {
                    Frame::Message { channel, payload } => Frame::Message {
                        channel: channel.start + offset..channel.end + offset,
                        payload: payload.start + offset..payload.end + offset,
                    },
                    other => other,
                }))
            }
            Err(error) => Err(error.to_string()),
        }
    }

    /// Subscribes to `channels` and waits until Redis confirms each (in RESP3 a confirmation is a push; a refusal,
    /// such as an ACL user without access to the channels, is an error reply). Redis confirms all the channels of
    /// one SUBSCRIBE before it runs anything else, so no message comes before the last confirmation, and what
    /// comes after it stays in the buffer for [`Task::serve`].
    async fn subscribe(&mut self, channels: &[String]) -> Result<(), String> {
        let mut args = vec!["SUBSCRIBE"];
        args.extend(channels.iter().map(String::as_str));
        resp::command(&mut self.output, &args);
        self.flush().await?;
        let deadline = tokio::time::Instant::now() + IO_TIMEOUT;
        for _ in channels {
            match self.frame_by(deadline).await? {
                Frame::Push(items) if matches!(items.first(), Some(Value::Bytes(kind)) if kind == b"subscribe") => {}
                Frame::Reply(Value::Error(error)) => return Err(format!("SUBSCRIBE: {error}")),
                other => return Err(format!("SUBSCRIBE answered {other:?}")),
            }
        }
        Ok(())
    }

    /// Loads a script; returns its SHA1, by which `EVALSHA` runs it.
    async fn load(&mut self, script: &str) -> Result<String, String> {
        match self.request(&["SCRIPT", "LOAD", script]).await? {
            Value::Bytes(sha) => Ok(String::from_utf8_lossy(&sha).into_owned()),
            other => Err(format!("SCRIPT LOAD answered {other:?}")),
        }
    }

    /// Sends one command and waits for its answer (setting up the connection, before any subscription).
    async fn request<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Result<Value, String> {
        resp::command(&mut self.output, args);
        self.flush().await?;
        let deadline = tokio::time::Instant::now() + IO_TIMEOUT;
        loop {
            match self.frame_by(deadline).await? {
                Frame::Reply(Value::Error(error)) => return Err(error),
                Frame::Reply(value) => return Ok(value),
                _ => {}
            }
        }
    }

    /// The next frame, read by `deadline` (setting up the connection, where nothing else needs the task).
    async fn frame_by(&mut self, deadline: tokio::time::Instant) -> Result<Frame, String> {
        loop {
            if let Some(frame) = self.next_frame()? {
                return Ok(frame);
            }
            match tokio::time::timeout_at(deadline, self.fill()).await {
                Ok(result) => result?,
                Err(_) => return Err("Redis did not answer in time".into()),
            }
        }
    }
}

struct Task {
    target: Target,
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

/// What a reply on the way answers.
enum Pending {
    Entry(Entry),
    Heartbeat,
    /// The clean-shutdown commands: answered or not, the node stops.
    Departure,
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
        format!("{PREFIX}{NODE_CHANNEL}{node}")
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Op>) {
        let mut backoff = Duration::from_millis(50);
        let mut failures: u64 = 0;
        loop {
            match self.connect().await {
                Ok((link, shas)) => {
                    backoff = Duration::from_millis(50);
                    if failures > 0 {
                        tracing::info!(node = %self.settings.node, "cluster: connected to Redis again");
                    }
                    failures = 0;
                    let mut pending = VecDeque::new();
                    let mut up = false;
                    let end = self.serve(link, &shas, &mut rx, &mut pending, &mut up).await;
                    self.ready.store(false, Ordering::Relaxed);
                    // What was written but not answered may or may not have run: the core learns that it failed.
                    for waiting in pending {
                        if let Pending::Entry(entry) = waiting {
                            for command in entry.into_commands() {
                                self.fail(command).await;
                            }
                        }
                    }
                    match end {
                        End::Stop => return,
                        End::Failed(error) => {
                            tracing::warn!(node = %self.settings.node, %error, "cluster: lost Redis; serving local users only");
                        }
                    }
                    if up && self.events.send(Event::LinkDown).await.is_err() {
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

    /// Opens a connection, says who we are, loads the scripts and subscribes to this node's channels.
    async fn connect(&mut self) -> Result<(Link, Shas), String> {
        let mut link = Link::open(&self.target).await?;
        let mut hello: Vec<&str> = vec!["HELLO", "3"];
        if let Some(password) = &self.target.password {
            hello.extend(["AUTH", self.target.username.as_deref().unwrap_or("default"), password]);
        }
        link.request(&hello).await.map_err(|error| {
            let hint = if error.contains("unknown command") { " (Redis 6 or later is needed)" } else { "" };
            format!("HELLO 3{hint}: {error}")
        })?;
        if self.target.db != 0 {
            link.request(&["SELECT".to_owned(), self.target.db.to_string()]).await?;
        }
        let shas = Shas {
            heartbeat: link.load(scripts::HEARTBEAT).await?,
            claim: link.load(scripts::CLAIM).await?,
            release: link.load(scripts::RELEASE).await?,
            join: link.load(scripts::JOIN).await?,
            leave: link.load(scripts::LEAVE).await?,
            resync: link.load(scripts::RESYNC).await?,
            depart: link.load(scripts::DEPART).await?,
        };
        // Subscribed before the heartbeat registers this node, so that a peer that finds it alive can reach it.
        link.subscribe(&[self.node_channel(&self.settings.node), format!("{PREFIX}{ALL_CHANNEL}")]).await?;
        if !self.liveness.seen.is_empty() || !self.liveness.heard.is_empty() {
            self.liveness.quiet_until = Some(tokio::time::Instant::now() + self.settings.lease());
        }
        Ok((link, shas))
    }

    fn write_heartbeat(&self, link: &mut Link, shas: &Shas) {
        let lease = u64::try_from(self.settings.lease().as_millis()).unwrap_or(u64::MAX).to_string();
        let node = self.settings.node.as_str();
        resp::command(&mut link.output, &["EVALSHA", &shas.heartbeat, "0", PREFIX, node, &lease]);
    }

    /// Serves one connection until it fails or the node stops: runs the core's commands, delivers what is
    /// published, renews the lease. `up` turns true once `LinkUp` has been reported.
    async fn serve(
        &mut self,
        mut link: Link,
        shas: &Shas,
        rx: &mut mpsc::Receiver<Op>,
        pending: &mut VecDeque<Pending>,
        up: &mut bool,
    ) -> End {
        let mut departing = None;
        let end = self.serve_link(&mut link, shas, rx, pending, up, &mut departing).await;
        match departing {
            // Leaving, whatever happened: reconnecting would register the node again.
            Some(done) => {
                if let End::Failed(error) = end {
                    tracing::warn!(%error, "cluster: could not leave cleanly; peers will notice when the lease runs out");
                }
                let _ = done.send(());
                End::Stop
            }
            None => end,
        }
    }

    async fn serve_link(
        &mut self,
        link: &mut Link,
        shas: &Shas,
        rx: &mut mpsc::Receiver<Op>,
        pending: &mut VecDeque<Pending>,
        up: &mut bool,
        departing: &mut Option<tokio::sync::oneshot::Sender<()>>,
    ) -> End {
        // The first heartbeat (the lease taken) is answered before `LinkUp`, on which the core announces itself;
        // messages that arrive meanwhile (the node is already subscribed) wait in `early`.
        self.write_heartbeat(link, shas);
        pending.push_back(Pending::Heartbeat);
        let mut heartbeat_in_flight = true;
        let mut early: Option<Vec<Event>> = Some(Vec::new());
        if let Err(error) = link.flush().await {
            return End::Failed(error);
        }
        let mut heartbeat = tokio::time::interval(self.settings.heartbeat());
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        heartbeat.tick().await;
        let mut batch = Vec::with_capacity(BATCH);
        // Redis must say something within IO_TIMEOUT while a reply is awaited.
        let mut answer_due = tokio::time::Instant::now() + IO_TIMEOUT;
        loop {
            // Everything already read, in order.
            loop {
                let frame = match link.next_frame() {
                    Ok(Some(frame)) => frame,
                    Ok(None) => break,
                    Err(error) => return End::Failed(error),
                };
                let outcome = match frame {
                    Frame::Message { payload, .. } => {
                        let event = self.on_message(&link.input[payload]);
                        match (event, early.as_mut()) {
                            (None, _) => Ok(()),
                            (Some(event), Some(early)) if early.len() < EARLY_EVENTS => {
                                early.push(event);
                                Ok(())
                            }
                            (Some(_), Some(_)) => Err("too many messages before the first heartbeat".into()),
                            (Some(event), None) => self.emit(event).await,
                        }
                    }
                    // Nothing else is pushed to a node that only subscribes.
                    Frame::Push(_) => Ok(()),
                    Frame::Reply(reply) => match pending.pop_front() {
                        None => Err("Redis answered a command that was not sent".into()),
                        Some(Pending::Departure) => {
                            if let Value::Error(error) = reply {
                                tracing::warn!(%error, "cluster: leaving the cluster failed");
                            }
                            Ok(())
                        }
                        Some(Pending::Heartbeat) => {
                            heartbeat_in_flight = false;
                            self.on_heartbeat(reply, &mut early, up).await
                        }
                        Some(Pending::Entry(entry)) => self.on_reply(entry, reply).await,
                    },
                };
                if let Err(error) = outcome {
                    return End::Failed(error);
                }
            }
            if departing.is_some() && pending.is_empty() {
                return End::Stop;
            }
            // In this order: the heartbeat first (it may go behind a pipeline in flight, so that the lease never
            // waits for one), a new pipeline only when the last one is answered (the next batch gathers meanwhile,
            // and reading always gets its turn), then reading, and last the check that Redis has not gone silent.
            tokio::select! {
                biased;
                _ = heartbeat.tick(), if !heartbeat_in_flight && departing.is_none() => {
                    self.write_heartbeat(link, shas);
                    pending.push_back(Pending::Heartbeat);
                    heartbeat_in_flight = true;
                    if let Err(error) = link.flush().await {
                        return End::Failed(error);
                    }
                    answer_due = tokio::time::Instant::now() + IO_TIMEOUT;
                }
                op = rx.recv(), if pending.is_empty() && departing.is_none() && early.is_none() => {
                    match op {
                        None => return End::Stop,
                        Some(Op::Depart(done)) => *departing = Some(done),
                        Some(Op::Command(command)) => batch.push(command),
                    }
                    while departing.is_none() && batch.len() < BATCH {
                        match rx.try_recv() {
                            Ok(Op::Command(command)) => batch.push(command),
                            Ok(Op::Depart(done)) => *departing = Some(done),
                            Err(_) => break,
                        }
                    }
                    for entry in bundle_sends(batch.drain(..)) {
                        self.write_entry(link, shas, &entry);
                        pending.push_back(Pending::Entry(entry));
                    }
                    if departing.is_some() {
                        self.write_departure(link, shas);
                        pending.push_back(Pending::Departure);
                        pending.push_back(Pending::Departure);
                    }
                    if let Err(error) = link.flush().await {
                        return End::Failed(error);
                    }
                    answer_due = tokio::time::Instant::now() + IO_TIMEOUT;
                }
                read = link.fill() => {
                    if let Err(error) = read {
                        return End::Failed(error);
                    }
                    answer_due = tokio::time::Instant::now() + IO_TIMEOUT;
                }
                () = tokio::time::sleep_until(answer_due), if !pending.is_empty() => {
                    return End::Failed("Redis did not answer in time".into());
                }
            }
        }
    }

    async fn emit(&self, event: Event) -> Result<(), String> {
        self.events.send(event).await.map_err(|_| "the node is stopping".to_owned())
    }

    /// A heartbeat result: who is alive. The first one on a connection brings the link up.
    async fn on_heartbeat(
        &mut self,
        reply: Value,
        early: &mut Option<Vec<Event>>,
        up: &mut bool,
    ) -> Result<(), String> {
        if let Value::Error(error) = &reply {
            return Err(format!("heartbeat: {error}"));
        }
        if let Some(held) = early.take() {
            self.ready.store(true, Ordering::Relaxed);
            self.emit(Event::LinkUp).await?;
            *up = true;
            for event in held {
                self.emit(event).await?;
            }
        }
        for node in self.liveness.update(&self.settings.node, strings(&reply)) {
            self.encodings.forget(&node);
            tracing::info!(node = %self.settings.node, down = %node, "cluster: a node's lease ran out");
            self.emit(Event::NodeDown(node)).await?;
        }
        Ok(())
    }

    /// A reply to one entry of a pipeline. An error reply (a script flushed by an operator, a Redis out of memory)
    /// fails the entry's commands and the connection, which reconnecting (and loading the scripts again) repairs.
    async fn on_reply(&self, entry: Entry, reply: Value) -> Result<(), String> {
        if let Value::Error(error) = reply {
            for command in entry.into_commands() {
                self.fail(command).await;
            }
            return Err(error);
        }
        let events: Vec<Event> = match entry {
            Entry::Command(command) => answer(command, reply).into_iter().collect(),
            // Somebody received the bundle: nothing to report for any of its messages.
            Entry::Bundle { .. } if reply != Value::Int(0) => return Ok(()),
            bundle => bundle.into_commands().into_iter().filter_map(|c| answer(c, reply.clone())).collect(),
        };
        for event in events {
            self.emit(event).await?;
        }
        Ok(())
    }

    /// A published envelope: the event it makes, if it is from another node and readable.
    fn on_message(&mut self, payload: &[u8]) -> Option<Event> {
        match codec::decode(payload) {
            Ok(envelope) if envelope.from != self.settings.node => {
                self.liveness.heard_from(&envelope.from);
                self.encodings.heard(&envelope);
                Some(Event::Messages { from: envelope.from, messages: envelope.messages })
            }
            Ok(_) => None,
            Err(error) => {
                tracing::warn!(%error, "cluster: ignoring a malformed message");
                None
            }
        }
    }

    /// The clean-shutdown commands: tell every node, then drop this node's keys.
    fn write_departure(&self, link: &mut Link, shas: &Shas) {
        self.write_publish(link, None, &[Message::Sync { users: Vec::new(), reply: false }]);
        resp::command(&mut link.output, &["EVALSHA", &shas.depart, "0", PREFIX, self.settings.node.as_str()]);
    }

    /// Appends `PUBLISH` of `messages` as one envelope, to node `to` or (`None`) to every node.
    fn write_publish(&self, link: &mut Link, to: Option<&NodeId>, messages: &[Message]) {
        // The channel's name goes out in pieces: one envelope per relayed burst must not allocate it each time.
        let (channel, node): (&str, &str) = match to {
            Some(node) => (NODE_CHANNEL, node.as_str()),
            None => (ALL_CHANNEL, ""),
        };
        let channel = [PREFIX.as_bytes(), channel.as_bytes(), node.as_bytes()];
        resp::publish(&mut link.output, &mut link.scratch, &channel, |out| {
            self.encodings.encode_into(&self.settings.node, to, messages, out);
        });
    }

    /// Appends the commands of one pipeline entry to the connection's output.
    fn write_entry(&self, link: &mut Link, shas: &Shas, entry: &Entry) {
        let node = self.settings.node.as_str();
        let flag = |on: bool| if on { "1" } else { "0" };
        let command = match entry {
            Entry::Bundle { node: to, messages } => return self.write_publish(link, Some(to), messages),
            Entry::Command(command) => command,
        };
        let out = &mut link.output;
        match command {
            Command::Claim { key, replace, .. } => {
                resp::command(out, &["EVALSHA", &shas.claim, "0", PREFIX, node, key, flag(*replace)]);
            }
            Command::Release { key } => resp::command(out, &["EVALSHA", &shas.release, "0", PREFIX, node, key]),
            Command::Join { room, room_name, member, password, check_password, max_size, .. } => {
                let max_size = max_size.to_string();
                let password = password.as_deref().unwrap_or("");
                resp::command(
                    out,
                    &[
                        "EVALSHA",
                        &shas.join,
                        "0",
                        PREFIX,
                        node,
                        room,
                        room_name,
                        member,
                        password,
                        flag(*check_password),
                        &max_size,
                    ],
                );
            }
            Command::Leave { room, member } => {
                resp::command(out, &["EVALSHA", &shas.leave, "0", PREFIX, node, room, member]);
            }
            Command::Resync { names, rooms } => {
                let mut args: Vec<String> =
                    vec!["EVALSHA".into(), shas.resync.clone(), "0".into(), PREFIX.into(), node.into()];
                args.push(names.len().to_string());
                args.extend(names.iter().map(|name| name.to_string()));
                args.push(rooms.len().to_string());
                for room in rooms {
                    args.push(room.room.to_string());
                    args.push(room.room_name.to_string());
                    args.push(room.password.as_deref().unwrap_or("").to_owned());
                    args.push(room.members.len().to_string());
                    args.extend(room.members.iter().map(|member| member.to_string()));
                }
                resp::command(out, &args);
            }
            // `bundle_sends` folds every Send into a bundle; this arm is the same thing for one message.
            Command::Send { node: to, message } => self.write_publish(link, Some(to), std::slice::from_ref(message)),
            Command::Broadcast { message } => self.write_publish(link, None, std::slice::from_ref(message)),
        }
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
            Value::Bytes(bytes) => String::from_utf8_lossy(bytes).into_owned(),
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
        let bulk = |s: &str| Value::Bytes(s.as_bytes().to_vec());
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
