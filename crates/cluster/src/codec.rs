//! What nodes publish to each other: envelopes of messages from one node, in two encodings that share a channel.
//!
//! - **JSON** (`{"from":..,"ms":[..],"codec":2}`), which every version reads. A node sends it to nodes it has not
//!   heard speak the binary encoding yet, and on the broadcast channel. `codec` tells the receiver that the sender
//!   reads the binary encoding (nodes of earlier versions ignore the field and do not send it).
//! - **Binary**, to nodes known to read it. Relayed messages, nearly all of the traffic, travel as length-prefixed
//!   fields: the receiving node takes the payload (an SDP offer of a few KB) as the text the sending node already
//!   validated and writes it into its client's frame, instead of scanning it as JSON once more. Other messages
//!   travel as JSON inside it.
//!
//! Binary layout, all integers little-endian: the magic `\0SB\x02`; the sender's id as a string; then records until
//! the end, each a tag byte and its fields:
//! - tag 1, a message as JSON: `u32` length, the JSON text;
//! - tag 2, a relayed message: kind (`u8`: 0 offer, 1 answer, 2 candidate, 3 end-of-candidates), origin (`u64`),
//!   from, to, room, call id, request id (JSON text), payload (JSON text).
//!
//! A string is a `u32` length and UTF-8 bytes; an optional one has length `u32::MAX` when absent.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::value::RawValue;
use switchboard_core::cluster::{Kind, Payload, RawJson, Relay};

use crate::{Message, NodeId};

/// The first bytes of a binary envelope (a JSON one starts with `{`).
pub const MAGIC: &[u8; 4] = b"\0SB\x02";

/// The encoding version a node announces in its JSON envelopes: 2 reads the binary encoding.
pub const CODEC: u32 = 2;

const TAG_JSON: u8 = 1;
const TAG_RELAY: u8 = 2;
const ABSENT: u32 = u32::MAX;

/// Why an envelope could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// It ends in the middle of a field.
    #[error("the envelope is cut short")]
    Truncated,
    /// A string is not UTF-8.
    #[error("a string of the envelope is not UTF-8")]
    NotUtf8,
    /// A record of an unknown kind (from a newer node).
    #[error("unknown record tag {0}")]
    UnknownTag(u8),
    /// A relayed message of an unknown kind.
    #[error("unknown relay kind {0}")]
    UnknownKind(u8),
    /// A JSON envelope, or a JSON record, that does not parse.
    #[error("bad JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// A received envelope.
#[derive(Debug)]
pub struct Decoded {
    /// The sending node.
    pub from: NodeId,
    /// What it says, in order.
    pub messages: Vec<Message>,
    /// Whether the sender reads the binary encoding.
    pub reads_binary: bool,
}

/// The JSON envelope as read: the messages, and (from nodes of the first version) a single message.
#[derive(Debug, serde::Deserialize)]
struct JsonEnvelope {
    from: NodeId,
    #[serde(rename = "ms", default)]
    messages: Vec<Message>,
    /// One message, as nodes of the first version send it (before envelopes carried several): read so that a
    /// rolling upgrade does not drop what old and new nodes say to each other.
    #[serde(rename = "m", default)]
    message: Option<Message>,
    #[serde(default)]
    codec: u32,
}

/// The JSON envelope as written.
#[derive(Debug, serde::Serialize)]
struct JsonEnvelopeRef<'a> {
    from: &'a NodeId,
    #[serde(rename = "ms")]
    messages: &'a [Message],
    codec: u32,
}

/// Which nodes read the binary encoding: those that announced it. The set holds nodes alive or recently heard
/// from; a node that is down is forgotten (node ids are new for every process start).
#[derive(Debug, Default)]
pub struct Encodings {
    binary_readers: HashSet<NodeId>,
}

impl Encodings {
    /// Learns from a received envelope whether its sender reads the binary encoding.
    pub fn heard(&mut self, envelope: &Decoded) {
        if envelope.reads_binary && !self.binary_readers.contains(&envelope.from) {
            self.binary_readers.insert(envelope.from.clone());
        }
    }

    /// Forgets a node that is down.
    pub fn forget(&mut self, node: &NodeId) {
        self.binary_readers.remove(node);
    }

