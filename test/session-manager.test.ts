import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll } from 'vitest';
import { MemoryStore, SqliteStore, type SessionStore } from '../src/index.ts';
import { managerSuite } from './manager-suite.ts';
import { unclosable } from './support/shared-store.ts';

/** One MemoryStore shared by every "open": the tests reopen stores to switch keyrings. */
function sharedMemoryStore(): () => Promise<SessionStore> {
  const backing = new MemoryStore();
  return async () => unclosable(backing);
}

const dir = mkdtempSync(join(tmpdir(), 'ordo-manager-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

managerSuite('MemoryStore', sharedMemoryStore());
managerSuite('SqliteStore', async () => new SqliteStore({ path: join(dir, 'sessions.db') }));
