//! Binding the listeners and running the accept loop, the timer task and shutdown.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use hyper_util::{rt::TokioIo, service::TowerToHyperService};
use switchboard_core::{Signaling, TurnAuth};
use switchboard_proto::close_code;
use switchboard_proto::IceServer;
use switchboard_turn::{server::Shared, Credentials, PeerPolicy};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;

use crate::config::{Config, TurnSettings};
use crate::http::{router, AppState};
use crate::hub::Hub;
use crate::limits::{Admission, EdgeStats};
use crate::tls::CertStore;
use crate::ws::connection;

/// Pending connections the kernel may hold for us; a login storm opens thousands at once.
const LISTEN_BACKLOG: i32 = 4096;

/// After the drain, how long closing connections get to write their close frame (a connection gives up on a peer
/// that does not read after 3 s, and lingers at most 1 s for the peer's close).
const CLOSE_GRACE: Duration = Duration::from_secs(4);

/// A running server.
pub struct Server {
    http_addr: SocketAddr,
    turn: Option<crate::turn::RunningTurn>,
    hub: Arc<Hub>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    ops: Arc<crate::ops::Ops>,
    /// Stops what must outlive the drain: the core's timers and the ops listener.
    late_stop: watch::Sender<bool>,
    metrics_addr: Option<SocketAddr>,
    shutdown_timeout: Duration,
    tls: Option<Arc<CertStore>>,
    admission: Arc<Admission>,
    redirect_addr: Option<SocketAddr>,
    cluster: Option<Cluster>,
}

/// This node's link to the cluster.
struct Cluster {
    node: switchboard_core::cluster::NodeId,
    backend: Arc<switchboard_cluster::redis::RedisBackend>,
    task: JoinHandle<()>,
}

