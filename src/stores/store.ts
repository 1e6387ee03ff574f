/**
 * The storage contract every backend implements: sealed bytes in, sealed bytes out, by an
 * opaque storage key. A store never sees plaintext and knows nothing of brokers or keys;
 * the manager above it owns namespacing, validation, encryption and the clock.
 *
 * Every method rejects with a {@link StoreError} (or {@link StoreUnavailableError}) on a
 * backend failure, and with {@link SessionClosedError} after `close()`.
 */

/** One stored record, as a store returns it. */
export interface StoredRecord {
  /** The sealed envelope, exactly as written. */
  readonly value: Uint8Array;
  /** Epoch ms after which the record is dead, or `null` for no expiry. */
  readonly expiresAt: number | null;
  /** Epoch ms of the write, as the manager's clock gave it. */
  readonly updatedAt: number;
  /**
   * Opaque token, new on every write (never reused, even after delete and re-create), so a
   * compare-and-set can never succeed against a record that changed and changed back.
   */
  readonly version: string;
}

/** What a change notification says happened to a record. */
export type ChangeKind = 'set' | 'delete' | 'refresh' | 'expire';

/** One change notification: which storage key, and what happened. Never any data. */
export interface StoreChange {
  readonly key: string;
  readonly kind: ChangeKind;
}

/** What a write stores beside the sealed bytes. */
export interface WriteOptions {
  /** What watchers are told the write was. Default `'set'`. */
  readonly change?: 'set' | 'refresh';
  /** Epoch ms after which the record is dead, or `null` for no expiry. */
  readonly expiresAt: number | null;
  /** Epoch ms of the write (the manager's clock). */
  readonly updatedAt: number;
}

/** Options of {@link SessionStore.subscribe}. */
export interface SubscribeOptions {
  /** How often a polling store (SQLite) looks for changes. Default 250 ms. */
  readonly pollIntervalMs?: number;
}

/** A page of {@link SessionStore.list}. */
export interface RecordPage {
  /**
   * Records in an order the store chooses (the SQL stores use key order; Redis uses SCAN order).
   * A record present for the whole listing appears at least once; one written or deleted
   * meanwhile may or may not appear.
   */
  readonly records: ReadonlyArray<{ readonly key: string } & StoredRecord>;
  /** Opaque: pass it to the next call to continue; absent on the last page. */
  readonly cursor?: string;
}

/** Options of {@link SessionStore.list}. */
export interface ListOptions {
  /** Where the previous page ended. */
  readonly cursor?: string;
  /** At most this many records (the store may return fewer). */
  readonly limit: number;
}

/** Result of {@link SessionStore.compareAndSet}. */
export type CompareAndSetResult = { readonly ok: true; readonly version: string } | { readonly ok: false };

/**
 * The storage contract. Implement it to add a backend; run `test/store-conformance.ts` against it.
 *
 * @example
 * ```ts
 * const store: SessionStore = new MemoryStore();
 * const { version } = await store.set('ns/fyers/acct', sealed, { expiresAt: null, updatedAt: Date.now() });
 * const record = await store.get('ns/fyers/acct');
 * ```
 */
export interface SessionStore {
  /** A short name for messages and diagnostics (`'sqlite'`, `'redis'`, ...). */
  readonly kind: string;
  /**
   * Connects and migrates, if the backend needs it. `SessionManager.open` awaits it, so a bad
   * URL or an unreachable server fails there; a store also opens itself on first use. Idempotent.
   */
  open?(): Promise<void>;
  /** The record at `key`, expired or not (the manager's clock decides), or `undefined`. */
  get(key: string): Promise<StoredRecord | undefined>;
  /** Writes `value` at `key` unconditionally; resolves with the new version once durable. */
  set(key: string, value: Uint8Array, options: WriteOptions): Promise<{ readonly version: string }>;
  /**
   * Writes only if the record's current version is `expectedVersion` (`null`: only if no record
   * exists). Atomic: of two concurrent calls with the same expectation, at most one succeeds.
   */
  compareAndSet(
    key: string,
    expectedVersion: string | null,
    value: Uint8Array,
    options: WriteOptions,
  ): Promise<CompareAndSetResult>;
  /** Deletes the record at `key`; resolves with whether one existed. */
  delete(key: string): Promise<boolean>;
  /** Records whose key starts with `prefix` (exactly: no pattern syntax), a page at a time. */
  list(prefix: string, options: ListOptions): Promise<RecordPage>;
  /** Deletes every record whose key starts with `prefix`; resolves with how many. */
  deleteByPrefix(prefix: string): Promise<number>;
  /** Deletes records under `prefix` whose `expiresAt` is at or before `now`; resolves with how many. */
  purgeExpired(prefix: string, now: number): Promise<number>;
  /** Releases what the store opened. Idempotent. Never closes a client the caller supplied. */
  close(): Promise<void>;

  /**
   * Takes the lease named `key` for `ttlMs` if nobody holds it (or its holder's lease ran out),
   * holding it as `token`. Across every process sharing the store, at most one holder at a time.
   * Leases live apart from records: a lease key never shows up in `list`.
   */
  acquireLease?(key: string, token: string, ttlMs: number): Promise<boolean>;
  /** Releases the lease if `token` still holds it (compare-and-delete); resolves with whether it did. */
  releaseLease?(key: string, token: string): Promise<boolean>;
  /**
   * Calls `listener` for every change to a record under `prefix` made by any process sharing the
   * store (this one included), until the returned function is called. `close()` ends every subscription.
   */
  subscribe?(prefix: string, listener: (change: StoreChange) => void, options?: SubscribeOptions): Promise<() => Promise<void>>;
}
