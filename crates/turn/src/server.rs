//! The STUN/TURN request handling and allocation state of one worker (or of one TCP/TLS connection), sans-IO.
//!
//! Who owns what: each UDP worker thread owns the allocations of the clients the kernel steers to its socket
//! (`SO_REUSEPORT` hashes a client's address to one socket), with their relay sockets; each TCP or TLS connection owns
//! its own. So the packet path never takes a lock: only allocation counts per user, which every owner shares, sit
//! behind one (touched on Allocate and expiry only).
//!
//! The IO layer calls [`TurnServer::handle_client`] for a datagram (or framed stream message) from a client and
//! [`TurnServer::handle_peer`] for one that reached a relay socket; both write what to send into a reused buffer, so
//! the relay path allocates nothing per packet. Relay sockets are opened and closed through the [`Relays`] trait,
//! which tests implement without sockets.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha1::Sha1;
use switchboard_stun::{
    attr, classify, long_term_key_md5, parse_channel_data, write_channel_data, Class, Integrity, Kind, Message,
    MessageWriter, Method, TransactionId,
};

use crate::observe::{AllocationInfo, AllocationRegistry, TurnMetrics};
use crate::{Credentials, PeerPolicy};

/// The maps every relayed packet looks up (allocation, channel, permission; four or five per packet). Their keys are
/// addresses that clients and peers choose, so the hash stays randomly seeded, but it is foldhash rather than
/// SipHash: SipHash was 1.6% of the TURN workers' CPU at 150,000 relayed packets per second. foldhash's authors call it
/// minimally resistant to collision flooding, which is enough here: the allocation, permission and channel quotas
/// bound every one of these maps, so colliding keys cannot pile up.
pub(crate) type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// How clients reach the server on one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// UDP.
    Udp,
    /// TCP (messages framed on the stream).
    Tcp,
    /// TLS over TCP (`turns:`).
    Tls,
}

/// A client's 5-tuple: an allocation belongs to exactly one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FiveTuple {
    /// The client's address as the server sees it.
    pub client: SocketAddr,
    /// The server's address the client talks to.
    pub server: SocketAddr,
    /// The transport.
    pub transport: Transport,
}

/// A relay socket, as numbered by the [`Relays`] implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelayId(pub u64);

/// Why a relay socket could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RelayError {
    /// No port free (or the relay address family is not available).
    #[error("no relay port available")]
    Exhausted,
    /// The requested address family is not served.
    #[error("address family not supported")]
    Family,
}

/// Opens and closes relay sockets for allocations.
pub trait Relays {
    /// Opens a relay socket for an IPv4 (`ipv6 = false`) or IPv6 allocation, on an even port if asked. Returns its id
    /// and its local address.
    fn open(&mut self, ipv6: bool, even_port: bool) -> Result<(RelayId, SocketAddr), RelayError>;
    /// Closes it.
    fn close(&mut self, relay: RelayId);
}

/// TURN settings.
#[derive(Debug, Clone)]
pub struct TurnConfig {
    /// The REALM of the long-term credential mechanism.
    pub realm: String,
    /// SOFTWARE attribute on success responses (never on unauthenticated ones: small answers to strangers).
    pub software: Option<String>,
    /// How long a nonce stays fresh before requests with it get 438.
    pub nonce_lifetime: Duration,
    /// Allocation lifetime when the client asks for less or nothing (RFC 8656: 10 minutes).
    pub default_lifetime: Duration,
    /// Longest allocation lifetime granted.
    pub max_lifetime: Duration,
    /// Permission lifetime (RFC 8656: 300 s).
    pub permission_lifetime: Duration,
    /// Channel binding lifetime (RFC 8656: 10 minutes).
    pub channel_lifetime: Duration,
    /// Most allocations one user may hold at once (486 beyond).
    pub max_allocations_per_user: usize,
    /// Most allocations from one client IP address at once (486 beyond).
    pub max_allocations_per_ip: usize,
    /// How long after its expiry a REST credential may still refresh the allocation it created (long calls).
    pub expired_refresh_grace: Duration,

    /// Most allocations in total (508 beyond).
    pub max_allocations: usize,
    /// Most permissions per allocation (508 beyond).
    pub max_permissions: usize,
    /// Most channels per allocation (508 beyond).
    pub max_channels: usize,
    /// Relayed bytes per second per allocation, both directions together; excess packets are dropped. None: no cap.
    pub bandwidth_bytes_per_second: Option<u64>,
    /// The address advertised in XOR-RELAYED-ADDRESS instead of the relay socket's own (a server behind 1:1 NAT).
    pub external_ip: Option<IpAddr>,
}

impl Default for TurnConfig {
    fn default() -> Self {
        Self {
            realm: "switchboard".into(),
            software: Some(concat!("switchboard/", env!("CARGO_PKG_VERSION")).into()),
            nonce_lifetime: Duration::from_secs(600),
            default_lifetime: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(3600),
            permission_lifetime: Duration::from_secs(300),
            channel_lifetime: Duration::from_secs(600),
            max_allocations_per_user: 10,
            max_allocations_per_ip: 32,
            expired_refresh_grace: Duration::from_secs(3600),

            max_allocations: 10_000,
            max_permissions: 64,
            max_channels: 64,
            bandwidth_bytes_per_second: None,
            external_ip: None,
        }
    }
}

