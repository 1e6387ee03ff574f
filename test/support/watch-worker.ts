/**
 * A child process for the watch tests (run with `process.execPath --import tsx`). argv[2] is a
 * JSON {@link WorkerConfig}. Mode `write` applies `ops` in order through its own manager and
 * prints "done"; mode `watch-close` opens a manager, starts a watcher, closes the manager and
 * prints "closed", then must exit by itself (nothing left open).
 */
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Keyring, SessionManager } from '../../src/index.ts';
import { PostgresStore } from '../../src/stores/postgres.ts';
import { RedisStore } from '../../src/stores/redis.ts';
import { SqliteStore } from '../../src/stores/sqlite.ts';
import type { SessionStore } from '../../src/stores/store.ts';

export type WorkerOp =
  | { readonly op: 'set'; readonly broker: string; readonly key: string; readonly ttlMs?: number }
  | { readonly op: 'delete'; readonly broker: string; readonly key: string }
  | { readonly op: 'refresh'; readonly broker: string; readonly key: string }
  | { readonly op: 'clear'; readonly broker: string }
  | { readonly op: 'purge'; readonly at: number };

export interface WorkerConfig {
  readonly mode: 'write' | 'watch-close';
  readonly store:
    | { readonly kind: 'sqlite'; readonly path: string }
    | { readonly kind: 'redis'; readonly url: string; readonly keyPrefix: string }
    | { readonly kind: 'postgres'; readonly connectionString: string; readonly schema: string };
  readonly namespace: string;
  readonly keys: string;
  readonly ops?: readonly WorkerOp[];
}

export function openWorkerStore(config: WorkerConfig['store']): SessionStore {
  switch (config.kind) {
    case 'sqlite':
      return new SqliteStore({ path: config.path });
    case 'redis':
      return new RedisStore({ url: config.url, keyPrefix: config.keyPrefix });
    case 'postgres':
      return new PostgresStore({ connectionString: config.connectionString, schema: config.schema, poolSize: 2 });
  }
}

async function main(config: WorkerConfig): Promise<void> {
  let now = Date.now();
  const sessions = await SessionManager.open({
    keyring: Keyring.parse(config.keys),
    store: openWorkerStore(config.store),
    namespace: config.namespace,
    clock: () => now,
  });
  if (config.mode === 'watch-close') {
    await sessions.watch(() => undefined);
    await sessions.forBroker('kite').watch(() => undefined);
    await sessions.close();
    console.log('closed');
    return;
  }
  for (const op of config.ops ?? []) {
    switch (op.op) {
      case 'set':
        await sessions.setSession(op.broker, op.key, { accessToken: `secret-${op.key}` }, op.ttlMs === undefined ? undefined : { ttlMs: op.ttlMs });
        break;
      case 'delete':
        await sessions.deleteSession(op.broker, op.key);
        break;
      case 'refresh': {
        // A refresh write-back: a compare-and-set that tells watchers it was a refresh.
        const location = `${config.namespace}/${op.broker}/${op.key}`;
        const record = await sessions.store.get(location);
        if (record === undefined) throw new Error('nothing to refresh');
        const result = await sessions.store.compareAndSet(location, record.version, record.value, {
          expiresAt: record.expiresAt,
          updatedAt: now,
          change: 'refresh',
        });
        if (!result.ok) throw new Error('refresh lost its compare-and-set');
        break;
      }
      case 'clear':
        await sessions.clearBroker(op.broker);
        break;
      case 'purge':
        now = op.at;
        await sessions.purgeExpired();
        break;
    }
  }
  await sessions.close();
  console.log('done');
}

// Imported by the test for its types and openWorkerStore; runs only as a child process.
if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  await main(JSON.parse(process.argv[2] ?? '{}') as WorkerConfig);
}
