// Switchboard JS SDK: the signaling client.
//
// Wraps protocol v1 (docs/protocol.md): login, presence, calls, rooms, relay, and reconnection with the resume token.
// No dependencies, no build step: an ES module served by the Switchboard binary at /sdk/switchboard.js.
//
//   import { SwitchboardClient } from '/sdk/switchboard.js';
//   const client = new SwitchboardClient();            // ws(s)://<this host>/ws
//   const welcome = await client.login('alice');      // or login(null, { token }) on a server in token mode
//   client.addEventListener('presence', () => console.log([...client.users]));
//
// Events (CustomEvent, payload in `detail`): state, welcome, presence, ring, accepted, hangup, offer, answer,
// candidate, end-of-candidates, member-joined, member-left, error, resumed, session-lost, message (every frame).

/** An error reply from the server: `code` is one of the protocol's error codes. */
export class SwitchboardError extends Error {
  constructor(code, message, reply) {
    super(message || code);
    this.name = 'SwitchboardError';
    this.code = code;
    this.reply = reply;
  }
}

/** Connection states, in `client.state` and the `state` event. */
export const State = Object.freeze({
  IDLE: 'idle',
  CONNECTING: 'connecting',
  OPEN: 'open',
  RECONNECTING: 'reconnecting',
  CLOSED: 'closed',
});

const REQUEST_TIMEOUT_MS = 10000;
const PING_INTERVAL_MS = 10000;
const RECONNECT_DELAYS_MS = [250, 500, 1000, 2000, 4000, 8000];
// Close codes after which reconnecting would be wrong (docs/protocol.md: replaced by another login, logged out,
// disconnected by an administrator).
const FINAL_CLOSE_CODES = new Set([4001, 4004, 4005]);