/// State shared by every owner of allocations.
#[derive(Debug)]
pub struct Shared {
    /// Settings.
    pub config: TurnConfig,
    /// Who may allocate.
    pub credentials: Credentials,
    /// Where relays may send.
    pub policy: PeerPolicy,
    /// Authentication counters, for metrics.
    pub metrics: TurnMetrics,
    /// Live allocations, for the admin view.
    pub registry: AllocationRegistry,
    /// Signs nonces, so that they need no state.
    nonce_key: [u8; 32],
    /// Allocations per user, and in total.
    counts: Mutex<Counts>,
    /// The server's own STUN/TURN addresses, known once the listeners are bound: relays never send there.
    own_addresses: std::sync::OnceLock<Vec<SocketAddr>>,
}

#[derive(Debug, Default)]
struct Counts {
    per_user: HashMap<String, usize>,
    per_ip: HashMap<IpAddr, usize>,
    total: usize,
}

impl Shared {
    /// Shared state; `nonce_key` must be random and secret.
    pub fn new(config: TurnConfig, credentials: Credentials, policy: PeerPolicy, nonce_key: [u8; 32]) -> Self {
        Self {
            config,
            credentials,
            policy,
            metrics: TurnMetrics::default(),
            registry: AllocationRegistry::default(),
            nonce_key,
            counts: Mutex::new(Counts::default()),
            own_addresses: std::sync::OnceLock::new(),
        }
    }

    /// Tells the relays the server's own STUN/TURN addresses, which they never send to (a loop through the server).
    /// Only the first call counts.
    pub fn set_own_addresses(&self, addresses: Vec<SocketAddr>) {
        let _ = self.own_addresses.set(addresses);
    }

    fn is_own(&self, peer: &SocketAddr) -> bool {
        self.own_addresses.get().is_some_and(|own| own.contains(peer))
    }

    /// Allocations in use across all owners.
    pub fn allocations(&self) -> usize {
        self.counts().total
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        // Counts are two integers updated together; a panic elsewhere cannot leave them torn.
        self.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The quota key of a user: a REST username `<expiry>:<user>` counts as `<user>`, so minting fresh credentials
    /// does not reset the quota.
    fn quota_key(user: &str) -> &str {
        match user.split_once(':') {
            Some((expiry, name)) if expiry.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => user,
        }
    }

    /// Counts one more allocation for `user` from `ip`, or says which quota is full (486 per user or per address,
    /// 508 in total). Per address too: names are whatever a signaling login claimed, so a per-name quota alone would
    /// not stop one client from holding every relay.
    fn reserve(&self, user: &str, ip: IpAddr) -> Result<(), u16> {
        let user = Self::quota_key(user);
        let mut counts = self.counts();
        if counts.total >= self.config.max_allocations {
            return Err(508);
        }
        let mine = counts.per_user.get(user).copied().unwrap_or(0);
        let from_ip = counts.per_ip.get(&ip).copied().unwrap_or(0);
        if mine >= self.config.max_allocations_per_user || from_ip >= self.config.max_allocations_per_ip {
            return Err(486);
        }
        *counts.per_user.entry(user.to_owned()).or_default() += 1;
        *counts.per_ip.entry(ip).or_default() += 1;
        counts.total += 1;
        Ok(())
    }

    fn release(&self, user: &str, ip: IpAddr) {
        let user = Self::quota_key(user);
        let mut counts = self.counts();
        counts.total = counts.total.saturating_sub(1);
        decrement(&mut counts.per_user, user);
        decrement(&mut counts.per_ip, &ip);
    }

    /// A nonce: issue time and an HMAC over it and the client's address, hex-encoded (32 characters).
    fn nonce(&self, unix_now: u64, client: IpAddr) -> String {
        let mut nonce = format!("{unix_now:016x}");
        for byte in &self.nonce_mac(unix_now, client)[..8] {
            nonce.push_str(&format!("{byte:02x}"));
        }
        nonce
    }

    fn nonce_mac(&self, issued: u64, client: IpAddr) -> [u8; 20] {
        self.nonce_hmac(issued, client).map(|mac| mac.finalize().into_bytes().into()).unwrap_or([0; 20])
    }

    fn nonce_hmac(&self, issued: u64, client: IpAddr) -> Option<Hmac<Sha1>> {
        let mut mac = Hmac::<Sha1>::new_from_slice(&self.nonce_key).ok()?;
        mac.update(&issued.to_be_bytes());
        match client {
            IpAddr::V4(v4) => mac.update(&v4.octets()),
            IpAddr::V6(v6) => mac.update(&v6.octets()),
        }
        Some(mac)
    }

    /// Whether `nonce` is one of ours for this client, and whether it is still fresh.
    fn check_nonce(&self, nonce: &str, unix_now: u64, client: IpAddr) -> NonceCheck {
        let valid = nonce.len() == 32 && nonce.is_ascii();
        let issued = valid.then(|| u64::from_str_radix(&nonce[..16], 16).ok()).flatten();
        let Some(issued) = issued else { return NonceCheck::Unknown };
        let mut tag = [0u8; 8];
        for (index, byte) in tag.iter_mut().enumerate() {
            let Ok(value) = u8::from_str_radix(&nonce[16 + 2 * index..18 + 2 * index], 16) else {
                return NonceCheck::Unknown;
            };
            *byte = value;
        }
        // Constant time, so that response timing cannot guide a forger byte by byte towards a valid tag.
        let genuine = self.nonce_hmac(issued, client).is_some_and(|mac| mac.verify_truncated_left(&tag).is_ok());
        if !genuine {
            return NonceCheck::Unknown;
        }
        if unix_now.saturating_sub(issued) > self.config.nonce_lifetime.as_secs() {
            NonceCheck::Stale
        } else {
            NonceCheck::Fresh
        }
    }
}

enum NonceCheck {
    Fresh,
    Stale,
    Unknown,
}

fn decrement<K: std::hash::Hash + Eq + std::borrow::Borrow<Q>, Q: std::hash::Hash + Eq + ?Sized>(
    map: &mut HashMap<K, usize>,
    key: &Q,
) {
    if let Some(count) = map.get_mut(key) {
        *count = count.saturating_sub(1);
        if *count == 0 {
            map.remove(key);
        }
    }
}

/// What to do with a packet after [`TurnServer::handle_client`] or [`TurnServer::handle_peer`].
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing to send (an indication, a dropped packet).
    Nothing,
    /// Send the output buffer to the client (a response, or relayed data for it).
    ToClient(FiveTuple),
    /// Send `range` of the input from `relay` to `peer`.
    ToPeer {
        /// The allocation's relay socket.
        relay: RelayId,
        /// Where to.
        peer: SocketAddr,
        /// The payload within the input packet.
        range: Range<usize>,
    },
}

