//! The `relay` scenario: caller/callee pairs exchange offers/answers and ICE candidates through the server as fast as
//! a window of unacknowledged messages allows, and the tool reports throughput, latency and delivery faults.
//!
//! Both ends of a pair are driven by one task, so the receiver's receipt is the sender's acknowledgement without any
//! extra message on the wire: a pair keeps `window` messages in flight, and the end that receives a message answers it
//! (caller sends offers, callee answers, both send candidates; one SDP per `candidates_per_sdp` candidates in each
//! direction).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::time::Instant;

use crate::net::{self, Target};
use crate::payload::{self, SdpKind, Stamp, Template};
use crate::proto;
use crate::seq::SeqTracker;
use crate::stats::{Recorder, RunOptions, SharedHistogram, Table, Usage};
use crate::ws::{Incoming, Transport, TungConn, WsConn};

/// Which server protocol the pairs speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RelayDialect {
    /// Switchboard protocol v1 (`offer`/`answer`/`candidate` with `to`).
    V1,
    /// The classic tutorial's `offer`/`answer`/`ICE` with `TargetUserName` (Switchboard or the tutorial server).
    Tutorial,
    /// matchbox_server: `{"Signal":{"receiver":ID,"data":...}}`, one room (URL path) per pair.
    Matchbox,
    /// PeerJS server: `{"type":"OFFER","dst":ID,"payload":...}` on `/peerjs?key=..&id=..&token=..`.
    Peerjs,
}

impl RelayDialect {
    fn name(self) -> &'static str {
        match self {
            RelayDialect::V1 => "v1",
            RelayDialect::Tutorial => "tutorial",
            RelayDialect::Matchbox => "matchbox",
            RelayDialect::Peerjs => "peerjs",
        }
    }
}

/// Which WebSocket client implementation drives the connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Client {
    /// This tool's own client: buffers reused, frames rendered and masked in place, batched writes.
    Lean,
    /// tokio-tungstenite, to check what the lean client saves.
    Tungstenite,
}

/// Which end of a pair sends when a window slot frees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TurnOrder {
    /// The end that received a message answers it, as in a real exchange: a burst of offer and candidates is
    /// answered by a burst of answer and candidates.
    Answer,
    /// Strictly alternating ends, message by message, whoever freed the slot: a batch of arrivals at one end is
    /// answered half from each end (the tool's only order until 2026-11-28).
    Alternate,
}

impl TurnOrder {
    fn name(self) -> &'static str {
        match self {
            Self::Answer => "answer",
            Self::Alternate => "alternate",
        }
    }
}

/// Options of `relay`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// WebSocket URL of the server (loopback only). For matchbox the path is replaced by one room per pair; for
    /// PeerJS give the server's `/peerjs` path.
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    pub url: String,
    /// Protocol the clients speak.
    #[arg(long, value_enum, default_value = "v1")]
    pub dialect: RelayDialect,
    /// Caller/callee pairs.
    #[arg(long, default_value_t = 100)]
    pub pairs: usize,
    /// Messages in flight per pair (sent, not yet received by the other side).
    #[arg(long, default_value_t = 16)]
    pub window: usize,
    /// Which end sends when a slot of the window frees.
    #[arg(long, value_enum, default_value = "answer")]
    pub turns: TurnOrder,
    /// Messages per second over all pairs, spread evenly (each pair sends every pairs/rate seconds while its window
    /// allows); 0 sends as fast as the window allows. A fixed rate is how latency is compared between setups.
    #[arg(long, default_value_t = 0.0, value_name = "MESSAGES")]
    pub rate: f64,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 2.0, value_name = "SECONDS")]
    pub warmup: f64,
    /// Seconds measured.
    #[arg(long, default_value_t = 10.0, value_name = "SECONDS")]
    pub duration: f64,
    /// ICE candidates per offer or answer in each direction.
    #[arg(long, default_value_t = 4)]
    pub candidates_per_sdp: u64,
    /// Size of the SDP text of offers and answers.
    #[arg(long, default_value_t = 3000, value_name = "BYTES")]
    pub sdp_bytes: usize,
    /// Size of a candidate object.
    #[arg(long, default_value_t = 250, value_name = "BYTES")]
    pub candidate_bytes: usize,
    /// Pairs logging in at once.
    #[arg(long, default_value_t = 50)]
    pub concurrency: usize,
    /// Options every signaling scenario takes.
    #[command(flatten)]
    pub run: RunOptions,
    /// WebSocket client implementation (for checking the load generator's own cost).
    #[arg(long, value_enum, default_value = "lean")]
    pub client: Client,
    /// PeerJS API key.
    #[arg(long, default_value = "peerjs")]
    pub peerjs_key: String,
    /// Where the callee ends connect when it differs from `url` (the `cluster` scenario: another node).
    #[arg(skip)]
    pub callee_url: Option<String>,
    /// More processes whose CPU and RSS count as the server's (the `cluster` scenario's second node and Redis).
    #[arg(skip)]
    pub more_server_pids: Vec<u32>,
}

