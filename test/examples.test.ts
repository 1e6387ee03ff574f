/**
 * The example adapters against the fake broker, with 4 worker processes sharing one SQLite file:
 * - Fyers: single-use refresh tokens and short-lived access tokens. The broker counts refresh
 *   calls and revokes a login whose refresh token is used twice; the test shows one refresh per
 *   expiry, no reuse, and every worker trading on each new token.
 * - Kite: a token that dies at 06:00 IST (the workers' clocks are set 2.5 s before it) and
 *   cannot be refreshed; every worker then gets LoginRequiredError.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, describe, expect, it } from 'vitest';
import { startBrokerServer } from '../examples/broker-server.ts';
import { FyersAdapter } from '../examples/fyers-adapter.ts';
import { KiteAdapter, kiteExpiry } from '../examples/kite-adapter.ts';
import { Keyring, LoginRequiredError, MemoryStore, SessionManager, SqliteStore } from '../src/index.ts';

const WORKER = join(import.meta.dirname, 'support', 'adapter-worker.ts');
const KEYS = Keyring.generateKey('k1');
const dir = mkdtempSync(join(tmpdir(), 'ordo-examples-'));
const children = new Set<ChildProcess>();
afterAll(() => {
  for (const child of children) child.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

interface Outcome {
  orders: number;
  fingerprints: string[];
  errors: Record<string, number>;
}

function startWorker(job: Record<string, unknown>): { ready: Promise<void>; result: Promise<Outcome>; go(line?: string): void } {
  const child = spawn(process.execPath, ['--import', 'tsx', WORKER, JSON.stringify(job)], {
    env: { ...process.env, ORDO_SESSION_KEYS: KEYS },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  children.add(child);
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  let onReady = (): void => {};
  const ready = new Promise<void>((resolve) => (onReady = resolve));
  const result = new Promise<Outcome>((resolve, reject) => {
    let last = '';
    createInterface({ input: child.stdout }).on('line', (line) => {
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
  return { ready, result, go: (line = 'go') => child.stdin.write(`${line}\n`) };
}

/** Starts the workers; once all are ready, runs `beforeGo` and sends each the line it returns. */
async function runWorkers(jobs: Array<Record<string, unknown>>, beforeGo: () => Promise<string> = async () => 'go'): Promise<Outcome[]> {
  const workers = jobs.map((job) => startWorker(job));
  await Promise.all(workers.map((w) => w.ready));
  const line = await beforeGo();
  for (const w of workers) w.go(line);
  return Promise.all(workers.map((w) => w.result));
}

describe('Fyers-style adapter (single-use refresh tokens)', () => {
  it('4 worker processes: one refresh per expiry, no refresh token ever used twice, every worker on each new token', async () => {
    const broker = await startBrokerServer({ fyersAccessTtlMs: 2_000, refreshLatencyMs: 50 });
    const dbPath = join(dir, 'fyers.db');
    const sessions = await SessionManager.open({ keyring: Keyring.parse(KEYS), store: new SqliteStore({ path: dbPath }) });
    try {
      const job = { broker: 'fyers', baseUrl: broker.url, dbPath, account: 'XA1234', durationMs: 4_500, concurrency: 8, refreshBeforeMs: 500 };
      const login = async (): Promise<string> => {
        await new FyersAdapter({ sessions, baseUrl: broker.url, pin: '1234' }).login('XA1234', broker.fyersAuthCode());
        return 'go';
      };
      const outcomes = await runWorkers([job, job, job, job], login);
      const stats = broker.stats();
      console.log(
        `fyers: ${stats.fyersRefreshCalls} refresh calls for ${stats.ordersPerToken.length - 1} expiries, ` +
          `${stats.ordersAccepted} orders accepted, ${stats.ordersRefused} refused, reuse ${stats.fyersRefreshReuse}, ` +
          `orders per token generation ${stats.ordersPerToken.join('/')}`,
      );
      expect(outcomes.map((o) => o.errors)).toEqual([{}, {}, {}, {}]);
      expect(stats.fyersRefreshReuse).toBe(0);
      expect(stats.fyersRevokedLogins).toBe(0);
      expect(stats.ordersRefused).toBe(0);
      // 4.5 s of trading on 2 s tokens refreshed in their last 0.5 s: a refresh about every 1.5 s
      expect(stats.fyersRefreshCalls).toBeGreaterThanOrEqual(2);
      expect(stats.fyersRefreshCalls).toBeLessThanOrEqual(4);
      expect(stats.ordersPerToken).toHaveLength(stats.fyersRefreshCalls + 1); // one new token per refresh call
      // each refresh replaced a token in its refresh window, never one just issued
      for (const remaining of stats.fyersRefreshRemainingMs) expect(remaining).toBeLessThanOrEqual(500);
      // every worker traded on every token generation but possibly the last, just issued at the end
      for (const outcome of outcomes) expect(outcome.fingerprints.length).toBeGreaterThanOrEqual(stats.fyersRefreshCalls);
      const total = outcomes.reduce((sum, o) => sum + o.orders, 0);
      expect(total).toBe(stats.ordersAccepted);
      expect(stats.ordersPerToken.slice(0, -1).every((n) => n > 0)).toBe(true);
    } finally {
      await sessions.close();
      await broker.close();
    }
  }, 60_000);
});

