/**
 * PostgresStore: the shared conformance suite, then what only PostgreSQL has: the migration,
 * the table's shape, bytea keys, `{ pool }` mode, identifier checks and secret-free errors.
 * Every test works in its own random schema, dropped afterwards.
 */
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { inspect } from 'node:util';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InvalidOptionsError, InvalidSessionKeyError, StoreError, StoreUnavailableError } from '../../src/errors.ts';
import { POSTGRES_SCHEMA_VERSION, PostgresStore } from '../../src/stores/postgres.ts';
import type { SessionStore } from '../../src/stores/store.ts';
import { storeConformanceSuite } from '../store-conformance.ts';
import { adminPool, dropSchema, randomSchema } from '../support/postgres.ts';
import { DATABASE_URL, describeWithService, postgresAvailable } from '../support/services.ts';

const write = { expiresAt: null, updatedAt: 1_700_000_000_000 };

function bytes(text: string): Uint8Array {
  return new Uint8Array(Buffer.from(text, 'utf8'));
}

async function listAll(store: SessionStore, prefix: string, limit = 2): Promise<string[]> {
  const keys: string[] = [];
  let cursor: string | undefined;
  do {
    const page = await store.list(prefix, cursor === undefined ? { limit } : { limit, cursor });
    keys.push(...page.records.map((record) => record.key));
    cursor = page.cursor;
  } while (cursor !== undefined);
  return keys;
}

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => {
      throw new Error('expected a rejection');
    },
    (error: unknown) => error,
  );
}