/// Options of `cluster`: the relay scenario with the caller of every pair on one node and the callee on another.
#[derive(Debug, Clone, clap::Args)]
pub struct ClusterArgs {
    #[command(flatten)]
    pub relay: Args,
    /// WebSocket URL of the second node (loopback only); callers connect to `--url`, callees here.
    #[arg(long)]
    pub callee_url: String,
    /// Process id of the second node; its CPU and RSS are added to `--server-pid`'s.
    #[arg(long)]
    pub callee_server_pid: Option<u32>,
    /// Process id of the cluster's redis-server; its CPU and RSS are added too.
    #[arg(long)]
    pub redis_pid: Option<u32>,
}

pub async fn run_cluster(args: ClusterArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        matches!(args.relay.dialect, RelayDialect::V1 | RelayDialect::Tutorial),
        "cluster runs the v1 or tutorial dialect (Switchboard nodes)"
    );
    anyhow::ensure!(args.callee_url != args.relay.url, "--callee-url must name another node than --url");
    anyhow::ensure!(
        args.relay.run.server_pid.is_some() || (args.callee_server_pid.is_none() && args.redis_pid.is_none()),
        "--callee-server-pid and --redis-pid add to --server-pid's figures: give --server-pid too"
    );
    let mut relay = args.relay;
    relay.callee_url = Some(args.callee_url);
    relay.more_server_pids = args.callee_server_pid.into_iter().chain(args.redis_pid).collect();
    run(relay).await
}

/// How long in-flight messages may take to arrive after sending stops before they count as lost.
const DRAIN: Duration = Duration::from_secs(5);

/// When the pairs send and what is measured, shared with every pair task.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    epoch: Instant,
    warm_end: Instant,
    measure_end: Instant,
    drain_end: Instant,
}

/// What one pair saw.
#[derive(Debug, Default)]
struct PairResult {
    sent: [u64; 2],
    trackers: [SeqTracker; 2],
    /// Delivered within the measured interval.
    delivered: u64,
    bytes: u64,
    misrouted: u64,
    errors: u64,
    first_error: Option<String>,
    other_frames: u64,
    failure: Option<String>,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(args.pairs >= 1 && args.window >= 1, "--pairs and --window must be at least 1");
    anyhow::ensure!(args.candidates_per_sdp <= 1000, "--candidates-per-sdp is at most 1000");
    anyhow::ensure!((0.0..=10_000_000.0).contains(&args.rate), "--rate is 0 to 10,000,000 messages per second");
    anyhow::ensure!(
        args.rate == 0.0 || args.pairs as f64 / args.rate <= 60.0,
        "--rate must give each pair at least one message a minute"
    );
    anyhow::ensure!((0.0..=3600.0).contains(&args.warmup), "--warmup is 0 to 3600 seconds");
    anyhow::ensure!(args.duration > 0.0 && args.duration <= 3600.0, "--duration is above 0 and at most 3600 seconds");
    anyhow::ensure!(args.sdp_bytes <= 40_000 && args.candidate_bytes <= 3_500, "payloads must fit Switchboard's caps");
    let caller = Target::parse(&args.url)?;
    let callee = match &args.callee_url {
        Some(url) => Target::parse(url)?,
        None => caller.clone(),
    };
    net::ensure_fd_room(args.pairs * 2)?;
    let limit = Duration::from_secs(args.run.timeout);
    let outcome = tokio::time::timeout(limit, measure(&args, [caller, callee]))
        .await
        .map_err(|_| anyhow::anyhow!("relay did not finish within --timeout {} s", args.run.timeout))??;
    outcome.print(&args);
    outcome.verdict()
}

struct Outcome {
    login: Duration,
    measured: Duration,
    pairs: Vec<PairResult>,
    latency: crate::stats::Summary,
    usage: crate::stats::UsageDelta,
}

