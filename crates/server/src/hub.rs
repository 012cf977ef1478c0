//! The hub: the signaling core behind one lock, the outboxes of all connections, and the timer task.
//!
//! A `std::sync::Mutex`, not an async one: the lock is only held while the core handles an input and its outputs are
//! pushed into outboxes, which never waits; nothing `.await`s while holding it.

use rustc_hash::FxHashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use switchboard_cluster::Backend;
use switchboard_core::{ConnId, Counters, Input, Output, Signaling, Stats};
use tokio::sync::Notify;

use crate::outbox::{Frame, Outbox};

struct Inner {
    core: Signaling,
    /// Keyed by connection ids the hub makes, so a fast non-keyed hash is safe.
    outboxes: FxHashMap<ConnId, Arc<Outbox>>,
    /// The deadline the timer task sleeps until.
    armed: Option<Instant>,
    /// Cluster mode: where the core's cluster commands go.
    cluster: Option<Arc<dyn Backend>>,
    /// Cluster events waiting to be fed back to the core (commands the backend could not take).
    bounced: std::collections::VecDeque<switchboard_core::cluster::Event>,
    /// Connections closed because their outbox overflowed.
    slow_consumers: u64,
}

/// What the metrics read from the hub, copied under one lock.
#[derive(Debug, Clone, Default)]
pub struct HubSnapshot {
    /// Sizes of the core's maps.
    pub stats: Stats,
    /// The core's counters.
    pub counters: Counters,
    /// Connections closed as slow consumers.
    pub slow_consumers: u64,
    /// WebSocket connection tasks alive.
    pub live_websockets: usize,
}

/// Held by a WebSocket connection task for its whole life, so that shutdown can wait for the last close frame.
pub struct LiveGuard(Arc<Hub>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Shared by every connection task and the timer task.
pub struct Hub {
    inner: Mutex<Inner>,
    /// Set by `close_all`: connections that register afterwards are closed at once.
    closing: AtomicBool,
    timer: Notify,
    next_conn: AtomicU64,
    live: AtomicUsize,
    outbox_frames: usize,
    outbox_bytes: usize,
}

impl Hub {
    /// A hub around `core`; outboxes get these bounds.
    pub fn new(core: Signaling, outbox_frames: usize, outbox_bytes: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                core,
                outboxes: FxHashMap::default(),
                armed: None,
                slow_consumers: 0,
                cluster: None,
                bounced: Default::default(),
            }),
            closing: AtomicBool::new(false),
            timer: Notify::new(),
            next_conn: AtomicU64::new(1),
            live: AtomicUsize::new(0),
            outbox_frames,
            outbox_bytes,
        }
    }

    /// Cluster mode: the core's cluster commands go to `backend`.
    pub fn set_cluster(&self, backend: Arc<dyn Backend>) {
        self.lock().inner.cluster = Some(backend);
    }

    /// Feeds events of the cluster backend to the core, until the backend stops.
    pub async fn run_cluster_events(
        self: Arc<Self>,
        mut events: tokio::sync::mpsc::Receiver<switchboard_core::cluster::Event>,
    ) {
        // Events are fed in batches under one lock, bounded so that connection tasks are not kept waiting. An
        // envelope's event carries up to a bundle of messages: each counts.
        const PER_LOCK: usize = 256;
        let weight = |event: &switchboard_core::cluster::Event| match event {
            switchboard_core::cluster::Event::Messages { messages, .. } => messages.len().max(1),
            _ => 1,
        };
        while let Some(event) = events.recv().await {
            let mut locked = self.lock();
            let mut fed = weight(&event);
            locked.input(Input::Cluster(event));
            while fed < PER_LOCK {
                match events.try_recv() {
                    Ok(event) => {
                        fed += weight(&event);
                        locked.input(Input::Cluster(event));
                    }
                    Err(_) => break,
                }
            }
        }
    }

    /// Locks the hub for a batch of inputs at one instant.
    pub fn lock(&self) -> Locked<'_> {
        // Every update under this lock leaves the maps consistent before anything can panic, so a poisoned lock is
        // still safe to use; refusing it would take the whole server down with one bug.
        let inner = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        Locked { inner, hub: self, now: Instant::now() }
    }

    /// A new connection: its id and its outbox.
    pub fn register(&self) -> (ConnId, Arc<Outbox>) {
        self.register_with_token(None)
    }

    /// A new connection whose upgrade URL carried a login token.
    pub fn register_with_token(&self, upgrade_token: Option<&str>) -> (ConnId, Arc<Outbox>) {
        let conn = ConnId(self.next_conn.fetch_add(1, Ordering::Relaxed));
        let outbox = Arc::new(Outbox::new(self.outbox_frames, self.outbox_bytes));
        let mut locked = self.lock();
        if self.closing.load(Ordering::Relaxed) {
            outbox.close(switchboard_proto::close_code::GOING_AWAY, "server shutting down");
            return (conn, outbox);
        }
        locked.inner.outboxes.insert(conn, outbox.clone());
        locked.input(Input::Connected(conn));
        if let Some(token) = upgrade_token {
            locked.input(Input::UpgradeToken(conn, token));
        }
        (conn, outbox)
    }

    /// The connection is gone, or going: nothing more is routed to it, and its session waits for a resume. Calling
    /// it again is harmless.
    pub fn unregister(&self, conn: ConnId) {
        let mut locked = self.lock();
        locked.inner.outboxes.remove(&conn);
        locked.input(Input::Disconnected(conn));
    }

    /// Asks every connection to close with `code` (shutdown).
    pub fn close_all(&self, code: u16, reason: &'static str) {
        let locked = self.lock();
        self.closing.store(true, Ordering::Relaxed);
        for outbox in locked.inner.outboxes.values() {
            outbox.close(code, reason);
        }
    }

    /// Counters of the core.
    pub fn stats(&self) -> Stats {
        self.lock().inner.core.stats()
    }

    /// Everything the metrics need, under one lock (a copy of a few hundred bytes).
    pub fn snapshot(&self) -> HubSnapshot {
        let locked = self.lock();
        HubSnapshot {
            stats: locked.inner.core.stats(),
            counters: locked.inner.core.counters().clone(),
            slow_consumers: locked.inner.slow_consumers,
            live_websockets: self.live.load(Ordering::Relaxed),
        }
    }

    /// Runs a read-only query on the core (the admin views). Keep it short: every connection waits meanwhile.
    pub fn query<R>(&self, query: impl FnOnce(&Signaling) -> R) -> R {
        query(&self.lock().inner.core)
    }

    /// Ends the session of `name` and closes its connection with 4005; false if nobody has that name.
    pub fn disconnect_user(&self, name: &str) -> bool {
        let mut locked = self.lock();
        let now = locked.now;
        let found = locked.inner.core.disconnect_user(now, name);
        locked.dispatch();
        found
    }

    /// Shutdown begins: v1 connections get `goaway` (reconnect hints spread over `spread`), the others are closed with
    /// 1001, and connections that register from now on are closed at once.
    pub fn goaway(&self, spread: Duration) {
        let mut locked = self.lock();
        self.closing.store(true, Ordering::Relaxed);
        let now = locked.now;
        locked.inner.core.goaway(now, spread);
        locked.dispatch();
    }

    /// Counts a WebSocket connection task until the guard drops.
    pub fn live(self: &Arc<Self>) -> LiveGuard {
        self.live.fetch_add(1, Ordering::Relaxed);
        LiveGuard(self.clone())
    }

    /// WebSocket connection tasks alive (including those flushing their close frame).
    pub fn live_websockets(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// Fires the core's deadlines until `shutdown` resolves.
    pub async fn run_timers(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            let deadline = {
                let mut locked = self.lock();
                let now = locked.now;
                locked.inner.core.handle_timeout(now);
                locked.dispatch();
                let next = locked.inner.core.poll_timeout();
                locked.inner.armed = next;
                next
            };
            let sleep = async {
                match deadline {
                    Some(deadline) => tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = sleep => {}
                () = self.timer.notified() => {}
                () = &mut shutdown => return,
            }
        }
    }
}

