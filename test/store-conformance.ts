/**
 * The one store conformance suite: every SessionStore, the memory one included, runs it.
 * A backend's own test file calls `storeConformanceSuite(name, factory)` and adds only what
 * is specific to that backend.
 *
 * Every test writes under its own random prefix, so the suite can share a server with other
 * suites, and deletes what it wrote afterwards. Expiry times are in the real future, so a
 * backend with native expiry (Redis) keeps every record the suite expects to see; purge is
 * exercised with a `now` that lies past them.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { SessionClosedError, StoreError } from '../src/errors.ts';
import type { SessionStore, StoredRecord, WriteOptions } from '../src/stores/store.ts';

export type StoreFactory = () => Promise<SessionStore>;

const HOUR = 3_600_000;

function bytes(text: string): Uint8Array {
  return new Uint8Array(Buffer.from(text, 'utf8'));
}

function text(record: StoredRecord | undefined): string | undefined {
  return record && Buffer.from(record.value).toString('utf8');
}

async function listAll(store: SessionStore, prefix: string, limit = 1000, from?: string): Promise<string[]> {
  const keys: string[] = [];
  let cursor: string | undefined = from;
  for (let pages = 0; pages < 100_000; pages++) {
    const page = await store.list(prefix, cursor === undefined ? { limit } : { limit, cursor });
    expect(page.records.length).toBeLessThanOrEqual(limit);
    keys.push(...page.records.map((record) => record.key));
    if (page.cursor === undefined) return keys;
    cursor = page.cursor;
  }
  throw new Error('listing did not end');
}

function codePointSorted(keys: string[]): string[] {
  return [...keys].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
}

export function storeConformanceSuite(name: string, factory: StoreFactory): void {
  describe(`SessionStore conformance: ${name}`, () => {
    let store: SessionStore;
    let root: string;
    const now = Date.now();
    const write: WriteOptions = { expiresAt: null, updatedAt: now };
    const k = (suffix: string): string => `${root}${suffix}`;

    beforeEach(async () => {
      store = await factory();
      root = `conf-${randomUUID()}/`;
    });

    afterEach(async () => {
      try {
        await store.deleteByPrefix(root);
      } catch (error) {
        if (!(error instanceof SessionClosedError)) throw error;
      }
      await store.close();
    });

    it('has a kind', () => {
      expect(typeof store.kind).toBe('string');
      expect(store.kind.length).toBeGreaterThan(0);
    });

    it('returns undefined for a key never written', async () => {
      expect(await store.get(k('absent'))).toBeUndefined();
    });

    it('returns exactly what was written, with its metadata', async () => {
      const value = new Uint8Array(256).map((_, i) => i);
      const { version } = await store.set(k('a'), value, { expiresAt: now + HOUR, updatedAt: now - 5 });
      expect(typeof version).toBe('string');
      expect(version.length).toBeGreaterThan(0);
      const record = await store.get(k('a'));
      expect(record).toBeDefined();
      expect(Buffer.from(record!.value).equals(Buffer.from(value))).toBe(true);
      expect(record!.expiresAt).toBe(now + HOUR);
      expect(record!.updatedAt).toBe(now - 5);
      expect(record!.version).toBe(version);
    });

    it('keeps a null expiry as null', async () => {
      await store.set(k('forever'), bytes('x'), write);
      expect((await store.get(k('forever')))!.expiresAt).toBeNull();
    });

    it('stores large and arbitrary binary values byte for byte', async () => {
      const value = new Uint8Array(randomBytes(200_000));
      await store.set(k('big'), value, write);
      const record = await store.get(k('big'));
      expect(Buffer.from(record!.value).equals(Buffer.from(value))).toBe(true);
    });

    it('copies values: mutating the written or returned buffer changes nothing stored', async () => {
      const value = bytes('original');
      await store.set(k('copy'), value, write);
      value.fill(0);
      const first = await store.get(k('copy'));
      first!.value.fill(0);
      expect(text(await store.get(k('copy')))).toBe('original');
    });

    it('overwrites on set and gives every write a new version', async () => {
      const first = await store.set(k('a'), bytes('one'), write);
      const second = await store.set(k('a'), bytes('two'), { expiresAt: now + HOUR, updatedAt: now + 1 });
      expect(second.version).not.toBe(first.version);
      const record = await store.get(k('a'));
      expect(text(record)).toBe('two');
      expect(record!.expiresAt).toBe(now + HOUR);
      expect(record!.updatedAt).toBe(now + 1);
    });

    it('clears an expiry when a record is rewritten without one', async () => {
      await store.set(k('a'), bytes('one'), { expiresAt: now + HOUR, updatedAt: now });
      await store.set(k('a'), bytes('two'), write);
      expect((await store.get(k('a')))!.expiresAt).toBeNull();
    });

    it('round-trips keys with separators, pattern syntax, NUL and astral characters', async () => {
      const keys = [
        'a:b', 'a/b', 'a%b', 'a_b', 'a*', 'a?', '[a]', 'a\\b', '{tag}', '}{', 'a\u0000b',
        'ü', 'u\u0308', '😀', '\uffff', 'x'.repeat(2000), '日本語'.repeat(100),
      ];
      for (const [i, key] of keys.entries()) await store.set(k(key), bytes(`v${i}`), write);
      for (const [i, key] of keys.entries()) expect(text(await store.get(k(key)))).toBe(`v${i}`);
      expect(codePointSorted(await listAll(store, root))).toEqual(codePointSorted(keys.map(k)));
    });

    describe('compareAndSet', () => {
      it('with null creates only when absent', async () => {
        const created = await store.compareAndSet(k('c'), null, bytes('first'), write);
        expect(created.ok).toBe(true);
        const again = await store.compareAndSet(k('c'), null, bytes('second'), write);
        expect(again.ok).toBe(false);
        expect(text(await store.get(k('c')))).toBe('first');
      });

      it('writes when the version matches and returns the new version', async () => {
        const { version } = await store.set(k('c'), bytes('one'), write);
        const result = await store.compareAndSet(k('c'), version, bytes('two'), { expiresAt: now + HOUR, updatedAt: now + 9 });
        expect(result.ok).toBe(true);
        const record = await store.get(k('c'));
        expect(text(record)).toBe('two');
        expect(record!.expiresAt).toBe(now + HOUR);
        expect(record!.updatedAt).toBe(now + 9);
        expect(result.ok && record!.version).toBe(result.ok && result.version);
        expect(record!.version).not.toBe(version);
      });

      it('refuses a stale version and leaves the record whole', async () => {
        const { version: stale } = await store.set(k('c'), bytes('one'), write);
        await store.set(k('c'), bytes('two'), { expiresAt: now + HOUR, updatedAt: now + 1 });
        const result = await store.compareAndSet(k('c'), stale, bytes('three'), write);
        expect(result.ok).toBe(false);
        const record = await store.get(k('c'));
        expect(text(record)).toBe('two');
        expect(record!.expiresAt).toBe(now + HOUR);
      });

      it('refuses a version against an absent record', async () => {
        const { version } = await store.set(k('c'), bytes('one'), write);
        await store.delete(k('c'));
        expect((await store.compareAndSet(k('c'), version, bytes('two'), write)).ok).toBe(false);
        expect(await store.get(k('c'))).toBeUndefined();
      });

      it('never reuses a version after delete and re-create (no ABA)', async () => {
        const { version: old } = await store.set(k('c'), bytes('one'), write);
        await store.delete(k('c'));
        await store.set(k('c'), bytes('recreated'), write);
        expect((await store.compareAndSet(k('c'), old, bytes('late'), write)).ok).toBe(false);
        expect(text(await store.get(k('c')))).toBe('recreated');
      });

      it('lets exactly one of many concurrent writers with the same expectation win', async () => {
        const { version } = await store.set(k('race'), bytes('start'), write);
        const results = await Promise.all(
          Array.from({ length: 24 }, (_, i) => store.compareAndSet(k('race'), version, bytes(`w${i}`), write)),
        );
        const winners = results.flatMap((result, i) => (result.ok ? [i] : []));
        expect(winners).toHaveLength(1);
        expect(text(await store.get(k('race')))).toBe(`w${winners[0]}`);
      });

      it('lets exactly one of many concurrent creators win', async () => {
        const results = await Promise.all(
          Array.from({ length: 24 }, (_, i) => store.compareAndSet(k('create'), null, bytes(`w${i}`), write)),
        );
        const winners = results.flatMap((result, i) => (result.ok ? [i] : []));
        expect(winners).toHaveLength(1);
        expect(text(await store.get(k('create')))).toBe(`w${winners[0]}`);
      });
    });

    describe('delete', () => {
      it('reports whether a record existed', async () => {
        await store.set(k('d'), bytes('x'), write);
        expect(await store.delete(k('d'))).toBe(true);
        expect(await store.get(k('d'))).toBeUndefined();
        expect(await store.delete(k('d'))).toBe(false);
      });

      it('deletes only the exact key', async () => {
        await store.set(k('d'), bytes('x'), write);
        await store.set(k('d2'), bytes('y'), write);
        await store.delete(k('d'));
        expect(text(await store.get(k('d2')))).toBe('y');
      });
    });

    describe('list', () => {
      it('lists exactly the keys under a prefix, never a sibling that merely starts alike', async () => {
        const inside = ['users/1', 'users/2', 'users/a:b'];
        const outside = ['users', 'usersX/1', 'users:archive/1', 'user/1', 'users_/1', 'users%/1', 'users*/1', 'u*ers/1'];
        for (const key of [...inside, ...outside]) await store.set(k(key), bytes(key), write);
        expect(codePointSorted(await listAll(store, k('users/')))).toEqual(inside.map(k));
        expect(await listAll(store, k('users*/'))).toEqual([k('users*/1')]);
        expect(await listAll(store, k('users%/'))).toEqual([k('users%/1')]);
        expect(await listAll(store, k('users_/'))).toEqual([k('users_/1')]);
      });

      it('treats pattern syntax in a prefix literally', async () => {
        for (const key of ['a*/1', 'ab/1', 'a?/1', 'a[b]/1', 'ab]/1', 'a\\/1', 'a%/1', 'az/1', 'a_/1']) {
          await store.set(k(key), bytes(key), write);
        }
        for (const prefix of ['a*/', 'a?/', 'a[b]/', 'a\\/', 'a%/', 'a_/']) {
          expect(await listAll(store, k(prefix))).toEqual([k(`${prefix}1`)]);
        }
      });

      it('returns records with their values and metadata', async () => {
        await store.set(k('p/1'), bytes('one'), { expiresAt: now + HOUR, updatedAt: now + 3 });
        const page = await store.list(k('p/'), { limit: 10 });
        expect(page.cursor).toBeUndefined();
        expect(page.records).toHaveLength(1);
        const [record] = page.records;
        expect(record!.key).toBe(k('p/1'));
        expect(Buffer.from(record!.value).toString()).toBe('one');
        expect(record!.expiresAt).toBe(now + HOUR);
        expect(record!.updatedAt).toBe(now + 3);
        expect(record!.version).toBe((await store.get(k('p/1')))!.version);
      });

      it('pages through many records, each exactly once', async () => {
        const keys = Array.from({ length: 1234 }, (_, i) => k(`many/${String(i).padStart(5, '0')}`));
        await Promise.all(keys.map((key) => store.set(key, bytes(key), write)));
        const listed = await listAll(store, k('many/'), 100);
        expect(codePointSorted(listed)).toEqual(keys);
      });

      it('returns an empty last page for an empty prefix range', async () => {
        const page = await store.list(k('nothing/'), { limit: 10 });
        expect(page.records).toEqual([]);
        expect(page.cursor).toBeUndefined();
      });

      it('continues from a cursor even when records are deleted between pages', async () => {
        const keys = Array.from({ length: 40 }, (_, i) => k(`c/${String(i).padStart(2, '0')}`));
        for (const key of keys) await store.set(key, bytes(key), write);
        const first = await store.list(k('c/'), { limit: 4 });
        expect(first.cursor).toBeDefined();
        const seen = new Set(first.records.map((r) => r.key));
        const deleted = keys.filter((key) => !seen.has(key)).slice(0, 2);
        for (const key of deleted) await store.delete(key);
        const rest = await listAll(store, k('c/'), 3, first.cursor!);
        const union = new Set([...seen, ...rest]);
        for (const key of keys) if (!deleted.includes(key)) expect(union.has(key)).toBe(true);
        for (const key of union) expect(keys).toContain(key);
        expect(union.size).toBe(first.records.length + rest.length);
      });
    });

    describe('deleteByPrefix', () => {
      it('deletes exactly the records under the prefix and counts them', async () => {
        for (const key of ['users/1', 'users/2', 'users/x/y', 'users:archive/1', 'usersX/1', 'users', 'user/1']) {
          await store.set(k(key), bytes(key), write);
        }
        expect(await store.deleteByPrefix(k('users/'))).toBe(3);
        expect(codePointSorted(await listAll(store, root))).toEqual(codePointSorted(['users:archive/1', 'usersX/1', 'users', 'user/1'].map(k)));
        expect(await store.deleteByPrefix(k('users/'))).toBe(0);
      });

      it('clears a large prefix completely', async () => {
        const keys = Array.from({ length: 1500 }, (_, i) => k(`bulk/${i}`));
        await Promise.all(keys.map((key) => store.set(key, bytes('x'), write)));
        await store.set(k('bulkier/1'), bytes('keep'), write);
        expect(await store.deleteByPrefix(k('bulk/'))).toBe(1500);
        expect(await listAll(store, k('bulk/'))).toEqual([]);
        expect(text(await store.get(k('bulkier/1')))).toBe('keep');
      });
    });

    describe('purgeExpired', () => {
      it('deletes records at or before now under the prefix, and nothing else', async () => {
        await store.set(k('x/old'), bytes('old'), { expiresAt: now + HOUR, updatedAt: now });
        await store.set(k('x/edge'), bytes('edge'), { expiresAt: now + 2 * HOUR, updatedAt: now });
        await store.set(k('x/young'), bytes('young'), { expiresAt: now + 3 * HOUR, updatedAt: now });
        await store.set(k('x/forever'), bytes('forever'), write);
        await store.set(k('y/old'), bytes('other prefix'), { expiresAt: now + HOUR, updatedAt: now });
        expect(await store.purgeExpired(k('x/'), now + 2 * HOUR)).toBe(2);
        expect(codePointSorted(await listAll(store, k('x/')))).toEqual([k('x/forever'), k('x/young')]);
        expect(text(await store.get(k('y/old')))).toBe('other prefix');
        expect(await store.purgeExpired(k('x/'), now + 2 * HOUR)).toBe(0);
      });
    });

    it('keeps many concurrent writes to distinct keys', async () => {
      const keys = Array.from({ length: 200 }, (_, i) => k(`con/${i}`));
      await Promise.all(keys.map((key) => store.set(key, bytes(key), write)));
      for (const key of keys) expect(text(await store.get(key))).toBe(key);
    });

    it('rejects every operation after close, with SessionClosedError, and closes idempotently', async () => {
      await store.set(k('closed'), bytes('x'), write);
      await store.deleteByPrefix(root);
      await store.close();
      await store.close();
      const calls: Array<() => Promise<unknown>> = [
        () => store.get(k('closed')),
        () => store.set(k('closed'), bytes('y'), write),
        () => store.compareAndSet(k('closed'), null, bytes('y'), write),
        () => store.delete(k('closed')),
        () => store.list(root, { limit: 1 }),
        () => store.deleteByPrefix(root),
        () => store.purgeExpired(root, now),
      ];
      for (const call of calls) {
        const error = await call().then(() => undefined, (e: unknown) => e);
        expect(error).toBeInstanceOf(SessionClosedError);
        expect(error).toBeInstanceOf(Error);
        expect(error).not.toBeInstanceOf(StoreError);
      }
    });
  });
}
