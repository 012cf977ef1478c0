//! The server's side of authentication: the `Origin` allow list of WebSocket upgrades, the login token of the upgrade
//! URL, and turning the auth options into settings of the core (which checks tokens and room passwords itself, see
//! `switchboard_core::auth`).

use std::borrow::Cow;
use std::collections::BTreeMap;

use axum::http::{header::ORIGIN, HeaderMap, Uri};
use clap::ValueEnum;
use serde::Deserialize;
use switchboard_core::{Auth, TokenKeys};
use switchboard_proto::{names::normalize_name, Secret};

/// Who may log in, as an option value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuthMode {
    /// Anyone, under any free name.
    Open,
    /// Only holders of a login token signed with an `auth-secret`.
    Token,
}

/// A `[rooms.NAME]` table of the configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RoomOptions {
    /// Joining the room needs this password (or a login token whose `rooms` claim lists the room).
    pub password: Option<String>,
}

/// The core's auth mode from the `auth` and `auth-secrets` options.
pub fn auth_mode(mode: Option<AuthMode>, secrets: &[String]) -> anyhow::Result<Auth> {
    match mode.unwrap_or(AuthMode::Open) {
        AuthMode::Open => Ok(Auth::Open),
        AuthMode::Token => {
            anyhow::ensure!(!secrets.is_empty(), "auth = token needs at least one auth-secret");
            Ok(Auth::Token(token_keys(secrets)?))
        }
    }
}

/// Signing keys from the `auth-secrets` option.
pub fn token_keys(secrets: &[String]) -> anyhow::Result<TokenKeys> {
    TokenKeys::new(secrets).map_err(|error| anyhow::anyhow!("auth-secrets: {error}"))
}

/// Room passwords from `room-passwords` (`NAME=PASSWORD`) and the `[rooms.NAME]` tables; the former win for a room
/// given in both.
pub fn room_passwords(
    pairs: &[String],
    tables: BTreeMap<String, RoomOptions>,
) -> anyhow::Result<Vec<(String, Secret<'static>)>> {
    let mut by_key: BTreeMap<String, (String, String)> = BTreeMap::new();
    let mut add = |key: &str, name: &str, password: String| -> anyhow::Result<()> {
        let normal = normalize_name(name).map_err(|error| anyhow::anyhow!("{key}: room {name:?}: {error}"))?;
        anyhow::ensure!(!password.is_empty(), "{key}: room {name:?} has an empty password");
        anyhow::ensure!(
            password.len() <= switchboard_core::auth::MAX_ROOM_PASSWORD_BYTES,
            "{key}: the password of room {name:?} is longer than {} bytes",
            switchboard_core::auth::MAX_ROOM_PASSWORD_BYTES
        );
        let fold = switchboard_proto::names::name_key(&normal).into_owned();
        by_key.insert(fold, (normal, password));
        Ok(())
    };
    for (name, room) in tables {
        if let Some(password) = room.password {
            add("rooms", &name, password)?;
        }
    }
    for pair in pairs {
        let Some((name, password)) = pair.split_once('=') else {
            anyhow::bail!("room-passwords: expected NAME=PASSWORD, got something without `=`");
        };
        add("room-passwords", name, password.to_owned())?;
    }
    Ok(by_key.into_values().map(|(name, password)| (name, Secret(Cow::Owned(password)))).collect())
}

/// The `allowed-origins` option, each in the form browsers send (`scheme://host[:port]`, lower case, no default
/// port).
pub fn allowed_origins(list: &[String]) -> anyhow::Result<Vec<String>> {
    list.iter()
        .map(|text| {
            let trimmed = text.trim();
            let trimmed = trimmed.strip_suffix('/').unwrap_or(trimmed);
            normalize_origin(trimmed).ok_or_else(|| {
                anyhow::anyhow!(
                    "allowed-origins: {text:?} is not an origin like https://example.org or http://host:8080"
                )
            })
        })
        .collect()
}

