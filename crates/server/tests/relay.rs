//! Relay of offer, answer, candidate and end-of-candidates: `from` stamping, byte-for-byte payloads, acks, errors,
//! caps, order and case-insensitive addressing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{candidate, keys, sdp_answer, sdp_offer, TestServer, QUIET, T};
use serde_json::{json, Value};
use switchboard_client::raw::{opcode, RawWebSocket};
use switchboard_client::ErrorCode;

#[tokio::test]
async fn all_four_relay_types_arrive_with_from_stamped() {
    let server = TestServer::start().await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;

    alice.send_json(&json!({"type": "offer", "to": "bob", "callId": "8f3a9c1e", "sdp": sdp_offer()})).await.unwrap();
    let offer = bob.expect_type("offer").await.unwrap();
    assert_eq!(offer, json!({"type": "offer", "from": "alice", "callId": "8f3a9c1e", "sdp": sdp_offer()}));

    bob.send_json(&json!({"type": "answer", "to": "alice", "callId": "8f3a9c1e", "sdp": sdp_answer()})).await.unwrap();
    let answer = alice.expect_type("answer").await.unwrap();
    assert_eq!(answer, json!({"type": "answer", "from": "bob", "callId": "8f3a9c1e", "sdp": sdp_answer()}));

    alice.send_json(&json!({"type": "candidate", "to": "bob", "candidate": candidate(1)})).await.unwrap();
    let cand = bob.expect_type("candidate").await.unwrap();
    assert_eq!(cand, json!({"type": "candidate", "from": "alice", "candidate": candidate(1)}));

    alice.send_json(&json!({"type": "end-of-candidates", "to": "bob"})).await.unwrap();
    let end = bob.expect_type("end-of-candidates").await.unwrap();
    assert_eq!(end, json!({"type": "end-of-candidates", "from": "alice"}));

    // The typed helpers of the client go the same way.
    bob.candidate("alice", candidate(2)).await.unwrap();
    bob.end_of_candidates("alice").await.unwrap();
    assert_eq!(alice.expect_type("candidate").await.unwrap()["candidate"], candidate(2));
    assert_eq!(keys(&alice.expect_type("end-of-candidates").await.unwrap()), ["from", "type"]);
    server.shutdown().await;
}

#[tokio::test]
async fn from_and_name_written_by_the_client_are_ignored() {
    let server = TestServer::start().await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    let _mallory = server.login("mallory").await;
    alice
        .send_json(&json!({"type": "offer", "to": "bob", "from": "mallory", "name": "mallory", "sdp": sdp_offer()}))
        .await
        .unwrap();
    let offer = bob.expect_type("offer").await.unwrap();
    assert_eq!(offer["from"], "alice", "{offer}");
    assert!(offer.get("name").is_none(), "the client's `name` is not passed on: {offer}");
    alice
        .send_json(&json!({"type": "candidate", "to": "bob", "from": "mallory", "candidate": candidate(3)}))
        .await
        .unwrap();
    assert_eq!(bob.expect_type("candidate").await.unwrap()["from"], "alice");
    server.shutdown().await;
}

