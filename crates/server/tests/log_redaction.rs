//! Logs never hold SDP bodies, ICE candidates, resume tokens, TURN credentials or secrets, or the admin token: every
//! log line of a busy scenario (logins, relay in both dialects, resume, TURN with good and bad credentials, the admin
//! API, shutdown) is captured at TRACE level and searched for each of them. Its own test binary, because the log
//! subscriber is global to the process.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use common::http::request;
use common::{TestServer, T};
use serde_json::json;
use switchboard_client::Client;
use switchboard_core::{Auth, Claims, TokenKeys};
use switchboard_server::config::Secret;
use switchboard_stun::{attr, long_term_key_md5, Class, Message, MessageWriter, Method, TransactionId};
use tokio::net::UdpSocket;

const ADMIN_TOKEN: &str = "admin-token-MARKER-0123456789";
const TURN_SECRET: &str = "turn-secret-MARKER-abcdef";
const STATIC_PASSWORD: &str = "static-password-MARKER";
const SDP_MARKER: &str = "SDP-BODY-MARKER";
const CANDIDATE_MARKER: &str = "CANDIDATE-MARKER";
const AUTH_SECRET: &str = "auth-secret-MARKER-0123456789abcdef0123456789";
const ROOM_PASSWORD: &str = "room-password-MARKER";

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn stun(socket: &UdpSocket, to: SocketAddr, build: impl FnOnce(&mut MessageWriter<'_>)) -> Vec<u8> {
    let mut packet = Vec::new();
    let mut writer = MessageWriter::new(&mut packet, Method::ALLOCATE, Class::Request, TransactionId(rand_tid()));
    writer.requested_transport(17);
    build(&mut writer);
    writer.finish().unwrap();
    socket.send_to(&packet, to).await.unwrap();
    let mut buffer = vec![0u8; 1500];
    let (len, _) = tokio::time::timeout(T, socket.recv_from(&mut buffer)).await.expect("no STUN answer").unwrap();
    buffer.truncate(len);
    buffer
}

fn rand_tid() -> [u8; 12] {
    static NEXT: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(1);
    [NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed); 12]
}

