//! Rooms for group (mesh) calls: membership, member events, limits, and who may enter.
//!
//! A room may need a password: one from the configuration, or one its first member set when the join created it
//! (that one lasts as long as the room: when the last member leaves, the room and its password are gone). A login
//! token with a `rooms` claim admits to the rooms it lists without their passwords, and to no other room.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use serde_json::value::RawValue;
use switchboard_proto::{
    event::LeaveReason,
    names::{name_key, normalize_name},
    Dialect, ErrorCode, OutEvent,
};

use crate::auth::{PasswordDigest, MAX_ROOM_PASSWORD_BYTES};
use crate::signaling::{ConnId, Origin, SessionId, Signaling};

/// A room with at least one member.
#[derive(Debug)]
pub(crate) struct Room {
    pub(crate) name: Arc<str>,
    /// In join order.
    pub(crate) members: Vec<SessionId>,
    /// What a joiner must know, unless its token lists the room.
    pub(crate) password: Option<PasswordDigest>,
}

/// What a `join` runs into at the door.
enum Door {
    Open,
    Forbidden,
    PasswordRequired,
    WrongPassword,
}

impl Signaling {
    pub(crate) fn join(
        &mut self,
        now: Instant,
        conn: ConnId,
        session: SessionId,
        id: Option<&RawValue>,
        raw: &str,
        password: Option<&str>,
    ) {
        if self.sessions.get(&session).is_some_and(|s| s.dialect != Dialect::V1) {
            return self.fail(now, conn, id, ErrorCode::NotSupported, "rooms need protocol v1".into());
        }
        let name = match normalize_name(raw) {
            Ok(name) => name,
            Err(error) => return self.fail(now, conn, id, ErrorCode::InvalidRoom, error.to_string().into()),
        };
        let key: Arc<str> = Arc::from(name_key(&name).as_ref());
        let Some(state) = self.sessions.get(&session) else {
            return;
        };
        let member_name = state.name.clone();
        let already_member = state.rooms.contains(&key);
        // An empty password is no password: a form left blank must not protect a room with "".
        let password = password.filter(|p| !p.is_empty());
        if !already_member {
            if password.is_some_and(|p| p.len() > MAX_ROOM_PASSWORD_BYTES) {
                let message = format!("a room password has at most {MAX_ROOM_PASSWORD_BYTES} bytes");
                return self.fail(now, conn, id, ErrorCode::BadRequest, message.into());
            }
            let (code, message) = match self.door(session, &key, password) {
                Door::Open => (None, String::new()),
                Door::Forbidden => {
                    (Some(ErrorCode::RoomForbidden), format!("your login token does not admit you to room {name:?}"))
                }
                Door::PasswordRequired => {
                    (Some(ErrorCode::RoomPasswordRequired), format!("room {name:?} needs a password"))
                }
                Door::WrongPassword => {
                    (Some(ErrorCode::WrongRoomPassword), format!("wrong password for room {name:?}"))
                }
            };
            if let Some(code) = code {
                return self.fail(now, conn, id, code, message.into());
            }
            let Some(state) = self.sessions.get(&session) else {
                return;
            };
            if state.rooms.len() >= self.config.max_rooms_per_user {
                let message = format!("you are in {} rooms, the most allowed", state.rooms.len());
                return self.fail(now, conn, id, ErrorCode::TooManyRooms, message.into());
            }
            let full = self.rooms.get(&key).is_some_and(|r| r.members.len() >= self.config.max_room_size);
            if full {
                let message = format!("room {name:?} has {} members, the most allowed", self.config.max_room_size);
                return self.fail(now, conn, id, ErrorCode::RoomFull, message.into());
            }
            if !self.rooms.contains_key(&key) {
                // The first joiner's password protects the room, unless the configuration gave it one.
                let password = match self.room_passwords.get(&key) {
                    Some(configured) => Some(configured.clone()),
                    None => password.map(|p| self.password_key.digest(p)),
                };
                self.rooms.insert(key.clone(), Room { name: Arc::from(name.as_str()), members: Vec::new(), password });
            }
            let Some(room) = self.rooms.get_mut(&key) else {
                return;
            };
            room.members.push(session);
            let others: Vec<SessionId> = room.members.iter().copied().filter(|&m| m != session).collect();
            let room_name = room.name.clone();
            if let Some(state) = self.sessions.get_mut(&session) {
                state.rooms.push(key.clone());
            }
            let event = OutEvent::MemberJoined { room: room_name.as_ref().into(), name: member_name.as_ref().into() };
            self.tell_live(&others, Bytes::from(event.to_json()));
        }
        if let Some(room) = self.room_snapshot(&key) {
            let frame = OutEvent::Joined { id, room }.to_json();
            self.send(conn, frame);
        }
    }

    /// Whether `session` may enter the room `key`, giving `password`.
    fn door(&self, session: SessionId, key: &Arc<str>, password: Option<&str>) -> Door {
        match self.sessions.get(&session).and_then(|s| s.allowed_rooms.as_ref()) {
            Some(allowed) if allowed.contains(key) => return Door::Open,
            Some(_) => return Door::Forbidden,
            None => {}
        }
        let required = match self.rooms.get(key) {
            Some(room) => room.password.as_ref(),
            None => self.room_passwords.get(key),
        };
        match (required, password) {
            (None, _) => Door::Open,
            (Some(_), None) => Door::PasswordRequired,
            (Some(digest), Some(given)) if self.password_key.matches(digest, given) => Door::Open,
            (Some(_), Some(_)) => Door::WrongPassword,
        }
    }

    pub(crate) fn leave(&mut self, now: Instant, conn: ConnId, session: SessionId, id: Option<&RawValue>, raw: &str) {
        let key = name_key(raw);
        let Some(room_name) =
            self.rooms.get(key.as_ref()).filter(|r| r.members.contains(&session)).map(|r| r.name.clone())
        else {
            let shown: String = raw.chars().take(32).collect();
            return self.fail(now, conn, id, ErrorCode::NotInRoom, format!("you are not in room {shown:?}").into());
        };
        let key: Arc<str> = Arc::from(key.as_ref());
        self.remove_from_room(session, &key, LeaveReason::Left);
        self.send(conn, OutEvent::Left { id, room: room_name.as_ref().into() }.to_json());
    }

    /// Takes `session` out of the room `key` and tells the other members.
    pub(crate) fn remove_from_room(&mut self, session: SessionId, key: &Arc<str>, reason: LeaveReason) {
        let Some(state) = self.sessions.get_mut(&session) else {
            return;
        };
        state.rooms.retain(|r| r != key);
        let name = state.name.clone();
        let Some(room) = self.rooms.get_mut(key) else {
            return;
        };
        room.members.retain(|&m| m != session);
        let (room_name, others) = (room.name.clone(), room.members.clone());
        if others.is_empty() {
            self.rooms.remove(key);
            return;
        }
        let event = OutEvent::MemberLeft { room: room_name.as_ref().into(), name: name.as_ref().into(), reason };
        self.tell_live(&others, Bytes::from(event.to_json()));
    }

    /// Sends `frame` to those of `sessions` that are connected; a resuming session learns the room's state from its
    /// `welcome` instead.
    fn tell_live(&mut self, sessions: &[SessionId], frame: Bytes) {
        for session in sessions {
            if self.sessions.get(session).is_some_and(|s| s.conn.is_some()) {
                self.deliver(*session, frame.clone(), Origin::Nobody);
            }
        }
    }
}
