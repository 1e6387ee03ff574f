/**
 * The shared in-memory store: Redis (>= 6.2) or a Redis Cluster, through node-redis.
 *
 * Key layout. A record lives at `<keyPrefix>{<tag>}`, where `<tag>` is the storage key with
 * `%`, `{` and `}` written as `%25`, `%7B` and `%7D` (the empty key, whose tag would be empty,
 * is written `%`, which no other key produces). So:
 * - the hash tag is well defined (no `}` inside it) and is the same for every key that belongs
 *   to one session: a later `<keyPrefix>lock:{<tag>}` lands in the record's cluster slot;
 * - the escaping is prefix-preserving (storage key `a` starts with `b` exactly when tag(a)
 *   starts with escape(b)), so "starts with prefix" is `SCAN MATCH <keyPrefix>{<escape(prefix)>*`
 *   once the glob syntax (`* ? [ ] \`) is escaped; every returned key is still decoded and
 *   re-checked in code;
 * - a key prefix holds no brace, so a record of this store is exactly a key whose text before the
 *   first `{` is its prefix: stores with other prefixes (`ordo:` and `ordo:x:`) never see each
 *   other's keys.
 * - a lease (getOrRefresh) on storage key `k` is the plain string `<keyPrefix>lock:{<tag of k>}`
 *   holding its holder's token, taken by `SET ... NX PX ttl` and released by a compare-and-delete
 *   script. Same tag, so same cluster slot as the record; its text before `{` is not the key
 *   prefix, so no listing of this store ever returns it. (A second store whose key prefix is this
 *   one's plus `lock:` would see it: don't choose such prefixes.)
 *
 * Record layout. One Redis string per record (rather than a hash: one GET reads it whole, and one
 * SET writes value and expiry together, `PXAT` setting the expiry and a plain SET clearing an old
 * one), holding a fixed binary header and then the sealed bytes, never base64:
 *
 * ```
 * offset 0   u8       format (1)
 *        1   u8       flags: bit 0 set when expiresAt is not null
 *        2   f64 BE   expiresAt (epoch ms; 0 when null)
 *        10  f64 BE   updatedAt (epoch ms)
 *        18  u8       n, the length of the version
 *        19  n bytes  version (UTF-8)
 *        19+n ...     the sealed value
 * ```
 *
 * Expiry is native: `SET ... PXAT ceil(expiresAt)`, so Redis drops a dead record by itself; the
 * manager's clock still decides what is expired, and `purgeExpired` deletes what Redis's clock
 * has not reached yet. Compare-and-set and purge are Lua scripts (EVALSHA, EVAL when the server
 * has not cached it), so they are atomic with the read they depend on.
 *
 * Every round trip is bounded: a call waits at most `connectTimeoutMs` for a connection and
 * `commandTimeoutMs` for each reply, then rejects with a {@link StoreUnavailableError}. A command
 * that timed out may still have been applied by the server (as with any timeout); a write is
 * one SET or one script, so the record is always either the old one or the new one, whole.
 *
 * Change notifications. Every write is a script that also `PUBLISH`es `<kind>:<storage key>` on
 * the channel `<keyPrefix>changes` (set, compare-and-set, delete, delete by prefix, purge), so a
 * watcher hears of a change in the write's own round trip; see `subscribe`. The one exception is
 * a set while nobody subscribes to the channel (`PUBSUB NUMSUB`, asked at most every 250 ms; not
 * on a cluster): a plain `SET`, since nobody would hear it.
 */
import { createHash } from 'node:crypto';
import {
  ClientClosedError,
  ClientOfflineError,
  ConnectionTimeoutError,
  DisconnectsClientError,
  ErrorReply,
  MaxCommandRedirectionsError,
  ReconnectStrategyError,
  RESP_TYPES,
  RootNodesUnavailableError,
  SocketClosedUnexpectedlyError,
  SocketTimeoutError,
  TimeoutError as DriverTimeoutError,
  createClient,
  createCluster,
  type RedisArgument,
  type RedisClusterOptions,
  type TypeMapping,
} from 'redis';
import {
  InvalidExpiryError,
  InvalidOptionsError,
  InvalidSessionKeyError,
  SessionClosedError,
  SessionError,
  StoreError,
  StoreUnavailableError,
} from '../errors.ts';
import { newVersion } from './keys.ts';
import { positiveInteger, settleWithin } from './timeouts.ts';
import { WatchedAnswer, waitForWriters } from './watchers.ts';
import type {
  CompareAndSetResult,
  ListOptions,
  RecordPage,
  SessionStore,
  StoreChange,
  StoredRecord,
  WriteOptions,
} from './store.ts';

/** The command options the store passes: replies as Buffers, and node-redis's own queue timeout. */
interface CommandOptionsLike {
  readonly typeMapping?: TypeMapping;
  readonly timeout?: number;
}

/** What the store needs of a connection, plain or cluster: its state and its events. */
interface ConnectionLike {
  readonly isOpen: boolean;
  readonly isReady: boolean;
  connect(): Promise<unknown>;
  close(): Promise<unknown>;
  destroy(): void;
  on(event: 'error' | 'ready' | 'connect', listener: (value: unknown) => void): unknown;
  off(event: 'error' | 'ready' | 'connect', listener: (value: unknown) => void): unknown;
}

/**
 * What the store uses of a node-redis client: any `createClient(...)` result fits, whatever its
 * modules, scripts, RESP version or type mapping.
 *
 * @example
 * ```ts
 * const client: RedisClientLike = createClient({ url: process.env.REDIS_URL });
 * ```
 */
export interface RedisClientLike extends ConnectionLike {
  readonly options?: { readonly keyPrefix?: RedisArgument | undefined } | undefined;
  sendCommand(args: ReadonlyArray<RedisArgument>, options?: CommandOptionsLike): Promise<unknown>;
}

/**
 * What the store uses of a node-redis cluster client: any `createCluster(...)` result fits.
 *
 * @example
 * ```ts
 * const cluster: RedisClusterLike = createCluster({ rootNodes: [{ url: 'redis://10.0.0.1:7000' }] });
 * ```
 */
