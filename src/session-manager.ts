/**
 * The policy layer: validation, namespacing, expiry and the wrong-key check. Plaintext enters
 * here and leaves sealed; the store below sees only sealed bytes and storage keys.
 */
import { inspect } from 'node:util';
import { envelopeKeyId, open as openEnvelope, seal, type RecordIdentity } from './crypto/envelope.ts';
import { Keyring } from './crypto/keyring.ts';
import {
  InvalidOptionsError,
  KeyringMismatchError,
  SessionClosedError,
  SessionError,
  SessionIntegrityError,
  StoreError,
} from './errors.ts';
import { resolveExpiry, type ExpiryOptions } from './expiry.ts';
import {
  brokerPrefix,
  DEFAULT_NAMESPACE,
  metadataKey,
  namespacePrefix,
  parseStorageKey,
  storageKey,
  validateBrokerId,
  validateNamespace,
  validateSessionKey,
} from './namespace.ts';
import { SqliteStore } from './stores/sqlite.ts';
import type { SessionStore, StoredRecord } from './stores/store.ts';
import { DEFAULT_MAX_VALUE_BYTES, deserializeSessionData, serializeSessionData, type JsonValue } from './values.ts';

/** Options of {@link SessionManager.open}. */
export interface SessionManagerOptions {
  /** The keys that seal and open sessions. */
  readonly keyring: Keyring;
  /**
   * Where sealed sessions live. Default: a {@link SqliteStore} at `ORDO_SESSION_DB` or
   * `./.ordo/sessions.db`. The manager takes the store over: `close()` closes it.
   */
  readonly store?: SessionStore;
  /** Separates applications or environments sharing one store. Default `'default'`; same rule as broker ids. */
  readonly namespace?: string;
  /** The largest session, in bytes of UTF-8 JSON. Default 64 KiB. */
  readonly maxValueBytes?: number;
  /** Epoch ms now. Default `Date.now`; tests pass a fake clock. */
  readonly clock?: () => number;
}

/** What {@link SessionManager.listSessions} yields: never any session data. */
export interface SessionInfo {
  readonly key: string;
  /** Absent when the session never expires. */
  readonly expiresAt?: Date;
  readonly updatedAt: Date;
  /** The id of the key that sealed it, read from the envelope header; `null` if the header is unreadable. */
  readonly keyId: string | null;
}

/** The default database path when no store is given. */
export const DEFAULT_SQLITE_PATH = './.ordo/sessions.db';
const LIST_PAGE_SIZE = 500;
const MAX_VALUE_BYTES_LIMIT = 16 * 1024 * 1024;
const CANARY_PREFIX = 'canary/';
const CANARY_PLAINTEXT = Buffer.from('{"ordo-sessions":"canary"}', 'utf8');

function checkOptions(options: SessionManagerOptions): { namespace: string; maxValueBytes: number; clock: () => number } {
  if (typeof options !== 'object' || options === null) throw new InvalidOptionsError('SessionManager.open needs an options object');
  if (!(options.keyring instanceof Keyring)) {
    throw new InvalidOptionsError('SessionManager.open needs a keyring: Keyring.fromEnv() or new Keyring([...])');
  }
  const maxValueBytes = options.maxValueBytes ?? DEFAULT_MAX_VALUE_BYTES;
  if (!Number.isSafeInteger(maxValueBytes) || maxValueBytes < 1 || maxValueBytes > MAX_VALUE_BYTES_LIMIT) {
    throw new InvalidOptionsError(`maxValueBytes must be an integer from 1 to ${MAX_VALUE_BYTES_LIMIT}`);
  }
  const clock = options.clock ?? Date.now;
  if (typeof clock !== 'function') throw new InvalidOptionsError('clock must be a function returning epoch milliseconds');
  if (options.store !== undefined && (typeof options.store !== 'object' || typeof options.store.get !== 'function')) {
    throw new InvalidOptionsError('store must implement SessionStore');
  }
  return { namespace: validateNamespace(options.namespace ?? DEFAULT_NAMESPACE), maxValueBytes, clock };
}

