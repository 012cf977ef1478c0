//! Messages the server sends to clients of the classic tutorial dialect (`shared/seed-protocol.md`), with its exact
//! field names. Relayed payloads are `P`, as in [`crate::event`].

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// A server-to-client message of the tutorial dialect.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type")]
#[allow(missing_docs)]
pub enum TutorialEvent<'a, P = &'a RawValue> {
    /// The full list of online names; the page replaces its list.
    RenderUserList { userlist: Vec<Cow<'a, str>> },
    /// `name` is the sender as the server knows it, never what the sender claimed.
    #[serde(rename = "offer")]
    Offer {
        name: Cow<'a, str>,
        #[serde(rename = "TargetUserName")]
        target_user_name: Cow<'a, str>,
        sdp: P,
    },
    #[serde(rename = "answer")]
    Answer {
        name: Cow<'a, str>,
        #[serde(rename = "TargetUserName")]
        target_user_name: Cow<'a, str>,
        sdp: P,
    },
    #[serde(rename = "ICE")]
    Ice {
        candidate: P,
        #[serde(rename = "TargetUserName")]
        target_user_name: Cow<'a, str>,
    },
}

impl<P: Serialize> TutorialEvent<'_, P> {
    /// The message as one JSON text frame.
    pub fn to_json(&self) -> Vec<u8> {
        self.to_json_sized(0)
    }

    /// The message as one JSON text frame, allocated once for about `payload_bytes` of relayed payload.
    pub fn to_json_sized(&self, payload_bytes: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(128 + payload_bytes);
        if serde_json::to_writer(&mut out, self).is_err() {
            out.clear();
        }
        out
    }
}

/// [`TutorialEvent`] as the server builds it: relayed payloads are borrowed raw JSON.
pub type OutTutorialEvent<'a> = TutorialEvent<'a, &'a RawValue>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_names_match_the_tutorial() {
        let candidate: &RawValue = serde_json::from_str(r#"{"candidate":"candidate:1","sdpMid":"0"}"#).unwrap();
        let ice: TutorialEvent<'_> = TutorialEvent::Ice { candidate, target_user_name: "bob".into() };
        assert_eq!(
            std::str::from_utf8(&ice.to_json()).unwrap(),
            r#"{"type":"ICE","candidate":{"candidate":"candidate:1","sdpMid":"0"},"TargetUserName":"bob"}"#
        );
        let list: TutorialEvent<'_> = TutorialEvent::RenderUserList { userlist: vec!["a".into(), "b".into()] };
        assert_eq!(std::str::from_utf8(&list.to_json()).unwrap(), r#"{"type":"RenderUserList","userlist":["a","b"]}"#);
    }

    /// A number in a payload decodes, re-encodes and decodes to the same value (found by the `request_tutorial`
    /// fuzz target: without serde_json's `float_roundtrip`, parsing may be off by one unit in the last place).
    #[test]
    fn decoded_numbers_survive_a_round_trip() {
        let text = r#"{"type":"offer","name":"alice","TargetUserName":"boz","sdp":{"n":444443333333333333333333333333333344440}}"#;
        let event: TutorialEvent<'_, serde_json::Value> = serde_json::from_str(text).unwrap();
        let again: TutorialEvent<'_, serde_json::Value> = serde_json::from_slice(&event.to_json()).unwrap();
        assert_eq!(serde_json::to_value(&again).unwrap(), serde_json::to_value(&event).unwrap());
    }
}
