//! Relayed events (`offer`, `answer`, `candidate`, `end-of-candidates`, and the tutorial's `offer`, `answer`, `ICE`)
//! written straight into a frame.
//!
//! They are the hot path: every relayed message becomes one. The payload arrives as JSON text that was validated
//! where it entered the server, or the cluster (a message relayed through another node carries its payload as text
//! that node validated). Serde could only write it through untouched as a `RawValue`, and making a `RawValue` of
//! text means scanning it again; so these events are written by hand, byte for byte what serialising [`Event`] and
//! [`TutorialEvent`] gives (a test holds them to it).
//!
//! [`Event`]: crate::Event
//! [`TutorialEvent`]: crate::tutorial::TutorialEvent

use crate::RelayKind;

/// Short fields of a relayed v1 event.
#[derive(Debug, Clone, Copy)]
pub struct RelayHeader<'a> {
    /// The sender's name.
    pub from: &'a str,
    /// The room, when relayed within one.
    pub room: Option<&'a str>,
    /// The call id, passed through.
    pub call_id: Option<&'a str>,
}

/// The v1 frame of a relayed message. `payload` is JSON text that was validated when it entered; `None` (or a kind
/// without payload) gives `end-of-candidates`.
pub fn v1_relay_frame(kind: RelayKind, header: RelayHeader<'_>, payload: Option<&str>) -> Vec<u8> {
    let payload = match kind {
        RelayKind::EndOfCandidates => None,
        _ => payload,
    };
    let (kind, payload_key) = match (kind, payload) {
        (RelayKind::Offer, Some(_)) => ("offer", "sdp"),
        (RelayKind::Answer, Some(_)) => ("answer", "sdp"),
        (RelayKind::Candidate, Some(_)) => ("candidate", "candidate"),
        _ => ("end-of-candidates", ""),
    };
    let size = 64
        + header.from.len()
        + header.room.map_or(0, str::len)
        + header.call_id.map_or(0, str::len)
        + payload.map_or(0, str::len);
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(b"{\"type\":\"");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\",\"from\":");
    write_string(&mut out, header.from);
    if let Some(room) = header.room {
        out.extend_from_slice(b",\"room\":");
        write_string(&mut out, room);
    }
    if let Some(call_id) = header.call_id {
        out.extend_from_slice(b",\"callId\":");
        write_string(&mut out, call_id);
    }
    if let Some(payload) = payload {
        out.extend_from_slice(b",\"");
        out.extend_from_slice(payload_key.as_bytes());
        out.extend_from_slice(b"\":");
        out.extend_from_slice(payload.as_bytes());
    }
    out.push(b'}');
    out
}

/// The tutorial frame of a relayed message (`offer`, `answer` or `ICE`), or `None` for `end-of-candidates`, which
/// the tutorial does not have. `payload` is JSON text that was validated when it entered.
pub fn tutorial_relay_frame(kind: RelayKind, name: &str, target: &str, payload: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(64 + name.len() + target.len() + payload.len());
    match kind {
        RelayKind::Offer | RelayKind::Answer => {
            out.extend_from_slice(if kind == RelayKind::Offer {
                b"{\"type\":\"offer\""
            } else {
                b"{\"type\":\"answer\""
            });
            out.extend_from_slice(b",\"name\":");
            write_string(&mut out, name);
            out.extend_from_slice(b",\"TargetUserName\":");
            write_string(&mut out, target);
            out.extend_from_slice(b",\"sdp\":");
            out.extend_from_slice(payload.as_bytes());
        }
        RelayKind::Candidate => {
            out.extend_from_slice(b"{\"type\":\"ICE\",\"candidate\":");
            out.extend_from_slice(payload.as_bytes());
            out.extend_from_slice(b",\"TargetUserName\":");
            write_string(&mut out, target);
        }
        RelayKind::EndOfCandidates => return None,
    }
    out.push(b'}');
    Some(out)
}