describeWithService('PostgreSQL', postgresAvailable, 'PostgresStore', () => {
  const schemas: string[] = [];
  let admin: pg.Pool;
  const schemaFor = (label?: string): string => {
    const schema = randomSchema(label);
    schemas.push(schema);
    return schema;
  };

  beforeAll(() => {
    admin = adminPool();
  });

  afterAll(async () => {
    for (const schema of schemas) await dropSchema(admin, schema);
    await admin.end();
  });

  const conformanceSchema = schemaFor();
  // Generous bounds: the suite fires 1,500 writes at once through a 10-connection pool, and a
  // loaded CI machine must not turn the queue wait into a (correct, but unwanted) timeout.
  storeConformanceSuite(
    'PostgresStore',
    async () => new PostgresStore({ connectionString: DATABASE_URL, schema: conformanceSchema, connectTimeoutMs: 30_000, queryTimeoutMs: 30_000 }),
  );

  describe('migration', () => {
    it('is safe when 8 stores open the same fresh schema at once, and idempotent after', async () => {
      const schema = schemaFor();
      const stores = Array.from({ length: 8 }, () => new PostgresStore({ connectionString: DATABASE_URL, schema, poolSize: 2 }));
      try {
        await Promise.all(stores.map((store) => store.open()));
        await Promise.all(stores.map((store) => store.open()));
        await Promise.all(stores.map((store, i) => store.set(`k${i}`, bytes(`v${i}`), write)));
        const late = new PostgresStore({ connectionString: DATABASE_URL, schema });
        await late.open();
        for (let i = 0; i < 8; i++) expect(Buffer.from((await late.get(`k${i}`))!.value).toString()).toBe(`v${i}`);
        await late.close();
        const { rows } = await admin.query(`SELECT version FROM "${schema}".ordo_sessions_migrations ORDER BY version`);
        expect(rows).toEqual(Array.from({ length: POSTGRES_SCHEMA_VERSION }, (_, i) => ({ version: i + 1 })));
        expect(POSTGRES_SCHEMA_VERSION).toBeGreaterThanOrEqual(2);
      } finally {
        await Promise.all(stores.map((store) => store.close()));
      }
    });

    it('opens lazily on the first call, sharing one migration between concurrent calls', async () => {
      const schema = schemaFor();
      const store = new PostgresStore({ connectionString: DATABASE_URL, schema });
      try {
        const results = await Promise.all([store.get('a'), store.set('a', bytes('x'), write), store.open(), store.list('', { limit: 5 })]);
        expect(results[0]).toBeUndefined();
        const { rows } = await admin.query(`SELECT count(*)::int AS n FROM "${schema}".ordo_sessions_migrations`);
        expect(rows[0].n).toBe(POSTGRES_SCHEMA_VERSION);
      } finally {
        await store.close();
      }
    });

    it('creates the table with bytea keys, epoch-ms bigints and a partial expiry index', async () => {
      const schema = schemaFor();
      const store = new PostgresStore({ connectionString: DATABASE_URL, schema, table: 'Sessions_2' });
      try {
        await store.open();
        const columns = await admin.query(
          `SELECT column_name, data_type, is_nullable FROM information_schema.columns
            WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position`,
          [schema, 'Sessions_2'],
        );
        expect(columns.rows).toEqual([
          { column_name: 'key', data_type: 'bytea', is_nullable: 'NO' },
          { column_name: 'value', data_type: 'bytea', is_nullable: 'NO' },
          { column_name: 'expires_at', data_type: 'bigint', is_nullable: 'YES' },
          { column_name: 'updated_at', data_type: 'bigint', is_nullable: 'NO' },
          { column_name: 'version', data_type: 'text', is_nullable: 'NO' },
        ]);
        const indexes = await admin.query<{ indexname: string; indexdef: string }>(
          'SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = $1 AND tablename = $2',
          [schema, 'Sessions_2'],
        );
        const expiry = indexes.rows.find((row) => row.indexname === 'Sessions_2_expires_at_idx');
        expect(expiry?.indexdef).toMatch(/\(expires_at\) WHERE \(expires_at IS NOT NULL\)$/);
        expect(indexes.rows.some((row) => /UNIQUE INDEX .* \(key\)$/.test(row.indexdef))).toBe(true);
      } finally {
        await store.close();
      }
    });

    it('refuses a table migrated by a newer version', async () => {
      const schema = schemaFor();
      const first = new PostgresStore({ connectionString: DATABASE_URL, schema });
      await first.open();
      await first.close();
      await admin.query(`INSERT INTO "${schema}".ordo_sessions_migrations (version) VALUES (99)`);
      const store = new PostgresStore({ connectionString: DATABASE_URL, schema });
      const error = await rejection(store.open());
      expect(error).toBeInstanceOf(StoreError);
      expect(error).not.toBeInstanceOf(StoreUnavailableError);
      expect((error as Error).message).toMatch(/newer/);
      await store.close();
    });

    it('runs on a migrated schema with a role that may not CREATE anything', async () => {
      const schema = schemaFor();
      const role = `ordo_test_role_${randomBytes(4).toString('hex')}`;
      const owner = new PostgresStore({ connectionString: DATABASE_URL, schema });
      await owner.open();
      await owner.close();
      await admin.query(`CREATE ROLE ${role} LOGIN`);
      try {
        await admin.query(`GRANT USAGE ON SCHEMA "${schema}" TO ${role}`);
        await admin.query(`GRANT SELECT ON "${schema}".ordo_sessions_migrations TO ${role}`);
        await admin.query(`GRANT SELECT, INSERT, UPDATE, DELETE ON "${schema}".ordo_sessions TO ${role}`);
        const url = new URL(DATABASE_URL);
        url.username = role;
        const store = new PostgresStore({ connectionString: url.href, schema });
        try {
          await store.open();
          const { version } = await store.set('least/privilege', bytes('ok'), write);
          expect((await store.compareAndSet('least/privilege', version, bytes('ok2'), write)).ok).toBe(true);
          expect(await store.deleteByPrefix('least/')).toBe(1);
        } finally {
          await store.close();
        }
      } finally {
        await admin.query(`DROP OWNED BY ${role}`);
        await admin.query(`DROP ROLE ${role}`);
      }
    });
  });

  describe('storage', () => {
    let store: PostgresStore;
    let schema: string;

    beforeAll(async () => {
      schema = schemaFor();
      store = new PostgresStore({ connectionString: DATABASE_URL, schema });
      await store.open();
    });

    afterAll(async () => {
      await store.close();
    });

    it('has kind postgres', () => {
      expect(store.kind).toBe('postgres');
    });

    it('stores the UTF-8 bytes of the key and the value byte for byte', async () => {
      const key = `raw/${randomUUID()}/a\u0000b😀`;
      const value = new Uint8Array(randomBytes(4096));
      const { version } = await store.set(key, value, { expiresAt: 1_800_000_000_123, updatedAt: 1_700_000_000_456 });
      const { rows } = await admin.query(`SELECT * FROM "${schema}".ordo_sessions WHERE key = $1`, [Buffer.from(key, 'utf8')]);
      expect(rows).toHaveLength(1);
      expect(Buffer.compare(rows[0].key, Buffer.from(key, 'utf8'))).toBe(0);
      expect(Buffer.compare(rows[0].value, Buffer.from(value))).toBe(0);
      expect(rows[0]).toMatchObject({ expires_at: '1800000000123', updated_at: '1700000000456', version });
      const record = await store.get(key);
      expect(record!.value).toBeInstanceOf(Uint8Array);
      expect(record!.value.buffer.byteLength).toBe(4096); // its own buffer, not a view of shared memory
    });

    it('snapshots the value when called, not when the write is sent', async () => {
      const key = `snap/${randomUUID()}`;
      const value = bytes('original');
      const pending = store.set(key, value, write);
      value.fill(0);
      await pending;
      expect(Buffer.from((await store.get(key))!.value).toString()).toBe('original');
    });

    it('lists keys with %, _, \\ and NUL exactly, in byte order', async () => {
      const root = `esc/${randomUUID()}/`;
      const keys = ['p%/1', 'pX/1', 'p_/1', 'p\\/1', 'p\\\\/1', 'p\u0000/1', 'p\u0000', 'p', 'p\u0001/1', 'p\u0000\u0000/1', 'p%%/1', 'p/1'];
      for (const key of keys) await store.set(root + key, bytes(key), write);
      for (const prefix of ['p%/', 'p_/', 'p\\/', 'p\u0000', 'p\u0000/', 'p\u0000\u0000', 'p/']) {
        const expected = keys.filter((key) => key.startsWith(prefix)).map((key) => root + key);
        expect(await listAll(store, root + prefix)).toEqual(expected.sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b))));
      }
      expect((await listAll(store, root, 5)).length).toBe(keys.length);
      expect(await store.deleteByPrefix(`${root}p\u0000`)).toBe(3);
      expect(await store.purgeExpired(`${root}p`, Number.MAX_SAFE_INTEGER)).toBe(0);
    });

    it('lists a prefix ending in U+FFFF or an astral character, whose upper bound carries', async () => {
      const root = `carry/${randomUUID()}/`;
      const keys = ['a\uffff', 'a\uffff/1', 'a\u{10ffff}', 'a\u{10ffff}x', 'b'];
      for (const key of keys) await store.set(root + key, bytes(key), write);
      expect(await listAll(store, `${root}a\uffff`)).toEqual([`${root}a\uffff`, `${root}a\uffff/1`]);
      expect(await listAll(store, `${root}a\u{10ffff}`)).toEqual([`${root}a\u{10ffff}`, `${root}a\u{10ffff}x`]);
    });

    it('pages with opaque cursors and refuses forged ones, and bad limits', async () => {
      const root = `cursor/${randomUUID()}/`;
      for (const key of ['a', 'b', 'c']) await store.set(root + key, bytes(key), write);
      const first = await store.list(root, { limit: 2 });
      expect(first.records.map((record) => record.key)).toEqual([`${root}a`, `${root}b`]);
      expect(first.cursor).toMatch(/^[A-Za-z0-9_-]+$/);
      const second = await store.list(root, { limit: 2, cursor: first.cursor! });
      expect(second.records.map((record) => record.key)).toEqual([`${root}c`]);
      expect(second.cursor).toBeUndefined();
      expect(await rejection(store.list(root, { limit: 2, cursor: 'not a cursor!' }))).toBeInstanceOf(InvalidOptionsError);
      for (const limit of [0, -1, 1.5, Number.NaN]) {
        expect(await rejection(store.list(root, { limit }))).toBeInstanceOf(InvalidOptionsError);
      }
    });

    it('refuses keys that are not well-formed Unicode, which would collide once encoded', async () => {
      const error = await rejection(store.set('bad/\ud800', bytes('x'), write));
      expect(error).toBeInstanceOf(InvalidSessionKeyError);
      expect(await rejection(store.get('bad/\udc00'))).toBeInstanceOf(InvalidSessionKeyError);
      expect(await rejection(store.list('bad/\ud800', { limit: 1 }))).toBeInstanceOf(InvalidSessionKeyError);
    });

    it('reports a statement the server refuses as a StoreError, with no value in it', async () => {
      const secret = Buffer.from(`secret-token-${randomUUID()}`);
      const error = await rejection(store.set(`err/${randomUUID()}`, secret, { expiresAt: null, updatedAt: 1.5 }));
      expect(error).toBeInstanceOf(StoreError);
      expect(error).not.toBeInstanceOf(StoreUnavailableError);
      const everything = `${inspect(error, { depth: 5 })} ${JSON.stringify(error)} ${(error as Error).stack}`;
      for (const form of [secret.toString(), secret.toString('hex'), secret.toString('base64')]) {
        expect(everything).not.toContain(form);
      }
    });
  });

  describe('configuration', () => {
    it('refuses schema and table names that are not simple identifiers', () => {
      const bad = ['', 'a-b', 'a b', 'a;drop table x', 'x"y', '"x"', '1abc', 'a.b', 'ü', 'x'.repeat(64)];
      for (const schema of bad) {
        expect(() => new PostgresStore({ connectionString: DATABASE_URL, schema })).toThrow(InvalidOptionsError);
      }
      for (const table of [...bad, 'x'.repeat(49)]) {
        expect(() => new PostgresStore({ connectionString: DATABASE_URL, table })).toThrow(InvalidOptionsError);
      }
      expect(() => new PostgresStore({ connectionString: DATABASE_URL, schema: 'pg_temp' })).toThrow(InvalidOptionsError);
      expect(() => new PostgresStore({ connectionString: '' })).toThrow(InvalidOptionsError);
      expect(() => new PostgresStore({ connectionString: DATABASE_URL, queryTimeoutMs: 0 })).toThrow(InvalidOptionsError);
      expect(() => new PostgresStore({ connectionString: DATABASE_URL, poolSize: 1.5 })).toThrow(InvalidOptionsError);
    });

    it('keeps the password out of messages, causes and inspection', async () => {
      const schema = schemaFor();
      const url = new URL(DATABASE_URL);
      url.password = 'hunter2-do-not-print';
      const store = new PostgresStore({ connectionString: url.href, schema }); // trust auth: any password works
      try {
        await store.set('a', bytes('x'), write);
        await admin.query(`DROP TABLE "${schema}".ordo_sessions`);
        const error = await rejection(store.get('a'));
        expect(error).toBeInstanceOf(StoreError);
        expect((error as StoreError).message).toMatch(/42P01/);
        const everything = `${inspect(error, { depth: 5 })} ${(error as Error).stack} ${inspect(store, { depth: 5 })} ${String(store)}`;
        expect(everything).not.toContain('hunter2');
      } finally {
        await store.close();
      }
    });

    it('in { pool } mode, uses the pool and leaves it usable (and without its listener) after close', async () => {
      const schema = schemaFor();
      const pool = new pg.Pool({ connectionString: DATABASE_URL, max: 3 });
      try {
        const listeners = pool.listenerCount('error');
        const store = new PostgresStore({ pool, schema });
        const { version } = await store.set('p/1', bytes('one'), write);
        expect((await store.compareAndSet('p/1', version, bytes('two'), write)).ok).toBe(true);
        await store.close();
        await store.close();
        expect(pool.listenerCount('error')).toBe(listeners);
        const { rows } = await pool.query(`SELECT value FROM "${schema}".ordo_sessions`);
        expect(Buffer.from(rows[0].value).toString()).toBe('two');
        // A second store of another table on the same pool: statement names never clash.
        const other = new PostgresStore({ pool, schema, table: 'other_sessions' });
        const again = new PostgresStore({ pool, schema });
        await other.set('p/1', bytes('other'), write);
        expect(Buffer.from((await again.get('p/1'))!.value).toString()).toBe('two');
        expect(Buffer.from((await other.get('p/1'))!.value).toString()).toBe('other');
        await Promise.all([other.close(), again.close()]);
      } finally {
        await pool.end();
      }
    });
  });

  describe('notifications', () => {
    it('notifies only while some store watches, through a heartbeat row that goes when the watcher does', async () => {
      const schema = schemaFor('notify');
      const writer = new PostgresStore({ connectionString: DATABASE_URL, schema });
      const watcher = new PostgresStore({ connectionString: DATABASE_URL, schema });
      const channel = `ordo_${createHash('sha256').update(`${schema}.ordo_sessions`).digest('hex').slice(0, 40)}`;
      const spy = new pg.Client({ connectionString: DATABASE_URL });
      const heard: string[] = [];
      spy.on('notification', (message) => heard.push(message.payload ?? ''));
      const watchers = async (): Promise<number> =>
        Number((await admin.query(`SELECT count(*) AS n FROM "${schema}".ordo_sessions_watchers`)).rows[0].n);
      const hex = (key: string): string => Buffer.from(key).toString('hex');
      try {
        await spy.connect();
        await spy.query(`LISTEN "${channel}"`);
        await writer.set('ns/b/unwatched', bytes('1'), write);
        await writer.delete('ns/b/unwatched');
        await watcher.open();
        expect(await watchers()).toBe(0);
        const unsubscribe = await watcher.subscribe!('ns/', () => undefined);
        expect(await watchers()).toBe(1);
        // subscribe resolved after the writer's "anyone watching?" answer went stale: these notify
        await writer.set('ns/b/watched', bytes('2'), write);
        await writer.compareAndSet('ns/b/watched', null, bytes('3'), write); // refused: no row, no notification
        await writer.deleteByPrefix('ns/b/');
        await expect.poll(() => heard, { timeout: 5000 }).toEqual([`set:${hex('ns/b/watched')}`, `delete:${hex('ns/b/watched')}`]);
        await unsubscribe();
        expect(await watchers()).toBe(0);
        await new Promise((resolve) => setTimeout(resolve, 400)); // past the writer's recheck window
        await writer.set('ns/b/after', bytes('4'), write);
        await new Promise((resolve) => setTimeout(resolve, 200));
        expect(heard).toHaveLength(2);
      } finally {
        await spy.end();
        await writer.close();
        await watcher.close();
      }
    });
  });
});
