//! Signed login tokens and room passwords, sans-IO: the caller passes the time in.
//!
//! A login token is a JSON Web Token (RFC 7519) signed with HMAC-SHA256 (`"alg":"HS256"`, RFC 7518 section 3.2):
//! `base64url(header) "." base64url(claims) "." base64url(HMAC-SHA256(secret, header "." claims))`. Its claims:
//!
//! - `sub`: the user name the token is for;
//! - `exp`: the Unix time (seconds) from which it is refused;
//! - `rooms` (optional): the rooms its holder may join; absent means any room.
//!
//! Only HS256 is accepted: the algorithm is fixed by the server, never chosen by the token (no `none`, no algorithm
//! confusion). Several secrets may be configured for rotation: the first signs, every one verifies. Signatures and
//! room passwords are compared in constant time ([`Mac::verify_slice`]).
//!
//! Why not the `jsonwebtoken` crate: its current major needs Rust 1.88 (the workspace supports 1.85) and a crypto
//! backend feature, either `aws_lc_rs` (a C build) or `rust_crypto` (which pulls in RSA, ECDSA and EdDSA code for
//! algorithms never used here); it also reads the system clock for `exp`, which the sans-IO core must not do. HS256
//! takes a few lines on top of `hmac` and `sha2`, which the STUN codec already uses.

use std::fmt;

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use switchboard_proto::names::normalize_name;

type HmacSha256 = Hmac<Sha256>;

/// Longest token accepted, in bytes; longer ones are refused without being parsed.
pub const MAX_TOKEN_BYTES: usize = 4096;

/// Shortest signing secret, in bytes: RFC 7518 requires an HS256 key of at least the hash size (256 bits).
pub const MIN_SECRET_BYTES: usize = 32;

/// Most rooms a token's `rooms` claim may list.
pub const MAX_ROOM_CLAIMS: usize = 256;

/// Longest room password, in bytes.
pub const MAX_ROOM_PASSWORD_BYTES: usize = 256;

const HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
}

/// The claims of a login token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user name the token is for.
    pub sub: String,
    /// Unix time (seconds) from which the token is refused.
    pub exp: u64,
    /// The rooms the holder may join (without their passwords); `None`: any room, with passwords as usual.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rooms: Option<Vec<String>>,
}

/// Why a token was refused. Deliberately coarse: a client learns that its token is bad, not what is wrong with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Malformed, not HS256, not signed by a configured secret, claims missing or of the wrong type, a `rooms`
    /// entry that is no valid room name, or too long.
    #[error("the token is not valid")]
    Invalid,
    /// Correctly signed, but its `exp` has passed.
    #[error("the token has expired")]
    Expired,
}

/// Why signing secrets were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// No secret at all.
    #[error("at least one secret is needed")]
    Missing,
    /// A secret shorter than [`MIN_SECRET_BYTES`]; `index` counts from 0 in the order given.
    #[error("secret number {} is {len} bytes; HS256 needs at least {MIN_SECRET_BYTES}", index + 1)]
    TooShort {
        /// Which secret.
        index: usize,
        /// Its length in bytes.
        len: usize,
    },
    /// A claim the token cannot carry (a `rooms` entry that breaks the name rules, too many rooms).
    #[error("{0}")]
    BadClaims(String),
}

/// The secrets that sign and verify login tokens. The first signs; all verify, so that a new secret can be put in
/// front while tokens signed with the old one are still in use.
#[derive(Clone)]
pub struct TokenKeys {
    secrets: Vec<Box<[u8]>>,
}

impl fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenKeys({} secrets, hidden)", self.secrets.len())
    }
}

impl TokenKeys {
    /// Keys from the configured secrets, each at least [`MIN_SECRET_BYTES`] long.
    pub fn new<S: AsRef<[u8]>>(secrets: impl IntoIterator<Item = S>) -> Result<Self, KeyError> {
        let secrets: Vec<Box<[u8]>> = secrets.into_iter().map(|s| Box::from(s.as_ref())).collect();
        if secrets.is_empty() {
            return Err(KeyError::Missing);
        }
        if let Some((index, secret)) = secrets.iter().enumerate().find(|(_, s)| s.len() < MIN_SECRET_BYTES) {
            return Err(KeyError::TooShort { index, len: secret.len() });
        }
        Ok(Self { secrets })
    }

    /// Signs `claims` with the first secret. Fails only for claims that [`TokenKeys::verify`] would refuse anyway.
    pub fn mint(&self, claims: &Claims) -> Result<String, KeyError> {
        check_rooms(claims).map_err(KeyError::BadClaims)?;
        let payload = serde_json::to_vec(claims).map_err(|e| KeyError::BadClaims(e.to_string()))?;
        let mut token = b64().encode(HEADER);
        token.push('.');
        token.push_str(&b64().encode(payload));
        let signature = match self.secrets.first() {
            Some(secret) => sign(secret, token.as_bytes()),
            None => return Err(KeyError::Missing),
        };
        token.push('.');
        token.push_str(&b64().encode(signature));
        Ok(token)
    }

    /// Checks `token` at `now_unix` and returns its claims. The signature is checked before anything the token says
    /// is believed, so only a correctly signed token can be reported as [`TokenError::Expired`].
    pub fn verify(&self, token: &str, now_unix: u64) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Invalid);
        }
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Invalid);
        };
        let signature = b64().decode(signature).map_err(|_| TokenError::Invalid)?;
        let signed = &token[..header.len() + 1 + payload.len()];
        if !self.secrets.iter().any(|secret| verify(secret, signed.as_bytes(), &signature)) {
            return Err(TokenError::Invalid);
        }
        let header: Header = decode_json(header)?;
        if header.alg != "HS256" || header.crit.is_some() {
            return Err(TokenError::Invalid);
        }
        let claims: Claims = decode_json(payload)?;
        check_rooms(&claims).map_err(|_| TokenError::Invalid)?;
        if now_unix >= claims.exp {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    /// Extensions a verifier must understand (RFC 7515 section 4.1.11); this one understands none.
    crit: Option<serde_json::Value>,
}