/// `scheme://host[:port]` in canonical form, or `None` for anything else (paths, user info, `null`...).
fn normalize_origin(text: &str) -> Option<String> {
    let lower = text.to_ascii_lowercase();
    let (scheme, rest) = lower.split_once("://")?;
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !scheme_ok || rest.is_empty() || rest.contains(['/', '?', '#', '@', ' ']) {
        return None;
    }
    let (host, port) = match rest.rsplit_once(':') {
        // An IPv6 address without a port: the last colon is inside the brackets.
        Some((host, port)) if !port.contains(']') => (host, Some(port)),
        _ => (rest, None),
    };
    if host.is_empty() {
        return None;
    }
    let port = match port {
        None => None,
        Some(port) => Some(port.parse::<u16>().ok()?),
    };
    let default_port = match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    };
    Some(match port {
        Some(port) if Some(port) != default_port => format!("{scheme}://{host}:{port}"),
        _ => format!("{scheme}://{host}"),
    })
}

/// Which `Origin`s may open a WebSocket. Empty: any, including none.
#[derive(Debug, Clone, Default)]
pub struct OriginPolicy {
    allowed: Vec<String>,
}

impl OriginPolicy {
    /// A policy allowing `allowed` (as returned by [`allowed_origins`]); empty allows everything.
    pub fn new(allowed: Vec<String>) -> Self {
        Self { allowed }
    }

    /// Whether an upgrade with these headers may proceed. With a list, the request must carry exactly one `Origin`
    /// that is on it; browsers always send one, and a missing one is refused too.
    pub fn allows(&self, headers: &HeaderMap) -> bool {
        if self.allowed.is_empty() {
            return true;
        }
        let mut origins = headers.get_all(ORIGIN).iter();
        let (Some(origin), None) = (origins.next(), origins.next()) else {
            return false;
        };
        origin
            .to_str()
            .ok()
            .and_then(|origin| normalize_origin(origin.trim()))
            .is_some_and(|origin| self.allowed.contains(&origin))
    }
}

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