#[derive(Debug)]
struct Allocation {
    user: String,
    relay: RelayId,
    relay_addr: SocketAddr,
    expires: Instant,
    /// The earliest entry this allocation has in the expiry heap. Refreshes only extend `expires`; the heap entry is
    /// renewed when it comes due, so refresh spam cannot grow the heap.
    scheduled: Instant,
    /// Transaction id of the Allocate, to answer retransmissions.
    allocate_tid: TransactionId,
    /// Peer IP -> expiry.
    permissions: FastMap<IpAddr, Instant>,
    /// Channel -> (peer, expiry).
    channels: FastMap<u16, (SocketAddr, Instant)>,
    /// Peer -> channel, for the peer-to-client direction.
    peer_channels: FastMap<SocketAddr, u16>,
    /// Bandwidth bucket: bytes available and when it was last filled.
    budget: Option<(f64, Instant)>,
}

/// Counters of one owner.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TurnStats {
    /// Packets relayed client -> peer.
    pub to_peer_packets: u64,
    /// Payload bytes relayed client -> peer.
    pub to_peer_bytes: u64,
    /// Packets relayed peer -> client.
    pub to_client_packets: u64,
    /// Payload bytes relayed peer -> client.
    pub to_client_bytes: u64,
    /// Requests that failed authentication.
    pub auth_failures: u64,
    /// Packets dropped (no permission, no channel, bandwidth cap, malformed).
    pub dropped: u64,
}

/// One owner's allocations and the request handling around them.
#[derive(Debug)]
pub struct TurnServer {
    shared: Arc<Shared>,
    allocations: FastMap<FiveTuple, Allocation>,
    by_relay: FastMap<RelayId, FiveTuple>,
    expiries: BinaryHeap<Reverse<(Instant, RelayId)>>,
    stats: TurnStats,
    /// `stats` as last added to the shared counters.
    published: TurnStats,
}

/// STUN attributes this server understands (others in the comprehension-required range get 420).
const KNOWN: &[u16] = &[
    attr::USERNAME,
    attr::MESSAGE_INTEGRITY,
    attr::MESSAGE_INTEGRITY_SHA256,
    attr::REALM,
    attr::NONCE,
    attr::FINGERPRINT,
    attr::SOFTWARE,
    attr::LIFETIME,
    attr::REQUESTED_TRANSPORT,
    attr::XOR_PEER_ADDRESS,
    attr::DATA,
    attr::CHANNEL_NUMBER,
    attr::EVEN_PORT,
    attr::REQUESTED_ADDRESS_FAMILY,
    attr::ICMP,
];

struct Request<'a> {
    tuple: FiveTuple,
    message: Message<'a>,
    fingerprint: bool,
}

/// The authenticated user of a request.
struct Authenticated {
    user: String,
    key: [u8; 16],
    sha256: bool,
}

