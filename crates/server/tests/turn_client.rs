//! Switchboard's own TURN client (used by the load generator and `switchboard check`) against the real server: the
//! long-term credential dance, relaying between two allocations over channels and Send indications, refusals.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use common::TestServer;
use switchboard_turn::client::{ClientError, TurnClient};

async fn turn_server() -> (TestServer, SocketAddr) {
    let server = TestServer::start_with(|config| {
        let turn = config.turn.as_mut().unwrap();
        turn.users = vec![("tool".into(), "pass".into())];
        turn.allow_peers = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let addr = server.turn_addr().unwrap();
    (server, addr)
}

fn client(server: SocketAddr, password: &str) -> TurnClient {
    TurnClient::new(UdpSocket::bind("127.0.0.1:0").unwrap(), server, "tool", password)
}

fn receive(socket: &UdpSocket) -> Vec<u8> {
    socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buffer = [0u8; 2048];
    let (len, _) = socket.recv_from(&mut buffer).expect("relayed data arrives");
    buffer[..len].to_vec()
}

#[tokio::test(flavor = "multi_thread")]
async fn two_allocations_relay_to_each_other_over_channels_and_indications() {
    let (server, addr) = turn_server().await;
    let result = tokio::task::spawn_blocking(move || {
        let mut alice = client(addr, "pass");
        let mut bob = client(addr, "pass");
        let mapped = alice.binding().unwrap();
        assert_eq!(mapped, alice.socket().local_addr().unwrap());
        let a = alice.allocate().unwrap();
        let b = bob.allocate().unwrap();
        assert_eq!(a.mapped, Some(alice.socket().local_addr().unwrap()));
        assert!(a.lifetime > 0 && a.relayed.ip().is_loopback() && a.relayed != b.relayed);

        alice.channel_bind(0x4000, b.relayed).unwrap();
        bob.create_permission(a.relayed.ip()).unwrap();
        // ChannelData from Alice reaches Bob as a Data indication (Bob bound no channel).
        alice.socket().send_to(&[0x40, 0x00, 0x00, 0x04, 1, 2, 3, 4], addr).unwrap();
        let data = receive(bob.socket());
        let message = switchboard_stun::Message::parse(&data).unwrap();
        assert_eq!(message.method(), switchboard_stun::Method::DATA);
        assert_eq!(message.data(), Some(&[1u8, 2, 3, 4][..]));
        assert_eq!(message.xor_address(switchboard_stun::attr::XOR_PEER_ADDRESS).unwrap(), Some(a.relayed));

        // A Send indication from Bob reaches Alice on her channel.
        bob.send_indication(a.relayed, b"pong").unwrap();
        assert_eq!(receive(alice.socket()), [&[0x40, 0x00, 0x00, 0x04][..], b"pong"].concat());

        assert_eq!(alice.refresh(0).unwrap(), 0);
        bob.refresh(0).unwrap();
    })
    .await;
    result.unwrap();
    // Two messages of 4 bytes, each relayed twice (client -> its relay -> the other relay -> that client): 4 relayed
    // packets, 16 bytes. Workers publish their counters every second.
    let deadline = tokio::time::Instant::now() + common::T;
    loop {
        let metrics = common::http::samples(&common::http::get(server.addr, "/metrics").await.body);
        let relayed = metrics.get("switchboard_turn_relayed_packets_total").copied().unwrap_or(0.0);
        let bytes = metrics.get("switchboard_turn_relayed_bytes_total").copied().unwrap_or(0.0);
        if relayed >= 4.0 {
            assert_eq!((relayed, bytes), (4.0, 16.0));
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "relayed packets never reached /metrics: {metrics:?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_password_and_a_denied_peer_are_refused_with_their_codes() {
    let (server, addr) = turn_server().await;
    let result = tokio::task::spawn_blocking(move || {
        let mut intruder = client(addr, "wrong");
        match intruder.allocate() {
            Err(ClientError::Refused { code: 401, .. }) => {}
            other => panic!("expected 401, got {other:?}"),
        }
        let mut alice = client(addr, "pass");
        alice.allocate().unwrap();
        match alice.create_permission("10.1.2.3".parse().unwrap()) {
            Err(ClientError::Refused { code: 403, .. }) => {}
            other => panic!("expected 403, got {other:?}"),
        }
    })
    .await;
    server.shutdown().await;
    result.unwrap();
}

#[test]
fn a_silent_server_times_out_within_the_deadline() {
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut client = client(silent.local_addr().unwrap(), "pass");
    client.set_deadline(Duration::from_millis(600));
    let started = std::time::Instant::now();
    assert!(matches!(client.binding(), Err(ClientError::Timeout(_))));
    // Sent at 0 ms and again at 250 ms; the next retransmission (750 ms) falls after the deadline.
    let mut buffer = [0u8; 256];
    silent.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let mut requests = 0;
    while silent.recv_from(&mut buffer).is_ok() {
        requests += 1;
    }
    assert_eq!(requests, 2, "the request and one retransmission");
    assert!(started.elapsed() < Duration::from_secs(3));
}

fn run_check(server: SocketAddr, extra: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["--turn-user", "tool:pass"])
        .args(extra)
        .args(["check", "--server", &server.to_string(), "--timeout", "3"])
        .output()
        .expect("switchboard check runs")
}

#[tokio::test(flavor = "multi_thread")]
async fn switchboard_check_relays_both_ways_and_names_a_denied_peer() {
    let (server, addr) = turn_server().await;
    let ok = tokio::task::spawn_blocking(move || run_check(addr, &[])).await.unwrap();
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(ok.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&ok.stderr));
    assert!(stdout.contains("ok  relay -> peer"), "{stdout}");
    assert!(stdout.contains("ok  peer -> relay -> client"), "{stdout}");
    server.shutdown().await;

    // Loopback peers are denied by default: the check fails at CreatePermission and says why.
    let strict = TestServer::start_with(|config| {
        config.turn.as_mut().unwrap().users = vec![("tool".into(), "pass".into())];
    })
    .await;
    let addr = strict.turn_addr().unwrap();
    let denied = tokio::task::spawn_blocking(move || run_check(addr, &[])).await.unwrap();
    let stderr = String::from_utf8_lossy(&denied.stderr);
    assert!(!denied.status.success());
    assert!(stderr.contains("(403)") && stderr.contains("--turn-allow-peer"), "{stderr}");

    // A wrong password fails at Allocate with 401.
    let wrong = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args(["--turn-user", "tool:nope", "check", "--server", &addr.to_string()])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(!wrong.status.success());
    assert!(stderr.contains("TURN Allocate failed") && stderr.contains("401"), "{stderr}");
    strict.shutdown().await;
}
