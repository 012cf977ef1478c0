//! Login, `hello`, `welcome`, name rules (NFC, case-insensitive uniqueness, refused characters), name policies and
//! logout.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{names, TestServer, QUIET, T};
use serde_json::json;
use switchboard_client::{proto::close_code, ErrorCode, IceServer, Incoming, UserStatus};
use switchboard_core::NamePolicy;

#[tokio::test]
async fn server_says_nothing_before_the_first_frame_then_hello_precedes_welcome() {
    let server = TestServer::start_with(|c| {
        c.core.ice_servers =
            vec![IceServer { urls: vec!["stun:stun.example.org:3478".into()], username: None, credential: None }];
    })
    .await;
    let mut client = server.connect().await;
    assert!(client.try_recv_within(QUIET).await.unwrap().is_none(), "the server spoke before the client's first frame");

    client.send_json(&json!({"type": "login", "id": 1, "name": "alice", "protocol": 1})).await.unwrap();
    let hello = client.recv_timeout(T).await.unwrap();
    let hello = hello.raw().expect("hello is JSON").clone();
    assert_eq!(hello["type"], "hello", "first frame: {hello}");
    assert_eq!(hello["protocol"], 1);
    assert!(hello["server"].as_str().is_some_and(|s| s.starts_with("switchboard/")), "{hello}");

    let welcome = client.recv_timeout(T).await.unwrap().raw().cloned().unwrap();
    assert_eq!(welcome["type"], "welcome", "second frame: {welcome}");
    assert_eq!(welcome["id"], 1);
    assert_eq!(welcome["protocol"], 1);
    assert_eq!(welcome["name"], "alice");
    assert_eq!(welcome["resumed"], false);
    assert!(welcome["resumeToken"].as_str().is_some_and(|t| t.len() >= 16), "resume token too short: {welcome}");
    assert_eq!(welcome["users"], json!([{"name": "alice", "status": "idle"}]));
    assert_eq!(
        welcome["limits"],
        json!({"maxMessageBytes": 65536, "heartbeatMs": 20000, "resumeGraceMs": 500, "ringTimeoutMs": 30000,
               "maxRoomSize": 16, "maxRoomsPerUser": 8, "ratePerSecond": 100, "rateBurst": 200})
    );
    // The configured server first, then the built-in STUN and TURN with this user's own short-lived credentials.
    let ice = welcome["iceServers"].as_array().unwrap();
    assert_eq!(ice[0], json!({"urls": ["stun:stun.example.org:3478"]}));
    assert!(ice[1]["urls"][0].as_str().unwrap().starts_with("stun:127.0.0.1:"), "{welcome}");
    assert!(ice[2]["urls"][0].as_str().unwrap().starts_with("turn:127.0.0.1:"), "{welcome}");
    assert!(ice[2]["username"].as_str().unwrap().ends_with(":alice"), "{welcome}");
    assert!(ice[2]["credential"].as_str().is_some_and(|c| !c.is_empty()), "{welcome}");
    assert!(welcome.get("rooms").is_none() && welcome.get("call").is_none(), "fresh login has no rooms/call");
    server.shutdown().await;
}

#[tokio::test]
async fn hello_comes_first_even_when_the_first_frame_is_an_error() {
    let server = TestServer::start().await;
    let mut client = server.connect().await;
    client.send_json(&json!({"type": "users", "id": "u1"})).await.unwrap();
    let first = client.recv_timeout(T).await.unwrap();
    assert_eq!(first.kind(), Some("hello"), "{}", first.describe());
    let second = client.recv_timeout(T).await.unwrap();
    assert_eq!(second.error_code(), Some(ErrorCode::NotLoggedIn), "{}", second.describe());
    assert_eq!(second.id(), Some(&json!("u1")));
    // Exactly one hello per connection.
    client.send_json(&json!({"type": "ping", "id": 2})).await.unwrap();
    let pong = client.recv_timeout(T).await.unwrap();
    assert_eq!(pong.raw().cloned().unwrap(), json!({"type": "pong", "id": 2}));
    server.shutdown().await;
}

