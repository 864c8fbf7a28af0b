// The rollout driver's side of its protocol with bench/rollout.go, shared by bench/rollout.mjs
// (clients in Node) and browser/rollout.mjs (clients in a Chromium page): events out as JSON
// lines on stdout, commands in as JSON lines on stdin, each expected in its turn.
import { createInterface } from 'node:readline';

/** Writes one event line. */
export const say = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');

/** Returns next(want): the next command from stdin, which must be want. */
export function commands(input = process.stdin) {
  const lines = createInterface({ input })[Symbol.asyncIterator]();
  return async (want) => {
    const { value, done } = await lines.next();
    if (done) throw new Error(`stdin closed while waiting for ${want}`);
    const cmd = JSON.parse(value);
    if (cmd.cmd !== want) throw new Error(`got command ${cmd.cmd}, want ${want}`);
    return cmd;
  };
}

/** Runs main, then exits: 0, or 1 after an error event. */
export function run(main) {
  main().then(
    () => process.exit(0),
    (err) => {
      say({ event: 'error', error: String(err?.stack ?? err) });
      process.exit(1);
    },
  );
}
