/**
 * getOrRefresh across real processes, on SQLite, Redis and PostgreSQL: 4 child processes x 32
 * concurrent callers on one expired session run the refresher exactly once in total (counted in
 * a file every refresh appends a line to with O_APPEND, outside the processes), and every caller
 * gets the new session. A failing refresher reaches every caller as RefreshError, with at most
 * one attempt per process (waiters elsewhere find the lease free and try once themselves). And a
 * refresher that sleeps past lockTtlMs in one process cannot clobber the session a second
 * process's refresher wrote. (On Redis the "expired" session is already gone, dropped by native
 * expiry, so there the refresh starts from no session: expected version null.)
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { createClient } from 'redis';
import { afterAll, describe, expect, it } from 'vitest';
import { Keyring, PostgresStore, RedisStore, SessionManager, SqliteStore, type SessionStore } from '../src/index.ts';
import { adminPool, dropSchema, randomSchema } from './support/postgres.ts';
import { DATABASE_URL, REDIS_URL, describeWithService, postgresAvailable, redisAvailable } from './support/services.ts';

const WORKER = join(import.meta.dirname, 'support', 'refresh-worker.ts');
const KEYS = Keyring.generateKey('k1');
const dir = mkdtempSync(join(tmpdir(), 'ordo-refresh-mp-'));
const children = new Set<ChildProcess>();
afterAll(() => {
  for (const child of children) child.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

interface StoreConfig {
  store: 'sqlite' | 'redis' | 'postgres';
  path?: string;
  url?: string;
  keyPrefix?: string;
  schema?: string;
}

interface Outcome {
  tokens: string[];
  errors: string[];
}

interface Worker {
  ready: Promise<void>;
  result: Promise<Outcome>;
  go(): void;
}

interface Job {
  callers: number;
  label: string;
  refreshSleepMs: number;
  lockTtlMs: number;
  counterFile: string;
  fail?: boolean;
}

function startWorker(config: StoreConfig, job: Job): Worker {
  const child = spawn(process.execPath, ['--import', 'tsx', WORKER, JSON.stringify({ ...config, ...job })], {
    env: { ...process.env, ORDO_SESSION_KEYS: KEYS },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  children.add(child);
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const lines = createInterface({ input: child.stdout });
  let onReady = (): void => {};
  const ready = new Promise<void>((resolve) => (onReady = resolve));
  const result = new Promise<Outcome>((resolve, reject) => {
    let last = '';
    lines.on('line', (line) => {
      if (line === 'ready') onReady();
      else last = line;
    });
    child.on('exit', (code) => {
      children.delete(child);
      if (code === 0) resolve(JSON.parse(last) as Outcome);
      else reject(new Error(`worker exited with ${code}: ${stderr.slice(-2000)}`));
    });
  });
  result.catch(() => onReady());
  return { ready, result, go: () => child.stdin.write('go\n') };
}

function makeStore(config: StoreConfig): SessionStore {
  if (config.store === 'sqlite') return new SqliteStore({ path: config.path as string });
  if (config.store === 'redis') return new RedisStore({ url: config.url as string, keyPrefix: config.keyPrefix as string });
  return new PostgresStore({ connectionString: config.url as string, schema: config.schema as string });
}

/** Writes fyers/ACCT as a session that expired five seconds ago. */
async function writeExpired(config: StoreConfig): Promise<void> {
  const back = Date.now() - 10_000;
  const sessions = await SessionManager.open({ keyring: Keyring.parse(KEYS), store: makeStore(config), clock: () => back });
  await sessions.setSession('fyers', 'ACCT', { accessToken: 'expired', refreshToken: 'r0' }, { ttlMs: 5_000 });
  await sessions.close();
}

async function readSession(config: StoreConfig): Promise<unknown> {
  const sessions = await SessionManager.open({ keyring: Keyring.parse(KEYS), store: makeStore(config) });
  try {
    return await sessions.getSession('fyers', 'ACCT');
  } finally {
    await sessions.close();
  }
}

function refreshLines(file: string): string[] {
  return existsSync(file) ? readFileSync(file, 'utf8').split('\n').filter((line) => line.length > 0) : [];
}

