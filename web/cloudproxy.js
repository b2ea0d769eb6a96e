// cloudproxy.js — the three connection modes in the browser. A dependency-free ES module.
//
//   import { createClient } from "./cloudproxy.js";
//   const client = createClient({ control: "https://relay.example:443", media: "https://media.example:8444", region: "japan" });
//   client.on("is-using-cloud-proxy", (using) => console.log("proxy:", using));
//   client.startProxyServer(5);                      // Force TCP (3: Force UDP; none: Auto)
//   await client.join("room-1", 7, token);           // token: `cloudproxy token ...`
//   client.send("hello");
//
// How a join works:
//   1. POST {control}/v1/ice-servers {mode, region} with the token: the RTCConfiguration of the
//      mode (Auto: a dynamic proxy over TURN/TLS 443 as the fallback, policy "all"; Force UDP /
//      Force TCP: only the region's published relays, policy "relay").
//   2. One RTCPeerConnection with a data channel "cloudproxy" (ordered, reliable) and one
//      sendrecv audio and one sendrecv video transceiver; its offer goes to the media service's
//      WHIP endpoint (POST {media}/v1/whip); the answer is ICE-lite with the service's own host
//      candidates. The browser's candidates follow by PATCH (trickle, RFC 8840).
//   3. When the data channel opens the service sends JOINED; the path in use is read from
//      getStats (the selected candidate pair's local candidate: "relay" means a proxy).
//
// The Auto race, with one RTCPeerConnection: the proxy is in the connection's iceServers from
// the start, and ICE itself races the paths. Pairs are checked in priority order, so the
// direct (host) pair is checked first and the relay pair only after it (Chromium paces
// checks ~50 ms apart while nothing is writable, and the relay candidate exists only once its
// TLS connection and Allocate are done); a direct pair that answers wins on priority; a direct
// check that fails (UDP blocked) leaves the relay pair to win as soon as it answers. What one
// connection cannot do is add the proxy candidate exactly 250 ms later: a local candidate
// from a new ICE server needs an ICE restart, that is a second offer/answer, which the WHIP
// endpoint's contract (PATCH adds remote candidates only) does not have. The race therefore
// starts the proxy one check interval after direct, not 250 ms; the events are those of the
// Rust SDK (join-fallback-to-proxy in Auto when the relay pair won).
//
// Wire format of the data channel: every message is one datagram of the media service's UDP
// protocol (crates/media/src/wire.rs): DATA 0x04, PING 0x06, LEAVE 0x08 from here; JOINED
// 0x02, ERROR 0x03, FORWARDED 0x05, PONG 0x07, LEFT 0x09 from the service.

const DATA = 0x04, JOINED = 0x02, ERROR = 0x03, FORWARDED = 0x05;
const PING = 0x06, PONG = 0x07, LEAVE = 0x08, LEFT = 0x09;

/** The modes, by the web SDK's numbers. */
export const MODE_AUTO = 0;
export const MODE_FORCE_UDP = 3;
export const MODE_FORCE_TCP = 5;

const MODE_NAMES = { 0: "auto", 3: "udp", 5: "tcp" };

/** An error of this library: `code` is stable, `message` says what to do. */
export class CloudProxyError extends Error {
  constructor(code, message, detail) {
    super(message);
    this.name = "CloudProxyError";
    this.code = code;
    this.detail = detail;
  }
}

// The Rust SDK's messages (crates/sdk/src/error.rs), word for word.
const IN_CHANNEL = "the cloud proxy mode can only be set outside a channel: leave first";
const setNoneFirst = (current) =>
  `the cloud proxy mode is already ${current}: set None (Auto) first, then the new mode`;

const now = () => performance.now();
const micros = () => BigInt(Math.round((performance.timeOrigin + performance.now()) * 1000));

class Client {
  constructor(options) {
    if (!options || !options.control || !options.media || !options.region) {
      throw new CloudProxyError("BAD_OPTIONS", "createClient needs { control, media, region }");
    }
    this.options = { echo: false, joinTimeoutMs: 15000, transceivers: true, ...options };
    this.mode = MODE_AUTO;
    this.listeners = new Map();
    this.state = "disconnected";
    this.session = null;
    this.seq = 0;
    this.pings = new Map();
  }

  /** Subscribes to an event; returns a function that unsubscribes. */
  on(event, fn) {
    if (!this.listeners.has(event)) this.listeners.set(event, new Set());
    this.listeners.get(event).add(fn);
    return () => this.listeners.get(event).delete(fn);
  }

