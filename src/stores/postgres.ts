/**
 * The shared server store: one PostgreSQL table, safe for many processes at once.
 *
 * - Keys are stored as the UTF-8 bytes of the storage key (`bytea`, which holds NUL and sorts
 *   bytewise, that is in code point order), so "starts with prefix" is the index range
 *   `prefix <= key < upper` with no pattern syntax to escape.
 * - Every statement is parameterised and named (prepared once per connection); values travel
 *   as binary parameters, byte for byte.
 * - Compare-and-set is one statement: `UPDATE ... WHERE key AND version` or
 *   `INSERT ... ON CONFLICT DO NOTHING`; PostgreSQL's row locks make it atomic.
 * - Every call is bounded: it settles within `connectTimeoutMs + queryTimeoutMs`, with a
 *   {@link StoreUnavailableError} when the server is down, unreachable, restarting or too slow.
 *   A call that gave up before it got a connection is never sent later; a statement it gave up
 *   on is cancelled on the server, so a timed-out write cannot land long after its error.
 * - The schema is created by a versioned migration under a transaction-scoped advisory lock, so
 *   any number of processes may open the same fresh database at once.
 * - Change notifications: while any store watches the table (a heartbeat row in
 *   `<table>_watchers`), every write statement is a CTE that also calls `pg_notify`, so the
 *   notification commits with the write, atomically, in the same round trip. Unwatched, writes
 *   are plain statements: a NOTIFY takes a database-wide lock until its commit ends, which
 *   serialises every notifying commit (a third of the write throughput at 64 in flight). The channel is
 *   `ordo_<hash of schema.table>` (a channel name is at most 63 bytes), the payload
 *   `<kind>:<hex of the storage key's bytes>` (hex, since a key may hold NUL, which text cannot).
 *   A payload is limited to 8000 bytes: a key over 3900 bytes (never a manager's key, which is at
 *   most about 2.2 KB) is sent as `<kind>#<sha256 hex>` instead, which subscribers cannot map back
 *   to a key and drop. See `subscribe`.
 */
import { createHash, randomUUID } from 'node:crypto';
import { connect } from 'node:net';
import pg from 'pg';
import type { Pool, PoolClient, QueryConfig, QueryResult, QueryResultRow } from 'pg';
import {
  InvalidOptionsError,
  InvalidSessionKeyError,
  SessionClosedError,
  SessionError,
  StoreError,
  StoreUnavailableError,
} from '../errors.ts';
import { newVersion } from './keys.ts';
import { positiveInteger, settleWithin } from './timeouts.ts';
import { WATCHER_HEARTBEAT_MS, WATCHER_TTL_MS, WatchedAnswer, waitForWriters } from './watchers.ts';
import type {
  CompareAndSetResult,
  ListOptions,
  RecordPage,
  SessionStore,
  StoreChange,
  StoredRecord,
  WriteOptions,
} from './store.ts';

/** What both ways of building a {@link PostgresStore} accept. */
interface PostgresStoreCommonOptions {
  /** Schema of the table, created if missing. A simple identifier. Default `'public'`. */
  readonly schema?: string;
  /**
   * The table, created if missing, beside `<table>_migrations`. A simple identifier of at most
   * 48 characters. Default `'ordo_sessions'`.
   */
  readonly table?: string;
  /** How long a call may wait for a connection (connect, or a free one in the pool). Default 5000 ms. */
  readonly connectTimeoutMs?: number;
  /** How long one statement may run, enforced by the client and, on a pool the store creates, by the server. Default 5000 ms. */
  readonly queryTimeoutMs?: number;
}

/**
 * Options of a {@link PostgresStore} that creates (and closes) its own pool.
 *
 * @example
 * ```ts
 * const options: PostgresStoreUrlOptions = { connectionString: process.env.DATABASE_URL!, poolSize: 4 };
 * ```
 */
export interface PostgresStoreUrlOptions extends PostgresStoreCommonOptions {
  /** A `postgres://` URL. Its password never appears in an error. */
  readonly connectionString: string;
  /** Most connections the store opens. Default 10. */
  readonly poolSize?: number;
  /** `application_name` of its connections (an `application_name` in the URL wins). Default `'ordo-sessions'`. */
  readonly applicationName?: string;
  readonly pool?: never;
}

/**
 * Options of a {@link PostgresStore} on a `pg.Pool` the caller owns: the store never ends it.
 * The store bounds each call and cancels a statement it gave up on, but give that pool a
 * `connectionTimeoutMillis` (so abandoned connection attempts end too) and a `statement_timeout`
 * (the surest bound on the server).
 *
 * @example
 * ```ts
 * const options: PostgresStorePoolOptions = { pool: new pg.Pool({ connectionString }), schema: 'auth' };
 * ```
 */
export interface PostgresStorePoolOptions extends PostgresStoreCommonOptions {
  /** The pool to use. The store adds an `'error'` listener while open and removes it on close. */
  readonly pool: Pool;
  readonly connectionString?: never;
}

/**
 * Options of {@link PostgresStore}: a connection string, or a pool the caller owns.
 *
 * @example
 * ```ts
 * const options: PostgresStoreOptions = { connectionString: 'postgres://app@db/app', schema: 'ordo' };
 * ```
 */
export type PostgresStoreOptions = PostgresStoreUrlOptions | PostgresStorePoolOptions;

