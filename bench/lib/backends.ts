/**
 * The four contenders on each backend, each in its own file / key prefix / table:
 * - `ordo`: ordo-sessions through its public API;
 * - `floor`: the raw driver with the same settings, plus AES-256-GCM (createCipheriv,
 *   randomBytes(12)) and JSON: the least any encrypted store must do;
 * - `plain`: the raw driver with plaintext JSON, no crypto;
 * - `keyv`: keyv 5 with its adapter for that backend, with a namespace, plaintext.
 */
import Database from 'better-sqlite3';
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import Keyv from 'keyv';
import KeyvSqlite from '@keyv/sqlite';
import KeyvRedis from '@keyv/redis';
import KeyvPostgres from '@keyv/postgres';
import pg from 'pg';
import { createClient, RESP_TYPES } from 'redis';
import { open as openEnvelope, seal as sealEnvelope, type RecordIdentity } from '../../src/crypto/envelope.ts';
import { Keyring, PostgresStore, RedisStore, SessionManager, SqliteStore } from '../../src/index.ts';
import { BareCrypto, session } from './payload.ts';
import type { Operation } from './stats.ts';

export type VariantName = 'ordo' | 'floor' | 'plain' | 'keyv';
export const VARIANTS: readonly VariantName[] = ['ordo', 'floor', 'plain', 'keyv'];

export interface Variant {
  readonly get: Operation;
  readonly set: Operation;
}

export interface Backend {
  readonly name: 'sqlite' | 'redis' | 'postgres';
  readonly variants: Record<VariantName, Variant>;
  /** How keyv's adapter was configured, and anything else a reader must know. */
  readonly notes: string[];
  /**
   * Diagnostic contenders measured in the same rounds (sequentially, and at 64 in flight when the
   * plan measures throughput), to locate where the library's cost goes. Either operation may be absent.
   */
  readonly diagnostics?: Record<string, Partial<Variant>>;
  close(): Promise<void>;
}

/** Distinct accounts each variant cycles through. */
export const ACCOUNTS = 1000;
const TTL_MS = 8 * 3600_000;
const account = (i: number): string => `XY${(i % ACCOUNTS).toString().padStart(6, '0')}`;

export function benchKeyring(): Keyring {
  return new Keyring([{ id: 'bench', key: randomBytes(32) }]);
}

function ordoVariant(manager: SessionManager): Variant {
  return {
    get: (i) => manager.getSession('fyers', account(i)),
    set: (i) => manager.setSession('fyers', account(i), session(i), { ttlMs: TTL_MS }),
  };
}

function keyvVariant(keyv: Keyv): Variant {
  return {
    get: (i) => keyv.get(`fyers/${account(i)}`),
    set: (i) => keyv.set(`fyers/${account(i)}`, session(i), TTL_MS),
  };
}

/** The SqliteStore's table shape, its expiry index included (every write updates that index too). */
const SQLITE_TABLE = `CREATE TABLE IF NOT EXISTS sessions (
  key TEXT NOT NULL PRIMARY KEY, value BLOB NOT NULL, expires_at INTEGER, updated_at INTEGER NOT NULL, version TEXT NOT NULL);
  CREATE INDEX IF NOT EXISTS sessions_expires_at ON sessions (expires_at) WHERE expires_at IS NOT NULL;`;

/** better-sqlite3 with the store's pragmas and table shape; `seal`/`open` turn data into the stored value and back. */
function rawSqlite(
  path: string,
  seal: (data: unknown, i: number, expiresAt: number) => Buffer | string,
  open: (value: Buffer | string, i: number, expiresAt: number | null) => unknown,
): { variant: Variant; db: Database.Database } {
  const db = new Database(path);
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = NORMAL');
  db.exec(SQLITE_TABLE);
  const select = db.prepare<[string], { value: Buffer | string; expires_at: number | null }>('SELECT value, expires_at FROM sessions WHERE key = ?');
  const upsert = db.prepare(
    `INSERT INTO sessions (key, value, expires_at, updated_at, version) VALUES (?, ?, ?, ?, ?)
     ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at,
       updated_at = excluded.updated_at, version = excluded.version`,
  );
  return {
    db,
    variant: {
      get: (i) => {
        const row = select.get(`default/fyers/${account(i)}`);
        if (row === undefined || (row.expires_at !== null && row.expires_at <= Date.now())) return undefined;
        return open(row.value, i, row.expires_at);
      },
      set: (i) => {
        const now = Date.now();
        upsert.run(`default/fyers/${account(i)}`, seal(session(i), i, now + TTL_MS), now + TTL_MS, now, String(i));
      },
    },
  };
}

