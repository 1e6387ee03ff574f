import { SessionClosedError } from '../errors.ts';
import { compareCodePoints, newVersion } from './keys.ts';
import type {
  CompareAndSetResult,
  ListOptions,
  RecordPage,
  SessionStore,
  StoreChange,
  StoredRecord,
  WriteOptions,
} from './store.ts';

/**
 * A store in this process's memory: for tests and short-lived tools. Nothing survives the
 * process and nothing is shared with another one. Values are copied in and out, so a caller
 * that mutates its buffer later changes nothing stored.
 *
 * @example
 * ```ts
 * const sessions = await SessionManager.open({ keyring, store: new MemoryStore() });
 * ```
 */
export class MemoryStore implements SessionStore {
  readonly kind = 'memory';
  readonly #records = new Map<string, StoredRecord>();
  /** Leases, apart from records (never listed): key -> holder's token and when it runs out (Date.now ms). */
  readonly #leases = new Map<string, { token: string; expiresAt: number }>();
  /** Change subscribers: in process only, delivered on a microtask after the mutation. */
  readonly #subscribers = new Set<{ prefix: string; listener: (change: StoreChange) => void }>();
  #closed = false;

  async get(key: string): Promise<StoredRecord | undefined> {
    this.#assertOpen();
    const record = this.#records.get(key);
    return record && { ...record, value: Uint8Array.from(record.value) };
  }

  async set(key: string, value: Uint8Array, options: WriteOptions): Promise<{ version: string }> {
    this.#assertOpen();
    return { version: this.#write(key, value, options) };
  }

  async compareAndSet(
    key: string,
    expectedVersion: string | null,
    value: Uint8Array,
    options: WriteOptions,
  ): Promise<CompareAndSetResult> {
    this.#assertOpen();
    const current = this.#records.get(key);
    if ((current?.version ?? null) !== expectedVersion) return { ok: false };
    return { ok: true, version: this.#write(key, value, options) };
  }

  async delete(key: string): Promise<boolean> {
    this.#assertOpen();
    const deleted = this.#records.delete(key);
    if (deleted) this.#emit(key, 'delete');
    return deleted;
  }

  async list(prefix: string, options: ListOptions): Promise<RecordPage> {
    this.#assertOpen();
    const after = options.cursor;
    const keys = [...this.#records.keys()]
      .filter((key) => key.startsWith(prefix) && (after === undefined || compareCodePoints(key, after) > 0))
      .sort(compareCodePoints);
    const pageKeys = keys.slice(0, options.limit);
    const records = pageKeys.map((key) => {
      const record = this.#records.get(key) as StoredRecord;
      return { key, ...record, value: Uint8Array.from(record.value) };
    });
    const last = pageKeys.at(-1);
    return keys.length > pageKeys.length && last !== undefined ? { records, cursor: last } : { records };
  }

  async deleteByPrefix(prefix: string): Promise<number> {
    this.#assertOpen();
    let deleted = 0;
    for (const key of [...this.#records.keys()]) {
      if (key.startsWith(prefix) && this.#records.delete(key)) {
        deleted++;
        this.#emit(key, 'delete');
      }
    }
    return deleted;
  }

  async purgeExpired(prefix: string, now: number): Promise<number> {
    this.#assertOpen();
    let deleted = 0;
    for (const [key, record] of [...this.#records]) {
      if (key.startsWith(prefix) && record.expiresAt !== null && record.expiresAt <= now) {
        this.#records.delete(key);
        deleted++;
        this.#emit(key, 'expire');
      }
    }
    return deleted;
  }

  async acquireLease(key: string, token: string, ttlMs: number): Promise<boolean> {
    this.#assertOpen();
    const now = Date.now();
    const held = this.#leases.get(key);
    if (held !== undefined && held.expiresAt > now) return false;
    this.#leases.set(key, { token, expiresAt: now + ttlMs });
    return true;
  }

  async releaseLease(key: string, token: string): Promise<boolean> {
    this.#assertOpen();
    const held = this.#leases.get(key);
    if (held === undefined || held.token !== token) return false;
    return this.#leases.delete(key);
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#records.clear();
    this.#subscribers.clear();
  }

  async subscribe(prefix: string, listener: (change: StoreChange) => void): Promise<() => Promise<void>> {
    this.#assertOpen();
    const subscriber = { prefix, listener };
    this.#subscribers.add(subscriber);
    return async () => {
      this.#subscribers.delete(subscriber);
    };
  }

  #emit(key: string, kind: StoreChange['kind']): void {
    for (const subscriber of this.#subscribers) {
      if (!key.startsWith(subscriber.prefix)) continue;
      queueMicrotask(() => {
        if (!this.#subscribers.has(subscriber)) return;
        try {
          subscriber.listener({ key, kind });
        } catch {
          // A subscriber's failure is its own; the manager reports listener errors itself.
        }
      });
    }
  }

  #write(key: string, value: Uint8Array, options: WriteOptions): string {
    const version = newVersion();
    this.#records.set(key, {
      value: Uint8Array.from(value),
      expiresAt: options.expiresAt,
      updatedAt: options.updatedAt,
      version,
    });
    this.#emit(key, options.change ?? 'set');
    return version;
  }

  #assertOpen(): void {
    if (this.#closed) throw new SessionClosedError('MemoryStore');
  }
}
