//! Shared helpers of the integration tests: an in-process server on an ephemeral port, clients, payloads and
//! presence waits. Every wait is bounded.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod http;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value};
use switchboard_client::{Client, TutorialClient, UserEntry, UserStatus, Welcome};
use switchboard_server::{Config, Server};
use tokio::time::Instant;

pub mod tls;

/// Upper bound of every single wait in the tests.
pub const T: Duration = Duration::from_secs(5);

/// A short window for "nothing of that kind arrives" checks.
pub const QUIET: Duration = Duration::from_millis(300);

/// The configuration every test starts from: loopback, ephemeral port, short resume grace.
pub fn test_config() -> Config {
    let mut config = Config { http: "127.0.0.1:0".parse().unwrap(), ..Config::default() };
    // Tests run in parallel: the STUN/TURN port must be ephemeral too.
    if let Some(turn) = &mut config.turn {
        turn.listen = Some("127.0.0.1:0".parse().unwrap());
    }
    config.core.resume_grace = Duration::from_millis(500);
    // Clients in tests ignore `goaway`: a short drain keeps every shutdown quick.
    config.shutdown_timeout = Duration::from_millis(200);
    // Every test client connects from 127.0.0.1, many at once: the per-address limits, on by default for every
    // address including loopback, are lifted here. Tests of those limits set them explicitly (abuse.rs).
    config.limits.max_per_ip = 0;
    config.limits.rate_per_ip = 0;
    config
}

/// A server running in this process.
pub struct TestServer {
    server: Option<Server>,
    pub addr: SocketAddr,
}

/// The running server's own methods (TLS store, reload, limits counters).
impl std::ops::Deref for TestServer {
    type Target = Server;

    fn deref(&self) -> &Server {
        self.server.as_ref().expect("the server is running")
    }
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tune: impl FnOnce(&mut Config)) -> Self {
        let mut config = test_config();
        tune(&mut config);
        let server = tokio::time::timeout(T, Server::start(config))
            .await
            .expect("the server did not start in time")
            .expect("the server failed to start");
        let addr = server.http_addr();
        assert!(addr.ip().is_loopback(), "tests only listen on loopback, got {addr}");
        Self { server: Some(server), addr }
    }

    /// The running server.
    pub fn server(&self) -> &Server {
        self.server.as_ref().expect("the server is running")
    }

    /// Shuts the server down and hands back the time it took.
    pub async fn shutdown_timed(mut self) -> Duration {
        let started = Instant::now();
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
        started.elapsed()
    }

    /// The STUN/TURN UDP address, when TURN is on.
    pub fn turn_addr(&self) -> Option<SocketAddr> {
        self.server.as_ref().and_then(Server::turn_addr)
    }

    /// The `turns:` address, when TURN over TLS is on.
    pub fn turn_tls_addr(&self) -> Option<SocketAddr> {
        self.server.as_ref().and_then(Server::turn_tls_addr)
    }

    /// The v1 endpoint.
    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// The root path, which tutorial pages use.
    pub fn root_url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    pub async fn connect(&self) -> Client {
        Client::connect(&self.url()).await.expect("connect")
    }

    pub async fn login(&self, name: &str) -> Client {
        self.login_welcome(name).await.0
    }

    pub async fn login_welcome(&self, name: &str) -> (Client, Welcome) {
        let mut client = self.connect().await;
        let welcome = client.login(name).await.unwrap_or_else(|e| panic!("login as {name:?} failed: {e}"));
        (client, welcome)
    }

    pub async fn tutorial(&self, name: &str) -> TutorialClient {
        let mut client = TutorialClient::connect(&self.root_url()).await.expect("connect (tutorial)");
        client.login(name).await.unwrap_or_else(|e| panic!("tutorial login as {name:?} failed: {e}"));
        client
    }

    pub async fn shutdown(mut self) {
        if let Some(server) = self.server.take() {
            tokio::time::timeout(T, server.shutdown()).await.expect("the server did not shut down in time");
        }
    }
}

pub fn sdp_offer() -> Value {
    json!({"type": "offer", "sdp": "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"})
}

pub fn sdp_answer() -> Value {
    json!({"type": "answer", "sdp": "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"})
}