#[tokio::test]
async fn payloads_are_relayed_byte_for_byte() {
    let server = TestServer::start().await;
    let mut alice = server.login("alice").await;
    let mut bob = RawWebSocket::connect(server.addr, "/ws").await.unwrap();
    bob.send_json(&json!({"type": "login", "id": 1, "name": "bob"})).await.unwrap();
    loop {
        if bob.read_json(T).await.unwrap()["type"] == "welcome" {
            break;
        }
    }
    // Odd spacing, escapes and number forms that any re-serialisation would change.
    let sdp = r#"{"type" : "offer",  "sdp":"v=0\r\n\u00e9\/x", "extra": [1.50, 1e3, -0, {"k" :null}]}"#;
    let frame = format!(r#"{{"type":"offer","to":"bob","sdp":{sdp}}}"#);
    alice.send_text(frame).await.unwrap();
    let text = loop {
        let frame = bob.read_frame_timeout(T).await.unwrap().expect("connection open");
        if frame.opcode == opcode::TEXT {
            let text = String::from_utf8(frame.payload).unwrap();
            if text.contains(r#""offer""#) && !text.contains("presence") {
                break text;
            }
        }
    };
    assert!(text.contains(sdp), "the sdp was not relayed verbatim:\n sent {sdp}\n got  {text}");
    let value: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(value["from"], "alice");
    server.shutdown().await;
}

#[tokio::test]
async fn payloads_that_strict_parsers_refuse_pass_verbatim() {
    let server = TestServer::start().await;
    let mut alice = server.login("alice").await;
    let mut bob = RawWebSocket::connect(server.addr, "/ws").await.unwrap();
    bob.send_json(&json!({"type": "login", "id": 1, "name": "bob"})).await.unwrap();
    while bob.read_json(T).await.unwrap()["type"] != "welcome" {}
    // A lone surrogate escape and a number beyond double precision: valid RFC 8259 JSON.
    let candidate = r#"{"candidate":"candidate:1 \ud800 x","sdpMid":"\udfff","n":123456789012345678901234567890e-400}"#;
    alice.send_text(format!(r#"{{"type":"candidate","id":5,"to":"bob","candidate":{candidate}}}"#)).await.unwrap();
    let ack = alice.expect_type("ack").await.unwrap();
    assert_eq!(ack["id"], 5);
    let text = loop {
        let frame = bob.read_frame_timeout(T).await.unwrap().expect("connection open");
        let text = String::from_utf8(frame.payload).unwrap();
        if text.contains(r#""type":"candidate""#) || text.contains(r#""candidate":{"#) {
            break text;
        }
    };
    assert!(text.contains(candidate), "not relayed verbatim:\n sent {candidate}\n got  {text}");
    server.shutdown().await;
}

#[tokio::test]
async fn relay_with_id_is_acked_with_the_same_id_and_without_id_is_not() {
    let server = TestServer::start().await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;

    let ack = alice.request(json!({"type": "offer", "id": 7, "to": "bob", "sdp": sdp_offer()})).await.unwrap();
    assert_eq!(ack, json!({"type": "ack", "id": 7}));
    let ack =
        alice.request(json!({"type": "candidate", "id": "c-1", "to": "bob", "candidate": candidate(1)})).await.unwrap();
    assert_eq!(ack, json!({"type": "ack", "id": "c-1"}));
    let ack = alice.request(json!({"type": "end-of-candidates", "id": 8, "to": "bob"})).await.unwrap();
    assert_eq!(ack, json!({"type": "ack", "id": 8}));
    for kind in ["offer", "candidate", "end-of-candidates"] {
        let relayed = bob.expect_type(kind).await.unwrap();
        assert!(relayed.get("id").is_none(), "the sender's id is not relayed: {relayed}");
    }

    alice.send_json(&json!({"type": "answer", "to": "bob", "sdp": sdp_answer()})).await.unwrap();
    bob.expect_type("answer").await.unwrap();
    alice.expect_none_within(QUIET, "an ack for a relay without id", |i| i.kind() == Some("ack")).await.unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn unknown_offline_and_self_targets() {
    let server = TestServer::start().await;
    let mut alice = server.login("alice").await;
    let error = alice.request(json!({"type": "offer", "id": 9, "to": "zed", "sdp": sdp_offer()})).await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::UnknownPeer), "{error}");

    let bob = server.login("bob").await;
    let mut bob = bob;
    bob.logout().await.unwrap();
    let error = alice.request(json!({"type": "candidate", "to": "bob", "candidate": candidate(1)})).await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::UnknownPeer), "a logged-out user is offline: {error}");

    for to in ["alice", "ALICE"] {
        let error = alice.request(json!({"type": "offer", "to": to, "sdp": sdp_offer()})).await.unwrap_err();
        assert_eq!(error.code(), Some(ErrorCode::BadRequest), "relay to yourself ({to}): {error}");
    }
    // Errors without id come without id.
    alice.send_json(&json!({"type": "offer", "to": "zed", "sdp": sdp_offer()})).await.unwrap();
    let error = alice.expect_error("unknown-peer").await.unwrap();
    assert!(error.get("id").is_none(), "{error}");
    assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
    server.shutdown().await;
}

