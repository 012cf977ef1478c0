// Switchboard JS SDK: WebRTC peer links on top of the signaling client.
//
// A PeerLink is one RTCPeerConnection to one remote user, negotiated with the "perfect negotiation" pattern: either
// side may (re)negotiate at any time (screen share, camera toggle, ICE restart), and when both offer at once the
// polite side (the one whose name sorts first) rolls back. Candidates trickle as they are found. A text chat runs
// over a negotiated RTCDataChannel. When the connection fails, the link restarts ICE.
//
//   import { SwitchboardClient } from '/sdk/switchboard.js';
//   import { PeerLink, getLocalMedia } from '/sdk/webrtc.js';
//   const media = await getLocalMedia();                         // camera + mic, or audio only, or nothing
//   const link = new PeerLink(client, 'bob', { stream: media.stream, callId });
//   link.addEventListener('track', (e) => video.srcObject = e.detail.stream);
//   link.start();                                                // the caller starts; the callee just handles offers

/**
 * Asks for camera and microphone, falling back to microphone only, then to nothing (receive-only).
 * Resolves with `{ stream, mode }`, mode being 'video', 'audio-only' or 'receive-only', and `error` for the fallback.
 */
export async function getLocalMedia(constraints = { audio: true, video: { width: 640, height: 480 } }) {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    return { stream: new MediaStream(), mode: 'receive-only', error: new Error('no media devices in this browser') };
  }
  try {
    return { stream: await navigator.mediaDevices.getUserMedia(constraints), mode: 'video' };
  } catch (videoError) {
    try {
      const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
      return { stream, mode: 'audio-only', error: videoError };
    } catch (audioError) {
      return { stream: new MediaStream(), mode: 'receive-only', error: audioError };
    }
  }
}

/** The side that yields when both offer at once: a stable, shared rule both peers compute the same way. */
export function isPolite(myName, peerName) {
  return myName.toLowerCase() < peerName.toLowerCase();
}

