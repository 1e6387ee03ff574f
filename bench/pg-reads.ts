/**
 * Where a PostgreSQL read's time goes at 64 in flight: the manager, the store alone, the store
 * plus the library's open and JSON, the floor (pg.Pool + bare AES-GCM + JSON) and the pool alone,
 * interleaved over rounds, each with throughput and this process's CPU time per call
 * (`process.cpuUsage`), plus open + JSON of the same records in a plain loop.
 *
 *   npx tsx bench/pg-reads.ts [rounds=3]      (DATABASE_URL, default postgres://postgres@127.0.0.1:5432/test)
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { open as openEnvelope } from '../src/crypto/envelope.ts';
import { Keyring, PostgresStore, SessionManager } from '../src/index.ts';
import { deserializeSessionData } from '../src/values.ts';
import { BareCrypto, session } from './lib/payload.ts';
import { median, throughput } from './lib/stats.ts';

const url = process.env['DATABASE_URL'] ?? 'postgres://postgres@127.0.0.1:5432/test';
const rounds = Number(process.argv[2] ?? 3);
const schema = `ordo_bench_reads_${randomBytes(4).toString('hex')}`;
const account = (i: number): string => `XY${String(i % 1000).padStart(6, '0')}`;
const keyring = new Keyring([{ id: 'bench', key: randomBytes(32) }]);
const store = new PostgresStore({ connectionString: url, schema });
const manager = await SessionManager.open({ keyring, store });
const pool = new pg.Pool({ connectionString: url, max: 10 });
const bare = new BareCrypto();
try {
  for (let i = 0; i < 1000; i += 100) {
    await Promise.all(Array.from({ length: 100 }, (_, j) => manager.setSession('fyers', account(i + j), session(i + j), { ttlMs: 8 * 3600_000 })));
  }
  await pool.query(`CREATE TABLE "${schema}".floor (key bytea PRIMARY KEY, value bytea NOT NULL, expires_at bigint, updated_at bigint NOT NULL, version text NOT NULL)`);
  for (let i = 0; i < 1000; i++) {
    await pool.query(`INSERT INTO "${schema}".floor VALUES ($1, $2, $3, $4, 'v')`, [Buffer.from(`default/fyers/${account(i)}`), bare.sealJson(session(i)), Date.now() + 3600_000, Date.now()]);
  }
  const floorGet = `SELECT value, expires_at FROM "${schema}".floor WHERE key = $1`;
  const identity = (i: number, expiresAt: number | null) => ({ kind: 'session' as const, namespace: 'default', broker: 'fyers', key: account(i), expiresAt });
  const variants: Record<string, (i: number) => Promise<unknown>> = {
    'manager.getSession': (i) => manager.getSession('fyers', account(i)),
    'store.get alone': (i) => store.get(`default/fyers/${account(i)}`),
    'store.get + open + JSON': async (i) => {
      const record = await store.get(`default/fyers/${account(i)}`);
      return record && deserializeSessionData(openEnvelope(keyring, record.value, identity(i, record.expiresAt)));
    },
    'floor (pool.query + bare AES-GCM + JSON)': async (i) => {
      const { rows } = await pool.query<{ value: Buffer }>({ name: 'floor-get', text: floorGet, values: [Buffer.from(`default/fyers/${account(i)}`)] });
      return rows[0] && bare.openJson(rows[0].value);
    },
    'pool.query alone': (i) => pool.query({ name: 'floor-get', text: floorGet, values: [Buffer.from(`default/fyers/${account(i)}`)] }),
  };
  const records = await Promise.all(Array.from({ length: 1000 }, (_, i) => store.get(`default/fyers/${account(i)}`)));
  const loop = (): number => {
    const start = process.cpuUsage();
    for (let n = 0; n < 20_000; n++) {
      const record = records[n % 1000];
      if (record) deserializeSessionData(openEnvelope(keyring, record.value, identity(n, record.expiresAt)));
    }
    const used = process.cpuUsage(start);
    return (used.user + used.system) / 20_000;
  };
  loop();
  const samples = new Map(Object.keys(variants).map((name) => [name, { ops: [] as number[], cpu: [] as number[] }]));
  for (let round = 0; round < rounds; round++) {
    for (const [name, op] of Object.entries(variants)) {
      const calls = 8000;
      const start = process.cpuUsage();
      const ops = await throughput(op, calls, 64, round * calls);
      const used = process.cpuUsage(start);
      samples.get(name)?.ops.push(ops);
      samples.get(name)?.cpu.push((used.user + used.system) / calls);
    }
  }
  console.log(`64 in flight, median of ${rounds} rounds: calls/s, and this process's CPU µs per call`);
  for (const [name, { ops, cpu }] of samples) console.log(`${name.padEnd(42)} ${Math.round(median(ops)).toString().padStart(7)}/s  ${median(cpu).toFixed(1).padStart(6)} µs`);
  console.log(`open + JSON of the same records in a plain loop: ${loop().toFixed(1)} µs CPU per record`);
} finally {
  await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
  await pool.end();
  await manager.close();
}
