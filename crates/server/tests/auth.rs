//! Authentication over real sockets: login tokens (in the login message and in the upgrade URL, both dialects;
//! expired, wrong, missing), tokens printed by `switchboard token`, the `Origin` allow list, and room passwords.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::{TestServer, T};
use serde_json::json;
use switchboard_client::{Client, ErrorCode, TutorialClient};
use switchboard_core::{Auth, Claims, TokenKeys};
use switchboard_proto::Secret;

const SECRET: &str = "integration-test-secret-32-bytes-or-more";
const OLD_SECRET: &str = "the-secret-before-the-last-rotation!";

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn token_at(secret: &str, sub: &str, exp: u64, rooms: Option<&[&str]>) -> String {
    let claims = Claims { sub: sub.into(), exp, rooms: rooms.map(|r| r.iter().map(|s| s.to_string()).collect()) };
    TokenKeys::new([secret]).unwrap().mint(&claims).unwrap()
}

fn token(sub: &str) -> String {
    token_at(SECRET, sub, unix_now() + 3600, None)
}

async fn token_server() -> TestServer {
    TestServer::start_with(|config| {
        config.core.auth = Auth::Token(TokenKeys::new([SECRET, OLD_SECRET]).unwrap());
    })
    .await
}

fn with_token(url: &str, token: &str) -> String {
    format!("{url}?token={token}")
}

#[tokio::test]
async fn token_in_the_login_message() {
    let server = token_server().await;
    let mut alice = server.connect().await;
    let welcome = alice.login_with_token(None, &token("Alice")).await.unwrap();
    assert_eq!(welcome.name, "Alice");

    let mut bob = server.connect().await;
    let error = bob.login_with_token(Some("mallory"), &token("bob")).await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::TokenNameMismatch), "{error}");
    let welcome = bob.login_with_token(Some("BOB"), &token("bob")).await.unwrap();
    assert_eq!(welcome.name, "bob");

    // A token of the previous secret still works while that secret is configured.
    let mut carol = server.connect().await;
    carol.login_with_token(None, &token_at(OLD_SECRET, "carol", unix_now() + 60, None)).await.unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn missing_wrong_and_expired_tokens_are_refused_with_their_codes() {
    let server = token_server().await;
    let mut client = server.connect().await;
    let error = client.login("alice").await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::AuthRequired), "{error}");

    let wrong = token_at("a-secret-that-this-server-never-had", "alice", unix_now() + 60, None);
    let error = client.login_with_token(None, &wrong).await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::InvalidToken), "{error}");
    assert!(!error.to_string().contains(&wrong));

    // Change the signature's first character: all six of its bits count (the last one's low bits may not).
    let genuine = token("alice");
    let signature_start = genuine.rfind('.').unwrap() + 1;
    let replacement = if genuine[signature_start..].starts_with('A') { "B" } else { "A" };
    let mut tampered = genuine.clone();
    tampered.replace_range(signature_start..signature_start + 1, replacement);
    let error = client.login_with_token(None, &tampered).await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::InvalidToken), "{error}");

    let expired = token_at(SECRET, "alice", unix_now() - 10, None);
    let error = client.login_with_token(None, &expired).await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::TokenExpired), "{error}");

    // Still the same connection, still open: a good token logs in.
    client.login_with_token(None, &token("alice")).await.unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn token_in_the_upgrade_url_for_both_dialects() {
    let server = token_server().await;
    // v1: a login without name or token takes both from the URL's token.
    let mut alice = Client::connect(&with_token(&server.url(), &token("alice"))).await.unwrap();
    let welcome = alice.login_with(json!({"type": "login", "protocol": 1})).await.unwrap();
    assert_eq!(welcome.name, "alice");

    // The tutorial dialect has no token field: its pages put the token in the URL they connect to.
    let mut tom = TutorialClient::connect(&with_token(&server.root_url(), &token("tom"))).await.unwrap();
    let users = tom.login("tom").await.unwrap();
    assert!(users.contains(&"tom".to_owned()), "{users:?}");

    let mut tina = TutorialClient::connect(&server.root_url()).await.unwrap();
    let error = tina.login("tina").await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::AuthRequired), "{error}");
    let mut tina = TutorialClient::connect(&with_token(&server.root_url(), &token("tom"))).await.unwrap();
    let error = tina.login("tina").await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::TokenNameMismatch), "{error}");
    let expired = token_at(SECRET, "tina", unix_now() - 1, None);
    let mut tina = TutorialClient::connect(&with_token(&server.url(), &expired)).await.unwrap();
    let error = tina.login("tina").await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::TokenExpired), "{error}");

    // The dialects still talk: alice calls tom.
    alice.call("tom").await.unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn open_servers_ignore_tokens() {
    let server = TestServer::start().await;
    let mut alice = Client::connect(&with_token(&server.url(), "not-a-token")).await.unwrap();
    let welcome = alice.login_with_token(Some("alice"), "also-not-a-token").await.unwrap();
    assert_eq!(welcome.name, "alice");
    let error = alice.login_with(json!({"type": "login", "id": 9})).await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::AlreadyLoggedIn), "{error}");
    let mut bob = server.connect().await;
    let error = bob.login_with(json!({"type": "login", "token": "x"})).await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::BadRequest), "a name is still needed: {error}");
    server.shutdown().await;
}

