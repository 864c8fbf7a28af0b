// Loads the k6 script (its k6 imports rewritten to shims.mjs by the Go test) and runs one
// iteration, failing loudly if the script throws or does not count what it received.
const script = process.argv[2];
globalThis.__ENV = { JWT_SECRET: 'check-secret', WS_URL: 'ws://127.0.0.1:1/ws', GROUPS: 'g1,g2', HOLD_SECONDS: '1' };
globalThis.__VU = 1;
globalThis.__ITER = 0;
globalThis.open = () => '';

const mod = await import(script);
if (!mod.options || !mod.options.scenarios) throw new Error('script exports no options.scenarios');
mod.default();
const rec = globalThis.__k6check;
const count = (name) => (rec.metrics[name] || []).length;
const problems = [];
if (!rec.url || !/\?token=[\w-]+\.[\w-]+\.[\w-]+$/.test(decodeURIComponent(rec.url))) problems.push(`url ${rec.url} carries no JWT`);
if (count('ws_notifications') !== 2) problems.push(`ws_notifications ${count('ws_notifications')}, want 2`);
if (count('ws_notification_latency') !== 1) problems.push(`latency samples ${count('ws_notification_latency')}, want 1`);
if (count('ws_server_errors') !== 1) problems.push(`server errors ${count('ws_server_errors')}, want 1`);
if (rec.checks['upgraded (101)'] !== true) problems.push('101 check not passed');
if (rec.closed !== 1000) problems.push(`closed with ${rec.closed}, want 1000`);
const [, body] = decodeURIComponent(rec.url.split('token=')[1]).split('.');
const claims = JSON.parse(Buffer.from(body, 'base64url').toString());
if (claims.sub !== 'k6-user-0' || !(claims.exp > claims.iat) || claims.groups.join() !== 'g1,g2') problems.push(`claims ${JSON.stringify(claims)}`);
if (problems.length) {
  console.error('k6 script check failed:\n  ' + problems.join('\n  '));
  process.exit(1);
}
console.log('k6 script check: ok');
