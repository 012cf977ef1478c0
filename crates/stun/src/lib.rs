//! Switchboard's STUN/TURN wire codec (RFC 8489, RFC 8656), sans-IO.
//!
//! It turns bytes into messages and messages into bytes, and nothing else: no sockets, no clock, no state across
//! messages. The TURN server (`switchboard-turn`) builds on it.
//!
//! # Why not an existing crate
//!
//! A TURN relay parses every Send indication and builds every Data indication on its hot path: one of each per
//! relayed datagram. Crates such as `stun-types` decode a message into owned attribute values and encode from them,
//! which allocates per datagram. Here:
//!
//! - [`Message::parse`] is a borrowed view over the receive buffer. It validates the header and walks the attribute
//!   TLVs once, remembering where each one is in a fixed-size table (at most [`MAX_ATTRIBUTES`]), and allocates
//!   nothing. Accessors ([`Message::get`], [`Message::data`], [`Message::xor_address`], ...) return slices of the
//!   buffer or small `Copy` values.
//! - [`MessageWriter`] encodes into a caller-owned `Vec<u8>` that is cleared and reused across messages, so once the
//!   buffer has grown to the largest message it never allocates again. [`write_channel_data`] does the same for
//!   ChannelData.
//!
//! # What it checks
//!
//! [`Message::parse`] rejects, with a typed [`StunError`] and never a panic: a header whose first two bits are not
//! zero, a wrong magic cookie, a length that is not a multiple of 4 or that disagrees with the input, attributes that
//! do not exactly fill the message (each padded to 4 bytes), more than [`MAX_ATTRIBUTES`] attributes, a FINGERPRINT
//! that is not last or does not match, and integrity attributes of an impossible length. Attribute values are
//! validated when read, by the typed accessors. MESSAGE-INTEGRITY and MESSAGE-INTEGRITY-SHA256 are checked by
//! [`Message::check_integrity`] with a key the caller derives ([`long_term_key_md5`], [`long_term_key_sha256`], or
//! the password itself for short-term credentials), in constant time.
//!
//! Strings are taken as given: the codec does not apply OpaqueString (RFC 8265) or SASLprep to usernames,
//! realms or passwords; the caller prepares them before deriving keys.
//!
//! # Example
//!
//! ```
//! use switchboard_stun::{attr, Class, Integrity, Message, MessageWriter, Method, TransactionId};
//!
//! let key = b"password";
//! let mut buf = Vec::with_capacity(1500);
//! let peer = "192.0.2.1:4000".parse().unwrap();
//! let tid = TransactionId([7; 12]);
//! let mut w = MessageWriter::new(&mut buf, Method::SEND, Class::Indication, tid);
//! w.xor_address(attr::XOR_PEER_ADDRESS, peer).attr(attr::DATA, b"hello").fingerprint();
//! let bytes = w.finish().unwrap();
//!
//! let msg = Message::parse(bytes).unwrap();
//! assert_eq!((msg.method(), msg.class()), (Method::SEND, Class::Indication));
//! assert_eq!(msg.xor_address(attr::XOR_PEER_ADDRESS).unwrap(), Some(peer));
//! assert_eq!(msg.data(), Some(&b"hello"[..]));
//! assert_eq!(msg.check_integrity(key), Integrity::Missing);
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod attr;
mod channel;
mod credentials;
mod error;
mod message;
mod writer;

use std::fmt;

pub use channel::{parse_channel_data, stream_frame_len, write_channel_data, CHANNEL_DATA_HEADER_LEN};
pub use credentials::{long_term_key_md5, long_term_key_sha256, userhash};
pub use error::StunError;
pub use message::{AttrTypes, Integrity, Message};
pub use writer::MessageWriter;

/// Channel numbers accepted in CHANNEL-NUMBER and ChannelData. RFC 8656 narrowed them to 0x4000..=0x4FFF (leaving the
/// rest for RFC 7983 demultiplexing at endpoints); RFC 5766 allowed 0x4000..=0x7FFF, and coturn and its test clients
/// still pick from that range. A TURN server's own port carries only STUN and ChannelData, so the wider range is safe
/// there, and the codec accepts it for interoperability.
pub const CHANNELS: std::ops::RangeInclusive<u16> = 0x4000..=0x7FFF;

