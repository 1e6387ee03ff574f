/**
 * Crashes and concurrency.
 *
 * 1. A child writing sessions to SQLite is SIGKILLed at a random moment, over and over (200 times
 *    per run, 1000 with SOAK=1), four lanes in parallel, each lane on its own database file that
 *    every crash of that lane reuses. After each kill: `PRAGMA integrity_check` is ok, every write
 *    the child acknowledged (an `ack` line on its stdout after `setSession` resolved) reads back
 *    exactly or was overwritten by a later write of the same key, and every record opens.
 *    A kill only counts when the child was started, told to write, had a write acknowledged, and
 *    died of our SIGKILL. Where `rotateKeys` exists the child also rotates keys while it writes
 *    (the primary alternates between runs, so every run has records to re-seal).
 * 2. Four processes increment shared counters with read-modify-write compare-and-set on SQLite,
 *    Redis and PostgreSQL at once: no update is lost or doubled, no store error surfaces (no
 *    SQLITE_BUSY at this load), and each final value is one that its writer reported writing.
 *
 * The child is `test/support/crash-writer.ts`, bundled once with esbuild so that a start costs a
 * plain `node` start (~0.1 s) instead of a tsx transpile (~1 s).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Keyring, PostgresStore, RedisStore, SessionManager, SqliteStore } from '../../src/index.ts';
import {
  CAS_BROKER,
  CRASH_BROKER,
  crashValue,
  type CasBackend,
  type CasConfig,
  type CasReport,
  type CrashConfig,
} from '../support/crash-writer.ts';
import { adminPool, dropSchema, randomSchema } from '../support/postgres.ts';
import { DATABASE_URL, REDIS_URL, describeWithService, postgresAvailable, redisAvailable } from '../support/services.ts';

const SOAK = process.env['SOAK'] === '1';
const LANES = 4;
const RUNS_PER_LANE = SOAK ? 250 : 50;
const ROOT = join(import.meta.dirname, '..', '..');
const dir = mkdtempSync(join(tmpdir(), 'ordo-crash-'));
const KEY_1 = Keyring.generateKey('crash1');
const KEY_2 = Keyring.generateKey('crash2');
/** Both keys, primary alternating by run: each crash child re-seals what the previous one wrote. */
const keysForRun = (run: number): string => (run % 2 === 0 ? `${KEY_2},${KEY_1}` : `${KEY_1},${KEY_2}`);
const KEYS = keysForRun(1);
const keyring = Keyring.parse(KEYS);
let bundle: string;
let bundleDir: string | undefined;
const children = new Set<ChildProcess>();

beforeAll(async () => {
  // Inside node_modules so the bundle's bare imports (better-sqlite3, pg, redis) resolve.
  const out = join(ROOT, 'node_modules', '.cache', 'ordo-reliability');
  mkdirSync(out, { recursive: true });
  bundleDir = join(out, `crash-writer-${process.pid}-${randomBytes(4).toString('hex')}`);
  const { build } = await import('esbuild');
  await build({
    entryPoints: [join(ROOT, 'test', 'support', 'crash-writer.ts')],
    bundle: true,
    splitting: true, // the Redis and PostgreSQL stores become chunks that a crash child never loads
    platform: 'node',
    format: 'esm',
    target: 'node20',
    packages: 'external',
    outdir: bundleDir,
    outExtension: { '.js': '.mjs' },
    logLevel: 'silent',
  });
  bundle = join(bundleDir, 'crash-writer.mjs');
});

afterAll(() => {
  for (const child of children) child.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
  if (bundleDir) rmSync(bundleDir, { recursive: true, force: true });
});

/** A started child with its output so far. */
interface Child {
  readonly process: ChildProcess;
  readonly ready: Promise<string>;
  /** Resolves at the first `ack` line. */
  readonly writing: Promise<void>;
  readonly exited: Promise<void>;
  stdout: string;
  stderr: string;
}

