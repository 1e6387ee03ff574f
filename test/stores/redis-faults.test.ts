/**
 * RedisStore when its server fails, on a redis-server this file starts itself (never the shared
 * one): killed, paused, or not started yet. Every call must settle within its bound with a
 * StoreUnavailableError that carries no secret, nothing may escape as an unhandled error, and the
 * same store must work again once the server is back. The server keeps an fsync'd AOF, so the
 * restart shows that the record from before the crash survived and no failed write touched it.
 */
import { inspect } from 'node:util';
import { afterAll, afterEach, beforeAll, beforeEach, expect, it } from 'vitest';
import { SessionClosedError, StoreUnavailableError } from '../../src/errors.ts';
import { RedisStore } from '../../src/stores/redis.ts';
import type { StoredRecord, WriteOptions } from '../../src/stores/store.ts';
import { describeWithRedisServer, freePort, startRedisServer, type RedisServer } from '../support/redis-server.ts';

const PASSWORD = 'pw-0f5e1c-do-not-leak';
const SECRET = 'access-token-7d1b9a-do-not-leak';
const COMMAND_MS = 400;
const CONNECT_MS = 300;
/** What a call may take: a connection wait, then one command. */
const BOUND_MS = CONNECT_MS + COMMAND_MS;
const MARGIN_MS = 400;
const forever: WriteOptions = { expiresAt: null, updatedAt: 0 };

function text(record: StoredRecord | undefined): string | undefined {
  return record && Buffer.from(record.value).toString();
}

/** Runs `call`, expecting a StoreUnavailableError within the bound that names no secret. */
async function expectUnavailable(name: string, call: () => Promise<unknown>): Promise<void> {
  const started = performance.now();
  const error = await call().then(
    () => new Error(`${name} resolved while the server was down`),
    (e: unknown) => e,
  );
  const elapsed = performance.now() - started;
  expect(error, name).toBeInstanceOf(StoreUnavailableError);
  expect((error as StoreUnavailableError).code).toBe('ERR_SESSION_STORE_UNAVAILABLE');
  expect(elapsed, `${name} took ${Math.round(elapsed)} ms`).toBeLessThan(BOUND_MS + MARGIN_MS);
  const shown = `${inspect(error, { depth: 8, showHidden: true })} ${JSON.stringify(error)} ${String((error as Error).cause)}`;
  expect(shown).not.toContain(PASSWORD);
  expect(shown).not.toContain(SECRET);
}