export interface RedisClusterLike extends ConnectionLike {
  readonly _options?: { readonly keyPrefix?: RedisArgument | undefined } | undefined;
  readonly masters: ReadonlyArray<{ readonly address: string }>;
  nodeClient(node: { readonly address: string }): Promise<RedisClientLike>;
  sendCommand(
    firstKey: RedisArgument | undefined,
    isReadonly: boolean | undefined,
    args: ReadonlyArray<RedisArgument>,
    options?: CommandOptionsLike,
  ): Promise<unknown>;
}

/** What every way of building a {@link RedisStore} accepts. */
interface RedisStoreCommonOptions {
  /** Prepended to every Redis key this store touches. Must not contain `{` or `}`. Default `'ordo:'`. */
  readonly keyPrefix?: string;
  /** How long one command may wait for its reply. Default 5000 ms. */
  readonly commandTimeoutMs?: number;
  /** How long a call may wait for a connection (also each connection attempt of a client the store creates). Default 5000 ms. */
  readonly connectTimeoutMs?: number;
}

/**
 * Options of a {@link RedisStore} that creates (and closes) its own client from a URL.
 *
 * @example
 * ```ts
 * const options: RedisStoreUrlOptions = { url: 'redis://:secret@127.0.0.1:6379/0', keyPrefix: 'app:sessions:' };
 * ```
 */
export interface RedisStoreUrlOptions extends RedisStoreCommonOptions {
  /** A `redis://` or `rediss://` URL. Its password never appears in an error. */
  readonly url: string;
  readonly cluster?: never;
  readonly client?: never;
}

/**
 * Options of a {@link RedisStore} that creates (and closes) its own cluster client. The store
 * adds its time bounds, reconnect strategy and `disableOfflineQueue` to `defaults`; explicit
 * `defaults.socket` settings win.
 *
 * @example
 * ```ts
 * const options: RedisStoreClusterOptions = { cluster: { rootNodes: [{ url: 'redis://10.0.0.1:7000' }] } };
 * ```
 */
export interface RedisStoreClusterOptions extends RedisStoreCommonOptions {
  /** Options of node-redis `createCluster`. */
  readonly cluster: RedisClusterOptions;
  readonly url?: never;
  readonly client?: never;
}

/**
 * Options of a {@link RedisStore} on a node-redis client or cluster client the caller owns: the
 * store connects it if it is not open yet, never closes it, and adds an `'error'` listener while
 * open (removed on close). The client's own `keyPrefix` is applied before the store's. Give such
 * a client a reconnect strategy and `disableOfflineQueue: true`: the store bounds its own calls,
 * but only the client's options bound what the client itself queues.
 *
 * @example
 * ```ts
 * const client = await createClient({ url, disableOfflineQueue: true }).on('error', log).connect();
 * const options: RedisStoreClientOptions = { client };
 * ```
 */
export interface RedisStoreClientOptions extends RedisStoreCommonOptions {
  /** A client from `createClient` or `createCluster`. */
  readonly client: RedisClientLike | RedisClusterLike;
  readonly url?: never;
  readonly cluster?: never;
}

/**
 * Options of {@link RedisStore}: a URL, a cluster configuration, or a client the caller owns.
 *
 * @example
 * ```ts
 * const options: RedisStoreOptions = { url: process.env.REDIS_URL!, commandTimeoutMs: 2000 };
 * ```
 */
export type RedisStoreOptions = RedisStoreUrlOptions | RedisStoreClusterOptions | RedisStoreClientOptions;

const DEFAULT_KEY_PREFIX = 'ordo:';
const FORMAT = 1;
const HEADER_BYTES = 19; // format, flags, expiresAt, updatedAt, version length
const MAX_VERSION_BYTES = 255;
const MAX_PAGE = 1000;
/** SCAN COUNT bounds: a page starts near its limit and grows while matches are sparse. */
const MIN_SCAN_COUNT = 10;
const MAX_SCAN_COUNT = 10_000;
const BULK_SCAN_COUNT = 1000;
/** SCAN calls a page may make once it holds a record; an empty page keeps scanning to the end. */
const PAGE_SCAN_CALLS = 32;
const LONE_SURROGATE = /\p{Cs}/u;
const TAG_ESCAPES: Readonly<Record<string, string>> = { '%': '%25', '{': '%7B', '}': '%7D' };
const EMPTY_KEY_TAG = '%';
/** Replies and payloads as Buffers: values are binary, keys may hold any byte. */
const BUFFERS = { [RESP_TYPES.BLOB_STRING]: Buffer } as const;

/**
 * KEYS[1] record. ARGV: '1' when a record must exist with version ARGV[2] ('0': none must exist),
 * the expected version, the new record, its PXAT time ('' for no expiry), the change channel and
 * the change message (published on success, in the same script: no extra round trip).
 */
const COMPARE_AND_SET = `
local current = redis.call('GET', KEYS[1])
if ARGV[1] == '0' then
  if current then return 0 end
else
  if not current then return 0 end
  if string.byte(current, 1) ~= ${FORMAT} then return redis.error_reply('ERR ordo-sessions: not a record') end
  local length = string.byte(current, ${HEADER_BYTES})
  if length ~= #ARGV[2] or string.sub(current, ${HEADER_BYTES + 1}, ${HEADER_BYTES} + length) ~= ARGV[2] then return 0 end
end
if ARGV[4] == '' then
  redis.call('SET', KEYS[1], ARGV[3])
else
  redis.call('SET', KEYS[1], ARGV[3], 'PXAT', ARGV[4])
end
redis.call('PUBLISH', ARGV[5], ARGV[6])
return 1
`;

/** KEYS[1] record. ARGV: the record, its PXAT time ('' for none), the change channel and message. */
const SET_AND_PUBLISH = `
if ARGV[2] == '' then
  redis.call('SET', KEYS[1], ARGV[1])
else
  redis.call('SET', KEYS[1], ARGV[1], 'PXAT', ARGV[2])
end
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
`;

/**
 * KEYS records to delete (one on a cluster). ARGV[1] the change channel, ARGV[1 + i] the change
 * message of KEYS[i], published only when that key existed. Returns how many were deleted.
 */
