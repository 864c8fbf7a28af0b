// The token: how it is offered, when getToken is called, and in-band refresh ahead of exp
// (timed on the fake clock), including refreshes that fail.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { NotificationsClient } from '../notifications-client.js';
import { FakeClock, FakeServer, setup, settle, makeToken } from './fake.js';

const authFrames = (sock) => sock.frames().filter((f) => f.type === 'auth');

test('the token travels as a subprotocol next to notifications.v2, never in the URL', async () => {
  const env = setup({ url: 'ws://127.0.0.1:1/ws' });
  env.client.connect();
  await settle();
  const sock = env.server.last();
  assert.deepEqual(sock.protocols, ['notifications.v2', `bearer.${env.tokens[0].token}`]);
  assert.equal(sock.url, 'ws://127.0.0.1:1/ws');
  assert.equal(env.client.state, 'open');
  env.client.close();
});

test('an async token provider is awaited before each connect', async () => {
  const clock = new FakeClock();
  const server = new FakeServer({ clock });
  const calls = [];
  const client = new NotificationsClient({
    url: 'ws://127.0.0.1:1/ws',
    WebSocket: server.WebSocket,
    clock,
    random: () => 0,
    getToken: async (ctx) => {
      calls.push(ctx.reason);
      await new Promise((resolve) => setImmediate(resolve));
      return makeToken({ sub: 'u1', exp: Math.floor(clock.now() / 1000) + 60 });
    },
  });
  client.connect();
  assert.equal(server.sockets.length, 0, 'no socket before the token');
  await settle();
  await settle();
  assert.equal(client.state, 'open');
  server.last().serverClose(1001);
  await clock.advance(0);
  await settle();
  assert.deepEqual(calls, ['connect', 'connect']);
  assert.equal(server.sockets.length, 2);
  client.close();
});

const timings = [
  // lifetime → refresh after: 80 % of it when that leaves ≥ 10 s; else 10 s before exp; never before half.
  { ttlS: 3600, refreshAfterMs: 2880_000 },
  { ttlS: 60, refreshAfterMs: 48_000 },
  { ttlS: 30, refreshAfterMs: 20_000 },
  { ttlS: 10, refreshAfterMs: 5_000 },
];
for (const { ttlS, refreshAfterMs } of timings) {
  test(`a ${ttlS} s token is refreshed in-band after ${refreshAfterMs} ms, then again from auth_ok's exp`, async () => {
    const env = setup({ ttlS });
    env.client.connect();
    await settle();
    const sock = env.server.last();
    await env.clock.advance(refreshAfterMs - 1);
    assert.deepEqual(authFrames(sock), [], 'refreshed early');
    await env.clock.advance(1);
    assert.deepEqual(authFrames(sock), [{ type: 'auth', token: env.tokens[1].token }]);
    assert.equal(env.tokens[1].reason, 'refresh');
    // The fake server answered auth_ok with the new token's exp (ttlS from now): the next
    // refresh is timed from it.
    await env.clock.advance(refreshAfterMs - 1);
    assert.equal(authFrames(sock).length, 1);
    await env.clock.advance(1);
    assert.equal(authFrames(sock).length, 2);
    assert.equal(env.server.sockets.length, 1, 'the connection stayed up');
    env.client.close();
  });
}

test("auth_ok's exp, not the token's, times the next refresh", async () => {
  const env = setup({ ttlS: 3600 });
  env.client.connect();
  await settle();
  await env.clock.advance(2880_000);
  const sock = env.server.last();
  assert.equal(authFrames(sock).length, 1);
  // The server says the refreshed session ends in 100 s (e.g. capped by policy).
  sock.push({ type: 'auth_ok', exp: Math.floor(env.clock.now() / 1000) + 100 });
  await env.clock.advance(80_000 - 1);
  assert.equal(authFrames(sock).length, 1);
  await env.clock.advance(1);
  assert.equal(authFrames(sock).length, 2);
  env.client.close();
});

test('a local clock ahead of the server does not make the client refresh in a loop', async () => {
  // By the local clock every token expired a minute ago (each a second later than the last).
  let n = 0;
  const env = setup({ getToken: (_, clock) => makeToken({ sub: 'u1', exp: Math.floor(clock.now() / 1000) - 60 + n++ }) });
  env.server.manual = true;
  env.client.connect();
  await settle();
  const sock = env.server.last();
  sock.accept(); // the server, whose clock is right, accepts it and every refresh
  const send = sock.send.bind(sock);
  sock.send = (data) => {
    send(data);
    const f = JSON.parse(data);
    if (f.type === 'auth' && authFrames(sock).length < 100) {
      sock.push({ type: 'auth_ok', exp: JSON.parse(Buffer.from(f.token.split('.')[1], 'base64url')).exp });
    }
  };
  await env.clock.advance(60_000);
  assert.equal(authFrames(sock).length, 12, 'one refresh per refreshRetryMs over 60 s');
  env.client.close();
});

