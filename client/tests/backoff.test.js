// Reconnect timing: exponential backoff with full jitter, its cap, its reset after a healthy
// period, the longer wait after a limit, and rotation through a list of URLs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setup, settle } from './fake.js';

/** Fails every connection with 1006 (no close frame) n times; returns the delays chosen. */
async function failRepeatedly(env, n) {
  const delays = [];
  env.server.manual = true;
  env.client.connect();
  for (let i = 0; i < n; i++) {
    await settle();
    env.server.last().serverClose(1006);
    const state = env.rec.of('state').at(-1);
    assert.equal(state.state, 'reconnecting');
    delays.push(state.delayMs);
    await env.clock.advance(state.delayMs);
  }
  return delays;
}

test('delays double up to the cap when the random source is at its top', async () => {
  const env = setup({ random: () => 1 - 1e-12 });
  const delays = await failRepeatedly(env, 8);
  // Full jitter below ceilings 1 s, 2 s, 4 s, … capped at 30 s.
  assert.deepEqual(delays, [999, 1999, 3999, 7999, 15999, 29999, 29999, 29999]);
  assert.equal(env.server.sockets.length, 9, 'one new socket per reconnect');
  env.client.close();
});

test('delays are zero when the random source is at its bottom (full jitter, no floor)', async () => {
  const env = setup({ random: () => 0 });
  assert.deepEqual(await failRepeatedly(env, 6), [0, 0, 0, 0, 0, 0]);
  env.client.close();
});

test('each delay is the random fraction of its ceiling', async () => {
  const draws = [0.25, 0.5, 0.75, 0.1, 0.9, 0.5, 0.33];
  let i = 0;
  const env = setup({ random: () => draws[i++], initialDelayMs: 100, maxDelayMs: 1000 });
  const delays = await failRepeatedly(env, draws.length);
  const ceilings = [100, 200, 400, 800, 1000, 1000, 1000];
  assert.deepEqual(delays, ceilings.map((c, k) => Math.floor(draws[k] * c)));
  env.client.close();
});

test('many clients spread their reconnects instead of stampeding', async () => {
  // Real Math.random: 200 clients failing at once choose 200 different first delays in [0, 1 s).
  const delays = new Set();
  for (let k = 0; k < 200; k++) {
    const env = setup({ random: Math.random });
    const [d] = await failRepeatedly(env, 1);
    assert.ok(d >= 0 && d < 1000, `delay ${d} outside [0, 1000)`);
    delays.add(d);
    env.client.close();
  }
  assert.ok(delays.size > 150, `only ${delays.size} distinct delays among 200 clients`);
});

test('a healthy period of being open resets the backoff; a short one does not', async () => {
  const env = setup({ random: () => 1 - 1e-12, resetAfterMs: 10000 });
  const before = await failRepeatedly(env, 3); // ceilings 1 s, 2 s, 4 s
  assert.deepEqual(before, [999, 1999, 3999]);

  // Open, but closed again before the healthy period ends: backoff keeps growing.
  await settle();
  env.server.last().accept();
  await env.clock.advance(9999);
  env.server.last().serverClose(1001);
  assert.equal(env.rec.of('state').at(-1).delayMs, 7999);
  await env.clock.advance(7999);

  // Open through the healthy period: the next delay is from the first ceiling again.
  await settle();
  env.server.last().accept();
  await env.clock.advance(10000);
  env.server.last().serverClose(1001);
  assert.equal(env.rec.of('state').at(-1).delayMs, 999);
  env.client.close();
});

test('CONNECTION_LIMIT and RATE_LIMITED wait longer: a floor plus the jittered delay', async () => {
  for (const code of ['CONNECTION_LIMIT', 'RATE_LIMITED']) {
    const env = setup({ random: () => 0, throttleDelayMs: 10000 });
    env.client.connect();
    await settle();
    env.server.last().serverClose(1008, code);
    assert.equal(env.rec.of('state').at(-1).delayMs, 10000, code);
    await env.clock.advance(9999);
    assert.equal(env.server.sockets.length, 1, `${code}: reconnected before the floor`);
    await env.clock.advance(1);
    assert.equal(env.server.sockets.length, 2, `${code}: no reconnect after the floor`);
    env.client.close();
  }
});

test('a list of URLs is rotated through on reconnect', async () => {
  const urls = ['ws://127.0.0.1:1/ws', 'ws://127.0.0.1:2/ws', 'ws://127.0.0.1:3/ws'];
  const env = setup({ url: urls, random: () => 0 });
  await failRepeatedly(env, 4);
  assert.deepEqual(env.server.sockets.map((s) => s.url), [...urls, ...urls.slice(0, 2)]);
  const connecting = env.rec.of('state').filter((s) => s.state === 'connecting').map((s) => s.url);
  assert.deepEqual(connecting, [...urls, ...urls.slice(0, 2)]);
  env.client.close();
});

test('a socket that does not open in time is abandoned and retried', async () => {
  const env = setup({ random: () => 0, openTimeoutMs: 5000 });
  env.server.manual = true;
  env.client.connect();
  await settle();
  await env.clock.advance(4999);
  assert.equal(env.server.sockets.length, 1);
  await env.clock.advance(1);
  assert.deepEqual(env.server.sockets[0].clientClose, { code: 1000, reason: 'OPEN_TIMEOUT' });
  assert.equal(env.rec.of('error').at(-1).code, 'OPEN_TIMEOUT');
  assert.equal(env.server.sockets.length, 2, 'retried after the (zero) delay');
  env.client.close();
});
