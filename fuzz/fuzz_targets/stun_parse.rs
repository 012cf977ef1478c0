//! Feeds arbitrary bytes to the STUN/TURN codec: `Message::parse` and `parse_prefix` with every accessor and the
//! integrity check, ChannelData parsing and stream framing. Any panic is a bug. When a message parses, writing
//! its visible attributes back must give a message that parses to the same attributes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_stun::{attr, classify, parse_channel_data, stream_frame_len, Message, MessageWriter};

fn exercise(m: &Message<'_>) {
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
    let _ = m.check_integrity(b"key");
    let _ = m.check_integrity(&[]);
}

fuzz_target!(|data: &[u8]| {
    let _ = classify(data);
    let _ = stream_frame_len(data);
    let _ = parse_channel_data(data);
    if let Ok(m) = Message::parse_prefix(data) {
        exercise(&m);
    }
    if let Ok(m) = Message::parse(data) {
        exercise(&m);
        // Re-encode the visible attributes (integrity and fingerprint dropped) and parse again.
        let mut buf = Vec::new();
        let mut w = MessageWriter::new(&mut buf, m.method(), m.class(), m.transaction_id());
        let mut kept = Vec::new();
        for (ty, value) in m.attributes() {
            if ty != attr::MESSAGE_INTEGRITY && ty != attr::MESSAGE_INTEGRITY_SHA256 && ty != attr::FINGERPRINT {
                w.attr(ty, value);
                kept.push((ty, value));
            }
        }
        let Ok(bytes) = w.finish() else { panic!("a parsed message did not fit when re-encoded") };
        let Ok(again) = Message::parse(bytes) else { panic!("re-encoded message did not parse") };
        assert!(again.attributes().eq(kept.iter().copied()), "re-encoded attributes differ");
        assert_eq!(
            (again.method(), again.class(), again.transaction_id()),
            (m.method(), m.class(), m.transaction_id())
        );
    }
});
