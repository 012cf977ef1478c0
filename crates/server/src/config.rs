//! Configuration: defaults < TOML file < environment < command line.
//!
//! Every option is a command-line flag (`--resume-grace 30s`), an environment variable (`SWITCHBOARD_RESUME_GRACE`)
//! and a key of the TOML file named by `--config` (`resume-grace = "30s"`). Unknown keys and bad values fail at
//! start-up with a message naming the key.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use serde::Deserialize;
use switchboard_core::NamePolicy;
use switchboard_proto::IceServer;

/// Everything the server needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// HTTP and WebSocket listen address.
    pub http: SocketAddr,
    /// Settings of the signaling core.
    pub core: switchboard_core::Config,
    /// Frames queued per connection before it counts as a slow consumer.
    pub outbound_queue_frames: usize,
    /// Bytes queued per connection before it counts as a slow consumer.
    pub outbound_queue_bytes: usize,
    /// Frames above this close the connection with 1009 (those between `core.max_message_bytes` and this only get
    /// a `too-large` error).
    pub max_frame_bytes: usize,
    /// Accept `permessage-deflate` (RFC 7692) from clients that offer it.
    pub ws_compression: bool,
    /// Most simultaneous TCP connections (HTTP and WebSocket); more are refused at accept.
    pub max_connections: usize,
    /// Threads of the main runtime (HTTP, WebSocket signaling, TURN over TCP and TLS); None: [`default_workers`].
    pub workers: Option<usize>,
    /// The built-in STUN/TURN server; None turns it off.
    pub turn: Option<TurnSettings>,
    /// With the built-in TURN off: an external TURN server (coturn with `use-auth-secret`) sharing the secret, for
    /// which Switchboard only mints credentials.
    pub external_turn: Option<ExternalTurn>,
    /// TLS certificate chain and private key (PEM), for HTTPS/WSS on `http` and for `turns:`; reloaded when the
    /// files change.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Without `tls`: serve HTTPS/WSS with a certificate made at start (trials on a LAN).
    pub self_signed: bool,
    /// Names (DNS names or IP addresses) of the self-signed certificate. Empty: localhost, the loopback addresses and
    /// the `http` address.
    pub tls_names: Vec<String>,
    /// How often the certificate files are checked for changes.
    pub tls_reload_interval: Duration,
    /// A plain HTTP listener that redirects everything to the HTTPS listener (308).
    pub redirect_http: Option<SocketAddr>,
    /// Accept-time limits per client address, and the handshake timeout.
    pub limits: crate::limits::ConnectionLimits,
    /// Log format.
    pub log_format: LogFormat,
    /// `Origin`s allowed to open WebSockets, canonical (`scheme://host[:port]`); empty allows any.
    pub allowed_origins: Vec<String>,
    /// Where `/metrics` (and the admin API) are served.
    pub metrics: MetricsListen,
    /// Bearer token of the admin API; None turns the API off.
    pub admin_token: Option<Secret>,
    /// How long a shutdown waits, after `goaway`, for clients to leave before closing the rest with 1001.
    pub shutdown_timeout: Duration,
    /// Cluster mode (several nodes sharing state through Redis); None: a single node.
    pub cluster: Option<ClusterSettings>,
}

/// Cluster mode settings (see `docs/cluster.md`).
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// The Redis every node shares.
    pub url: String,
    /// Bound on how long a dead node's users stay visible on the others.
    pub node_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            http: SocketAddr::from(([127, 0, 0, 1], 8080)),
            core: switchboard_core::Config::default(),
            outbound_queue_frames: 1024,
            outbound_queue_bytes: 4 * 1024 * 1024,
            max_frame_bytes: 1024 * 1024,
            max_connections: 10_000,
            workers: None,
            turn: Some(TurnSettings::default()),
            external_turn: None,
            tls: None,
            self_signed: false,
            ws_compression: true,
            tls_names: Vec::new(),
            tls_reload_interval: Duration::from_secs(5),
            redirect_http: None,
            limits: crate::limits::ConnectionLimits::default(),
            log_format: LogFormat::Text,
            allowed_origins: Vec::new(),
            cluster: None,
            metrics: MetricsListen::Http,
            admin_token: None,
            shutdown_timeout: Duration::from_secs(10),
        }
    }
}

/// The cores this process may use (affinity and cgroup quotas included), at least one: the base of the default
/// thread counts of the main runtime and of the UDP TURN workers.
pub fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// Threads of the main runtime when `workers` is not set: half the cores, at least one.
///
/// Not one per core, because on the 2-core machine of `docs/benchmarks.md`, with the load generator on the same cores,
/// one worker relays as many signaling messages per second as two, with about 15% less CPU per message, a lower p99,
/// and a login storm at least as fast: a second worker mostly adds cross-thread wake-ups and hands the hub's lock and
/// data from core to core. The other cores are left to the UDP TURN workers (one per core by default) and the
/// kernel's network processing. Hosts whose signaling load is heavy (many TLS handshakes) can raise `workers`.
pub fn default_workers(cores: usize) -> usize {
    cores.div_ceil(2).max(1)
}

impl Config {
    /// Threads of the main runtime, given the cores this process may use.
    pub fn runtime_workers(&self, cores: usize) -> usize {
        self.workers.unwrap_or_else(|| default_workers(cores))
    }
}

/// Where `/metrics` and the admin API are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsListen {
    /// On the main HTTP listener, beside the web page and `/ws`.
    Http,
    /// A separate listener (an internal address) serving `/metrics`, `/healthz`, `/readyz` and the admin API; the
    /// main listener then serves neither `/metrics` nor the admin API.
    Listen(SocketAddr),
    /// No `/metrics`; the admin API, if enabled, stays on the main listener.
    Off,
}

/// A secret from the configuration. Its `Debug` form is redacted, so that printing a [`Config`] never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// An external TURN server that shares Switchboard's REST secret.
#[derive(Debug, Clone)]
pub struct ExternalTurn {
    /// The shared secrets (the first mints).
    pub secrets: Vec<String>,
    /// Its `turn:`/`turns:` URLs.
    pub urls: Vec<String>,
    /// Lifetime of minted credentials.
    pub credential_ttl: Duration,
}

