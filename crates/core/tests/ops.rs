//! What the core offers operators, on simulated time: counters for metrics, paged admin views of users, rooms and
//! calls, disconnecting a user, and `goaway` before a shutdown.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use switchboard_core::{
    CallInfo, Config, ConnId, Input, LoginOutcome, MessageKind, Output, Signaling, UserCall, UserInfo,
};
use switchboard_proto::{close_code, event::CallState, Dialect, ErrorCode, UserStatus};

struct Sim {
    core: Signaling,
    start: Instant,
    offset: Duration,
    next: u64,
    inbox: HashMap<ConnId, Vec<Value>>,
    closes: HashMap<ConnId, u16>,
}

impl Sim {
    fn new() -> Self {
        Self {
            core: Signaling::new(Config::default(), [3; 32]),
            start: Instant::now(),
            offset: Duration::ZERO,
            next: 1,
            inbox: HashMap::new(),
            closes: HashMap::new(),
        }
    }

    fn now(&self) -> Instant {
        self.start + self.offset
    }

    fn pump(&mut self) {
        while let Some(output) = self.core.poll_output() {
            match output {
                Output::Send { conn, frame } => {
                    self.inbox.entry(conn).or_default().push(serde_json::from_slice(&frame.to_bytes()).unwrap());
                }
                Output::Close { conn, code, .. } => {
                    assert!(self.closes.insert(conn, code).is_none(), "{conn:?} closed twice");
                }
                Output::Cluster(command) => panic!("a single node asked the cluster for {command:?}"),
            }
        }
    }

    fn advance(&mut self, by: Duration) {
        self.offset += by;
        let now = self.now();
        self.core.handle_timeout(now);
        self.pump();
    }

    fn input(&mut self, input: Input<'_>) {
        let now = self.now();
        self.core.handle_input(now, input);
        self.pump();
    }

    fn connect(&mut self) -> ConnId {
        let conn = ConnId(self.next);
        self.next += 1;
        self.input(Input::Connected(conn));
        conn
    }

    fn send(&mut self, conn: ConnId, value: Value) {
        self.input(Input::Text(conn, &value.to_string()));
    }

    fn take(&mut self, conn: ConnId) -> Vec<Value> {
        self.inbox.remove(&conn).unwrap_or_default()
    }

    fn login(&mut self, name: &str) -> ConnId {
        let conn = self.connect();
        self.send(conn, json!({"type":"login","name":name}));
        assert!(self.take(conn).iter().any(|f| f["type"] == "welcome"), "login of {name}");
        conn
    }

    fn tutorial(&mut self, name: &str) -> ConnId {
        let conn = self.connect();
        self.send(conn, json!({"type":"Login","UserName":name}));
        self.take(conn);
        conn
    }
}

#[test]
fn counters_follow_messages_errors_logins_and_calls() {
    let mut sim = Sim::new();
    let alice = sim.login("alice");
    let bob = sim.login("bob");
    let taken = sim.connect();
    sim.send(taken, json!({"type":"login","name":"ALICE"}));
    let bad = sim.connect();
    sim.send(bad, json!({"type":"login","name":"<b>"}));
    sim.input(Input::Text(bad, "{not json"));
    sim.input(Input::Binary(bad));
    sim.send(bad, json!({"type":"login","resume":"nope"}));
    sim.tutorial("tom");

    sim.send(alice, json!({"type":"offer","to":"bob","sdp":{"type":"offer","sdp":"v=0"}}));
    sim.send(alice, json!({"type":"candidate","to":"bob","candidate":{"candidate":"c"}}));
    sim.send(alice, json!({"type":"offer","to":"zed","sdp":{}}));
    sim.send(alice, json!({"type":"call","to":"bob"}));
    let call_id = sim.take(alice).iter().find(|f| f["type"] == "ringing").unwrap()["callId"].clone();
    sim.advance(Duration::from_millis(1500));
    sim.send(bob, json!({"type":"accept","callId":call_id}));

    let counters = sim.core.counters().clone();
    assert_eq!(counters.received_of(MessageKind::Login), 5);
    assert_eq!(counters.received_of(MessageKind::TutorialLogin), 1);
    assert_eq!(counters.received_of(MessageKind::Offer), 2);
    assert_eq!(counters.received_of(MessageKind::Candidate), 1);
    assert_eq!(counters.received_of(MessageKind::Call), 1);
    assert_eq!(counters.received_of(MessageKind::Accept), 1);
    assert_eq!(counters.received_of(MessageKind::Invalid), 1);
    assert_eq!(counters.received_of(MessageKind::Binary), 1);
    assert_eq!(counters.logins_of(LoginOutcome::Ok), 3);
    assert_eq!(counters.logins_of(LoginOutcome::NameTaken), 1);
    assert_eq!(counters.logins_of(LoginOutcome::InvalidName), 1);
    assert_eq!(counters.logins_of(LoginOutcome::ResumeFailed), 1);
    assert_eq!(counters.errors_of(ErrorCode::NameTaken), 1);
    assert_eq!(counters.errors_of(ErrorCode::BadJson), 1);
    assert_eq!(counters.errors_of(ErrorCode::UnknownPeer), 1);
    assert_eq!(counters.errors_of(ErrorCode::BinaryFrame), 1);
    assert_eq!(counters.calls_started, 1);
    assert_eq!(counters.active_calls, 1);
    assert_eq!(counters.call_setup.count, 1);
    assert!((counters.call_setup.sum - 1.5).abs() < 1e-6, "{:?}", counters.call_setup);
    // 1.5 s lands in the (1, 2] bucket.
    assert_eq!(counters.call_setup.buckets[3], 1, "{:?}", counters.call_setup);

    sim.send(alice, json!({"type":"hangup","callId":call_id}));
    assert_eq!(sim.core.counters().active_calls, 0);
}