pub fn candidate(n: u32) -> Value {
    json!({
        "candidate": format!("candidate:{n} 1 udp 2122260223 192.0.2.1 {} typ host", 50_000 + n),
        "sdpMid": "0",
        "sdpMLineIndex": 0
    })
}

/// The names of a user list.
pub fn names(users: &[UserEntry<'_>]) -> BTreeSet<String> {
    users.iter().map(|u| u.name.to_string()).collect()
}

/// The names in the client's presence view (as shown, not case-folded).
pub fn view_names(client: &Client) -> BTreeSet<String> {
    client.presence_view().values().map(|u| u.name.to_string()).collect()
}

/// Status of `name` in the client's presence view.
pub fn view_status(client: &Client, name: &str) -> Option<UserStatus> {
    client.presence_view().values().find(|u| u.name.eq_ignore_ascii_case(name)).map(|u| u.status)
}

/// Reads frames until the client's presence view satisfies `done`; returns the `presence` events read meanwhile.
/// Other frames are dropped.
pub async fn presence_until(
    client: &mut Client,
    what: &str,
    mut done: impl FnMut(&BTreeMap<String, UserEntry<'static>>) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + T;
    let mut seen = Vec::new();
    while !done(client.presence_view()) {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let incoming = client.recv_timeout(remaining).await.unwrap_or_else(|e| {
            panic!("presence never reached: {what}: {e}; view: {:?}", client.presence_view().keys())
        });
        assert!(!incoming.is_close(), "connection closed while waiting for presence: {what}: {}", incoming.describe());
        if incoming.kind() == Some("presence") {
            seen.push(incoming.raw().cloned().unwrap());
        }
    }
    seen
}

/// Waits until the client's presence view holds exactly `expected` (names, case-sensitive as shown).
pub async fn presence_is(client: &mut Client, expected: &[&str]) -> Vec<Value> {
    let expected: BTreeSet<String> = expected.iter().map(|s| s.to_string()).collect();
    let what = format!("the lobby is {expected:?}");
    presence_until(client, &what, |view| view.values().map(|u| u.name.to_string()).collect::<BTreeSet<_>>() == expected)
        .await
}

/// The string values of an array field of a JSON object (or of the `name`s of its objects).
pub fn strings(value: &Value, field: &str) -> Vec<String> {
    value
        .get(field)
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|item| item.as_str().or_else(|| item.get("name").and_then(Value::as_str)))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `presence` has `name` with `status` in its array `field` (`joined` or `changed`).
pub fn has_entry(presence: &Value, field: &str, name: &str, status: &str) -> bool {
    presence
        .get(field)
        .and_then(Value::as_array)
        .is_some_and(|items| items.iter().any(|item| item["name"] == json!(name) && item["status"] == json!(status)))
}

/// The sorted keys of a JSON object.
pub fn keys(value: &Value) -> Vec<String> {
    let mut keys: Vec<String> = value.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default();
    keys.sort();
    keys
}

/// Sends a JSON request with the given id and returns the first frame carrying that id.
pub async fn reply_to(client: &mut Client, request: Value) -> Value {
    let id = request["id"].clone();
    client.send_json(&request).await.unwrap();
    client
        .expect(&format!("a frame with id {id}"), |incoming| {
            (incoming.id() == Some(&id)).then(|| incoming.raw().cloned().unwrap())
        })
        .await
        .unwrap()
}

/// Reads frames until one of every type in `kinds` has arrived (the first of each is kept); other frames are
/// dropped.
pub async fn expect_all(client: &mut Client, kinds: &[&str]) -> BTreeMap<String, Value> {
    let mut found: BTreeMap<String, Value> = BTreeMap::new();
    let what = format!("one frame of each type {kinds:?}");
    client
        .expect(&what, |incoming| {
            if let (Some(kind), Some(raw)) = (incoming.kind(), incoming.raw()) {
                if kinds.contains(&kind) && !found.contains_key(kind) {
                    found.insert(kind.to_owned(), raw.clone());
                }
            }
            (found.len() == kinds.len()).then_some(())
        })
        .await
        .unwrap_or_else(|e| panic!("{e}; found so far: {found:?}"));
    found
}

/// Gives the server a moment to notice that a client's TCP connection went away (there is no event for that).
pub async fn let_the_server_notice_the_drop() {
    tokio::time::sleep(Duration::from_millis(150)).await;
}
