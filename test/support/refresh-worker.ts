/**
 * A child process for the multi-process getOrRefresh tests. Keys come from ORDO_SESSION_KEYS; the
 * job is one JSON argument:
 *   { store: 'sqlite' | 'redis' | 'postgres', path?, url?, keyPrefix?, schema?,
 *     callers, label, refreshSleepMs, lockTtlMs, counterFile, fail? }
 * It opens a manager, prints "ready", waits for "go" on stdin, then runs `callers` concurrent
 * getOrRefresh calls on fyers/ACCT. Each refresh appends one line to `counterFile` (O_APPEND, so
 * lines from every process add up) and returns { accessToken: `<label>-<pid>` } (or, with `fail`,
 * throws as a broker outage would). Prints one JSON
 * line: the tokens the callers received and the error codes they got.
 */
import { appendFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { Keyring, PostgresStore, RedisStore, SessionError, SessionManager, SqliteStore, type SessionStore } from '../../src/index.ts';

interface Job {
  store: 'sqlite' | 'redis' | 'postgres';
  path?: string;
  url?: string;
  keyPrefix?: string;
  schema?: string;
  callers: number;
  label: string;
  refreshSleepMs: number;
  lockTtlMs: number;
  counterFile: string;
  fail?: boolean;
}

const job = JSON.parse(process.argv[2] ?? '{}') as Job;

function makeStore(): SessionStore {
  if (job.store === 'sqlite') return new SqliteStore({ path: job.path as string });
  if (job.store === 'redis') return new RedisStore({ url: job.url as string, keyPrefix: job.keyPrefix as string });
  return new PostgresStore({ connectionString: job.url as string, schema: job.schema as string, poolSize: 4 });
}

const sessions = await SessionManager.open({ keyring: Keyring.fromEnv(), store: makeStore() });
const fyers = sessions.forBroker<{ accessToken: string }>('fyers');
console.log('ready');
const lines = createInterface({ input: process.stdin });
for await (const line of lines) if (line.trim() === 'go') break;
lines.close();

const outcomes = await Promise.allSettled(
  Array.from({ length: job.callers }, () =>
    fyers.getOrRefresh(
      'ACCT',
      async () => {
        appendFileSync(job.counterFile, `${job.label} ${process.pid}\n`);
        await sleep(job.refreshSleepMs);
        if (job.fail) throw new Error('broker unavailable');
        return { data: { accessToken: `${job.label}-${process.pid}` }, ttlMs: 3_600_000 };
      },
      { lockTtlMs: job.lockTtlMs, waitTimeoutMs: 20_000 },
    ),
  ),
);
const tokens: string[] = [];
const errors: string[] = [];
for (const outcome of outcomes) {
  if (outcome.status === 'fulfilled') tokens.push(outcome.value.accessToken);
  else errors.push(outcome.reason instanceof SessionError ? outcome.reason.code : String(outcome.reason));
}
await sessions.close();
console.log(JSON.stringify({ tokens, errors }));
