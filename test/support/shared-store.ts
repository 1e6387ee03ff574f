import type { SessionStore } from '../../src/stores/store.ts';

const METHODS = [
  'open', 'get', 'set', 'compareAndSet', 'delete', 'list', 'deleteByPrefix', 'purgeExpired',
  'acquireLease', 'releaseLease', 'subscribe',
] as const;

/**
 * A view of `store` whose `close()` does nothing, so several managers can share one backing
 * store in a test (each manager closes the store it was given). A plain object of bound
 * methods, so a test may spread it and override one.
 */
export function unclosable(store: SessionStore): SessionStore {
  const view: Record<string, unknown> = { kind: store.kind, close: async () => undefined };
  for (const name of METHODS) {
    const method = store[name] as ((...args: unknown[]) => unknown) | undefined;
    if (typeof method === 'function') view[name] = method.bind(store);
  }
  return view as unknown as SessionStore;
}