/// `welcome` lists everyone online as of the last presence tick, always with the new user; the presence deltas that
/// follow make the list complete.
#[tokio::test]
async fn welcome_is_a_recent_snapshot_that_presence_completes() {
    let server = TestServer::start().await;
    let mut alice = server.login("alice").await;
    let _bob = server.login("bob").await;
    let (mut carol, welcome) = server.login_welcome("carol").await;
    assert_eq!(welcome.name, "carol");
    assert!(!welcome.resumed);
    assert_eq!(welcome.protocol, 1);
    let listed = names(&welcome.users);
    assert!(listed.contains("carol"), "the new user is always included: {listed:?}");
    assert!(listed.is_subset(&["alice", "bob", "carol"].map(String::from).into()), "{listed:?}");
    assert!(welcome.users.iter().all(|u| u.status == UserStatus::Idle));
    // welcome + the following deltas converge to the true list, for the newcomer and for the others.
    common::presence_is(&mut carol, &["alice", "bob", "carol"]).await;
    common::presence_is(&mut alice, &["alice", "bob", "carol"]).await;
    // Once a tick has passed, a snapshot is complete.
    let (_dave, welcome) = server.login_welcome("dave").await;
    assert_eq!(names(&welcome.users), ["alice", "bob", "carol", "dave"].map(String::from).into());
    common::presence_is(&mut alice, &["alice", "bob", "carol", "dave"]).await;
    assert_eq!(names(&alice.users().await.unwrap()), ["alice", "bob", "carol", "dave"].map(String::from).into());
    server.shutdown().await;
}

/// `users` is a snapshot as of the last tick "like `welcome`", so it includes the requester even right after its
/// login (as `welcome` always includes the new user).
#[tokio::test]
async fn users_right_after_login_includes_the_requester() {
    let server = TestServer::start().await;
    let mut alice = server.login("alice").await;
    let users = alice.users().await.unwrap();
    assert!(names(&users).contains("alice"), "users right after alice's own login: {:?}", names(&users));
    server.shutdown().await;
}

#[tokio::test]
async fn requests_before_login_get_not_logged_in_but_ping_works() {
    let server = TestServer::start().await;
    let mut client = server.connect().await;
    let requests = [
        json!({"type": "users", "id": 1}),
        json!({"type": "call", "id": 2, "to": "bob"}),
        json!({"type": "join", "id": 3, "room": "r"}),
        json!({"type": "offer", "id": 4, "to": "bob", "sdp": common::sdp_offer()}),
        json!({"type": "logout", "id": 5}),
    ];
    for request in requests {
        let error = client.request(request.clone()).await.expect_err("must fail before login");
        assert_eq!(error.code(), Some(ErrorCode::NotLoggedIn), "{request}: {error}");
    }
    let pong = client.ping().await.unwrap();
    assert_eq!(pong["type"], "pong");
    // The connection is still usable for a login.
    client.login("alice").await.unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn second_login_gets_already_logged_in() {
    let server = TestServer::start().await;
    let mut alice = server.login("alice").await;
    let error = alice.login("alice2").await.expect_err("second login");
    assert_eq!(error.code(), Some(ErrorCode::AlreadyLoggedIn), "{error}");
    let error = alice.login("alice").await.expect_err("second login, same name");
    assert_eq!(error.code(), Some(ErrorCode::AlreadyLoggedIn), "{error}");
    // Still logged in as alice; alice2 never existed.
    let mut bob = server.login("bob").await;
    bob.offer("alice", common::sdp_offer()).await.unwrap();
    assert_eq!(alice.expect_type("offer").await.unwrap()["from"], "bob");
    let error = bob.request(json!({"type": "offer", "to": "alice2", "sdp": common::sdp_offer()})).await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::UnknownPeer), "{error}");
    server.shutdown().await;
}

