/**
 * PostgresStore under failure: nothing listening, a server that never answers, a statement
 * stuck behind a lock, and its own backends terminated (idle, mid-statement, mid-migration,
 * and at random under load). Every call must settle within its bound with a typed error or a
 * result, the process must never see an unhandled error, the store must recover by itself, and
 * a stored value must always be one that was written, whole.
 *
 * Only backends with this run's unique application_name are terminated; the server is never stopped.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createServer, type Socket } from 'node:net';
import { inspect } from 'node:util';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { StoreError, StoreUnavailableError } from '../../src/errors.ts';
import { POSTGRES_MIGRATION_LOCK_ID, PostgresStore } from '../../src/stores/postgres.ts';
import type { SessionStore } from '../../src/stores/store.ts';
import {
  adminPool,
  backendsWaiting,
  dropSchema,
  freePort,
  randomApplicationName,
  randomSchema,
  settle,
  terminateBackends,
  waitFor,
} from '../support/postgres.ts';
import { DATABASE_URL, describeWithService, postgresAvailable } from '../support/services.ts';

const write = { expiresAt: null, updatedAt: 1_700_000_000_000 };
const PASSWORD = 'pw-that-must-never-be-printed';

function bytes(text: string): Uint8Array {
  return new Uint8Array(Buffer.from(text, 'utf8'));
}

function text(value: Uint8Array | undefined): string | undefined {
  return value && Buffer.from(value).toString('utf8');
}

/** One of every call, so each can be checked for its bound. */
function everyCall(store: SessionStore): Array<[string, () => Promise<unknown>]> {
  return [
    ['open', () => store.open!()],
    ['get', () => store.get('k')],
    ['set', () => store.set('k', bytes('secret-value'), write)],
    ['compareAndSet', () => store.compareAndSet('k', null, bytes('secret-value'), write)],
    ['delete', () => store.delete('k')],
    ['list', () => store.list('', { limit: 10 })],
    ['deleteByPrefix', () => store.deleteByPrefix('k')],
    ['purgeExpired', () => store.purgeExpired('k', Date.now())],
  ];
}

/** Calls until one succeeds (the pool may still hand out a connection that is about to report its death). */
async function eventually<T>(call: () => Promise<T>, attempts = 20): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    const result = await settle(call(), 5000);
    if (result.ok) return result.value;
    expect(result.error).toBeInstanceOf(StoreError);
    if (attempt >= attempts) throw result.error;
  }
}

const unexpected: unknown[] = [];
const record = (error: unknown): void => {
  unexpected.push(error);
};