/// Settings of the built-in STUN/TURN server.
#[derive(Debug, Clone)]
pub struct TurnSettings {
    /// UDP listen address; port 0 picks a free one. None: port 3478 on the host that `http` binds.
    pub listen: Option<SocketAddr>,
    /// Shared secrets of the REST credential scheme (the first mints). Empty: a random one per process.
    pub secrets: Vec<String>,
    /// Static users (tools, tests).
    pub users: Vec<(String, String)>,
    /// REALM.
    pub realm: String,
    /// Peer networks allowed despite the default denials.
    pub allow_peers: Vec<ipnet::IpNet>,
    /// Peer networks always denied.
    pub deny_peers: Vec<ipnet::IpNet>,
    /// Address relay sockets bind to. None: the listen address's IP (or 0.0.0.0).
    pub relay_ip: Option<IpAddr>,
    /// Address advertised for relays (a server behind 1:1 NAT).
    pub external_ip: Option<IpAddr>,
    /// Host name or address clients use in the `stun:`/`turn:` URLs. None: the external IP, else the listen IP.
    pub host: Option<String>,
    /// Lifetime of the credentials minted for users.
    pub credential_ttl: Duration,
    /// The `turn:`/`turns:` URLs handed to users instead of the ones derived from `host` and the ports.
    pub urls: Vec<String>,
    /// `turns:` listen address, used when a certificate is configured. None: port 5349 on the TURN listen IP.
    pub tls_listen: Option<SocketAddr>,
    /// Whether `turns:` is served (a certificate is configured and `--turn-tls` is not `off`).
    pub tls_enabled: bool,
    /// Worker threads; 0 means one per core.
    pub workers: usize,
    /// Allocation quotas and lifetimes.
    pub turn: switchboard_turn::server::TurnConfig,
}

impl Default for TurnSettings {
    fn default() -> Self {
        Self {
            listen: None,
            secrets: Vec::new(),
            users: Vec::new(),
            realm: "switchboard".into(),
            allow_peers: Vec::new(),
            deny_peers: Vec::new(),
            relay_ip: None,
            external_ip: None,
            host: None,
            credential_ttl: Duration::from_secs(6 * 3600),
            urls: Vec::new(),
            tls_listen: None,
            tls_enabled: false,
            workers: 0,
            turn: switchboard_turn::server::TurnConfig::default(),
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Name collision policy, as an option value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NamePolicyOption {
    /// Refuse a login with a taken name (`name-taken`).
    Reject,
    /// The new login takes the name; the old session ends.
    Replace,
}

/// A duration written as `30s`, `500ms`, `2m` or `1h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl FromStr for HumanDuration {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let number: u64 = number.parse().map_err(|_| format!("{text:?} is not a duration like 30s or 500ms"))?;
        let duration = match unit.trim() {
            "ms" => Duration::from_millis(number),
            "s" | "" => Duration::from_secs(number),
            "m" | "min" => Duration::from_secs(number.saturating_mul(60)),
            "h" => Duration::from_secs(number.saturating_mul(3600)),
            other => return Err(format!("unknown time unit {other:?} (use ms, s, m or h)")),
        };
        Ok(Self(duration))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The command line. Each field is optional so that unset flags fall back to the environment, the file, then the
/// default.
#[derive(Debug, Default, Parser, Deserialize)]
#[command(name = "switchboard", version, about = "WebRTC signaling server: login by name, presence, calls, rooms")]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Options {
    /// TOML configuration file (keys are the long option names, e.g. `http = "0.0.0.0:8080"`).
    #[arg(long, env = "SWITCHBOARD_CONFIG", value_name = "FILE", global = true)]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// HTTP and WebSocket listen address [default: 127.0.0.1:8080].
    #[arg(long, env = "SWITCHBOARD_HTTP", value_name = "ADDR:PORT")]
    pub http: Option<SocketAddr>,

    /// What a login with a name in use does [default: reject].
    #[arg(long, env = "SWITCHBOARD_NAME_POLICY", value_enum)]
    pub name_policy: Option<NamePolicyOption>,

    /// How long a dropped session waits for its client to resume [default: 30s].
    #[arg(long, env = "SWITCHBOARD_RESUME_GRACE", value_name = "DURATION")]
    pub resume_grace: Option<HumanDuration>,

    /// How long a call rings before it ends with no-answer [default: 30s].
    #[arg(long, env = "SWITCHBOARD_RING_TIMEOUT", value_name = "DURATION")]
    pub ring_timeout: Option<HumanDuration>,

    /// How long a new connection may take to log in [default: 20s].
    #[arg(long, env = "SWITCHBOARD_LOGIN_TIMEOUT", value_name = "DURATION")]
    pub login_timeout: Option<HumanDuration>,

    /// Who may log in: anyone under a free name, or holders of a signed token [default: open].
    #[arg(long, env = "SWITCHBOARD_AUTH", value_enum)]
    pub auth: Option<crate::auth::AuthMode>,

    /// Login token signing secret, at least 32 bytes (repeatable: the first signs, all verify).
    #[arg(long = "auth-secret", env = "SWITCHBOARD_AUTH_SECRET", value_name = "SECRET", hide_env_values = true)]
    #[serde(default, rename = "auth-secrets", alias = "auth-secret")]
    pub auth_secrets: Vec<String>,

    /// Origin allowed to open WebSockets, e.g. https://example.org (repeatable) [default: any origin].
    #[arg(long = "allowed-origin", env = "SWITCHBOARD_ALLOWED_ORIGINS", value_delimiter = ',', value_name = "URL")]
    #[serde(default, rename = "allowed-origins")]
    pub allowed_origins: Vec<String>,

    /// A room that needs a password, NAME=PASSWORD (repeatable; in the file also `[rooms.NAME] password = "..."`).
    #[arg(
        long = "room-password",
        env = "SWITCHBOARD_ROOM_PASSWORD",
        value_name = "NAME=PASSWORD",
        hide_env_values = true
    )]
    #[serde(default, rename = "room-passwords")]
    pub room_passwords: Vec<String>,

    /// The `[rooms.NAME]` tables of the configuration file.
    #[arg(skip)]
    #[serde(default)]
    pub rooms: BTreeMap<String, crate::auth::RoomOptions>,

    /// A subcommand instead of the server (`switchboard token ...`).
    #[command(subcommand)]
    #[serde(skip)]
    pub command: Option<crate::cli::Command>,

    /// Most simultaneous connections; more are refused [default: 10000].
    #[arg(long, env = "SWITCHBOARD_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,

    /// Threads of the main runtime: HTTP, WebSocket signaling, TURN over TCP/TLS (UDP TURN has its own
    /// `turn-workers`) [default: half the cores, at least one; or Tokio's TOKIO_WORKER_THREADS].
    #[arg(long, env = "SWITCHBOARD_WORKERS", value_name = "N")]
    pub workers: Option<usize>,

    /// Presence changes are coalesced over this tick [default: 50ms].
    #[arg(long, env = "SWITCHBOARD_PRESENCE_INTERVAL", value_name = "DURATION")]
    pub presence_interval: Option<HumanDuration>,