    /// Appends `messages` from `me` for node `to` (`None`: every node) to `out`, in the encoding the receivers read:
    /// binary to a node that announced it, JSON (which announces it) to the others and on the broadcast channel.
    pub fn encode_into(&self, me: &NodeId, to: Option<&NodeId>, messages: &[Message], out: &mut Vec<u8>) {
        match to {
            Some(to) if self.binary_readers.contains(to) => encode_binary_into(me, messages, out),
            _ => encode_json_into(me, messages, out),
        }
    }
}

/// `messages` from `from` as a JSON envelope, which every node reads.
pub fn encode_json(from: &NodeId, messages: &[Message]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_json_into(from, messages, &mut out);
    out
}

fn encode_json_into(from: &NodeId, messages: &[Message], out: &mut Vec<u8>) {
    let start = out.len();
    // Serialising these types cannot fail, but for a payload whose text is not JSON, which only a broken node sends:
    // then the envelope is empty, which receivers report as malformed.
    if serde_json::to_writer(&mut *out, &JsonEnvelopeRef { from, messages, codec: CODEC }).is_err() {
        out.truncate(start);
    }
}

/// `messages` from `from` as a binary envelope, for nodes that read it.
pub fn encode_binary(from: &NodeId, messages: &[Message]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_binary_into(from, messages, &mut out);
    out
}

fn encode_binary_into(from: &NodeId, messages: &[Message], out: &mut Vec<u8>) {
    let size: usize = messages.iter().map(binary_size).sum();
    out.reserve(MAGIC.len() + 4 + from.as_str().len() + size);
    out.extend_from_slice(MAGIC);
    put_str(out, from.as_str());
    for message in messages {
        match message {
            Message::Relay(relay) => {
                out.push(TAG_RELAY);
                out.push(match relay.kind {
                    Kind::Offer => 0,
                    Kind::Answer => 1,
                    Kind::Candidate => 2,
                    Kind::EndOfCandidates => 3,
                });
                out.extend_from_slice(&relay.origin.to_le_bytes());
                put_str(out, &relay.from);
                put_str(out, &relay.to);
                put_opt(out, relay.room.as_deref());
                put_opt(out, relay.call_id.as_deref());
                put_opt(out, relay.id.as_ref().map(|id| id.0.get()));
                put_opt(out, relay.payload.as_ref().map(Payload::as_str));
            }
            other => {
                let start = out.len();
                out.push(TAG_JSON);
                out.extend_from_slice(&[0; 4]);
                let written = serde_json::to_writer(&mut *out, other).is_ok();
                match u32::try_from(out.len() - start - 5) {
                    Ok(length) if written => out[start + 1..start + 5].copy_from_slice(&length.to_le_bytes()),
                    // Cannot happen with these types and sizes; leaving the record out keeps the others readable.
                    _ => out.truncate(start),
                }
            }
        }
    }
}

/// About the bytes `message` takes in a binary envelope (for sizing the buffer once).
fn binary_size(message: &Message) -> usize {
    match message {
        Message::Relay(relay) => {
            48 + relay.from.len()
                + relay.to.len()
                + relay.room.as_ref().map_or(0, String::len)
                + relay.call_id.as_ref().map_or(0, String::len)
                + relay.id.as_ref().map_or(0, |id| id.0.get().len())
                + relay.payload.as_ref().map_or(0, |p| p.as_str().len())
        }
        _ => 128,
    }
}

fn put_str(out: &mut Vec<u8>, value: &str) {
    // Strings here are names, ids and signaling payloads, far below 4 GiB (Redis caps a payload at 512 MB); a longer
    // one would be cut, never given the length that means "absent".
    let length = u32::try_from(value.len()).ok().filter(|&length| length < ABSENT).unwrap_or(ABSENT - 1);
    out.extend_from_slice(&length.to_le_bytes());
    out.extend_from_slice(value.as_bytes().get(..length as usize).unwrap_or_default());
}

fn put_opt(out: &mut Vec<u8>, value: Option<&str>) {
    match value {
        Some(value) => put_str(out, value),
        None => out.extend_from_slice(&ABSENT.to_le_bytes()),
    }
}