/**
 * The key of the transaction-scoped advisory lock every migration holds (`'ordo'` in ASCII),
 * whatever the schema or table, so that concurrent `CREATE SCHEMA`s never race.
 *
 * @example
 * ```sql
 * SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objid = 1869767791; -- who is migrating
 * ```
 */
export const POSTGRES_MIGRATION_LOCK_ID = 0x6f72646f;

interface Row extends QueryResultRow {
  key: Buffer;
  value: Buffer;
  expires_at: string | number | bigint | null;
  updated_at: string | number | bigint;
  version: string;
}

type Migration = (names: TableNames) => string[];

interface TableNames {
  /** The schema's name, unquoted. */
  readonly schema: string;
  /** The migrations table's name, unquoted and unqualified. */
  readonly migrationsName: string;
  /** `"schema"."table"` */
  readonly table: string;
  /** `"schema"."table_migrations"` */
  readonly migrations: string;
  /** `"table_expires_at_idx"`, unqualified: an index lives in its table's schema. */
  readonly expiryIndex: string;
  /** `"schema"."table_leases"`: getOrRefresh's leases, apart from records. */
  readonly leases: string;
  /** `"schema"."table_watchers"`: heartbeats of the stores listening for changes. */
  readonly watchers: string;
}

/** Schema version n is reached by running `MIGRATIONS[n - 1]`; never edit one, append. */
const MIGRATIONS: readonly Migration[] = [
  (names) => [
    `CREATE TABLE IF NOT EXISTS ${names.table} (
      key        bytea  PRIMARY KEY,
      value      bytea  NOT NULL,
      expires_at bigint NULL,
      updated_at bigint NOT NULL,
      version    text   NOT NULL
    )`,
    // Sealed values are ciphertext: compressing them is wasted work.
    `ALTER TABLE ${names.table} ALTER COLUMN value SET STORAGE EXTERNAL`,
    `CREATE INDEX IF NOT EXISTS ${names.expiryIndex} ON ${names.table} (expires_at) WHERE expires_at IS NOT NULL`,
  ],
  // Leases (getOrRefresh): rows rather than advisory locks, so a lease survives pool churn and
  // can never leak onto a pooled connection. expires_at is the server's clock, in epoch ms.
  (names) => [
    `CREATE TABLE IF NOT EXISTS ${names.leases} (
      key        bytea  PRIMARY KEY,
      token      text   NOT NULL,
      expires_at bigint NOT NULL
    )`,
  ],
  // Watchers (watch): one heartbeat row per listening store, so that writes notify only while
  // someone listens. A NOTIFY serialises every notifying commit in the database.
  (names) => [
    `CREATE TABLE IF NOT EXISTS ${names.watchers} (
      id      text   PRIMARY KEY,
      seen_at bigint NOT NULL
    )`,
  ],
];

/** The schema version this build migrates to. */
export const POSTGRES_SCHEMA_VERSION = MIGRATIONS.length;

/** The server's clock in epoch ms: one clock for every host sharing the table. */
const SERVER_NOW_MS = '(extract(epoch from clock_timestamp()) * 1000)::bigint';

const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]*$/;
const LONE_SURROGATE = /\p{Cs}/u;
const MAX_PAGE = 1000;

const UNAVAILABLE_SQLSTATES = new Set([
  '57P01', // admin_shutdown: pg_terminate_backend, or a fast shutdown
  '57P02', // crash_shutdown
  '57P03', // cannot_connect_now: starting up or shutting down
  '57014', // query_canceled: statement_timeout
  '53300', // too_many_connections
  '25P03', // idle_in_transaction_session_timeout
]);
const UNAVAILABLE_SYSTEM_CODES = new Set([
  'ECONNREFUSED', 'ECONNRESET', 'ECONNABORTED', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH',
  'EHOSTDOWN', 'ENETUNREACH', 'ENETDOWN', 'ENOTFOUND', 'EAI_AGAIN',
]);
/** The driver's own connection failures, which carry no code. */
const UNAVAILABLE_MESSAGES =
  /^(Connection terminated|timeout exceeded when trying to connect|Query read timeout|Client has encountered a connection error|Client was closed)/;

/** A call ran out of its time bound. */
class TimeoutError extends Error {
  readonly code = 'ETIMEDOUT';

  constructor(ms: number) {
    super(`no answer from PostgreSQL within ${ms} ms`);
    this.name = 'TimeoutError';
  }
}

/** A store's row in the watchers table, kept fresh while it has subscribers. */
interface Heartbeat {
  readonly id: string;
  readonly timer: ReturnType<typeof setInterval>;
  /** Settles once every writer has seen the row. */
  readonly seen: Promise<void>;
}

/** The moment a call must have settled by. */
class Deadline {
  readonly #budgetMs: number;
  readonly #at: number;

  constructor(budgetMs: number) {
    this.#budgetMs = budgetMs;
    this.#at = performance.now() + budgetMs;
  }