describeWithService('PostgreSQL', postgresAvailable, 'PostgresStore faults', () => {
  const schema = randomSchema('ordo_faults');
  let admin: pg.Pool;

  beforeAll(() => {
    admin = adminPool();
    process.on('uncaughtException', record);
    process.on('unhandledRejection', record);
  });

  afterAll(async () => {
    process.off('uncaughtException', record);
    process.off('unhandledRejection', record);
    await dropSchema(admin, schema);
    await admin.end();
    expect(unexpected).toEqual([]);
  });

  const storeFor = (applicationName: string, extra: { queryTimeoutMs?: number; poolSize?: number } = {}): PostgresStore =>
    new PostgresStore({ connectionString: DATABASE_URL, schema, applicationName, connectTimeoutMs: 1000, queryTimeoutMs: 1000, ...extra });

  describe('unreachable', () => {
    it('rejects every call with StoreUnavailableError at once when nothing listens on the port', async () => {
      const port = await freePort();
      const store = new PostgresStore({
        connectionString: `postgres://postgres:${PASSWORD}@127.0.0.1:${port}/test`,
        schema,
        connectTimeoutMs: 1000,
        queryTimeoutMs: 1000,
      });
      for (const [name, call] of everyCall(store)) {
        const result = await settle(call(), 5000);
        expect(result.ok, name).toBe(false);
        if (result.ok) continue;
        expect(result.error, name).toBeInstanceOf(StoreUnavailableError);
        expect((result.error as StoreUnavailableError).code).toBe('ERR_SESSION_STORE_UNAVAILABLE');
        expect(inspect(result.error, { depth: 5 })).toMatch(/ECONNREFUSED/);
        expect(inspect(result.error, { depth: 5 })).not.toContain(PASSWORD);
        expect(result.elapsedMs, name).toBeLessThan(2000 + 250);
      }
      await store.close();
    });

    it('rejects every call within connectTimeoutMs + queryTimeoutMs when the server never answers', async () => {
      const sockets = new Set<Socket>();
      const silent = createServer((socket) => {
        sockets.add(socket);
        socket.on('error', () => {});
        socket.on('close', () => sockets.delete(socket));
      });
      await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
      const { port } = silent.address() as { port: number };
      const store = new PostgresStore({
        connectionString: `postgres://postgres:${PASSWORD}@127.0.0.1:${port}/test`,
        schema,
        connectTimeoutMs: 300,
        queryTimeoutMs: 300,
      });
      try {
        const results = await Promise.all(everyCall(store).map(async ([name, call]) => [name, await settle(call(), 5000)] as const));
        for (const [name, result] of results) {
          expect(result.ok, name).toBe(false);
          if (result.ok) continue;
          expect(result.error, name).toBeInstanceOf(StoreUnavailableError);
          expect(inspect(result.error, { depth: 5 })).not.toContain(PASSWORD);
          expect(result.elapsedMs, name).toBeGreaterThanOrEqual(250);
          expect(result.elapsedMs, name).toBeLessThan(600 + 250);
        }
        expect((await settle(store.close(), 2000)).ok).toBe(true);
      } finally {
        for (const socket of sockets) socket.destroy();
        await new Promise<void>((resolve) => silent.close(() => resolve()));
      }
    });
  });

  describe('a statement that cannot finish', () => {
    it('is cancelled by the server at queryTimeoutMs, leaving the old value, and the store carries on', async () => {
      const applicationName = randomApplicationName();
      const store = storeFor(applicationName, { queryTimeoutMs: 300 });
      const key = `locked/${randomBytes(4).toString('hex')}`;
      const { version } = await store.set(key, bytes('old'), write);
      const holder = await admin.connect();
      try {
        await holder.query('BEGIN');
        await holder.query(`SELECT 1 FROM "${schema}".ordo_sessions WHERE key = $1 FOR UPDATE`, [Buffer.from(key)]);
        const result = await settle(store.set(key, bytes('new'), write), 5000);
        expect(result.ok).toBe(false);
        if (!result.ok) expect(result.error).toBeInstanceOf(StoreUnavailableError);
        expect(result.elapsedMs).toBeLessThan(1300 + 250);
      } finally {
        await holder.query('ROLLBACK');
        holder.release();
      }
      expect(text((await store.get(key))?.value)).toBe('old');
      expect((await store.compareAndSet(key, version, bytes('newer'), write)).ok).toBe(true);
      await store.close();
    });

    it('on a caller pool with no statement_timeout, gives up at queryTimeoutMs and cancels the statement on the server', async () => {
      const applicationName = randomApplicationName();
      const pool = new pg.Pool({ connectionString: DATABASE_URL, application_name: applicationName, max: 2 });
      const store = new PostgresStore({ pool, schema, queryTimeoutMs: 300 });
      const key = `orphan/${randomBytes(4).toString('hex')}`;
      await store.set(key, bytes('old'), write);
      const holder = await admin.connect();
      try {
        await holder.query('BEGIN');
        await holder.query(`SELECT 1 FROM "${schema}".ordo_sessions WHERE key = $1 FOR UPDATE`, [Buffer.from(key)]);
        const result = await settle(store.set(key, bytes('late'), write), 5000);
        expect(result.ok).toBe(false);
        if (!result.ok) expect(result.error).toBeInstanceOf(StoreUnavailableError);
        expect(result.elapsedMs).toBeLessThan(1300 + 250);
        // Without the cancel, the backend would still wait for the lock and write 'late' once it is released.
        await waitFor(async () => (await backendsWaiting(admin, applicationName)) === 0);
      } finally {
        await holder.query('ROLLBACK');
        holder.release();
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
      expect(text((await store.get(key))?.value)).toBe('old');
      await store.close();
      await pool.end();
    });
  });

  describe('terminated backends', () => {
    it('recovers after its idle connections are terminated, without an unhandled error', async () => {
      const applicationName = randomApplicationName();
      const store = storeFor(applicationName, { poolSize: 4 });
      const key = `idle/${randomBytes(4).toString('hex')}`;
      await Promise.all([store.set(key, bytes('v1'), write), store.get(key), store.get(key), store.get(key)]);
      expect(await terminateBackends(admin, applicationName)).toBeGreaterThan(0);
      expect(text((await eventually(() => store.get(key)))?.value)).toBe('v1');
      await eventually(() => store.set(key, bytes('v2'), write));
      expect(text((await store.get(key))?.value)).toBe('v2');
      await store.close();
    });

    it('fails a compare-and-set killed mid-statement with a typed error, and keeps the old value whole', async () => {
      const applicationName = randomApplicationName();
      const store = storeFor(applicationName, { queryTimeoutMs: 5000 });
      const key = `cas/${randomBytes(4).toString('hex')}`;
      const old = new Uint8Array(randomBytes(100_000));
      const { version } = await store.set(key, old, write);
      const holder = await admin.connect();
      try {
        await holder.query('BEGIN');
        await holder.query(`SELECT 1 FROM "${schema}".ordo_sessions WHERE key = $1 FOR UPDATE`, [Buffer.from(key)]);
        const pending = settle(store.compareAndSet(key, version, new Uint8Array(randomBytes(100_000)), write), 5000);
        await waitFor(async () => (await backendsWaiting(admin, applicationName)) === 1);
        expect(await terminateBackends(admin, applicationName)).toBe(1);
        const result = await pending;
        expect(result.ok).toBe(false);
        if (!result.ok) expect(result.error).toBeInstanceOf(StoreUnavailableError);
      } finally {
        await holder.query('ROLLBACK');
        holder.release();
      }
      const record = await eventually(() => store.get(key));
      expect(Buffer.from(record!.value).equals(Buffer.from(old))).toBe(true);
      expect(record!.version).toBe(version);
      expect((await store.compareAndSet(key, version, bytes('after'), write)).ok).toBe(true);
      await store.close();
    });

    it('fails an open killed mid-migration, rolled back, and opens on the next call', async () => {
      const applicationName = randomApplicationName();
      const freshSchema = randomSchema('ordo_faults_mig');
      const store = new PostgresStore({ connectionString: DATABASE_URL, schema: freshSchema, applicationName, queryTimeoutMs: 5000 });
      const holder = await admin.connect();
      try {
        await holder.query('SELECT pg_advisory_lock($1)', [POSTGRES_MIGRATION_LOCK_ID]);
        let pending: ReturnType<typeof settle<unknown>>;
        try {
          pending = settle(store.set('m', bytes('x'), write), 5000); // opens lazily, then waits for the lock mid-transaction
          await waitFor(async () => (await backendsWaiting(admin, applicationName, 'advisory')) === 1);
          expect(await terminateBackends(admin, applicationName)).toBe(1);
        } finally {
          await holder.query('SELECT pg_advisory_unlock($1)', [POSTGRES_MIGRATION_LOCK_ID]);
        }
        const result = await pending;
        expect(result.ok).toBe(false);
        if (!result.ok) expect(result.error).toBeInstanceOf(StoreUnavailableError);
        const { rows } = await admin.query('SELECT 1 FROM pg_namespace WHERE nspname = $1', [freshSchema]);
        expect(rows).toEqual([]); // nothing of the killed migration remains
        await eventually(() => store.set('m', bytes('y'), write));
        expect(text((await store.get('m'))?.value)).toBe('y');
      } finally {
        holder.release();
        await store.close();
        await dropSchema(admin, freshSchema);
      }
    });

    it('under load with backends killed at random: every call settles typed, and values stay whole', async () => {
      const applicationName = randomApplicationName();
      const store = storeFor(applicationName, { poolSize: 4 });
      const keys = Array.from({ length: 4 }, (_, i) => `chaos/${randomBytes(4).toString('hex')}/${i}`);
      const written = new Map(keys.map((key) => [key, new Set<string>()]));
      const digest = (value: Uint8Array): string => createHash('sha256').update(value).digest('hex');
      const valueFor = (key: string): Uint8Array => {
        const value = new Uint8Array(randomBytes(20_000 + Math.floor(Math.random() * 60_000)));
        written.get(key)!.add(digest(value));
        return value;
      };
      for (const key of keys) await store.set(key, valueFor(key), write);

      const outcomes = { ok: 0, unavailable: 0, other: 0 };
      let slowest = 0;
      const until = Date.now() + 1500;
      const worker = async (key: string): Promise<void> => {
        while (Date.now() < until) {
          const current = await settle(store.get(key), 5000);
          const call: Promise<unknown> =
            Math.random() < 0.5
              ? store.set(key, valueFor(key), write)
              : store.compareAndSet(key, current.ok ? (current.value?.version ?? null) : null, valueFor(key), write);
          for (const result of [current, await settle(call, 5000)]) {
            slowest = Math.max(slowest, result.elapsedMs);
            if (result.ok) outcomes.ok++;
            else if (result.error instanceof StoreUnavailableError) outcomes.unavailable++;
            else {
              expect(result.error).toBeInstanceOf(StoreError);
              outcomes.other++;
            }
          }
        }
      };
      let kills = 0;
      const killer = async (): Promise<void> => {
        while (Date.now() < until) {
          await new Promise((resolve) => setTimeout(resolve, 20 + Math.random() * 30));
          kills += await terminateBackends(admin, applicationName);
        }
      };
      await Promise.all([killer(), ...keys.flatMap((key) => [worker(key), worker(key), worker(key)])]);

      expect(kills).toBeGreaterThan(0);
      expect(outcomes.ok).toBeGreaterThan(0);
      expect(outcomes.unavailable).toBeGreaterThan(0);
      expect(slowest).toBeLessThan(2000 + 250);
      for (const key of keys) {
        const record = await eventually(() => store.get(key));
        expect(written.get(key)!.has(digest(record!.value))).toBe(true);
      }
      await store.close();
    });

    it('keeps a caller pool with no error listener of its own from crashing while the store uses it', async () => {
      const applicationName = randomApplicationName();
      const pool = new pg.Pool({ connectionString: DATABASE_URL, application_name: applicationName, max: 3 });
      const store = new PostgresStore({ pool, schema });
      await Promise.all([store.set('pool/a', bytes('a'), write), store.get('pool/a'), store.get('pool/a')]);
      expect(await terminateBackends(admin, applicationName)).toBeGreaterThan(0);
      await waitFor(() => pool.totalCount === 0);
      expect(text((await store.get('pool/a'))?.value)).toBe('a');
      await store.close();
      expect(pool.listenerCount('error')).toBe(0);
      await pool.end();
    });
  });
});