test('a failing refresh is reported and retried while the token lives; then TOKEN_EXPIRED reconnects asking for a new one', async () => {
  let fail = true;
  const reasons = [];
  const env = setup({
    ttlS: 60,
    random: () => 0,
    getToken: ({ reason }, clock) => {
      reasons.push(reason);
      if (reason === 'refresh' && fail) throw new Error('identity provider down');
      return makeToken({ sub: 'u1', exp: Math.floor(clock.now() / 1000) + 60 });
    },
  });
  env.client.connect();
  await settle();
  const sock = env.server.last();
  await env.clock.advance(48_000); // refresh due: fails
  assert.equal(env.rec.of('error').at(-1).code, 'TOKEN_PROVIDER_FAILED');
  assert.match(env.rec.of('error').at(-1).message, /identity provider down/);
  await env.clock.advance(5_000); // retried 5 s later, 7 s left: fails again
  await env.clock.advance(5_000); // 2 s left: fails again, and that was the last try
  assert.deepEqual(reasons, ['connect', 'refresh', 'refresh', 'refresh']);
  await env.clock.advance(10_000);
  assert.deepEqual(reasons, ['connect', 'refresh', 'refresh', 'refresh'], 'no retry once less than the retry interval is left');
  assert.deepEqual(authFrames(sock), []);
  // The server ends the session; the reconnect asks for a token knowing why.
  fail = false;
  sock.serverClose(1008, 'TOKEN_EXPIRED');
  await env.clock.advance(0);
  assert.deepEqual(reasons, ['connect', 'refresh', 'refresh', 'refresh', 'expired']);
  assert.equal(env.client.state, 'open');
  env.client.close();
});

test('a provider returning the same token at refresh is told so and asked again later', async () => {
  const token = makeToken({ sub: 'u1', exp: Math.floor(1_700_000_000_000 / 1000) + 60 });
  const reasons = [];
  const env = setup({ getToken: ({ reason }) => (reasons.push(reason), token) });
  env.client.connect();
  await settle();
  await env.clock.advance(48_000);
  assert.match(env.rec.of('error').at(-1).message, /expires no later/);
  assert.deepEqual(authFrames(env.server.last()), []);
  await env.clock.advance(5_000);
  assert.deepEqual(reasons, ['connect', 'refresh', 'refresh']);
  env.client.close();
});

test('a refresh the server rejects (AUTH_FAILED, 1008) reconnects asking for a new token', async () => {
  const env = setup({
    random: () => 0,
    getToken: ({ reason }, clock) => {
      const exp = Math.floor(clock.now() / 1000) + 60;
      return reason === 'refresh' ? makeToken({ exp }) /* no sub: the server refuses it */ : makeToken({ sub: 'u1', exp, reason });
    },
  });
  env.client.connect();
  await settle();
  const first = env.server.last();
  await env.clock.advance(48_000);
  assert.equal(authFrames(first).length, 1);
  assert.equal(env.rec.of('error').find((e) => e.code === 'AUTH_FAILED')?.code, 'AUTH_FAILED');
  assert.equal(env.server.sockets.length, 2);
  const claims = JSON.parse(Buffer.from(env.server.last().token.split('.')[1], 'base64url'));
  assert.equal(claims.reason, 'rejected');
  env.client.close();
});

test('a token that cannot be offered as a subprotocol is an error, and the client backs off', async () => {
  const env = setup({ random: () => 0, getToken: () => 'has spaces' });
  env.client.connect();
  await settle();
  assert.equal(env.server.sockets.length, 0);
  assert.equal(env.rec.of('error')[0].code, 'TOKEN_PROVIDER_FAILED');
  assert.equal(env.client.state, 'reconnecting');
  env.client.close();
});

test('a server that does not select notifications.v2 is left and retried', async () => {
  const env = setup({ random: () => 0 });
  env.server.manual = true;
  env.client.connect();
  await settle();
  env.server.last().accept('notifications.v1');
  assert.equal(env.rec.of('error')[0].code, 'PROTOCOL_MISMATCH');
  assert.deepEqual(env.server.sockets[0].sent, [], 'no resume sent to a v1 server');
  assert.equal(env.client.state, 'reconnecting');
  env.client.close();
});

test('send() gets an echo event back; it refuses while not open', async () => {
  const env = setup();
  assert.equal(env.client.send('early'), false);
  env.client.connect();
  await settle();
  assert.equal(env.client.send('hello'), true);
  assert.deepEqual(env.rec.of('echo'), [{ data: 'hello' }]);
  env.client.close();
});

test('bad options are refused with a clear error', () => {
  const WebSocket = class {};
  const getToken = () => 't';
  const C = NotificationsClient;
  assert.throws(() => new C(), /options object required/);
  assert.throws(() => new C({ url: [], getToken, WebSocket }), /url must be/);
  assert.throws(() => new C({ url: 'ws://x', WebSocket }), /getToken must be a function/);
  assert.throws(() => new C({ url: 'ws://x', getToken, WebSocket: 42 }), /no WebSocket/);
  assert.throws(() => new C({ url: 'ws://x', getToken, WebSocket, maxDelayMs: -1 }), /invalid maxDelayMs/);
  assert.throws(() => new C({ url: 'ws://x', getToken, WebSocket, refreshRatio: 2 }), /refreshRatio/);
  assert.throws(() => new C({ url: 'ws://x', getToken, WebSocket }).on('messages', () => {}), /unknown event "messages"/);
});
