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
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use crate::config::{Config, TurnSettings};
use crate::http::{router, AppState};
use crate::hub::Hub;
use crate::ws::connection;

/// Pending connections the kernel may hold for us; a login storm opens thousands at once.
const LISTEN_BACKLOG: i32 = 4096;

/// A running server.
pub struct Server {
    http_addr: SocketAddr,
    turn: Option<crate::turn::RunningTurn>,
    hub: Arc<Hub>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
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
        };
        let mut core_config = config.core;
        let turn = match &config.turn {
            Some(settings) => Some(start_turn(settings, config.tls.as_ref(), http_addr, &mut core_config)?),
            None => None,
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
        let timers = tokio::spawn(hub.clone().run_timers(wait_for(stopped.clone())));
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
        let state = AppState { hub: hub.clone(), ws, origins };
        let permits = Arc::new(Semaphore::new(config.max_connections));
        tasks.push(tokio::spawn(accept_loop(listener, state, permits, stopped)));
        tracing::info!(%http_addr, "switchboard listening");
        Ok(Self { http_addr, turn, hub, stop, tasks, cluster })
    }

    /// Cluster mode: whether this node reaches the shared state (None on a single node). `/readyz` reports a node
    /// that does not as not ready.
    pub fn cluster_ready(&self) -> Option<bool> {
        use switchboard_cluster::Backend;
        self.cluster.as_ref().map(|cluster| cluster.backend.ready())
    }

    /// Cluster mode: a readiness check for `/readyz` (Ok while this node reaches Redis), in the shape of the readiness
    /// registry's checks; None on a single node.
    pub fn cluster_check(&self) -> Option<impl Fn() -> Result<(), String> + Send + Sync + 'static> {
        use switchboard_cluster::Backend;
        let backend = self.cluster.as_ref()?.backend.clone();
        Some(move || if backend.ready() { Ok(()) } else { Err("cannot reach the cluster's Redis".to_owned()) })
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

    /// Stops accepting, closes every WebSocket with 1001 (clients reconnect and resume elsewhere), and waits a
    /// moment for the close frames to go out.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        if let Some(cluster) = &self.cluster {
            // The other nodes drop this node's users and names now, so that its clients, reconnecting through the
            // load balancer, can log in again elsewhere at once.
            cluster.backend.depart().await;
        }
        if let Some(turn) = self.turn {
            let _ = tokio::task::spawn_blocking(move || turn.stop()).await;
        }
        self.hub.close_all(close_code::GOING_AWAY, "server shutting down");
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
        }
        if let Some(cluster) = self.cluster {
            cluster.task.abort();
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while self.hub.stats().connections > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Starts the STUN/TURN listener and tells the signaling core which ICE servers and credentials to hand out.
fn start_turn(
    settings: &TurnSettings,
    tls: Option<&(std::path::PathBuf, std::path::PathBuf)>,
    http_addr: SocketAddr,
    core: &mut switchboard_core::Config,
) -> anyhow::Result<crate::turn::RunningTurn> {
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
    let workers = if settings.workers == 0 {
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    } else {
        settings.workers
    };
    let mut running =
        crate::turn::start(crate::turn::TurnListener { listen, relay_ip, workers, shared: shared.clone() })
            .with_context(|| format!("cannot start STUN/TURN on {listen}"))?;
    let tls_port = match (settings.tls_enabled, tls) {
        (true, Some((cert, key))) => {
            let config = crate::tls::server_config(cert, key)?;
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
    Ok(running)
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

/// Held for as long as a TCP connection is open, HTTP or WebSocket: the upgrade hands it to the WebSocket task.
#[derive(Clone)]
pub struct ConnectionPermit(#[allow(dead_code)] Arc<OwnedSemaphorePermit>);

async fn accept_loop(listener: TcpListener, state: AppState, permits: Arc<Semaphore>, stopped: watch::Receiver<bool>) {
    let router = router(state);
    let mut refused: u64 = 0;
    let stop = wait_for(stopped);
    tokio::pin!(stop);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut stop => return,
        };
        match accepted {
            Ok((stream, _peer)) => {
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    // At the limit: close at once, which costs nothing, rather than queue what cannot be served.
                    refused += 1;
                    if refused.is_power_of_two() {
                        tracing::warn!(refused, "connection limit reached; refusing connections");
                    }
                    continue;
                };
                let permit = ConnectionPermit(Arc::new(permit));
                let service = TowerToHyperService::new(router.clone().layer(axum::Extension(permit)));
                tokio::spawn(serve_http(stream, service));
            }
            Err(error) => {
                // Out of file descriptors, usually: back off instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn serve_http(stream: TcpStream, service: TowerToHyperService<axum::Router>) {
    // Without TCP_NODELAY, Nagle's algorithm holds small signaling frames back until the previous one is
    // acknowledged, which with delayed ACKs adds ~40 ms stalls to bursts.
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%error, "cannot set TCP_NODELAY");
    }
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    if let Err(error) = connection.await {
        tracing::debug!(%error, "http connection ended with an error");
    }
}
