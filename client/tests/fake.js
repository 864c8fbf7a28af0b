// Test doubles for the client's unit tests: a fake clock (timers run only when a test advances
// it, so nothing waits for real time) and an in-process fake notifications.v2 server whose
// WebSocket constructor the client is given. The server keeps a history per stream, answers a
// resume with replay + sync, publishes live, answers auth refreshes and echoes; a test can also
// drive any socket by hand (push a frame, close with a code) to script what a real server
// would do on a bad day.

import { NotificationsClient } from '../notifications-client.js';

/** Lets every pending promise chain (an async getToken, a dial) run to its end. */
export function settle() {
  return new Promise((resolve) => setImmediate(resolve));
}

export class FakeClock {
  #now;
  #timers = new Map(); // id → { at, fn, seq }
  #seq = 0;

  constructor(start = 1_700_000_000_000) {
    this.#now = start;
  }

  now = () => this.#now;

  setTimeout = (fn, ms) => {
    const id = ++this.#seq;
    this.#timers.set(id, { at: this.#now + Math.max(0, ms), fn, seq: id });
    return id;
  };

  clearTimeout = (id) => {
    this.#timers.delete(id);
  };

  /** Delays (ms from now) of the pending timers, soonest first. */
  pending() {
    return [...this.#timers.values()].map((t) => t.at - this.#now).sort((a, b) => a - b);
  }

  /** Moves time forward by ms, firing due timers in order and settling after each. */
  async advance(ms) {
    const end = this.#now + ms;
    for (let fired = 0; ; fired++) {
      // A client rescheduling itself at zero delay would otherwise hang the test run.
      if (fired === 100_000) throw new Error(`FakeClock.advance(${ms}): 100000 timers fired; a timer loop?`);
      const due = [...this.#timers.entries()].filter(([, t]) => t.at <= end).sort(([, a], [, b]) => a.at - b.at || a.seq - b.seq)[0];
      if (!due) break;
      const [id, t] = due;
      this.#timers.delete(id);
      this.#now = t.at;
      t.fn();
      await settle();
    }
    this.#now = end;
    await settle();
  }
}

/** A JWT-shaped token (unsigned: the client never verifies) with the given claims. */
export function makeToken(claims) {
  const b64 = (obj) => Buffer.from(JSON.stringify(obj)).toString('base64url');
  return `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(claims)}.c2ln`;
}

function claimsOf(token) {
  try {
    return JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString());
  } catch {
    return null;
  }
}

/** One socket as both sides see it: the client calls the WebSocket API, the test the rest. */
export class FakeSocket {
  readyState = 0;
  protocol = '';
  binaryType = 'blob';
  sent = []; // frames the client sent, as sent
  clientClose = null; // { code, reason } once the client closed it
  onopen = null;
  onmessage = null;
  onclose = null;
  onerror = null;
  resumed = false;

  constructor(server, url, protocols) {
    this.server = server;
    this.url = url;
    this.protocols = protocols;
    this.token = (protocols.find((p) => p.startsWith('bearer.')) ?? '').slice('bearer.'.length);
  }

  // -- the WebSocket API the client uses --

  send(data) {
    if (this.readyState !== 1) throw new Error(`send in readyState ${this.readyState}`);
    this.sent.push(data);
    this.server.received(this, data);
  }

  close(code, reason) {
    if (this.readyState >= 2) return;
    this.clientClose = { code, reason };
    this.readyState = 3;
  }

  // -- what the test (or the fake server) does --

  /** The client's frames, parsed. */
  frames() {
    return this.sent.map((s) => JSON.parse(s));
  }

  accept(protocol = 'notifications.v2') {
    this.readyState = 1;
    this.protocol = protocol;
    this.onopen?.({ type: 'open' });
  }

  push(frame) {
    this.onmessage?.({ type: 'message', data: typeof frame === 'string' ? frame : JSON.stringify(frame) });
  }

  /** The server closes: an error frame first when errorCode is given, as the real one does. */
  serverClose(code, errorCode) {
    if (errorCode) this.push({ type: 'error', code: errorCode, message: `${errorCode} (fake)` });
    this.readyState = 3;
    this.onclose?.({ type: 'close', code, reason: '', wasClean: code !== 1006 });
  }
}

/**
 * A notifications.v2 server in the test's process. Streams have histories of
 * { cursor, data } with cursors "<epoch>:<n>"; `reads` are the streams every connection reads.
 * Unless manual, a socket opens on the next tick, or is rejected with AUTH_FAILED
 * when its bearer token has no sub, or TOKEN_EXPIRED when its exp has passed on `clock`.
 */
export class FakeServer {
  sockets = [];
  manual = false; // true: sockets stay connecting, client frames go unanswered: the test drives
  epoch = 'e1';
  histories = new Map(); // stream → [{ cursor, data }]
  #n = 0;