describe('Kite-style adapter (daily token, no refresh)', () => {
  it('computes the 06:00 IST expiry (UTC+05:30, no DST)', () => {
    expect(kiteExpiry(Date.parse('2026-12-03T10:00:00Z')).toISOString()).toBe('2026-12-04T00:30:00.000Z');
    expect(kiteExpiry(Date.parse('2026-12-04T00:29:59Z')).toISOString()).toBe('2026-12-04T00:30:00.000Z');
    expect(kiteExpiry(Date.parse('2026-12-04T00:30:00Z')).toISOString()).toBe('2026-12-05T00:30:00.000Z');
    expect(kiteExpiry(Date.parse('2026-06-30T23:00:00Z')).toISOString()).toBe('2026-07-01T00:30:00.000Z');
  });

  it('in one process: trades until 06:00 IST, then every caller gets LoginRequiredError and nothing is written', async () => {
    let now = Date.parse('2026-12-03T10:00:00Z');
    const clock = (): number => now;
    const broker = await startBrokerServer({ clock });
    const sessions = await SessionManager.open({ keyring: Keyring.parse(KEYS), store: new MemoryStore(), clock });
    try {
      const kite = new KiteAdapter({ sessions, baseUrl: broker.url, clock });
      await expect(kite.accessToken('AB1234')).rejects.toBeInstanceOf(LoginRequiredError); // never logged in
      await kite.login('AB1234', broker.kiteRequestToken());
      expect(await kite.placeOrder('AB1234', { tradingsymbol: 'INFY', quantity: 1 })).toMatch(/^[0-9a-f]{12}$/);
      now = Date.parse('2026-12-04T00:29:59.999Z');
      expect(await kite.placeOrder('AB1234', { tradingsymbol: 'INFY', quantity: 1 })).toMatch(/^[0-9a-f]{12}$/);
      now = Date.parse('2026-12-04T00:30:00.000Z');
      const outcomes = await Promise.allSettled(Array.from({ length: 10 }, () => kite.accessToken('AB1234')));
      for (const outcome of outcomes) {
        expect(outcome.status).toBe('rejected');
        expect((outcome as PromiseRejectedResult).reason).toBeInstanceOf(LoginRequiredError);
        expect(((outcome as PromiseRejectedResult).reason as LoginRequiredError).code).toBe('ERR_SESSION_LOGIN_REQUIRED');
      }
      expect(broker.stats()).toMatchObject({ ordersAccepted: 2, ordersRefused: 0, kiteLogins: 1 });
      await kite.login('AB1234', broker.kiteRequestToken()); // the new morning's login
      expect(await kite.placeOrder('AB1234', { tradingsymbol: 'INFY', quantity: 1 })).toMatch(/^[0-9a-f]{12}$/);
    } finally {
      await sessions.close();
      await broker.close();
    }
  });

  it('4 worker processes trade on the day\'s token until 06:00 IST, then all get LoginRequiredError', async () => {
    let offset = 0;
    const clock = (): number => Date.now() + offset;
    const broker = await startBrokerServer({ clock });
    const dbPath = join(dir, 'kite.db');
    const sessions = await SessionManager.open({ keyring: Keyring.parse(KEYS), store: new SqliteStore({ path: dbPath }), clock });
    try {
      const job = { broker: 'kite', baseUrl: broker.url, dbPath, account: 'AB1234', durationMs: 8_000, concurrency: 4 };
      // Once the workers are up: every clock jumps to 2.5 s before the next 06:00 IST, and the user logs in.
      const outcomes = await runWorkers([job, job, job, job], async () => {
        offset = kiteExpiry(Date.now()).getTime() - 2_500 - Date.now();
        await new KiteAdapter({ sessions, baseUrl: broker.url, clock }).login('AB1234', broker.kiteRequestToken());
        return `go ${offset}`;
      });
      const stats = broker.stats();
      console.log(`kite: ${stats.ordersAccepted} orders before 06:00 IST, ${stats.ordersRefused} refused at the boundary; ` +
        `errors ${JSON.stringify(outcomes.map((o) => o.errors))}`);
      for (const outcome of outcomes) {
        expect(outcome.orders).toBeGreaterThan(0);
        expect(outcome.errors['ERR_SESSION_LOGIN_REQUIRED']).toBe(4); // every loop of every worker
        expect(outcome.fingerprints).toHaveLength(1);
      }
      const prints = new Set(outcomes.map((o) => o.fingerprints[0]));
      expect(prints.size).toBe(1);
      // an order checked a few ms before 06:00 may reach the broker after it: at most one per loop
      expect(stats.ordersRefused).toBeLessThanOrEqual(16);
      expect(stats.kiteLogins).toBe(1);
    } finally {
      await sessions.close();
      await broker.close();
    }
  }, 60_000);
});