#[test]
fn a_full_resume_queue_counts_drops() {
    let mut sim = Sim::new();
    let alice = sim.login("alice");
    let bob = sim.login("bob");
    sim.input(Input::Disconnected(bob));
    let limit = sim.core.config().resume_queue_messages;
    for n in 0..limit + 3 {
        sim.send(alice, json!({"type":"candidate","to":"bob","id":n,"candidate":{"candidate":"c"}}));
    }
    assert_eq!(sim.core.counters().resume_queue_drops, 3);
    assert_eq!(sim.core.counters().errors_of(ErrorCode::Undeliverable), 3);
    // The grace period ends: the queued ones are dropped too.
    sim.advance(sim.core.config().resume_grace + Duration::from_millis(1));
    assert_eq!(sim.core.counters().resume_queue_drops, limit as u64 + 3);
}

#[test]
fn users_rooms_and_calls_page_in_key_order() {
    let mut sim = Sim::new();
    let names = ["dave", "Alice", "carol", "bob", "Eve"];
    let conns: Vec<ConnId> = names.iter().map(|n| sim.login(n)).collect();
    let tom = sim.tutorial("tom");
    sim.advance(Duration::from_secs(2));
    sim.send(conns[1], json!({"type":"join","room":"Standup"}));
    sim.send(conns[3], json!({"type":"join","room":"standup"}));
    sim.send(conns[3], json!({"type":"join","room":"retro"}));
    sim.send(conns[1], json!({"type":"call","to":"bob"}));
    let call_id =
        sim.take(conns[1]).iter().find(|f| f["type"] == "ringing").unwrap()["callId"].as_str().unwrap().to_owned();
    sim.send(conns[2], json!({"type":"call","to":"tom"}));
    sim.input(Input::Disconnected(conns[4]));

    let first = sim.core.users(None, 2);
    assert_eq!(first.items.iter().map(|u| u.name.as_ref()).collect::<Vec<_>>(), ["Alice", "bob"]);
    assert_eq!(first.next.as_deref(), Some("bob"));
    let second = sim.core.users(first.next.as_deref(), 2);
    assert_eq!(second.items.iter().map(|u| u.name.as_ref()).collect::<Vec<_>>(), ["carol", "dave"]);
    let last = sim.core.users(second.next.as_deref(), 2);
    assert_eq!(last.items.iter().map(|u| u.name.as_ref()).collect::<Vec<_>>(), ["Eve", "tom"]);
    assert_eq!(last.next, None);
    assert!(sim.core.users(Some("zzz"), 10).items.is_empty());
    assert!(sim.core.users(None, 0).items.is_empty());

    let alice: UserInfo = sim.core.user("ALICE").unwrap();
    assert_eq!(alice.dialect, Dialect::V1);
    assert_eq!(alice.since, sim.start);
    assert!(alice.connected);
    assert_eq!(alice.status, UserStatus::InCall);
    assert_eq!(alice.rooms.iter().map(|r| r.as_ref()).collect::<Vec<_>>(), ["Standup"]);
    assert_eq!(
        alice.call,
        Some(UserCall {
            call_id: call_id.as_str().into(),
            peer: "bob".into(),
            caller: true,
            state: CallState::Ringing
        })
    );
    let eve = sim.core.user("eve").unwrap();
    assert!(!eve.connected, "Eve waits for a resume");
    let tom_info = sim.core.user("tom").unwrap();
    assert_eq!(tom_info.dialect, Dialect::Tutorial);
    assert!(sim.core.user("nobody").is_none());

    let rooms = sim.core.rooms_page(None, 10);
    assert_eq!(rooms.items.iter().map(|r| r.name.as_ref()).collect::<Vec<_>>(), ["retro", "Standup"]);
    assert_eq!(rooms.items[1].members.iter().map(|m| m.as_ref()).collect::<Vec<_>>(), ["Alice", "bob"]);
    let rooms = sim.core.rooms_page(Some("retro"), 10);
    assert_eq!(rooms.items.len(), 1);

    let calls = sim.core.calls_page(None, 10);
    assert_eq!(calls.items.len(), 2);
    let ringing: &CallInfo = calls.items.iter().find(|c| c.call_id.as_ref() == call_id).unwrap();
    assert_eq!((ringing.caller.as_ref(), ringing.callee.as_ref(), ringing.state), ("Alice", "bob", CallState::Ringing));
    let with_tom = calls.items.iter().find(|c| c.callee.as_ref() == "tom").unwrap();
    assert_eq!(with_tom.state, CallState::Active, "tutorial callees accept at once");
    let page = sim.core.calls_page(None, 1);
    assert_eq!(page.next.as_deref(), Some(page.items[0].call_id.as_ref()));
    assert_eq!(sim.core.calls_page(page.next.as_deref(), 1).items.len(), 1);
    let _ = tom;
}

