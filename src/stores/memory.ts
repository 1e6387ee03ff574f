import { SessionClosedError } from '../errors.ts';
import { compareCodePoints, newVersion } from './keys.ts';
import type {
  CompareAndSetResult,
  ListOptions,
  RecordPage,
  SessionStore,
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
    return this.#records.delete(key);
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
      if (key.startsWith(prefix) && this.#records.delete(key)) deleted++;
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
      }
    }
    return deleted;
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#records.clear();
  }

  #write(key: string, value: Uint8Array, options: WriteOptions): string {
    const version = newVersion();
    this.#records.set(key, {
      value: Uint8Array.from(value),
      expiresAt: options.expiresAt,
      updatedAt: options.updatedAt,
      version,
    });
    return version;
  }

  #assertOpen(): void {
    if (this.#closed) throw new SessionClosedError('MemoryStore');
  }
}