/// `targets`: where the caller and the callee of each pair connect (the same server but in `cluster`).
async fn measure(args: &Args, targets: [Target; 2]) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let prefix = args.run.prefix.clone().unwrap_or_else(|| proto::default_prefix("rl"));
    let histogram = SharedHistogram::new();
    let (ready_tx, mut ready_rx) = mpsc::channel::<Result<(), String>>(args.pairs);
    let (go_tx, go_rx) = watch::channel(None::<Schedule>);
    let gate = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let mut tasks = Vec::with_capacity(args.pairs);
    for p in 0..args.pairs {
        let pair = Pair::new(args, &targets, &prefix, p);
        let (ready_tx, go_rx, gate, histogram) = (ready_tx.clone(), go_rx.clone(), gate.clone(), histogram.clone());
        tasks.push(tokio::spawn(async move {
            let permit = gate.acquire_owned().await;
            let conns = pair.login().await;
            drop(permit);
            let prepared = conns.and_then(|(conns, peers)| Ok((conns, pair.templates(&peers)?)));
            let (conns, templates) = match prepared {
                Ok(prepared) => prepared,
                Err(e) => return pair.failed(&ready_tx, e).await,
            };
            match pair.client {
                Client::Lean => pair.drive(conns, templates, ready_tx, go_rx, histogram).await,
                Client::Tungstenite => {
                    let [a, b] = conns;
                    let converted =
                        async { anyhow::Ok([TungConn::from_lean(a).await?, TungConn::from_lean(b).await?]) };
                    match converted.await {
                        Ok(conns) => pair.drive(conns, templates, ready_tx, go_rx, histogram).await,
                        Err(e) => pair.failed(&ready_tx, e).await,
                    }
                }
            }
        }));
    }
    drop(ready_tx);
    for _ in 0..args.pairs {
        match ready_rx.recv().await {
            Some(Ok(())) => {}
            Some(Err(e)) => anyhow::bail!("login failed: {e}"),
            None => anyhow::bail!("a pair task ended before logging in"),
        }
    }
    let login = started.elapsed();
    let epoch = Instant::now();
    let warm_end = epoch + secs(args.warmup);
    let measure_end = warm_end + secs(args.duration);
    let schedule = Schedule { epoch, warm_end, measure_end, drain_end: measure_end + DRAIN };
    go_tx.send(Some(schedule)).context("no pair is left")?;
    tokio::time::sleep_until(warm_end).await;
    let usage = Usage::start(args.run.server_pid.into_iter().chain(args.more_server_pids.iter().copied()))?;
    let measuring = Instant::now();
    tokio::time::sleep_until(measure_end).await;
    let measured = measuring.elapsed();
    let usage = usage.finish(measured)?;
    let mut pairs = Vec::with_capacity(tasks.len());
    for task in tasks {
        pairs.push(task.await.context("a pair task panicked")?);
    }
    Ok(Outcome { login, measured, pairs, latency: histogram.summary(), usage })
}

fn secs(s: f64) -> Duration {
    Duration::try_from_secs_f64(s).unwrap_or(Duration::ZERO)
}

async fn wait_for_start(mut go: watch::Receiver<Option<Schedule>>) -> Option<Schedule> {
    loop {
        if let Some(schedule) = *go.borrow_and_update() {
            return Some(schedule);
        }
        go.changed().await.ok()?;
    }
}

/// Pre-rendered messages of one direction.
struct Direction {
    sdp: Template,
    candidate: Template,
}

/// Everything a pair needs to log in and send; cheap to build.
struct Pair {
    dialect: RelayDialect,
    /// The server of the pair's caller; matchbox and PeerJS pairs use it for both ends.
    target: Target,
    /// The server of the pair's callee (another node in `cluster`).
    callee_target: Target,
    index: usize,
    names: [String; 2],
    window: usize,
    turns: TurnOrder,
    /// Time between two sends of this pair at a fixed `--rate`.
    pace: Option<Duration>,
    period: u64,
    sdp_bytes: usize,
    candidate_bytes: usize,
    peerjs_key: String,
    client: Client,
}

impl Pair {
    fn new(args: &Args, targets: &[Target; 2], prefix: &str, index: usize) -> Self {
        Self {
            dialect: args.dialect,
            target: targets[0].clone(),
            callee_target: targets[1].clone(),
            index,
            names: [format!("{prefix}{index}a"), format!("{prefix}{index}b")],
            window: args.window,
            turns: args.turns,
            pace: (args.rate > 0.0).then(|| secs(args.pairs as f64 / args.rate)),
            period: args.candidates_per_sdp + 1,
            sdp_bytes: args.sdp_bytes,
            candidate_bytes: args.candidate_bytes,
            peerjs_key: args.peerjs_key.clone(),
            client: args.client,
        }
    }

    /// Where in the pacing interval this pair starts, in [0, 1): spread evenly by its index.
    fn stagger(&self) -> f64 {
        // The golden ratio's fractional part spreads any number of pairs evenly without knowing how many there are.
        (self.index as f64 * 0.618_033_988_75).fract()
    }

    async fn failed(&self, ready: &mpsc::Sender<Result<(), String>>, e: anyhow::Error) -> PairResult {
        let _ = ready.send(Err(format!("pair {}: {e:#}", self.index))).await;
        PairResult { failure: Some(format!("{e:#}")), ..PairResult::default() }
    }