  remaining(): number {
    return Math.max(0, Math.floor(this.#at - performance.now()));
  }

  error(): TimeoutError {
    return new TimeoutError(this.#budgetMs);
  }
}

/**
 * A session store in a PostgreSQL table, for several processes or hosts sharing sessions.
 * It opens (connects and migrates) on first use, or when `open()` is awaited.
 *
 * @example
 * ```ts
 * const store = new PostgresStore({ connectionString: process.env.DATABASE_URL!, schema: 'ordo' });
 * const sessions = await SessionManager.open({ keyring, store });
 * // or, on a pool the application already has (the store never ends it):
 * const shared = new PostgresStore({ pool });
 * ```
 */
export class PostgresStore implements SessionStore {
  readonly kind = 'postgres';
  readonly #pool: Pool;
  readonly #ownsPool: boolean;
  readonly #names: TableNames;
  readonly #sql: ReturnType<typeof statements> & ReturnType<typeof leaseStatements> & ReturnType<typeof watcherStatements>;
  /** The write statements that also notify watchers. */
  readonly #notifying: ReturnType<typeof notifyingStatements>;
  /** The LISTEN/NOTIFY channel of this schema and table. */
  readonly #channel: string;
  readonly #subscribers = new Set<{ readonly prefix: string; readonly listener: (change: StoreChange) => void }>();
  #listener: Listener | undefined;
  /** This store's heartbeat in the watchers table, while it has subscribers. */
  #heartbeat: Heartbeat | undefined;
  /** The last answer to "does any store watch this table?". */
  readonly #watched = new WatchedAnswer();
  readonly #connectTimeoutMs: number;
  readonly #queryTimeoutMs: number;
  readonly #statementNames = new Map<string, string>();
  /** An idle client's failure: the pool has already dropped it, and the next call reconnects. */
  readonly #onPoolError = (): void => {};
  #opening: Promise<void> | undefined;
  #opened = false;
  #closing: Promise<void> | undefined;

  /** @throws InvalidOptionsError on a missing connection string or pool, a bad identifier or a bad number. */
  constructor(options: PostgresStoreOptions) {
    if (typeof options !== 'object' || options === null) throw new InvalidOptionsError('PostgresStore needs options');
    const schema = identifier(options.schema ?? 'public', 'schema', 63);
    if (schema.toLowerCase().startsWith('pg_')) throw new InvalidOptionsError('PostgresStore schema must not start with "pg_"');
    const table = identifier(options.table ?? 'ordo_sessions', 'table', 48);
    this.#connectTimeoutMs = integerOption(options.connectTimeoutMs, 'connectTimeoutMs', 5000);
    this.#queryTimeoutMs = integerOption(options.queryTimeoutMs, 'queryTimeoutMs', 5000);
    this.#names = {
      schema,
      migrationsName: `${table}_migrations`,
      table: `"${schema}"."${table}"`,
      migrations: `"${schema}"."${table}_migrations"`,
      expiryIndex: `"${table}_expires_at_idx"`,
      leases: `"${schema}"."${table}_leases"`,
      watchers: `"${schema}"."${table}_watchers"`,
    };
    this.#sql = { ...statements(this.#names.table), ...leaseStatements(this.#names.leases), ...watcherStatements(this.#names.watchers) };
    this.#channel = `ordo_${createHash('sha256').update(`${schema}.${table}`).digest('hex').slice(0, 40)}`;
    this.#notifying = notifyingStatements(this.#names.table);
    if (options.pool !== undefined) {
      if (typeof options.pool?.connect !== 'function') throw new InvalidOptionsError('PostgresStore pool must be a pg.Pool');
      this.#pool = options.pool;
      this.#ownsPool = false;
    } else {
      const { connectionString } = options;
      if (typeof connectionString !== 'string' || connectionString.length === 0) {
        throw new InvalidOptionsError('PostgresStore needs a connectionString or a pool');
      }
      const applicationName = options.applicationName ?? 'ordo-sessions';
      if (typeof applicationName !== 'string') throw new InvalidOptionsError('PostgresStore applicationName must be a string');
      this.#pool = new pg.Pool({
        connectionString,
        max: integerOption(options.poolSize, 'poolSize', 10),
        connectionTimeoutMillis: this.#connectTimeoutMs,
        statement_timeout: this.#queryTimeoutMs,
        application_name: applicationName,
        keepAlive: true,
        idleTimeoutMillis: 30_000,
        allowExitOnIdle: true,
      });
      this.#ownsPool = true;
    }
    this.#pool.on('error', this.#onPoolError);
  }

  /** Connects and migrates; idempotent, and shared by every call made meanwhile. */
  open(): Promise<void> {
    return this.#call('open', async () => undefined);
  }

