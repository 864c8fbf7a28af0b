// The rollout's per-stream checks (rollout-clients.mjs) judge what a client delivered to the
// app: these tests drive them with a fake client and check that loss, repeats and disorder
// are caught, and that a loss the client reported (sync recovered:false) is told apart from a
// silent one. Run by bench/rollout_test.go (`node --test rollout-clients.test.mjs`).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Rollout } from './rollout-clients.mjs';

class FakeClient {
  static last;
  listeners = {};
  constructor(opts) {
    this.opts = opts;
    FakeClient.last = this;
  }
  on(type, fn) {
    this.listeners[type] = fn;
    return () => {};
  }
  connect() {}
  close() {}
  emit(type, detail) {
    this.listeners[type]?.(detail);
  }
  open() {
    this.emit('state', { state: 'open' });
    for (const stream of ['user', 'group:g', 'broadcast']) this.emit('sync', { stream, recovered: true, replayed: 0 });
  }
  msgs(stream, ...seqs) {
    for (const seq of seqs) this.emit('message', { stream, data: { seq }, replay: false });
  }
}

async function run(script, last = { user: 3, group: 3, broadcast: 3 }) {
  const r = new Rollout({ NotificationsClient: FakeClient, specs: [{ user: 'u', group: 'g' }], urls: ['ws://x'], getToken: () => 't' });
  const c = FakeClient.last;
  const started = r.start(1000);
  c.emit('state', { state: 'open' });
  for (const stream of ['user', 'group:g', 'broadcast']) c.emit('sync', { stream, recovered: false, reason: 'new' });
  await started;
  c.msgs('group:g', ...Array.from({ length: last.group }, (_, i) => i + 1));
  c.msgs('broadcast', ...Array.from({ length: last.broadcast }, (_, i) => i + 1));
  script(c, r);
  return r.finish({ user: { u: last.user }, group: { g: last.group }, broadcast: last.broadcast }, 50);
}

test('every message once, in order: exact, nothing lost, the first sync (new) is no loss', async () => {
  const rep = await run((c) => c.msgs('user', 1, 2, 3));
  assert.equal(rep.streams, 3);
  assert.equal(rep.exact, 3);
  assert.equal(rep.recoveredFalse, 0);
  assert.equal(rep.silent + rep.covered + rep.duplicates + rep.outOfOrder, 0);
  assert.equal(rep.timedOut, null);
});

test('a hole with no recovered:false is a silent loss', async () => {
  const rep = await run((c) => c.msgs('user', 1, 3));
  assert.equal(rep.silent, 1);
  assert.equal(rep.exact, 2);
  assert.match(rep.problems[0], /user: 1 messages missing before seq 3 without a recovered:false sync/);
});

test('a hole after a recovered:false sync is a loss the app was told of', async () => {
  const rep = await run((c) => {
    c.msgs('user', 1);
    c.emit('sync', { stream: 'user', recovered: false, reason: 'epoch', missed: null });
    c.msgs('user', 3);
  });
  assert.equal(rep.silent, 0);
  assert.equal(rep.covered, 1);
  assert.equal(rep.recoveredFalse, 1);
  assert.deepEqual(rep.reasons, { epoch: 1 });
  assert.equal(rep.streamsWithLoss, 1);
});

test('the told loss covers only the hole right after it', async () => {
  const rep = await run((c) => {
    c.emit('sync', { stream: 'user', recovered: false, reason: 'epoch', missed: null });
    c.msgs('user', 2, 4);
  }, { user: 4, group: 1, broadcast: 1 });
  assert.equal(rep.covered, 1);
  assert.equal(rep.silent, 1);
});

test('repeats and disorder are counted', async () => {
  const rep = await run((c) => c.msgs('user', 1, 3, 2, 3));
  assert.equal(rep.duplicates, 1);
  assert.equal(rep.outOfOrder, 1);
  assert.equal(rep.silent, 1); // 2 was missing when 3 came
});

test('messages that never came are lost at the end, and the wait says so', async () => {
  const rep = await run((c) => c.msgs('user', 1));
  assert.equal(rep.silent, 2);
  assert.match(rep.timedOut, /every message delivered/);
});

test('a client has resumed once a socket opened after the drain synced every stream', async () => {
  let now = 1000;
  const r = new Rollout({ NotificationsClient: FakeClient, specs: [{ user: 'u', group: 'g' }], urls: ['ws://x'], getToken: () => 't', now: () => now });
  const c = FakeClient.last;
  const started = r.start(1000);
  c.open();
  await started;
  r.drain();
  c.emit('sync', { stream: 'user', recovered: true, replayed: 0 }); // still the old socket
  now = 1300;
  c.emit('state', { state: 'open' });
  c.emit('sync', { stream: 'user', recovered: true, replayed: 2 });
  c.emit('sync', { stream: 'group:g', recovered: true, replayed: 0 });
  now = 1400;
  c.emit('sync', { stream: 'broadcast', recovered: true, replayed: 0 });
  assert.deepEqual(await r.resumed(100), { allMs: 400, p50Ms: 400, p99Ms: 400 });
});