    /// Reports the pair ready, waits for the start, runs the exchange and leaves.
    async fn drive<C: Transport>(
        &self,
        mut conns: [C; 2],
        templates: [Direction; 2],
        ready: mpsc::Sender<Result<(), String>>,
        go: watch::Receiver<Option<Schedule>>,
        histogram: Arc<SharedHistogram>,
    ) -> PairResult {
        let _ = ready.send(Ok(())).await;
        let mut result = PairResult::default();
        let Some(schedule) = wait_for_start(go).await else { return result };
        let mut recorder = Recorder::new(histogram);
        if let Err(e) = self.exchange(&mut conns, &templates, schedule, &mut recorder, &mut result).await {
            result.failure = Some(format!("{e:#}"));
        }
        self.leave(&mut conns).await;
        result
    }

    /// Connects and logs in both ends; returns the connections and the ids the server knows them by.
    async fn login(&self) -> anyhow::Result<([WsConn; 2], [String; 2])> {
        let source = |side: usize| self.index * 2 + side;
        match self.dialect {
            RelayDialect::V1 => {
                let mut a = proto::login_v1(&self.target, source(0), &self.names[0]).await?;
                let b = proto::login_v1(&self.callee_target, source(1), &self.names[1]).await?;
                self.await_callee_listed(&mut a).await?;
                Ok(([a, b], self.names.clone()))
            }
            RelayDialect::Tutorial => {
                let mut a = proto::login_tutorial(&self.target, source(0), &self.names[0]).await?;
                let b = proto::login_tutorial(&self.callee_target, source(1), &self.names[1]).await?;
                self.await_callee_listed(&mut a).await?;
                Ok(([a, b], self.names.clone()))
            }
            RelayDialect::Matchbox => {
                let room = self.target.with_path(format!("/{}", self.names[0].trim_end_matches('a')));
                let (mut a, id_a) = matchbox_join(&room, source(0)).await?;
                let (mut b, id_b) = matchbox_join(&room, source(1)).await?;
                // The server announces the second peer of a room to the first only once both are registered; before
                // that, signals to the newcomer are dropped.
                let new_peer = |m: &[u8]| Ok(memchr::memmem::find(m, b"\"NewPeer\"").map(|_| ()));
                tokio::select! {
                    r = a.wait_for(new_peer) => r?,
                    r = b.wait_for(new_peer) => r?,
                }
                Ok(([a, b], [id_a, id_b]))
            }
            RelayDialect::Peerjs => {
                let mut conns = Vec::with_capacity(2);
                for side in 0..2 {
                    let path = format!(
                        "{}{}key={}&id={}&token=t{}",
                        self.target.path,
                        if self.target.path.contains('?') { '&' } else { '?' },
                        self.peerjs_key,
                        self.names[side],
                        self.index
                    );
                    let mut conn = WsConn::connect(&self.target.with_path(path), source(side)).await?;
                    conn.wait_for(|m| {
                        anyhow::ensure!(
                            !proto::has_type(m, "ERROR") && !proto::has_type(m, "ID-TAKEN"),
                            "PeerJS refused: {}",
                            proto::excerpt(m)
                        );
                        Ok(proto::has_type(m, "OPEN").then_some(()))
                    })
                    .await?;
                    conns.push(conn);
                }
                let [a, b]: [WsConn; 2] = conns.try_into().map_err(|_| anyhow::anyhow!("two connections"))?;
                Ok(([a, b], self.names.clone()))
            }
        }
    }

    /// Across nodes, waits until the caller's node lists the callee, as a person would see the callee online before
    /// calling: a node learns of another node's login from its presence broadcast, up to a presence tick later, and
    /// until then answers `unknown-peer`.
    async fn await_callee_listed(&self, caller: &mut WsConn) -> anyhow::Result<()> {
        if self.callee_target.addr == self.target.addr {
            return Ok(());
        }
        let quoted = format!("\"{}\"", self.names[1]);
        let finder = memchr::memmem::Finder::new(quoted.as_bytes());
        caller.wait_for(|m| Ok(finder.find(m).map(|_| ()))).await
    }

    /// Renders the messages of both directions: direction 0 goes from a to b (offers), 1 from b to a (answers).
    fn templates(&self, ids: &[String; 2]) -> anyhow::Result<[Direction; 2]> {
        let render = |d: usize| -> anyhow::Result<Direction> {
            let (me, peer) = (&ids[d], &ids[1 - d]);
            let kind = if d == 0 { SdpKind::Offer } else { SdpKind::Answer };
            let sdp = payload::sdp_text(kind, self.sdp_bytes);
            let candidate = payload::candidate_json((self.index * 2 + d) as u32, self.candidate_bytes);
            let (sdp, candidate) = relay_messages(self.dialect, kind, me, peer, sdp, candidate, self.index);
            Ok(Direction { sdp: Template::new(sdp.to_string())?, candidate: Template::new(candidate.to_string())? })
        };
        Ok([render(0)?, render(1)?])
    }