const DELETE_AND_PUBLISH = `
local deleted = 0
for i, key in ipairs(KEYS) do
  if redis.call('UNLINK', key) == 1 then
    deleted = deleted + 1
    redis.call('PUBLISH', ARGV[1], ARGV[i + 1])
  end
end
return deleted
`;

/**
 * KEYS[1] record. ARGV[1] now, a big-endian f64; ARGV[2], ARGV[3] the change channel and message.
 * Deletes the record if its expiresAt <= now, and then publishes the change.
 */
const PURGE_IF_EXPIRED = `
local head = redis.call('GETRANGE', KEYS[1], 0, 9)
if #head < 10 or string.byte(head, 1) ~= ${FORMAT} or string.byte(head, 2) ~= 1 then return 0 end
if struct.unpack('>d', string.sub(head, 3, 10)) <= struct.unpack('>d', ARGV[1]) then
  local deleted = redis.call('UNLINK', KEYS[1])
  if deleted == 1 then redis.call('PUBLISH', ARGV[2], ARGV[3]) end
  return deleted
end
return 0
`;

interface Script {
  readonly source: string;
  readonly sha: string;
}

function script(source: string): Script {
  return { source, sha: createHash('sha1').update(source).digest('hex') };
}

/** KEYS[1] lease. ARGV[1] token. Deletes the lease only if that token holds it. */
const RELEASE_LEASE = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`;

const SCRIPTS = {
  compareAndSet: script(COMPARE_AND_SET),
  purgeIfExpired: script(PURGE_IF_EXPIRED),
  releaseLease: script(RELEASE_LEASE),
  setAndPublish: script(SET_AND_PUBLISH),
  deleteAndPublish: script(DELETE_AND_PUBLISH),
};

/** Where a SCAN over every master stands: the master (by address) and its SCAN cursor. */
interface ScanPosition {
  readonly node: string | undefined;
  readonly cursor: string;
}

/** A list cursor: the SCAN position, and keys found but not yet returned. */
interface ListState {
  readonly scan: ScanPosition | undefined;
  readonly pending: readonly string[];
}

/** A command got no reply within its bound. */
class CommandTimeoutError extends Error {
  readonly code = 'ETIMEDOUT';

  constructor(ms: number) {
    super(`no reply from Redis within ${ms} ms`);
    this.name = 'TimeoutError';
  }
}

/** No connection became ready within its bound. */
class NotConnectedError extends Error {
  readonly code = 'ETIMEDOUT';

  constructor(ms: number, cause: unknown) {
    super(`no connection to Redis within ${ms} ms`, cause === undefined ? undefined : { cause });
    this.name = 'ConnectionTimeoutError';
  }
}

const UNAVAILABLE_DRIVER_ERRORS = [
  ClientClosedError,
  ClientOfflineError,
  ConnectionTimeoutError,
  DisconnectsClientError,
  MaxCommandRedirectionsError,
  ReconnectStrategyError,
  RootNodesUnavailableError,
  SocketClosedUnexpectedlyError,
  SocketTimeoutError,
  DriverTimeoutError,
  CommandTimeoutError,
  NotConnectedError,
];
/** Replies of a server that is loading, failing over, or busy: try again later. */
const UNAVAILABLE_REPLIES = /^(LOADING|BUSY|CLUSTERDOWN|TRYAGAIN|MASTERDOWN|READONLY|NOREPLICAS|MOVED|ASK)\b/;
const UNAVAILABLE_SYSTEM_CODES = new Set([
  'ECONNREFUSED', 'ECONNRESET', 'ECONNABORTED', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH',
  'EHOSTDOWN', 'ENETUNREACH', 'ENETDOWN', 'ENOTFOUND', 'EAI_AGAIN',
]);

/**
 * A session store in Redis or a Redis Cluster, shared by every process that uses the same
 * server and key prefix. Records are binary strings with native expiry; see the layout above.
 * It connects on first use, or when `open()` is awaited, and reconnects by itself (with backoff,
 * for as long as it takes) after the server goes away.
 *
 * @example
 * ```ts
 * const store = new RedisStore({ url: process.env.REDIS_URL!, keyPrefix: 'app:ordo:' });
 * const sessions = await SessionManager.open({ keyring, store });
 * // or, on a client (or createCluster client) the application already has, which the store never closes:
 * const shared = new RedisStore({ client });
 * ```
 */
export class RedisStore implements SessionStore {
  readonly kind = 'redis';
  readonly #client: RedisClientLike | RedisClusterLike;
  readonly #cluster: boolean;
  readonly #ownsClient: boolean;
  readonly #keyPrefix: string;
  readonly #commandTimeoutMs: number;
  readonly #connectTimeoutMs: number;
  /** Kept for the cause of a connection timeout; the listener also keeps 'error' from crashing the process. */
  readonly #onError = (error: unknown): void => {
    this.#lastError = error;
  };
  #lastError: unknown;
  #connecting: Promise<boolean> | undefined;
  #readyWaiter: { promise: Promise<void>; release: () => void } | undefined;
  #closing: Promise<void> | undefined;
  /** The change channel of this key prefix: `<keyPrefix>changes`. */
  readonly #channel: string;
  /** Change subscribers, served by one dedicated subscriber connection while there are any. */
  readonly #subscribers = new Set<{ readonly prefix: string; readonly listener: (change: StoreChange) => void }>();
  #subscriber: Promise<SubscriberLike> | undefined;
  /** The last answer to "does anyone subscribe to the change channel?". */
  readonly #watched = new WatchedAnswer();
  readonly #onMessage = (message: string): void => {
    const change = parseChangeMessage(message);
    if (change === undefined) return;
    for (const { prefix, listener } of this.#subscribers) {
      if (!change.key.startsWith(prefix)) continue;
      try {
        listener(change);
      } catch {
        // The manager reports listener errors; one subscriber's failure never reaches another.
      }
    }
  };

  /** @throws InvalidOptionsError on a missing or malformed URL, cluster or client, a bad key prefix, or a bad number. */
  constructor(options: RedisStoreOptions) {
    if (typeof options !== 'object' || options === null) throw new InvalidOptionsError('RedisStore needs options');
    this.#commandTimeoutMs = timeoutOption(options.commandTimeoutMs, 'commandTimeoutMs');
    this.#connectTimeoutMs = timeoutOption(options.connectTimeoutMs, 'connectTimeoutMs');
    const socket = {
      connectTimeout: this.#connectTimeoutMs,
      reconnectStrategy: (retries: number): number => Math.min(50 * 2 ** retries, 1000) + Math.floor(Math.random() * 50),
    };
    if (options.client !== undefined) {
      const client = options.client;
      if (typeof client !== 'object' || client === null || typeof client.sendCommand !== 'function') {
        throw new InvalidOptionsError('RedisStore client must be a node-redis client or cluster client');
      }
      this.#client = client;
      this.#ownsClient = false;
    } else if (options.cluster !== undefined) {
      const cluster = options.cluster;
      if (typeof cluster !== 'object' || cluster === null || !Array.isArray(cluster.rootNodes) || cluster.rootNodes.length === 0) {
        throw new InvalidOptionsError('RedisStore cluster needs rootNodes');
      }
      this.#client = attempt('cluster', () =>
        createCluster({
          ...cluster,
          defaults: {
            ...cluster.defaults,
            disableOfflineQueue: true,
            socket: { ...socket, ...cluster.defaults?.socket },
          },
        }),
      );
      this.#ownsClient = true;
    } else {
      const { url } = options as { url?: unknown };
      if (typeof url !== 'string' || url.length === 0) throw new InvalidOptionsError('RedisStore needs a url, a cluster or a client');
      this.#client = attempt('url', () => createClient({ url, disableOfflineQueue: true, socket }));
      this.#ownsClient = true;
    }
    this.#cluster = isCluster(this.#client);
    this.#keyPrefix = keyPrefixOf(this.#client, this.#cluster, options.keyPrefix);
    this.#channel = `${this.#keyPrefix}changes`;
    this.#client.on('error', this.#onError);
  }

  /** Connects (waiting at most `connectTimeoutMs`); idempotent. Calls also connect on first use. */
  open(): Promise<void> {
    return this.#call('open', async () => undefined);
  }

  async get(key: string): Promise<StoredRecord | undefined> {
    const redisKey = this.#redisKey(key);
    return this.#call('get', () => this.#read(redisKey));
  }

  async set(key: string, value: Uint8Array, options: WriteOptions): Promise<{ readonly version: string }> {
    const redisKey = this.#redisKey(key);
    const version = newVersion();
    const record = encodeRecord(version, value, options);
    return this.#call('set', async () => {
      if (!(await this.#anyoneWatching())) {
        const expiry = options.expiresAt === null ? [] : ['PXAT', pxat(options.expiresAt)];
        if (!isOk(await this.#send(redisKey, ['SET', redisKey, record, ...expiry]))) throw new StoreError('Redis did not acknowledge the write');
        return { version };
      }
      // SET and PUBLISH in one script: watchers hear of the write in the same round trip.
      const args: RedisArgument[] = [record, options.expiresAt === null ? '' : pxat(options.expiresAt), this.#channel, changeMessage(options.change ?? 'set', key)];
      const reply = await this.#eval(SCRIPTS.setAndPublish, redisKey, args);
      if (reply !== 1) throw new StoreError('Redis did not acknowledge the write');
      return { version };
    });
  }

  async compareAndSet(
    key: string,
    expectedVersion: string | null,
    value: Uint8Array,
    options: WriteOptions,
  ): Promise<CompareAndSetResult> {
    const redisKey = this.#redisKey(key);
    const version = newVersion();
    const record = encodeRecord(version, value, options);
    const expected = Buffer.from(expectedVersion ?? '', 'utf8');
    return this.#call('compareAndSet', async (): Promise<CompareAndSetResult> => {
      if (expectedVersion !== null && (expected.length === 0 || expected.length > MAX_VERSION_BYTES)) return { ok: false };
      const reply = await this.#eval(SCRIPTS.compareAndSet, redisKey, [
        expectedVersion === null ? '0' : '1',
        expected,
        record,
        options.expiresAt === null ? '' : pxat(options.expiresAt),
        this.#channel,
        changeMessage(options.change ?? 'set', key),
      ]);
      return reply === 1 ? { ok: true, version } : { ok: false };
    });
  }

  async delete(key: string): Promise<boolean> {
    const redisKey = this.#redisKey(key);
    const args = [this.#channel, changeMessage('delete', key)];
    return this.#call('delete', async () => (await this.#eval(SCRIPTS.deleteAndPublish, redisKey, args)) === 1);
  }

  async list(prefix: string, options: ListOptions): Promise<RecordPage> {
    const pattern = this.#pattern(prefix);
    const limit = pageLimit(options?.limit);
    const state = options.cursor === undefined ? { scan: { node: undefined, cursor: '0' }, pending: [] } : decodeCursor(options.cursor);
    return this.#call('list', async () => {
      const queue = [...new Set(state.pending)].filter((key) => key.startsWith(prefix));
      const seen = new Set(queue);
      const records: Array<{ key: string } & StoredRecord> = [];
      let scan = state.scan;
      let count = Math.min(Math.max(limit, MIN_SCAN_COUNT), MAX_PAGE);
      for (let calls = 0; ; calls++) {
        while (queue.length > 0 && records.length < limit) {
          const keys = queue.splice(0, limit - records.length);
          const found = await Promise.all(keys.map(async (key) => ({ key, record: await this.#read(this.#redisKey(key)) })));
          for (const { key, record } of found) {
            if (record !== undefined) records.push({ key, value: record.value, expiresAt: record.expiresAt, updatedAt: record.updatedAt, version: record.version });
          }
        }
        if (records.length >= limit || scan === undefined || (records.length > 0 && calls >= PAGE_SCAN_CALLS)) break;
        const batch = await this.#scan(scan, pattern, count);
        scan = batch.next;
        let added = 0;
        for (const raw of batch.keys) {
          const key = this.#storageKeyOf(raw);
          if (key === undefined || !key.startsWith(prefix) || seen.has(key)) continue;
          seen.add(key);
          queue.push(key);
          added++;
        }
        if (added < limit - records.length) count = Math.min(count * 2, MAX_SCAN_COUNT);
      }
      return scan === undefined && queue.length === 0 ? { records } : { records, cursor: encodeCursor({ scan, pending: queue }) };
    });
  }

  async deleteByPrefix(prefix: string): Promise<number> {
    const pattern = this.#pattern(prefix);
    return this.#call('deleteByPrefix', () =>
      this.#forEachBatch(pattern, prefix, async (keys) => {
        const message = (raw: Buffer): string => changeMessage('delete', this.#storageKeyOf(raw) ?? '');
        if (!this.#cluster) {
          return Number(await this.#evalKeys(SCRIPTS.deleteAndPublish, keys, [this.#channel, ...keys.map(message)]));
        }
        // A cluster refuses a multi-key script across slots: one script per key, pipelined.
        const counts = await Promise.all(keys.map((key) => this.#eval(SCRIPTS.deleteAndPublish, key, [this.#channel, message(key)])));
        return counts.reduce<number>((sum, n) => sum + Number(n), 0);
      }),
    );
  }

  async purgeExpired(prefix: string, now: number): Promise<number> {
    const pattern = this.#pattern(prefix);
    if (typeof now !== 'number' || !Number.isFinite(now)) throw new InvalidExpiryError('purgeExpired needs a finite now');
    const at = Buffer.alloc(8);
    at.writeDoubleBE(now);
    return this.#call('purgeExpired', () =>
      this.#forEachBatch(pattern, prefix, async (keys) => {
        const counts = await Promise.all(
          keys.map((key) => this.#eval(SCRIPTS.purgeIfExpired, key, [at, this.#channel, changeMessage('expire', this.#storageKeyOf(key) ?? '')])),
        );
        return counts.reduce<number>((sum, n) => sum + Number(n), 0);
      }),
    );
  }

  async acquireLease(key: string, token: string, ttlMs: number): Promise<boolean> {
    const lockKey = this.#lockKey(key);
    const ttl = String(Math.max(1, Math.ceil(ttlMs)));
    return this.#call('acquireLease', async () => isOk(await this.#send(lockKey, ['SET', lockKey, token, 'NX', 'PX', ttl])));
  }

  async releaseLease(key: string, token: string): Promise<boolean> {
    const lockKey = this.#lockKey(key);
    return this.#call('releaseLease', async () => (await this.#eval(SCRIPTS.releaseLease, lockKey, [token])) === 1);
  }

  /** Closes the client the store created (never one it was given). Idempotent; later calls reject with SessionClosedError. */
  close(): Promise<void> {
    this.#closing ??= this.#shutdown();
    return this.#closing;
  }

  toString(): string {
    return `RedisStore(${this.#keyPrefix}${this.#cluster ? ', cluster' : ''})`;
  }

  /**
   * Listens on `<keyPrefix>changes` with a dedicated connection (a `duplicate()` of the client,
   * since a connection in subscriber mode can send nothing else), opened with the first
   * subscriber and closed after the last. Plain PUBLISH, also on a cluster: a script may publish
   * to any channel (SPUBLISH would have to share the record's slot), and the cluster bus carries
   * it to a subscriber on any node (so on a cluster each key's changes arrive in order, but changes
   * of keys on different masters may interleave in any order). node-redis resubscribes after a reconnect; changes published
   * while the connection was down are lost (pub/sub keeps nothing). Records Redis expires by
   * itself (`PXAT`) publish nothing: only `purgeExpired` reports `'expire'`.
   */
  async subscribe(prefix: string, listener: (change: StoreChange) => void): Promise<() => Promise<void>> {
    wellFormed(prefix, 'A prefix');
    const entry = { prefix, listener };
    return this.#call('subscribe', async () => {
      this.#subscribers.add(entry);
      try {
        await this.#startSubscriber();
      } catch (error) {
        await this.#unsubscribe(entry);
        throw error;
      }
      return () => this.#unsubscribe(entry);
    });
  }

  async #unsubscribe(entry: { readonly prefix: string; readonly listener: (change: StoreChange) => void }): Promise<void> {
    if (!this.#subscribers.delete(entry) || this.#subscribers.size > 0) return;
    await this.#stopSubscriber();
  }

  #startSubscriber(): Promise<SubscriberLike> {
    this.#subscriber ??= (async () => {
      const duplicate = (this.#client as { duplicate?: () => unknown }).duplicate;
      if (typeof duplicate !== 'function') throw new StoreError('this Redis client has no duplicate(), which watching needs');
      const subscriber = duplicate.call(this.#client) as SubscriberLike;
      subscriber.on('error', () => undefined); // it reconnects by itself; errors must not crash the process
      try {
        await bounded(subscriber.connect(), this.#connectTimeoutMs);
        await bounded(subscriber.subscribe(this.#channel, this.#onMessage), this.#commandTimeoutMs);
        await waitForWriters(); // every writer has asked again since: its sets publish
      } catch (error) {
        subscriber.destroy();
        throw error;
      }
      return subscriber;
    })();
    const started = this.#subscriber;
    started.catch(() => {
      if (this.#subscriber === started) this.#subscriber = undefined;
    });
    return started;
  }

  async #stopSubscriber(): Promise<void> {
    const pending = this.#subscriber;
    this.#subscriber = undefined;
    const subscriber = await pending?.catch(() => undefined);
    if (subscriber === undefined) return;
    await bounded(subscriber.close(), this.#commandTimeoutMs).catch(() => subscriber.destroy());
  }

  async #shutdown(): Promise<void> {
    this.#subscribers.clear();
    await this.#stopSubscriber();
    this.#readyWaiter?.release();
    if (!this.#ownsClient) {
      this.#client.off('error', this.#onError);
      return;
    }
    // The 'error' listener stays: a client being torn down may still report a socket error.
    const client = this.#client;
    if (!client.isOpen) return client.destroy();
    // Pending replies are awaited (each is bounded); a dead server cannot hold close() forever.
    await bounded(client.close(), this.#commandTimeoutMs).catch(() => client.destroy());
  }

  /**
   * Whether anyone subscribes to the change channel, so that a set must publish: always while
   * this store watches and on a cluster (where `PUBSUB NUMSUB` counts one node's subscribers
   * only); else the server's answer ({@link WatchedAnswer}: at most one question every 250 ms,
   * shared by the sets meanwhile, and a failed question counts as watched). An unwatched set is a
   * plain `SET`, which costs the server less than running a script.
   */
  #anyoneWatching(): boolean | Promise<boolean> {
    if (this.#cluster || this.#subscriber !== undefined) return true;
    return this.#watched.get(async () => {
      const reply = await this.#send(undefined, ['PUBSUB', 'NUMSUB', this.#channel], 'read');
      return !Array.isArray(reply) || Number(reply[1]) !== 0;
    });
  }

  /** Runs one public call: refuses after close, waits for a connection, types its errors. */
  async #call<T>(operation: string, work: () => Promise<T>): Promise<T> {
    if (this.#closing) throw new SessionClosedError('RedisStore');
    try {
      await this.#ready();
      return await work();
    } catch (error) {
      throw this.#toError(operation, error);
    }
  }

  /** Resolves once the client is ready, connecting it if needed; rejects after `connectTimeoutMs`. */
  async #ready(): Promise<void> {
    const client = this.#client;
    if (client.isReady) return;
    if (!client.isOpen) this.#connect();
    const connecting = this.#connecting;
    const outcome = await bounded(
      Promise.race([this.#nextReady().then(() => true), connecting ?? new Promise<boolean>(() => {})]),
      this.#connectTimeoutMs,
    ).catch(() => false);
    if (this.#closing) throw new SessionClosedError('RedisStore');
    if (!outcome || !client.isReady) throw new NotConnectedError(this.#connectTimeoutMs, this.#lastError);
  }

  /**
   * Starts connecting (once). A client keeps retrying until it connects or is closed; a cluster
   * client gives up when no root node answers, and the next call tries again.
   */
  #connect(): void {
    if (this.#connecting) return;
    const attempt = this.#client.connect().then(
      () => true,
      (error: unknown) => {
        this.#lastError = error;
        return false;
      },
    );
    this.#connecting = attempt.finally(() => {
      this.#connecting = undefined;
    });
  }

  /** One promise, shared by every waiting call, for the client's next 'ready' (or, for a cluster, 'connect'). */
  #nextReady(): Promise<void> {
    if (this.#readyWaiter) return this.#readyWaiter.promise;
    const client = this.#client;
    let release = (): void => {};
    const promise = new Promise<void>((resolve) => {
      const onEvent = (): void => {
        if (client.isReady) release();
      };
      release = (): void => {
        client.off('ready', onEvent);
        client.off('connect', onEvent);
        this.#readyWaiter = undefined;
        resolve();
      };
      client.on('ready', onEvent);
      client.on('connect', onEvent);
    });
    this.#readyWaiter = { promise, release };
    return promise;
  }

  /**
   * Sends one command, routed by `key` on a cluster, and waits at most `commandTimeoutMs` (one
   * timer of ours). node-redis's own per-command timeout (one `AbortSignal.timeout` per command,
   * which costs more than the rest of a GET's client-side work) is turned off, except for writes
   * on a client we were given: that client may keep an offline queue, and only node-redis's
   * timeout takes a write we gave up on out of it, so it is never sent late. Our own clients
   * drop their queue on disconnect (`disableOfflineQueue`), and a late read changes nothing.
   */
  #send(key: RedisArgument | undefined, args: RedisArgument[], kind: 'read' | 'write' = 'write'): Promise<unknown> {
    const options = { typeMapping: BUFFERS, timeout: kind === 'write' && !this.#ownsClient ? this.#commandTimeoutMs : 0 };
    const sent = this.#cluster
      ? (this.#client as RedisClusterLike).sendCommand(key, false, args, options)
      : (this.#client as RedisClientLike).sendCommand(args, options);
    return bounded(sent, this.#commandTimeoutMs);
  }

  /** A script over several keys, on a plain client (a cluster would refuse keys of several slots). */
  async #evalKeys(script: Script, keys: Buffer[], args: RedisArgument[]): Promise<unknown> {
    const count = String(keys.length);
    try {
      return await this.#send(undefined, ['EVALSHA', script.sha, count, ...keys, ...args]);
    } catch (error) {
      if (!(error instanceof ErrorReply && error.message.startsWith('NOSCRIPT'))) throw error;
      return this.#send(undefined, ['EVAL', script.source, count, ...keys, ...args]);
    }
  }

  async #eval(script: Script, key: Buffer, args: RedisArgument[]): Promise<unknown> {
    try {
      return await this.#send(key, ['EVALSHA', script.sha, '1', key, ...args]);
    } catch (error) {
      if (!(error instanceof ErrorReply && error.message.startsWith('NOSCRIPT'))) throw error;
      return this.#send(key, ['EVAL', script.source, '1', key, ...args]);
    }
  }

  async #read(redisKey: Buffer): Promise<StoredRecord | undefined> {
    const reply = await this.#send(redisKey, ['GET', redisKey], 'read');
    if (reply === null) return undefined;
    if (!Buffer.isBuffer(reply)) throw new StoreError('Redis returned an unexpected reply to GET');
    return decodeRecord(reply);
  }

  /** The masters to SCAN, in a stable order (by address); one nameless node for a plain client. */
  #scanNodes(): ReadonlyArray<{ readonly address: string }> {
    if (!this.#cluster) return [{ address: '' }];
    const masters = [...(this.#client as RedisClusterLike).masters];
    return masters.sort((a, b) => (a.address < b.address ? -1 : a.address > b.address ? 1 : 0));
  }

  async #nodeClient(node: { readonly address: string }): Promise<RedisClientLike> {
    if (!this.#cluster) return this.#client as RedisClientLike;
    return bounded((this.#client as RedisClusterLike).nodeClient(node), this.#connectTimeoutMs);
  }

  /** One SCAN call at `position`; `next` is undefined once every master has been scanned. */
  async #scan(position: ScanPosition, pattern: Buffer, count: number): Promise<{ keys: Buffer[]; next: ScanPosition | undefined }> {
    const nodes = this.#scanNodes();
    const index = position.node === undefined ? 0 : nodes.findIndex((node) => node.address === position.node);
    const node = nodes[index];
    if (node === undefined) {
      if (position.node === undefined) return { keys: [], next: undefined };
      throw new StoreError('the Redis cluster changed its masters during a listing; list again from the start');
    }
    const client = await this.#nodeClient(node);
    const args = ['SCAN', position.cursor, 'MATCH', pattern, 'COUNT', String(count)];
    const reply = await bounded(client.sendCommand(args, { typeMapping: BUFFERS, timeout: 0 }), this.#commandTimeoutMs); // a read: see #send
    if (!Array.isArray(reply) || reply.length !== 2 || !Buffer.isBuffer(reply[0]) || !Array.isArray(reply[1])) {
      throw new StoreError('Redis returned an unexpected reply to SCAN');
    }
    const cursor = reply[0].toString('latin1');
    const keys = (reply[1] as unknown[]).filter((key): key is Buffer => Buffer.isBuffer(key));
    const following = nodes[index + 1];
    const next = cursor !== '0' ? { node: node.address, cursor } : following && { node: following.address, cursor: '0' };
    return { keys, next };
  }

  /** SCANs every record under `prefix` and hands them to `handle` a batch at a time; sums what it returns. */
  async #forEachBatch(pattern: Buffer, prefix: string, handle: (keys: Buffer[]) => Promise<number>): Promise<number> {
    let total = 0;
    let position: ScanPosition | undefined = { node: undefined, cursor: '0' };
    while (position !== undefined) {
      const batch = await this.#scan(position, pattern, BULK_SCAN_COUNT);
      position = batch.next;
      const seen = new Set<string>();
      const keys = batch.keys.filter((raw) => {
        const key = this.#storageKeyOf(raw);
        if (key === undefined || !key.startsWith(prefix) || seen.has(key)) return false;
        seen.add(key);
        return true;
      });
      if (keys.length > 0) total += await handle(keys);
    }
    return total;
  }

  /** `<keyPrefix>{<tag>}` for a storage key. */
  #redisKey(key: string): Buffer {
    wellFormed(key, 'A storage key');
    return Buffer.from(`${this.#keyPrefix}{${key === '' ? EMPTY_KEY_TAG : escapeTag(key)}}`, 'utf8');
  }

  /** `<keyPrefix>lock:{<tag>}`: the lease of a storage key, in its record's hash slot. */
  #lockKey(key: string): Buffer {
    wellFormed(key, 'A storage key');
    return Buffer.from(`${this.#keyPrefix}lock:{${key === '' ? EMPTY_KEY_TAG : escapeTag(key)}}`, 'utf8');
  }

  /** The SCAN MATCH pattern of every record whose storage key starts with `prefix`. */
  #pattern(prefix: string): Buffer {
    wellFormed(prefix, 'A prefix');
    return Buffer.from(`${escapeGlob(`${this.#keyPrefix}{${escapeTag(prefix)}`)}*`, 'utf8');
  }

  /** The storage key of a Redis key this store wrote, or undefined for any other key. */
  #storageKeyOf(raw: Buffer): string | undefined {
    const text = raw.toString('utf8');
    const head = `${this.#keyPrefix}{`;
    if (!text.startsWith(head) || !text.endsWith('}')) return undefined;
    const tag = text.slice(head.length, -1);
    const key = tag === EMPTY_KEY_TAG ? '' : tag.replace(/%(25|7B|7D)/g, (_, hex: string) => String.fromCharCode(parseInt(hex, 16)));
    // Exactly what this store would write for that key (rejects stray braces, `%`s and bad UTF-8).
    return !LONE_SURROGATE.test(key) && this.#redisKey(key).equals(raw) ? key : undefined;
  }

  #toError(operation: string, error: unknown): SessionError {
    if (error instanceof SessionError) return error;
    if (this.#closing) return new SessionClosedError('RedisStore');
    if (isUnavailable(error)) return new StoreUnavailableError(`Redis ${operation} failed: the server is unavailable`, { cause: error });
    return new StoreError(`Redis ${operation} failed${replyCode(error)}`, { cause: error });
  }
}

/** What the store uses of its subscriber connection (a `duplicate()` of a client or cluster client). */
interface SubscriberLike {
  connect(): Promise<unknown>;
  subscribe(channel: string, listener: (message: string) => void): Promise<unknown>;
  close(): Promise<unknown>;
  destroy(): void;
  on(event: 'error', listener: (error: unknown) => void): unknown;
}

const CHANGE_KINDS: ReadonlySet<string> = new Set(['set', 'delete', 'refresh', 'expire']);

/** A change message: `<kind>:<storage key>`. Only the key and the kind, never any data. */
function changeMessage(kind: StoreChange['kind'], key: string): string {
  return `${kind}:${key}`;
}

function parseChangeMessage(message: unknown): StoreChange | undefined {
  if (typeof message !== 'string') return undefined;
  const colon = message.indexOf(':');
  const kind = message.slice(0, colon);
  if (colon < 0 || !CHANGE_KINDS.has(kind)) return undefined;
  return { key: message.slice(colon + 1), kind: kind as StoreChange['kind'] };
}

/** The cluster client's or client's own `keyPrefix`, then the store's, which must hold no brace. */
function keyPrefixOf(client: RedisClientLike | RedisClusterLike, cluster: boolean, keyPrefix: string | undefined): string {
  const own = keyPrefix ?? DEFAULT_KEY_PREFIX;
  if (typeof own !== 'string') throw new InvalidOptionsError('RedisStore keyPrefix must be a string');
  const driver = cluster ? (client as RedisClusterLike)._options?.keyPrefix : (client as RedisClientLike).options?.keyPrefix;
  const full = `${driver === undefined ? '' : String(driver)}${own}`;
  if (/[{}]/.test(full) || LONE_SURROGATE.test(full)) {
    throw new InvalidOptionsError('RedisStore keyPrefix (with the client keyPrefix) must be well-formed text without "{" or "}"');
  }
  return full;
}

function isCluster(client: RedisClientLike | RedisClusterLike): client is RedisClusterLike {
  return 'masters' in client && typeof (client as Partial<RedisClusterLike>).nodeClient === 'function';
}

/** Builds a driver client; a malformed URL becomes an InvalidOptionsError that does not repeat it. */
function attempt<T>(what: string, build: () => T): T {
  try {
    return build();
  } catch {
    throw new InvalidOptionsError(`RedisStore ${what} is not valid`);
  }
}

function escapeTag(key: string): string {
  return key.replace(/[%{}]/g, (c) => TAG_ESCAPES[c] ?? c);
}

function escapeGlob(text: string): string {
  return text.replace(/[*?[\]\\]/g, '\\$&');
}

function wellFormed(text: string, what: string): void {
  if (typeof text !== 'string' || LONE_SURROGATE.test(text)) {
    throw new InvalidSessionKeyError(`${what} must be a well-formed Unicode string`);
  }
}

function encodeRecord(version: string, value: Uint8Array, options: WriteOptions): Buffer {
  const { expiresAt, updatedAt } = options;
  if (expiresAt !== null && (typeof expiresAt !== 'number' || !Number.isFinite(expiresAt))) {
    throw new InvalidExpiryError('expiresAt must be a finite number or null');
  }
  if (typeof updatedAt !== 'number' || !Number.isFinite(updatedAt)) throw new InvalidExpiryError('updatedAt must be a finite number');
  const versionBytes = Buffer.from(version, 'utf8');
  const record = Buffer.alloc(HEADER_BYTES + versionBytes.length + value.length);
  record[0] = FORMAT;
  record[1] = expiresAt === null ? 0 : 1;
  record.writeDoubleBE(expiresAt ?? 0, 2);
  record.writeDoubleBE(updatedAt, 10);
  record[18] = versionBytes.length;
  versionBytes.copy(record, HEADER_BYTES);
  record.set(value, HEADER_BYTES + versionBytes.length); // a copy: the caller may reuse its buffer
  return record;
}

function decodeRecord(raw: Buffer): StoredRecord {
  const flags = raw[1];
  const versionLength = raw[18] ?? 0;
  if (raw.length < HEADER_BYTES + versionLength || raw[0] !== FORMAT || (flags !== 0 && flags !== 1) || versionLength === 0) {
    throw new StoreError('Redis holds a value at a record key that is not a record of this store');
  }
  return {
    value: new Uint8Array(raw.subarray(HEADER_BYTES + versionLength)), // a copy, not a view of a shared buffer
    expiresAt: flags === 1 ? raw.readDoubleBE(2) : null,
    updatedAt: raw.readDoubleBE(10),
    version: raw.toString('utf8', HEADER_BYTES, HEADER_BYTES + versionLength),
  };
}

/** The PXAT argument: whole ms, at least 1 (a time in the past expires the record at once). */
function pxat(expiresAt: number): string {
  return String(Math.max(1, Math.ceil(expiresAt)));
}

function isOk(reply: unknown): boolean {
  return reply === 'OK' || (Buffer.isBuffer(reply) && reply.toString() === 'OK');
}

function encodeCursor(state: ListState): string {
  const scan = state.scan === undefined ? null : [state.scan.node ?? null, state.scan.cursor];
  return Buffer.from(JSON.stringify([1, scan, state.pending]), 'utf8').toString('base64url');
}

function decodeCursor(cursor: unknown): ListState {
  try {
    if (typeof cursor !== 'string') throw new TypeError();
    const parsed: unknown = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
    if (!Array.isArray(parsed) || parsed.length !== 3 || parsed[0] !== 1) throw new TypeError();
    const [, scan, pending] = parsed as [number, unknown, unknown];
    if (!Array.isArray(pending) || !pending.every((key) => typeof key === 'string')) throw new TypeError();
    if (scan === null) return { scan: undefined, pending };
    if (!Array.isArray(scan) || scan.length !== 2) throw new TypeError();
    const [node, position] = scan as [unknown, unknown];
    if ((node !== null && typeof node !== 'string') || typeof position !== 'string' || !/^\d+$/.test(position)) throw new TypeError();
    return { scan: { node: node ?? undefined, cursor: position }, pending };
  } catch {
    throw new InvalidOptionsError('list cursor is not one this store returned');
  }
}

function pageLimit(limit: number | undefined): number {
  if (typeof limit !== 'number' || !Number.isSafeInteger(limit) || limit < 1) {
    throw new InvalidOptionsError('list limit must be a positive integer');
  }
  return Math.min(limit, MAX_PAGE);
}

function timeoutOption(value: number | undefined, what: string): number {
  return positiveInteger(value, 5000, `RedisStore ${what} must be a positive integer of milliseconds`);
}

/** Settles with `promise`, or rejects after `ms` (the abandoned promise's rejection is swallowed). */
function bounded<T>(promise: Promise<T>, ms: number): Promise<T> {
  return settleWithin(promise, ms, () => new CommandTimeoutError(ms));
}

/** Whether an error means the server could not be reached, dropped us or is not serving yet. */
function isUnavailable(error: unknown, depth = 0): boolean {
  if (!(error instanceof Error) || depth > 3) return false;
  if (UNAVAILABLE_DRIVER_ERRORS.some((type) => error instanceof type)) return true;
  if (error instanceof ErrorReply) return UNAVAILABLE_REPLIES.test(error.message);
  const code = (error as { code?: unknown }).code;
  if (typeof code === 'string' && UNAVAILABLE_SYSTEM_CODES.has(code)) return true;
  if (error instanceof AggregateError && error.errors.some((inner) => isUnavailable(inner, depth + 1))) return true;
  return isUnavailable(error.cause, depth + 1);
}

/** ` (WRONGTYPE)` and the like: the first word of a server error, which names its kind and nothing else. */
function replyCode(error: unknown): string {
  if (!(error instanceof ErrorReply)) return '';
  const word = /^[A-Z]+/.exec(error.message)?.[0];
  return word === undefined ? '' : ` (${word})`;
}
