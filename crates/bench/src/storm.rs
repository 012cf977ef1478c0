//! The `storm` scenario: N clients log in as fast as a concurrency bound allows, and each keeps a presence view (the
//! `welcome` list plus `presence` deltas in v1, the latest `RenderUserList` in the tutorial dialect) until it has seen
//! all N online. Reports when the last view became complete and how many presence bytes that took.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;

use crate::net::{self, Target};
use crate::proto;
use crate::stats::{Recorder, RunOptions, SharedHistogram, Table, Usage};
use crate::ws::{Incoming, WsConn};
use crate::Dialect;

/// Options of `storm`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// WebSocket URL of the server (loopback only).
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    pub url: String,
    /// Protocol the clients speak.
    #[arg(long, value_enum, default_value = "v1")]
    pub dialect: Dialect,
    /// Number of clients.
    #[arg(long, default_value_t = 1000)]
    pub clients: usize,
    /// Logins in progress at once (connected, `welcome` not yet received).
    #[arg(long, default_value_t = 200)]
    pub concurrency: usize,
    /// Options every signaling scenario takes.
    #[command(flatten)]
    pub run: RunOptions,
}

/// Which of the N clients a client has seen online, as a bit set indexed by client number.
#[derive(Debug, Clone)]
pub struct View {
    bits: Vec<u64>,
    count: usize,
    clients: usize,
}

impl View {
    pub fn new(clients: usize) -> Self {
        Self { bits: vec![0; clients.div_ceil(64)], count: 0, clients }
    }

    /// The client number behind a name, if it is one of this storm's.
    pub fn index(prefix: &str, clients: usize, name: &str) -> Option<usize> {
        let digits = name.strip_prefix(prefix)?;
        // Exactly the spelling `{prefix}{i}`: no sign, no leading zeros.
        if digits.is_empty()
            || (digits.len() > 1 && digits.starts_with('0'))
            || !digits.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        digits.parse::<usize>().ok().filter(|&i| i < clients)
    }

    pub fn set(&mut self, i: usize, online: bool) {
        let (word, bit) = (i / 64, 1u64 << (i % 64));
        let Some(w) = self.bits.get_mut(word) else { return };
        let was = *w & bit != 0;
        match (was, online) {
            (false, true) => {
                *w |= bit;
                self.count += 1;
            }
            (true, false) => {
                *w &= !bit;
                self.count -= 1;
            }
            _ => {}
        }
    }

    pub fn clear(&mut self) {
        self.bits.fill(0);
        self.count = 0;
    }

    pub fn complete(&self) -> bool {
        self.count == self.clients
    }

    #[cfg(test)]
    pub fn count(&self) -> usize {
        self.count
    }
}

#[derive(Deserialize)]
struct Entry<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
}

/// The parts of `welcome`, `presence` and `RenderUserList` that change a view.
#[derive(Deserialize)]
struct PresenceMessage<'a> {
    #[serde(default, borrow)]
    users: Vec<Entry<'a>>,
    #[serde(default, borrow)]
    joined: Vec<Entry<'a>>,
    #[serde(default, borrow)]
    changed: Vec<Entry<'a>>,
    #[serde(default, borrow)]
    left: Vec<Cow<'a, str>>,
    #[serde(default, borrow)]
    userlist: Vec<Cow<'a, str>>,
}

/// Applies one message to a view; returns whether it was a presence message (welcome, presence, user list).
pub fn apply(view: &mut View, prefix: &str, message: &[u8]) -> anyhow::Result<bool> {
    let list = proto::has_type(message, "RenderUserList");
    if !(list || proto::has_type(message, "welcome") || proto::has_type(message, "presence")) {
        return Ok(false);
    }
    let parsed: PresenceMessage<'_> = serde_json::from_slice(message).context("a presence message")?;
    if list {
        // The tutorial's list replaces the previous one.
        view.clear();
    }
    let clients = view.clients;
    let mut mark = |name: &str, online: bool| {
        if let Some(i) = View::index(prefix, clients, name) {
            view.set(i, online);
        }
    };
    if list {
        for name in &parsed.userlist {
            mark(name, true);
        }
        return Ok(true);
    }
    for entry in parsed.users.iter().chain(&parsed.joined).chain(&parsed.changed) {
        mark(&entry.name, true);
    }
    for name in &parsed.left {
        mark(name, false);
    }
    Ok(true)
}

