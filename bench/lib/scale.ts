/**
 * The scale curves: get latency against the number of stored sessions, listSessions and
 * rotateKeys over the largest set, and memory per idle manager / open store.
 *
 * Filling is direct: real envelopes from the library's `seal` (bound to each row's identity,
 * so every one opens), written in big batches by the raw driver into the store's own table
 * (SQLite, PostgreSQL) or through the store with many writes in flight (Redis), never one
 * manager call at a time.
 */
import Database from 'better-sqlite3';
import { execFileSync } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { runInNewContext } from 'node:vm';
import { setFlagsFromString } from 'node:v8';
import pg from 'pg';
import { seal } from '../../src/crypto/envelope.ts';
import { Keyring, MemoryStore, PostgresStore, RedisStore, SessionManager, SqliteStore, type SessionStore } from '../../src/index.ts';
import { session } from './payload.ts';
import { latenciesUs, percentile } from './stats.ts';

export interface CurvePoint {
  readonly sessions: number;
  readonly p50Us: number;
  readonly p99Us: number;
  readonly samples: number;
}

export interface ScaleResult {
  readonly sizes: number[];
  readonly getLatency: Record<string, CurvePoint[]>;
  readonly fillSeconds: Record<string, number>;
  readonly listSessions?: { sessions: number; seconds: number; peakRssGrowthMiB: number; retainedHeapMiB: number };
  readonly rotateKeys?:
    | { available: true; records: number; seconds: number; recordsPerSecond: number; peakRssGrowthMiB: number; retainedHeapMiB: number; returned: unknown }
    | { available: false; reason: string };
  readonly memory: Array<{ what: string; count: number; heapBytesEach: number; rssBytesEach: number }>;
  readonly notes: string[];
}

export interface ScaleOptions {
  readonly dir: string;
  readonly maxSessions: number;
  readonly redisUrl: string | undefined;
  readonly postgresUrl: string | undefined;
  readonly run: string;
  readonly log: (line: string) => void;
}

/** Redis and PostgreSQL are shared services here: their curves stop at this size. */
const SHARED_SERVICE_MAX = 100_000;
const EXPIRES_IN_MS = 30 * 24 * 3600_000;
const SAMPLES = 4000;
/** The pause between filling a shared service and measuring its gets. */
const SETTLE_MS = 2000;

const account = (i: number): string => `A${i.toString().padStart(7, '0')}`;

function gcFunction(): () => void {
  if (typeof globalThis.gc === 'function') return globalThis.gc;
  setFlagsFromString('--expose-gc');
  return runInNewContext('gc') as () => void;
}

/** Sealed rows [from, to): storage key, envelope, expiry, in key order. */
function* sealedRows(keyring: Keyring, from: number, to: number, expiresAt: number): Generator<{ key: string; value: Buffer }> {
  for (let i = from; i < to; i++) {
    const key = account(i);
    const plaintext = Buffer.from(JSON.stringify(session(i)), 'utf8');
    const value = seal(keyring, plaintext, { kind: 'session', namespace: 'default', broker: 'fyers', key, expiresAt });
    yield { key: `default/fyers/${key}`, value };
  }
}

async function measureGets(manager: SessionManager, size: number): Promise<CurvePoint> {
  const pick = (i: number): string => account((Math.imul(i + 1, 2654435761) >>> 0) % size);
  const get = async (i: number): Promise<void> => {
    if ((await manager.getSession('fyers', pick(i))) === undefined) throw new Error(`bench: missing session at size ${size}`);
  };
  await latenciesUs(get, 1000, 7_000_000); // warm-up
  const samples = await latenciesUs(get, SAMPLES);
  return { sessions: size, p50Us: percentile(samples, 50), p99Us: percentile(samples, 99), samples: SAMPLES };
}