function defaultUrl() {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${location.host}/ws`;
}

/**
 * The [name, status] pairs of a `welcome`, `users` or `presence` message, in either presence format: `users`,
 * `joined` and `changed` hold {name, status} objects (full); `idle` and `inCall` hold names (compact).
 */
function userEntries(msg) {
  const entries = [];
  for (const field of ['users', 'joined', 'changed']) {
    for (const user of msg[field] || []) entries.push([user.name, user.status]);
  }
  for (const name of msg.idle || []) entries.push([name, 'idle']);
  for (const name of msg.inCall || []) entries.push([name, 'in-call']);
  return entries;
}

export class SwitchboardClient extends EventTarget {
  /**
   * @param {object} [options]
   * @param {string} [options.url] WebSocket URL; defaults to /ws on the page's host.
   * @param {boolean} [options.reconnect=true] Reconnect and resume after a dropped connection.
   * @param {string} [options.token] Login token for servers in token mode; `login` sends it unless given another.
   */
  constructor(options = {}) {
    super();
    this.url = options.url || defaultUrl();
    this.reconnect = options.reconnect !== false;
    this.token = options.token || null;
    this.state = State.IDLE;
    /** @type {Map<string, string>} name -> status ('idle' | 'in-call'), kept current from welcome and presence. */
    this.users = new Map();
    this.name = null;
    this.resumeToken = null;
    this.iceServers = [];
    this.limits = null;
    this.welcome = null;
    this.ws = null;
    this._nextId = 1;
    this._pending = new Map();
    this._attempt = 0;
    this._pingTimer = null;
    this._reconnectTimer = null;
    this._goawayTimer = null;
    this._wantOpen = false;
  }

  // ---- connection ----

  _setState(state) {
    if (this.state === state) return;
    this.state = state;
    this._emit('state', { state });
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  /** Opens the WebSocket (resolves once open). `login` calls it for you. */
  connect() {
    if (this.ws && (this.ws.readyState === WebSocket.OPEN || this.ws.readyState === WebSocket.CONNECTING)) {
      return this._opened;
    }
    this._wantOpen = true;
    this._setState(this.state === State.RECONNECTING ? State.RECONNECTING : State.CONNECTING);
    const ws = new WebSocket(this.url);
    this.ws = ws;
    this._opened = new Promise((resolve, reject) => {
      ws.addEventListener('open', () => resolve(), { once: true });
      ws.addEventListener('close', () => reject(new SwitchboardError('connection-failed', 'cannot reach the server')), { once: true });
    });
    ws.addEventListener('message', (event) => this._onMessage(event));
    ws.addEventListener('close', (event) => this._onClose(ws, event));
    return this._opened;
  }

  _onClose(ws, event) {
    if (ws !== this.ws) return;
    clearInterval(this._pingTimer);
    this._pingTimer = null;
    clearTimeout(this._goawayTimer);
    for (const [, pending] of this._pending) {
      pending.reject(new SwitchboardError('connection-lost', 'the connection to the server was lost'));
    }
    this._pending.clear();
    const final = FINAL_CLOSE_CODES.has(event.code);
    if (final && (event.code === 4001 || event.code === 4005)) {
      this.resumeToken = null;
      this._emit('session-lost', { code: event.code, reason: event.reason });
    }
    if (this._wantOpen && this.reconnect && !final && this.resumeToken) {
      this._setState(State.RECONNECTING);
      const delay = RECONNECT_DELAYS_MS[Math.min(this._attempt, RECONNECT_DELAYS_MS.length - 1)];
      this._attempt += 1;
      clearTimeout(this._reconnectTimer);
      this._reconnectTimer = setTimeout(() => this._reconnect(), delay);
    } else {
      this._setState(State.CLOSED);
    }
  }

  async _reconnect() {
    try {
      await this.connect();
      const welcome = await this._login({ type: 'login', resume: this.resumeToken });
      this._attempt = 0;
      this._emit('resumed', welcome);
    } catch (error) {
      if (error instanceof SwitchboardError && error.code === 'resume-failed' && this.name) {
        // The grace period is over: the session is gone. Log in afresh under the same name if it is free.
        this.resumeToken = null;
        this._emit('session-lost', { code: 'resume-failed' });
        try {
          await this.login(this.name);
        } catch (loginError) {
          this._emit('error', loginError);
          this.close();
        }
      }
      // Otherwise the socket closed again; _onClose schedules the next attempt.
    }
  }

  /** Closes the connection for good (no reconnect). Use `logout` to end the session on the server too. */
  close() {
    this._wantOpen = false;
    clearTimeout(this._reconnectTimer);
    clearTimeout(this._goawayTimer);
    if (this.ws) this.ws.close(1000);
    this._setState(State.CLOSED);
  }

  /** For tests and debugging: drops the WebSocket as a network failure would; the client reconnects and resumes. */
  dropConnection() {
    if (this.ws) this.ws.close(4000, 'dropped');
  }

  // ---- frames ----

  _onMessage(event) {
    let msg;
    try {
      msg = JSON.parse(event.data);
    } catch {
      return;
    }
    this._emit('message', msg);
    if (msg.id !== undefined && this._pending.has(msg.id) && msg.type !== 'hello') {
      const pending = this._pending.get(msg.id);
      this._pending.delete(msg.id);
      clearTimeout(pending.timer);
      if (msg.type === 'error') pending.reject(new SwitchboardError(msg.code, msg.message, msg));
      else pending.resolve(msg);
      if (msg.type !== 'welcome' && msg.type !== 'users') return;
    }
    switch (msg.type) {
      case 'welcome':
      case 'users':
        this.users = new Map(userEntries(msg));
        this._emit('presence', { users: this.users, snapshot: true });
        break;
      case 'presence':
        // `left` first: a user renamed within one tick is in `left` under the old spelling.
        for (const name of msg.left || []) this.users.delete(name);
        for (const [name, status] of userEntries(msg)) this.users.set(name, status);
        this._emit('presence', { users: this.users, delta: msg });
        break;
      case 'ice-servers':
        // Fresh TURN credentials: links created from now on use them.
        this.iceServers = msg.iceServers || [];
        this._emit('ice-servers', msg);
        break;
      case 'error':
        this._emit('error', new SwitchboardError(msg.code, msg.message, msg));
        break;
      case 'goaway': {
        // The server is shutting down: leave at the moment it suggests (spread so that a crowd does not come back at
        // once), then reconnect and resume as after any dropped connection.
        const ws = this.ws;
        clearTimeout(this._goawayTimer);
        this._goawayTimer = setTimeout(() => {
          if (this.ws === ws) ws.close(4000, 'goaway');
        }, Math.max(0, Number(msg.reconnectAfterMs) || 0));
        this._emit('goaway', msg);
        break;
      }
      default:
        this._emit(msg.type, msg);
    }
  }

  /** Sends a message without waiting for a reply. */
  send(msg) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) {
      throw new SwitchboardError('not-connected', 'not connected to the server');
    }
    this.ws.send(JSON.stringify(msg));
  }

  /** Sends a request with a fresh `id` and resolves with the reply carrying it (rejects with SwitchboardError). */
  request(msg) {
    const id = this._nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._pending.delete(id);
        reject(new SwitchboardError('timeout', `no reply to ${msg.type}`));
      }, REQUEST_TIMEOUT_MS);
      this._pending.set(id, { resolve, reject, timer });
      try {
        this.send({ ...msg, id });
      } catch (error) {
        clearTimeout(timer);
        this._pending.delete(id);
        reject(error);
      }
    });
  }

  // ---- session ----

  /**
   * Logs in by name; resolves with the `welcome` message.
   * @param {string|null} name The name; on a server in token mode it may be left out (null): the token names the user.
   * @param {object} [options]
   * @param {string} [options.token] Login token (kept for later logins); defaults to the constructor's.
   */
  async login(name, options = {}) {
    if (options.token) this.token = options.token;
    await this.connect();
    const msg = { type: 'login' };
    if (name) msg.name = name;
    msg.protocol = 1;
    if (this.token) msg.token = this.token;
    return this._login(msg);
  }

  async _login(msg) {
    // Names grouped by status instead of {name, status} objects: under half the bytes for a big lobby. A server
    // that predates the field ignores it and sends the full format, which `userEntries` reads too.
    msg.presence = 'compact';
    const welcome = await this.request(msg);
    this.welcome = welcome;
    this.name = welcome.name;
    this.resumeToken = welcome.resumeToken;
    this.iceServers = welcome.iceServers || [];
    this.limits = welcome.limits;
    this._setState(State.OPEN);
    clearInterval(this._pingTimer);
    // Browsers answer the server's WebSocket pings but cannot see them; an application ping notices a dead link.
    this._pingTimer = setInterval(() => this._ping(), PING_INTERVAL_MS);
    this._emit('welcome', welcome);
    return welcome;
  }

  async _ping() {
    const ws = this.ws;
    try {
      await this.request({ type: 'ping' });
    } catch (error) {
      if (ws === this.ws && error.code === 'timeout') ws.close(4000, 'ping timeout');
    }
  }

  /** Ends the session on the server (no grace period) and closes. */
  async logout() {
    this._wantOpen = false;
    try {
      await this.request({ type: 'logout' });
    } finally {
      this.resumeToken = null;
      this.close();
    }
  }

  /** Asks for the full list of online users; resolves with it (also updates `users`). */
  async listUsers() {
    const reply = await this.request({ type: 'users' });
    return userEntries(reply).map(([name, status]) => ({ name, status }));
  }

  // ---- calls ----

  /** Rings `to`; resolves with the call id once it rings (rejects with busy, unknown-peer, ...). */
  async call(to) {
    const reply = await this.request({ type: 'call', to });
    return reply.callId;
  }

  accept(callId) {
    return this.request({ type: 'accept', callId });
  }

  reject(callId) {
    return this.request({ type: 'reject', callId });
  }

  cancel(callId) {
    return this.request({ type: 'cancel', callId });
  }

  hangup(callId) {
    return this.request({ type: 'hangup', callId });
  }

  // ---- rooms ----

  /**
   * Joins a room; resolves with its members in join order (this user last). Rejects with `room-password-required`,
   * `wrong-room-password` or `room-forbidden` when the room is closed to this user.
   * @param {string} room
   * @param {object} [options]
   * @param {string} [options.password] The room's password; when this join creates the room, it sets the password.
   */
  async join(room, options = {}) {
    const reply = await this.joinRoom(room, options);
    return reply.members;
  }

  /** `join`, resolving with the whole `joined` reply: `{ room, members, protected }` (`protected`: needs a password). */
  joinRoom(room, options = {}) {
    const msg = { type: 'join', room };
    if (options.password) msg.password = options.password;
    return this.request(msg);
  }

  leave(room) {
    return this.request({ type: 'leave', room });
  }

  // ---- relay ----

  /** Relays an SDP description (`{type, sdp}`) as an offer or answer. `extra` may hold callId and room. */
  sendDescription(to, description, extra = {}) {
    const sdp = { type: description.type, sdp: description.sdp };
    this.send({ type: description.type, to, sdp, ...extra });
  }

  /** Relays one ICE candidate, or end-of-candidates when `candidate` is null. */
  sendCandidate(to, candidate, extra = {}) {
    if (candidate) this.send({ type: 'candidate', to, candidate: candidate.toJSON ? candidate.toJSON() : candidate, ...extra });
    else this.send({ type: 'end-of-candidates', to, ...extra });
  }
}
