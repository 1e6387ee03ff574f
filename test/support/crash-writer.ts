/**
 * The child process of `test/reliability/crash.test.ts`. The test bundles this file once (with
 * esbuild, dependencies left external) so that each start costs a plain `node` start, not a tsx
 * transpile: that is what makes hundreds of SIGKILLs per CI run affordable.
 *
 * Configuration is one JSON object in argv[2]; keys come from ORDO_SESSION_KEYS.
 *
 * `crash` mode: opens the SQLite file, prints `ready`, waits for `go <run>` on stdin, then writes
 * until killed with four concurrent writers, each overwriting its own small set of keys, and prints
 * `ack <key> <run> <seq>` after each awaited `setSession` resolves. The parent SIGKILLs it at a
 * random moment. Pipes are synchronous on Linux, so an ack line is in the pipe before the next write.
 * Where `sessions.rotateKeys` exists, a fifth loop rotates keys meanwhile and prints `rotated <n>`.
 *
 * `cas` mode: read-modify-write increments of shared counters on SQLite, Redis and PostgreSQL at
 * once: read the record through the store, open it, add one, seal it, `compareAndSet` on the read
 * version, retry on conflict. Prints one JSON summary line: every count it wrote per counter.
 */
import { createHash } from 'node:crypto';
import { createInterface } from 'node:readline';
import { pathToFileURL } from 'node:url';
import { open as openEnvelope, seal } from '../../src/crypto/envelope.ts';
import { Keyring } from '../../src/crypto/keyring.ts';
import { StoreError } from '../../src/errors.ts';
import { SessionManager } from '../../src/session-manager.ts';
import { SqliteStore } from '../../src/stores/sqlite.ts';
import type { SessionStore } from '../../src/stores/store.ts';
import { storageKey } from '../../src/namespace.ts';

export interface CrashConfig {
  readonly mode: 'crash';
  readonly path: string;
  readonly lane: number;
}

export type CasBackend =
  | { readonly kind: 'sqlite'; readonly path: string }
  | { readonly kind: 'redis'; readonly url: string; readonly keyPrefix: string }
  | { readonly kind: 'postgres'; readonly url: string; readonly schema: string };

export interface CasConfig {
  readonly mode: 'cas';
  readonly writer: string;
  readonly backends: readonly CasBackend[];
  readonly counters: number;
  readonly increments: number;
  readonly namespace: string;
}

/** What the CAS child reports per backend. */
export interface CasReport {
  readonly kind: string;
  /** counter index -> every count this writer wrote there. */
  readonly wrote: Record<string, number[]>;
  readonly conflicts: number;
  /** Error codes seen (a busy database would show up here as ERR_SESSION_STORE_UNAVAILABLE). */
  readonly errors: string[];
}

export const CRASH_BROKER = 'crash';
export const CRASH_WRITERS = 4;
export const CRASH_KEYS_PER_WRITER = 6;
export const CAS_BROKER = 'counter';

/** The exact value write `seq` of run `run` stored at `key`: the parent recomputes it to compare. */
export function crashValue(key: string, run: number, seq: number): { run: number; seq: number; token: string; pad: string } {
  const digest = createHash('sha256').update(`${key}/${run}/${seq}`).digest();
  // A size that varies per write (0..3 KiB), so pages split and merge under the crashes.
  return { run, seq, token: digest.toString('hex'), pad: 'p'.repeat(digest.readUInt16BE(0) % 3072) };
}

export function crashKey(writer: number, slot: number): string {
  return `w${writer}-k${slot}`;
}

