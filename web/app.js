// The Switchboard web client: lobby, 1:1 calls and group (mesh) calls, built on the SDK in /sdk/.
// Every piece of user-supplied text (names, chat) goes into the page through textContent, never as HTML.

import { SwitchboardClient, State } from '/sdk/switchboard.js';
import { PeerLink, getLocalMedia } from '/sdk/webrtc.js';

const $ = (id) => document.getElementById(id);
const ui = {
  me: $('me'), meName: $('me-name'), logout: $('logout-btn'), banner: $('banner'),
  loginView: $('login-view'), loginForm: $('login-form'), nameInput: $('name-input'), loginError: $('login-error'),
  lobbyView: $('lobby-view'), userList: $('user-list'), lobbyNotice: $('lobby-notice'),
  roomForm: $('room-form'), roomInput: $('room-input'), roomPassword: $('room-password'), roomError: $('room-error'),
  callView: $('call-view'), callTitle: $('call-title'), callStatus: $('call-status'), duration: $('call-duration'),
  mediaNotice: $('media-notice'), grid: $('video-grid'), quality: $('quality'),
  mute: $('mute-btn'), camera: $('camera-btn'), screen: $('screen-btn'), cancel: $('cancel-btn'), hangup: $('hangup-btn'),
  chatLog: $('chat-log'), chatForm: $('chat-form'), chatInput: $('chat-input'),
  incoming: $('incoming-dialog'), incomingName: $('incoming-name'), incomingKind: $('incoming-kind'),
  accept: $('accept-btn'), reject: $('reject-btn'),
};

const ERROR_TEXT = {
  'name-taken': 'That name is taken. Choose another one.',
  'invalid-name': 'Names use letters, digits, _ - . and single spaces, up to 32 characters.',
  'connection-failed': 'Cannot reach the server.',
  'connection-lost': 'The connection was lost.',
  busy: 'is busy in another call.',
  'already-in-call': 'You are already in a call.',
  'unknown-peer': 'is no longer online.',
  'room-full': 'That room is full.',
  'invalid-room': 'Room names follow the same rules as user names.',
  'too-many-rooms': 'You are in too many rooms.',
  'auth-required': 'This server admits sign-in links only: open the link you were given.',
  'invalid-token': 'Your sign-in link is not valid.',
  'token-expired': 'Your sign-in link has expired. Ask for a new one.',
  'token-name-mismatch': 'Your sign-in link is for another name.',
  'room-password-required': 'That room needs a password.',
  'wrong-room-password': 'Wrong password for that room.',
  'room-forbidden': 'Your sign-in link does not admit you to that room.',
};

const HANGUP_TEXT = {
  rejected: 'declined the call.',
  'no-answer': 'did not answer.',
  cancelled: 'cancelled the call.',
  hangup: 'hung up.',
  disconnected: 'lost their connection.',
};

// A sign-in link (`/?token=...`) for servers that admit logins with a token only. The token is kept for this tab
// and taken out of the address bar, so that the link is not bookmarked or shared by accident.
const token = takeToken();
const client = new SwitchboardClient(token ? { token } : {});

function takeToken() {
  const params = new URLSearchParams(location.search);
  const fromUrl = params.get('token');
  if (fromUrl) {
    sessionStorage.setItem('switchboard-token', fromUrl);
    params.delete('token');
    const query = params.toString();
    history.replaceState(null, '', `${location.pathname}${query ? `?${query}` : ''}${location.hash}`);
  }
  return fromUrl || sessionStorage.getItem('switchboard-token');
}

/** The name a token was issued for (its `sub`), for display only: the server checks the token. */
function tokenName(jwt) {
  try {
    const part = jwt.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const bytes = Uint8Array.from(atob(part), (c) => c.charCodeAt(0));
    const sub = JSON.parse(new TextDecoder().decode(bytes)).sub;
    return typeof sub === 'string' ? sub : null;
  } catch {
    return null;
  }
}

/**
 * What the page is doing. `call` is null in the lobby; otherwise:
 *   { kind: 'outgoing' | 'incoming' | 'active', peer, callId, classic }   for 1:1 calls
 *   { kind: 'room', room }                                                  for group calls
 */
const app = {
  call: null,
  links: new Map(), // peer name -> PeerLink
  media: null, // { stream, mode, error }
  screenTrack: null,
  pendingOffer: null, // a classic client's offer waiting for accept: { from, messages: [] }
  startedAt: null,
  timers: [],
};
window.switchboard = { client, app, stats: allStats };

// ---------- login ----------

