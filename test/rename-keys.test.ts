/**
 * `rotateKeys({ renameKeys: true })`: moving every private-named session to storage keys named
 * with the primary's HMAC subkey, so the old name key can be dropped. Renaming then dropping the
 * old key, an aborted rename (every session readable meanwhile, no duplicates in listings, a rerun
 * finishes it), a move cut short between write and delete, and a raw scan showing no names.
 */
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { InvalidOptionsError, Keyring, KeyringMismatchError, RotationAbortedError, SessionManager, type SessionStore } from '../src/index.ts';
import { NAMES_METADATA_NAME, parseNamesMode } from '../src/private-names.ts';
import { metadataKey } from '../src/namespace.ts';
import { findLeaks } from './support/leaks.ts';
import { BACKENDS, type Backing } from './support/key-stores.ts';
import { describeWithService } from './support/services.ts';

const BROKERS = ['zerodha-kite', 'fyers', 'upstox'];
const ACCOUNTS = ['XY123456', 'AB987654', 'ZZ246810', 'acct-secret-42'];
const NS = 'ren';

async function collect<T>(iterable: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const item of iterable) out.push(item);
  return out;
}

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => {
      throw new Error('expected a rejection');
    },
    (error: unknown) => error,
  );
}

function data(broker: string, account: string): { accessToken: string; accountId: string } {
  return { accessToken: `token-${broker}-${account}`, accountId: account };
}

async function namesMode(backing: Backing): Promise<unknown> {
  const store = backing.open();
  try {
    const record = await store.get(metadataKey(NS, NAMES_METADATA_NAME));
    return record === undefined ? undefined : parseNamesMode(record.value);
  } finally {
    await store.close();
  }
}

async function expectAllReadable(sessions: SessionManager): Promise<void> {
  for (const broker of BROKERS) {
    const listed = (await collect(sessions.listSessions(broker))).map((info) => info.key);
    expect(listed.sort()).toEqual([...ACCOUNTS].sort()); // both prefixes mid-rename, never twice
    for (const account of ACCOUNTS) expect(await sessions.getSession(broker, account)).toEqual(data(broker, account));
  }
  const all = (await collect(sessions.listAllSessions())).map(({ broker, key }) => `${broker}/${key}`);
  expect(all.sort()).toEqual(BROKERS.flatMap((b) => ACCOUNTS.map((a) => `${b}/${a}`)).sort());
}

/** A store whose first `delete` fails: a move cut short between its write and its delete. */
function failingFirstDelete(store: SessionStore): SessionStore {
  let failed = false;
  return new Proxy(store, {
    get(target, property, receiver) {
      if (property === 'delete') {
        return async (key: string) => {
          if (!failed) {
            failed = true;
            throw new Error('injected delete failure');
          }
          return target.delete(key);
        };
      }
      const value: unknown = Reflect.get(target, property, receiver);
      return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value;
    },
  });
}

