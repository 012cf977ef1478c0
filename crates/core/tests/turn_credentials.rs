//! Each logged-in user gets its own short-lived TURN credentials in `welcome`, and fresh ones before they expire.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::Value;
use switchboard_core::{Config, ConnId, Input, Output, Signaling, TurnAuth};
use switchboard_proto::IceServer;
use switchboard_turn::Credentials;

const UNIX_AT_START: u64 = 1_800_000_000;

fn frames(core: &mut Signaling, conn: ConnId) -> Vec<Value> {
    let mut out = Vec::new();
    while let Some(output) = core.poll_output() {
        if let Output::Send { conn: to, frame } = output {
            if to == conn {
                out.push(serde_json::from_slice(&frame.to_bytes()).unwrap());
            }
        }
    }
    out
}

#[test]
fn users_get_their_own_credentials_and_fresh_ones_before_expiry() {
    let start = Instant::now();
    let credentials = Credentials::new(vec!["s3cret".into()], HashMap::new());
    let config = Config {
        ice_servers: vec![IceServer {
            urls: vec!["stun:turn.example.org:3478".into()],
            username: None,
            credential: None,
        }],
        turn: Some(TurnAuth {
            credentials: credentials.clone(),
            ttl: Duration::from_secs(3600),
            urls: vec!["turn:turn.example.org:3478?transport=udp".into(), "turns:turn.example.org:5349".into()],
        }),
        ..Config::default()
    };
    let mut core = Signaling::new(config, [1; 32]).with_wall_clock(start, UNIX_AT_START);
    let conn = ConnId(1);
    core.handle_input(start, Input::Connected(conn));
    core.handle_input(start, Input::Text(conn, r#"{"type":"login","name":"alice"}"#));
    let welcome = frames(&mut core, conn).into_iter().find(|f| f["type"] == "welcome").unwrap();
    let servers = welcome["iceServers"].as_array().unwrap();
    assert_eq!(servers[0], serde_json::json!({"urls": ["stun:turn.example.org:3478"]}));
    let turn = &servers[1];
    let username = turn["username"].as_str().unwrap();
    assert_eq!(username, format!("{}:alice", UNIX_AT_START + 3600));
    let password = turn["credential"].as_str().unwrap();
    assert!(credentials.passwords(username, UNIX_AT_START).contains(&password.to_owned()));
    assert!(credentials.passwords(username, UNIX_AT_START + 3601).is_empty(), "short-lived");

    // At 3/4 of the lifetime, fresh credentials arrive.
    let later = start + Duration::from_secs(2700);
    core.handle_timeout(later);
    let update = frames(&mut core, conn).into_iter().find(|f| f["type"] == "ice-servers").unwrap();
    let fresh = update["iceServers"][1]["username"].as_str().unwrap();
    assert_eq!(fresh, format!("{}:alice", UNIX_AT_START + 2700 + 3600));
    assert_eq!(core.poll_timeout().map(|t| t > later), Some(true), "and again later");
}
