//! Graceful shutdown: v1 clients get `goaway`, messages still flow while they leave, the rest are closed with 1001
//! once `shutdown-timeout` is over; tutorial clients get 1001 at once. And the real binary does the same on SIGTERM,
//! then exits 0.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{sdp_offer, TestServer, T};
use switchboard_client::proto::close_code;
use switchboard_client::{Client, Incoming};

#[tokio::test]
async fn clients_get_goaway_then_1001_and_the_server_ends_within_the_timeout() {
    let drain = Duration::from_millis(600);
    let server = TestServer::start_with(|c| c.shutdown_timeout = drain).await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    let tom = server.tutorial("tom").await;

    let shutdown = tokio::spawn(server.shutdown_timed());
    let goaway = alice.expect_type("goaway").await.unwrap();
    assert_eq!(goaway["reason"], "shutdown");
    let hint = goaway["reconnectAfterMs"].as_u64().unwrap();
    assert!((60..=600).contains(&hint), "reconnect hint {hint} ms is within the drain");
    bob.expect_type("goaway").await.unwrap();
    // Tutorial pages know no goaway: they are closed at once.
    let (code, _) = tom.into_inner().expect_close().await.unwrap();
    assert_eq!(code, Some(close_code::GOING_AWAY));

    // During the drain, messages in flight still arrive.
    alice.offer("bob", sdp_offer()).await.unwrap();
    assert_eq!(bob.expect_type("offer").await.unwrap()["from"], "alice");

    // Nobody leaves: at the end of the drain both are closed with 1001, goaway having been the last frame before.
    for client in [&mut alice, &mut bob] {
        let end = client
            .expect("the close", |incoming| match incoming {
                Incoming::Close { code, .. } => Some(*code),
                other => {
                    assert_ne!(other.kind(), Some("goaway"), "a second goaway");
                    None
                }
            })
            .await
            .unwrap();
        assert_eq!(end, Some(close_code::GOING_AWAY));
    }
    let took = tokio::time::timeout(T, shutdown).await.expect("the shutdown did not end").unwrap();
    assert!(took >= drain, "clients that stay get the whole drain ({took:?})");
    assert!(
        took < drain + Duration::from_secs(4),
        "the shutdown ends within the timeout and the close grace ({took:?})"
    );
}

#[tokio::test]
async fn clients_that_leave_on_goaway_end_the_drain_early() {
    let server = TestServer::start_with(|c| c.shutdown_timeout = Duration::from_secs(30)).await;
    let mut alice = server.login("alice").await;
    let shutdown = tokio::spawn(server.shutdown_timed());
    alice.expect_type("goaway").await.unwrap();
    alice.close(1000, "bye").await.unwrap();
    let took = tokio::time::timeout(T, shutdown).await.expect("the drain did not end when the last client left");
    assert!(took.unwrap() < Duration::from_secs(30));
}

/// Runs the real binary, logs in, sends SIGTERM, and expects goaway, a 1001 close and exit status 0.
#[tokio::test]
async fn the_binary_drains_on_sigterm_and_exits_0() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["--http", "127.0.0.1:0", "--turn", "off", "--shutdown-timeout", "300ms"])
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot start the switchboard binary");
    let stdout = child.stdout.take().unwrap();
    // The binary prints its address; log lines may come before it.
    let (lines, found) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("open http://").nth(1) {
                let _ = lines.send(rest.split_whitespace().next().unwrap_or_default().to_owned());
            }
        }
    });
    let addr = match found.recv_timeout(T) {
        Ok(addr) => addr,
        Err(_) => {
            let _ = child.kill();
            panic!("the binary did not print its address");
        }
    };
    let mut client = Client::connect(&format!("ws://{addr}/ws")).await.unwrap();
    client.login("alice").await.unwrap();

    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let goaway = client.expect_type("goaway").await;
    let close = client.expect_close().await;
    let deadline = std::time::Instant::now() + T;
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break Some(exit);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(goaway.unwrap()["reason"], "shutdown");
    assert_eq!(close.unwrap().0, Some(close_code::GOING_AWAY));
    let exit = exit.expect("the binary did not exit within the timeout");
    assert_eq!(exit.code(), Some(0), "{exit:?}");
}
