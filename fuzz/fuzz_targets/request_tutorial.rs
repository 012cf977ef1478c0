//! The decoder of the classic tutorial dialect: client frames of a tutorial connection (`Login`, `offer`, `answer`,
//! `ICE` with the tutorial's field names) through `Envelope` with `Dialect::Tutorial`, and the server's tutorial
//! messages (`TutorialEvent`) as a client decodes them, which must encode back to an equal value. Any panic is a bug.
//! The relay fast path must agree with serde_json on every frame it takes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_proto::request::{Envelope, Request};
use switchboard_proto::tutorial::TutorialEvent;
use switchboard_proto::Dialect;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Some(fast) = switchboard_proto::fast::relay_envelope(text) {
        let slow = Envelope::parse_with_serde(text).expect("serde_json parses every frame the fast path takes");
        assert_eq!(format!("{fast:?}"), format!("{slow:?}"), "the fast path and serde_json disagree");
        // The fast path's envelope skips the payload depth check (it checked as it validated): same request or error.
        assert_eq!(
            format!("{:?}", fast.into_request(Dialect::Tutorial)),
            format!("{:?}", slow.into_request(Dialect::Tutorial)),
            "the fast path's request differs"
        );
    }
    if let Ok(envelope) = Envelope::parse(text) {
        match envelope.into_request(Dialect::Tutorial) {
            Ok(parsed) => match parsed.request {
                Request::TutorialLogin { .. } | Request::Relay { room: None, call_id: None, .. } => {}
                other => panic!("a tutorial connection produced a v1-only request: {other:?}"),
            },
            Err(error) => assert!(!error.message.is_empty()),
        }
    }
    // What a client of the tutorial dialect decodes; a decoded event re-encodes to the same value.
    if let Ok(event) = serde_json::from_str::<TutorialEvent<'_, serde_json::Value>>(text) {
        let again = event.to_json();
        let decoded: TutorialEvent<'_, serde_json::Value> =
            serde_json::from_slice(&again).expect("an encoded event decodes");
        assert_eq!(serde_json::to_value(&decoded).ok(), serde_json::to_value(&event).ok());
    }
});
