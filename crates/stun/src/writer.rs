//! Encoding: [`MessageWriter`], which builds a STUN message in a caller-owned, reused buffer.

use std::net::{IpAddr, SocketAddr};

use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::Sha256;

use crate::message::{fingerprint_of, MAX_TEXT_LEN};
use crate::{attr, message_type, pad4, Class, Method, StunError, TransactionId, HEADER_LEN, MAGIC_COOKIE};

/// Builds one STUN message into a caller-owned buffer.
///
/// [`MessageWriter::new`] clears the buffer and writes the header; each attribute method appends one attribute
/// (padded to 4 bytes with zeros) and updates the header's length field, so the buffer always holds a well-formed
/// message. Nothing is allocated once the buffer has the capacity for the message: reuse one buffer across
/// messages.
///
/// Order matters: [`MessageWriter::integrity`] and [`MessageWriter::integrity_sha256`] cover everything written
/// before them, and [`MessageWriter::fingerprint`] must come last. Attributes a receiver would ignore (anything
/// after an integrity attribute other than MESSAGE-INTEGRITY-SHA256 and FINGERPRINT) are the caller's mistake; in
/// debug builds, writing after FINGERPRINT panics.
///
/// A message whose length would exceed the 16-bit length field is not written: the attribute that would overflow
/// and everything after it are dropped, and [`MessageWriter::finish`] returns [`StunError::TooLongToEncode`]. This
/// can happen with input from the network (a Data indication carrying a 65 527-byte IPv6 datagram), so it is an
/// error and not a panic.
#[derive(Debug)]
pub struct MessageWriter<'b> {
    buf: &'b mut Vec<u8>,
    overflow: bool,
    fingerprinted: bool,
}

impl<'b> MessageWriter<'b> {
    /// Clears `buf` and writes the 20-byte header of a message with no attributes.
    pub fn new(buf: &'b mut Vec<u8>, method: Method, class: Class, tid: TransactionId) -> Self {
        buf.clear();
        buf.extend_from_slice(&message_type(method, class).to_be_bytes());
        buf.extend_from_slice(&[0, 0]);
        buf.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        buf.extend_from_slice(&tid.0);
        MessageWriter { buf, overflow: false, fingerprinted: false }
    }

    /// Sets the header's length field to the current size.
    fn set_length(&mut self, total: usize) {
        let len = u16::try_from(total - HEADER_LEN).unwrap_or(u16::MAX);
        if let Some(field) = self.buf.get_mut(2..4) {
            field.copy_from_slice(&len.to_be_bytes());
        }
    }

    /// Appends the header of an attribute whose value is `len` bytes, reserving room for the padded value and
    /// updating the message length. Returns false (and marks the writer overflowed) if the message would be too
    /// long; the caller then writes nothing.
    fn begin(&mut self, attr_type: u16, len: usize) -> bool {
        debug_assert!(!self.fingerprinted, "attribute {attr_type:#06x} written after FINGERPRINT");
        if self.overflow {
            return false;
        }
        let total = self.buf.len() + 4 + pad4(len);
        let (Ok(len16), true) = (u16::try_from(len), total - HEADER_LEN <= usize::from(u16::MAX)) else {
            self.overflow = true;
            return false;
        };
        self.buf.reserve(4 + pad4(len));
        self.buf.extend_from_slice(&attr_type.to_be_bytes());
        self.buf.extend_from_slice(&len16.to_be_bytes());
        self.set_length(total);
        true
    }

    /// Pads the value just written to a multiple of 4 with zeros.
    fn end(&mut self) {
        let padded = pad4(self.buf.len());
        self.buf.resize(padded, 0);
    }

    /// Appends an attribute with `value`, padded to 4 bytes with zeros.
    pub fn attr(&mut self, attr_type: u16, value: &[u8]) -> &mut Self {
        if self.begin(attr_type, value.len()) {
            self.buf.extend_from_slice(value);
            self.end();
        }
        self
    }

    /// Appends an attribute whose value is the concatenation of `parts` (for instance a prefix and a payload,
    /// without first copying them together).
    pub fn attr_parts(&mut self, attr_type: u16, parts: &[&[u8]]) -> &mut Self {
        let len = parts.iter().map(|p| p.len()).fold(0usize, usize::saturating_add);
        if self.begin(attr_type, len) {
            for part in parts {
                self.buf.extend_from_slice(part);
            }
            self.end();
        }
        self
    }

