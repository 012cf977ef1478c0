//! Smoke test with 1,000 concurrent clients: all log in, all agree on the lobby, some relay among themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{candidate, sdp_offer, TestServer};
use serde_json::json;
use switchboard_client::{Client, UserStatus};
use tokio::sync::Barrier;
use tokio::time::Instant;

const CLIENTS: usize = 1_000;
/// Clients that keep a full presence view and check it ends complete.
const WATCHERS: usize = 20;
/// Client i (i < PAIRS) relays to client i + CLIENTS / 2.
const PAIRS: usize = 100;
/// A liveness bound, not a speed target: a debug build on a busy 2-core machine needs about 20 s.
const BUDGET: Duration = Duration::from_secs(45);

fn name(i: usize) -> String {
    format!("load{i:04}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_clients() {
    let started = Instant::now();
    let server = TestServer::start().await;
    let url = server.url();
    let logged_in = Arc::new(Barrier::new(CLIENTS));
    let presence_done = Arc::new(Barrier::new(CLIENTS));
    let relayed = Arc::new(Barrier::new(CLIENTS));
    // How many clients got past each phase: connected, logged in, presence checked, users checked, relayed.
    let progress: Arc<[AtomicUsize; 5]> = Arc::new(Default::default());

    let mut tasks = Vec::with_capacity(CLIENTS);
    for i in 0..CLIENTS {
        let url = url.clone();
        let logged_in = logged_in.clone();
        let presence_done = presence_done.clone();
        let relayed = relayed.clone();
        let progress = progress.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = Client::connect(&url).await.unwrap_or_else(|e| panic!("client {i}: connect: {e}"));
            client.set_timeout(Duration::from_secs(15));
            // Watchers parse everything and keep a presence view; the others only look at what they wait for.
            client.set_light(i >= WATCHERS);
            progress[0].fetch_add(1, Ordering::Relaxed);
            let welcome = client.login(&name(i)).await.unwrap_or_else(|e| panic!("client {i}: login: {e}"));
            assert!(welcome.users.iter().any(|u| u.name == name(i)));
            progress[1].fetch_add(1, Ordering::Relaxed);
            logged_in.wait().await;

            // Watchers' presence views converge on the full lobby.
            if i < WATCHERS {
                let what = format!("client {i}: a complete presence view");
                let mut deadline_hit = false;
                while client.presence_view().len() < CLIENTS && !deadline_hit {
                    match client.recv_timeout(Duration::from_secs(10)).await {
                        Ok(incoming) => assert!(!incoming.is_close(), "{what}: closed"),
                        Err(_) => deadline_hit = true,
                    }
                }
                assert_eq!(client.presence_view().len(), CLIENTS, "{what}");
                // Coalesced: far fewer presence frames than logins.
                assert!(client.presence_frames() < CLIENTS / 4, "{what}: {} presence frames", client.presence_frames());
            }
            progress[2].fetch_add(1, Ordering::Relaxed);
            presence_done.wait().await;

            // The tick that completed the watchers' views also renewed the list that `users` replies with (it is
            // as of the last tick): now it is complete for every client.
            let users = client.users().await.unwrap_or_else(|e| panic!("client {i}: users: {e}"));
            assert_eq!(users.len(), CLIENTS, "client {i} sees {} users", users.len());
            assert!(users.iter().all(|u| u.status == UserStatus::Idle));
            progress[3].fetch_add(1, Ordering::Relaxed);

            // Some relay: i -> i + N/2 with an ack, and the target checks what it got.
            if i < PAIRS {
                let target = name(i + CLIENTS / 2);
                let ack = client
                    .request(json!({"type": "offer", "id": i, "to": target, "sdp": sdp_offer()}))
                    .await
                    .unwrap_or_else(|e| panic!("client {i}: offer: {e}"));
                assert_eq!(ack["type"], "ack");
                client.candidate(&target, candidate(1)).await.unwrap();
            }
            if (CLIENTS / 2..CLIENTS / 2 + PAIRS).contains(&i) {
                let from = name(i - CLIENTS / 2);
                let offer = client.expect_type("offer").await.unwrap_or_else(|e| panic!("client {i}: offer: {e}"));
                assert_eq!(offer["from"], json!(from));
                let cand = client.expect_type("candidate").await.unwrap();
                assert_eq!(cand["from"], json!(from));
            }
            progress[4].fetch_add(1, Ordering::Relaxed);
            relayed.wait().await;
            client
        }));
    }

    let mut clients = Vec::with_capacity(CLIENTS);
    for (i, task) in tasks.into_iter().enumerate() {
        let remaining = BUDGET.saturating_sub(started.elapsed());
        let client = tokio::time::timeout(remaining, task)
            .await
            .unwrap_or_else(|_| {
                let phases: Vec<usize> = progress.iter().map(|p| p.load(Ordering::Relaxed)).collect();
                panic!(
                    "client {i} did not finish within {BUDGET:?}; clients past connect, login, presence, users, \
                     relay: {phases:?}"
                )
            })
            .unwrap_or_else(|e| panic!("client {i} failed: {e}"));
        clients.push(client);
    }
    let elapsed = started.elapsed();
    assert!(elapsed < BUDGET, "the smoke test took {elapsed:?}");

    // The server is still responsive for a newcomer, who sees everyone.
    let mut late = server.connect().await;
    let welcome = late.login("latecomer").await.unwrap();
    assert_eq!(welcome.users.len(), CLIENTS + 1);
    drop(clients);
    server.shutdown().await;
}
