//! `/metrics` in the Prometheus text exposition format (0.0.4).
//!
//! Why `prometheus-client` rather than the `metrics` facade with `metrics-exporter-prometheus`: the facade's recorder
//! is one global per process, so two servers in one process (every integration test binary) would count into the
//! same series; and each facade call resolves its key in the recorder's map, more than the one increment a message
//! may cost. `prometheus-client`'s [`Registry`] is a plain value owned by each [`crate::Server`], and its
//! [`Collector`] lets us read counters at scrape time instead of pushing them: the signaling core counts with plain
//! integers under the lock it already holds (see `switchboard_core::metrics`), TURN with atomics in its shared
//! state, and a scrape copies them out once. The crate then only encodes, with the format's escaping and naming
//! rules (`_total` suffixes, cumulative histogram buckets).
//!
//! Adding a series is one line in [`SERIES`] (or a labelled family in [`Collected::encode`]): for example, once the
//! TURN relay counts relayed bytes into its shared state, `turn_relayed_bytes` is one more [`Series::counter`] whose
//! reader picks the value from [`Snapshot::turn`].

use std::fmt::Write as _;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use switchboard_core::metrics::CALL_SETUP_BUCKETS;
use switchboard_core::{LoginOutcome, MessageKind};
use switchboard_proto::ErrorCode;
use switchboard_turn::observe::TurnCounters;
use switchboard_turn::server::Shared;
use tokio::sync::Semaphore;

use crate::hub::{Hub, HubSnapshot};
use crate::limits::{Admission, EdgeStats};

/// The connection admissions whose refusals `/metrics` reports.
pub struct Edges {
    /// The main listener (HTTP and WebSocket).
    pub http: Arc<Admission>,
    /// The TURN TCP and TLS listeners, when TURN runs.
    pub turn_streams: Option<Arc<Admission>>,
}

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Every value a scrape reads, copied once.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Counters and map sizes of the signaling core and the hub.
    pub hub: HubSnapshot,
    /// TCP connections open on the main listener (HTTP and WebSocket).
    pub tcp_connections: usize,
    /// The cap on them (`max-connections`).
    pub max_connections: usize,
    /// The built-in TURN server, when it runs.
    pub turn: Option<TurnSnapshot>,
    /// Connections of the main listener refused or dropped at accept.
    pub http_edge: EdgeStats,
    /// Connections of the TURN TCP and TLS listeners refused at accept, when TURN runs.
    pub turn_edge: Option<EdgeStats>,
}

/// What the TURN server's shared state counts.
#[derive(Debug, Clone, Copy, Default)]
pub struct TurnSnapshot {
    /// Allocations alive across all owners.
    pub allocations: usize,
    /// Authentication failures and challenges.
    pub auth: TurnCounters,
}

/// One unlabelled series read from a [`Snapshot`]; `None` leaves it out (TURN off).
pub struct Series {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    read: fn(&Snapshot) -> Option<u64>,
}

impl Series {
    const fn counter(name: &'static str, help: &'static str, read: fn(&Snapshot) -> Option<u64>) -> Self {
        Self { name, help, kind: MetricType::Counter, read }
    }

    const fn gauge(name: &'static str, help: &'static str, read: fn(&Snapshot) -> Option<u64>) -> Self {
        Self { name, help, kind: MetricType::Gauge, read }
    }
}

fn n(value: usize) -> Option<u64> {
    u64::try_from(value).ok()
}

