/**
 * The embedded default: one SQLite file (better-sqlite3), shared safely by several processes.
 *
 * - WAL journal, `synchronous=NORMAL` (a committed write survives a process crash; the last
 *   few may be lost on power loss, as with any WAL database at this setting), a busy timeout so
 *   processes wait for each other instead of failing.
 * - The file and its `-wal`/`-shm` are mode 0600 whatever the umask (SQLite gives the journal
 *   files the database file's mode); a new directory is 0700.
 * - Group commit: writes issued in the same turn of the event loop are committed in one
 *   transaction, each in its own savepoint, so 64 concurrent writes cost about one commit and
 *   one bad write fails only its own caller. Every promise settles after the commit.
 * - Statements are prepared once and every value is a bound parameter.
 */
import Database from 'better-sqlite3';
import { chmodSync, closeSync, existsSync, mkdirSync, openSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { SessionClosedError, StoreError, StoreUnavailableError } from '../errors.ts';
import { newVersion, prefixUpperBound } from './keys.ts';
import type {
  CompareAndSetResult,
  ListOptions,
  RecordPage,
  SessionStore,
  StoredRecord,
  WriteOptions,
} from './store.ts';

/** Options of {@link SqliteStore}. */
export interface SqliteStoreOptions {
  /** The database file (created with its directory if missing), or `':memory:'`. */
  readonly path: string;
  /** How long a write waits for another process's lock before failing. Default 5000 ms. */
  readonly busyTimeoutMs?: number;
}

interface Row {
  key: string;
  value: Buffer;
  expires_at: number | null;
  updated_at: number;
  version: string;
}

type Statement = Database.Statement<unknown[], Row>;

interface PendingWrite {
  run(): unknown;
  resolve(result: unknown): void;
  reject(error: unknown): void;
}

const SCHEMA_VERSION = 1;
const MIGRATIONS: Record<number, string> = {
  1: `
    CREATE TABLE IF NOT EXISTS ordo_sessions (
      key TEXT NOT NULL PRIMARY KEY,
      value BLOB NOT NULL,
      expires_at INTEGER,
      updated_at INTEGER NOT NULL,
      version TEXT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS ordo_sessions_expires_at ON ordo_sessions (expires_at) WHERE expires_at IS NOT NULL;
  `,
};

function toStoreError(operation: string, error: unknown): StoreError {
  if (error instanceof StoreError || error instanceof SessionClosedError) return error;
  const code = (error as { code?: string }).code ?? '';
  if (code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_LOCKED')) {
    return new StoreUnavailableError(`SQLite ${operation} failed: the database stayed locked past the busy timeout`, { cause: error });
  }
  return new StoreError(`SQLite ${operation} failed`, { cause: error });
}

function restrictFile(path: string): void {
  for (const file of [path, `${path}-wal`, `${path}-shm`]) {
    if (existsSync(file)) chmodSync(file, 0o600);
  }
}

/**
 * A session store in one SQLite file: the default when no store is given.
 *
 * @example
 * ```ts
 * const store = new SqliteStore({ path: './.ordo/sessions.db' });
 * const sessions = await SessionManager.open({ keyring, store });
 * ```
 */
export class SqliteStore implements SessionStore {
  readonly kind = 'sqlite';
  /** The resolved path of the database file. */
  readonly path: string;
  readonly #db: Database.Database;
  readonly #statements: {
    get: Statement;
    upsert: Statement;
    insertIfAbsent: Statement;
    updateIfVersion: Statement;
    delete: Statement;
    list: Map<string, Statement>;
    deleteRange: Statement;
    deleteFrom: Statement;
    purgeRange: Statement;
    purgeFrom: Statement;
  };
  #queue: PendingWrite[] = [];
  #closed = false;

  /** @throws StoreError when the file cannot be created or opened. */
  constructor(options: SqliteStoreOptions) {
    const path = options?.path;
    if (typeof path !== 'string' || path.length === 0) throw new StoreError('SqliteStore needs a path');
    const busyTimeoutMs = options.busyTimeoutMs ?? 5000;
    if (!Number.isSafeInteger(busyTimeoutMs) || busyTimeoutMs < 0) throw new StoreError('busyTimeoutMs must be a non-negative integer');
    this.path = path === ':memory:' ? path : resolve(path);
    try {
      if (this.path !== ':memory:') {
        mkdirSync(dirname(this.path), { recursive: true, mode: 0o700 });
        if (!existsSync(this.path)) closeSync(openSync(this.path, 'a', 0o600));
        restrictFile(this.path);
      }
      this.#db = new Database(this.path, { timeout: busyTimeoutMs });
      this.#db.pragma('journal_mode = WAL');
      this.#db.pragma('synchronous = NORMAL');
      this.#migrate();
      if (this.path !== ':memory:') restrictFile(this.path);
    } catch (error) {
      throw toStoreError('open', error);
    }
    const db = this.#db;
    const columns = 'key, value, expires_at, updated_at, version';
    this.#statements = {
      get: db.prepare(`SELECT ${columns} FROM ordo_sessions WHERE key = ?`),
      upsert: db.prepare(
        `INSERT INTO ordo_sessions (${columns}) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at,
           updated_at = excluded.updated_at, version = excluded.version`,
      ),
      insertIfAbsent: db.prepare(`INSERT INTO ordo_sessions (${columns}) VALUES (?, ?, ?, ?, ?) ON CONFLICT (key) DO NOTHING`),
      updateIfVersion: db.prepare(
        'UPDATE ordo_sessions SET value = ?, expires_at = ?, updated_at = ?, version = ? WHERE key = ? AND version = ?',
      ),
      delete: db.prepare('DELETE FROM ordo_sessions WHERE key = ?'),
      list: new Map(),
      deleteRange: db.prepare('DELETE FROM ordo_sessions WHERE key >= ? AND key < ?'),
      deleteFrom: db.prepare('DELETE FROM ordo_sessions WHERE key >= ?'),
      purgeRange: db.prepare('DELETE FROM ordo_sessions WHERE key >= ? AND key < ? AND expires_at <= ?'),
      purgeFrom: db.prepare('DELETE FROM ordo_sessions WHERE key >= ? AND expires_at <= ?'),
    };
  }

  async open(): Promise<void> {
    this.#assertOpen();
  }

  async get(key: string): Promise<StoredRecord | undefined> {
    this.#assertOpen();
    try {
      const row = this.#statements.get.get(key);
      return row && toRecord(row);
    } catch (error) {
      throw toStoreError('read', error);
    }
  }

  set(key: string, value: Uint8Array, options: WriteOptions): Promise<{ version: string }> {
    const version = newVersion();
    const bytes = Buffer.from(value);
    return this.#write(() => {
      this.#statements.upsert.run(key, bytes, options.expiresAt, options.updatedAt, version);
      return { version };
    });
  }

  compareAndSet(
    key: string,
    expectedVersion: string | null,
    value: Uint8Array,
    options: WriteOptions,
  ): Promise<CompareAndSetResult> {
    const version = newVersion();
    const bytes = Buffer.from(value);
    return this.#write((): CompareAndSetResult => {
      const { changes } =
        expectedVersion === null
          ? this.#statements.insertIfAbsent.run(key, bytes, options.expiresAt, options.updatedAt, version)
          : this.#statements.updateIfVersion.run(bytes, options.expiresAt, options.updatedAt, version, key, expectedVersion);
      return changes === 1 ? { ok: true, version } : { ok: false };
    });
  }

  delete(key: string): Promise<boolean> {
    return this.#write(() => this.#statements.delete.run(key).changes === 1);
  }

  async list(prefix: string, options: ListOptions): Promise<RecordPage> {
    this.#assertOpen();
    const upper = prefixUpperBound(prefix);
    const after = options.cursor;
    const name = `${after === undefined ? 'from' : 'after'}-${upper === undefined ? 'open' : 'bounded'}`;
    let statement = this.#statements.list.get(name);
    if (statement === undefined) {
      const lower = after === undefined ? 'key >= ?' : 'key >= ? AND key > ?';
      const bound = upper === undefined ? '' : ' AND key < ?';
      statement = this.#db.prepare(
        `SELECT key, value, expires_at, updated_at, version FROM ordo_sessions WHERE ${lower}${bound} ORDER BY key LIMIT ?`,
      );
      this.#statements.list.set(name, statement);
    }
    const limit = Math.max(1, Math.floor(options.limit));
    const parameters: unknown[] = [prefix];
    if (after !== undefined) parameters.push(after);
    if (upper !== undefined) parameters.push(upper);
    parameters.push(limit + 1);
    try {
      const rows = statement.all(...parameters);
      const page = rows.slice(0, limit).map((row) => ({ key: row.key, ...toRecord(row) }));
      const last = page.at(-1);
      return rows.length > limit && last !== undefined ? { records: page, cursor: last.key } : { records: page };
    } catch (error) {
      throw toStoreError('list', error);
    }
  }

  deleteByPrefix(prefix: string): Promise<number> {
    const upper = prefixUpperBound(prefix);
    return this.#write(() =>
      upper === undefined
        ? this.#statements.deleteFrom.run(prefix).changes
        : this.#statements.deleteRange.run(prefix, upper).changes,
    );
  }

  purgeExpired(prefix: string, now: number): Promise<number> {
    const upper = prefixUpperBound(prefix);
    return this.#write(() =>
      upper === undefined
        ? this.#statements.purgeFrom.run(prefix, now).changes
        : this.#statements.purgeRange.run(prefix, upper, now).changes,
    );
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#flush();
    this.#closed = true;
    try {
      this.#db.close();
    } catch (error) {
      throw toStoreError('close', error);
    }
  }

  toString(): string {
    return `SqliteStore(${this.path})`;
  }

  /** Queues a write for the next group commit, which runs once the current turn's calls are in. */
  #write<T>(run: () => T): Promise<T> {
    if (this.#closed) return Promise.reject(new SessionClosedError('SqliteStore'));
    return new Promise<T>((resolvePromise, rejectPromise) => {
      this.#queue.push({ run, resolve: resolvePromise as (result: unknown) => void, reject: rejectPromise });
      if (this.#queue.length === 1) queueMicrotask(() => this.#flush());
    });
  }

  #flush(): void {
    const batch = this.#queue;
    if (batch.length === 0) return;
    this.#queue = [];
    if (batch.length === 1) {
      const [only] = batch as [PendingWrite];
      try {
        only.resolve(only.run());
      } catch (error) {
        only.reject(toStoreError('write', error));
      }
      return;
    }
    const results: Array<{ ok: true; value: unknown } | { ok: false; error: unknown }> = [];
    try {
      this.#db.exec('BEGIN IMMEDIATE');
      for (const write of batch) {
        this.#db.exec('SAVEPOINT ordo_write');
        try {
          results.push({ ok: true, value: write.run() });
          this.#db.exec('RELEASE ordo_write');
        } catch (error) {
          this.#db.exec('ROLLBACK TO ordo_write');
          this.#db.exec('RELEASE ordo_write');
          results.push({ ok: false, error });
        }
      }
      this.#db.exec('COMMIT');
    } catch (error) {
      if (this.#db.inTransaction) this.#db.exec('ROLLBACK');
      for (const write of batch) write.reject(toStoreError('write', error));
      return;
    }
    for (const [index, write] of batch.entries()) {
      const result = results[index] as (typeof results)[number];
      if (result.ok) write.resolve(result.value);
      else write.reject(toStoreError('write', result.error));
    }
  }

  #migrate(): void {
    const current = this.#db.pragma('user_version', { simple: true }) as number;
    if (current > SCHEMA_VERSION) {
      throw new StoreError(`the database has schema version ${current}, newer than this ordo-sessions (${SCHEMA_VERSION}); upgrade it`);
    }
    for (let version = current + 1; version <= SCHEMA_VERSION; version++) {
      this.#db.transaction(() => {
        // Re-read inside the write lock: another process may have migrated meanwhile.
        const now = this.#db.pragma('user_version', { simple: true }) as number;
        if (now >= version) return;
        this.#db.exec(MIGRATIONS[version] as string);
        this.#db.pragma(`user_version = ${version}`);
      }).immediate();
    }
  }

  #assertOpen(): void {
    if (this.#closed) throw new SessionClosedError('SqliteStore');
  }
}

function toRecord(row: Row): StoredRecord {
  return { value: row.value, expiresAt: row.expires_at, updatedAt: row.updated_at, version: row.version };
}
