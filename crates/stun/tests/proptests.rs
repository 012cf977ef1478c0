//! Property tests: writer -> parser round trips over random attributes, addresses, integrity and fingerprint; and
//! no input, random or mutated from a valid message, makes the codec panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use proptest::prelude::*;
use switchboard_stun::{
    attr, classify, parse_channel_data, stream_frame_len, write_channel_data, Class, Integrity, Message, MessageWriter,
    Method, TransactionId, MAX_ATTRIBUTES,
};

/// One attribute the generator can write, with what the parser should read back.
#[derive(Clone, Debug)]
enum Attr {
    /// An opaque attribute of a type the writer has no helper for (avoiding the ones the parser treats specially).
    Raw(u16, Vec<u8>),
    XorPeer(SocketAddr),
    Lifetime(u32),
    Username(String),
    Data(Vec<u8>),
}

fn socket_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port)),
        (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port)),
    ]
}

fn attribute() -> impl Strategy<Value = Attr> {
    let special = [
        attr::MESSAGE_INTEGRITY,
        attr::MESSAGE_INTEGRITY_SHA256,
        attr::FINGERPRINT,
        attr::XOR_PEER_ADDRESS,
        attr::LIFETIME,
        attr::USERNAME,
        attr::DATA,
    ];
    prop_oneof![
        (
            any::<u16>().prop_filter("special type", move |t| !special.contains(t)),
            prop::collection::vec(any::<u8>(), 0..40)
        )
            .prop_map(|(t, v)| Attr::Raw(t, v)),
        socket_addr().prop_map(Attr::XorPeer),
        any::<u32>().prop_map(Attr::Lifetime),
        "[a-zA-Z0-9:é]{0,40}".prop_map(Attr::Username),
        prop::collection::vec(any::<u8>(), 0..300).prop_map(Attr::Data),
    ]
}

fn method() -> impl Strategy<Value = Method> {
    (0u16..0x1000).prop_map(Method)
}

fn class() -> impl Strategy<Value = Class> {
    prop_oneof![Just(Class::Request), Just(Class::Indication), Just(Class::Success), Just(Class::Error)]
}

/// Which integrity attributes to append.
#[derive(Clone, Copy, Debug)]
enum Mac {
    None,
    Sha1,
    Sha256,
    Both,
}

fn mac() -> impl Strategy<Value = Mac> {
    prop_oneof![Just(Mac::None), Just(Mac::Sha1), Just(Mac::Sha256), Just(Mac::Both)]
}

/// Writes a message with `header` (method, class, transaction ID), then `attrs`, then the integrity attributes
/// `mac` asks for, then FINGERPRINT if asked.
fn write(
    buf: &mut Vec<u8>,
    header: (Method, Class, TransactionId),
    attrs: &[Attr],
    mac: Mac,
    key: &[u8],
    fingerprint: bool,
) {
    let (method, class, tid) = header;
    let mut w = MessageWriter::new(buf, method, class, tid);
    for a in attrs {
        match a {
            Attr::Raw(t, v) => w.attr(*t, v),
            Attr::XorPeer(addr) => w.xor_address(attr::XOR_PEER_ADDRESS, *addr),
            Attr::Lifetime(l) => w.lifetime(*l),
            Attr::Username(u) => w.text(attr::USERNAME, u),
            Attr::Data(d) => w.attr(attr::DATA, d),
        };
    }
    match mac {
        Mac::None => {}
        Mac::Sha1 => {
            w.integrity(key);
        }
        Mac::Sha256 => {
            w.integrity_sha256(key);
        }
        Mac::Both => {
            w.integrity(key).integrity_sha256(key);
        }
    }
    if fingerprint {
        w.fingerprint();
    }
    w.finish().unwrap();
}

