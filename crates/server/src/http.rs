//! HTTP routes: the web page, the WebSocket upgrade (at `/ws`, and at `/` for tutorial pages), health; and the
//! operator routes of [`crate::ops`].

use std::sync::Arc;

use axum::{
    body::Body,
    extract::{Request, State},
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::assets;
use crate::hub::Hub;
use crate::ws::{connection, deflate, handshake};

/// What the routes need.
#[derive(Clone)]
pub struct AppState {
    /// The signaling hub.
    pub hub: Arc<Hub>,
    /// Settings for new WebSocket connections.
    pub ws: connection::Settings,
    /// Which `Origin`s may open WebSockets.
    pub origins: Arc<crate::auth::OriginPolicy>,
    /// Readiness, metrics and the admin API.
    pub ops: Arc<crate::ops::Ops>,
}

/// The router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(root))
        .route("/ws", get(websocket))
        .route("/healthz", get(|| async { "ok\n" }))
        .merge(crate::ops::main_routes(&state.ops))
        .fallback(get(asset))
        .with_state(state)
}

async fn root(State(state): State<AppState>, request: Request) -> Response {
    if handshake::is_upgrade(request.headers()) {
        return upgrade(state, request);
    }
    assets::serve("", request.headers())
}

async fn asset(request: Request) -> Response {
    assets::serve(request.uri().path().trim_start_matches('/'), request.headers())
}

async fn websocket(State(state): State<AppState>, request: Request) -> Response {
    if !handshake::is_upgrade(request.headers()) {
        return (StatusCode::UPGRADE_REQUIRED, [(header::UPGRADE, "websocket")], "this endpoint speaks WebSocket\n")
            .into_response();
    }
    upgrade(state, request)
}

fn upgrade(state: AppState, mut request: Request) -> Response {
    // Refused before the upgrade: a browser page from another site must not get a socket in its user's name.
    if !state.origins.allows(request.headers()) {
        return (StatusCode::FORBIDDEN, "this origin may not open a WebSocket here\n").into_response();
    }
    // The URL's token is handed to the core and never logged: the URL is not written anywhere.
    let upgrade_token = crate::auth::query_token(request.uri());
    let accept = match handshake::accept(request.headers()) {
        Ok(accept) => accept,
        Err(handshake::HandshakeError::Version) => {
            return (
                StatusCode::UPGRADE_REQUIRED,
                [(header::SEC_WEBSOCKET_VERSION, "13")],
                "WebSocket version 13 only\n",
            )
                .into_response()
        }
        Err(error) => return (StatusCode::BAD_REQUEST, format!("{error}\n")).into_response(),
    };
    let mut settings = state.ws;
    let extensions = if settings.deflate { deflate::negotiate(request.headers()) } else { None };
    settings.deflate = extensions.is_some();
    state.ops.metrics.websocket_upgrades.inc();
    if settings.deflate {
        state.ops.metrics.websocket_compressed_upgrades.inc();
    }
    let live = state.hub.live();
    let on_upgrade = hyper::upgrade::on(&mut request);
    let permit = request.extensions_mut().remove::<crate::server::ConnectionPermit>();
    tokio::spawn(async move {
        // The connection counts against the limit until this task ends.
        let _permit = permit;
        // Shutdown waits for this to drop: the close frame is on its way by then.
        let _live = live;
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(error) => {
                tracing::debug!(%error, "websocket upgrade failed");
                return;
            }
        };
        // The raw TcpStream lets the connection read with readiness + try_read into a shared buffer (see
        // ws::connection); every stream accepted by server.rs has exactly this type, or TLS over it.
        let upgraded = match upgraded.downcast::<TokioIo<TcpStream>>() {
            Ok(parts) => {
                let stream = parts.io.into_inner();
                return connection::run(state.hub, stream, parts.read_buf, settings, upgrade_token).await;
            }
            Err(upgraded) => upgraded,
        };
        match upgraded.downcast::<TokioIo<tokio_rustls::server::TlsStream<TcpStream>>>() {
            Ok(parts) => {
                let (tcp, tls) = parts.io.into_inner().into_inner();
                let transport = crate::ws::transport::TlsTransport::new(tcp, tls);
                // Boxed: inline, rustls' connection state would size this task's future, and thereby every plain
                // connection's (measured: 4.2 -> 9 KiB of RSS per idle connection).
                Box::pin(connection::run(state.hub, transport, parts.read_buf, settings, upgrade_token)).await;
            }
            Err(_) => tracing::error!("upgraded connection is neither TCP nor TLS over TCP"),
        }
    });
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(value) = HeaderValue::from_str(&accept) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, value);
    }
    if let Some(extensions) = extensions {
        headers.insert(header::SEC_WEBSOCKET_EXTENSIONS, HeaderValue::from_static(extensions));
    }
    response
}