  async get(key: string): Promise<StoredRecord | undefined> {
    return this.#call('get', async (deadline) => {
      const { rows } = await this.#query<Row>(deadline, this.#sql.get, [keyBytes(key)]);
      const [row] = rows;
      return row && toRecord(row);
    });
  }

  async set(key: string, value: Uint8Array, options: WriteOptions): Promise<{ readonly version: string }> {
    const bytes = Buffer.from(value); // copied now: the caller may reuse its buffer before the write is sent
    const version = newVersion();
    return this.#call('set', async (deadline) => {
      const values = [keyBytes(key), bytes, options.expiresAt, options.updatedAt, version];
      await this.#write(deadline, (sql) => sql.upsert, values, options.change ?? 'set');
      return { version };
    });
  }

  async compareAndSet(
    key: string,
    expectedVersion: string | null,
    value: Uint8Array,
    options: WriteOptions,
  ): Promise<CompareAndSetResult> {
    const bytes = Buffer.from(value);
    const version = newVersion();
    return this.#call('compareAndSet', async (deadline): Promise<CompareAndSetResult> => {
      const change = options.change ?? 'set';
      const { rowCount } =
        expectedVersion === null
          ? await this.#write(deadline, (sql) => sql.insertIfAbsent, [keyBytes(key), bytes, options.expiresAt, options.updatedAt, version], change)
          : await this.#write(
              deadline,
              (sql) => sql.updateIfVersion,
              [keyBytes(key), expectedVersion, bytes, options.expiresAt, options.updatedAt, version],
              change,
            );
      return rowCount === 1 ? { ok: true, version } : { ok: false };
    });
  }

  async delete(key: string): Promise<boolean> {
    return this.#call('delete', async (deadline) => {
      const { rowCount } = await this.#write(deadline, (sql) => sql.delete, [keyBytes(key)]);
      return rowCount === 1;
    });
  }

  async list(prefix: string, options: ListOptions): Promise<RecordPage> {
    return this.#call('list', async (deadline) => {
      const limit = pageLimit(options.limit);
      const lower = keyBytes(prefix);
      const upper = upperBound(lower);
      const after = options.cursor === undefined ? undefined : decodeCursor(options.cursor);
      // Start after the cursor, unless it lies before the range (then it excludes nothing).
      const exclusive = after !== undefined && Buffer.compare(after, lower) >= 0;
      const start = exclusive ? after : lower;
      const text = this.#sql.list(exclusive, upper !== undefined);
      const values = upper === undefined ? [limit + 1, start] : [limit + 1, start, upper];
      const { rows } = await this.#query<Row>(deadline, text, values);
      const page = rows.slice(0, limit);
      const records = page.map(listedRecord);
      const last = page.at(-1);
      return rows.length > limit && last !== undefined ? { records, cursor: last.key.toString('base64url') } : { records };
    });
  }

  async deleteByPrefix(prefix: string): Promise<number> {
    return this.#call('deleteByPrefix', async (deadline) => {
      const lower = keyBytes(prefix);
      const upper = upperBound(lower);
      const values = [lower, ...(upper === undefined ? [] : [upper])];
      const { rowCount } = await this.#write(deadline, (sql) => sql.deleteRange(upper !== undefined), values);
      return rowCount ?? 0;
    });
  }

  async purgeExpired(prefix: string, now: number): Promise<number> {
    return this.#call('purgeExpired', async (deadline) => {
      const lower = keyBytes(prefix);
      const upper = upperBound(lower);
      const values = [now, lower, ...(upper === undefined ? [] : [upper])];
      const { rowCount } = await this.#write(deadline, (sql) => sql.purgeRange(upper !== undefined), values);
      return rowCount ?? 0;
    });
  }

  async acquireLease(key: string, token: string, ttlMs: number): Promise<boolean> {
    const ttl = Math.max(1, Math.ceil(ttlMs));
    return this.#call('acquireLease', async (deadline) => {
      const { rowCount } = await this.#query(deadline, this.#sql.acquireLease, [keyBytes(key), token, ttl]);
      return rowCount === 1;
    });
  }

  async releaseLease(key: string, token: string): Promise<boolean> {
    return this.#call('releaseLease', async (deadline) => {
      const { rowCount } = await this.#query(deadline, this.#sql.releaseLease, [keyBytes(key), token]);
      return rowCount === 1;
    });
  }

  /** Ends the pool the store created (never one it was given). Idempotent; later calls reject with SessionClosedError. */
  close(): Promise<void> {
    this.#closing ??= this.#shutdown();
    return this.#closing;
  }

  toString(): string {
    return `PostgresStore(${this.#names.table})`;
  }

  /**
   * Listens for changes with `LISTEN` on a dedicated connection (not one of the pool's, which
   * would go back to the pool still listening), opened with the first subscriber, closed after
   * the last. After a connection loss it reconnects (with backoff) and listens again;
   * notifications sent while it was down are lost (PostgreSQL queues them only for listeners).
   */
  async subscribe(prefix: string, listener: (change: StoreChange) => void): Promise<() => Promise<void>> {
    keyBytes(prefix);
    const entry = { prefix, listener };
    return this.#call('subscribe', async (deadline) => {
      this.#subscribers.add(entry);
      try {
        this.#listener ??= new Listener(this.#pool, this.#channel, this.#connectTimeoutMs, (payload) => this.#dispatch(payload));
        await within(this.#listener.started, deadline);
        const heartbeat = (this.#heartbeat ??= this.#startHeartbeat(deadline));
        await within(heartbeat.seen, deadline);
      } catch (error) {
        await this.#unsubscribe(entry);
        throw error;
      }
      return () => this.#unsubscribe(entry);
    });
  }

  async #unsubscribe(entry: { readonly prefix: string; readonly listener: (change: StoreChange) => void }): Promise<void> {
    if (!this.#subscribers.delete(entry) || this.#subscribers.size > 0) return;
    await this.#stopListening();
  }

  /**
   * Writes this store's heartbeat row (then every {@link WATCHER_HEARTBEAT_MS}); `seen` settles
   * once every writer has asked "does anyone watch?" again since the row was committed.
   */
  #startHeartbeat(deadline: Deadline): Heartbeat {
    const id = randomUUID();
    const beat = (within: Deadline): Promise<void> => this.#query(within, this.#sql.heartbeat, [id]).then(() => undefined);
    const timer = setInterval(() => {
      beat(new Deadline(this.#connectTimeoutMs + this.#queryTimeoutMs)).catch(() => undefined); // retried on the next beat
    }, WATCHER_HEARTBEAT_MS);
    timer.unref();
    const seen = beat(deadline).then(waitForWriters);
    seen.catch(() => undefined);
    return { id, timer, seen };
  }

  /** Ends the LISTEN connection and removes the heartbeat row (else it ages out after {@link WATCHER_TTL_MS}). */
  async #stopListening(): Promise<void> {
    const listener = this.#listener;
    const heartbeat = this.#heartbeat;
    this.#listener = undefined;
    this.#heartbeat = undefined;
    if (heartbeat !== undefined) clearInterval(heartbeat.timer);
    await listener?.stop();
    if (heartbeat === undefined) return;
    await this.#query(new Deadline(this.#connectTimeoutMs + this.#queryTimeoutMs), this.#sql.dropWatcher, [heartbeat.id]).catch(() => undefined);
  }

  #dispatch(payload: string): void {
    const colon = payload.indexOf(':');
    const kind = payload.slice(0, colon);
    if (colon < 0 || !CHANGE_KINDS.has(kind)) return; // also a hashed marker: its key cannot be known
    const change: StoreChange = { key: Buffer.from(payload.slice(colon + 1), 'hex').toString('utf8'), kind: kind as StoreChange['kind'] };
    for (const { prefix, listener } of this.#subscribers) {
      if (!change.key.startsWith(prefix)) continue;
      try {
        listener(change);
      } catch {
        // The manager reports listener errors; one subscriber's failure never reaches another.
      }
    }
  }

  async #shutdown(): Promise<void> {
    this.#subscribers.clear();
    await this.#stopListening();
    if (!this.#ownsPool) {
      this.#pool.off('error', this.#onPoolError);
      return;
    }
    // In-flight calls finish first (each is bounded); a dead server cannot hold close() forever.
    const ended = this.#pool.end();
    await within(ended, new Deadline(this.#connectTimeoutMs + this.#queryTimeoutMs)).catch(() => undefined);
  }

  /** Runs one public call: refuses after close, opens first, bounds it in time, types its errors. */
  async #call<T>(operation: string, work: (deadline: Deadline) => Promise<T>): Promise<T> {
    if (this.#closing) throw new SessionClosedError('PostgresStore');
    const deadline = new Deadline(this.#connectTimeoutMs + this.#queryTimeoutMs);
    try {
      if (!this.#opened) await within(this.#ready(), deadline);
      return await work(deadline);
    } catch (error) {
      throw this.#toError(operation, error);
    }
  }

  #ready(): Promise<void> {
    this.#opening ??= this.#migrate().then(
      () => {
        this.#opened = true;
      },
      (error: unknown) => {
        this.#opening = undefined; // the next call tries again
        throw error;
      },
    );
    return this.#opening;
  }

  /** One statement on one connection from the pool. */
  async #query<R extends QueryResultRow>(deadline: Deadline, text: string, values: unknown[]): Promise<QueryResult<R>> {
    const client = await this.#checkout(deadline);
    let failed = false;
    try {
      return await this.#send<R>(client, deadline, text, values, this.#statementName(text));
    } catch (error) {
      failed = true;
      throw error;
    } finally {
      checkin(client, failed);
    }
  }

  /**
   * One write statement: plain, or with `pg_notify` folded in while any store watches the table.
   * `kind` is the change kind, for the statements that take it as a parameter.
   */
  async #write(deadline: Deadline, pick: (sql: WriteStatements) => string, values: unknown[], kind?: string): Promise<QueryResult> {
    if (!(await this.#anyoneWatching(deadline))) return this.#query(deadline, pick(this.#sql), values);
    const notifying = kind === undefined ? [...values, this.#channel] : [...values, this.#channel, kind];
    return this.#query(deadline, pick(this.#notifying), notifying);
  }

  /**
   * Whether any store (in any process) watches this table: true while this one does; else the
   * watchers table's answer ({@link WatchedAnswer}: at most one question every 250 ms, shared by
   * the writes meanwhile, and a failed question counts as watched).
   */
  #anyoneWatching(deadline: Deadline): boolean | Promise<boolean> {
    if (this.#heartbeat !== undefined) return true;
    return this.#watched.get(async () => {
      const { rows } = await this.#query<{ watched: boolean }>(deadline, this.#sql.anyWatcher, [WATCHER_TTL_MS]);
      return rows[0]?.watched === true;
    });
  }

  /**
   * The schema at the newest version, under an advisory lock held by the transaction, so
   * concurrent openers wait for each other. An up-to-date schema needs no lock and no CREATE
   * privilege: only SELECT on the migrations table.
   */
  async #migrate(): Promise<void> {
    const deadline = new Deadline(this.#connectTimeoutMs + this.#queryTimeoutMs);
    const client = await this.#checkout(deadline);
    const run = (text: string, values: unknown[] = []): Promise<QueryResult> => this.#send(client, deadline, text, values);
    let failed = true; // until COMMIT: a connection left mid-transaction is destroyed, which rolls it back
    try {
      await run('BEGIN');
      await run("SELECT set_config('statement_timeout', $1, true)", [String(Math.max(1, deadline.remaining()))]);
      let version = await this.#schemaVersion(run);
      if (version < MIGRATIONS.length) {
        await run('SELECT pg_advisory_xact_lock($1)', [POSTGRES_MIGRATION_LOCK_ID]);
        version = await this.#schemaVersion(run); // another process may have migrated while we waited
        if (version === 0) await this.#createSchema(run);
        for (const [index, migration] of MIGRATIONS.entries()) {
          if (index < version) continue;
          for (const statement of migration(this.#names)) await run(statement);
          await run(`INSERT INTO ${this.#names.migrations} (version) VALUES ($1)`, [index + 1]);
        }
      }
      if (version > MIGRATIONS.length) {
        throw new StoreError(
          `the table has schema version ${version}, newer than this ordo-sessions knows (${MIGRATIONS.length}); upgrade it`,
        );
      }
      await run('COMMIT');
      failed = false;
    } finally {
      checkin(client, failed);
    }
  }

  /**
   * The applied schema version, 0 before the first migration. Existence is read from the catalog
   * with this statement's snapshot, not by `to_regclass`, whose cached "no such table" would
   * outlive another process's migration committed while we waited for the lock.
   */
  async #schemaVersion(run: (text: string, values?: unknown[]) => Promise<QueryResult>): Promise<number> {
    const found = await run(
      `SELECT EXISTS (SELECT FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                       WHERE n.nspname = $1 AND c.relname = $2) AS present`,
      [this.#names.schema, this.#names.migrationsName],
    );
    if (found.rows[0]?.['present'] !== true) return 0;
    const { rows } = await run(`SELECT coalesce(max(version), 0) AS version FROM ${this.#names.migrations}`);
    return Number(rows[0]?.['version'] ?? 0);
  }

  async #createSchema(run: (text: string, values?: unknown[]) => Promise<QueryResult>): Promise<void> {
    const { schema } = this.#names;
    const { rows } = await run('SELECT 1 FROM pg_namespace WHERE nspname = $1', [schema]);
    // Only when missing: CREATE SCHEMA IF NOT EXISTS needs the CREATE privilege even when it exists.
    if (rows.length === 0) await run(`CREATE SCHEMA IF NOT EXISTS "${schema}"`);
    await run(
      `CREATE TABLE IF NOT EXISTS ${this.#names.migrations} (
        version    integer     PRIMARY KEY,
        applied_at timestamptz NOT NULL DEFAULT now()
      )`,
    );
  }

  /**
   * A client from the pool, or a timeout; a client that arrives after the timeout goes straight
   * back. A pool of our own bounds the wait itself (`connectionTimeoutMillis`, queued requests
   * included), so only a given pool gets a timer of ours.
   */
  #checkout(deadline: Deadline): Promise<PoolClient> {
    if (this.#ownsPool) {
      return this.#pool.connect().then((client) => {
        client.on('error', ignoreClientError); // reported through the query it breaks
        return client;
      });
    }
    return new Promise((resolve, reject) => {
      let late = false;
      const timer = setTimeout(() => {
        late = true;
        reject(deadline.error());
      }, deadline.remaining());
      this.#pool.connect().then(
        (client) => {
          clearTimeout(timer);
          if (late) return client.release();
          client.on('error', ignoreClientError); // reported through the query it breaks
          resolve(client);
        },
        (error: unknown) => {
          clearTimeout(timer);
          reject(error);
        },
      );
    });
  }

  async #send<R extends QueryResultRow>(
    client: PoolClient,
    deadline: Deadline,
    text: string,
    values: unknown[],
    name?: string,
  ): Promise<QueryResult<R>> {
    const timeout = Math.min(this.#queryTimeoutMs, deadline.remaining());
    if (timeout <= 0) throw deadline.error();
    // query_timeout is honoured per query by pg, though its QueryConfig type does not list it.
    const query: QueryConfig & { query_timeout: number } = { name, text, values, query_timeout: timeout };
    try {
      return await client.query<R>(query);
    } catch (error) {
      // The client gave up, but the server may still be running the statement (say, waiting for a
      // row lock) and would apply the write later: cancel it. The connection is closed after this.
      if (error instanceof Error && error.message === 'Query read timeout') cancelStatement(client, this.#connectTimeoutMs);
      throw error;
    }
  }

  #statementName(text: string): string {
    let name = this.#statementNames.get(text);
    if (name === undefined) {
      // Named by its text, so stores of other tables sharing a pool never clash.
      name = `ordo_${createHash('sha256').update(text).digest('hex').slice(0, 24)}`;
      this.#statementNames.set(text, name);
    }
    return name;
  }

  #toError(operation: string, error: unknown): SessionError {
    if (error instanceof SessionError) return error;
    if (this.#closing) return new SessionClosedError('PostgresStore');
    if (isUnavailable(error)) {
      return new StoreUnavailableError(`PostgreSQL ${operation} failed: the server is unavailable${codeOf(error)}`, { cause: error });
    }
    return new StoreError(`PostgreSQL ${operation} failed${codeOf(error)}`, { cause: error });
  }
}