/** Runs a store call, turning anything that is not already a typed error into a StoreError. */
async function callStore<T>(store: SessionStore, operation: string, run: () => Promise<T>): Promise<T> {
  try {
    return await run();
  } catch (error) {
    if (error instanceof SessionError) throw error;
    throw new StoreError(`${store.kind} store ${operation} failed`, { cause: error });
  }
}

/**
 * Stores and retrieves broker sessions: namespaced per broker, sealed with AES-256-GCM.
 *
 * @example
 * ```ts
 * const sessions = await SessionManager.open({ keyring: Keyring.fromEnv() });
 * await sessions.setSession('fyers', 'XY1234', { accessToken, refreshToken }, { ttlMs: 8 * 3600_000 });
 * const session = await sessions.getSession<FyersSession>('fyers', 'XY1234');
 * await sessions.close();
 * ```
 */
export class SessionManager {
  readonly #keyring: Keyring;
  readonly #store: SessionStore;
  readonly #namespace: string;
  readonly #maxValueBytes: number;
  readonly #clock: () => number;
  #closed = false;

  private constructor(keyring: Keyring, store: SessionStore, namespace: string, maxValueBytes: number, clock: () => number) {
    this.#keyring = keyring;
    this.#store = store;
    this.#namespace = namespace;
    this.#maxValueBytes = maxValueBytes;
    this.#clock = clock;
  }

  /**
   * Opens a manager over a store, after checking that the keyring can open what the store holds.
   *
   * @example
   * ```ts
   * const sessions = await SessionManager.open({
   *   keyring: Keyring.fromEnv(),
   *   store: new SqliteStore({ path: '/var/lib/trader/sessions.db' }),
   *   namespace: 'prod',
   * });
   * ```
   * @throws InvalidOptionsError, InvalidSessionKeyError (namespace), StoreError, and
   *   KeyringMismatchError when no configured key can open this store's canary.
   */
  static async open(options: SessionManagerOptions): Promise<SessionManager> {
    const { namespace, maxValueBytes, clock } = checkOptions(options);
    const store = options.store ?? new SqliteStore({ path: process.env['ORDO_SESSION_DB'] || DEFAULT_SQLITE_PATH });
    const manager = new SessionManager(options.keyring, store, namespace, maxValueBytes, clock);
    try {
      await callStore(store, 'open', async () => store.open?.());
      await manager.#checkCanary();
    } catch (error) {
      await store.close().catch(() => undefined);
      throw error;
    }
    return manager;
  }

  /** The namespace this manager works in. */
  get namespace(): string {
    return this.#namespace;
  }

  /** The store this manager works on. */
  get store(): SessionStore {
    return this.#store;
  }

