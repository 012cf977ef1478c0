//! Error handling: bad-json, unknown-type, bad-request, request id echo, binary-frame, too-large, deep nesting,
//! rate-limited, and the 1008 close of a client that keeps misbehaving, while other users stay unaffected.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{sdp_offer, TestServer, QUIET, T};
use serde_json::json;
use switchboard_client::proto::close_code;
use switchboard_client::{Client, ErrorCode, Incoming};

/// The connection still works: ping gets pong.
async fn still_usable(client: &mut Client) {
    let pong = client.ping().await.unwrap_or_else(|e| panic!("the connection should still work: {e}"));
    assert_eq!(pong["type"], "pong");
}

#[tokio::test]
async fn bad_json_keeps_the_connection_open() {
    let server = TestServer::start().await;
    let mut alice = server.login("alice").await;
    for frame in [
        r#"{"type":"login","#,
        "not json at all",
        "[1,2]",
        "42",
        r#""a string""#,
        "null",
        r#"{"type":5}"#,
        r#"{"type":"call","to":5}"#,
        r#"{"type":"login","name":["alice"]}"#,
        r#"{"type":"login","name":"x","protocol":"one"}"#,
        "",
    ] {
        alice.send_text(frame).await.unwrap();
        let error = alice.expect_type("error").await.unwrap();
        assert_eq!(error["code"], "bad-json", "{frame:?} gave {error}");
        assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    still_usable(&mut alice).await;
    server.shutdown().await;
}

#[tokio::test]
async fn unknown_type_echoes_the_id() {
    let server = TestServer::start().await;
    let mut alice = server.login("alice").await;
    alice.send_json(&json!({"type": "dance", "id": "r1"})).await.unwrap();
    let error = alice.expect_error("unknown-type").await.unwrap();
    assert_eq!(error["id"], "r1");
    // Tutorial type names are unknown to a v1 connection.
    alice.send_json(&json!({"type": "Login", "id": 2, "UserName": "x"})).await.unwrap();
    let error = alice.expect_type("error").await.unwrap();
    assert!(
        error["code"] == "unknown-type" || error["code"] == "already-logged-in",
        "a tutorial Login on a v1 connection: {error}"
    );
    alice.send_json(&json!({"type": "ICE", "TargetUserName": "x", "candidate": {}})).await.unwrap();
    alice.expect_error("unknown-type").await.unwrap();
    still_usable(&mut alice).await;
    server.shutdown().await;
}

#[tokio::test]
async fn bad_request_for_missing_type_and_malformed_ids() {
    let server = TestServer::start().await;
    let mut alice = server.login("alice").await;
    alice.send_json(&json!({"id": 1})).await.unwrap();
    let error = alice.expect_error("bad-request").await.unwrap();
    assert_eq!(error["id"], 1, "missing type: {error}");

    for id in [json!({"a": 1}), json!([1]), json!(true), json!("x".repeat(65))] {
        alice.send_json(&json!({"type": "ping", "id": id})).await.unwrap();
        let error = alice.expect_type("error").await.unwrap();
        assert_eq!(error["code"], "bad-request", "id {id}: {error}");
        assert!(error.get("id").is_none() || error["id"].is_null(), "an invalid id is not echoed: {error}");
    }
    still_usable(&mut alice).await;
    server.shutdown().await;
}

#[tokio::test]
async fn request_ids_are_echoed_as_numbers_and_strings() {
    let server = TestServer::start().await;
    let mut alice = server.login("alice").await;
    let max_string = "s".repeat(62); // 64 bytes with its quotes
    for id in
        [json!(9), json!(0), json!(-1), json!(12345678901u64), json!(2.5), json!("abc"), json!(""), json!(max_string)]
    {
        let pong = common::reply_to(&mut alice, json!({"type": "ping", "id": id})).await;
        assert_eq!(pong, json!({"type": "pong", "id": id}));
        let error = common::reply_to(&mut alice, json!({"type": "call", "id": id, "to": "zed"})).await;
        assert_eq!(error["code"], "unknown-peer");
        assert_eq!(error["id"], id);
    }
    alice.send_json(&json!({"type": "ping"})).await.unwrap();
    assert_eq!(alice.expect_type("pong").await.unwrap(), json!({"type": "pong"}));
    server.shutdown().await;
}

#[tokio::test]
async fn binary_frames_get_binary_frame_and_the_connection_stays() {
    let server = TestServer::start().await;
    let mut client = server.connect().await;
    // Before login too.
    client.send_binary(b"{\"type\":\"ping\"}".to_vec()).await.unwrap();
    client.expect_error("binary-frame").await.unwrap();
    client.login("alice").await.unwrap();
    client.send_binary(vec![0, 1, 2, 255]).await.unwrap();
    client.expect_error("binary-frame").await.unwrap();
    still_usable(&mut client).await;
    server.shutdown().await;
}

#[tokio::test]
async fn frames_over_max_message_bytes_get_too_large_and_the_connection_stays() {
    let server = TestServer::start().await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    // 100 KiB: above the 64 KiB message limit, below the 1 MiB transport limit.
    let frame = json!({"type": "offer", "id": 1, "to": "bob", "sdp": {"type": "offer", "sdp": "a".repeat(100 * 1024)}});
    alice.send_json(&frame).await.unwrap();
    let error = alice.expect_error("too-large").await.unwrap();
    assert!(error.get("id").is_none() || error["id"] == 1, "{error}");
    // Not even a valid JSON prefix is needed.
    alice.send_text("x".repeat(70_000)).await.unwrap();
    alice.expect_error("too-large").await.unwrap();
    still_usable(&mut alice).await;
    bob.expect_none_within(QUIET, "the oversized offer", |i| i.kind() == Some("offer")).await.unwrap();
    // A frame just below the limit passes.
    let ok = json!({"type": "offer", "id": 2, "to": "bob", "sdp": {"type": "offer", "sdp": "a".repeat(40 * 1024)}});
    assert_eq!(alice.request(ok).await.unwrap()["type"], "ack");
    bob.expect_type("offer").await.unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn deeply_nested_json_is_bad_json_and_harms_nobody() {
    let server = TestServer::start().await;
    let mut attacker = server.login("attacker").await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    let depth = 30_000; // 60 KB, below the message limit
    for frame in [
        format!(r#"{{"type":"login","name":{}{}}}"#, "[".repeat(depth), "]".repeat(depth)),
        format!(r#"{{"type":"offer","to":"alice","sdp":{}{}}}"#, "[".repeat(depth), "]".repeat(depth)),
        format!(r#"{{"type":"offer","to":"alice","sdp":{}1{}}}"#, r#"{"a":"#.repeat(depth / 4), "}".repeat(depth / 4)),
        format!("{}{}", "[".repeat(depth), "]".repeat(depth)),
        "{".repeat(depth),
    ] {
        attacker.send_text(frame).await.unwrap();
        let error = attacker.expect_type("error").await.unwrap();
        assert_eq!(error["code"], "bad-json", "{error}");
    }
    still_usable(&mut attacker).await;
    // Other users never noticed.
    bob.offer("alice", sdp_offer()).await.unwrap();
    assert_eq!(alice.expect_type("offer").await.unwrap()["from"], "bob");
    alice.expect_none_within(QUIET, "anything from the attacker", |i| i.kind() == Some("offer")).await.unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn a_client_that_keeps_sending_garbage_is_closed_with_1008_and_others_are_fine() {
    let server = TestServer::start().await;
    let mut garbage = server.login("garbage").await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    let mut errors = 0;
    let mut close = None;
    for _ in 0..60 {
        if garbage.send_text("{").await.is_err() {
            break;
        }
    }
    while close.is_none() {
        let incoming = garbage.recv_timeout(T).await.expect("the misbehaving client must be closed");
        match incoming {
            Incoming::Close { code, .. } => close = Some(code),
            other if other.error_code() == Some(ErrorCode::BadJson) => errors += 1,
            _ => {}
        }
    }
    assert_eq!(close, Some(Some(close_code::POLICY_VIOLATION)), "after {errors} bad-json errors");
    assert!(errors >= 20, "strikeBurst (30) errors are tolerated before the close, got {errors}");
    assert!(errors <= 40, "the close comes right after strikeBurst errors, got {errors}");

    // The session waits for a resume like any dropped one.
    let token = garbage.resume_token().unwrap().to_owned();
    let mut back = server.connect().await;
    let welcome = back.login_resume(&token).await.unwrap();
    assert!(welcome.resumed);

    still_usable(&mut alice).await;
    bob.offer("alice", sdp_offer()).await.unwrap();
    assert_eq!(alice.expect_type("offer").await.unwrap()["from"], "bob");
    server.shutdown().await;
}

#[tokio::test]
async fn errors_with_pauses_do_not_close_the_connection() {
    let server = TestServer::start_with(|c| c.core.strike_burst = 5).await;
    let mut alice = server.login("alice").await;
    // Four errors at once, a pause that refills two strikes, two more: six errors in all, never more than five
    // without pause.
    for _ in 0..4 {
        alice.send_text("{").await.unwrap();
        alice.expect_error("bad-json").await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    for _ in 0..2 {
        alice.send_text("{").await.unwrap();
        alice.expect_error("bad-json").await.unwrap();
    }
    still_usable(&mut alice).await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_flood_above_the_rate_limit_is_rate_limited_and_the_rest_is_served() {
    let server = TestServer::start_with(|c| {
        c.core.rate_per_second = 5;
        c.core.rate_burst = 5;
    })
    .await;
    let (mut alice, welcome) = server.login_welcome("alice").await;
    assert_eq!((welcome.limits.rate_per_second, welcome.limits.rate_burst), (5, 5));
    let mut bob = server.login("bob").await;
    for n in 0..20 {
        alice.send_json(&json!({"type": "ping", "id": n})).await.unwrap();
    }
    let mut pongs = 0;
    let mut limited = 0;
    while pongs + limited < 20 {
        let incoming = alice.recv_timeout(T).await.unwrap();
        assert!(!incoming.is_close(), "rate limiting drops messages, it does not close: {}", incoming.describe());
        match incoming.kind() {
            Some("pong") => pongs += 1,
            Some("error") => {
                assert_eq!(incoming.error_code(), Some(ErrorCode::RateLimited), "{}", incoming.describe());
                limited += 1;
            }
            _ => {}
        }
    }
    assert!((4..=8).contains(&pongs), "about rateBurst (5) pings pass: {pongs} pongs, {limited} rate-limited");
    assert!(limited >= 12, "{limited}");
    // Other users are not limited by alice's flood.
    for _ in 0..3 {
        still_usable(&mut bob).await;
    }
    // After a second, alice is served again.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    still_usable(&mut alice).await;
    server.shutdown().await;
}
