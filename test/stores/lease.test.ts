/**
 * The lease conformance suite on every store: memory, SQLite (two handles on one file), Redis
 * (two clients on the machine Redis), a three-master Redis Cluster this file starts itself, and
 * PostgreSQL (two pools on one throwaway schema). Plus the backend-specific layout: the Redis
 * lock key's hash slot, and SQLite/PostgreSQL migration to the lease table.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { createClient } from 'redis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MemoryStore } from '../../src/stores/memory.ts';
import { PostgresStore } from '../../src/stores/postgres.ts';
import { RedisStore } from '../../src/stores/redis.ts';
import { SqliteStore } from '../../src/stores/sqlite.ts';
import { leaseConformanceSuite } from '../lease-conformance.ts';
import { adminPool, dropSchema, randomSchema } from '../support/postgres.ts';
import { cli, describeWithRedisServer, useRedisCluster } from '../support/redis-server.ts';
import { DATABASE_URL, REDIS_URL, describeWithService, postgresAvailable, redisAvailable } from '../support/services.ts';

leaseConformanceSuite('MemoryStore', async () => new MemoryStore());

const dir = mkdtempSync(join(tmpdir(), 'ordo-lease-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const sqlitePath = join(dir, 'leases.db');
leaseConformanceSuite(
  'SqliteStore (two handles on one file)',
  async () => new SqliteStore({ path: sqlitePath }),
  async () => new SqliteStore({ path: sqlitePath }),
);

describe('SqliteStore lease table', () => {
  it('is created by migration 2, also on a database left at schema version 1', async () => {
    const path = join(dir, 'v1.db');
    const db = new Database(path);
    db.exec(`CREATE TABLE ordo_sessions (key TEXT NOT NULL PRIMARY KEY, value BLOB NOT NULL, expires_at INTEGER,
      updated_at INTEGER NOT NULL, version TEXT NOT NULL)`);
    db.pragma('user_version = 1');
    db.close();
    const store = new SqliteStore({ path });
    expect(await store.acquireLease('a/b/c', 't', 1000)).toBe(true);
    await store.close();
    const check = new Database(path, { readonly: true });
    expect(check.pragma('user_version', { simple: true })).toBeGreaterThanOrEqual(2); // later migrations may follow
    expect(check.prepare('SELECT key, token FROM ordo_leases').all()).toEqual([{ key: 'a/b/c', token: 't' }]);
    check.close();
  });
});

describeWithService('Redis', redisAvailable, 'RedisStore leases on the machine Redis', () => {
  const run = `ordo-test-lease-${randomUUID()}:`;
  const raw = createClient({ url: REDIS_URL });

  beforeAll(async () => {
    raw.on('error', () => {});
    await raw.connect();
  });

  afterAll(async () => {
    const keys: string[] = [];
    for await (const batch of raw.scanIterator({ MATCH: `${run}*`, COUNT: 1000 })) keys.push(...batch);
    if (keys.length > 0) await raw.unlink(keys);
    await raw.close();
  });

  leaseConformanceSuite(
    'RedisStore (two clients)',
    async () => new RedisStore({ url: REDIS_URL, keyPrefix: run }),
    async () => new RedisStore({ url: REDIS_URL, keyPrefix: run }),
  );

  it('keeps a lease at <prefix>lock:{tag} with a PX ttl, holding the token', async () => {
    const store = new RedisStore({ url: REDIS_URL, keyPrefix: `${run}layout:` });
    try {
      expect(await store.acquireLease('ns/fyers/a{b}%', 'tok', 5000)).toBe(true);
      const lockKey = `${run}layout:lock:{ns/fyers/a%7Bb%7D%25}`;
      expect(await raw.get(lockKey)).toBe('tok');
      const ttl = await raw.pTTL(lockKey);
      expect(ttl).toBeGreaterThan(0);
      expect(ttl).toBeLessThanOrEqual(5000);
      expect(await store.releaseLease('ns/fyers/a{b}%', 'tok')).toBe(true);
      expect(await raw.exists(lockKey)).toBe(0);
    } finally {
      await store.close();
    }
  });
});

describeWithRedisServer('RedisStore leases on a three-master Redis Cluster', () => {
  const live = useRedisCluster();

  leaseConformanceSuite('RedisStore (cluster client)', async () => new RedisStore({ client: live.client(), keyPrefix: 'lease:' }));

  it('puts each lock key in its record key\'s hash slot', async () => {
    const port = Number(new URL(live.cluster().rootNodes[0]?.url ?? 'redis://127.0.0.1:0').port);
    for (const key of ['default/fyers/XY1234', 'default/kite/AB{1}', 'x/y/%7B']) {
      const tag = key.replace(/%/g, '%25').replace(/\{/g, '%7B').replace(/\}/g, '%7D');
      const slots = await Promise.all(
        [`lease:{${tag}}`, `lease:lock:{${tag}}`].map(async (name) => (await cli(['-p', String(port), 'cluster', 'keyslot', name])).output.trim()),
      );
      expect(slots[0]).toMatch(/^\d+$/);
      expect(slots[1]).toBe(slots[0]);
    }
  });
});

describeWithService('PostgreSQL', postgresAvailable, 'PostgresStore leases', () => {
  const schema = randomSchema('ordo_lease');
  const admin = adminPool();

  afterAll(async () => {
    await dropSchema(admin, schema);
    await admin.end();
  });

  leaseConformanceSuite(
    'PostgresStore (two pools)',
    async () => new PostgresStore({ connectionString: DATABASE_URL, schema, poolSize: 4 }),
    async () => new PostgresStore({ connectionString: DATABASE_URL, schema, poolSize: 4 }),
  );

  it('keeps leases in <table>_leases, created by migration 2 and expiring on the server clock', async () => {
    const store = new PostgresStore({ connectionString: DATABASE_URL, schema, table: `t_${randomBytes(4).toString('hex')}` });
    try {
      expect(await store.acquireLease('k', 'tok', 5000)).toBe(true);
      const { rows } = await admin.query<{ table_name: string }>(
        'SELECT table_name FROM information_schema.tables WHERE table_schema = $1 ORDER BY table_name',
        [schema],
      );
      expect(rows.map((r) => r.table_name).filter((n) => n.endsWith('_leases')).length).toBeGreaterThan(0);
    } finally {
      await store.close();
    }
  });
});
