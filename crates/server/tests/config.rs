//! Configuration through the real loader (`Options` from the command line, `--config FILE`, `resolve`): the
//! annotated example file stays valid (also with every commented setting enabled), the docs list every option, and
//! invalid values fail with a message that names the key.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use clap::{CommandFactory, Parser};
use switchboard_server::config::{MetricsListen, Options};
use switchboard_server::Config;

fn repo_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").join(name)
}

/// A config file with `text`, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(text: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name =
            format!("switchboard-config-test-{}-{}.toml", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let path = std::env::temp_dir().join(name);
        std::fs::write(&path, text).unwrap();
        Self(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Loads `file` (and `args`) the way the binary does.
fn load(file: Option<&TempFile>, args: &[&str]) -> anyhow::Result<Config> {
    let mut argv = vec!["switchboard".to_owned()];
    if let Some(file) = file {
        argv.push("--config".to_owned());
        argv.push(file.0.display().to_string());
    }
    argv.extend(args.iter().map(|a| (*a).to_owned()));
    Options::try_parse_from(argv)?.resolve()
}

fn error_of(text: &str) -> String {
    let file = TempFile::new(text);
    let error = load(Some(&file), &[]).expect_err(&format!("{text:?} should be refused"));
    format!("{error:#}")
}

#[test]
fn the_example_file_loads_through_the_real_loader() {
    let text = std::fs::read_to_string(repo_file("switchboard.example.toml")).unwrap();
    let file = TempFile::new(&text);
    let config = load(Some(&file), &[]).unwrap_or_else(|e| panic!("switchboard.example.toml: {e:#}"));
    assert_eq!(config.http, "0.0.0.0:8080".parse().unwrap());
    assert_eq!(config.metrics, MetricsListen::Listen("127.0.0.1:9090".parse().unwrap()));
    assert_eq!(config.shutdown_timeout, Duration::from_secs(10));
    assert_eq!(config.core.resume_grace, Duration::from_secs(30));
    assert!(config.turn.is_some());
    assert!(config.admin_token.is_none());
}

/// Commented settings that replace others (a self-signed certificate instead of `tls-cert`): not enabled together.
const ALTERNATIVES: &[&str] = &["self-signed", "tls-names"];

#[test]
fn the_example_file_still_loads_with_every_commented_setting_enabled() {
    let text = std::fs::read_to_string(repo_file("switchboard.example.toml")).unwrap();
    let mut enabled = Vec::new();
    let uncommented: String = text
        .lines()
        .map(|line| match line.strip_prefix("# ") {
            Some(rest)
                if rest.split_once(" = ").is_some_and(|(key, _)| {
                    key.chars().all(|c| c.is_ascii_lowercase() || c == '-') && !ALTERNATIVES.contains(&key)
                }) =>
            {
                enabled.push(rest.split(" = ").next().unwrap_or_default().to_owned());
                rest.to_owned()
            }
            _ => line.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert!(enabled.len() >= 10, "only {enabled:?} were commented settings");
    let file = TempFile::new(&uncommented);
    let config = load(Some(&file), &[]).unwrap_or_else(|e| panic!("with {enabled:?} enabled: {e:#}"));
    assert!(config.admin_token.is_some());
    assert!(config.tls.is_some());
}

/// The TOML key of each long flag: the flag's name, except for lists, whose key is plural.
fn key_of(flag: &str) -> String {
    match flag {
        "ice-server" | "turn-secret" | "turn-user" | "turn-allow-peer" | "turn-deny-peer" | "turn-url"
        | "auth-secret" | "allowed-origin" | "room-password" | "tls-name" => {
            format!("{flag}s")
        }
        _ => flag.to_owned(),
    }
}

#[test]
fn the_docs_and_the_example_file_name_every_option() {
    let docs = std::fs::read_to_string(repo_file("docs/configuration.md")).unwrap();
    let example = std::fs::read_to_string(repo_file("switchboard.example.toml")).unwrap();
    let command = Options::command();
    let mut missing = Vec::new();
    for arg in command.get_arguments() {
        let Some(flag) = arg.get_long() else { continue };
        if ["help", "version", "config"].contains(&flag) {
            continue;
        }
        let key = key_of(flag);
        if !docs.contains(&format!("`--{flag} ")) {
            missing.push(format!("docs/configuration.md has no row for --{flag}"));
        }
        if let Some(env) = arg.get_env() {
            if !docs.contains(&format!("`{}`", env.to_string_lossy())) {
                missing.push(format!("docs/configuration.md does not name {}", env.to_string_lossy()));
            }
        }
        if !docs.contains(&format!("`{key}`")) {
            missing.push(format!("docs/configuration.md does not name the key {key}"));
        }
        if !example.lines().any(|line| line.trim_start_matches("# ").starts_with(&format!("{key} = "))) {
            missing.push(format!("switchboard.example.toml has no {key}"));
        }
    }
    assert!(missing.is_empty(), "document every option:\n{}", missing.join("\n"));
}

#[test]
fn file_then_command_line_and_defaults_for_the_rest() {
    let file = TempFile::new("ring-timeout = \"5s\"\nshutdown-timeout = \"3s\"\nmetrics = \"off\"\n");
    let config = load(Some(&file), &["--shutdown-timeout", "1s"]).unwrap();
    assert_eq!(config.core.ring_timeout, Duration::from_secs(5));
    assert_eq!(config.shutdown_timeout, Duration::from_secs(1));
    assert_eq!(config.metrics, MetricsListen::Off);
    assert_eq!(config.core.resume_grace, Duration::from_secs(30));
    let defaults = load(None, &[]).unwrap();
    assert_eq!(defaults.metrics, MetricsListen::Http);
    assert_eq!(defaults.shutdown_timeout, Duration::from_secs(10));
    assert!(defaults.admin_token.is_none());
}

#[test]
fn an_unknown_key_is_named() {
    let error = error_of("colour = \"blue\"\n");
    assert!(error.contains("colour") && error.contains("unknown field"), "{error}");
}

#[test]
fn a_bad_duration_is_named() {
    let error = error_of("shutdown-timeout = \"soon\"\n");
    assert!(error.contains("shutdown-timeout") && error.contains("soon"), "{error}");
    let error = error_of("shutdown-timeout = \"2h\"\n");
    assert!(error.contains("shutdown-timeout must be between"), "{error}");
    let error = error_of("ring-timeout = \"5 days\"\n");
    assert!(error.contains("ring-timeout") && error.contains("unknown time unit"), "{error}");
    let error = Options::try_parse_from(["switchboard", "--heartbeat", "often"]).unwrap_err().to_string();
    assert!(error.contains("--heartbeat") && error.contains("often"), "{error}");
}

#[test]
fn a_bad_address_is_named() {
    let error = error_of("http = \"nowhere\"\n");
    assert!(error.contains("http = \"nowhere\"") && error.contains("invalid socket address"), "{error}");
    let error = error_of("metrics = \"localhost\"\n");
    assert!(error.contains("metrics: \"localhost\" is not http, off or ADDR:PORT"), "{error}");
    let error = error_of("turn = \"3478\"\n");
    assert!(error.contains("turn: \"3478\""), "{error}");
    let error = error_of("turn-relay-ip = \"10.0.0\"\n");
    assert!(error.contains("turn-relay-ip"), "{error}");
    let error = Options::try_parse_from(["switchboard", "--http", "127.0.0.1"]).unwrap_err().to_string();
    assert!(error.contains("--http"), "{error}");
}

#[test]
fn other_bad_values_are_named() {
    for (text, expected) in [
        ("admin-token = \"short\"\n", "admin-token must be 16 to 256 visible ASCII characters"),
        ("admin-token = \"has a space in it, sixteen+\"\n", "admin-token"),
        ("max-connections = 0\n", "max-connections must be at least 1"),
        ("max-connections = 100000000000\n", "max-connections must be at most"),
        ("max-connections = -1\n", "max-connections"),
        ("max-room-size = 1\n", "max-room-size"),
        ("rate-burst = 0\n", "rate-burst"),
        ("max-message-bytes = 4096\nmax-frame-bytes = 2048\n", "max-frame-bytes"),
        ("name-policy = \"steal\"\n", "name-policy"),
        ("log-format = \"xml\"\n", "log-format"),
        ("ice-servers = [\"http://x\"]\n", "ice-servers"),
        ("turn-secrets = [\"\"]\n", "turn-secrets: a secret is empty"),
        ("turn-host = \"turn example\"\n", "turn-host"),
        ("turn-allow-peers = [\"10.0.0.0/33\"]\n", "turn-allow-peers"),
        ("turn-ttl = \"10s\"\n", "turn-ttl"),
        ("tls-cert = \"/nonexistent.pem\"\n", "tls-cert and tls-key go together"),
        ("turn-tls = \"5349\"\n", "turn-tls"),
        ("http = 8080\n", "http"),
    ] {
        let error = error_of(text);
        assert!(error.contains(expected), "{text:?}: expected {expected:?} in:\n{error}");
    }
}

#[test]
fn a_static_turn_password_never_appears_in_an_error() {
    let error = error_of("turn-users = [\"tool:\"]\n");
    assert!(error.contains("turn-users") && error.contains("tool"), "{error}");
    let error = error_of("turn-users = [\":hunter2-password\"]\n");
    assert!(!error.contains("hunter2"), "{error}");
}

#[test]
fn a_missing_config_file_is_named() {
    let error = Options::try_parse_from(["switchboard", "--config", "/nonexistent/switchboard.toml"])
        .unwrap()
        .resolve()
        .unwrap_err();
    assert!(format!("{error:#}").contains("/nonexistent/switchboard.toml"), "{error:#}");
}