/**
 * The floor plus what SqliteStore does around each write while anyone watches: an explicit immediate
 * transaction and one change-log row (for subscribe), pruned every 500 rows to the last 10 000.
 */
function loggedFloor(path: string, crypto: BareCrypto): { set: Operation; db: Database.Database } {
  const db = new Database(path);
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = NORMAL');
  db.exec(SQLITE_TABLE);
  db.exec('CREATE TABLE IF NOT EXISTS changes (id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL, kind TEXT NOT NULL)');
  const upsert = db.prepare(
    `INSERT INTO sessions (key, value, expires_at, updated_at, version) VALUES (?, ?, ?, ?, ?)
     ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at,
       updated_at = excluded.updated_at, version = excluded.version`,
  );
  const log = db.prepare('INSERT INTO changes (key, kind) VALUES (?, ?)');
  const prune = db.prepare('DELETE FROM changes WHERE id <= ?');
  const write = db.transaction((key: string, value: Buffer, now: number, version: string) => {
    upsert.run(key, value, now + TTL_MS, now, version);
    const id = Number(log.run(key, 'set').lastInsertRowid);
    if (id % 500 === 0) prune.run(id - 10_000);
  });
  return {
    db,
    set: (i) => {
      write.immediate(`default/fyers/${account(i)}`, crypto.sealJson(session(i)), Date.now(), String(i));
    },
  };
}

/**
 * The floor with the library's own envelope (`seal`/`open` of envelope.ts: the key as a KeyObject,
 * the AAD binding broker, key and expiry, the nonce pool) in place of bare AES-GCM: what is left
 * between this and ordo is the manager and the store, not the crypto.
 */
function envelopeCrypto(): { seal: (data: unknown, i: number, expiresAt: number) => Buffer; open: (value: Buffer, i: number, expiresAt: number | null) => unknown } {
  const keyring = benchKeyring();
  const identity = (i: number, expiresAt: number | null): RecordIdentity => ({ kind: 'session', namespace: 'default', broker: 'fyers', key: account(i), expiresAt });
  return {
    seal: (data, i, expiresAt) => sealEnvelope(keyring, Buffer.from(JSON.stringify(data), 'utf8'), identity(i, expiresAt)),
    open: (value, i, expiresAt) => JSON.parse(openEnvelope(keyring, value, identity(i, expiresAt)).toString('utf8')),
  };
}

