// A page reload in headless Chromium, driven by browser/reload_test.go:
// `node reload.mjs '<json config>'` with { "chromium", "pageURL", "timeoutMs" }.
// The page (served by the Go test) runs client/notifications-client.js with sessionStorage as
// its cursor storage and logs every event it raises. The script loads it, has two messages
// published (GET /publish?seq=n on the page's server), leaves the page (its WebSocket closes
// with it), has two more published, loads the page again and returns both loads' event logs
// as JSON on stdout: the Go test judges them.
import { chromium } from 'playwright-core';

const config = JSON.parse(process.argv[2] ?? '{}');
const timeout = config.timeoutMs ?? 10000;
const count = (type) => (window.log ?? []).filter((e) => e.type === type).length;

async function main() {
  const context = await chromium.launchPersistentContext('', {
    executablePath: config.chromium, headless: true, timeout: 30000,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking'],
  });
  try {
    const tab = await context.newPage();
    const publish = async (seq) => {
      const resp = await context.request.get(new URL(`/publish?seq=${seq}`, config.pageURL).href);
      if (!resp.ok()) throw new Error(`publish ${seq}: HTTP ${resp.status()}`);
    };
    await tab.goto(config.pageURL, { timeout });
    await tab.waitForFunction(`(${count})('sync') === 3`, null, { timeout });
    await publish(1);
    await publish(2);
    await tab.waitForFunction(`(${count})('message') === 2`, null, { timeout });
    const first = await tab.evaluate(() => window.log);
    await tab.goto('about:blank', { timeout });
    await publish(3);
    await publish(4);
    await tab.goto(config.pageURL, { timeout });
    // Whatever arrives, the log goes back to the test, which says what is wrong with it.
    await tab.waitForFunction(`(${count})('sync') === 3 && (${count})('message') >= 2`, null, { timeout }).catch(() => {});
    const second = await tab.evaluate(() => window.log);
    return { first, second };
  } finally {
    await context.close();
  }
}

main()
  .then((res) => { process.stdout.write(JSON.stringify(res) + '\n'); process.exit(0); })
  .catch((err) => { process.stdout.write(JSON.stringify({ error: String(err?.stack ?? err) }) + '\n'); process.exit(1); });