impl TurnServer {
    /// An owner with no allocations.
    pub fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            allocations: FastMap::default(),
            by_relay: FastMap::default(),
            expiries: BinaryHeap::new(),
            stats: TurnStats::default(),
            published: TurnStats::default(),
        }
    }

    /// Adds what this owner relayed since the last call to the shared counters that `/metrics` reads. Owners call it
    /// now and then (UDP workers every second, stream connections on their timers and at the end) rather than per
    /// packet, so the relay path touches no shared cache line.
    pub fn publish_stats(&mut self) {
        let delta = TurnStats {
            to_peer_packets: self.stats.to_peer_packets - self.published.to_peer_packets,
            to_peer_bytes: self.stats.to_peer_bytes - self.published.to_peer_bytes,
            to_client_packets: self.stats.to_client_packets - self.published.to_client_packets,
            to_client_bytes: self.stats.to_client_bytes - self.published.to_client_bytes,
            auth_failures: 0,
            dropped: self.stats.dropped - self.published.dropped,
        };
        self.shared.metrics.add_relayed(&delta);
        self.published = self.stats;
    }

    /// Counters so far.
    pub fn stats(&self) -> TurnStats {
        self.stats
    }

    /// Allocations this owner holds.
    pub fn allocation_count(&self) -> usize {
        self.allocations.len()
    }

    /// The earliest allocation expiry.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.expiries.peek().map(|Reverse((at, _))| *at)
    }

    /// Expires allocations whose lifetime is over, closing their relays; publishes the relay counters.
    pub fn handle_timeout(&mut self, now: Instant, relays: &mut impl Relays) {
        self.publish_stats();
        while let Some(Reverse((at, relay))) = self.expiries.peek().copied() {
            if at > now {
                break;
            }
            self.expiries.pop();
            let Some(tuple) = self.by_relay.get(&relay).copied() else { continue };
            let Some(allocation) = self.allocations.get_mut(&tuple) else { continue };
            if allocation.expires <= now {
                self.remove(tuple, relays);
            } else if allocation.scheduled == at {
                allocation.scheduled = allocation.expires;
                self.expiries.push(Reverse((allocation.expires, relay)));
            }
        }
    }

    /// Closes every allocation (the connection that owned them went away).
    pub fn close_all(&mut self, relays: &mut impl Relays) {
        self.publish_stats();
        let tuples: Vec<FiveTuple> = self.allocations.keys().copied().collect();
        for tuple in tuples {
            self.remove(tuple, relays);
        }
    }

    fn remove(&mut self, tuple: FiveTuple, relays: &mut impl Relays) {
        if let Some(allocation) = self.allocations.remove(&tuple) {
            self.by_relay.remove(&allocation.relay);
            relays.close(allocation.relay);
            self.shared.release(&allocation.user, tuple.client.ip());
            self.shared.registry.remove(allocation.relay_addr);
        }
    }

    /// Shows the allocation of `tuple` as it now is in the admin registry (after a request changed it).
    fn publish(&self, tuple: FiveTuple) {
        let Some(allocation) = self.allocations.get(&tuple) else { return };
        self.shared.registry.publish(AllocationInfo {
            user: allocation.user.clone(),
            client: tuple.client,
            transport: tuple.transport,
            relay: allocation.relay_addr,
            expires: allocation.expires,
            permissions: allocation.permissions.iter().map(|(ip, until)| (*ip, *until)).collect(),
            channels: allocation.channels.iter().map(|(number, (peer, until))| (*number, *peer, *until)).collect(),
        });
    }

    /// Handles one message from a client. `unix_now` dates nonces and REST credentials.
    pub fn handle_client(
        &mut self,
        now: Instant,
        unix_now: u64,
        tuple: FiveTuple,
        packet: &[u8],
        relays: &mut impl Relays,
        out: &mut Vec<u8>,
    ) -> Action {
        match classify(packet) {
            Kind::ChannelData => self.client_channel_data(now, tuple, packet),
            Kind::Stun => match Message::parse(packet) {
                Ok(message) => {
                    let fingerprint = message.get(attr::FINGERPRINT).is_some();
                    self.client_stun(now, unix_now, Request { tuple, message, fingerprint }, packet, relays, out)
                }
                Err(_) => self.drop_packet(),
            },
            Kind::Other => self.drop_packet(),
        }
    }

    fn drop_packet(&mut self) -> Action {
        self.stats.dropped += 1;
        Action::Nothing
    }

    fn client_channel_data(&mut self, now: Instant, tuple: FiveTuple, packet: &[u8]) -> Action {
        let Ok((channel, data)) = parse_channel_data(packet) else {
            return self.drop_packet();
        };
        let Some(allocation) = self.allocations.get_mut(&tuple) else {
            return self.drop_packet();
        };
        let Some(&(peer, expires)) = allocation.channels.get(&channel) else {
            return self.drop_packet();
        };
        let permitted = allocation.permissions.get(&peer.ip()).is_some_and(|until| *until > now);
        let live = expires > now && allocation.expires > now && permitted;
        if !live || self.shared.is_own(&peer) {
            return self.drop_packet();
        }
        if !spend(allocation, now, data.len(), self.shared.config.bandwidth_bytes_per_second) {
            return self.drop_packet();
        }
        self.stats.to_peer_packets += 1;
        self.stats.to_peer_bytes += data.len() as u64;
        // ChannelData carries the data right after its 4-byte header.
        Action::ToPeer { relay: allocation.relay, peer, range: 4..4 + data.len() }
    }

    fn client_stun(
        &mut self,
        now: Instant,
        unix_now: u64,
        request: Request<'_>,
        packet: &[u8],
        relays: &mut impl Relays,
        out: &mut Vec<u8>,
    ) -> Action {
        let message = &request.message;
        match (message.class(), message.method()) {
            (Class::Request, Method::BINDING) if message.unknown_comprehension_required(KNOWN).is_empty() => {
                let mut writer = MessageWriter::new(out, Method::BINDING, Class::Success, message.transaction_id());
                writer.xor_address(attr::XOR_MAPPED_ADDRESS, request.tuple.client);
                if request.fingerprint {
                    writer.fingerprint();
                }
                sent(writer.finish().is_ok(), request.tuple)
            }
            (Class::Indication, Method::SEND) => self.send_indication(now, &request, packet),
            (Class::Indication, _) => Action::Nothing,
            (Class::Request, method) => {
                let unknown = message.unknown_comprehension_required(KNOWN);
                if !unknown.is_empty() {
                    let mut writer = MessageWriter::new(out, method, Class::Error, message.transaction_id());
                    writer.error_code(420, "Unknown Attribute").unknown_attributes(unknown.as_slice());
                    return sent(writer.finish().is_ok(), request.tuple);
                }
                let auth = match self.authenticate(unix_now, &request) {
                    Ok(auth) => auth,
                    Err((code, reason)) => {
                        self.stats.auth_failures += u64::from(code == 401);
                        let had_credentials = message.get(attr::MESSAGE_INTEGRITY).is_some()
                            || message.get(attr::MESSAGE_INTEGRITY_SHA256).is_some();
                        self.shared.metrics.auth_failure(code, had_credentials);
                        return self.challenge(unix_now, &request, code, reason, out);
                    }
                };
                let result = match method {
                    Method::ALLOCATE => self.allocate(now, &request, &auth, relays),
                    Method::REFRESH => self.refresh(now, &request, &auth, relays),
                    Method::CREATE_PERMISSION => self.create_permission(now, &request, &auth),
                    Method::CHANNEL_BIND => self.channel_bind(now, &request, &auth),
                    _ => Err((400, "Bad Request")),
                };
                if result.is_ok() {
                    self.publish(request.tuple);
                }
                let written = self.respond(&request, &auth, result, out);
                sent(written, request.tuple)
            }
            _ => self.drop_packet(),
        }
    }

    /// Long-term credential mechanism (RFC 8489 9.2.4).
    fn authenticate(&self, unix_now: u64, request: &Request<'_>) -> Result<Authenticated, (u16, &'static str)> {
        let message = &request.message;
        let has_integrity =
            message.get(attr::MESSAGE_INTEGRITY).is_some() || message.get(attr::MESSAGE_INTEGRITY_SHA256).is_some();
        if !has_integrity {
            return Err((401, "Unauthorized"));
        }
        let (Ok(Some(username)), Ok(Some(realm)), Ok(Some(nonce))) =
            (message.username(), message.realm(), message.nonce())
        else {
            return Err((400, "Bad Request"));
        };
        match self.shared.check_nonce(nonce, unix_now, request.tuple.client.ip()) {
            NonceCheck::Fresh => {}
            NonceCheck::Stale => return Err((438, "Stale Nonce")),
            NonceCheck::Unknown => return Err((401, "Unauthorized")),
        }
        if realm != self.shared.config.realm {
            return Err((401, "Unauthorized"));
        }
        // A REST credential that expired during a long call still refreshes the allocation it created for a while
        // (`expired_refresh_grace`): the HMAC proves it, and cutting a call off mid-way helps nobody. New allocations
        // need an unexpired one.
        let existing = self.allocations.get(&request.tuple).filter(|a| a.user == username);
        let check_time = if existing.is_some() {
            unix_now.saturating_sub(self.shared.config.expired_refresh_grace.as_secs())
        } else {
            unix_now
        };
        for password in self.shared.credentials.passwords(username, check_time) {
            let key = long_term_key_md5(username, realm, &password);
            if let Integrity::Valid { sha256 } = message.check_integrity(&key) {
                return Ok(Authenticated { user: username.to_owned(), key, sha256 });
            }
        }
        Err((401, "Unauthorized"))
    }

    /// An error that needs (new) credentials: 401 or 438 with REALM and NONCE, and nothing else (strangers get small
    /// answers, so the server cannot be used to amplify).
    fn challenge(&self, unix_now: u64, request: &Request<'_>, code: u16, reason: &str, out: &mut Vec<u8>) -> Action {
        let message = &request.message;
        let mut writer = MessageWriter::new(out, message.method(), Class::Error, message.transaction_id());
        writer.error_code(code, reason);
        if code == 401 || code == 438 {
            writer.attr(attr::REALM, self.shared.config.realm.as_bytes());
            writer.attr(attr::NONCE, self.shared.nonce(unix_now, request.tuple.client.ip()).as_bytes());
        }
        if request.fingerprint {
            writer.fingerprint();
        }
        sent(writer.finish().is_ok(), request.tuple)
    }

    /// Writes the response to an authenticated request; false if it could not be encoded.
    fn respond(
        &self,
        request: &Request<'_>,
        auth: &Authenticated,
        result: Result<Success, (u16, &'static str)>,
        out: &mut Vec<u8>,
    ) -> bool {
        let message = &request.message;
        let class = if result.is_ok() { Class::Success } else { Class::Error };
        let mut writer = MessageWriter::new(out, message.method(), class, message.transaction_id());
        match result {
            Ok(success) => {
                if let Some(relayed) = success.relayed {
                    writer.xor_address(attr::XOR_RELAYED_ADDRESS, relayed);
                    writer.xor_address(attr::XOR_MAPPED_ADDRESS, request.tuple.client);
                }
                if let Some(lifetime) = success.lifetime {
                    writer.u32_attr(attr::LIFETIME, lifetime);
                }
                if let Some(software) = &self.shared.config.software {
                    writer.attr(attr::SOFTWARE, software.as_bytes());
                }
            }
            Err((code, reason)) => {
                writer.error_code(code, reason);
            }
        }
        if auth.sha256 {
            writer.integrity_sha256(&auth.key);
        } else {
            writer.integrity(&auth.key);
        }
        if request.fingerprint {
            writer.fingerprint();
        }
        writer.finish().is_ok()
    }

    fn own_allocation(
        &mut self,
        request: &Request<'_>,
        auth: &Authenticated,
    ) -> Result<&mut Allocation, (u16, &'static str)> {
        match self.allocations.get_mut(&request.tuple) {
            None => Err((437, "Allocation Mismatch")),
            Some(allocation) if allocation.user != auth.user => Err((441, "Wrong Credentials")),
            Some(allocation) => Ok(allocation),
        }
    }

    fn allocate(
        &mut self,
        now: Instant,
        request: &Request<'_>,
        auth: &Authenticated,
        relays: &mut impl Relays,
    ) -> Result<Success, (u16, &'static str)> {
        let message = &request.message;
        if let Some(existing) = self.allocations.get(&request.tuple) {
            // A retransmitted Allocate gets the same answer; any other is a mismatch (RFC 8656 7.2).
            if existing.allocate_tid == message.transaction_id() && existing.user == auth.user {
                let lifetime = existing.expires.saturating_duration_since(now).as_secs();
                return Ok(Success {
                    relayed: Some(existing.relay_addr),
                    lifetime: Some(u32::try_from(lifetime).unwrap_or(u32::MAX)),
                });
            }
            return Err((437, "Allocation Mismatch"));
        }
        match message.requested_transport() {
            Ok(Some(17)) => {}
            Ok(Some(_)) => return Err((442, "Unsupported Transport Protocol")),
            _ => return Err((400, "Bad Request")),
        }
        let ipv6 = match message.requested_address_family() {
            Ok(None | Some(1)) => false,
            Ok(Some(2)) => true,
            _ => return Err((440, "Address Family not Supported")),
        };
        let even_port = match message.even_port() {
            Ok(None) => false,
            // Reserving the next port for a later allocation (the R bit) is not offered.
            Ok(Some(true)) => return Err((508, "Insufficient Capacity")),
            Ok(Some(false)) => true,
            Err(_) => return Err((400, "Bad Request")),
        };
        let lifetime = self.granted_lifetime(message)?;
        self.shared.reserve(&auth.user, request.tuple.client.ip()).map_err(|code| {
            if code == 486 {
                (486, "Allocation Quota Reached")
            } else {
                (508, "Insufficient Capacity")
            }
        })?;
        let (relay, local) = match relays.open(ipv6, even_port) {
            Ok(opened) => opened,
            Err(error) => {
                self.shared.release(&auth.user, request.tuple.client.ip());
                return Err(match error {
                    RelayError::Family => (440, "Address Family not Supported"),
                    RelayError::Exhausted => (508, "Insufficient Capacity"),
                });
            }
        };
        let relay_addr = match self.shared.config.external_ip {
            Some(ip) if ip.is_ipv4() == local.is_ipv4() => SocketAddr::new(ip, local.port()),
            _ => local,
        };
        let expires = now + lifetime;
        self.allocations.insert(
            request.tuple,
            Allocation {
                user: auth.user.clone(),
                relay,
                relay_addr,
                expires,
                scheduled: expires,
                allocate_tid: message.transaction_id(),
                permissions: FastMap::default(),
                channels: FastMap::default(),
                peer_channels: FastMap::default(),
                budget: None,
            },
        );
        self.by_relay.insert(relay, request.tuple);
        self.expiries.push(Reverse((expires, relay)));
        Ok(Success { relayed: Some(relay_addr), lifetime: Some(secs(lifetime)) })
    }

    fn granted_lifetime(&self, message: &Message<'_>) -> Result<Duration, (u16, &'static str)> {
        let config = &self.shared.config;
        match message.lifetime() {
            Ok(None) => Ok(config.default_lifetime),
            Ok(Some(requested)) => {
                let requested = Duration::from_secs(u64::from(requested));
                Ok(requested.clamp(config.default_lifetime, config.max_lifetime))
            }
            Err(_) => Err((400, "Bad Request")),
        }
    }

    fn refresh(
        &mut self,
        now: Instant,
        request: &Request<'_>,
        auth: &Authenticated,
        relays: &mut impl Relays,
    ) -> Result<Success, (u16, &'static str)> {
        let message = &request.message;
        let requested = message.lifetime().map_err(|_| (400, "Bad Request"))?;
        let family_mismatch = {
            let allocation = self.own_allocation(request, auth)?;
            match message.requested_address_family() {
                Ok(Some(1)) => !allocation.relay_addr.is_ipv4(),
                Ok(Some(2)) => allocation.relay_addr.is_ipv4(),
                Ok(_) => false,
                Err(_) => return Err((400, "Bad Request")),
            }
        };
        if family_mismatch {
            return Err((443, "Peer Address Family Mismatch"));
        }
        if requested == Some(0) {
            self.remove(request.tuple, relays);
            return Ok(Success { relayed: None, lifetime: Some(0) });
        }
        let lifetime = self.granted_lifetime(message)?;
        let allocation = self.own_allocation(request, auth)?;
        allocation.expires = now + lifetime;
        let (expires, relay) = (allocation.expires, allocation.relay);
        if expires < allocation.scheduled {
            // A shorter lifetime than before: the heap needs an earlier entry.
            allocation.scheduled = expires;
            self.expiries.push(Reverse((expires, relay)));
        }
        Ok(Success { relayed: None, lifetime: Some(secs(lifetime)) })
    }

    fn create_permission(
        &mut self,
        now: Instant,
        request: &Request<'_>,
        auth: &Authenticated,
    ) -> Result<Success, (u16, &'static str)> {
        let message = &request.message;
        let mut peers = Vec::new();
        for peer in message.xor_addresses(attr::XOR_PEER_ADDRESS) {
            peers.push(peer.map_err(|_| (400, "Bad Request"))?);
        }
        if peers.is_empty() {
            return Err((400, "Bad Request"));
        }
        let policy = &self.shared.policy;
        let (lifetime, max) = (self.shared.config.permission_lifetime, self.shared.config.max_permissions);
        if peers.iter().any(|peer| !policy.permits(peer.ip())) {
            return Err((403, "Forbidden"));
        }
        let allocation = self.own_allocation(request, auth)?;
        if peers.iter().any(|peer| peer.is_ipv4() != allocation.relay_addr.is_ipv4()) {
            return Err((443, "Peer Address Family Mismatch"));
        }
        prune(allocation, now);
        let mut new_ips: Vec<IpAddr> =
            peers.iter().map(|p| p.ip()).filter(|ip| !allocation.permissions.contains_key(ip)).collect();
        new_ips.sort_unstable();
        new_ips.dedup();
        let new = new_ips.len();
        if allocation.permissions.len() + new > max {
            return Err((508, "Insufficient Capacity"));
        }
        for peer in peers {
            allocation.permissions.insert(peer.ip(), now + lifetime);
        }
        Ok(Success::default())
    }

    fn channel_bind(
        &mut self,
        now: Instant,
        request: &Request<'_>,
        auth: &Authenticated,
    ) -> Result<Success, (u16, &'static str)> {
        let message = &request.message;
        let channel = match message.channel_number() {
            Ok(Some(channel)) if switchboard_stun::CHANNELS.contains(&channel) => channel,
            _ => return Err((400, "Bad Request")),
        };
        let peer = match message.xor_address(attr::XOR_PEER_ADDRESS) {
            Ok(Some(peer)) => peer,
            _ => return Err((400, "Bad Request")),
        };
        if !self.shared.policy.permits(peer.ip()) {
            return Err((403, "Forbidden"));
        }
        let config = &self.shared.config;
        let (channel_lifetime, permission_lifetime) = (config.channel_lifetime, config.permission_lifetime);
        let (max_channels, max_permissions) = (config.max_channels, config.max_permissions);
        let allocation = self.own_allocation(request, auth)?;
        if peer.is_ipv4() != allocation.relay_addr.is_ipv4() {
            return Err((443, "Peer Address Family Mismatch"));
        }
        prune(allocation, now);
        // A channel stays bound to one peer, and a peer to one channel, for the binding's life (RFC 8656 11.2).
        let channel_taken = allocation.channels.get(&channel).is_some_and(|(bound, _)| *bound != peer);
        let peer_taken = allocation.peer_channels.get(&peer).is_some_and(|bound| *bound != channel);
        if channel_taken || peer_taken {
            return Err((400, "Bad Request"));
        }
        let new_channel = !allocation.channels.contains_key(&channel);
        let new_permission = !allocation.permissions.contains_key(&peer.ip());
        if (new_channel && allocation.channels.len() >= max_channels)
            || (new_permission && allocation.permissions.len() >= max_permissions)
        {
            return Err((508, "Insufficient Capacity"));
        }
        allocation.channels.insert(channel, (peer, now + channel_lifetime));
        allocation.peer_channels.insert(peer, channel);
        allocation.permissions.insert(peer.ip(), now + permission_lifetime);
        Ok(Success::default())
    }

    fn send_indication(&mut self, now: Instant, request: &Request<'_>, packet: &[u8]) -> Action {
        let message = &request.message;
        // Indications with attributes this server must understand but does not (DONT-FRAGMENT) are discarded.
        if !message.unknown_comprehension_required(KNOWN).is_empty() {
            return self.drop_packet();
        }
        let (Ok(Some(peer)), Some(data)) = (message.xor_address(attr::XOR_PEER_ADDRESS), message.data()) else {
            return self.drop_packet();
        };
        let bandwidth = self.shared.config.bandwidth_bytes_per_second;
        let Some(allocation) = self.allocations.get_mut(&request.tuple) else {
            return self.drop_packet();
        };
        let permitted = allocation.permissions.get(&peer.ip()).is_some_and(|expires| *expires > now);
        let own = self.shared.is_own(&peer);
        if !permitted || own || allocation.expires <= now || !spend(allocation, now, data.len(), bandwidth) {
            return self.drop_packet();
        }
        let Some(offset) = offset_in(packet, data) else {
            return self.drop_packet();
        };
        self.stats.to_peer_packets += 1;
        self.stats.to_peer_bytes += data.len() as u64;
        Action::ToPeer { relay: allocation.relay, peer, range: offset..offset + data.len() }
    }

    /// Handles a datagram that reached relay socket `relay` from `peer`: relays it to the client as ChannelData (when
    /// a channel is bound) or a Data indication, if the peer has a permission.
    pub fn handle_peer(
        &mut self,
        now: Instant,
        relay: RelayId,
        peer: SocketAddr,
        data: &[u8],
        out: &mut Vec<u8>,
    ) -> Action {
        let Some(tuple) = self.by_relay.get(&relay).copied() else {
            return self.drop_packet();
        };
        let bandwidth = self.shared.config.bandwidth_bytes_per_second;
        let Some(allocation) = self.allocations.get_mut(&tuple) else {
            return self.drop_packet();
        };
        let permitted = allocation.permissions.get(&peer.ip()).is_some_and(|expires| *expires > now);
        if !permitted || allocation.expires <= now || !spend(allocation, now, data.len(), bandwidth) {
            return self.drop_packet();
        }
        let channel = allocation
            .peer_channels
            .get(&peer)
            .copied()
            .filter(|channel| allocation.channels.get(channel).is_some_and(|(_, expires)| *expires > now));
        match channel {
            Some(channel) => {
                if write_channel_data(out, channel, data, tuple.transport != Transport::Udp).is_err() {
                    return self.drop_packet();
                }
            }
            None => {
                let mut tid = [0u8; 12];
                // Indications need a transaction id but no uniqueness guarantees; derive one cheaply.
                let stamp = self.stats.to_client_packets.to_be_bytes();
                tid[4..].copy_from_slice(&stamp);
                let mut writer = MessageWriter::new(out, Method::DATA, Class::Indication, TransactionId(tid));
                writer.xor_address(attr::XOR_PEER_ADDRESS, peer);
                writer.attr(attr::DATA, data);
                if writer.finish().is_err() {
                    return self.drop_packet();
                }
            }
        }
        self.stats.to_client_packets += 1;
        self.stats.to_client_bytes += data.len() as u64;
        Action::ToClient(tuple)
    }
}

