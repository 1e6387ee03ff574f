import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { Keyring, MemoryStore, SessionManager, SqliteStore, StoreError, type SessionStore } from '../src/index.ts';
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

describe('a store that fails with an untyped error', () => {
  const keyring = new Keyring([{ id: 'k1', key: randomBytes(32) }]);
  const failing = (how: 'throws' | 'rejects'): ((...args: unknown[]) => Promise<never>) => {
    const cause = new Error('driver exploded: secret-ish detail');
    return how === 'throws'
      ? () => {
          throw cause;
        }
      : () => Promise.reject(cause);
  };

  for (const how of ['throws', 'rejects'] as const) {
    it(`reports a StoreError with the cause when get or set ${how}`, async () => {
      const backing = new MemoryStore();
      const sessions = await SessionManager.open({ keyring, store: unclosable(backing) });
      await sessions.setSession('fyers', 'acct', { accessToken: 'tok' });
      await sessions.close();
      const view = unclosable(backing) as { -readonly [K in keyof SessionStore]: SessionStore[K] };
      const broken = await SessionManager.open({ keyring, store: view });
      view.get = failing(how); // after open, whose canary check reads the store
      view.set = failing(how);
      try {
        for (const call of [() => broken.getSession('fyers', 'acct'), () => broken.setSession('fyers', 'acct', { accessToken: 'new' })]) {
          const error = await call().then(
            () => undefined,
            (reason: unknown) => reason,
          );
          expect(error).toBeInstanceOf(StoreError);
          expect(error).toMatchObject({ code: 'ERR_SESSION_STORE', message: expect.stringMatching(/^memory store (read|write) failed$/) });
          expect((error as StoreError).cause).toMatchObject({ message: 'driver exploded: secret-ish detail' });
        }
      } finally {
        await broken.close();
      }
    });
  }
});
