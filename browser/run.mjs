// Headless Chromium end to end for websocket-service, driven by browser/browser_test.go.
//
// Usage: node run.mjs '<json config>'
//   config: { "chromium": "/usr/bin/chromium", "userDataDir": "<empty dir>", "timeoutMs": 10000,
//             "runs": [ { "engine", "mode", "pageURL", "wsURL", "token", "publishURL" } ... ] }
//   mode: "query"       — new WebSocket(wsURL + '?token=…'): open, receive a published message,
//                         echo, close 1000
//         "subprotocol" — new WebSocket(wsURL, ['notifications.v1', 'bearer.<JWT>']): the same,
//                         and the selected protocol is notifications.v1
//         "badToken"    — a token that fails verification: the page sees close code 1008
//         "foreign"     — pageURL is an origin the service does not allow: HTTP 403 at the
//                         upgrade, which a page sees only as an error and close code 1006
// Each run loads pageURL in a fresh page (so the WebSocket carries that page's Origin) and
// evaluates the scenario there. Prints { "results": [ {engine, mode, ...observations} ] } on
// stdout; the Go test judges them. Exits 1 only when the browser cannot be driven at all.
import { chromium } from 'playwright-core';

const config = JSON.parse(process.argv[2] ?? '{}');
const timeoutMs = config.timeoutMs ?? 10000;

// Chromium flags for a container: no sandbox, GPU, QUIC, first-run or background traffic.
// (--headless and --user-data-dir are passed through Playwright's own options.)
const flags = [
  '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

/**
 * scenario runs inside the page. It opens one WebSocket, drives it as mode says and returns
 * what the page observed. It must be self-contained: Playwright serializes it into the page.
 */
async function scenario({ mode, wsURL, token, publishURL, timeoutMs }) {
  const seen = { opened: false, errored: false, messages: [], protocol: null, closeCode: null, wasClean: null };
  const url = mode === 'subprotocol' ? wsURL : `${wsURL}?token=${encodeURIComponent(token)}`;
  const ws = mode === 'subprotocol' ? new WebSocket(url, ['notifications.v1', `bearer.${token}`]) : new WebSocket(url);
  let wake = null;
  const closed = new Promise((resolve) => {
    ws.onclose = (e) => { seen.closeCode = e.code; seen.wasClean = e.wasClean; resolve(); if (wake) wake(); };
  });
  ws.onerror = () => { seen.errored = true; };
  ws.onmessage = (e) => { seen.messages.push(String(e.data)); if (wake) wake(); };
  const within = (p, what) => Promise.race([p, new Promise((_, reject) => setTimeout(() => reject(new Error(`timeout: ${what}`)), timeoutMs))]);
  const nextMessage = async (what) => {
    const count = seen.messages.length;
    while (seen.messages.length === count) {
      if (seen.closeCode !== null) throw new Error(`closed ${seen.closeCode} while waiting for ${what}`);
      await within(new Promise((resolve) => { wake = resolve; }), what);
    }
    return seen.messages[count];
  };
  try {
    const opened = new Promise((resolve) => { ws.onopen = () => { seen.opened = true; resolve(); }; });
    await within(Promise.race([opened, closed]), 'open or close');
    if (mode === 'badToken' || mode === 'foreign') {
      await within(closed, 'close');
      return seen;
    }
    if (!seen.opened) return seen;
    seen.protocol = ws.protocol;
    const pushed = nextMessage('published message');
    const resp = await fetch(publishURL);
    if (!resp.ok) throw new Error(`publish: HTTP ${resp.status}`);
    seen.pushed = await pushed;
    const echoed = nextMessage('echo');
    ws.send('hello from chromium');
    seen.echo = await echoed;
    ws.close(1000, 'done');
    await within(closed, 'close');
  } catch (err) {
    seen.error = String(err);
  }
  return seen;
}

async function main() {
  const context = await chromium.launchPersistentContext(config.userDataDir, {
    executablePath: config.chromium,
    headless: true,
    args: flags,
    timeout: 30000,
  });
  const results = [];
  try {
    for (const run of config.runs) {
      const page = await context.newPage();
      try {
        await page.goto(run.pageURL, { timeout: timeoutMs });
        const seen = await page.evaluate(scenario, { ...run, timeoutMs });
        results.push({ engine: run.engine, mode: run.mode, ...seen });
      } catch (err) {
        results.push({ engine: run.engine, mode: run.mode, error: String(err) });
      } finally {
        await page.close();
      }
    }
    results.push({ engine: '', mode: 'userAgent', userAgent: await (await context.newPage()).evaluate(() => navigator.userAgent) });
  } finally {
    await context.close();
  }
  return results;
}

main()
  .then((results) => { process.stdout.write(JSON.stringify({ results }) + '\n'); process.exit(0); })
  .catch((err) => { process.stdout.write(JSON.stringify({ error: String(err && err.stack || err) }) + '\n'); process.exit(1); });