ui.loginForm.addEventListener('submit', async (event) => {
  event.preventDefault();
  ui.loginError.textContent = '';
  const name = ui.nameInput.value.trim();
  if (!name) return;
  ui.loginForm.querySelector('button').disabled = true;
  try {
    await client.login(name);
    sessionStorage.setItem('switchboard-name', client.name);
    showLobby();
  } catch (error) {
    ui.loginError.textContent = ERROR_TEXT[error.code] || error.message;
  } finally {
    ui.loginForm.querySelector('button').disabled = false;
  }
});

ui.logout.addEventListener('click', async () => {
  await leaveCall('hangup');
  try {
    await client.logout();
  } catch {
    // Already gone: nothing to undo.
  }
  location.reload();
});

client.addEventListener('state', (event) => {
  const { state } = event.detail;
  if (state === State.RECONNECTING) showBanner('Connection lost. Reconnecting…');
  else if (state === State.OPEN) hideBanner();
  else if (state === State.CLOSED && client.name) showBanner('Disconnected from the server. Reload the page to sign in again.');
});
client.addEventListener('resumed', () => hideBanner());
client.addEventListener('session-lost', (event) => {
  if (event.detail.code === 4001) showBanner('You signed in from another tab or device; this page is disconnected.');
  if (event.detail.code === 4005) showBanner('An administrator disconnected you. Reload the page to sign in again.');
});

function showBanner(text) {
  ui.banner.textContent = text;
  ui.banner.hidden = false;
}

function hideBanner() {
  ui.banner.hidden = true;
}

// ---------- lobby ----------

function showLobby() {
  ui.loginView.hidden = true;
  ui.me.hidden = false;
  ui.meName.textContent = client.name;
  ui.callView.hidden = true;
  ui.lobbyView.hidden = false;
  renderUsers();
}

client.addEventListener('presence', () => {
  const call = app.call;
  // A classic client has no hang-up: its leaving the lobby is how its call ends (v1 peers get a hangup event).
  if (call && call.kind !== 'room' && !client.users.has(call.peer)) {
    endCall(`${call.peer} went offline.`);
    return;
  }
  renderUsers();
});

function renderUsers() {
  const names = [...client.users.keys()].sort((a, b) => a.localeCompare(b));
  const busy = app.call !== null;
  const items = names.map((name) => {
    const status = client.users.get(name);
    const li = document.createElement('li');
    li.dataset.user = name;
    const label = document.createElement('span');
    label.className = 'name';
    label.textContent = name;
    const self = name === client.name;
    if (self) {
      const you = document.createElement('span');
      you.className = 'you';
      you.textContent = ' (you)';
      label.append(you);
      li.setAttribute('aria-current', 'true');
    }
    const badge = document.createElement('span');
    badge.className = `status ${status}`;
    badge.textContent = status === 'in-call' ? 'in a call' : 'available';
    li.append(label, badge);
    if (!self) {
      const button = document.createElement('button');
      button.type = 'button';
      button.textContent = 'Call';
      button.setAttribute('aria-label', `Call ${name}`);
      button.disabled = busy || status === 'in-call';
      button.addEventListener('click', () => placeCall(name));
      li.append(button);
    }
    return li;
  });
  ui.userList.replaceChildren(...items);
}

function notice(text) {
  ui.lobbyNotice.textContent = text;
}

// ---------- media ----------

async function ensureMedia() {
  if (app.media) return app.media;
  app.media = await getLocalMedia();
  const texts = {
    'audio-only': 'No camera available: you join with audio only.',
    'receive-only': 'No camera or microphone available: you can see and hear others, but they cannot see or hear you.',
  };
  ui.mediaNotice.textContent = texts[app.media.mode] || '';
  ui.camera.disabled = !app.media.stream.getVideoTracks().length;
  ui.mute.disabled = !app.media.stream.getAudioTracks().length;
  return app.media;
}

function addTile(peer, stream, local = false) {
  let tile = ui.grid.querySelector(`figure[data-peer="${CSS.escape(peer)}"]`);
  if (!tile) {
    tile = document.createElement('figure');
    tile.className = local ? 'tile local' : 'tile';
    tile.dataset.peer = peer;
    const video = document.createElement('video');
    video.autoplay = true;
    video.playsInline = true;
    video.muted = local;
    const caption = document.createElement('figcaption');
    caption.textContent = local ? `${peer} (you)` : peer;
    tile.append(video, caption);
    if (local) ui.grid.prepend(tile);
    else ui.grid.append(tile);
  }
  const video = tile.querySelector('video');
  if (video.srcObject !== stream) video.srcObject = stream;
  video.play().catch(() => {});
}