    /// Presence frames per second in total, over time; ticks are spaced by the number of users online while changes
    /// keep coming [default: 10000].
    #[arg(long, env = "SWITCHBOARD_PRESENCE_FRAMES_PER_SECOND", value_name = "N")]
    pub presence_frames_per_second: Option<u32>,

    /// WebSocket ping interval; silent clients are dropped after two [default: 20s].
    #[arg(long, env = "SWITCHBOARD_HEARTBEAT", value_name = "DURATION")]
    pub heartbeat: Option<HumanDuration>,

    /// Largest message accepted; larger ones get too-large [default: 65536].
    #[arg(long, env = "SWITCHBOARD_MAX_MESSAGE_BYTES", value_name = "BYTES")]
    pub max_message_bytes: Option<usize>,

    /// Frames above this close the connection with 1009 [default: 1048576].
    #[arg(long, env = "SWITCHBOARD_MAX_FRAME_BYTES", value_name = "BYTES")]
    pub max_frame_bytes: Option<usize>,

    /// Accept WebSocket compression (permessage-deflate) from clients that offer it: presence lists are compressed
    /// once per tick for all such clients [default: true].
    #[arg(long, env = "SWITCHBOARD_WS_COMPRESSION", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub ws_compression: Option<bool>,

    /// Most users presence lists to a client; later ones are listed as earlier ones leave [default: 10000].
    #[arg(long, env = "SWITCHBOARD_MAX_PRESENCE_USERS", value_name = "N")]
    pub max_presence_users: Option<usize>,

    /// Most members per room [default: 16].
    #[arg(long, env = "SWITCHBOARD_MAX_ROOM_SIZE", value_name = "N")]
    pub max_room_size: Option<usize>,

    /// Most rooms per user [default: 8].
    #[arg(long, env = "SWITCHBOARD_MAX_ROOMS_PER_USER", value_name = "N")]
    pub max_rooms_per_user: Option<usize>,

    /// Sustained messages per second per connection, 0 for no limit [default: 100].
    #[arg(long, env = "SWITCHBOARD_RATE_PER_SECOND", value_name = "N")]
    pub rate_per_second: Option<u32>,

    /// Burst size of the message rate limit [default: 200].
    #[arg(long, env = "SWITCHBOARD_RATE_BURST", value_name = "N")]
    pub rate_burst: Option<u32>,

    /// Frames queued for one connection before it is dropped as a slow consumer [default: 1024].
    #[arg(long, env = "SWITCHBOARD_OUTBOUND_QUEUE_FRAMES", value_name = "N")]
    pub outbound_queue_frames: Option<usize>,

    /// Bytes queued for one connection before it is dropped as a slow consumer [default: 4194304].
    #[arg(long, env = "SWITCHBOARD_OUTBOUND_QUEUE_BYTES", value_name = "BYTES")]
    pub outbound_queue_bytes: Option<usize>,

    /// ICE server URL handed to clients (stun:, turn:, turns:); repeatable.
    #[arg(long = "ice-server", env = "SWITCHBOARD_ICE_SERVERS", value_delimiter = ',', value_name = "URL")]
    #[serde(default, rename = "ice-servers")]
    pub ice_servers: Vec<String>,

    /// STUN/TURN UDP listen address, or `off` [default: port 3478 on the --http host].
    #[arg(long, env = "SWITCHBOARD_TURN", value_name = "ADDR:PORT|off")]
    pub turn: Option<String>,

    /// TURN REST shared secret (repeatable; the first mints, all verify) [default: random per process].
    #[arg(long = "turn-secret", env = "SWITCHBOARD_TURN_SECRET", value_name = "SECRET", hide_env_values = true)]
    #[serde(default, rename = "turn-secrets")]
    pub turn_secrets: Vec<String>,

    /// Static TURN user, NAME:PASSWORD (repeatable).
    #[arg(long = "turn-user", env = "SWITCHBOARD_TURN_USER", value_name = "NAME:PASSWORD", hide_env_values = true)]
    #[serde(default, rename = "turn-users")]
    pub turn_users: Vec<String>,

    /// TURN realm [default: switchboard].
    #[arg(long, env = "SWITCHBOARD_TURN_REALM", value_name = "REALM")]
    pub turn_realm: Option<String>,

    /// Peer network TURN may relay to despite the default denials (repeatable).
    #[arg(long = "turn-allow-peer", env = "SWITCHBOARD_TURN_ALLOW_PEERS", value_delimiter = ',', value_name = "CIDR")]
    #[serde(default, rename = "turn-allow-peers")]
    pub turn_allow_peers: Vec<String>,

    /// Peer network TURN never relays to (repeatable).
    #[arg(long = "turn-deny-peer", env = "SWITCHBOARD_TURN_DENY_PEERS", value_delimiter = ',', value_name = "CIDR")]
    #[serde(default, rename = "turn-deny-peers")]
    pub turn_deny_peers: Vec<String>,

    /// Address TURN relay sockets bind to [default: the TURN listen IP].
    #[arg(long, env = "SWITCHBOARD_TURN_RELAY_IP", value_name = "IP")]
    pub turn_relay_ip: Option<IpAddr>,

    /// Public address advertised for relays when the server is behind 1:1 NAT.
    #[arg(long, env = "SWITCHBOARD_TURN_EXTERNAL_IP", value_name = "IP")]
    pub turn_external_ip: Option<IpAddr>,

    /// Host name clients use in stun:/turn: URLs [default: the external IP, else the listen IP].
    #[arg(long, env = "SWITCHBOARD_TURN_HOST", value_name = "HOST")]
    pub turn_host: Option<String>,

    /// TLS certificate chain (PEM); with --tls-key, --http serves HTTPS/WSS and TURN serves `turns:`. Reloaded when
    /// the files change and on SIGHUP.
    #[arg(long, env = "SWITCHBOARD_TLS_CERT", value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// TLS private key (PEM).
    #[arg(long, env = "SWITCHBOARD_TLS_KEY", value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Serve HTTPS/WSS with a self-signed certificate made at start, for trials (browsers warn) [default: false].
    #[arg(long, env = "SWITCHBOARD_SELF_SIGNED", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub self_signed: Option<bool>,

    /// Name (DNS name or IP address) the self-signed certificate is for (repeatable) [default: localhost, 127.0.0.1,
    /// ::1 and the --http address].
    #[arg(long = "tls-name", env = "SWITCHBOARD_TLS_NAMES", value_delimiter = ',', value_name = "NAME")]
    #[serde(default, rename = "tls-names")]
    pub tls_names: Vec<String>,

