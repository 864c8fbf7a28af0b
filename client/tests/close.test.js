// What the client does after each way a connection can end: every close code the server uses,
// with and without the error frame it sends first, and a close the app asked for.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setup, settle } from './fake.js';

// random() = 0.5 and a first failure: a plain reconnect waits 0.5 × 1 s; a throttled one adds
// the 10 s floor. tokenReason is what getToken is told before the reconnect.
const PLAIN = 500;
const THROTTLED = 10500;
const cases = [
  { code: 1000, error: null, delay: PLAIN, tokenReason: 'connect' },
  { code: 1001, error: null, delay: PLAIN, tokenReason: 'connect' },
  { code: 1002, error: null, delay: PLAIN, tokenReason: 'connect' },
  { code: 1006, error: null, delay: PLAIN, tokenReason: 'connect' },
  { code: 1007, error: null, delay: PLAIN, tokenReason: 'connect' },
  { code: 1009, error: 'MESSAGE_TOO_LARGE', delay: PLAIN, tokenReason: 'connect' },
  { code: 1009, error: null, delay: PLAIN, tokenReason: 'connect' },
  { code: 1011, error: null, delay: PLAIN, tokenReason: 'connect' },
  { code: 1012, error: null, delay: PLAIN, tokenReason: 'connect' },
  { code: 1013, error: 'SLOW_CONSUMER', delay: PLAIN, tokenReason: 'connect' },
  { code: 1013, error: null, delay: PLAIN, tokenReason: 'connect' },
  { code: 1008, error: 'AUTH_FAILED', delay: PLAIN, tokenReason: 'rejected' },
  { code: 1008, error: 'TOKEN_EXPIRED', delay: PLAIN, tokenReason: 'expired' },
  { code: 1008, error: 'CONNECTION_LIMIT', delay: THROTTLED, tokenReason: 'connect' },
  { code: 1008, error: 'RATE_LIMITED', delay: THROTTLED, tokenReason: 'connect' },
  { code: 1008, error: null, delay: PLAIN, tokenReason: 'rejected' }, // policy close without its frame
  { code: 1005, error: null, delay: PLAIN, tokenReason: 'connect' }, // no status code
  { code: 4000, error: null, delay: PLAIN, tokenReason: 'connect' }, // unknown application code
];

for (const c of cases) {
  test(`server close ${c.code}${c.error ? ` after ${c.error}` : ''}: reconnect in ${c.delay} ms asking for a ${c.tokenReason} token`, async () => {
    const env = setup();
    env.client.connect();
    await settle();
    assert.equal(env.client.state, 'open');
    env.server.last().serverClose(c.code, c.error);

    if (c.error) {
      const err = env.rec.of('error').at(-1);
      assert.equal(err.code, c.error, 'the error frame reaches the app');
    }
    const st = env.rec.of('state').at(-1);
    assert.equal(st.state, 'reconnecting');
    assert.equal(st.code, c.code);
    assert.equal(st.serverError, c.error ?? undefined);
    assert.equal(st.delayMs, c.delay);
    assert.equal(st.attempt, 1);

    await env.clock.advance(c.delay - 1);
    assert.equal(env.server.sockets.length, 1, 'reconnected early');
    await env.clock.advance(1);
    assert.equal(env.server.sockets.length, 2, 'did not reconnect');
    assert.deepEqual(env.tokens.map((t) => t.reason), ['connect', c.tokenReason]);
    assert.notEqual(env.tokens[1].token, env.tokens[0].token, 'a fresh getToken call for the reconnect');
    assert.equal(env.client.state, 'open');
    env.client.close();
  });
}

test('an error frame only explains the close of its own socket', async () => {
  const env = setup();
  env.client.connect();
  await settle();
  env.server.last().serverClose(1008, 'AUTH_FAILED');
  await env.clock.advance(500);
  env.server.last().serverClose(1001); // the next socket closes without an error frame
  await env.clock.advance(10000);
  assert.deepEqual(env.tokens.map((t) => t.reason), ['connect', 'rejected', 'connect']);
  env.client.close();
});

test('close() while open ends the client for good', async () => {
  const env = setup();
  env.client.connect();
  await settle();
  const sock = env.server.last();
  env.client.close();
  assert.deepEqual(sock.clientClose, { code: 1000, reason: 'client closed' });
  assert.equal(env.client.state, 'closed');
  assert.deepEqual(env.rec.states(), ['connecting', 'open', 'closed']);
  assert.deepEqual(env.clock.pending(), [], 'no timer left (refresh, healthy, reconnect)');
  sock.serverClose(1000); // a late close event from the socket changes nothing
  await env.clock.advance(3600_000);
  assert.equal(env.server.sockets.length, 1);
  assert.throws(() => env.client.connect(), /closed for good/);
  env.client.close(); // idempotent
  assert.deepEqual(env.rec.states(), ['connecting', 'open', 'closed']);
});

test('close() while waiting to reconnect cancels the reconnect', async () => {
  const env = setup();
  env.client.connect();
  await settle();
  env.server.last().serverClose(1001);
  env.client.close();
  assert.deepEqual(env.clock.pending(), []);
  await env.clock.advance(60_000);
  assert.equal(env.server.sockets.length, 1);
  assert.equal(env.client.state, 'closed');
});

test('close() while getToken is pending opens no socket', async () => {
  let release;
  const env = setup({ getToken: () => new Promise((resolve) => { release = resolve; }) });
  env.client.connect();
  await settle();
  env.client.close();
  release('aaa.bbb.ccc');
  await settle();
  assert.equal(env.server.sockets.length, 0);
  assert.equal(env.client.state, 'closed');
});

test('close() from inside a message listener stops delivery of later frames', async () => {
  const env = setup();
  const seen = [];
  env.client.on('message', ({ data }) => {
    seen.push(data);
    env.client.close();
  });
  env.client.connect();
  await settle();
  const sock = env.server.last();
  sock.push({ type: 'message', stream: 'user', cursor: 'c1', data: 1 });
  sock.push({ type: 'message', stream: 'user', cursor: 'c2', data: 2 });
  assert.deepEqual(seen, [1]);
});