/// The unlabelled series, all prefixed `switchboard_` (counters also get `_total`).
pub const SERIES: &[Series] = &[
    Series::gauge("connections", "Open TCP connections on the main listener (HTTP and WebSocket).", |s| {
        n(s.tcp_connections)
    }),
    Series::gauge("connections_limit", "The cap on open TCP connections (max-connections).", |s| n(s.max_connections)),
    Series::gauge("websocket_connections", "WebSocket connections the signaling core knows.", |s| {
        n(s.hub.stats.connections)
    }),
    Series::gauge("users", "Logged-in users, including sessions waiting for a resume.", |s| n(s.hub.stats.sessions)),
    Series::gauge("rooms", "Rooms with at least one member.", |s| n(s.hub.stats.rooms)),
    Series::counter("calls_started", "Calls placed (call requests that rang someone).", |s| {
        Some(s.hub.counters.calls_started)
    }),
    Series::counter(
        "slow_consumer_closes",
        "Connections closed (4002) because their outbound queue overflowed.",
        |s| Some(s.hub.slow_consumers),
    ),
    Series::counter(
        "resume_queue_drops",
        "Messages for a session waiting for its resume dropped: queue full, or the session never came back.",
        |s| Some(s.hub.counters.resume_queue_drops),
    ),
    Series::counter("admin_disconnects", "Users disconnected through the admin API.", |s| {
        Some(s.hub.counters.admin_disconnects)
    }),
    Series::gauge("turn_allocations", "TURN allocations alive.", |s| s.turn.and_then(|t| n(t.allocations))),
    Series::counter(
        "turn_relayed_packets",
        "Packets relayed by TURN, both directions (published every second).",
        |s| s.turn.map(|t| t.auth.to_peer_packets + t.auth.to_client_packets),
    ),
    Series::counter("turn_relayed_bytes", "Payload bytes relayed by TURN, both directions.", |s| {
        s.turn.map(|t| t.auth.to_peer_bytes + t.auth.to_client_bytes)
    }),
    Series::counter(
        "turn_dropped_packets",
        "Packets TURN dropped: no permission or channel, bandwidth cap, malformed.",
        |s| s.turn.map(|t| t.auth.dropped),
    ),
    Series::counter(
        "turn_auth_challenges",
        "TURN requests without credentials answered 401 with a nonce (the normal first round trip).",
        |s| s.turn.map(|t| t.auth.challenges),
    ),
];

/// Reads the snapshot on every scrape.
struct Collected {
    hub: Arc<Hub>,
    permits: Arc<Semaphore>,
    max_connections: usize,
    turn: Option<Arc<Shared>>,
    edges: Edges,
}

impl std::fmt::Debug for Collected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collected").finish_non_exhaustive()
    }
}

impl Collected {
    fn snapshot(&self) -> Snapshot {
        Snapshot {
            hub: self.hub.snapshot(),
            tcp_connections: self.max_connections.saturating_sub(self.permits.available_permits()),
            max_connections: self.max_connections,
            turn: self
                .turn
                .as_ref()
                .map(|shared| TurnSnapshot { allocations: shared.allocations(), auth: shared.metrics.snapshot() }),
            http_edge: self.edges.http.stats(),
            turn_edge: self.edges.turn_streams.as_ref().map(|admission| admission.stats()),
        }
    }
}

/// One labelled family of counters.
fn family<'a>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    label: &str,
    values: impl Iterator<Item = (&'a str, u64)>,
) -> std::fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    for (value_label, value) in values {
        let labels = [(label, value_label)];
        let mut child = metric.encode_family(&labels)?;
        match kind {
            MetricType::Counter => child.encode_counter::<NoLabelSet, _, u64>(&value, None)?,
            _ => child.encode_gauge(&value)?,
        }
    }
    Ok(())
}

