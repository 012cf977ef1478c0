//! Cluster mode of the core, without sockets or Redis: two cores on simulated time, and this test playing the shared
//! store and the pub/sub between them (names held per node, messages carried between the cores in order).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use switchboard_core::cluster::{ClaimOutcome, Command, Event, NodeId};
use switchboard_core::{Config, ConnId, Input, Output, Signaling};

struct Node {
    id: NodeId,
    core: Signaling,
    inbox: HashMap<ConnId, Vec<Value>>,
    events: VecDeque<Event>,
}

/// Two (or more) cores and the store between them.
struct Cluster {
    nodes: Vec<Node>,
    /// Name key -> index of the holding node.
    names: HashMap<Arc<str>, usize>,
    /// Nodes cut off from the store.
    down: Vec<bool>,
    start: Instant,
    offset: Duration,
}

impl Cluster {
    fn new(count: usize) -> Self {
        let nodes = (0..count)
            .map(|i| {
                let id = NodeId(Arc::from(format!("node{i}").as_str()));
                let config = Config { cluster: Some(id.clone()), ..Config::default() };
                Node {
                    id,
                    core: Signaling::new(config, [i as u8 + 1; 32]),
                    inbox: HashMap::new(),
                    events: VecDeque::new(),
                }
            })
            .collect();
        let mut cluster = Self {
            nodes,
            names: HashMap::new(),
            down: vec![false; count],
            start: Instant::now(),
            offset: Duration::ZERO,
        };
        for node in &mut cluster.nodes {
            node.events.push_back(Event::LinkUp);
        }
        cluster.settle();
        cluster
    }

    fn now(&self) -> Instant {
        self.start + self.offset
    }

    fn input(&mut self, node: usize, input: Input<'_>) {
        let now = self.now();
        self.nodes[node].core.handle_input(now, input);
        self.settle();
    }

    fn text(&mut self, node: usize, conn: u64, value: Value) {
        let text = value.to_string();
        self.input(node, Input::Text(ConnId(conn), &text));
    }

    fn connect(&mut self, node: usize, conn: u64) {
        self.input(node, Input::Connected(ConnId(conn)));
    }

    /// Moves time on past a presence tick.
    fn tick(&mut self) {
        self.offset += Duration::from_millis(100);
        let now = self.now();
        for node in &mut self.nodes {
            node.core.handle_timeout(now);
        }
        self.settle();
    }

    /// Carries outputs and events until nothing moves.
    fn settle(&mut self) {
        loop {
            let mut moved = false;
            for i in 0..self.nodes.len() {
                while let Some(output) = self.nodes[i].core.poll_output() {
                    moved = true;
                    match output {
                        Output::Send { conn, frame } => {
                            let value = serde_json::from_slice(&frame.to_bytes()).unwrap();
                            self.nodes[i].inbox.entry(conn).or_default().push(value);
                        }
                        Output::Close { .. } => {}
                        Output::Cluster(command) => self.store(i, command),
                    }
                }
                let now = self.now();
                while let Some(event) = self.nodes[i].events.pop_front() {
                    moved = true;
                    self.nodes[i].core.handle_input(now, Input::Cluster(event));
                }
            }
            if !moved {
                return;
            }
        }
    }

    /// What the store and pub/sub do with a command of node `i`.
    fn store(&mut self, i: usize, command: Command) {
        if self.down[i] {
            if let Some(event) = command.failed() {
                self.nodes[i].events.push_back(event);
            }
            return;
        }
        let me = self.nodes[i].id.clone();
        match command {
            Command::Claim { ticket, key, replace } => {
                let outcome = match self.names.get(&key) {
                    Some(&holder) if holder != i && !replace => ClaimOutcome::Taken,
                    holder => {
                        let evicted = holder.copied().filter(|&h| h != i).map(|h| self.nodes[h].id.clone());
                        self.names.insert(key, i);
                        ClaimOutcome::Won { evicted }
                    }
                };
                self.nodes[i].events.push_back(Event::Claimed { ticket, outcome });
            }
            Command::Release { key } => {
                if self.names.get(&key) == Some(&i) {
                    self.names.remove(&key);
                }
            }
            Command::Resync { names, .. } => {
                let lost: Vec<Arc<str>> =
                    names.into_iter().filter(|k| *self.names.entry(k.clone()).or_insert(i) != i).collect();
                if !lost.is_empty() {
                    self.nodes[i].events.push_back(Event::Lost { names: lost });
                }
            }
            Command::Join { .. } | Command::Leave { .. } => {}
            Command::Send { node, message } => {
                let to = self.nodes.iter().position(|n| n.id == node).unwrap();
                // As the Redis backend delivers them: an envelope's messages in one event.
                self.nodes[to].events.push_back(Event::Messages { from: me, messages: vec![message] });
            }
            Command::Broadcast { message } => {
                for (j, node) in self.nodes.iter_mut().enumerate() {
                    if j != i {
                        node.events.push_back(Event::Messages { from: me.clone(), messages: vec![message.clone()] });
                    }
                }
            }
        }
    }

    fn take(&mut self, node: usize, conn: u64) -> Vec<Value> {
        self.nodes[node].inbox.remove(&ConnId(conn)).unwrap_or_default()
    }