    /// How often the certificate files are checked for changes [default: 5s].
    #[arg(long, env = "SWITCHBOARD_TLS_RELOAD_INTERVAL", value_name = "DURATION")]
    pub tls_reload_interval: Option<HumanDuration>,

    /// Plain HTTP listen address that redirects every request to the HTTPS listener (308).
    #[arg(long, env = "SWITCHBOARD_REDIRECT_HTTP", value_name = "ADDR:PORT")]
    pub redirect_http: Option<SocketAddr>,

    /// Most connections open at once from one client address (IPv4 address or IPv6 /64), 0 for no limit
    /// [default: 256].
    #[arg(long, env = "SWITCHBOARD_MAX_CONNECTIONS_PER_IP", value_name = "N")]
    pub max_connections_per_ip: Option<usize>,

    /// Sustained connection attempts per second from one client address, 0 for no limit [default: 10].
    #[arg(long, env = "SWITCHBOARD_CONNECT_RATE_PER_IP", value_name = "N")]
    pub connect_rate_per_ip: Option<u32>,

    /// Burst of connection attempts from one client address [default: 50].
    #[arg(long, env = "SWITCHBOARD_CONNECT_BURST_PER_IP", value_name = "N")]
    pub connect_burst_per_ip: Option<u32>,

    /// Time a client has for the TLS handshake and for each HTTP request head (the WebSocket upgrade) [default: 10s].
    #[arg(long, env = "SWITCHBOARD_HANDSHAKE_TIMEOUT", value_name = "DURATION")]
    pub handshake_timeout: Option<HumanDuration>,

    /// `turns:` (TURN over TLS) listen address, or `off` [default: port 5349 on the TURN host when TLS is on].
    #[arg(long, env = "SWITCHBOARD_TURN_TLS", value_name = "ADDR:PORT|off")]
    pub turn_tls: Option<String>,

    /// TURN URL handed to users instead of the derived ones (repeatable); with --turn off and --turn-secret, the URLs
    /// of an external TURN server sharing the secret.
    #[arg(long = "turn-url", env = "SWITCHBOARD_TURN_URLS", value_delimiter = ',', value_name = "URL")]
    #[serde(default, rename = "turn-urls")]
    pub turn_urls: Vec<String>,

    /// Most TURN allocations one user may hold [default: 10].
    #[arg(long, env = "SWITCHBOARD_TURN_MAX_ALLOCATIONS_PER_USER", value_name = "N")]
    pub turn_max_allocations_per_user: Option<usize>,

    /// Most TURN allocations from one client IP address [default: 32].
    #[arg(long, env = "SWITCHBOARD_TURN_MAX_ALLOCATIONS_PER_IP", value_name = "N")]
    pub turn_max_allocations_per_ip: Option<usize>,

    /// Most TURN allocations in total [default: 10000].
    #[arg(long, env = "SWITCHBOARD_TURN_MAX_ALLOCATIONS", value_name = "N")]
    pub turn_max_allocations: Option<usize>,

    /// UDP relay worker threads, each with its own socket on the TURN port [default: one per core].
    #[arg(long, env = "SWITCHBOARD_TURN_WORKERS", value_name = "N")]
    pub turn_workers: Option<usize>,

    /// Relayed bytes per second per allocation; excess is dropped [default: no cap].
    #[arg(long, env = "SWITCHBOARD_TURN_BANDWIDTH", value_name = "BYTES_PER_SECOND")]
    pub turn_bandwidth: Option<u64>,

    /// Lifetime of the TURN credentials minted for each user [default: 6h].
    #[arg(long, env = "SWITCHBOARD_TURN_TTL", value_name = "DURATION")]
    pub turn_ttl: Option<HumanDuration>,

    /// Cluster mode: the Redis all nodes share, redis://[user:password@]host:port[/db] [default: none, a single node].
    #[arg(long, env = "SWITCHBOARD_CLUSTER", value_name = "URL")]
    pub cluster: Option<String>,

    /// Cluster mode: how soon the users of a node that died disappear from the others [default: 10s].
    #[arg(long, env = "SWITCHBOARD_CLUSTER_NODE_TIMEOUT", value_name = "DURATION")]
    pub cluster_node_timeout: Option<HumanDuration>,

    /// Log format [default: text]; the level comes from RUST_LOG (default info).
    #[arg(long, env = "SWITCHBOARD_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,

    /// Where /metrics is served: `http` (the main listener), `off`, or ADDR:PORT, a separate listener for /metrics
    /// and the admin API (it answers /healthz and /readyz too) [default: http].
    #[arg(long, env = "SWITCHBOARD_METRICS", value_name = "http|off|ADDR:PORT")]
    pub metrics: Option<String>,

    /// Turns the admin API on, for requests with `Authorization: Bearer TOKEN` (16 to 256 visible ASCII
    /// characters) [default: off].
    #[arg(long, env = "SWITCHBOARD_ADMIN_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// On SIGTERM/SIGINT: how long clients get, after `goaway`, to leave before the rest are closed with 1001
    /// [default: 10s].
    #[arg(long, env = "SWITCHBOARD_SHUTDOWN_TIMEOUT", value_name = "DURATION")]
    pub shutdown_timeout: Option<HumanDuration>,
}

