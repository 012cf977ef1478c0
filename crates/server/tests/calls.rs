//! Call control: call, ringing, ring, accept, accepted, reject, cancel, hangup, no-answer, disconnected, busy,
//! already-in-call, unknown-call.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{sdp_answer, sdp_offer, TestServer, QUIET};
use serde_json::{json, Value};
use switchboard_client::{Client, ErrorCode};

/// alice calls bob; returns the call id after bob got `ring`.
async fn ring(alice: &mut Client, bob: &mut Client) -> String {
    let call_id = alice.call(bob.name().unwrap()).await.unwrap();
    let ring_event = bob.expect_type("ring").await.unwrap();
    assert_eq!(ring_event["callId"], json!(call_id));
    call_id
}

/// alice calls bob and bob accepts; returns the call id.
async fn connect_call(alice: &mut Client, bob: &mut Client) -> String {
    let call_id = ring(alice, bob).await;
    bob.accept(&call_id).await.unwrap();
    alice.expect_type("accepted").await.unwrap();
    call_id
}

fn hangup(call_id: &str, from: &str, reason: &str) -> Value {
    json!({"type": "hangup", "callId": call_id, "from": from, "reason": reason})
}

#[tokio::test]
async fn a_full_call_ring_accept_offer_answer_hangup() {
    let server = TestServer::start().await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;

    let ringing = alice.request(json!({"type": "call", "id": 4, "to": "bob"})).await.unwrap();
    assert_eq!(ringing["type"], "ringing");
    assert_eq!(ringing["id"], 4);
    assert_eq!(ringing["to"], "bob");
    let call_id = ringing["callId"].as_str().expect("callId is a string").to_owned();
    assert!(!call_id.is_empty());
    let ring_event = bob.expect_type("ring").await.unwrap();
    assert_eq!(ring_event, json!({"type": "ring", "callId": call_id, "from": "alice"}));

    let ack = bob.request(json!({"type": "accept", "id": 5, "callId": call_id})).await.unwrap();
    assert_eq!(ack, json!({"type": "ack", "id": 5}));
    let accepted = alice.expect_type("accepted").await.unwrap();
    assert_eq!(accepted, json!({"type": "accepted", "callId": call_id, "from": "bob"}));

    alice.send_json(&json!({"type": "offer", "to": "bob", "callId": call_id, "sdp": sdp_offer()})).await.unwrap();
    assert_eq!(bob.expect_type("offer").await.unwrap()["callId"], json!(call_id));
    bob.send_json(&json!({"type": "answer", "to": "alice", "callId": call_id, "sdp": sdp_answer()})).await.unwrap();
    assert_eq!(alice.expect_type("answer").await.unwrap()["callId"], json!(call_id));

    bob.hangup(&call_id).await.unwrap();
    assert_eq!(alice.expect_type("hangup").await.unwrap(), hangup(&call_id, "bob", "hangup"));
    // The call is over: a hangup on it is an unknown call, and both can call again.
    let error = alice.request(json!({"type": "hangup", "callId": call_id})).await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::UnknownCall), "{error}");
    let again = ring(&mut bob, &mut alice).await;
    assert_ne!(again, call_id, "every call gets a new id");
    server.shutdown().await;
}

#[tokio::test]
async fn the_caller_can_hang_up_an_active_call() {
    let server = TestServer::start().await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    let call_id = connect_call(&mut alice, &mut bob).await;
    alice.hangup(&call_id).await.unwrap();
    assert_eq!(bob.expect_type("hangup").await.unwrap(), hangup(&call_id, "alice", "hangup"));
    alice.expect_none_within(QUIET, "a hangup echo", |i| i.kind() == Some("hangup")).await.unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn reject() {
    let server = TestServer::start().await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    let call_id = ring(&mut alice, &mut bob).await;
    let ack = bob.request(json!({"type": "reject", "id": 5, "callId": call_id})).await.unwrap();
    assert_eq!(ack, json!({"type": "ack", "id": 5}));
    assert_eq!(alice.expect_type("hangup").await.unwrap(), hangup(&call_id, "bob", "rejected"));
    let error = bob.accept(&call_id).await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::UnknownCall), "accepting a rejected call: {error}");
    server.shutdown().await;
}

