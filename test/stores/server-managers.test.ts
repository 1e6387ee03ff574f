/**
 * The SessionManager behaviour suite on the shared-server stores: Redis and PostgreSQL, each
 * under its own key prefix or schema, removed afterwards.
 */
import { randomUUID } from 'node:crypto';
import { afterAll } from 'vitest';
import { PostgresStore, RedisStore } from '../../src/index.ts';
import { managerSuite } from '../manager-suite.ts';
import { adminPool, dropSchema, randomSchema } from '../support/postgres.ts';
import {
  DATABASE_URL,
  describeWithService,
  postgresAvailable,
  REDIS_URL,
  redisAvailable,
} from '../support/services.ts';

describeWithService('Redis', redisAvailable, 'manager on Redis', () => {
  const keyPrefix = `ordo-test-${randomUUID()}:`;
  managerSuite('RedisStore', async () => new RedisStore({ url: REDIS_URL, keyPrefix }));
});

describeWithService('PostgreSQL', postgresAvailable, 'manager on PostgreSQL', () => {
  const schema = randomSchema('ordo_manager');
  afterAll(async () => {
    const admin = adminPool();
    await dropSchema(admin, schema);
    await admin.end();
  });
  managerSuite(
    'PostgresStore',
    async () => new PostgresStore({ connectionString: DATABASE_URL, schema, poolSize: 4, connectTimeoutMs: 30_000, queryTimeoutMs: 30_000 }),
  );
});
