//! The test vectors of RFC 5769 (sections 2.1 to 2.4) and RFC 8489 Appendix B.1 (as corrected by erratum 6268).
//!
//! The vectors check themselves: FINGERPRINT covers every byte before it and MESSAGE-INTEGRITY every byte before
//! it, so a transcription error makes the parse or the integrity check fail rather than pass silently.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;

use switchboard_stun::{
    attr, long_term_key_md5, long_term_key_sha256, userhash, Class, Integrity, Message, MessageWriter, Method,
    StunError, TransactionId,
};

fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits.chunks(2).map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap()).collect()
}

/// RFC 5769 2.1: Sample Request (Binding, short-term credentials, SOFTWARE, PRIORITY, ICE-CONTROLLED, USERNAME,
/// MESSAGE-INTEGRITY, FINGERPRINT). The padding of USERNAME is three spaces.
const SAMPLE_REQUEST: &str = "
    00 01 00 58 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 10 53 54 55 4e 20 74 65 73 74 20 63 6c 69 65 6e 74
    00 24 00 04 6e 00 01 ff
    80 29 00 08 93 2f f9 b1 51 26 3b 36
    00 06 00 09 65 76 74 6a 3a 68 36 76 59 20 20 20
    00 08 00 14 9a ea a7 0c bf d8 cb 56 78 1e f2 b5 b2 d3 f2 49 c1 b5 71 a2
    80 28 00 04 e5 7a 3b cf";

/// RFC 5769 2.2: Sample IPv4 Response (192.0.2.1:32853).
const SAMPLE_IPV4_RESPONSE: &str = "
    01 01 00 3c 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20
    00 20 00 08 00 01 a1 47 e1 12 a6 43
    00 08 00 14 2b 91 f5 99 fd 9e 90 c3 8c 74 89 f9 2a f9 ba 53 f0 6b e7 d7
    80 28 00 04 c0 7d 4c 96";

/// RFC 5769 2.3: Sample IPv6 Response ([2001:db8:1234:5678:11:2233:4455:6677]:32853).
const SAMPLE_IPV6_RESPONSE: &str = "
    01 01 00 48 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20
    00 20 00 14 00 02 a1 47 01 13 a9 fa a5 d3 f1 79 bc 25 f4 b5 be d2 b9 d9
    00 08 00 14 a3 82 95 4e 4b e6 7b f1 17 84 c9 7c 82 92 c2 75 bf e3 ed 41
    80 28 00 04 c8 fb 0b 4c";

/// RFC 5769 2.4: Sample Request with Long-Term Authentication (USERNAME, NONCE, REALM, MESSAGE-INTEGRITY; no
/// FINGERPRINT). Padding is zeros, so the writer reproduces it byte for byte.
const SAMPLE_LONG_TERM_REQUEST: &str = "
    00 01 00 60 21 12 a4 42 78 ad 34 33 c6 ad 72 c0 29 da 41 2e
    00 06 00 12 e3 83 9e e3 83 88 e3 83 aa e3 83 83 e3 82 af e3 82 b9 00 00
    00 15 00 1c 66 2f 2f 34 39 39 6b 39 35 34 64 36 4f 4c 33 34 6f 4c 39 46 53 54 76 79 36 34 73 41
    00 14 00 0b 65 78 61 6d 70 6c 65 2e 6f 72 67 00
    00 08 00 14 f6 70 24 65 6d d6 4a 3e 02 b8 e0 71 2e 85 c9 a2 8c a8 96 66";

/// RFC 8489 Appendix B.1 as corrected by erratum 6268: USERHASH, NONCE, REALM, PASSWORD-ALGORITHM (SHA-256) and
/// MESSAGE-INTEGRITY-SHA256. (The published vector has a length field that counts the header and no
/// PASSWORD-ALGORITHM; its HMAC cannot be reproduced.)
const RFC8489_B1_REQUEST: &str = "
    00 01 00 90 21 12 a4 42 78 ad 34 33 c6 ad 72 c0 29 da 41 2e
    00 1e 00 20 4a 3c f3 8f ef 69 92 bd a9 52 c6 78 04 17 da 0f 24 81 94 15 56 9e 60 b2 05 c4 6e 41 40 7f 17 04
    00 15 00 29 6f 62 4d 61 74 4a 6f 73 32 41 41 41 43 66 2f 2f 34 39 39 6b 39 35 34 64 36 4f 4c 33
                34 6f 4c 39 46 53 54 76 79 36 34 73 41 00 00 00
    00 14 00 0b 65 78 61 6d 70 6c 65 2e 6f 72 67 00
    00 1d 00 04 00 02 00 00
    00 1c 00 20 b5 c7 bf 00 5b 6c 52 a2 1c 51 c5 e8 92 f8 19 24 13 62 96 cb 92 7c 43 14 93 09 27 8c c6 51 8e 65";

