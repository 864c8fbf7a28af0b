// Reference client for websocket-service's protocol notifications.v2: one connection that
// reconnects with backoff, refreshes its token in-band, resumes every stream from its saved
// cursor and hands each message to the app exactly once. Dependency-free; runs in browsers and
// in Node (global WebSocket, or any constructor with the browser WebSocket interface, e.g. npm
// `ws`). Every instance is independent (no module state), so one process can run many.
// README.md next to this file is the user's guide, with the close-code policy it implements.
//
// The protocol in brief: the client offers subprotocols notifications.v2 and bearer.<JWT>; its
// first frame is {"type":"resume","streams":{stream: cursor}}; per stream the server replays
// what was missed after the cursor, then sends one sync (recovered true/false), then live
// messages {"type":"message","stream","cursor","data"}. Cursors are opaque strings; a message
// without a position has cursor null. Before a server-side close the server sends
// {"type":"error","code"}; {"type":"auth","token"} refreshes the token in-band, answered by
// {"type":"auth_ok","exp"}.

export const PROTOCOL = 'notifications.v2';

const EVENTS = ['message', 'sync', 'state', 'error', 'unsubscribed', 'echo'];

const DEFAULTS = {
  initialDelayMs: 1000, // ceiling of the first reconnect delay (full jitter below it)
  maxDelayMs: 30000, // ceiling of any reconnect delay
  throttleDelayMs: 10000, // added to the delay after CONNECTION_LIMIT / RATE_LIMITED
  resetAfterMs: 10000, // open this long = healthy: the next reconnect starts from the first delay again
  openTimeoutMs: 15000, // a socket not open after this is abandoned and retried
  refreshRatio: 0.8, // refresh the token after this share of its remaining lifetime...
  refreshMarginMs: 10000, // ...but at least this long before it expires (clock skew, slow providers)
  refreshRetryMs: 5000, // retry a failed refresh after this, while the token is still valid
  dedupWindow: 1024, // delivered cursors remembered per stream
  storageKey: 'notifications.v2.cursors',
};

// Sec-WebSocket-Protocol values are HTTP tokens; a JWT (base64url and dots) always is one.
const TOKEN_CHARS = /^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/;
const OPEN = 1;

/**
 * What a close from the server means for the next attempt. The server sends its reason as an
 * error frame just before closing, so the code of that frame (if any) decides first.
 * @returns {{throttled: boolean, tokenReason: 'connect'|'rejected'|'expired'}}
 */
function closePolicy(code, serverError) {
  switch (serverError) {
    case 'AUTH_FAILED':
      return { throttled: false, tokenReason: 'rejected' };
    case 'TOKEN_EXPIRED':
      return { throttled: false, tokenReason: 'expired' };
    case 'CONNECTION_LIMIT':
    case 'RATE_LIMITED':
      return { throttled: true, tokenReason: 'connect' };
  }
  // 1008 is the server's policy close, and every policy close other than the two limits above
  // is about the token: without the error frame (lost, or a proxy's close) ask for a new one.
  if (code === 1008) return { throttled: false, tokenReason: 'rejected' };
  // 1000, 1001 (drain, heartbeat), 1002, 1006 (no close frame), 1007, 1009, 1011, 1012, 1013
  // (slow consumer) and anything else: the server or the network ended this connection, not
  // the app, so reconnect.
  return { throttled: false, tokenReason: 'connect' };
}

/** Full jitter: uniform in [0, min(max, initial·2^attempt)), plus a floor when throttled. */
function backoffDelay(attempt, opts, throttled, random) {
  const ceiling = Math.min(opts.maxDelayMs, opts.initialDelayMs * 2 ** Math.min(attempt, 40));
  const jitter = Math.min(ceiling, Math.floor(random() * ceiling));
  return throttled ? opts.throttleDelayMs + jitter : jitter;
}

/**
 * When to refresh a token that expires in remainingMs: after refreshRatio of it, unless that
 * leaves less than refreshMarginMs, then at the margin — but never before half the lifetime,
 * so a token shorter than the margin does not make the client refresh in a tight loop.
 * A token already expired by the local clock while the server still accepts it means the
 * local clock runs ahead of the server's: refreshing at once would repeat at the speed of the
 * round trip, so the client waits refreshRetryMs between such refreshes.
 */
function refreshDelay(remainingMs, opts) {
  if (remainingMs <= 0) return opts.refreshRetryMs;
  const atRatio = remainingMs * opts.refreshRatio;
  if (remainingMs - atRatio >= opts.refreshMarginMs) return Math.floor(atRatio);
  return Math.floor(Math.max(remainingMs - opts.refreshMarginMs, remainingMs / 2));
}