function start(config: CrashConfig | CasConfig, keys = KEYS): Child {
  const child = spawn(process.execPath, [bundle, JSON.stringify(config)], {
    env: { ...process.env, ORDO_SESSION_KEYS: keys },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  children.add(child);
  let markReady: (line: string) => void = () => {};
  let markWriting: () => void = () => {};
  const handle: Child = {
    process: child,
    stdout: '',
    stderr: '',
    ready: new Promise<string>((resolve, reject) => {
      markReady = resolve;
      child.once('exit', () => reject(new Error(`child exited before it was ready: ${handle.stderr}`)));
    }),
    writing: new Promise<void>((resolve) => {
      markWriting = resolve;
      child.once('exit', () => resolve());
    }),
    exited: new Promise<void>((resolve) => child.once('exit', () => resolve())),
  };
  handle.ready.catch(() => undefined);
  child.stdout.on('data', (chunk: Buffer) => {
    handle.stdout += chunk.toString();
    const newline = handle.stdout.indexOf('\n');
    if (newline >= 0) markReady(handle.stdout.slice(0, newline));
    if (handle.stdout.includes('\nack ')) markWriting();
  });
  child.stderr.on('data', (chunk: Buffer) => (handle.stderr += chunk.toString()));
  void handle.exited.then(() => children.delete(child));
  return handle;
}

/** The `ack` lines that arrived whole: a line cut by the kill is not an acknowledgement. */
function acks(stdout: string): Array<{ key: string; run: number; seq: number }> {
  const complete = stdout.slice(0, stdout.lastIndexOf('\n') + 1);
  return complete
    .split('\n')
    .filter((line) => line.startsWith('ack '))
    .map((line) => {
      const [, key, run, seq] = line.split(' ');
      return { key: key as string, run: Number(run), seq: Number(seq) };
    });
}

const later = (a: { run: number; seq: number }, b: { run: number; seq: number }): boolean =>
  a.run > b.run || (a.run === b.run && a.seq >= b.seq);

interface LaneResult {
  runs: number;
  runsWithAcks: number;
  acksChecked: number;
  rotates: boolean;
  rotations: number;
  resealed: number;
}

/** Checks the database after a kill against everything acknowledged so far. */
async function verify(path: string, expected: Map<string, { run: number; seq: number }>, run: number): Promise<void> {
  const db = new Database(path);
  try {
    expect(db.pragma('integrity_check', { simple: true })).toBe('ok');
  } finally {
    db.close();
  }
  const sessions = await SessionManager.open({ keyring, store: new SqliteStore({ path }) });
  try {
    for (const [key, acked] of expected) {
      const value = (await sessions.getSession(CRASH_BROKER, key)) as { run: number; seq: number } | undefined;
      expect(value, `acknowledged ${key} (run ${acked.run}, seq ${acked.seq}) is missing`).toBeDefined();
      const found = value as { run: number; seq: number };
      expect(later(found, acked), `${key} went back from ${JSON.stringify(acked)} to ${found.run}/${found.seq}`).toBe(true);
      expect(found.run).toBeLessThanOrEqual(run);
      expect(found).toEqual(crashValue(key, found.run, found.seq));
    }
    for await (const info of sessions.listSessions(CRASH_BROKER)) {
      const value = (await sessions.getSession(CRASH_BROKER, info.key)) as { run: number; seq: number };
      expect(value).toEqual(crashValue(info.key, value.run, value.seq));
    }
  } finally {
    await sessions.close();
  }
}

async function lane(index: number, runs: number): Promise<LaneResult> {
  const path = join(dir, `lane-${index}.db`);
  const config: CrashConfig = { mode: 'crash', path, lane: index };
  const expected = new Map<string, { run: number; seq: number }>();
  const result: LaneResult = { runs: 0, runsWithAcks: 0, acksChecked: 0, rotates: false, rotations: 0, resealed: 0 };
  let next = start(config, keysForRun(1));
  for (let run = 1; run <= runs; run++) {
    const child = next;
    result.rotates ||= (await child.ready).endsWith(' rotate');
    child.process.stdin?.write(`go ${run}\n`);
    // Random 20-200 ms of writing, counted from the first acknowledged write, so that every kill
    // lands while writes are in flight (on a loaded machine the first write can take a while).
    await child.writing;
    await sleep(20 + Math.floor(Math.random() * 181));
    child.process.kill('SIGKILL');
    await child.exited;
    // Warm the next child while this crash is checked (it waits for "go" before writing).
    if (run < runs) next = start(config, keysForRun(run + 1));
    expect(child.process.signalCode, `run ${run} ended by itself: ${child.stderr}`).toBe('SIGKILL');
    expect(child.stderr).toBe('');
    const acked = acks(child.stdout);
    for (const ack of acked) {
      const previous = expected.get(ack.key);
      if (previous === undefined || later(ack, previous)) expected.set(ack.key, { run: ack.run, seq: ack.seq });
    }
    await verify(path, expected, run);
    result.runs++;
    if (acked.length > 0) result.runsWithAcks++;
    result.acksChecked += acked.length;
    for (const line of child.stdout.slice(0, child.stdout.lastIndexOf('\n')).split('\n')) {
      if (!line.startsWith('rotated ')) continue;
      result.rotations++;
      result.resealed += Number(line.slice(8));
    }
  }
  return result;
}

describe('crashes', () => {
  it(`keeps every acknowledged write through ${LANES * RUNS_PER_LANE} SIGKILLs`, async () => {
    const started = performance.now();
    const results = await Promise.all(Array.from({ length: LANES }, (_, i) => lane(i, RUNS_PER_LANE)));
    const runs = results.reduce((sum, r) => sum + r.runs, 0);
    const withAcks = results.reduce((sum, r) => sum + r.runsWithAcks, 0);
    const checked = results.reduce((sum, r) => sum + r.acksChecked, 0);
    const rotations = results.reduce((sum, r) => sum + r.rotations, 0);
    const resealed = results.reduce((sum, r) => sum + r.resealed, 0);
    console.log(
      `crash runs: ${runs}, acknowledged writes checked: ${checked} (runs killed mid-write with acks: ${withAcks}; ` +
        `key rotation: ${results.some((r) => r.rotates) ? `${rotations} passes completed, ${resealed} records re-sealed` : 'not available'}; ` +
        `${Math.round(performance.now() - started)} ms)`,
    );
    expect(runs).toBe(LANES * RUNS_PER_LANE);
    // Honest count: every kill landed while acknowledged writes were flowing.
    expect(withAcks).toBe(runs);
  }, 600_000);
});

describeWithService('Redis and PostgreSQL', redisAvailable && postgresAvailable, 'concurrent compare-and-set', () => {
  const PROCESSES = 4;
  const COUNTERS = 4;
  const INCREMENTS = SOAK ? 1000 : 150;
  const namespace = 'cas';
  const schema = randomSchema('ordo_cas');
  const keyPrefix = `ordo-test-${randomUUID()}:`;
  const backends: CasBackend[] = [
    { kind: 'sqlite', path: join(dir, 'cas.db') },
    { kind: 'redis', url: REDIS_URL, keyPrefix },
    { kind: 'postgres', url: DATABASE_URL, schema },
  ];
  const admin = adminPool();

  afterAll(async () => {
    const redis = new RedisStore({ url: REDIS_URL, keyPrefix });
    await redis.deleteByPrefix('');
    await redis.close();
    await dropSchema(admin, schema);
    await admin.end();
  });

  it(`loses no update: ${PROCESSES} processes x ${INCREMENTS} increments on ${COUNTERS} counters, per store`, async () => {
    const started = performance.now();
    // Migrate once up front so the four processes start on an existing schema.
    const pg = new PostgresStore({ connectionString: DATABASE_URL, schema });
    await pg.open();
    await pg.close();
    const writers = Array.from({ length: PROCESSES }, (_, i) =>
      start({ mode: 'cas', writer: `p${i}`, backends, counters: COUNTERS, increments: INCREMENTS, namespace }),
    );
    await Promise.all(writers.map((w) => w.exited));
    const reports = writers.map((w, i) => {
      expect(w.process.exitCode, `writer ${i}: ${w.stderr}`).toBe(0);
      return JSON.parse(w.stdout.trim()) as CasReport[];
    });
    const stores = {
      sqlite: () => new SqliteStore({ path: join(dir, 'cas.db') }),
      redis: () => new RedisStore({ url: REDIS_URL, keyPrefix }),
      postgres: () => new PostgresStore({ connectionString: DATABASE_URL, schema }),
    };
    let conflicts = 0;
    for (const backend of backends) {
      const mine = reports.map((r) => r.find((report) => report.kind === backend.kind) as CasReport);
      for (const report of mine) expect(report.errors, `${backend.kind} errors`).toEqual([]);
      conflicts += mine.reduce((sum, r) => sum + r.conflicts, 0);
      const sessions = await SessionManager.open({ keyring, store: stores[backend.kind](), namespace });
      let total = 0;
      for (let c = 0; c < COUNTERS; c++) {
        const key = `c${c}`;
        const written = mine.flatMap((r) => r.wrote[key] ?? []).sort((a, b) => a - b);
        // Every count from 1 to the total was written exactly once: none lost, none doubled.
        expect(written).toEqual(Array.from({ length: written.length }, (_, i) => i + 1));
        const final = (await sessions.getSession(CAS_BROKER, key)) as { n: number; writer: string } | undefined;
        if (written.length === 0) {
          expect(final).toBeUndefined();
          continue;
        }
        expect(final?.n).toBe(written.length);
        const author = mine[Number(final?.writer.slice(1))];
        expect(author?.wrote[key]).toContain(final?.n);
        total += written.length;
      }
      expect(total).toBe(PROCESSES * INCREMENTS);
      await sessions.close();
    }
    console.log(
      `compare-and-set: ${PROCESSES} processes x ${INCREMENTS} increments x ${backends.length} stores, ${conflicts} CAS retries, ` +
        `0 store errors (${Math.round(performance.now() - started)} ms)`,
    );
  }, 300_000);
});
