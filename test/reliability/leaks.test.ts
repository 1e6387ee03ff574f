/**
 * Leaks, on every store: a canary token written through the manager is found nowhere in plain,
 * hex or base64 form: not in what the backend holds (SQLite's db, -wal and -shm files before and
 * after the closing checkpoint; every Redis key and value under our prefix, read as binary;
 * every PostgreSQL row of our schema, as bytea and as text), not in any error (message, stack,
 * cause chain, inspect, JSON) from bad input, tampering, a wrong keyring or an unreachable
 * backend whose URL password is the canary, and not in inspect/JSON/String of the manager, a
 * broker view, the store, the keyring or a listing.
 *
 * The canary (and the key) are registered with the leak guard (`test/support/leak-guard.ts`),
 * which fails the file if either ever reaches console or stdout/stderr; every error collected
 * here is also printed through console.error, so the guard sees them formatted as a log would.
 */
import { randomBytes } from 'node:crypto';
import { inspect } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  Keyring,
  MemoryStore,
  PostgresStore,
  RedisStore,
  SessionManager,
  type SessionError,
  type SessionStore,
} from '../../src/index.ts';
import { storageKey } from '../../src/namespace.ts';
import { canaryHits, registerCanary, retireCanary } from '../support/leak-guard.ts';
import { findLeaks } from '../support/leaks.ts';
import { freePort } from '../support/postgres.ts';
import { describeWithService } from '../support/services.ts';
import { allKinds, createTestStore, serviceOf, type TestStore } from './stores.ts';

const CANARY = registerCanary(`cnry${randomBytes(20).toString('hex')}`);
const KEY_CONFIG = registerCanary(Keyring.generateKey('leak1'));
const keyring = Keyring.parse(KEY_CONFIG);
const scanned = { chunks: 0, bytes: 0, errors: 0 };

/** Every textual view of an error and its cause chain. */
function everythingAbout(error: unknown): string {
  const parts: string[] = [];
  let current: unknown = error;
  for (let depth = 0; current !== undefined && current !== null && depth < 6; depth++) {
    const e = current as Error & { cause?: unknown };
    parts.push(String(e), e.message ?? '', e.stack ?? '', inspect(e, { showHidden: true, depth: 10 }), JSON.stringify(e) ?? '');
    current = e.cause;
  }
  return parts.join('\n');
}

/** Any 16-character piece of `secret` found in `text`: a truncated echo is a leak too. */
function partialLeaks(text: string, secret: string, window = 16): string[] {
  const found: string[] = [];
  for (let i = 0; i + window <= secret.length; i++) {
    const piece = secret.slice(i, i + window);
    if (text.includes(piece)) found.push(piece);
  }
  return found;
}

async function rejection(call: () => unknown): Promise<unknown> {
  try {
    await call();
  } catch (error) {
    return error;
  }
  return new Error('expected a failure');
}

describe('leak guard', () => {
  it('catches and redacts a registered canary in console and stdout output', () => {
    const probe = registerCanary(`probe${randomBytes(16).toString('hex')}`);
    console.log('self-test, printed on purpose:', Buffer.from(probe).toString('hex'));
    process.stdout.write(`self-test: ${Buffer.from(probe).toString('base64')}\n`);
    expect(canaryHits(probe)).toBe(2);
    retireCanary(probe);
    expect(canaryHits()).toBe(0);
  });
});

describe('option names', () => {
  // A token passed as an option name by mistake ({ [token]: ... }) must not show up in the error.
  it('an unknown expiry option name is not echoed in the error', async () => {
    const sessions = await SessionManager.open({ keyring, store: new MemoryStore() });
    const probe = `tok${randomBytes(20).toString('hex')}`;
    const error = await rejection(() => sessions.setSession('fyers', 'acct', {}, { [probe]: 1 } as never));
    await sessions.close();
    expect((error as SessionError).code).toBe('ERR_SESSION_INVALID_EXPIRY');
    expect(partialLeaks(everythingAbout(error), probe)).toEqual([]);
  });
});