function statements(table: string) {
  const columns = 'value, expires_at, updated_at, version';
  const range = (first: number, exclusive: boolean, bounded: boolean): string =>
    `key ${exclusive ? '>' : '>='} $${first}${bounded ? ` AND key < $${first + 1}` : ''}`;
  const insert = `INSERT INTO ${table} (key, ${columns}) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (key)`;
  return {
    get: `SELECT ${columns} FROM ${table} WHERE key = $1`,
    upsert: `${insert} DO UPDATE SET value = EXCLUDED.value, expires_at = EXCLUDED.expires_at,
      updated_at = EXCLUDED.updated_at, version = EXCLUDED.version`,
    insertIfAbsent: `${insert} DO NOTHING`,
    updateIfVersion: `UPDATE ${table} SET value = $3, expires_at = $4, updated_at = $5, version = $6
      WHERE key = $1 AND version = $2`,
    delete: `DELETE FROM ${table} WHERE key = $1`,
    list: (exclusive: boolean, bounded: boolean): string =>
      `SELECT key, ${columns} FROM ${table} WHERE ${range(2, exclusive, bounded)} ORDER BY key LIMIT $1`,
    deleteRange: (bounded: boolean): string => `DELETE FROM ${table} WHERE ${range(1, false, bounded)}`,
    purgeRange: (bounded: boolean): string =>
      `DELETE FROM ${table} WHERE expires_at <= $1 AND ${range(2, false, bounded)}`,
  };
}

