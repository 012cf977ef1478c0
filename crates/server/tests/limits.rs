//! Connection-level limits: the connection cap and the login deadline.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{TestServer, T};
use serde_json::json;
use switchboard_client::Client;

#[tokio::test]
async fn connections_beyond_the_limit_are_refused_and_served_again_once_one_leaves() {
    let server = TestServer::start_with(|config| config.max_connections = 3).await;
    let mut kept = Vec::new();
    for name in ["a", "b", "c"] {
        kept.push(server.login(name).await);
    }
    // The fourth TCP connection is closed at once, before any HTTP exchange.
    let refused = tokio::time::timeout(T, Client::connect(&server.url())).await.unwrap();
    assert!(refused.is_err(), "a connection over the limit must fail");
    // Those within the limit are unaffected.
    assert_eq!(kept[0].ping().await.unwrap()["type"], "pong");
    // One leaves; its slot is free again.
    let mut leaving = kept.pop().unwrap();
    leaving.logout().await.unwrap();
    let _ = leaving.expect_close().await;
    let deadline = tokio::time::Instant::now() + T;
    loop {
        if let Ok(mut client) = Client::connect(&server.url()).await {
            client.login("d").await.unwrap();
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the freed slot was never reused");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.shutdown().await;
}

#[tokio::test]
async fn a_connection_that_never_logs_in_is_closed_with_1008() {
    let server = TestServer::start_with(|config| config.core.login_timeout = Duration::from_millis(300)).await;
    let mut idle = server.connect().await;
    let mut pinging = server.connect().await;
    let mut user = server.login("alice").await;
    // Pings do not count as logging in.
    assert_eq!(pinging.request(json!({"type": "ping"})).await.unwrap()["type"], "pong");
    let (code, reason) = idle.expect_close().await.unwrap();
    assert_eq!(code, Some(1008), "{reason}");
    let (code, _) = pinging.expect_close().await.unwrap();
    assert_eq!(code, Some(1008));
    // A logged-in user is not affected by the deadline.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(user.ping().await.unwrap()["type"], "pong");
    server.shutdown().await;
}