const SHORT_TERM_PASSWORD: &[u8] = b"VOkJxbRl1RmTxUk/WvJxBt";
const RFC5769_TID: [u8; 12] = [0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae];
const LONG_TERM_TID: [u8; 12] = [0x78, 0xad, 0x34, 0x33, 0xc6, 0xad, 0x72, 0xc0, 0x29, 0xda, 0x41, 0x2e];
/// "マトリックス" (unchanged by SASLprep and OpaqueString).
const LT_USERNAME: &str = "\u{30DE}\u{30C8}\u{30EA}\u{30C3}\u{30AF}\u{30B9}";
/// "The<U+00AD>M<U+00AA>tr<U+2168>" after SASLprep / OpaqueString.
const LT_PASSWORD: &str = "TheMatrIX";
const LT_REALM: &str = "example.org";

#[test]
fn rfc5769_sample_request() {
    let bytes = hex(SAMPLE_REQUEST);
    assert_eq!(bytes.len(), 108);
    let m = Message::parse(&bytes).unwrap();
    assert_eq!((m.method(), m.class()), (Method::BINDING, Class::Request));
    assert_eq!(m.transaction_id(), TransactionId(RFC5769_TID));
    assert_eq!(m.len(), 108);
    assert_eq!(m.software().unwrap(), Some("STUN test client"));
    assert_eq!(m.username().unwrap(), Some("evtj:h6vY"));
    assert_eq!(m.u32_attr(attr::PRIORITY).unwrap(), Some(0x6e00_01ff));
    assert_eq!(m.get(attr::ICE_CONTROLLED), Some(&[0x93, 0x2f, 0xf9, 0xb1, 0x51, 0x26, 0x3b, 0x36][..]));
    assert!(m.has_fingerprint());
    assert_eq!(m.check_integrity(SHORT_TERM_PASSWORD), Integrity::Valid { sha256: false });
    assert_eq!(m.check_integrity(b"VOkJxbRl1RmTxUk/WvJxBT"), Integrity::Invalid);
    assert_eq!(m.check_integrity(b""), Integrity::Invalid);
    assert!(m.unknown_comprehension_required(attr::KNOWN_COMPREHENSION_REQUIRED).is_empty());
    assert_eq!(
        &*m.unknown_comprehension_required(&[attr::USERNAME]),
        &[attr::PRIORITY, attr::MESSAGE_INTEGRITY],
        "ICE-CONTROLLED and SOFTWARE are comprehension-optional"
    );
}

#[test]
fn rfc5769_sample_responses_decode_the_xor_mapped_address() {
    for (vector, expected) in [
        (SAMPLE_IPV4_RESPONSE, "192.0.2.1:32853"),
        (SAMPLE_IPV6_RESPONSE, "[2001:db8:1234:5678:11:2233:4455:6677]:32853"),
    ] {
        let bytes = hex(vector);
        let m = Message::parse(&bytes).unwrap();
        assert_eq!((m.method(), m.class()), (Method::BINDING, Class::Success));
        assert_eq!(m.transaction_id(), TransactionId(RFC5769_TID));
        assert_eq!(m.software().unwrap(), Some("test vector"));
        let expected: SocketAddr = expected.parse().unwrap();
        assert_eq!(m.xor_address(attr::XOR_MAPPED_ADDRESS).unwrap(), Some(expected));
        assert_eq!(m.check_integrity(SHORT_TERM_PASSWORD), Integrity::Valid { sha256: false });
        assert_eq!(m.check_integrity(b"wrong"), Integrity::Invalid);

        // The writer encodes the same XOR-MAPPED-ADDRESS value, and a response built like the vector (zero
        // padding instead of spaces, hence a different HMAC and CRC) verifies.
        let mut buf = Vec::new();
        let mut w = MessageWriter::new(&mut buf, Method::BINDING, Class::Success, TransactionId(RFC5769_TID));
        w.text(attr::SOFTWARE, "test vector")
            .xor_address(attr::XOR_MAPPED_ADDRESS, expected)
            .integrity(SHORT_TERM_PASSWORD)
            .fingerprint();
        let built = w.finish().unwrap().to_vec();
        assert_eq!(built.len(), bytes.len());
        let again = Message::parse(&built).unwrap();
        assert_eq!(again.get(attr::XOR_MAPPED_ADDRESS), m.get(attr::XOR_MAPPED_ADDRESS));
        assert_eq!(again.check_integrity(SHORT_TERM_PASSWORD), Integrity::Valid { sha256: false });
        // Same bytes as the vector except the padding of SOFTWARE and what covers it.
        assert_eq!(built[..35], bytes[..35]);
        assert_eq!(built[36..built.len() - 32], bytes[36..bytes.len() - 32]);
    }
}

