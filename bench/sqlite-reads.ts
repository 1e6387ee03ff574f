/**
 * Where a SQLite read's cost over the floor goes: ordo-sessions, the floor (better-sqlite3 + bare
 * AES-GCM + JSON) and the floor with the library's own envelope (seal/open of envelope.ts), the
 * same contenders as `npm run bench`, sequential gets interleaved over many rounds.
 * ordo / envelope floor is the manager and store; envelope floor / floor is the envelope's binding.
 *
 *   npx tsx bench/sqlite-reads.ts [rounds=15]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ACCOUNTS, sqliteBackend } from './lib/backends.ts';
import { median, sequentialUs } from './lib/stats.ts';

const rounds = Number(process.argv[2] ?? 15);
const dir = mkdtempSync(join(tmpdir(), 'ordo-bench-reads-'));
const backend = await sqliteBackend(dir);
try {
  const envelope = backend.diagnostics?.['floor with the library envelope'];
  if (envelope?.get === undefined || envelope.set === undefined) throw new Error('bench: the envelope floor is missing');
  const contenders = { ordo: backend.variants.ordo, floor: backend.variants.floor, 'floor with the library envelope': { get: envelope.get, set: envelope.set } };
  for (const { set } of Object.values(contenders)) await sequentialUs(set, ACCOUNTS, 0);
  const samples = new Map(Object.keys(contenders).map((name) => [name, [] as number[]]));
  let offset = 0;
  for (let round = 0; round < rounds; round++) {
    for (const [name, { get }] of Object.entries(contenders)) samples.get(name)?.push(await sequentialUs(get, 10_000, (offset += 10_000)));
  }
  const us = (name: string): number => median(samples.get(name) ?? []);
  for (const name of samples.keys()) console.log(`${name.padEnd(32)} ${us(name).toFixed(2)} µs per get (median of ${rounds} rounds)`);
  console.log(`ordo / envelope floor (manager + store): ${(us('ordo') / us('floor with the library envelope')).toFixed(2)}x`);
  console.log(`envelope floor / floor (the binding): ${(us('floor with the library envelope') / us('floor')).toFixed(2)}x`);
} finally {
  await backend.close();
  rmSync(dir, { recursive: true, force: true });
}