  emit(event, ...args) {
    for (const fn of this.listeners.get(event) || []) {
      try {
        fn(...args);
      } catch (e) {
        console.error(`cloudproxy: a '${event}' listener threw`, e);
      }
    }
  }

  setState(state, reason) {
    const prev = this.state;
    this.state = state;
    this.emit("connection-state-change", state, prev, reason);
  }

  /** Force UDP (3) or Force TCP (5). Only outside a channel, as in the Rust SDK. */
  startProxyServer(mode) {
    if (mode !== MODE_FORCE_UDP && mode !== MODE_FORCE_TCP) {
      throw new CloudProxyError("BAD_MODE", `startProxyServer takes 3 (Force UDP) or 5 (Force TCP), not ${mode}`);
    }
    this.setMode(mode);
  }

  /** Back to Auto. Only outside a channel. */
  stopProxyServer() {
    this.setMode(MODE_AUTO);
  }

  setMode(mode) {
    if (this.session) throw new CloudProxyError("IN_CHANNEL", IN_CHANNEL);
    if (this.mode !== MODE_AUTO && mode !== MODE_AUTO && mode !== this.mode) {
      throw new CloudProxyError("SET_NONE_FIRST", setNoneFirst(MODE_NAMES[this.mode]));
    }
    this.mode = mode;
  }

  /** The mode: "auto", "udp" or "tcp". */
  get modeName() {
    return MODE_NAMES[this.mode];
  }

  /**
   * Joins `channel` as `uid` with `token`; resolves with { uid, members, seenAs, path,
   * usingProxy, elapsedMs } once the media service sent JOINED and the path is known.
   */
  async join(channel, uid, token) {
    if (this.session) throw new CloudProxyError("ALREADY_JOINED", "already in a channel: leave first");
    const started = now();
    const forced = this.mode !== MODE_AUTO;
    const s = { channel, uid, token, pc: null, dc: null, location: null, closed: false, errors: [] };
    this.session = s;
    this.setState("connecting", forced ? "setting_proxy_server" : "joining");
    try {
      const joined = await withTimeout(this.connect(s), this.options.joinTimeoutMs, () =>
        new CloudProxyError("JOIN_TIMEOUT", this.noPathMessage(s)));
      const path = await this.selectedPath(s.pc);
      const info = { ...joined, path, usingProxy: path.candidateType === "relay", elapsedMs: Math.round(now() - started) };
      s.info = info;
      this.setState("connected", "join_success");
      if (info.usingProxy) {
        if (!forced) this.emit("join-fallback-to-proxy", path.localAddress);
        this.emit("proxy-connected", { elapsed: info.elapsedMs, mode: this.modeName, proxy: path.localAddress, relayProtocol: path.relayProtocol });
      }
      this.emit("is-using-cloud-proxy", info.usingProxy);
      this.watch(s);
      return info;
    } catch (e) {
      await this.teardown(s, false);
      this.session = null;
      this.setState("failed", "join_failed");
      throw e instanceof CloudProxyError ? e : new CloudProxyError("JOIN_FAILED", String(e && e.message || e), e);
    }
  }

  noPathMessage(s) {
    const what = { 0: "directly or through the Auto proxy", 3: "through a published relay over UDP (Force UDP)", 5: "through a published relay over TLS (Force TCP)" }[this.mode];
    const errs = s.errors.length ? `; ICE: ${s.errors.join("; ")}` : "";
    return `could not reach the media service ${what} within ${this.options.joinTimeoutMs} ms${errs}`;
  }

  async connect(s) {
    const config = await this.iceServers(s.token);
    if (s.closed) throw new CloudProxyError("LEFT", "left while joining");
    const pc = new RTCPeerConnection({ iceServers: config.iceServers, iceTransportPolicy: config.iceTransportPolicy });
    s.pc = pc;
    pc.addEventListener("icecandidateerror", (e) => {
      s.errors.push(`${e.url || e.address || "candidate"} ${e.errorCode} ${e.errorText}`.trim());
    });
    const dc = pc.createDataChannel("cloudproxy", { ordered: true });
    dc.binaryType = "arraybuffer";
    s.dc = dc;
    if (this.options.transceivers) {
      pc.addTransceiver("audio", { direction: "sendrecv" });
      pc.addTransceiver("video", { direction: "sendrecv" });
    }
    const joined = new Promise((resolve, reject) => {
      s.onJoined = resolve;
      s.onError = reject;
    });
    dc.addEventListener("message", (e) => this.receive(s, new Uint8Array(e.data)));
    // Candidates found before the answer gave the session's URL wait here.
    const pending = [];
    pc.addEventListener("icecandidate", (e) => {
      const line = e.candidate ? `a=${e.candidate.candidate}` : "a=end-of-candidates";
      if (s.location) this.patch(s, [line]);
      else pending.push(line);
    });
    await pc.setLocalDescription(await pc.createOffer());
    const answer = await this.whip(s, pc.localDescription.sdp);
    await pc.setRemoteDescription({ type: "answer", sdp: answer });
    if (pending.length) this.patch(s, pending.splice(0));
    return joined;
  }

