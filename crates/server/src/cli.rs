//! Subcommands of the `switchboard` binary. Without one, `switchboard [OPTIONS]` runs the server.
//!
//! A new subcommand is a variant of [`Command`] with its arguments, and an arm in [`Command::run`]. The server's
//! options (flags before the subcommand, the environment, `--config`) are resolved as for the server and handed to
//! it.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::{Args, Subcommand};
use switchboard_core::Claims;

use crate::config::{HumanDuration, Options};

/// What to do instead of running the server.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Print a login token for `--auth token` servers (a JWT signed with HS256).
    Token(TokenArgs),
    /// Check from outside that STUN and TURN work at the address users are given (Binding, Allocate, relayed data
    /// both ways). Exits non-zero, naming the failed step, when they do not.
    Check(crate::check::CheckArgs),
}

/// Arguments of `switchboard token`.
#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// The user name the token is for (its `sub` claim): the only name it logs in as.
    #[arg(long, value_name = "NAME")]
    pub name: String,

    /// How long the token is valid (e.g. 30m, 12h).
    #[arg(long, value_name = "DURATION", default_value = "1h")]
    pub ttl: HumanDuration,

    /// A room the token admits to without its password (repeatable); with any, no other room. Without: any room.
    #[arg(long = "room", value_name = "NAME")]
    pub rooms: Vec<String>,

    /// Signing secret [default: the first auth secret of the server's options, environment or --config file].
    #[arg(long = "auth-secret", value_name = "SECRET")]
    pub auth_secret: Option<String>,
}

/// Longest token lifetime `switchboard token` mints.
const MAX_TTL_SECS: u64 = 366 * 86_400;

impl Command {
    /// Runs the subcommand; `options` are the server's, not yet merged with the configuration file.
    pub fn run(self, options: Options) -> anyhow::Result<()> {
        match self {
            Command::Token(args) => {
                let token = mint(args, options, unix_now())?;
                let mut stdout = std::io::stdout().lock();
                writeln!(stdout, "{token}").context("cannot write the token")?;
                Ok(())
            }
            Command::Check(args) => crate::check::run(args, &options.resolve()?),
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The token `switchboard token` prints.
fn mint(args: TokenArgs, options: Options, now_unix: u64) -> anyhow::Result<String> {
    let secrets = match args.auth_secret {
        Some(secret) => vec![secret],
        None => options.merged()?.auth_secrets,
    };
    anyhow::ensure!(
        !secrets.is_empty(),
        "no signing secret: give --auth-secret, set SWITCHBOARD_AUTH_SECRET, or auth-secrets in the --config file"
    );
    // Only the first secret signs; checking them all catches a bad configuration here rather than at the server.
    let keys = crate::auth::token_keys(&secrets)?;
    let name = switchboard_proto::names::normalize_name(&args.name).map_err(|e| anyhow::anyhow!("--name: {e}"))?;
    let ttl = args.ttl.0.as_secs();
    anyhow::ensure!(
        (1..=MAX_TTL_SECS).contains(&ttl),
        "--ttl must be between 1s and 366 days ({}h)",
        MAX_TTL_SECS / 3600
    );
    let rooms = (!args.rooms.is_empty()).then_some(args.rooms);
    let claims = Claims { sub: name, exp: now_unix.saturating_add(ttl), rooms };
    keys.mint(&claims).map_err(|e| anyhow::anyhow!("--room: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn parse(args: &[&str]) -> (TokenArgs, Options) {
        let mut options = Options::try_parse_from(args).unwrap();
        match options.command.take() {
            Some(Command::Token(token)) => (token, options),
            Some(other) => panic!("not the token subcommand: {other:?}"),
            None => panic!("no subcommand in {args:?}"),
        }
    }

    #[test]
    fn minted_tokens_verify_with_the_same_secret() {
        let (args, options) = parse(&[
            "switchboard",
            "token",
            "--name",
            "Alice",
            "--ttl",
            "2h",
            "--room",
            "standup",
            "--auth-secret",
            SECRET,
        ]);
        let token = mint(args, options, 1_800_000_000).unwrap();
        let claims = switchboard_core::TokenKeys::new([SECRET]).unwrap().verify(&token, 1_800_000_000).unwrap();
        assert_eq!(claims.sub, "Alice");
        assert_eq!(claims.exp, 1_800_000_000 + 7200);
        assert_eq!(claims.rooms, Some(vec!["standup".to_owned()]));
    }

    #[test]
    fn the_secret_may_come_from_the_server_options() {
        let (args, options) = parse(&["switchboard", "--auth-secret", SECRET, "token", "--name", "bob"]);
        let token = mint(args, options, 0).unwrap();
        let claims = switchboard_core::TokenKeys::new([SECRET]).unwrap().verify(&token, 0).unwrap();
        assert_eq!((claims.sub.as_str(), claims.exp, claims.rooms), ("bob", 3600, None));
    }

    #[test]
    fn bad_arguments_are_refused_with_the_flag_named() {
        let (args, options) = parse(&["switchboard", "token", "--name", "bob", "--auth-secret", "short"]);
        assert!(mint(args, options, 0).unwrap_err().to_string().contains("auth-secrets"));
        let (args, options) = parse(&["switchboard", "token", "--name", "<b>", "--auth-secret", SECRET]);
        assert!(mint(args, options, 0).unwrap_err().to_string().contains("--name"));
        let (args, options) = parse(&["switchboard", "token", "--name", "bob", "--ttl", "0s", "--auth-secret", SECRET]);
        assert!(mint(args, options, 0).unwrap_err().to_string().contains("--ttl"));
        let (args, options) =
            parse(&["switchboard", "token", "--name", "bob", "--room", "a  b", "--auth-secret", SECRET]);
        assert!(mint(args, options, 0).unwrap_err().to_string().contains("--room"));
        assert!(Options::try_parse_from(["switchboard", "token"]).is_err(), "--name is required");
    }

    #[test]
    fn no_subcommand_runs_the_server_as_before() {
        let options = Options::try_parse_from(["switchboard", "--http", "127.0.0.1:9000"]).unwrap();
        assert!(options.command.is_none());
        assert_eq!(options.resolve().unwrap().http, "127.0.0.1:9000".parse().unwrap());
    }
}
