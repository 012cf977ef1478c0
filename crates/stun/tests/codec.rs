//! Behaviour of the parser, the writer, ChannelData and stream framing, case by case.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;

use switchboard_stun::{
    attr, classify, parse_channel_data, stream_frame_len, write_channel_data, Class, Integrity, Kind, Message,
    MessageWriter, Method, StunError, TransactionId, HEADER_LEN, MAX_ATTRIBUTES,
};

const TID: TransactionId = TransactionId([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);

fn build(f: impl FnOnce(&mut MessageWriter<'_>)) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut w = MessageWriter::new(&mut buf, Method::ALLOCATE, Class::Request, TID);
    f(&mut w);
    w.finish().unwrap().to_vec()
}

/// A header with `len` and the bytes after it, without any checks.
fn raw(len: u16, body: &[u8]) -> Vec<u8> {
    let mut b = vec![0x00, 0x01];
    b.extend_from_slice(&len.to_be_bytes());
    b.extend_from_slice(&0x2112_A442u32.to_be_bytes());
    b.extend_from_slice(&TID.0);
    b.extend_from_slice(body);
    b
}

// ---- Header and framing errors ----

#[test]
fn header_errors_are_typed() {
    assert_eq!(Message::parse(&[]).unwrap_err(), StunError::Truncated { needed: 8, available: 0 });
    assert_eq!(Message::parse(&raw(0, &[])[..19]).unwrap_err(), StunError::Truncated { needed: 20, available: 19 });
    let mut b = raw(0, &[]);
    b[0] = 0x40;
    assert_eq!(Message::parse(&b).unwrap_err(), StunError::NotStun);
    let mut b = raw(0, &[]);
    b[4] = 0;
    assert_eq!(Message::parse(&b).unwrap_err(), StunError::BadMagicCookie(0x0012_A442));
    assert_eq!(Message::parse(&raw(2, &[0, 0])).unwrap_err(), StunError::UnalignedLength(2));
    assert_eq!(Message::parse(&raw(8, &[0; 4])).unwrap_err(), StunError::Truncated { needed: 28, available: 24 });
    assert_eq!(Message::parse(&raw(0, &[0; 4])).unwrap_err(), StunError::TrailingBytes { extra: 4 });
    let with_trailer = raw(0, &[0; 4]);
    let m = Message::parse_prefix(&with_trailer).unwrap();
    assert_eq!(m.len(), HEADER_LEN);
    assert_eq!(m.attributes().count(), 0);
}

#[test]
fn attributes_must_exactly_fill_the_length() {
    // Value of 5 bytes needs 8 with padding; the message has room for 4 + 4.
    let b = raw(8, &[0x00, 0x06, 0x00, 0x05, b'a', b'b', b'c', b'd']);
    assert_eq!(Message::parse(&b).unwrap_err(), StunError::AttributeOverrun { attr_type: 0x0006, len: 5 });
    // Padded correctly it parses, and the padding is not part of the value.
    let b = raw(12, &[0x00, 0x06, 0x00, 0x05, b'a', b'b', b'c', b'd', b'e', 0xFF, 0xFF, 0xFF]);
    assert_eq!(Message::parse(&b).unwrap().username().unwrap(), Some("abcde"));
}

#[test]
fn too_many_attributes_are_refused() {
    let ok = build(|w| {
        for _ in 0..MAX_ATTRIBUTES {
            w.attr(0x8100, b"");
        }
    });
    assert_eq!(Message::parse(&ok).unwrap().attributes().count(), MAX_ATTRIBUTES);
    let too_many = build(|w| {
        for _ in 0..=MAX_ATTRIBUTES {
            w.attr(0x8100, b"");
        }
    });
    assert_eq!(Message::parse(&too_many).unwrap_err(), StunError::TooManyAttributes);
    // Ignored attributes (after MESSAGE-INTEGRITY) count too.
    let hidden = build(|w| {
        w.integrity(b"k");
        for _ in 0..MAX_ATTRIBUTES {
            w.attr(0x8100, b"");
        }
    });
    assert_eq!(Message::parse(&hidden).unwrap_err(), StunError::TooManyAttributes);
}

#[test]
fn fingerprint_must_be_last_and_correct() {
    let good = build(|w| {
        w.text(attr::SOFTWARE, "x").fingerprint();
    });
    assert!(Message::parse(&good).unwrap().has_fingerprint());

    let mut bad = good.clone();
    let n = bad.len();
    bad[n - 1] ^= 1;
    assert_eq!(Message::parse(&bad).unwrap_err(), StunError::FingerprintMismatch);

    // FINGERPRINT followed by another attribute: append one by hand and fix the length.
    let mut not_last = good.clone();
    not_last.extend_from_slice(&[0x80, 0x22, 0x00, 0x00]);
    let len = (not_last.len() - HEADER_LEN) as u16;
    not_last[2..4].copy_from_slice(&len.to_be_bytes());
    assert_eq!(Message::parse(&not_last).unwrap_err(), StunError::FingerprintNotLast);

    let wrong_len = raw(12, &[0x80, 0x28, 0x00, 0x08, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(
        Message::parse(&wrong_len).unwrap_err(),
        StunError::BadAttributeLength { attr_type: attr::FINGERPRINT, len: 8 }
    );
}

#[test]
fn integrity_attributes_of_impossible_length_are_refused() {
    let mi = raw(8, &[0x00, 0x08, 0x00, 0x04, 0, 0, 0, 0]);
    assert_eq!(
        Message::parse(&mi).unwrap_err(),
        StunError::BadAttributeLength { attr_type: attr::MESSAGE_INTEGRITY, len: 4 }
    );
    let mut body = vec![0x00, 0x1C, 0x00, 0x0C];
    body.extend_from_slice(&[0; 12]);
    assert_eq!(
        Message::parse(&raw(16, &body)).unwrap_err(),
        StunError::BadAttributeLength { attr_type: attr::MESSAGE_INTEGRITY_SHA256, len: 12 }
    );
}

// ---- Visibility after MESSAGE-INTEGRITY (RFC 8489 14.5, 14.6) ----

#[test]
fn attributes_after_integrity_are_ignored_except_fingerprint() {
    let key = b"secret";
    let bytes = build(|w| {
        w.lifetime(600).integrity(key).lifetime(0).attr(attr::DATA, b"injected").fingerprint();
    });
    let m = Message::parse(&bytes).unwrap();
    assert_eq!(m.lifetime().unwrap(), Some(600), "the LIFETIME after MESSAGE-INTEGRITY is ignored");
    assert_eq!(m.data(), None);
    assert_eq!(m.get_all(attr::LIFETIME).count(), 1);
    assert!(m.has_fingerprint());
    assert_eq!(m.check_integrity(key), Integrity::Valid { sha256: false });
    assert!(m.unknown_comprehension_required(&[attr::LIFETIME, attr::MESSAGE_INTEGRITY]).is_empty());
}

#[test]
fn sha256_integrity_may_follow_sha1_and_both_must_verify() {
    let key = b"secret";
    let both = build(|w| {
        w.text(attr::USERNAME, "u").integrity(key).integrity_sha256(key).lifetime(5).fingerprint();
    });
    let m = Message::parse(&both).unwrap();
    assert_eq!(m.check_integrity(key), Integrity::Valid { sha256: true });
    assert_eq!(m.check_integrity(b"other"), Integrity::Invalid);
    assert_eq!(m.lifetime().unwrap(), None, "after MESSAGE-INTEGRITY-SHA256 only FINGERPRINT counts");

    // SHA-256 first: a MESSAGE-INTEGRITY after it is ignored, so a wrong one does not matter.
    let sha256_first = build(|w| {
        w.integrity_sha256(key).integrity(b"garbage");
    });
    let m = Message::parse(&sha256_first).unwrap();
    assert_eq!(m.check_integrity(key), Integrity::Valid { sha256: true });
    assert!(!m.contains(attr::MESSAGE_INTEGRITY));

    // Both present with different keys: invalid whichever key is tried.
    let mixed = build(|w| {
        w.integrity(b"a").integrity_sha256(b"b");
    });
    let m = Message::parse(&mixed).unwrap();
    assert_eq!(m.check_integrity(b"a"), Integrity::Invalid);
    assert_eq!(m.check_integrity(b"b"), Integrity::Invalid);

    let none = build(|w| {
        w.text(attr::USERNAME, "u");
    });
    assert_eq!(Message::parse(&none).unwrap().check_integrity(key), Integrity::Missing);
}

#[test]
fn truncated_sha256_integrity_verifies() {
    use hmac::{KeyInit, Mac};
    // RFC 8489 14.6 allows the HMAC-SHA256 to be truncated to 16..=32 bytes (a multiple of 4); the sender computes
    // it with the length field counting the truncated attribute. Build such a message by hand.
    let key = b"k";
    for tag_len in [16usize, 20, 24, 28, 32] {
        let mut bytes = build(|w| {
            w.text(attr::REALM, "r");
        });
        // The HMAC covers the message before the attribute, the length already counting the attribute.
        let len = (bytes.len() + 4 + tag_len - HEADER_LEN) as u16;
        bytes[2..4].copy_from_slice(&len.to_be_bytes());
        let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key).unwrap();
        mac.update(&bytes);
        let tag = mac.finalize().into_bytes();
        bytes.extend_from_slice(&attr::MESSAGE_INTEGRITY_SHA256.to_be_bytes());
        bytes.extend_from_slice(&(tag_len as u16).to_be_bytes());
        bytes.extend_from_slice(&tag[..tag_len]);
        let m = Message::parse(&bytes).unwrap();
        assert_eq!(m.check_integrity(key), Integrity::Valid { sha256: true }, "{tag_len}");
        assert_eq!(m.check_integrity(b"j"), Integrity::Invalid);
    }
}

#[test]
fn tampering_before_the_integrity_attribute_is_detected() {
    let key = b"secret";
    let bytes = build(|w| {
        w.text(attr::USERNAME, "alice").lifetime(600).integrity(key);
    });
    for i in HEADER_LEN..bytes.len() - 24 {
        let mut b = bytes.clone();
        b[i] ^= 0x01;
        if let Ok(m) = Message::parse(&b) {
            assert_ne!(m.check_integrity(key), Integrity::Valid { sha256: false }, "byte {i}");
        }
    }
}

// ---- Typed accessors ----

#[test]
fn text_accessors_check_utf8_and_length_limits() {
    let bytes = build(|w| {
        w.attr(attr::USERNAME, &[0xFF, 0xFE]).attr(attr::REALM, &[b'r'; 764]).text(attr::NONCE, &"n".repeat(763));
    });
    let m = Message::parse(&bytes).unwrap();
    assert_eq!(m.username().unwrap_err(), StunError::NotUtf8 { attr_type: attr::USERNAME });
    assert_eq!(m.realm().unwrap_err(), StunError::TextTooLong { attr_type: attr::REALM, len: 764, max: 763 });
    assert_eq!(m.nonce().unwrap().map(str::len), Some(763));
    assert_eq!(m.software().unwrap(), None);

    let long_user = build(|w| {
        w.text(attr::USERNAME, &"u".repeat(513));
    });
    let m = Message::parse(&long_user).unwrap();
    assert_eq!(m.username().unwrap_err(), StunError::TextTooLong { attr_type: attr::USERNAME, len: 513, max: 512 });
}

#[test]
fn turn_attributes_round_trip_and_are_validated() {
    let bytes = build(|w| {
        w.requested_transport(attr::TRANSPORT_UDP)
            .lifetime(3600)
            .channel_number(0x4001)
            .even_port(true)
            .attr(attr::DONT_FRAGMENT, b"")
            .address_family(attr::REQUESTED_ADDRESS_FAMILY, attr::FAMILY_IPV6)
            .address_family(attr::ADDITIONAL_ADDRESS_FAMILY, 0x07)
            .attr(attr::RESERVATION_TOKEN, &[1, 2, 3, 4, 5, 6, 7, 8])
            .error_code(438, "Stale Nonce")
            .unknown_attributes(&[0x0031, 0x7FFF, 0x0001]);
    });
    let m = Message::parse(&bytes).unwrap();
    assert_eq!(m.requested_transport().unwrap(), Some(17));
    assert_eq!(m.lifetime().unwrap(), Some(3600));
    assert_eq!(m.channel_number().unwrap(), Some(0x4001));
    assert_eq!(m.even_port().unwrap(), Some(true));
    assert!(m.dont_fragment());
    assert_eq!(m.requested_address_family().unwrap(), Some(attr::FAMILY_IPV6));
    assert_eq!(m.additional_address_family().unwrap(), Some(0x07), "passed through for a 440");
    assert_eq!(m.reservation_token().unwrap(), Some([1, 2, 3, 4, 5, 6, 7, 8]));
    assert_eq!(m.error_code().unwrap(), Some((438, "Stale Nonce")));
    assert_eq!(m.unknown_attributes().unwrap().unwrap().collect::<Vec<_>>(), vec![0x0031, 0x7FFF, 0x0001]);
    assert_eq!(m.get(attr::UNKNOWN_ATTRIBUTES).map(<[u8]>::len), Some(6));
    assert_eq!(bytes.len() % 4, 0);

    let empty = build(|_| {});
    let m = Message::parse(&empty).unwrap();
    assert_eq!(m.requested_transport().unwrap(), None);
    assert_eq!(m.channel_number().unwrap(), None);
    assert_eq!(m.even_port().unwrap(), None);
    assert!(!m.dont_fragment());
    assert_eq!(m.error_code().unwrap(), None);
    assert_eq!(m.xor_address(attr::XOR_PEER_ADDRESS).unwrap(), None);
}

#[test]
fn malformed_turn_attributes_give_typed_errors() {
    let bytes = build(|w| {
        w.attr(attr::LIFETIME, &[0, 0, 1])
            .channel_number(0x3FFF)
            .attr(attr::EVEN_PORT, &[0x80, 0, 0, 0])
            .attr(attr::ERROR_CODE, &[0, 0, 2, 50])
            .attr(attr::REQUESTED_TRANSPORT, &[17])
            .attr(attr::USERHASH, &[0; 31])
            .attr(attr::PASSWORD_ALGORITHM, &[0, 2, 0, 4, 1, 2])
            .attr(attr::UNKNOWN_ATTRIBUTES, &[0, 1, 0]);
    });
    let m = Message::parse(&bytes).unwrap();
    assert_eq!(m.lifetime().unwrap_err(), StunError::BadAttributeLength { attr_type: attr::LIFETIME, len: 3 });
    assert_eq!(m.channel_number().unwrap_err(), StunError::BadChannelNumber(0x3FFF));
    assert_eq!(m.even_port().unwrap_err(), StunError::BadAttributeLength { attr_type: attr::EVEN_PORT, len: 4 });
    assert_eq!(m.error_code().unwrap_err(), StunError::BadErrorCode { class: 2, number: 50 });
    assert!(matches!(m.requested_transport(), Err(StunError::BadAttributeLength { .. })));
    assert!(matches!(m.userhash(), Err(StunError::BadAttributeLength { .. })));
    assert!(matches!(m.password_algorithm(), Err(StunError::BadAttributeLength { .. })));
    assert!(matches!(m.unknown_attributes(), Err(StunError::BadAttributeLength { .. })));

    let code = build(|w| {
        w.attr(attr::ERROR_CODE, &[0, 0, 4, 100]);
    });
    let m = Message::parse(&code).unwrap();
    assert_eq!(m.error_code().unwrap_err(), StunError::BadErrorCode { class: 4, number: 100 });
}

#[test]
fn addresses_round_trip_xored_and_plain_and_repeat() {
    let v4: SocketAddr = "203.0.113.7:5000".parse().unwrap();
    let v6: SocketAddr = "[2001:db8::1]:65535".parse().unwrap();
    let bytes = build(|w| {
        w.xor_address(attr::XOR_PEER_ADDRESS, v4)
            .xor_address(attr::XOR_PEER_ADDRESS, v6)
            .xor_address(attr::XOR_RELAYED_ADDRESS, v6)
            .address(attr::ALTERNATE_SERVER, v4)
            .address(attr::MAPPED_ADDRESS, v6);
    });
    let m = Message::parse(&bytes).unwrap();
    assert_eq!(m.xor_address(attr::XOR_PEER_ADDRESS).unwrap(), Some(v4));
    let peers: Vec<_> = m.xor_addresses(attr::XOR_PEER_ADDRESS).collect();
    assert_eq!(peers, vec![Ok(v4), Ok(v6)]);
    assert_eq!(m.xor_address(attr::XOR_RELAYED_ADDRESS).unwrap(), Some(v6));
    assert_eq!(m.address(attr::ALTERNATE_SERVER).unwrap(), Some(v4));
    assert_eq!(m.address(attr::MAPPED_ADDRESS).unwrap(), Some(v6));
    // Plain and XORed encodings differ on the wire.
    assert_ne!(m.get(attr::ALTERNATE_SERVER), m.get(attr::XOR_PEER_ADDRESS));
}

#[test]
fn malformed_addresses_give_typed_errors() {
    let bytes = build(|w| {
        w.attr(attr::XOR_PEER_ADDRESS, &[0, 3, 0, 0, 1, 2, 3, 4])
            .attr(attr::XOR_PEER_ADDRESS, &[0, 1, 0, 0, 1, 2, 3])
            .attr(attr::XOR_PEER_ADDRESS, &[0, 2, 0, 0, 1, 2, 3, 4])
            .attr(attr::XOR_PEER_ADDRESS, &[0, 1]);
    });
    let m = Message::parse(&bytes).unwrap();
    let results: Vec<_> = m.xor_addresses(attr::XOR_PEER_ADDRESS).collect();
    assert_eq!(
        results,
        vec![
            Err(StunError::BadAddressFamily { attr_type: attr::XOR_PEER_ADDRESS, family: 3 }),
            Err(StunError::BadAttributeLength { attr_type: attr::XOR_PEER_ADDRESS, len: 7 }),
            Err(StunError::BadAttributeLength { attr_type: attr::XOR_PEER_ADDRESS, len: 8 }),
            Err(StunError::BadAttributeLength { attr_type: attr::XOR_PEER_ADDRESS, len: 2 }),
        ]
    );
}

#[test]
fn unknown_comprehension_required_lists_each_unknown_type_once() {
    let bytes = build(|w| {
        w.attr(0x0031, b"")
            .attr(attr::SOFTWARE, b"x")
            .attr(0x7FFF, b"")
            .attr(0x0031, b"")
            .attr(0xC001, b"")
            .lifetime(1);
    });
    let m = Message::parse(&bytes).unwrap();
    assert_eq!(&*m.unknown_comprehension_required(attr::KNOWN_COMPREHENSION_REQUIRED), &[0x0031, 0x7FFF]);
    assert_eq!(&*m.unknown_comprehension_required(&[]), &[0x0031, 0x7FFF, attr::LIFETIME]);
}

// ---- Writer ----

#[test]
fn writer_reuses_its_buffer_and_keeps_the_length_current() {
    let mut buf = Vec::with_capacity(256);
    let ptr = buf.as_ptr();
    for i in 0..10u32 {
        let mut w = MessageWriter::new(&mut buf, Method::DATA, Class::Indication, TID);
        assert_eq!(w.as_bytes().len(), HEADER_LEN);
        w.xor_address(attr::XOR_PEER_ADDRESS, "10.0.0.1:1".parse().unwrap());
        assert_eq!(u16::from_be_bytes([w.as_bytes()[2], w.as_bytes()[3]]), 12);
        w.attr(attr::DATA, &vec![i as u8; i as usize]);
        let len = w.as_bytes().len();
        assert_eq!(usize::from(u16::from_be_bytes([w.as_bytes()[2], w.as_bytes()[3]])), len - HEADER_LEN);
        let bytes = w.finish().unwrap();
        let m = Message::parse(bytes).unwrap();
        assert_eq!(m.data().unwrap(), &vec![i as u8; i as usize][..]);
        assert_eq!((m.method(), m.class()), (Method::DATA, Class::Indication));
    }
    assert_eq!(buf.as_ptr(), ptr, "no reallocation within capacity");
}

#[test]
fn writer_refuses_messages_over_the_length_field() {
    let mut buf = Vec::new();
    let big = vec![0u8; 65_527]; // the largest IPv6 UDP payload
    let mut w = MessageWriter::new(&mut buf, Method::DATA, Class::Indication, TID);
    w.xor_address(attr::XOR_PEER_ADDRESS, "[2001:db8::1]:1".parse().unwrap()).attr(attr::DATA, &big).fingerprint();
    assert_eq!(w.finish().unwrap_err(), StunError::TooLongToEncode);
    // The buffer still holds a well-formed message without the attribute that did not fit.
    let m = Message::parse(&buf).unwrap();
    assert_eq!(m.data(), None);
    assert!(!m.has_fingerprint());

    // The largest that fits: 65532 bytes of attributes (the length is a multiple of 4).
    let mut w = MessageWriter::new(&mut buf, Method::DATA, Class::Indication, TID);
    w.attr(attr::DATA, &vec![0u8; 65_528]);
    let bytes = w.finish().unwrap();
    assert_eq!(bytes.len(), HEADER_LEN + 65_532);
    assert_eq!(Message::parse(bytes).unwrap().data().map(<[u8]>::len), Some(65_528));
    let mut w = MessageWriter::new(&mut buf, Method::DATA, Class::Indication, TID);
    w.attr(attr::DATA, &vec![0u8; 65_529]);
    assert_eq!(w.finish().unwrap_err(), StunError::TooLongToEncode);

    let mut w = MessageWriter::new(&mut buf, Method::DATA, Class::Indication, TID);
    w.attr(attr::DATA, &vec![0u8; 70_000]);
    assert_eq!(w.finish().unwrap_err(), StunError::TooLongToEncode);
}

#[test]
fn error_code_reason_is_cut_at_a_character_boundary() {
    let reason = "é".repeat(400); // 800 bytes
    let bytes = build(|w| {
        w.error_code(500, &reason);
    });
    let (code, got) = Message::parse(&bytes).unwrap().error_code().unwrap().unwrap();
    assert_eq!(code, 500);
    assert_eq!(got.len(), 762);
    assert!(reason.starts_with(got));
}

#[test]
fn methods_outside_twelve_bits_are_masked() {
    let mut buf = Vec::new();
    let w = MessageWriter::new(&mut buf, Method(0xF001), Class::Success, TID);
    let m = Message::parse(w.finish().unwrap()).unwrap();
    assert_eq!((m.method(), m.class()), (Method(0x001), Class::Success));
}

// ---- ChannelData ----

#[test]
fn channel_data_round_trips_with_and_without_padding() {
    let mut buf = Vec::new();
    for len in 0..9usize {
        let data: Vec<u8> = (0..len as u8).collect();
        for pad in [false, true] {
            write_channel_data(&mut buf, 0x4ABC, &data, pad).unwrap();
            assert_eq!(buf.len(), if pad { 4 + len.div_ceil(4) * 4 } else { 4 + len });
            assert_eq!(classify(&buf), Kind::ChannelData);
            assert_eq!(parse_channel_data(&buf).unwrap(), (0x4ABC, &data[..]));
            assert_eq!(stream_frame_len(&buf).unwrap(), Some(4 + len.div_ceil(4) * 4));
        }
    }
}

#[test]
fn channel_data_errors_are_typed() {
    assert_eq!(parse_channel_data(&[0x40, 0x00, 0x00]).unwrap_err(), StunError::Truncated { needed: 4, available: 3 });
    assert_eq!(parse_channel_data(&[0x80, 0x00, 0x00, 0x00]).unwrap_err(), StunError::BadChannelNumber(0x8000));
    assert_eq!(parse_channel_data(&[0x3F, 0xFF, 0x00, 0x00]).unwrap_err(), StunError::BadChannelNumber(0x3FFF));
    assert_eq!(
        parse_channel_data(&[0x40, 0x00, 0x00, 0x05, 1, 2, 3, 4]).unwrap_err(),
        StunError::Truncated { needed: 9, available: 8 }
    );
    assert_eq!(
        parse_channel_data(&[0x40, 0x00, 0x00, 0x01, 1, 0, 0, 0, 0]).unwrap_err(),
        StunError::ChannelDataTrailingBytes { extra: 4 }
    );
    assert_eq!(
        parse_channel_data(&[0x40, 0x00, 0x00, 0x04, 1, 2, 3, 4, 0]).unwrap_err(),
        StunError::ChannelDataTrailingBytes { extra: 1 }
    );
    let mut buf = vec![1, 2, 3];
    assert_eq!(write_channel_data(&mut buf, 0x8000, b"x", true).unwrap_err(), StunError::BadChannelNumber(0x8000));
    assert!(buf.is_empty());
    assert_eq!(write_channel_data(&mut buf, 0x4000, &vec![0; 65_536], true).unwrap_err(), StunError::TooLongToEncode);
    write_channel_data(&mut buf, 0x4FFF, &vec![7; 65_535], false).unwrap();
    assert_eq!(parse_channel_data(&buf).unwrap().1.len(), 65_535);
}

// ---- Stream framing ----

#[test]
fn stream_framing_splits_a_stream_of_mixed_messages() {
    let mut stream = Vec::new();
    let mut lens = Vec::new();
    let mut buf = Vec::new();
    for i in 0..20usize {
        if i % 3 == 0 {
            write_channel_data(&mut buf, 0x4000 + i as u16, &vec![i as u8; i], true).unwrap();
        } else {
            let mut w = MessageWriter::new(&mut buf, Method::SEND, Class::Indication, TID);
            w.attr(attr::DATA, &vec![i as u8; i]).fingerprint();
            w.finish().unwrap();
        }
        lens.push(buf.len());
        stream.extend_from_slice(&buf);
    }
    // Feed the stream one byte at a time and frame it.
    let mut got = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    for &byte in &stream {
        pending.push(byte);
        while let Some(n) = stream_frame_len(&pending).unwrap() {
            if pending.len() < n {
                break;
            }
            let frame: Vec<u8> = pending.drain(..n).collect();
            match classify(&frame) {
                Kind::Stun => {
                    Message::parse(&frame).unwrap();
                }
                Kind::ChannelData => {
                    parse_channel_data(&frame).unwrap();
                }
                Kind::Other => panic!("unclassifiable frame"),
            }
            got.push(n);
        }
    }
    assert!(pending.is_empty());
    assert_eq!(got, lens);
}

#[test]
fn stream_framing_needs_enough_bytes_and_rejects_garbage() {
    assert_eq!(stream_frame_len(&[]).unwrap(), None);
    assert_eq!(stream_frame_len(&[0x00, 0x01, 0x00]).unwrap(), None);
    assert_eq!(stream_frame_len(&[0x00, 0x01, 0x00, 0x02]).unwrap_err(), StunError::UnalignedLength(2));
    assert_eq!(stream_frame_len(&[0x00, 0x01, 0x00, 0x08, 0x21, 0x12, 0xA4]).unwrap(), None);
    assert_eq!(stream_frame_len(&[0x00, 0x01, 0x00, 0x08, 0x21, 0x12, 0xA4, 0x42]).unwrap(), Some(28));
    assert_eq!(
        stream_frame_len(&[0x00, 0x01, 0x00, 0x08, 0x21, 0x12, 0xA4, 0x43]).unwrap_err(),
        StunError::BadMagicCookie(0x2112_A443)
    );
    assert_eq!(stream_frame_len(&[0x40, 0x00, 0x00]).unwrap(), None);
    assert_eq!(stream_frame_len(&[0x40, 0x00, 0xFF, 0xFF]).unwrap(), Some(4 + 65_536));
    for first in [0x80u8, 0xFF, 0x16] {
        if first & 0xC0 != 0 {
            assert_eq!(stream_frame_len(&[first]).unwrap_err(), StunError::UnknownFraming(first));
        }
    }
}