async function crash(config: CrashConfig): Promise<void> {
  const sessions = await SessionManager.open({ keyring: Keyring.fromEnv(), store: new SqliteStore({ path: config.path }) });
  const rotates = typeof (sessions as unknown as { rotateKeys?: unknown }).rotateKeys === 'function';
  process.stdout.write(`ready ${rotates ? 'rotate' : 'no-rotate'}\n`);
  const lines = createInterface({ input: process.stdin });
  const go = await new Promise<string>((resolve) => lines.once('line', resolve));
  const run = Number(go.split(' ')[1]);
  lines.close();
  let seq = 0;
  const writer = async (w: number): Promise<never> => {
    for (let i = 0; ; i++) {
      const key = crashKey(w, i % CRASH_KEYS_PER_WRITER);
      const mine = seq++;
      await sessions.setSession(CRASH_BROKER, key, crashValue(key, run, mine));
      process.stdout.write(`ack ${key} ${run} ${mine}\n`);
    }
  };
  // Key rotation, where the manager has it: the parent alternates the primary key between runs,
  // so each run re-seals what earlier runs wrote, racing its own writers (compare-and-set).
  const rotator = async (): Promise<never> => {
    const rotate = (sessions as unknown as { rotateKeys: () => Promise<{ rotated: number }> }).rotateKeys.bind(sessions);
    for (;;) {
      const { rotated } = await rotate();
      process.stdout.write(`rotated ${rotated}\n`);
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  };
  await Promise.all([...Array.from({ length: CRASH_WRITERS }, (_, w) => writer(w)), ...(rotates ? [rotator()] : [])]);
}

// Redis and PostgreSQL load lazily (their own bundle chunks), so a crash child starts fast.
async function storeFor(backend: CasBackend): Promise<SessionStore> {
  switch (backend.kind) {
    case 'sqlite':
      return new SqliteStore({ path: backend.path });
    case 'redis': {
      const { RedisStore } = await import('../../src/stores/redis.ts');
      return new RedisStore({ url: backend.url, keyPrefix: backend.keyPrefix });
    }
    case 'postgres': {
      const { PostgresStore } = await import('../../src/stores/postgres.ts');
      return new PostgresStore({ connectionString: backend.url, schema: backend.schema, poolSize: 2 });
    }
  }
}

async function hammer(config: CasConfig, backend: CasBackend, keyring: Keyring): Promise<CasReport> {
  const store = await storeFor(backend);
  const sessions = await SessionManager.open({ keyring, store, namespace: config.namespace });
  const wrote: Record<string, number[]> = {};
  const errors: string[] = [];
  let conflicts = 0;
  for (let i = 0; i < config.increments; i++) {
    const counter = Math.floor(Math.random() * config.counters);
    const key = `c${counter}`;
    const location = storageKey(config.namespace, CAS_BROKER, key);
    for (;;) {
      try {
        const record = await store.get(location);
        const identity = { kind: 'session', namespace: config.namespace, broker: CAS_BROKER, key } as const;
        const current = record === undefined ? 0 : (JSON.parse(openEnvelope(keyring, record.value, { ...identity, expiresAt: record.expiresAt }).toString()) as { n: number }).n;
        const next = { n: current + 1, writer: config.writer };
        const sealed = seal(keyring, Buffer.from(JSON.stringify(next)), { ...identity, expiresAt: null });
        const result = await store.compareAndSet(location, record?.version ?? null, sealed, { expiresAt: null, updatedAt: Date.now() });
        if (result.ok) {
          (wrote[key] ??= []).push(next.n);
          break;
        }
        conflicts++;
      } catch (error) {
        errors.push(error instanceof StoreError ? error.code : String((error as Error).name));
        if (errors.length > 50) throw error;
      }
    }
  }
  await sessions.close();
  return { kind: backend.kind, wrote, conflicts, errors };
}

async function cas(config: CasConfig): Promise<void> {
  const keyring = Keyring.fromEnv();
  const reports = await Promise.all(config.backends.map((backend) => hammer(config, backend, keyring)));
  process.stdout.write(`${JSON.stringify(reports)}\n`);
}

// Run only as a process of its own (the bundle), not when the test imports the helpers above.
if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const config = JSON.parse(process.argv[2] ?? '{}') as CrashConfig | CasConfig;
  if (config.mode === 'crash') await crash(config);
  else if (config.mode === 'cas') await cas(config);
  else throw new Error('crash-writer: unknown mode');
}