/// What a successful request answers with.
#[derive(Debug, Default)]
struct Success {
    relayed: Option<SocketAddr>,
    lifetime: Option<u32>,
}

/// The client gets the output buffer, if a message could be written into it.
fn sent(written: bool, tuple: FiveTuple) -> Action {
    if written {
        Action::ToClient(tuple)
    } else {
        Action::Nothing
    }
}

fn secs(duration: Duration) -> u32 {
    u32::try_from(duration.as_secs()).unwrap_or(u32::MAX)
}

/// Drops expired permissions and channels (bounded by the quotas, so this stays cheap).
fn prune(allocation: &mut Allocation, now: Instant) {
    allocation.permissions.retain(|_, expires| *expires > now);
    let before = allocation.channels.len();
    allocation.channels.retain(|_, (_, expires)| *expires > now);
    if allocation.channels.len() != before {
        let channels = &allocation.channels;
        allocation.peer_channels.retain(|_, channel| channels.contains_key(channel));
    }
}

/// Takes `bytes` from the allocation's bandwidth budget; false when over the cap.
fn spend(allocation: &mut Allocation, now: Instant, bytes: usize, cap: Option<u64>) -> bool {
    let Some(cap) = cap else { return true };
    let cap = cap as f64;
    let (available, since) = allocation.budget.get_or_insert((cap, now));
    let refill = now.saturating_duration_since(*since).as_secs_f64() * cap;
    *available = (*available + refill).min(cap);
    *since = now;
    if *available >= bytes as f64 {
        *available -= bytes as f64;
        true
    } else {
        false
    }
}

/// Where `inner`, a slice of `outer`, starts in it.
fn offset_in(outer: &[u8], inner: &[u8]) -> Option<usize> {
    let start = (inner.as_ptr() as usize).checked_sub(outer.as_ptr() as usize)?;
    (start + inner.len() <= outer.len()).then_some(start)
}
