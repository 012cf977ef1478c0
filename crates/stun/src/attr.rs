//! Attribute types (RFC 8489 section 18.3, RFC 8656 section 18, RFC 8445 section 16 for ICE).
//!
//! Types 0x0000..=0x7FFF are comprehension-required: a server that does not understand one answers 420 (Unknown
//! Attribute) with UNKNOWN-ATTRIBUTES. Types 0x8000..=0xFFFF are comprehension-optional and may be ignored.

// ---- Comprehension-required (0x0000..=0x7FFF) ----

/// MAPPED-ADDRESS (RFC 8489 14.1): the reflexive address, not XORed (for RFC 3489 clients).
pub const MAPPED_ADDRESS: u16 = 0x0001;
/// USERNAME (RFC 8489 14.3): UTF-8, fewer than 513 bytes.
pub const USERNAME: u16 = 0x0006;
/// MESSAGE-INTEGRITY (RFC 8489 14.5): HMAC-SHA1 of the message, 20 bytes.
pub const MESSAGE_INTEGRITY: u16 = 0x0008;
/// ERROR-CODE (RFC 8489 14.8): class, number and a UTF-8 reason phrase.
pub const ERROR_CODE: u16 = 0x0009;
/// UNKNOWN-ATTRIBUTES (RFC 8489 14.13): list of 16-bit attribute types.
pub const UNKNOWN_ATTRIBUTES: u16 = 0x000A;
/// CHANNEL-NUMBER (RFC 8656 18.1): 16-bit channel number and 16 reserved bits.
pub const CHANNEL_NUMBER: u16 = 0x000C;
/// LIFETIME (RFC 8656 18.2): seconds, 32 bits.
pub const LIFETIME: u16 = 0x000D;
/// XOR-PEER-ADDRESS (RFC 8656 18.3): a peer's address, XORed like XOR-MAPPED-ADDRESS. May repeat.
pub const XOR_PEER_ADDRESS: u16 = 0x0012;
/// DATA (RFC 8656 18.4): the application data of a Send or Data indication.
pub const DATA: u16 = 0x0013;
/// REALM (RFC 8489 14.9): UTF-8, fewer than 128 characters (763 bytes).
pub const REALM: u16 = 0x0014;
/// NONCE (RFC 8489 14.10): fewer than 128 characters (763 bytes).
pub const NONCE: u16 = 0x0015;
/// XOR-RELAYED-ADDRESS (RFC 8656 18.5): the relayed transport address of an allocation.
pub const XOR_RELAYED_ADDRESS: u16 = 0x0016;
/// REQUESTED-ADDRESS-FAMILY (RFC 8656 18.6): 0x01 IPv4 or 0x02 IPv6, and 24 reserved bits.
pub const REQUESTED_ADDRESS_FAMILY: u16 = 0x0017;
/// EVEN-PORT (RFC 8656 18.7): one byte whose top bit (R) asks to reserve the next port.
pub const EVEN_PORT: u16 = 0x0018;
/// REQUESTED-TRANSPORT (RFC 8656 18.8): IP protocol number (17 = UDP) and 24 reserved bits.
pub const REQUESTED_TRANSPORT: u16 = 0x0019;
/// DONT-FRAGMENT (RFC 8656 18.9): no value.
pub const DONT_FRAGMENT: u16 = 0x001A;
/// MESSAGE-INTEGRITY-SHA256 (RFC 8489 14.6): HMAC-SHA256 of the message, 16 to 32 bytes.
pub const MESSAGE_INTEGRITY_SHA256: u16 = 0x001C;
/// PASSWORD-ALGORITHM (RFC 8489 14.12): the algorithm the long-term key was derived with.
pub const PASSWORD_ALGORITHM: u16 = 0x001D;
/// USERHASH (RFC 8489 14.4): SHA-256 of username ":" realm, 32 bytes.
pub const USERHASH: u16 = 0x001E;
/// XOR-MAPPED-ADDRESS (RFC 8489 14.2): the reflexive transport address, XORed with the cookie and transaction ID.
pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
/// RESERVATION-TOKEN (RFC 8656 18.10): 8 bytes naming a reserved relayed address.
pub const RESERVATION_TOKEN: u16 = 0x0022;
/// PRIORITY (RFC 8445 16.1): ICE candidate priority.
pub const PRIORITY: u16 = 0x0024;
/// USE-CANDIDATE (RFC 8445 16.1): ICE nomination flag.
pub const USE_CANDIDATE: u16 = 0x0025;

