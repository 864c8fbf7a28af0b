// Stand-ins for the k6 modules, so node can load bench/k6/notifications.js and run one
// virtual user's iteration against a scripted socket. They record what the script did in
// globalThis.__k6check for run.mjs to assert on.
import nodeCrypto from 'node:crypto';

const rec = (globalThis.__k6check = { metrics: {}, checks: {}, sent: [], closed: null, url: null });

class Metric {
  constructor(name) {
    this.name = name;
    rec.metrics[name] = [];
  }
  add(v, tags) {
    rec.metrics[this.name].push({ v, tags });
  }
}
export class Counter extends Metric {}
export class Trend extends Metric {}
export class Rate extends Metric {}
export class Gauge extends Metric {}

export function check(value, checks) {
  let all = true;
  for (const [name, fn] of Object.entries(checks)) {
    const ok = !!fn(value);
    rec.checks[name] = ok;
    all = all && ok;
  }
  return all;
}
export function sleep() {}
export function fail(msg) {
  throw new Error(msg);
}
export default { check, sleep, fail };

export const encoding = {
  b64encode(s, variant) {
    const b = Buffer.from(s).toString('base64');
    return variant === 'rawurl' ? b.replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '') : b;
  },
};

export const crypto = {
  hmac(alg, secret, data, enc) {
    const d = nodeCrypto.createHmac(alg, secret).update(data).digest('base64');
    return enc === 'base64rawurl' ? d.replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '') : d;
  },
};

// ws.connect runs the script's handler against a socket that opens, receives one stamped
// notification, one plain one and one server error, fires its timers, and closes.
export const ws = {
  connect(url, params, handler) {
    rec.url = url;
    const on = {};
    const timers = [];
    const socket = {
      on(ev, fn) {
        on[ev] = fn;
      },
      send(d) {
        rec.sent.push(d);
      },
      close(code) {
        rec.closed = code;
        if (on.close) on.close(code);
      },
      setTimeout(fn) {
        timers.push(fn);
      },
      setInterval(fn) {
        timers.push(fn);
      },
      ping() {},
    };
    handler(socket);
    if (on.open) on.open();
    const sent = Date.now() * 1e6 - 5e6;
    if (on.message) {
      on.message(`{"type":"bench","r":"x","j":0,"k":0,"t":${sent}}`);
      on.message('{"type":"notification","event_type":"batch_completed","data":{}}');
      on.message('{"type":"error","code":"SLOW_CONSUMER","message":"x"}');
    }
    for (const t of timers) t();
    return { status: 101 };
  },
};
