//! Presence coalescing.
//!
//! Logins, leaves and status changes are recorded into a [`PresenceBatch`]; once per presence tick the batch becomes
//! one `presence` event, serialised once and shared by every v1 connection, so a burst of N logins costs one frame per
//! client per tick instead of a frame per pair. The same tick refreshes the [`Snapshot`]: the serialised list of
//! online users that `welcome`, `users` and the tutorial's `RenderUserList` reuse instead of walking every session for
//! every login (which would make a login storm cost O(N^2) serialisation).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use switchboard_proto::{event::UserEntry, tutorial::OutTutorialEvent, OutEvent, PresenceFormat, UserStatus};

use crate::frame::{OutFrame, Piece, Shared};

#[derive(Debug)]
struct Change {
    name: Arc<str>,
    /// The name as it was announced before, when a new session took the name with another spelling.
    previous_name: Option<Arc<str>>,
    /// Online when the previous batch was sent.
    was_online: bool,
    /// The status clients were last told (meaningful when `was_online`).
    announced: UserStatus,
    online: bool,
    status: UserStatus,
}

/// Presence changes since the last tick, keyed by name key so that one user's changes within a tick fold into one.
#[derive(Debug, Default)]
pub struct PresenceBatch {
    index: HashMap<Arc<str>, usize>,
    changes: Vec<Change>,
    /// Someone joined or left: tutorial clients need a new full list (status changes do not show there).
    membership_changed: bool,
}

impl PresenceBatch {
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    fn entry(&mut self, key: &Arc<str>, name: &Arc<str>, was_online: bool, announced: UserStatus) -> &mut Change {
        let index = *self.index.entry(key.clone()).or_insert_with(|| {
            self.changes.push(Change {
                name: name.clone(),
                previous_name: None,
                was_online,
                announced,
                online: was_online,
                status: announced,
            });
            self.changes.len() - 1
        });
        &mut self.changes[index]
    }

    /// `name` came online.
    pub fn joined(&mut self, key: &Arc<str>, name: &Arc<str>, status: UserStatus) {
        let change = self.entry(key, name, false, status);
        if change.was_online && change.name != *name && change.previous_name.is_none() {
            change.previous_name = Some(change.name.clone());
        }
        change.name = name.clone();
        change.online = true;
        change.status = status;
        self.membership_changed = true;
    }

    /// `name`, whose status was `status`, went offline.
    pub fn left(&mut self, key: &Arc<str>, name: &Arc<str>, status: UserStatus) {
        let change = self.entry(key, name, true, status);
        change.online = false;
        self.membership_changed = true;
    }

    /// `name`, online, changed status from `old` to `new`.
    pub fn status(&mut self, key: &Arc<str>, name: &Arc<str>, old: UserStatus, new: UserStatus) {
        let change = self.entry(key, name, true, old);
        change.status = new;
    }

    /// Turns the batch into the v1 `presence` frames (None when there is nothing to say) and tells whether the
    /// membership changed, then empties it.
    pub fn take(&mut self) -> (Option<PresenceFrames>, bool) {
        let mut joined = Vec::new();
        let mut left = Vec::new();
        let mut changed = Vec::new();
        for change in &self.changes {
            let entry = || UserEntry { name: change.name.as_ref().into(), status: change.status };
            if let Some(previous) = change.previous_name.as_ref().filter(|previous| **previous != change.name) {
                // Same user key, new spelling: clients keyed by the exact name must drop the old one, and the new one
                // too if it went again within the tick.
                left.push(previous.as_ref().into());
                if change.online {
                    joined.push(entry());
                } else {
                    left.push(change.name.as_ref().into());
                }
                continue;
            }
            match (change.was_online, change.online) {
                (false, true) => joined.push(entry()),
                // A user who came and went within one tick is still reported as left: a client that logged in
                // during the tick has them in its welcome snapshot.
                (_, false) => left.push(change.name.as_ref().into()),
                // A status that went and came back within the tick is no change.
                (true, true) if change.status != change.announced => changed.push(entry()),
                (true, true) => {}
            }
        }
        let membership_changed = self.membership_changed;
        let frames = if joined.is_empty() && left.is_empty() && changed.is_empty() {
            None
        } else {
            let mut idle = Vec::new();
            let mut in_call = Vec::new();
            for entry in joined.iter().chain(&changed) {
                match entry.status {
                    UserStatus::Idle => idle.push(entry.name.clone()),
                    UserStatus::InCall => in_call.push(entry.name.clone()),
                }
            }
            let compact =
                OutEvent::Presence { joined: Vec::new(), left: left.clone(), changed: Vec::new(), idle, in_call }
                    .to_json();
            let full = OutEvent::Presence { joined, left, changed, idle: Vec::new(), in_call: Vec::new() }.to_json();
            Some(PresenceFrames { full, compact })
        };
        self.changes.clear();
        self.index.clear();
        self.membership_changed = false;
        (frames, membership_changed)
    }
}

