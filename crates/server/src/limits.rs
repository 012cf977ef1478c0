//! Limits applied when a TCP connection is accepted, before any byte of it is read: connections open per client
//! address, and connection attempts per client address per second (a token bucket), kept in a bounded table.
//!
//! A client address is an IPv4 address or an IPv6 /64 (one subscriber usually holds a whole /64, so counting single
//! IPv6 addresses would let one host take 2^64 of them). An IPv4-mapped IPv6 address counts as its IPv4 address.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The accept-time limits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConnectionLimits {
    /// Most connections open at once from one client address; 0 for no limit.
    pub max_per_ip: usize,
    /// Sustained connection attempts per second from one client address; 0 for no limit.
    pub rate_per_ip: u32,
    /// Burst of the connection attempt rate.
    pub burst_per_ip: u32,
    /// How long a client may take for the TLS handshake, and then for each HTTP request head (including the
    /// WebSocket upgrade request), before the connection is dropped.
    pub handshake_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self { max_per_ip: 256, rate_per_ip: 10, burst_per_ip: 50, handshake_timeout: Duration::from_secs(10) }
    }
}

impl ConnectionLimits {
    /// No per-address limit (the handshake timeout stays).
    pub fn unlimited() -> Self {
        Self { max_per_ip: 0, rate_per_ip: 0, ..Self::default() }
    }
}

/// Why a connection was refused at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Too many attempts per second from its address.
    Rate,
    /// Too many connections open from its address.
    PerIp,
}

/// Counters of refused and timed-out connections since start.
#[derive(Debug, Default)]
pub struct EdgeCounters {
    /// Refused: attempt rate per address.
    pub refused_rate: AtomicU64,
    /// Refused: connections per address.
    pub refused_per_ip: AtomicU64,
    /// Refused: the server-wide connection cap.
    pub refused_global: AtomicU64,
    /// Dropped: no TLS handshake or no request head within the handshake timeout.
    pub handshake_timeouts: AtomicU64,
    /// Dropped: a TLS handshake that failed.
    pub tls_failures: AtomicU64,
}

/// A snapshot of [`EdgeCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EdgeStats {
    /// Refused: attempt rate per address.
    pub refused_rate: u64,
    /// Refused: connections per address.
    pub refused_per_ip: u64,
    /// Refused: the server-wide connection cap.
    pub refused_global: u64,
    /// Dropped: no TLS handshake or no request head within the handshake timeout.
    pub handshake_timeouts: u64,
    /// Dropped: a TLS handshake that failed.
    pub tls_failures: u64,
    /// Client addresses in the table.
    pub tracked_addresses: usize,
}

/// Addresses remembered at most; beyond, idle ones are forgotten (see [`Admission::admit`]).
const MIN_TABLE: usize = 65_536;

#[derive(Debug)]
struct Entry {
    open: u32,
    tokens: f64,
    refilled: Instant,
}

/// The accept-time gate: call [`Admission::admit`] for every accepted connection and keep the slot while it is open.
#[derive(Debug)]
pub struct Admission {
    limits: ConnectionLimits,
    table: Mutex<HashMap<IpAddr, Entry>>,
    capacity: usize,
    /// Counters, also bumped by the accept loops for refusals and timeouts decided elsewhere.
    pub counters: EdgeCounters,
}

/// Held for as long as an admitted connection is open: its place under the listener's total and under its address's
/// count. The HTTP upgrade hands it to the WebSocket task, hence `Clone`.
#[derive(Clone)]
pub struct ConnectionPermit(#[allow(dead_code)] Arc<(OwnedSemaphorePermit, IpSlot)>);

/// One admitted connection's place in its address's count; released on drop.
#[derive(Debug)]
pub struct IpSlot {
    owner: Option<(Arc<Admission>, IpAddr)>,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        if let Some((admission, key)) = self.owner.take() {
            let mut table = admission.lock();
            if let Some(entry) = table.get_mut(&key) {
                entry.open = entry.open.saturating_sub(1);
            }
        }
    }
}