for (const backend of BACKENDS) {
  const suite = (): void => {
    const k1 = randomBytes(32);
    const k2 = randomBytes(32);
    const ring1 = new Keyring([{ id: 'k1', key: k1 }]);
    const ring21 = new Keyring([{ id: 'k2', key: k2 }, { id: 'k1', key: k1 }]);
    const ring2 = new Keyring([{ id: 'k2', key: k2 }]);

    async function seed(backing: Backing): Promise<void> {
      const sessions = await SessionManager.open({ keyring: ring1, store: backing.open(), namespace: NS, privateKeys: true });
      for (const broker of BROKERS) {
        for (const account of ACCOUNTS) await sessions.setSession(broker, account, data(broker, account), { ttlMs: 3_600_000 });
      }
      await sessions.close();
    }

    it('renames every session to the primary\'s name key; the old key can then be dropped', { timeout: 60_000 }, async () => {
      const backing = await backend.create();
      try {
        await seed(backing);
        const before = await backing.dump();
        const sessions = await SessionManager.open({ keyring: ring21, store: backing.open(), namespace: NS, privateKeys: true });
        const result = await sessions.rotateKeys({ renameKeys: true, batchSize: 5 });
        expect(result.renamed).toBe(BROKERS.length * ACCOUNTS.length);
        expect(result.renameComplete).toBe(true);
        expect(result.unreadable).toBe(0);
        expect(await namesMode(backing)).toEqual({ v: 1, mode: 'private', nameKeyId: 'k2' });
        await expectAllReadable(sessions);
        expect(Object.keys(await sessions.keyUsage())).toEqual(['k2']);
        // A second run has nothing left to move.
        expect((await sessions.rotateKeys({ renameKeys: true })).renamed).toBe(0);
        await sessions.close();

        // Every storage key changed: no session record is where it was.
        const after = await backing.dump();
        const oldKeys = before.map((b) => b.toString('latin1')).filter((t) => t.startsWith(`${NS}/`));
        for (const key of oldKeys) expect(after.some((b) => b.toString('latin1').includes(key))).toBe(false);

        // k1 dropped: everything still opens, lists and writes.
        const dropped = await SessionManager.open({ keyring: ring2, store: backing.open(), namespace: NS, privateKeys: true });
        await expectAllReadable(dropped);
        await dropped.setSession('fyers', 'XY123456', data('fyers', 'XY123456'));
        expect((await collect(dropped.listSessions('fyers'))).length).toBe(ACCOUNTS.length);
        expect(await dropped.clearBroker('upstox')).toBe(ACCOUNTS.length);
        await dropped.close();

        const dump = await backing.dump();
        const secrets = [...BROKERS, ...ACCOUNTS, ...BROKERS.flatMap((b) => ACCOUNTS.map((a) => `token-${b}-${a}`))];
        expect(secrets.flatMap((secret) => dump.flatMap((bytes) => findLeaks(bytes, secret)))).toEqual([]);
      } finally {
        await backing.cleanup();
      }
    });

    it('an aborted rename leaves every session readable through both namings; a rerun finishes it', { timeout: 60_000 }, async () => {
      const backing = await backend.create();
      try {
        await seed(backing);
        const sessions = await SessionManager.open({ keyring: ring21, store: backing.open(), namespace: NS, privateKeys: true });
        const controller = new AbortController();
        const error = await rejection(sessions.rotateKeys({ renameKeys: true, batchSize: 3, signal: controller.signal, onProgress: () => controller.abort() }));
        expect(error).toBeInstanceOf(RotationAbortedError);
        expect((error as RotationAbortedError).result.renamed).toBeGreaterThan(0);
        expect((error as RotationAbortedError).result.renamed).toBeLessThan(BROKERS.length * ACCOUNTS.length);
        expect(await namesMode(backing)).toEqual({ v: 1, mode: 'private', nameKeyId: 'k1', renamingTo: 'k2' });
        await expectAllReadable(sessions);
        await sessions.close();

        // Another process opening mid-rename reads both locations and writes only the new one.
        const other = await SessionManager.open({ keyring: ring21, store: backing.open(), namespace: NS, privateKeys: true });
        await expectAllReadable(other);
        await other.setSession('fyers', 'XY123456', { accessToken: 'fresh', accountId: 'XY123456' });
        expect(await other.getSession('fyers', 'XY123456')).toEqual({ accessToken: 'fresh', accountId: 'XY123456' });
        await other.setSession('fyers', 'XY123456', data('fyers', 'XY123456'));
        if (backend.name !== 'memory') {
          // (the memory backing here has no leases) getOrRefresh moves the session first, then finds it fresh
          expect(await other.getOrRefresh('upstox', 'AB987654', () => ({ data: { never: true } }))).toEqual(data('upstox', 'AB987654'));
        }
        expect(await other.deleteSession('upstox', 'ZZ246810')).toBe(true);
        expect(await other.getSession('upstox', 'ZZ246810')).toBeUndefined();
        await other.setSession('upstox', 'ZZ246810', data('upstox', 'ZZ246810'));
        // Mid-rename both name keys are needed.
        expect(await rejection(SessionManager.open({ keyring: ring2, store: backing.open(), namespace: NS, privateKeys: true }))).toBeInstanceOf(KeyringMismatchError);

        const result = await other.rotateKeys({ renameKeys: true });
        expect(result.renameComplete).toBe(true);
        expect(await namesMode(backing)).toEqual({ v: 1, mode: 'private', nameKeyId: 'k2' });
        await expectAllReadable(other);
        await other.close();

        const dropped = await SessionManager.open({ keyring: ring2, store: backing.open(), namespace: NS, privateKeys: true });
        await expectAllReadable(dropped);
        await dropped.close();
        const dump = await backing.dump();
        for (const secret of [...BROKERS, ...ACCOUNTS]) expect(dump.flatMap((bytes) => findLeaks(bytes, secret))).toEqual([]);
      } finally {
        await backing.cleanup();
      }
    });

    it('a move cut short between its write and its delete is finished by the rerun, without duplicates', { timeout: 60_000 }, async () => {
      const backing = await backend.create();
      try {
        await seed(backing);
        const flaky = await SessionManager.open({ keyring: ring21, store: failingFirstDelete(backing.open()), namespace: NS, privateKeys: true });
        expect(await rejection(flaky.rotateKeys({ renameKeys: true }))).toBeInstanceOf(Error);
        await expectAllReadable(flaky); // one session now at both storage keys: listed once
        await flaky.close();
        const rerun = await SessionManager.open({ keyring: ring21, store: backing.open(), namespace: NS, privateKeys: true });
        const result = await rerun.rotateKeys({ renameKeys: true });
        expect(result.renameComplete).toBe(true);
        expect(result.renamed).toBe(BROKERS.length * ACCOUNTS.length);
        await rerun.close();
        const store = backing.open();
        let count = 0;
        for (let cursor: string | undefined, first = true; first || cursor !== undefined; first = false) {
          const page = await store.list(`${NS}/`, cursor === undefined ? { limit: 100 } : { limit: 100, cursor });
          count += page.records.length;
          cursor = page.cursor;
        }
        await store.close();
        expect(count).toBe(BROKERS.length * ACCOUNTS.length);
        const dropped = await SessionManager.open({ keyring: ring2, store: backing.open(), namespace: NS, privateKeys: true });
        await expectAllReadable(dropped);
        await dropped.close();
      } finally {
        await backing.cleanup();
      }
    });

    it('refuses renameKeys on a plain-named store', async () => {
      const backing = await backend.create();
      try {
        const plain = await SessionManager.open({ keyring: ring21, store: backing.open(), namespace: 'plain' });
        await plain.setSession('fyers', 'A', { v: 1 });
        expect(await rejection(plain.rotateKeys({ renameKeys: true }))).toBeInstanceOf(InvalidOptionsError);
        expect(await plain.getSession('fyers', 'A')).toEqual({ v: 1 });
        await plain.close();
      } finally {
        await backing.cleanup();
      }
    });
  };
  if (backend.service === undefined) describe(`renameKeys on ${backend.name}`, suite);
  else describeWithService(backend.service, backend.available, `renameKeys on ${backend.name}`, suite);
}

describe('renameKeys without a rename to do', () => {
  it('is a plain rotation when the name key is already the primary', async () => {
    const backing = await BACKENDS[0]!.create();
    const ring = new Keyring([{ id: 'k1', key: randomBytes(32) }]);
    const sessions = await SessionManager.open({ keyring: ring, store: backing.open(), namespace: NS, privateKeys: true });
    await sessions.setSession('fyers', 'A', { v: 1 });
    const result = await sessions.rotateKeys({ renameKeys: true });
    expect(result).toMatchObject({ renamed: 0, renameComplete: true, unreadable: 0 });
    expect(await sessions.getSession('fyers', 'A')).toEqual({ v: 1 });
    await sessions.close();
  });
});
