//! TURN credentials: the "TURN REST API" scheme (coturn's `use-auth-secret`) and static users.
//!
//! A short-lived credential is `username = "<expiry unix time>:<user>"`, `password = base64(HMAC-SHA1(secret,
//! username))`. The server needs no state to check one: it recomputes the password from the username with each
//! configured secret (several at once, for rotation) and refuses usernames whose expiry has passed. Static users
//! (name and password from the configuration) are for tools and tests.

use std::collections::HashMap;

use base64::Engine;
use hmac::{Hmac, Mac};
use sha1::Sha1;

/// What the server knows to check credentials.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// Shared secrets of the REST scheme; the first one mints, all of them verify.
    secrets: Vec<String>,
    /// Static user name -> password.
    static_users: HashMap<String, String>,
}

/// A freshly minted credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Minted {
    /// `<expiry>:<user>`.
    pub username: String,
    /// base64(HMAC-SHA1(secret, username)).
    pub password: String,
    /// Unix time after which the server refuses it.
    pub expires_unix: u64,
}

/// Why a static user could not be parsed from `NAME:PASSWORD`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected NAME:PASSWORD with a non-empty name and password")]
pub struct BadStaticUser;

impl Credentials {
    /// Credentials with these REST secrets and static users.
    pub fn new(secrets: Vec<String>, static_users: HashMap<String, String>) -> Self {
        Self { secrets: secrets.into_iter().filter(|s| !s.is_empty()).collect(), static_users }
    }

    /// Parses `NAME:PASSWORD` (the password may contain colons).
    pub fn parse_static_user(text: &str) -> Result<(String, String), BadStaticUser> {
        match text.split_once(':') {
            Some((name, password)) if !name.is_empty() && !password.is_empty() => Ok((name.into(), password.into())),
            _ => Err(BadStaticUser),
        }
    }

    /// Whether the REST scheme is configured (credentials can be minted).
    pub fn can_mint(&self) -> bool {
        !self.secrets.is_empty()
    }

    /// Mints a credential for `user`, valid for `ttl_secs` from `now_unix`, with the first secret.
    pub fn mint(&self, user: &str, now_unix: u64, ttl_secs: u64) -> Option<Minted> {
        let secret = self.secrets.first()?;
        let expires_unix = now_unix.saturating_add(ttl_secs);
        let username = format!("{expires_unix}:{user}");
        let password = rest_password(secret, &username);
        Some(Minted { username, password, expires_unix })
    }

    /// The passwords `username` may have at `now_unix`: its static password, or one per secret for an unexpired REST
    /// username. The caller checks MESSAGE-INTEGRITY against each (in constant time) and accepts if one matches.
    pub fn passwords(&self, username: &str, now_unix: u64) -> Vec<String> {
        if let Some(password) = self.static_users.get(username) {
            return vec![password.clone()];
        }
        let Some((expiry, _user)) = username.split_once(':') else {
            return Vec::new();
        };
        match expiry.parse::<u64>() {
            Ok(expiry) if expiry >= now_unix => self.secrets.iter().map(|s| rest_password(s, username)).collect(),
            _ => Vec::new(),
        }
    }

    /// Whether `username` is a REST username whose expiry has passed (answered with 401 and a hint in the log).
    pub fn is_expired(username: &str, now_unix: u64) -> bool {
        username.split_once(':').and_then(|(e, _)| e.parse::<u64>().ok()).is_some_and(|expiry| expiry < now_unix)
    }
}

/// base64(HMAC-SHA1(secret, username)), the REST scheme's password.
pub fn rest_password(secret: &str, username: &str) -> String {
    // HMAC accepts keys of any length, so this cannot fail; an empty MAC would simply never match.
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_coturn_rest_scheme() {
        // Reference value computed independently: printf '1700000000:alice' | openssl dgst -sha1 -hmac s3cret -binary | base64
        assert_eq!(rest_password("s3cret", "1700000000:alice"), "TtElzSjT0GdnTQ9xdcRNxx96yQs=");
    }

    #[test]
    fn minted_credentials_verify_until_they_expire() {
        let creds = Credentials::new(vec!["new".into(), "old".into()], HashMap::new());
        let minted = creds.mint("alice", 1_000, 60).unwrap();
        assert_eq!(minted.username, "1060:alice");
        assert_eq!(creds.passwords(&minted.username, 1_000)[0], minted.password);
        assert_eq!(creds.passwords(&minted.username, 1_060).len(), 2, "every secret is tried");
        assert!(creds.passwords(&minted.username, 1_061).is_empty(), "expired");
        assert!(Credentials::is_expired(&minted.username, 1_061));
        // A credential minted with the old secret still verifies during rotation.
        let old = Credentials::new(vec!["old".into()], HashMap::new()).mint("bob", 1_000, 60).unwrap();
        assert!(creds.passwords(&old.username, 1_000).contains(&old.password));
        assert!(creds.passwords("nocolon", 0).is_empty());
        assert!(creds.passwords("soon:alice", 0).is_empty());
    }

    #[test]
    fn static_users() {
        let (name, password) = Credentials::parse_static_user("tool:pa:ss").unwrap();
        assert_eq!((name.as_str(), password.as_str()), ("tool", "pa:ss"));
        assert!(Credentials::parse_static_user("nopassword:").is_err());
        let creds = Credentials::new(Vec::new(), HashMap::from([(name, password)]));
        assert_eq!(creds.passwords("tool", 0), vec!["pa:ss".to_owned()]);
        assert!(!creds.can_mint());
        assert!(creds.mint("x", 0, 1).is_none());
    }
}
