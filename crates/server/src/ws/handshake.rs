//! The HTTP/1.1 upgrade to WebSocket (RFC 6455 section 4.2).

use base64::Engine;
use hyper::header::{HeaderMap, HeaderValue, CONNECTION, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION, UPGRADE};
use sha1::{Digest, Sha1};

/// Why an upgrade request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// Not version 13 (answered with 426 and the version we speak).
    #[error("unsupported Sec-WebSocket-Version; this server speaks 13")]
    Version,
    /// Missing or malformed Sec-WebSocket-Key.
    #[error("missing or malformed Sec-WebSocket-Key")]
    Key,
}

/// Whether the request asks for a WebSocket upgrade at all.
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    let has_token = |value: &HeaderValue, token: &str| {
        value.to_str().is_ok_and(|v| v.split(',').any(|part| part.trim().eq_ignore_ascii_case(token)))
    };
    headers.get(UPGRADE).is_some_and(|v| has_token(v, "websocket"))
        && headers.get_all(CONNECTION).iter().any(|v| has_token(v, "upgrade"))
}

/// Checks the upgrade headers and returns the `Sec-WebSocket-Accept` value.
pub fn accept(headers: &HeaderMap) -> Result<String, HandshakeError> {
    if headers.get(SEC_WEBSOCKET_VERSION).and_then(|v| v.to_str().ok()).map(str::trim) != Some("13") {
        return Err(HandshakeError::Version);
    }
    let key = headers.get(SEC_WEBSOCKET_KEY).and_then(|v| v.to_str().ok()).map(str::trim).ok_or(HandshakeError::Key)?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(key).map_err(|_| HandshakeError::Key)?;
    if decoded.len() != 16 {
        return Err(HandshakeError::Key);
    }
    Ok(accept_key(key))
}

/// `base64(SHA-1(key + GUID))`.
pub fn accept_key(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_6455_example_key() {
        assert_eq!(accept_key("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn validates_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(UPGRADE, HeaderValue::from_static("WebSocket"));
        headers.insert(CONNECTION, HeaderValue::from_static("keep-alive, Upgrade"));
        assert!(is_upgrade(&headers));
        assert_eq!(accept(&headers), Err(HandshakeError::Version));
        headers.insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        assert_eq!(accept(&headers), Err(HandshakeError::Key));
        headers.insert(SEC_WEBSOCKET_KEY, HeaderValue::from_static("c2hvcnQ="));
        assert_eq!(accept(&headers), Err(HandshakeError::Key));
        headers.insert(SEC_WEBSOCKET_KEY, HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="));
        assert_eq!(accept(&headers).as_deref(), Ok("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
    }
}
