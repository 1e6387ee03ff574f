import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll } from 'vitest';
import { MemoryStore, SqliteStore, type SessionStore } from '../src/index.ts';
import { managerSuite } from './manager-suite.ts';

/** One MemoryStore shared by every "open": the tests reopen stores to switch keyrings. */
function sharedMemoryStore(): () => Promise<SessionStore> {
  const backing = new MemoryStore();
  return async () => ({
    kind: backing.kind,
    get: (k) => backing.get(k),
    set: (k, v, o) => backing.set(k, v, o),
    compareAndSet: (k, e, v, o) => backing.compareAndSet(k, e, v, o),
    delete: (k) => backing.delete(k),
    list: (p, o) => backing.list(p, o),
    deleteByPrefix: (p) => backing.deleteByPrefix(p),
    purgeExpired: (p, n) => backing.purgeExpired(p, n),
    close: async () => undefined,
  });
}

const dir = mkdtempSync(join(tmpdir(), 'ordo-manager-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

managerSuite('MemoryStore', sharedMemoryStore());
managerSuite('SqliteStore', async () => new SqliteStore({ path: join(dir, 'sessions.db') }));