/// Shared progress of the clients.
#[derive(Default)]
struct Progress {
    logged_in: AtomicUsize,
    complete: AtomicUsize,
    presence_bytes: AtomicU64,
    presence_frames: AtomicU64,
    /// Microseconds from the start until the last view became complete.
    last_complete_us: AtomicU64,
    last_login_us: AtomicU64,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(args.clients >= 1, "--clients must be at least 1");
    let target = Target::parse(&args.url)?;
    net::ensure_fd_room(args.clients)?;
    let prefix = args.run.prefix.clone().unwrap_or_else(|| proto::default_prefix("st"));
    let progress = Arc::new(Progress::default());
    let completion = SharedHistogram::new();
    let (stop_tx, stop_rx) = watch::channel(false);
    let gate = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let usage = Usage::start(args.run.server_pid)?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.run.timeout);
    let mut tasks = Vec::with_capacity(args.clients);
    for i in 0..args.clients {
        let client = Client {
            target: target.clone(),
            dialect: args.dialect,
            index: i,
            clients: args.clients,
            prefix: prefix.clone(),
            started,
            progress: progress.clone(),
        };
        let (gate, stop, completion) = (gate.clone(), stop_rx.clone(), completion.clone());
        tasks.push(tokio::spawn(async move { client.run(gate, stop, completion).await }));
    }
    // Wait for every view to complete, a failed client, or the deadline.
    let outcome = loop {
        if progress.complete.load(Ordering::Relaxed) == args.clients {
            break Ok(());
        }
        if let Some(done) = tasks.iter().position(|t| t.is_finished()) {
            let task = tasks.swap_remove(done);
            let error = match task.await {
                Ok(Err(e)) => format!("{e:#}"),
                Ok(Ok(())) => "a client ended early".to_string(),
                Err(e) => format!("a client task failed: {e}"),
            };
            break Err(error);
        }
        if Instant::now() >= deadline {
            break Err(format!("not complete within --timeout {} s", args.run.timeout));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let elapsed = started.elapsed();
    let usage = usage.finish(elapsed)?;
    let _ = stop_tx.send(true);
    // Clients log out and close; whatever is stuck (say, still connecting at the deadline) is left behind.
    let _ = tokio::time::timeout(Duration::from_secs(5), futures_util::future::join_all(tasks)).await;
    let logins = progress.logged_in.load(Ordering::Relaxed);
    let complete = progress.complete.load(Ordering::Relaxed);
    let login_s = progress.last_login_us.load(Ordering::Relaxed) as f64 / 1e6;
    let complete_s = progress.last_complete_us.load(Ordering::Relaxed) as f64 / 1e6;
    let bytes = progress.presence_bytes.load(Ordering::Relaxed);
    let frames = progress.presence_frames.load(Ordering::Relaxed);
    let views = completion.summary();
    let dialect = format!("{:?}", args.dialect).to_lowercase();
    if args.run.json {
        let mut result = json!({
            "scenario": "storm",
            "dialect": dialect,
            "clients": args.clients,
            "concurrency": args.concurrency,
            "logged_in": logins,
            "complete": complete,
            "login_seconds": login_s,
            "complete_seconds": complete_s,
            "view_complete": views.json(),
            "presence_bytes": bytes,
            "presence_frames": frames,
            "presence_bytes_per_client": bytes as f64 / args.clients as f64,
            "failure": outcome.as_ref().err(),
        });
        crate::relay::merge(&mut result, usage.json(args.clients as u64));
        println!("{result}");
    } else {
        let mut table = Table::default();
        table.row("clients", format!("{} ({} logging in at once)", args.clients, args.concurrency));
        table.row("all logged in after", format!("{login_s:.2} s ({logins} clients)"));
        table.row("all views complete after", format!("{complete_s:.2} s ({complete} clients)"));
        table.row("view complete, per client", views.human());
        table.row(
            "presence received",
            format!(
                "{:.1} MB in {frames} frames ({:.1} KB per client)",
                bytes as f64 / 1e6,
                bytes as f64 / 1e3 / args.clients as f64
            ),
        );
        usage.rows(args.clients as u64, "login", &mut table);
        if let Err(e) = &outcome {
            table.row("failure", e.clone());
        }
        print!("{}", table.render(&format!("storm ({dialect})")));
    }
    outcome.map_err(anyhow::Error::msg)
}

struct Client {
    target: Target,
    dialect: Dialect,
    index: usize,
    clients: usize,
    prefix: String,
    started: Instant,
    progress: Arc<Progress>,
}

impl Client {
    async fn run(
        self,
        gate: Arc<Semaphore>,
        mut stop: watch::Receiver<bool>,
        completion: Arc<SharedHistogram>,
    ) -> anyhow::Result<()> {
        let name = format!("{}{}", self.prefix, self.index);
        let mut view = View::new(self.clients);
        let mut permit = Some(gate.acquire_owned().await?);
        let mut conn = WsConn::connect(&self.target, self.index).await.with_context(|| format!("client {name}"))?;
        let login = match self.dialect {
            Dialect::V1 => json!({"type": "login", "name": name}),
            Dialect::Tutorial => json!({"type": "Login", "UserName": name}),
        };
        conn.queue_text(login.to_string().as_bytes());
        conn.flush().await?;
        let mut logged_in = false;
        let mut recorder = Recorder::new(completion);
        let mut done = false;
        loop {
            while let Some(incoming) = conn.next()? {
                let payload = match incoming {
                    Incoming::Message(p) => p,
                    Incoming::Close(code) => anyhow::bail!("client {name}: the server closed (code {code:?})"),
                };
                let message = conn.payload(&payload);
                proto::refuse_error(message).with_context(|| format!("client {name}"))?;
                if apply(&mut view, &self.prefix, message).with_context(|| format!("client {name}"))? {
                    self.progress.presence_bytes.fetch_add(message.len() as u64, Ordering::Relaxed);
                    self.progress.presence_frames.fetch_add(1, Ordering::Relaxed);
                    if !logged_in {
                        logged_in = true;
                        // Logged in: let the next client start.
                        permit = None;
                        self.progress.logged_in.fetch_add(1, Ordering::Relaxed);
                        self.progress.last_login_us.fetch_max(self.since_start(), Ordering::Relaxed);
                    }
                }
            }
            if !done && view.complete() {
                done = true;
                let at = self.since_start();
                recorder.record(at);
                recorder.flush();
                self.progress.last_complete_us.fetch_max(at, Ordering::Relaxed);
                self.progress.complete.fetch_add(1, Ordering::Relaxed);
            }
            conn.flush().await?;
            tokio::select! {
                r = conn.fill() => r.with_context(|| format!("client {name}"))?,
                _ = stop.changed() => break,
            }
        }
        drop(permit);
        match self.dialect {
            Dialect::V1 => proto::logout_v1(&mut conn).await,
            Dialect::Tutorial => proto::close(&mut conn).await,
        }
        Ok(())
    }

    fn since_start(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn names_map_to_client_numbers() {
        assert_eq!(View::index("st1x", 10, "st1x0"), Some(0));
        assert_eq!(View::index("st1x", 10, "st1x9"), Some(9));
        assert_eq!(View::index("st1x", 10, "st1x10"), None, "out of range");
        assert_eq!(View::index("st1x", 100, "st1x07"), None, "leading zero");
        assert_eq!(View::index("st1x", 100, "st1x+7"), None);
        assert_eq!(View::index("st1x", 100, "st1x"), None);
        assert_eq!(View::index("st1x", 100, "alice"), None);
    }

    #[test]
    fn v1_welcome_and_deltas_build_the_view() {
        let mut view = View::new(3);
        let welcome = br#"{"type":"welcome","id":1,"name":"p0","users":[{"name":"p0","status":"idle"},{"name":"alice","status":"idle"}]}"#;
        assert!(apply(&mut view, "p", welcome).unwrap());
        assert_eq!(view.count(), 1);
        let delta = br#"{"type":"presence","joined":[{"name":"p1","status":"idle"},{"name":"p2","status":"idle"}],"left":["p0"]}"#;
        assert!(apply(&mut view, "p", delta).unwrap());
        assert_eq!(view.count(), 2);
        assert!(!view.complete());
        let changed = br#"{"type":"presence","changed":[{"name":"p0","status":"in-call"}]}"#;
        assert!(apply(&mut view, "p", changed).unwrap());
        assert!(view.complete());
        // Idempotent: joining twice changes nothing.
        assert!(apply(&mut view, "p", delta).unwrap());
        assert_eq!(view.count(), 2);
        assert!(!apply(&mut view, "p", br#"{"type":"hello","protocol":1}"#).unwrap());
    }

    #[test]
    fn tutorial_lists_replace_the_view() {
        let mut view = View::new(2);
        assert!(apply(&mut view, "t", br#"{"type":"RenderUserList","userlist":["t0","t1","x"]}"#).unwrap());
        assert!(view.complete());
        assert!(apply(&mut view, "t", br#"{"type":"RenderUserList","userlist":["t1"]}"#).unwrap());
        assert_eq!(view.count(), 1);
    }

    #[test]
    fn broken_presence_is_an_error() {
        let mut view = View::new(2);
        assert!(apply(&mut view, "p", br#"{"type":"presence","joined":7}"#).is_err());
    }
}