/// One tick's `presence` event in both formats, each serialised once for all the clients that asked for it.
#[derive(Debug)]
pub struct PresenceFrames {
    /// `joined`, `changed`, `left` with `{"name":..,"status":..}` entries.
    pub full: Vec<u8>,
    /// `left`, `idle`, `inCall` with names only.
    pub compact: Vec<u8>,
}

/// Lists shorter than this are copied into each frame: sharing pays off only when encoding them once saves work.
pub const SHARE_MIN_BYTES: usize = 1024;

/// Serialised lists of who is online, as of the last presence tick.
///
/// Each list is kept without its closing bracket (`["alice","bob"`), so that a frame can append one more name and
/// close it; frames take the lists as [`Shared`] pieces.
#[derive(Debug)]
pub struct Snapshot {
    /// Name keys in the lists.
    keys: HashSet<Arc<str>>,
    /// `[{"name":..,"status":..},...`
    users: Shared,
    /// `["alice","bob",...`, the tutorial's `userlist`.
    names: Shared,
    /// `["alice",...`: the idle users, compact presence's `idle`.
    idle: Shared,
    /// `["bob",...`: the users in a call, compact presence's `inCall`.
    in_call: Shared,
}

impl Default for Snapshot {
    fn default() -> Self {
        let empty = Shared::new(&b"["[..]);
        Self { keys: HashSet::new(), users: empty.clone(), names: empty.clone(), idle: empty.clone(), in_call: empty }
    }
}

impl Snapshot {
    /// Rebuilds both lists from the users online now.
    pub fn rebuild<'a>(&mut self, online: impl Iterator<Item = (&'a Arc<str>, &'a str, UserStatus)>) {
        // One walk over the users (callers filter every session for it), five lists out of it.
        self.keys.clear();
        let (mut entries, mut names, mut idle, mut in_call) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (key, name, status) in online {
            self.keys.insert(key.clone());
            entries.push(UserEntry { name: name.into(), status });
            names.push(name);
            match status {
                UserStatus::Idle => idle.push(name),
                UserStatus::InCall => in_call.push(name),
            }
        }
        let open = |mut list: Vec<u8>| {
            list.pop();
            Shared::new(list)
        };
        let list = |names: &[&str]| open(serde_json::to_vec(names).unwrap_or_else(|_| b"[]".to_vec()));
        self.users = open(serde_json::to_vec(&entries).unwrap_or_else(|_| b"[]".to_vec()));
        self.names = list(&names);
        self.idle = list(&idle);
        self.in_call = list(&in_call);
    }

    /// Whether the user with this name key is in the lists.
    pub fn contains(&self, key: &str) -> bool {
        self.keys.contains(key)
    }

    /// Completes `frame`, a serialised JSON object without user lists, with `"users":[snapshot + extra]` in the
    /// full format, or with `"idle":[..],"inCall":[..]` (extra's name added to the list of its status) in the compact
    /// one.
    pub fn splice_users(&self, frame: Vec<u8>, extra: Option<UserEntry<'_>>, format: PresenceFormat) -> OutFrame {
        let mut out = Splicer::new(frame);
        match format {
            PresenceFormat::Full => {
                let extra = extra.and_then(|entry| serde_json::to_vec(&entry).ok());
                out.field("users", &self.users, extra.as_deref());
            }
            PresenceFormat::Compact => {
                let status = extra.as_ref().map(|entry| entry.status);
                let extra = extra.and_then(|entry| serde_json::to_vec(&entry.name).ok());
                let (idle_extra, in_call_extra) = match status {
                    Some(UserStatus::Idle) => (extra.as_deref(), None),
                    Some(UserStatus::InCall) => (None, extra.as_deref()),
                    None => (None, None),
                };
                out.field("idle", &self.idle, idle_extra);
                out.field("inCall", &self.in_call, in_call_extra);
            }
        }
        out.finish()
    }

    /// The tutorial's `RenderUserList`, with `extra` (a name just logged in) appended.
    pub fn render_user_list(&self, extra: Option<&str>) -> OutFrame {
        let frame = OutTutorialEvent::RenderUserList { userlist: Vec::new() }.to_json();
        // The serialised form ends with `"userlist":[]}`; cut the empty list and splice the snapshot in.
        let cut = frame.len().saturating_sub(br#","userlist":[]}"#.len());
        let mut head = frame;
        head.truncate(cut);
        head.push(b'}');
        let extra = extra.and_then(|name| serde_json::to_vec(name).ok());
        let mut out = Splicer::new(head);
        out.field("userlist", &self.names, extra.as_deref());
        out.finish()
    }
}