  /**
   * Stores a session, replacing any previous one at the same broker and key.
   * Everything is validated before anything is written.
   *
   * @example
   * ```ts
   * await sessions.setSession('kite', 'AB1234', { accessToken }, { expiresAt: tomorrowAt6IST });
   * ```
   * @throws InvalidSessionKeyError, InvalidSessionDataError, InvalidExpiryError, StoreError
   */
  async setSession(broker: string, key: string, data: unknown, options?: ExpiryOptions): Promise<void> {
    this.#assertOpen();
    const now = this.#clock();
    const { identity, location } = this.#locate(broker, key, resolveExpiry(options, now));
    const plaintext = serializeSessionData(data, this.#maxValueBytes);
    const sealed = seal(this.#keyring, plaintext, identity);
    plaintext.fill(0);
    await callStore(this.#store, 'write', () =>
      this.#store.set(location, sealed, { expiresAt: identity.expiresAt, updatedAt: now }),
    );
  }

  /**
   * The session at broker and key, or `undefined` when there is none or it has expired.
   *
   * @example
   * ```ts
   * const session = await sessions.getSession<{ accessToken: string }>('fyers', 'XY1234');
   * ```
   * @throws SessionIntegrityError when the stored record was tampered with or moved;
   *   UnknownKeyIdError when it was sealed under a key id the keyring lacks. Never `undefined` for those.
   */
  async getSession<T = JsonValue>(broker: string, key: string): Promise<T | undefined> {
    this.#assertOpen();
    const { identity, location } = this.#locate(broker, key, null);
    const record = await callStore(this.#store, 'read', () => this.#store.get(location));
    if (record === undefined || this.#isExpired(record)) return undefined;
    const plaintext = openEnvelope(this.#keyring, record.value, { ...identity, expiresAt: record.expiresAt });
    try {
      return deserializeSessionData(plaintext) as T;
    } catch {
      throw new SessionIntegrityError(); // authenticated yet not our JSON: treat as corrupt, never leak it
    } finally {
      plaintext.fill(0);
    }
  }

  /**
   * Whether a live session exists. The record is opened, so a tampered one throws rather than
   * counting as present.
   *
   * @example
   * ```ts
   * if (!(await sessions.hasSession('fyers', 'XY1234'))) await login();
   * ```
   */
  async hasSession(broker: string, key: string): Promise<boolean> {
    return (await this.getSession(broker, key)) !== undefined;
  }

  /**
   * Deletes one session; resolves with whether one existed (expired or not).
   *
   * @example
   * ```ts
   * await sessions.deleteSession('fyers', 'XY1234'); // true
   * ```
   */
  async deleteSession(broker: string, key: string): Promise<boolean> {
    this.#assertOpen();
    const { location } = this.#locate(broker, key, null);
    return callStore(this.#store, 'delete', () => this.#store.delete(location));
  }

  /**
   * The live sessions of one broker, streamed page by page: keys and metadata, never data.
   * Listing reads store metadata and does not open envelopes; `getSession` verifies each one.
   *
   * @example
   * ```ts
   * for await (const { key, expiresAt, keyId } of sessions.listSessions('fyers')) console.log(key, expiresAt, keyId);
   * ```
   */
  listSessions(broker: string): AsyncIterable<SessionInfo> {
    this.#assertOpen();
    const prefix = brokerPrefix(this.#namespace, validateBrokerId(broker));
    return this.#list(prefix);
  }

  /**
   * Deletes every session of one broker, and nothing of any other; resolves with how many.
   *
   * @example
   * ```ts
   * await sessions.clearBroker('upstox'); // 12
   * ```
   */
  async clearBroker(broker: string): Promise<number> {
    this.#assertOpen();
    const prefix = brokerPrefix(this.#namespace, validateBrokerId(broker));
    return callStore(this.#store, 'clear', () => this.#store.deleteByPrefix(prefix));
  }

  /**
   * Deletes the expired sessions of this namespace; resolves with how many. Expired sessions are
   * invisible before this runs; purging only reclaims their space.
   *
   * @example
   * ```ts
   * setInterval(() => void sessions.purgeExpired(), 3600_000).unref();
   * ```
   */
  async purgeExpired(): Promise<number> {
    this.#assertOpen();
    const now = this.#clock();
    return callStore(this.#store, 'purge', () => this.#store.purgeExpired(namespacePrefix(this.#namespace), now));
  }

  /**
   * A view of one broker's sessions: the same methods without the broker argument. It cannot
   * reach any other broker's sessions.
   *
   * @example
   * ```ts
   * const fyers = sessions.forBroker<FyersSession>('fyers');
   * await fyers.setSession('XY1234', session, { ttlMs: 8 * 3600_000 });
   * ```
   * @throws InvalidSessionKeyError for a bad broker id.
   */
  forBroker<T = JsonValue>(broker: string): BrokerSessions<T> {
    this.#assertOpen();
    return new BrokerSessions<T>(this, validateBrokerId(broker));
  }

  /**
   * Closes the manager and its store. Idempotent; every later call throws SessionClosedError.
   *
   * @example
   * ```ts
   * process.on('SIGTERM', () => void sessions.close());
   * ```
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await callStore(this.#store, 'close', () => this.#store.close());
  }

  toString(): string {
    return `SessionManager(namespace ${this.#namespace}, ${this.#store.kind} store, ${this.#keyring.toString()})`;
  }

  toJSON(): { namespace: string; store: string; keyIds: readonly string[]; closed: boolean } {
    return { namespace: this.#namespace, store: this.#store.kind, keyIds: this.#keyring.keyIds, closed: this.#closed };
  }

  [inspect.custom](): string {
    return this.toString();
  }

  /**
   * Validates broker and key and says where their session lives: the storage key, and the
   * identity its ciphertext is bound to. Every single-session operation goes through here.
   */
  #locate(broker: string, key: string, expiresAt: number | null): { identity: RecordIdentity; location: string } {
    const identity: RecordIdentity = {
      kind: 'session',
      namespace: this.#namespace,
      broker: validateBrokerId(broker),
      key: validateSessionKey(key),
      expiresAt,
    };
    return { identity, location: storageKey(this.#namespace, identity.broker, identity.key) };
  }

  #isExpired(record: StoredRecord): boolean {
    return record.expiresAt !== null && record.expiresAt <= this.#clock();
  }

  async *#list(prefix: string): AsyncGenerator<SessionInfo> {
    let cursor: string | undefined;
    do {
      this.#assertOpen();
      const options = cursor === undefined ? { limit: LIST_PAGE_SIZE } : { limit: LIST_PAGE_SIZE, cursor };
      const page = await callStore(this.#store, 'list', () => this.#store.list(prefix, options));
      for (const record of page.records) {
        if (this.#isExpired(record)) continue;
        const parsed = parseStorageKey(this.#namespace, record.key);
        if (parsed === undefined) continue;
        const info = { key: parsed.key, updatedAt: new Date(record.updatedAt), keyId: envelopeKeyId(record.value) ?? null };
        yield record.expiresAt === null ? info : { ...info, expiresAt: new Date(record.expiresAt) };
      }
      cursor = page.cursor;
    } while (cursor !== undefined);
  }

  /**
   * The wrong-key check. The store keeps one canary per key id, sealed under that key. Opening
   * passes when at least one canary opens with a key we hold and none we hold fails to open;
   * then the primary's canary is written if missing. A store whose canaries were lost but that
   * holds sessions must open one of them instead. A store opened with the wrong keys is thus
   * never mistaken for an empty one, and never overwritten.
   */
  async #checkCanary(): Promise<void> {
    const keyring = this.#keyring;
    const canaries = await this.#canaries();
    const held = canaries.filter(({ keyId }) => keyring.has(keyId));
    for (const canary of held) {
      try {
        openEnvelope(keyring, canary.record.value, this.#canaryIdentity(canary.keyId)).fill(0);
      } catch {
        throw new KeyringMismatchError(
          `key "${canary.keyId}" is not the key this store's records under that id were sealed with`,
        );
      }
    }
    if (canaries.length > 0 && held.length === 0) {
      throw new KeyringMismatchError(
        `none of the configured keys can open this store: it was written with key ids ${canaries.map((c) => `"${c.keyId}"`).join(', ')}, the keyring holds ${keyring.keyIds.map((id) => `"${id}"`).join(', ')}`,
      );
    }
    if (canaries.length === 0) await this.#checkAnySession();
    if (!held.some(({ keyId }) => keyId === keyring.primaryKeyId)) await this.#writeCanary();
  }

  async #canaries(): Promise<Array<{ keyId: string; record: StoredRecord }>> {
    const prefix = metadataKey(this.#namespace, CANARY_PREFIX);
    const found: Array<{ keyId: string; record: StoredRecord }> = [];
    let cursor: string | undefined;
    do {
      const options = cursor === undefined ? { limit: 100 } : { limit: 100, cursor };
      const page = await callStore(this.#store, 'open', () => this.#store.list(prefix, options));
      for (const record of page.records) found.push({ keyId: record.key.slice(prefix.length), record });
      cursor = page.cursor;
    } while (cursor !== undefined);
    return found;
  }

  /** With no canary at all, a store that already holds sessions must hold one we can open. */
  async #checkAnySession(): Promise<void> {
    let record: ({ key: string } & StoredRecord) | undefined;
    let cursor: string | undefined;
    do {
      const options = cursor === undefined ? { limit: 1 } : { limit: 1, cursor };
      const page = await callStore(this.#store, 'open', () => this.#store.list(namespacePrefix(this.#namespace), options));
      record = page.records[0];
      cursor = page.cursor;
    } while (record === undefined && cursor !== undefined);
    if (record === undefined) return;
    const parsed = parseStorageKey(this.#namespace, record.key);
    try {
      if (parsed === undefined) throw new SessionIntegrityError();
      openEnvelope(this.#keyring, record.value, { kind: 'session', namespace: this.#namespace, ...parsed, expiresAt: record.expiresAt }).fill(0);
    } catch {
      throw new KeyringMismatchError('this store holds sessions but no configured key can open them');
    }
  }

  async #writeCanary(): Promise<void> {
    const keyId = this.#keyring.primaryKeyId;
    const sealed = seal(this.#keyring, CANARY_PLAINTEXT, this.#canaryIdentity(keyId));
    const key = metadataKey(this.#namespace, `${CANARY_PREFIX}${keyId}`);
    const written = await callStore(this.#store, 'open', () =>
      this.#store.compareAndSet(key, null, sealed, { expiresAt: null, updatedAt: this.#clock() }),
    );
    if (written.ok) return;
    // Another process wrote it first: it must open with our key too.
    const record = await callStore(this.#store, 'open', () => this.#store.get(key));
    try {
      if (record === undefined) throw new SessionIntegrityError();
      openEnvelope(this.#keyring, record.value, this.#canaryIdentity(keyId)).fill(0);
    } catch {
      throw new KeyringMismatchError(`key "${keyId}" is not the key this store's records under that id were sealed with`);
    }
  }

  #canaryIdentity(keyId: string): RecordIdentity {
    return { kind: 'metadata', namespace: this.#namespace, broker: '', key: `${CANARY_PREFIX}${keyId}`, expiresAt: null };
  }

  #assertOpen(): void {
    if (this.#closed) throw new SessionClosedError();
  }
}

/**
 * One broker's sessions. Made by {@link SessionManager.forBroker}; it holds its broker id and no
 * method takes another, so it cannot reach any other broker's sessions.
 *
 * @example
 * ```ts
 * const kite = sessions.forBroker<KiteSession>('kite');
 * await kite.setSession('AB1234', { accessToken }, { expiresAt });
 * for await (const info of kite.listSessions()) console.log(info.key);
 * ```
 */
export class BrokerSessions<T = JsonValue> {
  readonly #manager: SessionManager;
  /** The broker id every call of this view uses. */
  readonly broker: string;

  /** @internal use {@link SessionManager.forBroker}. */
  constructor(manager: SessionManager, broker: string) {
    this.#manager = manager;
    this.broker = validateBrokerId(broker);
  }

  /** Like {@link SessionManager.setSession} for this broker. */
  setSession(key: string, data: T, options?: ExpiryOptions): Promise<void> {
    return this.#manager.setSession(this.broker, key, data, options);
  }

  /** Like {@link SessionManager.getSession} for this broker. */
  getSession(key: string): Promise<T | undefined> {
    return this.#manager.getSession<T>(this.broker, key);
  }

  /** Like {@link SessionManager.hasSession} for this broker. */
  hasSession(key: string): Promise<boolean> {
    return this.#manager.hasSession(this.broker, key);
  }

  /** Like {@link SessionManager.deleteSession} for this broker. */
  deleteSession(key: string): Promise<boolean> {
    return this.#manager.deleteSession(this.broker, key);
  }

  /** Like {@link SessionManager.listSessions} for this broker. */
  listSessions(): AsyncIterable<SessionInfo> {
    return this.#manager.listSessions(this.broker);
  }

  /** Like {@link SessionManager.clearBroker} for this broker. */
  clearBroker(): Promise<number> {
    return this.#manager.clearBroker(this.broker);
  }

  toString(): string {
    return `BrokerSessions(${this.broker})`;
  }

  toJSON(): { broker: string } {
    return { broker: this.broker };
  }

  [inspect.custom](): string {
    return this.toString();
  }
}
