// The load test's client side: `node [--experimental-websocket] rollout.mjs <config.json>`
// runs every client of the config in this process with client/notifications-client.js and
// Node's global WebSocket (Node ≥ 22, or Node 20 with --experimental-websocket), driven by
// bench/rollout.go over stdin/stdout. browser/rollout.mjs speaks the same protocol from a
// Chromium page.
//
// Config: { "urls": [...], "clients": [{ "user", "group", "token" }], "clientOptions": {...},
//           "timeoutMs": n }
// Out (JSON lines): {"event":"ready","ms"} once every client has its first sync of every
//   stream; {"event":"draining"} after a drain command; {"event":"resumed",...} once every
//   client resumed after it; {"event":"report","report":{...}} at the end; {"event":"error",
//   "error"} when something cannot go on.
// In (JSON lines): {"cmd":"drain"}, then {"cmd":"finish","expect":{...}}.
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { NotificationsClient } from '../client/notifications-client.js';
import { Rollout } from './rollout-clients.mjs';

const say = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');

async function main() {
  if (typeof globalThis.WebSocket !== 'function') {
    throw new Error('no global WebSocket: use Node >= 22, or Node 20 with --experimental-websocket');
  }
  const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
  const tokens = new Map(config.clients.map((c) => [c.user, c.token]));
  const rollout = new Rollout({
    NotificationsClient,
    specs: config.clients,
    urls: config.urls,
    clientOptions: config.clientOptions,
    getToken: (spec) => tokens.get(spec.user),
  });
  const commands = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
  const next = async (want) => {
    const { value, done } = await commands.next();
    if (done) throw new Error(`stdin closed while waiting for ${want}`);
    const cmd = JSON.parse(value);
    if (cmd.cmd !== want) throw new Error(`got command ${cmd.cmd}, want ${want}`);
    return cmd;
  };
  say({ event: 'ready', ...(await rollout.start(config.timeoutMs)) });
  await next('drain');
  rollout.drain();
  say({ event: 'draining' });
  say({ event: 'resumed', ...(await rollout.resumed(config.timeoutMs)) });
  const { expect } = await next('finish');
  say({ event: 'report', report: await rollout.finish(expect, config.timeoutMs) });
}

main().then(
  () => process.exit(0),
  (err) => {
    say({ event: 'error', error: String(err?.stack ?? err) });
    process.exit(1);
  },
);
