// client/notifications-client.js in Node with the constructor of npm `ws` passed in, as
// client/README.md says a Node 18 or 20 app does (browser/nodews_test.go,
// TestNodeClientWithNpmWs).
//
// Usage: node nodews.mjs '<json config>'
//   config: { "url": "ws://127.0.0.1:PORT/ws", "token": "…", "publishURL": "http://…/api/publish",
//             "publishKey": "…", "publishBody": "{…}", "timeoutMs": 5000 }
// Once the user stream has synced it publishes publishBody through the API; once a message
// has arrived and the API has answered it closes the client and prints { "events": [...], "published": <API reply> }.
// Prints { "error": "…" } when that does not happen in time.
import WebSocket from 'ws';
import { NotificationsClient } from '../client/notifications-client.js';

const config = JSON.parse(process.argv[2] ?? '{}');
// No global WebSocket to fall back on, whatever Node this is: only the one passed in.
delete globalThis.WebSocket;

const events = [];
let published = null;
const client = new NotificationsClient({ url: config.url, getToken: () => config.token, WebSocket });

let done = false;
function finish(error) {
  if (done) return;
  done = true;
  client.close();
  clearTimeout(timer);
  console.log(JSON.stringify(error ? { error, events } : { events, published }));
}
const timer = setTimeout(() => finish(`no message within ${config.timeoutMs} ms`), config.timeoutMs);

async function publish() {
  const res = await fetch(config.publishURL, {
    method: 'POST',
    headers: { Authorization: `Bearer ${config.publishKey}`, 'Content-Type': 'application/json' },
    body: config.publishBody,
  });
  published = { status: res.status, body: await res.json() };
  if (events.some((e) => e.type === 'message')) finish();
}

for (const type of ['state', 'sync', 'message', 'error']) {
  client.on(type, (detail) => {
    events.push({ type, ...detail, cause: undefined });
    if (type === 'sync' && detail.stream === 'user') {
      publish().catch((err) => finish(`publish: ${err}`));
    }
    if (type === 'message' && published) finish();
  });
}
client.connect();