/** The exp claim of a JWT in ms, read without verifying (the server verifies), or undefined. */
function tokenExpiryMs(token) {
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const bytes = Uint8Array.from(atob(part + '='.repeat((4 - (part.length % 4)) % 4)), (c) => c.charCodeAt(0));
    const exp = JSON.parse(new TextDecoder().decode(bytes)).exp;
    return Number.isFinite(exp) ? exp * 1000 : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Cursor bookkeeping, per stream: the saved cursor (what the next resume sends) and the
 * cursors of recently delivered messages.
 *
 * Why remember cursors at all, when the server promises no duplicates after a resume? Because
 * the promise is about the cursor we resume from, and a client only keeps it if it behaves:
 * - Cursors are opaque: the client cannot compare them, so "drop anything at or before the
 *   cursor" can only be "drop a cursor we have already delivered".
 * - A message whose cursor equals the saved one is the message we resumed after (a server
 *   replaying inclusively, or the same message arriving live and in a replay): drop it. This
 *   also works after a page reload, when only the saved cursor survived (storage).
 * - Any other cursor seen within the last `window` deliveries is a repeat (a replay that
 *   overlaps messages the connection already delivered live): drop it. Repeats can only
 *   reach back as far as a replay does, so a window of the recovery limit is enough.
 * - `sync` with recovered:false starts the stream afresh (its history was lost or skipped);
 *   positions of a new history may reuse old cursor strings, so the window is cleared then.
 * - Messages without a position (cursor null) cannot be repeats of anything the server knows;
 *   they are delivered and move nothing.
 */
class CursorBook {
  #window;
  #streams = new Map(); // stream → { cursor: string|undefined, seen: Set<string> (oldest first) }

  constructor(window) {
    this.#window = window;
  }

  #entry(stream) {
    let e = this.#streams.get(stream);
    if (!e) this.#streams.set(stream, (e = { cursor: undefined, seen: new Set() }));
    return e;
  }

  /** Records a message's cursor; false means it was delivered before and must be dropped. */
  accept(stream, cursor) {
    if (cursor === null) return true;
    const e = this.#entry(stream);
    if (cursor === e.cursor || e.seen.has(cursor)) return false;
    e.cursor = cursor;
    e.seen.add(cursor);
    if (e.seen.size > this.#window) e.seen.delete(e.seen.values().next().value);
    return true;
  }

  synced(stream, cursor, recovered) {
    const e = this.#entry(stream);
    if (!recovered) e.seen.clear();
    if (typeof cursor === 'string') e.cursor = cursor;
    else if (!recovered) e.cursor = undefined;
  }

  restore(stream, cursor) {
    this.#entry(stream).cursor = cursor;
  }

  forget(stream) {
    this.#streams.delete(stream);
  }

  /** The resume map: every stream with a saved cursor. */
  snapshot() {
    const out = {};
    for (const [stream, e] of this.#streams) if (e.cursor !== undefined) out[stream] = e.cursor;
    return out;
  }
}

function errorText(err) {
  return err instanceof Error ? err.message : String(err);
}

/** A client for one user's notifications. See client/README.md. */
export class NotificationsClient {
  #opts;
  #urls;
  #getToken;
  #WebSocket;
  #clock;
  #random;
  #storage;
  #book;
  #listeners = new Map();
  #deferredErrors = []; // found before anyone could listen (a bad stored cursor map)
  #storageFailed = false;

  #state = 'idle';
  #started = false;
  #closed = false;
  #gen = 0; // bumped by every dial and by close(): async work of an older one is dropped
  #ws = null; // the current socket; events of any other are ignored
  #urlIndex = 0;
  #failures = 0; // consecutive attempts since the last healthy period
  #tokenReason = 'connect'; // what getToken is told before the next connect
  #expMs; // the current token's expiry (from the JWT, then from auth_ok)
  #serverError = null; // code of the last error frame on the current socket
  #synced = new Set(); // streams that got their sync on the current socket
  #timers = { reconnect: null, open: null, healthy: null, refresh: null };

  /** @param {import('./notifications-client.js').ClientOptions} options */
  constructor(options) {
    if (!options || typeof options !== 'object') throw new TypeError('NotificationsClient: options object required');
    const urls = Array.isArray(options.url) ? options.url : [options.url];
    if (urls.length === 0 || urls.some((u) => typeof u !== 'string' || u === '')) {
      throw new TypeError('NotificationsClient: url must be a non-empty string or a non-empty array of them');
    }
    if (typeof options.getToken !== 'function') throw new TypeError('NotificationsClient: getToken must be a function');
    const WS = options.WebSocket ?? globalThis.WebSocket;
    if (typeof WS !== 'function') {
      throw new TypeError('NotificationsClient: no WebSocket: pass options.WebSocket (e.g. npm ws), use Node >= 22, or run Node 20 with --experimental-websocket');
    }
    this.#opts = { ...DEFAULTS };
    for (const key of Object.keys(DEFAULTS)) {
      if (options[key] === undefined) continue;
      const ok = key === 'storageKey' ? typeof options[key] === 'string' && options[key] !== '' : Number.isFinite(options[key]) && options[key] >= 0;
      if (!ok) throw new TypeError(`NotificationsClient: invalid ${key}: ${String(options[key])}`);
      this.#opts[key] = options[key];
    }
    if (this.#opts.refreshRatio > 1) throw new TypeError('NotificationsClient: refreshRatio must be within [0, 1]');
    this.#urls = [...urls];
    this.#getToken = options.getToken;
    this.#WebSocket = WS;
    this.#random = options.random ?? Math.random;
    // Wrapped: browsers refuse setTimeout called as a method of another object.
    this.#clock = options.clock ?? {
      now: () => Date.now(),
      setTimeout: (fn, ms) => setTimeout(fn, ms),
      clearTimeout: (id) => clearTimeout(id),
    };
    this.#storage = options.storage ?? null;
    this.#book = new CursorBook(Math.max(1, Math.floor(this.#opts.dedupWindow)));
    this.#loadCursors();
  }

  /** 'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed' */
  get state() {
    return this.#state;
  }

  /** The saved cursor of every stream, as the next resume will send them. */
  cursors() {
    return this.#book.snapshot();
  }

  /** Adds a listener; returns the function that removes it. */
  on(type, listener) {
    if (!EVENTS.includes(type)) throw new TypeError(`NotificationsClient.on: unknown event ${JSON.stringify(type)} (one of ${EVENTS.join(', ')})`);
    if (typeof listener !== 'function') throw new TypeError('NotificationsClient.on: listener must be a function');
    if (!this.#listeners.has(type)) this.#listeners.set(type, new Set());
    const set = this.#listeners.get(type);
    const entry = (detail) => listener(detail); // a listener added twice is called twice
    set.add(entry);
    return () => set.delete(entry);
  }

  /** Starts connecting. Idempotent while the client lives; a closed client cannot restart. */
  connect() {
    if (this.#closed) throw new Error('NotificationsClient: closed for good; create a new client');
    if (this.#started) return;
    this.#started = true;
    for (const [code, message] of this.#deferredErrors.splice(0)) this.#report(code, message);
    this.#dial();
  }

  /** Ends the client for good: no reconnect, every timer cleared, the socket closed with 1000. */
  close() {
    if (this.#closed) return;
    this.#closed = true;
    this.#gen++;
    this.#clearTimers('reconnect', 'open', 'healthy', 'refresh');
    this.#drop(1000, 'client closed');
    this.#setState('closed', {});
  }

  /** Sends a text frame (connection testing: the server answers with an `echo` event). */
  send(text) {
    if (typeof text !== 'string') throw new TypeError('NotificationsClient.send: text must be a string');
    if (!this.#ws || this.#ws.readyState !== OPEN || this.#state !== 'open') return false;
    this.#ws.send(text);
    return true;
  }

  // ---- connection lifecycle ----

  async #dial() {
    const gen = ++this.#gen;
    const url = this.#urls[this.#urlIndex];
    this.#setState('connecting', { url, attempt: this.#failures });
    let token;
    try {
      token = await this.#fetchToken(this.#tokenReason);
    } catch (err) {
      if (gen !== this.#gen) return;
      this.#report('TOKEN_PROVIDER_FAILED', errorText(err), err);
      this.#retry({ throttled: false });
      return;
    }
    if (gen !== this.#gen) return;
    let ws;
    try {
      ws = new this.#WebSocket(url, [PROTOCOL, `bearer.${token}`]);
    } catch (err) {
      this.#report('CONNECT_FAILED', `cannot open ${url}: ${errorText(err)}`, err);
      this.#retry({ throttled: false });
      return;
    }
    this.#ws = ws;
    this.#serverError = null;
    this.#synced.clear();
    this.#expMs = tokenExpiryMs(token);
    ws.binaryType = 'arraybuffer';
    ws.onopen = () => this.#onOpen(ws);
    ws.onmessage = (ev) => this.#onFrame(ws, ev.data);
    ws.onclose = (ev) => this.#onClose(ws, ev.code, ev.reason);
    ws.onerror = () => {}; // a close event always follows and carries what there is to know
    this.#timers.open = this.#clock.setTimeout(() => {
      this.#timers.open = null;
      this.#abandon(ws, 'OPEN_TIMEOUT', `${url} did not open within ${this.#opts.openTimeoutMs} ms`);
    }, this.#opts.openTimeoutMs);
  }

  async #fetchToken(reason) {
    const token = await this.#getToken({ reason });
    if (typeof token !== 'string' || !TOKEN_CHARS.test(token)) {
      throw new TypeError(`getToken must return a JWT string; got ${typeof token === 'string' ? 'a string with characters a subprotocol cannot carry' : typeof token}`);
    }
    return token;
  }

  #onOpen(ws) {
    if (ws !== this.#ws) return;
    this.#clearTimers('open');
    if (ws.protocol !== PROTOCOL) {
      this.#abandon(ws, 'PROTOCOL_MISMATCH', `server selected subprotocol ${JSON.stringify(ws.protocol)}, not ${PROTOCOL}`);
      return;
    }
    this.#tokenReason = 'connect';
    // The first frame must be the resume: the server holds deliveries until it arrives.
    ws.send(JSON.stringify({ type: 'resume', streams: this.#book.snapshot() }));
    this.#timers.healthy = this.#clock.setTimeout(() => {
      this.#timers.healthy = null;
      this.#failures = 0;
    }, this.#opts.resetAfterMs);
    this.#scheduleRefresh();
    this.#setState('open', { url: this.#urls[this.#urlIndex] });
  }

  #onClose(ws, code, reason) {
    if (ws !== this.#ws) return;
    this.#ws = null;
    this.#clearTimers('open', 'healthy', 'refresh');
    const policy = closePolicy(code, this.#serverError);
    this.#tokenReason = policy.tokenReason;
    this.#retry({ throttled: policy.throttled, code, reason, serverError: this.#serverError ?? undefined });
  }

  /** Gives up on a socket the client judged broken, then reconnects as after a 1006. */
  #abandon(ws, code, message) {
    if (ws !== this.#ws) return;
    this.#drop(1000, code);
    this.#clearTimers('open', 'healthy', 'refresh');
    this.#report(code, message);
    this.#retry({ throttled: false, code: 1006, reason: code });
  }

  /** Detaches and closes the current socket, if any. */
  #drop(code, reason) {
    const ws = this.#ws;
    this.#ws = null;
    if (!ws) return;
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    try {
      ws.close(code, reason);
    } catch {
      // already closing: nothing more to do
    }
  }

  #retry(detail) {
    if (this.#closed) return;
    const delayMs = backoffDelay(this.#failures, this.#opts, detail.throttled, this.#random);
    this.#failures++;
    this.#urlIndex = (this.#urlIndex + 1) % this.#urls.length;
    this.#timers.reconnect = this.#clock.setTimeout(() => {
      this.#timers.reconnect = null;
      this.#dial();
    }, delayMs);
    const { throttled: _, ...rest } = detail;
    this.#setState('reconnecting', { ...rest, delayMs, attempt: this.#failures });
  }

  // ---- token refresh ----

  #scheduleRefresh() {
    this.#clearTimers('refresh');
    if (this.#expMs === undefined) return; // opaque token: the server's TOKEN_EXPIRED close will tell
    const ws = this.#ws;
    const delay = refreshDelay(this.#expMs - this.#clock.now(), this.#opts);
    this.#timers.refresh = this.#clock.setTimeout(() => this.#refresh(ws), delay);
  }

  async #refresh(ws) {
    this.#timers.refresh = null;
    let token;
    try {
      token = await this.#fetchToken('refresh');
      const exp = tokenExpiryMs(token);
      if (exp !== undefined && exp <= this.#expMs) throw new Error('getToken returned a token that expires no later than the current one');
    } catch (err) {
      if (ws !== this.#ws) return;
      this.#report('TOKEN_PROVIDER_FAILED', `refresh: ${errorText(err)}`, err);
      // Retry while the current token lives; after that the server closes with TOKEN_EXPIRED
      // and the reconnect asks for a new token.
      if (this.#expMs - this.#clock.now() > this.#opts.refreshRetryMs) {
        this.#timers.refresh = this.#clock.setTimeout(() => this.#refresh(ws), this.#opts.refreshRetryMs);
      }
      return;
    }
    if (ws !== this.#ws || ws.readyState !== OPEN) return;
    ws.send(JSON.stringify({ type: 'auth', token }));
    // Until auth_ok confirms it, the old expiry stands; a bad token closes with AUTH_FAILED.
  }

  // ---- frames ----

  #onFrame(ws, data) {
    if (ws !== this.#ws || typeof data !== 'string') return; // binary only echoes binary; this client sends none
    let f;
    try {
      f = JSON.parse(data);
    } catch {
      f = null;
    }
    if (!f || typeof f !== 'object' || typeof f.type !== 'string') {
      this.#report('BAD_FRAME', `not a ${PROTOCOL} frame: ${data.slice(0, 100)}`);
      return;
    }
    if ((f.type === 'message' || f.type === 'sync' || f.type === 'unsubscribed') && typeof f.stream !== 'string') {
      this.#report('BAD_FRAME', `${f.type} frame without a stream`);
      return;
    }
    switch (f.type) {
      case 'message':
        return this.#onMessage(f);
      case 'sync':
        return this.#onSync(f);
      case 'unsubscribed':
        this.#book.forget(f.stream);
        this.#saveCursors();
        return this.#emit('unsubscribed', { stream: f.stream });
      case 'auth_ok':
        if (Number.isFinite(f.exp)) this.#expMs = f.exp * 1000;
        return this.#scheduleRefresh();
      case 'echo':
        return this.#emit('echo', { data: f.data });
      case 'error':
        this.#serverError = typeof f.code === 'string' ? f.code : 'UNKNOWN';
        return this.#report(this.#serverError, typeof f.message === 'string' ? f.message : '');
      default:
      // a frame type this version does not know: newer servers may add some
    }
  }

  #onMessage(f) {
    const cursor = typeof f.cursor === 'string' ? f.cursor : null;
    if (!this.#book.accept(f.stream, cursor)) return; // delivered before: exactly once
    if (cursor !== null) this.#saveCursors();
    this.#emit('message', { stream: f.stream, data: f.data, cursor, replay: !this.#synced.has(f.stream) });
  }

  #onSync(f) {
    const recovered = f.recovered === true;
    this.#book.synced(f.stream, f.cursor, recovered);
    this.#saveCursors();
    this.#synced.add(f.stream);
    const detail = { stream: f.stream, cursor: typeof f.cursor === 'string' ? f.cursor : null, recovered };
    if (recovered) detail.replayed = Number.isFinite(f.replayed) ? f.replayed : 0;
    else {
      detail.reason = typeof f.reason === 'string' ? f.reason : 'unknown';
      detail.missed = Number.isFinite(f.missed) ? f.missed : null;
    }
    this.#emit('sync', detail);
  }

  // ---- storage ----

  #loadCursors() {
    if (!this.#storage) return;
    let raw;
    try {
      raw = this.#storage.getItem(this.#opts.storageKey);
      if (raw === null || raw === undefined) return;
      const streams = JSON.parse(raw).streams;
      if (!streams || typeof streams !== 'object') throw new Error('no streams object');
      for (const [stream, cursor] of Object.entries(streams)) if (typeof cursor === 'string') this.#book.restore(stream, cursor);
    } catch (err) {
      this.#deferredErrors.push(['STORAGE_FAILED', `ignoring saved cursors under ${this.#opts.storageKey}: ${errorText(err)}`]);
    }
  }

  #saveCursors() {
    if (!this.#storage) return;
    try {
      this.#storage.setItem(this.#opts.storageKey, JSON.stringify({ v: 1, streams: this.#book.snapshot() }));
    } catch (err) {
      if (this.#storageFailed) return; // said once; the cursors stay in memory
      this.#storageFailed = true;
      this.#report('STORAGE_FAILED', `cannot save cursors: ${errorText(err)}`, err);
    }
  }

  // ---- events ----

  #setState(state, detail) {
    this.#state = state;
    this.#emit('state', { state, ...detail });
  }

  #report(code, message, cause) {
    const detail = { code, message };
    if (cause !== undefined) detail.cause = cause;
    this.#emit('error', detail);
  }

  #emit(type, detail) {
    const set = this.#listeners.get(type);
    if (!set) return;
    for (const fn of [...set]) {
      try {
        fn(detail);
      } catch (err) {
        // The client's own bookkeeping is done before listeners run, so a throwing listener
        // loses nothing; it is reported, and an error listener that throws is rethrown
        // outside the client, as EventTarget does.
        if (type === 'error' || !this.#listeners.get('error')?.size) queueMicrotask(() => { throw err; });
        else this.#report('LISTENER_FAILED', `a ${type} listener threw: ${errorText(err)}`, err);
      }
    }
  }

  #clearTimers(...names) {
    for (const name of names) {
      if (this.#timers[name] !== null) this.#clock.clearTimeout(this.#timers[name]);
      this.#timers[name] = null;
    }
  }
}