function removeTile(peer) {
  ui.grid.querySelector(`figure[data-peer="${CSS.escape(peer)}"]`)?.remove();
}

// ---------- peer links ----------

// `?relay` forces every call through the TURN server (iceTransportPolicy 'relay'): for trying TURN out.
const forceRelay = new URLSearchParams(location.search).has('relay');

function createLink(peer, options) {
  const policy = forceRelay ? { iceTransportPolicy: 'relay' } : {};
  const link = new PeerLink(client, peer, { stream: app.media.stream, ...policy, ...options });
  app.links.set(peer, link);
  link.addEventListener('track', (event) => addTile(peer, event.detail.stream));
  link.addEventListener('chat', (event) => addChat(event.detail.from, event.detail.text));
  link.addEventListener('state', (event) => {
    if (app.call && app.call.kind === 'active' && event.detail.state === 'connected') setStatus(`In a call with ${peer}`);
    if (event.detail.state === 'failed') setStatus(`Connection to ${peer} failed; retrying…`);
  });
  if (app.screenTrack) link.replaceTrack(app.screenTrack);
  return link;
}

function closeLink(peer) {
  const link = app.links.get(peer);
  if (link) link.close();
  app.links.delete(peer);
  removeTile(peer);
}

// Relayed messages: route by sender (and room). A classic (tutorial-dialect) client sends no callId.
for (const type of ['offer', 'answer', 'candidate', 'end-of-candidates']) {
  client.addEventListener(type, (event) => routeSignal(event.detail));
}

function routeSignal(msg) {
  const link = app.links.get(msg.from);
  if (link) {
    link.handle(msg);
    return;
  }
  if (app.pendingOffer && app.pendingOffer.from === msg.from) {
    app.pendingOffer.messages.push(msg);
    return;
  }
  if (msg.type === 'offer' && !msg.room && !msg.callId && app.call === null) {
    // A classic tutorial page calls by sending an offer straight away: treat it as an incoming call.
    app.pendingOffer = { from: msg.from, messages: [msg] };
    app.call = { kind: 'incoming', peer: msg.from, callId: null, classic: true };
    showIncoming(msg.from, true);
  }
}

// ---------- 1:1 calls ----------

async function placeCall(peer) {
  if (app.call) return;
  notice('');
  app.call = { kind: 'outgoing', peer, callId: null, classic: false };
  renderUsers();
  showCallView(`Calling ${peer}`, `Ringing ${peer}…`);
  ui.cancel.hidden = false;
  ui.hangup.hidden = true;
  try {
    await ensureMedia();
    addTile(client.name, app.media.stream, true);
    if (!app.call || app.call.peer !== peer) return;
    app.call.callId = await client.call(peer);
  } catch (error) {
    endCall(`${peer} ${ERROR_TEXT[error.code] || error.message}`);
  }
}

client.addEventListener('accepted', (event) => {
  const msg = event.detail;
  if (!app.call || app.call.kind !== 'outgoing' || app.call.callId !== msg.callId) return;
  app.call.kind = 'active';
  ui.cancel.hidden = true;
  ui.hangup.hidden = false;
  ui.callTitle.textContent = `Call with ${msg.from}`;
  setStatus(`Connecting to ${msg.from}…`);
  startTimer();
  createLink(msg.from, { callId: msg.callId }).start();
});

client.addEventListener('ring', (event) => {
  const msg = event.detail;
  if (app.call) return; // the server rings only idle users; a ring racing a classic offer loses
  app.call = { kind: 'incoming', peer: msg.from, callId: msg.callId, classic: false };
  showIncoming(msg.from, false);
});

client.addEventListener('hangup', (event) => {
  const msg = event.detail;
  if (!app.call || app.call.kind === 'room' || app.call.callId !== msg.callId) return;
  const peer = app.call.peer;
  if (ui.incoming.open) ui.incoming.close();
  endCall(`${peer} ${HANGUP_TEXT[msg.reason] || 'ended the call.'}`);
});

function showIncoming(peer, classic) {
  ui.incomingName.textContent = peer;
  ui.incomingKind.textContent = classic ? ' (classic client)' : '';
  renderUsers();
  if (!ui.incoming.open) ui.incoming.showModal();
  ui.accept.focus();
}

