//! The error type of the codec.

/// Why a message, attribute or frame was rejected, or could not be encoded.
///
/// Every malformed input maps to one of these; the codec never panics on input. Errors that concern one attribute
/// carry its type so that a server can say which one it did not like (for instance in the reason phrase of a 400).
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StunError {
    /// The input is shorter than the structure it claims to hold (a header, an attribute, a frame).
    #[error("truncated: {needed} bytes needed, {available} available")]
    Truncated {
        /// Bytes the structure needs.
        needed: usize,
        /// Bytes the input has.
        available: usize,
    },
    /// The input holds more bytes than the STUN message it starts with (use `Message::parse_prefix` for streams).
    #[error("{extra} bytes after the end of the message")]
    TrailingBytes {
        /// How many bytes follow the message.
        extra: usize,
    },
    /// The first two bits of a STUN message are not zero.
    #[error("not a STUN message: the first two bits are not zero")]
    NotStun,
    /// The magic cookie is not 0x2112A442 (an RFC 3489 message, or not STUN at all).
    #[error("wrong magic cookie {0:#010x}")]
    BadMagicCookie(u32),
    /// The message length of the header is not a multiple of 4.
    #[error("message length {0} is not a multiple of 4")]
    UnalignedLength(u16),
    /// An attribute (with its padding) runs past the end of the message.
    #[error("attribute {attr_type:#06x} of {len} bytes runs past the end of the message")]
    AttributeOverrun {
        /// Type of the attribute.
        attr_type: u16,
        /// Its declared value length.
        len: u16,
    },
    /// The message has more attributes than [`crate::MAX_ATTRIBUTES`].
    #[error("more than {max} attributes", max = crate::MAX_ATTRIBUTES)]
    TooManyAttributes,
    /// FINGERPRINT is present but is not the last attribute.
    #[error("FINGERPRINT is not the last attribute")]
    FingerprintNotLast,
    /// FINGERPRINT does not match the CRC-32 of the message.
    #[error("FINGERPRINT does not match the message")]
    FingerprintMismatch,
    /// An attribute value has a length its type does not allow.
    #[error("attribute {attr_type:#06x} has an invalid length {len}")]
    BadAttributeLength {
        /// Type of the attribute.
        attr_type: u16,
        /// Its value length.
        len: usize,
    },
    /// A text attribute is not valid UTF-8.
    #[error("attribute {attr_type:#06x} is not valid UTF-8")]
    NotUtf8 {
        /// Type of the attribute.
        attr_type: u16,
    },
    /// A text attribute is longer than its RFC limit (USERNAME: 512 bytes; REALM, NONCE, SOFTWARE, reason
    /// phrase: 763 bytes).
    #[error("attribute {attr_type:#06x} is {len} bytes long, over the limit of {max}")]
    TextTooLong {
        /// Type of the attribute.
        attr_type: u16,
        /// Its length in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// An address attribute has a family other than 0x01 (IPv4) or 0x02 (IPv6).
    #[error("attribute {attr_type:#06x} has an unknown address family {family:#04x}")]
    BadAddressFamily {
        /// Type of the attribute.
        attr_type: u16,
        /// The family byte.
        family: u8,
    },
    /// ERROR-CODE holds a class outside 3..=6 or a number over 99.
    #[error("ERROR-CODE holds an invalid code (class {class}, number {number})")]
    BadErrorCode {
        /// The class (hundreds digit).
        class: u8,
        /// The number (last two digits).
        number: u8,
    },
    /// A channel number outside [`crate::CHANNELS`].
    #[error("channel number {0:#06x} is outside 0x4000..=0x7FFF")]
    BadChannelNumber(u16),
    /// A ChannelData message is followed by more bytes than its padding allows.
    #[error("ChannelData followed by {extra} bytes, more than its padding")]
    ChannelDataTrailingBytes {
        /// How many bytes follow the data.
        extra: usize,
    },
    /// On a stream: the next bytes are neither a STUN message nor ChannelData, so the stream cannot be framed.
    #[error("neither STUN nor ChannelData (first byte {0:#04x})")]
    UnknownFraming(u8),
    /// Encoding: the message, an attribute or a ChannelData payload would exceed the 65535-byte length field.
    #[error("too long to encode")]
    TooLongToEncode,
}
