/**
 * Rotation at scale with a concurrent writer: 100k records on SQLite, 5k on Redis, 2k on PostgreSQL
 * (PostgresStore sends a NOTIFY with every write, which serialises commits: ~170 records/s here, so
 * 100k would take ten minutes of CI; the code path is the same).
 * No write is lost, every record ends under the new key, memory stays flat. Also measures the
 * cost of `open` on 100k records: with a new primary (no scan) and with a dropped key that still
 * protects records (one header-only scan, then refusal). Prints the figures.
 */
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { KeyInUseError, Keyring, SessionManager } from '../src/index.ts';
import { BACKENDS, type BackendKind } from './support/key-stores.ts';
import { describeWithService } from './support/services.ts';

const COUNTS: Record<BackendKind['name'], number> = { memory: 0, sqlite: 100_000, redis: 5_000, postgres: 2_000 };

for (const backend of BACKENDS.filter((b) => COUNTS[b.name] > 0)) {
  const count = COUNTS[backend.name];
  const suite = (): void => {
    it(`rotates ${count} records with a concurrent writer: no lost write, all under the new key`, { timeout: 240_000 }, async () => {
      const backing = await backend.create();
      const k1 = randomBytes(32);
      const k2 = randomBytes(32);
      const ring21 = new Keyring([{ id: 'k2', key: k2 }, { id: 'k1', key: k1 }]);
      try {
        const seeding = await SessionManager.open({ keyring: new Keyring([{ id: 'k1', key: k1 }]), store: backing.open(), namespace: 'scale' });
        for (let i = 0; i < count; i += 200) {
          await Promise.all(Array.from({ length: Math.min(200, count - i) }, (_, j) => seeding.setSession(`b${(i + j) % 4}`, `acct-${i + j}`, { n: i + j, token: 'x'.repeat(150) })));
        }
        await seeding.close();

        let start = performance.now();
        const rotator = await SessionManager.open({ keyring: ring21, store: backing.open(), namespace: 'scale' });
        const openNewPrimaryMs = performance.now() - start;
        const writer = await SessionManager.open({ keyring: ring21, store: backing.open(), namespace: 'scale' });
        let writing = true;
        const latest = new Map<number, number>();
        const writes = (async () => {
          for (let round = 1; writing; round++) {
            const i = (round * 104_729) % count;
            await writer.setSession(`b${i % 4}`, `acct-${i}`, { n: i, round });
            latest.set(i, round);
            await new Promise((resolve) => setImmediate(resolve)); // a real writer does I/O between writes
          }
        })();
        global.gc?.();
        const rssBefore = process.memoryUsage().rss;
        let peak = rssBefore;
        start = performance.now();
        const result = await rotator.rotateKeys({ batchSize: 500, onProgress: () => (peak = Math.max(peak, process.memoryUsage().rss)) });
        const rotateMs = performance.now() - start;
        writing = false;
        await writes;

        expect(result.unreadable).toBe(0);
        expect(result.scanned).toBeGreaterThanOrEqual(count);
        expect(result.rotated + result.skipped).toBe(result.scanned);
        expect(latest.size).toBeGreaterThan(0);
        for (const [i, round] of latest) expect(await rotator.getSession(`b${i % 4}`, `acct-${i}`)).toEqual({ n: i, round });
        const usage = await rotator.keyUsage();
        expect(Object.keys(usage)).toEqual(['k2']);
        expect(usage['k2']).toBe(count + 1); // + the stats record
        const growthMiB = (peak - rssBefore) / 2 ** 20;
        expect(growthMiB).toBeLessThan(150); // generous: a page of 500 records is well under 1 MiB

        // open on a store of `count` records when a dropped key still protects some.
        await writer.setSession('b0', 'acct-0', { n: 0 }); // under k2
        await rotator.close();
        await writer.close();
        const stale = await SessionManager.open({ keyring: new Keyring([{ id: 'k1', key: k1 }]), store: backing.open(), namespace: 'scale' });
        await stale.setSession('b1', 'acct-1', { n: 1, old: true }); // one record back under k1
        await stale.close();
        start = performance.now();
        const refused = await SessionManager.open({ keyring: new Keyring([{ id: 'k2', key: k2 }]), store: backing.open(), namespace: 'scale' }).catch((e: unknown) => e);
        const openWithScanMs = performance.now() - start;
        expect(refused).toBeInstanceOf(KeyInUseError);
        expect((refused as KeyInUseError).records).toBeGreaterThanOrEqual(1);

        console.log(
          `[rotation ${backend.name}] ${count} records: ${Math.round((result.rotated / rotateMs) * 1000)} rotated/s ` +
            `(${result.rotated} rotated, ${result.skipped} skipped, ${latest.size} concurrent writes kept) in ${Math.round(rotateMs)} ms; ` +
            `peak RSS growth ${growthMiB.toFixed(1)} MiB; open with new primary ${Math.round(openNewPrimaryMs)} ms; ` +
            `open with a dropped key still in use (scan) ${Math.round(openWithScanMs)} ms`,
        );
      } finally {
        await backing.cleanup();
      }
    });
  };
  if (backend.service === undefined) describe(`rotation at scale on ${backend.name}`, suite);
  else describeWithService(backend.service, backend.available, `rotation at scale on ${backend.name}`, suite);
}