/// Runs the built `switchboard` binary with `args` and a clean environment; returns its stdout.
async fn switchboard(args: &[&str]) -> (bool, String, String) {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchboard"));
    command.args(args).env_clear().kill_on_drop(true);
    let output = tokio::time::timeout(T, command.output()).await.expect("switchboard token hung").unwrap();
    (output.status.success(), String::from_utf8(output.stdout).unwrap(), String::from_utf8(output.stderr).unwrap())
}

#[tokio::test]
async fn tokens_printed_by_switchboard_token_are_accepted() {
    let server = TestServer::start_with(|config| {
        config.core.auth = Auth::Token(TokenKeys::new([SECRET]).unwrap());
        config.core.room_passwords = vec![("standup".into(), Secret("pw".into()))];
    })
    .await;
    let (ok, stdout, stderr) = switchboard(&["token", "--name", "alice", "--ttl", "1h", "--auth-secret", SECRET]).await;
    assert!(ok, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "only the token on stdout: {stdout:?}");
    let mut alice = server.connect().await;
    assert_eq!(alice.login_with_token(None, lines[0]).await.unwrap().name, "alice");

    // The secret from the configuration file, as the server reads it; rooms in the token.
    let file = std::env::temp_dir().join(format!("switchboard-auth-test-{}.toml", std::process::id()));
    std::fs::write(&file, format!("auth = \"token\"\nauth-secrets = [\"{SECRET}\"]\n")).unwrap();
    let (ok, stdout, stderr) = switchboard(&[
        "token",
        "--config",
        file.to_str().unwrap(),
        "--name",
        "bob",
        "--room",
        "standup",
        "--room",
        "retro",
    ])
    .await;
    std::fs::remove_file(&file).unwrap();
    assert!(ok, "{stderr}");
    let mut bob = Client::connect(&with_token(&server.url(), stdout.trim())).await.unwrap();
    bob.login_with(json!({"type": "login"})).await.unwrap();
    assert_eq!(bob.join("standup").await.unwrap(), ["bob"], "the token skips the room's password");
    let error = bob.join("lunch").await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::RoomForbidden), "{error}");

    // No secret anywhere: an error on stderr, nothing on stdout.
    let (ok, stdout, stderr) = switchboard(&["token", "--name", "carol"]).await;
    assert!(!ok && stdout.is_empty() && stderr.contains("secret"), "{stdout:?} {stderr:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn the_origin_allow_list_refuses_other_and_missing_origins_with_403() {
    let server = TestServer::start_with(|config| {
        config.allowed_origins = vec!["https://app.example.org".into(), "http://localhost:8080".into()];
    })
    .await;
    let mut alice =
        Client::connect_with_headers(&server.url(), &[("Origin", "https://app.example.org")]).await.unwrap();
    alice.login("alice").await.unwrap();
    let mut bob =
        Client::connect_with_headers(&server.root_url(), &[("Origin", "http://localhost:8080")]).await.unwrap();
    bob.login("bob").await.unwrap();

    for url in [server.url(), server.root_url()] {
        let error = Client::connect_with_headers(&url, &[("Origin", "https://evil.example.net")]).await.unwrap_err();
        assert_eq!(error.http_status(), Some(403), "{url}: {error}");
        let error = Client::connect_with_headers(&url, &[("Origin", "http://app.example.org")]).await.unwrap_err();
        assert_eq!(error.http_status(), Some(403), "{url}: the scheme counts: {error}");
        let error = Client::connect(&url).await.unwrap_err();
        assert_eq!(error.http_status(), Some(403), "{url}: no Origin: {error}");
    }
    // The page itself is served whatever the origin: the list guards WebSocket upgrades only.
    let page = http_get(server.addr, "/").await;
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    server.shutdown().await;

    // Without a list, any origin (and none) may connect.
    let server = TestServer::start().await;
    let mut any = Client::connect_with_headers(&server.url(), &[("Origin", "https://evil.example.net")]).await.unwrap();
    any.login("alice").await.unwrap();
    server.shutdown().await;
}

