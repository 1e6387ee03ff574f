/**
 * A child process for the SIGKILL tests: opens the store at argv[2] (see `storeAt`) in namespace
 * argv[3] with the keys in ORDO_SESSION_KEYS and runs rotateKeys with batch size argv[4], printing
 * `progress <scanned> <rotated>` after each batch. Every `list` call is slowed by argv[5] ms so the
 * parent can kill it mid-rotation.
 */
import { Keyring, SessionManager, type SessionStore } from '../../src/index.ts';
import { storeAt } from './key-stores.ts';

const [address, namespace, batchText, delayText] = process.argv.slice(2);
const inner = storeAt(address!);
const delay = Number(delayText ?? 0);
const store: SessionStore = Object.assign(Object.create(inner) as SessionStore, {
  kind: inner.kind,
  open: () => inner.open?.() ?? Promise.resolve(),
  get: inner.get.bind(inner),
  set: inner.set.bind(inner),
  compareAndSet: inner.compareAndSet.bind(inner),
  delete: inner.delete.bind(inner),
  deleteByPrefix: inner.deleteByPrefix.bind(inner),
  purgeExpired: inner.purgeExpired.bind(inner),
  close: inner.close.bind(inner),
  list: async (prefix: string, options: Parameters<SessionStore['list']>[1]) => {
    await new Promise((resolve) => setTimeout(resolve, delay));
    return inner.list(prefix, options);
  },
});
const sessions = await SessionManager.open({ keyring: Keyring.fromEnv(), store, namespace: namespace! });
const result = await sessions.rotateKeys({
  batchSize: Number(batchText),
  onProgress: ({ scanned, rotated }) => process.stdout.write(`progress ${scanned} ${rotated}\n`),
});
await sessions.close();
process.stdout.write(`done ${result.rotated}\n`);
