/**
 * getOrRefresh in one process, on MemoryStore and SqliteStore, with a fake manager clock (the
 * stores' leases run on the real clock, so lease expiry uses short real TTLs).
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { inspect } from 'node:util';
import fc from 'fast-check';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  InvalidExpiryError,
  InvalidOptionsError,
  InvalidSessionDataError,
  Keyring,
  LockTimeoutError,
  LoginRequiredError,
  MemoryStore,
  RefreshConflictError,
  RefreshError,
  SessionManager,
  SqliteStore,
  loginRequired,
  type SessionStore,
} from '../src/index.ts';

const T0 = 1_900_000_000_000;
const KEY = 'XY1234';
const LOCATION = `default/fyers/${KEY}`;

interface Counts {
  get: number;
  acquire: number;
  release: number;
  beforeAcquire?: (() => Promise<void>) | undefined;
}

/** A view of `backing` that counts calls and never closes it (several managers share one store). */
function counting(backing: SessionStore, counts: Counts): SessionStore {
  return {
    kind: backing.kind,
    get: (k) => {
      counts.get++;
      return backing.get(k);
    },
    set: (k, v, o) => backing.set(k, v, o),
    compareAndSet: (k, e, v, o) => backing.compareAndSet(k, e, v, o),
    delete: (k) => backing.delete(k),
    list: (p, o) => backing.list(p, o),
    deleteByPrefix: (p) => backing.deleteByPrefix(p),
    purgeExpired: (p, n) => backing.purgeExpired(p, n),
    acquireLease: async (k, t, ttl) => {
      counts.acquire++;
      await counts.beforeAcquire?.();
      return (backing.acquireLease as NonNullable<SessionStore['acquireLease']>).call(backing, k, t, ttl);
    },
    releaseLease: (k, t) => {
      counts.release++;
      return (backing.releaseLease as NonNullable<SessionStore['releaseLease']>).call(backing, k, t);
    },
    close: async () => undefined,
  };
}