#[tokio::test]
async fn cancel() {
    let server = TestServer::start().await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    let call_id = ring(&mut alice, &mut bob).await;
    alice.cancel(&call_id).await.unwrap();
    assert_eq!(bob.expect_type("hangup").await.unwrap(), hangup(&call_id, "alice", "cancelled"));
    let error = bob.accept(&call_id).await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::UnknownCall), "accepting a cancelled call: {error}");
    server.shutdown().await;
}

#[tokio::test]
async fn hangup_while_ringing_acts_as_cancel_or_reject() {
    let server = TestServer::start().await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    let call_id = ring(&mut alice, &mut bob).await;
    alice.hangup(&call_id).await.unwrap();
    assert_eq!(bob.expect_type("hangup").await.unwrap(), hangup(&call_id, "alice", "cancelled"));

    let call_id = ring(&mut alice, &mut bob).await;
    bob.hangup(&call_id).await.unwrap();
    assert_eq!(alice.expect_type("hangup").await.unwrap(), hangup(&call_id, "bob", "rejected"));
    server.shutdown().await;
}

#[tokio::test]
async fn busy_and_already_in_call() {
    let server = TestServer::start().await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    let mut carol = server.login("carol").await;
    let _dave = server.login("dave").await;

    // bob is being called: busy for carol. alice is calling: busy too.
    let call_id = ring(&mut alice, &mut bob).await;
    for target in ["bob", "alice"] {
        let error = carol.request(json!({"type": "call", "id": 1, "to": target})).await.unwrap_err();
        assert_eq!(error.code(), Some(ErrorCode::Busy), "calling {target}: {error}");
    }
    // alice (calling) and bob (being called) cannot start another call.
    for caller in [&mut alice, &mut bob] {
        let error = caller.call("dave").await.unwrap_err();
        assert_eq!(error.code(), Some(ErrorCode::AlreadyInCall), "{error}");
    }
    // Same once the call is active.
    bob.accept(&call_id).await.unwrap();
    alice.expect_type("accepted").await.unwrap();
    let error = carol.call("bob").await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::Busy), "{error}");
    let error = alice.call("carol").await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::AlreadyInCall), "{error}");
    // The refused attempts did not disturb the call.
    carol.expect_none_within(QUIET, "a ring", |i| i.kind() == Some("ring")).await.unwrap();
    bob.hangup(&call_id).await.unwrap();
    assert_eq!(alice.expect_type("hangup").await.unwrap()["reason"], "hangup");
    server.shutdown().await;
}

#[tokio::test]
async fn calling_yourself_or_nobody() {
    let server = TestServer::start().await;
    let mut alice = server.login("alice").await;
    let error = alice.call("alice").await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::BadRequest), "{error}");
    let error = alice.call("Alice").await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::BadRequest), "{error}");
    let error = alice.call("zed").await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::UnknownPeer), "{error}");
    let error = alice.request(json!({"type": "call"})).await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::BadRequest), "call without `to`: {error}");
    server.shutdown().await;
}