impl Server {
    /// Binds the listeners and starts serving.
    pub async fn start(config: Config) -> anyhow::Result<Self> {
        let listener = bind(config.http).with_context(|| format!("cannot listen on {}", config.http))?;
        let http_addr = listener.local_addr()?;
        let ws = connection::Settings {
            soft_limit: config.core.max_message_bytes,
            hard_limit: config.max_frame_bytes.max(config.core.max_message_bytes),
            heartbeat: config.core.heartbeat,
            deflate: config.ws_compression,
        };
        let tls = cert_store(&config, http_addr)?;
        let mut core_config = config.core;
        let (turn, turn_shared) = match &config.turn {
            Some(settings) => {
                let tls = match (&tls, settings.tls_enabled) {
                    (Some(store), true) => Some(store.turn_config()?),
                    _ => None,
                };
                let (running, shared) = start_turn(settings, config.limits, tls, http_addr, &mut core_config)?;
                (Some(running), Some(shared))
            }
            None => (None, None),
        };
        if let Some(external) = &config.external_turn {
            core_config.turn = Some(TurnAuth {
                credentials: Credentials::new(external.secrets.clone(), Default::default()),
                ttl: external.credential_ttl,
                urls: external.urls.clone(),
            });
        }
        let node = config.cluster.as_ref().map(|_| switchboard_cluster::random_node_id(rand::random()));
        core_config.cluster = node.clone();
        let unix_now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let core = Signaling::new(core_config, rand::random()).with_wall_clock(Instant::now(), unix_now);
        let hub = Arc::new(Hub::new(core, config.outbound_queue_frames, config.outbound_queue_bytes));
        let (stop, stopped) = watch::channel(false);
        let (late_stop, late_stopped) = watch::channel(false);
        let timers = tokio::spawn(hub.clone().run_timers(wait_for(late_stopped.clone())));
        let mut tasks = vec![timers];
        let cluster = match (&config.cluster, node) {
            (Some(settings), Some(node)) => {
                let (events, events_rx) = tokio::sync::mpsc::channel(switchboard_cluster::EVENT_QUEUE);
                let redis = switchboard_cluster::redis::RedisSettings {
                    url: settings.url.clone(),
                    node: node.clone(),
                    node_timeout: settings.node_timeout,
                };
                let (backend, task) = switchboard_cluster::redis::RedisBackend::start(redis, events)?;
                let backend = Arc::new(backend);
                hub.set_cluster(backend.clone());
                tasks.push(tokio::spawn(hub.clone().run_cluster_events(events_rx)));
                tracing::info!(%node, "cluster mode: this node's id");
                Some(Cluster { node, backend, task })
            }
            _ => None,
        };
        let origins = Arc::new(crate::auth::OriginPolicy::new(config.allowed_origins.clone()));
        let permits = Arc::new(Semaphore::new(config.max_connections));
        let admission = Admission::new(config.limits, config.max_connections);
        let edges = crate::metrics::Edges {
            http: admission.clone(),
            turn_streams: turn.as_ref().map(crate::turn::RunningTurn::stream_admission),
        };
        let ops = crate::ops::Ops::new(
            config.admin_token.as_ref(),
            config.metrics,
            config.max_connections,
            hub.clone(),
            permits.clone(),
            turn_shared,
            edges,
        );
        let state = AppState { hub: hub.clone(), ws, origins, ops: ops.clone() };
        let edge = Edge {
            admission: admission.clone(),
            permits,
            tls: tls.as_ref().map(|store| store.https_config().map(tokio_rustls::TlsAcceptor::from)).transpose()?,
            handshake_timeout: config.limits.handshake_timeout,
        };
        let mut redirect_addr = None;
        if let Some(addr) = config.redirect_http {
            let listener = bind(addr).with_context(|| format!("cannot listen on {addr} (redirect-http)"))?;
            redirect_addr = Some(listener.local_addr()?);
            let redirect = crate::redirect::serve(listener, http_addr.port(), edge.clone(), wait_for(stopped.clone()));
            tasks.push(tokio::spawn(redirect));
        }
        if let Some(store) = &tls {
            tasks.push(tokio::spawn(store.clone().watch(config.tls_reload_interval, wait_for(stopped.clone()))));
        }
        let accept = tokio::spawn(accept_loop(listener, state, stopped, edge));
        let turn_addr = turn.as_ref().map(|turn| turn.local_addr);
        let metrics_addr =
            crate::ops::start(&ops, config.metrics, accept.abort_handle(), turn_addr, late_stopped, &mut tasks)?;
        tasks.push(accept);
        if let Some(cluster) = &cluster {
            use switchboard_cluster::Backend;
            let backend = cluster.backend.clone();
            ops.readiness.register("cluster", move || {
                if backend.ready() {
                    Ok(())
                } else {
                    Err("cannot reach the cluster's Redis".to_owned())
                }
            });
        }
        let scheme = if tls.is_some() { "https" } else { "http" };
        tracing::info!(%http_addr, scheme, "switchboard listening");
        let shutdown_timeout = config.shutdown_timeout;
        Ok(Self {
            http_addr,
            turn,
            hub,
            stop,
            tasks,
            ops,
            late_stop,
            metrics_addr,
            shutdown_timeout,
            tls,
            admission,
            redirect_addr,
            cluster,
        })
    }

    /// The address of the separate metrics and admin listener, when `--metrics ADDR:PORT` asks for one.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Readiness, metrics and the admin API.
    pub fn ops(&self) -> &Arc<crate::ops::Ops> {
        &self.ops
    }