impl Options {
    /// Fills what the command line and environment left unset from `file`.
    pub(crate) fn or(self, file: Options) -> Options {
        Options {
            config: self.config,
            http: self.http.or(file.http),
            name_policy: self.name_policy.or(file.name_policy),
            resume_grace: self.resume_grace.or(file.resume_grace),
            ring_timeout: self.ring_timeout.or(file.ring_timeout),
            login_timeout: self.login_timeout.or(file.login_timeout),
            auth: self.auth.or(file.auth),
            auth_secrets: if self.auth_secrets.is_empty() { file.auth_secrets } else { self.auth_secrets },
            allowed_origins: if self.allowed_origins.is_empty() { file.allowed_origins } else { self.allowed_origins },
            room_passwords: if self.room_passwords.is_empty() { file.room_passwords } else { self.room_passwords },
            rooms: file.rooms,
            command: self.command,
            max_connections: self.max_connections.or(file.max_connections),
            workers: self.workers.or(file.workers),
            presence_interval: self.presence_interval.or(file.presence_interval),
            presence_frames_per_second: self.presence_frames_per_second.or(file.presence_frames_per_second),
            heartbeat: self.heartbeat.or(file.heartbeat),
            max_message_bytes: self.max_message_bytes.or(file.max_message_bytes),
            max_frame_bytes: self.max_frame_bytes.or(file.max_frame_bytes),
            ws_compression: self.ws_compression.or(file.ws_compression),
            max_room_size: self.max_room_size.or(file.max_room_size),
            max_presence_users: self.max_presence_users.or(file.max_presence_users),
            max_rooms_per_user: self.max_rooms_per_user.or(file.max_rooms_per_user),
            rate_per_second: self.rate_per_second.or(file.rate_per_second),
            rate_burst: self.rate_burst.or(file.rate_burst),
            outbound_queue_frames: self.outbound_queue_frames.or(file.outbound_queue_frames),
            outbound_queue_bytes: self.outbound_queue_bytes.or(file.outbound_queue_bytes),
            ice_servers: if self.ice_servers.is_empty() { file.ice_servers } else { self.ice_servers },
            turn: self.turn.or(file.turn),
            turn_secrets: if self.turn_secrets.is_empty() { file.turn_secrets } else { self.turn_secrets },
            turn_users: if self.turn_users.is_empty() { file.turn_users } else { self.turn_users },
            turn_realm: self.turn_realm.or(file.turn_realm),
            turn_allow_peers: if self.turn_allow_peers.is_empty() {
                file.turn_allow_peers
            } else {
                self.turn_allow_peers
            },
            turn_deny_peers: if self.turn_deny_peers.is_empty() { file.turn_deny_peers } else { self.turn_deny_peers },
            turn_relay_ip: self.turn_relay_ip.or(file.turn_relay_ip),
            turn_external_ip: self.turn_external_ip.or(file.turn_external_ip),
            turn_host: self.turn_host.or(file.turn_host),
            turn_ttl: self.turn_ttl.or(file.turn_ttl),
            turn_urls: if self.turn_urls.is_empty() { file.turn_urls } else { self.turn_urls },
            tls_cert: self.tls_cert.or(file.tls_cert),
            tls_key: self.tls_key.or(file.tls_key),
            turn_tls: self.turn_tls.or(file.turn_tls),
            self_signed: self.self_signed.or(file.self_signed),
            tls_names: if self.tls_names.is_empty() { file.tls_names } else { self.tls_names },
            tls_reload_interval: self.tls_reload_interval.or(file.tls_reload_interval),
            redirect_http: self.redirect_http.or(file.redirect_http),
            max_connections_per_ip: self.max_connections_per_ip.or(file.max_connections_per_ip),
            connect_rate_per_ip: self.connect_rate_per_ip.or(file.connect_rate_per_ip),
            connect_burst_per_ip: self.connect_burst_per_ip.or(file.connect_burst_per_ip),
            handshake_timeout: self.handshake_timeout.or(file.handshake_timeout),
            turn_max_allocations_per_user: self.turn_max_allocations_per_user.or(file.turn_max_allocations_per_user),
            turn_max_allocations: self.turn_max_allocations.or(file.turn_max_allocations),
            turn_workers: self.turn_workers.or(file.turn_workers),
            turn_max_allocations_per_ip: self.turn_max_allocations_per_ip.or(file.turn_max_allocations_per_ip),
            turn_bandwidth: self.turn_bandwidth.or(file.turn_bandwidth),
            log_format: self.log_format.or(file.log_format),
            cluster: self.cluster.or(file.cluster),
            cluster_node_timeout: self.cluster_node_timeout.or(file.cluster_node_timeout),
            metrics: self.metrics.or(file.metrics),
            admin_token: self.admin_token.or(file.admin_token),
            shutdown_timeout: self.shutdown_timeout.or(file.shutdown_timeout),
        }
    }

    /// Reads the TOML file named by `--config`, if any, and resolves everything into a [`Config`].
    pub fn resolve(self) -> anyhow::Result<Config> {
        self.merged()?.into_config()
    }

    /// These options over those of the TOML file named by `--config`, if any.
    pub fn merged(self) -> anyhow::Result<Options> {
        Ok(match &self.config {
            Some(path) => {
                let file = read_file(path)?;
                self.or(file)
            }
            None => self,
        })
    }

