/**
 * Key rotation throughput and memory on SQLite: seeds N sessions under key "old", opens with
 * ["new", "old"], runs rotateKeys() while sampling RSS, and prints records/s and peak RSS growth.
 *
 *   npx tsx bench/rotate.ts [count=100000] [batchSize=500]
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Keyring, SessionManager, SqliteStore } from '../src/index.ts';

const count = Number(process.argv[2] ?? 100_000);
const batchSize = Number(process.argv[3] ?? 500);
const dir = mkdtempSync(join(tmpdir(), 'ordo-bench-rotate-'));
const path = join(dir, 'sessions.db');
const oldKey = randomBytes(32);
const oldRing = new Keyring([{ id: 'old', key: oldKey }]);
const newKey = randomBytes(32);
const newRing = new Keyring([{ id: 'new', key: newKey }, { id: 'old', key: oldKey }]);

try {
  const seeding = await SessionManager.open({ keyring: oldRing, store: new SqliteStore({ path }) });
  const seedStart = performance.now();
  for (let i = 0; i < count; i += 100) {
    await Promise.all(
      Array.from({ length: Math.min(100, count - i) }, (_, j) =>
        seeding.setSession(`broker${(i + j) % 4}`, `acct-${i + j}`, { accessToken: `tok-${i + j}-${'x'.repeat(200)}`, refreshToken: 'r'.repeat(64) }),
      ),
    );
  }
  await seeding.close();
  const seedMs = performance.now() - seedStart;

  const openStart = performance.now();
  const sessions = await SessionManager.open({ keyring: newRing, store: new SqliteStore({ path }) });
  const openMs = performance.now() - openStart;
  global.gc?.();
  const rssBefore = process.memoryUsage().rss;
  let peak = rssBefore;
  const sampler = setInterval(() => {
    peak = Math.max(peak, process.memoryUsage().rss);
  }, 20);
  const start = performance.now();
  const result = await sessions.rotateKeys({
    batchSize,
    onProgress: () => {
      peak = Math.max(peak, process.memoryUsage().rss);
    },
  });
  const ms = performance.now() - start;
  clearInterval(sampler);
  const usageStart = performance.now();
  const usage = await sessions.keyUsage();
  const usageMs = performance.now() - usageStart;
  await sessions.close();

  // Dropping "old" now: open scans once (the old canary is present), finds 0, retires it.
  const dropStart = performance.now();
  const dropped = await SessionManager.open({ keyring: new Keyring([{ id: 'new', key: newKey }]), store: new SqliteStore({ path }) });
  const dropMs = performance.now() - dropStart;
  await dropped.close();
  const againStart = performance.now();
  await (await SessionManager.open({ keyring: new Keyring([{ id: 'new', key: newKey }]), store: new SqliteStore({ path }) })).close();
  const againMs = performance.now() - againStart;

  console.log(
    JSON.stringify(
      {
        count,
        batchSize,
        seedMs: Math.round(seedMs),
        openWithNewPrimaryMs: Math.round(openMs),
        rotate: result,
        rotateMs: Math.round(ms),
        recordsPerSecond: Math.round((result.rotated / ms) * 1000),
        peakRssGrowthMiB: +((peak - rssBefore) / 2 ** 20).toFixed(1),
        keyUsage: usage,
        keyUsageMs: Math.round(usageMs),
        openAfterDroppingKeyMs: Math.round(dropMs),
        openAfterKeyRetiredMs: Math.round(againMs),
      },
      null,
      2,
    ),
  );
} finally {
  rmSync(dir, { recursive: true, force: true });
}
