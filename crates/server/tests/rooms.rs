//! Rooms: join, joined, member-joined, leave, left, member-left, limits, room names, relay inside a room.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{sdp_offer, TestServer, QUIET};
use serde_json::json;
use switchboard_client::ErrorCode;

#[tokio::test]
async fn join_lists_members_in_join_order_and_tells_the_others() {
    let server = TestServer::start().await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    let mut carol = server.login("carol").await;

    let joined = alice.request(json!({"type": "join", "id": 6, "room": "standup"})).await.unwrap();
    assert_eq!(joined, json!({"type": "joined", "id": 6, "room": "standup", "members": ["alice"]}));
    assert_eq!(bob.join("standup").await.unwrap(), ["alice", "bob"]);
    assert_eq!(
        alice.expect_type("member-joined").await.unwrap(),
        json!({"type": "member-joined", "room": "standup", "name": "bob"})
    );
    assert_eq!(carol.join("standup").await.unwrap(), ["alice", "bob", "carol"]);
    for member in [&mut alice, &mut bob] {
        let event = member.expect_type("member-joined").await.unwrap();
        assert_eq!(event, json!({"type": "member-joined", "room": "standup", "name": "carol"}));
    }
    carol.expect_none_within(QUIET, "member-joined about itself", |i| i.kind() == Some("member-joined")).await.unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn joining_again_replies_joined_and_tells_nobody() {
    let server = TestServer::start().await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    alice.join("standup").await.unwrap();
    bob.join("standup").await.unwrap();
    alice.expect_type("member-joined").await.unwrap();
    assert_eq!(bob.join("standup").await.unwrap(), ["alice", "bob"]);
    alice.expect_none_within(QUIET, "a second member-joined", |i| i.kind() == Some("member-joined")).await.unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn room_names_follow_the_name_rules() {
    let server = TestServer::start().await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    for room in ["", " r", "r ", "a  b", "<b>", "<img src=x onerror=alert(1)>", "a\u{200b}b", &"r".repeat(33)] {
        let error = alice.request(json!({"type": "join", "id": "j", "room": room})).await.unwrap_err();
        assert_eq!(error.code(), Some(ErrorCode::InvalidRoom), "{room:?}: {error}");
    }
    let error = alice.request(json!({"type": "join", "id": "j"})).await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::BadRequest), "join without room: {error}");

    // Case-insensitive and NFC: "Café Talk" and "café talk" (decomposed) are the same room.
    let joined = alice.request(json!({"type": "join", "room": "Café Talk"})).await.unwrap();
    assert_eq!(joined["room"], "Café Talk");
    let joined = bob.request(json!({"type": "join", "room": "cafe\u{301} talk"})).await.unwrap();
    assert_eq!(joined["members"], json!(["alice", "bob"]), "{joined}");
    let event = alice.expect_type("member-joined").await.unwrap();
    assert_eq!(event["name"], "bob");
    server.shutdown().await;
}

#[tokio::test]
async fn leave_tells_the_others_and_leaving_twice_is_not_in_room() {
    let server = TestServer::start().await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    alice.join("standup").await.unwrap();
    bob.join("standup").await.unwrap();
    alice.expect_type("member-joined").await.unwrap();

    let left = bob.request(json!({"type": "leave", "id": 7, "room": "standup"})).await.unwrap();
    assert_eq!(left, json!({"type": "left", "id": 7, "room": "standup"}));
    assert_eq!(
        alice.expect_type("member-left").await.unwrap(),
        json!({"type": "member-left", "room": "standup", "name": "bob", "reason": "left"})
    );
    let error = bob.request(json!({"type": "leave", "id": 8, "room": "standup"})).await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::NotInRoom), "{error}");
    let error = bob.leave("nowhere").await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::NotInRoom), "{error}");
    assert_eq!(bob.join("standup").await.unwrap(), ["alice", "bob"], "rejoining puts bob last");
    server.shutdown().await;
}

#[tokio::test]
async fn empty_rooms_disappear() {
    let server = TestServer::start_with(|c| c.core.max_room_size = 2).await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    let mut carol = server.login("carol").await;
    alice.join("r").await.unwrap();
    bob.join("r").await.unwrap();
    alice.leave("r").await.unwrap();
    bob.leave("r").await.unwrap();
    // A fresh room of that name: carol is its first member.
    assert_eq!(carol.join("r").await.unwrap(), ["carol"]);
    server.shutdown().await;
}