fn decode_json<T: for<'de> Deserialize<'de>>(part: &str) -> Result<T, TokenError> {
    let bytes = b64().decode(part).map_err(|_| TokenError::Invalid)?;
    serde_json::from_slice(&bytes).map_err(|_| TokenError::Invalid)
}

fn check_rooms(claims: &Claims) -> Result<(), String> {
    let Some(rooms) = &claims.rooms else {
        return Ok(());
    };
    if rooms.len() > MAX_ROOM_CLAIMS {
        return Err(format!("a token lists at most {MAX_ROOM_CLAIMS} rooms, not {}", rooms.len()));
    }
    for room in rooms {
        normalize_name(room).map_err(|error| format!("room {room:?}: {error}"))?;
    }
    Ok(())
}

fn sign(secret: &[u8], message: &[u8]) -> Vec<u8> {
    match <HmacSha256 as KeyInit>::new_from_slice(secret) {
        Ok(mut mac) => {
            mac.update(message);
            mac.finalize().into_bytes().to_vec()
        }
        // HMAC takes keys of any length.
        Err(_) => Vec::new(),
    }
}

fn verify(secret: &[u8], message: &[u8], tag: &[u8]) -> bool {
    <HmacSha256 as KeyInit>::new_from_slice(secret).is_ok_and(|mut mac| {
        mac.update(message);
        mac.verify_slice(tag).is_ok()
    })
}

/// The digest of a room password as the nodes of a cluster keep it in their shared store (hex): any node must be able
/// to check a password that a member on another node set, so the key is the room's own (its key under a fixed
/// label), not a secret of one process. The store is trusted, internal state (`docs/cluster.md`).
pub(crate) fn cluster_room_digest(room_key: &str, password: &str) -> String {
    let key = sign(b"switchboard cluster room password", room_key.as_bytes());
    sign(&key, password.as_bytes()).iter().map(|byte| format!("{byte:02x}")).collect()
}

/// A room password as the core keeps it: an HMAC of the password under a key of this process, so that checking a
/// guess is a constant-time comparison of two digests of the same length, whatever the lengths of the passwords.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct PasswordDigest([u8; 32]);

impl fmt::Debug for PasswordDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordDigest(..)")
    }
}

/// Digests and checks room passwords.
#[derive(Clone)]
pub(crate) struct PasswordKey([u8; 32]);

impl fmt::Debug for PasswordKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordKey(..)")
    }
}

impl PasswordKey {
    #[cfg(test)]
    pub(crate) fn new(key: [u8; 32]) -> Self {
        Self(key)
    }

    /// A key derived from the core's seed, apart from the CSPRNG that the same seed feeds: nothing the core hands
    /// out (resume tokens, call ids) says anything about it.
    pub(crate) fn derive(seed: &[u8; 32]) -> Self {
        let mut key = [0u8; 32];
        let tag = sign(seed, b"switchboard room password key");
        if tag.len() == key.len() {
            key.copy_from_slice(&tag);
        }
        Self(key)
    }

    pub(crate) fn digest(&self, password: &str) -> PasswordDigest {
        let mut digest = [0u8; 32];
        let tag = sign(&self.0, password.as_bytes());
        if tag.len() == digest.len() {
            digest.copy_from_slice(&tag);
        }
        PasswordDigest(digest)
    }

    pub(crate) fn matches(&self, stored: &PasswordDigest, given: &str) -> bool {
        verify(&self.0, given.as_bytes(), &stored.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_match_only_themselves() {
        let key = PasswordKey::new([9; 32]);
        let stored = key.digest("correct horse");
        assert!(key.matches(&stored, "correct horse"));
        assert!(!key.matches(&stored, "correct hors"));
        assert!(!key.matches(&stored, ""));
        assert_ne!(PasswordKey::new([8; 32]).digest("correct horse"), stored, "the digest depends on the key");
    }

    #[test]
    fn hs256_known_answer_from_rfc_7515() {
        // RFC 7515 appendix A.1: the example JWS with its HMAC key.
        let key = b64()
            .decode("AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow")
            .unwrap();
        let signed = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ";
        let tag = b64().decode("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk").unwrap();
        assert_eq!(sign(&key, signed.as_bytes()), tag);
        assert!(verify(&key, signed.as_bytes(), &tag));
        assert!(!verify(&key, signed.as_bytes(), &tag[..31]));
    }

    #[test]
    fn token_layout_is_a_standard_jwt() {
        let keys = TokenKeys::new(["0123456789abcdef0123456789abcdef"]).unwrap();
        let token = keys.mint(&Claims { sub: "alice".into(), exp: 2_000_000_000, rooms: None }).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(b64().decode(parts[0]).unwrap(), HEADER.as_bytes());
        assert_eq!(b64().decode(parts[1]).unwrap(), br#"{"sub":"alice","exp":2000000000}"#);
        // Signature of the same input by an independent computation of HMAC-SHA256.
        let mut mac = <HmacSha256 as KeyInit>::new_from_slice(b"0123456789abcdef0123456789abcdef").unwrap();
        mac.update(format!("{}.{}", parts[0], parts[1]).as_bytes());
        assert_eq!(b64().decode(parts[2]).unwrap(), mac.finalize().into_bytes().to_vec());
    }
}