    async fn exchange<C: Transport>(
        &self,
        conns: &mut [C; 2],
        templates: &[Direction; 2],
        schedule: Schedule,
        recorder: &mut Recorder,
        result: &mut PairResult,
    ) -> anyhow::Result<()> {
        let finder = Stamp::finder();
        let streams = [(self.index * 2) as u32, (self.index * 2 + 1) as u32];
        let mut turns = Turns::new(self.window, self.turns);
        let mut sending = true;
        // Pairs start their paced sends spread over one interval, not all at the epoch.
        let mut next_send = schedule.epoch + self.pace.map_or(Duration::ZERO, |pace| pace.mul_f64(self.stagger()));
        let deadline = tokio::time::sleep_until(schedule.measure_end);
        tokio::pin!(deadline);
        loop {
            let now = Instant::now();
            if sending && now >= schedule.measure_end {
                sending = false;
                deadline.as_mut().reset(schedule.drain_end);
            }
            if !sending && (turns.in_flight() == 0 || now >= schedule.drain_end) {
                return Ok(());
            }
            if sending && turns.may_send() && now >= next_send {
                // Stamped when sent. At a fixed rate the due time would also count a window held back by the
                // server, but it counts the timer's own lateness too (Tokio's timers have 1 ms resolution), which at
                // 10,000 messages/s swamps the sub-millisecond latencies being compared.
                let sent_us = micros(now - schedule.epoch);
                while now >= next_send {
                    let Some(d) = turns.take() else { break };
                    if let Some(pace) = self.pace {
                        next_send += pace;
                    }
                    let seq = result.sent[d];
                    result.sent[d] += 1;
                    let template =
                        if seq.is_multiple_of(self.period) { &templates[d].sdp } else { &templates[d].candidate };
                    let stamp = Stamp { stream: streams[d], seq, sent_us };
                    conns[d].queue_text_with(template.len(), |out| template.render_into(out, stamp));
                }
            }
            for conn in conns.iter_mut() {
                conn.flush().await?;
            }
            let [a, b] = &mut *conns;
            let paced_wait = sending && turns.may_send() && self.pace.is_some();
            tokio::select! {
                r = a.fill() => r?,
                r = b.fill() => r?,
                () = &mut deadline => {}
                () = tokio::time::sleep_until(next_send), if paced_wait => {}
            }
            let now = Instant::now();
            let arrival = Arrival {
                now_us: micros(now - schedule.epoch),
                measured: now >= schedule.warm_end && now < schedule.measure_end,
            };
            // Direction 0 arrives at b, direction 1 at a.
            turns.delivered(0, receive(b, 0, streams[0], &finder, arrival, recorder, result)?);
            turns.delivered(1, receive(a, 1, streams[1], &finder, arrival, recorder, result)?);
        }
    }

    async fn leave<C: Transport>(&self, conns: &mut [C; 2]) {
        for conn in conns.iter_mut() {
            match self.dialect {
                RelayDialect::V1 => proto::logout_v1(conn).await,
                _ => proto::close(conn).await,
            }
        }
    }
}

async fn matchbox_join(room: &Target, source: usize) -> anyhow::Result<(WsConn, String)> {
    let mut conn = WsConn::connect(room, source).await?;
    let id = conn
        .wait_for(|m| {
            let Ok(Value::Object(event)) = serde_json::from_slice::<Value>(m) else { return Ok(None) };
            Ok(event.get("IdAssigned").and_then(Value::as_str).map(str::to_string))
        })
        .await?;
    Ok((conn, id))
}

/// The SDP message and the candidate message one side sends to the other, in a dialect, each with one stamp
/// placeholder (in the SDP text and in the candidate line).
fn relay_messages(
    dialect: RelayDialect,
    kind: SdpKind,
    me: &str,
    peer: &str,
    sdp: String,
    candidate: Value,
    pair: usize,
) -> (Value, Value) {
    let description = json!({"type": kind.as_str(), "sdp": sdp});
    match dialect {
        RelayDialect::V1 => (
            json!({"type": kind.as_str(), "to": peer, "sdp": description}),
            json!({"type": "candidate", "to": peer, "candidate": candidate}),
        ),
        RelayDialect::Tutorial => (
            json!({"type": kind.as_str(), "name": me, "TargetUserName": peer, "sdp": description}),
            json!({"type": "ICE", "candidate": candidate, "TargetUserName": peer}),
        ),
        // What matchbox_socket puts in `data`: its PeerSignal enum, SDP and candidate as strings.
        RelayDialect::Matchbox => {
            let signal = if kind == SdpKind::Offer { "Offer" } else { "Answer" };
            (
                json!({"Signal": {"receiver": peer, "data": {signal: sdp}}}),
                json!({"Signal": {"receiver": peer, "data": {"IceCandidate": candidate.to_string()}}}),
            )
        }
        // What the PeerJS client library sends for a media connection.
        RelayDialect::Peerjs => {
            let connection = format!("mc_bench{pair}");
            (
                json!({"type": kind.as_str().to_uppercase(), "dst": peer,
                       "payload": {"sdp": description, "type": "media", "connectionId": connection}}),
                json!({"type": "CANDIDATE", "dst": peer,
                       "payload": {"candidate": candidate, "type": "media", "connectionId": connection}}),
            )
        }
    }
}