const dir = mkdtempSync(join(tmpdir(), 'ordo-refresh-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const backends: Array<[string, () => SessionStore]> = [
  ['MemoryStore', () => new MemoryStore()],
  ['SqliteStore', () => new SqliteStore({ path: join(dir, `${randomBytes(6).toString('hex')}.db`) })],
];

describe.each(backends)('getOrRefresh on %s', (_name, makeStore) => {
  const keyring = new Keyring([{ id: 'k1', key: randomBytes(32) }]);
  let backing: SessionStore;
  let counts: Counts;
  let now: number;
  const managers: SessionManager[] = [];

  async function manager(): Promise<SessionManager> {
    const opened = await SessionManager.open({ keyring, store: counting(backing, counts), clock: () => now });
    managers.push(opened);
    return opened;
  }

  /** A session that expired a second ago (written with the clock turned back). */
  async function expiredSession(sessions: SessionManager, data: unknown = { accessToken: 'old', refreshToken: 'r0' }): Promise<string> {
    const real = now;
    now = real - 10_000;
    await sessions.setSession('fyers', KEY, data, { ttlMs: 9_000 });
    now = real;
    return (await backing.get(LOCATION))?.version as string;
  }

  beforeEach(() => {
    backing = makeStore();
    counts = { get: 0, acquire: 0, release: 0 };
    now = T0;
  });

  afterEach(async () => {
    for (const m of managers.splice(0)) await m.close();
    await backing.close();
  });

  it('returns a fresh session with one read and no lease, never calling the refresher', async () => {
    const sessions = await manager();
    await sessions.setSession('fyers', KEY, { accessToken: 'a1' }, { ttlMs: 3_600_000 });
    counts.get = 0;
    let calls = 0;
    const session = await sessions.getOrRefresh('fyers', KEY, async () => {
      calls++;
      return { data: { accessToken: 'never' }, ttlMs: 1000 };
    });
    expect(session).toEqual({ accessToken: 'a1' });
    expect(calls).toBe(0);
    expect(counts).toMatchObject({ get: 1, acquire: 0, release: 0 });
  });

  it('refreshes a session within refreshBeforeMs of expiry, passing the current one and writing a refresh', async () => {
    const sessions = await manager();
    await sessions.setSession('fyers', KEY, { accessToken: 'a1', refreshToken: 'r1' }, { ttlMs: 30_000 });
    const seen: unknown[] = [];
    const session = await sessions.getOrRefresh('fyers', KEY, async (current) => {
      seen.push(current);
      return { data: { accessToken: 'a2', refreshToken: 'r2' }, expiresAt: new Date(now + 3_600_000) };
    }, { refreshBeforeMs: 60_000 });
    expect(seen).toEqual([{ accessToken: 'a1', refreshToken: 'r1' }]);
    expect(session).toEqual({ accessToken: 'a2', refreshToken: 'r2' });
    expect(await sessions.getSession('fyers', KEY)).toEqual(session);
    expect((await backing.get(LOCATION))?.expiresAt).toBe(now + 3_600_000);
    expect(counts.release).toBe(1);
  });

  it('passes an expired session to the refresher, and undefined when there is none (writing with expected version null)', async () => {
    const sessions = await manager();
    const seen: unknown[] = [];
    const refresher = async (current: unknown) => {
      seen.push(current);
      return { data: { n: seen.length }, ttlMs: 1000 };
    };
    expect(await sessions.getOrRefresh('fyers', KEY, refresher, { refreshBeforeMs: 0 })).toEqual({ n: 1 });
    now += 2000;
    expect(await sessions.getOrRefresh('fyers', KEY, refresher, { refreshBeforeMs: 0 })).toEqual({ n: 2 });
    expect(seen).toEqual([undefined, { n: 1 }]);
  });

  it('runs exactly one refresher for 50 concurrent callers, and every caller gets the new session', async () => {
    const sessions = await manager();
    await expiredSession(sessions);
    let calls = 0;
    const results = await Promise.all(
      Array.from({ length: 50 }, () =>
        sessions.getOrRefresh('fyers', KEY, async () => {
          calls++;
          await sleep(30);
          return { data: { accessToken: 'new', refreshToken: 'r1' }, ttlMs: 3_600_000 };
        }),
      ),
    );
    expect(calls).toBe(1);
    expect(counts.acquire).toBe(1);
    for (const result of results) expect(result).toEqual({ accessToken: 'new', refreshToken: 'r1' });
    // each caller has its own copy
    (results[0] as { accessToken: string }).accessToken = 'mutated';
    expect(results[1]).toEqual({ accessToken: 'new', refreshToken: 'r1' });
  });

  it('runs one refresher for any mix of managers, callers and start times (property)', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 3 }),
        fc.array(fc.integer({ min: 0, max: 15 }), { minLength: 1, maxLength: 24 }),
        fc.integer({ min: 0, max: 15 }),
        async (managerCount, startDelays, refreshDelay) => {
          backing = makeStore();
          const group = await Promise.all(Array.from({ length: managerCount }, () => manager()));
          await expiredSession(group[0] as SessionManager);
          let calls = 0;
          const results = await Promise.all(
            startDelays.map(async (delay, i) => {
              await sleep(delay);
              return (group[i % managerCount] as SessionManager).getOrRefresh('fyers', KEY, async () => {
                calls++;
                await sleep(refreshDelay);
                return { data: { n: calls }, ttlMs: 3_600_000 };
              });
            }),
          );
          expect(calls).toBe(1);
          for (const result of results) expect(result).toEqual({ n: 1 });
          for (const m of managers.splice(0)) await m.close();
          await backing.close();
        },
      ),
      { numRuns: 15 },
    );
    backing = makeStore(); // for afterEach
  });

  it('reads again after taking the lease and keeps what another worker refreshed meanwhile', async () => {
    const sessions = await manager();
    const other = await manager();
    await expiredSession(sessions);
    counts.beforeAcquire = async () => {
      counts.beforeAcquire = undefined;
      await other.setSession('fyers', KEY, { accessToken: 'by-other' }, { ttlMs: 3_600_000 });
    };
    let calls = 0;
    const session = await sessions.getOrRefresh('fyers', KEY, async () => {
      calls++;
      return { data: { accessToken: 'mine' }, ttlMs: 3_600_000 };
    });
    expect(calls).toBe(0);
    expect(session).toEqual({ accessToken: 'by-other' });
  });

  it('waits while another holder has the lease and returns the session it writes', async () => {
    const sessions = await manager();
    const other = await manager();
    await expiredSession(sessions);
    expect(await backing.acquireLease?.(LOCATION, 'someone-else', 10_000)).toBe(true);
    let calls = 0;
    const pending = sessions.getOrRefresh('fyers', KEY, async () => {
      calls++;
      return { data: { accessToken: 'mine' }, ttlMs: 3_600_000 };
    });
    await sleep(80);
    await other.setSession('fyers', KEY, { accessToken: 'theirs' }, { ttlMs: 3_600_000 });
    expect(await pending).toEqual({ accessToken: 'theirs' });
    expect(calls).toBe(0);
    await backing.releaseLease?.(LOCATION, 'someone-else');
  });

  it('fences a refresher that outlived its lease: it gets RefreshConflictError and the newer session stands', async () => {
    const slow = await manager();
    const fast = await manager();
    await expiredSession(slow);
    const first = slow.getOrRefresh('fyers', KEY, async () => {
      await sleep(400);
      return { data: { accessToken: 'slow' }, ttlMs: 3_600_000 };
    }, { lockTtlMs: 100 });
    const firstOutcome = first.then(() => undefined, (error: unknown) => error);
    await sleep(150);
    const second = await fast.getOrRefresh('fyers', KEY, async () => ({ data: { accessToken: 'fast' }, ttlMs: 3_600_000 }), {
      lockTtlMs: 100,
    });
    expect(second).toEqual({ accessToken: 'fast' });
    const error = await firstOutcome;
    expect(error).toBeInstanceOf(RefreshConflictError);
    expect((error as RefreshConflictError).code).toBe('ERR_SESSION_REFRESH_CONFLICT');
    expect(await fast.getSession('fyers', KEY)).toEqual({ accessToken: 'fast' });
  });

  it('turns a refresher error into RefreshError for every sharer, releases the lease and keeps the old session', async () => {
    const sessions = await manager();
    const version = await expiredSession(sessions);
    const original = new Error('broker said: token r0-SECRET rejected');
    let calls = 0;
    const outcomes = await Promise.allSettled(
      Array.from({ length: 10 }, () =>
        sessions.getOrRefresh('fyers', KEY, async () => {
          calls++;
          await sleep(10);
          throw original;
        }),
      ),
    );
    expect(calls).toBe(1);
    for (const outcome of outcomes) {
      expect(outcome.status).toBe('rejected');
      const reason = (outcome as PromiseRejectedResult).reason as RefreshError;
      expect(reason).toBeInstanceOf(RefreshError);
      expect(reason.code).toBe('ERR_SESSION_REFRESH');
      expect(reason.cause).toBe(original);
      expect(reason.message).not.toContain('SECRET');
    }
    expect((await backing.get(LOCATION))?.version).toBe(version);
    expect(await backing.acquireLease?.(LOCATION, 'probe', 1000)).toBe(true); // released
    await backing.releaseLease?.(LOCATION, 'probe');
  });

  it('gives up with LockTimeoutError after waitTimeoutMs while the lease stays taken', async () => {
    const sessions = await manager();
    await expiredSession(sessions);
    await backing.acquireLease?.(LOCATION, 'stuck', 60_000);
    const started = performance.now();
    const error = await sessions
      .getOrRefresh('fyers', KEY, async () => ({ data: 1, ttlMs: 1000 }), { waitTimeoutMs: 200 })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(LockTimeoutError);
    expect((error as LockTimeoutError).code).toBe('ERR_SESSION_LOCK_TIMEOUT');
    expect(performance.now() - started).toBeGreaterThanOrEqual(190);
    expect(performance.now() - started).toBeLessThan(3000);
    await backing.releaseLease?.(LOCATION, 'stuck');
  });

  it('does not let a hung refresher block later callers once its lease and wait are over', async () => {
    const sessions = await manager();
    await expiredSession(sessions);
    const options = { lockTtlMs: 100, waitTimeoutMs: 150 };
    const hung = await sessions
      .getOrRefresh('fyers', KEY, () => new Promise<never>(() => {}), options)
      .catch((e: unknown) => e);
    expect(hung).toBeInstanceOf(LockTimeoutError);
    await sleep(150); // past lockTtlMs + waitTimeoutMs of the hung round
    const next = await sessions.getOrRefresh('fyers', KEY, async () => ({ data: { accessToken: 'after' }, ttlMs: 3_600_000 }), options);
    expect(next).toEqual({ accessToken: 'after' });
  });

  it('passes LoginRequiredError through unwrapped to every caller, thrown or returned', async () => {
    const sessions = await manager();
    const version = await expiredSession(sessions);
    const thrown = await Promise.allSettled(
      Array.from({ length: 5 }, () => sessions.getOrRefresh('fyers', KEY, async () => {
        throw new LoginRequiredError();
      })),
    );
    for (const outcome of thrown) {
      const reason = (outcome as PromiseRejectedResult).reason as LoginRequiredError;
      expect(reason).toBeInstanceOf(LoginRequiredError);
      expect(reason.code).toBe('ERR_SESSION_LOGIN_REQUIRED');
    }
    const returned = await sessions
      .getOrRefresh('fyers', KEY, (async () => loginRequired()) as never)
      .catch((e: unknown) => e);
    expect(returned).toBeInstanceOf(LoginRequiredError);
    expect((await backing.get(LOCATION))?.version).toBe(version);
  });

  it.each([
    ['a Date in the data', () => ({ data: { at: new Date() }, ttlMs: 1000 }), InvalidSessionDataError],
    ['no data member', () => ({ ttlMs: 1000 }), InvalidSessionDataError],
    ['a string', () => 'token', InvalidSessionDataError],
    ['undefined', () => undefined, InvalidSessionDataError],
    ['a negative ttlMs', () => ({ data: 1, ttlMs: -1 }), InvalidExpiryError],
    ['an expiry in the past', () => ({ data: 1, expiresAt: T0 - 1 }), InvalidExpiryError],
    ['both ttlMs and expiresAt', () => ({ data: 1, ttlMs: 1, expiresAt: T0 + 5 }), InvalidExpiryError],
    ['a misspelt ttl', () => ({ data: 1, ttl: 1000 }), InvalidExpiryError],
  ])('refuses a refresher returning %s: RefreshError with the validation cause, nothing written', async (_label, make, causeClass) => {
    const sessions = await manager();
    const version = await expiredSession(sessions);
    const error = await sessions.getOrRefresh('fyers', KEY, (async () => make()) as never).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(RefreshError);
    expect((error as RefreshError).cause).toBeInstanceOf(causeClass);
    expect((await backing.get(LOCATION))?.version).toBe(version);
    expect(await backing.acquireLease?.(LOCATION, 'probe', 1000)).toBe(true);
  });

  it('never puts session data into the error of a refused refresh (message, cause, inspect, JSON)', async () => {
    const sessions = await manager();
    await expiredSession(sessions, { accessToken: 'OLD-SECRET-1', refreshToken: 'OLD-SECRET-2' });
    const error = await sessions
      .getOrRefresh('fyers', KEY, (async () => ({ data: { accessToken: 'NEW-SECRET-3', at: new Date() }, ttlMs: 1000 })) as never)
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(RefreshError);
    const seen = `${inspect(error, { depth: 10, showHidden: true })} ${JSON.stringify(error)} ${String((error as Error).stack)}`;
    expect(seen).not.toMatch(/SECRET/);
    expect(((error as RefreshError).cause as InvalidSessionDataError).paths).toEqual(['$.at']);
  });

  it('refuses bad options with InvalidOptionsError before touching the store', async () => {
    const sessions = await manager();
    counts.get = 0;
    const refresher = async () => ({ data: 1, ttlMs: 1000 });
    for (const options of [{ lockTtlMs: 0 }, { waitTimeoutMs: -1 }, { refreshBeforeMs: 1.5 }, { lockTtl: 5 }, 'x']) {
      await expect(sessions.getOrRefresh('fyers', KEY, refresher, options as never)).rejects.toBeInstanceOf(InvalidOptionsError);
    }
    await expect(sessions.getOrRefresh('fyers', KEY, 'nope' as never)).rejects.toBeInstanceOf(InvalidOptionsError);
    expect(counts.get).toBe(0);
  });

  it('works through forBroker, and one broker refreshing never touches another', async () => {
    const sessions = await manager();
    const fyers = sessions.forBroker<{ token: string }>('fyers');
    const kite = sessions.forBroker<{ token: string }>('kite');
    await kite.setSession(KEY, { token: 'kite-1' }, { ttlMs: 3_600_000 });
    expect(await fyers.getOrRefresh(KEY, async () => ({ data: { token: 'f-1' }, ttlMs: 3_600_000 }))).toEqual({ token: 'f-1' });
    expect(await kite.getSession(KEY)).toEqual({ token: 'kite-1' });
  });
});