#[tokio::test]
async fn missing_fields_are_bad_requests() {
    let server = TestServer::start().await;
    let mut alice = server.login("alice").await;
    let _bob = server.login("bob").await;
    let requests = [
        json!({"type": "offer", "id": 1, "to": "bob"}),
        json!({"type": "answer", "id": 2, "to": "bob"}),
        json!({"type": "candidate", "id": 3, "to": "bob"}),
        json!({"type": "offer", "id": 4, "sdp": sdp_offer()}),
        json!({"type": "end-of-candidates", "id": 5}),
    ];
    for request in requests {
        let error = alice.request(request.clone()).await.unwrap_err();
        assert_eq!(error.code(), Some(ErrorCode::BadRequest), "{request}: {error}");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn addressing_is_case_insensitive_and_from_is_the_name_as_typed() {
    let server = TestServer::start().await;
    let mut alice = server.login("Alice").await;
    let mut bob = server.login("bob").await;
    bob.offer("ALICE", sdp_offer()).await.unwrap();
    assert_eq!(alice.expect_type("offer").await.unwrap()["from"], "bob");
    alice.answer("BoB", sdp_answer()).await.unwrap();
    assert_eq!(bob.expect_type("answer").await.unwrap()["from"], "Alice");
    server.shutdown().await;
}

#[tokio::test]
async fn order_between_one_sender_and_one_target_is_preserved() {
    let server = TestServer::start().await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    for n in 0..150 {
        alice.candidate("bob", candidate(n)).await.unwrap();
    }
    for n in 0..150 {
        let cand = bob.expect_type("candidate").await.unwrap();
        assert_eq!(cand["candidate"], candidate(n), "candidate {n} out of order");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn payload_caps_give_too_large_and_the_connection_stays() {
    let server = TestServer::start().await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    // An sdp of 50 KiB in a frame below the 64 KiB message limit.
    let big_sdp = json!({"type": "offer", "sdp": "a".repeat(50 * 1024)});
    let error = alice.request(json!({"type": "offer", "id": 1, "to": "bob", "sdp": big_sdp})).await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::TooLarge), "{error}");
    let big_candidate = json!({"candidate": "c".repeat(5 * 1024), "sdpMid": "0", "sdpMLineIndex": 0});
    let error = alice
        .request(json!({"type": "candidate", "id": 2, "to": "bob", "candidate": big_candidate}))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::TooLarge), "{error}");
    // Just under the caps: relayed.
    let ok_sdp = json!({"type": "offer", "sdp": "a".repeat(40 * 1024)});
    alice.request(json!({"type": "offer", "id": 3, "to": "bob", "sdp": ok_sdp.clone()})).await.unwrap();
    let offer = bob.expect_type("offer").await.unwrap();
    assert_eq!(offer["sdp"], ok_sdp, "bob receives only the offer that fits");
    server.shutdown().await;
}

#[tokio::test]
async fn payloads_nested_deeper_than_16_are_bad_json() {
    let server = TestServer::start().await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    let nested = |depth: usize| format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
    let frame = |id: usize, depth: usize| format!(r#"{{"type":"offer","id":{id},"to":"bob","sdp":{}}}"#, nested(depth));

    alice.send_text(frame(17, 17)).await.unwrap();
    let error = alice.expect_error("bad-json").await.unwrap();
    assert_eq!(error["id"], 17);
    alice.send_text(frame(1000, 1000)).await.unwrap();
    let error = alice.expect_error("bad-json").await.unwrap();
    assert_eq!(error["id"], 1000);

    alice.send_text(frame(16, 16)).await.unwrap();
    let ack = alice.expect_type("ack").await.unwrap();
    assert_eq!(ack["id"], 16);
    let offer = bob.expect_type("offer").await.unwrap();
    assert_eq!(offer["sdp"], serde_json::from_str::<Value>(&nested(16)).unwrap());
    server.shutdown().await;
}