/// Whose turn it is to send, in a pair with a window of messages in flight. In [`TurnOrder::Answer`] the end that
/// receives a message answers it (an offer with an answer, a candidate with a candidate), as the two ends of a real
/// call do: a batch of arrivals at one end is answered in one write from that end. [`TurnOrder::Alternate`] splits
/// it between both ends, which costs a write per end, and the server a read per end. With a window of 1 both play
/// ping-pong.
#[derive(Debug)]
struct Turns {
    order: TurnOrder,
    window: usize,
    /// Messages each direction may send now; direction 0 is sent by the caller (conns[0]). The rest of the window is
    /// in flight.
    owed: [usize; 2],
    /// Which direction goes first when both may send, so that a paced pair alternates.
    next: usize,
}

impl Turns {
    /// The window starts split between the two ends, the caller taking the odd one.
    fn new(window: usize, order: TurnOrder) -> Self {
        Self { order, window, owed: [window.div_ceil(2), window / 2], next: 0 }
    }

    fn may_send(&self) -> bool {
        self.owed[0] + self.owed[1] > 0
    }

    fn in_flight(&self) -> usize {
        self.window - self.owed[0] - self.owed[1]
    }

    /// Takes one send: the direction it goes in, if the window allows one.
    fn take(&mut self) -> Option<usize> {
        let d = if self.owed[self.next] > 0 { self.next } else { self.next ^ 1 };
        if self.owed[d] == 0 {
            return None;
        }
        // Alternating ends share the free slots; which end freed one does not matter.
        self.owed[d] -= 1;
        let sent = match self.order {
            TurnOrder::Answer => d,
            TurnOrder::Alternate => self.next,
        };
        self.next = sent ^ 1;
        Some(sent)
    }

    /// `count` messages of `direction` arrived: their receiver may answer as many.
    fn delivered(&mut self, direction: usize, count: usize) {
        self.owed[direction ^ 1] += count.min(self.in_flight());
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[derive(Debug, Clone, Copy)]
struct Arrival {
    now_us: u64,
    measured: bool,
}

/// Takes every complete message a connection has read (the receiving end of `direction`); returns how many window
/// slots they free.
fn receive<C: Transport>(
    conn: &mut C,
    direction: usize,
    stream: u32,
    finder: &memchr::memmem::Finder<'_>,
    arrival: Arrival,
    recorder: &mut Recorder,
    result: &mut PairResult,
) -> anyhow::Result<usize> {
    let mut freed = 0;
    while let Some(incoming) = conn.next()? {
        let payload = match incoming {
            Incoming::Message(payload) => payload,
            Incoming::Close(code) => anyhow::bail!("the server closed a connection (code {code:?})"),
        };
        let message = conn.payload(&payload);
        match Stamp::find(message, finder) {
            Some(stamp) if stamp.stream == stream => {
                if result.trackers[direction].record(stamp.seq).is_new() {
                    freed += 1;
                    if arrival.measured {
                        result.delivered += 1;
                        result.bytes += message.len() as u64;
                        recorder.record(arrival.now_us.saturating_sub(stamp.sent_us));
                    }
                }
            }
            Some(_) => result.misrouted += 1,
            None if proto::has_type(message, "error") || proto::has_type(message, "ERROR") => {
                result.errors += 1;
                if result.first_error.is_none() {
                    result.first_error = Some(proto::excerpt(message));
                }
            }
            None => result.other_frames += 1,
        }
    }
    Ok(freed)
}

impl Outcome {
    fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for p in &self.pairs {
            t.sent += p.sent[0] + p.sent[1];
            t.received += p.trackers.iter().map(|x| x.received).sum::<u64>();
            t.lost += p.trackers[0].lost(p.sent[0]) + p.trackers[1].lost(p.sent[1]);
            t.duplicates += p.trackers.iter().map(|x| x.duplicates + x.bogus).sum::<u64>();
            t.reordered += p.trackers.iter().map(|x| x.reordered).sum::<u64>();
            t.delivered += p.delivered;
            t.bytes += p.bytes;
            t.misrouted += p.misrouted;
            t.errors += p.errors;
            t.other_frames += p.other_frames;
            if p.failure.is_some() {
                t.failed_pairs += 1;
            }
        }
        t
    }

    fn first<'a>(&'a self, pick: impl Fn(&'a PairResult) -> Option<&'a String>) -> Option<&'a str> {
        self.pairs.iter().find_map(pick).map(String::as_str)
    }

