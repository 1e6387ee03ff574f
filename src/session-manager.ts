/**
 * The policy layer: validation, namespacing, expiry and the wrong-key check. Plaintext enters
 * here and leaves sealed; the store below sees only sealed bytes and storage keys.
 */
import { inspect } from 'node:util';
import { envelopeKeyId, envelopeVersion, open as openEnvelope, openNamed, seal, sealNamed, type RecordIdentity } from './crypto/envelope.ts';
import { isKeySource, resolveKeySource, type KeySource, type ProviderMetadata } from './crypto/key-provider.ts';
import type { Keyring } from './crypto/keyring.ts';
import { NAMES_METADATA_NAME, parseNamesMode, PrivateNames, type NamesMode } from './private-names.ts';
import {
  countKeyUsage,
  EncryptionCounter,
  keyStatsOf,
  NONCE_ROTATE_AT,
  NONCE_WARN_AT,
  rotateRecords,
  type KeyStat,
  type RecordCodec,
  type RotateKeysOptions,
  type RotationResult,
} from './rotation.ts';
import {
  InvalidOptionsError,
  KeyInUseError,
  KeyringMismatchError,
  RotationAbortedError,
  SessionClosedError,
  SessionIntegrityError,
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
import type { StandardSchemaV1 } from '@standard-schema/spec';
import { isStandardSchema } from './schema.ts';
import { BrokerSessions } from './broker-sessions.ts';
import { getOrRefresh, type GetOrRefreshOptions, type Refresher, type VersionedSession } from './refresh.ts';
import { callStore, pages, storeFailure } from './store-calls.ts';
import { SqliteStore } from './stores/sqlite.ts';
import type { SessionStore, StoredRecord } from './stores/store.ts';
import { DEFAULT_MAX_VALUE_BYTES, deserializeSessionData, serializeSessionData, type JsonValue } from './values.ts';
import { WatchRegistry, type SessionChangeListener, type Unwatch, type WatchOptions } from './watch.ts';

/** Options of {@link SessionManager.open}. */
export interface SessionManagerOptions {
  /**
   * The keys that seal and open sessions: a {@link Keyring}, or a {@link KeyProvider}
   * (`Keyring.fromPassphrase(...)`, a secret manager) resolved once here.
   */
  readonly keyring: KeySource;
  /**
   * Open even though the keyring lacks a key that still protects records (those records then
   * throw `UnknownKeyIdError` when read). Default `false`: such an open throws `KeyInUseError`.
   */
  readonly allowMissingKeys?: boolean;
  /** Re-seal a record under the primary key when it is read under an older one. Default `false`. */
  readonly rotateOnRead?: boolean;
  /**
   * Storage keys become HMACs: a raw dump shows no broker names or account ids. Fixed when the
   * store's namespace is first opened; opening it the other way is refused. Default `false`.
   */
  readonly privateKeys?: boolean;
  /** Receives warnings (the nonce budget of a key). Default: `process.emitWarning` with the code. */
  readonly onWarning?: (warning: KeyWarning) => void;
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

/** A warning from {@link SessionManager.open}; `code` is stable. */
export interface KeyWarning {
  /** `ORDO_NONCE_BUDGET` from 2^31 encryptions of the primary key; `ORDO_NONCE_BUDGET_ROTATE` from 0.9 × 2^32. */
  readonly code: 'ORDO_NONCE_BUDGET' | 'ORDO_NONCE_BUDGET_ROTATE';
  readonly keyId: string;
  readonly encryptions: number;
  readonly message: string;
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

/** What {@link SessionManager.listAllSessions} yields: a {@link SessionInfo} with its broker. */
export interface BrokerSessionInfo extends SessionInfo {
  readonly broker: string;
}

/**
 * One listed session, built as a literal: an object spread here made V8 allocate every listed
 * entry straight into the old generation (pretenuring), so a long listing grew the heap by tens
 * of MiB of garbage before each full collection.
 */
function sessionInfo(broker: string | undefined, key: string, record: StoredRecord): SessionInfo | BrokerSessionInfo {
  const updatedAt = new Date(record.updatedAt);
  const keyId = envelopeKeyId(record.value) ?? null;
  if (broker === undefined) {
    return record.expiresAt === null ? { key, updatedAt, keyId } : { key, updatedAt, keyId, expiresAt: new Date(record.expiresAt) };
  }
  return record.expiresAt === null
    ? { broker, key, updatedAt, keyId }
    : { broker, key, updatedAt, keyId, expiresAt: new Date(record.expiresAt) };
}

/** The identity with another expiry, as a literal (a spread on a hot path costs an object clone). */
function withExpiry(identity: RecordIdentity, expiresAt: number | null): RecordIdentity {
  return { kind: identity.kind, namespace: identity.namespace, broker: identity.broker, key: identity.key, expiresAt };
}

/** The default database path when no store is given. */
export const DEFAULT_SQLITE_PATH = './.ordo/sessions.db';
const LIST_PAGE_SIZE = 500;
const MAX_VALUE_BYTES_LIMIT = 16 * 1024 * 1024;
const CANARY_PREFIX = 'canary/';
const CANARY_PLAINTEXT = Buffer.from('{"ordo-sessions":"canary"}', 'utf8');

function checkOptions(options: SessionManagerOptions): { namespace: string; maxValueBytes: number; clock: () => number } {
  if (typeof options !== 'object' || options === null) throw new InvalidOptionsError('SessionManager.open needs an options object');
  if (!isKeySource(options.keyring)) {
    throw new InvalidOptionsError('SessionManager.open needs a keyring: Keyring.fromEnv(), new Keyring([...]) or a KeyProvider');
  }
  for (const flag of ['allowMissingKeys', 'rotateOnRead', 'privateKeys'] as const) {
    if (options[flag] !== undefined && typeof options[flag] !== 'boolean') throw new InvalidOptionsError(`${flag} must be a boolean`);
  }
  if (options.onWarning !== undefined && typeof options.onWarning !== 'function') throw new InvalidOptionsError('onWarning must be a function');
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

/** The plaintext metadata a KeyProvider may keep (the passphrase salt), under `<namespace>!<name>`. */
function providerMetadata(store: SessionStore, namespace: string, clock: () => number): ProviderMetadata {
  return {
    get: async (name) => (await callStore(store, 'open', () => store.get(metadataKey(namespace, name))))?.value,
    create: async (name, value) =>
      (await callStore(store, 'open', () => store.compareAndSet(metadataKey(namespace, name), null, value, { expiresAt: null, updatedAt: clock() }))).ok,
  };
}

function emitWarning(warning: KeyWarning): void {
  process.emitWarning(warning.message, { code: warning.code, type: 'OrdoSessionsWarning' });
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
  readonly #watchers = new WatchRegistry();
  /** getOrRefresh calls in flight, by storage key: concurrent callers share one. */
  readonly #refreshes = new Map<string, Promise<unknown>>();
  #closed = false;
  /** Set when the store's storage keys are private (HMACs). */
  #names: PrivateNames | undefined;
  /** While a rename is in progress: the old naming, whose storage keys may still hold sessions. */
  #legacyNames: PrivateNames | undefined;
  #rotateOnRead = false;
  #counter!: EncryptionCounter;

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
   *   KeyringMismatchError when no configured key can open this store's canary; KeyInUseError
   *   (a KeyringMismatchError) when a key dropped from the keyring still protects records, unless
   *   `allowMissingKeys: true`; KeyringError from a key provider (a bad passphrase record).
   */
  static async open(options: SessionManagerOptions): Promise<SessionManager> {
    const { namespace, maxValueBytes, clock } = checkOptions(options);
    const store = options.store ?? new SqliteStore({ path: process.env['ORDO_SESSION_DB'] || DEFAULT_SQLITE_PATH });
    try {
      await callStore(store, 'open', async () => store.open?.());
      const keyring = await resolveKeySource(options.keyring, { namespace, metadata: providerMetadata(store, namespace, clock) });
      const manager = new SessionManager(keyring, store, namespace, maxValueBytes, clock);
      manager.#rotateOnRead = options.rotateOnRead === true;
      manager.#counter = new EncryptionCounter(store, namespace, keyring, clock);
      await manager.#checkNames(options.privateKeys === true);
      await manager.#checkCanary(options.allowMissingKeys === true);
      await manager.#checkNonceBudget(options.onWarning ?? emitWarning);
      return manager;
    } catch (error) {
      await store.close().catch(() => undefined);
      throw error;
    }
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
    const sealed = this.#sealSession(identity, plaintext);
    plaintext.fill(0);
    try {
      await this.#store.set(location, sealed, { expiresAt: identity.expiresAt, updatedAt: now });
    } catch (error) {
      throw storeFailure(this.#store, 'write', error);
    }
    const legacy = this.#legacyLocation(identity.broker, identity.key);
    if (legacy !== undefined) await callStore(this.#store, 'write', () => this.#store.delete(legacy));
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
    const { identity, location: current } = this.#locate(broker, key, null);
    let location = current;
    let record: StoredRecord | undefined;
    try {
      record = await this.#store.get(location);
    } catch (error) {
      throw storeFailure(this.#store, 'read', error);
    }
    const legacy = this.#legacyLocation(identity.broker, identity.key);
    if (record === undefined && legacy !== undefined) {
      location = legacy; // a rename is in progress and has not moved this one yet
      record = await callStore(this.#store, 'read', () => this.#store.get(location));
    }
    if (record === undefined || this.#isExpired(record)) return undefined;
    const plaintext = this.#openAt(location, withExpiry(identity, record.expiresAt), record.value);
    try {
      if (this.#rotateOnRead && location === current && envelopeKeyId(record.value) !== this.#keyring.primaryKeyId) {
        await this.#rewrite(location, record, withExpiry(identity, record.expiresAt), plaintext);
      }
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
   * The session, refreshed first by `refresher` when it is missing, expired or within
   * `refreshBeforeMs` of expiry; exactly one caller across every process sharing the store runs
   * the refresher, and the others wait for its session. A fresh session costs one read, no lock.
   * See `src/refresh.ts` for the lease, wait and fencing rules.
   *
   * @example
   * ```ts
   * const session = await sessions.getOrRefresh<FyersSession>('fyers', accountId, async (current) => {
   *   const next = await callBrokerRefresh(current?.refreshToken);
   *   return { data: next, expiresAt: next.expiresAt };
   * }, { refreshBeforeMs: 60_000, lockTtlMs: 30_000, waitTimeoutMs: 60_000 });
   * ```
   * @throws RefreshError (cause: the refresher's error, or why its result was refused),
   *   RefreshConflictError, LockTimeoutError, LoginRequiredError (unwrapped), StoreError,
   *   SessionIntegrityError, InvalidOptionsError
   */
  async getOrRefresh<T = JsonValue>(broker: string, key: string, refresher: Refresher<T>, options?: GetOrRefreshOptions): Promise<T> {
    this.#assertOpen();
    const { identity, location } = this.#locate(broker, key, null);
    // Mid-rename, move this one session first, so the refresh works at one location.
    const legacy = this.#legacyLocation(identity.broker, identity.key);
    if (legacy !== undefined) {
      const old = await callStore(this.#store, 'read', () => this.#store.get(legacy));
      if (old !== undefined) await this.#moveRecord(legacy, old);
    }
    const target = {
      store: this.#store,
      location,
      clock: this.#clock,
      inflight: this.#refreshes,
      read: () => this.#readVersioned<T>(identity, location),
      seal: (data: unknown, expiresAt: number | null) => this.#sealForRefresh<T>(identity, data, expiresAt),
    };
    return getOrRefresh(target, refresher, options);
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
    const { identity, location } = this.#locate(broker, key, null);
    const deleted = await callStore(this.#store, 'delete', () => this.#store.delete(location));
    const legacy = this.#legacyLocation(identity.broker, identity.key);
    if (legacy === undefined) return deleted;
    return (await callStore(this.#store, 'delete', () => this.#store.delete(legacy))) || deleted;
  }

  /**
   * The live sessions of one broker, streamed page by page: keys and metadata, never data.
   * Listing reads store metadata and does not open envelopes; `getSession` verifies each one.
   * With `privateKeys: true` it opens each record to recover its key name (one AES-GCM
   * decryption per record); a record that fails to open is left out.
   *
   * @example
   * ```ts
   * for await (const { key, expiresAt, keyId } of sessions.listSessions('fyers')) console.log(key, expiresAt, keyId);
   * ```
   */
  listSessions(broker: string): AsyncIterable<SessionInfo> {
    this.#assertOpen();
    const id = validateBrokerId(broker);
    const prefix = this.#brokerPrefix(id);
    const legacy = this.#legacyNames?.brokerPrefix(id);
    return legacy === undefined ? this.#list(prefix, false) : this.#listAll([prefix, legacy], false);
  }

  /**
   * The live sessions of every broker in this namespace, streamed page by page: broker, key and
   * metadata, never data. Like {@link SessionManager.listSessions}, it does not open envelopes.
   *
   * @example
   * ```ts
   * for await (const { broker, key, expiresAt } of sessions.listAllSessions()) console.log(broker, key, expiresAt);
   * ```
   */
  async *listAllSessions(): AsyncGenerator<BrokerSessionInfo> {
    this.#assertOpen();
    yield* this.#list(namespacePrefix(this.#namespace), true);
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
    const id = validateBrokerId(broker);
    const prefix = this.#brokerPrefix(id);
    const cleared = await callStore(this.#store, 'clear', () => this.#store.deleteByPrefix(prefix));
    const legacy = this.#legacyNames?.brokerPrefix(id);
    if (legacy === undefined) return cleared;
    return cleared + (await callStore(this.#store, 'clear', () => this.#store.deleteByPrefix(legacy)));
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
  forBroker<S extends StandardSchemaV1>(
    broker: string,
    options: { readonly schema: S },
  ): BrokerSessions<StandardSchemaV1.InferOutput<S>, StandardSchemaV1.InferInput<S>>;
  forBroker<T = JsonValue>(broker: string): BrokerSessions<T>;
  forBroker(broker: string, options?: { readonly schema: StandardSchemaV1 }): BrokerSessions<unknown> {
    this.#assertOpen();
    if (options !== undefined && (typeof options !== 'object' || options === null || !isStandardSchema(options.schema))) {
      throw new InvalidOptionsError('forBroker options.schema must be a Standard Schema (zod 4, valibot, arktype...)');
    }
    return new BrokerSessions(this, validateBrokerId(broker), options?.schema);
  }

  /**
   * Tells `listener` about every change to this namespace's sessions (or one broker's) made by
   * any process sharing the store, this one included: `{ broker, key, kind }`, never the data.
   * Resolves, once listening, with a function that stops it; `close()` stops every watcher.
   *
   * @example
   * ```ts
   * const unwatch = await sessions.watch(({ broker, key, kind }) => {
   *   if (broker === 'kite' && key === 'AB1234' && kind !== 'delete') void reconnectTicker();
   * }, { broker: 'kite', onError: console.error });
   * await unwatch();
   * ```
   * @throws InvalidOptionsError when the store cannot watch, or the namespace uses private key
   *   names (an event would have to name what the store hides); InvalidSessionKeyError for a bad broker id.
   */
  async watch(listener: SessionChangeListener, options?: WatchOptions): Promise<Unwatch> {
    this.#assertOpen();
    if (this.#names !== undefined) {
      throw new InvalidOptionsError('watch is not available with privateKeys: its events would have to name the sessions the store hides');
    }
    return this.#watchers.watch(this.#store, this.#namespace, listener, options);
  }

  /**
   * Re-seals every record of this namespace that is not under the primary key (sessions and
   * sealed metadata), a page at a time with flat memory, each by compare-and-set: a record written
   * meanwhile is left as its writer sealed it, never overwritten. Identity (AAD), expiry and
   * `updatedAt` stay as they were. Safe to interrupt (abort, crash, SIGKILL) and to run again:
   * it resumes by skipping what is already under the primary. Expired records are skipped
   * (`purgeExpired()` removes them).
   *
   * @example
   * ```ts
   * const total = Object.values(await sessions.keyUsage()).reduce((a, b) => a + b, 0);
   * const result = await sessions.rotateKeys({ onProgress: ({ scanned }) => bar.update(scanned, { total }) });
   * // { scanned: 1200, rotated: 1150, skipped: 50, unreadable: 0 }
   * ```
   *
   * With `renameKeys: true` (private key names only, else InvalidOptionsError) it first moves
   * every session to storage keys named with the primary's HMAC subkey (see `#moveRecord` for
   * the conflict rule), then rotates, then records the primary as the name key; the old key can
   * then be dropped. Mid-rename, every manager reads both locations. README "Private key names".
   * @throws RotationAbortedError when `signal` aborts (every record stays readable); StoreError.
   */
  async rotateKeys(options: RotateKeysOptions = {}): Promise<RotationResult> {
    this.#assertOpen();
    if (options.renameKeys !== undefined && typeof options.renameKeys !== 'boolean') throw new InvalidOptionsError('renameKeys must be a boolean');
    if (options.renameKeys === true && this.#names === undefined) {
      throw new InvalidOptionsError('renameKeys needs a store opened with privateKeys: true (plain storage keys are not named with a key)');
    }
    const keyring = this.#keyring;
    const codec: RecordCodec = {
      current: (_key, record) => envelopeKeyId(record.value) === keyring.primaryKeyId,
      reseal: (key, record) => {
        const identity = this.#identityOfStored(key, record);
        if (identity === undefined) throw new SessionIntegrityError();
        const plaintext = this.#openAt(key, identity, record.value);
        try {
          return this.#sealAt(key, identity, plaintext, false);
        } finally {
          plaintext.fill(0);
        }
      },
    };
    try {
      const renamed = options.renameKeys === true ? await this.#renameAll(options) : undefined;
      const result = await rotateRecords(this.#store, this.#namespace, keyring, codec, this.#clock, options, (id) => this.#counter.note(id));
      if (renamed === undefined) return result;
      if (renamed.complete) await this.#finishRename();
      return { ...result, renamed: renamed.moved, renameComplete: renamed.complete };
    } finally {
      await this.#counter.flush().catch(() => undefined);
    }
  }

  /**
   * How many live records each key id still protects (sessions and sealed metadata, from envelope
   * headers; canaries not counted), e.g. `{ k2: 1200, k1: 3 }`. A key with no entry protects
   * nothing and can be dropped. Scans the whole namespace.
   *
   * @example
   * ```ts
   * const usage = await sessions.keyUsage();
   * if ((usage['k1'] ?? 0) === 0) console.log('k1 can be removed from ORDO_SESSION_KEYS');
   * ```
   */
  async keyUsage(): Promise<Record<string, number>> {
    this.#assertOpen();
    return countKeyUsage(this.#store, this.#namespace, this.#clock());
  }

  /**
   * How many times each key has encrypted (approximate, shared by every process through the
   * store's metadata), against the AES-GCM random-nonce budget of 2^32 per key.
   *
   * @example
   * ```ts
   * for (const { keyId, encryptions, used } of await sessions.keyStats()) console.log(keyId, encryptions, `${(used * 100).toFixed(4)}%`);
   * ```
   */
  async keyStats(): Promise<KeyStat[]> {
    this.#assertOpen();
    return keyStatsOf(this.#keyring, await this.#counter.read());
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
    await this.#counter.flush().catch(() => undefined); // counts are approximate: never fail close for them
    await this.#watchers.closeAll();
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
    return { identity, location: this.#storageKeyOf(identity.broker, identity.key) };
  }

  #isExpired(record: StoredRecord): boolean {
    return record.expiresAt !== null && record.expiresAt <= this.#clock();
  }

  /** For getOrRefresh: the session opened whether expired or not (a refresh needs the old refresh token), with its version. */
  async #readVersioned<T>(identity: RecordIdentity, location: string): Promise<VersionedSession<T> | undefined> {
    const record = await callStore(this.#store, 'read', () => this.#store.get(location));
    if (record === undefined) return undefined;
    const plaintext = this.#openSession(withExpiry(identity, record.expiresAt), record.value);
    try {
      return { data: deserializeSessionData(plaintext) as T, version: record.version, expiresAt: record.expiresAt };
    } catch {
      throw new SessionIntegrityError();
    } finally {
      plaintext.fill(0);
    }
  }

  /** For getOrRefresh: validates and seals like setSession; returns the data as a reader will see it. */
  #sealForRefresh<T>(identity: RecordIdentity, data: unknown, expiresAt: number | null): { sealed: Uint8Array; data: T } {
    const plaintext = serializeSessionData(data, this.#maxValueBytes);
    try {
      return { sealed: this.#sealSession(withExpiry(identity, expiresAt), plaintext), data: deserializeSessionData(plaintext) as T };
    } finally {
      plaintext.fill(0);
    }
  }

  async *#listAll<B extends boolean>(prefixes: readonly string[], withBroker: B): AsyncGenerator<B extends true ? BrokerSessionInfo : SessionInfo> {
    for (const prefix of prefixes) yield* this.#list(prefix, withBroker);
  }

  /**
   * The live sessions under a storage-key prefix, with their broker, streamed page by page.
   * Mid-rename, a session still at its old storage key is left out when its new one exists.
   */
  async *#list<B extends boolean>(prefix: string, withBroker: B): AsyncGenerator<B extends true ? BrokerSessionInfo : SessionInfo> {
    for await (const records of pages(this.#store, prefix, LIST_PAGE_SIZE)) {
      this.#assertOpen();
      for (const record of records) {
        if (this.#isExpired(record)) continue;
        const parsed = this.#nameOf(record.key, record);
        if (parsed === undefined) continue;
        if (this.#legacyNames !== undefined && this.#names !== undefined) {
          const current = this.#names.storageKey(parsed.broker, parsed.key);
          if (record.key !== current) {
            if (record.key !== this.#legacyNames.storageKey(parsed.broker, parsed.key)) continue;
            const moved = await callStore(this.#store, 'list', () => this.#store.get(current));
            if (moved !== undefined) continue; // listed (or to be listed) at its new storage key
          }
        }
        yield sessionInfo(withBroker ? parsed.broker : undefined, parsed.key, record) as B extends true ? BrokerSessionInfo : SessionInfo;
      }
    }
  }

  /**
   * The wrong-key check. The store keeps one canary per key id, sealed under that key. Opening
   * passes when at least one canary opens with a key we hold and none we hold fails to open;
   * then the primary's canary is written if missing. A store whose canaries were lost but that
   * holds sessions must open one of them instead. A store opened with the wrong keys is thus
   * never mistaken for an empty one, and never overwritten. In a rolling rotation, old (`k1`) and
   * new (`k2,k1`) keyrings both pass; a keyring that dropped a key still protecting records is
   * refused with KeyInUseError (see the end of this method).
   */
  async #checkCanary(allowMissingKeys = false): Promise<void> {
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
    // A key we lack whose canary is *older* than our primary's was dropped from this keyring;
    // one whose canary is as new or newer belongs to a process ahead of us in a rolling deploy,
    // and must not lock us out (its records read as UnknownKeyIdError until we redeploy).
    const primaryCanary = canaries.find(({ keyId }) => keyId === keyring.primaryKeyId);
    const since = primaryCanary?.record.updatedAt ?? this.#clock();
    const dropped = canaries.filter(({ keyId, record }) => !keyring.has(keyId) && record.updatedAt < since);
    if (dropped.length > 0 && !allowMissingKeys) await this.#checkMissingKeys(dropped);
  }

  /**
   * A canary whose key the keyring lacks: that key may still protect records. Count them (a scan
   * of the namespace, envelope headers only; it runs only while such a canary exists) and refuse
   * if any remain. When none do, the key is retired: its canary is deleted, so later opens skip
   * the scan, and a process that still holds only that key is refused (it can open nothing here).
   */
  async #checkMissingKeys(missing: ReadonlyArray<{ keyId: string; record: StoredRecord }>): Promise<void> {
    const usage = await countKeyUsage(this.#store, this.#namespace, this.#clock(), new Set(missing.map(({ keyId }) => keyId)));
    for (const { keyId } of missing) {
      const records = usage[keyId] ?? 0;
      if (records > 0) throw new KeyInUseError(keyId, records);
    }
    for (const { keyId } of missing) {
      await callStore(this.#store, 'open', () => this.#store.delete(metadataKey(this.#namespace, `${CANARY_PREFIX}${keyId}`)));
    }
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
    const found = record;
    try {
      const identity = this.#identityOfStored(found.key, found);
      if (identity === undefined) throw new SessionIntegrityError();
      this.#openAt(found.key, identity, found.value).fill(0);
    } catch {
      throw new KeyringMismatchError('this store holds sessions but no configured key can open them');
    }
  }

  async #writeCanary(): Promise<void> {
    const keyId = this.#keyring.primaryKeyId;
    const sealed = seal(this.#keyring, CANARY_PLAINTEXT, this.#canaryIdentity(keyId));
    this.#counter.note(keyId);
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

  /** The storage key of a session: plain `<ns>/<broker>/<key>`, or HMACs in private mode. */
  #storageKeyOf(broker: string, key: string): string {
    return this.#names === undefined ? storageKey(this.#namespace, broker, key) : this.#names.storageKey(broker, key);
  }

  #brokerPrefix(broker: string): string {
    return this.#names === undefined ? brokerPrefix(this.#namespace, broker) : this.#names.brokerPrefix(broker);
  }

  /**
   * Seals a session for its (real) identity. In private mode: envelope format 2, the name
   * `broker/key` inside, bound to the storage key's HMAC segments.
   */
  #sealSession(identity: RecordIdentity, plaintext: Uint8Array, count = true): Buffer {
    return this.#sealAt(this.#storageKeyOf(identity.broker, identity.key), identity, plaintext, count);
  }

  /** Seals a session to be stored at `location` (which, in private mode, its AAD binds). */
  #sealAt(location: string, identity: RecordIdentity, plaintext: Uint8Array, count = true): Buffer {
    if (count) this.#counter.note(this.#keyring.primaryKeyId);
    const names = this.#names;
    if (names === undefined) return seal(this.#keyring, plaintext, identity);
    const bound = names.identityOf(location, identity.expiresAt);
    if (bound === undefined) throw new SessionIntegrityError();
    return sealNamed(this.#keyring, `${identity.broker}/${identity.key}`, plaintext, bound);
  }

  /** Opens a session sealed for `identity` (with the record's expiry); the caller wipes the result. */
  #openSession(identity: RecordIdentity, value: Uint8Array): Buffer {
    return this.#openAt(this.#storageKeyOf(identity.broker, identity.key), identity, value);
  }

  /** Opens a session stored at `location` (its own storage key, or mid-rename its old one). */
  #openAt(location: string, identity: RecordIdentity, value: Uint8Array): Buffer {
    const names = this.#names;
    if (names === undefined || envelopeVersion(value) !== 2) return openEnvelope(this.#keyring, value, identity);
    const bound = names.identityOf(location, identity.expiresAt);
    if (bound === undefined) throw new SessionIntegrityError();
    const { name, plaintext } = openNamed(this.#keyring, value, bound);
    if (name !== `${identity.broker}/${identity.key}`) {
      plaintext.fill(0);
      throw new SessionIntegrityError();
    }
    return plaintext;
  }

  /** Broker and key of a stored session record (in private mode, by opening it), or `undefined`. */
  #nameOf(storageKey: string, record: StoredRecord): { broker: string; key: string } | undefined {
    const names = this.#names;
    if (names === undefined) return parseStorageKey(this.#namespace, storageKey);
    const bound = names.identityOf(storageKey, record.expiresAt);
    if (bound === undefined || envelopeVersion(record.value) !== 2) return undefined;
    let opened: { name: string; plaintext: Buffer };
    try {
      opened = openNamed(this.#keyring, record.value, bound);
    } catch {
      return undefined; // unreadable: getSession reports it; a listing only names what it can open
    }
    opened.plaintext.fill(0);
    const slash = opened.name.indexOf('/');
    return slash < 0 ? undefined : { broker: opened.name.slice(0, slash), key: opened.name.slice(slash + 1) };
  }

  /** The (real) identity of a stored session record, or `undefined`. */
  #identityOfStored(key: string, record: StoredRecord): RecordIdentity | undefined {
    const parsed = this.#nameOf(key, record);
    if (parsed === undefined) return undefined;
    return { kind: 'session', namespace: this.#namespace, broker: parsed.broker, key: parsed.key, expiresAt: record.expiresAt };
  }

  /** rotateOnRead: re-seal under the primary by compare-and-set; any failure is ignored (the read has succeeded). */
  async #rewrite(location: string, record: StoredRecord, identity: RecordIdentity, plaintext: Uint8Array): Promise<void> {
    try {
      const sealed = this.#sealSession(identity, plaintext);
      await this.#store.compareAndSet(location, record.version, sealed, { expiresAt: record.expiresAt, updatedAt: record.updatedAt });
    } catch {
      // a concurrent write won, or the store failed: the record stays readable as it is
    }
  }

  /**
   * The naming mode is fixed at the first open with `privateKeys: true` (the `names` metadata
   * record, which also names the long-lived key whose HMAC subkey names records). A private store
   * opened without the option, or a store that already holds plain-named sessions opened with
   * it, is refused: either would silently split the data in two.
   */
  async #checkNames(privateKeys: boolean): Promise<void> {
    const key = metadataKey(this.#namespace, NAMES_METADATA_NAME);
    let record = await callStore(this.#store, 'open', () => this.#store.get(key));
    if (record === undefined && privateKeys) {
      const first = await callStore(this.#store, 'open', () => this.#store.list(namespacePrefix(this.#namespace), { limit: 1 }));
      if (first.records.length > 0 || first.cursor !== undefined) {
        throw new InvalidOptionsError('this store already holds sessions under plain names: privateKeys cannot be turned on for it');
      }
      const mode = Buffer.from(JSON.stringify({ v: 1, mode: 'private', nameKeyId: this.#keyring.primaryKeyId }), 'utf8');
      await callStore(this.#store, 'open', () => this.#store.compareAndSet(key, null, mode, { expiresAt: null, updatedAt: this.#clock() }));
      record = await callStore(this.#store, 'open', () => this.#store.get(key));
    }
    if (record === undefined) return;
    const mode = parseNamesMode(record.value);
    if (mode === undefined) throw new KeyringMismatchError('this store\'s naming mode record is unreadable');
    if (!privateKeys) throw new InvalidOptionsError('this store\'s storage keys are private: open it with privateKeys: true');
    this.#useNames(mode);
  }

  /** Names records as `mode` says: mid-rename, writes go to the new naming and reads fall back to the old. */
  #useNames(mode: NamesMode): void {
    if (mode.renamingTo === undefined || mode.renamingTo === mode.nameKeyId) {
      this.#names = new PrivateNames(this.#keyring, mode.nameKeyId, this.#namespace);
      this.#legacyNames = undefined;
    } else {
      const legacy = new PrivateNames(this.#keyring, mode.nameKeyId, this.#namespace);
      this.#names = new PrivateNames(this.#keyring, mode.renamingTo, this.#namespace);
      this.#legacyNames = legacy;
    }
  }

  /** Mid-rename, the old storage key of a session; otherwise `undefined`. */
  #legacyLocation(broker: string, key: string): string | undefined {
    return this.#legacyNames?.storageKey(broker, key);
  }

  async #readNamesMode(): Promise<{ mode: NamesMode; version: string }> {
    const key = metadataKey(this.#namespace, NAMES_METADATA_NAME);
    const record = await callStore(this.#store, 'rotate', () => this.#store.get(key));
    const mode = record === undefined ? undefined : parseNamesMode(record.value);
    if (record === undefined || mode === undefined) throw new KeyringMismatchError('this store\'s naming mode record is missing or unreadable');
    return { mode, version: record.version };
  }

  /** Writes the `names` record by compare-and-set, re-reading on a race; returns the mode that holds. */
  async #updateNamesMode(next: (mode: NamesMode) => NamesMode | undefined): Promise<NamesMode> {
    const key = metadataKey(this.#namespace, NAMES_METADATA_NAME);
    for (let attempt = 0; attempt < 20; attempt++) {
      const { mode, version } = await this.#readNamesMode();
      const wanted = next(mode);
      if (wanted === undefined) return mode;
      const bytes = Buffer.from(JSON.stringify(wanted), 'utf8');
      const written = await callStore(this.#store, 'rotate', () => this.#store.compareAndSet(key, version, bytes, { expiresAt: null, updatedAt: this.#clock() }));
      if (written.ok) return wanted;
    }
    throw new KeyringMismatchError('the naming mode record kept changing: another rename is running');
  }

  /**
   * The rename pass of `rotateKeys({ renameKeys: true })`: records `renamingTo` (the primary, or
   * the target of a rename already in progress), then moves every session found at an old storage
   * key. Returns how many moved and whether nothing is left behind (then the caller finishes it).
   */
  async #renameAll(options: RotateKeysOptions): Promise<{ moved: number; complete: boolean }> {
    const primary = this.#keyring.primaryKeyId;
    const mode = await this.#updateNamesMode((m) => {
      if (m.renamingTo !== undefined || m.nameKeyId === primary) return undefined;
      return { v: 1, mode: 'private', nameKeyId: m.nameKeyId, renamingTo: primary };
    });
    this.#useNames(mode);
    const legacy = this.#legacyNames;
    const names = this.#names;
    const counts = { scanned: 0, rotated: 0, skipped: 0, unreadable: 0, renamed: 0 };
    if (legacy === undefined || names === undefined) return { moved: 0, complete: true }; // already named with the primary
    const batchSize = options.batchSize ?? 500;
    let leftBehind = 0;
    for await (const records of pages(this.#store, namespacePrefix(this.#namespace), batchSize)) {
      for (const record of records) {
        if (options.signal?.aborted) throw new RotationAbortedError({ ...counts });
        counts.scanned++;
        const outcome = await this.#moveRecord(record.key, record);
        if (outcome === 'moved') counts.renamed++;
        else if (outcome === 'unreadable') {
          counts.unreadable++;
          leftBehind++;
        } else if (outcome === 'changed') leftBehind++;
        else counts.skipped++;
      }
      options.onProgress?.({ ...counts });
    }
    return { moved: counts.renamed, complete: leftBehind === 0 };
  }

  /** Ends a rename: `nameKeyId` becomes the new key, `renamingTo` is cleared. */
  async #finishRename(): Promise<void> {
    const mode = await this.#updateNamesMode((m) =>
      m.renamingTo === undefined ? undefined : { v: 1, mode: 'private', nameKeyId: m.renamingTo },
    );
    this.#useNames(mode);
  }

  /**
   * Moves one session from its old storage key to its new one (mid-rename). Re-runnable: when the
   * new key already holds a record (a move cut short between write and delete, or a write through
   * the new naming), the newer by `updatedAt` wins, the new location on a tie. The old record is
   * then deleted only if its version is still the one moved (re-read just before the delete: a
   * write landing in that gap, from a process still on the old naming, is lost; the window is one
   * round trip). Returns `'current'` for a record already at its new key (or not at any key we
   * name), `'changed'` when the old record kept changing, `'unreadable'` when it cannot be opened.
   */
  async #moveRecord(oldKey: string, first: StoredRecord): Promise<'moved' | 'current' | 'changed' | 'unreadable'> {
    const names = this.#names;
    const legacy = this.#legacyNames;
    if (names === undefined || legacy === undefined) return 'current';
    let record = first;
    for (let attempt = 0; attempt < 5; attempt++) {
      const parsed = this.#nameOf(oldKey, record);
      if (parsed === undefined) return 'unreadable';
      const newKey = names.storageKey(parsed.broker, parsed.key);
      if (oldKey === newKey || oldKey !== legacy.storageKey(parsed.broker, parsed.key)) return 'current';
      const identity: RecordIdentity = { kind: 'session', namespace: this.#namespace, broker: parsed.broker, key: parsed.key, expiresAt: record.expiresAt };
      const plaintext = this.#openAt(oldKey, identity, record.value);
      let sealed: Buffer;
      try {
        sealed = this.#sealAt(newKey, identity, plaintext);
      } finally {
        plaintext.fill(0);
      }
      const write = { expiresAt: record.expiresAt, updatedAt: record.updatedAt };
      let placed = (await callStore(this.#store, 'rotate', () => this.#store.compareAndSet(newKey, null, sealed, write))).ok;
      for (let race = 0; !placed && race < 10; race++) {
        const existing = await callStore(this.#store, 'rotate', () => this.#store.get(newKey));
        if (existing === undefined) {
          placed = (await callStore(this.#store, 'rotate', () => this.#store.compareAndSet(newKey, null, sealed, write))).ok;
          continue;
        }
        if (existing.updatedAt >= record.updatedAt) break; // the new location is as new or newer: keep it
        placed = (await callStore(this.#store, 'rotate', () => this.#store.compareAndSet(newKey, existing.version, sealed, write))).ok;
      }
      const now = await callStore(this.#store, 'rotate', () => this.#store.get(oldKey));
      if (now === undefined) return 'moved';
      if (now.version === record.version) {
        await callStore(this.#store, 'rotate', () => this.#store.delete(oldKey));
        return 'moved';
      }
      record = now; // rewritten meanwhile by a process still on the old naming: move that one
    }
    return 'changed';
  }

  /** Warns when the primary key nears the AES-GCM random-nonce bound (2^32 messages per key). */
  async #checkNonceBudget(onWarning: (warning: KeyWarning) => void): Promise<void> {
    const keyId = this.#keyring.primaryKeyId;
    const encryptions = (await this.#counter.read())[keyId] ?? 0;
    if (encryptions < NONCE_WARN_AT) return;
    const rotate = encryptions >= NONCE_ROTATE_AT;
    onWarning({
      code: rotate ? 'ORDO_NONCE_BUDGET_ROTATE' : 'ORDO_NONCE_BUDGET',
      keyId,
      encryptions,
      message: rotate
        ? `key "${keyId}" has sealed about ${encryptions} records, over 90% of the AES-GCM limit of 2^32: add a new primary key and run rotateKeys() now`
        : `key "${keyId}" has sealed about ${encryptions} records, over half the AES-GCM limit of 2^32: plan a key rotation`,
    });
  }

  #canaryIdentity(keyId: string): RecordIdentity {
    return { kind: 'metadata', namespace: this.#namespace, broker: '', key: `${CANARY_PREFIX}${keyId}`, expiresAt: null };
  }

  #assertOpen(): void {
    if (this.#closed) throw new SessionClosedError();
  }
}
