//! Resume: within the grace period (queued messages in order, rooms and call restored, token rotation, the old
//! connection replaced) and after it (`resume-failed`, `undeliverable`, hangup and member-left with reason
//! `disconnected`, presence `left`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{candidate, expect_all, let_the_server_notice_the_drop, sdp_offer, strings, TestServer, QUIET};
use serde_json::{json, Value};
use switchboard_client::proto::close_code;
use switchboard_client::{CallState, ErrorCode, Incoming};

const LONG_GRACE: Duration = Duration::from_secs(3);

#[tokio::test]
async fn resume_within_grace_restores_rooms_call_and_queued_messages_in_order() {
    let server = TestServer::start_with(|c| c.core.resume_grace = LONG_GRACE).await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    alice.join("standup").await.unwrap();
    bob.join("standup").await.unwrap();
    let call_id = alice.call("bob").await.unwrap();
    bob.expect_type("ring").await.unwrap();
    bob.accept(&call_id).await.unwrap();
    alice.expect_type("accepted").await.unwrap();
    common::presence_is(&mut bob, &["alice", "bob"]).await;

    let old_token = alice.resume_token().unwrap().to_owned();
    drop(alice);
    let_the_server_notice_the_drop().await;

    // Messages to the absent alice are queued; with an id they are acked.
    let sent = [
        json!({"type": "offer", "id": 1, "to": "alice", "callId": call_id, "sdp": sdp_offer()}),
        json!({"type": "candidate", "id": 2, "to": "alice", "candidate": candidate(1)}),
        json!({"type": "candidate", "to": "alice", "candidate": candidate(2)}),
        json!({"type": "end-of-candidates", "id": 3, "to": "alice", "room": "standup"}),
    ];
    for message in &sent {
        if message.get("id").is_some() {
            let ack = bob.request(message.clone()).await.unwrap();
            assert_eq!(ack["type"], "ack", "{ack}");
        } else {
            bob.send_json(message).await.unwrap();
        }
    }

    let mut alice = server.connect().await;
    let welcome = alice.login_resume(&old_token).await.unwrap();
    assert!(welcome.resumed);
    assert_eq!(welcome.name, "alice");
    assert_eq!(welcome.raw["resumed"], true);
    assert_ne!(welcome.resume_token, old_token, "resume hands out a new token");
    assert_eq!(common::names(&welcome.users), ["alice", "bob"].map(String::from).into());
    assert_eq!(welcome.raw["rooms"], json!([{"room": "standup", "members": ["alice", "bob"]}]));
    let call = welcome.call.clone().expect("the call is restored");
    assert_eq!((call.call_id.as_ref(), call.peer.as_ref(), call.caller), (call_id.as_str(), "bob", true));
    assert_eq!(call.state, CallState::Active);
    assert_eq!(welcome.raw["call"], json!({"callId": call_id, "peer": "bob", "caller": true, "state": "active"}));

    // The queued messages follow, in order.
    let mut relayed = Vec::new();
    while relayed.len() < 4 {
        let incoming = alice.recv_timeout(common::T).await.unwrap();
        if matches!(incoming.kind(), Some("offer" | "candidate" | "end-of-candidates")) {
            relayed.push(incoming.raw().cloned().unwrap());
        }
        assert!(!incoming.is_close());
    }
    assert_eq!(relayed[0], json!({"type": "offer", "from": "bob", "callId": call_id, "sdp": sdp_offer()}));
    assert_eq!(relayed[1], json!({"type": "candidate", "from": "bob", "candidate": candidate(1)}));
    assert_eq!(relayed[2], json!({"type": "candidate", "from": "bob", "candidate": candidate(2)}));
    assert_eq!(relayed[3], json!({"type": "end-of-candidates", "from": "bob", "room": "standup"}));

    // The old token stopped working.
    let mut thief = server.connect().await;
    let error = thief.login_resume(&old_token).await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::ResumeFailed), "{error}");

    // bob never saw alice go: no left, no member-left, no hangup; the call goes on.
    bob.expect_none_within(QUIET, "alice leaving", |i| {
        matches!(i.kind(), Some("member-left" | "hangup"))
            || (i.kind() == Some("presence") && strings(i.raw().unwrap(), "left").contains(&"alice".to_string()))
    })
    .await
    .unwrap();
    bob.candidate("alice", candidate(3)).await.unwrap();
    assert_eq!(alice.expect_type("candidate").await.unwrap()["candidate"], candidate(3));
    alice.hangup(&call_id).await.unwrap();
    let hangup = bob.expect_type("hangup").await.unwrap();
    assert_eq!(hangup, json!({"type": "hangup", "callId": call_id, "from": "alice", "reason": "hangup"}));
    server.shutdown().await;
}

