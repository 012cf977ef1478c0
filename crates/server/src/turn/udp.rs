//! STUN/TURN over UDP: worker threads around the sans-IO `switchboard_turn::TurnServer`.
//!
//! Every worker is an OS thread with its own socket bound to the TURN port with `SO_REUSEPORT`; the kernel hashes
//! each client's address to one of them, so a client's allocations, and their relay sockets, live in one worker and
//! the packet path takes no lock. With one worker per core, all cores relay.
//!
//! A worker is a plain `mio` event loop rather than a Tokio runtime: one `epoll_wait` hands it every socket that is
//! ready, it reads each with `recvmmsg` and sends to clients with one `sendmmsg` per round (see `switchboard_udp`), so that a
//! busy relay costs a few system calls per batch of packets instead of several per packet, and no task wake-ups. A run
//! of same-length datagrams to one address (a peer's burst) leaves as one segmented send (UDP GSO).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::unix_now;
use switchboard_udp::{RecvBatch, SendBatch, BATCH};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use switchboard_turn::server::{Action, FiveTuple, RelayError, RelayId, Relays, Shared, Transport, TurnServer};

/// TCP and TLS connections to the TURN ports allowed at once (each may hold an allocation and a relay socket).
const MAX_STREAM_CONNECTIONS: usize = 4096;

const CLIENTS: Token = Token(0);
const WAKER: Token = Token(1);
/// Relay `RelayId(n)` is registered as `Token(n)`; ids start past the two fixed tokens.
const FIRST_RELAY: u64 = 2;
/// Batches read from one socket before the others get their turn.
const ROUNDS_PER_TURN: usize = 4;
/// How often expired allocations, permissions and channels are swept.
const SWEEP: Duration = Duration::from_secs(1);

/// Where and how the TURN listener runs.
#[derive(Debug, Clone)]
pub struct TurnListener {
    /// The STUN/TURN port's address.
    pub listen: SocketAddr,
    /// Address relay sockets bind to.
    pub relay_ip: IpAddr,
    /// Worker threads (one per core is right).
    pub workers: usize,
    /// Per-address limits of the TCP and TLS listeners.
    pub limits: crate::limits::ConnectionLimits,
    /// Shared state: settings, credentials, peer policy, quotas.
    pub shared: Arc<Shared>,
}

/// The running listener: its address and the workers' stop switch.
pub struct RunningTurn {
    /// The bound address (the port is known even when 0 was asked for); TCP listens on the same port.
    pub local_addr: SocketAddr,
    stop: tokio::sync::watch::Sender<bool>,
    /// Tells the UDP workers to stop; each also has a waker to notice it at once.
    stop_workers: Arc<AtomicBool>,
    wakers: Vec<Arc<Waker>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    tcp: tokio::task::JoinHandle<()>,
    /// The `turns:` address and its accept task, when TLS is on.
    tls: Option<(SocketAddr, tokio::task::JoinHandle<()>)>,
    /// What TCP and TLS connections share (the TLS listener joins later).
    streams: super::tcp::StreamContext,
}

