// Node `ws` client for websocket-service's interoperability test
// (conformance/interop_test.go, TestNodeWsClientExchangesMessages).
//
// Usage: node wsclient.mjs '<json config>'
//   config: { "url": "ws://127.0.0.1:PORT/ws?token=…",      // query-token connection
//             "bareURL": "ws://127.0.0.1:PORT/ws", "token": "…", // subprotocol connection
//             "timeoutMs": 5000 }
// Prints one JSON object on stdout: { "results": [ { "name", "ok", "detail" } ... ] } and exits
// 0 (the Go test judges the results); exits 1 only when the client itself cannot run.
import WebSocket from 'ws';

const config = JSON.parse(process.argv[2] ?? '{}');
const timeoutMs = config.timeoutMs ?? 5000;

/** open connects and resolves once the socket is open. */
function open(url, protocols) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, protocols, { maxPayload: 4 << 20 });
    ws.binaryType = 'nodebuffer';
    const timer = setTimeout(() => reject(new Error(`no open within ${timeoutMs} ms`)), timeoutMs);
    ws.once('open', () => { clearTimeout(timer); resolve(ws); });
    ws.once('error', (err) => { clearTimeout(timer); reject(err); });
  });
}

/** next resolves with the next message as { data: Buffer, binary: bool }. */
function next(ws) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no message within ${timeoutMs} ms`)), timeoutMs);
    ws.once('message', (data, isBinary) => { clearTimeout(timer); resolve({ data, binary: isBinary }); });
  });
}

/** sendParts sends parts as one message: a single frame, or fragments (fin only on the last). */
function sendParts(ws, parts, binary) {
  return new Promise((resolve, reject) => {
    parts.forEach((part, i) => {
      const fin = i === parts.length - 1;
      ws.send(part, { binary, fin }, (err) => {
        if (err) reject(err);
        else if (fin) resolve();
      });
    });
  });
}

/** split cuts buf into n nearly equal parts (some may be empty). */
function split(buf, n) {
  const size = Math.ceil(buf.length / n);
  const parts = [];
  for (let i = 0; i < n; i++) parts.push(buf.subarray(Math.min(i * size, buf.length), Math.min((i + 1) * size, buf.length)));
  return parts;
}

const results = [];
function record(name, ok, detail = '') { results.push({ name, ok, detail }); }

async function exchange(ws, name, payload, binary, fragments) {
  const expected = binary ? payload : Buffer.concat([Buffer.from('Echo: '), payload]);
  try {
    const reply = next(ws);
    await sendParts(ws, fragments > 1 ? split(payload, fragments) : [payload], binary);
    const got = await reply;
    if (got.binary !== binary) return record(name, false, `binary=${got.binary}, want ${binary}`);
    if (!Buffer.from(got.data).equals(expected)) {
      return record(name, false, `echo of ${got.data.length} bytes differs from the expected ${expected.length}`);
    }
    record(name, true, `${payload.length} bytes`);
  } catch (err) {
    record(name, false, String(err));
  }
}

async function main() {
  const ws = await open(config.url);
  for (const size of [0, 125, 126, 65536]) {
    for (const binary of [false, true]) {
      const payload = binary ? Buffer.alloc(size, 0xfe) : Buffer.alloc(size, '*');
      const kind = binary ? 'binary' : 'text';
      await exchange(ws, `${kind} ${size} B`, payload, binary, 1);
      await exchange(ws, `${kind} ${size} B in 3 fragments`, payload, binary, 3);
    }
  }
  await exchange(ws, 'text with multi-byte UTF-8', Buffer.from('héllo wörld ✓ κόσμε 😀'), false, 1);
  ws.close(1000);

  try {
    const sub = await open(config.bareURL, ['notifications.v1', `bearer.${config.token}`]);
    record('subprotocol selected', sub.protocol === 'notifications.v1', `protocol=${JSON.stringify(sub.protocol)}`);
    await exchange(sub, 'echo over the bearer subprotocol', Buffer.from('via subprotocol'), false, 1);
    const closed = new Promise((resolve) => sub.once('close', (code) => resolve(code)));
    sub.close(1000);
    const code = await closed;
    record('close handshake', code === 1000, `code=${code}`);
  } catch (err) {
    record('subprotocol connection', false, String(err));
  }
}

main()
  .then(() => { process.stdout.write(JSON.stringify({ results }) + '\n'); process.exit(0); })
  .catch((err) => { process.stdout.write(JSON.stringify({ results, error: String(err) }) + '\n'); process.exit(1); });
