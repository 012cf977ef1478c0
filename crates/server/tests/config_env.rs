//! The environment's place in the precedence: defaults < file < environment < command line. Its own test binary
//! (so its own process): setting variables here cannot race with tests that parse options in parallel.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use clap::Parser;
use switchboard_server::config::{MetricsListen, Options};

#[test]
fn the_environment_beats_the_file_and_the_command_line_beats_both() {
    let path = std::env::temp_dir().join(format!("switchboard-config-env-{}.toml", std::process::id()));
    std::fs::write(
        &path,
        "ring-timeout = \"5s\"\nresume-grace = \"7s\"\nshutdown-timeout = \"3s\"\nmetrics = \"off\"\n",
    )
    .unwrap();
    std::env::set_var("SWITCHBOARD_RING_TIMEOUT", "6s");
    std::env::set_var("SWITCHBOARD_SHUTDOWN_TIMEOUT", "4s");
    std::env::set_var("SWITCHBOARD_ADMIN_TOKEN", "a-token-from-the-environment");
    let config =
        Options::try_parse_from(["switchboard", "--config", path.to_str().unwrap(), "--shutdown-timeout", "2s"])
            .unwrap()
            .resolve();
    std::env::set_var("SWITCHBOARD_MAX_ROOM_SIZE", "1");
    let bad = Options::try_parse_from(["switchboard"]).unwrap().resolve();
    let _ = std::fs::remove_file(&path);
    let config = config.unwrap();
    assert_eq!(config.core.ring_timeout, Duration::from_secs(6), "environment over file");
    assert_eq!(config.core.resume_grace, Duration::from_secs(7), "file over default");
    assert_eq!(config.shutdown_timeout, Duration::from_secs(2), "command line over environment");
    assert_eq!(config.metrics, MetricsListen::Off);
    assert_eq!(config.admin_token.unwrap().0, "a-token-from-the-environment");
    // A bad value from the environment is refused like any other, naming the key.
    let error = format!("{:#}", bad.unwrap_err());
    assert!(error.contains("max-room-size"), "{error}");
}
