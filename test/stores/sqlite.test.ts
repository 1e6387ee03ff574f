import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { SqliteStore } from '../../src/stores/sqlite.ts';
import { storeConformanceSuite } from '../store-conformance.ts';

const dir = mkdtempSync(join(tmpdir(), 'ordo-sqlite-conformance-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

storeConformanceSuite('SqliteStore (file)', async () => new SqliteStore({ path: join(dir, 'sessions.db') }));
storeConformanceSuite('SqliteStore (:memory:)', async () => new SqliteStore({ path: ':memory:' }));

describe('SqliteStore change log', () => {
  it('logs changes only while some process watches, and every change after subscribe resolves', async () => {
    const path = join(dir, 'change-log.db');
    const writer = new SqliteStore({ path });
    const watcher = new SqliteStore({ path });
    const raw = new Database(path, { readonly: true });
    const logged = (): number => (raw.prepare('SELECT count(*) AS n FROM ordo_changes').get() as { n: number }).n;
    const write = { expiresAt: null, updatedAt: Date.now() };
    try {
      await writer.set('ns/b/unwatched', Buffer.from('x'), write);
      expect(logged()).toBe(0);
      const seen: string[] = [];
      const unsubscribe = await watcher.subscribe!('ns/', (change) => seen.push(`${change.kind}:${change.key}`), { pollIntervalMs: 20 });
      await writer.set('ns/b/watched', Buffer.from('y'), write);
      await writer.delete('ns/b/watched');
      await vi.waitFor(() => expect(seen).toEqual(['set:ns/b/watched', 'delete:ns/b/watched']), { timeout: 5000 });
      expect(logged()).toBe(2);
      await unsubscribe();
      expect((raw.prepare('SELECT count(*) AS n FROM ordo_watchers').get() as { n: number }).n).toBe(0);
    } finally {
      raw.close();
      await writer.close();
      await watcher.close();
    }
  });
});
