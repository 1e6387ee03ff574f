/** How the layers above the stores call them: typed errors, and paging that stays fair. */
import { setImmediate as nextTurn } from 'node:timers/promises';
import { SessionError, StoreError } from './errors.ts';
import type { SessionStore, StoredRecord } from './stores/store.ts';

/** Runs a store call, turning anything that is not already a typed error into a StoreError. */
export async function callStore<T>(store: SessionStore, operation: string, run: () => Promise<T>): Promise<T> {
  try {
    return await run();
  } catch (error) {
    throw storeFailure(store, operation, error);
  }
}

/**
 * What a failed store call throws: the store's own typed error, or a StoreError around anything
 * else. For the hottest paths, which await the store inside their own try (no extra promise).
 */
export function storeFailure(store: SessionStore, operation: string, error: unknown): SessionError {
  return error instanceof SessionError ? error : new StoreError(`${store.kind} store ${operation} failed`, { cause: error });
}

/**
 * Every record under `prefix`, one page at a time: memory stays flat whatever the count. After
 * each page it yields one turn of the event loop: an in-process store (SQLite) settles on
 * microtasks alone, and a long walk must not starve timers, I/O or a Ctrl-C handler.
 */
export async function* pages(
  store: SessionStore,
  prefix: string,
  limit: number,
): AsyncGenerator<ReadonlyArray<{ readonly key: string } & StoredRecord>> {
  let cursor: string | undefined;
  do {
    const options = cursor === undefined ? { limit } : { limit, cursor };
    const page = await callStore(store, 'list', () => store.list(prefix, options));
    yield page.records;
    cursor = page.cursor;
    if (cursor !== undefined) await nextTurn();
  } while (cursor !== undefined);
}
