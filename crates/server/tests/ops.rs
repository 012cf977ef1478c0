//! Operator endpoints over real sockets: `/readyz` and its states, `/metrics` series and values that move with
//! logins, messages, calls and TURN, where they are served (`--metrics`), and the admin API (authentication, views,
//! paging, disconnecting one user).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::http::{get, metric, request};
use common::{sdp_offer, TestServer, T};
use serde_json::{json, Value};
use switchboard_client::proto::close_code;
use switchboard_server::config::{MetricsListen, Secret};
use switchboard_server::readiness::Flag;
use switchboard_stun::{attr, long_term_key_md5, Class, Message, MessageWriter, Method, TransactionId};
use tokio::net::UdpSocket;

const TOKEN: &str = "an-admin-token-for-tests-0123456789";

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

async fn admin_get(server: &TestServer, path: &str) -> Value {
    let auth = bearer(TOKEN);
    let response = request(server.addr, "GET", path, &[("Authorization", &auth)]).await;
    assert_eq!(response.status, 200, "{path}: {response:?}");
    assert!(response.header("content-type").unwrap_or_default().starts_with("application/json"));
    response.json()
}

fn names(value: &Value, field: &str) -> Vec<String> {
    value[field].as_array().unwrap().iter().map(|item| item["name"].as_str().unwrap().to_owned()).collect()
}

