// Cursor bookkeeping: what the resume frame carries, exactly-once delivery when a replay
// overlaps what was already delivered, messages without a position, sync and unsubscribed, and
// cursors kept in storage across a page reload.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setup, settle } from './fake.js';

const READS = ['user', 'group:class7', 'broadcast'];

async function openClient(options = {}) {
  const env = setup({ reads: READS, random: () => 0, ...options });
  env.client.connect();
  await settle();
  return env;
}

const delivered = (env) => env.rec.of('message').map((m) => `${m.stream}=${JSON.stringify(m.data)}`);

test('the first resume is empty; after a drop it carries the last cursor of every stream', async () => {
  const env = await openClient();
  assert.deepEqual(env.server.sockets[0].frames()[0], { type: 'resume', streams: {} });
  // Every stream gets a cursor from its first sync, even before anything was published.
  assert.deepEqual(env.rec.of('sync').map((s) => [s.stream, s.recovered, s.reason]), READS.map((s) => [s, false, 'new']));

  env.server.publish('user', { n: 1 });
  const userCursor = env.server.publish('user', { n: 2 });
  const groupCursor = env.server.publish('group:class7', 'lesson');
  env.server.last().serverClose(1001);
  await env.clock.advance(0);

  assert.equal(env.server.sockets.length, 2);
  assert.deepEqual(env.server.sockets[1].frames()[0], {
    type: 'resume',
    streams: { user: userCursor, 'group:class7': groupCursor, broadcast: 'e1:0' },
  });
  assert.deepEqual(env.client.cursors(), { user: userCursor, 'group:class7': groupCursor, broadcast: 'e1:0' });
  env.client.close();
});

test('messages published while disconnected are replayed once, in order, then sync recovered', async () => {
  const env = await openClient();
  env.server.publish('user', 1);
  env.server.last().serverClose(1006);
  env.server.publish('user', 2); // nobody is connected: history only
  env.server.publish('user', 3);
  await env.clock.advance(0);
  env.server.publish('user', 4);

  assert.deepEqual(delivered(env), ['user=1', 'user=2', 'user=3', 'user=4']);
  assert.deepEqual(env.rec.of('message').map((m) => m.replay), [false, true, true, false]);
  const sync = env.rec.of('sync').filter((s) => s.stream === 'user').at(-1);
  assert.deepEqual(sync, { stream: 'user', cursor: 'e1:3', recovered: true, replayed: 2 });
  env.client.close();
});

test('a replay overlapping what was delivered live is de-duplicated', async () => {
  const env = await openClient();
  env.server.manual = true;
  const first = env.server.last();
  for (const c of ['c1', 'c2']) first.push({ type: 'message', stream: 'user', cursor: c, data: c });
  first.serverClose(1006);
  await env.clock.advance(0);
  const second = env.server.last();
  second.accept();
  assert.deepEqual(second.frames()[0].streams.user, 'c2');
  // A server replaying inclusively of the resume cursor, interleaved with live copies.
  for (const c of ['c2', 'c3', 'c3', 'c4']) second.push({ type: 'message', stream: 'user', cursor: c, data: c });
  second.push({ type: 'sync', stream: 'user', cursor: 'c4', recovered: true, replayed: 3 });
  for (const c of ['c3', 'c4', 'c5', 'c1']) second.push({ type: 'message', stream: 'user', cursor: c, data: c });

  assert.deepEqual(delivered(env), ['c1', 'c2', 'c3', 'c4', 'c5'].map((c) => `user="${c}"`));
  assert.deepEqual(env.client.cursors().user, 'c5');
  env.client.close();
});

test('the same cursor on different streams is not a duplicate', async () => {
  const env = await openClient();
  const sock = env.server.last();
  sock.push({ type: 'message', stream: 'user', cursor: 'x', data: 'a' });
  sock.push({ type: 'message', stream: 'broadcast', cursor: 'x', data: 'b' });
  assert.deepEqual(delivered(env), ['user="a"', 'broadcast="b"']);
  env.client.close();
});

test('messages with cursor null are delivered, every time, and do not move the cursor', async () => {
  const env = await openClient();
  const before = env.server.publish('user', 'sequenced');
  env.server.publish('user', 'plain', { sequenced: false });
  env.server.publish('user', 'plain', { sequenced: false });
  assert.deepEqual(delivered(env), ['user="sequenced"', 'user="plain"', 'user="plain"']);
  assert.deepEqual(env.rec.of('message').map((m) => m.cursor), [before, null, null]);
  assert.equal(env.client.cursors().user, before);
  env.server.last().serverClose(1001);
  await env.clock.advance(0);
  assert.equal(env.server.last().frames()[0].streams.user, before);
  env.client.close();
});

