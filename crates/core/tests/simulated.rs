//! Tests of the signaling core on simulated time: no sockets, no sleeps.
//!
//! [`Sim`] drives one [`Signaling`] with a fake clock (`start` plus an offset that only [`Sim::advance`] moves),
//! fires every deadline that [`Signaling::poll_timeout`] reports as due on the way, and sorts the outputs into one
//! inbox per connection (frames parsed as JSON, raw text kept for byte-level checks) plus the close codes.
//! The expectations come from `docs/protocol.md`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use serde_json::{json, Map, Value};
use switchboard_core::{Config, ConnId, Input, NamePolicy, Output, Signaling};
use switchboard_proto::IceServer;

// ---------------------------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------------------------

const SEED: [u8; 32] = [7u8; 32];

/// One frame received by a connection.
#[derive(Debug, Clone)]
struct Frame {
    raw: String,
    value: Value,
}

struct Sim {
    core: Signaling,
    start: Instant,
    offset: Duration,
    next_conn: u64,
    inboxes: HashMap<ConnId, Vec<Frame>>,
    closes: HashMap<ConnId, u16>,
    /// Every `callId` and `resumeToken` seen in an output, for the property test.
    call_ids: Vec<String>,
    tokens: Vec<String>,
}

impl Sim {
    fn new(config: Config) -> Self {
        Self {
            core: Signaling::new(config, SEED),
            start: Instant::now(),
            offset: Duration::ZERO,
            next_conn: 1,
            inboxes: HashMap::new(),
            closes: HashMap::new(),
            call_ids: Vec::new(),
            tokens: Vec::new(),
        }
    }

    fn default_config() -> Self {
        Self::new(Config::default())
    }

    fn now(&self) -> Instant {
        self.start + self.offset
    }

    fn config(&self) -> &Config {
        self.core.config()
    }

    /// Drains the core's outputs into the inboxes, checking that every frame is a JSON object with a string `type`
    /// and that nothing is sent to a connection after its close.
    fn pump(&mut self) {
        while let Some(output) = self.core.poll_output() {
            match output {
                Output::Send { conn, frame } => {
                    let frame = frame.to_bytes();
                    let raw = std::str::from_utf8(&frame)
                        .unwrap_or_else(|e| panic!("frame to {conn:?} is not UTF-8: {e}"))
                        .to_owned();
                    let value: Value = serde_json::from_str(&raw)
                        .unwrap_or_else(|e| panic!("frame to {conn:?} is not valid JSON ({e}): {raw}"));
                    assert!(value.is_object(), "frame to {conn:?} is not a JSON object: {raw}");
                    assert!(value["type"].is_string(), "frame to {conn:?} has no string `type`: {raw}");
                    assert!(
                        !self.closes.contains_key(&conn),
                        "frame to {conn:?} after it was closed with {:?}: {raw}",
                        self.closes.get(&conn)
                    );
                    if let Some(call_id) = value["callId"].as_str() {
                        self.call_ids.push(call_id.to_owned());
                    }
                    if let Some(token) = value["resumeToken"].as_str() {
                        self.tokens.push(token.to_owned());
                    }
                    self.inboxes.entry(conn).or_default().push(Frame { raw, value });
                }
                Output::Close { conn, code, .. } => {
                    let previous = self.closes.insert(conn, code);
                    assert!(previous.is_none(), "{conn:?} closed twice ({previous:?}, then {code})");
                }
                Output::Cluster(command) => panic!("a single node asked the cluster for {command:?}"),
            }
        }
    }

    /// Moves the clock forward by `by`, firing every deadline on the way at its exact time.
    fn advance(&mut self, by: Duration) {
        let target = self.offset + by;
        while let Some(due) = self.core.poll_timeout() {
            let due = due.saturating_duration_since(self.start);
            if due > target {
                break;
            }
            self.offset = self.offset.max(due);
            self.core.handle_timeout(self.now());
            self.pump();
        }
        self.offset = target;
    }

    fn advance_ms(&mut self, ms: u64) {
        self.advance(Duration::from_millis(ms));
    }

    /// One presence interval: pending presence changes are flushed.
    fn tick(&mut self) {
        self.advance(self.config().presence_interval);
    }

    /// A tick, then every inbox emptied.
    fn settle(&mut self) {
        self.tick();
        self.clear_inboxes();
    }

    fn clear_inboxes(&mut self) {
        for inbox in self.inboxes.values_mut() {
            inbox.clear();
        }
    }

    fn input(&mut self, input: Input<'_>) {
        let now = self.now();
        self.core.handle_input(now, input);
        self.pump();
    }

    fn connect(&mut self) -> ConnId {
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        self.input(Input::Connected(conn));
        conn
    }

    fn send(&mut self, conn: ConnId, text: &str) {
        self.input(Input::Text(conn, text));
    }

    fn send_json(&mut self, conn: ConnId, value: &Value) {
        self.send(conn, &value.to_string());
    }

    fn disconnect(&mut self, conn: ConnId) {
        self.input(Input::Disconnected(conn));
    }

    /// Sends `value` and returns what the sender received.
    fn request(&mut self, conn: ConnId, value: &Value) -> Vec<Value> {
        self.send_json(conn, value);
        self.take(conn)
    }

    fn take_frames(&mut self, conn: ConnId) -> Vec<Frame> {
        self.inboxes.remove(&conn).unwrap_or_default()
    }

    fn take(&mut self, conn: ConnId) -> Vec<Value> {
        self.take_frames(conn).into_iter().map(|f| f.value).collect()
    }

    /// Exactly one frame is waiting for `conn`; returns it.
    fn one(&mut self, conn: ConnId) -> Value {
        let frames = self.take(conn);
        assert_eq!(frames.len(), 1, "expected exactly one frame for {conn:?}, got {frames:#?}");
        frames.into_iter().next().unwrap()
    }

    fn assert_silent(&mut self, conn: ConnId) {
        let frames = self.take(conn);
        assert!(frames.is_empty(), "expected nothing for {conn:?}, got {frames:#?}");
    }

    fn closed(&self, conn: ConnId) -> Option<u16> {
        self.closes.get(&conn).copied()
    }

    /// A v1 login that must succeed: returns the connection and its `welcome`.
    fn login_welcome(&mut self, name: &str) -> (ConnId, Value) {
        let conn = self.connect();
        let frames = self.request(conn, &json!({"type":"login","id":1,"name":name}));
        assert_eq!(frames.len(), 2, "login of {name}: {frames:#?}");
        assert_eq!(frames[0]["type"], "hello", "{frames:#?}");
        assert_eq!(frames[1]["type"], "welcome", "{frames:#?}");
        (conn, frames[1].clone())
    }

    fn login(&mut self, name: &str) -> ConnId {
        self.login_welcome(name).0
    }

    /// A tutorial-dialect login that must succeed: returns the connection and its `RenderUserList`.
    fn tutorial(&mut self, name: &str) -> (ConnId, Value) {
        let conn = self.connect();
        let frames = self.request(conn, &json!({"type":"Login","UserName":name}));
        assert_eq!(frames.len(), 1, "tutorial login of {name}: {frames:#?}");
        assert_eq!(frames[0]["type"], "RenderUserList", "{frames:#?}");
        (conn, frames[0].clone())
    }

    /// `caller` calls `callee`, who accepts; returns the call id. Inboxes of both are emptied.
    fn active_call(&mut self, caller: ConnId, callee: ConnId, callee_name: &str) -> String {
        self.take(caller);
        self.take(callee);
        let ringing = self.request(caller, &json!({"type":"call","to":callee_name}));
        assert_eq!(ringing.len(), 1, "{ringing:#?}");
        let call_id = ringing[0]["callId"].as_str().unwrap().to_owned();
        let ring = self.one(callee);
        assert_eq!(ring["type"], "ring");
        self.send_json(callee, &json!({"type":"accept","callId":call_id}));
        let accepted = self.one(caller);
        assert_eq!(accepted["type"], "accepted");
        self.take(callee);
        call_id
    }

    fn join(&mut self, conn: ConnId, room: &str) -> Value {
        self.take(conn);
        let frames = self.request(conn, &json!({"type":"join","room":room}));
        assert_eq!(frames.len(), 1, "{frames:#?}");
        assert_eq!(frames[0]["type"], "joined", "{frames:#?}");
        frames[0].clone()
    }
}

fn assert_error(frame: &Value, code: &str) {
    assert_eq!(frame["type"], "error", "expected error {code}, got {frame}");
    assert_eq!(frame["code"], code, "expected error {code}, got {frame}");
    assert!(frame["message"].is_string(), "error without message: {frame}");
}

/// The single frame of `frames`, which must be an error with `code`.
fn single_error(frames: &[Value], code: &str) -> Value {
    assert_eq!(frames.len(), 1, "expected one error {code}, got {frames:#?}");
    assert_error(&frames[0], code);
    frames[0].clone()
}

fn of_type<'a>(frames: &'a [Value], kind: &str) -> Vec<&'a Value> {
    frames.iter().filter(|f| f["type"] == kind).collect()
}

