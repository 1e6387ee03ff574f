/**
 * The embedded default: one SQLite file (better-sqlite3), shared safely by several processes.
 *
 * - WAL journal, `synchronous=NORMAL` (a committed write survives a process crash; the last
 *   few may be lost on power loss, as with any WAL database at this setting), a busy timeout so
 *   processes wait for each other instead of failing.
 * - The file and its `-wal`/`-shm` are mode 0600 whatever the umask (SQLite gives the journal
 *   files the database file's mode); a new directory is 0700.
 * - Group commit: writes issued together (before the current microtasks have run) are committed
 *   in one transaction, so 64 concurrent writes cost about one commit, and one bad write fails
 *   only its own caller (each write is one statement, or a savepoint of its own). Every promise
 *   settles after the commit.
 * - Statements are prepared once and every value is a bound parameter.
 */
import Database from 'better-sqlite3';
import { randomUUID } from 'node:crypto';
import { chmodSync, closeSync, existsSync, mkdirSync, openSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { InvalidOptionsError, SessionClosedError, StoreError, StoreUnavailableError } from '../errors.ts';
import { compareCodePoints, newVersion, prefixUpperBound } from './keys.ts';
import { positiveInteger } from './timeouts.ts';
import { WATCHER_HEARTBEAT_MS, WATCHER_RECHECK_MS, WATCHER_TTL_MS, waitForWriters } from './watchers.ts';
import type {
  CompareAndSetResult,
  ListOptions,
  RecordPage,
  SessionStore,
  StoreChange,
  StoredRecord,
  SubscribeOptions,
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
type RecordStatement = Database.Statement<unknown[], Omit<Row, 'key'>>;

interface PendingWrite {
  run(): unknown;
  resolve(result: unknown): void;
  reject(error: unknown): void;
}

/**
 * Commits in a row on microtasks before one waits for the event loop: at about 70 µs a commit,
 * a loop of writes holds timers and I/O back by at most about 2 ms.
 */
const MICROTASK_COMMITS_PER_TURN = 32;

const SCHEMA_VERSION = 3;
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
  // Leases (getOrRefresh): a table of their own, so a lease is never a record and never listed.
  2: `
    CREATE TABLE IF NOT EXISTS ordo_leases (
      key TEXT NOT NULL PRIMARY KEY,
      token TEXT NOT NULL,
      expires_at INTEGER NOT NULL
    );
  `,
  // Change log (watch): one row per change, written in the write's own transaction; pruned.
  3: `
    CREATE TABLE IF NOT EXISTS ordo_changes (
      id INTEGER PRIMARY KEY,
      key TEXT NOT NULL,
      kind TEXT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS ordo_watchers (
      id TEXT NOT NULL PRIMARY KEY,
      seen_at INTEGER NOT NULL
    );
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
    get: RecordStatement;
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
  readonly #leaseStatements: { acquire: Database.Statement; release: Database.Statement };
  readonly #log: ChangeLog;
  #queue: PendingWrite[] = [];
  #closed = false;
  /** Group commits run on microtasks since the event loop last turned. */
  #commitsThisTurn = 0;
  /** Whether a setImmediate will tell us the loop has turned. */
  #turnWatched = false;

  /** @throws StoreError when the file cannot be created or opened. */
  constructor(options: SqliteStoreOptions) {
    const path = options?.path;
    if (typeof path !== 'string' || path.length === 0) throw new InvalidOptionsError('SqliteStore needs a path');
    const busyTimeoutMs = options.busyTimeoutMs ?? 5000;
    if (!Number.isSafeInteger(busyTimeoutMs) || busyTimeoutMs < 0) throw new InvalidOptionsError('busyTimeoutMs must be a non-negative integer');
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
      get: db.prepare('SELECT value, expires_at, updated_at, version FROM ordo_sessions WHERE key = ?'),
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
    // One atomic statement: take the lease if it is free or its holder's time ran out.
    this.#leaseStatements = {
      acquire: db.prepare(
        `INSERT INTO ordo_leases (key, token, expires_at) VALUES (?, ?, ?)
         ON CONFLICT (key) DO UPDATE SET token = excluded.token, expires_at = excluded.expires_at
         WHERE ordo_leases.expires_at <= ?`,
      ),
      release: db.prepare('DELETE FROM ordo_leases WHERE key = ? AND token = ?'),
    };
    this.#log = new ChangeLog(db);
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
    return this.#write(() =>
      this.#logged(() => {
        this.#statements.upsert.run(key, bytes, options.expiresAt, options.updatedAt, version);
        this.#log.record(key, options.change ?? 'set');
        return { version };
      }),
    );
  }

  compareAndSet(
    key: string,
    expectedVersion: string | null,
    value: Uint8Array,
    options: WriteOptions,
  ): Promise<CompareAndSetResult> {
    const version = newVersion();
    const bytes = Buffer.from(value);
    return this.#write(() =>
      this.#logged((): CompareAndSetResult => {
        const { changes } =
          expectedVersion === null
            ? this.#statements.insertIfAbsent.run(key, bytes, options.expiresAt, options.updatedAt, version)
            : this.#statements.updateIfVersion.run(bytes, options.expiresAt, options.updatedAt, version, key, expectedVersion);
        if (changes === 1) this.#log.record(key, options.change ?? 'set');
        return changes === 1 ? { ok: true, version } : { ok: false };
      }),
    );
  }

  delete(key: string): Promise<boolean> {
    return this.#write(() =>
      this.#logged(() => {
        const deleted = this.#statements.delete.run(key).changes === 1;
        if (deleted) this.#log.record(key, 'delete');
        return deleted;
      }),
    );
  }

  async list(prefix: string, options: ListOptions): Promise<RecordPage> {
    this.#assertOpen();
    const upper = prefixUpperBound(prefix);
    // One lower bound only. With two (`key >= ? AND key > ?`) SQLite ranges the index on one and
    // filters on the other, so every page rescanned the prefix from its start: quadratic over a
    // long listing. A cursor before the prefix excludes nothing, one inside it implies the prefix.
    const cursor = options.cursor;
    const after = cursor !== undefined && compareCodePoints(cursor, prefix) >= 0 ? cursor : undefined;
    const name = `${after === undefined ? 'from' : 'after'}-${upper === undefined ? 'open' : 'bounded'}`;
    let statement = this.#statements.list.get(name);
    if (statement === undefined) {
      const lower = after === undefined ? 'key >= ?' : 'key > ?';
      const bound = upper === undefined ? '' : ' AND key < ?';
      statement = this.#db.prepare(
        `SELECT key, value, expires_at, updated_at, version FROM ordo_sessions WHERE ${lower}${bound} ORDER BY key LIMIT ?`,
      );
      this.#statements.list.set(name, statement);
    }
    const limit = Math.max(1, Math.floor(options.limit));
    const parameters: unknown[] = [after ?? prefix];
    if (upper !== undefined) parameters.push(upper);
    parameters.push(limit + 1);
    try {
      const rows = statement.all(...parameters);
      const page = rows.slice(0, limit).map(listedRecord);
      const last = page.at(-1);
      return rows.length > limit && last !== undefined ? { records: page, cursor: last.key } : { records: page };
    } catch (error) {
      throw toStoreError('list', error);
    }
  }

  deleteByPrefix(prefix: string): Promise<number> {
    const upper = prefixUpperBound(prefix);
    return this.#write(() =>
      this.#logged(() => {
        this.#log.recordRange('delete', prefix, upper, undefined);
        return upper === undefined
          ? this.#statements.deleteFrom.run(prefix).changes
          : this.#statements.deleteRange.run(prefix, upper).changes;
      }),
    );
  }

  purgeExpired(prefix: string, now: number): Promise<number> {
    const upper = prefixUpperBound(prefix);
    return this.#write(() =>
      this.#logged(() => {
        this.#log.recordRange('expire', prefix, upper, now);
        return upper === undefined
          ? this.#statements.purgeFrom.run(prefix, now).changes
          : this.#statements.purgeRange.run(prefix, upper, now).changes;
      }),
    );
  }

  acquireLease(key: string, token: string, ttlMs: number): Promise<boolean> {
    return this.#write(() => {
      const now = Date.now(); // read inside the write, so a queued acquire never uses a stale now
      return this.#leaseStatements.acquire.run(key, token, now + ttlMs, now).changes === 1;
    });
  }

  releaseLease(key: string, token: string): Promise<boolean> {
    return this.#write(() => this.#leaseStatements.release.run(key, token).changes === 1);
  }

  /**
   * Polls for changes every `pollIntervalMs` (default 250): `PRAGMA data_version` says whether
   * another connection committed, and the change log (`ordo_changes`) says what changed. Writes of
   * this process are seen on the next poll too, so every subscriber sees one order.
   */
  async subscribe(prefix: string, listener: (change: StoreChange) => void, options?: SubscribeOptions): Promise<() => Promise<void>> {
    this.#assertOpen();
    const interval = positiveInteger(
      options?.pollIntervalMs ?? DEFAULT_POLL_INTERVAL_MS,
      DEFAULT_POLL_INTERVAL_MS,
      'pollIntervalMs must be a positive integer of milliseconds',
    );
    try {
      return await this.#log.subscribe(prefix, listener, interval);
    } catch (error) {
      throw toStoreError('subscribe', error);
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#flush();
    this.#closed = true;
    this.#log.close();
    try {
      this.#db.close();
    } catch (error) {
      throw toStoreError('close', error);
    }
  }

  toString(): string {
    return `SqliteStore(${this.path})`;
  }

  /** Runs a write and its change-log rows in one transaction (a savepoint inside a group commit). */
  #logged<T>(run: () => T): T {
    return this.#log.transaction(run);
  }

  /**
   * Queues a write for the next group commit. The commit runs once the current microtasks have
   * run, so every write issued together (a `Promise.all`, 64 workers resuming from the last
   * commit) joins one transaction, and a lone write pays no event-loop turn. After
   * {@link MICROTASK_COMMITS_PER_TURN} commits without the event loop turning, the next one waits
   * for the loop (setImmediate): a long loop of awaited writes still yields to timers, I/O and
   * signals, as writes to a server would.
   */
  #write<T>(run: () => T): Promise<T> {
    if (this.#closed) return Promise.reject(new SessionClosedError('SqliteStore'));
    return new Promise<T>((resolvePromise, rejectPromise) => {
      this.#queue.push({ run, resolve: resolvePromise as (result: unknown) => void, reject: rejectPromise });
      if (this.#queue.length === 1) this.#scheduleFlush();
    });
  }

  #scheduleFlush(): void {
    if (this.#commitsThisTurn >= MICROTASK_COMMITS_PER_TURN) {
      setImmediate(this.#flushOnTurn);
      return;
    }
    this.#commitsThisTurn++;
    if (!this.#turnWatched) {
      this.#turnWatched = true;
      setImmediate(this.#onTurn);
    }
    queueMicrotask(this.#flushNow);
  }

  readonly #flushNow = (): void => this.#flush();
  readonly #flushOnTurn = (): void => {
    this.#onTurn();
    this.#flush();
  };
  /** The event loop has turned: microtask commits may start counting again. */
  readonly #onTurn = (): void => {
    this.#commitsThisTurn = 0;
    this.#turnWatched = false;
  };

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
    // No savepoint per write: every write is one statement, which SQLite undoes by itself when it
    // fails (the transaction goes on), or, while the change log is on, a nested transaction
    // (a savepoint) of its own. A failure that ends the whole transaction (ROLLBACK, I/O error)
    // fails the whole batch, since every write before it was undone too.
    const results: Array<{ ok: true; value: unknown } | { ok: false; error: unknown }> = [];
    try {
      this.#db.exec('BEGIN IMMEDIATE');
      for (const write of batch) {
        try {
          results.push({ ok: true, value: write.run() });
        } catch (error) {
          if (!this.#db.inTransaction) throw error;
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

function toRecord(row: Omit<Row, 'key'>): StoredRecord {
  return { value: row.value, expiresAt: row.expires_at, updatedAt: row.updated_at, version: row.version };
}

/** A literal, not a spread: V8 pretenures spread copies made in a loop, and a long listing then fills the old generation with garbage. */
function listedRecord(row: Row): { key: string } & StoredRecord {
  return { key: row.key, value: row.value, expiresAt: row.expires_at, updatedAt: row.updated_at, version: row.version };
}

const DEFAULT_POLL_INTERVAL_MS = 250;
/** Change-log rows kept: a subscriber more than this many changes behind misses the oldest. */
const CHANGE_LOG_KEEP = 10_000;
const CHANGE_LOG_PRUNE_EVERY = 500;
const CHANGE_LOG_PAGE = 1000;

/**
 * The change log behind {@link SqliteStore.subscribe}: rows `(id, key, kind)` written in the
 * same transaction as the change, read by pollers, pruned to the last {@link CHANGE_LOG_KEEP}.
 *
 * Writers pay for the log only while some process watches: each subscriber keeps a heartbeat row
 * in `ordo_watchers`, writers re-read "is anyone watching?" at most every
 * {@link WATCHER_RECHECK_MS}, and `subscribe` resolves only after that long, so no change made
 * after it resolves goes unlogged. Unwatched, a write is one autocommit statement, as before.
 */
class ChangeLog {
  readonly #db: Database.Database;
  readonly #insert: Database.Statement;
  readonly #prune: Database.Statement;
  readonly #since: Database.Statement<unknown[], { id: number; key: string; kind: StoreChange['kind'] }>;
  readonly #latest: Database.Statement<unknown[], { id: number | null }>;
  readonly #ranges = new Map<string, Database.Statement>();
  readonly #transaction: Database.Transaction<(run: () => unknown) => unknown>;
  readonly #timers = new Set<ReturnType<typeof setInterval>>();
  /** Counts this connection's logged writes: `data_version` does not change for them. */
  #localWrites = 0;
  readonly #watcherCheck: Database.Statement<unknown[], { watched: number }>;
  readonly #watcherBeat: Database.Statement;
  readonly #watcherDrop: Database.Statement;
  /** This process's watcher rows, each with its heartbeat timer. */
  readonly #watcherIds = new Map<string, ReturnType<typeof setInterval>>();
  #watched = false;
  #checkedAt = Number.NEGATIVE_INFINITY;
  /** Whether the transaction now running logs its changes. */
  #logging = false;

  constructor(db: Database.Database) {
    this.#db = db;
    this.#insert = db.prepare('INSERT INTO ordo_changes (key, kind) VALUES (?, ?)');
    this.#prune = db.prepare('DELETE FROM ordo_changes WHERE id <= ?');
    this.#since = db.prepare('SELECT id, key, kind FROM ordo_changes WHERE id > ? ORDER BY id LIMIT ?');
    this.#latest = db.prepare('SELECT max(id) AS id FROM ordo_changes');
    this.#transaction = db.transaction((run: () => unknown) => run());
    this.#watcherCheck = db.prepare('SELECT EXISTS (SELECT 1 FROM ordo_watchers WHERE seen_at > ?) AS watched');
    this.#watcherBeat = db.prepare(
      'INSERT INTO ordo_watchers (id, seen_at) VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at',
    );
    this.#watcherDrop = db.prepare('DELETE FROM ordo_watchers WHERE id = ?');
  }

  /** Whether any process (this one included) watches the file. */
  #anyoneWatching(): boolean {
    if (this.#timers.size > 0) return true;
    const now = Date.now();
    if (now - this.#checkedAt >= WATCHER_RECHECK_MS) {
      this.#watched = this.#watcherCheck.get(now - WATCHER_TTL_MS)?.watched === 1;
      this.#checkedAt = now;
    }
    return this.#watched;
  }

  /** Runs a write with its change-log rows in one transaction when watched; alone otherwise. */
  transaction<T>(run: () => T): T {
    if (this.#logging || !this.#anyoneWatching()) return run();
    this.#logging = true;
    try {
      return this.#transaction.immediate(run) as T;
    } finally {
      this.#logging = false;
    }
  }

  record(key: string, kind: StoreChange['kind']): void {
    if (!this.#logging) return;
    const id = Number(this.#insert.run(key, kind).lastInsertRowid);
    this.#localWrites++;
    if (id % CHANGE_LOG_PRUNE_EVERY === 0) this.#prune.run(id - CHANGE_LOG_KEEP);
  }

  /** Logs `kind` for every record a range delete (or purge, with `now`) is about to remove. */
  recordRange(kind: 'delete' | 'expire', prefix: string, upper: string | undefined, now: number | undefined): void {
    if (!this.#logging) return;
    const name = `${upper === undefined ? 'open' : 'bounded'}-${now === undefined ? 'all' : 'expired'}`;
    let statement = this.#ranges.get(name);
    if (statement === undefined) {
      const bound = upper === undefined ? '' : ' AND key < ?';
      const expired = now === undefined ? '' : ' AND expires_at <= ?';
      statement = this.#db.prepare(
        `INSERT INTO ordo_changes (key, kind) SELECT key, ? FROM ordo_sessions WHERE key >= ?${bound}${expired} ORDER BY key`,
      );
      this.#ranges.set(name, statement);
    }
    const parameters: unknown[] = [kind, prefix];
    if (upper !== undefined) parameters.push(upper);
    if (now !== undefined) parameters.push(now);
    const { changes, lastInsertRowid } = statement.run(...parameters);
    if (changes === 0) return;
    this.#localWrites++;
    const last = Number(lastInsertRowid);
    if (Math.floor(last / CHANGE_LOG_PRUNE_EVERY) !== Math.floor((last - changes) / CHANGE_LOG_PRUNE_EVERY)) {
      this.#prune.run(last - CHANGE_LOG_KEEP);
    }
  }

  async subscribe(prefix: string, listener: (change: StoreChange) => void, intervalMs: number): Promise<() => Promise<void>> {
    const watcherId = randomUUID();
    this.#watcherBeat.run(watcherId, Date.now());
    const heartbeat = setInterval(() => {
      try {
        this.#watcherBeat.run(watcherId, Date.now());
      } catch {
        // retried on the next beat; a missed beat only matters after WATCHER_TTL_MS
      }
    }, WATCHER_HEARTBEAT_MS);
    heartbeat.unref();
    this.#watcherIds.set(watcherId, heartbeat);
    await waitForWriters(); // every writer has now seen the heartbeat row
    let lastId = this.#latest.get()?.id ?? 0;
    let lastVersion = this.#dataVersion();
    let lastLocal = this.#localWrites;
    const poll = (): void => {
      try {
        const version = this.#dataVersion();
        if (version === lastVersion && this.#localWrites === lastLocal) return;
        lastLocal = this.#localWrites;
        const rows = this.#since.all(lastId, CHANGE_LOG_PAGE);
        // A full page: look again next time, whatever data_version says.
        lastVersion = rows.length === CHANGE_LOG_PAGE ? Number.NaN : version;
        for (const row of rows) {
          lastId = row.id;
          if (!row.key.startsWith(prefix)) continue;
          try {
            listener({ key: row.key, kind: row.kind });
          } catch {
            // The manager reports listener errors; a subscriber's failure never stops the poller.
          }
        }
      } catch {
        // A failed poll (the file busy or gone) is retried on the next tick.
      }
    };
    const timer = setInterval(poll, intervalMs);
    this.#timers.add(timer);
    return async () => {
      clearInterval(timer);
      this.#timers.delete(timer);
      this.#dropWatcher(watcherId);
    };
  }

  close(): void {
    for (const timer of this.#timers) clearInterval(timer);
    this.#timers.clear();
    for (const id of [...this.#watcherIds.keys()]) this.#dropWatcher(id);
  }

  #dropWatcher(id: string): void {
    const heartbeat = this.#watcherIds.get(id);
    if (heartbeat === undefined) return;
    clearInterval(heartbeat);
    this.#watcherIds.delete(id);
    try {
      this.#watcherDrop.run(id);
    } catch {
      // the row simply ages out after WATCHER_TTL_MS
    }
  }

  #dataVersion(): number {
    return this.#db.pragma('data_version', { simple: true }) as number;
  }
}
