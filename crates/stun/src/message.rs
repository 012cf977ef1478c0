//! Parsing: [`Message`], a borrowed view of a received STUN message.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::Sha256;

use crate::{
    attr, pad4, split_message_type, Class, Method, StunError, TransactionId, FINGERPRINT_XOR, HEADER_LEN, MAGIC_COOKIE,
    MAX_ATTRIBUTES,
};

/// Longest USERNAME, in bytes ("MUST contain a UTF-8-encoded sequence of fewer than 509 bytes" in RFC 8489 14.3,
/// fewer than 513 in RFC 5389; the larger bound is accepted).
pub const MAX_USERNAME_LEN: usize = 512;
/// Longest REALM, NONCE, SOFTWARE and ERROR-CODE reason phrase, in bytes (fewer than 128 characters, "which can be
/// as long as 763 bytes").
pub const MAX_TEXT_LEN: usize = 763;

/// Where one attribute is: its type, and its value as `off..off + len` in the message.
#[derive(Clone, Copy, Default)]
struct Slot {
    ty: u16,
    len: u16,
    off: u32,
}

/// Where the attribute table stops being visible to [`Message::get`] (RFC 8489 14.5, 14.6).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Visibility {
    /// Before any integrity attribute: everything counts.
    All,
    /// After MESSAGE-INTEGRITY: only MESSAGE-INTEGRITY-SHA256 and FINGERPRINT count.
    AfterSha1,
    /// After MESSAGE-INTEGRITY-SHA256: only FINGERPRINT counts.
    AfterSha256,
}

/// The outcome of [`Message::check_integrity`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Integrity {
    /// Neither MESSAGE-INTEGRITY nor MESSAGE-INTEGRITY-SHA256 is present.
    Missing,
    /// Every integrity attribute present verified with the key.
    Valid {
        /// Whether MESSAGE-INTEGRITY-SHA256 was present (and verified); false means only MESSAGE-INTEGRITY was.
        sha256: bool,
    },
    /// An integrity attribute did not verify with the key (wrong key, or the message was altered).
    Invalid,
}

/// A short list of attribute types, such as the unknown comprehension-required ones of a request: at most
/// [`MAX_ATTRIBUTES`], stored inline (no allocation). Dereferences to `[u16]`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct AttrTypes {
    types: [u16; MAX_ATTRIBUTES],
    len: usize,
}

impl AttrTypes {
    /// The types, in order of first appearance.
    pub fn as_slice(&self) -> &[u16] {
        self.types.get(..self.len).unwrap_or(&[])
    }
}

impl std::ops::Deref for AttrTypes {
    type Target = [u16];
    fn deref(&self) -> &[u16] {
        self.as_slice()
    }
}

impl std::fmt::Debug for AttrTypes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.as_slice().iter().map(|t| format!("{t:#06x}"))).finish()
    }
}

/// A received STUN message, parsed in place: a view over the caller's buffer that allocates nothing.
///
/// Parsing validates the framing (see [`Message::parse`]); attribute values are validated when read, by the typed
/// accessors, each of which returns `Ok(None)` when the attribute is absent and an error when it is malformed.
///
/// Attributes after MESSAGE-INTEGRITY, other than MESSAGE-INTEGRITY-SHA256 and FINGERPRINT, and attributes after
/// MESSAGE-INTEGRITY-SHA256, other than FINGERPRINT, are invisible to every accessor, as RFC 8489 sections 14.5 and
/// 14.6 require (they are not covered by the integrity check, so an attacker could have added them).
#[derive(Clone, Copy)]
pub struct Message<'a> {
    /// The message: exactly `HEADER_LEN + length` bytes.
    bytes: &'a [u8],
    method: Method,
    class: Class,
    /// The visible attributes, in order; `count` of them are set.
    slots: [Slot; MAX_ATTRIBUTES],
    count: usize,
}

impl std::fmt::Debug for Message<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Message")
            .field("method", &self.method)
            .field("class", &self.class)
            .field("transaction_id", &self.transaction_id())
            .field("len", &self.bytes.len())
            .field("attributes", &AttrList(self))
            .finish()
    }
}