/// `field` of `value`, an array of `{"name":..,"status":..}`, as name -> status.
fn entries(value: &Value, field: &str) -> BTreeMap<String, String> {
    value[field]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|e| (e["name"].as_str().unwrap().to_owned(), e["status"].as_str().unwrap().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// `field` of `value`, an array of strings or of objects with `name`, as a set of names.
fn names(value: &Value, field: &str) -> BTreeSet<String> {
    value[field]
        .as_array()
        .map(|list| list.iter().map(|e| e.as_str().or_else(|| e["name"].as_str()).unwrap().to_owned()).collect())
        .unwrap_or_default()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn status_map(items: &[(&str, &str)]) -> BTreeMap<String, String> {
    items.iter().map(|(n, s)| ((*n).to_owned(), (*s).to_owned())).collect()
}

/// Applies a `presence` delta to a client's view, as the protocol says clients do.
fn apply_presence(view: &mut BTreeMap<String, String>, presence: &Value) {
    assert_eq!(presence["type"], "presence");
    for field in ["joined", "changed"] {
        view.extend(entries(presence, field));
    }
    for name in names(presence, "left") {
        view.remove(&name);
    }
}

const SDP: &str = r#"{"type":"offer",  "sdp":"v=0\r\no=- 46117 2 IN IP4 127.0.0.1\r\ns=-\r\na=x:\u00e9 \"q\"\r\n"}"#;
const SDP_ANSWER: &str = r#"{ "sdp" : "v=0\r\na=answer\r\n", "type" : "answer" }"#;
const CANDIDATE: &str =
    r#"{"candidate":"candidate:1 1 udp 2122260223 192.0.2.1 54321 typ host","sdpMid":"0","sdpMLineIndex":0}"#;

fn parsed(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

// ---------------------------------------------------------------------------------------------------------------
// Hello, login, welcome, names
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn hello_is_the_first_frame_of_a_v1_connection() {
    let mut sim = Sim::default_config();
    let server = sim.config().server_id.clone();

    let conn = sim.connect();
    sim.assert_silent(conn);
    let frames = sim.request(conn, &json!({"type":"login","id":1,"name":"alice"}));
    assert_eq!(frames[0], json!({"type":"hello","protocol":1,"server":server}));
    assert_eq!(frames[1]["type"], "welcome");
    assert_eq!(frames.len(), 2);
    // Only once.
    let frames = sim.request(conn, &json!({"type":"ping","id":2}));
    assert_eq!(frames, vec![json!({"type":"pong","id":2})]);

    // Whatever the first frame is, hello comes right before its answer.
    let conn = sim.connect();
    let frames = sim.request(conn, &json!({"type":"ping"}));
    assert_eq!(frames, vec![json!({"type":"hello","protocol":1,"server":server}), json!({"type":"pong"})]);

    let conn = sim.connect();
    let frames = sim.request(conn, &json!({"type":"dance","id":"d"}));
    assert_eq!(frames.len(), 2, "{frames:#?}");
    assert_eq!(frames[0]["type"], "hello");
    assert_error(&frames[1], "unknown-type");
    assert_eq!(frames[1]["id"], "d");

    let conn = sim.connect();
    let frames = sim.request(conn, &json!({"type":"users","id":3}));
    assert_eq!(frames.len(), 2, "{frames:#?}");
    assert_eq!(frames[0]["type"], "hello");
    assert_error(&frames[1], "not-logged-in");
    assert_eq!(frames[1]["id"], 3);
}

/// docs/protocol.md: "The first frame the server sends on a v1 connection is always `hello`, right before its answer
/// to the client's first frame" and "anything else [than a tutorial Login] a v1 connection".
#[test]
fn hello_precedes_the_error_for_a_bad_first_frame() {
    let mut sim = Sim::default_config();
    let conn = sim.connect();
    sim.send(conn, r#"{"type":"login","#);
    let frames = sim.take(conn);
    assert_eq!(frames.len(), 2, "expected hello then bad-json, got {frames:#?}");
    assert_eq!(frames[0]["type"], "hello", "{frames:#?}");
    assert_error(&frames[1], "bad-json");
}

#[test]
fn welcome_carries_name_users_limits_token_and_ice_servers() {
    let ice = IceServer { urls: vec!["stun:stun.example.org:3478".into()], username: None, credential: None };
    let config = Config {
        ice_servers: vec![ice],
        resume_grace: Duration::from_secs(12),
        ring_timeout: Duration::from_secs(7),
        max_room_size: 5,
        max_rooms_per_user: 3,
        rate_per_second: 40,
        rate_burst: 80,
        ..Config::default()
    };
    let mut sim = Sim::new(config);
    let (_, welcome) = sim.login_welcome("alice");
    assert_eq!(welcome["id"], 1);
    assert_eq!(welcome["protocol"], 1);
    assert_eq!(welcome["name"], "alice");
    assert_eq!(welcome["resumed"], false);
    let token = welcome["resumeToken"].as_str().expect("resumeToken is a string");
    assert!(token.len() >= 16, "resume token too short to be secret: {token:?}");
    assert_eq!(entries(&welcome, "users"), status_map(&[("alice", "idle")]));
    assert_eq!(
        welcome["limits"],
        json!({"maxMessageBytes":65536,"heartbeatMs":20000,"resumeGraceMs":12000,"ringTimeoutMs":7000,
               "maxRoomSize":5,"maxRoomsPerUser":3,"ratePerSecond":40,"rateBurst":80})
    );
    assert_eq!(welcome["iceServers"], json!([{"urls":["stun:stun.example.org:3478"]}]));
    assert!(welcome.get("rooms").is_none() && welcome.get("call").is_none(), "{welcome}");

    sim.settle();
    let (_, welcome) = sim.login_welcome("bob");
    assert_eq!(entries(&welcome, "users"), status_map(&[("alice", "idle"), ("bob", "idle")]));
    let bob_token = welcome["resumeToken"].as_str().unwrap();
    assert_ne!(bob_token, token, "tokens must differ between sessions");

    // A client may state the version; another version is refused and the connection stays usable.
    let conn = sim.connect();
    let frames = sim.request(conn, &json!({"type":"login","id":"p","name":"carol","protocol":2}));
    assert_eq!(frames[0]["type"], "hello");
    let error = single_error(&frames[1..], "unsupported-protocol");
    assert_eq!(error["id"], "p");
    let frames = sim.request(conn, &json!({"type":"login","id":2,"name":"carol","protocol":1}));
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0]["type"], "welcome");
    assert_eq!(frames[0]["protocol"], 1);
}

#[test]
fn invalid_names_are_refused_and_the_connection_stays_open() {
    let mut sim = Sim::default_config();
    let conn = sim.connect();
    sim.send_json(conn, &json!({"type":"ping"}));
    sim.take(conn);
    let long = "x".repeat(33);
    for (i, bad) in ["", " alice", "alice ", "a  b", "<b>", "a\u{200b}b", "a\nb", "a\u{202e}b", long.as_str()]
        .into_iter()
        .enumerate()
    {
        let frames = sim.request(conn, &json!({"type":"login","id":i,"name":bad}));
        let error = single_error(&frames, "invalid-name");
        assert_eq!(error["id"], i, "{error}");
    }
    // A login without a name (and without resume) is a bad request.
    single_error(&sim.request(conn, &json!({"type":"login"})), "bad-request");
    assert_eq!(sim.closed(conn), None);

    // Valid: spaces between words, any script, 32 characters, and NFC normalisation.
    let frames = sim.request(conn, &json!({"type":"login","name":"Zoe\u{308}"}));
    assert_eq!(frames.len(), 1, "{frames:#?}");
    assert_eq!(frames[0]["name"], "Zo\u{eb}", "the NFC form is stored and shown");
    for good in ["Mary Ann", "李小龍", "jean-luc.picard_2", &"y".repeat(32)] {
        let (_, welcome) = sim.login_welcome(good);
        assert_eq!(welcome["name"], good);
    }
}

#[test]
fn names_are_unique_case_insensitively() {
    let mut sim = Sim::default_config();
    let (alice, _) = sim.login_welcome("Alice");
    sim.settle();
    for (i, taken) in ["alice", "ALICE", "Alice", "aLiCe"].into_iter().enumerate() {
        let conn = sim.connect();
        let frames = sim.request(conn, &json!({"type":"login","id":i,"name":taken}));
        assert_eq!(frames[0]["type"], "hello");
        let error = single_error(&frames[1..], "name-taken");
        assert_eq!(error["id"], i);
    }
    // NFC and case together: "ZOË" (decomposed) and "zoë" are one name.
    sim.login("zo\u{eb}");
    let conn = sim.connect();
    let frames = sim.request(conn, &json!({"type":"login","name":"ZOE\u{308}"}));
    single_error(&frames[1..], "name-taken");
    // The tutorial dialect cannot take it either.
    let conn = sim.connect();
    single_error(&sim.request(conn, &json!({"type":"Login","UserName":"ALICE"})), "name-taken");
    // A session waiting for its resume still holds the name.
    sim.disconnect(alice);
    let conn = sim.connect();
    let frames = sim.request(conn, &json!({"type":"login","name":"alice"}));
    single_error(&frames[1..], "name-taken");
    assert_eq!(sim.core.stats().sessions, 2);
}

#[test]
fn second_login_and_requests_before_login() {
    let mut sim = Sim::default_config();
    let conn = sim.connect();
    let frames = sim.request(conn, &json!({"type":"offer","to":"bob","sdp":{}}));
    single_error(&frames[1..], "not-logged-in");
    single_error(&sim.request(conn, &json!({"type":"join","room":"r"})), "not-logged-in");
    assert_eq!(sim.request(conn, &json!({"type":"ping","id":1})), vec![json!({"type":"pong","id":1})]);
    let frames = sim.request(conn, &json!({"type":"login","name":"alice"}));
    assert_eq!(frames[0]["type"], "welcome");
    let error = single_error(&sim.request(conn, &json!({"type":"login","id":4,"name":"alice2"})), "already-logged-in");
    assert_eq!(error["id"], 4);
    single_error(&sim.request(conn, &json!({"type":"Login","UserName":"x"})), "unknown-type");
    assert_eq!(sim.core.stats().sessions, 1);
}

#[test]
fn replace_policy_closes_the_old_connection_with_4001() {
    let mut sim = Sim::new(Config { name_policy: NamePolicy::Replace, ..Config::default() });
    let old = sim.login("alice");
    let bob = sim.login("bob");
    sim.join(old, "standup");
    sim.join(bob, "standup");
    let call_id = sim.active_call(old, bob, "bob");
    sim.settle();

    let (new, welcome) = sim.login_welcome("Alice");
    assert_eq!(welcome["name"], "Alice");
    assert_eq!(welcome["resumed"], false);
    assert_eq!(sim.closed(old), Some(4001));
    assert_eq!(sim.closed(new), None);
    assert!(sim.take(old).is_empty(), "the old connection gets nothing more");

    // The old session ended: its call and its rooms.
    let frames = sim.take(bob);
    let hangup = of_type(&frames, "hangup");
    assert_eq!(hangup.len(), 1, "{frames:#?}");
    assert_eq!(hangup[0]["callId"], call_id.as_str());
    assert_eq!(hangup[0]["from"], "alice");
    let left = of_type(&frames, "member-left");
    assert_eq!(left.len(), 1, "{frames:#?}");
    assert_eq!(left[0]["name"], "alice");
    assert_eq!(left[0]["room"], "standup");
    assert_eq!(sim.core.stats().sessions, 2);
    assert_eq!(sim.core.stats().calls, 0);

    // The name now routes to the new connection.
    sim.send(bob, &format!(r#"{{"type":"offer","to":"alice","sdp":{SDP}}}"#));
    let frames = sim.take(new);
    let offer = of_type(&frames, "offer");
    assert_eq!(offer.len(), 1, "{frames:#?}");
    assert_eq!(offer[0]["from"], "bob");
    // And the old connection's late input is ignored.
    sim.send_json(old, &json!({"type":"ping"}));
    sim.disconnect(old);
    sim.advance(Duration::from_secs(60));
    sim.take(new);
    sim.send(bob, &format!(r#"{{"type":"offer","to":"alice","sdp":{SDP}}}"#));
    assert_eq!(sim.one(new)["type"], "offer", "a late disconnect of the old connection must not end the new session");
}

/// docs/protocol.md: welcome's `users` "is everyone online, the new user included": one entry per user.
#[test]
fn welcome_after_a_replace_lists_the_name_once() {
    let mut sim = Sim::new(Config { name_policy: NamePolicy::Replace, ..Config::default() });
    sim.login("alice");
    sim.login("bob");
    sim.settle();
    let (_, welcome) = sim.login_welcome("alice");
    let listed: Vec<&str> = welcome["users"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
    let alices = listed.iter().filter(|n| n.eq_ignore_ascii_case("alice")).count();
    assert_eq!(alices, 1, "welcome users: {listed:?}");
}

// ---------------------------------------------------------------------------------------------------------------
// Presence
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn a_hundred_logins_in_one_tick_give_one_presence_frame_per_observer() {
    let mut sim = Sim::default_config();
    let first = sim.login("observer1");
    let second = sim.login("observer2");
    sim.settle();

    let mut newcomers = Vec::new();
    for i in 0..100 {
        newcomers.push(sim.login(&format!("user{i:03}")));
        sim.advance(Duration::from_micros(300)); // 30 ms in all, within one 50 ms interval
    }
    sim.assert_silent(first);
    sim.assert_silent(second);
    sim.tick();
    let expected: BTreeSet<String> = (0..100).map(|i| format!("user{i:03}")).collect();
    for observer in [first, second] {
        let presence = sim.one(observer);
        assert_eq!(presence["type"], "presence");
        let joined = entries(&presence, "joined");
        assert_eq!(joined.keys().cloned().collect::<BTreeSet<_>>(), expected);
        assert!(joined.values().all(|s| s == "idle"), "{joined:?}");
        assert!(presence.get("left").is_none() && presence.get("changed").is_none(), "{presence}");
    }
    // The newcomers get the same single delta (their own name included, which is harmless).
    for conn in newcomers {
        let presence = sim.one(conn);
        assert_eq!(entries(&presence, "joined").len(), 100);
    }
    // Nothing more on the next ticks.
    sim.advance(Duration::from_secs(1));
    sim.assert_silent(first);
    sim.assert_silent(second);
}

/// Twenty users online (`observer`, `leaver` and 18 more) under a frame budget of 100 per second (10 ms a frame, so
/// a flush to 20 sessions costs 200 ms of budget), a second after their logins went out, every inbox empty.
fn budgeted_lobby(config: Config) -> (Sim, ConnId, ConnId) {
    let mut sim = Sim::new(Config { presence_frames_per_second: 100, ..config });
    assert_eq!(sim.config().presence_interval, Duration::from_millis(50));
    let observer = sim.login("observer");
    let leaver = sim.login("leaver");
    for i in 0..18 {
        sim.login(&format!("user{i:02}"));
    }
    sim.advance(Duration::from_secs(1));
    sim.clear_inboxes();
    (sim, observer, leaver)
}

#[test]
fn changes_after_a_quiet_spell_go_out_after_one_interval_until_presence_is_a_tick_ahead_of_the_budget() {
    let (mut sim, observer, _) = budgeted_lobby(Config::default());
    let interval = sim.config().presence_interval;

    // A lone login a second after the last flush waits one interval, not 21 x 10 ms. That flush is paid for.
    sim.login("late");
    sim.advance(interval - Duration::from_millis(1));
    sim.assert_silent(observer);
    sim.advance_ms(1);
    assert_eq!(names(&sim.one(observer), "joined"), set(&["late"]));

    // 1 ms after it, another: once quiet it goes out too, ahead of the budget (which has paid up to the last flush)
    // by its 22 x 10 ms.
    sim.advance_ms(1);
    sim.login("later");
    sim.advance(interval - Duration::from_millis(1));
    sim.assert_silent(observer);
    sim.advance_ms(1);
    assert_eq!(names(&sim.one(observer), "joined"), set(&["later"]));

    // A third, once quiet: presence is 220 - 102 = 118 ms ahead, less than this flush's 230 ms, so it goes out as
    // well; that puts presence 220 + 230 - 102 = 348 ms ahead.
    sim.advance_ms(1);
    sim.login("latest");
    sim.advance(interval);
    assert_eq!(names(&sim.one(observer), "joined"), set(&["latest"]));

    // A fourth has to wait until presence is only its own 240 ms ahead: 450 - 240 = 210 ms after the first flush.
    sim.advance_ms(1);
    sim.login("last");
    sim.advance_ms(209 - 103);
    sim.assert_silent(observer);
    sim.advance_ms(1);
    assert_eq!(names(&sim.one(observer), "joined"), set(&["last"]));
}

#[test]
fn while_changes_keep_coming_flushes_wait_for_the_budget_and_the_last_goes_out_one_interval_after_them() {
    let (mut sim, observer, _) = budgeted_lobby(Config::default());
    let interval = sim.config().presence_interval;
    // A login every 20 ms for 1.5 s: never quiet for an interval until the last one. Each flush then costs 10 ms per
    // session online, and sessions grow by one per 20 ms, so flushes come further and further apart.
    let start = sim.now();
    let mut arrivals: Vec<(Duration, usize, BTreeSet<String>)> = Vec::new();
    let mut sessions = 20;
    let mut expected = BTreeSet::new();
    let mut last_login = start;
    for ms in 0..1_600u64 {
        if ms % 20 == 0 && ms < 1_500 {
            let name = format!("storm{ms:04}");
            sim.login(&name);
            expected.insert(name);
            sessions += 1;
            last_login = sim.now();
        }
        sim.advance_ms(1);
        for frame in std::mem::take(sim.inboxes.entry(observer).or_default()) {
            arrivals.push((sim.now() - start, sessions, names(&frame.value, "joined")));
        }
    }
    let times: Vec<Duration> = arrivals.iter().map(|(at, _, _)| *at).collect();
    assert!(arrivals.len() >= 3, "a flush at the start, at least one paid for in advance, the last: {times:?}");
    // Every flush while the logins went on came at least 10 ms x the sessions online then after the one before.
    for pair in arrivals.windows(2).filter(|pair| start + pair[1].0 <= last_login) {
        let (previous, (at, sessions, _)) = (pair[0].0, &pair[1]);
        let cost = Duration::from_millis(10 * *sessions as u64);
        assert!(
            *at - previous >= cost,
            "flush at {at:?}, {:?} after the one before, cost {cost:?}: {times:?}",
            *at - previous
        );
    }
    // The last one came one interval after the last login, far sooner than its cost (95 x 10 ms) after the one
    // before, and with it everyone was reported.
    let (last_at, _, _) = arrivals[arrivals.len() - 1];
    assert_eq!(start + last_at, last_login + interval, "{times:?}");
    let reported: BTreeSet<String> = arrivals.iter().flat_map(|(_, _, joined)| joined.iter().cloned()).collect();
    assert_eq!(reported, expected);
}

#[test]
fn a_flush_with_nothing_to_send_is_not_charged_to_the_frame_budget() {
    // 20 users listed: a 21st logs in unlisted, which schedules a flush that has nothing to send.
    let (mut sim, observer, leaver) = budgeted_lobby(Config { max_presence_users: 20, ..Config::default() });
    let interval = sim.config().presence_interval;
    sim.login("unlisted");
    assert!(sim.core.poll_timeout().is_some_and(|due| due <= sim.now() + interval), "a flush is scheduled");
    sim.advance(interval);
    sim.assert_silent(observer);

    // Then a leave, and more unlisted logins every 10 ms, so that the next flush must be paid for in advance. The
    // budget has paid for everything up to a second ago, so it goes out one interval after the leave; had the empty
    // flush been charged, it would have to wait until the logins stop (one interval after the last).
    sim.advance_ms(1);
    sim.send_json(leaver, &json!({"type":"logout"}));
    for i in 0..10 {
        sim.advance_ms(10);
        sim.login(&format!("extra{i}"));
    }
    // 100 ms after the leave now: its flush fired at 50 ms, while logins kept coming.
    let presence = sim.one(observer);
    assert_eq!(names(&presence, "left"), set(&["leaver"]), "{presence}");
    assert_eq!(names(&presence, "joined"), set(&["unlisted"]), "the unlisted user takes the place: {presence}");
}

#[test]
fn presence_reports_leaves_and_status_changes() {
    let mut sim = Sim::default_config();
    let observer = sim.login("observer");
    let alice = sim.login("alice");
    let bob = sim.login("bob");
    let carol = sim.login("carol");
    let dave = sim.login("dave");
    sim.settle();

    sim.send_json(carol, &json!({"type":"logout"}));
    sim.disconnect(dave); // waits for a resume: still online
    sim.send_json(alice, &json!({"type":"call","to":"bob"}));
    sim.tick();
    let presence = sim.one(observer);
    assert_eq!(presence["type"], "presence");
    assert!(presence.get("joined").is_none(), "empty arrays are omitted: {presence}");
    assert_eq!(names(&presence, "left"), set(&["carol"]));
    assert_eq!(entries(&presence, "changed"), status_map(&[("alice", "in-call"), ("bob", "in-call")]));
    sim.take(alice);
    let frames = sim.take(bob);
    let ring = of_type(&frames, "ring");
    assert_eq!(ring.len(), 1, "{frames:#?}");
    let call_id = ring[0]["callId"].as_str().unwrap().to_owned();

    sim.send_json(bob, &json!({"type":"reject","callId":call_id}));
    sim.tick();
    let presence = sim.one(observer);
    assert_eq!(entries(&presence, "changed"), status_map(&[("alice", "idle"), ("bob", "idle")]));
    assert!(presence.get("joined").is_none() && presence.get("left").is_none(), "{presence}");

    // dave's grace period ends: he leaves presence on the tick after.
    sim.advance(sim.config().resume_grace);
    sim.tick();
    let presence = sim.one(observer);
    assert_eq!(names(&presence, "left"), set(&["dave"]));
}

#[test]
fn someone_who_comes_and_goes_within_one_tick_is_reported_as_left() {
    let mut sim = Sim::default_config();
    let observer = sim.login("observer");
    sim.settle();
    let ghost = sim.login("ghost");
    sim.advance_ms(5);
    sim.send_json(ghost, &json!({"type":"logout","id":1}));
    assert_eq!(sim.closed(ghost), Some(4004));
    sim.tick();
    let presence = sim.one(observer);
    assert_eq!(names(&presence, "left"), set(&["ghost"]));
    assert!(presence.get("joined").is_none(), "{presence}");
}

#[test]
fn users_reply_reflects_the_list_after_a_tick() {
    let mut sim = Sim::default_config();
    let alice = sim.login("alice");
    let bob = sim.login("bob");
    let carol = sim.login("carol");
    sim.settle();
    sim.send_json(alice, &json!({"type":"call","to":"bob"}));
    sim.send_json(carol, &json!({"type":"logout"}));
    let dave = sim.login("dave");
    sim.settle();
    for id in [json!(3), json!("three")] {
        let frames = sim.request(dave, &json!({"type":"users","id":id}));
        assert_eq!(frames.len(), 1, "{frames:#?}");
        assert_eq!(frames[0]["type"], "users");
        assert_eq!(frames[0]["id"], id);
        assert_eq!(
            entries(&frames[0], "users"),
            status_map(&[("alice", "in-call"), ("bob", "in-call"), ("dave", "idle")])
        );
    }
    let frames = sim.request(bob, &json!({"type":"users"}));
    assert!(frames[0].get("id").is_none());
    assert_eq!(entries(&frames[0], "users").len(), 3);
}

/// A client that starts from `welcome.users` and applies every `presence` delta ends up with the true list.
#[test]
fn welcome_plus_presence_deltas_converge_to_the_online_list() {
    let mut sim = Sim::default_config();
    let mut views: Vec<(ConnId, BTreeMap<String, String>)> = Vec::new();
    fn login(sim: &mut Sim, name: &str, views: &mut Vec<(ConnId, BTreeMap<String, String>)>) -> ConnId {
        let (conn, welcome) = sim.login_welcome(name);
        views.push((conn, entries(&welcome, "users")));
        conn
    }
    let alice = login(&mut sim, "alice", &mut views);
    sim.advance_ms(10);
    login(&mut sim, "bob", &mut views);
    sim.advance_ms(10);
    let carol = login(&mut sim, "carol", &mut views);
    sim.send_json(carol, &json!({"type":"logout"}));
    sim.advance_ms(10);
    sim.send_json(alice, &json!({"type":"call","to":"bob"}));
    sim.advance_ms(45);
    login(&mut sim, "dave", &mut views);
    sim.send_json(alice, &json!({"type":"logout"}));
    sim.advance_ms(10);
    let erin = login(&mut sim, "erin", &mut views);
    sim.advance(Duration::from_secs(1));
    let truth = status_map(&[("bob", "idle"), ("dave", "idle"), ("erin", "idle")]);
    for (conn, mut view) in views {
        if [alice, carol].contains(&conn) {
            continue;
        }
        for frame in sim.take(conn) {
            if frame["type"] == "presence" {
                apply_presence(&mut view, &frame);
            }
        }
        assert_eq!(view, truth, "view of {conn:?}");
    }
    let frames = sim.request(erin, &json!({"type":"users"}));
    assert_eq!(entries(&frames[0], "users"), truth);
}

// ---------------------------------------------------------------------------------------------------------------
// Relay
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn relay_stamps_from_and_passes_payloads_byte_for_byte() {
    let mut sim = Sim::default_config();
    let alice = sim.login("alice");
    let bob = sim.login("Bob");
    sim.settle();

    // Addressed case-insensitively; the client's `from` and `name` are ignored.
    sim.send(
        alice,
        &format!(
            r#"{{"type":"offer","id":7,"to":"BOB","from":"mallory","name":"mallory","callId":"c-1","sdp":{SDP}}}"#
        ),
    );
    assert_eq!(sim.take(alice), vec![json!({"type":"ack","id":7})]);
    let frames = sim.take_frames(bob);
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].value, json!({"type":"offer","from":"alice","callId":"c-1","sdp":parsed(SDP)}));
    assert!(frames[0].raw.contains(SDP), "sdp not byte-identical: {}", frames[0].raw);

    sim.send(bob, &format!(r#"{{"type":"answer","to":"alice","from":"alice","callId":"c-1","sdp":{SDP_ANSWER}}}"#));
    sim.assert_silent(bob);
    let frames = sim.take_frames(alice);
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].value, json!({"type":"answer","from":"Bob","callId":"c-1","sdp":parsed(SDP_ANSWER)}));
    assert!(frames[0].raw.contains(SDP_ANSWER), "{}", frames[0].raw);

    sim.send(alice, &format!(r#"{{"type":"candidate","to":"bob","id":"c","candidate":{CANDIDATE}}}"#));
    assert_eq!(sim.take(alice), vec![json!({"type":"ack","id":"c"})]);
    let frames = sim.take_frames(bob);
    assert_eq!(frames[0].value, json!({"type":"candidate","from":"alice","candidate":parsed(CANDIDATE)}));
    assert!(frames[0].raw.contains(CANDIDATE));

    sim.send_json(alice, &json!({"type":"end-of-candidates","to":"bob","from":"eve"}));
    sim.assert_silent(alice);
    assert_eq!(sim.one(bob), json!({"type":"end-of-candidates","from":"alice"}));
}

#[test]
fn relay_preserves_order_between_one_sender_and_one_target() {
    let mut sim = Sim::default_config();
    let alice = sim.login("alice");
    let bob = sim.login("bob");
    sim.settle();
    for i in 0..50 {
        sim.send_json(alice, &json!({"type":"candidate","to":"bob","candidate":{"candidate":format!("c{i}")}}));
    }
    let got: Vec<String> =
        sim.take(bob).iter().map(|f| f["candidate"]["candidate"].as_str().unwrap().to_owned()).collect();
    let want: Vec<String> = (0..50).map(|i| format!("c{i}")).collect();
    assert_eq!(got, want);
}

/// A sender's messages follow a name to whichever session holds it now: after the peer logs out, after it logs in
/// again, after a replace, and whatever case the sender writes the name in.
#[test]
fn relays_follow_a_name_to_the_session_that_holds_it_now() {
    let mut sim = Sim::new(Config { name_policy: NamePolicy::Replace, ..Config::default() });
    let alice = sim.login("alice");
    let bob = sim.login("bob");
    let carol = sim.login("carol");
    sim.settle();
    let candidate = |to: &str, n: u32| json!({"type":"candidate","to":to,"candidate":{"candidate":format!("c{n}")}});
    let got = |frames: Vec<Value>| -> Vec<String> {
        of_type(&frames, "candidate").iter().map(|f| f["candidate"]["candidate"].as_str().unwrap().to_owned()).collect()
    };
    sim.send_json(alice, &candidate("bob", 1));
    sim.send_json(alice, &candidate("carol", 2));
    sim.send_json(alice, &candidate("BOB", 3));
    assert_eq!(got(sim.take(bob)), ["c1", "c3"]);
    assert_eq!(got(sim.take(carol)), ["c2"]);

    assert!(sim.request(bob, &json!({"type":"logout"})).iter().all(|f| f["type"] != "error"));
    sim.settle();
    single_error(&sim.request(alice, &candidate("bob", 4)), "unknown-peer");

    let bob_again = sim.login("Bob");
    sim.settle();
    sim.clear_inboxes();
    sim.send_json(alice, &candidate("bob", 5));
    assert_eq!(got(sim.take(bob_again)), ["c5"]);

    let bob_replaced = sim.login("bob");
    sim.settle();
    sim.clear_inboxes();
    sim.send_json(alice, &candidate("bob", 6));
    assert_eq!(got(sim.take(bob_replaced)), ["c6"]);
    assert!(sim.take(bob_again).is_empty());
    assert!(sim.take(bob).is_empty());
}

#[test]
fn request_ids_are_echoed_numbers_and_strings() {
    let mut sim = Sim::default_config();
    let alice = sim.login("alice");
    sim.login("bob");
    sim.settle();
    for id in [json!(0), json!(7), json!(-3), json!(1.5), json!("r-1"), json!(""), json!("ü")] {
        let frames = sim.request(alice, &json!({"type":"end-of-candidates","to":"bob","id":id}));
        assert_eq!(frames, vec![json!({"type":"ack","id":id})]);
        let frames = sim.request(alice, &json!({"type":"call","to":"zed","id":id}));
        let error = single_error(&frames, "unknown-peer");
        assert_eq!(error["id"], id);
    }
    // Without an id: no ack, and errors without id.
    assert!(sim.request(alice, &json!({"type":"end-of-candidates","to":"bob"})).is_empty());
    let error = single_error(&sim.request(alice, &json!({"type":"call","to":"zed"})), "unknown-peer");
    assert!(error.get("id").is_none());
    // Ids that are neither a short number nor a short string.
    for id in [json!({"a":1}), json!([1]), json!(true), json!("x".repeat(100))] {
        let frames = sim.request(alice, &json!({"type":"ping","id":id}));
        let error = single_error(&frames, "bad-request");
        assert!(error.get("id").is_none(), "{error}");
    }
}

/// docs/protocol.md: "Any request may carry "id": a JSON number or a string of at most 64 bytes."
#[test]
fn request_id_string_of_64_bytes_is_accepted() {
    let mut sim = Sim::default_config();
    let alice = sim.login("alice");
    let id = "i".repeat(64);
    let frames = sim.request(alice, &json!({"type":"ping","id":id}));
    assert_eq!(frames, vec![json!({"type":"pong","id":id})]);
}

#[test]
fn relay_errors_unknown_peer_self_and_missing_fields() {
    let mut sim = Sim::default_config();
    let alice = sim.login("alice");
    let bob = sim.login("bob");
    sim.settle();
    let error = single_error(
        &sim.request(alice, &json!({"type":"offer","id":1,"to":"zed","sdp":{"type":"offer","sdp":"v=0"}})),
        "unknown-peer",
    );
    assert_eq!(error["id"], 1);
    single_error(&sim.request(alice, &json!({"type":"candidate","to":"zed","candidate":{}})), "unknown-peer");
    single_error(&sim.request(alice, &json!({"type":"offer","to":"ALICE","sdp":{}})), "bad-request");
    single_error(&sim.request(alice, &json!({"type":"offer","to":"bob"})), "bad-request");
    single_error(&sim.request(alice, &json!({"type":"offer","sdp":{}})), "bad-request");
    single_error(&sim.request(alice, &json!({"type":"candidate","to":"bob"})), "bad-request");
    single_error(&sim.request(alice, &json!({"type":"answer","to":"bob","sdp":{},"id":{"x":1}})), "bad-request");
    single_error(&sim.request(alice, &json!({"type":"offer","to":5,"sdp":{}})), "bad-json");
    sim.assert_silent(bob);
    assert_eq!(sim.closed(alice), None);
}

#[test]
fn oversized_frames_and_payloads_get_too_large() {
    let config = Config { max_message_bytes: 1000, max_sdp_bytes: 100, max_candidate_bytes: 60, ..Config::default() };
    let mut sim = Sim::new(config);
    let alice = sim.login("alice");
    let bob = sim.login("bob");
    sim.settle();

    // An sdp of exactly the cap passes, one byte more does not.
    let at_cap = format!(r#"{{"sdp":"{}"}}"#, "x".repeat(90));
    assert_eq!(at_cap.len(), 100);
    sim.send(alice, &format!(r#"{{"type":"offer","id":1,"to":"bob","sdp":{at_cap}}}"#));
    assert_eq!(sim.take(alice), vec![json!({"type":"ack","id":1})]);
    assert_eq!(sim.one(bob)["sdp"], parsed(&at_cap));
    let over = format!(r#"{{"sdp":"{}"}}"#, "x".repeat(91));
    for kind in ["offer", "answer"] {
        sim.send(alice, &format!(r#"{{"type":"{kind}","id":2,"to":"bob","sdp":{over}}}"#));
        let error = single_error(&sim.take(alice), "too-large");
        assert_eq!(error["id"], 2);
    }
    let candidate = format!(r#"{{"candidate":"{}"}}"#, "c".repeat(50));
    assert!(candidate.len() > 60);
    sim.send(alice, &format!(r#"{{"type":"candidate","to":"bob","candidate":{candidate}}}"#));
    single_error(&sim.take(alice), "too-large");
    sim.assert_silent(bob);

    // The whole frame over max_message_bytes.
    let big = format!(r#"{{"type":"ping","pad":"{}"}}"#, "p".repeat(1000));
    sim.send(alice, &big);
    single_error(&sim.take(alice), "too-large");
    // The transport reports a frame it discarded; binary frames.
    sim.input(Input::TooLarge(alice, 500_000));
    single_error(&sim.take(alice), "too-large");
    sim.input(Input::Binary(alice));
    single_error(&sim.take(alice), "binary-frame");
    // Payloads nested deeper than 16 levels.
    let deep = format!("{}1{}", "[".repeat(17), "]".repeat(17));
    sim.send(alice, &format!(r#"{{"type":"candidate","to":"bob","candidate":{deep}}}"#));
    single_error(&sim.take(alice), "bad-json");
    let ok = format!("{}1{}", "[".repeat(16), "]".repeat(16));
    sim.send(alice, &format!(r#"{{"type":"candidate","to":"bob","candidate":{ok}}}"#));
    sim.assert_silent(alice);
    assert_eq!(sim.one(bob)["type"], "candidate");
    assert_eq!(sim.closed(alice), None);
}

// ---------------------------------------------------------------------------------------------------------------
// Rate limit and strikes
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn bursts_beyond_rate_burst_are_rate_limited_and_dropped() {
    let config = Config { rate_burst: 5, rate_per_second: 2, ..Config::default() };
    let mut sim = Sim::new(config);
    let alice = sim.login("alice");
    let bob = sim.login("bob");
    sim.advance(Duration::from_secs(10)); // buckets full again
    sim.take(alice);
    sim.take(bob);

    for i in 0..5 {
        assert_eq!(sim.request(alice, &json!({"type":"ping","id":i})), vec![json!({"type":"pong","id":i})]);
    }
    single_error(&sim.request(alice, &json!({"type":"ping","id":5})), "rate-limited");
    // The limited message is dropped.
    let frames = sim.request(alice, &json!({"type":"end-of-candidates","to":"bob","id":6}));
    single_error(&frames, "rate-limited");
    sim.assert_silent(bob);
    // Other users are not affected.
    assert_eq!(sim.request(bob, &json!({"type":"ping"})), vec![json!({"type":"pong"})]);
    // Refill at rate_per_second.
    sim.advance_ms(500);
    assert_eq!(sim.request(alice, &json!({"type":"ping"})), vec![json!({"type":"pong"})]);
    single_error(&sim.request(alice, &json!({"type":"ping"})), "rate-limited");
    assert_eq!(sim.closed(alice), None);
}

#[test]
fn too_many_errors_close_the_connection_with_1008_without_affecting_others() {
    let config = Config { strike_burst: 5, ..Config::default() };
    let mut sim = Sim::new(config);
    let alice = sim.login("alice");
    let bob = sim.login("bob");
    let carol = sim.login("carol");
    sim.settle();

    for _ in 0..5 {
        single_error(&sim.request(alice, &json!({"type":"dance"})), "unknown-type");
        assert_eq!(sim.closed(alice), None);
    }
    // One more than strike_burst.
    sim.send(alice, "{nope");
    single_error(&sim.take(alice), "bad-json");
    assert_eq!(sim.closed(alice), Some(1008));
    // Further input on the closed connection is ignored (the harness checks nothing is sent after a close).
    sim.send_json(alice, &json!({"type":"ping"}));
    sim.send_json(alice, &json!({"type":"offer","to":"bob","sdp":{}}));

    sim.assert_silent(bob);
    sim.assert_silent(carol);
    sim.send_json(bob, &json!({"type":"end-of-candidates","to":"carol","id":1}));
    assert_eq!(sim.take(bob), vec![json!({"type":"ack","id":1})]);
    assert_eq!(sim.one(carol), json!({"type":"end-of-candidates","from":"bob"}));
    assert_eq!(sim.closed(bob), None);
    assert_eq!(sim.closed(carol), None);
}

#[test]
fn strikes_refill_one_per_second() {
    let config = Config { strike_burst: 3, ..Config::default() };
    let mut sim = Sim::new(config);
    let alice = sim.login("alice");
    for _ in 0..3 {
        sim.send(alice, "]");
    }
    assert_eq!(sim.take(alice).len(), 3);
    sim.advance(Duration::from_secs(1));
    sim.send(alice, "]");
    assert_eq!(sim.closed(alice), None, "a strike came back after one second");
    sim.send(alice, "]");
    assert_eq!(sim.closed(alice), Some(1008));
}

// ---------------------------------------------------------------------------------------------------------------
// Calls
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn call_ring_accept_hangup_and_presence_status() {
    let mut sim = Sim::default_config();
    let alice = sim.login("alice");
    let bob = sim.login("bob");
    let observer = sim.login("observer");
    sim.settle();

    let frames = sim.request(alice, &json!({"type":"call","id":4,"to":"BOB"}));
    assert_eq!(frames.len(), 1, "{frames:#?}");
    let ringing = &frames[0];
    assert_eq!(ringing["type"], "ringing");
    assert_eq!(ringing["id"], 4);
    assert_eq!(ringing["to"], "bob");
    let call_id = ringing["callId"].as_str().unwrap().to_owned();
    assert!(!call_id.is_empty());
    assert_eq!(sim.one(bob), json!({"type":"ring","callId":call_id,"from":"alice"}));
    assert_eq!(sim.core.stats().calls, 1);

    sim.tick();
    let presence = sim.one(observer);
    assert_eq!(entries(&presence, "changed"), status_map(&[("alice", "in-call"), ("bob", "in-call")]));
    sim.take(alice);
    sim.take(bob);

    assert_eq!(sim.request(bob, &json!({"type":"accept","id":5,"callId":call_id})), vec![json!({"type":"ack","id":5})]);
    assert_eq!(sim.one(alice), json!({"type":"accepted","callId":call_id,"from":"bob"}));
    // Accepting twice is the wrong state.
    single_error(&sim.request(bob, &json!({"type":"accept","callId":call_id})), "unknown-call");
    // No ring timeout for an accepted call.
    sim.advance(sim.config().ring_timeout * 2);
    sim.assert_silent(alice);
    sim.assert_silent(bob);
    sim.assert_silent(observer);

    // The caller sends the offer with the call id; relayed as usual.
    sim.send(alice, &format!(r#"{{"type":"offer","to":"bob","callId":"{call_id}","sdp":{SDP}}}"#));
    assert_eq!(sim.one(bob)["callId"], call_id.as_str());

    assert_eq!(sim.request(bob, &json!({"type":"hangup","id":6,"callId":call_id})), vec![json!({"type":"ack","id":6})]);
    assert_eq!(sim.one(alice), json!({"type":"hangup","callId":call_id,"from":"bob","reason":"hangup"}));
    assert_eq!(sim.core.stats().calls, 0);
    single_error(&sim.request(alice, &json!({"type":"hangup","callId":call_id})), "unknown-call");
    sim.tick();
    let presence = sim.one(observer);
    assert_eq!(entries(&presence, "changed"), status_map(&[("alice", "idle"), ("bob", "idle")]));
    sim.take(bob);

    // Both can call again.
    let frames = sim.request(bob, &json!({"type":"call","to":"alice"}));
    assert_eq!(frames[0]["type"], "ringing");
}

#[test]
fn call_errors_busy_already_in_call_self_unknown_peer() {
    let mut sim = Sim::default_config();
    let alice = sim.login("alice");
    let bob = sim.login("bob");
    let carol = sim.login("carol");
    let dave = sim.login("dave");
    sim.settle();

    sim.send_json(alice, &json!({"type":"call","to":"bob"}));
    sim.take(alice);
    sim.take(bob);
    // Ringing callee and ringing caller are both busy.
    let error = single_error(&sim.request(carol, &json!({"type":"call","id":"b","to":"bob"})), "busy");
    assert_eq!(error["id"], "b");
    single_error(&sim.request(carol, &json!({"type":"call","to":"alice"})), "busy");
    // The caller and the callee cannot place another call.
    single_error(&sim.request(alice, &json!({"type":"call","to":"carol"})), "already-in-call");
    single_error(&sim.request(bob, &json!({"type":"call","to":"carol"})), "already-in-call");
    single_error(&sim.request(carol, &json!({"type":"call","to":"Carol"})), "bad-request");
    single_error(&sim.request(carol, &json!({"type":"call","to":"zed"})), "unknown-peer");
    single_error(&sim.request(carol, &json!({"type":"call"})), "bad-request");
    sim.assert_silent(alice);
    sim.assert_silent(bob);

    // Busy also once active.
    let call_id = sim.call_ids.last().unwrap().clone();
    sim.send_json(bob, &json!({"type":"accept","callId":call_id}));
    sim.take(alice);
    sim.take(bob);
    single_error(&sim.request(dave, &json!({"type":"call","to":"alice"})), "busy");
    // Requests on a call one is not part of.
    for kind in ["accept", "reject", "cancel", "hangup"] {
        single_error(&sim.request(carol, &json!({"type":kind,"callId":call_id})), "unknown-call");
        single_error(&sim.request(carol, &json!({"type":kind,"callId":"nope"})), "unknown-call");
        single_error(&sim.request(carol, &json!({"type":kind})), "bad-request");
    }
    // Wrong state: reject and cancel on an active call, accept by the caller.
    single_error(&sim.request(bob, &json!({"type":"reject","callId":call_id})), "unknown-call");
    single_error(&sim.request(alice, &json!({"type":"cancel","callId":call_id})), "unknown-call");
    single_error(&sim.request(alice, &json!({"type":"accept","callId":call_id})), "unknown-call");
    sim.assert_silent(alice);
    sim.assert_silent(bob);
    assert_eq!(sim.core.stats().calls, 1);
}

#[test]
fn reject_and_cancel_end_a_ringing_call() {
    let mut sim = Sim::default_config();
    let alice = sim.login("alice");
    let bob = sim.login("bob");
    sim.settle();

    // Reject.
    let ringing = sim.request(alice, &json!({"type":"call","to":"bob"}));
    let call_id = ringing[0]["callId"].as_str().unwrap().to_owned();
    sim.take(bob);
    // The caller cannot accept or reject its own call.
    single_error(&sim.request(alice, &json!({"type":"accept","callId":call_id})), "unknown-call");
    single_error(&sim.request(alice, &json!({"type":"reject","callId":call_id})), "unknown-call");
    // The callee cannot cancel it.
    single_error(&sim.request(bob, &json!({"type":"cancel","callId":call_id})), "unknown-call");
    assert_eq!(sim.request(bob, &json!({"type":"reject","id":5,"callId":call_id})), vec![json!({"type":"ack","id":5})]);
    assert_eq!(sim.one(alice), json!({"type":"hangup","callId":call_id,"from":"bob","reason":"rejected"}));
    assert_eq!(sim.core.stats().calls, 0);

    // Cancel.
    let ringing = sim.request(alice, &json!({"type":"call","to":"bob"}));
    let call_id2 = ringing[0]["callId"].as_str().unwrap().to_owned();
    assert_ne!(call_id, call_id2);
    sim.take(bob);
    assert!(sim.request(alice, &json!({"type":"cancel","callId":call_id2})).is_empty(), "no id, no ack");
    assert_eq!(sim.one(bob), json!({"type":"hangup","callId":call_id2,"from":"alice","reason":"cancelled"}));
    // The cancelled call does not time out later.
    sim.advance(sim.config().ring_timeout * 2);
    for conn in [alice, bob] {
        let frames = sim.take(conn);
        assert!(frames.iter().all(|f| f["type"] == "presence"), "{frames:#?}");
    }
}

#[test]
fn hangup_on_a_ringing_call_acts_as_cancel_or_reject() {
    let mut sim = Sim::default_config();
    let alice = sim.login("alice");
    let bob = sim.login("bob");
    sim.settle();

    let call_id = sim.request(alice, &json!({"type":"call","to":"bob"}))[0]["callId"].as_str().unwrap().to_owned();
    sim.take(bob);
    sim.send_json(alice, &json!({"type":"hangup","callId":call_id}));
    assert_eq!(sim.one(bob), json!({"type":"hangup","callId":call_id,"from":"alice","reason":"cancelled"}));

    let call_id = sim.request(alice, &json!({"type":"call","to":"bob"}))[0]["callId"].as_str().unwrap().to_owned();
    sim.take(bob);
    sim.send_json(bob, &json!({"type":"hangup","callId":call_id}));
    assert_eq!(sim.one(alice), json!({"type":"hangup","callId":call_id,"from":"bob","reason":"rejected"}));
    assert_eq!(sim.core.stats().calls, 0);
}

#[test]
fn an_unanswered_call_ends_with_no_answer_after_the_ring_timeout() {
    let config = Config { ring_timeout: Duration::from_secs(10), ..Config::default() };
    let mut sim = Sim::new(config);
    let alice = sim.login("alice");
    let bob = sim.login("bob");
    let observer = sim.login("observer");
    sim.settle();

    let call_id = sim.request(alice, &json!({"type":"call","to":"bob"}))[0]["callId"].as_str().unwrap().to_owned();
    sim.settle();
    sim.advance(Duration::from_secs(10) - Duration::from_millis(51));
    sim.assert_silent(alice);
    sim.assert_silent(bob);
    assert_eq!(sim.core.stats().calls, 1);
    sim.advance_ms(1);
    let expected = json!({"type":"hangup","callId":call_id,"from":"bob","reason":"no-answer"});
    assert_eq!(sim.one(alice), expected);
    assert_eq!(sim.one(bob), expected);
    assert_eq!(sim.core.stats().calls, 0);
    single_error(&sim.request(bob, &json!({"type":"accept","callId":call_id})), "unknown-call");
    sim.tick();
    let presence = sim.one(observer);
    assert_eq!(entries(&presence, "changed"), status_map(&[("alice", "idle"), ("bob", "idle")]));
}

// ---------------------------------------------------------------------------------------------------------------
// Rooms
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn join_and_leave_rooms() {
    let mut sim = Sim::default_config();
    let alice = sim.login("alice");
    let bob = sim.login("bob");
    let carol = sim.login("carol");
    let outsider = sim.login("outsider");
    sim.settle();

    let frames = sim.request(alice, &json!({"type":"join","id":6,"room":"standup"}));
    assert_eq!(frames, vec![json!({"type":"joined","id":6,"room":"standup","members":["alice"]})]);
    assert_eq!(sim.join(bob, "STANDUP"), json!({"type":"joined","room":"standup","members":["alice","bob"]}));
    assert_eq!(sim.one(alice), json!({"type":"member-joined","room":"standup","name":"bob"}));
    assert_eq!(sim.join(carol, "standup")["members"], json!(["alice", "bob", "carol"]));
    for conn in [alice, bob] {
        assert_eq!(sim.one(conn), json!({"type":"member-joined","room":"standup","name":"carol"}));
    }
    // Joining again replies again and tells nobody.
    assert_eq!(sim.join(alice, "standup")["members"], json!(["alice", "bob", "carol"]));
    sim.assert_silent(bob);
    sim.assert_silent(carol);
    assert_eq!(sim.core.stats().rooms, 1);
    // Room membership does not show in presence.
    sim.tick();
    sim.assert_silent(outsider);

    let frames = sim.request(bob, &json!({"type":"leave","id":7,"room":"standup"}));
    assert_eq!(frames, vec![json!({"type":"left","id":7,"room":"standup"})]);
    for conn in [alice, carol] {
        assert_eq!(sim.one(conn), json!({"type":"member-left","room":"standup","name":"bob","reason":"left"}));
    }
    let error = single_error(&sim.request(bob, &json!({"type":"leave","id":8,"room":"standup"})), "not-in-room");
    assert_eq!(error["id"], 8);
    single_error(&sim.request(outsider, &json!({"type":"leave","room":"nowhere"})), "not-in-room");
    single_error(&sim.request(outsider, &json!({"type":"join","room":""})), "invalid-room");
    single_error(&sim.request(outsider, &json!({"type":"join","room":" x"})), "invalid-room");
    single_error(&sim.request(outsider, &json!({"type":"join","room":"<script>"})), "invalid-room");
    single_error(&sim.request(outsider, &json!({"type":"join"})), "bad-request");

    sim.send_json(alice, &json!({"type":"leave","room":"standup"}));
    sim.send_json(carol, &json!({"type":"leave","room":"Standup"}));
    assert_eq!(sim.core.stats().rooms, 0, "empty rooms disappear");
    assert_eq!(sim.join(bob, "standup")["members"], json!(["bob"]));
}

#[test]
fn room_full_and_too_many_rooms() {
    let config = Config { max_room_size: 2, max_rooms_per_user: 2, ..Config::default() };
    let mut sim = Sim::new(config);
    let alice = sim.login("alice");
    let bob = sim.login("bob");
    let carol = sim.login("carol");
    sim.settle();

    sim.join(alice, "r1");
    sim.join(alice, "r2");
    let error = single_error(&sim.request(alice, &json!({"type":"join","id":1,"room":"r3"})), "too-many-rooms");
    assert_eq!(error["id"], 1);
    // Re-joining a room one is in is not a new room.
    sim.join(alice, "r1");
    sim.join(bob, "r1");
    sim.take(alice);
    let error = single_error(&sim.request(carol, &json!({"type":"join","id":2,"room":"r1"})), "room-full");
    assert_eq!(error["id"], 2);
    sim.assert_silent(alice);
    sim.assert_silent(bob);
    // Re-joining a full room one is in still works.
    assert_eq!(sim.join(bob, "r1")["members"], json!(["alice", "bob"]));
    sim.send_json(bob, &json!({"type":"leave","room":"r1"}));
    assert_eq!(sim.join(carol, "r1")["members"], json!(["alice", "carol"]));
    sim.send_json(alice, &json!({"type":"leave","room":"r2"}));
    sim.join(alice, "r3");
}

#[test]
fn room_relay_needs_both_in_the_room_and_carries_the_room() {
    let mut sim = Sim::default_config();
    let alice = sim.login("alice");
    let bob = sim.login("bob");
    let carol = sim.login("carol");
    sim.settle();
    sim.join(alice, "standup");
    sim.join(bob, "standup");
    sim.take(alice);

    sim.send(alice, &format!(r#"{{"type":"offer","id":1,"to":"bob","room":"standup","sdp":{SDP}}}"#));
    assert_eq!(sim.take(alice), vec![json!({"type":"ack","id":1})]);
    let offer = sim.one(bob);
    assert_eq!(offer, json!({"type":"offer","from":"alice","room":"standup","sdp":parsed(SDP)}));

    // Target not in the room.
    let error = single_error(
        &sim.request(alice, &json!({"type":"candidate","id":2,"to":"carol","room":"standup","candidate":{}})),
        "not-in-room",
    );
    assert_eq!(error["id"], 2);
    // Sender not in the room.
    single_error(
        &sim.request(carol, &json!({"type":"candidate","to":"bob","room":"standup","candidate":{}})),
        "not-in-room",
    );
    // A room that does not exist.
    single_error(&sim.request(alice, &json!({"type":"end-of-candidates","to":"bob","room":"nope"})), "not-in-room");
    sim.assert_silent(bob);
    sim.assert_silent(carol);
}

// ---------------------------------------------------------------------------------------------------------------
// Resume, grace, logout
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn resume_delivers_messages_queued_during_grace_in_order() {
    let mut sim = Sim::default_config();
    let (alice, welcome) = sim.login_welcome("alice");
    let old_token = welcome["resumeToken"].as_str().unwrap().to_owned();
    let bob = sim.login("bob");
    let observer = sim.login("observer");
    sim.join(alice, "standup");
    sim.join(bob, "standup");
    let call_id = sim.active_call(alice, bob, "bob");
    sim.settle();

    sim.disconnect(alice);
    // Nobody is told: the session waits.
    sim.tick();
    sim.assert_silent(bob);
    sim.assert_silent(observer);

    sim.send(bob, &format!(r#"{{"type":"offer","id":1,"to":"alice","callId":"{call_id}","sdp":{SDP}}}"#));
    sim.send(bob, &format!(r#"{{"type":"candidate","id":2,"to":"alice","candidate":{CANDIDATE}}}"#));
    sim.send_json(bob, &json!({"type":"end-of-candidates","id":3,"to":"alice","room":"standup"}));
    assert_eq!(
        sim.take(bob),
        vec![json!({"type":"ack","id":1}), json!({"type":"ack","id":2}), json!({"type":"ack","id":3})]
    );
    sim.advance(Duration::from_secs(10));

    let conn = sim.connect();
    sim.send_json(conn, &json!({"type":"login","id":"r","resume":old_token}));
    let frames = sim.take_frames(conn);
    let values: Vec<&Value> = frames.iter().map(|f| &f.value).collect();
    assert_eq!(frames.len(), 5, "{values:#?}");
    assert_eq!(values[0]["type"], "hello");
    let welcome = values[1];
    assert_eq!(welcome["type"], "welcome");
    assert_eq!(welcome["id"], "r");
    assert_eq!(welcome["resumed"], true);
    assert_eq!(welcome["name"], "alice");
    let new_token = welcome["resumeToken"].as_str().unwrap();
    assert_ne!(new_token, old_token, "resume gives a new token");
    assert_eq!(
        entries(welcome, "users"),
        status_map(&[("alice", "in-call"), ("bob", "in-call"), ("observer", "idle")])
    );
    assert_eq!(welcome["rooms"], json!([{"room":"standup","members":["alice","bob"]}]));
    assert_eq!(welcome["call"], json!({"callId":call_id,"peer":"bob","caller":true,"state":"active"}));
    assert_eq!(values[2], &json!({"type":"offer","from":"bob","callId":call_id,"sdp":parsed(SDP)}));
    assert!(frames[2].raw.contains(SDP));
    assert_eq!(values[3], &json!({"type":"candidate","from":"bob","candidate":parsed(CANDIDATE)}));
    assert_eq!(values[4], &json!({"type":"end-of-candidates","from":"bob","room":"standup"}));

    // The old token is spent.
    let other = sim.connect();
    let frames = sim.request(other, &json!({"type":"login","id":9,"resume":old_token}));
    let error = single_error(&frames[1..], "resume-failed");
    assert_eq!(error["id"], 9);

    // The grace deadline passes without effect; the call and room are intact.
    sim.advance(sim.config().resume_grace * 2);
    sim.assert_silent(bob);
    sim.assert_silent(observer);
    sim.assert_silent(conn);
    assert_eq!(sim.core.stats().calls, 1);
    sim.send_json(bob, &json!({"type":"hangup","callId":call_id}));
    assert_eq!(sim.one(conn)["reason"], "hangup");
}

#[test]
fn resume_while_the_old_connection_is_open_closes_it_with_4001() {
    let mut sim = Sim::default_config();
    let (old, welcome) = sim.login_welcome("alice");
    let token = welcome["resumeToken"].as_str().unwrap().to_owned();
    let bob = sim.login("bob");
    sim.settle();

    let new = sim.connect();
    let frames = sim.request(new, &json!({"type":"login","resume":token}));
    assert_eq!(frames.len(), 2, "{frames:#?}");
    assert_eq!(frames[1]["resumed"], true);
    assert_eq!(sim.closed(old), Some(4001));
    assert_eq!(sim.closed(new), None);
    sim.assert_silent(old);

    // The old connection's late input and close change nothing.
    sim.send_json(old, &json!({"type":"logout"}));
    sim.disconnect(old);
    sim.advance(sim.config().resume_grace * 2);
    sim.assert_silent(bob);
    sim.send_json(bob, &json!({"type":"end-of-candidates","to":"alice","id":1}));
    assert_eq!(sim.take(bob), vec![json!({"type":"ack","id":1})]);
    assert_eq!(sim.one(new), json!({"type":"end-of-candidates","from":"bob"}));
}

#[test]
fn resume_before_the_first_tick_lists_self() {
    let mut sim = Sim::default_config();
    let (old, welcome) = sim.login_welcome("alice");
    let token = welcome["resumeToken"].as_str().unwrap().to_owned();
    sim.advance_ms(1);
    sim.disconnect(old);
    let new = sim.connect();
    let frames = sim.request(new, &json!({"type":"login","resume":token}));
    assert_eq!(frames[1]["type"], "welcome");
    assert!(
        entries(&frames[1], "users").contains_key("alice"),
        "welcome users must include the user itself: {}",
        frames[1]
    );
}

#[test]
fn resume_failed_for_unknown_tokens() {
    let mut sim = Sim::default_config();
    let conn = sim.connect();
    let frames = sim.request(conn, &json!({"type":"login","id":1,"resume":"nope"}));
    let error = single_error(&frames[1..], "resume-failed");
    assert_eq!(error["id"], 1);
    // The client then logs in afresh on the same connection.
    let frames = sim.request(conn, &json!({"type":"login","name":"alice"}));
    assert_eq!(frames[0]["type"], "welcome");
}

#[test]
fn grace_expiry_ends_the_session_for_everyone() {
    let mut sim = Sim::default_config();
    let (alice, welcome) = sim.login_welcome("alice");
    let token = welcome["resumeToken"].as_str().unwrap().to_owned();
    let bob = sim.login("bob");
    let carol = sim.login("carol");
    sim.join(alice, "r");
    sim.join(carol, "r");
    let call_id = sim.active_call(alice, bob, "bob");
    sim.settle();

    sim.disconnect(alice);
    sim.advance_ms(100);
    sim.send_json(bob, &json!({"type":"end-of-candidates","id":9,"to":"alice"}));
    assert_eq!(sim.take(bob), vec![json!({"type":"ack","id":9})]);
    sim.send(carol, &format!(r#"{{"type":"candidate","id":"c1","to":"alice","room":"r","candidate":{CANDIDATE}}}"#));
    assert_eq!(sim.take(carol), vec![json!({"type":"ack","id":"c1"})]);
    sim.send_json(carol, &json!({"type":"end-of-candidates","to":"alice"})); // no id: an error without id

    let grace = sim.config().resume_grace;
    sim.advance(grace - Duration::from_millis(101));
    sim.assert_silent(bob);
    sim.assert_silent(carol);
    assert_eq!(sim.core.stats().sessions, 3);
    sim.advance_ms(1);

    let frames = sim.take(bob);
    assert_eq!(frames.len(), 2, "{frames:#?}");
    assert!(frames.contains(&json!({"type":"hangup","callId":call_id,"from":"alice","reason":"disconnected"})));
    let undeliverable = of_type(&frames, "error");
    assert_eq!(undeliverable.len(), 1);
    assert_error(undeliverable[0], "undeliverable");
    assert_eq!(undeliverable[0]["id"], 9);
    assert_eq!(undeliverable[0]["to"], "alice");

    let frames = sim.take(carol);
    assert_eq!(frames.len(), 3, "{frames:#?}");
    assert!(frames.contains(&json!({"type":"member-left","room":"r","name":"alice","reason":"disconnected"})));
    let undeliverable = of_type(&frames, "error");
    assert_eq!(undeliverable.len(), 2, "{frames:#?}");
    for error in &undeliverable {
        assert_error(error, "undeliverable");
        assert_eq!(error["to"], "alice");
    }
    // In the order the messages were sent.
    assert_eq!(undeliverable[0]["id"], "c1");
    assert!(undeliverable[1].get("id").is_none());
    assert_eq!(sim.core.stats().sessions, 2);
    assert_eq!(sim.core.stats().calls, 0);
    assert_eq!(sim.core.stats().rooms, 1);

    sim.tick();
    for conn in [bob, carol] {
        let presence = sim.one(conn);
        assert_eq!(names(&presence, "left"), set(&["alice"]));
    }
    // The name is free again, the token dead.
    let conn = sim.connect();
    let frames = sim.request(conn, &json!({"type":"login","resume":token}));
    single_error(&frames[1..], "resume-failed");
    let frames = sim.request(conn, &json!({"type":"login","name":"alice"}));
    assert_eq!(frames[0]["type"], "welcome");
    assert_eq!(frames[0]["resumed"], false);
}

#[test]
fn a_full_resume_queue_gives_undeliverable_at_once() {
    let config = Config { resume_queue_messages: 2, resume_queue_bytes: 1000, ..Config::default() };
    let mut sim = Sim::new(config);
    let (alice, welcome) = sim.login_welcome("alice");
    let token = welcome["resumeToken"].as_str().unwrap().to_owned();
    let bob = sim.login("bob");
    sim.settle();
    sim.disconnect(alice);

    for i in 1..=2 {
        sim.send_json(bob, &json!({"type":"candidate","id":i,"to":"alice","candidate":{"candidate":format!("c{i}")}}));
    }
    assert_eq!(sim.take(bob), vec![json!({"type":"ack","id":1}), json!({"type":"ack","id":2})]);
    sim.send_json(bob, &json!({"type":"candidate","id":3,"to":"alice","candidate":{"candidate":"c3"}}));
    let frames = sim.take(bob);
    let errors = of_type(&frames, "error");
    assert_eq!(errors.len(), 1, "{frames:#?}");
    assert_error(errors[0], "undeliverable");
    assert_eq!(errors[0]["id"], 3);
    assert_eq!(errors[0]["to"], "alice");

    // Resume delivers only what was queued.
    let conn = sim.connect();
    sim.send_json(conn, &json!({"type":"login","resume":token}));
    let frames = sim.take(conn);
    let candidates: Vec<&Value> = of_type(&frames, "candidate");
    assert_eq!(candidates.len(), 2, "{frames:#?}");
    assert_eq!(candidates[0]["candidate"]["candidate"], "c1");
    assert_eq!(candidates[1]["candidate"]["candidate"], "c2");
}

#[test]
fn a_resume_queue_over_its_byte_cap_gives_undeliverable() {
    let config = Config { resume_queue_messages: 64, resume_queue_bytes: 300, ..Config::default() };
    let mut sim = Sim::new(config);
    let alice = sim.login("alice");
    let bob = sim.login("bob");
    sim.settle();
    sim.disconnect(alice);
    let sdp = json!({"type":"offer","sdp":"v".repeat(200)});
    sim.send_json(bob, &json!({"type":"offer","id":1,"to":"alice","sdp":sdp}));
    assert_eq!(sim.take(bob), vec![json!({"type":"ack","id":1})]);
    sim.send_json(bob, &json!({"type":"offer","id":2,"to":"alice","sdp":sdp}));
    let frames = sim.take(bob);
    let errors = of_type(&frames, "error");
    assert_eq!(errors.len(), 1, "{frames:#?}");
    assert_error(errors[0], "undeliverable");
    assert_eq!(errors[0]["id"], 2);
}

/// docs/protocol.md: "With `id`, the sender gets `ack` once the message is queued for the target"; a message that
/// could not be queued gets `undeliverable` and should not also be acknowledged.
#[test]
fn a_message_refused_by_a_full_queue_is_not_acked() {
    let config = Config { resume_queue_messages: 1, ..Config::default() };
    let mut sim = Sim::new(config);
    let alice = sim.login("alice");
    let bob = sim.login("bob");
    sim.settle();
    sim.disconnect(alice);
    sim.send_json(bob, &json!({"type":"end-of-candidates","id":1,"to":"alice"}));
    assert_eq!(sim.take(bob), vec![json!({"type":"ack","id":1})]);
    sim.send_json(bob, &json!({"type":"end-of-candidates","id":2,"to":"alice"}));
    let frames = sim.take(bob);
    assert!(of_type(&frames, "ack").is_empty(), "undeliverable message was also acked: {frames:#?}");
    assert_eq!(frames.len(), 1, "{frames:#?}");
    assert_error(&frames[0], "undeliverable");
}

#[test]
fn logout_acks_closes_with_4004_and_skips_the_grace_period() {
    let mut sim = Sim::default_config();
    let (alice, welcome) = sim.login_welcome("alice");
    let token = welcome["resumeToken"].as_str().unwrap().to_owned();
    let bob = sim.login("bob");
    let observer = sim.login("observer");
    sim.join(alice, "r");
    sim.join(bob, "r");
    let call_id = sim.active_call(alice, bob, "bob");
    sim.settle();

    let frames = sim.request(alice, &json!({"type":"logout","id":2}));
    assert_eq!(frames, vec![json!({"type":"ack","id":2})]);
    assert_eq!(sim.closed(alice), Some(4004));
    assert_eq!(sim.core.stats().sessions, 2);
    let frames = sim.take(bob);
    assert_eq!(frames.len(), 2, "{frames:#?}");
    assert!(frames.contains(&json!({"type":"hangup","callId":call_id,"from":"alice","reason":"hangup"})));
    assert!(frames.contains(&json!({"type":"member-left","room":"r","name":"alice","reason":"left"})));
    // A later disconnect of the closed connection does nothing.
    sim.disconnect(alice);

    sim.tick();
    let presence = sim.one(observer);
    assert_eq!(names(&presence, "left"), set(&["alice"]));
    assert_eq!(entries(&presence, "changed"), status_map(&[("bob", "idle")]));
    sim.take(bob);
    single_error(&sim.request(bob, &json!({"type":"end-of-candidates","to":"alice"})), "unknown-peer");

    let conn = sim.connect();
    let frames = sim.request(conn, &json!({"type":"login","resume":token}));
    single_error(&frames[1..], "resume-failed");
    let frames = sim.request(conn, &json!({"type":"login","name":"alice"}));
    assert_eq!(frames[0]["type"], "welcome");

    // Logout without id: no ack, still closed.
    sim.send_json(conn, &json!({"type":"logout"}));
    sim.assert_silent(conn);
    assert_eq!(sim.closed(conn), Some(4004));
}

// ---------------------------------------------------------------------------------------------------------------
// Tutorial dialect
// ---------------------------------------------------------------------------------------------------------------

fn userlist(frame: &Value) -> BTreeSet<String> {
    assert_eq!(frame["type"], "RenderUserList", "{frame}");
    let list = frame["userlist"].as_array().unwrap();
    let set: BTreeSet<String> = list.iter().map(|n| n.as_str().unwrap().to_owned()).collect();
    assert_eq!(set.len(), list.len(), "duplicate names in {frame}");
    set
}

#[test]
fn tutorial_login_renders_the_user_list_with_self() {
    let mut sim = Sim::default_config();
    let alice = sim.login("alice");
    sim.settle();
    let (tom, list) = sim.tutorial("tom");
    assert_eq!(userlist(&list), set(&["alice", "tom"]));
    assert_eq!(list.as_object().unwrap().len(), 2, "exactly type and userlist: {list}");
    let error = single_error(&sim.request(tom, &json!({"type":"Login","UserName":"tom2"})), "already-logged-in");
    assert!(error.get("id").is_none());
    sim.tick();
    // v1 users see the tutorial user in presence.
    let presence = sim.one(alice);
    assert_eq!(entries(&presence, "joined"), status_map(&[("tom", "idle")]));
    assert_eq!(userlist(&sim.one(tom)), set(&["alice", "tom"]));
    // Tutorial users get no resume token and no hello; invalid names are refused.
    let conn = sim.connect();
    single_error(&sim.request(conn, &json!({"type":"Login","UserName":"<b>"})), "invalid-name");
    single_error(&sim.request(conn, &json!({"type":"Login"})), "bad-request");
    let (_, list) = sim.tutorial("tina");
    assert_eq!(userlist(&list), set(&["alice", "tom", "tina"]));
}

#[test]
fn tutorial_and_v1_relay_translate_both_ways() {
    let mut sim = Sim::default_config();
    let alice = sim.login("alice");
    let (tom, _) = sim.tutorial("tom");
    let (tina, _) = sim.tutorial("tina");
    sim.settle();

    // Tutorial -> v1: `name` is ignored, `from` is the real sender.
    sim.send(tom, &format!(r#"{{"type":"offer","name":"mallory","TargetUserName":"ALICE","sdp":{SDP}}}"#));
    sim.assert_silent(tom);
    let frames = sim.take_frames(alice);
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].value, json!({"type":"offer","from":"tom","sdp":parsed(SDP)}));
    assert!(frames[0].raw.contains(SDP), "{}", frames[0].raw);
    sim.send(tom, &format!(r#"{{"type":"answer","name":"alice","TargetUserName":"alice","sdp":{SDP_ANSWER}}}"#));
    assert_eq!(sim.one(alice), json!({"type":"answer","from":"tom","sdp":parsed(SDP_ANSWER)}));
    sim.send(tom, &format!(r#"{{"type":"ICE","candidate":{CANDIDATE},"TargetUserName":"alice"}}"#));
    let frames = sim.take_frames(alice);
    assert_eq!(frames[0].value, json!({"type":"candidate","from":"tom","candidate":parsed(CANDIDATE)}));
    assert!(frames[0].raw.contains(CANDIDATE));

    // v1 -> tutorial: `callId` and `room` dropped, tutorial field names.
    sim.send(alice, &format!(r#"{{"type":"offer","id":1,"to":"tom","callId":"c9","from":"x","sdp":{SDP}}}"#));
    assert_eq!(sim.take(alice), vec![json!({"type":"ack","id":1})]);
    let frames = sim.take_frames(tom);
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].value, json!({"type":"offer","name":"alice","TargetUserName":"tom","sdp":parsed(SDP)}));
    assert!(frames[0].raw.contains(SDP));
    sim.send(alice, &format!(r#"{{"type":"answer","to":"tom","callId":"c9","sdp":{SDP_ANSWER}}}"#));
    assert_eq!(sim.one(tom), json!({"type":"answer","name":"alice","TargetUserName":"tom","sdp":parsed(SDP_ANSWER)}));
    sim.send(alice, &format!(r#"{{"type":"candidate","to":"tom","callId":"c9","candidate":{CANDIDATE}}}"#));
    assert_eq!(sim.one(tom), json!({"type":"ICE","candidate":parsed(CANDIDATE),"TargetUserName":"tom"}));
    // end-of-candidates is dropped on the way to a tutorial client (still acked).
    assert_eq!(
        sim.request(alice, &json!({"type":"end-of-candidates","id":2,"to":"tom"})),
        vec![json!({"type":"ack","id":2})]
    );
    sim.assert_silent(tom);

    // Tutorial -> tutorial: the receiver sees the real sender even if it lied.
    sim.send(tom, &format!(r#"{{"type":"offer","name":"alice","TargetUserName":"tina","sdp":{SDP}}}"#));
    assert_eq!(sim.one(tina), json!({"type":"offer","name":"tom","TargetUserName":"tina","sdp":parsed(SDP)}));
    sim.send(tina, &format!(r#"{{"type":"ICE","candidate":{CANDIDATE},"TargetUserName":"tom"}}"#));
    assert_eq!(sim.one(tom), json!({"type":"ICE","candidate":parsed(CANDIDATE),"TargetUserName":"tom"}));
    sim.assert_silent(alice);
}

#[test]
fn tutorial_user_lists_follow_logins_and_leaves_coalesced() {
    let mut sim = Sim::default_config();
    let (tom, _) = sim.tutorial("tom");
    let alice = sim.login("alice");
    sim.settle();

    let users: Vec<ConnId> = (0..5).map(|i| sim.login(&format!("u{i}"))).collect();
    let (tina, _) = sim.tutorial("tina");
    sim.assert_silent(tom);
    sim.tick();
    assert_eq!(userlist(&sim.one(tom)), set(&["tom", "alice", "u0", "u1", "u2", "u3", "u4", "tina"]));
    assert_eq!(userlist(&sim.one(tina)).len(), 8);
    sim.settle();

    sim.send_json(users[0], &json!({"type":"logout"}));
    sim.disconnect(users[1]); // waits for a resume: still listed
    sim.send_json(users[2], &json!({"type":"logout"}));
    sim.tick();
    assert_eq!(userlist(&sim.one(tom)), set(&["tom", "alice", "u1", "u3", "u4", "tina"]));
    sim.settle();

    // Status changes do not show in the tutorial list.
    sim.send_json(alice, &json!({"type":"call","to":"u3"}));
    sim.tick();
    sim.assert_silent(tom);
    sim.assert_silent(tina);
    // Grace expiry of u1 is a leave.
    sim.advance(sim.config().resume_grace);
    sim.tick();
    assert_eq!(userlist(&sim.one(tom)), set(&["tom", "alice", "u3", "u4", "tina"]));
}

#[test]
fn tutorial_disconnect_ends_the_session_at_once() {
    let mut sim = Sim::default_config();
    let alice = sim.login("alice");
    let (tom, _) = sim.tutorial("tom");
    let (tina, _) = sim.tutorial("tina");
    sim.settle();

    sim.disconnect(tom);
    assert_eq!(sim.core.stats().sessions, 2);
    single_error(&sim.request(alice, &json!({"type":"candidate","to":"tom","candidate":{}})), "unknown-peer");
    single_error(&sim.request(tina, &json!({"type":"ICE","TargetUserName":"tom","candidate":{}})), "unknown-peer");
    sim.tick();
    assert_eq!(names(&sim.one(alice), "left"), set(&["tom"]));
    assert_eq!(userlist(&sim.one(tina)), set(&["alice", "tina"]));
    // The name is free at once.
    let (_, list) = sim.tutorial("tom");
    assert_eq!(userlist(&list), set(&["alice", "tina", "tom"]));
}

#[test]
fn a_v1_call_to_a_tutorial_user_is_accepted_at_once() {
    let mut sim = Sim::default_config();
    let alice = sim.login("alice");
    let observer = sim.login("observer");
    let (tom, _) = sim.tutorial("tom");
    sim.settle();

    let frames = sim.request(alice, &json!({"type":"call","id":4,"to":"tom"}));
    assert_eq!(frames.len(), 2, "{frames:#?}");
    assert_eq!(frames[0]["type"], "ringing");
    assert_eq!(frames[0]["id"], 4);
    assert_eq!(frames[0]["to"], "tom");
    let call_id = frames[0]["callId"].as_str().unwrap().to_owned();
    assert_eq!(frames[1], json!({"type":"accepted","callId":call_id,"from":"tom"}));
    sim.assert_silent(tom);
    sim.tick();
    let presence = sim.one(observer);
    assert_eq!(entries(&presence, "changed"), status_map(&[("alice", "in-call"), ("tom", "in-call")]));
    sim.take(alice);
    sim.take(tom);

    // No ring timeout for an accepted call.
    sim.advance(sim.config().ring_timeout * 2);
    sim.assert_silent(alice);
    sim.assert_silent(tom);

    // The caller sends its offer; the tutorial page gets it in its own form.
    sim.send(alice, &format!(r#"{{"type":"offer","to":"tom","callId":"{call_id}","sdp":{SDP}}}"#));
    assert_eq!(sim.one(tom)["name"], "alice");

    // Hangup ends the call in the server's books only.
    assert_eq!(
        sim.request(alice, &json!({"type":"hangup","id":5,"callId":call_id})),
        vec![json!({"type":"ack","id":5})]
    );
    sim.assert_silent(tom);
    assert_eq!(sim.core.stats().calls, 0);
    sim.tick();
    let presence = sim.one(observer);
    assert_eq!(entries(&presence, "changed"), status_map(&[("alice", "idle"), ("tom", "idle")]));
    sim.take(alice);

    // A tutorial user is never busy (its page cannot hang up): a new call replaces the current one, and the first
    // caller is told.
    let frames = sim.request(alice, &json!({"type":"call","to":"tom"}));
    let first_call = frames[0]["callId"].as_str().unwrap().to_owned();
    let frames = sim.request(observer, &json!({"type":"call","id":6,"to":"tom"}));
    assert_eq!(frames.iter().map(|f| f["type"].as_str().unwrap()).collect::<Vec<_>>(), ["ringing", "accepted"]);
    assert_eq!(sim.one(alice), json!({"type":"hangup","callId":first_call,"from":"tom","reason":"hangup"}));
    assert_eq!(sim.core.stats().calls, 1);
    let hangup = sim.request(observer, &json!({"type":"hangup","callId":frames[0]["callId"]}));
    assert!(hangup.is_empty(), "{hangup:?}");

    // A tutorial peer that closes its page ends the call at once: the v1 side gets `hangup`, reason disconnected.
    let frames = sim.request(alice, &json!({"type":"call","to":"tom"}));
    let call_id = frames[0]["callId"].as_str().unwrap().to_owned();
    sim.disconnect(tom);
    assert_eq!(sim.one(alice), json!({"type":"hangup","callId":call_id,"from":"tom","reason":"disconnected"}));
    assert_eq!(sim.core.stats().calls, 0);
}

#[test]
fn tutorial_bad_input_gets_error_frames_and_never_stalls() {
    let mut sim = Sim::default_config();
    let alice = sim.login("alice");
    let (tom, _) = sim.tutorial("tom");
    sim.settle();

    let cases: Vec<(String, &str)> = vec![
        ("not json".into(), "bad-json"),
        ("[1,2]".into(), "bad-json"),
        (r#"{"type":"offer","TargetUserName":7,"sdp":{}}"#.into(), "bad-json"),
        (r#"{"type":"dance"}"#.into(), "unknown-type"),
        (r#"{"type":"call","to":"alice"}"#.into(), "not-supported"),
        (r#"{"type":"login","name":"x"}"#.into(), "not-supported"),
        (r#"{"type":"offer","TargetUserName":"nobody","sdp":{}}"#.into(), "unknown-peer"),
        (r#"{"type":"answer","TargetUserName":"","sdp":{}}"#.into(), "unknown-peer"),
        (r#"{"type":"ICE","TargetUserName":"nobody","candidate":{}}"#.into(), "unknown-peer"),
        (r#"{"type":"offer","sdp":{}}"#.into(), "bad-request"),
        (r#"{"type":"offer","TargetUserName":"alice"}"#.into(), "bad-request"),
        (r#"{"type":"ICE","TargetUserName":"alice"}"#.into(), "bad-request"),
        (r#"{"type":"offer","TargetUserName":"tom","sdp":{}}"#.into(), "bad-request"),
        (r#"{"sdp":{}}"#.into(), "bad-request"),
        (
            format!(r#"{{"type":"ICE","TargetUserName":"alice","candidate":{}{}}}"#, "[".repeat(40), "]".repeat(40)),
            "bad-json",
        ),
    ];
    for (text, code) in &cases {
        sim.send(tom, text);
        let frames = sim.take(tom);
        assert_eq!(frames.len(), 1, "{text}: {frames:#?}");
        assert_error(&frames[0], code);
    }
    sim.input(Input::Binary(tom));
    single_error(&sim.take(tom), "binary-frame");
    assert_eq!(sim.closed(tom), None);
    sim.assert_silent(alice);
    // Still working.
    sim.send(tom, &format!(r#"{{"type":"offer","TargetUserName":"alice","sdp":{SDP}}}"#));
    assert_eq!(sim.one(alice)["from"], "tom");
    // A tutorial connection's first frame being bad JSON does not crash either, and a Login still works afterwards.
    let conn = sim.connect();
    sim.send(conn, "{{{{");
    assert!(!sim.take(conn).is_empty());
    sim.send_json(conn, &json!({"type":"Login","UserName":"tina"}));
    let frames = sim.take(conn);
    assert!(frames.iter().any(|f| f["type"] == "RenderUserList" || f["type"] == "error"), "{frames:#?}");
}

// ---------------------------------------------------------------------------------------------------------------
// Fixed garbage and property test
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn fixed_garbage_never_panics() {
    let mut sim = Sim::new(Config { strike_burst: 1000, ..Config::default() });
    let v1 = sim.login("alice");
    let (tut, _) = sim.tutorial("tom");
    let fresh = sim.connect();
    let deep_array = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let deep_sdp =
        format!(r#"{{"type":"offer","to":"tom","sdp":{}1{}}}"#, "{\"a\":".repeat(10_000), "}".repeat(10_000));
    let garbage: Vec<String> = vec![
        String::new(),
        " ".into(),
        "null".into(),
        "1".into(),
        "\"str\"".into(),
        "{}".into(),
        r#"{"type":null}"#.into(),
        r#"{"type":""}"#.into(),
        r#"{"type":"call","to":"\ud800"}"#.into(),
        r#"{"type":"login","name":"\u0000"}"#.into(),
        r#"{"type":"ping","id":123456789012345678901234567890}"#.into(),
        r#"{"type":"ping","id":-}"#.into(),
        r#"{"type":"ping","type":"pong"}"#.into(),
        r#"{"type":"join","room":"a","room":"b"}"#.into(),
        "\u{feff}{\"type\":\"ping\"}".into(),
        deep_array,
        deep_sdp,
        "{\"type\":\"offer\",\"to\":\"tom\",\"sdp\":".repeat(1000),
    ];
    for conn in [v1, tut, fresh] {
        for text in &garbage {
            sim.send(conn, text);
            sim.take(conn);
        }
        sim.input(Input::Binary(conn));
        sim.input(Input::TooLarge(conn, usize::MAX));
        sim.take(conn);
    }
    sim.advance(Duration::from_secs(100));
    sim.settle();
    assert_eq!(sim.request(v1, &json!({"type":"ping"})), vec![json!({"type":"pong"})]);
}

/// Payloads are relayed byte for byte as long as they are JSON by the RFC 8259 grammar, even values that some strict
/// parsers refuse (a lone surrogate escape, a number beyond f64): the server never re-parses them (docs/protocol.md).
#[test]
fn relayed_payloads_pass_verbatim_even_when_strict_parsers_would_refuse_them() {
    for payload in [r#""\ud800""#, "1e999"] {
        let mut sim = Sim::default_config();
        let alice = sim.login("alice");
        let bob = sim.login("bob");
        sim.settle();
        let now = sim.now();
        let text = format!(r#"{{"type":"offer","id":1,"to":"bob","sdp":{payload}}}"#);
        sim.core.handle_input(now, Input::Text(alice, &text));
        let mut to_bob = Vec::new();
        while let Some(output) = sim.core.poll_output() {
            if let Output::Send { conn, frame } = output {
                if conn == bob {
                    to_bob.push(String::from_utf8(frame.to_bytes().to_vec()).unwrap());
                }
            }
        }
        assert_eq!(to_bob, vec![format!(r#"{{"type":"offer","from":"alice","sdp":{payload}}}"#)]);
    }
}

const TYPES: &[&str] = &[
    "login",
    "logout",
    "users",
    "ping",
    "offer",
    "answer",
    "candidate",
    "end-of-candidates",
    "call",
    "accept",
    "reject",
    "cancel",
    "hangup",
    "join",
    "leave",
    "Login",
    "ICE",
    "dance",
];
const FIELDS: &[&str] = &[
    "id",
    "name",
    "to",
    "room",
    "callId",
    "resume",
    "protocol",
    "sdp",
    "candidate",
    "UserName",
    "TargetUserName",
    "from",
];
const NAMES: &[&str] = &["alice", "Bob", "ALICE", "tom", "carol", "r1", "tina", "", " x", "a  b", "Zoe\u{308}", "<b>"];

#[derive(Debug, Clone)]
enum Action {
    Connect,
    Login {
        conn: usize,
        name: usize,
        tutorial: bool,
    },
    Raw {
        conn: usize,
        text: String,
    },
    Frame {
        conn: usize,
        kind: Value,
        /// Random extra fields, written first.
        fields: Vec<(&'static str, Value)>,
        /// When set, the fields the `type` needs are filled in with plausible values (a name from `NAMES`, this
        /// payload) unless an extra field took their place.
        complete: Option<(usize, Value)>,
        call_ref: Option<usize>,
        token_ref: Option<usize>,
    },
    Binary(usize),
    TooLarge(usize, usize),
    Disconnect(usize),
    Advance(u64),
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
        prop::sample::select(NAMES).prop_map(Value::from),
    ];
    leaf.prop_recursive(6, 48, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-zA-Z]{1,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn deep_value() -> impl Strategy<Value = Value> {
    (1usize..24).prop_map(|depth| (0..depth).fold(json!(1), |v, _| json!([v])))
}

fn field_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        6 => prop::sample::select(NAMES).prop_map(Value::from),
        3 => json_value(),
        1 => deep_value(),
        1 => (0u32..4).prop_map(Value::from),
        1 => "[a-z]{0,80}".prop_map(Value::from),
    ]
}

fn action() -> impl Strategy<Value = Action> {
    let conn = 0usize..8;
    prop_oneof![
        1 => Just(Action::Connect),
        3 => (conn.clone(), 0..NAMES.len(), any::<bool>())
            .prop_map(|(conn, name, tutorial)| Action::Login { conn, name, tutorial }),
        1 => (conn.clone(), prop_oneof![".{0,40}", "[\\[\\]{}\":,a-z0-9 ]{0,40}"])
            .prop_map(|(conn, text)| Action::Raw { conn, text }),
        12 => (
            conn.clone(),
            prop_oneof![
                6 => prop::sample::select(TYPES).prop_map(Value::from),
                1 => json_value(),
            ],
            prop::collection::vec((prop::sample::select(FIELDS), field_value()), 0..2),
            prop::option::weighted(0.8, (0..NAMES.len(), json_value())),
            prop::option::of(0usize..8),
            prop::option::weighted(0.1, 0usize..8),
        )
            .prop_map(|(conn, kind, fields, complete, call_ref, token_ref)| Action::Frame {
                conn,
                kind,
                fields,
                complete,
                call_ref,
                token_ref
            }),
        1 => conn.clone().prop_map(Action::Binary),
        1 => (conn.clone(), any::<usize>()).prop_map(|(c, n)| Action::TooLarge(c, n)),
        1 => conn.prop_map(Action::Disconnect),
        2 => (0u64..5000).prop_map(Action::Advance),
    ]
}

fn run_actions(actions: &[Action]) {
    let config = Config {
        rate_burst: 25,
        rate_per_second: 10,
        strike_burst: 8,
        resume_queue_messages: 3,
        resume_queue_bytes: 2048,
        ring_timeout: Duration::from_secs(2),
        resume_grace: Duration::from_secs(3),
        max_sdp_bytes: 200,
        max_candidate_bytes: 100,
        max_message_bytes: 4096,
        max_room_size: 3,
        max_rooms_per_user: 2,
        ..Config::default()
    };
    let mut sim = Sim::new(config);
    // Three v1 users, a tutorial user, and two connections that have said nothing yet.
    let mut conns: Vec<ConnId> = (0..6).map(|_| sim.connect()).collect();
    for (conn, name) in conns.iter().zip(["alice", "bob", "carol"]) {
        sim.send_json(*conn, &json!({"type":"login","name":name}));
    }
    sim.send_json(conns[3], &json!({"type":"Login","UserName":"tom"}));
    for action in actions {
        match action {
            Action::Connect => conns.push(sim.connect()),
            Action::Login { conn, name, tutorial } => {
                let conn = conns[conn % conns.len()];
                let frame = if *tutorial {
                    json!({"type":"Login","UserName":NAMES[*name]})
                } else {
                    json!({"type":"login","id":1,"name":NAMES[*name]})
                };
                sim.send_json(conn, &frame);
            }
            Action::Raw { conn, text } => {
                let conn = conns[conn % conns.len()];
                sim.send(conn, text);
            }
            Action::Frame { conn, kind, fields, complete, call_ref, token_ref } => {
                let conn = conns[conn % conns.len()];
                let mut map = Map::new();
                map.insert("type".into(), kind.clone());
                for (field, value) in fields {
                    map.insert((*field).into(), value.clone());
                }
                if let Some((name, payload)) = complete {
                    let name = Value::from(NAMES[*name]);
                    let needs: &[&str] = match kind.as_str().unwrap_or_default() {
                        "login" => &["name"],
                        "Login" => &["UserName"],
                        "offer" | "answer" => &["to", "TargetUserName", "sdp"],
                        "candidate" | "ICE" => &["to", "TargetUserName", "candidate"],
                        "end-of-candidates" | "call" => &["to"],
                        "join" | "leave" => &["room"],
                        _ => &[],
                    };
                    for field in needs {
                        let value = if ["sdp", "candidate"].contains(field) { payload.clone() } else { name.clone() };
                        map.entry(*field).or_insert(value);
                    }
                }
                if let Some(i) = call_ref.filter(|_| !sim.call_ids.is_empty()) {
                    map.insert("callId".into(), Value::from(sim.call_ids[i % sim.call_ids.len()].clone()));
                }
                if let Some(i) = token_ref.filter(|_| !sim.tokens.is_empty()) {
                    map.insert("resume".into(), Value::from(sim.tokens[i % sim.tokens.len()].clone()));
                    map.remove("name");
                }
                sim.send(conn, &Value::Object(map).to_string());
            }
            Action::Binary(conn) => {
                let conn = conns[conn % conns.len()];
                sim.input(Input::Binary(conn));
            }
            Action::TooLarge(conn, len) => {
                let conn = conns[conn % conns.len()];
                sim.input(Input::TooLarge(conn, *len));
            }
            Action::Disconnect(conn) => {
                let conn = conns[conn % conns.len()];
                sim.disconnect(conn);
            }
            Action::Advance(ms) => sim.advance_ms(*ms),
        }
        let stats = sim.core.stats();
        assert!(stats.connections <= conns.len(), "{stats:?}");
        assert!(stats.calls * 2 <= stats.sessions, "{stats:?}");
        // The ordered indexes behind the admin views stay in step with the maps, and so does the active-call gauge.
        assert_eq!(sim.core.users(None, usize::MAX).items.len(), stats.sessions, "{stats:?}");
        assert_eq!(sim.core.rooms_page(None, usize::MAX).items.len(), stats.rooms, "{stats:?}");
        let calls = sim.core.calls_page(None, usize::MAX).items;
        assert_eq!(calls.len(), stats.calls, "{stats:?}");
        let active = calls.iter().filter(|c| c.state == switchboard_proto::event::CallState::Active).count();
        assert_eq!(sim.core.counters().active_calls, active as u64);
    }
    // Every deadline eventually fires; then nothing is left pending but sessions of open connections.
    sim.advance(Duration::from_secs(120));
    for conn in conns.clone() {
        sim.disconnect(conn);
    }
    sim.advance(Duration::from_secs(120));
    let stats = sim.core.stats();
    assert_eq!(stats.connections, 0, "{stats:?}");
    assert_eq!(stats.sessions, 0, "{stats:?}");
    assert_eq!(stats.calls, 0, "{stats:?}");
    assert_eq!(stats.rooms, 0, "{stats:?}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Random strings and JSON-ish frames from several connections: no panic, every frame sent is a JSON object with
    /// a `type` (checked by the harness), nothing is sent after a close, and all state drains away at the end.
    #[test]
    fn random_input_never_panics_and_outputs_valid_json(actions in prop::collection::vec(action(), 1..80)) {
        run_actions(&actions);
    }
}