/// A plain HTTP/1.1 GET; returns the whole response.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nOrigin: https://evil.example.net\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.unwrap();
        String::from_utf8_lossy(&response).into_owned()
    };
    tokio::time::timeout(T, exchange).await.expect("HTTP GET hung")
}

#[tokio::test]
async fn room_passwords_set_by_the_first_joiner_and_from_the_configuration() {
    let server = TestServer::start_with(|config| {
        config.core.room_passwords = vec![("Board Room".into(), Secret("configured".into()))];
    })
    .await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;

    let joined = alice.request(json!({"type": "join", "id": 1, "room": "secret club", "password": "sesame"})).await;
    assert_eq!(
        joined.unwrap(),
        json!({"type": "joined", "id": 1, "room": "secret club", "members": ["alice"], "protected": true})
    );
    let error = bob.join("Secret Club").await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::RoomPasswordRequired), "{error}");
    let error = bob.request(json!({"type": "join", "room": "secret club", "password": "sesam"})).await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::WrongRoomPassword), "{error}");
    let joined = bob.request(json!({"type": "join", "room": "secret club", "password": "sesame"})).await.unwrap();
    assert_eq!(joined["members"], json!(["alice", "bob"]));
    let event = alice.expect_type("member-joined").await.unwrap();
    assert_eq!(event["name"], "bob");

    let error = alice.join("board room").await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::RoomPasswordRequired), "{error}");
    let joined = alice.request(json!({"type": "join", "room": "board room", "password": "configured"})).await;
    assert_eq!(joined.unwrap()["protected"], true);

    // Rooms without a password are as before: no `protected` in `joined`.
    let joined = bob.request(json!({"type": "join", "id": 5, "room": "lobby"})).await.unwrap();
    assert_eq!(joined, json!({"type": "joined", "id": 5, "room": "lobby", "members": ["bob"]}));
    server.shutdown().await;
}

#[tokio::test]
async fn room_claims_of_tokens_over_sockets() {
    let server = TestServer::start_with(|config| {
        config.core.auth = Auth::Token(TokenKeys::new([SECRET]).unwrap());
    })
    .await;
    let mut alice = server.connect().await;
    alice.login_with_token(None, &token("alice")).await.unwrap();
    alice.request(json!({"type": "join", "room": "standup", "password": "pw"})).await.unwrap();

    let mut bob = server.connect().await;
    let bob_token = token_at(SECRET, "bob", unix_now() + 60, Some(&["standup"]));
    bob.login_with_token(None, &bob_token).await.unwrap();
    assert_eq!(bob.join("standup").await.unwrap(), ["alice", "bob"], "listed: no password needed");
    let error = bob.join("retro").await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::RoomForbidden), "{error}");
    server.shutdown().await;
}