export class PeerLink extends EventTarget {
  /**
   * @param {import('./switchboard.js').SwitchboardClient} client signaling client (logged in)
   * @param {string} peer the remote user's name
   * @param {object} [options]
   * @param {MediaStream} [options.stream] local media to send
   * @param {string} [options.callId] passed along with every relayed message
   * @param {string} [options.room] passed along with every relayed message (mesh calls)
   * @param {RTCIceTransportPolicy} [options.iceTransportPolicy] 'all' (default) or 'relay'
   * @param {boolean} [options.classic] the peer is a classic tutorial page: it builds a new peer connection for every
   *   offer it gets, so this side never renegotiates and adds no data channel (no chat with such peers)
   */
  constructor(client, peer, options = {}) {
    super();
    this.client = client;
    this.peer = peer;
    this.polite = isPolite(client.name, peer);
    this.extra = {};
    if (options.callId) this.extra.callId = options.callId;
    if (options.room) this.extra.room = options.room;
    this.remoteStream = new MediaStream();
    this.closed = false;
    this._makingOffer = false;
    this._ignoreOffer = false;
    this._queue = Promise.resolve();
    this._lastBytes = null;

    this.pc = new RTCPeerConnection({
      iceServers: client.iceServers,
      iceTransportPolicy: options.iceTransportPolicy || 'all',
    });
    this.classic = Boolean(options.classic);
    this.chat = null;
    if (!this.classic) {
      // Negotiated with a fixed id on both sides: no extra signaling round, and either side may offer first.
      this.chat = this.pc.createDataChannel('chat', { negotiated: true, id: 0 });
      this.chat.addEventListener('message', (event) => this._emit('chat', { from: peer, text: String(event.data) }));
      this.chat.addEventListener('open', () => this._emit('chat-open', {}));
    }

    const stream = options.stream || new MediaStream();
    // addTrack, not addTransceiver: the answering side's senders then attach to the m-lines of the first offer
    // instead of adding m-lines of their own.
    for (const track of stream.getTracks()) this.pc.addTrack(track, stream);
    this.localStream = stream;

    this.pc.addEventListener('track', (event) => {
      const track = event.track;
      if (!this.remoteStream.getTracks().includes(track)) this.remoteStream.addTrack(track);
      track.addEventListener('unmute', () => this._emit('track', { stream: this.remoteStream, track }));
      this._emit('track', { stream: this.remoteStream, track });
    });
    this.pc.addEventListener('icecandidate', (event) => {
      if (this.closed) return;
      try {
        this.client.sendCandidate(peer, event.candidate, this.extra);
      } catch {
        // Signaling is reconnecting: the candidate is lost, and ICE restart on failure covers it.
      }
    });
    this.pc.addEventListener('negotiationneeded', () => this._negotiate());
    this.pc.addEventListener('connectionstatechange', () => {
      const state = this.pc.connectionState;
      this._emit('state', { state });
      if (state === 'failed' && !this.closed && !this.classic) this.pc.restartIce();
    });
    this._started = false;
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  /**
   * Starts negotiation from this side (the caller, or a room's newcomer). The other side never calls it: its first
   * offer comes from here. Until then, negotiationneeded events are held back so that both sides do not offer at once.
   */
  start() {
    // Receive audio and video even when this side has nothing to send (audio-only or receive-only).
    for (const kind of ['audio', 'video']) {
      if (!this.pc.getTransceivers().some((t) => t.receiver.track.kind === kind)) {
        this.pc.addTransceiver(kind, { direction: 'recvonly' });
      }
    }
    this._started = true;
    this._negotiate();
  }

  async _negotiate() {
    if (!this._started || this.closed) return;
    try {
      this._makingOffer = true;
      await this.pc.setLocalDescription();
      this.client.sendDescription(this.peer, this.pc.localDescription, this.extra);
    } catch (error) {
      this._emit('error', error);
    } finally {
      this._makingOffer = false;
    }
  }

  /** Feeds a relayed message from this peer: offer, answer, candidate or end-of-candidates. Keeps their order. */
  handle(msg) {
    this._queue = this._queue.then(() => this._handle(msg)).catch((error) => this._emit('error', error));
    return this._queue;
  }

  async _handle(msg) {
    if (this.closed) return;
    if (msg.type === 'offer' || msg.type === 'answer') {
      const description = msg.sdp;
      const collision = description.type === 'offer' && (this._makingOffer || this.pc.signalingState !== 'stable');
      this._ignoreOffer = !this.polite && collision;
      if (this._ignoreOffer) return;
      await this.pc.setRemoteDescription(description);
      if (description.type === 'offer') {
        // Once the remote side has offered, this side may renegotiate too (not with a classic page).
        this._started = !this.classic;
        await this.pc.setLocalDescription();
        this.client.sendDescription(this.peer, this.pc.localDescription, this.extra);
      }
    } else if (msg.type === 'candidate') {
      try {
        await this.pc.addIceCandidate(msg.candidate);
      } catch (error) {
        if (!this._ignoreOffer) throw error;
      }
    } else if (msg.type === 'end-of-candidates') {
      try {
        await this.pc.addIceCandidate();
      } catch {
        // Old browsers refuse the end-of-candidates marker; it is only an optimisation.
      }
    }
  }

  /** Sends a chat message over the data channel; false if the channel is not open. */
  sendChat(text) {
    if (!this.chat || this.chat.readyState !== 'open') return false;
    this.chat.send(text);
    return true;
  }

  /** The sender of `kind` ('audio' | 'video'). */
  sender(kind) {
    return this.pc.getTransceivers().find((t) => (t.sender.track ? t.sender.track.kind : t.receiver.track.kind) === kind)?.sender;
  }

  /**
   * Sends `track` instead of the current one of its kind (screen share, camera back on) or sends nothing (`null`,
   * with `kind`). Uses replaceTrack, so no renegotiation is needed when a sender of that kind exists.
   */
  async replaceTrack(track, kind = track && track.kind) {
    const transceiver = this.pc.getTransceivers().find((t) => t.receiver.track.kind === kind);
    if (!transceiver) return;
    if (track && transceiver.direction === 'recvonly' && !this.classic) {
      transceiver.direction = 'sendrecv'; // triggers negotiationneeded; perfect negotiation takes it from here
      this._started = true;
    }
    await transceiver.sender.replaceTrack(track);
  }

  /**
   * A small quality readout from getStats: round-trip time, receive bitrate, whether the path is direct or relayed
   * through TURN, and decoded video frames.
   */
  async stats() {
    const report = await this.pc.getStats();
    let pair = null;
    let transport = null;
    const byId = new Map();
    report.forEach((entry) => {
      byId.set(entry.id, entry);
      if (entry.type === 'transport') transport = entry;
    });
    if (transport && transport.selectedCandidatePairId) pair = byId.get(transport.selectedCandidatePairId);
    if (!pair) report.forEach((entry) => { if (entry.type === 'candidate-pair' && entry.nominated && entry.state === 'succeeded') pair = entry; });
    let bytes = 0;
    let framesDecoded = 0;
    report.forEach((entry) => {
      if (entry.type === 'inbound-rtp') {
        bytes += entry.bytesReceived || 0;
        if (entry.kind === 'video') framesDecoded += entry.framesDecoded || 0;
      }
    });
    const now = performance.now();
    let bitrateKbps = null;
    if (this._lastBytes) bitrateKbps = Math.round(((bytes - this._lastBytes.bytes) * 8) / (now - this._lastBytes.at));
    this._lastBytes = { bytes, at: now };
    const local = pair && byId.get(pair.localCandidateId);
    const remote = pair && byId.get(pair.remoteCandidateId);
    const relayed = Boolean(local && local.candidateType === 'relay') || Boolean(remote && remote.candidateType === 'relay');
    return {
      rttMs: pair && pair.currentRoundTripTime !== undefined ? Math.round(pair.currentRoundTripTime * 1000) : null,
      bitrateKbps,
      path: pair ? (relayed ? 'relay' : 'direct') : null,
      localCandidateType: local ? local.candidateType : null,
      framesDecoded,
    };
  }

  /** Closes the peer connection. */
  close() {
    if (this.closed) return;
    this.closed = true;
    this.pc.close();
    this._emit('closed', {});
  }
}