/// Polls `/metrics` until `series` has `value` (counts made by other connections' tasks land a moment later).
async fn metric_reaches(addr: SocketAddr, series: &str, value: f64) {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let now = metric(addr, series).await;
        if now == value {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{series} stayed at {now}, expected {value}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---- readiness ----

#[tokio::test]
async fn readyz_is_ok_with_http_and_turn_up_and_names_a_failing_check() {
    let server = TestServer::start().await;
    let response = get(server.addr, "/readyz").await;
    assert_eq!(response.status, 200, "{response:?}");
    let body = response.json();
    assert_eq!(body["ready"], true);
    assert_eq!(body["checks"], json!({"http": "ok", "turn": "ok"}));
    assert_eq!(body["notReady"], json!([]));

    // Another input to readiness (here a stand-in) is one more named check.
    let backend = Flag::new(false, "the backend is unreachable");
    server.server().ops().readiness.register("backend", backend.clone());
    let response = get(server.addr, "/readyz").await;
    assert_eq!(response.status, 503);
    let body = response.json();
    assert_eq!(body["ready"], false);
    assert_eq!(body["notReady"], json!(["backend"]));
    assert_eq!(body["checks"]["backend"], "the backend is unreachable");
    backend.set(true);
    assert_eq!(get(server.addr, "/readyz").await.status, 200);
    server.shutdown().await;
}

#[tokio::test]
async fn readyz_turns_503_once_shutdown_begins() {
    let server = TestServer::start_with(|c| {
        c.metrics = MetricsListen::Listen("127.0.0.1:0".parse().unwrap());
        c.shutdown_timeout = Duration::from_secs(3);
    })
    .await;
    let ops_addr = server.server().metrics_addr().unwrap();
    assert_eq!(get(ops_addr, "/readyz").await.status, 200);
    let mut alice = server.login("alice").await;
    let main_addr = server.addr;
    let shutdown = tokio::spawn(server.shutdown_timed());
    alice.expect_type("goaway").await.unwrap();
    // Draining: the ops listener still answers, and says why it is not ready; the main listener takes no one new.
    let response = get(ops_addr, "/readyz").await;
    assert_eq!(response.status, 503, "{response:?}");
    // Shutdown comes first; the main listener, once it has stopped accepting, is named too.
    let not_ready = response.json()["notReady"].clone();
    assert!(not_ready == json!(["shutdown"]) || not_ready == json!(["shutdown", "http"]), "{not_ready}");
    let deadline = tokio::time::Instant::now() + T;
    while tokio::net::TcpStream::connect(main_addr).await.is_ok() {
        assert!(tokio::time::Instant::now() < deadline, "the main listener still accepts");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(alice);
    let took = tokio::time::timeout(T, shutdown).await.unwrap().unwrap();
    assert!(took < Duration::from_secs(3), "a drain with every client gone ends early ({took:?})");
}

// ---- metrics ----

#[tokio::test]
async fn metrics_move_with_logins_messages_and_calls() {
    let server = TestServer::start().await;
    let addr = server.addr;
    let response = get(addr, "/metrics").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-type"), Some("text/plain; version=0.0.4; charset=utf-8"));
    for name in [
        "# TYPE switchboard_connections gauge",
        "# TYPE switchboard_websocket_upgrades_total counter",
        "# TYPE switchboard_logins_total counter",
        "# TYPE switchboard_messages_received_total counter",
        "# TYPE switchboard_errors_sent_total counter",
        "# TYPE switchboard_calls gauge",
        "# TYPE switchboard_call_setup_seconds histogram",
        "# TYPE switchboard_rooms gauge",
        "# TYPE switchboard_users gauge",
        "# TYPE switchboard_slow_consumer_closes_total counter",
        "# TYPE switchboard_resume_queue_drops_total counter",
        "# TYPE switchboard_turn_allocations gauge",
        "# TYPE switchboard_turn_auth_failures_total counter",
    ] {
        assert!(response.body.contains(name), "missing {name:?} in\n{}", response.body);
    }
    assert_eq!(metric(addr, "switchboard_logins_total{outcome=\"ok\"}").await, 0.0);

    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    let _taken = {
        let mut again = server.connect().await;
        again.send_json(&json!({"type":"login","id":1,"name":"Alice"})).await.unwrap();
        again.expect_error("name-taken").await.unwrap();
        again
    };
    alice.offer("bob", sdp_offer()).await.unwrap();
    bob.expect_type("offer").await.unwrap();
    alice.send_json(&json!({"type":"offer","to":"nobody","sdp":{}})).await.unwrap();
    alice.expect_error("unknown-peer").await.unwrap();
    let call_id = alice.call("bob").await.unwrap();
    let ring = bob.expect_type("ring").await.unwrap();
    assert_eq!(ring["callId"], call_id.as_str());
    bob.accept(&call_id).await.unwrap();
    alice.expect_type("accepted").await.unwrap();
    alice.join("standup").await.unwrap();

    assert_eq!(metric(addr, "switchboard_logins_total{outcome=\"ok\"}").await, 2.0);
    assert_eq!(metric(addr, "switchboard_logins_total{outcome=\"name-taken\"}").await, 1.0);
    assert_eq!(metric(addr, "switchboard_messages_received_total{type=\"offer\"}").await, 2.0);
    assert_eq!(metric(addr, "switchboard_messages_received_total{type=\"call\"}").await, 1.0);
    assert_eq!(metric(addr, "switchboard_errors_sent_total{code=\"unknown-peer\"}").await, 1.0);
    assert_eq!(metric(addr, "switchboard_errors_sent_total{code=\"name-taken\"}").await, 1.0);
    assert_eq!(metric(addr, "switchboard_calls{state=\"active\"}").await, 1.0);
    assert_eq!(metric(addr, "switchboard_calls{state=\"ringing\"}").await, 0.0);
    assert_eq!(metric(addr, "switchboard_calls_started_total").await, 1.0);
    assert_eq!(metric(addr, "switchboard_call_setup_seconds_count").await, 1.0);
    assert_eq!(metric(addr, "switchboard_call_setup_seconds_bucket{le=\"+Inf\"}").await, 1.0);
    assert_eq!(metric(addr, "switchboard_users").await, 2.0);
    assert_eq!(metric(addr, "switchboard_rooms").await, 1.0);
    assert_eq!(metric(addr, "switchboard_websocket_upgrades_total").await, 3.0);
    // The test clients do not offer compression.
    assert_eq!(metric(addr, "switchboard_websocket_compressed_upgrades_total").await, 0.0);
    assert_eq!(metric(addr, "switchboard_websocket_connections").await, 3.0);
    assert!(metric(addr, "switchboard_connections").await >= 3.0);
    assert_eq!(metric(addr, "switchboard_connections_limit").await, 10_000.0);

    alice.hangup(&call_id).await.unwrap();
    metric_reaches(addr, "switchboard_calls{state=\"active\"}", 0.0).await;
    drop(bob);
    metric_reaches(addr, "switchboard_websocket_connections", 2.0).await;
    server.shutdown().await;
}

/// A STUN request from `socket` to `to`, and its response.
async fn stun(socket: &UdpSocket, to: SocketAddr, packet: &[u8]) -> Vec<u8> {
    socket.send_to(packet, to).await.unwrap();
    let mut buffer = vec![0u8; 1500];
    let (len, _) = tokio::time::timeout(T, socket.recv_from(&mut buffer)).await.expect("no STUN response").unwrap();
    buffer.truncate(len);
    buffer
}

fn allocate_request(tid: u8, credentials: Option<(&str, &str, &str, &str)>) -> Vec<u8> {
    let mut packet = Vec::new();
    let mut writer = MessageWriter::new(&mut packet, Method::ALLOCATE, Class::Request, TransactionId([tid; 12]));
    writer.requested_transport(17);
    if let Some((user, password, realm, nonce)) = credentials {
        let key = long_term_key_md5(user, realm, password);
        writer.text(attr::USERNAME, user).text(attr::REALM, realm).text(attr::NONCE, nonce).integrity(&key);
    }
    writer.finish().unwrap();
    packet
}

#[tokio::test]
async fn turn_allocations_and_credential_failures_show_in_metrics_and_the_admin_view() {
    let server = TestServer::start_with(|c| {
        c.admin_token = Some(Secret(TOKEN.into()));
        c.turn.as_mut().unwrap().allow_peers = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let turn = server.turn_addr().unwrap();
    let (_alice, welcome) = server.login_welcome("alice").await;
    let ice = welcome.ice_servers.iter().find(|s| s.username.is_some()).expect("TURN credentials in welcome");
    let (user, password) = (ice.username.clone().unwrap(), ice.credential.clone().unwrap());

    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let challenge = stun(&socket, turn, &allocate_request(1, None)).await;
    let challenge = Message::parse(&challenge).unwrap();
    assert_eq!(challenge.error_code().unwrap().unwrap().0, 401);
    let realm = challenge.realm().unwrap().unwrap().to_owned();
    let nonce = challenge.nonce().unwrap().unwrap().to_owned();
    let wrong = stun(&socket, turn, &allocate_request(2, Some((&user, "not the password", &realm, &nonce)))).await;
    assert_eq!(Message::parse(&wrong).unwrap().error_code().unwrap().unwrap().0, 401);
    let granted = stun(&socket, turn, &allocate_request(3, Some((&user, &password, &realm, &nonce)))).await;
    let granted = Message::parse(&granted).unwrap();
    assert_eq!(granted.class(), Class::Success, "{:?}", granted.error_code());
    let relay = granted.xor_address(attr::XOR_RELAYED_ADDRESS).unwrap().unwrap();

    // A permission for a peer, so that the admin view has one to show.
    let key = long_term_key_md5(&user, &realm, &password);
    let mut packet = Vec::new();
    let mut writer = MessageWriter::new(&mut packet, Method::CREATE_PERMISSION, Class::Request, TransactionId([4; 12]));
    writer.xor_address(attr::XOR_PEER_ADDRESS, "127.0.0.1:40000".parse().unwrap());
    writer.text(attr::USERNAME, &user).text(attr::REALM, &realm).text(attr::NONCE, &nonce).integrity(&key);
    writer.finish().unwrap();
    let permission = stun(&socket, turn, &packet).await;
    assert_eq!(Message::parse(&permission).unwrap().class(), Class::Success);

    assert_eq!(metric(server.addr, "switchboard_turn_allocations").await, 1.0);
    assert_eq!(metric(server.addr, "switchboard_turn_auth_failures_total{code=\"401\"}").await, 1.0);
    assert_eq!(metric(server.addr, "switchboard_turn_auth_failures_total{code=\"438\"}").await, 0.0);
    assert_eq!(metric(server.addr, "switchboard_turn_auth_challenges_total").await, 1.0);

    let view = admin_get(&server, "/admin/turn/allocations").await;
    let allocations = view["allocations"].as_array().unwrap();
    assert_eq!(allocations.len(), 1, "{view}");
    let allocation = &allocations[0];
    assert_eq!(allocation["user"], "alice");
    assert_eq!(allocation["username"], user.as_str());
    assert_eq!(allocation["client"], socket.local_addr().unwrap().to_string());
    assert_eq!(allocation["transport"], "udp");
    assert_eq!(allocation["relay"], relay.to_string());
    let left = allocation["lifetimeSeconds"].as_u64().unwrap();
    assert!((590..=600).contains(&left), "{allocation}");
    assert_eq!(allocation["permissions"][0]["peer"], "127.0.0.1");
    assert_eq!(allocation["channels"], json!([]));
    assert_eq!(view["next"], Value::Null);
    // The admin view never shows a credential.
    assert!(!view.to_string().contains(&password));
    server.shutdown().await;
}

#[tokio::test]
async fn metrics_can_move_to_their_own_listener_or_be_turned_off() {
    let separate = TestServer::start_with(|c| {
        c.metrics = MetricsListen::Listen("127.0.0.1:0".parse().unwrap());
        c.admin_token = Some(Secret(TOKEN.into()));
    })
    .await;
    let ops_addr = separate.server().metrics_addr().unwrap();
    assert_ne!(ops_addr, separate.addr);
    assert_eq!(get(ops_addr, "/metrics").await.status, 200);
    assert_eq!(get(ops_addr, "/healthz").await.status, 200);
    assert_eq!(get(ops_addr, "/readyz").await.status, 200);
    let auth = bearer(TOKEN);
    assert_eq!(request(ops_addr, "GET", "/admin/users", &[("Authorization", &auth)]).await.status, 200);
    // The main listener keeps /healthz and /readyz for load balancers, and nothing else of the operator side.
    assert_eq!(get(separate.addr, "/metrics").await.status, 404);
    assert_eq!(request(separate.addr, "GET", "/admin/users", &[("Authorization", &auth)]).await.status, 404);
    assert_eq!(get(separate.addr, "/readyz").await.status, 200);
    assert_eq!(get(separate.addr, "/healthz").await.status, 200);
    separate.shutdown().await;

    let off = TestServer::start_with(|c| c.metrics = MetricsListen::Off).await;
    assert_eq!(get(off.addr, "/metrics").await.status, 404);
    assert!(off.server().metrics_addr().is_none());
    off.shutdown().await;
}

// ---- admin API ----

#[tokio::test]
async fn the_admin_api_is_off_without_a_token_and_refuses_requests_without_the_right_one() {
    let off = TestServer::start().await;
    let auth = bearer(TOKEN);
    assert_eq!(request(off.addr, "GET", "/admin/users", &[("Authorization", &auth)]).await.status, 404);
    off.shutdown().await;

    let server = TestServer::start_with(|c| c.admin_token = Some(Secret(TOKEN.into()))).await;
    let none = get(server.addr, "/admin/users").await;
    assert_eq!(none.status, 401);
    assert_eq!(none.json()["error"], "unauthorized");
    assert_eq!(none.header("www-authenticate"), Some("Bearer realm=\"admin\""));
    let wrong = bearer("an-admin-token-for-tests-0123456788");
    let short = bearer("an-admin");
    let longer = bearer(&format!("{TOKEN}0"));
    let basic = format!("Basic {TOKEN}");
    for header in [&wrong, &short, &longer, &basic, &TOKEN.to_owned()] {
        let response = request(server.addr, "GET", "/admin/users", &[("Authorization", header)]).await;
        assert_eq!(response.status, 401, "{header}");
    }
    let response = request(server.addr, "DELETE", "/admin/users/alice", &[("Authorization", &wrong)]).await;
    assert_eq!(response.status, 401);
    let lower = format!("bearer {TOKEN}");
    assert_eq!(request(server.addr, "GET", "/admin/users", &[("Authorization", &lower)]).await.status, 200);
    server.shutdown().await;
}

#[tokio::test]
async fn the_admin_api_lists_users_rooms_and_calls_a_page_at_a_time() {
    let server = TestServer::start_with(|c| c.admin_token = Some(Secret(TOKEN.into()))).await;
    let mut alice = server.login("Alice").await;
    let mut bob = server.login("bob").await;
    let _carol = server.login("carol").await;
    let _tom = server.tutorial("tom").await;
    alice.join("Standup").await.unwrap();
    bob.join("standup").await.unwrap();
    let call_id = alice.call("bob").await.unwrap();
    bob.expect_type("ring").await.unwrap();

    let users = admin_get(&server, "/admin/users").await;
    assert_eq!(names(&users, "users"), ["Alice", "bob", "carol", "tom"]);
    assert_eq!(users["next"], Value::Null);
    let first = &users["users"][0];
    assert_eq!(first["dialect"], "v1");
    assert_eq!(first["connected"], true);
    assert_eq!(first["status"], "in-call");
    assert_eq!(first["rooms"], json!(["Standup"]));
    assert_eq!(first["call"], json!({"id": call_id, "peer": "bob", "caller": true, "state": "ringing"}));
    let since = first["since"].as_u64().unwrap();
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    assert!(since <= now_ms && now_ms - since < 60_000, "since {since} vs now {now_ms}");
    assert_eq!(users["users"][3]["dialect"], "tutorial");
    assert_eq!(users["users"][2]["call"], Value::Null);

    let page = admin_get(&server, "/admin/users?limit=3").await;
    assert_eq!(names(&page, "users"), ["Alice", "bob", "carol"]);
    assert_eq!(page["next"], "carol");
    let rest = admin_get(&server, "/admin/users?limit=3&after=carol").await;
    assert_eq!(names(&rest, "users"), ["tom"]);
    assert_eq!(rest["next"], Value::Null);

    let one = admin_get(&server, "/admin/users/ALICE").await;
    assert_eq!(one["name"], "Alice");
    let auth = bearer(TOKEN);
    let missing = request(server.addr, "GET", "/admin/users/nobody", &[("Authorization", &auth)]).await;
    assert_eq!((missing.status, missing.json()["error"].clone()), (404, json!("not-found")));

    let rooms = admin_get(&server, "/admin/rooms").await;
    assert_eq!(rooms, json!({"rooms": [{"name": "Standup", "members": ["Alice", "bob"]}], "next": null}));

    let calls = admin_get(&server, "/admin/calls").await;
    let call = &calls["calls"][0];
    assert_eq!((call["id"].as_str(), call["caller"].as_str()), (Some(call_id.as_str()), Some("Alice")));
    assert_eq!((call["callee"].as_str(), call["state"].as_str()), (Some("bob"), Some("ringing")));
    assert!(call["since"].as_u64().unwrap() >= since);

    for bad in
        ["/admin/users?limit=0", "/admin/users?limit=1001", "/admin/users?limit=ten", "/admin/turn/allocations?after=x"]
    {
        let response = request(server.addr, "GET", bad, &[("Authorization", &auth)]).await;
        assert_eq!(response.status, 400, "{bad}: {response:?}");
        assert_eq!(response.json()["error"], "bad-request");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn disconnecting_a_user_closes_that_connection_only() {
    let server = TestServer::start_with(|c| c.admin_token = Some(Secret(TOKEN.into()))).await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    let mut carol = server.login("carol").await;
    common::presence_is(&mut alice, &["alice", "bob", "carol"]).await;
    let auth = bearer(TOKEN);

    let response = request(server.addr, "DELETE", "/admin/users/BOB", &[("Authorization", &auth)]).await;
    assert_eq!(response.status, 204, "{response:?}");
    let (code, reason) = bob.expect_close().await.unwrap();
    assert_eq!(code, Some(close_code::DISCONNECTED_BY_ADMIN));
    assert_eq!(reason, "disconnected by an administrator");
    // The others stay, and see bob leave for good (no resume).
    common::presence_is(&mut alice, &["alice", "carol"]).await;
    common::presence_is(&mut carol, &["alice", "carol"]).await;
    assert_eq!(alice.ping().await.unwrap()["type"], "pong");
    assert_eq!(carol.ping().await.unwrap()["type"], "pong");
    let token = bob.resume_token().unwrap().to_owned();
    let mut again = server.connect().await;
    again.send_json(&json!({"type":"login","id":1,"resume":token})).await.unwrap();
    again.expect_error("resume-failed").await.unwrap();

    let response = request(server.addr, "DELETE", "/admin/users/bob", &[("Authorization", &auth)]).await;
    assert_eq!(response.status, 404);
    assert_eq!(metric(server.addr, "switchboard_admin_disconnects_total").await, 1.0);
    server.shutdown().await;
}

#[test]
fn the_openapi_file_describes_every_route() {
    let spec = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/admin-api.yaml")).unwrap();
    for path in [
        "/healthz:",
        "/readyz:",
        "/metrics:",
        "/admin/users:",
        "/admin/users/{name}:",
        "/admin/rooms:",
        "/admin/calls:",
        "/admin/turn/allocations:",
    ] {
        assert!(spec.contains(&format!("\n  {path}\n")), "docs/admin-api.yaml lacks {path}");
    }
}