  async iceServers(token) {
    const url = new URL("/v1/ice-servers", this.options.control);
    let r;
    try {
      r = await fetch(url, {
        method: "POST",
        headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
        body: JSON.stringify({ mode: this.modeName, region: this.options.region }),
      });
    } catch (e) {
      throw new CloudProxyError("CONTROL_UNREACHABLE", `cannot reach the control plane at ${url.origin}: ${e.message}`);
    }
    const body = await r.json().catch(() => null);
    if (!r.ok) {
      const m = body && body.error ? body.error.message : `HTTP ${r.status}`;
      throw new CloudProxyError(r.status === 401 ? "BAD_TOKEN" : r.status === 403 ? "NOT_ENABLED" : "ICE_SERVERS",
        `iceServers for ${this.modeName} in ${this.options.region}: ${m}`, body);
    }
    return body;
  }

  async whip(s, offer) {
    const url = new URL(`/v1/whip?echo=${this.options.echo ? 1 : 0}`, this.options.media);
    let r;
    try {
      r = await fetch(url, {
        method: "POST",
        headers: { authorization: `Bearer ${s.token}`, "content-type": "application/sdp" },
        body: offer,
      });
    } catch (e) {
      throw new CloudProxyError("MEDIA_UNREACHABLE", `cannot reach the media service at ${url.origin}: ${e.message}`);
    }
    if (r.status !== 201) {
      const body = await r.json().catch(() => null);
      const m = body && body.message ? body.message : `HTTP ${r.status}`;
      throw new CloudProxyError(r.status === 409 ? "SEAT_TAKEN" : r.status === 401 ? "BAD_TOKEN" : "WHIP", `media service: ${m}`, body);
    }
    const location = r.headers.get("location");
    if (location) s.location = new URL(location, url);
    return r.text();
  }

  patch(s, lines) {
    if (!s.location || s.closed) return;
    fetch(s.location, {
      method: "PATCH",
      headers: { authorization: `Bearer ${s.token}`, "content-type": "application/trickle-ice-sdpfrag" },
      body: lines.join("\r\n") + "\r\n",
    }).catch(() => {}); // The service is ICE-lite: it learns addresses from checks anyway.
  }

  receive(s, b) {
    const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
    switch (b[0]) {
      case JOINED: {
        const uid = v.getUint32(1), members = v.getUint16(5), family = b[7];
        const ipLen = family === 6 ? 16 : 4;
        const ip = family === 6 ? ipv6(b.subarray(8, 24)) : Array.from(b.subarray(8, 12)).join(".");
        const port = v.getUint16(8 + ipLen);
        const seenAs = family === 6 ? `[${ip}]:${port}` : `${ip}:${port}`;
        if (s.onJoined) s.onJoined({ uid, members, seenAs });
        s.onJoined = null;
        break;
      }
      case ERROR: {
        const code = v.getUint16(1), retryable = b[3] === 1;
        const appLen = v.getUint16(4);
        const msgLen = v.getUint16(6 + appLen);
        const message = new TextDecoder().decode(b.subarray(8 + appLen, 8 + appLen + msgLen));
        const err = new CloudProxyError(`MEDIA_${code}`, `media service refused: ${code} ${message}`, { code, retryable });
        if (s.onJoined) s.onError(err);
        else this.emit("error", err);
        break;
      }
      case FORWARDED: {
        if (b.length < 17) return;
        const from = v.getUint32(1), seq = v.getUint32(5), sent = v.getBigUint64(9);
        this.emit("message", { from, seq, sentMicros: sent, data: b.slice(17) });
        break;
      }
      case PONG: {
        const t = v.getBigUint64(1);
        const p = this.pings.get(t);
        if (p) {
          this.pings.delete(t);
          const rtt = now() - p.at;
          this.emit("rtt", rtt);
          p.resolve(rtt);
        }
        break;
      }
      case LEFT:
        if (s.onLeft) s.onLeft();
        break;
    }
  }

