//! What operators see of the TURN server: authentication counters (challenges, 401s with credentials, 438s) and the
//! registry of live allocations behind the admin view, on simulated time with fake relay sockets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchboard_stun::{attr, long_term_key_md5, Class, Message, MessageWriter, Method, TransactionId};
use switchboard_turn::observe::TurnCounters;
use switchboard_turn::server::{
    Action, FiveTuple, RelayError, RelayId, Relays, Shared, Transport, TurnConfig, TurnServer,
};
use switchboard_turn::{Credentials, PeerPolicy};

const REALM: &str = "switchboard";
const UNIX: u64 = 1_800_000_000;

#[derive(Default)]
struct FakeRelays {
    next: u64,
}

impl Relays for FakeRelays {
    fn open(&mut self, _ipv6: bool, _even_port: bool) -> Result<(RelayId, SocketAddr), RelayError> {
        self.next += 1;
        Ok((RelayId(self.next), SocketAddr::from(([127, 0, 0, 1], 50_000 + self.next as u16))))
    }

    fn close(&mut self, _relay: RelayId) {}
}

struct Harness {
    shared: Arc<Shared>,
    server: TurnServer,
    relays: FakeRelays,
    start: Instant,
    out: Vec<u8>,
    tid: u8,
}

impl Harness {
    fn new() -> Self {
        let credentials =
            Credentials::new(vec!["s3cret".into()], HashMap::from([("tool".to_owned(), "pass".to_owned())]));
        let policy = PeerPolicy::new(vec!["127.0.0.1/32".parse().unwrap()], Vec::new());
        let shared = Arc::new(Shared::new(TurnConfig::default(), credentials, policy, [9; 32]));
        Self {
            server: TurnServer::new(shared.clone()),
            shared,
            relays: FakeRelays::default(),
            start: Instant::now(),
            out: Vec::new(),
            tid: 0,
        }
    }

    fn request(&mut self, at: Duration, tuple: FiveTuple, build: impl FnOnce(TransactionId) -> Vec<u8>) -> Message<'_> {
        self.tid += 1;
        let packet = build(TransactionId([self.tid; 12]));
        let action = self.server.handle_client(self.start + at, UNIX, tuple, &packet, &mut self.relays, &mut self.out);
        assert_eq!(action, Action::ToClient(tuple));
        Message::parse(&self.out).unwrap()
    }

    fn nonce(&mut self, tuple: FiveTuple) -> String {
        let response = self.request(Duration::ZERO, tuple, |tid| unsigned(Method::ALLOCATE, tid));
        assert_eq!(response.error_code().unwrap().unwrap().0, 401);
        response.nonce().unwrap().unwrap().to_owned()
    }
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

fn unsigned(method: Method, tid: TransactionId) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut writer = MessageWriter::new(&mut buf, method, Class::Request, tid);
    writer.requested_transport(17);
    writer.finish().unwrap();
    buf
}

