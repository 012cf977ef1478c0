//! The built-in STUN/TURN server against coturn's independent clients (`turnutils_stunclient`, `turnutils_uclient`,
//! with `turnutils_peer` as the echo peer), all on 127.0.0.1. The Debian package `coturn` provides them; the test
//! script installs it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::UdpSocket;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::TestServer;

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// An echo peer on a free loopback port, killed on drop.
struct Peer {
    child: Child,
    port: u16,
}

impl Peer {
    fn start() -> Self {
        let port = free_udp_port();
        let child = Command::new("turnutils_peer")
            .args(["-p", &port.to_string(), "-L", "127.0.0.1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("turnutils_peer (Debian package coturn) must be installed");
        std::thread::sleep(Duration::from_millis(200));
        Self { child, port }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `turnutils_uclient` with `args` against the TURN port, bounded in time; returns its output.
async fn uclient(turn_port: u16, args: &[&str]) -> String {
    let mut command = tokio::process::Command::new("turnutils_uclient");
    command.args(args).args(["-p", &turn_port.to_string(), "127.0.0.1"]).kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("turnutils_uclient did not finish in 60 s")
        .expect("turnutils_uclient (Debian package coturn) must be installed");
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

fn sent_received_lost(output: &str) -> (u64, u64, String) {
    let totals = output.lines().rev().find(|l| l.contains("start_mclient: tot_send_msgs=")).unwrap_or_default();
    let number = |key: &str| -> u64 {
        totals
            .split(key)
            .nth(1)
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
            .unwrap_or(0)
    };
    let lost = output.lines().rev().find(|l| l.contains("Total lost packets")).unwrap_or_default().to_owned();
    (number("tot_send_msgs="), number("tot_recv_msgs="), lost)
}

async fn turn_server(tune: impl FnOnce(&mut switchboard_server::Config)) -> (TestServer, u16) {
    let server = TestServer::start_with(|config| {
        let turn = config.turn.as_mut().unwrap();
        turn.users = vec![("tool".into(), "pass".into())];
        turn.secrets = vec!["s3cret".into()];
        turn.allow_peers = vec!["127.0.0.1/32".parse().unwrap()];
        tune(config);
    })
    .await;
    let port = server.turn_addr().unwrap().port();
    (server, port)
}

fn assert_no_loss(output: &str, expected: u64) {
    let (sent, received, lost) = sent_received_lost(output);
    assert_eq!((sent, received), (expected, expected), "{lost}\n{output}");
    assert!(lost.contains("Total lost packets 0 "), "{lost}");
}

#[tokio::test]
async fn stunclient_learns_its_reflexive_address() {
    let (server, port) = turn_server(|_| {}).await;
    let output = tokio::process::Command::new("turnutils_stunclient")
        .args(["-p", &port.to_string(), "127.0.0.1"])
        .output()
        .await
        .expect("turnutils_stunclient (Debian package coturn) must be installed");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("UDP reflexive addr: 127.0.0.1:"), "{text}");
    server.shutdown().await;
}

#[tokio::test]
async fn uclient_relays_over_udp_and_tcp_with_channels_send_indications_and_client_to_client_without_loss() {
    // turnutils_uclient leaves its allocations to expire, so the runs add up: allow them all.
    let (server, port) = turn_server(|config| config.turn.as_mut().unwrap().turn.max_allocations_per_user = 100).await;
    let peer = Peer::start();
    let peer_port = peer.port.to_string();
    let channels = uclient(
        port,
        &["-c", "-u", "tool", "-w", "pass", "-e", "127.0.0.1", "-r", &peer_port, "-n", "60", "-m", "3", "-l", "200"],
    )
    .await;
    assert_no_loss(&channels, 180);
    let indications = uclient(
        port,
        &[
            "-c",
            "-s",
            "-u",
            "tool",
            "-w",
            "pass",
            "-e",
            "127.0.0.1",
            "-r",
            &peer_port,
            "-n",
            "60",
            "-m",
            "3",
            "-l",
            "200",
        ],
    )
    .await;
    assert_no_loss(&indications, 180);
    let client_to_client =
        uclient(port, &["-c", "-y", "-u", "tool", "-w", "pass", "-n", "60", "-m", "4", "-l", "200"]).await;
    assert_no_loss(&client_to_client, 240);
    // The same over TCP to the server (the relay side stays UDP).
    let tcp = uclient(
        port,
        &[
            "-t",
            "-c",
            "-u",
            "tool",
            "-w",
            "pass",
            "-e",
            "127.0.0.1",
            "-r",
            &peer_port,
            "-n",
            "60",
            "-m",
            "3",
            "-l",
            "200",
        ],
    )
    .await;
    assert_no_loss(&tcp, 180);
    let tcp_indications = uclient(
        port,
        &[
            "-t",
            "-c",
            "-s",
            "-u",
            "tool",
            "-w",
            "pass",
            "-e",
            "127.0.0.1",
            "-r",
            &peer_port,
            "-n",
            "60",
            "-m",
            "3",
            "-l",
            "200",
        ],
    )
    .await;
    assert_no_loss(&tcp_indications, 180);
    let tcp_client_to_client =
        uclient(port, &["-t", "-c", "-y", "-u", "tool", "-w", "pass", "-n", "60", "-m", "4", "-l", "200"]).await;
    assert_no_loss(&tcp_client_to_client, 240);
    server.shutdown().await;
}

#[tokio::test]
async fn uclient_with_a_rest_secret_relays_and_bad_credentials_or_peers_are_refused() {
    let (server, port) = turn_server(|config| config.turn.as_mut().unwrap().turn.max_allocations_per_user = 100).await;
    let peer = Peer::start();
    let peer_port = peer.port.to_string();
    let rest = uclient(
        port,
        &["-c", "-W", "s3cret", "-u", "alice", "-e", "127.0.0.1", "-r", &peer_port, "-n", "40", "-m", "2", "-l", "200"],
    )
    .await;
    assert_no_loss(&rest, 80);
    let wrong = uclient(
        port,
        &["-c", "-u", "tool", "-w", "wrong", "-e", "127.0.0.1", "-r", &peer_port, "-n", "5", "-m", "1", "-l", "200"],
    )
    .await;
    assert!(wrong.contains("Cannot complete Allocation"), "{wrong}");
    let wrong_secret = uclient(
        port,
        &["-c", "-W", "other", "-u", "alice", "-e", "127.0.0.1", "-r", &peer_port, "-n", "5", "-m", "1", "-l", "200"],
    )
    .await;
    assert!(wrong_secret.contains("Cannot complete Allocation"), "{wrong_secret}");
    let denied = uclient(
        port,
        &["-c", "-u", "tool", "-w", "pass", "-e", "10.0.0.1", "-r", &peer_port, "-n", "5", "-m", "1", "-l", "200"],
    )
    .await;
    assert!(denied.contains("error 403"), "{denied}");
    server.shutdown().await;
}

#[tokio::test]
async fn allocations_beyond_the_user_quota_get_486() {
    let (server, port) = turn_server(|config| config.turn.as_mut().unwrap().turn.max_allocations_per_user = 1).await;
    let peer = Peer::start();
    let peer_port = peer.port.to_string();
    let over_quota = uclient(
        port,
        &["-c", "-u", "tool", "-w", "pass", "-e", "127.0.0.1", "-r", &peer_port, "-n", "5", "-m", "2", "-l", "200"],
    )
    .await;
    assert!(over_quota.contains("error 486"), "{over_quota}");
    server.shutdown().await;
}

#[tokio::test]
async fn uclient_relays_over_tls_on_the_turns_port() {
    let files = common::tls::CertFiles::new("turns");
    let (server, _) = turn_server(|config| {
        config.tls = Some((files.cert.clone(), files.key.clone()));
        let turn = config.turn.as_mut().unwrap();
        turn.tls_enabled = true;
        turn.tls_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let tls_port = server.turn_tls_addr().expect("turns: is on").port();
    let peer = Peer::start();
    let peer_port = peer.port.to_string();
    let output = uclient(
        tls_port,
        &[
            "-S",
            "-t",
            "-c",
            "-u",
            "tool",
            "-w",
            "pass",
            "-e",
            "127.0.0.1",
            "-r",
            &peer_port,
            "-n",
            "60",
            "-m",
            "3",
            "-l",
            "200",
        ],
    )
    .await;
    assert_no_loss(&output, 180);
    // The users' ICE servers include the turns: URL (the HTTP listener speaks TLS too, with the same certificate).
    let trust = common::tls::client_config(std::slice::from_ref(&files.der));
    let (welcome, _ws) = common::tls::wss_login(server.addr, trust, "alice").await;
    let urls = serde_json::to_string(&welcome["iceServers"]).unwrap();
    assert!(urls.contains(&format!("turns:127.0.0.1:{tls_port}")), "{urls}");
    server.shutdown().await;
}

#[tokio::test]
async fn a_tcp_client_that_never_reads_is_dropped() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (server, port) = turn_server(|_| {}).await;
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    // Binding requests need no credentials; their answers pile up in a socket nobody reads.
    let mut binding = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42];
    binding.extend_from_slice(&[7; 12]);
    let burst: Vec<u8> = binding.iter().copied().cycle().take(binding.len() * 200_000).collect();
    let _ = tokio::time::timeout(Duration::from_secs(20), stream.write_all(&burst)).await;
    // The server gives up on writing after its write timeout and closes: reading then ends, instead of hanging.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let mut sink = vec![0u8; 1 << 16];
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the stalled connection was never closed");
    server.shutdown().await;
}