/// The magic cookie: bytes 4..8 of every RFC 5389/8489 STUN message.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;

/// Length of the STUN message header.
pub const HEADER_LEN: usize = 20;

/// The most attributes [`Message::parse`] accepts in one message; more is [`StunError::TooManyAttributes`].
///
/// Real TURN and ICE messages carry at most about fifteen. The bound keeps parsing allocation-free (the attribute
/// table has this many slots) and caps the work an attacker can cause per datagram.
pub const MAX_ATTRIBUTES: usize = 32;

/// The value FINGERPRINT's CRC-32 is XORed with ("STUN" in ASCII).
pub(crate) const FINGERPRINT_XOR: u32 = 0x5354_554E;

/// A 96-bit STUN transaction ID.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct TransactionId(pub [u8; 12]);

impl fmt::Display for TransactionId {
    /// Lower-case hex, 24 digits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// A STUN method: the 12-bit number in the message type (RFC 8489 section 5).
///
/// The constants are the methods of STUN and TURN; other values are representable so that a server can answer them
/// with an error instead of failing to parse.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Method(pub u16);

impl Method {
    /// Binding (RFC 8489).
    pub const BINDING: Method = Method(0x001);
    /// Allocate (RFC 8656 section 7).
    pub const ALLOCATE: Method = Method(0x003);
    /// Refresh (RFC 8656 section 8).
    pub const REFRESH: Method = Method(0x004);
    /// Send, an indication from client to server (RFC 8656 section 11).
    pub const SEND: Method = Method(0x006);
    /// Data, an indication from server to client (RFC 8656 section 11).
    pub const DATA: Method = Method(0x007);
    /// CreatePermission (RFC 8656 section 9).
    pub const CREATE_PERMISSION: Method = Method(0x008);
    /// ChannelBind (RFC 8656 section 12).
    pub const CHANNEL_BIND: Method = Method(0x009);
}

/// The class of a STUN message (RFC 8489 section 5).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Class {
    /// A request, answered by a success or error response.
    Request,
    /// An indication: no response.
    Indication,
    /// A success response.
    Success,
    /// An error response.
    Error,
}

impl Class {
    /// The two class bits C1 C0 as a number (request 0, indication 1, success 2, error 3).
    const fn bits(self) -> u16 {
        match self {
            Class::Request => 0b00,
            Class::Indication => 0b01,
            Class::Success => 0b10,
            Class::Error => 0b11,
        }
    }

    const fn from_bits(bits: u16) -> Class {
        match bits & 0b11 {
            0b00 => Class::Request,
            0b01 => Class::Indication,
            0b10 => Class::Success,
            _ => Class::Error,
        }
    }
}

/// The 14-bit message type for a method and class: method bits M0..M11 interleaved with class bits C0 (bit 4) and
/// C1 (bit 8). Method bits above the 12th are dropped.
pub(crate) const fn message_type(method: Method, class: Class) -> u16 {
    let m = method.0 & 0x0FFF;
    let c = class.bits();
    (m & 0x000F) | ((m & 0x0070) << 1) | ((m & 0x0F80) << 2) | ((c & 0b01) << 4) | ((c & 0b10) << 7)
}

/// Splits a message type into method and class (the inverse of [`message_type`]).
pub(crate) const fn split_message_type(t: u16) -> (Method, Class) {
    let m = (t & 0x000F) | ((t & 0x00E0) >> 1) | ((t & 0x3E00) >> 2);
    let c = ((t >> 4) & 0b01) | ((t >> 7) & 0b10);
    (Method(m), Class::from_bits(c))
}

/// What a datagram, or the bytes at the start of a stream, hold (RFC 8656 section 12, RFC 7983 demultiplexing).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Kind {
    /// A STUN message: first two bits zero and the magic cookie in place (at least 8 bytes seen).
    Stun,
    /// A ChannelData message: first byte 0x40..=0x7F (channels in [`CHANNELS`]), at least the 4-byte header seen.
    ChannelData,
    /// Anything else, or too few bytes to tell.
    Other,
}