/// Builds a frame from a JSON object and lists spliced into it as extra fields.
struct Splicer {
    pieces: Vec<Piece>,
    /// Own bytes not yet in `pieces`.
    own: Vec<u8>,
    /// `frame` was a JSON object (it always is): its closing brace goes back at the end.
    object: bool,
}

impl Splicer {
    fn new(mut frame: Vec<u8>) -> Self {
        let object = frame.last() == Some(&b'}');
        if object {
            frame.pop();
        }
        Self { pieces: Vec::new(), own: frame, object }
    }

    /// Appends `,"field":list` with `extra` (a serialised JSON value) added at the end of `list`, which is a
    /// serialised array without its closing bracket.
    fn field(&mut self, field: &str, list: &Shared, extra: Option<&[u8]>) {
        if !self.object {
            return;
        }
        self.own.extend_from_slice(b",\"");
        self.own.extend_from_slice(field.as_bytes());
        self.own.extend_from_slice(b"\":");
        let body = list.bytes();
        if body.len() >= SHARE_MIN_BYTES {
            self.pieces.push(Piece::Own(Bytes::from(std::mem::take(&mut self.own))));
            self.pieces.push(Piece::Shared(list.clone()));
        } else {
            self.own.extend_from_slice(body);
        }
        if let Some(extra) = extra {
            if body.len() > 1 {
                self.own.push(b',');
            }
            self.own.extend_from_slice(extra);
        }
        self.own.push(b']');
    }

    fn finish(mut self) -> OutFrame {
        if self.object {
            self.own.push(b'}');
        }
        if self.pieces.is_empty() {
            return OutFrame::from(self.own);
        }
        self.pieces.push(Piece::Own(Bytes::from(self.own)));
        OutFrame::Pieces(self.pieces.into_boxed_slice())
    }
}

/// Which online users presence shows: the first `cap` in login order ("listed"); later ones wait, unlisted, and are
/// promoted in order as listed users leave. Every client's list and presence deltas are thereby bounded by `cap`
/// (`max-presence-users`), whatever the number online; unlisted users can still be called by name.
#[derive(Debug)]
pub struct Lobby {
    cap: usize,
    listed: HashSet<Arc<str>>,
    /// Unlisted users in login order; entries of users who left stay until they reach the front or a compaction.
    waiting: VecDeque<Arc<str>>,
    waiting_set: HashSet<Arc<str>>,
}

impl Lobby {
    /// A lobby that lists at most `cap` users.
    pub fn new(cap: usize) -> Self {
        Self { cap, listed: HashSet::new(), waiting: VecDeque::new(), waiting_set: HashSet::new() }
    }

    /// A user came online; true when it is listed (and presence announces it).
    pub fn admit(&mut self, key: &Arc<str>) -> bool {
        if self.listed.contains(key) {
            return true;
        }
        if self.listed.len() < self.cap {
            self.listed.insert(key.clone());
            return true;
        }
        if self.waiting_set.insert(key.clone()) {
            self.waiting.push_back(key.clone());
        }
        false
    }

    /// A user went offline; true when it was listed (presence announces its leaving).
    pub fn remove(&mut self, key: &str) -> bool {
        if self.listed.remove(key) {
            return true;
        }
        self.waiting_set.remove(key);
        // Users who leave while waiting leave stale queue entries: keep the queue within twice the waiting users.
        if self.waiting.len() > 2 * self.waiting_set.len() + 64 {
            let waiting_set = &self.waiting_set;
            let mut seen = HashSet::new();
            self.waiting.retain(|key| waiting_set.contains(key) && seen.insert(key.clone()));
        }
        false
    }

    /// Lists the longest-waiting user, if there is room; returns its key.
    pub fn promote(&mut self) -> Option<Arc<str>> {
        if self.listed.len() >= self.cap {
            return None;
        }
        while let Some(key) = self.waiting.pop_front() {
            if self.waiting_set.remove(&key) {
                self.listed.insert(key.clone());
                return Some(key);
            }
        }
        None
    }

