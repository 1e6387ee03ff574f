/**
 * npm run bench [-- --quick] [-- --no-scale] [-- --max-sessions=N]
 *
 * One run, every figure side by side on this machine: ordo-sessions vs the raw driver (with and
 * without crypto) vs keyv, on SQLite, Redis (REDIS_URL) and PostgreSQL (DATABASE_URL), then the
 * crypto alone, then (full run only) the scale curves. Prints a table, writes
 * bench/results.json and bench/chart.svg, and refreshes the generated table in BENCHMARKS.md.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { cpus, totalmem, platform, release } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { postgresBackend, redisBackend, sqliteBackend, VARIANTS, type Backend } from './lib/backends.ts';
import { compareBackend, compareCrypto, type BackendResult, type CryptoResult, type Plan } from './lib/compare.ts';
import { SESSION_JSON_BYTES } from './lib/payload.ts';
import { runScale, type ScaleResult } from './lib/scale.ts';
import { renderChart } from './chart.ts';
import { evaluateTargets, renderTable, type Results } from './lib/report.ts';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..');
const args = process.argv.slice(2);
const quick = args.includes('--quick');
const scale = !quick && !args.includes('--no-scale');
const maxArg = args.find((arg) => arg.startsWith('--max-sessions='));
const maxSessions = maxArg === undefined ? 1_000_000 : Number(maxArg.split('=')[1]);
const REDIS_URL = process.env['REDIS_URL'] ?? 'redis://127.0.0.1:6379';
const DATABASE_URL = process.env['DATABASE_URL'] ?? 'postgres://postgres@127.0.0.1:5432/test';
const run = randomBytes(4).toString('hex');
const dataDir = join(here, '.data', run);
const log = (line: string): void => console.error(line);

function reachable(url: string, port: number): Promise<boolean> {
  const { hostname, port: given } = new URL(url);
  return new Promise((resolve) => {
    const socket = connect({ host: hostname || '127.0.0.1', port: Number(given || port) });
    const done = (ok: boolean): void => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(1500, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

function version(name: string): string {
  const json = JSON.parse(readFileSync(join(root, 'node_modules', name, 'package.json'), 'utf8')) as { version: string };
  return json.version;
}

const plans: Record<Backend['name'], Plan> = quick
  ? {
      sqlite: { rounds: 3, sequential: 1500, concurrent: 2000, inFlight: 64, concurrency: true },
      redis: { rounds: 3, sequential: 400, concurrent: 1500, inFlight: 64, concurrency: true },
      postgres: { rounds: 3, sequential: 250, concurrent: 1000, inFlight: 64, concurrency: true },
    }
  : {
      sqlite: { rounds: 7, sequential: 5000, concurrent: 6400, inFlight: 64, concurrency: true },
      redis: { rounds: 7, sequential: 2000, concurrent: 5000, inFlight: 64, concurrency: true },
      postgres: { rounds: 7, sequential: 1000, concurrent: 3000, inFlight: 64, concurrency: true },
    };

async function main(): Promise<void> {
  const started = Date.now();
  mkdirSync(dataDir, { recursive: true });
  const backends: Partial<Record<Backend['name'], BackendResult>> = {};
  const skipped: string[] = [];
  try {
    const factories: Array<[Backend['name'], () => Promise<Backend>, boolean]> = [
      ['sqlite', () => sqliteBackend(dataDir), true],
      ['redis', () => redisBackend(REDIS_URL, run), await reachable(REDIS_URL, 6379)],
      ['postgres', () => postgresBackend(DATABASE_URL, run), await reachable(DATABASE_URL, 5432)],
    ];
    for (const [name, open, available] of factories) {
      if (!available) {
        skipped.push(`${name}: not reachable, skipped`);
        log(`${name}: not reachable, skipped`);
        continue;
      }
      log(`${name}: ${plans[name].rounds} rounds`);
      const backend = await open();
      try {
        backends[name] = await compareBackend(backend, plans[name], log);
      } finally {
        await backend.close();
      }
    }
    log('crypto: seal + open');
    const crypto: CryptoResult = compareCrypto(quick ? 5 : 9, quick ? 5000 : 20000);
    let scaleResult: ScaleResult | undefined;
    if (scale) {
      scaleResult = await runScale({
        dir: dataDir,
        maxSessions,
        redisUrl: backends.redis ? REDIS_URL : undefined,
        postgresUrl: backends.postgres ? DATABASE_URL : undefined,
        run,
        log,
      });
    } else {
      log('scale: skipped (--quick or --no-scale)');
    }
    const cpuList = cpus();
    const results: Results = {
      generatedAt: new Date().toISOString(),
      command: `npm run bench${args.length > 0 ? ` -- ${args.join(' ')}` : ''}`,
      durationSeconds: Math.round((Date.now() - started) / 100) / 10,
      machine: {
        cpu: cpuList[0]?.model ?? 'unknown',
        cores: cpuList.length,
        memoryBytes: totalmem(),
        os: `${platform()} ${release()}`,
      },
      versions: {
        node: process.version,
        'ordo-sessions': version('..'),
        'better-sqlite3': version('better-sqlite3'),
        redis: version('redis'),
        pg: version('pg'),
        keyv: version('keyv'),
        '@keyv/sqlite': version('@keyv/sqlite'),
        '@keyv/redis': version('@keyv/redis'),
        '@keyv/postgres': version('@keyv/postgres'),
        sqlite3: version('sqlite3'),
      },
      session: { jsonBytes: SESSION_JSON_BYTES, fields: ['accessToken', 'refreshToken', 'expiresAt', 'accountId', 'broker'] },
      plans: Object.fromEntries(Object.entries(plans).filter(([name]) => name in backends)),
      variants: {
        ordo: 'ordo-sessions: SessionManager.open({ keyring, store }), setSession/getSession',
        floor: 'raw driver, same settings and table shape, + AES-256-GCM (createCipheriv, randomBytes(12)) + JSON',
        plain: 'raw driver, plaintext JSON, no crypto',
        keyv: 'keyv 5 + its adapter, namespace, plaintext',
      },
      backends,
      crypto,
      ...(scaleResult === undefined ? {} : { scale: scaleResult }),
      skipped,
      ratios: {},
      targets: [],
    };
    evaluateTargets(results);
    writeFileSync(join(here, quick ? 'results.quick.json' : 'results.json'), `${JSON.stringify(results, null, 2)}\n`);
    if (results.scale !== undefined) writeFileSync(join(here, 'chart.svg'), renderChart(results));
    const table = renderTable(results);
    console.log(table);
    const docPath = join(root, 'BENCHMARKS.md');
    try {
      const doc = readFileSync(docPath, 'utf8');
      const start = '<!-- bench:table:start -->';
      const end = '<!-- bench:table:end -->';
      const a = doc.indexOf(start);
      const b = doc.indexOf(end);
      if (a >= 0 && b > a && !quick) writeFileSync(docPath, `${doc.slice(0, a + start.length)}\n${table}\n${doc.slice(b)}`);
    } catch {
      // no BENCHMARKS.md: nothing to refresh
    }
    log(`done in ${results.durationSeconds} s; wrote bench/${quick ? 'results.quick.json' : 'results.json'}${results.scale ? ' and bench/chart.svg' : ''}`);
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
  }
}

void VARIANTS;
main().then(
  () => process.exit(0),
  (error: unknown) => {
    console.error(error);
    process.exit(1);
  },
);