export async function runScale(options: ScaleOptions): Promise<ScaleResult> {
  const { log } = options;
  const sizes = [1_000, 100_000, 1_000_000].filter((size) => size <= options.maxSessions);
  const getLatency: Record<string, CurvePoint[]> = {};
  const fillSeconds: Record<string, number> = {};
  const notes: string[] = [];
  const rawKey = randomBytes(32);
  const keyring = new Keyring([{ id: 'scale1', key: rawKey }]);
  const expiresAt = Date.now() + EXPIRES_IN_MS;

  // SQLite: one file grown from 1k to 1M; the curve is measured at each size on the way.
  const path = join(options.dir, 'scale.db');
  const manager = await SessionManager.open({ keyring, store: new SqliteStore({ path }) });
  const db = new Database(path);
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = NORMAL');
  const insert = db.prepare('INSERT INTO ordo_sessions (key, value, expires_at, updated_at, version) VALUES (?, ?, ?, ?, ?)');
  const insertBatch = db.transaction((rows: Array<{ key: string; value: Buffer }>, now: number) => {
    for (const row of rows) insert.run(row.key, row.value, expiresAt, now, randomUUID());
  });
  let filled = 0;
  let fillMs = 0;
  getLatency['sqlite'] = [];
  for (const size of sizes) {
    const start = performance.now();
    let batch: Array<{ key: string; value: Buffer }> = [];
    for (const row of sealedRows(keyring, filled, size, expiresAt)) {
      batch.push(row);
      if (batch.length === 10_000) {
        insertBatch(batch, Date.now());
        batch = [];
      }
    }
    if (batch.length > 0) insertBatch(batch, Date.now());
    fillMs += performance.now() - start;
    filled = size;
    db.pragma('wal_checkpoint(TRUNCATE)');
    const point = await measureGets(manager, size);
    getLatency['sqlite'].push(point);
    log(`  scale sqlite ${size}: get p50 ${point.p50Us.toFixed(1)} µs, p99 ${point.p99Us.toFixed(1)} µs`);
  }
  fillSeconds['sqlite'] = fillMs / 1000;
  db.close();

  // listSessions, then rotateKeys, over every session of the one broker: each in a fresh process
  // (bench/lib/bulk.ts), so that its peak RSS growth is its own.
  await manager.close();
  const list = bulk('list', path, keyring, rawKey, undefined);
  const listSessions: ScaleResult['listSessions'] = {
    sessions: Number(list['sessions']),
    seconds: Number(list['seconds']),
    peakRssGrowthMiB: Number(list['peakRssGrowthMiB']),
    retainedHeapMiB: Number(list['retainedHeapMiB']),
  };
  log(`  listSessions over ${listSessions.sessions}: ${listSessions.seconds.toFixed(2)} s, peak RSS +${listSessions.peakRssGrowthMiB.toFixed(1)} MiB`);
  let rotateKeys: ScaleResult['rotateKeys'];
  const rotated = bulk('rotate', path, keyring, rawKey, randomBytes(32));
  if (rotated['available'] !== true) {
    rotateKeys = { available: false, reason: 'SessionManager.prototype.rotateKeys does not exist in this build' };
    log('  rotateKeys: not available in this build, skipped');
  } else {
    const records = typeof rotated['rotated'] === 'number' ? rotated['rotated'] : filled;
    const seconds = Number(rotated['seconds']);
    rotateKeys = {
      available: true,
      records,
      seconds,
      recordsPerSecond: records / seconds,
      peakRssGrowthMiB: Number(rotated['peakRssGrowthMiB']),
      retainedHeapMiB: Number(rotated['retainedHeapMiB']),
      returned: rotated,
    };
    log(`  rotateKeys over ${records}: ${seconds.toFixed(2)} s, ${Math.round(records / seconds)}/s, peak RSS +${rotateKeys.peakRssGrowthMiB.toFixed(1)} MiB`);
  }

  if (options.redisUrl !== undefined) {
    const prefix = `ordo-bench-${options.run}:scale:`;
    const store = new RedisStore({ url: options.redisUrl, keyPrefix: prefix });
    const curve = await sharedCurve('redis', store, keyring, sizes, expiresAt, log, async (rows) => {
      await Promise.all(rows.map((row) => store.set(row.key, row.value, { expiresAt, updatedAt: Date.now() })));
    });
    getLatency['redis'] = curve.points;
    fillSeconds['redis'] = curve.fillSeconds;
    const cleaner = new RedisStore({ url: options.redisUrl, keyPrefix: prefix }); // every record under the bench prefix
    await cleaner.deleteByPrefix('');
    await cleaner.close();
  }

  if (options.postgresUrl !== undefined) {
    const schema = `ordo_bench_${options.run}_scale`;
    const store = new PostgresStore({ connectionString: options.postgresUrl, schema });
    await store.open();
    const pool = new pg.Pool({ connectionString: options.postgresUrl, max: 2 });
    try {
      const curve = await sharedCurve('postgres', store, keyring, sizes, expiresAt, log, async (rows) => {
        const now = Date.now();
        await pool.query(
          `INSERT INTO "${schema}".ordo_sessions (key, value, expires_at, updated_at, version)
           SELECT k, v, $3, $4, gen_random_uuid()::text FROM unnest($1::bytea[], $2::bytea[]) AS t(k, v)`,
          [rows.map((row) => Buffer.from(row.key, 'utf8')), rows.map((row) => row.value), expiresAt, now],
        );
      });
      getLatency['postgres'] = curve.points;
      fillSeconds['postgres'] = curve.fillSeconds;
    } finally {
      await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      await pool.end();
    }
  }
  if (options.maxSessions > SHARED_SERVICE_MAX && (options.redisUrl || options.postgresUrl)) {
    notes.push(`Redis and PostgreSQL are shared services on this machine: their curves stop at ${SHARED_SERVICE_MAX.toLocaleString('en-US')} sessions.`);
  }

  return { sizes, getLatency, fillSeconds, listSessions, rotateKeys, memory: await measureMemory(options.dir), notes };
}