    pub(crate) fn into_config(self) -> anyhow::Result<Config> {
        let mut config = Config::default();
        let core = &mut config.core;
        if let Some(http) = self.http {
            config.http = http;
        }
        if let Some(policy) = self.name_policy {
            core.name_policy = match policy {
                NamePolicyOption::Reject => NamePolicy::Reject,
                NamePolicyOption::Replace => NamePolicy::Replace,
            };
        }
        core.auth = crate::auth::auth_mode(self.auth, &self.auth_secrets)?;
        core.room_passwords = crate::auth::room_passwords(&self.room_passwords, self.rooms)?;
        config.allowed_origins = crate::auth::allowed_origins(&self.allowed_origins)?;
        // Bounded so that deadline arithmetic can never overflow, and so that a typo fails loudly.
        let within = |key: &str, value: Duration, min: Duration, max: Duration| {
            anyhow::ensure!(value >= min && value <= max, "{key} must be between {min:?} and {max:?}, not {value:?}");
            Ok(value)
        };
        let (ms, hour) = (Duration::from_millis(1), Duration::from_secs(3600));
        if let Some(HumanDuration(d)) = self.resume_grace {
            core.resume_grace = within("resume-grace", d, Duration::ZERO, hour)?;
        }
        if let Some(HumanDuration(d)) = self.ring_timeout {
            core.ring_timeout = within("ring-timeout", d, ms, hour)?;
        }
        if let Some(HumanDuration(d)) = self.login_timeout {
            core.login_timeout = within("login-timeout", d, ms, hour)?;
        }
        if let Some(HumanDuration(d)) = self.presence_interval {
            core.presence_interval = within("presence-interval", d, Duration::ZERO, Duration::from_secs(60))?;
        }
        if let Some(n) = self.presence_frames_per_second {
            core.presence_frames_per_second = n;
        }
        if let Some(HumanDuration(d)) = self.heartbeat {
            core.heartbeat = within("heartbeat", d, ms, hour)?;
        }
        let at_least = |key: &str, value: usize, min: usize| {
            anyhow::ensure!(value >= min, "{key} must be at least {min}, not {value}");
            Ok(value)
        };
        if let Some(n) = self.max_message_bytes {
            core.max_message_bytes = at_least("max-message-bytes", n, 1024)?;
        }
        if let Some(n) = self.max_frame_bytes {
            config.max_frame_bytes = at_least("max-frame-bytes", n, 1024)?;
        }
        anyhow::ensure!(
            config.max_frame_bytes >= core.max_message_bytes,
            "max-frame-bytes ({}) must be at least max-message-bytes ({})",
            config.max_frame_bytes,
            core.max_message_bytes
        );
        if let Some(n) = self.max_presence_users {
            core.max_presence_users = at_least("max-presence-users", n, 1)?;
        }
        if let Some(n) = self.max_room_size {
            core.max_room_size = at_least("max-room-size", n, 2)?;
        }
        if let Some(n) = self.max_rooms_per_user {
            core.max_rooms_per_user = at_least("max-rooms-per-user", n, 1)?;
        }
        if let Some(n) = self.rate_per_second {
            core.rate_per_second = n;
        }
        if let Some(n) = self.rate_burst {
            anyhow::ensure!(n >= 1, "rate-burst must be at least 1, not {n}");
            core.rate_burst = n;
        }
        if let Some(n) = self.workers {
            anyhow::ensure!((1..=1024).contains(&n), "workers must be 1 to 1024, not {n}");
            config.workers = Some(n);
        }
        if let Some(n) = self.max_connections {
            config.max_connections = at_least("max-connections", n, 1)?;
            // Far above what one process can hold, and below the limit of the semaphore that counts them.
            anyhow::ensure!(n <= 10_000_000, "max-connections must be at most 10000000, not {n}");
        }
        if let Some(n) = self.outbound_queue_frames {
            config.outbound_queue_frames = at_least("outbound-queue-frames", n, 16)?;
        }
        if let Some(n) = self.outbound_queue_bytes {
            config.outbound_queue_bytes = at_least("outbound-queue-bytes", n, 64 * 1024)?;
        }
        for url in &self.ice_servers {
            let scheme_ok = ["stun:", "stuns:", "turn:", "turns:"].iter().any(|s| url.starts_with(s));
            anyhow::ensure!(scheme_ok, "ice-servers: {url:?} is not a stun:, stuns:, turn: or turns: URL");
        }
        if !self.ice_servers.is_empty() {
            core.ice_servers = vec![IceServer { urls: self.ice_servers, username: None, credential: None }];
        }
        if let Some(format) = self.log_format {
            config.log_format = format;
        }
        config.metrics = match self.metrics.as_deref() {
            None | Some("http") => MetricsListen::Http,
            Some("off") => MetricsListen::Off,
            Some(text) => MetricsListen::Listen(
                text.parse().map_err(|_| anyhow::anyhow!("metrics: {text:?} is not http, off or ADDR:PORT"))?,
            ),
        };
        if let Some(token) = self.admin_token {
            anyhow::ensure!(
                (16..=256).contains(&token.len()) && token.bytes().all(|b| b.is_ascii_graphic()),
                "admin-token must be 16 to 256 visible ASCII characters (no spaces), got {} bytes",
                token.len()
            );
            config.admin_token = Some(Secret(token));
        }
        if let Some(HumanDuration(d)) = self.shutdown_timeout {
            config.shutdown_timeout = within("shutdown-timeout", d, Duration::ZERO, hour)?;
        }
        config.tls = match (self.tls_cert, self.tls_key) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => anyhow::bail!("tls-cert and tls-key go together"),
        };
        config.self_signed = self.self_signed.unwrap_or(false);
        config.ws_compression = self.ws_compression.unwrap_or(true);
        anyhow::ensure!(!(config.self_signed && config.tls.is_some()), "self-signed and tls-cert exclude each other");
        anyhow::ensure!(
            self.tls_names.is_empty() || config.self_signed,
            "tls-names are the names of a self-signed certificate: they need self-signed"
        );
        for name in &self.tls_names {
            let plausible = !name.is_empty()
                && name.len() <= 253
                && name.chars().all(|c| c.is_ascii_alphanumeric() || ".-:*".contains(c));
            anyhow::ensure!(plausible, "tls-names: {name:?} is not a DNS name or IP address");
        }
        config.tls_names = self.tls_names;
        if let Some(HumanDuration(d)) = self.tls_reload_interval {
            config.tls_reload_interval = within("tls-reload-interval", d, Duration::from_millis(100), hour)?;
        }
        if let Some(addr) = self.redirect_http {
            anyhow::ensure!(
                config.tls.is_some() || config.self_signed,
                "redirect-http redirects to HTTPS: it needs tls-cert and tls-key, or self-signed"
            );
            anyhow::ensure!(addr != config.http, "redirect-http must differ from http ({addr})");
            config.redirect_http = Some(addr);
        }
        if let Some(n) = self.max_connections_per_ip {
            config.limits.max_per_ip = n;
        }
        if let Some(n) = self.connect_rate_per_ip {
            config.limits.rate_per_ip = n;
        }
        if let Some(n) = self.connect_burst_per_ip {
            anyhow::ensure!(n >= 1, "connect-burst-per-ip must be at least 1, not {n}");
            config.limits.burst_per_ip = n;
        }
        if let Some(HumanDuration(d)) = self.handshake_timeout {
            config.limits.handshake_timeout = within("handshake-timeout", d, Duration::from_millis(100), hour)?;
        }
        let turn_tls = match self.turn_tls.as_deref() {
            Some("off") => Some(None),
            Some(text) => Some(Some(
                text.parse::<SocketAddr>()
                    .map_err(|_| anyhow::anyhow!("turn-tls: {text:?} is not ADDR:PORT or off"))?,
            )),
            None => None,
        };
        for url in &self.turn_urls {
            let scheme_ok = ["turn:", "turns:"].iter().any(|s| url.starts_with(s));
            anyhow::ensure!(scheme_ok, "turn-urls: {url:?} is not a turn: or turns: URL");
        }
        let ttl = match self.turn_ttl {
            Some(HumanDuration(ttl)) => {
                within("turn-ttl", ttl, Duration::from_secs(60), Duration::from_secs(7 * 86_400))?
            }
            None => TurnSettings::default().credential_ttl,
        };
        anyhow::ensure!(self.turn_secrets.iter().all(|s| !s.is_empty()), "turn-secrets: a secret is empty");
        config.turn = match self.turn.as_deref() {
            Some("off") => {
                if !self.turn_urls.is_empty() {
                    anyhow::ensure!(
                        !self.turn_secrets.is_empty(),
                        "turn-urls of an external TURN server need turn-secrets"
                    );
                    config.external_turn =
                        Some(ExternalTurn { secrets: self.turn_secrets, urls: self.turn_urls, credential_ttl: ttl });
                }
                None
            }
            listen => {
                let listen = match listen {
                    None => None,
                    Some(text) => Some(
                        text.parse::<SocketAddr>()
                            .map_err(|_| anyhow::anyhow!("turn: {text:?} is not ADDR:PORT or off"))?,
                    ),
                };
                let mut turn = TurnSettings { listen, ..TurnSettings::default() };
                turn.secrets = self.turn_secrets;
                for user in &self.turn_users {
                    // The name only: the rest may be a password, and this message ends up in logs.
                    let name = user.split(':').next().unwrap_or_default();
                    let parsed = switchboard_turn::Credentials::parse_static_user(user)
                        .map_err(|error| anyhow::anyhow!("turn-users: the entry for {name:?}: {error}"))?;
                    turn.users.push(parsed);
                }
                if let Some(realm) = self.turn_realm {
                    anyhow::ensure!(!realm.is_empty() && realm.len() < 128, "turn-realm must be 1 to 127 bytes");
                    turn.realm = realm;
                }
                let nets = |key: &str, list: &[String]| -> anyhow::Result<Vec<ipnet::IpNet>> {
                    list.iter()
                        .map(|text| {
                            text.parse::<ipnet::IpNet>()
                                .or_else(|_| text.parse::<IpAddr>().map(ipnet::IpNet::from))
                                .map_err(|_| anyhow::anyhow!("{key}: {text:?} is not a CIDR network or address"))
                        })
                        .collect()
                };
                turn.allow_peers = nets("turn-allow-peers", &self.turn_allow_peers)?;
                turn.deny_peers = nets("turn-deny-peers", &self.turn_deny_peers)?;
                turn.relay_ip = self.turn_relay_ip;
                turn.external_ip = self.turn_external_ip;
                turn.turn.external_ip = self.turn_external_ip;
                if let Some(host) = &self.turn_host {
                    let bad = |c: char| c.is_whitespace() || c.is_control() || "/?#@".contains(c);
                    anyhow::ensure!(
                        !host.is_empty() && !host.contains(bad),
                        "turn-host: {host:?} is not a host name or address"
                    );
                }
                turn.host = self.turn_host;
                turn.credential_ttl = ttl;
                turn.urls = self.turn_urls;
                turn.tls_listen = turn_tls.flatten();
                // A self-signed certificate serves turns: only when asked for explicitly: TURN clients that check
                // certificates would fail on it.
                turn.tls_enabled = (config.tls.is_some() && turn_tls != Some(None))
                    || (config.self_signed && matches!(turn_tls, Some(Some(_))));
                if let Some(n) = self.turn_max_allocations_per_user {
                    turn.turn.max_allocations_per_user = at_least("turn-max-allocations-per-user", n, 1)?;
                }
                if let Some(n) = self.turn_max_allocations_per_ip {
                    turn.turn.max_allocations_per_ip = at_least("turn-max-allocations-per-ip", n, 1)?;
                }
                if let Some(n) = self.turn_max_allocations {
                    turn.turn.max_allocations = at_least("turn-max-allocations", n, 1)?;
                }
                if let Some(n) = self.turn_workers {
                    anyhow::ensure!((1..=256).contains(&n), "turn-workers must be 1 to 256, not {n}");
                    turn.workers = n;
                }
                if let Some(n) = self.turn_bandwidth {
                    anyhow::ensure!(n >= 1024, "turn-bandwidth must be at least 1024 bytes per second, not {n}");
                    turn.turn.bandwidth_bytes_per_second = Some(n);
                }
                Some(turn)
            }
        };
        if let Some(url) = self.cluster {
            anyhow::ensure!(
                url.starts_with("redis://"),
                "cluster: {:?} is not a redis:// URL (TLS to Redis, rediss://, is not supported)",
                url.split('@').next_back().unwrap_or_default()
            );
            let node_timeout = match self.cluster_node_timeout {
                Some(HumanDuration(d)) => {
                    within("cluster-node-timeout", d, Duration::from_millis(500), Duration::from_secs(600))?
                }
                None => Duration::from_secs(10),
            };
            // Credentials minted by one node must pass the TURN server of any node the client ends up on: with a
            // random per-process secret they would not.
            let minting = config.turn.is_some() || config.external_turn.is_some();
            let secrets = config.turn.as_ref().map(|t| !t.secrets.is_empty()).unwrap_or(config.external_turn.is_some());
            anyhow::ensure!(
                !minting || secrets,
                "cluster: set turn-secrets (the same on every node), or turn = \"off\": TURN credentials minted by one \
                 node must be valid on all of them"
            );
            config.cluster = Some(ClusterSettings { url, node_timeout });
        } else if self.cluster_node_timeout.is_some() {
            anyhow::bail!("cluster-node-timeout needs cluster");
        }
        Ok(config)
    }
}

