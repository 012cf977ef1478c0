//! Login tokens and room passwords in the signaling core, on simulated time: token checks (valid, expired by the
//! core's wall clock, wrong secret, tampered, wrong name, rotation), where the token comes from (login message or
//! upgrade URL, both dialects), the `rooms` claim, and room passwords (configured, set by the first joiner).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};
use switchboard_core::{Auth, Claims, Config, ConnId, Input, Output, Signaling, TokenError, TokenKeys};
use switchboard_proto::Secret;

const SECRET: &str = "an-hs256-secret-of-at-least-32-bytes";
const OLD_SECRET: &str = "the-previous-secret-still-verifying";
const OTHER_SECRET: &str = "a-secret-this-server-does-not-know!";
/// Unix time at the simulation's start.
const T0: u64 = 1_800_000_000;

fn keys(secrets: &[&str]) -> TokenKeys {
    TokenKeys::new(secrets.iter().copied()).unwrap()
}

fn claims(sub: &str, exp: u64, rooms: Option<&[&str]>) -> Claims {
    Claims { sub: sub.into(), exp, rooms: rooms.map(|r| r.iter().map(|s| s.to_string()).collect()) }
}

fn mint(secret: &str, sub: &str, ttl: u64) -> String {
    keys(&[secret]).mint(&claims(sub, T0 + ttl, None)).unwrap()
}

fn mint_rooms(sub: &str, rooms: &[&str]) -> String {
    keys(&[SECRET]).mint(&claims(sub, T0 + 3600, Some(rooms))).unwrap()
}

// ---------------------------------------------------------------------------------------------------------------
// TokenKeys on its own
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn a_valid_token_gives_its_claims() {
    let keys = keys(&[SECRET]);
    let token = keys.mint(&claims("alice", T0 + 60, Some(&["standup"]))).unwrap();
    assert_eq!(keys.verify(&token, T0), Ok(claims("alice", T0 + 60, Some(&["standup"]))));
}

#[test]
fn a_token_expires_at_exp() {
    let keys = keys(&[SECRET]);
    let token = keys.mint(&claims("alice", T0 + 60, None)).unwrap();
    assert!(keys.verify(&token, T0 + 59).is_ok());
    assert_eq!(keys.verify(&token, T0 + 60), Err(TokenError::Expired));
    assert_eq!(keys.verify(&token, T0 + 86_400), Err(TokenError::Expired));
}

#[test]
fn a_token_of_another_secret_is_invalid_even_when_expired() {
    let token = keys(&[OTHER_SECRET]).mint(&claims("alice", T0 - 10, None)).unwrap();
    // Expired and wrongly signed: only "invalid", since nothing an unverified token says is believed.
    assert_eq!(keys(&[SECRET]).verify(&token, T0), Err(TokenError::Invalid));
}

#[test]
fn rotation_the_first_secret_signs_and_every_secret_verifies() {
    let rotated = keys(&[SECRET, OLD_SECRET]);
    let old_token = mint(OLD_SECRET, "alice", 60);
    assert!(rotated.verify(&old_token, T0).is_ok(), "tokens of the old secret still work");
    let new_token = rotated.mint(&claims("bob", T0 + 60, None)).unwrap();
    assert!(keys(&[SECRET]).verify(&new_token, T0).is_ok(), "the first secret signs");
    assert_eq!(keys(&[OLD_SECRET]).verify(&new_token, T0), Err(TokenError::Invalid));
    // Once the old secret is dropped, its tokens stop working.
    assert_eq!(keys(&[SECRET]).verify(&old_token, T0), Err(TokenError::Invalid));
}

