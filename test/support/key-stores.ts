/**
 * Shared backings for the key-management suites: each `create()` makes fresh, isolated storage
 * (a MemoryStore, a SQLite file, a Redis key prefix, a PostgreSQL schema) that can be opened many
 * times (every manager closes its own store), dumped raw for leak scans, and removed afterwards.
 */
import { randomUUID } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type pg from 'pg';
import { createClient, RESP_TYPES } from 'redis';
import { unclosable } from './shared-store.ts';
import { MemoryStore, PostgresStore, RedisStore, SqliteStore, type SessionStore } from '../../src/index.ts';
import { adminPool, dropSchema, randomSchema } from './postgres.ts';
import { DATABASE_URL, REDIS_URL, postgresAvailable, redisAvailable } from './services.ts';

export interface Backing {
  /** A new store object over this backing's data. */
  open(): SessionStore;
  /** Every raw byte the backend holds for this backing: keys and values (and files, for SQLite). */
  dump(): Promise<Buffer[]>;
  cleanup(): Promise<void>;
  /** For child processes: how to reach the same data (`sqlite:<path>`, `redis:<prefix>`, `postgres:<schema>`). */
  readonly address?: string;
}

export interface BackendKind {
  readonly name: 'memory' | 'sqlite' | 'redis' | 'postgres';
  /** The service it needs, for describeWithService, or undefined. */
  readonly service?: string;
  readonly available: boolean;
  create(): Promise<Backing>;
}

function memory(): Backing {
  const backing = new MemoryStore();
  return {
    open: () => unclosable(backing),
    dump: async () => {
      const out: Buffer[] = [];
      let cursor: string | undefined;
      do {
        const page = await backing.list('', cursor === undefined ? { limit: 1000 } : { limit: 1000, cursor });
        for (const record of page.records) out.push(Buffer.from(record.key), Buffer.from(record.value));
        cursor = page.cursor;
      } while (cursor !== undefined);
      return out;
    },
    cleanup: async () => undefined,
  };
}

function sqlite(): Backing {
  const dir = mkdtempSync(join(tmpdir(), 'ordo-keys-'));
  const path = join(dir, 'sessions.db');
  return {
    address: `sqlite:${path}`,
    open: () => new SqliteStore({ path }),
    dump: async () => ['', '-wal', '-shm'].filter((suffix) => existsSync(path + suffix)).map((suffix) => readFileSync(path + suffix)),
    cleanup: async () => rmSync(dir, { recursive: true, force: true }),
  };
}

function glob(text: string): string {
  return text.replace(/[*?[\]\\]/g, '\\$&');
}

async function redis(): Promise<Backing> {
  const keyPrefix = `ordo-keys-${randomUUID()}:`;
  const raw = createClient({ url: REDIS_URL }).withTypeMapping({ [RESP_TYPES.BLOB_STRING]: Buffer });
  raw.on('error', () => {});
  await raw.connect();
  const keys = async (): Promise<Buffer[]> => {
    const found: Buffer[] = [];
    for await (const batch of raw.scanIterator({ MATCH: `${glob(keyPrefix)}*`, COUNT: 1000 })) found.push(...batch.map((key) => Buffer.from(key)));
    return found;
  };
  return {
    address: `redis:${keyPrefix}`,
    open: () => new RedisStore({ url: REDIS_URL, keyPrefix }),
    dump: async () => {
      const out: Buffer[] = [];
      for (const key of await keys()) {
        out.push(key);
        const value = (await raw.get(key)) as Buffer | null;
        if (value !== null) out.push(Buffer.from(value));
      }
      return out;
    },
    cleanup: async () => {
      const all = await keys();
      for (let i = 0; i < all.length; i += 500) await raw.unlink(all.slice(i, i + 500));
      await raw.close();
    },
  };
}

async function postgres(): Promise<Backing> {
  const schema = randomSchema('ordo_keys');
  const admin: pg.Pool = adminPool();
  return {
    address: `postgres:${schema}`,
    open: () => new PostgresStore({ connectionString: DATABASE_URL, schema, poolSize: 4 }),
    dump: async () => {
      const out: Buffer[] = [];
      const tables = await admin.query<{ table_name: string }>('SELECT table_name FROM information_schema.tables WHERE table_schema = $1', [schema]);
      for (const { table_name } of tables.rows) {
        const { rows } = await admin.query<{ row: string }>(`SELECT t::text AS row FROM "${schema}"."${table_name}" t`);
        for (const { row } of rows) out.push(Buffer.from(row));
        const bytes = await admin.query(`SELECT * FROM "${schema}"."${table_name}"`);
        for (const row of bytes.rows as Array<Record<string, unknown>>) {
          for (const value of Object.values(row)) out.push(Buffer.isBuffer(value) ? value : Buffer.from(String(value)));
        }
      }
      return out;
    },
    cleanup: async () => {
      await dropSchema(admin, schema);
      await admin.end();
    },
  };
}

/** Every backend, the server ones only when their service answers. */
export const BACKENDS: readonly BackendKind[] = [
  { name: 'memory', available: true, create: async () => memory() },
  { name: 'sqlite', available: true, create: async () => sqlite() },
  { name: 'redis', service: 'Redis', available: redisAvailable, create: redis },
  { name: 'postgres', service: 'PostgreSQL', available: postgresAvailable, create: postgres },
];

/** Opens a store from a {@link Backing.address} (for child processes). */
export function storeAt(address: string): SessionStore {
  const colon = address.indexOf(':');
  const kind = address.slice(0, colon);
  const rest = address.slice(colon + 1);
  if (kind === 'sqlite') return new SqliteStore({ path: rest });
  if (kind === 'redis') return new RedisStore({ url: REDIS_URL, keyPrefix: rest });
  if (kind === 'postgres') return new PostgresStore({ connectionString: DATABASE_URL, schema: rest, poolSize: 4 });
  throw new Error(`unknown store address ${address}`);
}