const CHANGE_KINDS: ReadonlySet<string> = new Set(['set', 'delete', 'refresh', 'expire']);
/** Keys longer than this (in bytes) are notified as a hash: a NOTIFY payload (here hex) holds under 8000 bytes. */
const MAX_NOTIFIED_KEY_BYTES = 3900;

/** The write statements, plain or with `pg_notify` folded in: same names, same leading parameters. */
type WriteStatements = ReturnType<typeof notifyingStatements>;

/**
 * The write statements with `pg_notify` folded in: `WITH w AS (<write> RETURNING key) SELECT
 * pg_notify(...) FROM w`, one notification per row written, committed with the write. Their
 * row count is the write's. Parameters: the write's own, then the channel and (for sets) the kind.
 */
function notifyingStatements(table: string) {
  const base = statements(table);
  const payload = (kind: string): string =>
    `CASE WHEN octet_length(w.key) <= ${MAX_NOTIFIED_KEY_BYTES} THEN ${kind} || ':' || encode(w.key, 'hex')
      ELSE ${kind} || '#' || encode(sha256(w.key), 'hex') END`;
  /** `parameters` is how many the write itself takes; `kind` a literal, or undefined for a parameter after the channel. */
  const notify = (write: string, parameters: number, kind?: string): string =>
    `WITH w AS (${write} RETURNING key) SELECT pg_notify($${parameters + 1}::text, ${payload(kind ?? `$${parameters + 2}::text`)}) FROM w`;
  return {
    upsert: notify(base.upsert, 5),
    insertIfAbsent: notify(base.insertIfAbsent, 5),
    updateIfVersion: notify(base.updateIfVersion, 6),
    delete: notify(base.delete, 1, "'delete'"),
    deleteRange: (bounded: boolean): string => notify(base.deleteRange(bounded), bounded ? 2 : 1, "'delete'"),
    purgeRange: (bounded: boolean): string => notify(base.purgeRange(bounded), bounded ? 3 : 2, "'expire'"),
  };
}