/** The get curve of a shared service, filled by `fill` in batches; the manager is opened on `store` (which it closes). */
async function sharedCurve(
  name: string,
  store: SessionStore,
  keyring: Keyring,
  sizes: number[],
  expiresAt: number,
  log: (line: string) => void,
  fill: (rows: Array<{ key: string; value: Buffer }>) => Promise<void>,
): Promise<{ points: CurvePoint[]; fillSeconds: number }> {
  const manager = await SessionManager.open({ keyring, store });
  const points: CurvePoint[] = [];
  let filled = 0;
  let fillMs = 0;
  try {
    for (const size of sizes.filter((s) => s <= SHARED_SERVICE_MAX)) {
      const start = performance.now();
      let batch: Array<{ key: string; value: Buffer }> = [];
      for (const row of sealedRows(keyring, filled, size, expiresAt)) {
        batch.push(row);
        if (batch.length === 2000) {
          await fill(batch);
          batch = [];
        }
      }
      if (batch.length > 0) await fill(batch);
      fillMs += performance.now() - start;
      filled = size;
      // Steady state, not the tail of the bulk load: the server may still be working through it
      // (Redis rehashes its key table incrementally as it grows; PostgreSQL may be checkpointing).
      await sleep(SETTLE_MS);
      const point = await measureGets(manager, size);
      points.push(point);
      log(`  scale ${name} ${size}: get p50 ${point.p50Us.toFixed(1)} µs, p99 ${point.p99Us.toFixed(1)} µs`);
    }
  } finally {
    await manager.close();
  }
  return { points, fillSeconds: fillMs / 1000 };
}

/** Heap and RSS per instance: open N, measure the delta after a full GC, divide. */
async function measureMemory(dir: string): Promise<ScaleResult['memory']> {
  const gc = gcFunction();
  const keyring = new Keyring([{ id: 'mem', key: randomBytes(32) }]);
  const measure = async <T>(count: number, open: (i: number) => Promise<T>): Promise<{ heap: number; rss: number; items: T[] }> => {
    gc();
    gc();
    const heap0 = process.memoryUsage().heapUsed;
    const rss0 = process.memoryUsage.rss();
    const items: T[] = [];
    for (let i = 0; i < count; i++) items.push(await open(i));
    gc();
    gc();
    return { heap: (process.memoryUsage().heapUsed - heap0) / count, rss: (process.memoryUsage.rss() - rss0) / count, items };
  };
  const rows: ScaleResult['memory'] = [];
  // Managers alone: all over one MemoryStore and one namespace, so they share its one canary.
  const shared = new MemoryStore();
  await (await SessionManager.open({ keyring, store: shared })).store.list('', { limit: 1 });
  const managers = await measure(1000, () => SessionManager.open({ keyring, store: shared }));
  rows.push({ what: 'idle SessionManager (shared MemoryStore)', count: 1000, heapBytesEach: managers.heap, rssBytesEach: managers.rss });
  const stores = await measure(100, async (i) => new SqliteStore({ path: join(dir, `mem-store-${i}.db`) }));
  rows.push({ what: 'open SqliteStore (own file)', count: 100, heapBytesEach: stores.heap, rssBytesEach: stores.rss });
  for (const store of stores.items) await store.close();
  const both = await measure(100, (i) => SessionManager.open({ keyring, store: new SqliteStore({ path: join(dir, `mem-both-${i}.db`) }) }));
  rows.push({ what: 'idle SessionManager + its SqliteStore', count: 100, heapBytesEach: both.heap, rssBytesEach: both.rss });
  for (const manager of both.items) await manager.close();
  await shared.close();
  return rows;
}

/** Runs bench/lib/bulk.ts in a fresh process (same tsx loader); `next` adds a new primary key in front. */
function bulk(operation: 'list' | 'rotate', path: string, keyring: Keyring, key: Buffer, next: Buffer | undefined): Record<string, unknown> {
  const old = `${keyring.primaryKeyId}:${key.toString('base64')}`;
  const keys = next === undefined ? old : `scale2:${next.toString('base64')},${old}`;
  const script = fileURLToPath(new URL('./bulk.ts', import.meta.url));
  const output = execFileSync(process.execPath, [...process.execArgv, script, operation, path], {
    env: { ...process.env, ORDO_BENCH_KEYS: keys },
    encoding: 'utf8',
    maxBuffer: 1 << 20,
  });
  return JSON.parse(output.trim().split('\n').at(-1) ?? '{}') as Record<string, unknown>;
}
