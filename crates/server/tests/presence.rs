//! Presence deltas (`joined`, `left`, `changed` with `idle`/`in-call`), their coalescing, and the `users` request.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{has_entry, presence_is, presence_until, reply_to, strings, view_status, TestServer};
use serde_json::{json, Value};
use switchboard_client::{Client, UserStatus};

#[tokio::test]
async fn joined_and_left_deltas() {
    let server = TestServer::start().await;
    let mut observer = server.login("observer").await;
    let mut alice = server.login("alice").await;
    let frames = presence_is(&mut observer, &["alice", "observer"]).await;
    assert!(frames.iter().any(|p| has_entry(p, "joined", "alice", "idle")), "{frames:?}");
    for frame in &frames {
        for field in ["joined", "left", "changed"] {
            if let Some(items) = frame.get(field) {
                assert!(items.as_array().is_some_and(|a| !a.is_empty()), "empty arrays are omitted: {frame}");
            }
        }
    }

    alice.logout().await.unwrap();
    let frames = presence_is(&mut observer, &["observer"]).await;
    assert!(frames.iter().any(|p| strings(p, "left") == ["alice"]), "{frames:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn a_dropped_connection_stays_in_presence_for_the_grace_period_then_leaves() {
    let server = TestServer::start_with(|c| c.core.resume_grace = Duration::from_millis(600)).await;
    let mut observer = server.login("observer").await;
    let alice = server.login("alice").await;
    presence_is(&mut observer, &["alice", "observer"]).await;
    let dropped_at = tokio::time::Instant::now();
    drop(alice);
    let frames = presence_is(&mut observer, &["observer"]).await;
    let waited = dropped_at.elapsed();
    assert!(frames.iter().any(|p| strings(p, "left") == ["alice"]), "{frames:?}");
    assert!(
        waited >= Duration::from_millis(500),
        "alice left after {waited:?}, before her 600 ms grace period was over"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn status_changes_to_in_call_and_back_to_idle() {
    let server = TestServer::start().await;
    let mut observer = server.login("observer").await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    presence_is(&mut observer, &["alice", "bob", "observer"]).await;

    // Ringing already counts as in a call, for both parties.
    let call_id = alice.call("bob").await.unwrap();
    let frames = presence_until(&mut observer, "alice and bob in-call", |view| {
        view.get("alice").is_some_and(|u| u.status == UserStatus::InCall)
            && view.get("bob").is_some_and(|u| u.status == UserStatus::InCall)
    })
    .await;
    assert!(frames.iter().any(|p| has_entry(p, "changed", "alice", "in-call")), "{frames:?}");
    assert!(frames.iter().any(|p| has_entry(p, "changed", "bob", "in-call")), "{frames:?}");

    bob.expect_type("ring").await.unwrap();
    bob.accept(&call_id).await.unwrap();
    alice.hangup(&call_id).await.unwrap();
    bob.expect_type("hangup").await.unwrap();
    let frames = presence_until(&mut observer, "alice and bob idle again", |view| {
        view.get("alice").is_some_and(|u| u.status == UserStatus::Idle)
            && view.get("bob").is_some_and(|u| u.status == UserStatus::Idle)
    })
    .await;
    assert!(frames.iter().any(|p| has_entry(p, "changed", "alice", "idle")), "{frames:?}");
    assert!(frames.iter().any(|p| has_entry(p, "changed", "bob", "idle")), "{frames:?}");

    // The users reply shows statuses too (asked once the change was announced: how fresh `users` is right after a
    // change is login.rs' business).
    let _call = alice.call("bob").await.unwrap();
    presence_until(&mut observer, "alice and bob in-call again", |view| {
        view.get("alice").is_some_and(|u| u.status == UserStatus::InCall)
            && view.get("bob").is_some_and(|u| u.status == UserStatus::InCall)
    })
    .await;
    let users = observer.users().await.unwrap();
    let status = |name: &str| users.iter().find(|u| u.name == name).map(|u| u.status);
    assert_eq!(status("alice"), Some(UserStatus::InCall));
    assert_eq!(status("bob"), Some(UserStatus::InCall));
    assert_eq!(status("observer"), Some(UserStatus::Idle));
    server.shutdown().await;
}

/// Alice calls Bob, Bob accepts, and Alice has seen both of them in-call.
async fn alice_calls_bob(server: &TestServer) -> (Client, Client, String) {
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    let call_id = alice.call("bob").await.unwrap();
    bob.expect_type("ring").await.unwrap();
    bob.accept(&call_id).await.unwrap();
    presence_until(&mut alice, "alice and bob in-call", |view| {
        view.get("alice").is_some_and(|u| u.status == UserStatus::InCall)
            && view.get("bob").is_some_and(|u| u.status == UserStatus::InCall)
    })
    .await;
    (alice, bob, call_id)
}

#[tokio::test]
async fn a_new_user_sees_current_statuses_in_welcome() {
    let server = TestServer::start().await;
    let (_alice, _bob, _call) = alice_calls_bob(&server).await;
    let (late, welcome) = server.login_welcome("late").await;
    let status = |name: &str| welcome.users.iter().find(|u| u.name == name).map(|u| u.status);
    assert_eq!(status("alice"), Some(UserStatus::InCall));
    assert_eq!(status("bob"), Some(UserStatus::InCall));
    assert_eq!(status("late"), Some(UserStatus::Idle));
    assert_eq!(view_status(&late, "alice"), Some(UserStatus::InCall));
    server.shutdown().await;
}

#[tokio::test]
async fn users_request_echoes_number_and_string_ids() {
    let server = TestServer::start().await;
    let mut alice = server.login("alice").await;
    let _bob = server.login("bob").await;
    presence_is(&mut alice, &["alice", "bob"]).await;
    for id in [json!(3), json!("list-1"), json!(-7), json!(1.5)] {
        let reply = common::reply_to(&mut alice, json!({"type": "users", "id": id})).await;
        assert_eq!(reply["type"], "users", "{reply}");
        assert_eq!(reply["id"], id);
        let mut users = reply["users"].as_array().unwrap().clone();
        users.sort_by_key(|u| u["name"].as_str().unwrap().to_owned());
        assert_eq!(users, [json!({"name": "alice", "status": "idle"}), json!({"name": "bob", "status": "idle"})]);
    }
    // Without id: a reply without id.
    alice.send_json(&json!({"type": "users"})).await.unwrap();
    let reply = alice.expect_type("users").await.unwrap();
    assert!(reply.get("id").is_none(), "{reply}");
    server.shutdown().await;
}

/// 50 logins in a burst reach an observer as a few coalesced `presence` frames, not 50, and the observer's view ends
/// complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_logins_is_coalesced() {
    const N: usize = 50;
    let server = TestServer::start().await;
    let mut observer = server.login("observer").await;
    let frames_before = observer.presence_frames();

    // Connect everyone first, then fire all the logins at once.
    let mut clients: Vec<Client> = Vec::new();
    for _ in 0..N {
        clients.push(server.connect().await);
    }
    for (i, client) in clients.iter_mut().enumerate() {
        client.send_json(&json!({"type": "login", "id": 1, "name": format!("user{i:02}")})).await.unwrap();
    }
    let mut expected: Vec<String> = (0..N).map(|i| format!("user{i:02}")).collect();
    expected.push("observer".into());
    let expected_refs: Vec<&str> = expected.iter().map(String::as_str).collect();
    let frames = presence_is(&mut observer, &expected_refs).await;
    let count = observer.presence_frames() - frames_before;
    assert!(count <= 10, "{N} logins produced {count} presence frames at the observer (expected a few)");
    let joined: usize = frames.iter().map(|p| strings(p, "joined").len()).sum();
    assert!(joined >= N, "every login shows up in a joined delta: {joined}");

    // Every new user got its welcome; the last one to be served sees all N + 1 users at the latest through presence.
    for client in &mut clients {
        client.expect_type("welcome").await.unwrap();
    }
    let users = observer.users().await.unwrap();
    assert_eq!(users.len(), N + 1);
    server.shutdown().await;
}

/// Presence is not one message per pair: with N users online, one login costs each of them about one frame.
#[tokio::test]
async fn one_login_costs_each_observer_one_frame() {
    let server = TestServer::start().await;
    let mut observers = Vec::new();
    for i in 0..5 {
        observers.push(server.login(&format!("o{i}")).await);
    }
    let all: Vec<String> = (0..5).map(|i| format!("o{i}")).collect();
    for observer in &mut observers {
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        presence_is(observer, &refs).await;
    }
    // Let deltas of the observers' own logins that are still in flight arrive (a couple of ticks).
    for observer in &mut observers {
        observer.drain(Duration::from_millis(120)).await.unwrap();
    }
    let before: Vec<usize> = observers.iter().map(Client::presence_frames).collect();
    let _newcomer = server.login("newcomer").await;
    for (observer, before) in observers.iter_mut().zip(before) {
        let joined: Value =
            observer.expect_type_where("presence", |p| has_entry(p, "joined", "newcomer", "idle")).await.unwrap();
        assert!(joined.get("left").is_none());
        // Give the next ticks a chance to (wrongly) send more.
        observer.drain(Duration::from_millis(150)).await.unwrap();
        assert_eq!(observer.presence_frames() - before, 1, "one login, one presence frame per observer");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn presence_lists_at_most_max_presence_users_and_promotes_in_login_order() {
    let server = TestServer::start_with(|c| c.core.max_presence_users = 2).await;
    let mut observer = server.login("observer").await;
    let mut alice = server.login("alice").await;
    presence_is(&mut observer, &["alice", "observer"]).await;

    // Past the cap: carol is online and callable, but unlisted; her own welcome shows the listed users and her.
    let (mut carol, welcome) = server.login_welcome("carol").await;
    assert_eq!(common::names(&welcome.users), ["alice", "carol", "observer"].map(String::from).into());
    let ring = carol.request(json!({"type": "call", "to": "observer"})).await.unwrap();
    assert_eq!(ring["type"], "ringing", "{ring}");
    let ring = observer.expect_type("ring").await.unwrap();
    observer.send_json(&json!({"type": "reject", "callId": ring["callId"]})).await.unwrap();
    let listed = common::names(&observer.users().await.unwrap());
    assert_eq!(listed, ["alice", "observer"].map(String::from).into());

    // A listed user leaves: carol takes the place.
    alice.logout().await.unwrap();
    let frames = presence_is(&mut observer, &["carol", "observer"]).await;
    assert!(frames.iter().any(|p| strings(p, "left") == ["alice"]), "{frames:?}");
    assert!(frames.iter().any(|p| has_entry(p, "joined", "carol", "idle")), "{frames:?}");
    server.shutdown().await;
}

/// Logs in asking for compact presence and returns the client and the raw `welcome`.
async fn login_compact(server: &TestServer, name: &str) -> (Client, Value) {
    let mut client = server.connect().await;
    let welcome = client.login_with(json!({"type": "login", "name": name, "presence": "compact"})).await.unwrap();
    (client, welcome.raw)
}

#[tokio::test]
async fn compact_presence_sends_names_grouped_by_status() {
    let server = TestServer::start().await;
    let (mut alice, _bob, call_id) = alice_calls_bob(&server).await;
    let _carol = server.login("carol").await;
    let (mut observer, welcome) = login_compact(&server, "observer").await;
    // The snapshot may be a tick old, so carol may come in the next delta instead; the others are listed already.
    assert!(welcome.get("users").is_none(), "{welcome}");
    let mut in_call = strings(&welcome, "inCall");
    in_call.sort();
    assert_eq!(in_call, ["alice", "bob"], "{welcome}");
    assert!(strings(&welcome, "idle").contains(&"observer".to_string()), "{welcome}");
    presence_is(&mut observer, &["alice", "bob", "carol", "observer"]).await;
    assert_eq!(view_status(&observer, "alice"), Some(UserStatus::InCall));
    assert_eq!(view_status(&observer, "carol"), Some(UserStatus::Idle));

    // Deltas: names only, `idle`/`inCall`/`left`, never the full format's objects.
    alice.hangup(&call_id).await.unwrap();
    let mut dave = server.login("dave").await;
    let frames = presence_until(&mut observer, "alice and bob idle, dave online", |view| {
        view.get("alice").is_some_and(|u| u.status == UserStatus::Idle)
            && view.get("bob").is_some_and(|u| u.status == UserStatus::Idle)
            && view.contains_key("dave")
    })
    .await;
    for frame in &frames {
        for field in ["joined", "changed"] {
            assert!(frame.get(field).is_none(), "compact deltas carry no `{field}`: {frame}");
        }
        for field in ["idle", "inCall", "left"] {
            if let Some(items) = frame.get(field) {
                let items = items.as_array().unwrap();
                assert!(!items.is_empty() && items.iter().all(Value::is_string), "{frame}");
            }
        }
    }
    let idle: Vec<String> = frames.iter().flat_map(|f| strings(f, "idle")).collect();
    for name in ["alice", "bob", "dave"] {
        assert!(idle.contains(&name.to_string()), "{name} not announced idle: {frames:?}");
    }
    dave.logout().await.unwrap();
    let frames = presence_is(&mut observer, &["alice", "bob", "carol", "observer"]).await;
    assert!(frames.iter().any(|f| strings(f, "left") == ["dave"]), "{frames:?}");

    // `users` answers in the format the login asked for.
    let reply = reply_to(&mut observer, json!({"type": "users", "id": 9})).await;
    assert!(reply.get("users").is_none(), "{reply}");
    let mut idle = strings(&reply, "idle");
    idle.sort();
    assert_eq!(idle, ["alice", "bob", "carol", "observer"], "{reply}");
    assert_eq!(reply["inCall"], json!([]), "{reply}");
    server.shutdown().await;
}

#[tokio::test]
async fn full_and_compact_clients_see_the_same_lobby() {
    let server = TestServer::start().await;
    let mut full = server.login("full").await;
    let (mut compact, _) = login_compact(&server, "compact").await;
    let mut logged_in = Vec::new();
    for i in 0..20 {
        logged_in.push(server.login(&format!("user{i}")).await);
    }
    let mut expected: Vec<String> = (0..20).map(|i| format!("user{i}")).collect();
    expected.extend(["full".to_string(), "compact".to_string()]);
    let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
    let full_frames = presence_is(&mut full, &expected).await;
    let compact_frames = presence_is(&mut compact, &expected).await;
    let bytes = |frames: &[Value]| frames.iter().map(|f| f.to_string().len()).sum::<usize>();
    assert!(full_frames.iter().all(|f| f.get("joined").is_some()), "{full_frames:?}");
    assert!(compact_frames.iter().all(|f| f.get("joined").is_none()), "{compact_frames:?}");
    assert!(bytes(&compact_frames) < bytes(&full_frames), "{compact_frames:?} against {full_frames:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn an_unknown_presence_format_is_a_bad_request_and_the_login_can_be_retried() {
    let server = TestServer::start().await;
    let mut client = server.connect().await;
    let error = reply_to(&mut client, json!({"type": "login", "id": 1, "name": "alice", "presence": "tiny"})).await;
    assert_eq!(error["type"], "error", "{error}");
    assert_eq!(error["code"], "bad-request", "{error}");
    assert_eq!(error["id"], 1, "{error}");
    assert!(error["message"].as_str().unwrap().contains("compact"), "{error}");
    let welcome = client.login_with(json!({"type": "login", "name": "alice", "presence": "full"})).await.unwrap();
    assert!(welcome.raw.get("users").is_some(), "{}", welcome.raw);
    server.shutdown().await;
}
