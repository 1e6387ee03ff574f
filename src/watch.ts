/**
 * Change notifications for the manager: a store's raw `(storage key, kind)` stream, turned back
 * into `(broker, key, kind)` of one namespace (and optionally one broker). Never any session data:
 * a watcher learns that a session changed and reads it itself if it wants the new value.
 */
import { InvalidOptionsError, SessionError, StoreError } from './errors.ts';
import { brokerPrefix, namespacePrefix, parseStorageKey, validateBrokerId } from './namespace.ts';
import type { ChangeKind, SessionStore, StoreChange } from './stores/store.ts';

/**
 * What a watcher is told: which session changed, and how. `'refresh'` is a refresh write-back,
 * `'expire'` a record `purgeExpired` removed. Never any session data.
 *
 * @example
 * ```ts
 * const change: SessionChange = { broker: 'kite', key: 'AB1234', kind: 'refresh' };
 * ```
 */
export interface SessionChange {
  readonly broker: string;
  readonly key: string;
  readonly kind: ChangeKind;
}

/**
 * A watcher: may be async; what it throws or rejects with goes to `onError`, never into the stream.
 *
 * @example
 * ```ts
 * const listener: SessionChangeListener = async ({ key, kind }) => { if (kind === 'refresh') await reconnect(key); };
 * ```
 */
export type SessionChangeListener = (change: SessionChange) => void | Promise<void>;

/**
 * Options of {@link SessionManager.watch}.
 *
 * @example
 * ```ts
 * const options: WatchOptions = { broker: 'kite', onError: (error) => log.warn(error) };
 * ```
 */
export interface WatchOptions {
  /** Only this broker's sessions. Default: every broker of the namespace. */
  readonly broker?: string;
  /** Called with whatever the listener throws (or rejects with). Default: ignored. */
  readonly onError?: (error: unknown) => void;
  /** How often a polling store (SQLite) looks for changes. Default 250 ms. */
  readonly pollIntervalMs?: number;
}

/**
 * Ends one watcher; idempotent.
 *
 * @example
 * ```ts
 * const unwatch: Unwatch = await sessions.watch(listener);
 * await unwatch();
 * ```
 */
export type Unwatch = () => Promise<void>;

/** The watchers of one manager, so that `close()` can end them all. */
export class WatchRegistry {
  readonly #active = new Set<Unwatch>();

  /** Subscribes to `store` for `namespace` and returns the watcher's unsubscribe function. */
  async watch(store: SessionStore, namespace: string, listener: SessionChangeListener, options: WatchOptions = {}): Promise<Unwatch> {
    if (typeof listener !== 'function') throw new InvalidOptionsError('watch needs a listener function');
    if (typeof options !== 'object' || options === null) throw new InvalidOptionsError('watch options must be an object');
    const { onError } = options;
    if (onError !== undefined && typeof onError !== 'function') throw new InvalidOptionsError('onError must be a function');
    const broker = options.broker === undefined ? undefined : validateBrokerId(options.broker);
    if (typeof store.subscribe !== 'function') {
      throw new InvalidOptionsError(`the ${store.kind} store does not support watching for changes`);
    }
    const prefix = broker === undefined ? namespacePrefix(namespace) : brokerPrefix(namespace, broker);
    let ended = false;
    const report = (error: unknown): void => {
      try {
        onError?.(error);
      } catch {
        // An onError that throws must not break the stream either.
      }
    };
    const deliver = (change: StoreChange): void => {
      if (ended) return;
      const parsed = parseStorageKey(namespace, change.key);
      if (parsed === undefined || (broker !== undefined && parsed.broker !== broker)) return;
      try {
        const result = listener({ broker: parsed.broker, key: parsed.key, kind: change.kind });
        if (result instanceof Promise) result.catch(report);
      } catch (error) {
        report(error);
      }
    };
    const subscribeOptions = options.pollIntervalMs === undefined ? {} : { pollIntervalMs: options.pollIntervalMs };
    let unsubscribe: () => Promise<void>;
    try {
      unsubscribe = await store.subscribe(prefix, deliver, subscribeOptions);
    } catch (error) {
      if (error instanceof SessionError) throw error;
      throw new StoreError(`${store.kind} store subscribe failed`, { cause: error });
    }
    let ending: Promise<void> | undefined;
    const unwatch: Unwatch = () => {
      ended = true;
      this.#active.delete(unwatch);
      ending ??= unsubscribe();
      return ending;
    };
    this.#active.add(unwatch);
    return unwatch;
  }

  /** Ends every watcher (before the store closes). */
  async closeAll(): Promise<void> {
    const all = [...this.#active];
    await Promise.allSettled(all.map((unwatch) => unwatch()));
  }
}