for (const kind of allKinds) {
  const service = serviceOf(kind);
  describeWithService(service.name, service.available, `no leak on ${kind}`, () => {
    let testStore: TestStore;
    let sessions: SessionManager;

    beforeAll(async () => {
      testStore = await createTestStore(kind);
      sessions = await SessionManager.open({ keyring, store: testStore.make() });
    });

    afterAll(async () => {
      await sessions?.close();
      await testStore?.cleanup();
    });

    it('finds the canary nowhere in what the backend holds, or in any error or output', async () => {
      const session = { accessToken: CANARY, refreshToken: `${CANARY}-refresh`, nested: { list: [CANARY] } };
      for (let i = 0; i < 40; i++) await sessions.setSession('fyers', `acct-${i}`, { ...session, i }, { ttlMs: 3_600_000 });
      await sessions.setSession('fyers', 'acct-0', { ...session, overwritten: true });
      await sessions.setSession('kite', 'acct', session);
      await sessions.deleteSession('fyers', 'acct-1');
      await sessions.clearBroker('kite');
      expect(await sessions.getSession('fyers', 'acct-2')).toEqual({ ...session, i: 2 });
      const listing: unknown[] = [];
      for await (const info of sessions.listSessions('fyers')) listing.push(info);
      expect(listing.length).toBe(39);

      // Errors of every kind, with the canary passed in where a caller might pass it by mistake.
      const errors: unknown[] = [
        await rejection(() => sessions.setSession(`${CANARY}:broker`, 'acct', session)),
        await rejection(() => sessions.setSession('fyers', `${CANARY}\ud800`, session)),
        await rejection(() => sessions.setSession('fyers', CANARY.repeat(20), session)),
        await rejection(() => sessions.setSession('fyers', 'acct', { ...session, at: new Date() })),
        await rejection(() => sessions.setSession('fyers', 'acct', { ...session, pad: CANARY.repeat(2000) })),
        await rejection(() => sessions.getSession(`${CANARY}/x`, 'acct')),
        await rejection(() => Keyring.parse(`k1:${CANARY}`)),
      ];
      // Tampering: the integrity error of a flipped record.
      const raw = testStore.make();
      const location = storageKey('default', 'fyers', 'acct-3');
      const record = await raw.get(location);
      const flipped = Buffer.from(record!.value);
      flipped[flipped.length - 20] = (flipped[flipped.length - 20] as number) ^ 0x40;
      await raw.set(location, flipped, { expiresAt: record!.expiresAt, updatedAt: record!.updatedAt });
      errors.push(await rejection(() => sessions.getSession('fyers', 'acct-3')));
      await raw.set(location, record!.value, { expiresAt: record!.expiresAt, updatedAt: record!.updatedAt });
      if (kind !== 'memory') await raw.close();
      // A wrong keyring on the same store (memory: the same instance, as it cannot be reopened).
      errors.push(await rejection(() => SessionManager.open({ keyring: new Keyring([{ id: 'leak1', key: randomBytes(32) }]), store: testStore.make() })));
      // An unreachable backend whose password is the canary.
      const dead = await unreachable(kind);
      if (dead !== undefined) {
        errors.push(await rejection(() => SessionManager.open({ keyring, store: dead })));
      }
      for (const error of errors) {
        expect((error as SessionError).code ?? `${String(error)} at #${errors.indexOf(error)}`).toMatch(/^ERR_SESSION_/);
        const text = everythingAbout(error);
        expect(findLeaks(text, CANARY)).toEqual([]);
        expect(partialLeaks(text, CANARY)).toEqual([]);
        expect(findLeaks(text, KEY_CONFIG)).toEqual([]);
        console.error(`[${kind}] expected error: ${String(error)}`); // the guard checks the log line too
        scanned.errors++;
      }

      const shown = [sessions, sessions.forBroker('fyers'), sessions.store, keyring, listing]
        .map((thing) => `${inspect(thing, { showHidden: true, depth: 20 })}\n${JSON.stringify(thing)}\n${String(thing)}`)
        .join('\n');
      expect(findLeaks(shown, CANARY)).toEqual([]);
      expect(findLeaks(shown, KEY_CONFIG.split(':')[1] as string)).toEqual([]);

      const scan = async (): Promise<string[]> => {
        const found: string[] = [];
        const dump = await testStore.rawDump();
        // A control: the dump does hold the stored records (storage keys are metadata in the clear).
        expect(dump.some((chunk) => Buffer.from(chunk).includes('fyers/acct-2'))).toBe(true);
        for (const chunk of dump) {
          scanned.chunks++;
          scanned.bytes += chunk.length;
          found.push(...findLeaks(chunk, CANARY));
        }
        return found;
      };
      expect(await scan()).toEqual([]);
      await sessions.close(); // SQLite: the last close checkpoints the WAL into the main file
      expect(await scan()).toEqual([]);
    });
  });
}

/** A store of this kind that cannot connect, with the canary as its password; `undefined` for memory and SQLite. */
async function unreachable(kind: string): Promise<SessionStore | undefined> {
  const port = await freePort();
  if (kind === 'redis') return new RedisStore({ url: `redis://:${CANARY}@127.0.0.1:${port}`, connectTimeoutMs: 300, commandTimeoutMs: 300 });
  if (kind === 'postgres') {
    return new PostgresStore({ connectionString: `postgres://postgres:${CANARY}@127.0.0.1:${port}/test`, connectTimeoutMs: 300 });
  }
  return undefined;
}

afterAll(() => {
  console.log(
    `leaks: canary hits: ${canaryHits()}; scanned ${scanned.chunks} raw chunks (${scanned.bytes} bytes) and ${scanned.errors} errors`,
  );
});