impl RunningTurn {
    /// Serves `turns:` on `addr` with `config`, beside the UDP and TCP listeners.
    pub fn start_tls(
        &mut self,
        addr: SocketAddr,
        config: std::sync::Arc<rustls::ServerConfig>,
    ) -> std::io::Result<SocketAddr> {
        let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
        socket.set_reuse_address(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        socket.listen(1024)?;
        let listener = tokio::net::TcpListener::from_std(socket.into())?;
        let local = listener.local_addr()?;
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        self.tls = Some((local, tokio::spawn(super::tls::serve(listener, acceptor, self.streams.clone()))));
        Ok(local)
    }

    /// The per-address admission of the TCP and TLS listeners, whose counters `/metrics` reports.
    pub fn stream_admission(&self) -> Arc<crate::limits::Admission> {
        self.streams.admission.clone()
    }

    /// The `turns:` address, when TLS is on.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls.as_ref().map(|(addr, _)| *addr)
    }
    /// Stops the workers and waits for them.
    pub fn stop(self) {
        self.tcp.abort();
        if let Some((_, task)) = &self.tls {
            task.abort();
        }
        let _ = self.stop.send(true);
        self.stop_workers.store(true, Ordering::Release);
        for waker in &self.wakers {
            let _ = waker.wake();
        }
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

fn reuseport_socket(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::DGRAM, None)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    // Bursts of media arrive faster than one wake-up drains them; a larger buffer absorbs them instead of dropping.
    let _ = socket.set_recv_buffer_size(4 << 20);
    let _ = socket.set_send_buffer_size(4 << 20);
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

fn tcp_listener(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    tokio::net::TcpListener::from_std(socket.into())
}

/// Binds the TURN port (UDP once per worker, and TCP) and starts serving. Must run inside a Tokio runtime, which
/// serves the TCP side.
pub fn start(listener: TurnListener) -> std::io::Result<RunningTurn> {
    // UDP and TCP share the port number. With port 0, the kernel's UDP pick may be taken for TCP: pick again.
    let attempts = if listener.listen.port() == 0 { 16 } else { 1 };
    let mut bound = None;
    let mut last_error = None;
    for _ in 0..attempts {
        let first = reuseport_socket(listener.listen)?;
        let local_addr = first.local_addr()?;
        match tcp_listener(local_addr) {
            Ok(tcp) => {
                bound = Some((first, local_addr, tcp));
                break;
            }
            Err(error) => last_error = Some(error),
        }
    }
    let Some((first, local_addr, tcp_listener)) = bound else {
        return Err(last_error.unwrap_or_else(|| std::io::Error::other("cannot bind the TURN port")));
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let streams = super::tcp::StreamContext {
        shared: listener.shared.clone(),
        relay_ip: listener.relay_ip,
        permits: Arc::new(tokio::sync::Semaphore::new(MAX_STREAM_CONNECTIONS)),
        // Open connections per address only, no attempt rate: a browser opens a TCP and a TLS TURN connection per
        // peer connection at once (about 30 for a 16-member mesh room), and a whole office may share one address.
        admission: crate::limits::Admission::new(
            crate::limits::ConnectionLimits { rate_per_ip: 0, ..listener.limits },
            MAX_STREAM_CONNECTIONS,
        ),
        stopped: stopped.clone(),
    };
    let tcp = tokio::spawn(super::tcp::serve(tcp_listener, streams.clone()));
    let mut sockets = vec![first];
    for _ in 1..listener.workers.max(1) {
        sockets.push(reuseport_socket(local_addr)?);
    }
    let stop_workers = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    let mut wakers = Vec::new();
    for (index, socket) in sockets.into_iter().enumerate() {
        let poll = Poll::new()?;
        wakers.push(Arc::new(Waker::new(poll.registry(), WAKER)?));
        let (stop, relay_ip, shared) = (stop_workers.clone(), listener.relay_ip, listener.shared.clone());
        // The batches hold raw pointers (not `Send`): the worker is built on its own thread.
        let thread =
            std::thread::Builder::new().name(format!("turn-udp-{index}")).spawn(move || {
                match Worker::new(poll, socket, local_addr, relay_ip, shared) {
                    Ok(worker) => worker.run(&stop),
                    Err(error) => tracing::error!(%error, "cannot start a TURN worker"),
                }
            })?;
        threads.push(thread);
    }
    tracing::info!(%local_addr, workers = threads.len(), "STUN/TURN listening on UDP and TCP");
    Ok(RunningTurn { local_addr, stop, stop_workers, wakers, threads, tcp, tls: None, streams })
}

/// The relay sockets of one worker, registered with its poll under their id.
struct RelaySockets {
    relay_ip: IpAddr,
    next: u64,
    registry: Registry,
    /// Looked up for every relayed packet; relay ids are ours, but a seeded fast hash costs nothing more.
    sockets: HashMap<RelayId, UdpSocket, foldhash::fast::RandomState>,
}

impl Relays for RelaySockets {
    fn open(&mut self, ipv6: bool, even_port: bool) -> Result<(RelayId, SocketAddr), RelayError> {
        let (socket, local) = super::bind_relay(self.relay_ip, ipv6, even_port)?;
        let mut socket = UdpSocket::from_std(socket);
        let id = RelayId(self.next);
        let token = Token(usize::try_from(id.0).map_err(|_| RelayError::Exhausted)?);
        self.registry.register(&mut socket, token, Interest::READABLE).map_err(|_| RelayError::Exhausted)?;
        self.next += 1;
        self.sockets.insert(id, socket);
        Ok((id, local))
    }

    fn close(&mut self, relay: RelayId) {
        if let Some(mut socket) = self.sockets.remove(&relay) {
            let _ = self.registry.deregister(&mut socket);
        }
    }
}

/// One UDP worker: its socket on the TURN port, its allocations and their relay sockets, and its batches.
struct Worker {
    poll: Poll,
    socket: UdpSocket,
    local_addr: SocketAddr,
    server: TurnServer,
    relays: RelaySockets,
    recv: RecvBatch,
    /// Everything bound for clients this round (responses and relayed data), sent with one `sendmmsg` per batch.
    to_clients: SendBatch,
    /// Client -> peer datagrams of the current batch: (relay, peer, index of the datagram, payload range).
    to_peers: Vec<(RelayId, SocketAddr, usize, std::ops::Range<usize>)>,
    /// Relays sharing one batch's datagrams go out together.
    peer_batch: SendBatch,
    /// Sockets that were still readable when their turn ended (edge-triggered: no new event will come for them).
    unfinished: Vec<Token>,
}

impl Worker {
    fn new(
        poll: Poll,
        socket: std::net::UdpSocket,
        local_addr: SocketAddr,
        relay_ip: IpAddr,
        shared: Arc<Shared>,
    ) -> std::io::Result<Self> {
        let mut socket = UdpSocket::from_std(socket);
        poll.registry().register(&mut socket, CLIENTS, Interest::READABLE)?;
        let registry = poll.registry().try_clone()?;
        Ok(Self {
            poll,
            socket,
            local_addr,
            server: TurnServer::new(shared),
            relays: RelaySockets { relay_ip, next: FIRST_RELAY, registry, sockets: HashMap::default() },
            recv: RecvBatch::new(),
            to_clients: SendBatch::new(),
            to_peers: Vec::with_capacity(BATCH),
            peer_batch: SendBatch::new(),
            unfinished: Vec::new(),
        })
    }

    fn run(mut self, stop: &AtomicBool) {
        let mut events = Events::with_capacity(256);
        let mut next_sweep = Instant::now() + SWEEP;
        let mut ready = Vec::new();
        while !stop.load(Ordering::Acquire) {
            let timeout = if self.unfinished.is_empty() {
                next_sweep.saturating_duration_since(Instant::now())
            } else {
                Duration::ZERO
            };
            if let Err(error) = self.poll.poll(&mut events, Some(timeout)) {
                if error.kind() != std::io::ErrorKind::Interrupted {
                    tracing::error!(%error, "TURN worker cannot poll");
                    break;
                }
            }
            ready.clear();
            ready.append(&mut self.unfinished);
            ready.extend(events.iter().map(|event| event.token()).filter(|token| *token != WAKER));
            for token in &ready {
                let unfinished = if *token == CLIENTS { self.serve_clients() } else { self.serve_relay(*token) };
                if unfinished {
                    self.unfinished.push(*token);
                }
            }
            if !self.to_clients.is_empty() {
                self.to_clients.flush(self.socket.as_raw_fd());
            }
            let now = Instant::now();
            if now >= next_sweep {
                self.server.handle_timeout(now, &mut self.relays);
                next_sweep = now + SWEEP;
            }
        }
        self.server.close_all(&mut self.relays);
    }

    /// Reads client datagrams for one turn; true when the socket may still hold more.
    fn serve_clients(&mut self) -> bool {
        let fd = self.socket.as_raw_fd();
        for _ in 0..ROUNDS_PER_TURN {
            let count = match self.recv.recv(fd) {
                Ok(count) => count,
                // WouldBlock: drained. Other errors (e.g. ICMP port unreachable reported on this socket) concern one
                // earlier datagram; the next event brings the socket back.
                Err(_) => return false,
            };
            let now = Instant::now();
            let unix = unix_now();
            for index in 0..count {
                let Some((packet, client)) = self.recv.get(index) else { continue };
                let tuple = FiveTuple { client, server: self.local_addr, transport: Transport::Udp };
                let out = self.to_clients.next_buffer();
                match self.server.handle_client(now, unix, tuple, packet, &mut self.relays, out) {
                    Action::Nothing => {}
                    Action::ToClient(tuple) => self.to_clients.commit(fd, tuple.client),
                    Action::ToPeer { relay, peer, range } => self.to_peers.push((relay, peer, index, range)),
                }
            }
            self.send_to_peers();
            if count < BATCH {
                // A short read means the queue was empty; a datagram arriving since raises a new event.
                return false;
            }
        }
        true
    }

    /// Sends this batch's client -> peer datagrams, one flush of the peer batch per relay (`sendmmsg`, and a segmented
    /// send for each run of same-length datagrams to one peer).
    fn send_to_peers(&mut self) {
        let mut pending = std::mem::take(&mut self.to_peers);
        // Grouped by relay (a stable sort: each relay's datagrams keep their order; different relays are different
        // flows): clients' datagrams arrive interleaved, and grouped they make fewer, longer sends, which the
        // send batch turns into segmented sends when they go to one peer.
        pending.sort_by_key(|(relay, ..)| relay.0);
        let mut current: Option<RawFd> = None;
        for (relay, peer, index, range) in pending.drain(..) {
            // Unknown relay: closed by an earlier datagram of this batch (a Refresh with lifetime 0).
            let Some(fd) = self.relays.sockets.get(&relay).map(AsRawFd::as_raw_fd) else { continue };
            if current.is_some_and(|current| current != fd) {
                if let Some(previous) = current {
                    self.peer_batch.flush(previous);
                }
            }
            current = Some(fd);
            let Some((packet, _)) = self.recv.get(index) else { continue };
            let Some(payload) = packet.get(range) else { continue };
            self.peer_batch.push(fd, payload, peer);
        }
        if let Some(fd) = current {
            self.peer_batch.flush(fd);
        }
        self.to_peers = pending;
    }

    /// Reads peer datagrams arriving at one relay for one turn; true when it may still hold more.
    fn serve_relay(&mut self, token: Token) -> bool {
        let relay = RelayId(token.0 as u64);
        let Some(fd) = self.relays.sockets.get(&relay).map(AsRawFd::as_raw_fd) else { return false };
        let client_fd = self.socket.as_raw_fd();
        for _ in 0..ROUNDS_PER_TURN {
            let Ok(count) = self.recv.recv(fd) else { return false };
            let now = Instant::now();
            for index in 0..count {
                let Some((data, peer)) = self.recv.get(index) else { continue };
                let out = self.to_clients.next_buffer();
                if let Action::ToClient(tuple) = self.server.handle_peer(now, relay, peer, data, out) {
                    self.to_clients.commit(client_fd, tuple.client);
                }
            }
            if count < BATCH {
                return false;
            }
        }
        true
    }
}