#[tokio::test]
async fn unknown_call_for_strangers_wrong_states_and_made_up_ids() {
    let server = TestServer::start().await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    let mut carol = server.login("carol").await;

    let error = alice.accept("x").await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::UnknownCall), "{error}");
    let error = alice.request(json!({"type": "accept", "id": 9})).await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::BadRequest), "accept without callId: {error}");

    let call_id = ring(&mut alice, &mut bob).await;
    // Someone else's call.
    for request in ["accept", "reject", "cancel", "hangup"] {
        let error = carol.request(json!({"type": request, "callId": call_id})).await.unwrap_err();
        assert_eq!(error.code(), Some(ErrorCode::UnknownCall), "carol {request}s alice's call: {error}");
    }
    // The caller cannot accept or reject its own call; the callee cannot cancel it.
    for request in ["accept", "reject"] {
        let error = alice.request(json!({"type": request, "callId": call_id})).await.unwrap_err();
        assert_eq!(error.code(), Some(ErrorCode::UnknownCall), "caller {request}s: {error}");
    }
    let error = bob.request(json!({"type": "cancel", "callId": call_id})).await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::UnknownCall), "callee cancels: {error}");
    // Once active: accept, reject and cancel are in the wrong state.
    bob.accept(&call_id).await.unwrap();
    alice.expect_type("accepted").await.unwrap();
    let error = bob.accept(&call_id).await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::UnknownCall), "accept twice: {error}");
    let error = bob.reject(&call_id).await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::UnknownCall), "reject an active call: {error}");
    let error = alice.request(json!({"type": "cancel", "callId": call_id})).await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::UnknownCall), "cancel an active call: {error}");
    // None of this ended the call.
    alice.hangup(&call_id).await.unwrap();
    assert_eq!(bob.expect_type("hangup").await.unwrap(), hangup(&call_id, "alice", "hangup"));
    server.shutdown().await;
}

#[tokio::test]
async fn no_answer_ends_the_call_for_both_sides() {
    let server = TestServer::start_with(|c| c.core.ring_timeout = Duration::from_millis(300)).await;
    let (mut alice, welcome) = server.login_welcome("alice").await;
    assert_eq!(welcome.limits.ring_timeout_ms, 300);
    let mut bob = server.login("bob").await;
    let started = tokio::time::Instant::now();
    let call_id = ring(&mut alice, &mut bob).await;
    let expected = hangup(&call_id, "bob", "no-answer");
    assert_eq!(alice.expect_type("hangup").await.unwrap(), expected);
    assert_eq!(bob.expect_type("hangup").await.unwrap(), expected);
    assert!(started.elapsed() >= Duration::from_millis(250), "rang only {:?}", started.elapsed());
    let error = bob.accept(&call_id).await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::UnknownCall), "{error}");
    // Both are free again.
    ring(&mut bob, &mut alice).await;
    server.shutdown().await;
}

#[tokio::test]
async fn an_accepted_call_does_not_time_out() {
    let server = TestServer::start_with(|c| c.core.ring_timeout = Duration::from_millis(200)).await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    connect_call(&mut alice, &mut bob).await;
    alice
        .expect_none_within(Duration::from_millis(500), "a hangup of an accepted call", |i| i.kind() == Some("hangup"))
        .await
        .unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn a_dropped_party_hangs_up_with_disconnected_after_the_grace_period() {
    let server = TestServer::start_with(|c| c.core.resume_grace = Duration::from_millis(300)).await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    let call_id = connect_call(&mut alice, &mut bob).await;
    drop(bob);
    assert_eq!(alice.expect_type("hangup").await.unwrap(), hangup(&call_id, "bob", "disconnected"));

    // While ringing too: the callee drops, the caller learns it after the grace period.
    let mut carol = server.login("carol").await;
    let call_id = ring(&mut alice, &mut carol).await;
    drop(carol);
    assert_eq!(alice.expect_type("hangup").await.unwrap(), hangup(&call_id, "carol", "disconnected"));
    server.shutdown().await;
}

#[tokio::test]
async fn logout_during_a_call_ends_it_at_once() {
    let server = TestServer::start_with(|c| c.core.resume_grace = Duration::from_secs(30)).await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    let call_id = connect_call(&mut alice, &mut bob).await;
    bob.logout().await.unwrap();
    let ended = alice.expect_type("hangup").await.unwrap();
    assert_eq!(ended["callId"], json!(call_id));
    assert_eq!(ended["from"], "bob");
    server.shutdown().await;
}
