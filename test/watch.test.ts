/**
 * sessions.watch(): on the memory store in process, and on SQLite, Redis and PostgreSQL across
 * two real processes (test/support/watch-worker.ts writes, this process watches).
 */
import { execFile } from 'node:child_process';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type pg from 'pg';
import { createClient } from 'redis';
import { afterAll, describe, expect, it } from 'vitest';
import Database from 'better-sqlite3';
import {
  InvalidOptionsError,
  InvalidSessionKeyError,
  Keyring,
  MemoryStore,
  RedisStore,
  SessionManager,
  SqliteStore,
  type SessionStore,
} from '../src/index.ts';
import type { SessionChange } from '../src/watch.ts';
import { adminPool, dropSchema, randomSchema } from './support/postgres.ts';
import { DATABASE_URL, REDIS_URL, describeWithService, postgresAvailable, redisAvailable } from './support/services.ts';
import { openWorkerStore, type WorkerConfig, type WorkerOp } from './support/watch-worker.ts';

const WORKER = fileURLToPath(new URL('./support/watch-worker.ts', import.meta.url));
const KEYS = Keyring.generateKey('watch1');
const HOUR = 3_600_000;

function runWorker(config: WorkerConfig, timeoutMs = 20_000): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, ['--import', 'tsx', WORKER, JSON.stringify(config)], { timeout: timeoutMs }, (error, stdout, stderr) => {
      if (error) reject(new Error(`worker failed: ${error.message}\n${stderr}`));
      else resolve(stdout.trim());
    });
  });
}

/** Resolves once `events` holds `count` entries (or after `timeoutMs`), then waits `settleMs` more for strays. */
async function received(events: readonly unknown[], count: number, timeoutMs = 8000, settleMs = 400): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (events.length < count && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
  await new Promise((resolve) => setTimeout(resolve, settleMs));
}

const OPS: WorkerOp[] = [
  { op: 'set', broker: 'kite', key: 'AB1234' },
  { op: 'set', broker: 'kite', key: 'short/lived', ttlMs: 60_000 },
  { op: 'set', broker: 'fyers', key: 'XY 99' },
  { op: 'refresh', broker: 'kite', key: 'AB1234' },
  { op: 'delete', broker: 'kite', key: 'AB1234' },
  { op: 'clear', broker: 'fyers' },
  { op: 'purge', at: Date.now() + 2 * HOUR },
];
const EXPECTED: SessionChange[] = [
  { broker: 'kite', key: 'AB1234', kind: 'set' },
  { broker: 'kite', key: 'short/lived', kind: 'set' },
  { broker: 'fyers', key: 'XY 99', kind: 'set' },
  { broker: 'kite', key: 'AB1234', kind: 'refresh' },
  { broker: 'kite', key: 'AB1234', kind: 'delete' },
  { broker: 'fyers', key: 'XY 99', kind: 'delete' },
  { broker: 'kite', key: 'short/lived', kind: 'expire' },
];

