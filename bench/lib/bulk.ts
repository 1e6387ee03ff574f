/**
 * One bulk operation over an existing scale database, in a fresh process so its peak RSS growth
 * is not hidden by memory an earlier phase already made the process keep:
 *   tsx bench/lib/bulk.ts list|rotate <db path>   (keys in ORDO_BENCH_KEYS, Keyring.parse format)
 * Prints one line of JSON.
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { Keyring, SessionManager, SqliteStore } from '../../src/index.ts';
import { MiB, RssPeak } from './stats.ts';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;
const [operation, path] = process.argv.slice(2);
const keyring = Keyring.parse(process.env['ORDO_BENCH_KEYS'] ?? '');
const manager = await SessionManager.open({ keyring, store: new SqliteStore({ path: path ?? '' }) });
gc();
const heap0 = process.memoryUsage().heapUsed;
const peak = new RssPeak();
const start = performance.now();
let output: Record<string, unknown>;
if (operation === 'list') {
  let count = 0;
  for await (const info of manager.listSessions('fyers')) {
    if (info.keyId === null) throw new Error('bench: unreadable envelope header');
    if (++count % 5000 === 0) peak.sample(); // an in-process listing never yields to timers
  }
  output = { sessions: count };
} else {
  const rotate = (manager as unknown as { rotateKeys?: (options?: object) => Promise<unknown> }).rotateKeys;
  if (typeof rotate !== 'function') {
    output = { available: false };
  } else {
    const returned = (await rotate.call(manager, { batchSize: 1000, onProgress: () => peak.sample() })) as Record<string, unknown>;
    output = { available: true, ...returned };
  }
}
const seconds = (performance.now() - start) / 1000;
const peakRssGrowthMiB = peak.stop() / MiB;
gc();
const retainedHeapMiB = (process.memoryUsage().heapUsed - heap0) / MiB;
await manager.close();
console.log(JSON.stringify({ ...output, seconds, peakRssGrowthMiB, retainedHeapMiB }));