#[tokio::test]
async fn logs_hold_no_payloads_tokens_or_credentials() {
    let captured = Captured::default();
    let writer = captured.clone();
    // The test's own WebSocket client library logs frames at TRACE: only the server's side is under test.
    let filter = tracing_subscriber::EnvFilter::new("trace,tungstenite=off,tokio_tungstenite=off");
    tracing_subscriber::fmt().json().with_env_filter(filter).with_writer(move || writer.clone()).init();

    let server = TestServer::start_with(|c| {
        c.admin_token = Some(Secret(ADMIN_TOKEN.into()));
        let turn = c.turn.as_mut().unwrap();
        turn.secrets = vec![TURN_SECRET.into()];
        turn.users = vec![("tool".into(), STATIC_PASSWORD.into())];
    })
    .await;
    let (mut alice, welcome) = server.login_welcome("alice").await;
    let mut bob = server.login("bob").await;
    let mut tom = server.tutorial("tom").await;
    let sdp = json!({"type": "offer", "sdp": format!("v=0\r\ns={SDP_MARKER}\r\n")});
    let candidate = json!({"candidate": format!("candidate:{CANDIDATE_MARKER} 1 udp 1 192.0.2.1 5000 typ host")});
    alice.offer("bob", sdp.clone()).await.unwrap();
    bob.expect_type("offer").await.unwrap();
    alice.candidate("bob", candidate.clone()).await.unwrap();
    bob.expect_type("candidate").await.unwrap();
    tom.offer("tom", "alice", sdp.clone()).await.unwrap();
    alice.expect_type("offer").await.unwrap();
    // Mistakes carry payloads too: an offer to nobody, and a frame too deep to relay.
    alice.send_json(&json!({"type": "offer", "to": "nobody", "sdp": sdp})).await.unwrap();
    alice.expect_error("unknown-peer").await.unwrap();

    // Resume: both the old token and the new one.
    let old_token = welcome.resume_token.clone();
    drop(alice);
    common::let_the_server_notice_the_drop().await;
    let mut again = server.connect().await;
    let resumed = again.login_resume(&old_token).await.unwrap();
    let new_token = resumed.resume_token.clone();

    // TURN: a challenge, a wrong password, the user's own credential, and the static user.
    let ice = welcome.ice_servers.iter().find(|s| s.username.is_some()).unwrap();
    let (user, password) = (ice.username.clone().unwrap(), ice.credential.clone().unwrap());
    let turn = server.turn_addr().unwrap();
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let challenge = stun(&socket, turn, |_| {}).await;
    let challenge = Message::parse(&challenge).unwrap();
    let (realm, nonce) =
        (challenge.realm().unwrap().unwrap().to_owned(), challenge.nonce().unwrap().unwrap().to_owned());
    for (name, secret) in
        [(user.as_str(), "wrong-password-MARKER"), (user.as_str(), password.as_str()), ("tool", STATIC_PASSWORD)]
    {
        let key = long_term_key_md5(name, &realm, secret);
        stun(&socket, turn, |w| {
            w.text(attr::USERNAME, name).text(attr::REALM, &realm).text(attr::NONCE, &nonce).integrity(&key);
        })
        .await;
    }

    // The admin API, with and without the token.
    let auth = format!("Bearer {ADMIN_TOKEN}");
    assert_eq!(request(server.addr, "GET", "/admin/users", &[("Authorization", &auth)]).await.status, 200);
    assert_eq!(request(server.addr, "DELETE", "/admin/users/bob", &[("Authorization", &auth)]).await.status, 204);
    let guess = format!("Bearer {ADMIN_TOKEN}-guess");
    assert_eq!(request(server.addr, "GET", "/admin/users", &[("Authorization", &guess)]).await.status, 401);
    server.shutdown().await;
    drop(again);

    // Token mode: login tokens in the login message and in the upgrade URL, a forged one, and a room password.
    let keys = TokenKeys::new([AUTH_SECRET]).unwrap();
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 3600;
    let mint = |sub: &str| keys.mint(&Claims { sub: sub.into(), exp, rooms: None }).unwrap();
    let (dave_token, erin_token) = (mint("dave"), mint("erin"));
    let server = TestServer::start_with(|c| c.core.auth = Auth::Token(TokenKeys::new([AUTH_SECRET]).unwrap())).await;
    let mut dave = server.connect().await;
    dave.login_with_token(None, &dave_token).await.unwrap();
    let mut erin = Client::connect(&format!("{}?token={erin_token}", server.url())).await.unwrap();
    erin.login_with_token(None, &erin_token).await.unwrap();
    let forged = format!("{}x", &dave_token[..dave_token.len() - 1]);
    let mut mallory = server.connect().await;
    assert!(mallory.login_with_token(None, &forged).await.is_err());
    let joined = dave.request(json!({"type": "join", "room": "club", "password": ROOM_PASSWORD})).await.unwrap();
    assert_eq!(joined["type"], "joined");
    let wrong = erin.request(json!({"type": "join", "room": "club", "password": "wrong-room-password-MARKER"})).await;
    assert!(wrong.is_err());
    server.shutdown().await;

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("switchboard listening"), "the capture works: {logs}");
    assert!(logs.contains("admin API: user disconnected"), "{logs}");
    assert!(logs.contains("shutdown: goaway sent"), "{logs}");
    for (what, secret) in [
        ("an SDP body", SDP_MARKER),
        ("an ICE candidate", CANDIDATE_MARKER),
        ("a resume token", old_token.as_str()),
        ("a resume token", new_token.as_str()),
        ("a TURN credential", password.as_str()),
        ("a wrong TURN password", "wrong-password-MARKER"),
        ("a TURN REST secret", TURN_SECRET),
        ("a static TURN password", STATIC_PASSWORD),
        ("the admin token", ADMIN_TOKEN),
        ("a login token", dave_token.as_str()),
        ("a login token", erin_token.as_str()),
        ("a forged login token", forged.as_str()),
        ("a login token signing secret", AUTH_SECRET),
        ("a room password", ROOM_PASSWORD),
        ("a wrong room password", "wrong-room-password-MARKER"),
    ] {
        assert!(!logs.contains(secret), "the logs hold {what}:\n{logs}");
    }
}