ui.accept.addEventListener('click', async () => {
  ui.incoming.close();
  const call = app.call;
  if (!call || call.kind !== 'incoming') return;
  showCallView(`Call with ${call.peer}`, `Connecting to ${call.peer}…`);
  ui.cancel.hidden = true;
  ui.hangup.hidden = false;
  await ensureMedia();
  addTile(client.name, app.media.stream, true);
  if (app.call !== call) return;
  call.kind = 'active';
  startTimer();
  const link = createLink(call.peer, call.classic ? { classic: true } : { callId: call.callId });
  if (call.classic) ui.mediaNotice.textContent = `${call.peer} uses a classic client: chat is not available in this call.`;
  if (call.classic) {
    const pending = app.pendingOffer;
    app.pendingOffer = null;
    for (const msg of pending ? pending.messages : []) link.handle(msg);
  } else {
    try {
      await client.accept(call.callId);
    } catch (error) {
      endCall(`The call ended before you answered (${error.code}).`);
    }
  }
});

ui.reject.addEventListener('click', async () => {
  ui.incoming.close();
  const call = app.call;
  app.call = null;
  app.pendingOffer = null;
  renderUsers();
  if (call && call.callId) {
    try {
      await client.reject(call.callId);
    } catch {
      // It stopped ringing meanwhile.
    }
  }
});

ui.incoming.addEventListener('cancel', (event) => {
  event.preventDefault(); // Escape rejects explicitly through the button, not by dismissing the dialog
  ui.reject.click();
});

ui.cancel.addEventListener('click', async () => {
  const call = app.call;
  if (!call || call.kind !== 'outgoing') return;
  endCall('Call cancelled.');
  if (call.callId) {
    try {
      await client.cancel(call.callId);
    } catch {
      // Already answered or ended.
    }
  }
});

ui.hangup.addEventListener('click', () => leaveCall('hangup'));

async function leaveCall() {
  const call = app.call;
  if (!call) return;
  if (call.kind === 'room') {
    const room = call.room;
    endCall('You left the room.');
    try {
      await client.leave(room);
    } catch {
      // Not in it any more.
    }
    return;
  }
  endCall('Call ended.');
  if (call.callId) {
    try {
      await client.hangup(call.callId);
    } catch {
      // Already over.
    }
  }
}

// ---------- rooms ----------

ui.roomForm.addEventListener('submit', async (event) => {
  event.preventDefault();
  ui.roomError.textContent = '';
  const room = ui.roomInput.value.trim();
  const password = ui.roomPassword.value;
  if (!room || app.call) return;
  app.call = { kind: 'room', room };
  try {
    await ensureMedia();
    const reply = await client.joinRoom(room, password ? { password } : {});
    const members = reply.members;
    ui.roomPassword.value = '';
    app.call.room = room;
    showCallView(`Room ${room}`, `${members.length} in the room`, false);
    ui.cancel.hidden = true;
    ui.hangup.hidden = false;
    ui.hangup.textContent = 'Leave room';
    addTile(client.name, app.media.stream, true);
    startTimer();
    // The newcomer offers to everyone already there; they wait for its offer.
    for (const member of members) {
      if (member !== client.name) createLink(member, { room }).start();
    }
    if (password && !reply.protected) {
      const text = 'This room was already open without a password; yours was not set.';
      ui.mediaNotice.textContent = [ui.mediaNotice.textContent, text].filter(Boolean).join(' ');
    }
  } catch (error) {
    app.call = null;
    ui.roomError.textContent = ERROR_TEXT[error.code] || error.message;
    if (error.code === 'room-password-required' || error.code === 'wrong-room-password') {
      ui.roomPassword.select();
      ui.roomPassword.focus();
    }
  }
});

client.addEventListener('member-joined', (event) => {
  const msg = event.detail;
  if (!app.call || app.call.kind !== 'room' || app.call.room.toLowerCase() !== msg.room.toLowerCase()) return;
  createLink(msg.name, { room: msg.room });
  setStatus(`${app.links.size + 1} in the room`);
});

client.addEventListener('member-left', (event) => {
  const msg = event.detail;
  if (!app.call || app.call.kind !== 'room') return;
  closeLink(msg.name);
  setStatus(`${app.links.size + 1} in the room`);
});

// ---------- in-call view ----------

function showCallView(title, status, pair = true) {
  ui.lobbyView.hidden = true;
  ui.callView.hidden = false;
  ui.grid.classList.toggle('pair', pair);
  ui.callTitle.textContent = title;
  ui.hangup.textContent = 'Hang up';
  ui.chatLog.replaceChildren();
  ui.quality.textContent = '';
  ui.duration.textContent = '';
  setStatus(status);
}

function setStatus(text) {
  ui.callStatus.textContent = text;
}