    /// Whether presence shows this user.
    pub fn is_listed(&self, key: &str) -> bool {
        self.listed.contains(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn arc(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    #[test]
    fn the_lobby_lists_the_first_users_and_promotes_in_login_order() {
        let mut lobby = Lobby::new(2);
        let [a, b, c, d] = ["a", "b", "c", "d"].map(arc);
        assert!(lobby.admit(&a) && lobby.admit(&b));
        assert!(!lobby.admit(&c) && !lobby.admit(&d));
        assert!(!lobby.remove("d"), "d was waiting");
        assert!(lobby.remove("a"));
        assert_eq!(lobby.promote(), Some(c.clone()));
        assert_eq!(lobby.promote(), None, "full again");
        assert!(lobby.is_listed("b") && lobby.is_listed("c") && !lobby.is_listed("d"));
        // Churn of waiting users keeps the queue bounded.
        for round in 0..1000 {
            let key = arc(&format!("w{round}"));
            assert!(!lobby.admit(&key));
            assert!(!lobby.remove(&key));
        }
        assert!(lobby.waiting.len() <= 2 * lobby.waiting_set.len() + 65);
    }

    #[test]
    fn coalesces_changes_per_name() {
        let mut batch = PresenceBatch::default();
        let (a, b, c) = (arc("a"), arc("b"), arc("c"));
        batch.joined(&a, &a, UserStatus::Idle);
        batch.status(&a, &a, UserStatus::Idle, UserStatus::InCall);
        batch.joined(&b, &b, UserStatus::Idle);
        batch.left(&b, &b, UserStatus::Idle);
        batch.status(&c, &c, UserStatus::Idle, UserStatus::InCall);
        let d = arc("d");
        batch.status(&d, &d, UserStatus::Idle, UserStatus::InCall);
        batch.status(&d, &d, UserStatus::InCall, UserStatus::Idle);
        let (frames, membership) = batch.take();
        assert!(membership);
        let frames = frames.unwrap();
        let full: Value = serde_json::from_slice(&frames.full).unwrap();
        assert_eq!(
            full,
            serde_json::json!({"type":"presence","joined":[{"name":"a","status":"in-call"}],"left":["b"],
                "changed":[{"name":"c","status":"in-call"}]})
        );
        let compact: Value = serde_json::from_slice(&frames.compact).unwrap();
        assert_eq!(compact, serde_json::json!({"type":"presence","left":["b"],"inCall":["a","c"]}));
        assert!(batch.is_empty());
        let (frames, membership) = batch.take();
        assert!(frames.is_none() && !membership);
    }

    #[test]
    fn compact_deltas_group_names_by_status() {
        let mut batch = PresenceBatch::default();
        let (a, b, c) = (arc("a"), arc("b"), arc("c"));
        batch.joined(&a, &a, UserStatus::Idle);
        batch.status(&b, &b, UserStatus::InCall, UserStatus::Idle);
        batch.left(&c, &c, UserStatus::Idle);
        let compact: Value = serde_json::from_slice(&batch.take().0.unwrap().compact).unwrap();
        assert_eq!(compact, serde_json::json!({"type":"presence","left":["c"],"idle":["a","b"]}));
    }

    #[test]
    fn a_rename_back_to_the_announced_spelling_within_the_tick_is_no_change() {
        let mut batch = PresenceBatch::default();
        let (key, old, new) = (arc("alice"), arc("alice"), arc("Alice"));
        batch.left(&key, &old, UserStatus::Idle);
        batch.joined(&key, &new, UserStatus::Idle);
        batch.left(&key, &new, UserStatus::Idle);
        batch.joined(&key, &old, UserStatus::Idle);
        let (frames, membership) = batch.take();
        assert!(frames.is_none(), "the name is online under the spelling clients know: nothing to say");
        assert!(membership);
    }

    #[test]
    fn a_renamed_user_leaves_under_the_old_spelling_and_joins_under_the_new_one() {
        let mut batch = PresenceBatch::default();
        let (key, old, new) = (arc("alice"), arc("alice"), arc("Alice"));
        batch.left(&key, &old, UserStatus::Idle);
        batch.joined(&key, &new, UserStatus::Idle);
        let frames = batch.take().0.unwrap();
        let full: Value = serde_json::from_slice(&frames.full).unwrap();
        assert_eq!(
            full,
            serde_json::json!({"type":"presence","joined":[{"name":"Alice","status":"idle"}],"left":["alice"]})
        );
        let compact: Value = serde_json::from_slice(&frames.compact).unwrap();
        assert_eq!(compact, serde_json::json!({"type":"presence","left":["alice"],"idle":["Alice"]}));
    }

    #[test]
    fn a_renamed_user_who_leaves_within_the_tick_leaves_under_both_spellings() {
        let mut batch = PresenceBatch::default();
        let (key, old, new) = (arc("alice"), arc("alice"), arc("Alice"));
        batch.left(&key, &old, UserStatus::Idle);
        batch.joined(&key, &new, UserStatus::Idle);
        batch.left(&key, &new, UserStatus::Idle);
        let frames = batch.take().0.unwrap();
        let value: Value = serde_json::from_slice(&frames.full).unwrap();
        assert_eq!(value, serde_json::json!({"type":"presence","left":["alice","Alice"]}));
        let value: Value = serde_json::from_slice(&frames.compact).unwrap();
        assert_eq!(value, serde_json::json!({"type":"presence","left":["alice","Alice"]}));
    }

    #[test]
    fn splices_lists_into_frames() {
        let mut snapshot = Snapshot::default();
        let head = || br#"{"type":"users"}"#.to_vec();
        let frame = snapshot.splice_users(head(), None, PresenceFormat::Full);
        assert_eq!(&frame.to_bytes()[..], br#"{"type":"users","users":[]}"#);
        let frame = snapshot.splice_users(head(), None, PresenceFormat::Compact);
        assert_eq!(&frame.to_bytes()[..], br#"{"type":"users","idle":[],"inCall":[]}"#);
        let me = UserEntry { name: "me".into(), status: UserStatus::Idle };
        let frame = snapshot.splice_users(head(), Some(me.clone()), PresenceFormat::Full);
        assert_eq!(&frame.to_bytes()[..], br#"{"type":"users","users":[{"name":"me","status":"idle"}]}"#);
        let (a, b) = (arc("a"), arc("b\""));
        snapshot.rebuild([(&a, "a", UserStatus::Idle), (&b, "b\"", UserStatus::InCall)].into_iter());
        assert!(snapshot.contains("a") && !snapshot.contains("me"));
        let frame = snapshot.splice_users(head(), Some(me.clone()), PresenceFormat::Compact);
        assert_eq!(&frame.to_bytes()[..], br#"{"type":"users","idle":["a","me"],"inCall":["b\""]}"#);
        let busy = UserEntry { name: "busy".into(), status: UserStatus::InCall };
        let frame = snapshot.splice_users(head(), Some(busy), PresenceFormat::Compact);
        assert_eq!(&frame.to_bytes()[..], br#"{"type":"users","idle":["a"],"inCall":["b\"","busy"]}"#);
        let frame = snapshot.splice_users(head(), Some(me), PresenceFormat::Full);
        let value: Value = serde_json::from_slice(&frame.to_bytes()).unwrap();
        assert_eq!(value["users"].as_array().unwrap().len(), 3);
        assert_eq!(value["users"][1]["name"], "b\"");
        assert_eq!(
            &snapshot.render_user_list(Some("me")).to_bytes()[..],
            br#"{"type":"RenderUserList","userlist":["a","b\"","me"]}"#
        );
    }

    #[test]
    fn long_lists_are_shared_pieces_of_the_frames() {
        let mut snapshot = Snapshot::default();
        let keys: Vec<Arc<str>> = (0..200).map(|i| arc(&format!("user{i}"))).collect();
        snapshot.rebuild(keys.iter().map(|key| (key, key.as_ref(), UserStatus::Idle)));
        let head = || br#"{"type":"welcome"}"#.to_vec();
        let me = UserEntry { name: "me".into(), status: UserStatus::Idle };
        let first = snapshot.splice_users(head(), Some(me.clone()), PresenceFormat::Compact);
        let second = snapshot.splice_users(head(), None, PresenceFormat::Compact);
        let shared_of = |frame: &OutFrame| {
            let mut shared = Vec::new();
            frame.for_each_piece(|bytes, piece| {
                if let Some(piece) = piece {
                    shared.push((bytes.as_ptr(), piece.clone()));
                }
            });
            shared
        };
        // The idle list is long enough to share, the empty in-call list is not.
        let (first_shared, second_shared) = (shared_of(&first), shared_of(&second));
        assert_eq!(first_shared.len(), 1);
        assert_eq!(first_shared[0].0, second_shared[0].0, "both frames point at the same list");
        let value: Value = serde_json::from_slice(&first.to_bytes()).unwrap();
        let idle = value["idle"].as_array().unwrap();
        assert_eq!((idle.len(), idle[0].as_str(), idle[200].as_str()), (201, Some("user0"), Some("me")));
        assert_eq!(value["inCall"], serde_json::json!([]));
        let value: Value = serde_json::from_slice(&second.to_bytes()).unwrap();
        assert_eq!(value["idle"].as_array().unwrap().len(), 200);
        let tutorial: Value = serde_json::from_slice(&snapshot.render_user_list(Some("me")).to_bytes()).unwrap();
        assert_eq!(tutorial["userlist"].as_array().unwrap().len(), 201);
    }
}
