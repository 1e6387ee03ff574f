/**
 * Key lifecycle over a store: re-encrypting records under the primary key (`rotateKeys`),
 * counting what each key still protects (`keyUsage`), and the approximate per-key encryption
 * counts kept in the store's metadata for the AES-GCM nonce budget.
 *
 * The manager hands in a {@link RecordCodec}: how to reopen and reseal a record given only its
 * storage key, so this module knows nothing of naming modes.
 */
import { envelopeKeyId, envelopeVersion, open, seal, type RecordIdentity } from './crypto/envelope.ts';
import type { Keyring } from './crypto/keyring.ts';
import { InvalidOptionsError, RotationAbortedError, SessionError, UnknownKeyIdError } from './errors.ts';
import { metadataKey, metadataPrefix, namespacePrefix } from './namespace.ts';
import { callStore, pages } from './store-calls.ts';
import type { SessionStore, StoredRecord } from './stores/store.ts';

/** Options of `SessionManager.rotateKeys`. */
export interface RotateKeysOptions {
  /** Records per `store.list` page. Default 500, at most 10 000. */
  readonly batchSize?: number;
  /** Called after each batch with the counts so far. */
  readonly onProgress?: (progress: RotationResult) => void;
  /** Aborting stops after the record in flight; the call rejects with `RotationAbortedError`. */
  readonly signal?: AbortSignal;
  /**
   * With `privateKeys: true`: first move every session to storage keys named with the primary
   * key's HMAC subkey, so the old name key can then be dropped. Resumable. Without
   * `privateKeys` it is refused with `InvalidOptionsError`.
   */
  readonly renameKeys?: boolean;
}

/** What `rotateKeys` did. */
export interface RotationResult {
  /** Records looked at (sessions and sealed metadata; canaries and plaintext metadata excluded). */
  readonly scanned: number;
  /** Records re-sealed under the primary key. */
  readonly rotated: number;
  /** Records left as they were: already under the primary, expired, or changed meanwhile (so already re-sealed by their writer). */
  readonly skipped: number;
  /** Records no key in the keyring could open (unknown key id, tampered): left untouched. */
  readonly unreadable: number;
  /** With `renameKeys`: sessions moved to their new storage key (absent otherwise). */
  readonly renamed?: number;
  /**
   * With `renameKeys`: whether the rename finished (every session at its new storage key, the
   * store's `nameKeyId` now the new key, so the old key may be dropped once `keyUsage()` shows it
   * unused). `false` when some record could not be opened or kept changing: run it again.
   */
  readonly renameComplete?: boolean;
}

/** Encryptions so far with one key, against the AES-GCM random-nonce budget of 2^32. */
export interface KeyStat {
  readonly keyId: string;
  /** Approximate: persisted every {@link STATS_FLUSH_EVERY} encryptions and on close. */
  readonly encryptions: number;
  /** 2^32. */
  readonly budget: number;
  /** `encryptions / budget`. */
  readonly used: number;
}

/** How the manager reseals a record found by storage key. */
export interface RecordCodec {
  /** Opens the record at `storageKey` and reseals its contents under the primary, or throws. */
  reseal(storageKey: string, record: StoredRecord): Buffer;
  /** Whether the record is already in the form the manager writes now (primary key, right format). */
  current(storageKey: string, record: StoredRecord): boolean;
}

export const NONCE_BUDGET = 2 ** 32;
/** Warn from here (half the budget)… */
export const NONCE_WARN_AT = 2 ** 31;
/** …and urge rotation from here (0.9 × 2^32, as Vault does). */
export const NONCE_ROTATE_AT = Math.floor(0.9 * 2 ** 32);
export const STATS_FLUSH_EVERY = 1024;
export const STATS_METADATA_NAME = 'stats';
const CANARY_PREFIX = 'canary/';
const CAS_CONCURRENCY = 16;



/** Whether a metadata record (by its storage key) is a sealed one that rotation and usage cover. */
function isSealedMetadata(namespace: string, key: string, record: StoredRecord): boolean {
  const name = key.slice(metadataPrefix(namespace).length);
  return !name.startsWith(CANARY_PREFIX) && envelopeVersion(record.value) === 1 && envelopeKeyId(record.value) !== undefined;
}

/** The metadata identity of the sealed record `name`. */
export function metadataIdentity(namespace: string, name: string): RecordIdentity {
  return { kind: 'metadata', namespace, broker: '', key: name, expiresAt: null };
}

