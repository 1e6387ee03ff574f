/**
 * The SessionManager behaviour every store must support, run over a store factory: isolation
 * between brokers, expiry, listing, tampering and swaps in the stored bytes, wrong keys and
 * rotation. Each test gets its own namespace, so suites can share one server.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { inspect } from 'node:util';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  InvalidExpiryError,
  InvalidSessionDataError,
  InvalidSessionKeyError,
  Keyring,
  KeyringMismatchError,
  SessionClosedError,
  SessionIntegrityError,
  SessionManager,
  UnknownKeyIdError,
  type SessionInfo,
  type SessionStore,
} from '../src/index.ts';

/** Opens a new store over the same data each call (so a test can reopen with other keys). */
export type SharedStoreFactory = () => Promise<SessionStore>;

interface FyersSession {
  accessToken: string;
  refreshToken: string;
  accountId: string;
}

const HOUR = 3_600_000;

async function collect(iterable: AsyncIterable<SessionInfo>): Promise<SessionInfo[]> {
  const out: SessionInfo[] = [];
  for await (const info of iterable) out.push(info);
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

export function managerSuite(name: string, openStore: SharedStoreFactory): void {
  describe(`SessionManager on ${name}`, () => {
    let namespace: string;
    let keyring: Keyring;
    let now: number;
    const clock = (): number => now;
    const opened: Array<{ close(): Promise<void> }> = [];

    async function openManager(ring = keyring): Promise<SessionManager> {
      const manager = await SessionManager.open({ keyring: ring, store: await openStore(), namespace, clock });
      opened.push(manager);
      return manager;
    }

    async function rawStore(): Promise<SessionStore> {
      const store = await openStore();
      opened.push(store);
      return store;
    }

    beforeEach(() => {
      namespace = `t${randomUUID().replaceAll('-', '').slice(0, 20)}`;
      keyring = new Keyring([{ id: 'k1', key: randomBytes(32) }]);
      now = Date.now();
    });

    afterEach(async () => {
      const store = await openStore();
      await store.deleteByPrefix(`${namespace}/`);
      await store.deleteByPrefix(`${namespace}!`);
      await store.close();
      for (const thing of opened.splice(0)) await thing.close();
    });

    it('stores and reads a session back, through the manager and a broker view', async () => {
      const sessions = await openManager();
      const data: FyersSession = { accessToken: 'at-1', refreshToken: 'rt-1', accountId: 'XY1234' };
      await sessions.setSession('fyers', 'XY1234', data, { ttlMs: HOUR });
      expect(await sessions.getSession<FyersSession>('fyers', 'XY1234')).toEqual(data);
      const fyers = sessions.forBroker<FyersSession>('fyers');
      expect(await fyers.getSession('XY1234')).toEqual(data);
      expect(await fyers.hasSession('XY1234')).toBe(true);
      expect(await fyers.hasSession('nobody')).toBe(false);
      expect(await fyers.getSession('nobody')).toBeUndefined();
    });

    it('reads sessions written by another manager over the same store', async () => {
      const writer = await openManager();
      await writer.setSession('fyers', 'XY1234', { accessToken: 'shared' });
      const reader = await openManager();
      expect(await reader.getSession('fyers', 'XY1234')).toEqual({ accessToken: 'shared' });
    });

    it('never lets one broker see or overwrite another broker’s session with the same key', async () => {
      const sessions = await openManager();
      for (const broker of ['a', 'ab', 'a-b', 'a_b', 'b']) {
        await sessions.setSession(broker, 'ACCT:1', { broker });
      }
      for (const broker of ['a', 'ab', 'a-b', 'a_b', 'b']) {
        expect(await sessions.getSession('fyers', 'ACCT:1')).toBeUndefined();
        expect(await sessions.getSession(broker, 'ACCT:1')).toEqual({ broker });
      }
      expect(await sessions.clearBroker('a')).toBe(1);
      expect(await sessions.getSession('a', 'ACCT:1')).toBeUndefined();
      for (const broker of ['ab', 'a-b', 'a_b', 'b']) expect(await sessions.getSession(broker, 'ACCT:1')).toEqual({ broker });
      expect((await collect(sessions.listSessions('ab'))).map((info) => info.key)).toEqual(['ACCT:1']);
    });

    it('keeps namespaces apart in one store', async () => {
      const first = await openManager();
      await first.setSession('fyers', 'XY1234', { ns: 'first' });
      const otherNamespace = `${namespace}x`;
      const second = await SessionManager.open({ keyring, store: await openStore(), namespace: otherNamespace, clock });
      opened.push(second);
      try {
        expect(await second.getSession('fyers', 'XY1234')).toBeUndefined();
        await second.setSession('fyers', 'XY1234', { ns: 'second' });
        expect(await first.getSession('fyers', 'XY1234')).toEqual({ ns: 'first' });
        expect(await first.clearBroker('fyers')).toBe(1);
        expect(await second.getSession('fyers', 'XY1234')).toEqual({ ns: 'second' });
      } finally {
        await second.clearBroker('fyers');
        const store = await rawStore();
        await store.deleteByPrefix(`${otherNamespace}!`);
      }
    });

    it('deletes one session and reports whether it existed', async () => {
      const sessions = await openManager();
      await sessions.setSession('fyers', 'a', { x: 1 });
      await sessions.setSession('fyers', 'b', { x: 2 });
      expect(await sessions.deleteSession('fyers', 'a')).toBe(true);
      expect(await sessions.deleteSession('fyers', 'a')).toBe(false);
      expect(await sessions.getSession('fyers', 'b')).toEqual({ x: 2 });
    });

    it('lists keys and metadata of one broker, never data', async () => {
      const sessions = await openManager();
      await sessions.setSession('fyers', 'XY1', { accessToken: 'LISTED-SECRET' }, { expiresAt: new Date(now + HOUR) });
      await sessions.setSession('fyers', 'XY2', { accessToken: 'LISTED-SECRET' });
      await sessions.setSession('fyersx', 'XY3', { accessToken: 'LISTED-SECRET' });
      const listed = (await collect(sessions.listSessions('fyers'))).sort((a, b) => a.key.localeCompare(b.key));
      expect(listed).toEqual([
        { key: 'XY1', expiresAt: new Date(now + HOUR), updatedAt: new Date(now), keyId: 'k1' },
        { key: 'XY2', updatedAt: new Date(now), keyId: 'k1' },
      ]);
      expect(JSON.stringify(listed)).not.toContain('LISTED-SECRET');
    });

    it('streams a listing across many pages', async () => {
      const sessions = await openManager();
      const keys = Array.from({ length: 1203 }, (_, i) => `acct-${i}`);
      await Promise.all(keys.map((key) => sessions.setSession('bulk', key, { i: key })));
      const listed = await collect(sessions.listSessions('bulk'));
      expect(listed.map((info) => info.key).sort()).toEqual([...keys].sort());
      expect(await sessions.clearBroker('bulk')).toBe(1203);
    });

    it('hides an expired session at once from get, has and list, and purges it later', async () => {
      const sessions = await openManager();
      await sessions.setSession('kite', 'short', { t: 1 }, { ttlMs: 1000 });
      await sessions.setSession('kite', 'long', { t: 2 }, { ttlMs: 10 * HOUR });
      await sessions.setSession('kite', 'forever', { t: 3 });
      now += 999;
      expect(await sessions.getSession('kite', 'short')).toEqual({ t: 1 });
      now += 1;
      expect(await sessions.getSession('kite', 'short')).toBeUndefined();
      expect(await sessions.hasSession('kite', 'short')).toBe(false);
      expect((await collect(sessions.listSessions('kite'))).map((i) => i.key).sort()).toEqual(['forever', 'long']);
      expect(await sessions.purgeExpired()).toBe(1);
      expect(await sessions.deleteSession('kite', 'short')).toBe(false);
      expect(await sessions.getSession('kite', 'long')).toEqual({ t: 2 });
    });

    it('refuses bad input with a typed error before writing anything', async () => {
      const sessions = await openManager();
      const store = await rawStore();
      const attempts: Array<[Promise<unknown>, new (...args: never[]) => Error]> = [
        [sessions.setSession('Fyers', 'k', {}), InvalidSessionKeyError],
        [sessions.setSession('fyers', '', {}), InvalidSessionKeyError],
        [sessions.setSession('fyers', 'u\u0308', {}), InvalidSessionKeyError],
        [sessions.setSession('fyers', 'k', { at: new Date() }), InvalidSessionDataError],
        [sessions.setSession('fyers', 'k', { big: 'x'.repeat(70_000) }), InvalidSessionDataError],
        [sessions.setSession('fyers', 'k', {}, { ttlMs: 0 }), InvalidExpiryError],
        [sessions.setSession('fyers', 'k', {}, { expiresAt: now - 1 }), InvalidExpiryError],
        [sessions.setSession('fyers', 'k', {}, { ttl: 5 } as never), InvalidExpiryError],
        [sessions.getSession('fyers/x', 'k'), InvalidSessionKeyError],
      ];
      for (const [attempt, type] of attempts) expect(await rejection(attempt)).toBeInstanceOf(type);
      expect(() => sessions.listSessions('a*')).toThrow(InvalidSessionKeyError);
      expect(() => sessions.forBroker('a:b')).toThrow(InvalidSessionKeyError);
      const page = await store.list(`${namespace}/`, { limit: 10 });
      expect(page.records).toEqual([]);
    });

    it('detects a flipped bit anywhere in a stored record', async () => {
      const sessions = await openManager();
      await sessions.setSession('fyers', 'XY1234', { t: 'ok' });
      const store = await rawStore();
      const key = `${namespace}/fyers/XY1234`;
      const original = (await store.get(key))!;
      const bits = original.value.length * 8;
      for (let bit = 0; bit < bits; bit += bits > 400 ? 7 : 1) {
        const flipped = Buffer.from(original.value);
        flipped[bit >> 3]! ^= 1 << (bit & 7);
        await store.set(key, flipped, { expiresAt: original.expiresAt, updatedAt: original.updatedAt });
        expect(await rejection(sessions.getSession('fyers', 'XY1234')), `bit ${bit}`).toBeInstanceOf(SessionIntegrityError);
      }
      await store.set(key, Buffer.from(original.value).subarray(0, 20), { expiresAt: original.expiresAt, updatedAt: 0 });
      expect(await rejection(sessions.hasSession('fyers', 'XY1234'))).toBeInstanceOf(SessionIntegrityError);
    });

    it('refuses a record copied to another broker’s or another key’s row, or with its expiry changed', async () => {
      const sessions = await openManager();
      await sessions.setSession('fyers', 'XY1234', { owner: 'fyers' }, { ttlMs: HOUR });
      await sessions.setSession('kite', 'XY1234', { owner: 'kite' }, { ttlMs: HOUR });
      const store = await rawStore();
      const fyers = (await store.get(`${namespace}/fyers/XY1234`))!;
      const write = { expiresAt: fyers.expiresAt, updatedAt: fyers.updatedAt };
      await store.set(`${namespace}/kite/XY1234`, fyers.value, write);
      expect(await rejection(sessions.getSession('kite', 'XY1234'))).toBeInstanceOf(SessionIntegrityError);
      await store.set(`${namespace}/fyers/OTHER`, fyers.value, write);
      expect(await rejection(sessions.getSession('fyers', 'OTHER'))).toBeInstanceOf(SessionIntegrityError);
      await store.set(`${namespace}/fyers/XY1234`, fyers.value, { ...write, expiresAt: fyers.expiresAt! + 10 * HOUR });
      expect(await rejection(sessions.getSession('fyers', 'XY1234'))).toBeInstanceOf(SessionIntegrityError);
      await store.set(`${namespace}/fyers/XY1234`, fyers.value, { ...write, expiresAt: null });
      expect(await rejection(sessions.getSession('fyers', 'XY1234'))).toBeInstanceOf(SessionIntegrityError);
      await store.set(`${namespace}/fyers/XY1234`, fyers.value, write);
      expect(await sessions.getSession('fyers', 'XY1234')).toEqual({ owner: 'fyers' });
    });

    it('refuses to open a store with the wrong key, and leaves its sessions untouched', async () => {
      const sessions = await openManager();
      await sessions.setSession('fyers', 'XY1234', { t: 1 });
      const before = await (await rawStore()).list(`${namespace}`, { limit: 100 });
      const wrong = new Keyring([{ id: 'k9', key: randomBytes(32) }]);
      expect(await rejection(openManager(wrong))).toBeInstanceOf(KeyringMismatchError);
      const sameIdOtherKey = new Keyring([{ id: 'k1', key: randomBytes(32) }]);
      expect(await rejection(openManager(sameIdOtherKey))).toBeInstanceOf(KeyringMismatchError);
      const after = await (await rawStore()).list(`${namespace}`, { limit: 100 });
      expect(after.records.map((r) => [r.key, r.version]).sort()).toEqual(before.records.map((r) => [r.key, r.version]).sort());
      expect(await sessions.getSession('fyers', 'XY1234')).toEqual({ t: 1 });
    });

    it('refuses the wrong key even when the canary was deleted', async () => {
      const sessions = await openManager();
      await sessions.setSession('fyers', 'XY1234', { t: 1 });
      const store = await rawStore();
      await store.deleteByPrefix(`${namespace}!`);
      const wrong = new Keyring([{ id: 'k1', key: randomBytes(32) }]);
      expect(await rejection(openManager(wrong))).toBeInstanceOf(KeyringMismatchError);
      expect((await openManager()).namespace).toBe(namespace);
    });

    it('rotates without downtime: a new primary writes, the old key still reads', async () => {
      const oldKey = randomBytes(32);
      const oldRing = new Keyring([{ id: 'old', key: oldKey }]);
      const before = await openManager(oldRing);
      await before.setSession('fyers', 'XY1', { v: 'under old' });
      const rotated = new Keyring([
        { id: 'new', key: randomBytes(32) },
        { id: 'old', key: oldKey },
      ]);
      const after = await openManager(rotated);
      expect(await after.getSession('fyers', 'XY1')).toEqual({ v: 'under old' });
      await after.setSession('fyers', 'XY2', { v: 'under new' });
      const ids = Object.fromEntries((await collect(after.listSessions('fyers'))).map((info) => [info.key, info.keyId]));
      expect(ids).toEqual({ XY1: 'old', XY2: 'new' });
      // A process still on the old keyring keeps working during a rolling deploy...
      expect(await before.getSession('fyers', 'XY1')).toEqual({ v: 'under old' });
      const stillOld = await openManager(oldRing);
      expect(await stillOld.getSession('fyers', 'XY1')).toEqual({ v: 'under old' });
      // ...and meets the new key's records as a named, typed failure, never as "absent".
      const error = await rejection(stillOld.getSession('fyers', 'XY2'));
      expect(error).toBeInstanceOf(UnknownKeyIdError);
      expect((error as UnknownKeyIdError).keyId).toBe('new');
    });

    it('rejects every call after close with SessionClosedError', async () => {
      const sessions = await openManager();
      await sessions.close();
      await sessions.close();
      for (const call of [
        () => sessions.getSession('fyers', 'k'),
        () => sessions.setSession('fyers', 'k', {}),
        () => sessions.hasSession('fyers', 'k'),
        () => sessions.deleteSession('fyers', 'k'),
        () => sessions.clearBroker('fyers'),
        () => sessions.purgeExpired(),
      ]) {
        expect(await rejection(call())).toBeInstanceOf(SessionClosedError);
      }
      expect(() => sessions.listSessions('fyers')).toThrow(SessionClosedError);
    });

    it('shows no key and no session data in inspect, JSON or String', async () => {
      const raw = randomBytes(32);
      const ring = new Keyring([{ id: 'k1', key: raw }]);
      const sessions = await openManager(ring);
      await sessions.setSession('fyers', 'XY1234', { accessToken: 'INSPECT-SECRET' });
      const fyers = sessions.forBroker('fyers');
      const views = [sessions, fyers, ring, sessions.store].flatMap((thing) => [
        inspect(thing, { showHidden: true, depth: 10 }),
        JSON.stringify(thing) ?? '',
        String(thing),
      ]);
      for (const view of views) {
        expect(view).not.toContain('INSPECT-SECRET');
        for (const encoding of ['hex', 'base64', 'base64url'] as const) expect(view).not.toContain(raw.toString(encoding).slice(0, 12));
      }
    });
  });
}
