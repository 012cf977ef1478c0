//! The few protocol facts the scenarios need: logging in per dialect and recognising replies, without parsing whole
//! messages where a substring test is enough.

use memchr::memmem;

use crate::net::Target;
use crate::ws::{Transport, WsConn};

/// Whether a JSON message has `"type":"<kind>"` (as every server here writes it, without spaces).
///
/// A message that starts with its `type` (Switchboard's, PeerJS's) is decided by that alone, without a search through
/// the rest: the storm scenario asks this of 1.5 GB of presence, and a payload may hold a `"type"` of its own.
pub fn has_type(message: &[u8], kind: &str) -> bool {
    if let Some(leading) = leading_type(message) {
        return leading == kind.as_bytes();
    }
    let mut needle = Vec::with_capacity(kind.len() + 10);
    needle.extend_from_slice(b"\"type\":\"");
    needle.extend_from_slice(kind.as_bytes());
    needle.push(b'"');
    memmem::find(message, &needle).is_some()
}

/// The `type` of a message whose first field it is.
fn leading_type(message: &[u8]) -> Option<&[u8]> {
    let rest = message.strip_prefix(b"{\"type\":\"")?;
    let end = memchr::memchr(b'"', rest)?;
    Some(&rest[..end])
}

/// Up to 300 characters of a message, for error reports.
pub fn excerpt(message: &[u8]) -> String {
    let text = String::from_utf8_lossy(message);
    match text.char_indices().nth(300) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text.into_owned(),
    }
}

/// Fails with the message if it is a Switchboard `error`.
pub fn refuse_error(message: &[u8]) -> anyhow::Result<()> {
    anyhow::ensure!(!has_type(message, "error"), "the server answered {}", excerpt(message));
    Ok(())
}

/// Connects and logs in with protocol v1; returns once `welcome` arrived.
pub async fn login_v1(target: &Target, i: usize, name: &str) -> anyhow::Result<WsConn> {
    let mut conn = WsConn::connect(target, i).await?;
    conn.queue_text(serde_json::json!({"type": "login", "name": name}).to_string().as_bytes());
    conn.flush().await?;
    conn.wait_for(|m| {
        refuse_error(m)?;
        Ok(has_type(m, "welcome").then_some(()))
    })
    .await?;
    Ok(conn)
}

/// Connects and logs in with the tutorial dialect; returns once the first `RenderUserList` arrived.
pub async fn login_tutorial(target: &Target, i: usize, name: &str) -> anyhow::Result<WsConn> {
    let mut conn = WsConn::connect(target, i).await?;
    conn.queue_text(serde_json::json!({"type": "Login", "UserName": name}).to_string().as_bytes());
    conn.flush().await?;
    conn.wait_for(|m| {
        refuse_error(m)?;
        Ok(has_type(m, "RenderUserList").then_some(()))
    })
    .await?;
    Ok(conn)
}

/// Ends a v1 session at once (instead of leaving it to wait for a resume) and closes the connection.
pub async fn logout_v1(conn: &mut impl Transport) {
    conn.queue_text(br#"{"type":"logout"}"#);
    conn.queue_close();
    let _ = conn.flush().await;
}

/// Closes a connection politely.
pub async fn close(conn: &mut impl Transport) {
    conn.queue_close();
    let _ = conn.flush().await;
}

/// The default name prefix of a scenario: unique per process so that repeated runs never collide with sessions
/// of an earlier run the server still holds.
pub fn default_prefix(tag: &str) -> String {
    format!("{tag}{}x", std::process::id() % 100_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_tests_and_excerpts() {
        assert!(has_type(br#"{"type":"welcome","id":1}"#, "welcome"));
        assert!(!has_type(br#"{"type":"welcomed"}"#, "welcome"));
        assert!(!has_type(br#"{"name":"welcome"}"#, "welcome"));
        assert!(has_type(br#"{"id":1,"type":"welcome"}"#, "welcome"), "not the first field: searched for");
        assert!(!has_type(br#"{"type":"offer","sdp":{"type":"answer"}}"#, "answer"), "the leading type decides");
        assert!(refuse_error(br#"{"type":"error","code":"name-taken"}"#).is_err());
        assert!(refuse_error(br#"{"type":"hello"}"#).is_ok());
        assert_eq!(excerpt(&[b'a'; 400]).len(), 303);
        assert_eq!(excerpt(b"short"), "short");
        assert!(default_prefix("rl").starts_with("rl"));
    }
}