/**
 * Re-seals every live record of the namespace that is not yet under the primary key, by
 * compare-and-set so a concurrent write always wins. Resumable: records already under the primary
 * are skipped, so a second run after a crash or an abort finishes the job and never
 * double-encrypts.
 */
export async function rotateRecords(
  store: SessionStore,
  namespace: string,
  keyring: Keyring,
  codec: RecordCodec,
  now: () => number,
  options: RotateKeysOptions,
  onEncrypt: (keyId: string) => void,
): Promise<RotationResult> {
  const batchSize = options.batchSize ?? 500;
  if (!Number.isSafeInteger(batchSize) || batchSize < 1 || batchSize > 10_000) throw new InvalidOptionsError('batchSize must be an integer from 1 to 10000');
  if (options.onProgress !== undefined && typeof options.onProgress !== 'function') throw new InvalidOptionsError('onProgress must be a function');
  const counts = { scanned: 0, rotated: 0, skipped: 0, unreadable: 0 };
  const snapshot = (): RotationResult => ({ ...counts });
  const checkAbort = (): void => {
    if (options.signal?.aborted) throw new RotationAbortedError(snapshot());
  };

  const rotateOne = async (key: string, record: StoredRecord, codecFor: RecordCodec): Promise<void> => {
    counts.scanned++;
    if ((record.expiresAt !== null && record.expiresAt <= now()) || codecFor.current(key, record)) {
      counts.skipped++;
      return;
    }
    let resealed: Buffer;
    try {
      resealed = codecFor.reseal(key, record);
    } catch (error) {
      if (!(error instanceof SessionError)) throw error;
      counts.unreadable++;
      return;
    }
    onEncrypt(keyring.primaryKeyId);
    // updatedAt stays as it was: rotation changes how a record is sealed, not what it holds.
    const result = await callStore(store, 'rotate', () =>
      store.compareAndSet(key, record.version, resealed, { expiresAt: record.expiresAt, updatedAt: record.updatedAt }),
    );
    if (result.ok) counts.rotated++;
    else counts.skipped++; // written meanwhile, so already sealed under its writer's primary
  };

  const runPages = async (prefix: string, filter: (key: string, record: StoredRecord) => boolean, codecFor: RecordCodec): Promise<void> => {
    for await (const records of pages(store, prefix, batchSize)) {
      checkAbort();
      const chosen = records.filter((record) => filter(record.key, record));
      for (let i = 0; i < chosen.length; i += CAS_CONCURRENCY) {
        checkAbort();
        await Promise.all(chosen.slice(i, i + CAS_CONCURRENCY).map((record) => rotateOne(record.key, record, codecFor)));
      }
      options.onProgress?.(snapshot());
    }
  };

  await runPages(namespacePrefix(namespace), () => true, codec);
  const metadataCodec: RecordCodec = {
    current: (_key, record) => envelopeKeyId(record.value) === keyring.primaryKeyId,
    reseal: (key, record) => {
      const identity = metadataIdentity(namespace, key.slice(metadataPrefix(namespace).length));
      const plaintext = open(keyring, record.value, identity);
      try {
        return seal(keyring, plaintext, identity);
      } finally {
        plaintext.fill(0);
      }
    },
  };
  await runPages(metadataPrefix(namespace), (key, record) => isSealedMetadata(namespace, key, record), metadataCodec);
  return snapshot();
}

/**
 * How many live records each key id protects: sessions plus sealed metadata, read from envelope
 * headers (nothing is decrypted). Canaries are not counted. A full scan of the namespace.
 */
export async function countKeyUsage(store: SessionStore, namespace: string, now: number, only?: ReadonlySet<string>): Promise<Record<string, number>> {
  const usage: Record<string, number> = {};
  const add = (record: StoredRecord): void => {
    if (record.expiresAt !== null && record.expiresAt <= now) return;
    const id = envelopeKeyId(record.value) ?? '(unreadable)';
    if (only !== undefined && !only.has(id)) return;
    usage[id] = (usage[id] ?? 0) + 1;
  };
  for await (const records of pages(store, namespacePrefix(namespace), 1000)) for (const record of records) add(record);
  for await (const records of pages(store, metadataPrefix(namespace), 100)) {
    for (const record of records) if (isSealedMetadata(namespace, record.key, record)) add(record);
  }
  return usage;
}

/**
 * The persisted per-key encryption counts of one namespace: a sealed metadata record
 * `{"encryptions":{"k1":123}}`. Pending counts are added by a compare-and-set loop, so processes
 * flushing at once never lose each other's counts.
 */