/// Reads an envelope in either encoding.
pub fn decode(bytes: &[u8]) -> Result<Decoded, DecodeError> {
    match bytes.strip_prefix(MAGIC) {
        Some(rest) => decode_binary(rest),
        None => {
            let envelope: JsonEnvelope = serde_json::from_slice(bytes)?;
            let mut messages = envelope.messages;
            messages.extend(envelope.message);
            Ok(Decoded { from: envelope.from, messages, reads_binary: envelope.codec >= CODEC })
        }
    }
}

fn decode_binary(bytes: &[u8]) -> Result<Decoded, DecodeError> {
    let mut reader = Reader(bytes);
    let from = NodeId(Arc::from(reader.str()?));
    let mut messages = Vec::new();
    while let Some(tag) = reader.byte() {
        let message = match tag {
            TAG_JSON => {
                let length = reader.u32()? as usize;
                serde_json::from_slice(reader.take(length)?)?
            }
            TAG_RELAY => {
                let kind = match reader.byte().ok_or(DecodeError::Truncated)? {
                    0 => Kind::Offer,
                    1 => Kind::Answer,
                    2 => Kind::Candidate,
                    3 => Kind::EndOfCandidates,
                    other => return Err(DecodeError::UnknownKind(other)),
                };
                let origin = u64::from_le_bytes(reader.array()?);
                let from = reader.str()?.to_owned();
                let to = reader.str()?.to_owned();
                let room = reader.opt()?.map(str::to_owned);
                let call_id = reader.opt()?.map(str::to_owned);
                // Request ids are short: checking them as JSON costs nothing and keeps `RawJson` honest.
                let id = match reader.opt()? {
                    Some(id) => Some(RawJson(RawValue::from_string(id.to_owned())?)),
                    None => None,
                };
                let payload = reader.opt()?.map(|payload| Payload::trusted(payload.into()));
                Message::Relay(Box::new(Relay { from, to, kind, room, call_id, payload, origin, id }))
            }
            other => return Err(DecodeError::UnknownTag(other)),
        };
        messages.push(message);
    }
    Ok(Decoded { from, messages, reads_binary: true })
}