#[test]
fn tampered_malformed_and_foreign_algorithm_tokens_are_invalid() {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let keys = keys(&[SECRET]);
    let token = keys.mint(&claims("alice", T0 + 60, None)).unwrap();
    let parts: Vec<&str> = token.split('.').collect();

    // A payload changed after signing.
    let forged_payload = b64.encode(r#"{"sub":"mallory","exp":2000000000}"#);
    let forged = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
    assert_eq!(keys.verify(&forged, T0), Err(TokenError::Invalid));

    // "alg":"none" with no signature, and another algorithm's header: refused whatever the signature.
    let none_header = b64.encode(r#"{"alg":"none","typ":"JWT"}"#);
    assert_eq!(keys.verify(&format!("{none_header}.{}.", parts[1]), T0), Err(TokenError::Invalid));
    let hs512 = b64.encode(r#"{"alg":"HS512","typ":"JWT"}"#);
    assert_eq!(keys.verify(&format!("{hs512}.{}.{}", parts[1], parts[2]), T0), Err(TokenError::Invalid));

    for bad in ["", ".", "..", "a.b", "a.b.c.d", &format!("{token}x"), &format!("{token}."), "e30.e30.e30"] {
        assert_eq!(keys.verify(bad, T0), Err(TokenError::Invalid), "{bad:?}");
    }
    let huge = format!("{}.{}.{}", parts[0], "A".repeat(8000), parts[2]);
    assert_eq!(keys.verify(&huge, T0), Err(TokenError::Invalid));
}

#[test]
fn correctly_signed_tokens_with_bad_claims_are_invalid() {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let sign = |header: &str, payload: &str| {
        // Tokens signed properly but carrying claims the server cannot use.
        use hmac::{Hmac, KeyInit, Mac};
        let input = format!("{}.{}", b64.encode(header), b64.encode(payload));
        let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(SECRET.as_bytes()).unwrap();
        mac.update(input.as_bytes());
        format!("{input}.{}", b64.encode(mac.finalize().into_bytes()))
    };
    let header = r#"{"alg":"HS256","typ":"JWT"}"#;
    let keys = keys(&[SECRET]);
    assert!(keys.verify(&sign(header, r#"{"sub":"alice","exp":2000000000}"#), T0).is_ok(), "the helper signs right");
    for payload in [
        r#"{"exp":2000000000}"#,
        r#"{"sub":"alice"}"#,
        r#"{"sub":"alice","exp":"2000000000"}"#,
        r#"{"sub":7,"exp":2000000000}"#,
        r#"{"sub":"alice","exp":2000000000,"rooms":"standup"}"#,
        r#"{"sub":"alice","exp":2000000000,"rooms":["<b>"]}"#,
        r#"["alice"]"#,
    ] {
        assert_eq!(keys.verify(&sign(header, payload), T0), Err(TokenError::Invalid), "{payload}");
    }
    let critical = r#"{"alg":"HS256","crit":["exp"],"exp":1}"#;
    assert_eq!(keys.verify(&sign(critical, r#"{"sub":"alice","exp":2000000000}"#), T0), Err(TokenError::Invalid));
}

#[test]
fn the_example_token_of_the_protocol_docs_verifies() {
    let token = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6MTgwMDAwMzYwMH0.xFJKRRmuInEgohp9M1-ZE43wtYREfZSoOyhe9KmYmWU";
    let verified = keys(&["an-example-secret-of-32-bytes-or-more"]).verify(token, T0);
    assert_eq!(verified, Ok(claims("alice", 1_800_003_600, None)));
}

#[test]
fn secrets_must_be_long_enough_and_claims_mintable() {
    assert!(TokenKeys::new(Vec::<String>::new()).is_err());
    let error = TokenKeys::new([SECRET, "short"]).unwrap_err();
    assert!(error.to_string().contains("secret number 2"), "{error}");
    assert!(keys(&[SECRET]).mint(&claims("alice", T0, Some(&["no  double spaces"]))).is_err());
    let printed = format!("{:?}", keys(&[SECRET]));
    assert!(!printed.contains(SECRET), "{printed}");
}

// ---------------------------------------------------------------------------------------------------------------
// The core in token mode
// ---------------------------------------------------------------------------------------------------------------

struct Sim {
    core: Signaling,
    start: Instant,
    now: Instant,
    next: u64,
    inbox: HashMap<ConnId, Vec<Value>>,
    closed: HashMap<ConnId, u16>,
}

impl Sim {
    fn new(config: Config) -> Self {
        let start = Instant::now();
        Self {
            core: Signaling::new(config, [3; 32]).with_wall_clock(start, T0),
            start,
            now: start,
            next: 1,
            inbox: HashMap::new(),
            closed: HashMap::new(),
        }
    }

    fn token_mode(secrets: &[&str]) -> Self {
        Self::new(Config { auth: Auth::Token(keys(secrets)), ..Config::default() })
    }

    fn input(&mut self, input: Input<'_>) {
        self.core.handle_input(self.now, input);
        self.pump();
    }

    fn pump(&mut self) {
        while let Some(output) = self.core.poll_output() {
            match output {
                Output::Send { conn, frame } => {
                    self.inbox.entry(conn).or_default().push(serde_json::from_slice(&frame.to_bytes()).unwrap())
                }
                Output::Close { conn, code, .. } => {
                    self.closed.insert(conn, code);
                }
                Output::Cluster(command) => panic!("a single node asked the cluster for {command:?}"),
            }
        }
    }

    /// Moves the clock (and the core's wall clock with it), firing deadlines.
    fn advance(&mut self, by: Duration) {
        let target = self.now + by;
        while let Some(due) = self.core.poll_timeout().filter(|&due| due <= target) {
            self.now = self.now.max(due);
            self.core.handle_timeout(self.now);
            self.pump();
        }
        self.now = target;
    }

    fn connect(&mut self, upgrade_token: Option<&str>) -> ConnId {
        let conn = ConnId(self.next);
        self.next += 1;
        self.input(Input::Connected(conn));
        if let Some(token) = upgrade_token {
            self.input(Input::UpgradeToken(conn, token));
        }
        conn
    }

    /// Sends `value` and returns the frames it produced for `conn` (without `hello`).
    fn request(&mut self, conn: ConnId, value: Value) -> Vec<Value> {
        self.input(Input::Text(conn, &value.to_string()));
        self.inbox.remove(&conn).unwrap_or_default().into_iter().filter(|f| f["type"] != "hello").collect()
    }

    /// The one reply to `value` (given an `id` if it has none), ignoring other traffic such as presence.
    fn reply(&mut self, conn: ConnId, mut value: Value) -> Value {
        if value.get("id").is_none() {
            value["id"] = json!("r");
        }
        let id = value["id"].clone();
        let mut frames: Vec<Value> = self.request(conn, value).into_iter().filter(|f| f["id"] == id).collect();
        assert_eq!(frames.len(), 1, "{frames:#?}");
        frames.remove(0)
    }

    fn login(&mut self, message: Value) -> (ConnId, Value) {
        let conn = self.connect(None);
        let reply = self.reply(conn, message);
        (conn, reply)
    }

    /// A logged-in v1 user.
    fn user(&mut self, token: &str) -> ConnId {
        let (conn, welcome) = self.login(json!({"type": "login", "id": 1, "token": token}));
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        conn
    }

    fn error_code(frame: &Value) -> &str {
        assert_eq!(frame["type"], "error", "{frame}");
        frame["code"].as_str().unwrap()
    }
}

#[test]
fn token_in_the_login_message_fixes_the_name() {
    let mut sim = Sim::token_mode(&[SECRET]);
    let token = mint(SECRET, "Alice", 3600);

    // No name: the token's.
    let (_, welcome) = sim.login(json!({"type": "login", "id": 1, "token": token}));
    assert_eq!((welcome["type"].as_str(), welcome["name"].as_str()), (Some("welcome"), Some("Alice")));

    // The same name in another case is the same name; the token's spelling is shown.
    let bob = mint(SECRET, "Bob", 3600);
    let (_, welcome) = sim.login(json!({"type": "login", "id": 1, "name": "bob", "token": bob}));
    assert_eq!(welcome["name"], "Bob", "{welcome}");

    // Another name is refused.
    let carol = mint(SECRET, "carol", 3600);
    let (conn, error) = sim.login(json!({"type": "login", "id": 2, "name": "mallory", "token": carol}));
    assert_eq!((Sim::error_code(&error), &error["id"]), ("token-name-mismatch", &json!(2)));
    // The connection stays open and may log in properly.
    let welcome = sim.reply(conn, json!({"type": "login", "id": 3, "name": "carol", "token": carol}));
    assert_eq!(welcome["type"], "welcome", "{welcome}");
}

#[test]
fn missing_wrong_and_expired_tokens_get_their_codes_and_never_echo_the_token() {
    let mut sim = Sim::token_mode(&[SECRET]);
    let conn = sim.connect(None);
    let error = sim.reply(conn, json!({"type": "login", "id": 1, "name": "alice"}));
    assert_eq!(Sim::error_code(&error), "auth-required");

    let wrong = mint(OTHER_SECRET, "alice", 3600);
    let error = sim.reply(conn, json!({"type": "login", "id": 2, "token": wrong}));
    assert_eq!(Sim::error_code(&error), "invalid-token");
    assert!(!error.to_string().contains(&wrong), "{error}");
    let error = sim.reply(conn, json!({"type": "login", "id": 3, "token": "not a token"}));
    assert_eq!(Sim::error_code(&error), "invalid-token");

    let expired = mint(SECRET, "alice", 0);
    let error = sim.reply(conn, json!({"type": "login", "id": 4, "token": expired}));
    assert_eq!(Sim::error_code(&error), "token-expired");
    assert_eq!(sim.core.stats().sessions, 0);
}

#[test]
fn expiry_follows_the_core_wall_clock() {
    let mut sim = Sim::token_mode(&[SECRET]);
    let token = mint(SECRET, "alice", 600);
    sim.advance(Duration::from_secs(599));
    let alice = sim.user(&token);

    // A session is not cut off when its token expires: the token is checked at login.
    sim.advance(Duration::from_secs(5));
    assert_eq!(sim.reply(alice, json!({"type": "ping", "id": 9}))["type"], "pong");
    assert!(!sim.closed.contains_key(&alice));

    let (_, error) = sim.login(json!({"type": "login", "id": 1, "token": token}));
    assert_eq!(Sim::error_code(&error), "token-expired");
    assert_eq!(sim.start + Duration::from_secs(604), sim.now);
}

#[test]
fn rotation_in_the_core() {
    let mut sim = Sim::token_mode(&[SECRET, OLD_SECRET]);
    sim.user(&mint(SECRET, "alice", 60));
    sim.user(&mint(OLD_SECRET, "bob", 60));
    let (_, error) = sim.login(json!({"type": "login", "token": mint(OTHER_SECRET, "carol", 60)}));
    assert_eq!(Sim::error_code(&error), "invalid-token");
}

#[test]
fn the_upgrade_url_token_serves_both_dialects_and_a_message_token_wins() {
    let mut sim = Sim::token_mode(&[SECRET]);
    let alice = mint(SECRET, "alice", 60);

    let conn = sim.connect(Some(&alice));
    let welcome = sim.reply(conn, json!({"type": "login", "id": 1}));
    assert_eq!(welcome["name"], "alice", "{welcome}");

    // Tutorial dialect: the upgrade token, and the name in `Login` must match it.
    let tom = mint(SECRET, "tom", 60);
    let conn = sim.connect(Some(&tom));
    let frames = sim.request(conn, json!({"type": "Login", "UserName": "mallory"}));
    assert_eq!(Sim::error_code(&frames[0]), "token-name-mismatch");
    let frames = sim.request(conn, json!({"type": "Login", "UserName": "tom"}));
    assert_eq!(frames[0]["type"], "RenderUserList", "{frames:#?}");

    // A tutorial page without a token.
    let conn = sim.connect(None);
    let frames = sim.request(conn, json!({"type": "Login", "UserName": "tina"}));
    assert_eq!(Sim::error_code(&frames[0]), "auth-required");

    // Both: the login message's token counts.
    let bob = mint(SECRET, "bob", 60);
    let conn = sim.connect(Some(&mint(OTHER_SECRET, "bob", 60)));
    let welcome = sim.reply(conn, json!({"type": "login", "id": 1, "token": bob}));
    assert_eq!(welcome["name"], "bob", "{welcome}");

    // An oversized upgrade token is a token, and invalid.
    let conn = sim.connect(Some(&"x".repeat(10_000)));
    let error = sim.reply(conn, json!({"type": "login", "id": 1}));
    assert_eq!(Sim::error_code(&error), "invalid-token");
}

#[test]
fn resume_needs_no_token() {
    let mut sim = Sim::token_mode(&[SECRET]);
    let (alice, welcome) = sim.login(json!({"type": "login", "token": mint(SECRET, "alice", 5)}));
    let resume = welcome["resumeToken"].as_str().unwrap().to_owned();
    sim.input(Input::Disconnected(alice));
    // After the login token expired, within the grace period of the session.
    sim.advance(Duration::from_secs(10));
    let (_, welcome) = sim.login(json!({"type": "login", "resume": resume}));
    assert_eq!((welcome["resumed"].as_bool(), welcome["name"].as_str()), (Some(true), Some("alice")), "{welcome}");
}

#[test]
fn bad_tokens_count_as_misbehaviour_expired_ones_do_not() {
    let mut sim = Sim::token_mode(&[SECRET]);
    let burst = sim.core.config().strike_burst;
    let conn = sim.connect(None);
    let expired = mint(SECRET, "alice", 0);
    for _ in 0..burst + 5 {
        sim.request(conn, json!({"type": "login", "token": expired}));
    }
    assert!(!sim.closed.contains_key(&conn), "expired tokens are no attack");
    for _ in 0..=burst {
        sim.request(conn, json!({"type": "login", "token": "guess"}));
    }
    assert_eq!(sim.closed.get(&conn), Some(&1008));
}

#[test]
fn open_mode_ignores_tokens_and_needs_a_name() {
    let mut sim = Sim::new(Config::default());
    let conn = sim.connect(Some("garbage"));
    let error = sim.reply(conn, json!({"type": "login", "id": 1, "token": "garbage"}));
    assert_eq!(
        (Sim::error_code(&error), error["message"].as_str()),
        ("bad-request", Some("`login` needs the field `name`"))
    );
    let welcome = sim.reply(conn, json!({"type": "login", "id": 2, "name": "alice", "token": "garbage"}));
    assert_eq!(welcome["name"], "alice");
}

// ---------------------------------------------------------------------------------------------------------------
// Rooms
// ---------------------------------------------------------------------------------------------------------------

fn join(room: &str, password: Option<&str>) -> Value {
    match password {
        Some(password) => json!({"type": "join", "id": "j", "room": room, "password": password}),
        None => json!({"type": "join", "id": "j", "room": room}),
    }
}

#[test]
fn the_rooms_claim_admits_to_listed_rooms_only_and_skips_their_passwords() {
    let config = Config {
        auth: Auth::Token(keys(&[SECRET])),
        room_passwords: vec![("Board Room".into(), Secret(Cow::Borrowed("s3cret")))],
        ..Config::default()
    };
    let mut sim = Sim::new(config);
    let alice = sim.user(&mint_rooms("alice", &["standup", "board room"]));
    let bob = sim.user(&mint(SECRET, "bob", 60));

    assert_eq!(sim.reply(alice, join("Standup", None))["type"], "joined");
    let error = sim.reply(alice, join("lunch", None));
    assert_eq!(Sim::error_code(&error), "room-forbidden");
    // Listed: no password needed, even a wrong one is fine.
    assert_eq!(sim.reply(alice, join("BOARD ROOM", Some("nope")))["type"], "joined");
    // Without a claim: any room, passwords as usual.
    assert_eq!(sim.reply(bob, join("lunch", None))["type"], "joined");
    assert_eq!(Sim::error_code(&sim.reply(bob, join("board room", None))), "room-password-required");
    assert_eq!(sim.reply(bob, join("board room", Some("s3cret")))["type"], "joined");
    // An empty list admits nowhere.
    let carol = sim.user(&mint_rooms("carol", &[]));
    assert_eq!(Sim::error_code(&sim.reply(carol, join("lunch", None))), "room-forbidden");
}

#[test]
fn configured_room_passwords() {
    let config =
        Config { room_passwords: vec![("standup".into(), Secret(Cow::Borrowed("hunter2")))], ..Config::default() };
    let mut sim = Sim::new(config);
    let (alice, _) = sim.login(json!({"type": "login", "name": "alice"}));
    let (bob, _) = sim.login(json!({"type": "login", "name": "bob"}));

    let error = sim.reply(alice, join("StandUp", None));
    assert_eq!((Sim::error_code(&error), &error["id"]), ("room-password-required", &json!("j")));
    assert_eq!(Sim::error_code(&sim.reply(alice, join("standup", Some("")))), "room-password-required");
    let error = sim.reply(alice, join("standup", Some("hunter3")));
    assert_eq!(Sim::error_code(&error), "wrong-room-password");
    assert!(!error.to_string().contains("hunter"), "{error}");
    let joined = sim.reply(alice, join("standup", Some("hunter2")));
    assert_eq!(
        joined,
        json!({"type": "joined", "id": "j", "room": "standup", "members": ["alice"], "protected": true})
    );
    // Joining again needs nothing.
    assert_eq!(sim.reply(alice, join("standup", None))["type"], "joined");

    // The configured password outlives the room, and a first joiner cannot replace it.
    sim.reply(alice, json!({"type": "leave", "id": 1, "room": "standup"}));
    assert_eq!(sim.core.stats().rooms, 0);
    assert_eq!(Sim::error_code(&sim.reply(bob, join("standup", Some("mine")))), "wrong-room-password");
    assert_eq!(sim.reply(bob, join("standup", Some("hunter2")))["type"], "joined");
}

#[test]
fn the_first_joiner_sets_the_password_for_the_life_of_the_room() {
    let mut sim = Sim::new(Config::default());
    let (alice, _) = sim.login(json!({"type": "login", "name": "alice"}));
    let (bob, _) = sim.login(json!({"type": "login", "name": "bob"}));
    let (carol, _) = sim.login(json!({"type": "login", "name": "carol"}));

    let joined = sim.reply(alice, join("secret club", Some("open sesame")));
    assert_eq!(joined["protected"], true, "{joined}");
    assert_eq!(Sim::error_code(&sim.reply(bob, join("Secret Club", None))), "room-password-required");
    assert_eq!(Sim::error_code(&sim.reply(bob, join("secret club", Some("open says me")))), "wrong-room-password");
    let joined = sim.reply(bob, join("secret club", Some("open sesame")));
    assert_eq!(joined["members"], json!(["alice", "bob"]), "{joined}");
    assert!(sim.inbox.remove(&alice).unwrap().iter().any(|f| f["type"] == "member-joined"));

    // A password for a room that exists without one changes nothing, and `joined` says the room is open.
    assert!(sim.reply(carol, join("lobby", None)).get("protected").is_none());
    let joined = sim.reply(bob, join("lobby", Some("too late")));
    assert!(joined.get("protected").is_none(), "{joined}");
    let (dave, _) = sim.login(json!({"type": "login", "name": "dave"}));
    assert_eq!(sim.reply(dave, join("lobby", None))["type"], "joined");

    // When the last member leaves, the room and its password are gone.
    sim.reply(alice, json!({"type": "leave", "id": 1, "room": "secret club"}));
    sim.reply(bob, json!({"type": "leave", "id": 1, "room": "secret club"}));
    let joined = sim.reply(carol, join("secret club", None));
    assert_eq!((joined["members"].clone(), joined.get("protected")), (json!(["carol"]), None));

    // Too long a password is a bad request.
    let error = sim.reply(dave, join("big", Some(&"p".repeat(257))));
    assert_eq!(Sim::error_code(&error), "bad-request");
}

#[test]
fn a_resumed_session_sees_its_rooms_protected_flag() {
    let mut sim = Sim::new(Config::default());
    let (alice, welcome) = sim.login(json!({"type": "login", "name": "alice"}));
    let resume = welcome["resumeToken"].as_str().unwrap().to_owned();
    sim.reply(alice, join("vault", Some("pw")));
    sim.input(Input::Disconnected(alice));
    let (_, welcome) = sim.login(json!({"type": "login", "resume": resume}));
    assert_eq!(welcome["rooms"], json!([{"room": "vault", "members": ["alice"], "protected": true}]));
}

#[test]
fn wrong_room_passwords_count_as_misbehaviour() {
    let mut sim = Sim::new(Config::default());
    let (alice, _) = sim.login(json!({"type": "login", "name": "alice"}));
    let (bob, _) = sim.login(json!({"type": "login", "name": "bob"}));
    sim.reply(alice, join("vault", Some("pw")));
    let burst = sim.core.config().strike_burst;
    for _ in 0..burst + 5 {
        sim.request(bob, join("vault", None));
    }
    assert!(!sim.closed.contains_key(&bob), "being asked for the password is no misbehaviour");
    for guess in 0..=burst {
        sim.request(bob, join("vault", Some(&format!("guess {guess}"))));
    }
    assert_eq!(sim.closed.get(&bob), Some(&1008));
}