/// Debug helper: the visible attributes as `type: length`.
struct AttrList<'m, 'a>(&'m Message<'a>);

impl std::fmt::Debug for AttrList<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.0.slots().iter().map(|s| (format!("{:#06x}", s.ty), s.len))).finish()
    }
}

/// Reads a big-endian u16 at `at`, if in bounds.
fn be16(bytes: &[u8], at: usize) -> Option<u16> {
    match bytes.get(at..at.checked_add(2)?)? {
        [a, b] => Some(u16::from_be_bytes([*a, *b])),
        _ => None,
    }
}

/// Reads a big-endian u32 at `at`, if in bounds.
fn be32(bytes: &[u8], at: usize) -> Option<u32> {
    match bytes.get(at..at.checked_add(4)?)? {
        [a, b, c, d] => Some(u32::from_be_bytes([*a, *b, *c, *d])),
        _ => None,
    }
}

/// Validates a STUN header at the start of `bytes` and returns the total message length (header included).
///
/// Needs the first 8 bytes: type (top bits zero), length (multiple of 4), cookie.
pub(crate) fn check_header(bytes: &[u8]) -> Result<usize, StunError> {
    let (Some(ty), Some(len), Some(cookie)) = (be16(bytes, 0), be16(bytes, 2), be32(bytes, 4)) else {
        return Err(StunError::Truncated { needed: 8, available: bytes.len() });
    };
    if ty & 0xC000 != 0 {
        return Err(StunError::NotStun);
    }
    if cookie != MAGIC_COOKIE {
        return Err(StunError::BadMagicCookie(cookie));
    }
    if len % 4 != 0 {
        return Err(StunError::UnalignedLength(len));
    }
    Ok(HEADER_LEN + usize::from(len))
}

/// CRC-32 of `bytes` XORed as FINGERPRINT requires.
pub(crate) fn fingerprint_of(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes) ^ FINGERPRINT_XOR
}

/// Feeds `mac` the message up to `attr_start`, with the header's length field set so that the message ends at
/// `attr_end` (RFC 8489 14.5: the HMAC covers the message up to the integrity attribute, and the length counts
/// everything up to and including it).
fn mac_input<M: Mac>(mut mac: M, message: &[u8], attr_start: usize, attr_end: usize) -> Option<M> {
    let adjusted = u16::try_from(attr_end.checked_sub(HEADER_LEN)?).ok()?;
    mac.update(message.get(..2)?);
    mac.update(&adjusted.to_be_bytes());
    mac.update(message.get(4..attr_start)?);
    Some(mac)
}