#[tokio::test]
async fn a_ringing_call_is_restored_as_ringing() {
    let server = TestServer::start_with(|c| c.core.resume_grace = LONG_GRACE).await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    let call_id = bob.call("alice").await.unwrap();
    alice.expect_type("ring").await.unwrap();
    let token = alice.resume_token().unwrap().to_owned();
    drop(alice);
    let_the_server_notice_the_drop().await;

    let mut alice = server.connect().await;
    let welcome = alice.login_resume(&token).await.unwrap();
    assert_eq!(welcome.raw["call"], json!({"callId": call_id, "peer": "bob", "caller": false, "state": "ringing"}));
    alice.accept(&call_id).await.unwrap();
    assert_eq!(bob.expect_type("accepted").await.unwrap()["from"], "alice");
    server.shutdown().await;
}

#[tokio::test]
async fn resume_closes_a_still_open_old_connection_with_4001() {
    let server = TestServer::start_with(|c| c.core.resume_grace = LONG_GRACE).await;
    let mut old = server.login("alice").await;
    let mut bob = server.login("bob").await;
    let token = old.resume_token().unwrap().to_owned();
    let mut new = server.connect().await;
    let welcome = new.login_resume(&token).await.unwrap();
    assert!(welcome.resumed);
    let (code, _) = old.expect_close().await.unwrap();
    assert_eq!(code, Some(close_code::REPLACED));
    // The session lives on the new connection.
    bob.offer("alice", sdp_offer()).await.unwrap();
    assert_eq!(new.expect_type("offer").await.unwrap()["from"], "bob");
    // And bob never saw alice leave.
    bob.expect_none_within(QUIET, "alice leaving", |i| {
        i.kind() == Some("presence") && strings(i.raw().unwrap(), "left").contains(&"alice".to_string())
    })
    .await
    .unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn a_session_can_be_resumed_again_with_the_newest_token() {
    let server = TestServer::start_with(|c| c.core.resume_grace = LONG_GRACE).await;
    let alice = server.login("alice").await;
    let first = alice.resume_token().unwrap().to_owned();
    drop(alice);
    let_the_server_notice_the_drop().await;
    let mut alice = server.connect().await;
    let second = alice.login_resume(&first).await.unwrap().resume_token;
    drop(alice);
    let_the_server_notice_the_drop().await;
    let mut alice = server.connect().await;
    let third = alice.login_resume(&second).await.unwrap();
    assert!(third.resumed);
    assert!(third.resume_token != first && third.resume_token != second);
    server.shutdown().await;
}

#[tokio::test]
async fn during_the_grace_period_the_name_stays_taken_and_the_user_online() {
    let server = TestServer::start_with(|c| c.core.resume_grace = LONG_GRACE).await;
    let alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    drop(alice);
    let_the_server_notice_the_drop().await;
    let mut impostor = server.connect().await;
    let error = impostor.login("alice").await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::NameTaken), "{error}");
    assert_eq!(common::names(&bob.users().await.unwrap()), ["alice", "bob"].map(String::from).into());
    server.shutdown().await;
}

#[tokio::test]
async fn unknown_token_gets_resume_failed_and_a_fresh_login_still_works() {
    let server = TestServer::start().await;
    let mut client = server.connect().await;
    let error = client.request(json!({"type": "login", "id": "r", "resume": "nope"})).await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::ResumeFailed), "{error}");
    let welcome = client.login("alice").await.unwrap();
    assert!(!welcome.resumed);
    server.shutdown().await;
}