/** Retries `call` until it resolves (the store reconnects by itself), failing after `ms`. */
async function eventually<T>(call: () => Promise<T>, ms = 8000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      return await call();
    } catch (error) {
      if (!(error instanceof StoreUnavailableError) || Date.now() > deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
}

describeWithRedisServer('RedisStore when its server fails', () => {
  let server: RedisServer;
  const unhandled: unknown[] = [];
  const record = (error: unknown): void => {
    unhandled.push(error);
  };
  const stores: RedisStore[] = [];
  const newStore = (url = server.url): RedisStore => {
    const store = new RedisStore({ url, keyPrefix: 'faults:', commandTimeoutMs: COMMAND_MS, connectTimeoutMs: CONNECT_MS });
    stores.push(store);
    return store;
  };

  beforeAll(async () => {
    server = await startRedisServer({ password: PASSWORD, appendOnly: true });
    process.on('unhandledRejection', record);
    process.on('uncaughtException', record);
  });

  afterAll(async () => {
    process.off('unhandledRejection', record);
    process.off('uncaughtException', record);
    await server?.destroy();
  });

  beforeEach(async () => {
    await server.start().catch(() => undefined); // running already, unless a test stopped it
    unhandled.length = 0;
  });

  afterEach(async () => {
    await Promise.all(stores.splice(0).map((store) => store.close()));
    expect(unhandled).toEqual([]);
  });

  it('rejects every call within its bound while the server is down, then recovers by itself with the data intact', async () => {
    const store = newStore();
    const { version } = await store.set('acct', Buffer.from(SECRET), forever);
    await server.stop('SIGKILL');

    const calls: Array<[string, () => Promise<unknown>]> = [
      ['get', () => store.get('acct')],
      ['set', () => store.set('acct', Buffer.from(`${SECRET}-new`), forever)],
      ['compareAndSet', () => store.compareAndSet('acct', version, Buffer.from(`${SECRET}-cas`), forever)],
      ['delete', () => store.delete('acct')],
      ['list', () => store.list('', { limit: 10 })],
      ['deleteByPrefix', () => store.deleteByPrefix('')],
      ['purgeExpired', () => store.purgeExpired('', Date.now() + 1e9)],
      ['open', () => store.open()],
    ];
    for (const [name, call] of calls) await expectUnavailable(name, call);
    // No unbounded queue: a burst during the outage settles within the same bound.
    await expectUnavailable('a burst of 300 calls', async () => {
      const results = await Promise.allSettled(Array.from({ length: 300 }, (_, i) => store.get(`k${i}`)));
      const reasons = results.map((result) => (result.status === 'rejected' ? result.reason : undefined));
      expect(reasons.every((reason) => reason instanceof StoreUnavailableError)).toBe(true);
      throw reasons[0];
    });

    await server.start(); // same port, same AOF
    const back = await eventually(() => store.get('acct'));
    expect(text(back)).toBe(SECRET); // the failed set, compareAndSet and delete changed nothing
    expect(back!.version).toBe(version);
    const swapped = await store.compareAndSet('acct', version, Buffer.from('next'), forever);
    expect(swapped.ok).toBe(true);
    expect(text(await store.get('acct'))).toBe('next');
    expect(await store.deleteByPrefix('')).toBe(1);
  });

  it('bounds a command whose reply never comes, and stays in step once the server answers again', async () => {
    const store = newStore();
    await store.set('paused', Buffer.from('before'), forever);
    server.pause();
    try {
      await expectUnavailable('get on a paused server', () => store.get('paused'));
      await expectUnavailable('set on a paused server', () => store.set('paused', Buffer.from('during'), forever));
      const closing = newStore();
      await closing.open().catch(() => undefined);
      const started = performance.now();
      await closing.close(); // close() of a store whose server hangs is bounded too
      expect(performance.now() - started).toBeLessThan(COMMAND_MS + MARGIN_MS);
      await expect(closing.get('paused')).rejects.toBeInstanceOf(SessionClosedError);
    } finally {
      server.resume();
    }
    // The timed-out SET may still run once the server wakes (as with any timeout), but the record
    // is always one write or the other, whole, and later replies match their own commands.
    const after = await eventually(() => store.get('paused'));
    expect(['before', 'during']).toContain(text(after));
    await store.set('other', Buffer.from('x'), forever);
    expect(text(await store.get('other'))).toBe('x');
    expect(await store.deleteByPrefix('')).toBe(2);
  });

  it('starts before its server: open() fails in time, and the same store works once the server is up', async () => {
    const late = await startRedisServer({ port: await freePort(false) });
    try {
      await late.stop();
      const store = newStore(late.url);
      await expectUnavailable('open before the server exists', () => store.open());
      await expectUnavailable('get before the server exists', () => store.get('x'));
      await late.start();
      await eventually(() => store.open());
      await store.set('x', Buffer.from('y'), forever);
      expect(text(await store.get('x'))).toBe('y');
    } finally {
      await Promise.all(stores.splice(0).map((store) => store.close()));
      await late.destroy();
    }
  });

  it('never names the password when the server refuses it', async () => {
    const wrong = server.url.replace(encodeURIComponent(PASSWORD), 'wrong-password-do-not-leak');
    const store = newStore(wrong);
    const error = await store.get('x').then(() => undefined, (e: unknown) => e);
    expect(error).toBeInstanceOf(StoreUnavailableError);
    const shown = inspect(error, { depth: 8, showHidden: true });
    expect(shown).not.toContain('wrong-password-do-not-leak');
    expect(shown).not.toContain(PASSWORD);
  });
});
