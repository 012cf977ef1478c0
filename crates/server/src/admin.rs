//! The admin API (`docs/admin-api.yaml`): paged views of users, rooms, calls and TURN allocations, and disconnecting
//! a user. Off unless `--admin-token` is set; every request needs `Authorization: Bearer <token>` (401 otherwise).
//!
//! Views are read under the hub's lock through the core's read-only methods, a page at a time (`limit`, at most
//! [`MAX_LIMIT`], and the `after` cursor from the previous page's `next`), and serialised after the lock is released.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::{
    extract::{rejection::QueryRejection, FromRequestParts, Path, Query, State},
    http::{header, request::Parts, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use serde::{Deserialize, Serialize};
use switchboard_core::{CallInfo, Page, RoomInfo, UserInfo};
use switchboard_proto::{event::CallState, Dialect, UserStatus};
use switchboard_turn::observe::AllocationInfo;
use switchboard_turn::server::Transport;

use crate::ops::Ops;

/// Items per page unless `limit` says otherwise.
pub const DEFAULT_LIMIT: usize = 100;
/// Most items per page.
pub const MAX_LIMIT: usize = 1000;
/// Longest `after` cursor accepted (names and room names are at most 32 characters, call ids 16).
const MAX_CURSOR_BYTES: usize = 256;

/// The admin routes, or none when the API is off (so that they are not found at all).
pub fn routes<S: Clone + Send + Sync + 'static>(ops: &Arc<Ops>) -> Router<S> {
    if !ops.admin_enabled() {
        return Router::new();
    }
    Router::new()
        .route("/admin/users", get(users))
        .route("/admin/users/{name}", get(user).delete(disconnect))
        .route("/admin/rooms", get(rooms))
        .route("/admin/calls", get(calls))
        .route("/admin/turn/allocations", get(allocations))
        .with_state(ops.clone())
}

/// An error as the admin API reports it: a status and `{"error": code, "message": ...}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

fn error(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError { status, code, message: message.into() }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.code, "message": self.message });
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"admin\""));
        }
        response
    }
}

type ApiResult = Result<Response, ApiError>;

/// Proof that the request carried the admin token.
pub struct Admin;

impl FromRequestParts<Arc<Ops>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, ops: &Arc<Ops>) -> Result<Self, Self::Rejection> {
        if ops.authorized(&parts.headers) {
            Ok(Admin)
        } else {
            Err(error(StatusCode::UNAUTHORIZED, "unauthorized", "send Authorization: Bearer <the admin token>"))
        }
    }
}

/// `?limit=&after=`, checked by hand so that mistakes get a JSON 400 like every other error.
#[derive(Debug, Default, Deserialize)]
pub struct PageQuery {
    limit: Option<String>,
    after: Option<String>,
}

impl PageQuery {
    fn parse(query: PageParams) -> Result<(usize, Option<String>), ApiError> {
        let Query(query) = query.map_err(|e| error(StatusCode::BAD_REQUEST, "bad-request", e.body_text()))?;
        let limit = match query.limit.as_deref() {
            None => DEFAULT_LIMIT,
            Some(text) => match text.parse::<usize>() {
                Ok(limit) if (1..=MAX_LIMIT).contains(&limit) => limit,
                _ => {
                    let message = format!("limit must be a number from 1 to {MAX_LIMIT}");
                    return Err(error(StatusCode::BAD_REQUEST, "bad-request", message));
                }
            },
        };
        if query.after.as_ref().is_some_and(|after| after.len() > MAX_CURSOR_BYTES) {
            let message = format!("after is longer than {MAX_CURSOR_BYTES} bytes");
            return Err(error(StatusCode::BAD_REQUEST, "bad-request", message));
        }
        Ok((limit, query.after))
    }
}

/// The query string, or why it could not be read.
type PageParams = Result<Query<PageQuery>, QueryRejection>;