#[tokio::test]
async fn logout_leaves_rooms_with_reason_left() {
    let server = TestServer::start_with(|c| c.core.resume_grace = std::time::Duration::from_secs(30)).await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    alice.join("r1").await.unwrap();
    alice.join("r2").await.unwrap();
    bob.join("r1").await.unwrap();
    bob.join("r2").await.unwrap();
    bob.logout().await.unwrap();
    let mut rooms = Vec::new();
    for _ in 0..2 {
        let event = alice.expect_type("member-left").await.unwrap();
        assert_eq!(event["name"], "bob");
        assert_eq!(event["reason"], "left");
        rooms.push(event["room"].as_str().unwrap().to_owned());
    }
    rooms.sort();
    assert_eq!(rooms, ["r1", "r2"]);
    server.shutdown().await;
}

#[tokio::test]
async fn room_full_at_max_room_size() {
    let server = TestServer::start_with(|c| c.core.max_room_size = 3).await;
    let mut clients = Vec::new();
    for name in ["a", "b", "c", "d"] {
        clients.push(server.login(name).await);
    }
    for client in &mut clients[..3] {
        client.join("small").await.unwrap();
    }
    let error = clients[3].request(json!({"type": "join", "id": 1, "room": "small"})).await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::RoomFull), "{error}");
    // A member rejoining a full room is fine; a place that frees up can be taken.
    assert_eq!(clients[2].join("small").await.unwrap(), ["a", "b", "c"]);
    clients[0].leave("small").await.unwrap();
    assert_eq!(clients[3].join("small").await.unwrap(), ["b", "c", "d"]);
    server.shutdown().await;
}

#[tokio::test]
async fn too_many_rooms_at_max_rooms_per_user() {
    let server = TestServer::start_with(|c| c.core.max_rooms_per_user = 2).await;
    let (mut alice, welcome) = server.login_welcome("alice").await;
    assert_eq!(welcome.limits.max_rooms_per_user, 2);
    alice.join("r1").await.unwrap();
    alice.join("r2").await.unwrap();
    let error = alice.request(json!({"type": "join", "id": 3, "room": "r3"})).await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::TooManyRooms), "{error}");
    // Rejoining one of its rooms is not a new room.
    alice.join("r2").await.unwrap();
    alice.leave("r1").await.unwrap();
    alice.join("r3").await.unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn relay_inside_a_room_carries_room_and_needs_both_members() {
    let server = TestServer::start().await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    let mut carol = server.login("carol").await;
    alice.join("mesh").await.unwrap();
    bob.join("mesh").await.unwrap();

    // Mesh convention: the joiner offers to every member already there.
    let ack = bob
        .request(json!({"type": "offer", "id": 1, "to": "alice", "room": "mesh", "callId": "m1", "sdp": sdp_offer()}))
        .await
        .unwrap();
    assert_eq!(ack["type"], "ack");
    let offer = alice.expect_type("offer").await.unwrap();
    assert_eq!(offer, json!({"type": "offer", "from": "bob", "room": "mesh", "callId": "m1", "sdp": sdp_offer()}));

    // `room` reaches the target spelled as the room was created, whatever the sender wrote.
    bob.send_json(&json!({"type": "candidate", "to": "alice", "room": "MESH", "candidate": common::candidate(2)}))
        .await
        .unwrap();
    assert_eq!(alice.expect_type("candidate").await.unwrap()["room"], "mesh");

    // The target is not a member.
    let error = alice
        .request(json!({"type": "offer", "id": 2, "to": "carol", "room": "mesh", "sdp": sdp_offer()}))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::NotInRoom), "{error}");
    // The sender is not a member.
    let error = carol
        .request(
            json!({"type": "candidate", "id": 3, "to": "alice", "room": "mesh", "candidate": common::candidate(1)}),
        )
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::NotInRoom), "{error}");
    // A room that does not exist.
    let error =
        alice.request(json!({"type": "end-of-candidates", "id": 4, "to": "bob", "room": "nowhere"})).await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::NotInRoom), "{error}");
    carol.expect_none_within(QUIET, "a relayed room offer", |i| i.kind() == Some("offer")).await.unwrap();
    server.shutdown().await;
}
