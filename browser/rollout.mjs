// The rollout's clients in headless Chromium: `node rollout.mjs <config.json>` speaks
// bench/rollout.mjs's protocol (config file, JSON-line commands on stdin, events on stdout)
// for bench.RunRollout, driven by browser/rollout_test.go, but its clients live in a page.
//
// It serves, on its own loopback port, what a frontend ships: a page that imports
// client/notifications-client.js as an ES module (no bundler) next to
// bench/rollout-clients.mjs (the per-stream checks), and a token endpoint the page's token
// provider fetches (GET /token?user=…), as an app's backend would hand the JWT to its page.
// Everything the clients see happens in the page; the page's answers come back through
// page.evaluate.
import { createServer } from 'node:http';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { commands, run, say } from '../bench/rollout-protocol.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

const page = `<!doctype html><html><head><meta charset="utf-8"><title>notifications rollout</title>
<script type="module">
import { NotificationsClient } from '/client/notifications-client.js';
import { Rollout } from '/bench/rollout-clients.mjs';
window.startRollout = (config) => {
  window.rollout = new Rollout({
    NotificationsClient,
    specs: config.clients,
    urls: config.urls,
    clientOptions: config.clientOptions,
    getToken: async (spec) => {
      const resp = await fetch('/token?user=' + encodeURIComponent(spec.user));
      if (!resp.ok) throw new Error('token endpoint: HTTP ' + resp.status);
      return resp.text();
    },
  });
  return window.rollout.start(config.timeoutMs);
};
window.pageReady = true;
</script></head><body><p>notifications rollout</p></body></html>`;

const files = {
  '/client/notifications-client.js': join(root, 'client', 'notifications-client.js'),
  '/bench/rollout-clients.mjs': join(root, 'bench', 'rollout-clients.mjs'),
};

function serve(tokens) {
  const server = createServer((req, res) => {
    const url = new URL(req.url, 'http://page');
    if (url.pathname === '/') {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(page);
    } else if (files[url.pathname]) {
      res.writeHead(200, { 'content-type': 'text/javascript; charset=utf-8' }).end(readFileSync(files[url.pathname]));
    } else if (url.pathname === '/token' && tokens.has(url.searchParams.get('user'))) {
      res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'no-store' }).end(tokens.get(url.searchParams.get('user')));
    } else {
      res.writeHead(404).end();
    }
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

async function main() {
  const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
  const server = await serve(new Map(config.clients.map((c) => [c.user, c.token])));
  const context = await chromium.launchPersistentContext('', {
    executablePath: config.chromium ?? '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--disable-background-timer-throttling'],
    timeout: 30000,
  });
  try {
    const tab = await context.newPage();
    tab.on('pageerror', (err) => process.stderr.write(`page error: ${err}\n`));
    await tab.goto(`http://127.0.0.1:${server.address().port}/`, { timeout: config.timeoutMs });
    await tab.waitForFunction(() => window.pageReady === true, null, { timeout: config.timeoutMs });
    const specs = config.clients.map(({ user, group }) => ({ user, group })); // tokens come from /token
    say({ event: 'ready', ...(await tab.evaluate((c) => window.startRollout(c), { ...config, clients: specs })) });
    const next = commands();
    await next('drain');
    await tab.evaluate(() => window.rollout.drain());
    say({ event: 'draining' });
    say({ event: 'resumed', ...(await tab.evaluate((ms) => window.rollout.resumed(ms), config.timeoutMs)) });
    const { expect } = await next('finish');
    const report = await tab.evaluate(([e, ms]) => window.rollout.finish(e, ms), [expect, config.timeoutMs]);
    report.userAgent = await tab.evaluate(() => navigator.userAgent);
    say({ event: 'report', report });
  } finally {
    await context.close();
    server.close();
  }
}

run(main);