/// The hub, locked. Inputs are processed at one instant; outputs go to outboxes as they come.
pub struct Locked<'a> {
    inner: MutexGuard<'a, Inner>,
    hub: &'a Hub,
    now: Instant,
}

impl Locked<'_> {
    /// Feeds one input to the core and dispatches what it says.
    pub fn input(&mut self, input: Input<'_>) {
        let now = self.now;
        self.inner.core.handle_input(now, input);
        self.dispatch();
    }

    fn dispatch(&mut self) {
        let mut slow = Vec::new();
        loop {
            while let Some(output) = self.inner.core.poll_output() {
                match output {
                    Output::Send { conn, frame } => {
                        if let Some(outbox) = self.inner.outboxes.get(&conn) {
                            if outbox.push(Frame::Text(frame)).is_err() {
                                self.inner.slow_consumers += 1;
                                slow.push(conn);
                            }
                        }
                    }
                    Output::Close { conn, code, reason } => {
                        if let Some(outbox) = self.inner.outboxes.get(&conn) {
                            outbox.close(code, reason);
                        }
                    }
                    Output::Cluster(command) => {
                        let refused = match &self.inner.cluster {
                            Some(backend) => backend.submit(command).err(),
                            None => Some(command),
                        };
                        if let Some(event) = refused.and_then(switchboard_core::cluster::Command::failed) {
                            self.inner.bounced.push_back(event);
                        }
                    }
                }
            }
            if let Some(event) = self.inner.bounced.pop_front() {
                let now = self.now;
                self.inner.core.handle_input(now, Input::Cluster(event));
                continue;
            }
            // A slow consumer's outbox is closed already; its session now waits for a resume like any dropped one.
            let Some(conn) = slow.pop() else { break };
            let now = self.now;
            self.inner.core.handle_input(now, Input::Disconnected(conn));
        }
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        let next = self.inner.core.poll_timeout();
        let earlier = match (next, self.inner.armed) {
            (Some(next), Some(armed)) => next < armed,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if earlier {
            self.inner.armed = next;
            self.hub.timer.notify_one();
        }
    }
}