    /// Appends a 4-byte attribute holding `value` (LIFETIME, PRIORITY, ...).
    pub fn u32_attr(&mut self, attr_type: u16, value: u32) -> &mut Self {
        self.attr(attr_type, &value.to_be_bytes())
    }

    /// Appends an address attribute (RFC 8489 14.1/14.2): family, port and address, XORed with the magic cookie
    /// and transaction ID when `xor`.
    fn address_attr(&mut self, attr_type: u16, addr: SocketAddr, xor: bool) -> &mut Self {
        let port = if xor { addr.port() ^ (MAGIC_COOKIE >> 16) as u16 } else { addr.port() };
        let [p0, p1] = port.to_be_bytes();
        match addr.ip() {
            IpAddr::V4(ip) => {
                let raw = u32::from(ip);
                let [a, b, c, d] = (if xor { raw ^ MAGIC_COOKIE } else { raw }).to_be_bytes();
                self.attr(attr_type, &[0, attr::FAMILY_IPV4, p0, p1, a, b, c, d])
            }
            IpAddr::V6(ip) => {
                let mut value = [0u8; 20];
                value[1] = attr::FAMILY_IPV6;
                value[2] = p0;
                value[3] = p1;
                value[4..].copy_from_slice(&ip.octets());
                if xor {
                    let mut mask = [0u8; 16];
                    mask[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
                    mask[4..].copy_from_slice(self.buf.get(8..20).unwrap_or(&[0; 12]));
                    for (b, m) in value[4..].iter_mut().zip(mask) {
                        *b ^= m;
                    }
                }
                self.attr(attr_type, &value)
            }
        }
    }

    /// Appends an XOR-*-ADDRESS attribute (XOR-MAPPED-ADDRESS, XOR-PEER-ADDRESS, XOR-RELAYED-ADDRESS), IPv4 or
    /// IPv6, XORed with the magic cookie and this message's transaction ID.
    pub fn xor_address(&mut self, attr_type: u16, addr: SocketAddr) -> &mut Self {
        self.address_attr(attr_type, addr, true)
    }

    /// Appends a plain address attribute (MAPPED-ADDRESS, ALTERNATE-SERVER).
    pub fn address(&mut self, attr_type: u16, addr: SocketAddr) -> &mut Self {
        self.address_attr(attr_type, addr, false)
    }

    /// Appends ERROR-CODE with `code` (300..=699; the hundreds digit is the class, the rest the number) and a
    /// reason phrase, cut at a character boundary to at most 763 bytes.
    pub fn error_code(&mut self, code: u16, reason: &str) -> &mut Self {
        debug_assert!((300..=699).contains(&code), "error code {code} outside 300..=699");
        let class = ((code / 100) & 0x07) as u8;
        let number = (code % 100) as u8;
        self.attr_parts(attr::ERROR_CODE, &[&[0, 0, class, number], truncate(reason, MAX_TEXT_LEN).as_bytes()])
    }

    /// Appends UNKNOWN-ATTRIBUTES listing `types` (for a 420 response).
    pub fn unknown_attributes(&mut self, types: &[u16]) -> &mut Self {
        if self.begin(attr::UNKNOWN_ATTRIBUTES, types.len().saturating_mul(2)) {
            for t in types {
                self.buf.extend_from_slice(&t.to_be_bytes());
            }
            self.end();
        }
        self
    }

    /// Appends a text attribute (USERNAME, REALM, NONCE, SOFTWARE), as is.
    pub fn text(&mut self, attr_type: u16, value: &str) -> &mut Self {
        self.attr(attr_type, value.as_bytes())
    }

    /// Appends LIFETIME, in seconds.
    pub fn lifetime(&mut self, seconds: u32) -> &mut Self {
        self.u32_attr(attr::LIFETIME, seconds)
    }

    /// Appends CHANNEL-NUMBER (the reserved 16 bits are zero).
    pub fn channel_number(&mut self, channel: u16) -> &mut Self {
        self.u32_attr(attr::CHANNEL_NUMBER, u32::from(channel) << 16)
    }

    /// Appends REQUESTED-TRANSPORT with an IP protocol number ([`attr::TRANSPORT_UDP`]).
    pub fn requested_transport(&mut self, protocol: u8) -> &mut Self {
        self.attr(attr::REQUESTED_TRANSPORT, &[protocol, 0, 0, 0])
    }

    /// Appends a family attribute (REQUESTED-ADDRESS-FAMILY, ADDITIONAL-ADDRESS-FAMILY) with `family`
    /// ([`attr::FAMILY_IPV4`] or [`attr::FAMILY_IPV6`]).
    pub fn address_family(&mut self, attr_type: u16, family: u8) -> &mut Self {
        self.attr(attr_type, &[family, 0, 0, 0])
    }

    /// Appends EVEN-PORT with the R bit set as `reserve`.
    pub fn even_port(&mut self, reserve: bool) -> &mut Self {
        self.attr(attr::EVEN_PORT, &[if reserve { 0x80 } else { 0 }])
    }

    /// Appends PASSWORD-ALGORITHM with `algorithm` and no parameters.
    pub fn password_algorithm(&mut self, algorithm: u16) -> &mut Self {
        let [a, b] = algorithm.to_be_bytes();
        self.attr(attr::PASSWORD_ALGORITHM, &[a, b, 0, 0])
    }

    /// Appends PASSWORD-ALGORITHMS listing `algorithms`, each with no parameters.
    pub fn password_algorithms(&mut self, algorithms: &[u16]) -> &mut Self {
        if self.begin(attr::PASSWORD_ALGORITHMS, algorithms.len().saturating_mul(4)) {
            for a in algorithms {
                self.buf.extend_from_slice(&a.to_be_bytes());
                self.buf.extend_from_slice(&[0, 0]);
            }
            self.end();
        }
        self
    }

    /// Appends an HMAC attribute of `tag_len` bytes computed with `mac` over the message so far, the header length
    /// already counting the attribute (RFC 8489 14.5, 14.6).
    fn mac_attr<M: Mac>(&mut self, attr_type: u16, mac: Result<M, hmac::digest::InvalidLength>) {
        let tag_len = M::output_size();
        let start = self.buf.len();
        if !self.begin(attr_type, tag_len) {
            return;
        }
        let Ok(mut mac) = mac else {
            // Unreachable: HMAC accepts keys of any length. Do not emit an attribute that cannot verify.
            self.buf.truncate(start);
            self.set_length(start);
            self.overflow = true;
            return;
        };
        mac.update(self.buf.get(..start).unwrap_or(&[]));
        let tag = mac.finalize().into_bytes();
        self.buf.extend_from_slice(&tag);
        self.end();
    }

    /// Appends MESSAGE-INTEGRITY: HMAC-SHA1 with `key` of the message so far (the password for short-term
    /// credentials, [`crate::long_term_key_md5`] or [`crate::long_term_key_sha256`] for long-term ones).
    pub fn integrity(&mut self, key: &[u8]) -> &mut Self {
        self.mac_attr(attr::MESSAGE_INTEGRITY, <Hmac<Sha1> as KeyInit>::new_from_slice(key));
        self
    }

    /// Appends MESSAGE-INTEGRITY-SHA256 (32 bytes, not truncated): HMAC-SHA256 with `key` of the message so far.
    pub fn integrity_sha256(&mut self, key: &[u8]) -> &mut Self {
        self.mac_attr(attr::MESSAGE_INTEGRITY_SHA256, <Hmac<Sha256> as KeyInit>::new_from_slice(key));
        self
    }

    /// Appends FINGERPRINT: the CRC-32 of the message so far XORed with 0x5354554E. Must be the last attribute.
    pub fn fingerprint(&mut self) -> &mut Self {
        let start = self.buf.len();
        if self.begin(attr::FINGERPRINT, 4) {
            let crc = fingerprint_of(self.buf.get(..start).unwrap_or(&[]));
            self.buf.extend_from_slice(&crc.to_be_bytes());
            self.fingerprinted = true;
        }
        self
    }

    /// The message written so far: always well-formed (header length up to date).
    pub fn as_bytes(&self) -> &[u8] {
        self.buf
    }

    /// Finishes the message and returns its bytes, or [`StunError::TooLongToEncode`] if an attribute did not fit
    /// in the 16-bit length (then the buffer holds the message without that attribute and what followed it).
    pub fn finish(self) -> Result<&'b [u8], StunError> {
        if self.overflow {
            return Err(StunError::TooLongToEncode);
        }
        let buf: &'b Vec<u8> = self.buf;
        Ok(buf.as_slice())
    }
}

/// `s` cut to at most `max` bytes at a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or("")
}
