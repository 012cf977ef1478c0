//! The WebSocket transport: the endpoints (`/ws`, `/`, the web page), the close codes 1001, 1002, 1007, 1009, 4002
//! (slow consumer) and 4003 (heartbeat), and that one bad connection never affects the others.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{sdp_offer, TestServer, T};
use serde_json::json;
use switchboard_client::proto::close_code;
use switchboard_client::raw::{opcode, RawEnd, RawWebSocket};
use switchboard_client::{Client, ErrorCode, Incoming};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `alice` and `bob` can still talk to each other.
async fn others_unaffected(alice: &mut Client, bob: &mut Client) {
    bob.offer("alice", sdp_offer()).await.unwrap();
    assert_eq!(alice.expect_type("offer").await.unwrap()["from"], "bob");
    assert_eq!(bob.ping().await.unwrap()["type"], "pong");
}

/// Logs a raw client in and reads up to its `welcome`.
async fn raw_login(raw: &mut RawWebSocket, name: &str) {
    raw.send_json(&json!({"type": "login", "id": 1, "name": name})).await.unwrap();
    loop {
        let message = raw.read_json(T).await.unwrap();
        if message["type"] == "welcome" {
            return;
        }
        assert_ne!(message["type"], "error", "{message}");
    }
}

#[tokio::test]
async fn the_root_path_upgrades_like_ws() {
    let server = TestServer::start().await;
    let mut client = Client::connect(&server.root_url()).await.unwrap();
    let welcome = client.login("alice").await.unwrap();
    assert_eq!(welcome.name, "alice");
    assert_eq!(client.hello().unwrap()["type"], "hello");
    let mut bob = server.login("bob").await;
    others_unaffected(&mut client, &mut bob).await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_plain_http_get_of_the_root_serves_the_web_page() {
    let server = TestServer::start().await;
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let request = format!("GET / HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", server.addr);
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(T, stream.read_to_end(&mut response)).await.expect("the response did not end").unwrap();
    let response = String::from_utf8_lossy(&response);
    let head = response.split("\r\n\r\n").next().unwrap_or_default().to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("content-type: text/html"), "{head}");
    assert!(
        response.to_ascii_lowercase().contains("<html") || response.to_ascii_lowercase().contains("<!doctype html")
    );
    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_closes_connections_with_1001() {
    let server = TestServer::start().await;
    let mut alice = server.login("alice").await;
    let mut idle = server.connect().await; // not logged in
    let addr = server.addr;
    let ((), alice_end, idle_end) = tokio::join!(server.shutdown(), alice.expect_close(), idle.expect_close());
    assert_eq!(alice_end.unwrap().0, Some(close_code::GOING_AWAY));
    assert_eq!(idle_end.unwrap().0, Some(close_code::GOING_AWAY));
    // Nobody listens any more.
    let url = format!("ws://{addr}/ws");
    assert!(Client::connect(&url).await.is_err(), "the server still accepts connections after shutdown");
}

#[tokio::test]
async fn invalid_utf8_in_a_text_frame_closes_with_1007() {
    let server = TestServer::start().await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;

    let mut raw = RawWebSocket::connect(server.addr, "/ws").await.unwrap();
    raw_login(&mut raw, "mallory").await;
    raw.send_text(b"{\"type\":\"ping\",\"x\":\"\xff\xfe\"}").await.unwrap();
    assert_eq!(raw.expect_close(T).await.unwrap(), RawEnd::CloseFrame(Some(close_code::INVALID_PAYLOAD)));

    // Before login too.
    let mut raw = RawWebSocket::connect(server.addr, "/ws").await.unwrap();
    raw.send_text(&[0xc3, 0x28]).await.unwrap();
    assert_eq!(raw.expect_close(T).await.unwrap(), RawEnd::CloseFrame(Some(close_code::INVALID_PAYLOAD)));
    others_unaffected(&mut alice, &mut bob).await;
    server.shutdown().await;
}

#[tokio::test]
async fn protocol_violations_close_with_1002() {
    let server = TestServer::start().await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    let cases: [(&str, bool, u8, bool); 3] = [
        ("an unmasked frame", true, opcode::TEXT, false),
        ("a fragmented control frame", false, opcode::PING, true),
        ("a reserved opcode", true, 0x3, true),
    ];
    for (n, (what, fin, op, masked)) in cases.into_iter().enumerate() {
        let mut raw = RawWebSocket::connect(server.addr, "/ws").await.unwrap();
        raw_login(&mut raw, &format!("mallory{n}")).await;
        let payload = br#"{"type":"ping"}"#;
        if masked {
            raw.send_frame(fin, op, payload).await.unwrap();
        } else {
            raw.send_unmasked_frame(fin, op, payload).await.unwrap();
        }
        let end = raw.expect_close(T).await.unwrap();
        assert_eq!(end, RawEnd::CloseFrame(Some(close_code::PROTOCOL_ERROR)), "{what}");
        // mallory's session is not left hanging around forever: it resumes or expires like any dropped one.
    }
    others_unaffected(&mut alice, &mut bob).await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_frame_above_the_transport_limit_closes_with_1009() {
    let server = TestServer::start().await; // max_frame_bytes: 1 MiB
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    let mut raw = RawWebSocket::connect(server.addr, "/ws").await.unwrap();
    raw_login(&mut raw, "mallory").await;
    let text = format!(r#"{{"type":"ping","pad":"{}"}}"#, "x".repeat(1024 * 1024 + 100 * 1024));
    // The server may stop reading as soon as it has seen the frame's length; a failed write is fine.
    let _ = raw.send_text(text.as_bytes()).await;
    assert_eq!(raw.expect_close(T).await.unwrap(), RawEnd::CloseFrame(Some(close_code::MESSAGE_TOO_BIG)));
    others_unaffected(&mut alice, &mut bob).await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_frame_between_the_message_limit_and_the_transport_limit_only_gets_too_large() {
    let server = TestServer::start_with(|c| c.max_frame_bytes = 256 * 1024).await;
    let mut alice = server.login("alice").await;
    alice.send_text(format!(r#"{{"type":"ping","pad":"{}"}}"#, "x".repeat(200 * 1024))).await.unwrap();
    alice.expect_error("too-large").await.unwrap();
    assert_eq!(alice.ping().await.unwrap()["type"], "pong");
    alice.send_text(format!(r#"{{"type":"ping","pad":"{}"}}"#, "x".repeat(300 * 1024))).await.unwrap();
    let (code, _) = alice.expect_close().await.unwrap();
    assert_eq!(code, Some(close_code::MESSAGE_TOO_BIG));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_is_disconnected_and_the_flooder_and_others_are_unaffected() {
    let server = TestServer::start_with(|c| {
        c.outbound_queue_bytes = 128 * 1024;
        c.core.rate_per_second = 0;
        c.core.resume_grace = Duration::from_millis(300);
    })
    .await;
    let mut flooder = server.login("flooder").await;
    let mut bob = server.login("bob").await;
    let mut observer = server.login("observer").await;
    // A client that logs in and then never reads, with a tiny receive buffer.
    let mut slow = RawWebSocket::connect_with_recv_buffer(server.addr, "/ws", Some(4096)).await.unwrap();
    slow.send_json(&json!({"type": "login", "name": "slow"})).await.unwrap();
    common::presence_is(&mut observer, &["bob", "flooder", "observer", "slow"]).await;

    // Up to 20 MB of offers for the slow client: far more than the socket buffers and its 128 KiB queue hold. The
    // flooder stops once the server reports the slow client gone (its session then waits for a resume, with a queue
    // that fills at once), so that it does not earn strikes of its own for sending to a dead end.
    let sdp = json!({"type": "offer", "sdp": "v".repeat(40 * 1024)});
    let started = tokio::time::Instant::now();
    let mut gone = false;
    for _ in 0..500 {
        flooder.send_json(&json!({"type": "offer", "to": "slow", "sdp": sdp})).await.unwrap();
        while let Some(incoming) = flooder.try_recv_within(Duration::ZERO).await.unwrap() {
            assert!(!incoming.is_close(), "the flooder was closed: {}", incoming.describe());
            if matches!(incoming.error_code(), Some(ErrorCode::Undeliverable | ErrorCode::UnknownPeer)) {
                gone = true;
            }
        }
        if gone {
            break;
        }
    }
    let flood_time = started.elapsed();
    assert!(flood_time < Duration::from_secs(10), "the flooder was held up for {flood_time:?}");

    // The flooder and bob are unaffected, right away.
    assert_eq!(flooder.ping().await.unwrap()["type"], "pong");
    bob.offer("flooder", sdp_offer()).await.unwrap();
    assert_eq!(flooder.expect_type("offer").await.unwrap()["from"], "bob");
    assert_eq!(bob.ping().await.unwrap()["type"], "pong");

    // The slow client was disconnected (4002 if the close frame made it through its full queue).
    match slow.expect_close(T).await.unwrap() {
        RawEnd::CloseFrame(code) => assert_eq!(code, Some(close_code::SLOW_CONSUMER)),
        RawEnd::Disconnected(_) => {}
    }
    // Its session then ends like any dropped one.
    common::presence_is(&mut observer, &["bob", "flooder", "observer"]).await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_silent_connection_is_dropped_with_4003_but_a_reading_one_stays() {
    let server = TestServer::start_with(|c| c.core.heartbeat = Duration::from_millis(200)).await;
    let (mut alive, welcome) = server.login_welcome("alive").await;
    assert_eq!(welcome.limits.heartbeat_ms, 200);
    let mut silent = RawWebSocket::connect(server.addr, "/ws").await.unwrap();
    raw_login(&mut silent, "silent").await;
    let started = tokio::time::Instant::now();
    // expect_close reads without answering pings; meanwhile alive reads, and its WebSocket library answers them.
    let (silent_end, alive_end) = tokio::join!(
        async {
            let end = silent.expect_close(T).await.unwrap();
            (end, started.elapsed())
        },
        alive.expect_none_within(Duration::from_millis(1_000), "a heartbeat close", Incoming::is_close)
    );
    let (end, waited) = silent_end;
    assert_eq!(end, RawEnd::CloseFrame(Some(close_code::HEARTBEAT_TIMEOUT)));
    assert!(waited >= Duration::from_millis(300), "dropped after {waited:?}, before two intervals");
    assert!(waited < Duration::from_secs(2), "dropped only after {waited:?}");
    alive_end.unwrap();
    assert_eq!(alive.ping().await.unwrap()["type"], "pong");
    server.shutdown().await;
}

#[tokio::test]
async fn a_fragmented_text_message_is_reassembled() {
    let server = TestServer::start().await;
    let mut alice = server.login("alice").await;
    let mut raw = RawWebSocket::connect(server.addr, "/ws").await.unwrap();
    raw_login(&mut raw, "bob").await;
    // "é" split between two fragments: each fragment alone is not valid UTF-8, the message is.
    let text = r#"{"type":"offer","to":"alice","sdp":{"sdp":"caf\u00e9 é"}}"#.as_bytes();
    let split = text.len() - 4; // between the two bytes of the final "é" (followed by `"}}`)
    raw.send_frame(false, opcode::TEXT, &text[..split]).await.unwrap();
    raw.send_frame(true, opcode::CONTINUATION, &text[split..]).await.unwrap();
    let offer = alice.expect_type("offer").await.unwrap();
    assert_eq!(offer["sdp"]["sdp"], "café é");
    server.shutdown().await;
}
