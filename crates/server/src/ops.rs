//! What operators use: `/readyz`, `/metrics`, the admin API, and the separate listener they can be moved to.
//!
//! Placement (`--metrics`): by default `/metrics` and the admin API (when `--admin-token` is set) are served on the
//! main listener beside `/healthz` and `/readyz`. With `--metrics ADDR:PORT` they move to a listener of their own,
//! which also answers `/healthz` and `/readyz`, so that scrapers and operators use an internal address and the
//! public port serves only clients (and its own `/healthz` and `/readyz` for load balancers). With `--metrics off`
//! there is no `/metrics`; the admin API stays on the main listener.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::{
    extract::State,
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use hyper_util::{rt::TokioIo, service::TowerToHyperService};
use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;
use switchboard_turn::server::Shared;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::config::{MetricsListen, Secret};
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::readiness::{Readiness, StunProbe};

/// Simultaneous connections the ops listener serves; it is for a scraper and an operator or two.
const OPS_CONNECTIONS: usize = 64;

/// Shared by the operator-facing routes.
pub struct Ops {
    /// The readiness checks.
    pub readiness: Readiness,
    /// The metrics registry.
    pub metrics: Metrics,
    /// The signaling hub (admin views, disconnects).
    pub hub: Arc<Hub>,
    /// TURN's shared state, when the built-in TURN server runs.
    pub turn: Option<Arc<Shared>>,
    /// SHA-1 of the admin token: comparing digests takes the same time whatever the length of the guess.
    admin_token: Option<[u8; 20]>,
    placement: MetricsListen,
}

impl Ops {
    /// The operator side of a server: `permits` are the main listener's connection permits (out of
    /// `max_connections`), `turn` the built-in TURN server's shared state, `edges` the admissions whose refusals
    /// are counted.
    pub fn new(
        admin_token: Option<&Secret>,
        placement: MetricsListen,
        max_connections: usize,
        hub: Arc<Hub>,
        permits: Arc<Semaphore>,
        turn: Option<Arc<Shared>>,
        edges: crate::metrics::Edges,
    ) -> Arc<Self> {
        let metrics = Metrics::new(hub.clone(), permits, max_connections, turn.clone(), edges);
        Arc::new(Self {
            readiness: Readiness::default(),
            metrics,
            hub,
            turn,
            admin_token: admin_token.map(|token| digest(token.0.as_bytes())),
            placement,
        })
    }

    /// Whether the request carries `Authorization: Bearer <the admin token>`. Always false with the API off.
    pub fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(expected) = &self.admin_token else { return false };
        let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else { return false };
        let Some((scheme, token)) = value.trim().split_once(' ') else { return false };
        if !scheme.eq_ignore_ascii_case("bearer") {
            return false;
        }
        bool::from(digest(token.trim().as_bytes()).ct_eq(expected))
    }

    /// Whether the admin API is on.
    pub fn admin_enabled(&self) -> bool {
        self.admin_token.is_some()
    }
}

fn digest(bytes: &[u8]) -> [u8; 20] {
    Sha1::digest(bytes).into()
}

/// The operator routes of the main listener: `/readyz`, and `/metrics` and `/admin/...` unless they live elsewhere.
pub fn main_routes<S: Clone + Send + Sync + 'static>(ops: &Arc<Ops>) -> Router<S> {
    let mut router = Router::new().route("/readyz", get(readyz));
    match ops.placement {
        MetricsListen::Http => router = router.route("/metrics", get(metrics)).merge(crate::admin::routes(ops)),
        MetricsListen::Off => router = router.merge(crate::admin::routes(ops)),
        MetricsListen::Listen(_) => {}
    }
    router.with_state(ops.clone())
}

/// Every operator route, for the separate listener.
pub fn ops_routes(ops: &Arc<Ops>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(crate::admin::routes(ops))
        .with_state(ops.clone())
}

async fn readyz(State(ops): State<Arc<Ops>>) -> Response {
    let report = ops.readiness.report().await;
    let checks: serde_json::Map<String, serde_json::Value> = report
        .checks
        .iter()
        .map(|(name, result)| {
            let value = match result {
                Ok(()) => "ok".to_owned(),
                Err(reason) => reason.clone(),
            };
            (name.clone(), value.into())
        })
        .collect();
    let ready = report.ready();
    let body = serde_json::json!({ "ready": ready, "notReady": report.not_ready(), "checks": checks });
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))], Json(body)).into_response()
}

async fn metrics(State(ops): State<Arc<Ops>>) -> Response {
    let text = ops.metrics.render();
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(crate::metrics::CONTENT_TYPE)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        text,
    )
        .into_response()
}

/// Registers the readiness checks of a starting server (its HTTP accept loop, and the STUN/TURN listener at
/// `turn_addr`), and starts the separate ops listener if `placement` asks for one: its task joins `tasks` and its
/// address is returned. It serves until `stopped`, the end of a shutdown.
pub fn start(
    ops: &Arc<Ops>,
    placement: MetricsListen,
    accept: tokio::task::AbortHandle,
    turn_addr: Option<SocketAddr>,
    stopped: watch::Receiver<bool>,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) -> anyhow::Result<Option<SocketAddr>> {
    ops.readiness.register("http", move || {
        if accept.is_finished() {
            Err("the HTTP listener stopped accepting".to_owned())
        } else {
            Ok(())
        }
    });
    if let Some(addr) = turn_addr {
        ops.readiness.register("turn", StunProbe::new(addr));
    }
    let MetricsListen::Listen(addr) = placement else { return Ok(None) };
    let listener = bind(addr).with_context(|| format!("metrics: cannot listen on {addr}"))?;
    let bound = listener.local_addr()?;
    tasks.push(tokio::spawn(serve(listener, ops_routes(ops), stopped)));
    tracing::info!(%bound, "metrics, readiness and admin API listening");
    Ok(Some(bound))
}

/// Binds the separate ops listener.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(128)?;
    TcpListener::from_std(socket.into())
}

/// Serves the ops listener until `stopped` turns true.
pub async fn serve(listener: TcpListener, router: Router, mut stopped: watch::Receiver<bool>) {
    let permits = Arc::new(Semaphore::new(OPS_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopped.wait_for(|stop| *stop) => return,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::warn!(%error, "ops listener: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else { continue };
        let service = TowerToHyperService::new(router.clone());
        let mut stop = stopped.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(error) = result {
                        tracing::debug!(%error, "ops connection ended with an error");
                    }
                }
                _ = stop.wait_for(|stop| *stop) => {}
            }
        });
    }
}