fn read_file(path: &Path) -> anyhow::Result<Options> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!("500ms".parse(), Ok(HumanDuration(Duration::from_millis(500))));
        assert_eq!("30s".parse(), Ok(HumanDuration(Duration::from_secs(30))));
        assert_eq!("2m".parse(), Ok(HumanDuration(Duration::from_secs(120))));
        assert!("soon".parse::<HumanDuration>().is_err());
        assert!("5d".parse::<HumanDuration>().is_err());
    }

    #[test]
    fn command_line_beats_file_beats_default() {
        let file: Options =
            toml::from_str("http = \"127.0.0.1:9000\"\nring-timeout = \"5s\"\nmax-room-size = 4").unwrap();
        let cli = Options::try_parse_from(["switchboard", "--ring-timeout", "7s"]).unwrap();
        let config = cli.or(file).into_config().unwrap();
        assert_eq!(config.http, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(config.core.ring_timeout, Duration::from_secs(7));
        assert_eq!(config.core.max_room_size, 4);
        assert_eq!(config.core.resume_grace, Duration::from_secs(30));
    }

    #[test]
    fn turn_flags_and_an_external_turn_server() {
        let on = Options::try_parse_from([
            "switchboard",
            "--turn",
            "127.0.0.1:0",
            "--turn-user",
            "tool:pass",
            "--turn-allow-peer",
            "127.0.0.1",
            "--turn-max-allocations-per-user",
            "3",
            "--turn-url",
            "turns:turn.example.org:443",
        ])
        .unwrap()
        .into_config()
        .unwrap();
        let turn = on.turn.unwrap();
        assert_eq!(turn.users, vec![("tool".to_owned(), "pass".to_owned())]);
        assert_eq!(turn.allow_peers, vec!["127.0.0.1/32".parse::<ipnet::IpNet>().unwrap()]);
        assert_eq!(turn.turn.max_allocations_per_user, 3);
        assert_eq!(turn.urls, vec!["turns:turn.example.org:443".to_owned()]);
        assert!(on.external_turn.is_none());

        let external = Options::try_parse_from([
            "switchboard",
            "--turn",
            "off",
            "--turn-secret",
            "shared",
            "--turn-url",
            "turn:coturn.example.org:3478",
        ])
        .unwrap()
        .into_config()
        .unwrap();
        assert!(external.turn.is_none());
        let external = external.external_turn.unwrap();
        assert_eq!((external.secrets, external.urls.len()), (vec!["shared".to_owned()], 1));

        let error = Options::try_parse_from(["switchboard", "--turn", "off", "--turn-url", "turn:x:1"])
            .unwrap()
            .into_config()
            .unwrap_err();
        assert!(error.to_string().contains("turn-secrets"), "{error}");
        let error = Options::try_parse_from(["switchboard", "--turn", "nowhere"]).unwrap().into_config().unwrap_err();
        assert!(error.to_string().contains("turn"), "{error}");
        let error = Options::try_parse_from(["switchboard", "--turn-allow-peer", "10.0.0.0/33"]).unwrap().into_config();
        assert!(error.unwrap_err().to_string().contains("turn-allow-peers"));
    }

    #[test]
    fn workers_default_to_half_the_cores_and_are_bounded() {
        let parse = |args: &[&str]| Options::try_parse_from([&["switchboard"], args].concat()).unwrap().into_config();
        let default = parse(&[]).unwrap();
        assert_eq!(default.workers, None);
        let defaults: Vec<usize> = [1, 2, 3, 4, 16].into_iter().map(|cores| default.runtime_workers(cores)).collect();
        assert_eq!(defaults, [1, 1, 2, 2, 8]);
        let one = parse(&["--workers", "1"]).unwrap();
        assert_eq!(one.workers, Some(1));
        assert_eq!(one.runtime_workers(16), 1, "an explicit count wins");
        let error = parse(&["--workers", "0"]).unwrap_err().to_string();
        assert!(error.contains("workers"), "{error}");
        assert!(parse(&["--workers", "5000"]).is_err());
    }

    #[test]
    fn cluster_mode_needs_shared_turn_secrets() {
        let parse = |args: &[&str]| {
            let mut all = vec!["switchboard", "--cluster", "redis://127.0.0.1:6379"];
            all.extend_from_slice(args);
            Options::try_parse_from(all).unwrap().into_config()
        };
        let error = parse(&[]).unwrap_err().to_string();
        assert!(error.contains("turn-secrets"), "{error}");
        let config = parse(&["--turn-secret", "shared", "--cluster-node-timeout", "4s"]).unwrap();
        let cluster = config.cluster.unwrap();
        assert_eq!((cluster.url.as_str(), cluster.node_timeout), ("redis://127.0.0.1:6379", Duration::from_secs(4)));
        assert_eq!(parse(&["--turn", "off"]).unwrap().cluster.unwrap().node_timeout, Duration::from_secs(10));
        let error = parse(&["--turn", "off", "--cluster-node-timeout", "1ms"]).unwrap_err().to_string();
        assert!(error.contains("cluster-node-timeout"), "{error}");
        let error = Options::try_parse_from(["switchboard", "--cluster", "http://x"]).unwrap().into_config();
        assert!(error.unwrap_err().to_string().contains("cluster"));
        let file: Options = toml::from_str("cluster = \"redis://10.0.0.5:6379/2\"\nturn = \"off\"").unwrap();
        assert!(file.into_config().unwrap().cluster.is_some());
    }

    #[test]
    fn tls_redirect_and_per_address_limits() {
        let config = Options::try_parse_from([
            "switchboard",
            "--self-signed",
            "--tls-name",
            "192.0.2.10",
            "--tls-name",
            "switchboard.lan",
            "--redirect-http",
            "0.0.0.0:80",
            "--max-connections-per-ip",
            "0",
            "--connect-rate-per-ip",
            "5",
            "--connect-burst-per-ip",
            "20",
            "--handshake-timeout",
            "3s",
        ])
        .unwrap()
        .into_config()
        .unwrap();
        assert!(config.self_signed);
        assert_eq!(config.tls_names, vec!["192.0.2.10".to_owned(), "switchboard.lan".to_owned()]);
        assert_eq!(config.redirect_http, Some("0.0.0.0:80".parse().unwrap()));
        assert_eq!((config.limits.max_per_ip, config.limits.rate_per_ip, config.limits.burst_per_ip), (0, 5, 20));
        assert_eq!(config.limits.handshake_timeout, Duration::from_secs(3));
        assert!(!config.turn.unwrap().tls_enabled, "self-signed serves turns: only with --turn-tls");

        let file: Options = toml::from_str(
            "tls-cert = \"c.pem\"\ntls-key = \"k.pem\"\ntls-reload-interval = \"1m\"\nmax-connections-per-ip = 9",
        )
        .unwrap();
        let config = Options::default().or(file).into_config().unwrap();
        assert_eq!(config.tls, Some(("c.pem".into(), "k.pem".into())));
        assert_eq!(config.tls_reload_interval, Duration::from_secs(60));
        assert_eq!(config.limits.max_per_ip, 9);
        assert!(config.turn.unwrap().tls_enabled);

        let defaults = Config::default().limits;
        assert_eq!((defaults.max_per_ip, defaults.rate_per_ip), (256, 10));
        let error = |args: &[&str]| {
            let mut all = vec!["switchboard"];
            all.extend_from_slice(args);
            Options::try_parse_from(all).unwrap().into_config().unwrap_err().to_string()
        };
        assert!(error(&["--redirect-http", "0.0.0.0:80"]).contains("redirect-http"));
        assert!(error(&["--tls-name", "x"]).contains("tls-names"));
        assert!(error(&["--self-signed", "--tls-name", "a b"]).contains("tls-names"));
        assert!(error(&["--connect-burst-per-ip", "0"]).contains("connect-burst-per-ip"));
        assert!(error(&["--handshake-timeout", "1ms"]).contains("handshake-timeout"));
        let both = ["--self-signed", "--tls-cert", "c", "--tls-key", "k"];
        assert!(error(&both).contains("self-signed"));
    }

    #[test]
    fn bad_configuration_names_the_key() {
        let error = toml::from_str::<Options>("colour = \"blue\"").unwrap_err().to_string();
        assert!(error.contains("colour"), "{error}");
        let error = toml::from_str::<Options>("ring-timeout = \"soon\"").unwrap_err().to_string();
        assert!(error.contains("soon"), "{error}");
        let error = Options { max_room_size: Some(1), ..Options::default() }.into_config().unwrap_err().to_string();
        assert!(error.contains("max-room-size"), "{error}");
        let error = Options { heartbeat: Some(HumanDuration(Duration::MAX)), ..Options::default() }.into_config();
        assert!(error.unwrap_err().to_string().contains("heartbeat"));
        let error = Options { ice_servers: vec!["http://x".into()], ..Options::default() }.into_config().unwrap_err();
        assert!(error.to_string().contains("ice-servers"));
    }
}
