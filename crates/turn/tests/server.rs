//! The TURN request handling on simulated time with fake relay sockets: authentication, allocations, permissions,
//! channels, both relay directions, quotas, expiry and error codes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchboard_stun::{attr, long_term_key_md5, Class, Integrity, Message, MessageWriter, Method, TransactionId};
use switchboard_turn::server::{
    Action, FiveTuple, RelayError, RelayId, Relays, Shared, Transport, TurnConfig, TurnServer,
};
use switchboard_turn::{Credentials, PeerPolicy};

const REALM: &str = "switchboard";
const UNIX: u64 = 1_800_000_000;

#[derive(Default)]
struct FakeRelays {
    next: u64,
    open: Vec<RelayId>,
}

impl Relays for FakeRelays {
    fn open(&mut self, ipv6: bool, even_port: bool) -> Result<(RelayId, SocketAddr), RelayError> {
        if ipv6 {
            return Err(RelayError::Family);
        }
        self.next += 1;
        let port = 50_000 + 2 * self.next as u16 + u16::from(!even_port && self.next.is_multiple_of(2));
        self.open.push(RelayId(self.next));
        Ok((RelayId(self.next), SocketAddr::from(([127, 0, 0, 1], port))))
    }

    fn close(&mut self, relay: RelayId) {
        self.open.retain(|r| *r != relay);
    }
}

struct Harness {
    server: TurnServer,
    relays: FakeRelays,
    start: Instant,
    out: Vec<u8>,
    tid: u8,
}

fn tuple(port: u16) -> FiveTuple {
    FiveTuple {
        client: SocketAddr::from(([192, 0, 2, 10], port)),
        server: SocketAddr::from(([127, 0, 0, 1], 3478)),
        transport: Transport::Udp,
    }
}

fn peer() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 40_000))
}

impl Harness {
    fn new(tune: impl FnOnce(&mut TurnConfig)) -> Self {
        let mut config = TurnConfig::default();
        tune(&mut config);
        let credentials =
            Credentials::new(vec!["s3cret".into()], HashMap::from([("tool".to_owned(), "pass".to_owned())]));
        let policy = PeerPolicy::new(vec!["127.0.0.1/32".parse().unwrap()], Vec::new());
        let shared = Arc::new(Shared::new(config, credentials, policy, [9; 32]));
        Self {
            server: TurnServer::new(shared),
            relays: FakeRelays::default(),
            start: Instant::now(),
            out: Vec::new(),
            tid: 0,
        }
    }

    fn tid(&mut self) -> TransactionId {
        self.tid += 1;
        TransactionId([self.tid; 12])
    }

    fn client(&mut self, at: Duration, tuple: FiveTuple, packet: &[u8]) -> (Action, Vec<u8>) {
        let action = self.server.handle_client(
            self.start + at,
            UNIX + at.as_secs(),
            tuple,
            packet,
            &mut self.relays,
            &mut self.out,
        );
        (action, self.out.clone())
    }

    /// Sends a request and returns the response bytes (panics if there is none).
    fn request(&mut self, at: Duration, tuple: FiveTuple, packet: &[u8]) -> Vec<u8> {
        let (action, out) = self.client(at, tuple, packet);
        assert_eq!(action, Action::ToClient(tuple), "a response is expected");
        out
    }

    /// Asks without credentials and returns the nonce of the 401.
    fn nonce(&mut self, at: Duration, tuple: FiveTuple) -> String {
        let tid = self.tid();
        let request = build(Method::ALLOCATE, tid, |w| {
            w.requested_transport(17);
        });
        let response = self.request(at, tuple, &request);
        let message = Message::parse(&response).unwrap();
        assert_eq!(message.error_code().unwrap().unwrap().0, 401);
        assert_eq!(message.realm().unwrap(), Some(REALM));
        message.nonce().unwrap().unwrap().to_owned()
    }
}