    /// `http://ADDR` or `https://ADDR` of the HTTP listener.
    pub fn http_url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.http_addr)
    }

    /// The certificate store of HTTPS/WSS and `turns:`, when TLS is on.
    pub fn tls(&self) -> Option<&Arc<CertStore>> {
        self.tls.as_ref()
    }

    /// Reads the certificate files again (what SIGHUP does); the old certificate stays on error.
    pub fn reload_tls(&self) -> anyhow::Result<bool> {
        self.tls.as_ref().map_or(Ok(false), |store| store.reload())
    }

    /// Reloads the certificate files on every SIGHUP, for as long as the runtime runs.
    pub fn reload_tls_on_sighup(&self) {
        #[cfg(unix)]
        if let Some(store) = self.tls.clone() {
            tokio::spawn(async move {
                let Ok(mut hangups) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
                    tracing::warn!("cannot listen for SIGHUP; certificates reload from their files' changes only");
                    return;
                };
                while hangups.recv().await.is_some() {
                    tracing::info!("SIGHUP: reloading the TLS certificate");
                    store.log_reload(store.reload());
                }
            });
        }
    }

    /// The redirect listener's address, when `redirect-http` is set.
    pub fn redirect_addr(&self) -> Option<SocketAddr> {
        self.redirect_addr
    }

    /// Connections refused or dropped at accept, by reason.
    pub fn edge_stats(&self) -> EdgeStats {
        self.admission.stats()
    }

    /// Cluster mode: whether this node reaches the shared state (None on a single node). `/readyz` reports a node
    /// that does not as not ready (its check `cluster`).
    pub fn cluster_ready(&self) -> Option<bool> {
        use switchboard_cluster::Backend;
        self.cluster.as_ref().map(|cluster| cluster.backend.ready())
    }

    /// Cluster mode: this node's id.
    pub fn node_id(&self) -> Option<&str> {
        self.cluster.as_ref().map(|cluster| cluster.node.as_str())
    }

    /// The address the HTTP and WebSocket listener is bound to.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The STUN/TURN UDP address, when TURN is on.
    pub fn turn_addr(&self) -> Option<SocketAddr> {
        self.turn.as_ref().map(|turn| turn.local_addr)
    }

    /// The `turns:` address, when TURN over TLS is on.
    pub fn turn_tls_addr(&self) -> Option<SocketAddr> {
        self.turn.as_ref().and_then(crate::turn::RunningTurn::tls_addr)
    }

    /// Counters of the signaling core.
    pub fn stats(&self) -> switchboard_core::Stats {
        self.hub.stats()
    }

    /// Graceful shutdown: `/readyz` turns 503, the listener stops accepting, v1 clients get `goaway` (tutorial
    /// clients a 1001 close), and clients get up to `shutdown-timeout` to leave while messages in flight still go
    /// through; then the rest are closed with 1001 and their close frames given [`CLOSE_GRACE`] to go out. TURN
    /// stops last, so media of calls keeps flowing during the drain.
    pub async fn shutdown(self) {
        self.ops.readiness.begin_shutdown();
        let _ = self.stop.send(true);
        let connected = self.hub.stats().connections;
        self.hub.goaway(self.shutdown_timeout);
        tracing::info!(connected, timeout = ?self.shutdown_timeout, "shutdown: goaway sent, draining");
        let hub = &self.hub;
        let drained = wait_until(self.shutdown_timeout, || hub.stats().connections == 0).await;
        let left = hub.stats().connections;
        if let Some(cluster) = &self.cluster {
            // After the drain (during which sessions could still be handed over to the nodes their clients resumed
            // on), the other nodes drop this node's remaining users and names at once, so that those clients, closed
            // with 1001 and reconnecting through the load balancer, can log in again elsewhere.
            cluster.backend.depart().await;
        }
        hub.close_all(close_code::GOING_AWAY, "server shutting down");
        if !drained {
            tracing::info!(left, "shutdown: drain timeout; closing the remaining connections with 1001");
        }
        wait_until(CLOSE_GRACE, || hub.live_websockets() == 0).await;
        if let Some(turn) = self.turn {
            let _ = tokio::task::spawn_blocking(move || turn.stop()).await;
        }
        let _ = self.late_stop.send(true);
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
        }
        if let Some(cluster) = self.cluster {
            cluster.task.abort();
        }
    }
}

