//! Feeds arbitrary text to the decoder of protocol v1 client frames (`Envelope::parse`, then `into_request`), as the
//! signaling core does for every text frame of a v1 connection. Any panic is a bug. Beyond not crashing: an echoed
//! request id is always a number or a short string, an error always has a message, and a request that parses keeps
//! its relayed payload byte for byte and within the nesting limit, and the relay fast path agrees with serde_json on
//! every frame it takes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_proto::names::{name_key, normalize_name};
use switchboard_proto::request::{Envelope, Request, MAX_PAYLOAD_DEPTH, MAX_REQUEST_ID_BYTES};
use switchboard_proto::Dialect;

fn check_id(id: Option<&serde_json::value::RawValue>) {
    if let Some(id) = id {
        let text = id.get();
        let is_string = text.starts_with('"') && text.len() <= MAX_REQUEST_ID_BYTES + 2;
        let is_number = text.len() <= MAX_REQUEST_ID_BYTES && serde_json::from_str::<serde_json::Number>(text).is_ok();
        assert!(is_string || is_number, "an invalid id would be echoed: {text}");
    }
}

/// Deepest nesting of arrays and objects in valid JSON text, byte by byte (the oracle for the server's own checks).
fn nesting(json: &str) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for byte in json.bytes() {
        match (in_string, escaped, byte) {
            (true, true, _) => escaped = false,
            (true, false, b'\\') => escaped = true,
            (true, false, b'"') => in_string = false,
            (true, false, _) => {}
            (false, _, b'"') => in_string = true,
            (false, _, b'[' | b'{') => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            (false, _, b']' | b'}') => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Some(fast) = switchboard_proto::fast::relay_envelope(text) {
        let slow = Envelope::parse_with_serde(text).expect("serde_json parses every frame the fast path takes");
        assert_eq!(format!("{fast:?}"), format!("{slow:?}"), "the fast path and serde_json disagree");
        // The fast path's envelope skips the payload depth check (it checked as it validated): same request or error.
        assert_eq!(
            format!("{:?}", fast.into_request(Dialect::V1)),
            format!("{:?}", slow.into_request(Dialect::V1)),
            "the fast path's request differs"
        );
    }
    let envelope = match Envelope::parse(text) {
        Ok(envelope) => envelope,
        Err(error) => {
            assert!(!error.message.is_empty());
            return;
        }
    };
    let _ = envelope.is_tutorial_login();
    match envelope.into_request(Dialect::V1) {
        Ok(parsed) => {
            check_id(parsed.id);
            match parsed.request {
                Request::Login { name: Some(name), .. } => {
                    if let Ok(normal) = normalize_name(&name) {
                        // Normalising is idempotent and the key of a name is stable.
                        assert_eq!(normalize_name(&normal).ok().as_deref(), Some(normal.as_str()));
                        assert_eq!(name_key(&normal), name_key(&name_key(&normal)));
                    }
                }
                Request::Relay { payload: Some(payload), .. } => {
                    assert!(text.contains(payload.get()), "the payload is a slice of the frame");
                    // One JSON value by the grammar (a number out of f64's range, `1e999`, is valid JSON and goes
                    // through as written, so this is not a parse into `Value`).
                    let raw = serde_json::from_str::<&serde_json::value::RawValue>(payload.get());
                    assert!(raw.is_ok(), "a payload is one valid JSON value");
                    assert!(nesting(payload.get()) <= MAX_PAYLOAD_DEPTH, "a payload within the nesting limit");
                }
                _ => {}
            }
        }
        Err(error) => {
            check_id(error.id);
            assert!(!error.message.is_empty());
        }
    }
});
