//! 1:1 call control: ring, accept, reject, cancel, hang up, ring timeout.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use serde_json::value::RawValue;
use switchboard_proto::{event::HangupReason, Dialect, ErrorCode, OutEvent, UserStatus};

use crate::signaling::{ConnId, Origin, SessionId, Signaling};
use crate::timers::Timer;

/// A call that rings or is active.
#[derive(Debug)]
pub(crate) struct Call {
    pub(crate) caller: SessionId,
    pub(crate) callee: SessionId,
    pub(crate) active: bool,
    ring_deadline: Instant,
}

impl Signaling {
    pub(crate) fn call(&mut self, now: Instant, conn: ConnId, session: SessionId, id: Option<&RawValue>, to: &str) {
        let Some(callee) = self.session_by_name(to) else {
            return self.unknown_peer(now, conn, id, to);
        };
        if callee == session {
            return self.fail(now, conn, id, ErrorCode::BadRequest, "cannot call yourself".into());
        }
        if self.sessions.get(&session).is_some_and(|s| s.call.is_some()) {
            return self.fail(now, conn, id, ErrorCode::AlreadyInCall, "you are in a call already".into());
        }
        let Some(callee_state) = self.sessions.get(&callee) else {
            return;
        };
        if let (Dialect::Tutorial, Some(current)) = (callee_state.dialect, callee_state.call.clone()) {
            // A tutorial page cannot hang up, and it answers every new offer by dropping its current call: so a
            // tutorial user is never busy, and a new call replaces the current one, as the page itself would.
            self.end_call(now, &current, callee, HangupReason::Hangup);
        }
        let Some(callee_state) = self.sessions.get(&callee) else {
            return;
        };
        if callee_state.call.is_some() {
            let message = format!("{} is in another call", callee_state.name);
            return self.fail(now, conn, id, ErrorCode::Busy, message.into());
        }
        let (callee_name, callee_dialect) = (callee_state.name.clone(), callee_state.dialect);
        let Some(caller_name) = self.sessions.get(&session).map(|s| s.name.clone()) else {
            return;
        };
        let call_id = self.random_id();
        let ring_deadline = now + self.config.ring_timeout;
        // Tutorial pages answer every offer by themselves and cannot answer a ring: accept on their behalf.
        let active = callee_dialect == Dialect::Tutorial;
        self.calls.insert(call_id.clone(), Call { caller: session, callee, active, ring_deadline });
        for party in [session, callee] {
            if let Some(state) = self.sessions.get_mut(&party) {
                state.call = Some(call_id.clone());
            }
            self.set_status(now, party, UserStatus::InCall);
        }
        let ringing = OutEvent::Ringing { id, call_id: call_id.as_ref().into(), to: callee_name.as_ref().into() };
        self.send(conn, ringing.to_json());
        if active {
            let accepted = OutEvent::Accepted { call_id: call_id.as_ref().into(), from: callee_name.as_ref().into() };
            self.send(conn, accepted.to_json());
        } else {
            let ring = OutEvent::Ring { call_id: call_id.as_ref().into(), from: caller_name.as_ref().into() };
            self.deliver(callee, Bytes::from(ring.to_json()), Origin::Nobody);
            self.timers.at(ring_deadline, Timer::Ring(call_id));
        }
    }

    /// The call `call_id` if `session` takes part in it.
    fn own_call(&self, session: SessionId, call_id: &str) -> Option<(Arc<str>, &Call)> {
        let (key, call) = self.calls.get_key_value(call_id)?;
        (call.caller == session || call.callee == session).then(|| (key.clone(), call))
    }

    /// The call `call_id` if it still rings and `session` placed it (`as_caller`) or is being called.
    fn ringing_call(&self, session: SessionId, call_id: &str, as_caller: bool) -> Option<(Arc<str>, &Call)> {
        self.own_call(session, call_id).filter(|(_, c)| !c.active && (c.caller == session) == as_caller)
    }

    fn unknown_call(&mut self, now: Instant, conn: ConnId, id: Option<&RawValue>, call_id: &str, state: &str) {
        let shown: String = call_id.chars().take(32).collect();
        let message = format!("no {state}call {shown:?} of yours");
        self.fail(now, conn, id, ErrorCode::UnknownCall, message.into());
    }