/// Polls `done` until it holds or `limit` passes; whether it held.
async fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The certificate store, from the configured files or self-signed, when TLS is on.
fn cert_store(config: &Config, http_addr: SocketAddr) -> anyhow::Result<Option<Arc<CertStore>>> {
    if let Some((cert, key)) = &config.tls {
        let store = CertStore::from_files(cert, key)?;
        tracing::info!(fingerprint = %store.fingerprint(), "TLS certificate loaded from {}", cert.display());
        return Ok(Some(store));
    }
    if !config.self_signed {
        return Ok(None);
    }
    let names = if config.tls_names.is_empty() {
        let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
        let ip = http_addr.ip();
        if !ip.is_unspecified() && !ip.is_loopback() {
            names.push(ip.to_string());
        }
        names
    } else {
        config.tls_names.clone()
    };
    let store = CertStore::self_signed(&names)?;
    tracing::warn!(
        "serving HTTPS with a SELF-SIGNED certificate for {names:?}: browsers will warn, and only for trials. Check \
         that the certificate a browser shows has the SHA-256 fingerprint {}",
        store.fingerprint()
    );
    if http_addr.ip().is_unspecified() && config.tls_names.is_empty() {
        tracing::warn!("listening on all addresses: name the LAN address browsers use with --tls-name");
    }
    Ok(Some(store))
}

/// Starts the STUN/TURN listener and tells the signaling core which ICE servers and credentials to hand out.
fn start_turn(
    settings: &TurnSettings,
    limits: crate::limits::ConnectionLimits,
    tls: Option<Arc<rustls::ServerConfig>>,
    http_addr: SocketAddr,
    core: &mut switchboard_core::Config,
) -> anyhow::Result<(crate::turn::RunningTurn, Arc<Shared>)> {
    let listen = settings.listen.unwrap_or_else(|| SocketAddr::new(http_addr.ip(), 3478));
    let concrete = |ip: IpAddr| (!ip.is_unspecified()).then_some(ip);
    let relay_ip =
        settings.relay_ip.or(concrete(listen.ip())).or(settings.external_ip).context(
            "TURN listens on an unspecified address: set --turn-relay-ip (and --turn-external-ip behind NAT)",
        )?;
    let secrets = if settings.secrets.is_empty() {
        // No configured secret: credentials minted by this process are checked by this process only.
        vec![(0..32).map(|_| format!("{:02x}", rand::random::<u8>())).collect::<String>()]
    } else {
        settings.secrets.clone()
    };
    let credentials = Credentials::new(secrets, settings.users.iter().cloned().collect());
    let policy = PeerPolicy::new(settings.allow_peers.clone(), settings.deny_peers.clone());
    let mut turn_config = settings.turn.clone();
    turn_config.realm = settings.realm.clone();
    let shared = Arc::new(Shared::new(turn_config, credentials.clone(), policy, rand::random()));
    let workers = if settings.workers == 0 { crate::config::available_cores() } else { settings.workers };
    let mut running =
        crate::turn::start(crate::turn::TurnListener { listen, relay_ip, workers, limits, shared: shared.clone() })
            .with_context(|| format!("cannot start STUN/TURN on {listen}"))?;
    let tls_port = match (settings.tls_enabled, tls) {
        (true, Some(config)) => {
            let addr = settings.tls_listen.unwrap_or_else(|| SocketAddr::new(listen.ip(), 5349));
            let bound =
                running.start_tls(addr, config).with_context(|| format!("cannot start TURN over TLS on {addr}"))?;
            Some(bound.port())
        }
        _ => None,
    };
    let port = running.local_addr.port();
    let mut own = vec![running.local_addr];
    own.extend(running.tls_addr());
    shared.set_own_addresses(own);
    let host = match (&settings.host, settings.external_ip, concrete(listen.ip())) {
        (Some(host), _, _) => host.clone(),
        (None, Some(ip), _) | (None, None, Some(ip)) => url_host(ip),
        (None, None, None) => url_host(relay_ip),
    };
    core.ice_servers.push(IceServer { urls: vec![format!("stun:{host}:{port}")], username: None, credential: None });
    core.turn = Some(TurnAuth {
        credentials,
        ttl: settings.credential_ttl,
        urls: if settings.urls.is_empty() {
            let mut urls =
                vec![format!("turn:{host}:{port}?transport=udp"), format!("turn:{host}:{port}?transport=tcp")];
            if let Some(tls_port) = tls_port {
                urls.push(format!("turns:{host}:{tls_port}?transport=tcp"));
            }
            urls
        } else {
            settings.urls.clone()
        },
    });
    Ok((running, shared))
}

