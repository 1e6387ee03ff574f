/**
 * Faults, at the manager level (the store-level fault suites live in test/stores/*-faults.test.ts):
 *
 * - SQLite on a full disk (a 1 MiB tmpfs this test mounts; we run as root) and on a database whose
 *   file and WAL were made immutable (`chattr +i`: root ignores file modes, not that flag): a
 *   typed StoreError, the previous value intact, the manager still usable for reads, writes
 *   working again once space or permission is back.
 * - Redis killed and restarted mid-run (our own redis-server, AOF fsync always) and PostgreSQL
 *   backends terminated mid-transaction (only our own, by application_name): typed errors within
 *   a bound during the outage, recovery after, and every stored session opens to a value written.
 * - One corrupt record among many, on every store: an error for that record only; the others
 *   read fine and listing still lists them all.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  Keyring,
  PostgresStore,
  RedisStore,
  SessionIntegrityError,
  SessionManager,
  SqliteStore,
  StoreError,
  StoreUnavailableError,
} from '../../src/index.ts';
import { storageKey } from '../../src/namespace.ts';
import { adminPool, backendsWaiting, dropSchema, randomApplicationName, randomSchema, settle, terminateBackends, waitFor } from '../support/postgres.ts';
import { describeWithRedisServer, startRedisServer, type RedisServer } from '../support/redis-server.ts';
import { DATABASE_URL, IN_CI, describeWithService, postgresAvailable } from '../support/services.ts';
import { allKinds, createTestStore, serviceOf } from './stores.ts';

const keyring = new Keyring([{ id: 'k1', key: randomBytes(32) }]);
const dir = mkdtempSync(join(tmpdir(), 'ordo-faults-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function failure(call: () => Promise<unknown>): Promise<{ error: unknown; ms: number }> {
  const started = performance.now();
  const error = await call().then(
    () => new Error('expected a failure'),
    (e: unknown) => e,
  );
  return { error, ms: performance.now() - started };
}

function tryRun(command: string, args: string[]): boolean {
  return spawnSync(command, args, { stdio: 'ignore', timeout: 10_000 }).status === 0;
}

describe('SQLite on a full disk', () => {
  const mount = join(dir, 'full');
  let mounted = false;

  beforeAll(() => {
    mkdirSync(mount);
    mounted = tryRun('mount', ['-t', 'tmpfs', '-o', 'size=1m,mode=0700', 'tmpfs', mount]);
    if (!mounted) {
      const message = 'cannot mount a 1 MiB tmpfs here (needs root); the full-disk test cannot run';
      if (IN_CI) throw new Error(message);
      console.warn(`\n!!! ${message}: SKIPPING.\n`);
    }
  });

  afterAll(() => {
    if (mounted) execFileSync('umount', ['-l', mount]);
  });

  it('fails a write with a StoreError, keeps the previous value and keeps reading', async (context) => {
    if (!mounted) return context.skip();
    const sessions = await SessionManager.open({ keyring, store: new SqliteStore({ path: join(mount, 'sessions.db') }) });
    await sessions.setSession('fyers', 'seed', { accessToken: 'before-the-disk-filled' });
    let written = 0;
    let full: unknown;
    for (let i = 0; i < 200 && full === undefined; i++) {
      try {
        await sessions.setSession('fyers', `filler-${i}`, { pad: randomBytes(24_000).toString('base64') });
        written++;
      } catch (error) {
        full = error;
      }
    }
    expect(written).toBeGreaterThan(0);
    expect(full).toBeInstanceOf(StoreError);
    expect((full as StoreError).code).toBe('ERR_SESSION_STORE');
    expect(((full as StoreError).cause as { code?: string }).code).toMatch(/^SQLITE_FULL|^SQLITE_IOERR/);
    // An overwrite that does not fit fails the same way and leaves the old value.
    const overwrite = await failure(() => sessions.setSession('fyers', 'seed', { pad: randomBytes(40_000).toString('base64') }));
    expect(overwrite.error).toBeInstanceOf(StoreError);
    expect(await sessions.getSession('fyers', 'seed')).toEqual({ accessToken: 'before-the-disk-filled' });
    expect(await sessions.getSession('fyers', 'filler-0')).toBeDefined();
    let listed = 0;
    for await (const _ of sessions.listSessions('fyers')) listed++;
    expect(listed).toBe(written + 1);
    // Space back (the disk grown, as an operator would): the same manager writes again.
    execFileSync('mount', ['-o', 'remount,size=4m', mount]);
    const cleared = await sessions.clearBroker('fyers');
    expect(cleared).toBe(written + 1);
    await sessions.setSession('fyers', 'seed', { accessToken: 'after-space-was-freed' });
    expect(await sessions.getSession('fyers', 'seed')).toEqual({ accessToken: 'after-space-was-freed' });
    await sessions.close();
    console.log(`disk full: ${written} writes fit in 1 MiB, then ${(full as StoreError).code} (${((full as StoreError).cause as { code?: string }).code})`);
  });
});

describe('SQLite on a read-only (immutable) database', () => {
  const hasChattr = spawnSync('chattr', ['-V'], { stdio: 'ignore' }).error === undefined;

  it('fails a write with a StoreError, keeps the previous value and keeps reading', async (context) => {
    const path = join(dir, 'immutable', 'sessions.db');
    const sessions = await SessionManager.open({ keyring, store: new SqliteStore({ path }) });
    await sessions.setSession('fyers', 'acct', { accessToken: 'v1' });
    // The -shm stays writable: SQLite maps it, and a mapping it cannot extend kills the process (SIGBUS).
    const files = [path, `${path}-wal`];
    if (!hasChattr || !files.every((file) => tryRun('chattr', ['+i', file]))) {
      for (const file of files) tryRun('chattr', ['-i', file]);
      await sessions.close();
      if (IN_CI) throw new Error('chattr +i is not available here');
      return context.skip();
    }
    try {
      const write = await failure(() => sessions.setSession('fyers', 'acct', { accessToken: 'v2' }));
      expect(write.error).toBeInstanceOf(StoreError);
      expect((write.error as StoreError).code).toBe('ERR_SESSION_STORE');
      const remove = await failure(() => sessions.deleteSession('fyers', 'acct'));
      expect(remove.error).toBeInstanceOf(StoreError);
      expect(await sessions.getSession('fyers', 'acct')).toEqual({ accessToken: 'v1' });
      // A new store on the immutable file fails to open with a typed error, not a crash.
      expect(() => new SqliteStore({ path })).toThrow(StoreError);
    } finally {
      for (const file of files) tryRun('chattr', ['-i', file]);
    }
    await sessions.setSession('fyers', 'acct', { accessToken: 'v3' });
    expect(await sessions.getSession('fyers', 'acct')).toEqual({ accessToken: 'v3' });
    await sessions.close();
    const db = new Database(path, { readonly: true });
    expect(db.pragma('integrity_check', { simple: true })).toBe('ok');
    db.close();
  });
});

describeWithRedisServer('Redis stopped and restarted under the manager', () => {
  let server: RedisServer;
  const BOUND_MS = 300 + 400 + 600; // connect wait + one command + margin for a loaded machine

  beforeAll(async () => {
    server = await startRedisServer({ appendOnly: true });
  });

  afterAll(async () => {
    await server?.destroy();
  });

  it('fails fast with StoreUnavailableError while down, recovers, and every session opens', async () => {
    const store = new RedisStore({ url: server.url, keyPrefix: `faults-${randomUUID()}:`, connectTimeoutMs: 300, commandTimeoutMs: 400 });
    const sessions = await SessionManager.open({ keyring, store });
    for (let i = 0; i < 20; i++) await sessions.setSession('fyers', `acct-${i}`, { accessToken: `before-${i}` });
    await server.stop('SIGKILL');
    const during = [
      () => sessions.setSession('fyers', 'acct-0', { accessToken: 'during' }),
      () => sessions.getSession('fyers', 'acct-1'),
      () => sessions.deleteSession('fyers', 'acct-2'),
      () => sessions.clearBroker('fyers'),
      async () => {
        for await (const _ of sessions.listSessions('fyers')) void _;
      },
    ];
    for (const call of during) {
      const { error, ms } = await failure(call);
      expect(error).toBeInstanceOf(StoreUnavailableError);
      expect((error as StoreUnavailableError).code).toBe('ERR_SESSION_STORE_UNAVAILABLE');
      expect(ms).toBeLessThan(BOUND_MS);
    }
    await server.start();
    const deadline = Date.now() + 10_000;
    for (;;) {
      const result = await sessions.getSession('fyers', 'acct-0').then(
        (value) => ({ value }),
        (error: unknown) => ({ error }),
      );
      if ('value' in result) {
        expect(result.value).toEqual({ accessToken: 'before-0' }); // the write during the outage never landed
        break;
      }
      expect(result.error).toBeInstanceOf(StoreUnavailableError);
      if (Date.now() > deadline) throw result.error;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    for (let i = 0; i < 20; i++) expect(await sessions.getSession('fyers', `acct-${i}`)).toEqual({ accessToken: `before-${i}` });
    await sessions.setSession('fyers', 'acct-0', { accessToken: 'after' });
    expect(await sessions.getSession('fyers', 'acct-0')).toEqual({ accessToken: 'after' });
    await sessions.clearBroker('fyers');
    await sessions.close();
  });
});

describeWithService('PostgreSQL', postgresAvailable, 'PostgreSQL backends terminated under the manager', () => {
  const schema = randomSchema('ordo_rel_faults');
  const applicationName = randomApplicationName();
  let admin: pg.Pool;
  let sessions: SessionManager;

  beforeAll(async () => {
    admin = adminPool();
    const store = new PostgresStore({ connectionString: DATABASE_URL, schema, applicationName, poolSize: 4, queryTimeoutMs: 3000 });
    sessions = await SessionManager.open({ keyring, store });
  });

  afterAll(async () => {
    await sessions?.close();
    await dropSchema(admin, schema);
    await admin.end();
  });

  it('fails a write whose backend is terminated while it waits in its transaction, keeping the old value', async () => {
    await sessions.setSession('fyers', 'locked', { accessToken: 'old' });
    const holder = await admin.connect();
    try {
      await holder.query('BEGIN');
      await holder.query(`SELECT 1 FROM "${schema}".ordo_sessions WHERE key = $1 FOR UPDATE`, [
        Buffer.from(storageKey('default', 'fyers', 'locked')),
      ]);
      const write = settle(sessions.setSession('fyers', 'locked', { accessToken: 'new' }), 10_000);
      await waitFor(async () => (await backendsWaiting(admin, applicationName)) > 0);
      expect(await terminateBackends(admin, applicationName)).toBeGreaterThan(0);
      const outcome = await write;
      expect(outcome.ok).toBe(false);
      expect((outcome as { error: unknown }).error).toBeInstanceOf(StoreError);
      expect(outcome.elapsedMs).toBeLessThan(5000);
    } finally {
      await holder.query('ROLLBACK');
      holder.release();
    }
    expect(await eventually(() => sessions.getSession('fyers', 'locked'))).toEqual({ accessToken: 'old' });
    await eventually(() => sessions.setSession('fyers', 'locked', { accessToken: 'newer' }));
    expect(await sessions.getSession('fyers', 'locked')).toEqual({ accessToken: 'newer' });
  });

  it('keeps every session whole while its backends are terminated at random under load', async () => {
    const KEYS = 10;
    const written = new Map<string, Set<number>>();
    let stop = false;
    let failures = 0;
    let successes = 0;
    const writer = async (w: number): Promise<void> => {
      for (let seq = 0; !stop; seq++) {
        const key = `load-${(w * 7 + seq) % KEYS}`;
        const n = w * 1_000_000 + seq;
        (written.get(key) ?? written.set(key, new Set()).get(key))?.add(n);
        const result = await settle(sessions.setSession('fyers', key, { n }), 8000);
        if (result.ok) successes++;
        else {
          expect(result.error).toBeInstanceOf(StoreError);
          failures++;
        }
      }
    };
    const writers = Array.from({ length: 4 }, (_, w) => writer(w));
    let terminated = 0;
    for (let round = 0; round < 8; round++) {
      await new Promise((resolve) => setTimeout(resolve, 40 + Math.random() * 80));
      terminated += await terminateBackends(admin, applicationName);
    }
    stop = true;
    await Promise.all(writers);
    expect(terminated).toBeGreaterThan(0);
    expect(successes).toBeGreaterThan(0);
    for (const [key, values] of written) {
      const value = (await eventually(() => sessions.getSession('fyers', key))) as { n: number } | undefined;
      if (value !== undefined) expect(values.has(value.n), `${key} holds ${value.n}, never written`).toBe(true);
    }
    console.log(`postgres faults: ${terminated} backends terminated, ${successes} writes ok, ${failures} failed typed`);
  });
});

/** Calls until one succeeds: right after a termination the pool may still hand out a dead connection. */
async function eventually<T>(call: () => Promise<T>, attempts = 20): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await call();
    } catch (error) {
      expect(error).toBeInstanceOf(StoreError);
      if (attempt >= attempts) throw error;
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
  }
}