/// A JSON string, escaped exactly as serde_json escapes it.
fn write_string(out: &mut Vec<u8>, value: &str) {
    // Names (the usual value) need no escapes: copied between quotes, where serde_json's escaping writer took about
    // 100 instructions per relayed message (callgrind). The bytes JSON escapes are what the validator's scan stops at.
    if crate::fast::find_special(value.as_bytes(), 0).is_none() {
        out.reserve(value.len() + 2);
        out.push(b'"');
        out.extend_from_slice(value.as_bytes());
        out.push(b'"');
        return;
    }
    // Writing into a Vec cannot fail; an error would leave a partial string, which the caller's tests would catch.
    let _ = serde_json::to_writer(&mut *out, value);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tutorial::TutorialEvent;
    use crate::Event;
    use proptest::prelude::*;
    use serde_json::value::RawValue;

    const PAYLOADS: [&str; 4] = [
        r#"{"type":"offer","sdp":"v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n"}"#,
        r#"{"candidate":"candidate:1 1 udp 2122260223 10.0.0.1 5000 typ host","sdpMid":"0"}"#,
        r#"  "text with \"quotes\" and \u00e9"  "#,
        "[1,2.5,null,true,{\"a\":[]}]",
    ];

    fn serde_v1(kind: RelayKind, header: RelayHeader<'_>, payload: Option<&RawValue>) -> Vec<u8> {
        let from = header.from.into();
        let room = header.room.map(Into::into);
        let call_id = header.call_id.map(Into::into);
        let event: Event<'_> = match (kind, payload) {
            (RelayKind::Offer, Some(sdp)) => Event::Offer { from, room, call_id, sdp },
            (RelayKind::Answer, Some(sdp)) => Event::Answer { from, room, call_id, sdp },
            (RelayKind::Candidate, Some(candidate)) => Event::Candidate { from, room, call_id, candidate },
            _ => Event::EndOfCandidates { from, room, call_id },
        };
        event.to_json()
    }

    fn kinds() -> impl Strategy<Value = RelayKind> {
        prop_oneof![
            Just(RelayKind::Offer),
            Just(RelayKind::Answer),
            Just(RelayKind::Candidate),
            Just(RelayKind::EndOfCandidates)
        ]
    }

    proptest! {
        #[test]
        fn v1_frames_are_what_serde_writes(
            kind in kinds(),
            from in any::<String>(),
            room in proptest::option::of(any::<String>()),
            call_id in proptest::option::of(any::<String>()),
            payload in proptest::option::of(0..PAYLOADS.len()),
        ) {
            let raw = payload.map(|i| serde_json::from_str::<&RawValue>(PAYLOADS[i]).unwrap());
            let header = RelayHeader { from: &from, room: room.as_deref(), call_id: call_id.as_deref() };
            let ours = v1_relay_frame(kind, header, raw.map(RawValue::get));
            prop_assert_eq!(String::from_utf8(ours).unwrap(), String::from_utf8(serde_v1(kind, header, raw)).unwrap());
        }

        #[test]
        fn tutorial_frames_are_what_serde_writes(
            kind in kinds(),
            name in any::<String>(),
            target in any::<String>(),
            payload in 0..PAYLOADS.len(),
        ) {
            let raw: &RawValue = serde_json::from_str(PAYLOADS[payload]).unwrap();
            let ours = tutorial_relay_frame(kind, &name, &target, raw.get());
            let (name, target_user_name) = (name.as_str().into(), target.as_str().into());
            let theirs: Option<TutorialEvent<'_>> = match kind {
                RelayKind::Offer => Some(TutorialEvent::Offer { name, target_user_name, sdp: raw }),
                RelayKind::Answer => Some(TutorialEvent::Answer { name, target_user_name, sdp: raw }),
                RelayKind::Candidate => Some(TutorialEvent::Ice { candidate: raw, target_user_name }),
                RelayKind::EndOfCandidates => None,
            };
            prop_assert_eq!(ours, theirs.map(|event| event.to_json()));
        }
    }

    #[test]
    fn control_characters_and_quotes_are_escaped() {
        let header = RelayHeader { from: "a\"b\\c\n\u{1}é", room: None, call_id: None };
        let frame = v1_relay_frame(RelayKind::EndOfCandidates, header, None);
        let parsed: serde_json::Value = serde_json::from_slice(&frame).unwrap();
        assert_eq!(parsed["from"], "a\"b\\c\n\u{1}é");
        assert_eq!(parsed["type"], "end-of-candidates");
    }
}