/// An IP as the host part of a URL (IPv6 in brackets).
fn url_host(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    TcpListener::from_std(socket.into())
}

async fn wait_for(mut stopped: watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}

pub use crate::limits::ConnectionPermit;

/// What the accept loops share: the limits, and TLS when it is on.
#[derive(Clone)]
pub(crate) struct Edge {
    pub(crate) admission: Arc<Admission>,
    pub(crate) permits: Arc<Semaphore>,
    pub(crate) tls: Option<tokio_rustls::TlsAcceptor>,
    pub(crate) handshake_timeout: Duration,
}

impl Edge {
    /// Admits an accepted connection under the per-address limits and the global cap, or refuses it (the caller
    /// drops the stream, which closes it before anything is read).
    pub(crate) fn admit(&self, peer: SocketAddr) -> Option<ConnectionPermit> {
        self.admission.admit_connection(&self.permits, peer.ip())
    }
}

async fn accept_loop(listener: TcpListener, state: AppState, stopped: watch::Receiver<bool>, edge: Edge) {
    let router = router(state);
    let stop = wait_for(stopped);
    tokio::pin!(stop);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut stop => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                let Some(permit) = edge.admit(peer) else { continue };
                let service = TowerToHyperService::new(router.clone().layer(axum::Extension(permit)));
                match &edge.tls {
                    None => tokio::spawn(serve_http(stream, service, edge.clone())),
                    Some(acceptor) => tokio::spawn(serve_https(stream, acceptor.clone(), service, edge.clone())),
                };
            }
            Err(error) => {
                // Out of file descriptors, usually: back off instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn serve_http(stream: TcpStream, service: TowerToHyperService<axum::Router>, edge: Edge) {
    // Without TCP_NODELAY, Nagle's algorithm holds small signaling frames back until the previous one is
    // acknowledged, which with delayed ACKs adds ~40 ms stalls to bursts.
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%error, "cannot set TCP_NODELAY");
    }
    serve_connection(stream, service, &edge).await;
}

/// TLS first, within the handshake timeout, then HTTP as on a plain connection.
async fn serve_https(
    stream: TcpStream,
    acceptor: tokio_rustls::TlsAcceptor,
    service: TowerToHyperService<axum::Router>,
    edge: Edge,
) {
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%error, "cannot set TCP_NODELAY");
    }
    let counters = &edge.admission.counters;
    let tls = match tokio::time::timeout(edge.handshake_timeout, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(error)) => {
            counters.tls_failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::debug!(%error, "TLS handshake failed");
            return;
        }
        Err(_) => {
            counters.handshake_timeouts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return;
        }
    };
    serve_connection(tls, service, &edge).await;
}

/// Serves HTTP/1.1 on one connection; every request head must arrive within the handshake timeout (slow-loris
/// clients that dribble headers, or keep an idle connection open, are dropped after it).
pub(crate) async fn serve_connection<I, S>(io: I, service: S, edge: &Edge)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming> + Send,
    S::Future: Send + 'static,
    S::ResBody: Send + 'static,
    <S::ResBody as hyper::body::Body>::Data: Send,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(edge.handshake_timeout)
        // Bounds what a client can make the server buffer for one request head.
        .max_buf_size(MAX_REQUEST_HEAD)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    if let Err(error) = connection.await {
        if error.is_timeout() {
            edge.admission.counters.handshake_timeouts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        tracing::debug!(%error, "http connection ended with an error");
    }
}

/// Largest HTTP request head (request line and headers) a client may send.
const MAX_REQUEST_HEAD: usize = 64 * 1024;