impl Admission {
    /// A gate with `limits`; the table holds at least as many addresses as there can be connections.
    pub fn new(limits: ConnectionLimits, max_connections: usize) -> Arc<Self> {
        Arc::new(Self {
            limits,
            table: Mutex::new(HashMap::new()),
            capacity: MIN_TABLE.max(max_connections.saturating_add(1)),
            counters: EdgeCounters::default(),
        })
    }

    /// The limits in force.
    pub fn limits(&self) -> ConnectionLimits {
        self.limits
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Entry>> {
        self.table.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Admits an accepted connection from `ip` under the per-address limits and under the listener's total
    /// (`permits`), or refuses it (the caller drops the stream, which closes it before anything is read). Every
    /// refusal is counted, and logged now and then.
    pub fn admit_connection(self: &Arc<Self>, permits: &Arc<Semaphore>, ip: IpAddr) -> Option<ConnectionPermit> {
        let slot = match self.admit(ip, Instant::now()) {
            Ok(slot) => slot,
            Err(refusal) => {
                let total = self.counters.refused_rate.load(Ordering::Relaxed)
                    + self.counters.refused_per_ip.load(Ordering::Relaxed);
                if total.is_power_of_two() {
                    tracing::warn!(?refusal, %ip, total, "connection refused by the per-address limits");
                }
                return None;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            // At the limit: close at once, which costs nothing, rather than queue what cannot be served.
            let refused = self.counters.refused_global.fetch_add(1, Ordering::Relaxed) + 1;
            if refused.is_power_of_two() {
                tracing::warn!(refused, "connection limit reached; refusing connections");
            }
            return None;
        };
        Some(ConnectionPermit(Arc::new((permit, slot))))
    }

    /// Counts an attempt from `ip` and admits it if its address is within both limits. A refusal is counted.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, now: Instant) -> Result<IpSlot, Refusal> {
        let ConnectionLimits { max_per_ip, rate_per_ip, burst_per_ip, .. } = self.limits;
        if max_per_ip == 0 && rate_per_ip == 0 {
            return Ok(IpSlot { owner: None });
        }
        let key = client_key(ip);
        let burst = f64::from(burst_per_ip.max(1));
        let mut table = self.lock();
        if table.len() >= self.capacity && !table.contains_key(&key) {
            self.evict(&mut table, now);
        }
        let entry = table.entry(key).or_insert(Entry { open: 0, tokens: burst, refilled: now });
        if rate_per_ip > 0 {
            let elapsed = now.saturating_duration_since(entry.refilled).as_secs_f64();
            entry.tokens = (entry.tokens + elapsed * f64::from(rate_per_ip)).min(burst);
            entry.refilled = now;
            if entry.tokens < 1.0 {
                drop(table);
                self.counters.refused_rate.fetch_add(1, Ordering::Relaxed);
                return Err(Refusal::Rate);
            }
            entry.tokens -= 1.0;
        }
        if max_per_ip > 0 && entry.open as usize >= max_per_ip {
            drop(table);
            self.counters.refused_per_ip.fetch_add(1, Ordering::Relaxed);
            return Err(Refusal::PerIp);
        }
        entry.open += 1;
        Ok(IpSlot { owner: Some((self.clone(), key)) })
    }

    /// Makes room in a full table. First forgets addresses that have nothing open and whose bucket is full again
    /// (forgetting them loses nothing); if that frees too little (attempts from more addresses than the table holds,
    /// within one refill time), forgets every address with nothing open: their rate history is lost, which only helps
    /// someone who already controls that many addresses. Both passes are linear but free a large part of the table,
    /// so their cost per admitted connection stays constant.
    fn evict(&self, table: &mut HashMap<IpAddr, Entry>, now: Instant) {
        let ConnectionLimits { rate_per_ip, burst_per_ip, .. } = self.limits;
        let refill = if rate_per_ip == 0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(f64::from(burst_per_ip.max(1)) / f64::from(rate_per_ip))
        };
        table.retain(|_, entry| entry.open > 0 || now.saturating_duration_since(entry.refilled) < refill);
        if table.len() > self.capacity * 3 / 4 {
            table.retain(|_, entry| entry.open > 0);
        }
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> EdgeStats {
        let c = &self.counters;
        EdgeStats {
            refused_rate: c.refused_rate.load(Ordering::Relaxed),
            refused_per_ip: c.refused_per_ip.load(Ordering::Relaxed),
            refused_global: c.refused_global.load(Ordering::Relaxed),
            handshake_timeouts: c.handshake_timeouts.load(Ordering::Relaxed),
            tls_failures: c.tls_failures.load(Ordering::Relaxed),
            tracked_addresses: self.lock().len(),
        }
    }
}

/// The address limits are counted by: IPv4 as is, IPv6 by its /64.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn connections_per_address_are_capped_and_freed_on_drop() {
        let limits = ConnectionLimits { max_per_ip: 2, rate_per_ip: 0, ..ConnectionLimits::default() };
        let gate = Admission::new(limits, 10);
        let now = Instant::now();
        let a = gate.admit(ip("192.0.2.1"), now).unwrap();
        let _b = gate.admit(ip("192.0.2.1"), now).unwrap();
        assert_eq!(gate.admit(ip("192.0.2.1"), now).unwrap_err(), Refusal::PerIp);
        let _other = gate.admit(ip("192.0.2.2"), now).unwrap();
        drop(a);
        let _c = gate.admit(ip("192.0.2.1"), now).unwrap();
        assert_eq!(gate.stats().refused_per_ip, 1);
    }