/// The `token` parameter of an upgrade URL (`/ws?token=...`), percent-decoded. A query that does not parse carries
/// no token.
pub fn query_token(uri: &Uri) -> Option<String> {
    uri.query()?;
    axum::extract::Query::<TokenQuery>::try_from_uri(uri).ok()?.0.token.filter(|token| !token.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn origins_are_compared_in_canonical_form() {
        let allowed = allowed_origins(&[
            "https://Example.org/".into(),
            "http://localhost:8080".into(),
            "https://chat.example.org:443".into(),
            "http://[::1]:8080".into(),
        ])
        .unwrap();
        assert_eq!(
            allowed,
            ["https://example.org", "http://localhost:8080", "https://chat.example.org", "http://[::1]:8080"]
        );
        let policy = OriginPolicy::new(allowed);
        let with = |origin: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(ORIGIN, HeaderValue::from_static(origin));
            policy.allows(&headers)
        };
        assert!(with("https://example.org"));
        assert!(with("https://EXAMPLE.org:443"));
        assert!(with("http://localhost:8080"));
        assert!(with("http://[::1]:8080"));
        assert!(!with("http://example.org"), "the scheme counts");
        assert!(!with("https://example.org.evil.net"));
        assert!(!with("https://example.org:8443"));
        assert!(!with("http://localhost:8081"));
        assert!(!with("null"));
        assert!(!policy.allows(&HeaderMap::new()), "no Origin at all");
        let mut two = HeaderMap::new();
        two.append(ORIGIN, HeaderValue::from_static("https://example.org"));
        two.append(ORIGIN, HeaderValue::from_static("https://evil.net"));
        assert!(!policy.allows(&two));
        assert!(OriginPolicy::default().allows(&HeaderMap::new()), "no list: anything goes");
    }

    #[test]
    fn bad_origins_in_the_configuration_name_the_key() {
        for bad in [
            "example.org",
            "https://",
            "https://example.org/app",
            "https://user@example.org",
            "null",
            "https://x:99999",
        ] {
            let error = allowed_origins(&[bad.into()]).unwrap_err().to_string();
            assert!(error.contains("allowed-origins"), "{bad}: {error}");
        }
    }

    #[test]
    fn query_tokens_are_decoded() {
        let uri: Uri = "/ws?x=1&token=a.b%2Ec&y".parse().unwrap();
        assert_eq!(query_token(&uri).as_deref(), Some("a.b.c"));
        assert_eq!(query_token(&"/ws".parse().unwrap()), None);
        assert_eq!(query_token(&"/ws?token=".parse().unwrap()), None);
        assert_eq!(query_token(&"/?other=1".parse().unwrap()), None);
    }

    #[test]
    fn room_passwords_from_pairs_and_tables() {
        let tables: BTreeMap<String, RoomOptions> =
            toml::from_str("[standup]\npassword = \"from-file\"\n[lunch]\npassword = \"x=y\"\n[open]\n").unwrap();
        let rooms = room_passwords(&["StandUp=from-cli".into()], tables).unwrap();
        let shown: Vec<(&str, &str)> = rooms.iter().map(|(n, p)| (n.as_str(), p.expose())).collect();
        assert_eq!(shown, [("lunch", "x=y"), ("StandUp", "from-cli")]);
        let error = room_passwords(&["no-equals".into()], BTreeMap::new()).unwrap_err().to_string();
        assert!(error.contains("room-passwords") && !error.contains("no-equals"), "{error}");
        let error = room_passwords(&["<b>=pw".into()], BTreeMap::new()).unwrap_err().to_string();
        assert!(error.contains("room-passwords"), "{error}");
        let error = room_passwords(&["r=".into()], BTreeMap::new()).unwrap_err().to_string();
        assert!(error.contains("empty"), "{error}");
    }

    #[test]
    fn auth_options_from_file_environment_and_command_line() {
        use crate::config::Options;
        use clap::Parser;
        let file: Options = toml::from_str(
            r#"
            auth = "token"
            auth-secrets = ["0123456789abcdef0123456789abcdef"]
            allowed-origins = ["https://Example.org"]
            room-passwords = ["lunch=file"]
            [rooms."Board Room"]
            password = "table"
            "#,
        )
        .unwrap();
        let cli = Options::try_parse_from(["switchboard", "--room-password", "lunch=cli"]).unwrap();
        let config = cli.or(file).into_config().unwrap();
        assert!(matches!(config.core.auth, Auth::Token(_)));
        assert_eq!(config.allowed_origins, ["https://example.org"]);
        let rooms: Vec<(&str, &str)> =
            config.core.room_passwords.iter().map(|(n, p)| (n.as_str(), p.expose())).collect();
        assert_eq!(rooms, [("Board Room", "table"), ("lunch", "cli")]);
        let printed = format!("{:?}", config.core);
        assert!(!printed.contains("0123456789abcdef") && !printed.contains("table"), "{printed}");

        // The singular spelling of the key works too.
        let file: Options = toml::from_str("auth-secret = [\"0123456789abcdef0123456789abcdef\"]").unwrap();
        assert_eq!(file.auth_secrets.len(), 1);
        let error = toml::from_str::<Options>("[rooms.x]\npasword = \"typo\"").unwrap_err().to_string();
        assert!(error.contains("pasword"), "{error}");
        let error = Options::try_parse_from(["switchboard", "--auth", "token"]).unwrap().into_config().unwrap_err();
        assert!(error.to_string().contains("auth-secret"), "{error}");
        let error = Options::try_parse_from(["switchboard", "--allowed-origin", "example.org"]).unwrap().into_config();
        assert!(error.unwrap_err().to_string().contains("allowed-origins"));
    }

    #[test]
    fn token_mode_needs_good_secrets() {
        assert!(matches!(auth_mode(None, &[]), Ok(Auth::Open)));
        assert!(auth_mode(Some(AuthMode::Token), &[]).unwrap_err().to_string().contains("auth-secret"));
        let error = auth_mode(Some(AuthMode::Token), &["short".into()]).unwrap_err().to_string();
        assert!(error.contains("auth-secrets") && !error.contains("short"), "{error}");
        assert!(matches!(auth_mode(Some(AuthMode::Token), &["k".repeat(32)]), Ok(Auth::Token(_))));
    }
}