/** The watchers table's statements: heartbeats on the server clock. */
function watcherStatements(watchers: string) {
  return {
    anyWatcher: `SELECT EXISTS (SELECT 1 FROM ${watchers} WHERE seen_at > ${SERVER_NOW_MS} - $1) AS watched`,
    heartbeat: `INSERT INTO ${watchers} (id, seen_at) VALUES ($1, ${SERVER_NOW_MS})
      ON CONFLICT (id) DO UPDATE SET seen_at = EXCLUDED.seen_at`,
    dropWatcher: `DELETE FROM ${watchers} WHERE id = $1`,
  };
}

/**
 * One LISTEN connection, outside the pool, with the pool's connection settings. Reconnects with
 * backoff after a loss until stopped; `started` settles with the first LISTEN.
 */
class Listener {
  readonly started: Promise<void>;
  readonly #pool: Pool;
  readonly #channel: string;
  readonly #connectTimeoutMs: number;
  readonly #onPayload: (payload: string) => void;
  #client: pg.Client | undefined;
  #retry: ReturnType<typeof setTimeout> | undefined;
  #failures = 0;
  #stopped = false;

  constructor(pool: Pool, channel: string, connectTimeoutMs: number, onPayload: (payload: string) => void) {
    this.#pool = pool;
    this.#channel = channel;
    this.#connectTimeoutMs = connectTimeoutMs;
    this.#onPayload = onPayload;
    this.started = this.#listen();
    this.started.catch(() => undefined);
  }

