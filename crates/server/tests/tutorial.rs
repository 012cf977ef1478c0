//! The tutorial dialect (`shared/seed-protocol.md`): the exact message sequence of two tutorial pages, translation
//! between tutorial and v1 clients both ways, `RenderUserList` on logins and leaves (coalesced), the identity taken
//! from the login, robustness against unknown targets and bad JSON, and auto-accepted v1 calls.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{candidate, keys, presence_is, sdp_answer, sdp_offer, TestServer, QUIET, T};
use serde_json::{json, Value};
use switchboard_client::{Client, ErrorCode, Incoming, TutorialClient, UserStatus};

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn as_set(names: &[String]) -> BTreeSet<String> {
    names.iter().cloned().collect()
}

/// The next frame that is not a `RenderUserList`.
async fn next_non_list(client: &mut Client) -> Incoming {
    client
        .expect("a frame other than RenderUserList", |i| (i.kind() != Some("RenderUserList")).then(|| i.clone()))
        .await
        .unwrap()
}

/// Waits for a list equal to `names` (as a set).
async fn list_becomes(client: &mut TutorialClient, names: &[&str]) {
    let expected = set(names);
    client.expect_user_list_where(|list| as_set(list) == expected).await.unwrap();
}

#[tokio::test]
async fn two_tutorial_pages_speak_the_tutorial_protocol_exactly() {
    let server = TestServer::start().await;
    // Page 1 logs in: the first frame it gets is the user list (no v1 hello).
    let mut alice = TutorialClient::connect(&server.root_url()).await.unwrap();
    alice.send_json(&json!({"type": "Login", "UserName": "alice"})).await.unwrap();
    let first = alice.recv_timeout(T).await.unwrap();
    assert_eq!(first.raw().cloned().unwrap(), json!({"type": "RenderUserList", "userlist": ["alice"]}));

    // Page 2 logs in: it gets the full list, and page 1 gets an updated list.
    let mut bob = TutorialClient::connect(&server.root_url()).await.unwrap();
    bob.send_json(&json!({"type": "Login", "UserName": "bob"})).await.unwrap();
    let first = bob.recv_timeout(T).await.unwrap();
    assert_eq!(first.kind(), Some("RenderUserList"), "{}", first.describe());
    assert_eq!(keys(first.raw().unwrap()), ["type", "userlist"]);
    assert!(bob.userlist().contains(&"bob".to_string()), "{:?}", bob.userlist());
    // (The first list is a snapshot as of the last tick; the_first_list_is_a_recent_snapshot_... checks that.)
    if as_set(bob.userlist()) != set(&["alice", "bob"]) {
        list_becomes(&mut bob, &["alice", "bob"]).await;
    }
    list_becomes(&mut alice, &["alice", "bob"]).await;

    // alice clicks bob: offer, then candidates (possibly before the answer), then bob answers and sends his own.
    alice.offer("alice", "bob", sdp_offer()).await.unwrap();
    alice.ice("bob", candidate(1)).await.unwrap();
    let offer = next_non_list(&mut bob).await.raw().cloned().unwrap();
    assert_eq!(offer, json!({"type": "offer", "name": "alice", "TargetUserName": "bob", "sdp": sdp_offer()}));
    let ice = next_non_list(&mut bob).await.raw().cloned().unwrap();
    assert_eq!(ice, json!({"type": "ICE", "candidate": candidate(1), "TargetUserName": "bob"}));

    // The page answers `msg.name`.
    let peer = offer["name"].as_str().unwrap().to_owned();
    bob.answer("bob", &peer, sdp_answer()).await.unwrap();
    bob.ice(&peer, candidate(2)).await.unwrap();
    let answer = next_non_list(&mut alice).await.raw().cloned().unwrap();
    assert_eq!(answer, json!({"type": "answer", "name": "bob", "TargetUserName": "alice", "sdp": sdp_answer()}));
    let ice = next_non_list(&mut alice).await.raw().cloned().unwrap();
    assert_eq!(ice, json!({"type": "ICE", "candidate": candidate(2), "TargetUserName": "alice"}));
    server.shutdown().await;
}