/// A cursor over a binary envelope.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&first, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(first)
    }

    fn take(&mut self, length: usize) -> Result<&'a [u8], DecodeError> {
        if length > self.0.len() {
            return Err(DecodeError::Truncated);
        }
        let (taken, rest) = self.0.split_at(length);
        self.0 = rest;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        self.take(N)?.try_into().map_err(|_| DecodeError::Truncated)
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn str(&mut self) -> Result<&'a str, DecodeError> {
        let length = self.u32()?;
        self.text(length)
    }

    fn opt(&mut self) -> Result<Option<&'a str>, DecodeError> {
        match self.u32()? {
            ABSENT => Ok(None),
            length => self.text(length).map(Some),
        }
    }

    fn text(&mut self, length: u32) -> Result<&'a str, DecodeError> {
        let bytes = self.take(length as usize)?;
        simdutf8::basic::from_utf8(bytes).map_err(|_| DecodeError::NotUtf8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_core::cluster::Presence;

    fn node(id: &str) -> NodeId {
        NodeId(Arc::from(id))
    }

    fn relay(kind: Kind, payload: Option<&str>, room: Option<&str>, id: Option<&str>) -> Message {
        Message::Relay(Box::new(Relay {
            from: "Ålice \"the\" caller".into(),
            to: "bob".into(),
            kind,
            room: room.map(str::to_owned),
            call_id: Some("c-1".into()),
            payload: payload.map(|p| Payload::trusted(p.into())),
            origin: u64::MAX - 7,
            id: id.map(|id| RawJson(RawValue::from_string(id.to_owned()).unwrap())),
        }))
    }

    fn sample() -> Vec<Message> {
        vec![
            relay(Kind::Offer, Some(r#"{"type":"offer","sdp":"v=0\r\na=x\r\n"}"#), None, Some("17")),
            relay(Kind::Candidate, Some(r#"{"candidate":"candidate:1 1 udp 1 ::1 9 typ host"}"#), Some("Room"), None),
            relay(Kind::EndOfCandidates, None, None, Some(r#""req-9""#)),
            Message::Presence { users: vec![Presence { name: "carol".into(), status: None }] },
            Message::Evict { key: "dave".into() },
            relay(Kind::Answer, Some(r#"{"type":"answer","sdp":"v=0"}"#), None, None),
        ]
    }

    #[test]
    fn both_encodings_carry_every_message_in_order() {
        let messages = sample();
        let binary = decode(&encode_binary(&node("n1"), &messages)).unwrap();
        assert_eq!(binary.from, node("n1"));
        assert_eq!(binary.messages, messages);
        assert!(binary.reads_binary);
        let json = decode(&encode_json(&node("n2"), &messages)).unwrap();
        assert_eq!(json.from, node("n2"));
        assert_eq!(json.messages, messages);
        assert!(json.reads_binary, "the JSON envelope announces the binary encoding");
    }

    #[test]
    fn a_node_gets_json_until_it_announces_the_binary_encoding_and_after_it_is_forgotten() {
        let (me, new, old) = (node("me"), node("new"), node("old"));
        let messages = sample();
        let mut encodings = Encodings::default();
        let is_binary = |encodings: &Encodings, to: Option<&NodeId>| {
            let mut out = b"kept".to_vec();
            encodings.encode_into(&me, to, &messages, &mut out);
            assert!(out.starts_with(b"kept"), "appended, not overwritten");
            out[4..].starts_with(MAGIC)
        };
        assert!(!is_binary(&encodings, Some(&new)));
        encodings.heard(&decode(&encode_json(&new, &messages[3..4])).unwrap());
        encodings.heard(&decode(br#"{"from":"old","ms":[]}"#).unwrap());
        assert!(is_binary(&encodings, Some(&new)));
        assert!(!is_binary(&encodings, Some(&old)), "a node of an earlier version");
        assert!(!is_binary(&encodings, None), "the broadcast channel");
        encodings.forget(&new);
        assert!(!is_binary(&encodings, Some(&new)));
    }

    #[test]
    fn envelopes_of_earlier_versions_still_decode_and_announce_nothing() {
        let first = decode(br#"{"from":"n1","m":{"presence":{"users":[]}}}"#).unwrap();
        assert_eq!(first.messages.len(), 1);
        assert!(!first.reads_binary);
        let second = decode(br#"{"from":"n1","ms":[{"presence":{"users":[]}}]}"#).unwrap();
        assert_eq!(second.messages.len(), 1);
        assert!(!second.reads_binary);
    }

    #[test]
    fn every_cut_of_a_binary_envelope_is_an_error_or_a_prefix_of_its_messages() {
        let messages = sample();
        let bytes = encode_binary(&node("n1"), &messages);
        for end in 0..bytes.len() {
            match decode(&bytes[..end]) {
                Ok(decoded) => assert!(messages.starts_with(&decoded.messages), "cut at {end}"),
                Err(DecodeError::Truncated | DecodeError::Json(_)) => {}
                Err(other) => panic!("cut at {end}: {other}"),
            }
        }
    }

    #[test]
    fn broken_binary_envelopes_are_typed_errors() {
        let mut bytes = encode_binary(&node("n1"), &sample()[..1]);
        let mut unknown = bytes.clone();
        unknown.push(9);
        assert!(matches!(decode(&unknown), Err(DecodeError::UnknownTag(9))));
        // The first record's kind byte, right after the magic, the node id and the tag.
        let kind_at = MAGIC.len() + 4 + 2 + 1;
        bytes[kind_at] = 7;
        assert!(matches!(decode(&bytes), Err(DecodeError::UnknownKind(7))));
        let mut not_utf8 = MAGIC.to_vec();
        not_utf8.extend_from_slice(&2u32.to_le_bytes());
        not_utf8.extend_from_slice(&[0xff, 0xfe]);
        assert!(matches!(decode(&not_utf8), Err(DecodeError::NotUtf8)));
        let mut huge = MAGIC.to_vec();
        huge.extend_from_slice(&(u32::MAX - 1).to_le_bytes());
        assert!(matches!(decode(&huge), Err(DecodeError::Truncated)));
    }
}