  /** Sends one DATA message (a string is sent as UTF-8). Returns its sequence number. */
  send(payload) {
    const s = this.openSession();
    const bytes = typeof payload === "string" ? new TextEncoder().encode(payload) : new Uint8Array(payload);
    const b = new Uint8Array(13 + bytes.length);
    const v = new DataView(b.buffer);
    const seq = this.seq++ >>> 0;
    b[0] = DATA;
    v.setUint32(1, seq);
    v.setBigUint64(5, micros());
    b.set(bytes, 13);
    s.dc.send(b);
    return seq;
  }

  /** One PING/PONG on the data channel; resolves with the round trip in ms. */
  ping() {
    const s = this.openSession();
    const t = micros();
    const b = new Uint8Array(9);
    b[0] = PING;
    new DataView(b.buffer).setBigUint64(1, t);
    return new Promise((resolve) => {
      this.pings.set(t, { at: now(), resolve });
      s.dc.send(b);
    });
  }

  openSession() {
    const s = this.session;
    if (!s || !s.dc || s.dc.readyState !== "open") throw new CloudProxyError("NOT_JOINED", "not in a channel");
    return s;
  }

  /** The path in use now (from getStats). */
  async path() {
    const s = this.session;
    if (!s || !s.pc) throw new CloudProxyError("NOT_JOINED", "not in a channel");
    return this.selectedPath(s.pc);
  }

  /** The selected pair's local candidate: type (host, srflx, prflx, relay) and, through a proxy, its protocol. */
  async selectedPath(pc) {
    // The pair is selected before the data channel opens; a few reads cover a stats lag.
    for (let i = 0; i < 50; i++) {
      const stats = await pc.getStats();
      let pairId = null;
      stats.forEach((r) => {
        if (r.type === "transport" && r.selectedCandidatePairId) pairId = r.selectedCandidatePairId;
      });
      if (!pairId) {
        stats.forEach((r) => {
          if (r.type === "candidate-pair" && r.nominated && r.state === "succeeded") pairId = pairId || r.id;
        });
      }
      const pair = pairId && stats.get(pairId);
      const local = pair && stats.get(pair.localCandidateId);
      const remote = pair && stats.get(pair.remoteCandidateId);
      if (local) {
        return {
          candidateType: local.candidateType,
          relayProtocol: local.relayProtocol || null,
          localAddress: `${local.address || local.ip}:${local.port}`,
          remoteAddress: remote ? `${remote.address || remote.ip}:${remote.port}` : null,
          name: local.candidateType === "relay" ? `proxy (TURN over ${(local.relayProtocol || "udp").toUpperCase()})` : "direct",
        };
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new CloudProxyError("NO_PATH", "the connection has no selected candidate pair");
  }

  watch(s) {
    s.pc.addEventListener("iceconnectionstatechange", () => {
      if (s.closed) return;
      const st = s.pc.iceConnectionState;
      if (st === "disconnected") this.setState("reconnecting", "interrupted");
      else if ((st === "connected" || st === "completed") && this.state === "reconnecting") this.setState("connected", "join_success");
      else if (st === "failed" || st === "closed") this.setState("failed", "interrupted");
    });
    s.dc.addEventListener("close", () => {
      if (!s.closed) this.setState("failed", "interrupted");
    });
  }

  /** Leaves: LEAVE and LEFT (1 s at most), the WHIP session deleted, the connection closed. */
  async leave() {
    const s = this.session;
    if (!s) return;
    await this.teardown(s, true);
    this.session = null;
    this.setState("disconnected", "leave");
  }

  async teardown(s, polite) {
    if (polite && s.dc && s.dc.readyState === "open") {
      const left = new Promise((resolve) => (s.onLeft = resolve));
      s.dc.send(new Uint8Array([LEAVE]));
      await Promise.race([left, new Promise((r) => setTimeout(r, 1000))]);
    }
    s.closed = true;
    if (s.location) {
      await fetch(s.location, { method: "DELETE", headers: { authorization: `Bearer ${s.token}` } }).catch(() => {});
    }
    if (s.pc) s.pc.close();
  }
}

function withTimeout(promise, ms, error) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => (timer = setTimeout(() => reject(error()), ms))),
  ]).finally(() => clearTimeout(timer));
}

function ipv6(bytes) {
  const parts = [];
  for (let i = 0; i < 16; i += 2) parts.push(((bytes[i] << 8) | bytes[i + 1]).toString(16));
  return parts.join(":");
}

/** A client for one user: `{ control, media, region, echo?, joinTimeoutMs?, transceivers? }`. */
export function createClient(options) {
  return new Client(options);
}