export class EncryptionCounter {
  readonly #store: SessionStore;
  readonly #namespace: string;
  readonly #keyring: Keyring;
  readonly #clock: () => number;
  readonly #pending = new Map<string, number>();
  #pendingTotal = 0;
  #flushing: Promise<void> | undefined;

  constructor(store: SessionStore, namespace: string, keyring: Keyring, clock: () => number) {
    this.#store = store;
    this.#namespace = namespace;
    this.#keyring = keyring;
    this.#clock = clock;
  }

  /** Counts one encryption; every {@link STATS_FLUSH_EVERY} starts a background flush (errors ignored). */
  note(keyId: string): void {
    this.#pending.set(keyId, (this.#pending.get(keyId) ?? 0) + 1);
    this.#pendingTotal++;
    if (this.#pendingTotal >= STATS_FLUSH_EVERY && this.#flushing === undefined) {
      this.#flushing = this.flush()
        .catch(() => undefined)
        .finally(() => {
          this.#flushing = undefined;
        });
    }
  }

  /** The persisted counts plus those not yet flushed by this process. */
  async read(): Promise<Record<string, number>> {
    const { counts } = await this.#load();
    for (const [id, n] of this.#pending) counts[id] = (counts[id] ?? 0) + n;
    return counts;
  }

  /** Adds the pending counts to the store's record. */
  async flush(): Promise<void> {
    await this.#flushing;
    if (this.#pendingTotal === 0) return;
    const adding = new Map(this.#pending);
    this.#pending.clear();
    this.#pendingTotal = 0;
    try {
      for (let attempt = 0; attempt < 20; attempt++) {
        const { counts, version, foreign } = await this.#load();
        // Sealed under a key we lack (a process ahead of us in a rolling deploy): keep our counts
        // pending rather than overwrite theirs.
        if (foreign) break;
        for (const [id, n] of adding) counts[id] = (counts[id] ?? 0) + n;
        const identity = metadataIdentity(this.#namespace, STATS_METADATA_NAME);
        const sealed = seal(this.#keyring, Buffer.from(JSON.stringify({ encryptions: counts }), 'utf8'), identity);
        const written = await callStore(this.#store, 'write', () =>
          this.#store.compareAndSet(this.#key(), version, sealed, { expiresAt: null, updatedAt: this.#clock() }),
        );
        if (written.ok) return;
      }
    } catch (error) {
      this.#restore(adding);
      throw error;
    }
    this.#restore(adding);
  }

  #restore(adding: ReadonlyMap<string, number>): void {
    for (const [id, n] of adding) {
      this.#pending.set(id, (this.#pending.get(id) ?? 0) + n);
      this.#pendingTotal += n;
    }
  }

  #key(): string {
    return metadataKey(this.#namespace, STATS_METADATA_NAME);
  }

  /**
   * The stored counts. A record sealed under a key we lack is `foreign` (left alone); a tampered
   * one counts as empty and is replaced on the next flush.
   */
  async #load(): Promise<{ counts: Record<string, number>; version: string | null; foreign: boolean }> {
    const record = await callStore(this.#store, 'read', () => this.#store.get(this.#key()));
    if (record === undefined) return { counts: {}, version: null, foreign: false };
    try {
      const plaintext = open(this.#keyring, record.value, metadataIdentity(this.#namespace, STATS_METADATA_NAME));
      const parsed = JSON.parse(plaintext.toString('utf8')) as { encryptions?: Record<string, unknown> };
      const counts: Record<string, number> = {};
      for (const [id, n] of Object.entries(parsed.encryptions ?? {})) if (typeof n === 'number' && Number.isSafeInteger(n) && n >= 0) counts[id] = n;
      return { counts, version: record.version, foreign: false };
    } catch (error) {
      return { counts: {}, version: record.version, foreign: error instanceof UnknownKeyIdError };
    }
  }
}

/** Turns per-key counts into {@link KeyStat}s, the keyring's keys first. */
export function keyStatsOf(keyring: Keyring, counts: Readonly<Record<string, number>>): KeyStat[] {
  const ids = [...new Set([...keyring.keyIds, ...Object.keys(counts)])];
  return ids.map((keyId) => {
    const encryptions = counts[keyId] ?? 0;
    return { keyId, encryptions, budget: NONCE_BUDGET, used: encryptions / NONCE_BUDGET };
  });
}