#[test]
fn rfc5769_long_term_request_verifies_and_is_reproduced_byte_for_byte() {
    let bytes = hex(SAMPLE_LONG_TERM_REQUEST);
    assert_eq!(bytes.len(), 116);
    let m = Message::parse(&bytes).unwrap();
    assert_eq!((m.method(), m.class()), (Method::BINDING, Class::Request));
    assert_eq!(m.username().unwrap(), Some(LT_USERNAME));
    assert_eq!(m.nonce().unwrap(), Some("f//499k954d6OL34oL9FSTvy64sA"));
    assert_eq!(m.realm().unwrap(), Some(LT_REALM));
    assert!(!m.has_fingerprint());
    let key = long_term_key_md5(LT_USERNAME, LT_REALM, LT_PASSWORD);
    assert_eq!(m.check_integrity(&key), Integrity::Valid { sha256: false });
    // The unprepared password gives another key.
    let raw = long_term_key_md5(LT_USERNAME, LT_REALM, "The\u{00AD}M\u{00AA}tr\u{2168}");
    assert_eq!(m.check_integrity(&raw), Integrity::Invalid);

    let mut buf = vec![0xAA; 3]; // the writer clears what was there
    let mut w = MessageWriter::new(&mut buf, Method::BINDING, Class::Request, TransactionId(LONG_TERM_TID));
    w.text(attr::USERNAME, LT_USERNAME)
        .text(attr::NONCE, "f//499k954d6OL34oL9FSTvy64sA")
        .text(attr::REALM, LT_REALM)
        .integrity(&key);
    assert_eq!(w.finish().unwrap(), &bytes[..]);
}

#[test]
fn rfc8489_b1_sha256_and_userhash_erratum_6268() {
    let bytes = hex(RFC8489_B1_REQUEST);
    assert_eq!(bytes.len(), 20 + 0x90);
    let m = Message::parse(&bytes).unwrap();
    assert_eq!(m.userhash().unwrap(), Some(&userhash(LT_USERNAME, LT_REALM)));
    assert_eq!(m.nonce().unwrap(), Some("obMatJos2AAACf//499k954d6OL34oL9FSTvy64sA"));
    assert_eq!(m.realm().unwrap(), Some(LT_REALM));
    assert_eq!(m.password_algorithm().unwrap(), Some((attr::PASSWORD_ALGORITHM_SHA256, &[][..])));
    let key = long_term_key_sha256(LT_USERNAME, LT_REALM, LT_PASSWORD);
    assert_eq!(m.check_integrity(&key), Integrity::Valid { sha256: true });
    let md5_key = long_term_key_md5(LT_USERNAME, LT_REALM, LT_PASSWORD);
    assert_eq!(m.check_integrity(&md5_key), Integrity::Invalid);

    let mut buf = Vec::new();
    let mut w = MessageWriter::new(&mut buf, Method::BINDING, Class::Request, TransactionId(LONG_TERM_TID));
    w.attr(attr::USERHASH, &userhash(LT_USERNAME, LT_REALM))
        .text(attr::NONCE, "obMatJos2AAACf//499k954d6OL34oL9FSTvy64sA")
        .text(attr::REALM, LT_REALM)
        .password_algorithm(attr::PASSWORD_ALGORITHM_SHA256)
        .integrity_sha256(&key);
    assert_eq!(w.finish().unwrap(), &bytes[..]);
}

#[test]
fn rfc8489_b1_as_published_is_rejected_for_its_length() {
    // The published vector's length field (0x9c) counts the 20-byte header: the attributes do not fill it.
    let mut bytes = hex(RFC8489_B1_REQUEST);
    bytes[3] = 0x9c;
    assert!(matches!(Message::parse(&bytes), Err(StunError::Truncated { .. })));
}

#[test]
fn a_flipped_bit_anywhere_never_yields_an_authentic_message() {
    let lt_key = long_term_key_md5(LT_USERNAME, LT_REALM, LT_PASSWORD);
    for (vector, key) in [
        (SAMPLE_REQUEST, SHORT_TERM_PASSWORD),
        (SAMPLE_IPV4_RESPONSE, SHORT_TERM_PASSWORD),
        (SAMPLE_IPV6_RESPONSE, SHORT_TERM_PASSWORD),
        (SAMPLE_LONG_TERM_REQUEST, &lt_key[..]),
    ] {
        let bytes = hex(vector);
        let fingerprinted = Message::parse(&bytes).unwrap().has_fingerprint();
        for i in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[i / 8] ^= 1 << (i % 8);
            // Most flips fail the header checks or FINGERPRINT. Some still parse (a flipped attribute length can
            // swallow FINGERPRINT into the attribute before it; a flipped type can hide MESSAGE-INTEGRITY), but
            // then the message is no longer fingerprinted, or its integrity is missing or invalid.
            if let Ok(m) = Message::parse(&b) {
                let authentic =
                    m.has_fingerprint() == fingerprinted && matches!(m.check_integrity(key), Integrity::Valid { .. });
                assert!(!authentic, "bit {i} flipped and the message still verifies: {m:?}");
            }
        }
    }
}