/// Unix time in milliseconds of an instant in the past.
fn unix_ms(at: Instant) -> u64 {
    let ago = Instant::now().saturating_duration_since(at);
    let when = SystemTime::now().checked_sub(ago).unwrap_or(UNIX_EPOCH);
    when.duration_since(UNIX_EPOCH).map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)).unwrap_or(0)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct UserCallJson {
    id: String,
    peer: String,
    caller: bool,
    state: CallState,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct UserJson {
    name: String,
    since: u64,
    dialect: &'static str,
    connected: bool,
    status: UserStatus,
    call: Option<UserCallJson>,
    rooms: Vec<String>,
}

impl From<UserInfo> for UserJson {
    fn from(user: UserInfo) -> Self {
        Self {
            name: user.name.to_string(),
            since: unix_ms(user.since),
            dialect: match user.dialect {
                Dialect::V1 => "v1",
                Dialect::Tutorial => "tutorial",
            },
            connected: user.connected,
            status: user.status,
            call: user.call.map(|call| UserCallJson {
                id: call.call_id.to_string(),
                peer: call.peer.to_string(),
                caller: call.caller,
                state: call.state,
            }),
            rooms: user.rooms.iter().map(ToString::to_string).collect(),
        }
    }
}

#[derive(Serialize)]
struct RoomJson {
    name: String,
    members: Vec<String>,
}

#[derive(Serialize)]
struct CallJson {
    id: String,
    caller: String,
    callee: String,
    state: CallState,
    since: u64,
}

fn page_json<T, J: Serialize>(field: &str, page: Page<T>, convert: impl Fn(T) -> J) -> Response {
    let items: Vec<J> = page.items.into_iter().map(convert).collect();
    let mut body = serde_json::Map::new();
    body.insert(field.to_owned(), serde_json::to_value(items).unwrap_or_default());
    body.insert("next".to_owned(), page.next.map(|next| next.to_string()).into());
    Json(serde_json::Value::Object(body)).into_response()
}

async fn users(_: Admin, State(ops): State<Arc<Ops>>, query: PageParams) -> ApiResult {
    let (limit, after) = PageQuery::parse(query)?;
    let page = ops.hub.query(|core| core.users(after.as_deref(), limit));
    Ok(page_json("users", page, UserJson::from))
}

async fn user(_: Admin, State(ops): State<Arc<Ops>>, Path(name): Path<String>) -> ApiResult {
    match ops.hub.query(|core| core.user(&name)) {
        Some(user) => Ok(Json(UserJson::from(user)).into_response()),
        None => Err(error(StatusCode::NOT_FOUND, "not-found", "no user of that name is logged in")),
    }
}

async fn disconnect(_: Admin, State(ops): State<Arc<Ops>>, Path(name): Path<String>) -> ApiResult {
    if ops.hub.disconnect_user(&name) {
        tracing::info!(user = %name, "admin API: user disconnected");
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(error(StatusCode::NOT_FOUND, "not-found", "no user of that name is logged in"))
    }
}

async fn rooms(_: Admin, State(ops): State<Arc<Ops>>, query: PageParams) -> ApiResult {
    let (limit, after) = PageQuery::parse(query)?;
    let page = ops.hub.query(|core| core.rooms_page(after.as_deref(), limit));
    Ok(page_json("rooms", page, |room: RoomInfo| RoomJson {
        name: room.name.to_string(),
        members: room.members.iter().map(ToString::to_string).collect(),
    }))
}

async fn calls(_: Admin, State(ops): State<Arc<Ops>>, query: PageParams) -> ApiResult {
    let (limit, after) = PageQuery::parse(query)?;
    let page = ops.hub.query(|core| core.calls_page(after.as_deref(), limit));
    Ok(page_json("calls", page, |call: CallInfo| CallJson {
        id: call.call_id.to_string(),
        caller: call.caller.to_string(),
        callee: call.callee.to_string(),
        state: call.state,
        since: unix_ms(call.since),
    }))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PermissionJson {
    peer: String,
    lifetime_seconds: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ChannelJson {
    number: u16,
    peer: SocketAddr,
    lifetime_seconds: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AllocationJson {
    username: String,
    user: String,
    client: SocketAddr,
    transport: &'static str,
    relay: SocketAddr,
    lifetime_seconds: u64,
    permissions: Vec<PermissionJson>,
    channels: Vec<ChannelJson>,
}

fn allocation_json(info: AllocationInfo, now: Instant) -> AllocationJson {
    let left = |until: Instant| until.saturating_duration_since(now).as_secs();
    // A TURN REST user name is `<expiry>:<user>`.
    let user = match info.user.split_once(':') {
        Some((expiry, name)) if !expiry.is_empty() && expiry.bytes().all(|b| b.is_ascii_digit()) => name.to_owned(),
        _ => info.user.clone(),
    };
    AllocationJson {
        user,
        client: info.client,
        transport: match info.transport {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        },
        relay: info.relay,
        lifetime_seconds: left(info.expires),
        permissions: info
            .permissions
            .iter()
            .map(|(ip, until)| PermissionJson { peer: ip.to_string(), lifetime_seconds: left(*until) })
            .collect(),
        channels: info
            .channels
            .iter()
            .map(|(number, peer, until)| ChannelJson { number: *number, peer: *peer, lifetime_seconds: left(*until) })
            .collect(),
        username: info.user,
    }
}

async fn allocations(_: Admin, State(ops): State<Arc<Ops>>, query: PageParams) -> ApiResult {
    let (limit, after) = PageQuery::parse(query)?;
    let Some(turn) = &ops.turn else {
        return Err(error(StatusCode::NOT_FOUND, "not-found", "the built-in TURN server is off"));
    };
    let after = match after.as_deref().map(str::parse::<SocketAddr>) {
        None => None,
        Some(Ok(addr)) => Some(addr),
        Some(Err(_)) => return Err(error(StatusCode::BAD_REQUEST, "bad-request", "after must be a relay address")),
    };
    let now = Instant::now();
    let (items, next) = turn.registry.page(now, after, limit);
    let items: Vec<AllocationJson> = items.into_iter().map(|info| allocation_json(info, now)).collect();
    Ok(Json(serde_json::json!({ "allocations": items, "next": next.map(|addr| addr.to_string()) })).into_response())
}
