import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
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

/** Commits in a WAL file: frames whose header gives a database size (only a commit's last frame does). */
function walCommits(path: string): number {
  const wal = readFileSync(`${path}-wal`);
  if (wal.length < 32) return 0;
  const pageSize = wal.readUInt32BE(8);
  const salts = wal.subarray(16, 24);
  let commits = 0;
  for (let offset = 32; offset + 24 + pageSize <= wal.length; offset += 24 + pageSize) {
    if (!wal.subarray(offset + 8, offset + 16).equals(salts)) break; // a frame left over from before a WAL reset
    if (wal.readUInt32BE(offset + 4) !== 0) commits++;
  }
  return commits;
}

describe('SqliteStore group commit', () => {
  const write = { expiresAt: null, updatedAt: 1 };
  const value = (i: number): Buffer => Buffer.from(`value-${i}`);

  it('commits writes issued together in one transaction, and awaited writes one by one', async () => {
    const path = join(dir, 'group-commit.db');
    const store = new SqliteStore({ path });
    try {
      const before = walCommits(path);
      await Promise.all(Array.from({ length: 64 }, (_, i) => store.set(`ns/b/k${i}`, value(i), write)));
      expect(walCommits(path) - before).toBe(1);
      for (let i = 0; i < 5; i++) await store.set(`ns/b/one${i}`, value(i), write);
      expect(walCommits(path) - before).toBe(6);
      const records = await store.list('ns/b/k', { limit: 100 });
      expect(records.records.map((record) => record.value.toString()).sort()).toEqual(Array.from({ length: 64 }, (_, i) => `value-${i}`).sort());
    } finally {
      await store.close();
    }
  });

  it('fails only the bad write of a batch: the others commit and their callers hear so', async () => {
    const path = join(dir, 'group-commit-abort.db');
    const store = new SqliteStore({ path });
    const raw = new Database(path);
    raw.exec(`CREATE TRIGGER refuse_bad BEFORE INSERT ON ordo_sessions WHEN NEW.key LIKE '%/bad%' BEGIN SELECT RAISE(ABORT, 'refused'); END`);
    try {
      const keys = Array.from({ length: 20 }, (_, i) => (i % 7 === 3 ? `ns/b/bad${i}` : `ns/b/good${i}`));
      const settled = await Promise.allSettled(keys.map((key, i) => store.set(key, value(i), write)));
      for (const [i, outcome] of settled.entries()) {
        const bad = keys[i]!.includes('/bad');
        expect(outcome.status).toBe(bad ? 'rejected' : 'fulfilled');
        if (outcome.status === 'rejected') expect(outcome.reason).toMatchObject({ code: 'ERR_SESSION_STORE' });
        const stored = await store.get(keys[i]!);
        expect(stored?.value.toString()).toBe(bad ? undefined : `value-${i}`);
      }
      // and the store goes on
      await store.set('ns/b/after', value(99), write);
      expect((await store.get('ns/b/after'))?.value.toString()).toBe('value-99');
    } finally {
      raw.close();
      await store.close();
    }
  });

  it('fails the whole batch, and applies none of it, when one write ends the transaction', async () => {
    const path = join(dir, 'group-commit-rollback.db');
    const store = new SqliteStore({ path });
    const raw = new Database(path);
    raw.exec(`CREATE TRIGGER end_all BEFORE INSERT ON ordo_sessions WHEN NEW.key = 'ns/b/poison' BEGIN SELECT RAISE(ROLLBACK, 'rolled back'); END`);
    try {
      const keys = ['ns/b/first', 'ns/b/second', 'ns/b/poison', 'ns/b/fourth'];
      const settled = await Promise.allSettled(keys.map((key, i) => store.set(key, value(i), write)));
      expect(settled.map((outcome) => outcome.status)).toEqual(['rejected', 'rejected', 'rejected', 'rejected']);
      for (const key of keys) expect(await store.get(key)).toBeUndefined();
      await store.set('ns/b/after', value(5), write);
      expect((await store.get('ns/b/after'))?.value.toString()).toBe('value-5');
    } finally {
      raw.close();
      await store.close();
    }
  });

  it('lets the event loop turn during a long loop of awaited writes', async () => {
    const store = new SqliteStore({ path: ':memory:' });
    try {
      let ticks = 0;
      const timer = setInterval(() => ticks++, 1);
      const started = performance.now();
      for (let i = 0; performance.now() - started < 200; i++) await store.set(`ns/b/k${i % 100}`, value(i), write);
      clearInterval(timer);
      expect(ticks).toBeGreaterThan(20); // a loop that never yielded would let the timer run 0 times
    } finally {
      await store.close();
    }
  });
});
