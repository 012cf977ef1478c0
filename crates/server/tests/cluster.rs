//! Cluster mode against a real `redis-server` (Debian package `redis-server`) on a free loopback port, with several
//! Switchboard nodes: in-process servers, and the binary where a node must die abruptly (`kill -9`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::http::get;
use common::{candidate, presence_until, sdp_answer, sdp_offer, view_names, TestServer, T};
use serde_json::json;
use switchboard_client::{Client, Error as ClientError, ErrorCode};
use switchboard_server::config::ClusterSettings;
use tokio::time::Instant;

/// The bound on a dead node's users staying visible, in these tests.
const NODE_TIMEOUT: Duration = Duration::from_secs(2);

/// A `redis-server` of this test alone, without persistence, killed when dropped.
struct Redis {
    child: Option<Child>,
    port: u16,
    dir: std::path::PathBuf,
    /// More `redis-server` arguments.
    extra: Vec<String>,
}

impl Redis {
    async fn start() -> Self {
        Self::start_with(&[]).await
    }

    async fn start_with(extra: &[&str]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = std::env::temp_dir().join(format!("switchboard-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let extra = extra.iter().map(|arg| arg.to_string()).collect();
        let mut redis = Self { child: None, port, dir, extra };
        redis.spawn().await;
        redis
    }

    async fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(&self.extra)
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start redis-server: install the Debian package redis-server (scripts/test.sh does)");
        self.child = Some(child);
        let deadline = Instant::now() + T;
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_err() {
            assert!(Instant::now() < deadline, "redis-server did not listen on port {} in time", self.port);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills it at once (SIGKILL): every node loses its connection.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn cluster_settings(redis: &Redis) -> ClusterSettings {
    ClusterSettings { url: redis.url(), node_timeout: NODE_TIMEOUT }
}

/// An in-process node of the cluster, connected to Redis.
async fn node(redis: &Redis) -> TestServer {
    node_with(redis, |_| {}).await
}

async fn node_with(redis: &Redis, tune: impl FnOnce(&mut switchboard_server::Config)) -> TestServer {
    let settings = cluster_settings(redis);
    let server = TestServer::start_with(|config| {
        config.turn = None;
        config.cluster = Some(settings);
        tune(config);
    })
    .await;
    wait_ready(&server, true).await;
    server
}

async fn wait_ready(server: &TestServer, ready: bool) {
    let deadline = Instant::now() + T;
    while server.server().cluster_ready() != Some(ready) {
        assert!(
            Instant::now() < deadline,
            "the node's cluster link never became {}",
            if ready { "up" } else { "down" }
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until `client` sees exactly... at least `names` online.
async fn sees(client: &mut Client, names: &[&str]) {
    let what = format!("{names:?} online");
    presence_until(client, &what, |view| names.iter().all(|n| view.values().any(|u| u.name == *n))).await;
}

async fn sees_not(client: &mut Client, name: &str) {
    let what = format!("{name:?} gone");
    presence_until(client, &what, |view| view.values().all(|u| u.name != name)).await;
}

#[tokio::test]
async fn relay_crosses_nodes_in_order_in_both_dialects() {
    let redis = Redis::start().await;
    let a = node(&redis).await;
    let b = node(&redis).await;
    let mut alice = a.login("alice").await;
    let mut bob = b.login("bob").await;
    sees(&mut alice, &["alice", "bob"]).await;
    sees(&mut bob, &["alice", "bob"]).await;

    let ack = alice.request(json!({"type": "offer", "to": "Bob", "callId": "c1", "sdp": sdp_offer()})).await.unwrap();
    assert_eq!(ack["type"], "ack", "{ack}");
    let offer = bob.expect_type("offer").await.unwrap();
    assert_eq!(offer, json!({"type": "offer", "from": "alice", "callId": "c1", "sdp": sdp_offer()}));
    bob.answer("alice", sdp_answer()).await.unwrap();
    assert_eq!(alice.expect_type("answer").await.unwrap()["sdp"], sdp_answer());

    // Order between two users survives the trip through Redis.
    for n in 0..100 {
        alice.candidate("bob", candidate(n)).await.unwrap();
    }
    for n in 0..100 {
        let got = bob.expect_type("candidate").await.unwrap();
        assert_eq!(got["candidate"], candidate(n), "candidate {n} out of order");
    }

    // Tutorial pages on either node reach v1 users and each other.
    let mut carol = b.tutorial("carol").await;
    let mut dave = a.tutorial("dave").await;
    sees(&mut alice, &["carol", "dave"]).await;
    alice.offer("carol", sdp_offer()).await.unwrap();
    let offer = carol.expect_type("offer").await.unwrap();
    assert_eq!(offer["name"], "alice", "{offer}");
    assert_eq!(offer["sdp"], sdp_offer());
    carol.answer("carol", "alice", sdp_answer()).await.unwrap();
    let answer = alice.expect_type("answer").await.unwrap();
    assert_eq!((answer["from"].as_str(), &answer["sdp"]), (Some("carol"), &sdp_answer()));
    dave.offer("dave", "carol", sdp_offer()).await.unwrap();
    assert_eq!(carol.expect_type("offer").await.unwrap()["name"], "dave");
    carol.ice("dave", candidate(7)).await.unwrap();
    assert_eq!(dave.expect_type("ICE").await.unwrap()["candidate"], candidate(7));
    let everyone = |list: &[String]| ["alice", "bob", "carol", "dave"].iter().all(|n| list.iter().any(|l| l == n));
    if !everyone(carol.userlist()) {
        let list = carol.expect_user_list_where(everyone).await;
        assert!(list.is_ok(), "the tutorial user list spans the cluster: {list:?}");
    }

    // Nobody of that name anywhere.
    alice.send_json(&json!({"type": "offer", "id": 9, "to": "zed", "sdp": sdp_offer()})).await.unwrap();
    alice.expect_error("unknown-peer").await.unwrap();

    a.shutdown().await;
    b.shutdown().await;
}

/// The keys of database `db` (through `redis-cli`, which the redis-server package brings).
fn redis_keys(redis: &Redis, db: u32, password: &str) -> Vec<String> {
    let output = Command::new("redis-cli")
        .args(["-p", &redis.port.to_string(), "-n", &db.to_string(), "--no-auth-warning", "-a", password])
        .args(["--raw", "KEYS", "sb:*"])
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&output.stdout).lines().filter(|line| !line.is_empty()).map(str::to_owned).collect()
}

#[tokio::test]
async fn nodes_authenticate_as_the_url_says_and_keep_their_keys_in_its_database() {
    let redis =
        Redis::start_with(&["--requirepass", "s3cret", "--user", "switchboard", "on", ">pw", "~*", "&*", "+@all"])
            .await;
    // A user without access to any pub/sub channel (Redis 7 grants none unless told to).
    let granted = Command::new("redis-cli")
        .args(["-p", &redis.port.to_string(), "--no-auth-warning", "-a", "s3cret"])
        .args(["ACL", "SETUSER", "nochannels", "on", ">pw", "~*", "+@all"])
        .output()
        .expect("redis-cli");
    assert_eq!(String::from_utf8_lossy(&granted.stdout).trim(), "OK");
    let port = redis.port;
    let with_url = |url: String| {
        move |config: &mut switchboard_server::Config| {
            config.turn = None;
            config.cluster = Some(ClusterSettings { url, node_timeout: NODE_TIMEOUT });
        }
    };
    // The default user's password, and a named ACL user; both in database 3.
    let a = TestServer::start_with(with_url(format!("redis://:s3cret@127.0.0.1:{port}/3"))).await;
    let b = TestServer::start_with(with_url(format!("redis://switchboard:pw@127.0.0.1:{port}/3"))).await;
    wait_ready(&a, true).await;
    wait_ready(&b, true).await;
    let mut alice = a.login("alice").await;
    let mut bob = b.login("bob").await;
    sees(&mut alice, &["alice", "bob"]).await;
    alice.offer("bob", sdp_offer()).await.unwrap();
    assert_eq!(bob.expect_type("offer").await.unwrap()["sdp"], sdp_offer());
    let keys = redis_keys(&redis, 3, "s3cret");
    assert!(keys.iter().any(|k| k.contains("alice")) && keys.iter().any(|k| k.contains("bob")), "db 3: {keys:?}");
    let elsewhere = redis_keys(&redis, 0, "s3cret");
    assert!(elsewhere.is_empty(), "nothing in db 0: {elsewhere:?}");

    // A wrong password: the link never comes up, and the node says so rather than letting anyone claim a name it
    // cannot check.
    let wrong = TestServer::start_with(with_url(format!("redis://:wrong@127.0.0.1:{port}"))).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(wrong.server().cluster_ready(), Some(false));
    let ready = get(wrong.addr, "/readyz").await;
    assert_eq!(ready.status, 503, "{ready:?}");
    let mut carol = wrong.connect().await;
    let refused = carol.login("carol").await;
    assert!(matches!(refused, Err(ClientError::Server { code: ErrorCode::Unavailable, .. })), "{refused:?}");

    // Allowed in, but not to subscribe: the link never comes up, and the node does not register (no lease in its
    // database) only to be unreachable.
    let deaf = TestServer::start_with(with_url(format!("redis://nochannels:pw@127.0.0.1:{port}/5"))).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(deaf.server().cluster_ready(), Some(false));
    let leases = redis_keys(&redis, 5, "s3cret");
    assert!(leases.is_empty(), "db 5: {leases:?}");
    deaf.shutdown().await;

    a.shutdown().await;
    b.shutdown().await;
    wrong.shutdown().await;
}

#[tokio::test]
async fn exactly_one_of_two_racing_logins_on_two_nodes_gets_the_name() {
    let redis = Redis::start().await;
    let a = node(&redis).await;
    let b = node(&redis).await;
    for round in 0..20 {
        let name = format!("racer{round}");
        let other_spelling = if round % 2 == 0 { name.to_uppercase() } else { name.clone() };
        let mut on_a = a.connect().await;
        let mut on_b = b.connect().await;
        let (first, second) = tokio::join!(on_a.login(&name), on_b.login(&other_spelling));
        let won = [first.is_ok(), second.is_ok()];
        assert_eq!(won.iter().filter(|w| **w).count(), 1, "round {round}: {first:?} / {second:?}");
        let loser = if won[0] { second } else { first };
        match loser {
            Err(ClientError::Server { code: ErrorCode::NameTaken, .. }) => {}
            other => panic!("round {round}: the loser got {other:?}, not name-taken"),
        }
    }
    // A name freed on one node can be taken on the other.
    let mut first = a.login("phoenix").await;
    first.logout().await.unwrap();
    let deadline = Instant::now() + T;
    loop {
        let mut again = b.connect().await;
        match again.login("phoenix").await {
            Ok(_) => break,
            Err(error) => assert!(Instant::now() < deadline, "the released name never became free: {error}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.shutdown().await;
    b.shutdown().await;
}

/// The `switchboard` binary as a cluster node, to be killed with SIGKILL.
struct BinaryNode {
    child: Child,
    addr: SocketAddr,
}

impl BinaryNode {
    fn start(redis: &Redis) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args(["--http", "127.0.0.1:0", "--turn", "off", "--cluster", &redis.url()])
            .args(["--cluster-node-timeout", &format!("{}ms", NODE_TIMEOUT.as_millis())])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the switchboard binary");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let addr = line
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("no address in the binary's first line: {line:?}"));
        Self { child, addr }
    }

    fn kill_9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for BinaryNode {
    fn drop(&mut self) {
        self.kill_9();
    }
}

#[tokio::test]
async fn users_of_a_node_killed_with_sigkill_disappear_within_the_node_timeout() {
    let redis = Redis::start().await;
    let survivor = node(&redis).await;
    let mut doomed = BinaryNode::start(&redis);
    let url = format!("ws://{}/ws", doomed.addr);
    // The binary connects to Redis in the background: its logins succeed once it has.
    let deadline = Instant::now() + T;
    let mut victim = loop {
        let mut client = Client::connect(&url).await.unwrap();
        match client.login("victim").await {
            Ok(_) => break client,
            Err(ClientError::Server { code: ErrorCode::Unavailable, .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(error) => panic!("login on the binary node failed: {error}"),
        }
    };
    let mut watcher = survivor.login("watcher").await;
    sees(&mut watcher, &["victim", "watcher"]).await;
    sees(&mut victim, &["victim", "watcher"]).await;

    // In a room and a call across the nodes when one dies: the survivor hears the member leave, and a hangup.
    victim.join("wake").await.unwrap();
    assert_eq!(watcher.join("wake").await.unwrap(), ["victim", "watcher"]);
    let call_id = watcher.call("victim").await.unwrap();
    victim.expect_type("ring").await.unwrap();
    victim.accept(&call_id).await.unwrap();
    watcher.expect_type("accepted").await.unwrap();

    doomed.kill_9();
    let killed = Instant::now();
    let hangup = watcher.expect_type("hangup").await.unwrap();
    assert_eq!(hangup, json!({"type": "hangup", "callId": call_id, "from": "victim", "reason": "disconnected"}));
    let left = watcher.expect_type("member-left").await.unwrap();
    assert_eq!(left, json!({"type": "member-left", "room": "wake", "name": "victim", "reason": "disconnected"}));
    sees_not(&mut watcher, "victim").await;
    let took = killed.elapsed();
    assert!(took <= NODE_TIMEOUT, "the dead node's user stayed visible for {took:?}, over {NODE_TIMEOUT:?}");
    assert_eq!(view_names(&watcher), ["watcher".to_owned()].into());
    // Its name is free again.
    survivor.login("victim").await;
    survivor.shutdown().await;
}

#[tokio::test]
async fn calls_between_nodes_ring_connect_and_end_in_both_dialects() {
    let redis = Redis::start().await;
    let a = node_with(&redis, |config| config.core.ring_timeout = Duration::from_millis(600)).await;
    let b = node(&redis).await;
    let mut alice = a.login("alice").await;
    // Carol watches statuses in the compact presence format: remote users' changes reach it as names by status too.
    let mut carol = a.connect().await;
    carol.login_with(json!({"type": "login", "name": "carol", "presence": "compact"})).await.unwrap();
    let mut bob = b.login("bob").await;
    sees(&mut alice, &["alice", "bob", "carol"]).await;
    sees(&mut bob, &["alice", "bob", "carol"]).await;

    // Ring, accept, relay within the call, hang up.
    let call_id = alice.call("bob").await.unwrap();
    let ring = bob.expect_type("ring").await.unwrap();
    assert_eq!(ring, json!({"type": "ring", "callId": call_id, "from": "alice"}));
    let frames = presence_until(&mut carol, "both in-call", |view| {
        ["alice", "bob"]
            .iter()
            .all(|n| view.get(*n).is_some_and(|u| u.status == switchboard_client::UserStatus::InCall))
    })
    .await;
    assert!(frames.iter().all(|f| f.get("changed").is_none() && f.get("joined").is_none()), "{frames:?}");
    assert!(frames.iter().any(|f| f["inCall"].as_array().is_some_and(|n| n.contains(&json!("bob")))), "{frames:?}");
    // Busy across nodes.
    carol.send_json(&json!({"type": "call", "id": 1, "to": "bob"})).await.unwrap();
    carol.expect_error("busy").await.unwrap();
    bob.accept(&call_id).await.unwrap();
    let accepted = alice.expect_type("accepted").await.unwrap();
    assert_eq!(accepted, json!({"type": "accepted", "callId": call_id, "from": "bob"}));
    alice.send_json(&json!({"type": "offer", "to": "bob", "callId": call_id, "sdp": sdp_offer()})).await.unwrap();
    assert_eq!(bob.expect_type("offer").await.unwrap()["callId"], call_id);
    bob.hangup(&call_id).await.unwrap();
    let hangup = alice.expect_type("hangup").await.unwrap();
    assert_eq!(hangup, json!({"type": "hangup", "callId": call_id, "from": "bob", "reason": "hangup"}));
    presence_until(&mut carol, "both idle", |view| {
        ["alice", "bob"].iter().all(|n| view.get(*n).is_some_and(|u| u.status == switchboard_client::UserStatus::Idle))
    })
    .await;

    // Reject and cancel.
    let call_id = bob.call("alice").await.unwrap();
    alice.expect_type("ring").await.unwrap();
    alice.reject(&call_id).await.unwrap();
    assert_eq!(bob.expect_type("hangup").await.unwrap()["reason"], "rejected");
    let call_id = alice.call("bob").await.unwrap();
    bob.expect_type("ring").await.unwrap();
    alice.cancel(&call_id).await.unwrap();
    assert_eq!(bob.expect_type("hangup").await.unwrap()["reason"], "cancelled");

    // Nobody answers: both sides hear no-answer from the callee (the caller's node keeps the ring timer).
    let call_id = alice.call("bob").await.unwrap();
    bob.expect_type("ring").await.unwrap();
    for client in [&mut alice, &mut bob] {
        let hangup = client.expect_type("hangup").await.unwrap();
        assert_eq!(hangup, json!({"type": "hangup", "callId": call_id, "from": "bob", "reason": "no-answer"}));
    }

    // A tutorial page on the other node is accepted for at once, and hears the offer.
    let mut tut = b.tutorial("tut").await;
    sees(&mut alice, &["tut"]).await;
    let call_id = alice.call("tut").await.unwrap();
    let accepted = alice.expect_type("accepted").await.unwrap();
    assert_eq!(accepted, json!({"type": "accepted", "callId": call_id, "from": "tut"}));
    alice.offer("tut", sdp_offer()).await.unwrap();
    assert_eq!(tut.expect_type("offer").await.unwrap()["name"], "alice");
    alice.hangup(&call_id).await.unwrap();

    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn rooms_span_nodes_with_their_limits_and_passwords() {
    let redis = Redis::start().await;
    let small = |config: &mut switchboard_server::Config| config.core.max_room_size = 3;
    let a = node_with(&redis, small).await;
    let b = node_with(&redis, small).await;
    let mut alice = a.login("alice").await;
    let mut carol = a.login("carol").await;
    let mut bob = b.login("bob").await;
    let mut dave = b.login("dave").await;
    sees(&mut dave, &["alice", "bob", "carol", "dave"]).await;

    let joined = alice.request(json!({"type": "join", "room": "Standup", "password": "pw"})).await.unwrap();
    assert_eq!((joined["members"].clone(), joined["protected"].clone()), (json!(["alice"]), json!(true)), "{joined}");
    // The password the first member set on node A is checked for a joiner on node B.
    bob.send_json(&json!({"type": "join", "id": 1, "room": "standup"})).await.unwrap();
    bob.expect_error("room-password-required").await.unwrap();
    bob.send_json(&json!({"type": "join", "id": 2, "room": "standup", "password": "guess"})).await.unwrap();
    bob.expect_error("wrong-room-password").await.unwrap();
    let joined = bob.request(json!({"type": "join", "room": "standup", "password": "pw"})).await.unwrap();
    assert_eq!(joined["members"], json!(["alice", "bob"]), "{joined}");
    assert_eq!(joined["room"], "Standup");
    let event = alice.expect_type("member-joined").await.unwrap();
    assert_eq!(event, json!({"type": "member-joined", "room": "Standup", "name": "bob"}));
    let joined = carol.request(json!({"type": "join", "room": "standup", "password": "pw"})).await.unwrap();
    assert_eq!(joined["members"], json!(["alice", "bob", "carol"]));
    assert_eq!(bob.expect_type("member-joined").await.unwrap()["name"], "carol");
    assert_eq!(alice.expect_type("member-joined").await.unwrap()["name"], "carol");
    // The size limit holds across nodes.
    dave.send_json(&json!({"type": "join", "id": 3, "room": "standup", "password": "pw"})).await.unwrap();
    dave.expect_error("room-full").await.unwrap();

    // Relay within the room, across nodes; a non-member cannot.
    bob.send_json(&json!({"type": "offer", "to": "alice", "room": "standup", "sdp": sdp_offer()})).await.unwrap();
    let offer = alice.expect_type("offer").await.unwrap();
    assert_eq!((offer["from"].as_str(), offer["room"].as_str()), (Some("bob"), Some("Standup")));
    dave.send_json(&json!({"type": "offer", "id": 4, "to": "alice", "room": "standup", "sdp": sdp_offer()}))
        .await
        .unwrap();
    dave.expect_error("not-in-room").await.unwrap();

    // Leaving tells the members on both nodes.
    bob.leave("standup").await.unwrap();
    for client in [&mut alice, &mut carol] {
        let left = client.expect_type("member-left").await.unwrap();
        assert_eq!(left, json!({"type": "member-left", "room": "Standup", "name": "bob", "reason": "left"}));
    }
    // Once empty, the room and its password are gone everywhere.
    alice.leave("standup").await.unwrap();
    carol.leave("standup").await.unwrap();
    // Node b learns of the leaves through the cluster a moment later: until then a join still finds them there.
    let deadline = Instant::now() + T;
    let joined = loop {
        // Still there, the room may still have its password too (`room-password-required`): try again then as well.
        let joined = dave.request(json!({"type": "join", "room": "standup"})).await;
        match joined {
            Ok(joined) if joined["members"] == json!(["dave"]) || Instant::now() >= deadline => break joined,
            Ok(_) => {
                dave.leave("standup").await.unwrap();
            }
            Err(error) => assert!(Instant::now() < deadline, "{error}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(joined["members"], json!(["dave"]), "{joined}");
    assert!(joined.get("protected").is_none(), "{joined}");

    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn nodes_serve_local_users_while_redis_is_down_and_resynchronise_when_it_returns() {
    let mut redis = Redis::start().await;
    let a = node(&redis).await;
    let b = node(&redis).await;
    let mut alice = a.login("alice").await;
    let mut carol = a.login("carol").await;
    let mut bob = b.login("bob").await;
    let mut dave = b.login("dave").await;
    sees(&mut alice, &["alice", "bob", "carol", "dave"]).await;
    sees(&mut bob, &["alice", "bob", "carol", "dave"]).await;

    let ready = get(a.addr, "/readyz").await;
    assert_eq!(ready.status, 200, "{ready:?}");
    assert_eq!(ready.json()["checks"]["cluster"], "ok");
    redis.kill();
    wait_ready(&a, false).await;
    wait_ready(&b, false).await;
    // A load balancer sends no new clients to a node that cannot reach the others.
    let ready = get(a.addr, "/readyz").await;
    assert_eq!(ready.status, 503, "{ready:?}");
    assert_eq!(ready.json()["notReady"], json!(["cluster"]));

    // Local users keep working.
    alice.offer("carol", sdp_offer()).await.unwrap();
    assert_eq!(carol.expect_type("offer").await.unwrap()["from"], "alice");
    // A user of the other node cannot be reached now, and says so at once rather than hanging.
    let started = Instant::now();
    alice.send_json(&json!({"type": "offer", "id": 5, "to": "bob", "sdp": sdp_offer()})).await.unwrap();
    let error = alice.expect_error("undeliverable").await.unwrap();
    assert_eq!((error["id"].clone(), error["to"].clone()), (json!(5), json!("bob")), "{error}");
    assert!(started.elapsed() < Duration::from_secs(1), "undeliverable took {:?}", started.elapsed());
    // A new name cannot be checked against the other nodes: refused with a typed error.
    let mut newcomer = a.connect().await;
    match newcomer.login("newcomer").await {
        Err(ClientError::Server { code: ErrorCode::Unavailable, .. }) => {}
        other => panic!("a login during the outage got {other:?}"),
    }
    // Dave leaves while the nodes cannot tell each other.
    dave.logout().await.unwrap();

    redis.spawn().await;
    wait_ready(&a, true).await;
    wait_ready(&b, true).await;

    let ready = get(a.addr, "/readyz").await;
    assert_eq!(ready.status, 200, "{ready:?}");
    assert_eq!(get(b.addr, "/readyz").await.status, 200);
    // Presence converges without a restart: dave is gone everywhere, the others are back.
    sees_not(&mut alice, "dave").await;
    sees(&mut alice, &["alice", "bob", "carol"]).await;
    sees(&mut bob, &["alice", "bob", "carol"]).await;
    // Cross-node relay works again.
    let deadline = Instant::now() + T;
    loop {
        let reply = alice.request(json!({"type": "offer", "to": "bob", "sdp": sdp_offer()})).await;
        match reply {
            Ok(ack) if ack["type"] == "ack" => break,
            other => assert!(Instant::now() < deadline, "relay to bob never came back: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bob.expect_type("offer").await.unwrap();
    // The names held before the outage are held again (Redis came back empty): nobody can take them.
    let mut thief = b.connect().await;
    match thief.login("ALICE").await {
        Err(ClientError::Server { code: ErrorCode::NameTaken, .. }) => {}
        other => panic!("alice's name was free after the resync: {other:?}"),
    }
    let mut thief = a.connect().await;
    match thief.login("bob").await {
        Err(ClientError::Server { code: ErrorCode::NameTaken, .. }) => {}
        other => panic!("bob's name was free after the resync: {other:?}"),
    }
    // And the ones released during the outage are free.
    a.login("dave").await;

    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_session_resumes_through_another_node_with_its_rooms_call_and_queued_messages() {
    let redis = Redis::start().await;
    let long_grace = |config: &mut switchboard_server::Config| config.core.resume_grace = Duration::from_secs(5);
    let a = node_with(&redis, long_grace).await;
    let b = node_with(&redis, long_grace).await;
    let mut alice = a.login("alice").await;
    // Carol watches statuses in the compact presence format: remote users' changes reach it as names by status too.
    let mut carol = a.connect().await;
    carol.login_with(json!({"type": "login", "name": "carol", "presence": "compact"})).await.unwrap();
    let mut bob = b.login("bob").await;
    sees(&mut alice, &["alice", "bob", "carol"]).await;
    sees(&mut bob, &["alice", "bob", "carol"]).await;
    alice.join("standup").await.unwrap();
    bob.join("standup").await.unwrap();
    carol.join("standup").await.unwrap();
    let call_id = alice.call("bob").await.unwrap();
    bob.expect_type("ring").await.unwrap();
    bob.accept(&call_id).await.unwrap();
    alice.expect_type("accepted").await.unwrap();

    // Alice's connection to node A drops; the load balancer sends her back through node B.
    let token = alice.resume_token().unwrap().to_owned();
    drop(alice);
    common::let_the_server_notice_the_drop().await;
    let ack =
        bob.request(json!({"type": "offer", "to": "alice", "callId": call_id, "sdp": sdp_offer()})).await.unwrap();
    assert_eq!(ack["type"], "ack", "{ack}");
    bob.send_json(&json!({"type": "candidate", "to": "alice", "candidate": candidate(1)})).await.unwrap();

    let mut alice = b.connect().await;
    let welcome = alice.login_resume(&token).await.unwrap();
    assert!(welcome.resumed);
    assert_eq!(welcome.name, "alice");
    assert_ne!(welcome.resume_token, token, "the token rotates");
    let call = welcome.call.clone().expect("the call came along");
    assert_eq!((call.call_id.as_ref(), call.peer.as_ref(), call.caller), (call_id.as_str(), "bob", true));
    assert_eq!(welcome.raw["call"]["state"], "active");
    let rooms = &welcome.raw["rooms"];
    assert_eq!(rooms, &json!([{"room": "standup", "members": ["alice", "bob", "carol"]}]), "{welcome:?}");
    // What was queued on node A arrives, in order.
    let offer = alice.expect_type("offer").await.unwrap();
    assert_eq!((offer["from"].as_str(), offer["callId"].as_str()), (Some("bob"), Some(call_id.as_str())));
    assert_eq!(alice.expect_type("candidate").await.unwrap()["candidate"], candidate(1));

    // She is reachable on her new node by everyone, in the room and in the call.
    carol.send_json(&json!({"type": "offer", "to": "alice", "room": "standup", "sdp": sdp_offer()})).await.unwrap();
    assert_eq!(alice.expect_type("offer").await.unwrap()["from"], "carol");
    alice.send_json(&json!({"type": "answer", "to": "carol", "room": "standup", "sdp": sdp_answer()})).await.unwrap();
    assert_eq!(carol.expect_type("answer").await.unwrap()["from"], "alice");
    alice.send_json(&json!({"type": "answer", "to": "bob", "callId": call_id, "sdp": sdp_answer()})).await.unwrap();
    assert_eq!(bob.expect_type("answer").await.unwrap()["from"], "alice");
    alice.hangup(&call_id).await.unwrap();
    let hangup = bob.expect_type("hangup").await.unwrap();
    assert_eq!(hangup, json!({"type": "hangup", "callId": call_id, "from": "alice", "reason": "hangup"}));
    alice.leave("standup").await.unwrap();
    for client in [&mut bob, &mut carol] {
        let left = client.expect_type("member-left").await.unwrap();
        assert_eq!(left, json!({"type": "member-left", "room": "standup", "name": "alice", "reason": "left"}));
    }
    // Her name is held by node B now.
    let mut thief = a.connect().await;
    match thief.login("alice").await {
        Err(ClientError::Server { code: ErrorCode::NameTaken, .. }) => {}
        other => panic!("alice's name was free after the move: {other:?}"),
    }
    // A token that no node knows fails as on a single node.
    let mut stranger = a.connect().await;
    let fake = format!("{}.nope", b.server().node_id().unwrap());
    match stranger.login_resume(&fake).await {
        Err(ClientError::Server { code: ErrorCode::ResumeFailed, .. }) => {}
        other => panic!("an unknown token got {other:?}"),
    }
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn turn_credentials_minted_by_one_node_are_valid_on_another() {
    let redis = Redis::start().await;
    let with_turn = |config: &mut switchboard_server::Config| {
        let mut turn = switchboard_server::config::TurnSettings {
            listen: Some("127.0.0.1:0".parse().unwrap()),
            ..Default::default()
        };
        turn.secrets = vec!["the-same-secret-on-every-node".into()];
        config.turn = Some(turn);
    };
    let a = node_with(&redis, with_turn).await;
    let b = node_with(&redis, with_turn).await;
    let (_alice, welcome) = a.login_welcome("alice").await;
    let turn = welcome.ice_servers.iter().find(|s| s.username.is_some()).expect("TURN credentials in welcome");
    let (username, password) = (turn.username.clone().unwrap(), turn.credential.clone().unwrap());
    let other = b.turn_addr().unwrap();
    let allocated = tokio::task::spawn_blocking(move || {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut client = switchboard_turn::client::TurnClient::new(socket, other, &username, &password);
        client.allocate().map(|allocation| allocation.relayed)
    })
    .await
    .unwrap();
    assert!(allocated.is_ok(), "node B refused node A's credentials: {allocated:?}");
    a.shutdown().await;
    b.shutdown().await;
}
