//! STUN/TURN over UDP: worker threads around the sans-IO `switchboard_turn::TurnServer`.
//!
//! Every worker is an OS thread with a single-threaded runtime and its own socket bound to the TURN port with
//! `SO_REUSEPORT`; the kernel hashes each client's address to one of them, so a client's allocations, and their relay
//! sockets, live in one worker and the packet path takes no lock. With one worker per core, all cores relay.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::unix_now;

use switchboard_turn::server::{Action, FiveTuple, RelayError, RelayId, Relays, Shared, Transport, TurnServer};
use tokio::net::UdpSocket;
use tokio::task::{AbortHandle, LocalSet};

/// TCP and TLS connections to the TURN ports allowed at once (each may hold an allocation and a relay socket).
const MAX_STREAM_CONNECTIONS: usize = 4096;

/// Largest UDP payload a worker reads (a TURN message never exceeds the path MTU, but be generous).
const DATAGRAM: usize = 65_536;

/// Where and how the TURN listener runs.
#[derive(Debug, Clone)]
pub struct TurnListener {
    /// The STUN/TURN port's address.
    pub listen: SocketAddr,
    /// Address relay sockets bind to.
    pub relay_ip: IpAddr,
    /// Worker threads (one per core is right).
    pub workers: usize,
    /// Shared state: settings, credentials, peer policy, quotas.
    pub shared: Arc<Shared>,
}

/// The running listener: its address and the workers' stop switch.
pub struct RunningTurn {
    /// The bound address (the port is known even when 0 was asked for); TCP listens on the same port.
    pub local_addr: SocketAddr,
    stop: tokio::sync::watch::Sender<bool>,
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
        stopped: stopped.clone(),
    };
    let tcp = tokio::spawn(super::tcp::serve(tcp_listener, streams.clone()));
    let mut sockets = vec![first];
    for _ in 1..listener.workers.max(1) {
        sockets.push(reuseport_socket(local_addr)?);
    }
    let mut threads = Vec::new();
    for (index, socket) in sockets.into_iter().enumerate() {
        let (shared, relay_ip, stopped) = (listener.shared.clone(), listener.relay_ip, stopped.clone());
        let thread = std::thread::Builder::new().name(format!("turn-udp-{index}")).spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(runtime) => runtime,
                Err(error) => {
                    tracing::error!(%error, "cannot start a TURN worker");
                    return;
                }
            };
            let local = LocalSet::new();
            local.block_on(&runtime, worker(socket, local_addr, relay_ip, shared, stopped));
        })?;
        threads.push(thread);
    }
    tracing::info!(%local_addr, workers = threads.len(), "STUN/TURN listening on UDP and TCP");
    Ok(RunningTurn { local_addr, stop, threads, tcp, tls: None, streams })
}

/// The relay sockets of one worker.
struct RelaySockets {
    relay_ip: IpAddr,
    next: u64,
    sockets: HashMap<RelayId, (Rc<UdpSocket>, Option<AbortHandle>)>,
    /// Opened during the current packet; their receive tasks start right after it.
    opened: Vec<RelayId>,
}

impl Relays for RelaySockets {
    fn open(&mut self, ipv6: bool, even_port: bool) -> Result<(RelayId, SocketAddr), RelayError> {
        let (socket, local) = super::bind_relay(self.relay_ip, ipv6, even_port)?;
        self.next += 1;
        let id = RelayId(self.next);
        self.sockets.insert(id, (Rc::new(socket), None));
        self.opened.push(id);
        Ok((id, local))
    }

    fn close(&mut self, relay: RelayId) {
        if let Some((_, Some(task))) = self.sockets.remove(&relay) {
            task.abort();
        }
    }
}

struct Worker {
    server: TurnServer,
    relays: RelaySockets,
    out: Vec<u8>,
    /// Datagrams from peers, for every relay of the worker: a relay keeps no buffer of its own.
    from_peer: Vec<u8>,
}

type SharedWorker = Rc<RefCell<Worker>>;

async fn worker(
    socket: std::net::UdpSocket,
    local_addr: SocketAddr,
    relay_ip: IpAddr,
    shared: Arc<Shared>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    let client_socket = match UdpSocket::from_std(socket) {
        Ok(socket) => Rc::new(socket),
        Err(error) => {
            tracing::error!(%error, "cannot register the TURN socket");
            return;
        }
    };
    let state: SharedWorker = Rc::new(RefCell::new(Worker {
        server: TurnServer::new(shared),
        relays: RelaySockets { relay_ip, next: 0, sockets: HashMap::new(), opened: Vec::new() },
        out: Vec::with_capacity(2048),
        from_peer: vec![0; DATAGRAM],
    }));
    let timers = tokio::task::spawn_local(expire_loop(state.clone()));
    tokio::select! {
        () = client_loop(state.clone(), client_socket, local_addr) => {}
        _ = stopped.wait_for(|stop| *stop) => {}
    }
    timers.abort();
    let mut worker = state.borrow_mut();
    let Worker { server, relays, .. } = &mut *worker;
    server.close_all(relays);
}

async fn expire_loop(state: SharedWorker) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let mut worker = state.borrow_mut();
        let Worker { server, relays, .. } = &mut *worker;
        server.handle_timeout(Instant::now(), relays);
    }
}

async fn client_loop(state: SharedWorker, socket: Rc<UdpSocket>, local_addr: SocketAddr) {
    let mut buffer = vec![0u8; DATAGRAM];
    loop {
        let Ok((len, client)) = socket.recv_from(&mut buffer).await else { continue };
        let packet = &buffer[..len];
        let tuple = FiveTuple { client, server: local_addr, transport: Transport::Udp };
        let mut worker = state.borrow_mut();
        let Worker { server, relays, out, .. } = &mut *worker;
        match server.handle_client(Instant::now(), unix_now(), tuple, packet, relays, out) {
            Action::Nothing => {}
            Action::ToClient(tuple) => {
                // A full socket buffer drops this one datagram, as the network would.
                let _ = socket.try_send_to(out, tuple.client);
            }
            Action::ToPeer { relay, peer, range } => {
                if let Some((relay_socket, _)) = relays.sockets.get(&relay) {
                    // Unreachable peers and full buffers cost this packet only; the allocation lives on.
                    let _ = relay_socket.try_send_to(&packet[range], peer);
                }
            }
        }
        for relay in std::mem::take(&mut relays.opened) {
            if let Some((relay_socket, task)) = relays.sockets.get_mut(&relay) {
                let handle =
                    tokio::task::spawn_local(relay_loop(state.clone(), relay, relay_socket.clone(), socket.clone()));
                *task = Some(handle.abort_handle());
            }
        }
    }
}

async fn relay_loop(state: SharedWorker, relay: RelayId, relay_socket: Rc<UdpSocket>, client_socket: Rc<UdpSocket>) {
    loop {
        if relay_socket.readable().await.is_err() {
            continue;
        }
        let mut worker = state.borrow_mut();
        let Worker { server, out, from_peer, .. } = &mut *worker;
        // Drain what is there (bounded, so other relays get their turn), reading synchronously into the shared buffer.
        for _ in 0..32 {
            let Ok((len, peer)) = relay_socket.try_recv_from(from_peer) else { break };
            if let Action::ToClient(tuple) = server.handle_peer(Instant::now(), relay, peer, &from_peer[..len], out) {
                let _ = client_socket.try_send_to(out, tuple.client);
            }
        }
    }
}
