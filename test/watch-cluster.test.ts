/**
 * watch on a real three-master Redis Cluster that this file starts (and stops): changes to keys
 * in every slot reach a subscriber connected to whichever node, through plain PUBLISH.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { RedisStore } from '../src/stores/redis.ts';
import type { StoreChange, WriteOptions } from '../src/stores/store.ts';
import { describeWithRedisServer, startRedisCluster, type RedisCluster } from './support/redis-server.ts';

const forever: WriteOptions = { expiresAt: null, updatedAt: 0 };

describeWithRedisServer('RedisStore.subscribe on a three-master Redis Cluster', () => {
  let cluster: RedisCluster | undefined;

  beforeAll(async () => {
    cluster = await startRedisCluster(3);
  }, 60_000);

  afterAll(async () => {
    await cluster?.stop();
  });

  it('hears set, refresh, delete, clear and purge of keys on every master', async () => {
    const rootNodes = [...(cluster as RedisCluster).rootNodes];
    const writer = new RedisStore({ cluster: { rootNodes }, keyPrefix: 'w:' });
    const watcher = new RedisStore({ cluster: { rootNodes }, keyPrefix: 'w:' });
    const otherPrefix = new RedisStore({ cluster: { rootNodes }, keyPrefix: 'w:x:' });
    try {
      const seen: StoreChange[] = [];
      const elsewhere: StoreChange[] = [];
      await watcher.subscribe('ns/', (change) => void seen.push(change));
      await otherPrefix.subscribe('', (change) => void elsewhere.push(change));
      const keys = Array.from({ length: 12 }, (_, i) => `ns/kite/acct-${i}`); // spread over the slots
      for (const key of keys) await writer.set(key, new Uint8Array([1]), forever);
      const first = (await writer.get(keys[0]!))!;
      expect((await writer.compareAndSet(keys[0]!, first.version, new Uint8Array([2]), { ...forever, change: 'refresh' })).ok).toBe(true);
      await writer.delete(keys[1]!);
      await writer.set('ns/fyers/a', new Uint8Array([1]), { expiresAt: Date.now() + 60_000, updatedAt: 0 });
      await writer.purgeExpired('ns/fyers/', Date.now() + 120_000);
      await writer.set('other/kite/z', new Uint8Array([1]), forever); // outside the prefix
      const cleared = await writer.deleteByPrefix('ns/kite/');
      expect(cleared).toBe(11);
      const expected = 12 + 1 + 1 + 2 + 11;
      const deadline = Date.now() + 5000;
      while (seen.length < expected && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
      await new Promise((resolve) => setTimeout(resolve, 200));
      // Messages from different masters reach the subscriber through the cluster bus in no set
      // order; each key's own changes (one slot, one master) keep theirs.
      const byKey = (list: readonly StoreChange[]): Record<string, string[]> => {
        const out: Record<string, string[]> = {};
        for (const { key, kind } of list) (out[key] ??= []).push(kind);
        return out;
      };
      expect(byKey(seen)).toStrictEqual({
        [keys[0]!]: ['set', 'refresh', 'delete'],
        [keys[1]!]: ['set', 'delete'],
        ...Object.fromEntries(keys.slice(2).map((key) => [key, ['set', 'delete']])),
        'ns/fyers/a': ['set', 'expire'],
      });
      expect(seen).toHaveLength(expected);
      expect(elsewhere).toStrictEqual([]);
    } finally {
      await Promise.all([writer.close(), watcher.close(), otherPrefix.close()]);
    }
  });
});