    fn ack(&mut self, conn: ConnId, id: Option<&RawValue>) {
        if let Some(id) = id {
            self.send(conn, OutEvent::Ack { id }.to_json());
        }
    }

    pub(crate) fn accept(
        &mut self,
        now: Instant,
        conn: ConnId,
        session: SessionId,
        id: Option<&RawValue>,
        call_id: &str,
    ) {
        let Some((key, caller)) = self.ringing_call(session, call_id, false).map(|(key, call)| (key, call.caller))
        else {
            return self.unknown_call(now, conn, id, call_id, "ringing incoming ");
        };
        if let Some(call) = self.calls.get_mut(&key) {
            call.active = true;
        }
        self.ack(conn, id);
        let Some(callee_name) = self.sessions.get(&session).map(|s| s.name.clone()) else {
            return;
        };
        let accepted = OutEvent::Accepted { call_id: key.as_ref().into(), from: callee_name.as_ref().into() };
        self.deliver(caller, Bytes::from(accepted.to_json()), Origin::Nobody);
    }

    /// `reject` by the callee or `cancel` by the caller of a call that still rings.
    pub(crate) fn end_ringing(
        &mut self,
        now: Instant,
        conn: ConnId,
        session: SessionId,
        id: Option<&RawValue>,
        call_id: &str,
        as_caller: bool,
    ) {
        let Some((key, _)) = self.ringing_call(session, call_id, as_caller) else {
            let which = if as_caller { "ringing outgoing " } else { "ringing incoming " };
            return self.unknown_call(now, conn, id, call_id, which);
        };
        let reason = if as_caller { HangupReason::Cancelled } else { HangupReason::Rejected };
        self.ack(conn, id);
        self.end_call(now, &key, session, reason);
    }

    pub(crate) fn hangup(
        &mut self,
        now: Instant,
        conn: ConnId,
        session: SessionId,
        id: Option<&RawValue>,
        call_id: &str,
    ) {
        let Some((key, call)) = self.own_call(session, call_id) else {
            return self.unknown_call(now, conn, id, call_id, "");
        };
        let reason = match (call.active, call.caller == session) {
            (true, _) => HangupReason::Hangup,
            (false, true) => HangupReason::Cancelled,
            (false, false) => HangupReason::Rejected,
        };
        self.ack(conn, id);
        self.end_call(now, &key, session, reason);
    }

    pub(crate) fn ring_timeout(&mut self, now: Instant, call_id: &Arc<str>, deadline: Instant) {
        let Some(call) = self.calls.get(call_id).filter(|c| !c.active && c.ring_deadline == deadline) else {
            return;
        };
        let (caller, callee) = (call.caller, call.callee);
        let Some(callee_name) = self.sessions.get(&callee).map(|s| s.name.clone()) else {
            return;
        };
        self.calls.remove(call_id);
        let hangup = Bytes::from(
            OutEvent::Hangup {
                call_id: call_id.as_ref().into(),
                from: callee_name.as_ref().into(),
                reason: HangupReason::NoAnswer,
            }
            .to_json(),
        );
        for party in [caller, callee] {
            self.clear_call(now, party);
            self.deliver(party, hangup.clone(), Origin::Nobody);
        }
    }

    /// Ends a call because of `by`: the other party gets `hangup` with `reason`.
    pub(crate) fn end_call(&mut self, now: Instant, call_id: &str, by: SessionId, reason: HangupReason) {
        let Some(call) = self.calls.remove(call_id) else {
            return;
        };
        let peer = if call.caller == by { call.callee } else { call.caller };
        self.clear_call(now, by);
        self.clear_call(now, peer);
        let Some(by_name) = self.sessions.get(&by).map(|s| s.name.clone()) else {
            return;
        };
        let peer_is_v1 = self.sessions.get(&peer).is_some_and(|s| s.dialect == Dialect::V1);
        if peer_is_v1 {
            let from: Cow<'_, str> = by_name.as_ref().into();
            let hangup = OutEvent::Hangup { call_id: call_id.into(), from, reason };
            self.deliver(peer, Bytes::from(hangup.to_json()), Origin::Nobody);
        }
    }

    fn clear_call(&mut self, now: Instant, session: SessionId) {
        if let Some(state) = self.sessions.get_mut(&session) {
            state.call = None;
        }
        self.set_status(now, session, UserStatus::Idle);
    }
}