  async #listen(): Promise<void> {
    const options = (this.#pool as Pool & { options?: pg.ClientConfig }).options ?? {};
    const client = new pg.Client({ ...options, connectionTimeoutMillis: this.#connectTimeoutMs });
    this.#client = client;
    client.on('error', () => this.#lost(client));
    client.on('end', () => this.#lost(client));
    client.on('notification', (message) => {
      if (message.channel === this.#channel && typeof message.payload === 'string') this.#onPayload(message.payload);
    });
    try {
      await client.connect();
      await client.query(`LISTEN "${this.#channel}"`);
      this.#failures = 0;
    } catch (error) {
      this.#lost(client);
      throw error;
    }
    if (this.#stopped) await client.end().catch(() => undefined);
  }

  /** The connection failed or ended: unless stopped, listen again on a new one, after a pause. */
  #lost(client: pg.Client): void {
    if (this.#client !== client) return;
    this.#client = undefined;
    client.end().catch(() => undefined);
    if (this.#stopped) return;
    const delay = Math.min(100 * 2 ** this.#failures++, 5000);
    this.#retry = setTimeout(() => {
      this.#retry = undefined;
      if (!this.#stopped) this.#listen().catch(() => undefined);
    }, delay);
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#retry !== undefined) clearTimeout(this.#retry);
    const client = this.#client;
    this.#client = undefined;
    await client?.end().catch(() => undefined);
  }
}

/** One atomic statement each: take a free or timed-out lease; release it only as its holder. */
function leaseStatements(leases: string) {
  return {
    acquireLease: `INSERT INTO ${leases} AS lease (key, token, expires_at) VALUES ($1, $2, ${SERVER_NOW_MS} + $3)
      ON CONFLICT (key) DO UPDATE SET token = EXCLUDED.token, expires_at = EXCLUDED.expires_at
      WHERE lease.expires_at <= ${SERVER_NOW_MS}`,
    releaseLease: `DELETE FROM ${leases} WHERE key = $1 AND token = $2`,
  };
}

function ignoreClientError(): void {}

/**
 * Sends PostgreSQL's CancelRequest for what `client`'s backend is running, on a new connection,
 * best effort. (pg has no public API for it.) Needed where no statement_timeout bounds the
 * statement on the server: on a caller's pool.
 */
function cancelStatement(client: PoolClient, timeoutMs: number): void {
  const { processID, secretKey, host, port } = client as PoolClient & { processID?: unknown; secretKey?: unknown };
  if (typeof processID !== 'number' || typeof secretKey !== 'number' || typeof port !== 'number') return;
  const request = Buffer.alloc(16);
  request.writeInt32BE(16, 0);
  request.writeInt32BE(80877102, 4); // the CancelRequest code
  request.writeInt32BE(processID, 8);
  request.writeInt32BE(secretKey, 12);
  const socket = typeof host === 'string' && host.startsWith('/') ? connect(`${host}/.s.PGSQL.${port}`) : connect(port, host);
  socket.on('error', () => socket.destroy());
  socket.setTimeout(timeoutMs, () => socket.destroy());
  socket.once('connect', () => socket.end(request));
  socket.unref();
}

/** Back to the pool; a connection that failed (or is mid-transaction) is closed instead. */
function checkin(client: PoolClient, failed: boolean): void {
  client.off('error', ignoreClientError);
  client.release(failed);
}

/** Settles with `promise`, or rejects when the deadline passes (for waits that are safe to abandon). */
function within<T>(promise: Promise<T>, deadline: Deadline): Promise<T> {
  return settleWithin(promise, deadline.remaining(), () => deadline.error());
}

/** Whether an error means the server could not be reached or dropped us, rather than refused the statement. */
function isUnavailable(error: unknown, depth = 0): boolean {
  if (!(error instanceof Error) || depth > 3) return false;
  if (error instanceof TimeoutError) return true;
  const code = (error as { code?: unknown }).code;
  if (typeof code === 'string' && (/^08[0-9A-Z]{3}$/.test(code) || UNAVAILABLE_SQLSTATES.has(code) || UNAVAILABLE_SYSTEM_CODES.has(code))) {
    return true;
  }
  if (UNAVAILABLE_MESSAGES.test(error.message)) return true;
  if (error instanceof AggregateError && error.errors.some((inner) => isUnavailable(inner, depth + 1))) return true;
  return isUnavailable(error.cause, depth + 1);
}

function codeOf(error: unknown): string {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) ? ` (SQLSTATE ${code})` : '';
}

function toRecord(row: Row): StoredRecord {
  return {
    value: new Uint8Array(row.value), // a copy with its own buffer, not a view of a shared one
    expiresAt: row.expires_at === null ? null : Number(row.expires_at),
    updatedAt: Number(row.updated_at),
    version: row.version,
  };
}

/** A listed record, as a literal (V8 pretenures spread copies made in a loop: see SqliteStore). */
function listedRecord(row: Row): { key: string } & StoredRecord {
  return {
    key: row.key.toString('utf8'),
    value: new Uint8Array(row.value),
    expiresAt: row.expires_at === null ? null : Number(row.expires_at),
    updatedAt: Number(row.updated_at),
    version: row.version,
  };
}

/** The UTF-8 bytes of a storage key; refused when a lone surrogate would make it collide with another. */
function keyBytes(key: string): Buffer {
  if (typeof key !== 'string' || LONE_SURROGATE.test(key)) {
    throw new InvalidSessionKeyError('A storage key must be a well-formed Unicode string');
  }
  return Buffer.from(key, 'utf8');
}

/**
 * The smallest byte string above every one that starts with `prefix`: drop trailing 0xFF bytes,
 * then increment the last. `undefined` when there is none (the empty prefix).
 */
function upperBound(prefix: Buffer): Buffer | undefined {
  let end = prefix.length;
  while (end > 0 && prefix[end - 1] === 0xff) end--;
  if (end === 0) return undefined;
  const bound = Buffer.from(prefix.subarray(0, end));
  bound[end - 1] = (bound[end - 1] as number) + 1;
  return bound;
}

function decodeCursor(cursor: string): Buffer {
  const bytes = typeof cursor === 'string' ? Buffer.from(cursor, 'base64url') : undefined;
  if (bytes === undefined || bytes.toString('base64url') !== cursor) {
    throw new InvalidOptionsError('list cursor is not one this store returned');
  }
  return bytes;
}

function pageLimit(limit: number): number {
  if (!Number.isSafeInteger(limit) || limit < 1) throw new InvalidOptionsError('list limit must be a positive integer');
  return Math.min(limit, MAX_PAGE);
}

function identifier(value: unknown, what: string, maxLength: number): string {
  if (typeof value !== 'string' || !IDENTIFIER.test(value) || value.length > maxLength) {
    throw new InvalidOptionsError(
      `PostgresStore ${what} must be a simple identifier: a letter or _, then letters, digits or _, at most ${maxLength} characters`,
    );
  }
  return value;
}

function integerOption(value: number | undefined, what: string, fallback: number): number {
  return positiveInteger(value, fallback, `PostgresStore ${what} must be a positive integer`);
}