fn signed(
    method: Method,
    tid: TransactionId,
    password: &str,
    nonce: &str,
    attrs: impl FnOnce(&mut MessageWriter<'_>),
) -> Vec<u8> {
    let key = long_term_key_md5("tool", REALM, password);
    let mut buf = Vec::new();
    let mut writer = MessageWriter::new(&mut buf, method, Class::Request, tid);
    attrs(&mut writer);
    writer.text(attr::USERNAME, "tool").text(attr::REALM, REALM).text(attr::NONCE, nonce).integrity(&key);
    writer.finish().unwrap();
    buf
}

#[test]
fn challenges_wrong_credentials_and_stale_nonces_are_counted_apart() {
    let mut h = Harness::new();
    let client = tuple(5000);
    let nonce = h.nonce(client);
    assert_eq!(
        h.shared.metrics.snapshot(),
        TurnCounters { challenges: 1, unauthorized: 0, stale_nonce: 0, ..TurnCounters::default() }
    );

    let response = h.request(Duration::ZERO, client, |tid| {
        signed(Method::ALLOCATE, tid, "wrong", &nonce, |w| {
            w.requested_transport(17);
        })
    });
    assert_eq!(response.error_code().unwrap().unwrap().0, 401);
    assert_eq!(
        h.shared.metrics.snapshot(),
        TurnCounters { challenges: 1, unauthorized: 1, stale_nonce: 0, ..TurnCounters::default() }
    );

    // A nonce of ours from long ago: 438.
    let stale = TurnConfig::default().nonce_lifetime + Duration::from_secs(5);
    h.tid += 1;
    let packet = signed(Method::ALLOCATE, TransactionId([h.tid; 12]), "pass", &nonce, |w| {
        w.requested_transport(17);
    });
    let action =
        h.server.handle_client(h.start + stale, UNIX + stale.as_secs(), client, &packet, &mut h.relays, &mut h.out);
    assert_eq!(action, Action::ToClient(client));
    assert_eq!(Message::parse(&h.out).unwrap().error_code().unwrap().unwrap().0, 438);
    assert_eq!(
        h.shared.metrics.snapshot(),
        TurnCounters { challenges: 1, unauthorized: 1, stale_nonce: 1, ..TurnCounters::default() }
    );
}

#[test]
fn the_registry_follows_allocations_permissions_channels_and_their_end() {
    let mut h = Harness::new();
    let (first, second) = (tuple(5000), tuple(5001));
    let nonce = h.nonce(first);
    for client in [first, second] {
        let response = h.request(Duration::ZERO, client, |tid| {
            signed(Method::ALLOCATE, tid, "pass", &nonce, |w| {
                w.requested_transport(17);
            })
        });
        assert_eq!(response.class(), Class::Success);
    }
    let (page, next) = h.shared.registry.page(h.start, None, 10);
    assert_eq!(page.len(), 2);
    assert_eq!(next, None);
    assert_eq!(page[0].user, "tool");
    assert_eq!(page[0].client, first.client);
    assert_eq!(page[0].transport, Transport::Udp);
    assert!(page[0].permissions.is_empty() && page[0].channels.is_empty());
    assert_eq!(page[0].expires, h.start + Duration::from_secs(600));

    // Pages of one.
    let (one, next) = h.shared.registry.page(h.start, None, 1);
    assert_eq!((one.len(), next), (1, Some(one[0].relay)));
    let (rest, next) = h.shared.registry.page(h.start, next, 1);
    assert_eq!((rest.len(), next), (1, None));
    assert_eq!(rest[0].client, second.client);

    // A channel (which brings a permission) shows up.
    let response = h.request(Duration::ZERO, first, |tid| {
        signed(Method::CHANNEL_BIND, tid, "pass", &nonce, |w| {
            w.channel_number(0x4001).xor_address(attr::XOR_PEER_ADDRESS, peer());
        })
    });
    assert_eq!(response.class(), Class::Success);
    let (page, _) = h.shared.registry.page(h.start, None, 10);
    assert_eq!(page[0].channels.iter().map(|(n, p, _)| (*n, *p)).collect::<Vec<_>>(), vec![(0x4001, peer())]);
    assert_eq!(page[0].permissions.iter().map(|(ip, _)| *ip).collect::<Vec<_>>(), vec![peer().ip()]);
    // Past the permission's five minutes, the view leaves it out even before the owner prunes it.
    let (page, _) = h.shared.registry.page(h.start + Duration::from_secs(301), None, 10);
    assert!(page[0].permissions.is_empty(), "{page:?}");

    // Refresh with lifetime 0 removes the first; expiry removes the second.
    let response = h.request(Duration::ZERO, first, |tid| {
        signed(Method::REFRESH, tid, "pass", &nonce, |w| {
            w.lifetime(0);
        })
    });
    assert_eq!(response.lifetime().unwrap(), Some(0));
    assert_eq!(h.shared.registry.len(), 1);
    let later = h.start + Duration::from_secs(601);
    assert!(h.shared.registry.page(later, None, 10).0.is_empty(), "expired allocations are not shown");
    h.server.handle_timeout(later, &mut h.relays);
    assert!(h.shared.registry.is_empty());
    assert_eq!(h.shared.allocations(), 0);
}