function crossProcessSuite(name: string, store: () => WorkerConfig['store']): void {
  describe(`watch on ${name}, across processes`, () => {
    const opened: SessionManager[] = [];
    afterAll(async () => {
      for (const manager of opened) await manager.close();
    });

    async function open(namespace: string, storeConfig: WorkerConfig['store']): Promise<SessionManager> {
      const manager = await SessionManager.open({ keyring: Keyring.parse(KEYS), store: openWorkerStore(storeConfig), namespace });
      opened.push(manager);
      return manager;
    }

    it('delivers exactly the sets, refreshes, deletes and expiries of another process, without data', async () => {
      const namespace = `w${randomBytes(4).toString('hex')}`;
      const config = store();
      const sessions = await open(namespace, config);
      const other = await open(`${namespace}x`, config);
      const all: SessionChange[] = [];
      const kite: SessionChange[] = [];
      const elsewhere: SessionChange[] = [];
      await sessions.watch((change) => void all.push(change));
      await sessions.forBroker('kite').watch((change) => void kite.push(change));
      await other.watch((change) => void elsewhere.push(change));
      expect(await runWorker({ mode: 'write', store: config, namespace, keys: KEYS, ops: OPS })).toBe('done');
      await received(all, EXPECTED.length);
      expect(all).toStrictEqual(EXPECTED);
      expect(kite).toStrictEqual(EXPECTED.filter((change) => change.broker === 'kite'));
      expect(elsewhere).toStrictEqual([]);
      expect(JSON.stringify(all)).not.toContain('secret-');
    });

    it('stops delivering after unwatch, and a throwing listener neither breaks the stream nor others', async () => {
      const namespace = `w${randomBytes(4).toString('hex')}`;
      const config = store();
      const sessions = await open(namespace, config);
      const errors: unknown[] = [];
      const thrown: SessionChange[] = [];
      const kept: SessionChange[] = [];
      await sessions.watch(
        (change) => {
          thrown.push(change);
          throw new Error('listener bug');
        },
        { onError: (error) => errors.push(error) },
      );
      const unwatch = await sessions.watch((change) => void kept.push(change));
      await runWorker({ mode: 'write', store: config, namespace, keys: KEYS, ops: [{ op: 'set', broker: 'kite', key: 'one' }, { op: 'set', broker: 'kite', key: 'two' }] });
      await received(kept, 2);
      expect(kept.map((change) => change.key)).toStrictEqual(['one', 'two']);
      expect(errors).toHaveLength(2);
      await unwatch();
      await unwatch(); // idempotent
      await sessions.setSession('kite', 'three', { t: 3 }); // this process's own writes are reported too
      await received(thrown, 3);
      expect(thrown.map((change) => change.key)).toStrictEqual(['one', 'two', 'three']);
      expect(kept.map((change) => change.key)).toStrictEqual(['one', 'two']);
      expect(errors).toHaveLength(3);
    });

    it('close() ends every watcher: a process that watched and closed exits by itself', async () => {
      const namespace = `w${randomBytes(4).toString('hex')}`;
      expect(await runWorker({ mode: 'watch-close', store: store(), namespace, keys: KEYS }, 15_000)).toBe('closed');
    });
  });
}

