// Rollout clients: many NotificationsClients (client/notifications-client.js) connected to a
// deployment while it is rolled out, each checking, per stream, that the app saw every
// sequenced message exactly once and in order, or a sync with recovered:false where messages
// were lost. The same module runs in Node (bench/rollout.mjs, the load test) and in a
// Chromium page (browser/rollout.mjs): it only uses what both have.
//
// The publisher (bench/rollout.go) numbers the messages of each stream 1, 2, 3… in the
// payload ({"seq": n}); publishing starts once every client has its first sync, so each
// stream is expected to deliver 1..last. A hole in the numbers is "covered" when the client
// raised sync recovered:false between the message before it and the message after it (the
// app was told to reload the stream), else it is a silent loss.

const MAX_PROBLEMS = 20;

/** What one client saw on one stream. */
class StreamCheck {
  last = 0; // highest seq received
  seen = new Set();
  received = 0;
  replayed = 0;
  duplicates = 0;
  outOfOrder = 0;
  covered = 0; // seqs missing where a recovered:false sync told the app
  silent = 0; // seqs missing with nothing said
  gapPending = false; // a recovered:false sync since the last message
  syncs = 0;
  lost = []; // reasons of recovered:false syncs after the first sync

  message(seq, replay, problem) {
    this.received++;
    if (replay) this.replayed++;
    if (this.seen.has(seq)) {
      this.duplicates++;
      problem(`seq ${seq} delivered twice`);
      return;
    }
    this.seen.add(seq);
    if (seq < this.last) {
      this.outOfOrder++;
      problem(`seq ${seq} after ${this.last}`);
      return;
    }
    this.hole(seq - this.last - 1, `before seq ${seq}`, problem);
    this.last = seq;
    this.gapPending = false;
  }

  sync(detail) {
    this.syncs++;
    if (detail.recovered) return;
    // The first sync of a fresh client is recovered:false reason new: the normal start.
    if (this.syncs === 1 && detail.reason === 'new') return;
    this.lost.push(detail.reason);
    this.gapPending = true;
  }

  hole(n, where, problem) {
    if (n <= 0) return;
    if (this.gapPending) this.covered += n;
    else {
      this.silent += n;
      problem(`${n} messages missing ${where} without a recovered:false sync`);
    }
  }
}

const streamsOf = (c) => ['user', `group:${c.group}`, 'broadcast'];

/**
 * Rollout runs the clients. Each client spec is { user, group }; the connection reads the
 * streams user, group:<group> and broadcast.
 */
export class Rollout {
  #specs;
  #clients = [];
  #checks = []; // per client: Map stream → StreamCheck
  #conn = []; // per client, of its current socket: { beforeDrain: bool, synced: Set<stream> }
  #errors = {};
  #problems = [];
  #drainAt = null;
  #resumedAt = [];
  #waiters = new Set();
  #now;

  constructor({ NotificationsClient, specs, urls, getToken, clientOptions = {}, WebSocket, now = () => Date.now() }) {
    this.#specs = specs;
    this.#now = now;
    specs.forEach((spec, i) => {
      const checks = new Map(streamsOf(spec).map((s) => [s, new StreamCheck()]));
      this.#checks.push(checks);
      this.#conn.push({ beforeDrain: false, synced: new Set() });
      this.#resumedAt.push(null);
      const opts = { ...clientOptions, url: urls, getToken: (ctx) => getToken(spec, ctx) };
      if (WebSocket) opts.WebSocket = WebSocket;
      const client = new NotificationsClient(opts);
      const problem = (stream) => (text) => this.#problem(`client ${i} (${spec.user}) ${stream}: ${text}`);
      client.on('message', ({ stream, data, replay }) => {
        const check = checks.get(stream);
        const seq = data && typeof data === 'object' ? data.seq : undefined;
        if (!check || !Number.isInteger(seq)) {
          this.#problem(`client ${i}: unexpected message on ${stream}: ${JSON.stringify(data)}`);
          return;
        }
        check.message(seq, replay, problem(stream));
        this.#wake();
      });
      client.on('sync', (detail) => {
        const check = checks.get(detail.stream);
        if (!check) {
          this.#problem(`client ${i}: sync of unexpected stream ${detail.stream}`);
          return;
        }
        check.sync(detail);
        const conn = this.#conn[i];
        conn.synced.add(detail.stream);
        if (this.#drainAt !== null && this.#resumedAt[i] === null && !conn.beforeDrain && conn.synced.size === checks.size) {
          this.#resumedAt[i] = this.#now();
        }
        this.#wake();
      });
      client.on('state', ({ state }) => {
        if (state === 'open') this.#conn[i] = { beforeDrain: false, synced: new Set() };
      });
      client.on('error', ({ code }) => {
        this.#errors[code] = (this.#errors[code] ?? 0) + 1;
      });
      this.#clients.push(client);
    });
  }

