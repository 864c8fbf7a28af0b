// What the client survives without losing its place: frames it cannot use, a WebSocket
// constructor that throws, and app listeners that throw.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { NotificationsClient } from '../notifications-client.js';
import { makeToken, setup, settle } from './fake.js';

test('unusable frames are reported or ignored, and delivery goes on', async () => {
  const env = setup();
  env.client.connect();
  await settle();
  const sock = env.server.last();
  sock.push('not json');
  sock.push({ type: 'message', cursor: 'c0', data: 'no stream' });
  sock.onmessage({ data: new ArrayBuffer(4) }); // binary: only ever an echo of binary, never sent by this client
  sock.push({ type: 'presence', who: 'u2' }); // a type a newer server might add
  sock.push({ type: 'message', stream: 'user', cursor: 'c1', data: 'ok' });
  assert.deepEqual(env.rec.of('error').map((e) => e.code), ['BAD_FRAME', 'BAD_FRAME']);
  assert.deepEqual(env.rec.of('message').map((m) => m.data), ['ok']);
  assert.equal(env.client.state, 'open');
  env.client.close();
});

test('a WebSocket constructor that throws is reported and retried with backoff', async () => {
  const env = setup({ random: () => 0 });
  let calls = 0;
  const { WebSocket } = env.server;
  const Throwing = function (url, protocols) {
    if (calls++ === 0) throw new SyntaxError('bad URL');
    return new WebSocket(url, protocols);
  };
  const client = new NotificationsClient({ url: 'ws://127.0.0.1:1/ws', getToken: () => makeToken({ sub: 'u1', exp: 2e9 }), WebSocket: Throwing, clock: env.clock, random: () => 0 });
  const errors = [];
  client.on('error', (e) => errors.push(e.code));
  client.connect();
  await settle();
  assert.deepEqual(errors, ['CONNECT_FAILED']);
  assert.equal(client.state, 'reconnecting');
  await env.clock.advance(0);
  assert.equal(env.server.sockets.length, 1);
  assert.equal(client.state, 'open');
  client.close();
});

test('a throwing message listener is reported; the message counts as delivered and the next one arrives', async () => {
  const env = setup();
  let n = 0;
  env.client.on('message', () => {
    if (n++ === 0) throw new Error('render failed');
  });
  env.client.connect();
  await settle();
  env.server.publish('user', 1);
  env.server.publish('user', 2);
  const failed = env.rec.of('error').filter((e) => e.code === 'LISTENER_FAILED');
  assert.equal(failed.length, 1);
  assert.match(failed[0].message, /render failed/);
  assert.deepEqual(env.rec.of('message').map((m) => m.data), [1, 2], 'other listeners still got both');
  assert.equal(env.client.cursors().user, 'e1:2');
  env.client.close();
});

test('removing a listener stops its calls', async () => {
  const env = setup();
  const got = [];
  const off = env.client.on('message', ({ data }) => got.push(data));
  env.client.connect();
  await settle();
  env.server.publish('user', 1);
  off();
  env.server.publish('user', 2);
  assert.deepEqual(got, [1]);
  env.client.close();
});
