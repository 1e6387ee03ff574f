/**
 * Key rotation on every store: rolling deploys (old and new keyrings side by side), rotateKeys
 * (batches, resume, abort, concurrent writers), keyUsage and dropping keys, rotateOnRead, and the
 * nonce-budget counts. Each test gets fresh storage (a file, a Redis prefix, a schema).
 */
import { randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { seal } from '../src/crypto/envelope.ts';
import {
  KeyInUseError,
  Keyring,
  KeyringMismatchError,
  RotationAbortedError,
  SessionManager,
  UnknownKeyIdError,
  type RotationResult,
  type SessionManagerOptions,
  type SessionStore,
} from '../src/index.ts';
import { metadataKey } from '../src/namespace.ts';
import { metadataIdentity, NONCE_ROTATE_AT, NONCE_WARN_AT, STATS_METADATA_NAME } from '../src/rotation.ts';
import { BACKENDS, type Backing } from './support/key-stores.ts';
import { describeWithService } from './support/services.ts';

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => {
      throw new Error('expected a rejection');
    },
    (error: unknown) => error,
  );
}

const HOUR = 3_600_000;

for (const backend of BACKENDS) {
  const suite = (): void => {
    let backing: Backing;
    let now: number;
    const clock = (): number => now;
    const opened: SessionManager[] = [];
    const k1 = randomBytes(32);
    const k2 = randomBytes(32);
    const ring1 = new Keyring([{ id: 'k1', key: k1 }]);
    const ring21 = new Keyring([{ id: 'k2', key: k2 }, { id: 'k1', key: k1 }]);
    const ring2 = new Keyring([{ id: 'k2', key: k2 }]);

    async function openWith(keyring: Keyring, extra: Partial<SessionManagerOptions> = {}, store?: SessionStore): Promise<SessionManager> {
      const manager = await SessionManager.open({ keyring, store: store ?? backing.open(), clock, namespace: 'rot', ...extra });
      opened.push(manager);
      return manager;
    }

    async function seed(manager: SessionManager, count: number): Promise<void> {
      for (let i = 0; i < count; i += 50) {
        await Promise.all(
          Array.from({ length: Math.min(50, count - i) }, (_, j) =>
            manager.setSession(`b${(i + j) % 3}`, `acct-${i + j}`, { n: i + j, token: `tok-${i + j}` }, (i + j) % 2 === 0 ? { ttlMs: HOUR } : undefined),
          ),
        );
      }
    }

    afterEach(async () => {
      for (const manager of opened.splice(0)) await manager.close();
      await backing?.cleanup();
    });

    async function fresh(): Promise<void> {
      backing = await backend.create();
      now = 1_800_000_000_000;
    }

    it('rolling rotation: old and new keyrings share the store; neither locks the other out; strangers are refused', async () => {
      await fresh();
      const old = await openWith(ring1);
      await old.setSession('fyers', 'A1', { v: 1 });
      now += 1000;
      const next = await openWith(ring21);
      await next.setSession('fyers', 'A2', { v: 2 });
      now += 1000;
      // An old process restarting mid-deploy still opens (the newer key is not "dropped").
      const restartedOld = await openWith(ring1);
      expect(await restartedOld.getSession('fyers', 'A1')).toEqual({ v: 1 });
      expect(await rejection(restartedOld.getSession('fyers', 'A2'))).toBeInstanceOf(UnknownKeyIdError);
      const restartedNew = await openWith(ring21);
      expect(await restartedNew.getSession('fyers', 'A1')).toEqual({ v: 1 });
      // A keyring holding none of the store's keys, or another key under a known id, is refused.
      expect(await rejection(openWith(new Keyring([{ id: 'kx', key: randomBytes(32) }])))).toBeInstanceOf(KeyringMismatchError);
      expect(await rejection(openWith(new Keyring([{ id: 'k2', key: randomBytes(32) }, { id: 'k1', key: k1 }])))).toBeInstanceOf(KeyringMismatchError);
    });

    it('rotateKeys re-seals every live record under the primary, keeping data, expiry and updatedAt; a rerun does nothing', async () => {
      await fresh();
      const old = await openWith(ring1);
      await seed(old, 240);
      await old.setSession('b0', 'expired', { gone: true }, { ttlMs: 10 });
      const before = new Map<string, { expiresAt?: Date; updatedAt: Date }>();
      for (const broker of ['b0', 'b1', 'b2']) for await (const info of old.listSessions(broker)) before.set(`${broker}/${info.key}`, info);
      await old.close();
      now += 1000; // the expired record is now dead
      const sessions = await openWith(ring21);
      expect(await sessions.keyUsage()).toEqual({ k1: 241 }); // 240 sessions + the stats record; expired not counted
      const progress: RotationResult[] = [];
      const result = await sessions.rotateKeys({ batchSize: 37, onProgress: (p) => progress.push(p) });
      expect(result.rotated).toBe(241);
      expect(result.unreadable).toBe(0);
      expect(result.scanned).toBe(result.rotated + result.skipped);
      expect(progress.length).toBeGreaterThanOrEqual(Math.ceil(241 / 37));
      for (let i = 1; i < progress.length; i++) expect(progress[i]!.scanned).toBeGreaterThanOrEqual(progress[i - 1]!.scanned);
      expect(await sessions.keyUsage()).toEqual({ k2: 241 });
      for (const broker of ['b0', 'b1', 'b2']) {
        for await (const info of sessions.listSessions(broker)) {
          expect(info.keyId).toBe('k2');
          const was = before.get(`${broker}/${info.key}`)!;
          expect(info.updatedAt).toEqual(was.updatedAt);
          expect(info.expiresAt).toEqual(was.expiresAt);
        }
      }
      for (let i = 0; i < 240; i += 17) expect(await sessions.getSession(`b${i % 3}`, `acct-${i}`)).toEqual({ n: i, token: `tok-${i}` });
      const again = await sessions.rotateKeys({ batchSize: 50 });
      expect(again.rotated).toBe(0);
      expect(again.skipped).toBe(again.scanned);
    });

    it('never loses a concurrent write: a record changed meanwhile is left as its writer sealed it', async () => {
      await fresh();
      const count = backend.name === 'memory' ? 600 : 400;
      await seed(await openWith(ring1), count);
      const rotator = await openWith(ring21);
      const writer = await openWith(ring21);
      let writing = true;
      const latest = new Map<number, number>();
      const writes = (async () => {
        let round = 0;
        while (writing) {
          round++;
          const i = (round * 7919) % count;
          await writer.setSession(`b${i % 3}`, `acct-${i}`, { n: i, round });
          latest.set(i, round);
          await new Promise((resolve) => setImmediate(resolve)); // a real writer does I/O between writes
        }
      })();
      const result = await rotator.rotateKeys({ batchSize: 25 });
      writing = false;
      await writes;
      expect(result.scanned).toBeGreaterThanOrEqual(count);
      for (const [i, round] of latest) expect(await rotator.getSession(`b${i % 3}`, `acct-${i}`)).toEqual({ n: i, round });
      expect(Object.keys(await rotator.keyUsage())).toEqual(['k2']);
      expect(latest.size).toBeGreaterThan(0);
    });

    it('aborts with RotationAbortedError, leaves everything readable, resumes, and then the old key can be dropped', async () => {
      await fresh();
      await seed(await openWith(ring1), 200);
      now += 1000;
      const sessions = await openWith(ring21);
      const controller = new AbortController();
      const error = await rejection(sessions.rotateKeys({ batchSize: 40, signal: controller.signal, onProgress: () => controller.abort() }));
      expect(error).toBeInstanceOf(RotationAbortedError);
      expect((error as RotationAbortedError).code).toBe('ERR_SESSION_ROTATION_ABORTED');
      const partial = (error as RotationAbortedError).result;
      expect(partial.rotated).toBeGreaterThan(0);
      expect(partial.rotated).toBeLessThan(200);
      const usage = await sessions.keyUsage();
      expect(usage['k1']).toBeGreaterThan(0);
      expect(usage['k2']).toBeGreaterThan(0);
      for (let i = 0; i < 200; i++) expect(await sessions.getSession(`b${i % 3}`, `acct-${i}`)).toEqual({ n: i, token: `tok-${i}` });

      // Dropping k1 now is refused, naming the key and the count; allowMissingKeys forces it.
      now += 1000;
      const refused = await rejection(openWith(ring2));
      expect(refused).toBeInstanceOf(KeyInUseError);
      expect(refused).toBeInstanceOf(KeyringMismatchError);
      expect((refused as KeyInUseError).code).toBe('ERR_SESSION_KEY_IN_USE');
      expect((refused as KeyInUseError).keyId).toBe('k1');
      expect((refused as KeyInUseError).records).toBe(usage['k1']);
      const forced = await openWith(ring2, { allowMissingKeys: true });
      let unknown = 0;
      for (let i = 0; i < 200; i++) {
        const got = await forced.getSession(`b${i % 3}`, `acct-${i}`).catch((e: unknown) => e);
        if (got instanceof UnknownKeyIdError) unknown++;
        else expect(got).toEqual({ n: i, token: `tok-${i}` });
      }
      const stats = await forced.store.get(metadataKey('rot', STATS_METADATA_NAME));
      const statsUnderK1 = stats !== undefined && Buffer.from(stats.value).subarray(2, 4).toString() === 'k1' ? 1 : 0;
      expect(unknown).toBe(usage['k1']! - statsUnderK1); // keyUsage counts the sealed stats record too

      const rest = await sessions.rotateKeys({ batchSize: 40 });
      expect(partial.rotated + rest.rotated).toBeGreaterThanOrEqual(200);
      expect(await sessions.keyUsage()).toEqual({ k2: expect.any(Number) });
      now += 1000;
      const dropped = await openWith(ring2); // k1 protects nothing: accepted, and its canary retired
      expect(await dropped.getSession('b0', 'acct-0')).toEqual({ n: 0, token: 'tok-0' });
      expect(await dropped.store.get(metadataKey('rot', 'canary/k1'))).toBeUndefined();
      expect(await rejection(openWith(ring1))).toBeInstanceOf(KeyringMismatchError);
    });

    it('rotateOnRead re-seals a record read under an old key, by compare-and-set', async () => {
      await fresh();
      const old = await openWith(ring1);
      await old.setSession('fyers', 'A1', { v: 1 }, { ttlMs: HOUR });
      const record = await old.store.get('rot/fyers/A1');
      const plain = await openWith(ring21);
      expect(await plain.getSession('fyers', 'A1')).toEqual({ v: 1 });
      expect((await plain.store.get('rot/fyers/A1'))!.version).toBe(record!.version); // off by default
      const reading = await openWith(ring21, { rotateOnRead: true });
      expect(await reading.getSession('fyers', 'A1')).toEqual({ v: 1 });
      const after = await reading.store.get('rot/fyers/A1');
      expect(Buffer.from(after!.value).subarray(2, 4).toString()).toBe('k2');
      expect(after!.expiresAt).toBe(record!.expiresAt);
      expect(after!.updatedAt).toBe(record!.updatedAt);
      expect(await old.getSession('fyers', 'A1').catch((e: unknown) => e)).toBeInstanceOf(UnknownKeyIdError);
    });

    it('persists approximate per-key encryption counts shared by every process', async () => {
      await fresh();
      const a = await openWith(ring1);
      await seed(a, 30);
      await a.close();
      const b = await openWith(ring1);
      await b.setSession('b0', 'x', { v: 1 });
      const stats = await b.keyStats();
      expect(stats[0]).toMatchObject({ keyId: 'k1', budget: 2 ** 32 });
      expect(stats[0]!.encryptions).toBeGreaterThanOrEqual(31);
      expect(stats[0]!.used).toBe(stats[0]!.encryptions / 2 ** 32);
      await b.close();
      const c = await openWith(ring1);
      expect((await c.keyStats())[0]!.encryptions).toBeGreaterThanOrEqual(32);
    });
  };
  if (backend.service === undefined) describe(`key rotation on ${backend.name}`, suite);
  else describeWithService(backend.service, backend.available, `key rotation on ${backend.name}`, suite);
}

