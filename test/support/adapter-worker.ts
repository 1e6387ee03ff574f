/**
 * A child process for test/examples.test.ts: one "trading worker" using an example adapter on a
 * shared SQLite file (keys from ORDO_SESSION_KEYS). The job is one JSON argument:
 *   { broker: 'fyers' | 'kite', baseUrl, dbPath, account, durationMs, concurrency, refreshBeforeMs?, clockOffsetMs? }
 * Prints "ready", waits for "go [clockOffsetMs]" on stdin (the offset, when given, replaces the job's), then keeps `concurrency` loops placing orders for
 * `durationMs`. Prints one JSON line: orders placed, short fingerprints (never the tokens) of the
 * access tokens it traded on, in first-use order, and the errors it met by code. A Kite loop
 * stops at its first LoginRequiredError.
 */
import { createHash } from 'node:crypto';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { FyersAdapter } from '../../examples/fyers-adapter.ts';
import { KiteAdapter } from '../../examples/kite-adapter.ts';
import { Keyring, LoginRequiredError, SessionError, SessionManager, SqliteStore } from '../../src/index.ts';

interface Job {
  broker: 'fyers' | 'kite';
  baseUrl: string;
  dbPath: string;
  account: string;
  durationMs: number;
  concurrency: number;
  refreshBeforeMs?: number;
  clockOffsetMs?: number;
}

const job = JSON.parse(process.argv[2] ?? '{}') as Job;
let offset = job.clockOffsetMs ?? 0;
const clock = (): number => Date.now() + offset;
const sessions = await SessionManager.open({ keyring: Keyring.fromEnv(), store: new SqliteStore({ path: job.dbPath }), clock });
const fyers = new FyersAdapter({ sessions, baseUrl: job.baseUrl, pin: '1234', refresh: { refreshBeforeMs: job.refreshBeforeMs ?? 500 } });
const kite = new KiteAdapter({ sessions, baseUrl: job.baseUrl, clock });

console.log('ready');
const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  const [word, given] = line.trim().split(/\s+/);
  if (word !== 'go') continue;
  if (given !== undefined) offset = Number(given);
  break;
}
lines.close();

const fingerprints: string[] = [];
const errors: Record<string, number> = {};
let orders = 0;
const fingerprint = (token: string): string => createHash('sha256').update(token).digest('hex').slice(0, 12);
const deadline = Date.now() + job.durationMs;

await Promise.all(
  Array.from({ length: job.concurrency }, async () => {
    while (Date.now() < deadline) {
      try {
        const token = job.broker === 'fyers' ? await fyers.accessToken(job.account) : await kite.accessToken(job.account);
        const print = fingerprint(token);
        if (!fingerprints.includes(print)) fingerprints.push(print);
        if (job.broker === 'fyers') await fyers.placeOrder(job.account, { symbol: 'NSE:SBIN-EQ', qty: 1 });
        else await kite.placeOrder(job.account, { tradingsymbol: 'INFY', quantity: 1 });
        orders++;
      } catch (error) {
        const code = error instanceof SessionError ? error.code : 'ORDER_REFUSED';
        errors[code] = (errors[code] ?? 0) + 1;
        if (error instanceof LoginRequiredError) return;
      }
      await sleep(20);
    }
  }),
);
await sessions.close();
console.log(JSON.stringify({ orders, fingerprints, errors }));