#[test]
fn disconnecting_a_user_ends_the_session_and_closes_with_4005() {
    let mut sim = Sim::new();
    let alice = sim.login("alice");
    let bob = sim.login("bob");
    sim.send(alice, json!({"type":"join","room":"r"}));
    sim.send(bob, json!({"type":"join","room":"r"}));
    sim.send(alice, json!({"type":"call","to":"bob"}));
    sim.advance(Duration::from_secs(1));
    sim.take(alice);
    sim.take(bob);

    assert!(sim.core.disconnect_user(sim.now(), "BOB"));
    sim.pump();
    assert_eq!(sim.closes.get(&bob), Some(&close_code::DISCONNECTED_BY_ADMIN));
    assert!(!sim.closes.contains_key(&alice));
    let frames = sim.take(alice);
    assert!(frames.iter().any(|f| f["type"] == "hangup" && f["reason"] == "disconnected"), "{frames:?}");
    assert!(frames.iter().any(|f| f["type"] == "member-left" && f["name"] == "bob"), "{frames:?}");
    assert!(sim.core.user("bob").is_none());
    assert_eq!(sim.core.stats().sessions, 1);
    assert_eq!(sim.core.counters().admin_disconnects, 1);
    // Input for the closed connection is ignored; its later disconnect too.
    sim.input(Input::Disconnected(bob));
    assert!(!sim.core.disconnect_user(sim.now(), "bob"));
    assert!(!sim.core.disconnect_user(sim.now(), "<not a name>"));
    // A session that waits for its resume can be ended too.
    sim.input(Input::Disconnected(alice));
    assert!(sim.core.disconnect_user(sim.now(), "alice"));
    assert_eq!(sim.core.stats().sessions, 0);
}

#[test]
fn goaway_reaches_v1_connections_and_closes_the_others_with_1001() {
    let mut sim = Sim::new();
    let alice = sim.login("alice");
    let silent = sim.connect();
    let fresh = sim.connect();
    sim.send(fresh, json!({"type":"ping"}));
    sim.take(fresh);
    let tom = sim.tutorial("tom");
    sim.take(alice);

    sim.core.goaway(sim.now(), Duration::from_secs(10));
    sim.pump();
    for conn in [alice, fresh] {
        let frames = sim.take(conn);
        assert_eq!(frames.len(), 1, "{frames:?}");
        assert_eq!(frames[0]["type"], "goaway");
        assert_eq!(frames[0]["reason"], "shutdown");
        let after = frames[0]["reconnectAfterMs"].as_u64().unwrap();
        assert!((1000..=10_000).contains(&after), "{after}");
        assert!(!sim.closes.contains_key(&conn));
    }
    assert_eq!(sim.closes.get(&silent), Some(&close_code::GOING_AWAY));
    assert_eq!(sim.closes.get(&tom), Some(&close_code::GOING_AWAY));
    // The tutorial session ended with its connection; alice still talks until she leaves.
    assert!(sim.core.user("tom").is_none());
    sim.send(alice, json!({"type":"ping","id":1}));
    assert_eq!(sim.take(alice)[0]["type"], "pong");
    assert_eq!(sim.core.stats().connections, 2);
}

#[test]
fn refused_tokens_are_counted_as_login_outcomes() {
    let keys = switchboard_core::TokenKeys::new(["a-secret-of-at-least-thirty-two-bytes!!"]).unwrap();
    let config = Config { auth: switchboard_core::Auth::Token(keys), ..Config::default() };
    let mut sim = Sim { core: Signaling::new(config, [3; 32]), ..Sim::new() };
    let conn = sim.connect();
    sim.send(conn, json!({"type":"login","name":"alice"}));
    sim.send(conn, json!({"type":"login","token":"not.a.token"}));
    assert_eq!(sim.core.counters().logins_of(LoginOutcome::AuthRequired), 1);
    assert_eq!(sim.core.counters().logins_of(LoginOutcome::InvalidToken), 1);
    assert_eq!(sim.core.counters().errors_of(ErrorCode::AuthRequired), 1);
}