#[tokio::test]
async fn login_protocol_version() {
    let server = TestServer::start().await;
    let mut client = server.connect().await;
    let error = client
        .login_with(json!({"type": "login", "name": "alice", "protocol": 2}))
        .await
        .expect_err("protocol 2 is not supported");
    assert_eq!(error.code(), Some(ErrorCode::UnsupportedProtocol), "{error}");
    // Without `protocol` the login is fine, and welcome states version 1.
    let welcome = client.login_with(json!({"type": "login", "name": "alice"})).await.unwrap();
    assert_eq!(welcome.protocol, 1);
    server.shutdown().await;
}

#[tokio::test]
async fn invalid_names_are_refused_and_the_connection_stays_usable() {
    let server = TestServer::start().await;
    let mut client = server.connect().await;
    let bad = [
        "",
        " alice",
        "alice ",
        "a  b",
        "<img src=x onerror=alert(1)>",
        "<b>",
        "alice\"",
        "a/b",
        "a\u{200b}b",
        "a\nb",
        "a\tb",
        "bob\u{202e}",
        "\u{0}",
        "😀",
        &"x".repeat(33),
        &"é".repeat(33),
        &"x".repeat(5000),
    ];
    for (i, name) in bad.iter().enumerate() {
        let id = json!(format!("bad-{i}"));
        let error = client
            .login_with(json!({"type": "login", "id": id, "name": name}))
            .await
            .expect_err(&format!("{name:?} must be refused"));
        assert_eq!(error.code(), Some(ErrorCode::InvalidName), "{name:?}: {error}");
        match &error {
            switchboard_client::Error::Server { raw, .. } => assert_eq!(raw["id"], id),
            other => panic!("{other}"),
        }
    }
    // Nobody got in under any of those names.
    let welcome = client.login("alice").await.unwrap();
    assert_eq!(names(&welcome.users), ["alice".to_string()].into());
    server.shutdown().await;
}

#[tokio::test]
async fn valid_names_of_any_script_are_accepted_as_typed() {
    let server = TestServer::start().await;
    let thirty_two = "x".repeat(32);
    let good = ["Zoë", "李小龍", "Mary Ann", "jean-luc.picard", "Bob_2", "Ωμέγα", "a", thirty_two.as_str()];
    let mut clients = Vec::new();
    for name in good {
        let (client, welcome) = server.login_welcome(name).await;
        assert_eq!(welcome.name, name);
        clients.push(client);
    }
    common::presence_is(&mut clients[0], &good).await;
    let users = clients[0].users().await.unwrap();
    assert_eq!(names(&users), good.iter().map(|s| s.to_string()).collect());
    server.shutdown().await;
}

#[tokio::test]
async fn names_are_normalised_to_nfc_and_unique_case_insensitively() {
    let server = TestServer::start().await;
    // "Zoe" + combining diaeresis is stored and shown as the precomposed "Zoë".
    let (mut zoe, welcome) = server.login_welcome("Zoe\u{308}").await;
    assert_eq!(welcome.name, "Zo\u{eb}");
    assert_eq!(names(&welcome.users), ["Zo\u{eb}".to_string()].into());
    for taken in ["Zo\u{eb}", "zo\u{eb}", "ZO\u{cb}", "zoe\u{308}"] {
        let mut other = server.connect().await;
        let error = other.login(taken).await.expect_err(&format!("{taken:?} is taken"));
        assert_eq!(error.code(), Some(ErrorCode::NameTaken), "{taken:?}: {error}");
    }

    let (_alice, welcome) = server.login_welcome("Alice").await;
    assert_eq!(welcome.name, "Alice", "names are shown as typed");
    let mut other = server.connect().await;
    let error = other.login("alice").await.expect_err("alice is Alice");
    assert_eq!(error.code(), Some(ErrorCode::NameTaken), "{error}");
    let error = other.login("ALICE").await.expect_err("ALICE is Alice");
    assert_eq!(error.code(), Some(ErrorCode::NameTaken), "{error}");
    // The refused connection can still log in under a free name, and sees Alice as she typed it.
    other.login("bob").await.unwrap();
    common::presence_is(&mut other, &["Alice", "Zo\u{eb}", "bob"]).await;
    common::presence_is(&mut zoe, &["Alice", "Zo\u{eb}", "bob"]).await;
    server.shutdown().await;
}