impl Collector for Collected {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let snapshot = self.snapshot();
        for series in SERIES {
            let Some(value) = (series.read)(&snapshot) else { continue };
            let mut metric = encoder.encode_descriptor(series.name, series.help, None, series.kind)?;
            match series.kind {
                MetricType::Counter => metric.encode_counter::<NoLabelSet, _, u64>(&value, None)?,
                _ => metric.encode_gauge(&value)?,
            }
        }
        let counters = &snapshot.hub.counters;
        family(
            &mut encoder,
            "logins",
            "Logins by outcome (ok and resumed, or the error code).",
            MetricType::Counter,
            "outcome",
            LoginOutcome::ALL.iter().map(|o| (o.as_str(), counters.logins_of(*o))),
        )?;
        family(
            &mut encoder,
            "messages_received",
            "Messages received from clients, by type (invalid, binary, too-large and rate-limited for the dropped).",
            MetricType::Counter,
            "type",
            MessageKind::ALL.iter().map(|k| (k.as_str(), counters.received_of(*k))),
        )?;
        family(
            &mut encoder,
            "errors_sent",
            "error events sent to clients, by code.",
            MetricType::Counter,
            "code",
            ErrorCode::ALL.iter().map(|c| (c.as_str(), counters.errors_of(*c))),
        )?;
        let active = counters.active_calls;
        let ringing = u64::try_from(snapshot.hub.stats.calls).unwrap_or(0).saturating_sub(active);
        family(
            &mut encoder,
            "calls",
            "1:1 calls by state (ringing: placed and not yet answered; active: accepted).",
            MetricType::Gauge,
            "state",
            [("ringing", ringing), ("active", active)].into_iter(),
        )?;
        let setup = &counters.call_setup;
        let bounds = CALL_SETUP_BUCKETS.iter().copied().chain(std::iter::once(f64::INFINITY));
        let buckets: Vec<(f64, u64)> = bounds.zip(setup.buckets.iter().copied()).collect();
        encoder
            .encode_descriptor(
                "call_setup_seconds",
                "Time from a call request to its accept.",
                None,
                MetricType::Histogram,
            )?
            .encode_histogram::<NoLabelSet>(setup.sum, setup.count, &buckets, None)?;
        let http = &snapshot.http_edge;
        family(
            &mut encoder,
            "connections_refused",
            "Connections to the main listener closed at accept: attempt rate or open connections of one address \
             (per-ip), or the server-wide cap (limit).",
            MetricType::Counter,
            "reason",
            [("rate", http.refused_rate), ("per-ip", http.refused_per_ip), ("limit", http.refused_global)].into_iter(),
        )?;
        family(
            &mut encoder,
            "connections_dropped",
            "Connections to the main listener dropped: no TLS handshake or request head within the handshake timeout \
             (slow-loris, or a keep-alive connection left idle), or a failed TLS handshake.",
            MetricType::Counter,
            "reason",
            [("handshake-timeout", http.handshake_timeouts), ("tls-failure", http.tls_failures)].into_iter(),
        )?;
        if let Some(turn) = &snapshot.turn_edge {
            family(
                &mut encoder,
                "turn_stream_connections_refused",
                "TURN TCP and TLS connections closed at accept: open connections of one address (per-ip), or the cap \
                 on stream connections (limit).",
                MetricType::Counter,
                "reason",
                [("per-ip", turn.refused_per_ip), ("limit", turn.refused_global)].into_iter(),
            )?;
        }
        if let Some(turn) = snapshot.turn {
            family(
                &mut encoder,
                "turn_auth_failures",
                "TURN requests with credentials refused: 401 (wrong or expired credentials) and 438 (stale nonce).",
                MetricType::Counter,
                "code",
                [("401", turn.auth.unauthorized), ("438", turn.auth.stale_nonce)].into_iter(),
            )?;
        }
        Ok(())
    }
}

/// The metrics of one server.
pub struct Metrics {
    registry: Registry,
    /// WebSocket upgrades accepted (counted in the HTTP layer as they happen).
    pub websocket_upgrades: Counter,
    /// Those of them that negotiated permessage-deflate.
    pub websocket_compressed_upgrades: Counter,
}

impl Metrics {
    /// A registry reading `hub`, the connection permits of the main listener, and TURN's shared state.
    pub fn new(
        hub: Arc<Hub>,
        permits: Arc<Semaphore>,
        max_connections: usize,
        turn: Option<Arc<Shared>>,
        edges: Edges,
    ) -> Self {
        let mut registry = Registry::with_prefix("switchboard");
        let websocket_upgrades = Counter::default();
        registry.register("websocket_upgrades", "WebSocket upgrades accepted.", websocket_upgrades.clone());
        let websocket_compressed_upgrades = Counter::default();
        registry.register(
            "websocket_compressed_upgrades",
            "WebSocket upgrades that negotiated compression (permessage-deflate).",
            websocket_compressed_upgrades.clone(),
        );
        registry.register_collector(Box::new(Collected { hub, permits, max_connections, turn, edges }));
        Self { registry, websocket_upgrades, websocket_compressed_upgrades }
    }

    /// The text exposition of every series.
    pub fn render(&self) -> String {
        let mut text = String::with_capacity(8 * 1024);
        if prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry).is_err() {
            // Writing into a String cannot fail; if an encoder ever does, say so rather than serve half a page.
            text.clear();
            let _ = writeln!(text, "# encoding the metrics failed");
        }
        text
    }
}
