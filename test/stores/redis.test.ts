/**
 * RedisStore against the machine Redis at REDIS_URL: the shared conformance suite (once on a URL,
 * once on a client the test owns), then what only Redis has: the binary record layout, native
 * expiry, SCAN listing, key-prefix isolation. Everything is written under one random prefix per
 * run and removed afterwards.
 */
import { randomUUID } from 'node:crypto';
import { inspect } from 'node:util';
import { createClient, RESP_TYPES } from 'redis';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import {
  InvalidOptionsError,
  InvalidSessionKeyError,
  SessionClosedError,
  StoreError,
  StoreUnavailableError,
} from '../../src/errors.ts';
import { RedisStore } from '../../src/stores/redis.ts';
import type { SessionStore, WriteOptions } from '../../src/stores/store.ts';
import { storeConformanceSuite } from '../store-conformance.ts';
import { describeWithRedisServer, startRedisServer } from '../support/redis-server.ts';
import { REDIS_URL, describeWithService, redisAvailable } from '../support/services.ts';

const RUN = `ordo-test-${randomUUID()}:`;
const HOUR = 3_600_000;
const forever: WriteOptions = { expiresAt: null, updatedAt: 1_700_000_000_000 };

type RawClient = ReturnType<typeof rawClient>;

function rawClient() {
  return createClient({ url: REDIS_URL }).withTypeMapping({ [RESP_TYPES.BLOB_STRING]: Buffer });
}

function glob(text: string): string {
  return text.replace(/[*?[\]\\]/g, '\\$&');
}

/** Every key under `prefix`, by SCAN. */
async function rawKeys(raw: RawClient, prefix: string): Promise<string[]> {
  const keys: string[] = [];
  for await (const batch of raw.scanIterator({ MATCH: `${glob(prefix)}*`, COUNT: 1000 })) {
    keys.push(...batch.map((key) => key.toString()));
  }
  return keys.sort();
}

async function listAll(store: SessionStore, prefix: string, limit = 100): Promise<string[]> {
  const keys: string[] = [];
  let cursor: string | undefined;
  do {
    const page = await store.list(prefix, cursor === undefined ? { limit } : { limit, cursor });
    keys.push(...page.records.map((record) => record.key));
    cursor = page.cursor;
  } while (cursor !== undefined);
  return keys.sort();
}

function bytes(text: string): Uint8Array {
  return new Uint8Array(Buffer.from(text));
}