// ---- Comprehension-optional (0x8000..=0xFFFF) ----

/// ADDITIONAL-ADDRESS-FAMILY (RFC 8656 18.11): ask for an IPv6 relayed address besides the IPv4 one.
pub const ADDITIONAL_ADDRESS_FAMILY: u16 = 0x8000;
/// ADDRESS-ERROR-CODE (RFC 8656 18.12): why one address family of a dual allocation failed.
pub const ADDRESS_ERROR_CODE: u16 = 0x8001;
/// PASSWORD-ALGORITHMS (RFC 8489 14.11): the algorithms the server supports.
pub const PASSWORD_ALGORITHMS: u16 = 0x8002;
/// ALTERNATE-DOMAIN (RFC 8489 14.16): the domain of ALTERNATE-SERVER, for TLS.
pub const ALTERNATE_DOMAIN: u16 = 0x8003;
/// ICMP (RFC 8656 18.13): type and code of an ICMP error received from a peer.
pub const ICMP: u16 = 0x8004;
/// SOFTWARE (RFC 8489 14.14): UTF-8 description of the agent, fewer than 128 characters (763 bytes).
pub const SOFTWARE: u16 = 0x8022;
/// ALTERNATE-SERVER (RFC 8489 14.15): another server to try, in the MAPPED-ADDRESS format (not XORed).
pub const ALTERNATE_SERVER: u16 = 0x8023;
/// FINGERPRINT (RFC 8489 14.7): CRC-32 of the message XORed with 0x5354554E; always last.
pub const FINGERPRINT: u16 = 0x8028;
/// ICE-CONTROLLED (RFC 8445 16.1).
pub const ICE_CONTROLLED: u16 = 0x8029;
/// ICE-CONTROLLING (RFC 8445 16.1).
pub const ICE_CONTROLLING: u16 = 0x802A;

/// Every comprehension-required type this module names: pass it (or the subset you handle) to
/// [`crate::Message::unknown_comprehension_required`].
pub const KNOWN_COMPREHENSION_REQUIRED: &[u16] = &[
    MAPPED_ADDRESS,
    USERNAME,
    MESSAGE_INTEGRITY,
    ERROR_CODE,
    UNKNOWN_ATTRIBUTES,
    CHANNEL_NUMBER,
    LIFETIME,
    XOR_PEER_ADDRESS,
    DATA,
    REALM,
    NONCE,
    XOR_RELAYED_ADDRESS,
    REQUESTED_ADDRESS_FAMILY,
    EVEN_PORT,
    REQUESTED_TRANSPORT,
    DONT_FRAGMENT,
    MESSAGE_INTEGRITY_SHA256,
    PASSWORD_ALGORITHM,
    USERHASH,
    XOR_MAPPED_ADDRESS,
    RESERVATION_TOKEN,
    PRIORITY,
    USE_CANDIDATE,
];

/// Whether `attr_type` is comprehension-required (0x0000..=0x7FFF).
pub const fn is_comprehension_required(attr_type: u16) -> bool {
    attr_type < 0x8000
}

/// Address family value 0x01 (IPv4) of REQUESTED-ADDRESS-FAMILY, ADDITIONAL-ADDRESS-FAMILY and address attributes.
pub const FAMILY_IPV4: u8 = 0x01;
/// Address family value 0x02 (IPv6).
pub const FAMILY_IPV6: u8 = 0x02;

/// PASSWORD-ALGORITHM value 0x0001: MD5, the key of RFC 5389 (see [`crate::long_term_key_md5`]).
pub const PASSWORD_ALGORITHM_MD5: u16 = 0x0001;
/// PASSWORD-ALGORITHM value 0x0002: SHA-256 (see [`crate::long_term_key_sha256`]).
pub const PASSWORD_ALGORITHM_SHA256: u16 = 0x0002;

/// REQUESTED-TRANSPORT value for UDP (IP protocol 17).
pub const TRANSPORT_UDP: u8 = 17;
/// REQUESTED-TRANSPORT value for TCP (IP protocol 6, RFC 6062).
pub const TRANSPORT_TCP: u8 = 6;