#[tokio::test]
async fn name_taken_keeps_the_first_owner_connected() {
    let server = TestServer::start().await;
    let mut first = server.login("alice").await;
    let mut second = server.connect().await;
    let error = second.login("alice").await.expect_err("taken");
    assert_eq!(error.code(), Some(ErrorCode::NameTaken));
    // The first owner is unaffected.
    assert_eq!(first.ping().await.unwrap()["type"], "pong");
    first.expect_none_within(QUIET, "being closed", Incoming::is_close).await.unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn replace_policy_closes_the_old_connection_with_4001_and_ends_its_session() {
    let server = TestServer::start_with(|c| c.core.name_policy = NamePolicy::Replace).await;
    let mut old = server.login("alice").await;
    let mut carol = server.login("carol").await;
    let mut dave = server.login("dave").await;
    let mut erin = server.login("erin").await;
    common::presence_is(&mut erin, &["alice", "carol", "dave", "erin"]).await;
    // The old session is in a room with dave and in a call with carol.
    old.join("standup").await.unwrap();
    dave.join("standup").await.unwrap();
    old.expect_type("member-joined").await.unwrap();
    let call_id = old.call("carol").await.unwrap();
    carol.expect_type("ring").await.unwrap();
    carol.accept(&call_id).await.unwrap();
    old.expect_type("accepted").await.unwrap();

    let (mut new, welcome) = server.login_welcome("ALICE").await;
    assert_eq!(welcome.name, "ALICE");
    assert!(!welcome.resumed);
    assert!(welcome.rooms.is_empty() && welcome.call.is_none(), "the new login starts a fresh session");
    let (code, _) = old.expect_close().await.unwrap();
    assert_eq!(code, Some(close_code::REPLACED));
    // Observers see the old spelling leave and the new one join.
    let frames = common::presence_is(&mut erin, &["ALICE", "carol", "dave", "erin"]).await;
    assert!(frames.iter().any(|p| common::strings(p, "left").contains(&"alice".to_string())), "{frames:?}");
    assert!(frames.iter().any(|p| common::has_entry(p, "joined", "ALICE", "idle")), "{frames:?}");

    // The old session's call and room membership ended.
    let hangup = carol.expect_type("hangup").await.unwrap();
    assert_eq!(hangup["callId"], json!(call_id));
    let left = dave.expect_type("member-left").await.unwrap();
    assert_eq!((left["room"].as_str(), left["name"].as_str()), (Some("standup"), Some("alice")));
    // The new alice is free to call carol.
    new.call("carol").await.unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn logout_acks_closes_with_4004_and_frees_the_name_at_once() {
    let server = TestServer::start_with(|c| c.core.resume_grace = Duration::from_secs(30)).await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    common::presence_is(&mut bob, &["alice", "bob"]).await;
    let token = alice.resume_token().unwrap().to_owned();

    let ack = alice.request(json!({"type": "logout", "id": 42})).await.unwrap();
    assert_eq!(ack, json!({"type": "ack", "id": 42}));
    let (code, _) = alice.expect_close().await.unwrap();
    assert_eq!(code, Some(close_code::LOGGED_OUT));

    // No grace period: bob sees alice leave well before the 30 s grace, the name is free, the token is dead.
    let frames = common::presence_is(&mut bob, &["bob"]).await;
    assert!(frames.iter().any(|p| common::strings(p, "left") == ["alice"]), "{frames:?}");
    let mut again = server.connect().await;
    let error = again.login_resume(&token).await.expect_err("token of a logged-out session");
    assert_eq!(error.code(), Some(ErrorCode::ResumeFailed), "{error}");
    again.login("alice").await.unwrap();
    server.shutdown().await;
}