function multiProcessSuite(name: string, config: () => StoreConfig): void {
  it('4 processes x 32 callers on one expired session: exactly one refresh, every caller gets the new session', async () => {
    const store = config();
    await writeExpired(store);
    const counterFile = join(dir, `${name}-${randomUUID()}.log`);
    const workers = Array.from({ length: 4 }, (_, i) =>
      startWorker(store, { callers: 32, label: `w${i}`, refreshSleepMs: 100, lockTtlMs: 10_000, counterFile }),
    );
    await Promise.all(workers.map((w) => w.ready));
    for (const w of workers) w.go();
    const outcomes = await Promise.all(workers.map((w) => w.result));
    const refreshes = refreshLines(counterFile);
    const callers = outcomes.reduce((sum, o) => sum + o.tokens.length + o.errors.length, 0);
    console.log(`refresh count ${name}: ${refreshes.length} of ${callers} callers`);
    expect(refreshes).toHaveLength(1);
    expect(outcomes.flatMap((o) => o.errors)).toEqual([]);
    const tokens = new Set(outcomes.flatMap((o) => o.tokens));
    expect(callers).toBe(128);
    expect(tokens.size).toBe(1);
    const [token] = [...tokens];
    expect(token).toBe(`${(refreshes[0] as string).split(' ')[0]}-${(refreshes[0] as string).split(' ')[1]}`);
    expect(await readSession(store)).toEqual({ accessToken: token });
  }, 60_000);

  it('a failing refresher: every caller in every process gets RefreshError, at most one attempt per process, nothing written', async () => {
    const store = config();
    await writeExpired(store);
    const counterFile = join(dir, `${name}-fail-${randomUUID()}.log`);
    const workers = Array.from({ length: 4 }, (_, i) =>
      startWorker(store, { callers: 16, label: `w${i}`, refreshSleepMs: 50, lockTtlMs: 10_000, counterFile, fail: true }),
    );
    await Promise.all(workers.map((w) => w.ready));
    for (const w of workers) w.go();
    const outcomes = await Promise.all(workers.map((w) => w.result));
    const attempts = refreshLines(counterFile);
    console.log(`failing refresher ${name}: ${attempts.length} attempts for 4 processes x 16 callers`);
    for (const outcome of outcomes) {
      expect(outcome.tokens).toEqual([]);
      expect(outcome.errors).toEqual(Array(16).fill('ERR_SESSION_REFRESH'));
    }
    // Waiters elsewhere see the lease freed and the session still stale: each process tries once.
    expect(attempts.length).toBeGreaterThanOrEqual(1);
    expect(attempts.length).toBeLessThanOrEqual(4);
    expect(new Set(attempts.map((line) => line.split(' ')[1])).size).toBe(attempts.length);
    expect(await readSession(store)).toBeUndefined(); // no live session was written
    if (store.store !== 'redis') {
      // the old one is intact (Redis dropped it by itself when it was written already expired)
      const back = Date.now() - 60_000;
      const sessions = await SessionManager.open({ keyring: Keyring.parse(KEYS), store: makeStore(store), clock: () => back });
      expect(await sessions.getSession('fyers', 'ACCT')).toEqual({ accessToken: 'expired', refreshToken: 'r0' });
      await sessions.close();
    }
  }, 60_000);

  it('a refresher that outlives its lease in one process cannot clobber the session another process wrote', async () => {
    const store = config();
    await writeExpired(store);
    const counterFile = join(dir, `${name}-fence-${randomUUID()}.log`);
    const slow = startWorker(store, { callers: 1, label: 'slow', refreshSleepMs: 1500, lockTtlMs: 300, counterFile });
    const fast = startWorker(store, { callers: 1, label: 'fast', refreshSleepMs: 10, lockTtlMs: 300, counterFile });
    await Promise.all([slow.ready, fast.ready]);
    slow.go();
    while (refreshLines(counterFile).length === 0) await sleep(10); // the slow one holds the lease and is refreshing
    await sleep(400); // past its lockTtlMs
    fast.go();
    const [slowOutcome, fastOutcome] = await Promise.all([slow.result, fast.result]);
    console.log(`fencing ${name}: slow got ${slowOutcome.errors.join(',') || 'no error'}, fast got ${fastOutcome.tokens.join(',')}`);
    expect(fastOutcome.errors).toEqual([]);
    expect(fastOutcome.tokens[0]).toMatch(/^fast-/);
    expect(slowOutcome.errors).toEqual(['ERR_SESSION_REFRESH_CONFLICT']);
    expect(await readSession(store)).toEqual({ accessToken: fastOutcome.tokens[0] });
    expect(refreshLines(counterFile).map((line) => line.split(' ')[0])).toEqual(['slow', 'fast']);
  }, 60_000);
}

describe('getOrRefresh across processes on SQLite', () => {
  multiProcessSuite('sqlite', () => ({ store: 'sqlite', path: join(dir, `${randomUUID()}.db`) }));
});

describeWithService('Redis', redisAvailable, 'getOrRefresh across processes on Redis', () => {
  const run = `ordo-test-refresh-mp-${randomUUID()}:`;
  afterAll(async () => {
    const raw = createClient({ url: REDIS_URL });
    raw.on('error', () => {});
    await raw.connect();
    const keys: string[] = [];
    for await (const batch of raw.scanIterator({ MATCH: `${run}*`, COUNT: 1000 })) keys.push(...batch);
    if (keys.length > 0) await raw.unlink(keys);
    await raw.close();
  });
  multiProcessSuite('redis', () => ({ store: 'redis', url: REDIS_URL, keyPrefix: `${run}${randomUUID()}:` }));
});

describeWithService('PostgreSQL', postgresAvailable, 'getOrRefresh across processes on PostgreSQL', () => {
  const schemas: string[] = [];
  afterAll(async () => {
    const admin = adminPool();
    for (const schema of schemas) await dropSchema(admin, schema);
    await admin.end();
  });
  multiProcessSuite('postgres', () => {
    const schema = randomSchema('ordo_refresh_mp');
    schemas.push(schema);
    return { store: 'postgres', url: DATABASE_URL, schema };
  });
});