    fn last_of(&mut self, node: usize, conn: u64, kind: &str) -> Value {
        let frames = self.take(node, conn);
        frames.into_iter().rev().find(|f| f["type"] == kind).unwrap_or_else(|| panic!("no {kind} for {node}/{conn}"))
    }
}

fn names_in(value: &Value, field: &str) -> Vec<String> {
    value[field]
        .as_array()
        .map(|items| items.iter().filter_map(|i| i.as_str().or(i["name"].as_str())).map(str::to_owned).collect())
        .unwrap_or_default()
}

#[test]
fn names_are_unique_across_nodes_and_presence_and_relay_span_them() {
    let mut cluster = Cluster::new(2);
    cluster.connect(0, 1);
    cluster.text(0, 1, json!({"type": "login", "id": 1, "name": "alice"}));
    assert_eq!(cluster.last_of(0, 1, "welcome")["name"], "alice");

    // The same name, differently spelt, on the other node.
    cluster.connect(1, 1);
    cluster.text(1, 1, json!({"type": "login", "id": 1, "name": "ALICE"}));
    assert_eq!(cluster.last_of(1, 1, "error")["code"], "name-taken");
    cluster.text(1, 1, json!({"type": "login", "id": 2, "name": "bob"}));
    let welcome = cluster.last_of(1, 1, "welcome");
    // One tick for bob's node to tell, one for alice's to pass it on.
    cluster.tick();
    cluster.tick();
    // Bob's welcome was built from the snapshot of the last tick; alice came with a presence delta or the snapshot.
    let presence = cluster.take(0, 1);
    let joined: Vec<String> = presence.iter().flat_map(|p| names_in(p, "joined")).collect();
    assert!(joined.contains(&"bob".to_owned()), "alice sees bob: {presence:?}");
    let bob_sees_alice = names_in(&welcome, "users").contains(&"alice".to_owned())
        || cluster.take(1, 1).iter().any(|p| names_in(p, "joined").contains(&"alice".to_owned()));
    assert!(bob_sees_alice);

    // Relay across: acked at once on the sender's node, delivered with `from` stamped on the target's.
    cluster.text(0, 1, json!({"type": "offer", "id": 7, "to": "Bob", "callId": "c", "sdp": {"type": "offer"}}));
    assert_eq!(cluster.last_of(0, 1, "ack")["id"], 7);
    let offer = cluster.last_of(1, 1, "offer");
    assert_eq!(offer, json!({"type": "offer", "from": "alice", "callId": "c", "sdp": {"type": "offer"}}));

    // A call across: ring on the callee's node, ringing on the caller's once the callee's node answered.
    cluster.text(1, 1, json!({"type": "call", "id": 8, "to": "alice"}));
    let ringing = cluster.last_of(1, 1, "ringing");
    let ring = cluster.last_of(0, 1, "ring");
    assert_eq!((ringing["callId"].clone(), ring["from"].clone()), (ring["callId"].clone(), json!("bob")));

    // Bob's node dies: alice hears the hangup and sees him leave.
    cluster.input(0, Input::Cluster(Event::NodeDown(NodeId(Arc::from("node1")))));
    let hangup = cluster.last_of(0, 1, "hangup");
    assert_eq!((hangup["from"].as_str(), hangup["reason"].as_str()), (Some("bob"), Some("disconnected")));
    cluster.tick();
    let presence = cluster.last_of(0, 1, "presence");
    assert_eq!(names_in(&presence, "left"), ["bob"], "{presence}");
}

#[test]
fn without_the_store_a_node_serves_its_own_users_and_refuses_the_rest_at_once() {
    let mut cluster = Cluster::new(2);
    cluster.connect(0, 1);
    cluster.text(0, 1, json!({"type": "login", "id": 1, "name": "alice"}));
    cluster.connect(0, 2);
    cluster.text(0, 2, json!({"type": "login", "id": 1, "name": "carol"}));
    cluster.connect(1, 1);
    cluster.text(1, 1, json!({"type": "login", "id": 1, "name": "bob"}));
    cluster.tick();
    cluster.take(0, 1);

    cluster.down[0] = true;
    cluster.input(0, Input::Cluster(Event::LinkDown));
    cluster.text(0, 1, json!({"type": "offer", "id": 2, "to": "carol", "sdp": {}}));
    assert_eq!(cluster.last_of(0, 2, "offer")["from"], "alice");
    cluster.text(0, 1, json!({"type": "offer", "id": 3, "to": "bob", "sdp": {}}));
    let error = cluster.last_of(0, 1, "error");
    assert_eq!((error["code"].as_str(), error["to"].as_str()), (Some("undeliverable"), Some("bob")), "{error}");
    cluster.connect(0, 3);
    cluster.text(0, 3, json!({"type": "login", "id": 1, "name": "dave"}));
    assert_eq!(cluster.last_of(0, 3, "error")["code"], "unavailable");

    // The store comes back: the node holds its names again and everyone exchanges their lists.
    cluster.names.clear();
    cluster.down[0] = false;
    cluster.input(0, Input::Cluster(Event::LinkUp));
    cluster.input(1, Input::Cluster(Event::LinkUp));
    assert_eq!(cluster.names.get("alice"), Some(&0));
    assert_eq!(cluster.names.get("bob"), Some(&1));
    cluster.text(0, 1, json!({"type": "offer", "id": 4, "to": "bob", "sdp": {}}));
    assert_eq!(cluster.last_of(1, 1, "offer")["from"], "alice");
}