    fn print(&self, args: &Args) {
        let t = self.totals();
        let seconds = self.measured.as_secs_f64().max(1e-9);
        let rate = t.delivered as f64 / seconds;
        let byte_rate = t.bytes as f64 / seconds;
        if args.run.json {
            let mut result = json!({
                "scenario": if args.callee_url.is_some() { "cluster" } else { "relay" },
                "dialect": args.dialect.name(),
                "pairs": args.pairs,
                "window": args.window,
                "turns": args.turns.name(),
                "rate": args.rate,
                "warmup_seconds": args.warmup,
                "measured_seconds": seconds,
                "login_seconds": self.login.as_secs_f64(),
                "sent": t.sent,
                "received": t.received,
                "delivered_measured": t.delivered,
                "messages_per_second": rate,
                "bytes_per_second": byte_rate,
                "latency": self.latency.json(),
                "lost": t.lost,
                "duplicates": t.duplicates,
                "reordered": t.reordered,
                "misrouted": t.misrouted,
                "errors": t.errors,
                "first_error": self.first(|p| p.first_error.as_ref()),
                "other_frames": t.other_frames,
                "failed_pairs": t.failed_pairs,
                "first_failure": self.first(|p| p.failure.as_ref()),
            });
            merge(&mut result, self.usage.json(t.delivered));
            println!("{result}");
            return;
        }
        let mut table = Table::default();
        if let Some(callee_url) = &args.callee_url {
            table.row("nodes", format!("callers on {}, callees on {callee_url}", args.url));
        }
        table.row("pairs x window", format!("{} x {} ({} turns)", args.pairs, args.window, args.turns.name()));
        if args.rate > 0.0 {
            table.row("offered rate", format!("{:.0} messages/s", args.rate));
        }
        table.row("logged in in", format!("{:.2} s", self.login.as_secs_f64()));
        table.row("measured", format!("{seconds:.2} s after {} s warm-up", args.warmup));
        table.row("delivered", format!("{rate:.0} messages/s, {:.2} MB/s", byte_rate / 1e6));
        table.row("latency", self.latency.human());
        table.row("sent / received", format!("{} / {}", t.sent, t.received));
        table.row("lost / duplicated / reordered", format!("{} / {} / {}", t.lost, t.duplicates, t.reordered));
        if t.misrouted > 0 {
            table.row("misrouted", t.misrouted.to_string());
        }
        table.row("errors", format!("{}{}", t.errors, note(self.first(|p| p.first_error.as_ref()))));
        if t.failed_pairs > 0 {
            table.row("failed pairs", format!("{}{}", t.failed_pairs, note(self.first(|p| p.failure.as_ref()))));
        }
        self.usage.rows(t.delivered, "message", &mut table);
        let scenario = if args.callee_url.is_some() { "cluster" } else { "relay" };
        print!("{}", table.render(&format!("{scenario} ({})", args.dialect.name())));
    }

    /// A run with lost, duplicated or misrouted messages, errors or failed pairs is not a valid measurement.
    fn verdict(&self) -> anyhow::Result<()> {
        let t = self.totals();
        let hint = match self.first(|p| p.first_error.as_ref()) {
            Some(error) if error.contains("rate-limited") => " (start Switchboard with --rate-per-second 0)",
            _ => "",
        };
        anyhow::ensure!(
            t.lost == 0 && t.duplicates == 0 && t.misrouted == 0 && t.errors == 0 && t.failed_pairs == 0,
            "faults: {} lost, {} duplicated, {} misrouted, {} errors{hint}, {} failed pairs",
            t.lost,
            t.duplicates,
            t.misrouted,
            t.errors,
            t.failed_pairs
        );
        anyhow::ensure!(t.delivered > 0, "nothing was delivered in the measured interval");
        Ok(())
    }
}

fn note(text: Option<&str>) -> String {
    text.map(|t| format!(" (first: {t})")).unwrap_or_default()
}

/// Adds the fields of `extra` (an object) to `into` (an object).
pub fn merge(into: &mut Value, extra: Value) {
    if let (Value::Object(into), Value::Object(extra)) = (into, extra) {
        into.extend(extra);
    }
}