for (const kind of allKinds) {
  const service = serviceOf(kind);
  describeWithService(service.name, service.available, `one corrupt record among many on ${kind}`, () => {
    it('fails that record only; the others read and list', async () => {
      const testStore = await createTestStore(kind);
      const sessions = await SessionManager.open({ keyring, store: testStore.make() });
      const raw = testStore.make();
      try {
        for (let i = 0; i < 30; i++) await sessions.setSession('fyers', `acct-${i}`, { accessToken: `t-${i}` });
        const location = storageKey('default', 'fyers', 'acct-13');
        const record = await raw.get(location);
        const corrupt = Buffer.from(record!.value);
        corrupt[corrupt.length - 1] = (corrupt[corrupt.length - 1] as number) ^ 1;
        await raw.set(location, corrupt, { expiresAt: record!.expiresAt, updatedAt: record!.updatedAt });
        await expect(sessions.getSession('fyers', 'acct-13')).rejects.toBeInstanceOf(SessionIntegrityError);
        for (let i = 0; i < 30; i++) {
          if (i !== 13) expect(await sessions.getSession('fyers', `acct-${i}`)).toEqual({ accessToken: `t-${i}` });
        }
        const listed: string[] = [];
        for await (const info of sessions.listSessions('fyers')) listed.push(info.key);
        expect(listed.length).toBe(30);
        expect(listed).toContain('acct-13');
        // The bad record can be replaced: a new login overwrites it.
        await sessions.setSession('fyers', 'acct-13', { accessToken: 'fresh' });
        expect(await sessions.getSession('fyers', 'acct-13')).toEqual({ accessToken: 'fresh' });
      } finally {
        await sessions.close();
        if (kind !== 'memory') await raw.close();
        await testStore.cleanup();
      }
    });
  });
}