test('unsubscribed forgets the stream: the next resume leaves it out', async () => {
  const env = await openClient();
  env.server.publish('group:class7', 'x');
  env.server.last().push({ type: 'unsubscribed', stream: 'group:class7' });
  assert.deepEqual(env.rec.of('unsubscribed'), [{ stream: 'group:class7' }]);
  assert.equal(env.client.cursors()['group:class7'], undefined);
  env.server.last().serverClose(1001);
  await env.clock.advance(0);
  assert.deepEqual(Object.keys(env.server.last().frames()[0].streams).sort(), ['broadcast', 'user']);
  env.client.close();
});

test('a lost history is reported as recovered:false with its reason, and the stream starts afresh', async () => {
  const env = await openClient();
  env.server.publish('user', 'old');
  env.server.last().serverClose(1001);
  env.server.restart('e2'); // Redis restarted without persistence
  await env.clock.advance(0);
  const syncs = env.rec.of('sync').slice(READS.length);
  assert.deepEqual(syncs.map((s) => [s.stream, s.recovered, s.reason, s.missed]), READS.map((s) => [s, false, 'epoch', null]));
  assert.deepEqual(env.client.cursors(), { user: 'e2:0', 'group:class7': 'e2:0', broadcast: 'e2:0' });
  // A new history may reuse a cursor string delivered before the loss: it is a new message.
  const sock = env.server.last();
  sock.push({ type: 'message', stream: 'user', cursor: 'e1:1', data: 'new' });
  assert.deepEqual(delivered(env), ['user="old"', 'user="new"']);
  env.client.close();
});

test('a mid-session sync recovered:false reaches the app between the messages around the hole', async () => {
  const env = await openClient();
  const sock = env.server.last();
  sock.push({ type: 'message', stream: 'user', cursor: 'a1', data: 1 });
  sock.push({ type: 'sync', stream: 'user', cursor: 'a9', recovered: false, reason: 'trimmed', missed: 7 });
  sock.push({ type: 'message', stream: 'user', cursor: 'a10', data: 10 });
  const order = env.rec.events.filter(([t]) => t === 'message' || t === 'sync').slice(READS.length).map(([t, d]) => (t === 'sync' ? `sync:${d.reason}:${d.missed}` : d.data));
  assert.deepEqual(order, [1, 'sync:trimmed:7', 10]);
  assert.equal(env.client.cursors().user, 'a10');
  env.client.close();
});

test('the de-duplication window is bounded', async () => {
  const env = await openClient({ dedupWindow: 2 });
  const sock = env.server.last();
  for (const c of ['c1', 'c2', 'c3', 'c2', 'c1']) sock.push({ type: 'message', stream: 'user', cursor: c, data: c });
  // c2 is still remembered; c1 fell out of the window of two (memory stays bounded).
  assert.deepEqual(delivered(env), ['user="c1"', 'user="c2"', 'user="c3"', 'user="c1"']);
  env.client.close();
});

/** A sessionStorage stand-in. */
function memoryStorage() {
  const m = new Map();
  return { getItem: (k) => (m.has(k) ? m.get(k) : null), setItem: (k, v) => m.set(k, String(v)), removeItem: (k) => m.delete(k), map: m };
}

test('cursors saved in storage let a reloaded page resume, and the message at the cursor is dropped', async () => {
  const storage = memoryStorage();
  const a = await openClient({ storage, storageKey: 'n:u1' });
  a.server.publish('user', 1);
  const cursor = a.server.publish('user', 2);
  a.client.close();
  assert.deepEqual(JSON.parse(storage.map.get('n:u1')).streams.user, cursor);

  // The page reloads: a new client, nothing in memory, same storage.
  const b = setup({ reads: READS, storage, storageKey: 'n:u1' });
  b.server.manual = true;
  b.client.connect();
  await settle();
  const sock = b.server.last();
  sock.accept();
  assert.equal(sock.frames()[0].streams.user, cursor);
  sock.push({ type: 'message', stream: 'user', cursor, data: 2 }); // replayed inclusively
  sock.push({ type: 'message', stream: 'user', cursor: 'e1:3', data: 3 });
  assert.deepEqual(delivered(b).filter((m) => m.startsWith('user')), ['user=3']);
  b.client.close();
});

test('unreadable stored cursors are reported and ignored; a failing storage is reported once', async () => {
  const storage = memoryStorage();
  storage.map.set('k', '{not json');
  const env = setup({ storage, storageKey: 'k', random: () => 0 });
  const errors = env.rec.of.bind(null, 'error');
  env.client.connect();
  await settle();
  assert.equal(errors()[0].code, 'STORAGE_FAILED');
  assert.deepEqual(env.server.last().frames()[0], { type: 'resume', streams: {} });

  storage.setItem = () => {
    throw new Error('QuotaExceededError');
  };
  env.server.publish('user', 1);
  env.server.publish('user', 2);
  assert.equal(errors().filter((e) => e.code === 'STORAGE_FAILED').length, 2, 'load failure + one save failure');
  assert.equal(env.rec.of('message').length, 2, 'delivery goes on with cursors in memory');
  env.client.close();
});