impl<'a> Message<'a> {
    /// Parses one whole STUN message: `bytes` must be exactly the message, as a UDP datagram is.
    ///
    /// Checks that the first two bits are zero, the magic cookie, that the length is a multiple of 4 and matches
    /// the input, that the attribute TLVs (each padded to 4 bytes) exactly fill the length, that there are at most
    /// [`MAX_ATTRIBUTES`] attributes, that a FINGERPRINT, if present, is last and matches, and that visible
    /// MESSAGE-INTEGRITY (20 bytes) and MESSAGE-INTEGRITY-SHA256 (16 to 32 bytes, a multiple of 4) have valid
    /// lengths. It does not check the method, class or integrity: the caller does.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, StunError> {
        let msg = Self::parse_prefix(bytes)?;
        match bytes.len() - msg.bytes.len() {
            0 => Ok(msg),
            extra => Err(StunError::TrailingBytes { extra }),
        }
    }

    /// Parses the STUN message at the start of `bytes`, ignoring what follows it (for stream transports; see also
    /// [`crate::stream_frame_len`]). [`Message::len`] tells where it ends. Same checks as [`Message::parse`].
    pub fn parse_prefix(bytes: &'a [u8]) -> Result<Self, StunError> {
        let total = check_header(bytes)?;
        let Some(bytes) = bytes.get(..total) else {
            return Err(StunError::Truncated { needed: total, available: bytes.len() });
        };
        let (method, class) = split_message_type(be16(bytes, 0).unwrap_or(0));
        let mut msg = Message { bytes, method, class, slots: [Slot::default(); MAX_ATTRIBUTES], count: 0 };

        let mut visibility = Visibility::All;
        let mut seen = 0usize;
        let mut at = HEADER_LEN;
        while at < total {
            let (Some(ty), Some(len)) = (be16(bytes, at), be16(bytes, at + 2)) else {
                // Unreachable with an aligned length (4-byte steps from 20), kept as an error for safety.
                return Err(StunError::Truncated { needed: at + 4, available: total });
            };
            let value_at = at + 4;
            let next = value_at + pad4(usize::from(len));
            if next > total {
                return Err(StunError::AttributeOverrun { attr_type: ty, len });
            }
            seen += 1;
            if seen > MAX_ATTRIBUTES {
                return Err(StunError::TooManyAttributes);
            }
            if ty == attr::FINGERPRINT {
                if next != total {
                    return Err(StunError::FingerprintNotLast);
                }
                let value = be32(bytes, value_at).filter(|_| len == 4);
                let Some(value) = value else {
                    return Err(StunError::BadAttributeLength { attr_type: ty, len: usize::from(len) });
                };
                if value != fingerprint_of(bytes.get(..at).unwrap_or(&[])) {
                    return Err(StunError::FingerprintMismatch);
                }
            }
            let visible = matches!(
                (visibility, ty),
                (_, attr::FINGERPRINT) | (Visibility::All, _) | (Visibility::AfterSha1, attr::MESSAGE_INTEGRITY_SHA256)
            );
            if visible {
                match ty {
                    attr::MESSAGE_INTEGRITY => {
                        if len != 20 {
                            return Err(StunError::BadAttributeLength { attr_type: ty, len: usize::from(len) });
                        }
                        visibility = Visibility::AfterSha1;
                    }
                    attr::MESSAGE_INTEGRITY_SHA256 => {
                        if !(16..=32).contains(&len) || len % 4 != 0 {
                            return Err(StunError::BadAttributeLength { attr_type: ty, len: usize::from(len) });
                        }
                        visibility = Visibility::AfterSha256;
                    }
                    _ => {}
                }
                // `seen <= MAX_ATTRIBUTES` and `count <= seen`, so there is a free slot; offsets fit in u32.
                if let Some(slot) = msg.slots.get_mut(msg.count) {
                    *slot = Slot { ty, len, off: u32::try_from(value_at).unwrap_or(u32::MAX) };
                    msg.count += 1;
                }
            }
            at = next;
        }
        Ok(msg)
    }

    /// The method.
    pub fn method(&self) -> Method {
        self.method
    }

    /// The class.
    pub fn class(&self) -> Class {
        self.class
    }

    /// The transaction ID.
    pub fn transaction_id(&self) -> TransactionId {
        let mut tid = [0u8; 12];
        if let Some(src) = self.bytes.get(8..20) {
            tid.copy_from_slice(src);
        }
        TransactionId(tid)
    }

    /// Length of the whole message in bytes: the 20-byte header plus the length field.
    #[allow(clippy::len_without_is_empty)] // a message is never empty: it has at least its header
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// The bytes of the message.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    fn slots(&self) -> &[Slot] {
        self.slots.get(..self.count).unwrap_or(&[])
    }

    fn value(&self, slot: &Slot) -> &'a [u8] {
        let start = slot.off as usize;
        self.bytes.get(start..start + usize::from(slot.len)).unwrap_or(&[])
    }

    /// The visible attributes in order, as (type, value).
    pub fn attributes(&self) -> impl Iterator<Item = (u16, &'a [u8])> + '_ {
        self.slots().iter().map(|s| (s.ty, self.value(s)))
    }

    /// The value of the first occurrence of an attribute, ignoring attributes after MESSAGE-INTEGRITY or
    /// MESSAGE-INTEGRITY-SHA256 except FINGERPRINT (and MESSAGE-INTEGRITY-SHA256 after MESSAGE-INTEGRITY), as RFC
    /// 8489 14.5 and 14.6 require.
    pub fn get(&self, attr_type: u16) -> Option<&'a [u8]> {
        self.slots().iter().find(|s| s.ty == attr_type).map(|s| self.value(s))
    }

    /// Whether a (visible) attribute of this type is present.
    pub fn contains(&self, attr_type: u16) -> bool {
        self.slots().iter().any(|s| s.ty == attr_type)
    }

    /// Every visible occurrence of an attribute, in order (for instance the XOR-PEER-ADDRESS list of a
    /// CreatePermission request).
    pub fn get_all(&self, attr_type: u16) -> impl Iterator<Item = &'a [u8]> + '_ {
        self.slots().iter().filter(move |s| s.ty == attr_type).map(|s| self.value(s))
    }

    /// Reads a UTF-8 text attribute of at most `max` bytes.
    fn text(&self, attr_type: u16, max: usize) -> Result<Option<&'a str>, StunError> {
        let Some(value) = self.get(attr_type) else { return Ok(None) };
        if value.len() > max {
            return Err(StunError::TextTooLong { attr_type, len: value.len(), max });
        }
        std::str::from_utf8(value).map(Some).map_err(|_| StunError::NotUtf8 { attr_type })
    }

    /// USERNAME: UTF-8, at most [`MAX_USERNAME_LEN`] bytes.
    pub fn username(&self) -> Result<Option<&'a str>, StunError> {
        self.text(attr::USERNAME, MAX_USERNAME_LEN)
    }

    /// REALM: UTF-8, at most [`MAX_TEXT_LEN`] bytes.
    pub fn realm(&self) -> Result<Option<&'a str>, StunError> {
        self.text(attr::REALM, MAX_TEXT_LEN)
    }

    /// NONCE: UTF-8, at most [`MAX_TEXT_LEN`] bytes.
    pub fn nonce(&self) -> Result<Option<&'a str>, StunError> {
        self.text(attr::NONCE, MAX_TEXT_LEN)
    }

    /// SOFTWARE: UTF-8, at most [`MAX_TEXT_LEN`] bytes.
    pub fn software(&self) -> Result<Option<&'a str>, StunError> {
        self.text(attr::SOFTWARE, MAX_TEXT_LEN)
    }

    /// USERHASH: 32 bytes.
    pub fn userhash(&self) -> Result<Option<&'a [u8; 32]>, StunError> {
        let Some(value) = self.get(attr::USERHASH) else { return Ok(None) };
        <&[u8; 32]>::try_from(value)
            .map(Some)
            .map_err(|_| StunError::BadAttributeLength { attr_type: attr::USERHASH, len: value.len() })
    }

    /// PASSWORD-ALGORITHM: the algorithm number ([`attr::PASSWORD_ALGORITHM_MD5`], [`attr::PASSWORD_ALGORITHM_SHA256`])
    /// and its parameters.
    pub fn password_algorithm(&self) -> Result<Option<(u16, &'a [u8])>, StunError> {
        let Some(value) = self.get(attr::PASSWORD_ALGORITHM) else { return Ok(None) };
        let bad = StunError::BadAttributeLength { attr_type: attr::PASSWORD_ALGORITHM, len: value.len() };
        let (Some(alg), Some(plen)) = (be16(value, 0), be16(value, 2)) else { return Err(bad) };
        // The parameters are padded to 4 bytes inside the value.
        match value.get(4..) {
            Some(rest) if pad4(usize::from(plen)) == rest.len() => {
                Ok(Some((alg, rest.get(..usize::from(plen)).unwrap_or(&[]))))
            }
            _ => Err(bad),
        }
    }

    /// Reads a 4-byte attribute.
    fn u32_value(&self, attr_type: u16) -> Result<Option<u32>, StunError> {
        let Some(value) = self.get(attr_type) else { return Ok(None) };
        match value {
            [a, b, c, d] => Ok(Some(u32::from_be_bytes([*a, *b, *c, *d]))),
            _ => Err(StunError::BadAttributeLength { attr_type, len: value.len() }),
        }
    }

    /// A 4-byte attribute as a plain `u32` (LIFETIME, PRIORITY, ...).
    pub fn u32_attr(&self, attr_type: u16) -> Result<Option<u32>, StunError> {
        self.u32_value(attr_type)
    }

    /// LIFETIME, in seconds.
    pub fn lifetime(&self) -> Result<Option<u32>, StunError> {
        self.u32_value(attr::LIFETIME)
    }

    /// REQUESTED-TRANSPORT: the IP protocol number ([`attr::TRANSPORT_UDP`] = 17). The reserved bytes are ignored.
    pub fn requested_transport(&self) -> Result<Option<u8>, StunError> {
        Ok(self.u32_value(attr::REQUESTED_TRANSPORT)?.map(|v| (v >> 24) as u8))
    }

    /// CHANNEL-NUMBER, checked to be in [`crate::CHANNELS`] ([`StunError::BadChannelNumber`] otherwise, which a server
    /// answers with 400). The reserved bytes are ignored.
    pub fn channel_number(&self) -> Result<Option<u16>, StunError> {
        match self.u32_value(attr::CHANNEL_NUMBER)? {
            None => Ok(None),
            Some(v) => {
                let channel = (v >> 16) as u16;
                if crate::CHANNELS.contains(&channel) {
                    Ok(Some(channel))
                } else {
                    Err(StunError::BadChannelNumber(channel))
                }
            }
        }
    }

    /// EVEN-PORT: `Some(r)` where `r` is the R bit (reserve the next-higher port too).
    pub fn even_port(&self) -> Result<Option<bool>, StunError> {
        let Some(value) = self.get(attr::EVEN_PORT) else { return Ok(None) };
        match value {
            [flags] => Ok(Some(flags & 0x80 != 0)),
            _ => Err(StunError::BadAttributeLength { attr_type: attr::EVEN_PORT, len: value.len() }),
        }
    }

    /// Whether DONT-FRAGMENT is present.
    pub fn dont_fragment(&self) -> bool {
        self.contains(attr::DONT_FRAGMENT)
    }

    /// The value of DATA (of a Send or Data indication).
    pub fn data(&self) -> Option<&'a [u8]> {
        self.get(attr::DATA)
    }

    /// RESERVATION-TOKEN: 8 bytes.
    pub fn reservation_token(&self) -> Result<Option<[u8; 8]>, StunError> {
        let Some(value) = self.get(attr::RESERVATION_TOKEN) else { return Ok(None) };
        <[u8; 8]>::try_from(value)
            .map(Some)
            .map_err(|_| StunError::BadAttributeLength { attr_type: attr::RESERVATION_TOKEN, len: value.len() })
    }

    /// Reads a family attribute: the first byte of a 4-byte value.
    fn family(&self, attr_type: u16) -> Result<Option<u8>, StunError> {
        Ok(self.u32_value(attr_type)?.map(|v| (v >> 24) as u8))
    }

    /// REQUESTED-ADDRESS-FAMILY: [`attr::FAMILY_IPV4`] (1) or [`attr::FAMILY_IPV6`] (2). Other values are returned
    /// as they are: the server answers them with 440 (Address Family not Supported), not 400.
    pub fn requested_address_family(&self) -> Result<Option<u8>, StunError> {
        self.family(attr::REQUESTED_ADDRESS_FAMILY)
    }

    /// ADDITIONAL-ADDRESS-FAMILY: must be [`attr::FAMILY_IPV6`] (2); other values are returned as they are (440).
    pub fn additional_address_family(&self) -> Result<Option<u8>, StunError> {
        self.family(attr::ADDITIONAL_ADDRESS_FAMILY)
    }

    /// ERROR-CODE: the code (300..=699) and the reason phrase (UTF-8, at most [`MAX_TEXT_LEN`] bytes).
    pub fn error_code(&self) -> Result<Option<(u16, &'a str)>, StunError> {
        self.error_code_of(attr::ERROR_CODE)
    }

    /// ADDRESS-ERROR-CODE (RFC 8656 18.12): the family it concerns, the code and the reason phrase.
    pub fn address_error_code(&self) -> Result<Option<(u8, u16, &'a str)>, StunError> {
        let Some(value) = self.get(attr::ADDRESS_ERROR_CODE) else { return Ok(None) };
        let family = value.first().copied().unwrap_or(0);
        let (code, reason) = decode_error_code(attr::ADDRESS_ERROR_CODE, value)?;
        Ok(Some((family, code, reason)))
    }

    fn error_code_of(&self, attr_type: u16) -> Result<Option<(u16, &'a str)>, StunError> {
        let Some(value) = self.get(attr_type) else { return Ok(None) };
        decode_error_code(attr_type, value).map(Some)
    }

    /// UNKNOWN-ATTRIBUTES: the listed types (an odd trailing byte is an error).
    pub fn unknown_attributes(&self) -> Result<Option<impl Iterator<Item = u16> + 'a>, StunError> {
        let Some(value) = self.get(attr::UNKNOWN_ATTRIBUTES) else { return Ok(None) };
        if value.len() % 2 != 0 {
            return Err(StunError::BadAttributeLength { attr_type: attr::UNKNOWN_ATTRIBUTES, len: value.len() });
        }
        Ok(Some(value.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]]))))
    }

    /// Decodes an address attribute; `xor` says whether it is XORed (XOR-MAPPED-ADDRESS and friends).
    fn decode_address(&self, attr_type: u16, value: &[u8], xor: bool) -> Result<SocketAddr, StunError> {
        let bad_len = StunError::BadAttributeLength { attr_type, len: value.len() };
        let (Some(&family), Some(port)) = (value.get(1), be16(value, 2)) else { return Err(bad_len) };
        let port = if xor { port ^ (MAGIC_COOKIE >> 16) as u16 } else { port };
        let ip = match (family, value.get(4..)) {
            (attr::FAMILY_IPV4, Some(&[a, b, c, d])) => {
                let raw = u32::from_be_bytes([a, b, c, d]);
                IpAddr::V4(Ipv4Addr::from(if xor { raw ^ MAGIC_COOKIE } else { raw }))
            }
            (attr::FAMILY_IPV6, Some(raw)) if raw.len() == 16 => {
                let mut ip = [0u8; 16];
                ip.copy_from_slice(raw);
                if xor {
                    let mut mask = [0u8; 16];
                    mask[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
                    mask[4..].copy_from_slice(&self.transaction_id().0);
                    for (b, m) in ip.iter_mut().zip(mask) {
                        *b ^= m;
                    }
                }
                IpAddr::V6(Ipv6Addr::from(ip))
            }
            (attr::FAMILY_IPV4 | attr::FAMILY_IPV6, _) => return Err(bad_len),
            (family, _) => return Err(StunError::BadAddressFamily { attr_type, family }),
        };
        Ok(SocketAddr::new(ip, port))
    }

    /// Decodes an XOR-*-ADDRESS attribute (XOR-MAPPED-ADDRESS, XOR-PEER-ADDRESS, XOR-RELAYED-ADDRESS): IPv4 or
    /// IPv6, un-XORed with the magic cookie and the transaction ID (RFC 8489 14.2).
    pub fn xor_address(&self, attr_type: u16) -> Result<Option<SocketAddr>, StunError> {
        let Some(value) = self.get(attr_type) else { return Ok(None) };
        self.decode_address(attr_type, value, true).map(Some)
    }

    /// Every visible occurrence of an XOR-*-ADDRESS attribute, decoded (for the repeated XOR-PEER-ADDRESS of
    /// CreatePermission, or the two XOR-RELAYED-ADDRESS of a dual-stack allocation).
    pub fn xor_addresses(&self, attr_type: u16) -> impl Iterator<Item = Result<SocketAddr, StunError>> + '_ {
        self.get_all(attr_type).map(move |value| self.decode_address(attr_type, value, true))
    }

    /// Decodes a plain (not XORed) address attribute: MAPPED-ADDRESS, ALTERNATE-SERVER.
    pub fn address(&self, attr_type: u16) -> Result<Option<SocketAddr>, StunError> {
        let Some(value) = self.get(attr_type) else { return Ok(None) };
        self.decode_address(attr_type, value, false).map(Some)
    }

    /// The comprehension-required (0x0000..=0x7FFF) visible attribute types not in `known`, each once, in order of
    /// first appearance: what a server lists in UNKNOWN-ATTRIBUTES of a 420 response to a request (RFC 8489 7.3.1).
    /// [`attr::KNOWN_COMPREHENSION_REQUIRED`] lists every type this crate names.
    pub fn unknown_comprehension_required(&self, known: &[u16]) -> AttrTypes {
        let mut out = AttrTypes { types: [0; MAX_ATTRIBUTES], len: 0 };
        for slot in self.slots() {
            let ty = slot.ty;
            if attr::is_comprehension_required(ty) && !known.contains(&ty) && !out.as_slice().contains(&ty) {
                if let Some(t) = out.types.get_mut(out.len) {
                    *t = ty;
                    out.len += 1;
                }
            }
        }
        out
    }

    /// Whether the message carries a FINGERPRINT (which [`Message::parse`] has already verified).
    pub fn has_fingerprint(&self) -> bool {
        self.contains(attr::FINGERPRINT)
    }

    /// Finds the visible attribute `attr_type` and returns (start of its header, end of its value, value).
    fn locate(&self, attr_type: u16) -> Option<(usize, usize, &'a [u8])> {
        let slot = self.slots().iter().find(|s| s.ty == attr_type)?;
        let value_at = slot.off as usize;
        Some((value_at - 4, value_at + usize::from(slot.len), self.value(slot)))
    }

    /// Verifies MESSAGE-INTEGRITY (HMAC-SHA1) and MESSAGE-INTEGRITY-SHA256 (HMAC-SHA256, possibly truncated to 16..32
    /// bytes) with `key`, per RFC 8489 14.5 and 14.6: each HMAC covers the message up to its attribute, with the
    /// header length set to end after that attribute. The comparison is constant-time.
    ///
    /// The key is the password for short-term credentials, and [`crate::long_term_key_md5`] or
    /// [`crate::long_term_key_sha256`] (as PASSWORD-ALGORITHM says) for long-term credentials. When both
    /// attributes are present both must verify; [`Integrity::Valid`] tells whether the SHA-256 one was there.
    pub fn check_integrity(&self, key: &[u8]) -> Integrity {
        let sha1 = self.locate(attr::MESSAGE_INTEGRITY);
        let sha256 = self.locate(attr::MESSAGE_INTEGRITY_SHA256);
        if sha1.is_none() && sha256.is_none() {
            return Integrity::Missing;
        }
        if let Some((start, end, tag)) = sha1 {
            let ok = <Hmac<Sha1> as KeyInit>::new_from_slice(key)
                .ok()
                .and_then(|mac| mac_input(mac, self.bytes, start, end))
                .is_some_and(|mac| mac.verify_slice(tag).is_ok());
            if !ok {
                return Integrity::Invalid;
            }
        }
        if let Some((start, end, tag)) = sha256 {
            let ok = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
                .ok()
                .and_then(|mac| mac_input(mac, self.bytes, start, end))
                .is_some_and(|mac| mac.verify_truncated_left(tag).is_ok());
            if !ok {
                return Integrity::Invalid;
            }
        }
        Integrity::Valid { sha256: sha256.is_some() }
    }
}

/// Decodes the common part of ERROR-CODE and ADDRESS-ERROR-CODE: class and number in bytes 2 and 3, reason after.
fn decode_error_code(attr_type: u16, value: &[u8]) -> Result<(u16, &str), StunError> {
    let (Some(&class), Some(&number), Some(reason)) = (value.get(2), value.get(3), value.get(4..)) else {
        return Err(StunError::BadAttributeLength { attr_type, len: value.len() });
    };
    let class = class & 0x07;
    if !(3..=6).contains(&class) || number > 99 {
        return Err(StunError::BadErrorCode { class, number });
    }
    if reason.len() > MAX_TEXT_LEN {
        return Err(StunError::TextTooLong { attr_type, len: reason.len(), max: MAX_TEXT_LEN });
    }
    let reason = std::str::from_utf8(reason).map_err(|_| StunError::NotUtf8 { attr_type })?;
    Ok((u16::from(class) * 100 + u16::from(number), reason))
}