/// Runs every accessor; none may panic whatever the message holds.
fn exercise(m: &Message<'_>, key: &[u8]) {
    let _ = (m.method(), m.class(), m.transaction_id(), m.len(), m.as_bytes());
    let _ = (m.username(), m.realm(), m.nonce(), m.software(), m.userhash(), m.password_algorithm());
    let _ = (m.lifetime(), m.requested_transport(), m.channel_number(), m.even_port(), m.dont_fragment(), m.data());
    let _ = (m.requested_address_family(), m.additional_address_family(), m.reservation_token());
    let _ = (m.error_code(), m.address_error_code());
    if let Ok(Some(list)) = m.unknown_attributes() {
        let _ = list.count();
    }
    for t in [attr::XOR_MAPPED_ADDRESS, attr::XOR_PEER_ADDRESS, attr::XOR_RELAYED_ADDRESS] {
        let _ = m.xor_address(t);
        let _ = m.xor_addresses(t).count();
    }
    let _ = (m.address(attr::MAPPED_ADDRESS), m.address(attr::ALTERNATE_SERVER));
    let _ = m.unknown_comprehension_required(attr::KNOWN_COMPREHENSION_REQUIRED);
    let _ = m.attributes().count();
    let _ = m.check_integrity(key);
    let _ = format!("{m:?}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn written_messages_parse_back(
        method in method(),
        class in class(),
        tid in any::<[u8; 12]>(),
        attrs in prop::collection::vec(attribute(), 0..(MAX_ATTRIBUTES - 3)),
        mac in mac(),
        key in prop::collection::vec(any::<u8>(), 0..80),
        fingerprint in any::<bool>(),
    ) {
        let tid = TransactionId(tid);
        let mut buf = Vec::new();
        write(&mut buf, (method, class, tid), &attrs, mac, &key, fingerprint);
        prop_assert_eq!(buf.len() % 4, 0);
        prop_assert_eq!(classify(&buf), switchboard_stun::Kind::Stun);
        prop_assert_eq!(stream_frame_len(&buf).unwrap(), Some(buf.len()));

        let m = Message::parse(&buf).unwrap();
        prop_assert_eq!((m.method(), m.class(), m.transaction_id(), m.len()), (method, class, tid, buf.len()));
        prop_assert_eq!(m.has_fingerprint(), fingerprint);
        let expected_integrity = match mac {
            Mac::None => Integrity::Missing,
            Mac::Sha1 => Integrity::Valid { sha256: false },
            Mac::Sha256 | Mac::Both => Integrity::Valid { sha256: true },
        };
        prop_assert_eq!(m.check_integrity(&key), expected_integrity);
        if !matches!(mac, Mac::None) {
            let mut other = key.clone();
            other.push(1);
            prop_assert_eq!(m.check_integrity(&other), Integrity::Invalid);
        }

        // Every attribute reads back, in order, through the generic and the typed accessors.
        let visible: Vec<(u16, &[u8])> = m.attributes().collect();
        let trailer = usize::from(matches!(mac, Mac::Sha1 | Mac::Sha256)) + 2 * usize::from(matches!(mac, Mac::Both))
            + usize::from(fingerprint);
        prop_assert_eq!(visible.len(), attrs.len() + trailer);
        let mut peers = m.xor_addresses(attr::XOR_PEER_ADDRESS);
        let mut lifetimes = m.get_all(attr::LIFETIME);
        let mut users = m.get_all(attr::USERNAME);
        let mut datas = m.get_all(attr::DATA);
        for (a, (ty, value)) in attrs.iter().zip(&visible) {
            match a {
                Attr::Raw(t, v) => prop_assert_eq!((*ty, *value), (*t, &v[..])),
                Attr::XorPeer(addr) => prop_assert_eq!(peers.next(), Some(Ok(*addr))),
                Attr::Lifetime(l) => prop_assert_eq!(lifetimes.next(), Some(&l.to_be_bytes()[..])),
                Attr::Username(u) => prop_assert_eq!(users.next(), Some(u.as_bytes())),
                Attr::Data(d) => prop_assert_eq!(datas.next(), Some(&d[..])),
            }
        }
        if let Some(Attr::Username(u)) = attrs.iter().find(|a| matches!(a, Attr::Username(_))) {
            prop_assert_eq!(m.username().unwrap(), Some(u.as_str()));
        }
        if let Some(Attr::Lifetime(l)) = attrs.iter().find(|a| matches!(a, Attr::Lifetime(_))) {
            prop_assert_eq!(m.lifetime().unwrap(), Some(*l));
        }
        exercise(&m, &key);
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = classify(&bytes);
        let _ = stream_frame_len(&bytes);
        let _ = parse_channel_data(&bytes);
        if let Ok(m) = Message::parse(&bytes) {
            exercise(&m, b"key");
        }
        if let Ok(m) = Message::parse_prefix(&bytes) {
            exercise(&m, b"key");
        }
    }

    #[test]
    fn random_bodies_behind_a_valid_header_never_panic(
        tid in any::<[u8; 12]>(),
        body in prop::collection::vec(any::<u8>(), 0..50).prop_map(|mut v| { v.truncate(v.len() / 4 * 4); v }),
    ) {
        // A valid header makes the random part reach the attribute walk, not just the header checks.
        let mut bytes = vec![0x00, 0x01];
        bytes.extend_from_slice(&(body.len() as u16).to_be_bytes());
        bytes.extend_from_slice(&0x2112_A442u32.to_be_bytes());
        bytes.extend_from_slice(&tid);
        bytes.extend_from_slice(&body);
        if let Ok(m) = Message::parse(&bytes) {
            exercise(&m, b"key");
        }
    }

    #[test]
    fn mutated_valid_messages_never_panic(
        attrs in prop::collection::vec(attribute(), 0..8),
        mac in mac(),
        fingerprint in any::<bool>(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..4), 1..6),
    ) {
        let mut buf = Vec::new();
        write(&mut buf, (Method::SEND, Class::Indication, TransactionId([9; 12])), &attrs, mac, b"key", fingerprint);
        for (at, byte, op) in edits {
            if buf.is_empty() {
                break;
            }
            let i = at.index(buf.len());
            match op {
                0 => buf[i] = byte,
                1 => buf[i] ^= 1 << (byte % 8),
                2 => buf.truncate(i),
                _ => buf.insert(i, byte),
            }
        }
        let _ = stream_frame_len(&buf);
        let _ = parse_channel_data(&buf);
        if let Ok(m) = Message::parse(&buf) {
            exercise(&m, b"key");
        }
        if let Ok(m) = Message::parse_prefix(&buf) {
            exercise(&m, b"key");
        }
    }

    #[test]
    fn channel_data_round_trips(
        channel in 0x4000u16..=0x4FFF,
        data in prop::collection::vec(any::<u8>(), 0..200),
        pad in any::<bool>(),
    ) {
        let mut buf = Vec::new();
        write_channel_data(&mut buf, channel, &data, pad).unwrap();
        prop_assert_eq!(parse_channel_data(&buf).unwrap(), (channel, &data[..]));
        prop_assert_eq!(classify(&buf), switchboard_stun::Kind::ChannelData);
        let framed = stream_frame_len(&buf).unwrap().unwrap();
        prop_assert_eq!(framed, 4 + data.len().div_ceil(4) * 4);
        if pad {
            prop_assert_eq!(framed, buf.len());
        }
    }
}
