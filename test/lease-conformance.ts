/**
 * The lease half of the store contract (`acquireLease` / `releaseLease`), one suite for every
 * store: exclusive, expiring, released only by its holder, exactly one winner among concurrent
 * acquires, and never visible in `list`. Each test uses its own random key prefix and cleans up.
 */
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { SessionStore } from '../src/stores/store.ts';

type LeaseStore = SessionStore & Required<Pick<SessionStore, 'acquireLease' | 'releaseLease'>>;

function withLeases(store: SessionStore): LeaseStore {
  expect(typeof store.acquireLease).toBe('function');
  expect(typeof store.releaseLease).toBe('function');
  return store as LeaseStore;
}

/**
 * `factory` returns a store; `second`, when given, returns another store (another connection or
 * file handle) on the same backend, to show the lease holds across them.
 */
export function leaseConformanceSuite(name: string, factory: () => Promise<SessionStore>, second?: () => Promise<SessionStore>): void {
  describe(`lease conformance: ${name}`, () => {
    let store: LeaseStore;
    let other: LeaseStore;
    let root: string;
    const k = (suffix: string): string => `${root}${suffix}`;

    beforeEach(async () => {
      store = withLeases(await factory());
      other = second ? withLeases(await second()) : store;
      root = `lease-${randomUUID()}/`;
    });

    afterEach(async () => {
      await store.deleteByPrefix(root);
      await store.close();
      if (other !== store) await other.close();
    });

    it('grants a free lease, refuses it to anyone else while held, and frees it on release by the holder', async () => {
      expect(await store.acquireLease(k('a'), 't1', 10_000)).toBe(true);
      expect(await other.acquireLease(k('a'), 't2', 10_000)).toBe(false);
      expect(await store.acquireLease(k('a'), 't1', 10_000)).toBe(false); // not re-entrant
      expect(await store.releaseLease(k('a'), 't1')).toBe(true);
      expect(await other.acquireLease(k('a'), 't2', 10_000)).toBe(true);
      expect(await other.releaseLease(k('a'), 't2')).toBe(true);
      expect(await other.releaseLease(k('a'), 't2')).toBe(false); // already released
    });

    it('keeps leases on different keys apart', async () => {
      expect(await store.acquireLease(k('a'), 't1', 10_000)).toBe(true);
      expect(await other.acquireLease(k('b'), 't2', 10_000)).toBe(true);
      expect(await other.acquireLease(k('a/'), 't3', 10_000)).toBe(true);
      await Promise.all([store.releaseLease(k('a'), 't1'), other.releaseLease(k('b'), 't2'), other.releaseLease(k('a/'), 't3')]);
    });

    it('lets anyone take a lease whose ttl ran out', async () => {
      expect(await store.acquireLease(k('a'), 't1', 80)).toBe(true);
      expect(await other.acquireLease(k('a'), 't2', 10_000)).toBe(false);
      await sleep(200);
      expect(await other.acquireLease(k('a'), 't2', 10_000)).toBe(true);
      expect(await store.releaseLease(k('a'), 't1')).toBe(false); // the old holder cannot free the new one's
      expect(await store.acquireLease(k('a'), 't3', 10_000)).toBe(false);
      expect(await other.releaseLease(k('a'), 't2')).toBe(true);
    });

    it('is released only by its holder', async () => {
      expect(await store.acquireLease(k('a'), 'holder', 10_000)).toBe(true);
      expect(await other.releaseLease(k('a'), 'intruder')).toBe(false);
      expect(await other.releaseLease(k('a'), '')).toBe(false);
      expect(await other.acquireLease(k('a'), 'intruder', 10_000)).toBe(false);
      expect(await other.releaseLease(k('a'), 'holder')).toBe(true);
    });

    it('gives exactly one winner among 40 concurrent acquires', async () => {
      for (let round = 0; round < 3; round++) {
        const key = k(`race-${round}`);
        const outcomes = await Promise.all(
          Array.from({ length: 40 }, (_, i) => (i % 2 === 0 ? store : other).acquireLease(key, `t${i}`, 10_000)),
        );
        expect(outcomes.filter(Boolean)).toHaveLength(1);
        const winner = outcomes.indexOf(true);
        expect(await store.releaseLease(key, `t${winner}`)).toBe(true);
      }
    });

    it('never shows a lease in list, and a lease does not make a record exist', async () => {
      await store.set(k('rec'), new Uint8Array([1, 2, 3]), { expiresAt: null, updatedAt: Date.now() });
      expect(await store.acquireLease(k('rec'), 't1', 10_000)).toBe(true);
      expect(await store.acquireLease(k('lease-only'), 't2', 10_000)).toBe(true);
      const page = await store.list(root, { limit: 100 });
      expect(page.records.map((r) => r.key)).toEqual([k('rec')]);
      expect(await store.get(k('lease-only'))).toBeUndefined();
      const everything = await store.list('', { limit: 1000 });
      expect(everything.records.some((r) => r.key.includes('lease-only'))).toBe(false);
      // deleting the record leaves the lease alone; releasing the lease leaves the record alone
      expect(await store.releaseLease(k('rec'), 't1')).toBe(true);
      expect(await store.get(k('rec'))).toBeDefined();
      await store.releaseLease(k('lease-only'), 't2');
    });
  });
}
