/**
 * RedisStore on a real three-master Redis Cluster that this file starts (and stops) itself:
 * the conformance suite through a node-redis cluster client the test owns, then what a cluster
 * adds: one slot per session whatever its key, and listing that walks every master.
 */
import { describe, expect, it } from 'vitest';
import { RedisStore } from '../../src/stores/redis.ts';
import type { SessionStore, WriteOptions } from '../../src/stores/store.ts';
import { managerSuite } from '../manager-suite.ts';
import { storeConformanceSuite } from '../store-conformance.ts';
import { cli, describeWithRedisServer, useRedisCluster } from '../support/redis-server.ts';

const forever: WriteOptions = { expiresAt: null, updatedAt: 0 };

async function listAll(store: SessionStore, prefix: string, limit: number): Promise<string[]> {
  const keys: string[] = [];
  let cursor: string | undefined;
  do {
    const page = await store.list(prefix, cursor === undefined ? { limit } : { limit, cursor });
    expect(new Set(page.records.map((record) => record.key)).size).toBe(page.records.length);
    keys.push(...page.records.map((record) => record.key));
    cursor = page.cursor;
  } while (cursor !== undefined);
  return keys.sort();
}

async function keyslot(port: number, key: string): Promise<number> {
  const { code, output } = await cli(['-p', String(port), 'cluster', 'keyslot', key]);
  if (code !== 0) throw new Error(output);
  return Number(output.trim());
}

describeWithRedisServer('RedisStore on a three-master Redis Cluster', () => {
  const live = useRedisCluster();

  /** Test-only inspection of the throwaway cluster: KEYS on every master. */
  async function clusterKeys(pattern: string): Promise<string[]> {
    const perMaster = await Promise.all(live.client().masters.map(async (master) => (await live.client().nodeClient(master)).keys(pattern)));
    return perMaster.flat();
  }

  storeConformanceSuite('RedisStore (cluster client)', async () => new RedisStore({ client: live.client(), keyPrefix: 'conf:' }));
  managerSuite('RedisStore (cluster client)', async () => new RedisStore({ client: live.client(), keyPrefix: 'manager:' }));

  describe('cluster specifics', () => {
    it('keeps every key of one session in one slot, whatever braces its storage key holds', async () => {
      const store = new RedisStore({ client: live.client(), keyPrefix: 'slot:' });
      const port = live.cluster().servers[0]!.port;
      for (const key of ['users/1', '{a}b', '}{', 'a}', '{', '', 'x'.repeat(300)]) {
        await store.set(key, new Uint8Array([1]), forever);
        const [recordKey] = await clusterKeys('slot:*');
        expect(recordKey).toBeDefined();
        const lockKey = `slot:lock:${recordKey!.slice('slot:'.length)}`; // the planned lease key of that session
        expect(await keyslot(port, lockKey)).toBe(await keyslot(port, recordKey!));
        expect(await store.deleteByPrefix('')).toBe(1);
      }
      await store.close();
    });

    it('spreads records over every master and lists, deletes and purges them all', async () => {
      const store = new RedisStore({ client: live.client(), keyPrefix: 'spread:' });
      const keys = Array.from({ length: 300 }, (_, i) => `s/${String(i).padStart(3, '0')}`);
      await Promise.all(keys.map((key) => store.set(key, new Uint8Array([2]), { expiresAt: Date.now() + 60_000, updatedAt: 0 })));
      for (const master of live.client().masters) expect(await (await live.client().nodeClient(master)).keys('spread:*')).not.toEqual([]);
      expect(await listAll(store, 's/', 7)).toEqual(keys);
      expect(await store.purgeExpired('s/1', Date.now() + 120_000)).toBe(100);
      expect(await store.deleteByPrefix('s/')).toBe(200);
      expect(await listAll(store, '', 50)).toEqual([]);
      await store.close();
    });

    it('creates and closes its own cluster client from a cluster configuration', async () => {
      const store = new RedisStore({ cluster: { rootNodes: [...live.cluster().rootNodes] }, keyPrefix: 'own:' });
      await store.open();
      const { version } = await store.set('k', new Uint8Array([3]), forever);
      expect((await store.compareAndSet('k', version, new Uint8Array([4]), forever)).ok).toBe(true);
      expect(await store.deleteByPrefix('')).toBe(1);
      await store.close();
      expect(live.client().isOpen).toBe(true); // the test's own cluster client is untouched
    });
  });
});