/// Tells whether `bytes` starts with a STUN message or a ChannelData message.
///
/// Looks only at the first bytes; it does not validate the rest (that is what [`Message::parse`] and
/// [`parse_channel_data`] do). STUN needs the first 8 bytes (type and cookie), ChannelData its 4-byte header;
/// fewer bytes give [`Kind::Other`]. On streams, use [`stream_frame_len`], which can say "need more bytes".
pub fn classify(bytes: &[u8]) -> Kind {
    match bytes {
        [b0, _, _, _, c0, c1, c2, c3, ..] if b0 & 0xC0 == 0 => {
            if u32::from_be_bytes([*c0, *c1, *c2, *c3]) == MAGIC_COOKIE {
                Kind::Stun
            } else {
                Kind::Other
            }
        }
        [0x40..=0x7F, _, _, _, ..] => Kind::ChannelData,
        _ => Kind::Other,
    }
}

/// Rounds `n` up to a multiple of 4.
pub(crate) const fn pad4(n: usize) -> usize {
    (n + 3) & !3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_type_round_trips_and_matches_rfc_examples() {
        // RFC 8489 section 5: Binding request 0x0001, success 0x0101, error 0x0111; indication 0x0011.
        assert_eq!(message_type(Method::BINDING, Class::Request), 0x0001);
        assert_eq!(message_type(Method::BINDING, Class::Indication), 0x0011);
        assert_eq!(message_type(Method::BINDING, Class::Success), 0x0101);
        assert_eq!(message_type(Method::BINDING, Class::Error), 0x0111);
        // RFC 8656: Allocate request 0x0003, Send indication 0x0016, Data indication 0x0017.
        assert_eq!(message_type(Method::ALLOCATE, Class::Request), 0x0003);
        assert_eq!(message_type(Method::SEND, Class::Indication), 0x0016);
        assert_eq!(message_type(Method::DATA, Class::Indication), 0x0017);
        assert_eq!(message_type(Method::CHANNEL_BIND, Class::Error), 0x0119);
        for m in 0..0x1000u16 {
            for c in [Class::Request, Class::Indication, Class::Success, Class::Error] {
                let t = message_type(Method(m), c);
                assert_eq!(t & 0xC000, 0);
                assert_eq!(split_message_type(t), (Method(m), c));
            }
        }
    }

    #[test]
    fn classify_looks_at_type_cookie_and_channel_prefix() {
        let mut stun = [0u8; 20];
        stun[1] = 0x01;
        stun[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        assert_eq!(classify(&stun), Kind::Stun);
        assert_eq!(classify(&stun[..8]), Kind::Stun);
        assert_eq!(classify(&stun[..7]), Kind::Other);
        let mut rfc3489 = stun;
        rfc3489[4] = 0;
        assert_eq!(classify(&rfc3489), Kind::Other);
        assert_eq!(classify(&[0x40, 0x00, 0x00, 0x00]), Kind::ChannelData);
        assert_eq!(classify(&[0x4F, 0xFF, 0x00, 0x04, 1, 2, 3, 4]), Kind::ChannelData);
        assert_eq!(classify(&[0x40, 0x00, 0x00]), Kind::Other);
        assert_eq!(classify(&[0x7F, 0xFF, 0x00, 0x00]), Kind::ChannelData);
        assert_eq!(classify(&[0x80, 0x00, 0x00, 0x00]), Kind::Other);
        assert_eq!(classify(&[0x80, 0x00, 0x00, 0x00, 0, 0, 0, 0]), Kind::Other); // RTP/DTLS-ish
        assert_eq!(classify(&[]), Kind::Other);
    }

    #[test]
    fn transaction_id_displays_as_hex() {
        let tid = TransactionId([0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae]);
        assert_eq!(tid.to_string(), "b7e7a701bc34d686fa87dfae");
    }
}