    #[test]
    fn attempts_refill_at_the_rate() {
        let limits = ConnectionLimits { max_per_ip: 0, rate_per_ip: 2, burst_per_ip: 3, ..ConnectionLimits::default() };
        let gate = Admission::new(limits, 10);
        let start = Instant::now();
        for _ in 0..3 {
            drop(gate.admit(ip("198.51.100.1"), start).unwrap());
        }
        assert_eq!(gate.admit(ip("198.51.100.1"), start).unwrap_err(), Refusal::Rate);
        assert!(gate.admit(ip("198.51.100.2"), start).is_ok(), "other addresses have their own bucket");
        let later = start + Duration::from_millis(500);
        assert!(gate.admit(ip("198.51.100.1"), later).is_ok(), "one token after half a second at 2/s");
        assert_eq!(gate.admit(ip("198.51.100.1"), later).unwrap_err(), Refusal::Rate);
        assert_eq!(gate.stats().refused_rate, 2);
    }

    #[test]
    fn ipv6_counts_by_slash_64_and_mapped_ipv4_as_ipv4() {
        let limits = ConnectionLimits { max_per_ip: 1, rate_per_ip: 0, ..ConnectionLimits::default() };
        let gate = Admission::new(limits, 10);
        let now = Instant::now();
        let _a = gate.admit(ip("2001:db8:1:2::1"), now).unwrap();
        assert!(gate.admit(ip("2001:db8:1:2:ffff::9"), now).is_err(), "same /64");
        assert!(gate.admit(ip("2001:db8:1:3::1"), now).is_ok(), "another /64");
        let _v4 = gate.admit(ip("192.0.2.9"), now).unwrap();
        assert!(gate.admit(ip("::ffff:192.0.2.9"), now).is_err(), "IPv4-mapped is the same address");
    }

    #[test]
    fn the_table_stays_bounded_and_keeps_addresses_with_open_connections() {
        let limits = ConnectionLimits { max_per_ip: 1, rate_per_ip: 1, burst_per_ip: 1, ..ConnectionLimits::default() };
        let gate = Admission::new(limits, 10);
        let now = Instant::now();
        let held = gate.admit(ip("203.0.113.1"), now).unwrap();
        for n in 0..(MIN_TABLE as u32 * 2) {
            let addr = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + n));
            drop(gate.admit(addr, now).unwrap());
        }
        assert!(gate.stats().tracked_addresses <= MIN_TABLE, "{}", gate.stats().tracked_addresses);
        assert_eq!(gate.admit(ip("203.0.113.1"), now).unwrap_err(), Refusal::Rate, "the held address was kept");
        drop(held);
    }

    #[test]
    fn no_limits_track_nothing() {
        let gate = Admission::new(ConnectionLimits::unlimited(), 10);
        let now = Instant::now();
        let slots: Vec<_> = (0..1000).map(|_| gate.admit(ip("127.0.0.1"), now).unwrap()).collect();
        assert_eq!(gate.stats().tracked_addresses, 0);
        drop(slots);
    }
}