describeWithService('Redis', redisAvailable, 'RedisStore on the machine Redis', () => {
  const raw = rawClient();
  const owned = createClient({ url: REDIS_URL });

  beforeAll(async () => {
    raw.on('error', () => {});
    owned.on('error', () => {});
    await Promise.all([raw.connect(), owned.connect()]);
  });

  afterAll(async () => {
    const keys = await rawKeys(raw, RUN);
    for (let i = 0; i < keys.length; i += 500) await raw.unlink(keys.slice(i, i + 500));
    expect(await rawKeys(raw, RUN)).toEqual([]);
    await Promise.all([raw.close(), owned.close()]);
  });

  storeConformanceSuite('RedisStore (url)', async () => new RedisStore({ url: REDIS_URL, keyPrefix: `${RUN}url:` }));
  storeConformanceSuite('RedisStore (caller client)', async () => new RedisStore({ client: owned, keyPrefix: `${RUN}client:` }));

  describe('Redis layout and behaviour', () => {
    let n = 0;
    const stores: RedisStore[] = [];
    const open = (keyPrefix = `${RUN}t${n++}:`): { store: RedisStore; keyPrefix: string } => {
      const store = new RedisStore({ url: REDIS_URL, keyPrefix });
      stores.push(store);
      return { store, keyPrefix };
    };

    afterAll(async () => {
      await Promise.all(stores.map((store) => store.close()));
    });

    it('stores one binary string: a fixed header, then the sealed bytes exactly (no base64)', async () => {
      const { store, keyPrefix } = open();
      const value = new Uint8Array(256).map((_, i) => i);
      const { version } = await store.set('raw/{k}%', value, { expiresAt: null, updatedAt: 1234.5 });
      const redisKey = `${keyPrefix}{raw/%7Bk%7D%25}`;
      expect(await rawKeys(raw, keyPrefix)).toEqual([redisKey]);
      expect(await raw.type(redisKey)).toBe('string');
      const stored = (await raw.get(redisKey)) as Buffer;
      const versionLength = Buffer.byteLength(version);
      expect(stored.length).toBe(19 + versionLength + 256);
      expect(stored[0]).toBe(1); // format
      expect(stored[1]).toBe(0); // no expiry
      expect(stored.readDoubleBE(10)).toBe(1234.5);
      expect(stored[18]).toBe(versionLength);
      expect(stored.toString('utf8', 19, 19 + versionLength)).toBe(version);
      expect(stored.subarray(19 + versionLength).equals(Buffer.from(value))).toBe(true);
    });

    it('writes the expiry natively with PXAT, and a rewrite without one clears the TTL', async () => {
      const { store, keyPrefix } = open();
      const redisKey = `${keyPrefix}{ttl}`;
      const expiresAt = Date.now() + HOUR;
      const { version } = await store.set('ttl', bytes('a'), { expiresAt, updatedAt: Date.now() });
      expect(await raw.pExpireTime(redisKey)).toBe(expiresAt);
      const ttl = await raw.pTTL(redisKey);
      expect(ttl).toBeGreaterThan(HOUR - 60_000);
      expect(ttl).toBeLessThanOrEqual(HOUR);
      expect((await store.get('ttl'))!.expiresAt).toBe(expiresAt);

      await store.set('ttl', bytes('b'), forever);
      expect(await raw.pTTL(redisKey)).toBe(-1);

      const cas = await store.compareAndSet('ttl', (await store.get('ttl'))!.version, bytes('c'), { expiresAt: expiresAt + 0.25, updatedAt: 1 });
      expect(cas.ok).toBe(true);
      expect(await raw.pExpireTime(redisKey)).toBe(expiresAt + 1); // whole ms, rounded up
      expect((await store.get('ttl'))!.expiresAt).toBe(expiresAt + 0.25); // the exact value is in the header
      const cleared = await store.compareAndSet('ttl', cas.ok ? cas.version : version, bytes('d'), forever);
      expect(cleared.ok).toBe(true);
      expect(await raw.pTTL(redisKey)).toBe(-1);
    });

    it('lets Redis drop a record whose expiry has passed on its own clock', async () => {
      const { store } = open();
      await store.set('gone', bytes('x'), { expiresAt: Date.now() - 1000, updatedAt: Date.now() });
      expect(await store.get('gone')).toBeUndefined();
    });

    it('puts every key of a session in one hash tag, whatever braces the storage key holds', async () => {
      const { store, keyPrefix } = open();
      const cases: Array<[string, string]> = [
        ['users/1', 'users/1'],
        ['{a}b', '%7Ba%7Db'],
        ['}{', '%7D%7B'],
        ['%7B', '%257B'],
        ['', '%'],
      ];
      for (const [key] of cases) await store.set(key, bytes(key), forever);
      const keys = await rawKeys(raw, keyPrefix);
      expect(keys).toEqual(cases.map(([, tag]) => `${keyPrefix}{${tag}}`).sort());
      for (const key of keys) {
        // The hash tag is everything between the first "{" and the first "}" after it.
        const tag = key.slice(key.indexOf('{') + 1, key.indexOf('}', key.indexOf('{')));
        expect(`{${tag}}`).toBe(key.slice(keyPrefix.length));
        expect(tag.length).toBeGreaterThan(0);
      }
      for (const [key] of cases) expect(Buffer.from((await store.get(key))!.value).toString()).toBe(key);
      expect(await listAll(store, '')).toEqual(cases.map(([key]) => key).sort());
    });

    it('treats glob syntax in the key prefix literally: stores never see each other', async () => {
      const pairs: Array<[string, string]> = [
        [`${RUN}g*:`, `${RUN}gzz:`],
        [`${RUN}g?:`, `${RUN}gq:`],
        [`${RUN}g[ab]:`, `${RUN}ga:`],
        [`${RUN}g\\:`, `${RUN}g:`],
        [`${RUN}h:`, `${RUN}h:x:`],
      ];
      for (const [mine, theirs] of pairs) {
        const a = open(mine).store;
        const b = open(theirs).store;
        for (const key of ['s/1', 's/2', 'other']) {
          await a.set(key, bytes(`a ${key}`), { expiresAt: Date.now() + HOUR, updatedAt: 0 });
          await b.set(key, bytes(`b ${key}`), { expiresAt: Date.now() + HOUR, updatedAt: 0 });
        }
        expect(await listAll(a, '')).toEqual(['other', 's/1', 's/2']);
        expect(await listAll(a, 's/')).toEqual(['s/1', 's/2']);
        expect(await a.purgeExpired('', Date.now() + 2 * HOUR)).toBe(3);
        expect(await listAll(b, '')).toEqual(['other', 's/1', 's/2']);
        expect(Buffer.from((await b.get('s/1'))!.value).toString()).toBe('b s/1');
        expect(await b.deleteByPrefix('')).toBe(3);
      }
    });

    it('ignores keys under its prefix that it did not write', async () => {
      const { store, keyPrefix } = open();
      const foreign = [`${keyPrefix}plain`, `${keyPrefix}{open`, `${keyPrefix}{a}b`, `${keyPrefix}{a%zz}`, `${keyPrefix}{a{b}`, `${keyPrefix}lock:{a}`, `${keyPrefix}{}`];
      for (const key of foreign) await raw.set(key, 'not a record');
      await store.set('a', bytes('mine'), { expiresAt: Date.now() + HOUR, updatedAt: 0 });
      expect(await listAll(store, '')).toEqual(['a']);
      expect(await store.purgeExpired('', Date.now() + 2 * HOUR)).toBe(1);
      await store.set('a', bytes('mine'), forever);
      expect(await store.deleteByPrefix('')).toBe(1);
      expect(await rawKeys(raw, keyPrefix)).toEqual([...foreign].sort());
    });

    it('pages a sparse prefix in a busy keyspace: nothing missed, no duplicate within a page', async () => {
      const { store } = open();
      for (let i = 0; i < 1500; i++) await store.set(`noise/${i}`, bytes('n'), forever);
      const wanted = Array.from({ length: 25 }, (_, i) => `want/${String(i).padStart(2, '0')}`);
      for (const key of wanted) await store.set(key, bytes(key), forever);
      let cursor: string | undefined;
      const seen: string[] = [];
      do {
        const page = await store.list('want/', cursor === undefined ? { limit: 4 } : { limit: 4, cursor });
        const keys = page.records.map((record) => record.key);
        expect(keys.length).toBeLessThanOrEqual(4);
        expect(new Set(keys).size).toBe(keys.length);
        if (page.cursor !== undefined) expect(keys.length).toBeGreaterThan(0);
        seen.push(...keys);
        cursor = page.cursor;
      } while (cursor !== undefined);
      expect(seen.sort()).toEqual(wanted);
      expect(await store.deleteByPrefix('')).toBe(1525);
    });

    it('lets exactly one of many writers on separate connections win a compare-and-set', async () => {
      const keyPrefix = `${RUN}race:`;
      const racers = Array.from({ length: 6 }, () => open(keyPrefix).store);
      const [first] = racers;
      const { version } = await first!.set('race', bytes('start'), forever);
      const results = await Promise.all(
        racers.flatMap((store, s) => Array.from({ length: 8 }, (_, i) => store.compareAndSet('race', version, bytes(`w${s}.${i}`), forever))),
      );
      const winners = results.filter((result) => result.ok);
      expect(winners).toHaveLength(1);
      expect((await first!.get('race'))!.version).toBe(winners[0]!.ok && winners[0]!.version);
    });

    it("never closes a caller's client, and applies the client's own keyPrefix first", async () => {
      const client = createClient({ url: REDIS_URL, keyPrefix: `${RUN}app:` });
      client.on('error', () => {});
      const store = new RedisStore({ client, keyPrefix: 's:' }); // not connected yet: the store connects it
      await store.set('k', bytes('v'), forever);
      expect(await rawKeys(raw, `${RUN}app:`)).toEqual([`${RUN}app:s:{k}`]);
      await store.close();
      expect(client.isOpen).toBe(true);
      expect(await client.ping()).toBe('PONG');
      await expect(store.get('k')).rejects.toBeInstanceOf(SessionClosedError);
      expect(client.listenerCount('error')).toBe(1); // the store removed its own listener
      await client.close();
    });

    it('reports a value it cannot read, or a key of another type, as a StoreError that is not "unavailable"', async () => {
      const { store, keyPrefix } = open();
      await raw.set(`${keyPrefix}{garbage}`, 'secret-looking-bytes');
      await raw.hSet(`${keyPrefix}{hash}`, 'f', 'secret-looking-bytes');
      for (const key of ['garbage', 'hash']) {
        const error = await store.get(key).then(() => undefined, (e: unknown) => e);
        expect(error).toBeInstanceOf(StoreError);
        expect(error).not.toBeInstanceOf(StoreUnavailableError);
        expect((error as StoreError).code).toBe('ERR_SESSION_STORE');
        expect(inspect(error, { depth: 5 })).not.toContain('secret-looking-bytes');
      }
      const wrongType = await store.compareAndSet('hash', 'v', bytes('x'), forever).then(() => undefined, (e: unknown) => e);
      expect((wrongType as StoreError).message).toContain('WRONGTYPE');
    });

    it('refuses bad options, keys and cursors with typed errors that repeat no secret', async () => {
      const badUrl = (() => {
        try {
          new RedisStore({ url: 'redis://user:hunter2@[::1' });
        } catch (error) {
          return error;
        }
      })();
      expect(badUrl).toBeInstanceOf(InvalidOptionsError);
      expect(inspect(badUrl, { depth: 5 })).not.toContain('hunter2');
      expect(() => new RedisStore({ url: REDIS_URL, keyPrefix: 'a{b}:' })).toThrow(InvalidOptionsError);
      expect(() => new RedisStore({ url: REDIS_URL, commandTimeoutMs: 0 })).toThrow(InvalidOptionsError);
      expect(() => new RedisStore({} as never)).toThrow(InvalidOptionsError);
      const { store } = open();
      await expect(store.get('lone \ud800 surrogate')).rejects.toBeInstanceOf(InvalidSessionKeyError);
      await expect(store.list('', { limit: 10, cursor: 'not-a-cursor' })).rejects.toBeInstanceOf(InvalidOptionsError);
      await expect(store.list('', { limit: 0 })).rejects.toBeInstanceOf(InvalidOptionsError);
      expect(inspect(new RedisStore({ url: 'redis://user:hunter2@127.0.0.1:1' }))).not.toContain('hunter2');
    });

    it('opens idempotently, and concurrent opens share one connection', async () => {
      const { store } = open();
      await Promise.all([store.open(), store.open(), store.open()]);
      await store.open();
      expect(await store.get('nothing')).toBeUndefined();
    });
  });
});