describe('watch on the memory store, in process', () => {
  async function open(): Promise<SessionManager> {
    return SessionManager.open({ keyring: Keyring.parse(KEYS), store: new MemoryStore() });
  }

  it('delivers set, refresh, delete, clear and purge as events without data', async () => {
    let now = 1_800_000_000_000;
    const store = new MemoryStore();
    const sessions = await SessionManager.open({ keyring: Keyring.parse(KEYS), store, clock: () => now });
    const events: SessionChange[] = [];
    await sessions.watch((change) => void events.push(change));
    await sessions.setSession('kite', 'AB1234', { accessToken: 'secret-1' });
    await sessions.setSession('kite', 'short', { accessToken: 'secret-2' }, { ttlMs: 1000 });
    const record = (await store.get('default/kite/AB1234'))!;
    await store.compareAndSet('default/kite/AB1234', record.version, record.value, { expiresAt: null, updatedAt: now, change: 'refresh' });
    await store.compareAndSet('default/kite/AB1234', 'stale', record.value, { expiresAt: null, updatedAt: now, change: 'refresh' });
    await sessions.deleteSession('kite', 'AB1234');
    await sessions.deleteSession('kite', 'AB1234'); // nothing there: no event
    now += 2000;
    await sessions.purgeExpired();
    await sessions.setSession('fyers', 'x', { accessToken: 'secret-3' });
    await sessions.clearBroker('fyers');
    await received(events, 6, 1000, 20);
    expect(events).toStrictEqual([
      { broker: 'kite', key: 'AB1234', kind: 'set' },
      { broker: 'kite', key: 'short', kind: 'set' },
      { broker: 'kite', key: 'AB1234', kind: 'refresh' },
      { broker: 'kite', key: 'AB1234', kind: 'delete' },
      { broker: 'kite', key: 'short', kind: 'expire' },
      { broker: 'fyers', key: 'x', kind: 'set' },
      { broker: 'fyers', key: 'x', kind: 'delete' },
    ]);
    await sessions.close();
  });

  it('filters by broker, reports listener errors (sync and async) to onError, and stops on unwatch and close', async () => {
    const sessions = await open();
    const errors: unknown[] = [];
    const kite: string[] = [];
    const unwatchKite = await sessions.forBroker('kite').watch(({ key }) => void kite.push(key));
    await sessions.watch(() => Promise.reject(new Error('async bug')), { onError: (error) => errors.push(error) });
    await sessions.watch(
      () => {
        throw new Error('sync bug');
      },
      {
        onError: () => {
          throw new Error('onError bug too');
        },
      },
    );
    await sessions.setSession('kite', 'a', { t: 1 });
    await sessions.setSession('kite-paper', 'b', { t: 1 });
    await received(kite, 1, 1000, 20);
    expect(kite).toStrictEqual(['a']);
    expect(errors).toHaveLength(2);
    await unwatchKite();
    await sessions.setSession('kite', 'c', { t: 1 });
    await received(errors, 3, 1000, 20);
    expect(kite).toStrictEqual(['a']);
    expect(errors).toHaveLength(3);
    await sessions.close();
    expect(errors).toHaveLength(3);
  });

  it('refuses a bad listener, a bad broker and a store that cannot watch', async () => {
    const sessions = await open();
    await expect(sessions.watch(42 as never)).rejects.toBeInstanceOf(InvalidOptionsError);
    await expect(sessions.watch(() => undefined, { broker: 'Bad!' })).rejects.toBeInstanceOf(InvalidSessionKeyError);
    await sessions.close();
    const store = new MemoryStore() as SessionStore & { subscribe?: unknown };
    Object.defineProperty(store, 'subscribe', { value: undefined });
    const plain = await SessionManager.open({ keyring: Keyring.parse(KEYS), store });
    await expect(plain.watch(() => undefined)).rejects.toMatchObject({ code: 'ERR_SESSION_INVALID_OPTIONS' });
    await plain.close();
  });
});

const tempDir = mkdtempSync(join(tmpdir(), 'ordo-watch-'));
afterAll(() => rmSync(tempDir, { recursive: true, force: true }));
crossProcessSuite('SQLite', () => ({ kind: 'sqlite', path: join(tempDir, `${randomUUID()}.db`) }));

describe('SQLite change log', () => {
  it('is pruned to about its last 10 000 rows, and a watcher still sees changes after pruning', async () => {
    const path = join(tempDir, `${randomUUID()}.db`);
    const store = new SqliteStore({ path });
    const seen: string[] = [];
    const unsubscribe = await store.subscribe('p/', (change) => void seen.push(change.key), { pollIntervalMs: 20 });
    const write = { expiresAt: null, updatedAt: 1 };
    for (let round = 0; round < 22; round++) {
      await Promise.all(Array.from({ length: 500 }, (_, i) => store.set(`q/${round}-${i}`, new Uint8Array([1]), write)));
    }
    await store.set('p/after', new Uint8Array([1]), write);
    await received(seen, 1, 5000, 50);
    expect(seen).toStrictEqual(['p/after']);
    await unsubscribe();
    await store.close();
    const db = new Database(path, { readonly: true });
    try {
      const { n } = db.prepare('SELECT count(*) AS n FROM ordo_changes').get() as { n: number };
      expect(n).toBeGreaterThan(0);
      expect(n).toBeLessThanOrEqual(10_500);
      expect(db.pragma('user_version', { simple: true })).toBeGreaterThanOrEqual(3);
    } finally {
      db.close();
    }
  });

  it('refuses a bad pollIntervalMs', async () => {
    const store = new SqliteStore({ path: ':memory:' });
    await expect(store.subscribe('', () => undefined, { pollIntervalMs: 0 })).rejects.toMatchObject({ code: 'ERR_SESSION_INVALID_OPTIONS' });
    await store.close();
  });
});