describe('nonce budget warnings', () => {
  const key = randomBytes(32);
  const ring = new Keyring([{ id: 'k1', key }]);

  async function storeWithCount(count: number): Promise<Backing> {
    const backing = await BACKENDS[0]!.create();
    const store = backing.open();
    const sealed = seal(ring, Buffer.from(JSON.stringify({ encryptions: { k1: count } })), metadataIdentity('default', STATS_METADATA_NAME));
    await store.set(metadataKey('default', STATS_METADATA_NAME), sealed, { expiresAt: null, updatedAt: 0 });
    return backing;
  }

  it('says nothing below 2^31, warns from 2^31, urges rotation from 0.9 x 2^32, through onWarning', async () => {
    for (const [count, code] of [
      [NONCE_WARN_AT - 10, undefined],
      [NONCE_WARN_AT, 'ORDO_NONCE_BUDGET'],
      [NONCE_ROTATE_AT, 'ORDO_NONCE_BUDGET_ROTATE'],
    ] as const) {
      const backing = await storeWithCount(count);
      const onWarning = vi.fn();
      const sessions = await SessionManager.open({ keyring: ring, store: backing.open(), onWarning });
      expect(onWarning.mock.calls.map(([w]) => (w as { code: string }).code)).toEqual(code === undefined ? [] : [code]);
      if (code !== undefined) expect(onWarning.mock.calls[0]![0]).toMatchObject({ keyId: 'k1', encryptions: count + 1 });
      expect((await sessions.keyStats())[0]!.encryptions).toBe(count + 1); // + the canary this open wrote
      await sessions.close();
    }
  });

  it('defaults to process.emitWarning with the code, never console output', async () => {
    const backing = await storeWithCount(NONCE_ROTATE_AT + 1);
    const emit = vi.spyOn(process, 'emitWarning').mockImplementation(() => undefined);
    const log = vi.spyOn(console, 'log');
    const warn = vi.spyOn(console, 'warn');
    try {
      const sessions = await SessionManager.open({ keyring: ring, store: backing.open() });
      expect(emit).toHaveBeenCalledTimes(1);
      expect(emit.mock.calls[0]![1]).toMatchObject({ code: 'ORDO_NONCE_BUDGET_ROTATE' });
      expect(log).not.toHaveBeenCalled();
      expect(warn).not.toHaveBeenCalled();
      await sessions.close();
    } finally {
      emit.mockRestore();
      log.mockRestore();
      warn.mockRestore();
    }
  });
});

describe('rotateOnRead when the rewrite fails', () => {
  it('still returns the session, and the record stays under its old key', async () => {
    const k1 = randomBytes(32);
    const backing = await BACKENDS[0]!.create();
    const old = await SessionManager.open({ keyring: new Keyring([{ id: 'k1', key: k1 }]), store: backing.open() });
    await old.setSession('fyers', 'A1', { v: 1 });
    await old.close();
    const failing: SessionStore = { ...backing.open(), compareAndSet: async () => Promise.reject(new Error('store down')) };
    const ring = new Keyring([{ id: 'k2', key: randomBytes(32) }, { id: 'k1', key: k1 }]);
    // the canary write uses compareAndSet too: open over the working store first, then read through the failing one
    await (await SessionManager.open({ keyring: ring, store: backing.open() })).close();
    const sessions = await SessionManager.open({ keyring: ring, store: failing, rotateOnRead: true });
    expect(await sessions.getSession('fyers', 'A1')).toEqual({ v: 1 });
    const raw = await backing.open().get('default/fyers/A1');
    expect(Buffer.from(raw!.value).subarray(2, 4).toString()).toBe('k1');
    await sessions.close();
  });
});