/// The `RenderUserList` sent at login is a snapshot as of the last presence tick with the new user in it; the list
/// sent after the next tick is complete.
#[tokio::test]
async fn the_first_list_is_a_recent_snapshot_completed_at_the_next_tick() {
    let server = TestServer::start().await;
    let _alice = server.tutorial("alice").await;
    let _bob = server.login("bob").await;
    let mut carol = server.tutorial("carol").await;
    let first = as_set(carol.userlist());
    assert!(first.contains("carol") && first.is_subset(&set(&["alice", "bob", "carol"])), "{first:?}");
    list_becomes(&mut carol, &["alice", "bob", "carol"]).await;
    // Once a tick has passed, the first list of a newcomer is complete.
    let dave = server.tutorial("dave").await;
    assert_eq!(as_set(dave.userlist()), set(&["alice", "bob", "carol", "dave"]));
    server.shutdown().await;
}

#[tokio::test]
async fn the_sender_name_comes_from_the_login_not_the_message() {
    let server = TestServer::start().await;
    let mut alice = server.tutorial("alice").await;
    let mut bob = server.tutorial("bob").await;
    let _mallory = server.tutorial("mallory").await;
    alice.offer("mallory", "bob", sdp_offer()).await.unwrap();
    let offer = next_non_list(&mut bob).await.raw().cloned().unwrap();
    assert_eq!(offer["name"], "alice", "{offer}");
    bob.answer("mallory", "alice", sdp_answer()).await.unwrap();
    assert_eq!(next_non_list(&mut alice).await.raw().unwrap()["name"], "bob");
    server.shutdown().await;
}

#[tokio::test]
async fn tutorial_page_and_v1_client_talk_both_ways() {
    let server = TestServer::start().await;
    let mut alice = server.tutorial("alice").await;
    let mut bob = server.login("bob").await;
    // They see each other.
    list_becomes(&mut alice, &["alice", "bob"]).await;
    presence_is(&mut bob, &["alice", "bob"]).await;

    // tutorial -> v1: offer / ICE become offer / candidate with `from`; a lied `name` is ignored.
    alice.offer("mallory", "bob", sdp_offer()).await.unwrap();
    assert_eq!(bob.expect_type("offer").await.unwrap(), json!({"type": "offer", "from": "alice", "sdp": sdp_offer()}));
    alice.ice("bob", candidate(1)).await.unwrap();
    assert_eq!(
        bob.expect_type("candidate").await.unwrap(),
        json!({"type": "candidate", "from": "alice", "candidate": candidate(1)})
    );
    alice.answer("alice", "bob", sdp_answer()).await.unwrap();
    assert_eq!(
        bob.expect_type("answer").await.unwrap(),
        json!({"type": "answer", "from": "alice", "sdp": sdp_answer()})
    );

    // v1 -> tutorial: callId is dropped, `name` is the real sender, candidate becomes ICE.
    bob.send_json(&json!({"type": "answer", "to": "alice", "callId": "c1", "sdp": sdp_answer()})).await.unwrap();
    assert_eq!(
        next_non_list(&mut alice).await.raw().cloned().unwrap(),
        json!({"type": "answer", "name": "bob", "TargetUserName": "alice", "sdp": sdp_answer()})
    );
    bob.send_json(&json!({"type": "offer", "to": "ALICE", "callId": "c1", "name": "zed", "sdp": sdp_offer()}))
        .await
        .unwrap();
    assert_eq!(
        next_non_list(&mut alice).await.raw().cloned().unwrap(),
        json!({"type": "offer", "name": "bob", "TargetUserName": "alice", "sdp": sdp_offer()})
    );
    bob.send_json(&json!({"type": "candidate", "to": "alice", "callId": "c1", "candidate": candidate(2)}))
        .await
        .unwrap();
    assert_eq!(
        next_non_list(&mut alice).await.raw().cloned().unwrap(),
        json!({"type": "ICE", "candidate": candidate(2), "TargetUserName": "alice"})
    );
    // end-of-candidates does not exist in the tutorial: dropped, and acked all the same if it has an id.
    let ack = bob.request(json!({"type": "end-of-candidates", "id": 5, "to": "alice"})).await.unwrap();
    assert_eq!(ack, json!({"type": "ack", "id": 5}));
    bob.candidate("alice", candidate(3)).await.unwrap();
    let next = next_non_list(&mut alice).await.raw().cloned().unwrap();
    assert_eq!(next, json!({"type": "ICE", "candidate": candidate(3), "TargetUserName": "alice"}));
    server.shutdown().await;
}