describeWithService('Redis', redisAvailable, 'watch on Redis', () => {
  const prefix = `ordo-test-${randomUUID()}:`;
  afterAll(async () => {
    const raw = await createClient({ url: REDIS_URL }).connect();
    for await (const keys of raw.scanIterator({ MATCH: `${prefix}*`, COUNT: 1000 })) if (keys.length > 0) await raw.unlink(keys);
    await raw.close();
  });
  let n = 0;
  crossProcessSuite('Redis', () => ({ kind: 'redis', url: REDIS_URL, keyPrefix: `${prefix}${n++}:` }));

  it('watches through a duplicate of a caller-owned client, which close() leaves open; stores of other prefixes hear nothing', async () => {
    const owned = await createClient({ url: REDIS_URL }).on('error', () => undefined).connect();
    const keyPrefix = `${prefix}${n++}:`;
    const store = new RedisStore({ client: owned, keyPrefix });
    const nested = new RedisStore({ url: REDIS_URL, keyPrefix: `${keyPrefix}x:` }); // a prefix that extends ours
    try {
      const seen: string[] = [];
      const nestedSeen: string[] = [];
      await store.subscribe('', (change) => void seen.push(`${change.kind} ${change.key}`));
      await nested.subscribe('', (change) => void nestedSeen.push(change.key));
      await store.set('ns/kite/{odd}%key', new Uint8Array([1]), { expiresAt: null, updatedAt: 1 });
      await store.delete('ns/kite/{odd}%key');
      await store.delete('ns/kite/{odd}%key'); // nothing there: nothing published
      await received(seen, 2, 3000, 100);
      expect(seen).toStrictEqual(['set ns/kite/{odd}%key', 'delete ns/kite/{odd}%key']);
      expect(nestedSeen).toStrictEqual([]);
      await store.close();
      expect(owned.isOpen).toBe(true);
      expect(await owned.ping()).toBe('PONG');
    } finally {
      await nested.close();
      await owned.close();
    }
  });
});

describeWithService('PostgreSQL', postgresAvailable, 'watch on PostgreSQL', () => {
  const schemas: string[] = [];
  afterAll(async () => {
    const admin: pg.Pool = adminPool();
    for (const schema of schemas) await dropSchema(admin, schema);
    await admin.end();
  });
  crossProcessSuite('PostgreSQL', () => {
    const schema = randomSchema('ordo_watch');
    schemas.push(schema);
    return { kind: 'postgres', connectionString: DATABASE_URL, schema };
  });

  it('listens again after its LISTEN connection is killed', async () => {
    const schema = randomSchema('ordo_watch');
    schemas.push(schema);
    const config = { kind: 'postgres', connectionString: DATABASE_URL, schema } as const;
    const sessions = await SessionManager.open({ keyring: Keyring.parse(KEYS), store: openWorkerStore(config) });
    const admin: pg.Pool = adminPool();
    try {
      const events: SessionChange[] = [];
      await sessions.watch((change) => void events.push(change));
      await sessions.setSession('kite', 'before', { t: 1 });
      await received(events, 1, 5000, 0);
      // Only this store's listener: the one backend whose last statement was LISTEN on its channel.
      const channel = `ordo_${createHash('sha256').update(`${schema}.ordo_sessions`).digest('hex').slice(0, 40)}`;
      const { rows } = await admin.query<{ n: number }>(
        `SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 2000))::int AS n FROM pg_stat_activity WHERE query = $1`,
        [`LISTEN "${channel}"`],
      );
      expect(rows[0]?.n).toBe(1);
      // Write until the new listener hears it (writes made while it was down are lost, as documented).
      const deadline = Date.now() + 10_000;
      for (let i = 0; !events.some((change) => change.key.startsWith('after')) && Date.now() < deadline; i++) {
        await sessions.setSession('kite', `after-${i}`, { t: 1 });
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      expect(events.some((change) => change.key.startsWith('after'))).toBe(true);
    } finally {
      await sessions.close();
      await admin.end();
    }
  });
});