#[derive(Debug, Default)]
struct Totals {
    sent: u64,
    received: u64,
    lost: u64,
    duplicates: u64,
    reordered: u64,
    delivered: u64,
    bytes: u64,
    misrouted: u64,
    errors: u64,
    other_frames: u64,
    failed_pairs: u64,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn rendered(dialect: RelayDialect, kind: SdpKind) -> (Value, Value) {
        let (sdp, candidate) = relay_messages(
            dialect,
            kind,
            "alice",
            "bob",
            payload::sdp_text(kind, 3000),
            payload::candidate_json(1, 250),
            7,
        );
        let stamp = Stamp { stream: 14, seq: 3, sent_us: 99 };
        let finder = Stamp::finder();
        let mut out = Vec::new();
        for message in [&sdp, &candidate] {
            let template = Template::new(message.to_string()).unwrap();
            let bytes = template.rendered(stamp);
            assert_eq!(Stamp::find(&bytes, &finder), Some(stamp), "{dialect:?}");
            out.push(serde_json::from_slice::<Value>(&bytes).unwrap());
        }
        (out.remove(0), out.remove(0))
    }

    fn take_all(turns: &mut Turns) -> Vec<usize> {
        std::iter::from_fn(|| turns.take()).collect()
    }

    #[test]
    fn a_window_starts_split_between_the_ends_and_is_never_exceeded() {
        let mut turns = Turns::new(5, TurnOrder::Answer);
        assert_eq!(take_all(&mut turns), [0, 1, 0, 1, 0]);
        assert_eq!(turns.in_flight(), 5);
        assert!(!turns.may_send());
        // More arrivals than were sent (duplicates) must not widen the window.
        turns.delivered(0, 9);
        assert_eq!(turns.in_flight(), 0);
        assert_eq!(take_all(&mut turns).len(), 5);
    }

    #[test]
    fn the_end_that_receives_answers() {
        let mut turns = Turns::new(16, TurnOrder::Answer);
        assert_eq!(take_all(&mut turns).len(), 16);
        // Six of the caller's messages reach the callee: the callee sends the next six, in one write.
        turns.delivered(0, 6);
        assert_eq!(take_all(&mut turns), [1; 6]);
        turns.delivered(1, 2);
        assert_eq!(take_all(&mut turns), [0; 2]);
        assert_eq!(turns.in_flight(), 16);
    }

    #[test]
    fn alternating_ends_split_a_batch_of_arrivals() {
        let mut turns = Turns::new(16, TurnOrder::Alternate);
        assert_eq!(take_all(&mut turns).len(), 16);
        turns.delivered(0, 6);
        assert_eq!(take_all(&mut turns), [0, 1, 0, 1, 0, 1]);
        assert_eq!(turns.in_flight(), 16);
    }

    #[test]
    fn a_window_of_one_plays_ping_pong_in_both_orders() {
        for order in [TurnOrder::Answer, TurnOrder::Alternate] {
            let mut turns = Turns::new(1, order);
            let mut sent = Vec::new();
            for _ in 0..4 {
                let d = turns.take().unwrap();
                assert_eq!(turns.take(), None);
                sent.push(d);
                turns.delivered(d, 1);
            }
            assert_eq!(sent, [0, 1, 0, 1], "{order:?}");
        }
    }

    #[test]
    fn v1_messages() {
        let (sdp, candidate) = rendered(RelayDialect::V1, SdpKind::Offer);
        assert_eq!((sdp["type"].as_str(), sdp["to"].as_str()), (Some("offer"), Some("bob")));
        assert_eq!(sdp["sdp"]["type"], "offer");
        assert!(sdp.to_string().len() > 3000);
        assert_eq!((candidate["type"].as_str(), candidate["to"].as_str()), (Some("candidate"), Some("bob")));
        assert!(candidate["candidate"]["candidate"].as_str().unwrap().starts_with("candidate:"));
    }

    #[test]
    fn tutorial_messages() {
        let (sdp, candidate) = rendered(RelayDialect::Tutorial, SdpKind::Answer);
        assert_eq!(sdp["type"], "answer");
        assert_eq!((sdp["name"].as_str(), sdp["TargetUserName"].as_str()), (Some("alice"), Some("bob")));
        assert_eq!(candidate["type"], "ICE");
        assert_eq!(candidate["TargetUserName"], "bob");
    }

    #[test]
    fn matchbox_messages() {
        let (sdp, candidate) = rendered(RelayDialect::Matchbox, SdpKind::Offer);
        assert_eq!(sdp["Signal"]["receiver"], "bob");
        assert!(sdp["Signal"]["data"]["Offer"].as_str().unwrap().starts_with("v=0"));
        let ice: Value = serde_json::from_str(candidate["Signal"]["data"]["IceCandidate"].as_str().unwrap()).unwrap();
        assert!(ice["candidate"].is_string());
    }

    #[test]
    fn peerjs_messages() {
        let (sdp, candidate) = rendered(RelayDialect::Peerjs, SdpKind::Answer);
        assert_eq!((sdp["type"].as_str(), sdp["dst"].as_str()), (Some("ANSWER"), Some("bob")));
        assert_eq!(sdp["payload"]["sdp"]["type"], "answer");
        assert_eq!(candidate["type"], "CANDIDATE");
        assert!(candidate["payload"]["candidate"]["candidate"].is_string());
    }
}