export async function sqliteBackend(dir: string): Promise<Backend> {
  const crypto = new BareCrypto();
  const manager = await SessionManager.open({ keyring: benchKeyring(), store: new SqliteStore({ path: join(dir, 'ordo.db') }) });
  const floor = rawSqlite(join(dir, 'floor.db'), (data) => crypto.sealJson(data), (value) => crypto.openJson(value as Buffer));
  const plain = rawSqlite(join(dir, 'plain.db'), (data) => JSON.stringify(data), (value) => JSON.parse(value as string));
  const adapter = new KeyvSqlite({ uri: `sqlite://${join(dir, 'keyv.db')}` });
  // @keyv/sqlite has no pragma option; it runs every statement on one sqlite3 connection, so
  // the pragmas set through its query() apply to every later call. Read back to be sure.
  await adapter.query('PRAGMA journal_mode = WAL');
  await adapter.query('PRAGMA synchronous = NORMAL');
  const [mode] = (await adapter.query('PRAGMA journal_mode')) as Array<{ journal_mode: string }>;
  const [sync] = (await adapter.query('PRAGMA synchronous')) as Array<{ synchronous: number }>;
  if (mode?.journal_mode !== 'wal' || sync?.synchronous !== 1) throw new Error('could not set WAL / synchronous=NORMAL on keyv sqlite');
  const keyv = new Keyv({ store: adapter, namespace: 'bench' });
  const logged = loggedFloor(join(dir, 'floor-log.db'), crypto);
  const envelope = envelopeCrypto();
  const withEnvelope = rawSqlite(join(dir, 'floor-envelope.db'), envelope.seal, (value, i, expiresAt) => envelope.open(value as Buffer, i, expiresAt));
  return {
    name: 'sqlite',
    variants: { ordo: ordoVariant(manager), floor: floor.variant, plain: plain.variant, keyv: keyvVariant(keyv) },
    diagnostics: {
      // the floor in BEGIN IMMEDIATE + one change-log row: what SqliteStore.set does per write while a watcher (subscribe) is registered
      'floor+changelog': { set: logged.set },
      // the floor with the library's envelope instead of bare AES-GCM: ordo / this is the manager and store alone
      'floor with the library envelope': withEnvelope.variant,
    },
    notes: [
      'keyv: @keyv/sqlite (sqlite3 driver); WAL and synchronous=NORMAL set with `adapter.query("PRAGMA ...")` on its single connection and read back (journal_mode=wal, synchronous=1).',
    ],
    async close() {
      await manager.close();
      floor.db.close();
      plain.db.close();
      logged.db.close();
      withEnvelope.db.close();
      await keyv.disconnect();
      for (const name of ['ordo', 'floor', 'plain', 'keyv', 'floor-log', 'floor-envelope']) {
        for (const suffix of ['.db', '.db-wal', '.db-shm']) rmSync(join(dir, name + suffix), { force: true });
      }
    },
  };
}

export async function redisBackend(url: string, run: string): Promise<Backend> {
  const client = createClient({ url });
  client.on('error', () => undefined);
  await client.connect();
  const buffers = client.withTypeMapping({ [RESP_TYPES.BLOB_STRING]: Buffer });
  // The same client with node-redis's per-command timeout off (it is one AbortSignal.timeout per command).
  const untimed = client.withCommandOptions({ timeout: 0 });
  const untimedBuffers = client.withCommandOptions({ timeout: 0, typeMapping: { [RESP_TYPES.BLOB_STRING]: Buffer } });
  const prefix = `ordo-bench-${run}:`;
  const crypto = new BareCrypto();
  const manager = await SessionManager.open({ keyring: benchKeyring(), store: new RedisStore({ client, keyPrefix: `${prefix}ordo:` }) });
  const raw = (name: string, seal: (data: unknown) => Buffer | string, open: (value: Buffer) => unknown, timed = true): Variant => {
    const reader = timed ? buffers : untimedBuffers;
    const writer = timed ? client : untimed;
    return {
      get: async (i) => {
        const value = await reader.get(`${prefix}${name}:default/fyers/${account(i)}`);
        return value === null ? undefined : open(value as Buffer);
      },
      set: (i) =>
        writer.set(`${prefix}${name}:default/fyers/${account(i)}`, seal(session(i)), {
          expiration: { type: 'PXAT', value: Date.now() + TTL_MS },
        }),
    };
  };
  const adapter = new KeyvRedis(url, { namespace: `${prefix}keyv` });
  const keyv = new Keyv({ store: adapter, namespace: `${prefix}keyv`, useKeyPrefix: false });
  return {
    name: 'redis',
    variants: {
      ordo: ordoVariant(manager),
      floor: raw('floor', (data) => crypto.sealJson(data), (value) => crypto.openJson(value)),
      plain: raw('plain', (data) => JSON.stringify(data), (value) => JSON.parse(value.toString('utf8'))),
      keyv: keyvVariant(keyv),
    },
    diagnostics: {
      // the floor on the same client with node-redis's own per-command timeout off: the cheapest raw call
      'floor, node-redis timeout off': raw('floor-untimed', (data) => crypto.sealJson(data), (value) => crypto.openJson(value), false),
    },
    notes: [
      'ordo and the floor share one node-redis client, created with node-redis defaults (the store is given it). node-redis 6 bounds every command by default (5 s, one AbortSignal.timeout per command): the floor pays that; RedisStore bounds each call with one timer of its own and turns the driver timer off for reads (and for writes on a client it owns). keyv: @keyv/redis with its own client (node-redis 5, no per-command timeout), namespace set.',
    ],
    async close() {
      await manager.close(); // never closes a client it was given
      await keyv.disconnect().catch(() => undefined);
      // Every key under the bench prefix (SCAN + UNLINK; never FLUSHALL).
      for await (const keys of client.scanIterator({ MATCH: `${prefix}*`, COUNT: 1000 })) {
        if (keys.length > 0) await client.unlink(keys);
      }
      await client.close();
    },
  };
}

