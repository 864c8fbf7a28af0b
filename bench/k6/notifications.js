// k6 load script for a deployed websocket-service: every virtual user holds one
// authenticated WebSocket connection for HOLD_SECONDS, counts the notifications it receives
// and, for messages published by wsbench (they carry a "t" publish timestamp in unix
// nanoseconds), the publish-to-receive latency.
//
//   k6 run -e WS_URL=wss://notify.example.com/ws -e JWT_SECRET=... -e VUS=2000 bench/k6/notifications.js
//   k6 run -e WS_URL=... -e TOKENS_FILE=tokens.txt bench/k6/notifications.js   (one token per line)
//
// Tokens are minted in the script (HS256, sub "k6-user-<n>", GROUPS as the groups claim) when
// JWT_SECRET is set, else read from TOKENS_FILE. Publish to the users, groups or broadcast
// channel while it runs (wsbench fanout/classroom/broadcast, or your backends) and read
// ws_notifications and ws_notification_latency in the summary.

import ws from 'k6/ws';
import { check } from 'k6';
import { Counter, Trend, Rate } from 'k6/metrics';
import encoding from 'k6/encoding';
import crypto from 'k6/crypto';

const WS_URL = __ENV.WS_URL || 'ws://127.0.0.1:8004/ws';
const VUS = parseInt(__ENV.VUS || '100', 10);
const RAMP = __ENV.RAMP || '30s';
const HOLD_SECONDS = parseInt(__ENV.HOLD_SECONDS || '60', 10);
const USERS = parseInt(__ENV.USERS || String(VUS), 10);
const GROUPS = (__ENV.GROUPS || '').split(',').filter((g) => g !== '');
const TOKEN_TTL_SECONDS = parseInt(__ENV.TOKEN_TTL_SECONDS || '3600', 10);

// open() is only allowed in the init context, so the token list is read here.
const TOKENS = __ENV.TOKENS_FILE
  ? open(__ENV.TOKENS_FILE).split('\n').map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#'))
  : [];

export const options = {
  scenarios: {
    hold: {
      executor: 'ramping-vus',
      startVUs: 0,
      stages: [
        { duration: RAMP, target: VUS },
        { duration: `${HOLD_SECONDS}s`, target: VUS },
        { duration: '10s', target: 0 },
      ],
      gracefulRampDown: '10s',
    },
  },
  thresholds: {
    ws_connect_ok: ['rate>0.99'],
    ws_server_errors: ['count==0'],
  },
};

const notifications = new Counter('ws_notifications');
const serverErrors = new Counter('ws_server_errors');
const latency = new Trend('ws_notification_latency', true);
const connectOK = new Rate('ws_connect_ok');

function b64url(s) {
  return encoding.b64encode(s, 'rawurl');
}

// mint signs an HS256 token the way the service verifies it: sub, exp, and the groups claim.
function mint(sub) {
  const now = Math.floor(Date.now() / 1000);
  const claims = { sub: sub, iat: now, exp: now + TOKEN_TTL_SECONDS };
  if (GROUPS.length > 0) {
    claims.groups = GROUPS;
  }
  const head = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const body = b64url(JSON.stringify(claims));
  const sig = crypto.hmac('sha256', __ENV.JWT_SECRET, `${head}.${body}`, 'base64rawurl');
  return `${head}.${body}.${sig}`;
}

function tokenFor(vu) {
  if (TOKENS.length > 0) {
    return TOKENS[(vu - 1) % TOKENS.length];
  }
  if (!__ENV.JWT_SECRET) {
    throw new Error('set JWT_SECRET (HS256 secret of the service) or TOKENS_FILE');
  }
  return mint(`k6-user-${(vu - 1) % USERS}`);
}

// onMessage counts a frame: an error message from the server, or a notification (with its
// latency when wsbench stamped it).
export function onMessage(data, now) {
  let msg;
  try {
    msg = JSON.parse(data);
  } catch (e) {
    notifications.add(1);
    return;
  }
  if (msg && msg.type === 'error') {
    serverErrors.add(1, { code: String(msg.code) });
    return;
  }
  notifications.add(1);
  if (msg && typeof msg.t === 'number') {
    latency.add(now - msg.t / 1e6);
  }
}

export default function () {
  const url = `${WS_URL}?token=${encodeURIComponent(tokenFor(__VU))}`;
  const res = ws.connect(url, {}, function (socket) {
    socket.on('message', (data) => onMessage(data, Date.now()));
    socket.on('error', () => serverErrors.add(1, { code: 'socket' }));
    // The server pings every 30 s; k6 answers pings itself. Close normally when done.
    socket.setTimeout(() => socket.close(1000), HOLD_SECONDS * 1000);
  });
  const ok = check(res, { 'upgraded (101)': (r) => r && r.status === 101 });
  connectOK.add(ok);
}
