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
import { NotificationsClient } from '../client/notifications-client.js';
import { Rollout } from './rollout-clients.mjs';
import { commands, run, say } from './rollout-protocol.mjs';

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
  const next = commands();
  say({ event: 'ready', ...(await rollout.start(config.timeoutMs)) });
  await next('drain');
  rollout.drain();
  say({ event: 'draining' });
  say({ event: 'resumed', ...(await rollout.resumed(config.timeoutMs)) });
  const { expect } = await next('finish');
  say({ event: 'report', report: await rollout.finish(expect, config.timeoutMs) });
}

run(main);
