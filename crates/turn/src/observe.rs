//! What the TURN server shows operators: authentication counters, and a registry of live allocations for the admin
//! view. Both live in [`crate::server::Shared`], which every owner of allocations (UDP workers, TCP/TLS
//! connections) already holds.
//!
//! Neither is touched on the packet path: the counters move on failed requests, and the registry is written when a
//! request changes an allocation (Allocate, Refresh, CreatePermission, ChannelBind, expiry), which happens a few
//! times per allocation and minute at most. Relayed packet and byte counters are kept per owner on the relay path
//! and added here in bulk (`TurnServer::publish_stats`).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use crate::server::Transport;

/// Counters of requests that failed authentication, shared by every owner.
#[derive(Debug, Default)]
pub struct TurnMetrics {
    challenges: AtomicU64,
    unauthorized: AtomicU64,
    stale_nonce: AtomicU64,
    relayed: [AtomicU64; 5],
}

/// A copy of [`TurnMetrics`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TurnCounters {
    /// 401 answers to requests without credentials: the normal first round trip of every client, not a failure.
    pub challenges: u64,
    /// 401 answers to requests that carried credentials: wrong password, unknown user, expired REST credential,
    /// foreign realm or nonce.
    pub unauthorized: u64,
    /// 438 answers: the nonce was ours but too old (clients retry with the fresh one).
    pub stale_nonce: u64,
    /// Packets relayed client -> peer, as published by the owners (up to a second late).
    pub to_peer_packets: u64,
    /// Payload bytes relayed client -> peer.
    pub to_peer_bytes: u64,
    /// Packets relayed peer -> client.
    pub to_client_packets: u64,
    /// Payload bytes relayed peer -> client.
    pub to_client_bytes: u64,
    /// Packets dropped (no permission or channel, bandwidth cap, malformed).
    pub dropped: u64,
}

impl TurnMetrics {
    /// Counts an authentication failure answered with `code`; `had_credentials` tells a failure from a challenge.
    pub(crate) fn auth_failure(&self, code: u16, had_credentials: bool) {
        let counter = match (code, had_credentials) {
            (438, _) => &self.stale_nonce,
            (401, true) => &self.unauthorized,
            (401, false) => &self.challenges,
            _ => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds an owner's relay counters since its last report.
    pub(crate) fn add_relayed(&self, delta: &crate::server::TurnStats) {
        let values =
            [delta.to_peer_packets, delta.to_peer_bytes, delta.to_client_packets, delta.to_client_bytes, delta.dropped];
        for (counter, value) in self.relayed.iter().zip(values) {
            if value > 0 {
                counter.fetch_add(value, Ordering::Relaxed);
            }
        }
    }

    /// The counters now.
    pub fn snapshot(&self) -> TurnCounters {
        let relayed = |index: usize| self.relayed[index].load(Ordering::Relaxed);
        TurnCounters {
            challenges: self.challenges.load(Ordering::Relaxed),
            unauthorized: self.unauthorized.load(Ordering::Relaxed),
            stale_nonce: self.stale_nonce.load(Ordering::Relaxed),
            to_peer_packets: relayed(0),
            to_peer_bytes: relayed(1),
            to_client_packets: relayed(2),
            to_client_bytes: relayed(3),
            dropped: relayed(4),
        }
    }
}

/// One allocation as the admin view shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocationInfo {
    /// The authenticated user name (a REST name looks like `<expiry>:<user>`).
    pub user: String,
    /// The client's address as the server sees it.
    pub client: SocketAddr,
    /// How the client reaches the server.
    pub transport: Transport,
    /// The relayed transport address handed to the client (the external IP when one is configured).
    pub relay: SocketAddr,
    /// When the allocation expires unless refreshed.
    pub expires: Instant,
    /// Peer IPs with a permission, and when each expires.
    pub permissions: Vec<(IpAddr, Instant)>,
    /// Bound channels: number, peer, and when the binding expires.
    pub channels: Vec<(u16, SocketAddr, Instant)>,
}

/// Live allocations by relayed address (unique: each has its own relay socket).
#[derive(Debug, Default)]
pub struct AllocationRegistry {
    by_relay: Mutex<BTreeMap<SocketAddr, AllocationInfo>>,
}

impl AllocationRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<SocketAddr, AllocationInfo>> {
        // Each update is one insert or remove, so a poisoned lock still guards a consistent map.
        self.by_relay.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn publish(&self, info: AllocationInfo) {
        self.lock().insert(info.relay, info);
    }

    pub(crate) fn remove(&self, relay: SocketAddr) {
        self.lock().remove(&relay);
    }

    /// Allocations alive at `now` whose relayed address comes after `after`, at most `limit`, with their expired
    /// permissions and channels left out; and the cursor of the next page, if there is one.
    pub fn page(
        &self,
        now: Instant,
        after: Option<SocketAddr>,
        limit: usize,
    ) -> (Vec<AllocationInfo>, Option<SocketAddr>) {
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        let map = self.lock();
        let mut live = map.range((start, Bound::Unbounded)).map(|(_, info)| info).filter(|info| info.expires > now);
        let items: Vec<AllocationInfo> = live
            .by_ref()
            .take(limit)
            .map(|info| {
                let mut info = info.clone();
                info.permissions.retain(|(_, until)| *until > now);
                info.channels.retain(|(_, _, until)| *until > now);
                info
            })
            .collect();
        let next = if live.next().is_some() { items.last().map(|info| info.relay) } else { None };
        (items, next)
    }

    /// Allocations registered (expired ones included until their owner removes them).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is registered.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}