#[tokio::test]
async fn after_the_grace_period_everyone_is_told_and_the_token_is_dead() {
    let server = TestServer::start_with(|c| c.core.resume_grace = Duration::from_millis(400)).await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    let mut carol = server.login("carol").await;
    alice.join("standup").await.unwrap();
    carol.join("standup").await.unwrap();
    let call_id = alice.call("bob").await.unwrap();
    bob.expect_type("ring").await.unwrap();
    bob.accept(&call_id).await.unwrap();
    alice.expect_type("accepted").await.unwrap();
    common::presence_is(&mut carol, &["alice", "bob", "carol"]).await;

    let token = alice.resume_token().unwrap().to_owned();
    drop(alice);
    let_the_server_notice_the_drop().await;
    let ack = bob.request(json!({"type": "offer", "id": 7, "to": "alice", "sdp": sdp_offer()})).await.unwrap();
    assert_eq!(ack, json!({"type": "ack", "id": 7}));

    // bob: undeliverable for his queued offer, and the call ends with reason disconnected.
    let got = expect_all(&mut bob, &["error", "hangup"]).await;
    let error = &got["error"];
    assert_eq!(error["code"], "undeliverable", "{error}");
    assert_eq!(error["id"], 7);
    assert_eq!(error["to"], "alice");
    assert_eq!(got["hangup"], json!({"type": "hangup", "callId": call_id, "from": "alice", "reason": "disconnected"}));
    // carol: alice left the room (disconnected) and the lobby.
    let left = carol.expect_type("member-left").await.unwrap();
    assert_eq!(left, json!({"type": "member-left", "room": "standup", "name": "alice", "reason": "disconnected"}));
    common::presence_is(&mut carol, &["bob", "carol"]).await;

    let mut late = server.connect().await;
    let error = late.login_resume(&token).await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::ResumeFailed), "{error}");
    // The name is free again, for a fresh session without the old rooms or call.
    let welcome = late.login("alice").await.unwrap();
    assert!(!welcome.resumed && welcome.rooms.is_empty() && welcome.call.is_none());
    server.shutdown().await;
}

#[tokio::test]
async fn a_full_resume_queue_makes_further_messages_undeliverable() {
    let server = TestServer::start_with(|c| {
        c.core.resume_grace = LONG_GRACE;
        c.core.resume_queue_messages = 3;
    })
    .await;
    let alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    let token = alice.resume_token().unwrap().to_owned();
    drop(alice);
    let_the_server_notice_the_drop().await;

    for n in 1..=5u32 {
        bob.send_json(&json!({"type": "candidate", "id": n, "to": "alice", "candidate": candidate(n)})).await.unwrap();
    }
    // Each request gets exactly one reply: ack while the queue has room, undeliverable once it is full.
    let mut replies: BTreeMap<u64, Vec<Value>> = BTreeMap::new();
    while replies.len() < 5 {
        let incoming = bob.recv_timeout(common::T).await.unwrap();
        assert!(!incoming.is_close());
        if let Some(id) = incoming.id().and_then(Value::as_u64) {
            replies.entry(id).or_default().push(incoming.raw().cloned().unwrap());
        }
    }
    for incoming in bob.drain(QUIET).await.unwrap() {
        if let Some(id) = incoming.id().and_then(Value::as_u64) {
            replies.entry(id).or_default().push(incoming.raw().cloned().unwrap());
        }
    }
    for n in 1..=3 {
        assert_eq!(replies[&n], [json!({"type": "ack", "id": n})], "message {n} fits in the queue");
    }
    for n in 4..=5 {
        let got = &replies[&n];
        assert_eq!(got.len(), 1, "one reply to request {n}, got {got:?}");
        assert_eq!(got[0]["type"], "error", "{got:?}");
        assert_eq!(got[0]["code"], "undeliverable", "{got:?}");
        assert_eq!(got[0]["to"], "alice", "{got:?}");
    }

    let mut alice = server.connect().await;
    alice.login_resume(&token).await.unwrap();
    for n in 1..=3 {
        assert_eq!(alice.expect_type("candidate").await.unwrap()["candidate"], candidate(n));
    }
    alice
        .expect_none_within(QUIET, "the messages that did not fit", |i: &Incoming| i.kind() == Some("candidate"))
        .await
        .unwrap();
    server.shutdown().await;
}