function startTimer() {
  app.startedAt = Date.now();
  const tick = () => {
    const seconds = Math.floor((Date.now() - app.startedAt) / 1000);
    ui.duration.textContent = `${String(Math.floor(seconds / 60)).padStart(2, '0')}:${String(seconds % 60).padStart(2, '0')}`;
  };
  tick();
  app.timers.push(setInterval(tick, 1000));
  app.timers.push(setInterval(updateQuality, 2000));
}

async function updateQuality() {
  const parts = [];
  for (const [peer, link] of app.links) {
    const s = await link.stats();
    if (!s.path) continue;
    const rtt = s.rttMs === null ? '–' : `${s.rttMs} ms`;
    const rate = s.bitrateKbps === null ? '–' : `${s.bitrateKbps} kbit/s`;
    parts.push(`${peer}: ${s.path === 'relay' ? 'relayed (TURN)' : 'direct'}, RTT ${rtt}, ${rate}`);
  }
  ui.quality.textContent = parts.join(' · ');
}

async function allStats() {
  const result = {};
  for (const [peer, link] of app.links) result[peer] = await link.stats();
  return result;
}

function endCall(message) {
  for (const peer of [...app.links.keys()]) closeLink(peer);
  for (const timer of app.timers) clearInterval(timer);
  app.timers = [];
  if (app.screenTrack) stopScreenShare();
  app.call = null;
  app.pendingOffer = null;
  ui.grid.replaceChildren();
  if (ui.incoming.open) ui.incoming.close();
  ui.cancel.hidden = true;
  ui.hangup.hidden = false;
  showLobby();
  notice(message);
}

ui.mute.addEventListener('click', () => {
  const tracks = app.media ? app.media.stream.getAudioTracks() : [];
  const muted = ui.mute.getAttribute('aria-pressed') !== 'true';
  for (const track of tracks) track.enabled = !muted;
  ui.mute.setAttribute('aria-pressed', String(muted));
  ui.mute.textContent = muted ? 'Unmute' : 'Mute';
});

ui.camera.addEventListener('click', async () => {
  const track = app.media ? app.media.stream.getVideoTracks()[0] : null;
  if (!track) return;
  const off = ui.camera.getAttribute('aria-pressed') !== 'true';
  track.enabled = !off;
  if (!app.screenTrack) {
    for (const link of app.links.values()) await link.replaceTrack(off ? null : track, 'video');
  }
  ui.camera.setAttribute('aria-pressed', String(off));
  ui.camera.textContent = off ? 'Camera on' : 'Camera off';
});

ui.screen.addEventListener('click', async () => {
  if (app.screenTrack) {
    stopScreenShare();
    return;
  }
  try {
    const display = await navigator.mediaDevices.getDisplayMedia({ video: true });
    const [track] = display.getVideoTracks();
    app.screenTrack = track;
    track.addEventListener('ended', stopScreenShare);
    for (const link of app.links.values()) await link.replaceTrack(track);
    ui.screen.setAttribute('aria-pressed', 'true');
    ui.screen.textContent = 'Stop sharing';
  } catch {
    ui.mediaNotice.textContent = 'Screen sharing was not started.';
  }
});

function stopScreenShare() {
  const track = app.screenTrack;
  app.screenTrack = null;
  if (track) track.stop();
  const camera = app.media ? app.media.stream.getVideoTracks()[0] : null;
  const cameraOn = ui.camera.getAttribute('aria-pressed') !== 'true';
  for (const link of app.links.values()) link.replaceTrack(camera && cameraOn ? camera : null, 'video');
  ui.screen.setAttribute('aria-pressed', 'false');
  ui.screen.textContent = 'Share screen';
}

ui.chatForm.addEventListener('submit', (event) => {
  event.preventDefault();
  const text = ui.chatInput.value.trim();
  if (!text) return;
  let sent = 0;
  for (const link of app.links.values()) if (link.sendChat(text)) sent += 1;
  if (sent > 0) {
    addChat(client.name, text);
    ui.chatInput.value = '';
  } else {
    ui.mediaNotice.textContent = 'Chat is not connected yet.';
  }
});

function addChat(from, text) {
  const li = document.createElement('li');
  const who = document.createElement('span');
  who.className = 'from';
  who.textContent = from === client.name ? 'You' : from;
  const body = document.createElement('span');
  body.className = 'text';
  body.textContent = text;
  li.append(who, body);
  ui.chatLog.append(li);
  li.scrollIntoView({ block: 'nearest' });
}

// Prefill the last name used in this tab; a sign-in link fixes the name.
ui.nameInput.value = sessionStorage.getItem('switchboard-name') || '';
const linkName = token ? tokenName(token) : null;
if (linkName) {
  ui.nameInput.value = linkName;
  ui.nameInput.readOnly = true;
}
ui.nameInput.focus();