fn build(method: Method, tid: TransactionId, attrs: impl FnOnce(&mut MessageWriter<'_>)) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut writer = MessageWriter::new(&mut buf, method, Class::Request, tid);
    attrs(&mut writer);
    writer.finish().unwrap();
    buf
}

/// A request signed with the long-term credentials of `user`/`password`.
fn signed(
    method: Method,
    tid: TransactionId,
    user: &str,
    password: &str,
    nonce: &str,
    attrs: impl FnOnce(&mut MessageWriter<'_>),
) -> Vec<u8> {
    let key = long_term_key_md5(user, REALM, password);
    build(method, tid, |w| {
        attrs(w);
        w.text(attr::USERNAME, user).text(attr::REALM, REALM).text(attr::NONCE, nonce).integrity(&key).fingerprint();
    })
}

fn error_code(response: &[u8]) -> Option<u16> {
    Message::parse(response).unwrap().error_code().unwrap().map(|(code, _)| code)
}

fn allocate(h: &mut Harness, tuple: FiveTuple, user: &str, password: &str) -> (Vec<u8>, TransactionId) {
    let nonce = h.nonce(Duration::ZERO, tuple);
    let tid = h.tid();
    let request = signed(Method::ALLOCATE, tid, user, password, &nonce, |w| {
        w.requested_transport(17);
    });
    (h.request(Duration::ZERO, tuple, &request), tid)
}

#[test]
fn binding_answers_with_the_reflexive_address() {
    let mut h = Harness::new(|_| {});
    let tid = h.tid();
    let request = build(Method::BINDING, tid, |w| {
        w.fingerprint();
    });
    let response = h.request(Duration::ZERO, tuple(5000), &request);
    let message = Message::parse(&response).unwrap();
    assert_eq!((message.class(), message.transaction_id()), (Class::Success, tid));
    assert_eq!(message.xor_address(attr::XOR_MAPPED_ADDRESS).unwrap(), Some(tuple(5000).client));
    assert!(message.has_fingerprint());
}

#[test]
fn unauthenticated_requests_get_small_401s_and_wrong_passwords_fail() {
    let mut h = Harness::new(|_| {});
    let tid = h.tid();
    let request = build(Method::ALLOCATE, tid, |w| {
        w.requested_transport(17);
    });
    let response = h.request(Duration::ZERO, tuple(5000), &request);
    assert!(response.len() <= request.len() + 64, "no amplification: {} vs {}", response.len(), request.len());
    let message = Message::parse(&response).unwrap();
    assert!(message.software().unwrap().is_none());
    let nonce = message.nonce().unwrap().unwrap().to_owned();
    let tid = h.tid();
    let wrong = signed(Method::ALLOCATE, tid, "tool", "nope", &nonce, |w| {
        w.requested_transport(17);
    });
    assert_eq!(error_code(&h.request(Duration::ZERO, tuple(5000), &wrong)), Some(401));
    assert_eq!(h.server.stats().auth_failures, 2);
    assert_eq!(h.server.allocation_count(), 0);
}

#[test]
fn allocate_permission_send_data_channel_both_ways_and_refresh_zero() {
    let mut h = Harness::new(|_| {});
    let client = tuple(5000);
    let (response, allocate_tid) = allocate(&mut h, client, "tool", "pass");
    let message = Message::parse(&response).unwrap();
    assert_eq!(message.class(), Class::Success, "{:?}", message.error_code());
    let key = long_term_key_md5("tool", REALM, "pass");
    assert_eq!(message.check_integrity(&key), Integrity::Valid { sha256: false });
    let relayed = message.xor_address(attr::XOR_RELAYED_ADDRESS).unwrap().unwrap();
    assert_eq!(message.xor_address(attr::XOR_MAPPED_ADDRESS).unwrap(), Some(client.client));
    assert_eq!(message.lifetime().unwrap(), Some(600));
    assert_eq!(h.relays.open.len(), 1);

    // A retransmitted Allocate gets the same answer; a new one on the same 5-tuple is a mismatch.
    let nonce = h.nonce(Duration::ZERO, client);
    let retransmit = signed(Method::ALLOCATE, allocate_tid, "tool", "pass", &nonce, |w| {
        w.requested_transport(17);
    });
    let again =
        Message::parse(&h.request(Duration::ZERO, client, &retransmit)).unwrap().xor_address(attr::XOR_RELAYED_ADDRESS);
    assert_eq!(again.unwrap(), Some(relayed));
    let tid = h.tid();
    let second = signed(Method::ALLOCATE, tid, "tool", "pass", &nonce, |w| {
        w.requested_transport(17);
    });
    assert_eq!(error_code(&h.request(Duration::ZERO, client, &second)), Some(437));

    // Without a permission, nothing passes.
    assert_eq!(h.server.handle_peer(h.start, RelayId(1), peer(), b"early", &mut h.out), Action::Nothing);
    let tid = h.tid();
    let permission = signed(Method::CREATE_PERMISSION, tid, "tool", "pass", &nonce, |w| {
        w.xor_address(attr::XOR_PEER_ADDRESS, peer());
    });
    assert_eq!(error_code(&h.request(Duration::ZERO, client, &permission)), None);

    // Send indication -> peer, with the payload located in the input.
    let mut send = Vec::new();
    let mut writer = MessageWriter::new(&mut send, Method::SEND, Class::Indication, TransactionId([7; 12]));
    writer.xor_address(attr::XOR_PEER_ADDRESS, peer()).attr(attr::DATA, b"hello peer");
    writer.finish().unwrap();
    let (action, _) = h.client(Duration::ZERO, client, &send);
    let Action::ToPeer { relay, peer: to, range } = action else { panic!("expected a relay, got {action:?}") };
    assert_eq!((relay, to, &send[range]), (RelayId(1), peer(), &b"hello peer"[..]));

    // Peer -> client as a Data indication.
    assert_eq!(
        h.server.handle_peer(h.start, RelayId(1), peer(), b"hello client", &mut h.out),
        Action::ToClient(client)
    );
    let data = Message::parse(&h.out).unwrap();
    assert_eq!((data.class(), data.method()), (Class::Indication, Method::DATA));
    assert_eq!(data.xor_address(attr::XOR_PEER_ADDRESS).unwrap(), Some(peer()));
    assert_eq!(data.data(), Some(&b"hello client"[..]));

    // Bind a channel; then ChannelData both ways.
    let tid = h.tid();
    let bind = signed(Method::CHANNEL_BIND, tid, "tool", "pass", &nonce, |w| {
        w.channel_number(0x4001).xor_address(attr::XOR_PEER_ADDRESS, peer());
    });
    assert_eq!(error_code(&h.request(Duration::ZERO, client, &bind)), None);
    let channel_data = [&[0x40, 0x01, 0x00, 0x03][..], b"abc"].concat();
    let (action, _) = h.client(Duration::ZERO, client, &channel_data);
    assert_eq!(action, Action::ToPeer { relay: RelayId(1), peer: peer(), range: 4..7 });
    assert_eq!(h.server.handle_peer(h.start, RelayId(1), peer(), b"xyz", &mut h.out), Action::ToClient(client));
    assert_eq!(h.out, [0x40, 0x01, 0x00, 0x03, b'x', b'y', b'z']);
    // An unbound channel is dropped.
    let (action, _) = h.client(Duration::ZERO, client, &[0x40, 0x02, 0x00, 0x01, b'q']);
    assert_eq!(action, Action::Nothing);
    // Rebinding the peer to another channel is refused.
    let tid = h.tid();
    let rebind = signed(Method::CHANNEL_BIND, tid, "tool", "pass", &nonce, |w| {
        w.channel_number(0x4002).xor_address(attr::XOR_PEER_ADDRESS, peer());
    });
    assert_eq!(error_code(&h.request(Duration::ZERO, client, &rebind)), Some(400));

    // Refresh with lifetime 0 deletes the allocation and closes its relay.
    let tid = h.tid();
    let refresh = signed(Method::REFRESH, tid, "tool", "pass", &nonce, |w| {
        w.lifetime(0);
    });
    let response = h.request(Duration::ZERO, client, &refresh);
    assert_eq!(Message::parse(&response).unwrap().lifetime().unwrap(), Some(0));
    assert_eq!(h.server.allocation_count(), 0);
    assert!(h.relays.open.is_empty());
    let tid = h.tid();
    let refresh = signed(Method::REFRESH, tid, "tool", "pass", &nonce, |_| {});
    assert_eq!(error_code(&h.request(Duration::ZERO, client, &refresh)), Some(437));
}

#[test]
fn denied_peers_get_403_and_unsupported_requests_their_codes() {
    let mut h = Harness::new(|_| {});
    let client = tuple(5000);
    allocate(&mut h, client, "tool", "pass");
    let nonce = h.nonce(Duration::ZERO, client);
    for denied in ["10.0.0.1:9", "169.254.169.254:80", "127.0.0.2:9"] {
        let tid = h.tid();
        let request = signed(Method::CREATE_PERMISSION, tid, "tool", "pass", &nonce, |w| {
            w.xor_address(attr::XOR_PEER_ADDRESS, denied.parse().unwrap());
        });
        assert_eq!(error_code(&h.request(Duration::ZERO, client, &request)), Some(403), "{denied}");
    }
    let other = tuple(5001);
    let nonce = h.nonce(Duration::ZERO, other);
    type Attrs = Box<dyn Fn(&mut MessageWriter<'_>)>;
    let cases: Vec<(Attrs, u16)> = vec![
        (Box::new(|_| {}), 400),
        (
            Box::new(|w| {
                w.requested_transport(6);
            }),
            442,
        ),
        (
            Box::new(|w| {
                w.requested_transport(17).attr(attr::DONT_FRAGMENT, &[]);
            }),
            420,
        ),
        (
            Box::new(|w| {
                w.requested_transport(17).address_family(attr::REQUESTED_ADDRESS_FAMILY, 2);
            }),
            440,
        ),
        (
            Box::new(|w| {
                w.requested_transport(17).even_port(true);
            }),
            508,
        ),
    ];
    for (attrs, code) in cases {
        let tid = h.tid();
        let request = signed(Method::ALLOCATE, tid, "tool", "pass", &nonce, |w| attrs(w));
        assert_eq!(error_code(&h.request(Duration::ZERO, other, &request)), Some(code));
    }
    let tid = h.tid();
    let bad_channel = signed(Method::CHANNEL_BIND, tid, "tool", "pass", &nonce, |w| {
        w.channel_number(0x3FFF).xor_address(attr::XOR_PEER_ADDRESS, peer());
    });
    assert_eq!(error_code(&h.request(Duration::ZERO, other, &bad_channel)), Some(400));
}

#[test]
fn stale_nonces_get_438_with_a_fresh_one() {
    let mut h = Harness::new(|c| c.nonce_lifetime = Duration::from_secs(60));
    let client = tuple(5000);
    let nonce = h.nonce(Duration::ZERO, client);
    let tid = h.tid();
    let request = signed(Method::ALLOCATE, tid, "tool", "pass", &nonce, |w| {
        w.requested_transport(17);
    });
    let response = h.request(Duration::from_secs(61), client, &request);
    let message = Message::parse(&response).unwrap();
    assert_eq!(error_code(&response), Some(438));
    assert_ne!(message.nonce().unwrap().unwrap(), nonce);
    // A nonce issued to another address is not accepted either.
    let stolen = signed(Method::ALLOCATE, tid, "tool", "pass", &nonce, |w| {
        w.requested_transport(17);
    });
    let elsewhere = FiveTuple { client: "198.51.100.7:5000".parse().unwrap(), ..client };
    assert_eq!(error_code(&h.request(Duration::ZERO, elsewhere, &stolen)), Some(401));
}

#[test]
fn rest_credentials_work_until_they_expire() {
    let mut h = Harness::new(|_| {});
    let minted = Credentials::new(vec!["s3cret".into()], HashMap::new()).mint("alice", UNIX, 60).unwrap();
    let (response, _) = allocate(&mut h, tuple(5000), &minted.username, &minted.password);
    assert_eq!(Message::parse(&response).unwrap().class(), Class::Success);
    let expired = Credentials::new(vec!["s3cret".into()], HashMap::new()).mint("alice", UNIX - 120, 60).unwrap();
    let (response, _) = allocate(&mut h, tuple(5001), &expired.username, &expired.password);
    assert_eq!(error_code(&response), Some(401));
}

#[test]
fn quotas_give_486_and_508() {
    let mut h = Harness::new(|c| {
        c.max_allocations_per_user = 1;
        c.max_allocations = 2;
        c.max_permissions = 1;
    });
    assert_eq!(error_code(&allocate(&mut h, tuple(5000), "tool", "pass").0), None);
    assert_eq!(error_code(&allocate(&mut h, tuple(5001), "tool", "pass").0), Some(486));
    let alice = Credentials::new(vec!["s3cret".into()], HashMap::new()).mint("alice", UNIX, 600).unwrap();
    let bob = Credentials::new(vec!["s3cret".into()], HashMap::new()).mint("bob", UNIX, 600).unwrap();
    assert_eq!(error_code(&allocate(&mut h, tuple(5002), &alice.username, &alice.password).0), None);
    assert_eq!(error_code(&allocate(&mut h, tuple(5003), &bob.username, &bob.password).0), Some(508));
    let nonce = h.nonce(Duration::ZERO, tuple(5000));
    let two_peers = |h: &mut Harness| {
        let tid = h.tid();
        signed(Method::CREATE_PERMISSION, tid, "tool", "pass", &nonce, |w| {
            w.xor_address(attr::XOR_PEER_ADDRESS, peer())
                .xor_address(attr::XOR_PEER_ADDRESS, "127.0.0.1:1".parse().unwrap());
        })
    };
    let request = two_peers(&mut h);
    // Both peers share one IP, so one permission: within the quota.
    assert_eq!(error_code(&h.request(Duration::ZERO, tuple(5000), &request)), None);
}

#[test]
fn allocations_expire_and_release_their_relays() {
    let mut h = Harness::new(|_| {});
    allocate(&mut h, tuple(5000), "tool", "pass");
    assert_eq!(h.server.poll_timeout(), Some(h.start + Duration::from_secs(600)));
    h.server.handle_timeout(h.start + Duration::from_secs(599), &mut h.relays);
    assert_eq!(h.server.allocation_count(), 1);
    h.server.handle_timeout(h.start + Duration::from_secs(600), &mut h.relays);
    assert_eq!(h.server.allocation_count(), 0);
    assert!(h.relays.open.is_empty());
    // The user's quota is free again.
    assert_eq!(error_code(&allocate(&mut h, tuple(5001), "tool", "pass").0), None);
}

proptest::proptest! {
    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200), first in 0u8..=255) {
        let mut h = Harness::new(|_| {});
        let mut packet = bytes;
        if let Some(byte) = packet.first_mut() {
            *byte = first & 0x7f;
        }
        let _ = h.client(Duration::ZERO, tuple(5000), &packet);
        let _ = h.server.handle_peer(h.start, RelayId(1), peer(), &packet, &mut h.out);
    }
}

#[test]
fn one_address_cannot_hold_every_relay() {
    let mut h = Harness::new(|c| c.max_allocations_per_ip = 2);
    let creds = Credentials::new(vec!["s3cret".into()], HashMap::new());
    for (port, name, expected) in [(5000, "a", None), (5001, "b", None), (5002, "c", Some(486))] {
        let minted = creds.mint(name, UNIX, 600).unwrap();
        assert_eq!(
            error_code(&allocate(&mut h, tuple(port), &minted.username, &minted.password).0),
            expected,
            "{name}"
        );
    }
}

#[test]
fn refreshes_extend_the_lifetime_without_piling_up_timers() {
    let mut h = Harness::new(|_| {});
    let client = tuple(5000);
    allocate(&mut h, client, "tool", "pass");
    let nonce = h.nonce(Duration::ZERO, client);
    for second in 1..=200 {
        let tid = h.tid();
        let refresh = signed(Method::REFRESH, tid, "tool", "pass", &nonce, |w| {
            w.lifetime(600);
        });
        assert_eq!(error_code(&h.request(Duration::from_secs(second), client, &refresh)), None);
    }
    // One heap entry, at the first expiry; when it comes due, the allocation (refreshed until 800 s) lives on.
    assert_eq!(h.server.poll_timeout(), Some(h.start + Duration::from_secs(600)));
    h.server.handle_timeout(h.start + Duration::from_secs(600), &mut h.relays);
    assert_eq!(h.server.allocation_count(), 1);
    assert_eq!(h.server.poll_timeout(), Some(h.start + Duration::from_secs(800)));
    h.server.handle_timeout(h.start + Duration::from_secs(800), &mut h.relays);
    assert_eq!(h.server.allocation_count(), 0);
}

#[test]
fn relays_never_send_to_the_server_itself_or_past_an_expired_permission() {
    let config = TurnConfig::default();
    let credentials = Credentials::new(Vec::new(), HashMap::from([("tool".to_owned(), "pass".to_owned())]));
    let policy = PeerPolicy::new(vec!["127.0.0.1/32".parse().unwrap()], Vec::new());
    let shared = Arc::new(Shared::new(config, credentials, policy, [9; 32]));
    let own: SocketAddr = "127.0.0.1:3478".parse().unwrap();
    shared.set_own_addresses(vec![own]);
    let mut h = Harness {
        server: TurnServer::new(shared),
        relays: FakeRelays::default(),
        start: Instant::now(),
        out: Vec::new(),
        tid: 0,
    };
    let client = tuple(5000);
    allocate(&mut h, client, "tool", "pass");
    let nonce = h.nonce(Duration::ZERO, client);
    for (channel, peer) in [(0x4001u16, own), (0x4002, peer())] {
        let tid = h.tid();
        let bind = signed(Method::CHANNEL_BIND, tid, "tool", "pass", &nonce, |w| {
            w.channel_number(channel).xor_address(attr::XOR_PEER_ADDRESS, peer);
        });
        assert_eq!(error_code(&h.request(Duration::ZERO, client, &bind)), None);
    }
    // To the server's own TURN port: dropped.
    assert_eq!(h.client(Duration::ZERO, client, &[0x40, 0x01, 0x00, 0x01, b'x']).0, Action::Nothing);
    // To the peer: relayed while the permission lives (5 min), dropped after, although the channel lives 10 min.
    assert!(matches!(
        h.client(Duration::from_secs(10), client, &[0x40, 0x02, 0x00, 0x01, b'x']).0,
        Action::ToPeer { .. }
    ));
    assert_eq!(h.client(Duration::from_secs(301), client, &[0x40, 0x02, 0x00, 0x01, b'x']).0, Action::Nothing);
}