  constructor({ clock, reads = ['user'] } = {}) {
    this.clock = clock;
    this.reads = reads;
    for (const s of reads) this.histories.set(s, []);
    const server = this;
    this.WebSocket = class extends FakeSocket {
      constructor(url, protocols) {
        super(server, url, protocols);
        server.sockets.push(this);
        if (!server.manual) queueMicrotask(() => server.#admit(this));
      }
    };
  }

  last() {
    return this.sockets[this.sockets.length - 1];
  }

  /** Open sockets that have resumed (the ones live messages go to). */
  live() {
    return this.sockets.filter((s) => s.readyState === 1 && s.resumed);
  }

  #admit(sock) {
    if (sock.readyState !== 0) return;
    const claims = claimsOf(sock.token);
    sock.accept(sock.protocols.includes('notifications.v2') ? 'notifications.v2' : '');
    if (!claims?.sub) return sock.serverClose(1008, 'AUTH_FAILED');
    if (this.clock && claims.exp * 1000 <= this.clock.now()) return sock.serverClose(1008, 'TOKEN_EXPIRED');
  }

  /** Appends a sequenced message and delivers it live; cursor null = a plain PUBLISH. */
  publish(stream, data, { sequenced = true } = {}) {
    let cursor = null;
    if (sequenced) {
      cursor = `${this.epoch}:${++this.#n}`;
      this.histories.get(stream).push({ cursor, data });
    }
    for (const s of this.live()) s.push({ type: 'message', stream, cursor, data });
    return cursor;
  }

  /** Loses every history (a Redis restart without persistence): cursors of the old epoch are unknown. */
  restart(epoch) {
    this.epoch = epoch;
    for (const s of this.reads) this.histories.set(s, []);
  }

  received(sock, data) {
    if (this.manual) return;
    let f;
    try {
      f = JSON.parse(data);
    } catch {
      f = {};
    }
    if (f.type === 'resume' && !sock.resumed) {
      sock.resumed = true;
      for (const stream of this.reads) this.#resume(sock, stream, f.streams[stream]);
    } else if (f.type === 'auth') {
      const claims = claimsOf(f.token);
      if (!claims?.sub) sock.serverClose(1008, 'AUTH_FAILED');
      else sock.push({ type: 'auth_ok', exp: claims.exp });
    } else if (f.type !== 'resume') {
      sock.push({ type: 'echo', data });
    }
  }

  #resume(sock, stream, cursor) {
    const h = this.histories.get(stream);
    const head = h.length ? h[h.length - 1].cursor : `${this.epoch}:0`;
    if (cursor === undefined) return sock.push({ type: 'sync', stream, cursor: head, recovered: false, reason: 'new', missed: null });
    const at = h.findIndex((m) => m.cursor === cursor);
    if (at < 0 && cursor !== `${this.epoch}:0`) return sock.push({ type: 'sync', stream, cursor: head, recovered: false, reason: 'epoch', missed: null });
    const missed = h.slice(at + 1);
    for (const m of missed) sock.push({ type: 'message', stream, cursor: m.cursor, data: m.data });
    sock.push({ type: 'sync', stream, cursor: head, recovered: true, replayed: missed.length });
  }
}

/** Records every event of a client, in order, as [type, detail]. */
export function record(client) {
  const events = [];
  for (const type of ['message', 'sync', 'state', 'error', 'unsubscribed', 'echo']) {
    client.on(type, (detail) => events.push([type, detail]));
  }
  return {
    events,
    of: (type) => events.filter(([t]) => t === type).map(([, d]) => d),
    states: () => events.filter(([t]) => t === 'state').map(([, d]) => d.state),
  };
}

/**
 * A client wired to a fake server and clock. Its default token provider mints a token for
 * user u1 valid ttlS seconds from the fake now, and records each call's context in `tokens`;
 * a getToken given instead is called as getToken(context, clock).
 */
export function setup({ url = 'ws://127.0.0.1:1/ws', reads, ttlS = 3600, random = () => 0.5, getToken, ...options } = {}) {
  const clock = new FakeClock();
  const server = new FakeServer({ clock, reads });
  const tokens = [];
  const mint = (ctx) => {
    const token = makeToken({ sub: 'u1', exp: Math.floor(clock.now() / 1000) + ttlS, n: tokens.length });
    tokens.push({ reason: ctx.reason, token });
    return token;
  };
  const client = new NotificationsClient({ url, WebSocket: server.WebSocket, clock, random, getToken: getToken ? (ctx) => getToken(ctx, clock) : mint, ...options });
  return { clock, server, client, tokens, rec: record(client) };
}