describeWithRedisServer('RedisStore sets while nobody watches', () => {
  it('sends a plain SET while nobody subscribes, and SET + PUBLISH in a script once a store does', async () => {
    const server = await startRedisServer(); // its own server: command counts are not shared with other tests
    const raw = createClient({ url: server.url });
    raw.on('error', () => undefined);
    const writer = new RedisStore({ url: server.url });
    const watcher = new RedisStore({ url: server.url });
    const counts = async (): Promise<{ scripts: number; publishes: number; sets: number }> => {
      const info = await raw.info('commandstats');
      const calls = (name: string): number => Number(new RegExp(`cmdstat_${name}:calls=(\\d+)`).exec(info)?.[1] ?? 0);
      return { scripts: calls('evalsha') + calls('eval'), publishes: calls('publish'), sets: calls('set') };
    };
    try {
      await raw.connect();
      await writer.open();
      const before = await counts();
      await writer.set('ns/b/quiet', bytes('1'), forever);
      await writer.set('ns/b/quiet', bytes('2'), { expiresAt: Date.now() + HOUR, updatedAt: 1 });
      const unwatched = await counts();
      expect(unwatched).toEqual({ scripts: before.scripts, publishes: before.publishes, sets: before.sets + 2 });
      expect((await writer.get('ns/b/quiet'))?.value).toEqual(bytes('2'));
      const seen: string[] = [];
      const unsubscribe = await watcher.subscribe!('ns/', (change) => seen.push(`${change.kind}:${change.key}`));
      await writer.set('ns/b/heard', bytes('3'), forever);
      await vi.waitFor(() => expect(seen).toEqual(['set:ns/b/heard']), { timeout: 5000 });
      const watched = await counts();
      expect(watched.scripts - unwatched.scripts).toBeGreaterThanOrEqual(1); // EVALSHA, and EVAL after NOSCRIPT on a fresh server
      expect(watched.publishes - unwatched.publishes).toBe(1);
      await unsubscribe();
    } finally {
      await writer.close();
      await watcher.close();
      await raw.close().catch(() => undefined);
      await server.destroy();
    }
  });
});