export async function postgresBackend(url: string, run: string): Promise<Backend> {
  const schema = `ordo_bench_${run}`;
  const crypto = new BareCrypto();
  const manager = await SessionManager.open({ keyring: benchKeyring(), store: new PostgresStore({ connectionString: url, schema }) });
  // The floor: a pool of the store's default size, its table shape, named (prepared) statements as the store uses.
  const pool = new pg.Pool({ connectionString: url, max: 10 });
  pool.on('error', () => undefined);
  const raw = async (table: string, type: 'bytea' | 'text', seal: (data: unknown) => Buffer | string, open: (value: Buffer | string) => unknown): Promise<Variant> => {
    await pool.query(`CREATE TABLE IF NOT EXISTS "${schema}"."${table}" (
      key bytea PRIMARY KEY, value ${type} NOT NULL, expires_at bigint NULL, updated_at bigint NOT NULL, version text NOT NULL)`);
    // The PostgresStore's shape: uncompressed values and the partial expiry index.
    await pool.query(`ALTER TABLE "${schema}"."${table}" ALTER COLUMN value SET STORAGE EXTERNAL`);
    await pool.query(`CREATE INDEX IF NOT EXISTS "${table}_expires_at_idx" ON "${schema}"."${table}" (expires_at) WHERE expires_at IS NOT NULL`);
    const get = `SELECT value, expires_at FROM "${schema}"."${table}" WHERE key = $1`;
    const upsert = `INSERT INTO "${schema}"."${table}" (key, value, expires_at, updated_at, version) VALUES ($1, $2, $3, $4, $5)
      ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, expires_at = EXCLUDED.expires_at, updated_at = EXCLUDED.updated_at, version = EXCLUDED.version`;
    return {
      get: async (i) => {
        const { rows } = await pool.query<{ value: Buffer | string; expires_at: string | null }>({
          name: `${table}-get`,
          text: get,
          values: [Buffer.from(`default/fyers/${account(i)}`)],
        });
        const row = rows[0];
        if (row === undefined || (row.expires_at !== null && Number(row.expires_at) <= Date.now())) return undefined;
        return open(row.value);
      },
      set: (i) => {
        const now = Date.now();
        return pool.query({
          name: `${table}-set`,
          text: upsert,
          values: [Buffer.from(`default/fyers/${account(i)}`), seal(session(i)), now + TTL_MS, now, String(i)],
        });
      },
    };
  };
  const floor = await raw('floor', 'bytea', (data) => crypto.sealJson(data), (value) => crypto.openJson(value as Buffer));
  const plain = await raw('plain', 'text', (data) => JSON.stringify(data), (value) => JSON.parse(value as string));
  const adapter = new KeyvPostgres({ uri: url, schema, table: 'keyv' });
  const keyv = new Keyv({ store: adapter, namespace: 'bench' });
  return {
    name: 'postgres',
    variants: { ordo: ordoVariant(manager), floor, plain, keyv: keyvVariant(keyv) },
    notes: ['pools of 10 connections everywhere (the PostgresStore default; pg.Pool default for @keyv/postgres).'],
    async close() {
      await manager.close();
      await keyv.disconnect().catch(() => undefined);
      await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      await pool.end();
    },
  };
}
