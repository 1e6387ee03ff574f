/**
 * The stores every reliability suite runs on, each in its own random place (a temp SQLite file,
 * a Redis key prefix, a PostgreSQL schema), with what a test needs to look at them raw and to
 * clean up. Redis and PostgreSQL are the shared services: only our own prefix / schema is touched.
 */
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { createClient, RESP_TYPES } from 'redis';
import { MemoryStore, PostgresStore, RedisStore, SqliteStore, type SessionStore } from '../../src/index.ts';
import { adminPool, dropSchema, randomSchema } from '../support/postgres.ts';
import { DATABASE_URL, REDIS_URL, postgresAvailable, redisAvailable } from '../support/services.ts';

export type StoreKind = 'memory' | 'sqlite' | 'redis' | 'postgres';

/** One store of a test, plus a raw view of what it holds. */
export interface TestStore {
  readonly kind: StoreKind;
  /** A new store instance on the same data (the manager takes the store over and closes it). */
  make(): SessionStore;
  /** Every raw byte string the backend holds for us (keys and values), for leak scans. */
  rawDump(): Promise<Uint8Array[]>;
  /** How many records the backend holds for us, counted below the store API where there is one. */
  rawCount(): Promise<number>;
  /** Removes everything this test store created. */
  cleanup(): Promise<void>;
}

/** Which backends are reachable here (memory and SQLite always are). */
export const availableKinds: readonly StoreKind[] = [
  'memory',
  'sqlite',
  ...(redisAvailable ? (['redis'] as const) : []),
  ...(postgresAvailable ? (['postgres'] as const) : []),
];

/** Every store kind; suites run the unreachable ones under `describeWithService`, which fails them in CI. */
export const allKinds: readonly StoreKind[] = ['memory', 'sqlite', 'redis', 'postgres'];

async function listCount(store: SessionStore): Promise<number> {
  let count = 0;
  let cursor: string | undefined;
  do {
    const page = await store.list('', cursor === undefined ? { limit: 500 } : { limit: 500, cursor });
    count += page.records.length;
    cursor = page.cursor;
  } while (cursor !== undefined);
  return count;
}

export async function createTestStore(kind: StoreKind): Promise<TestStore> {
  switch (kind) {
    case 'memory': {
      // A memory store cannot be reopened: every make() returns the same one, never closed by the manager.
      const shared = new MemoryStore();
      const view: SessionStore = Object.create(shared, { close: { value: async () => undefined } }) as SessionStore;
      for (const name of ['get', 'set', 'compareAndSet', 'delete', 'list', 'deleteByPrefix', 'purgeExpired'] as const) {
        Object.defineProperty(view, name, { value: (shared[name] as (...args: unknown[]) => unknown).bind(shared) });
      }
      return {
        kind,
        make: () => view,
        rawDump: async () => {
          const out: Uint8Array[] = [];
          let cursor: string | undefined;
          do {
            const page = await shared.list('', cursor === undefined ? { limit: 500 } : { limit: 500, cursor });
            for (const record of page.records) out.push(Buffer.from(record.key), record.value);
            cursor = page.cursor;
          } while (cursor !== undefined);
          return out;
        },
        rawCount: () => listCount(shared),
        cleanup: () => shared.close(),
      };
    }
    case 'sqlite': {
      const dir = mkdtempSync(join(tmpdir(), 'ordo-rel-'));
      const path = join(dir, 'sessions.db');
      return {
        kind,
        make: () => new SqliteStore({ path }),
        rawDump: async () => {
          const { readdirSync, readFileSync } = await import('node:fs');
          return readdirSync(dir).map((name) => readFileSync(join(dir, name)));
        },
        rawCount: async () => {
          const db = new Database(path, { readonly: true });
          try {
            return (db.prepare('SELECT count(*) AS n FROM ordo_sessions').get() as { n: number }).n;
          } finally {
            db.close();
          }
        },
        cleanup: async () => rmSync(dir, { recursive: true, force: true }),
      };
    }
    case 'redis': {
      const keyPrefix = `ordo-test-${randomUUID()}:`;
      const raw = createClient({ url: REDIS_URL }).withTypeMapping({ [RESP_TYPES.BLOB_STRING]: Buffer });
      raw.on('error', () => {});
      await raw.connect();
      const keys = async (): Promise<Buffer[]> => {
        const found: Buffer[] = [];
        const match = `${keyPrefix.replace(/[*?[\]\\]/g, '\\$&')}*`;
        for await (const batch of raw.scanIterator({ MATCH: match, COUNT: 1000 })) found.push(...(batch as unknown as Buffer[]));
        return found;
      };
      return {
        kind,
        make: () => new RedisStore({ url: REDIS_URL, keyPrefix }),
        rawDump: async () => {
          const out: Uint8Array[] = [];
          for (const key of await keys()) {
            out.push(key);
            const type = String(await raw.type(key));
            if (type === 'string') {
              const value = (await raw.get(key)) as unknown as Buffer | null;
              if (value) out.push(value);
            } else if (type === 'hash') {
              for (const [field, value] of Object.entries((await raw.hGetAll(key)) as unknown as Record<string, Buffer>)) {
                out.push(Buffer.from(field), value);
              }
            }
          }
          return out;
        },
        rawCount: async () => (await keys()).length,
        cleanup: async () => {
          const found = await keys();
          if (found.length > 0) await raw.unlink(found);
          raw.destroy();
        },
      };
    }
    case 'postgres': {
      const schema = randomSchema('ordo_rel');
      const admin = adminPool();
      return {
        kind,
        make: () => new PostgresStore({ connectionString: DATABASE_URL, schema, poolSize: 2 }),
        rawDump: async () => {
          const tables = await admin.query<{ table_name: string }>(
            'SELECT table_name FROM information_schema.tables WHERE table_schema = $1',
            [schema],
          );
          const out: Uint8Array[] = [];
          for (const { table_name } of tables.rows) {
            // Every column of every row, as bytea: text columns through convert_to.
            const rows = await admin.query<{ row: Buffer }>(`SELECT convert_to(t::text, 'UTF8') AS row FROM "${schema}"."${table_name}" t`);
            for (const { row } of rows.rows) out.push(row);
            const blobs = await admin
              .query<{ key: Buffer; value: Buffer }>(`SELECT key::bytea AS key, value::bytea AS value FROM "${schema}"."${table_name}"`)
              .catch(() => ({ rows: [] as Array<{ key: Buffer; value: Buffer }> }));
            for (const { key, value } of blobs.rows) out.push(key, value);
          }
          return out;
        },
        rawCount: async () => {
          const exists = await admin.query('SELECT 1 FROM information_schema.tables WHERE table_schema = $1 AND table_name = $2', [
            schema,
            'ordo_sessions',
          ]);
          if (exists.rowCount === 0) return 0;
          const { rows } = await admin.query<{ n: number }>(`SELECT count(*)::int AS n FROM "${schema}".ordo_sessions`);
          return rows[0]?.n ?? 0;
        },
        cleanup: async () => {
          await dropSchema(admin, schema);
          await admin.end();
        },
      };
    }
  }
}

/** The service a store kind needs, for `describeWithService`. */
export function serviceOf(kind: StoreKind): { name: string; available: boolean } {
  if (kind === 'redis') return { name: 'Redis', available: redisAvailable };
  if (kind === 'postgres') return { name: 'PostgreSQL', available: postgresAvailable };
  return { name: kind, available: true };
}
