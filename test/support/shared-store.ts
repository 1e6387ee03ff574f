import type { SessionStore } from '../../src/stores/store.ts';

/**
 * A view of `store` whose `close()` does nothing, so several managers can share one backing
 * store in a test (each manager closes the store it was given).
 */
export function unclosable(store: SessionStore): SessionStore {
  return new Proxy(store, {
    get(target, property) {
      if (property === 'close') return async () => undefined;
      const value: unknown = Reflect.get(target, property, target);
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
}