  #problem(text) {
    if (this.#problems.length < MAX_PROBLEMS) this.#problems.push(text);
  }

  #wake() {
    for (const w of [...this.#waiters]) w();
  }

  /** Resolves once cond() holds (checked after every event), rejects after timeoutMs. */
  #until(cond, timeoutMs, what) {
    return new Promise((resolve, reject) => {
      const check = () => {
        if (!cond()) return;
        this.#waiters.delete(check);
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(() => {
        this.#waiters.delete(check);
        reject(new Error(`${what}: not within ${timeoutMs} ms`));
      }, timeoutMs);
      this.#waiters.add(check);
      check();
    });
  }

  /** Connects every client; resolves once each has its first sync of every stream. */
  async start(timeoutMs) {
    const started = this.#now();
    this.#clients.forEach((c) => c.connect());
    await this.#until(() => this.#checks.every((m) => [...m.values()].every((s) => s.syncs > 0)), timeoutMs, 'first sync of every stream');
    return { ms: this.#now() - started };
  }

  /** Marks the start of the drain: from now on a client has resumed once a socket opened after this has synced every stream. */
  drain() {
    this.#drainAt = this.#now();
    for (const conn of this.#conn) conn.beforeDrain = true;
  }

  /** Resolves when every client has resumed after drain(); the times are from drain(). */
  async resumed(timeoutMs) {
    await this.#until(() => this.#resumedAt.every((t) => t !== null), timeoutMs, 'every client resumed').catch((err) => {
      const missing = this.#resumedAt.filter((t) => t === null).length;
      throw new Error(`${err.message} (${missing} of ${this.#clients.length} not resumed)`);
    });
    const ms = this.#resumedAt.map((t) => t - this.#drainAt).sort((a, b) => a - b);
    const at = (q) => ms[Math.min(ms.length - 1, Math.floor(q * ms.length))];
    return { allMs: ms[ms.length - 1], p50Ms: at(0.5), p99Ms: at(0.99) };
  }

  /**
   * Waits until every stream has reached the last seq the publisher sent (expect: { user:
   * {user: n}, group: {group: n}, broadcast: n }) or timeoutMs passed, closes the clients and
   * returns the report.
   */
  async finish(expect, timeoutMs) {
    const lastOf = (spec, stream) => {
      if (stream === 'user') return expect.user[spec.user] ?? 0;
      if (stream === 'broadcast') return expect.broadcast ?? 0;
      return expect.group[spec.group] ?? 0;
    };
    const done = () => this.#specs.every((spec, i) => [...this.#checks[i]].every(([s, c]) => c.last >= lastOf(spec, s)));
    let timedOut = null;
    await this.#until(done, timeoutMs, 'every message delivered').catch((err) => {
      timedOut = err.message;
    });
    this.#clients.forEach((c) => c.close());
    const r = {
      clients: this.#specs.length, streams: 0, exact: 0, expected: 0, received: 0, replayed: 0,
      duplicates: 0, outOfOrder: 0, covered: 0, silent: 0, recoveredFalse: 0, streamsWithLoss: 0,
      reasons: {}, errors: this.#errors, timedOut, problems: this.#problems,
    };
    this.#specs.forEach((spec, i) => {
      for (const [stream, c] of this.#checks[i]) {
        const last = lastOf(spec, stream);
        c.hole(last - c.last, `at the end (last received ${c.last} of ${last})`, (text) => this.#problem(`client ${i} (${spec.user}) ${stream}: ${text}`));
        r.streams++;
        r.expected += last;
        r.received += c.received;
        r.replayed += c.replayed;
        r.duplicates += c.duplicates;
        r.outOfOrder += c.outOfOrder;
        r.covered += c.covered;
        r.silent += c.silent;
        r.recoveredFalse += c.lost.length;
        if (c.lost.length > 0) r.streamsWithLoss++;
        for (const reason of c.lost) r.reasons[reason] = (r.reasons[reason] ?? 0) + 1;
        if (c.received === last && c.duplicates === 0 && c.outOfOrder === 0 && c.silent === 0 && c.covered === 0) r.exact++;
      }
    });
    return r;
  }
}
