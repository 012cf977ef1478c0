//! Keys for MESSAGE-INTEGRITY and MESSAGE-INTEGRITY-SHA256, and USERHASH (RFC 8489 sections 9.2.2 and 14.4).
//!
//! The inputs are used as given: the caller applies OpaqueString (RFC 8265) to username and password, as RFC 8489
//! requires, before calling these. For short-term credentials the key is the password itself.

use md5::Md5;
use sha2::{Digest, Sha256};

/// The long-term credential key of PASSWORD-ALGORITHM MD5 (the only one of RFC 5389, the default when no
/// PASSWORD-ALGORITHM is present): `MD5(username ":" realm ":" password)` (RFC 8489 section 9.2.2).
pub fn long_term_key_md5(username: &str, realm: &str, password: &str) -> [u8; 16] {
    colon_joined::<Md5>(&[username, realm, password]).into()
}

/// The long-term credential key of PASSWORD-ALGORITHM SHA-256: `SHA-256(username ":" realm ":" password)`
/// (RFC 8489 section 9.2.2).
pub fn long_term_key_sha256(username: &str, realm: &str, password: &str) -> [u8; 32] {
    colon_joined::<Sha256>(&[username, realm, password]).into()
}

/// The digest of `parts` joined with ":", the shape of every key and hash of RFC 8489 section 9.2.2.
fn colon_joined<D: Digest>(parts: &[&str]) -> sha2::digest::Output<D> {
    let mut digest = D::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            digest.update(b":");
        }
        digest.update(part.as_bytes());
    }
    digest.finalize()
}

/// The value of USERHASH: `SHA-256(username ":" realm)` (RFC 8489 section 14.4).
pub fn userhash(username: &str, realm: &str) -> [u8; 32] {
    colon_joined::<Sha256>(&[username, realm]).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn md5_key_is_md5_of_the_joined_triple() {
        // MD5("user:realm:pass"), computed independently (`printf 'user:realm:pass' | md5sum`).
        assert_eq!(hex(&long_term_key_md5("user", "realm", "pass")), "8493fbc53ba582fb4c044c456bdc40eb");
    }

    #[test]
    fn sha256_key_and_userhash_hash_the_joined_strings() {
        // `printf 'user:realm:pass' | sha256sum` and `printf 'user:realm' | sha256sum`.
        assert_eq!(
            hex(&long_term_key_sha256("user", "realm", "pass")),
            "07e934117abd40836e7c6329b54731b2b2d2a5f9a71f544922d75e0730d8251b"
        );
        assert_eq!(hex(&userhash("user", "realm")), "6a3029116b47aa98bcaa325399733dc1a23cd57e26b81bef3ff6531ce624e2da");
    }
}