#[tokio::test]
async fn render_user_list_is_resent_on_logins_and_leaves() {
    let server = TestServer::start_with(|c| c.core.resume_grace = Duration::from_millis(300)).await;
    let mut alice = server.tutorial("alice").await;
    assert_eq!(alice.userlist(), ["alice"]);

    let mut bob = server.login("bob").await;
    list_becomes(&mut alice, &["alice", "bob"]).await;
    let mut carol = server.tutorial("carol").await;
    list_becomes(&mut carol, &["alice", "bob", "carol"]).await;
    list_becomes(&mut alice, &["alice", "bob", "carol"]).await;

    // A v1 logout, a tutorial page closing (no grace for tutorial sessions), a v1 drop (after the grace period).
    bob.logout().await.unwrap();
    list_becomes(&mut alice, &["alice", "carol"]).await;
    drop(carol);
    list_becomes(&mut alice, &["alice"]).await;
    let dave = server.login("dave").await;
    list_becomes(&mut alice, &["alice", "dave"]).await;
    drop(dave);
    list_becomes(&mut alice, &["alice"]).await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_tutorial_session_ends_when_its_connection_closes() {
    let server = TestServer::start_with(|c| c.core.resume_grace = Duration::from_secs(30)).await;
    let mut bob = server.login("bob").await;
    let alice = server.tutorial("alice").await;
    let frames = presence_is(&mut bob, &["alice", "bob"]).await;
    assert!(frames.iter().any(|p| common::has_entry(p, "joined", "alice", "idle")), "{frames:?}");
    drop(alice);
    // Well within the 30 s grace period of v1 sessions.
    presence_is(&mut bob, &["bob"]).await;
    // The name is free at once.
    server.tutorial("alice").await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn render_user_list_is_coalesced_per_tick() {
    const N: usize = 30;
    let server = TestServer::start().await;
    let mut alice = server.tutorial("alice").await;
    let before = alice.userlist_frames();
    let mut clients = Vec::new();
    for _ in 0..N {
        clients.push(server.connect().await);
    }
    for (i, client) in clients.iter_mut().enumerate() {
        client.send_json(&json!({"type": "login", "name": format!("v{i:02}")})).await.unwrap();
    }
    alice.expect_user_list_where(|list| list.len() == N + 1).await.unwrap();
    let frames = alice.userlist_frames() - before;
    assert!(frames <= 8, "{N} logins produced {frames} RenderUserList frames (expected a few)");
    server.shutdown().await;
}

#[tokio::test]
async fn unknown_targets_bad_json_and_unknown_types_do_not_crash_anything() {
    let server = TestServer::start().await;
    let mut alice = server.tutorial("alice").await;
    let mut bob = server.tutorial("bob").await;
    let mut carol = server.login("carol").await;

    alice.offer("alice", "ghost", sdp_offer()).await.unwrap();
    let error = next_non_list(&mut alice).await;
    assert_eq!(error.error_code(), Some(ErrorCode::UnknownPeer), "{}", error.describe());
    alice.ice("ghost", candidate(1)).await.unwrap();
    assert_eq!(next_non_list(&mut alice).await.error_code(), Some(ErrorCode::UnknownPeer));
    alice.send_text("{\"type\":\"offer\",").await.unwrap();
    assert_eq!(next_non_list(&mut alice).await.error_code(), Some(ErrorCode::BadJson));
    alice.send_text("undefined").await.unwrap();
    assert_eq!(next_non_list(&mut alice).await.error_code(), Some(ErrorCode::BadJson));
    alice.send_json(&json!({"type": "dance"})).await.unwrap();
    assert_eq!(next_non_list(&mut alice).await.error_code(), Some(ErrorCode::UnknownType));
    alice.send_json(&json!({"type": "offer", "name": "alice", "sdp": sdp_offer()})).await.unwrap();
    assert_eq!(next_non_list(&mut alice).await.error_code(), Some(ErrorCode::BadRequest), "offer without target");
    // v1-only requests are not available to a tutorial page.
    for request in
        [json!({"type": "join", "room": "r"}), json!({"type": "users"}), json!({"type": "call", "to": "bob"})]
    {
        alice.send_json(&request).await.unwrap();
        let error = next_non_list(&mut alice).await;
        let code = error.error_code();
        assert!(
            code == Some(ErrorCode::UnknownType) || code == Some(ErrorCode::NotSupported),
            "{request}: {}",
            error.describe()
        );
    }

    // Everything still works, for alice and for everyone else.
    alice.offer("alice", "bob", sdp_offer()).await.unwrap();
    assert_eq!(next_non_list(&mut bob).await.raw().unwrap()["name"], "alice");
    alice.offer("alice", "carol", sdp_offer()).await.unwrap();
    assert_eq!(carol.expect_type("offer").await.unwrap()["from"], "alice");
    assert_eq!(carol.ping().await.unwrap()["type"], "pong");
    server.shutdown().await;
}

#[tokio::test]
async fn tutorial_login_rules() {
    let server = TestServer::start().await;
    let mut v1_alice = server.login("alice").await;

    // A taken name is refused, not stolen.
    let mut page = TutorialClient::connect(&server.root_url()).await.unwrap();
    let error = page.login("ALICE").await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::NameTaken), "{error}");
    assert_eq!(v1_alice.ping().await.unwrap()["type"], "pong");
    v1_alice.expect_none_within(QUIET, "being closed", Incoming::is_close).await.unwrap();
    // Invalid names are refused.
    let error = page.login("<img src=x onerror=alert(1)>").await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::InvalidName), "{error}");
    let error = page.login("").await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::InvalidName), "{error}");
    // The same page can then log in under a free name; a second Login is refused.
    let list = page.login("Zoe\u{308}").await.unwrap();
    assert!(list.contains(&"Zo\u{eb}".to_string()), "shown in NFC: {list:?}");
    list_becomes(&mut page, &["alice", "Zo\u{eb}"]).await;
    let error = page.login("other").await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::AlreadyLoggedIn), "{error}");
    presence_is(&mut v1_alice, &["alice", "Zo\u{eb}"]).await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_v1_call_to_a_tutorial_user_is_accepted_at_once() {
    let server = TestServer::start().await;
    let mut alice = server.tutorial("alice").await;
    let mut bob = server.login("bob").await;
    let mut carol = server.login("carol").await;

    let ringing = bob.request(json!({"type": "call", "id": 1, "to": "alice"})).await.unwrap();
    assert_eq!(ringing["type"], "ringing");
    let call_id = ringing["callId"].as_str().unwrap().to_owned();
    let accepted = bob.expect_type("accepted").await.unwrap();
    assert_eq!(accepted, json!({"type": "accepted", "callId": call_id, "from": "alice"}));
    // Both are in a call now.
    common::presence_until(&mut carol, "alice and bob in-call", |view| {
        view.get("alice").is_some_and(|u| u.status == UserStatus::InCall)
            && view.get("bob").is_some_and(|u| u.status == UserStatus::InCall)
    })
    .await;
    // The v1 caller sends its offer; the page answers as it always does.
    bob.send_json(&json!({"type": "offer", "to": "alice", "callId": call_id, "sdp": sdp_offer()})).await.unwrap();
    let offer = next_non_list(&mut alice).await.raw().cloned().unwrap();
    assert_eq!(offer, json!({"type": "offer", "name": "bob", "TargetUserName": "alice", "sdp": sdp_offer()}));
    alice.answer("alice", "bob", sdp_answer()).await.unwrap();
    assert_eq!(bob.expect_type("answer").await.unwrap()["from"], "alice");

    // hangup ends the call in the server's books only; the page hears nothing about it.
    bob.hangup(&call_id).await.unwrap();
    common::presence_until(&mut carol, "alice and bob idle", |view| {
        view.get("alice").is_some_and(|u| u.status == UserStatus::Idle)
            && view.get("bob").is_some_and(|u| u.status == UserStatus::Idle)
    })
    .await;
    let _second = carol.call("alice").await.unwrap();
    // A tutorial user is never busy (its page cannot hang up): a third call replaces carol's, and carol is told.
    let third = bob.call("alice").await.unwrap();
    let hangup = carol.expect_type("hangup").await.unwrap();
    assert_eq!((hangup["from"].as_str(), hangup["reason"].as_str()), (Some("alice"), Some("hangup")));
    bob.hangup(&third).await.unwrap();
    let seen: Vec<Value> = alice.drain(QUIET).await.unwrap().iter().filter_map(|i| i.raw().cloned()).collect();
    for frame in &seen {
        assert_eq!(frame["type"], "RenderUserList", "the page only ever sees tutorial messages: {frame}");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn a_tutorial_page_closing_ends_its_call() {
    let server = TestServer::start().await;
    let alice = server.tutorial("alice").await;
    let mut bob = server.login("bob").await;
    let call_id = bob.call("alice").await.unwrap();
    bob.expect_type("accepted").await.unwrap();
    drop(alice);
    let hangup = bob.expect_type("hangup").await.unwrap();
    assert_eq!(hangup, json!({"type": "hangup", "callId": call_id, "from": "alice", "reason": "disconnected"}));
    server.shutdown().await;
}
