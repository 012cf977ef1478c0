//! Abuse over real sockets on loopback: slow-loris upgrades, the per-address connection cap and attempt rate (clients
//! bind chosen source addresses in 127.0.0.0/8 so that tests do not share a budget), a message flood beside a pair
//! that keeps relaying, 100k-deep and huge JSON, 100,000 garbage datagrams at the TURN port beside a working
//! allocation, and the server's memory after all of it (the real binary as a child process, its RSS from /proc).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use common::{sdp_offer, TestServer, T};
use serde_json::json;
use switchboard_client::proto::close_code;
use switchboard_client::{Client, ErrorCode, Incoming};
use switchboard_stun::{attr, long_term_key_md5, Class, Message, MessageWriter, Method, TransactionId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};

fn source(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

/// A TCP connection to `addr` from `from` (any free port).
async fn connect_from(from: IpAddr, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    tokio::time::timeout(T, socket.connect(addr)).await.map_err(|_| std::io::ErrorKind::TimedOut)?
}

/// A v1 client connected from `from`; Err when the server refuses the connection.
async fn client_from(from: IpAddr, server: &TestServer) -> Result<Client, String> {
    let stream = connect_from(from, server.addr).await.map_err(|e| e.to_string())?;
    Client::connect_stream(&server.url(), stream).await.map_err(|e| e.to_string())
}

/// Waits until the server ends `stream` (EOF or reset); false if it is still open after `T`.
async fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 256];
    tokio::time::timeout(T, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// `alice` and `bob` still relay to each other, in order.
async fn pair_relays(alice: &mut Client, bob: &mut Client, rounds: u32) {
    for n in 0..rounds {
        alice.candidate("bob", common::candidate(n)).await.unwrap();
    }
    for n in 0..rounds {
        let candidate = bob.expect_type("candidate").await.unwrap();
        assert_eq!(candidate["candidate"], common::candidate(n), "relay out of order or lost");
    }
    bob.offer("alice", sdp_offer()).await.unwrap();
    assert_eq!(alice.expect_type("offer").await.unwrap()["from"], "bob");
}

#[tokio::test]
async fn slow_loris_upgrades_are_dropped_at_the_handshake_timeout_and_real_users_are_served() {
    let server = TestServer::start_with(|config| {
        config.limits.handshake_timeout = Duration::from_millis(800);
        config.limits.max_per_ip = 1000;
    })
    .await;
    // 60 connections that dribble an upgrade request one header byte at a time, 20 that send nothing, 20 that send
    // a complete request line and then stall.
    let mut tasks = Vec::new();
    for n in 0..100u32 {
        let addr = server.addr;
        tasks.push(tokio::spawn(async move {
            let mut stream = connect_from(source(2), addr).await.unwrap();
            match n % 5 {
                0 => {}
                1 => stream.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n").await.unwrap(),
                _ => {
                    stream.write_all(b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nX-Slow: ").await.unwrap();
                    let started = tokio::time::Instant::now();
                    // One byte every 50 ms, for at most T: the server must have dropped the connection by then.
                    while started.elapsed() < T {
                        if stream.write_all(b"a").await.is_err() {
                            break;
                        }
                        let mut buf = [0u8; 64];
                        let read = tokio::time::timeout(Duration::from_millis(50), stream.read(&mut buf)).await;
                        if let Ok(Ok(0) | Err(_)) = read {
                            break;
                        }
                    }
                }
            }
            let started = tokio::time::Instant::now();
            assert!(closed_by_server(&mut stream).await, "a slow-loris connection was never dropped");
            started.elapsed()
        }));
    }
    // Meanwhile real users log in, call and relay.
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    let call_id = alice.call("bob").await.unwrap();
    bob.expect_type("ring").await.unwrap();
    bob.accept(&call_id).await.unwrap();
    alice.expect_type("accepted").await.unwrap();
    pair_relays(&mut alice, &mut bob, 50).await;
    for task in tasks {
        tokio::time::timeout(T * 2, task).await.expect("slow-loris task hung").unwrap();
    }
    let stats = server.edge_stats();
    assert!(stats.handshake_timeouts >= 100, "every stalled request head counts: {stats:?}");
    // The users' own WebSockets are past their request heads: the timeout never touches them.
    pair_relays(&mut alice, &mut bob, 5).await;
    server.shutdown().await;
}

#[tokio::test]
async fn connections_per_source_address_are_capped() {
    let server = TestServer::start_with(|config| {
        config.limits.max_per_ip = 3;
        config.limits.rate_per_ip = 0;
    })
    .await;
    let mut held = Vec::new();
    for n in 0..3 {
        let mut client = client_from(source(3), &server).await.unwrap();
        client.login(&format!("cap{n}")).await.unwrap();
        held.push(client);
    }
    let refused = client_from(source(3), &server).await;
    assert!(refused.is_err(), "the fourth connection from one address must be refused");
    // Another address is not affected, nor are the three.
    let mut other = client_from(source(4), &server).await.unwrap();
    other.login("other").await.unwrap();
    assert_eq!(held[0].ping().await.unwrap()["type"], "pong");
    // One leaves: its address may connect again.
    let mut leaving = held.pop().unwrap();
    leaving.logout().await.unwrap();
    let _ = leaving.expect_close().await;
    drop(leaving);
    let deadline = tokio::time::Instant::now() + T;
    loop {
        if let Ok(mut client) = client_from(source(3), &server).await {
            client.login("cap-again").await.unwrap();
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the freed place was never given back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(server.edge_stats().refused_per_ip >= 1);
    // Scraped from 127.0.0.1, an address the test does not cap.
    assert!(common::http::metric(server.addr, "switchboard_connections_refused_total{reason=\"per-ip\"}").await >= 1.0);
    server.shutdown().await;
}

#[tokio::test]
async fn connection_attempts_per_source_address_are_rate_limited() {
    let server = TestServer::start_with(|config| {
        config.limits.max_per_ip = 0;
        config.limits.rate_per_ip = 2;
        config.limits.burst_per_ip = 4;
    })
    .await;
    // Attempts count whether or not they become WebSockets: plain TCP connections spend the burst.
    for _ in 0..4 {
        let mut client = client_from(source(5), &server).await.unwrap();
        client.close(1000, "").await.unwrap();
    }
    let mut refused = connect_from(source(5), server.addr).await.unwrap();
    assert!(closed_by_server(&mut refused).await, "the fifth attempt within the burst must be closed at once");
    assert!(client_from(source(6), &server).await.is_ok(), "another address has its own budget");
    assert!(server.edge_stats().refused_rate >= 1, "{:?}", server.edge_stats());
    // Tokens come back at 2 per second.
    let deadline = tokio::time::Instant::now() + T;
    loop {
        if let Ok(mut client) = client_from(source(5), &server).await {
            client.login("back").await.unwrap();
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the rate limit never let the address back in");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.shutdown().await;
}

#[tokio::test]
async fn a_message_flood_is_limited_and_closed_while_another_pair_keeps_relaying() {
    let server = TestServer::start().await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    let mut victim = server.login("victim").await;
    let mut flooder = server.login("flooder").await;
    let flood = tokio::spawn(async move {
        let offer = json!({"type": "offer", "to": "victim", "sdp": sdp_offer()}).to_string();
        let mut sent = 0u32;
        for _ in 0..20_000 {
            if flooder.send_text(offer.clone()).await.is_err() {
                break;
            }
            sent += 1;
        }
        // Whatever the flooder reads now: rate-limited errors, then its close.
        let mut rate_limited = 0;
        let close = loop {
            match flooder.recv_timeout(T).await {
                Ok(Incoming::Close { code, .. }) => break code,
                Ok(incoming) if incoming.error_code() == Some(ErrorCode::RateLimited) => rate_limited += 1,
                Ok(_) => {}
                Err(error) => break error.close_code(),
            }
        };
        (sent, rate_limited, close)
    });
    // Well within alice's own rate budget (burst 200, her login included): at 200 candidates her last one was
    // refused whenever all this ran within the 10 ms one token takes to come back, and bob waited for it in vain.
    pair_relays(&mut alice, &mut bob, 100).await;
    let (sent, rate_limited, close) = tokio::time::timeout(T * 4, flood).await.unwrap().unwrap();
    // Rate-limited errors count as strikes: after strikeBurst of them the flooder is closed with 1008 (or, if it
    // stopped reading long enough, as a slow consumer).
    assert!(
        matches!(close, Some(close_code::POLICY_VIOLATION | close_code::SLOW_CONSUMER)),
        "the flooder is closed (sent {sent}, {rate_limited} rate-limited, close {close:?})"
    );
    assert!(rate_limited >= 1, "the flooder was told it is rate-limited");
    // The victim got at most the burst plus the sustained rate of the flood.
    let offers = victim.drain(Duration::from_millis(300)).await.unwrap();
    let from_flooder = offers.iter().filter(|i| i.kind() == Some("offer")).count();
    assert!(from_flooder <= 1_000, "the rate limit let {from_flooder} offers through");
    pair_relays(&mut alice, &mut bob, 20).await;
    server.shutdown().await;
}

#[tokio::test]
async fn deep_and_huge_json_get_typed_errors_or_1009_and_harm_nobody() {
    let server = TestServer::start_with(|config| config.core.max_message_bytes = 512 * 1024).await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    let mut attacker = server.login("attacker").await;
    let depth = 100_000;
    for frame in [
        "[".repeat(depth),
        format!("{}{}", "[".repeat(depth), "]".repeat(depth)),
        format!(r#"{{"type":"offer","to":"alice","sdp":{}{}}}"#, "[".repeat(depth), "]".repeat(depth)),
        format!(r#"{{"type":"login","name":{}"#, "{\"a\":".repeat(depth / 5)),
    ] {
        attacker.send_text(frame).await.unwrap();
        let error = attacker.expect_type("error").await.unwrap();
        assert_eq!(error["code"], "bad-json", "{error}");
    }
    // Over the message limit: too-large, the connection stays.
    let big = json!({"type": "offer", "to": "alice", "sdp": {"type": "offer", "sdp": "v".repeat(600 * 1024)}});
    attacker.send_json(&big).await.unwrap();
    attacker.expect_error("too-large").await.unwrap();
    assert_eq!(attacker.ping().await.unwrap()["type"], "pong");
    // Over the transport limit: 1009.
    attacker.send_text(format!("[{}]", "1,".repeat(1024 * 1024))).await.unwrap();
    let (code, _) = attacker.expect_close().await.unwrap();
    assert_eq!(code, Some(close_code::MESSAGE_TOO_BIG));
    pair_relays(&mut alice, &mut bob, 10).await;
    alice.expect_none_within(common::QUIET, "anything from the attacker", |i| i.kind() == Some("offer")).await.unwrap();
    server.shutdown().await;
}

// --- TURN ---------------------------------------------------------------------------------------------------------

const REALM: &str = "switchboard";

/// A TURN client over UDP with long-term credentials.
struct TurnClient {
    socket: UdpSocket,
    server: SocketAddr,
    key: [u8; 16],
    user: String,
    nonce: String,
    next: u64,
}

impl TurnClient {
    fn tid(&mut self) -> TransactionId {
        self.next += 1;
        let mut id = [0u8; 12];
        id[4..].copy_from_slice(&self.next.to_be_bytes());
        TransactionId(id)
    }

    fn build(
        &self,
        method: Method,
        tid: TransactionId,
        signed: bool,
        attrs: impl FnOnce(&mut MessageWriter<'_>),
    ) -> Vec<u8> {
        let mut buf = Vec::new();
        let mut writer = MessageWriter::new(&mut buf, method, Class::Request, tid);
        attrs(&mut writer);
        if signed {
            writer.text(attr::USERNAME, &self.user).text(attr::REALM, REALM).text(attr::NONCE, &self.nonce);
            writer.integrity(&self.key).fingerprint();
        }
        writer.finish().unwrap();
        buf
    }

    /// Sends a request, retransmitting (UDP under a flood may drop), and returns the response with its id.
    async fn request(&mut self, method: Method, signed: bool, attrs: impl Fn(&mut MessageWriter<'_>)) -> Vec<u8> {
        let tid = self.tid();
        let request = self.build(method, tid, signed, |w| attrs(w));
        let mut buf = vec![0u8; 2048];
        for _ in 0..20 {
            self.socket.send_to(&request, self.server).await.unwrap();
            let wait = tokio::time::Instant::now() + Duration::from_millis(250);
            while let Ok(Ok((len, _))) = tokio::time::timeout_at(wait, self.socket.recv_from(&mut buf)).await {
                if let Ok(message) = Message::parse(&buf[..len]) {
                    if message.transaction_id() == tid {
                        return buf[..len].to_vec();
                    }
                }
            }
        }
        panic!("no answer to {method:?}");
    }

    async fn allocate(server: SocketAddr) -> (Self, SocketAddr) {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut client = Self {
            socket,
            server,
            key: long_term_key_md5("tool", REALM, "pass"),
            user: "tool".into(),
            nonce: String::new(),
            next: 0,
        };
        let challenge = client.request(Method::ALLOCATE, false, |w| {
            w.requested_transport(17);
        });
        let challenge = challenge.await;
        let message = Message::parse(&challenge).unwrap();
        assert_eq!(message.error_code().unwrap().map(|(code, _)| code), Some(401));
        client.nonce = message.nonce().unwrap().unwrap().to_owned();
        let response = client
            .request(Method::ALLOCATE, true, |w| {
                w.requested_transport(17);
            })
            .await;
        let message = Message::parse(&response).unwrap();
        assert_eq!(message.class(), Class::Success, "{:?}", message.error_code());
        let relayed = message.xor_address(attr::XOR_RELAYED_ADDRESS).unwrap().unwrap();
        (client, relayed)
    }

    async fn permit(&mut self, peer: SocketAddr) {
        let response = self.request(Method::CREATE_PERMISSION, true, |w| {
            w.xor_address(attr::XOR_PEER_ADDRESS, peer);
        });
        let response = response.await;
        assert_eq!(Message::parse(&response).unwrap().class(), Class::Success);
    }

    async fn send_to_peer(&mut self, peer: SocketAddr, data: &[u8]) {
        let mut buf = Vec::new();
        let tid = self.tid();
        let mut writer = MessageWriter::new(&mut buf, Method::SEND, Class::Indication, tid);
        writer.xor_address(attr::XOR_PEER_ADDRESS, peer).attr(attr::DATA, data);
        writer.finish().unwrap();
        self.socket.send_to(&buf, self.server).await.unwrap();
    }

    /// The payload of the next Data indication, if one comes within `wait`.
    async fn data(&self, wait: Duration) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 2048];
        let deadline = tokio::time::Instant::now() + wait;
        while let Ok(Ok((len, _))) = tokio::time::timeout_at(deadline, self.socket.recv_from(&mut buf)).await {
            if let Ok(message) = Message::parse(&buf[..len]) {
                if message.method() == Method::DATA {
                    return message.data().map(<[u8]>::to_vec);
                }
            }
        }
        None
    }
}

/// Sends `n` messages through the allocation to an echo peer and counts the echoes that come back.
async fn round_trips(client: &mut TurnClient, peer: &UdpSocket, relayed: SocketAddr, n: u32) -> u32 {
    let peer_addr = peer.local_addr().unwrap();
    let mut back = 0;
    for i in 0..n {
        let payload = format!("legit {i}");
        client.send_to_peer(peer_addr, payload.as_bytes()).await;
        let mut buf = [0u8; 256];
        if let Ok(Ok((len, from))) = tokio::time::timeout(Duration::from_millis(200), peer.recv_from(&mut buf)).await {
            assert_eq!(from, relayed);
            peer.send_to(&buf[..len], relayed).await.unwrap();
            if client.data(Duration::from_millis(200)).await.as_deref() == Some(payload.as_bytes()) {
                back += 1;
            }
        }
    }
    back
}

#[tokio::test]
async fn garbage_datagrams_at_the_turn_port_leave_a_legit_allocation_working() {
    let server = TestServer::start_with(|config| {
        let turn = config.turn.as_mut().unwrap();
        turn.users = vec![("tool".into(), "pass".into())];
        turn.allow_peers = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let turn_addr = server.turn_addr().unwrap();
    let (mut client, relayed) = TurnClient::allocate(turn_addr).await;
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    client.permit(peer.local_addr().unwrap()).await;
    assert_eq!(round_trips(&mut client, &peer, relayed, 10).await, 10);

    // 100,000 datagrams from four sockets: random bytes, STUN-looking headers with garbage attributes, ChannelData
    // headers for unbound channels, and oversized ones.
    let flood = tokio::spawn(async move {
        let mut sockets = Vec::new();
        for _ in 0..4 {
            sockets.push(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        }
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut packet = vec![0u8; 1500];
        for i in 0..100_000u32 {
            let len = (next() % 1200) as usize;
            for byte in &mut packet[..len] {
                *byte = next() as u8;
            }
            if len >= 20 && i % 3 == 0 {
                packet[0] = (next() % 2) as u8;
                packet[2..4].copy_from_slice(&((len as u16 - 20) & !3).to_be_bytes());
                packet[4..8].copy_from_slice(&0x2112_A442u32.to_be_bytes());
            } else if len >= 4 && i % 3 == 1 {
                packet[0] = 0x40 | (next() % 0x3f) as u8;
                packet[2..4].copy_from_slice(&(len as u16 - 4).to_be_bytes());
            }
            let socket = &sockets[i as usize % sockets.len()];
            // The kernel drops what the server's buffer cannot hold; a full send buffer here is not an error.
            let _ = socket.send_to(&packet[..len], turn_addr).await;
            if i % 1000 == 0 {
                tokio::task::yield_now().await;
            }
        }
    });
    // During the flood, the allocation keeps relaying (some datagrams may be lost with the flood's in a full
    // buffer).
    let during = round_trips(&mut client, &peer, relayed, 30).await;
    tokio::time::timeout(T * 6, flood).await.expect("the flood is bounded").unwrap();
    assert!(during >= 10, "only {during} of 30 round trips during the flood");
    // After it, everything passes, and the server still answers requests.
    assert_eq!(round_trips(&mut client, &peer, relayed, 20).await, 20);
    let refresh = client.request(Method::REFRESH, true, |w| {
        w.lifetime(600);
    });
    assert_eq!(Message::parse(&refresh.await).unwrap().class(), Class::Success);
    server.shutdown().await;
}

// --- memory -------------------------------------------------------------------------------------------------------

/// The real binary as a child process, killed on drop.
struct Child {
    child: std::process::Child,
    http: SocketAddr,
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Child {
    fn start() -> Self {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args(["--http", "127.0.0.1:0", "--turn", "127.0.0.1:0", "--handshake-timeout", "500ms"])
            .args(["--resume-grace", "0s", "--max-connections-per-ip", "0", "--connect-rate-per-ip", "0"])
            .env("RUST_LOG", "error")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("the switchboard binary");
        let stdout = child.stdout.take().unwrap();
        let mut lines = std::io::BufReader::new(stdout).lines();
        let http = loop {
            let line = lines.next().expect("the server exited").unwrap();
            if let Some(rest) = line.split("open http://").nth(1) {
                break rest.split_whitespace().next().unwrap().parse().unwrap();
            }
        };
        // Keep draining stdout so that the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Self { child, http }
    }

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }
}

/// One round of abuse against the child: stalled request heads, garbage, floods, oversized frames, and users that
/// log in and vanish.
async fn abuse_round(http: SocketAddr, round: u32) {
    let url = format!("ws://{http}/ws");
    let mut stalled = Vec::new();
    for n in 0..200u8 {
        let mut stream = connect_from(source(10 + n % 50), http).await.unwrap();
        let _ = stream.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nX-Pad: ").await;
        stalled.push(stream);
    }
    let mut tasks = Vec::new();
    for n in 0..40u32 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let Ok(mut client) = Client::connect(&url).await else { return };
            if client.login(&format!("abuser-{round}-{n}")).await.is_err() {
                return;
            }
            match n % 4 {
                0 => {
                    for _ in 0..100 {
                        if client.send_text("{").await.is_err() {
                            break;
                        }
                    }
                }
                1 => {
                    let _ = client.send_text("x".repeat(200 * 1024)).await;
                    let _ = client.send_text("y".repeat(2 * 1024 * 1024)).await;
                }
                2 => {
                    let offer = json!({"type": "offer", "to": format!("abuser-{round}-0"), "sdp": sdp_offer()});
                    for _ in 0..500 {
                        if client.send_json(&offer).await.is_err() {
                            break;
                        }
                    }
                }
                _ => {
                    let _ = client.send_text(format!(r#"{{"type":"ping","x":{}}}"#, "[".repeat(50_000))).await;
                }
            }
            let _ = client.drain(Duration::from_millis(200)).await;
        }));
    }
    for task in tasks {
        let _ = tokio::time::timeout(T, task).await;
    }
    for mut stream in stalled {
        assert!(closed_by_server(&mut stream).await, "a stalled request head was never dropped");
    }
}

#[tokio::test]
async fn memory_returns_to_its_level_after_repeated_abuse() {
    let child = Child::start();
    let fresh = child.rss_kib();
    abuse_round(child.http, 0).await;
    // The first round grows the allocator's pools; later rounds must reuse them.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let warmed = child.rss_kib();
    for round in 1..=3 {
        abuse_round(child.http, round).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = child.rss_kib();
    eprintln!("server RSS: {fresh} KiB fresh, {warmed} KiB after one round of abuse, {after} KiB after three more");
    assert!(after <= warmed + 16 * 1024, "RSS grew from {warmed} KiB to {after} KiB over three rounds of abuse");
    assert!(after <= fresh + 64 * 1024, "RSS of {after} KiB is far above the {fresh} KiB of a fresh server");
    // And the server still serves.
    let mut client = Client::connect(&format!("ws://{}/ws", child.http)).await.unwrap();
    client.login("still-here").await.unwrap();
}

/// A STUN Binding over a TURN stream connection: true when the server answers, false when it closed the connection.
async fn binding_over_tcp(stream: &mut TcpStream) -> bool {
    let mut request = Vec::new();
    let mut writer = MessageWriter::new(&mut request, Method::BINDING, Class::Request, TransactionId([7; 12]));
    writer.fingerprint();
    writer.finish().unwrap();
    if stream.write_all(&request).await.is_err() {
        return false;
    }
    let mut header = [0u8; 20];
    match tokio::time::timeout(T, stream.read_exact(&mut header)).await {
        Ok(Ok(_)) => {}
        Ok(Err(_)) => return false,
        Err(_) => panic!("neither an answer nor a close within {T:?}"),
    }
    // Read the attributes too, so that the next answer starts at a message boundary.
    let mut attributes = vec![0u8; usize::from(u16::from_be_bytes([header[2], header[3]]))];
    stream.read_exact(&mut attributes).await.is_ok() && header[..2] == [0x01, 0x01]
}

#[tokio::test]
async fn turn_stream_connections_per_source_address_are_capped() {
    let server = TestServer::start_with(|config| {
        config.limits.max_per_ip = 2;
        config.limits.rate_per_ip = 0;
    })
    .await;
    let turn = server.turn_addr().expect("TURN is on");
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = connect_from(source(7), turn).await.unwrap();
        assert!(binding_over_tcp(&mut stream).await, "within the cap, TURN over TCP answers");
        held.push(stream);
    }
    // The third from that address is closed unread; another address and the two held are not affected.
    let mut refused = connect_from(source(7), turn).await.unwrap();
    assert!(!binding_over_tcp(&mut refused).await, "the third TURN TCP connection from one address must be closed");
    let mut other = connect_from(source(8), turn).await.unwrap();
    assert!(binding_over_tcp(&mut other).await);
    let series = "switchboard_turn_stream_connections_refused_total{reason=\"per-ip\"}";
    assert_eq!(common::http::metric(server.addr, series).await, 1.0, "operators see the refusal");
    assert!(binding_over_tcp(&mut held[0]).await);
    // WebSocket connections are counted apart: the same address may still open the signaling connection.
    let mut client = client_from(source(7), &server).await.unwrap();
    client.login("turn-capped").await.unwrap();
    // One TURN connection ends: its place is given back.
    drop(held.pop());
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let mut again = connect_from(source(7), turn).await.unwrap();
        if binding_over_tcp(&mut again).await {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the freed TURN place was never given back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.shutdown().await;
}
