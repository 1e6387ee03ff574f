/**
 * The built CLI against the shared Redis and PostgreSQL services, each run in a key prefix or
 * schema of its own (given in the --store URL: `?prefix=` and `?schema=`), cleaned up after.
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { createClient } from 'redis';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { DATABASE_URL, describeWithService, postgresAvailable, REDIS_URL, redisAvailable } from '../support/services.ts';
import { buildCli, errorCode, newKeys, removeBuild, runCli, tempDir } from './support.ts';

const TOKEN = 'access-token-for-a-shared-store-5e6f';

beforeAll(() => buildCli(), 120_000);
afterAll(() => removeBuild());

/** The commands every store must answer the same way. */
function storeSuite(store: () => string): void {
  const keys = newKeys('k1');
  const dir = tempDir();
  const cli = (args: readonly string[], input?: string) =>
    runCli([...args, '--store', store()], { cwd: dir, env: { ORDO_SESSION_KEYS: keys }, ...(input === undefined ? {} : { input }) });

  it('set, get (masked and revealed), list, delete, clear, purge, doctor', async () => {
    expect((await cli(['set', 'fyers', 'XY1', '--ttl', '8h'], JSON.stringify({ accessToken: TOKEN }))).code).toBe(0);
    expect((await cli(['set', 'fyers', 'XY2', '--ttl', '20m'], '{"n":1}')).code).toBe(0);

    const masked = await cli(['get', 'fyers', 'XY1', '--json']);
    expect(JSON.parse(masked.stdout)).toEqual({ accessToken: '••••••••5e6f' });
    expect(JSON.parse((await cli(['get', 'fyers', 'XY1', '--json', '--reveal'])).stdout)).toEqual({ accessToken: TOKEN });
    expect((await cli(['get', 'fyers', 'NOPE'])).code).toBe(3);

    const listed = JSON.parse((await cli(['list', '--json'])).stdout) as Array<{ broker: string; key: string }>;
    expect(listed.map((r) => `${r.broker}/${r.key}`).sort()).toEqual(['fyers/XY1', 'fyers/XY2']);
    expect((await cli(['list'])).stdout).not.toContain(TOKEN.slice(-4));

    expect((await cli(['set', 'kite', 'AB1', '--ttl', '300ms'], '{}')).code).toBe(0);
    await new Promise((r) => setTimeout(r, 500));
    expect((await cli(['get', 'kite', 'AB1'])).code).toBe(3);
    // Redis expires the record by itself, so purge may find nothing left to do there.
    expect((await cli(['purge'])).stdout).toMatch(/^purged [01] expired sessions?\n$/);

    const doctor = await cli(['doctor', '--json']);
    expect(doctor.code).toBe(0);
    const checks = Object.fromEntries((JSON.parse(doctor.stdout) as Array<{ check: string; status: string }>).map((c) => [c.check, c.status]));
    expect(checks).toMatchObject({ keys: 'ok', store: 'ok', canary: 'ok', 'key usage': 'ok', nonces: 'ok', expiring: 'warn' });
    expect(checks['files']).toBeUndefined();

    expect((await cli(['delete', 'fyers', 'XY2'])).code).toBe(0);
    expect((await cli(['delete', 'fyers', 'XY2'])).code).toBe(3);
    expect((await cli(['clear', 'fyers', '--yes'])).stdout).toBe('deleted 1 session of fyers\n');
    expect(JSON.parse((await cli(['list', '--json'])).stdout)).toEqual([]);
  });

  it('the wrong keys are refused', async () => {
    expect((await cli(['set', 'fyers', 'XY3'], '{}')).code).toBe(0);
    const result = await runCli(['get', 'fyers', 'XY3', '--store', store()], { cwd: dir, env: { ORDO_SESSION_KEYS: newKeys('k1') } });
    expect(result.code).toBe(1);
    expect(errorCode(result.stderr)).toBe('ERR_SESSION_KEYRING_MISMATCH');
  });
}

describeWithService('Redis', redisAvailable, 'CLI on Redis', () => {
  const prefix = `ordo-cli-test-${randomBytes(4).toString('hex')}:`;
  const url = new URL(REDIS_URL);
  url.searchParams.set('prefix', prefix);

  afterAll(async () => {
    const client = await createClient({ url: REDIS_URL }).connect();
    try {
      for await (const batch of client.scanIterator({ MATCH: `${prefix}*`, COUNT: 500 })) {
        const keys = Array.isArray(batch) ? batch : [batch];
        if (keys.length > 0) await client.del(keys);
      }
    } finally {
      await client.close();
    }
  });

  storeSuite(() => url.href);

  it('the prefix keeps it apart from the same namespace under another prefix', async () => {
    const other = new URL(REDIS_URL);
    other.searchParams.set('prefix', `${prefix}other:`);
    const result = await runCli(['list', '--json', '--store', other.href], { env: { ORDO_SESSION_KEYS: newKeys('k1') } });
    expect(result.code).toBe(0);
    expect(JSON.parse(result.stdout)).toEqual([]);
  });
});

describeWithService('PostgreSQL', postgresAvailable, 'CLI on PostgreSQL', () => {
  const schema = `ordo_cli_${randomBytes(4).toString('hex')}`;
  const url = new URL(DATABASE_URL);
  url.searchParams.set('schema', schema);

  afterAll(async () => {
    const admin = new pg.Pool({ connectionString: DATABASE_URL, max: 1 });
    try {
      await admin.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    } finally {
      await admin.end();
    }
  });

  storeSuite(() => url.href);

  it('the schema in ?schema= is where the table lives', async () => {
    const admin = new pg.Pool({ connectionString: DATABASE_URL, max: 1 });
    try {
      const { rows } = await admin.query<{ n: number }>('SELECT count(*)::int AS n FROM information_schema.tables WHERE table_schema = $1', [schema]);
      expect(rows[0]?.n).toBeGreaterThan(0);
    } finally {
      await admin.end();
    }
  });
});
