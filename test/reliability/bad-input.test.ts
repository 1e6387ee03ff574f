/**
 * Bad input, table-driven: every malformed input to every public method gets its documented
 * typed error (class AND code), and a raw look at the store afterwards shows nothing was
 * written: the whole store listed through a second, raw store instance, plus a count below the
 * store API (SQLite `SELECT count(*)`, Redis SCAN of our prefix, a PostgreSQL `count(*)`).
 * A session written before the table runs must read back unchanged after it.
 *
 * Runs on every store; the rows that never reach a store (constructors, Keyring) run with each.
 */
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { afterAll, beforeAll, expect, it } from 'vitest';
import {
  InvalidExpiryError,
  InvalidOptionsError,
  InvalidSessionDataError,
  InvalidSessionKeyError,
  Keyring,
  KeyringError,
  PostgresStore,
  RedisStore,
  SessionManager,
  SqliteStore,
  type SessionError,
  type SessionStore,
} from '../../src/index.ts';
import { DATABASE_URL, REDIS_URL, describeWithService } from '../support/services.ts';
import { allKinds, createTestStore, serviceOf, type TestStore } from './stores.ts';

const NOW = 1_800_000_000_000;
const keyring = new Keyring([{ id: 'k1', key: randomBytes(32) }]);
const KEY_B64 = randomBytes(32).toString('base64');
const SEEDED = { broker: 'fyers', key: 'XY1234', data: { accessToken: 'seeded-token' } };

type ErrorClass = abstract new (...args: never[]) => SessionError;
const KEY: [ErrorClass, string] = [InvalidSessionKeyError, 'ERR_SESSION_INVALID_KEY'];
const DATA: [ErrorClass, string] = [InvalidSessionDataError, 'ERR_SESSION_INVALID_DATA'];
const EXPIRY: [ErrorClass, string] = [InvalidExpiryError, 'ERR_SESSION_INVALID_EXPIRY'];
const OPTIONS: [ErrorClass, string] = [InvalidOptionsError, 'ERR_SESSION_INVALID_OPTIONS'];
const KEYRING: [ErrorClass, string] = [KeyringError, 'ERR_SESSION_KEYRING'];

interface Context {
  readonly sessions: SessionManager;
  /** A store instance for the `open` rows; a failed `open` must not have used it. */
  readonly spare: SessionStore;
}

type Row = readonly [name: string, expected: [ErrorClass, string], call: (ctx: Context) => unknown];

class Token {
  constructor(readonly value: string) {}
}

function cyclic(): unknown {
  const a: Record<string, unknown> = { x: 1 };
  a['self'] = a;
  return a;
}

function deep(levels: number): unknown {
  let value: unknown = 1;
  for (let i = 0; i < levels; i++) value = { v: value };
  return value;
}

const badBrokers: ReadonlyArray<[string, unknown]> = [
  ['empty', ''],
  ['uppercase', 'Fyers'],
  ['leading digit', '1fyers'],
  ['65 characters', `a${'b'.repeat(64)}`],
  ['space', 'fy ers'],
  ['slash', 'fyers/x'],
  ['glob *', 'fy*'],
  ['glob ?[]', 'fy?[a]'],
  ['SQL injection', "fyers'; DROP TABLE ordo_sessions;--"],
  ['SQL LIKE %_', 'fy%'],
  ['__proto__', '__proto__'],
  ['non-ASCII', 'fyérs'],
  ['NUL', 'fyers\u0000'],
  ['newline', 'fyers\n'],
  ['number', 42],
  ['null', null],
  ['undefined', undefined],
  ['object', {}],
  ['array', ['fyers']],
];

const badKeys: ReadonlyArray<[string, unknown]> = [
  ['empty', ''],
  ['513 characters', 'k'.repeat(513)],
  ['513 astral code points', '😀'.repeat(513)],
  ['NFD', 'Jose\u0301'],
  ['NFD Hangul', '\u1100\u1161'],
  ['lone high surrogate', 'acct\ud800'],
  ['lone low surrogate', '\udc00acct'],
  ['number', 1234],
  ['null', null],
  ['undefined', undefined],
  ['Buffer', Buffer.from('acct')],
  ['String object', new String('acct')],
];

function getter(): unknown {
  return Object.defineProperty({}, 'token', { get: () => 'x', enumerable: true });
}

const badValues: ReadonlyArray<[string, unknown]> = [
  ['undefined', undefined],
  ['function', () => 1],
  ['symbol', Symbol('s')],
  ['BigInt', 1n],
  ['NaN', Number.NaN],
  ['Infinity', Number.POSITIVE_INFINITY],
  ['-0', -0],
  ['Date member', { at: new Date(NOW) }],
  ['Map', new Map([['a', 1]])],
  ['Set', new Set([1])],
  ['class instance', new Token('t')],
  ['getter', getter()],
  ['cycle', cyclic()],
  // eslint-disable-next-line no-sparse-arrays -- a hole is exactly the input under test
  ['sparse array', [1, , 3]],
  ['array with a named property', Object.assign([1, 2], { extra: true })],
  ['nested 65 deep', deep(65)],
  ['symbol key', { [Symbol('k')]: 1 }],
  ['non-enumerable member', Object.defineProperty({}, 'hidden', { value: 1, enumerable: false })],
  ['Uint8Array', new Uint8Array([1, 2])],
  ['RegExp', /x/],
  ['Promise', Promise.resolve(1)],
  ['Error', new Error('e')],
  ['undefined member', { a: undefined }],
  ['oversized (64 KiB + 1)', { t: 'x'.repeat(64 * 1024) }],
];

const badExpiry: ReadonlyArray<[string, unknown]> = [
  ['ttlMs -1', { ttlMs: -1 }],
  ['ttlMs 0', { ttlMs: 0 }],
  ['ttlMs 1.5', { ttlMs: 1.5 }],
  ['ttlMs NaN', { ttlMs: Number.NaN }],
  ['ttlMs Infinity', { ttlMs: Number.POSITIVE_INFINITY }],
  ['ttlMs string', { ttlMs: '1000' }],
  ['ttlMs and expiresAt', { ttlMs: 1000, expiresAt: NOW + 1000 }],
  ['expiresAt in the past', { expiresAt: NOW - 1 }],
  ['expiresAt now', { expiresAt: NOW }],
  ['expiresAt past Date', { expiresAt: new Date(NOW - 60_000) }],
  ['expiresAt invalid Date', { expiresAt: new Date('not a date') }],
  ['expiresAt string', { expiresAt: '2030-01-01' }],
  ['expiresAt fractional', { expiresAt: NOW + 0.5 }],
  ['expiresAt beyond year 275760', { expiresAt: 8.64e15 + 1 }],
  ['unknown option ttl', { ttl: 1000 }],
  ['options string', '1000'],
  ['options null', null],
  ['options array', [1000]],
];

function open(options: unknown, ctx: Context): Promise<SessionManager> {
  return SessionManager.open({ keyring, store: ctx.spare, clock: () => NOW, ...(options as object) });
}

const rows: Row[] = [
  ...badBrokers.flatMap(([name, broker]): Row[] => [
    [`setSession broker ${name}`, KEY, ({ sessions }) => sessions.setSession(broker as string, SEEDED.key, { a: 1 })],
    [`getSession broker ${name}`, KEY, ({ sessions }) => sessions.getSession(broker as string, SEEDED.key)],
    [`listSessions broker ${name}`, KEY, ({ sessions }) => sessions.listSessions(broker as string)],
    [`clearBroker broker ${name}`, KEY, ({ sessions }) => sessions.clearBroker(broker as string)],
    [`forBroker ${name}`, KEY, ({ sessions }) => sessions.forBroker(broker as string)],
  ]),
  ...badKeys.flatMap(([name, key]): Row[] => [
    [`setSession key ${name}`, KEY, ({ sessions }) => sessions.setSession(SEEDED.broker, key as string, { a: 1 })],
    [`getSession key ${name}`, KEY, ({ sessions }) => sessions.getSession(SEEDED.broker, key as string)],
    [`hasSession key ${name}`, KEY, ({ sessions }) => sessions.hasSession(SEEDED.broker, key as string)],
    [`deleteSession key ${name}`, KEY, ({ sessions }) => sessions.deleteSession(SEEDED.broker, key as string)],
    [`BrokerSessions.setSession key ${name}`, KEY, ({ sessions }) => sessions.forBroker(SEEDED.broker).setSession(key as string, { a: 1 })],
  ]),
  ...badValues.flatMap(([name, value]): Row[] => [
    [`setSession value ${name}`, DATA, ({ sessions }) => sessions.setSession(SEEDED.broker, SEEDED.key, value)],
    [`BrokerSessions.setSession value ${name}`, DATA, ({ sessions }) => sessions.forBroker(SEEDED.broker).setSession(SEEDED.key, value as never)],
  ]),
  ['setSession value over a small maxValueBytes', DATA, async ({ spare }) => {
    const small = await SessionManager.open({ keyring, store: spare, clock: () => NOW, maxValueBytes: 16 });
    await small.setSession(SEEDED.broker, SEEDED.key, { t: 'x'.repeat(16) });
  }],
  ...badExpiry.map(([name, options]): Row => [
    `setSession expiry ${name}`,
    EXPIRY,
    ({ sessions }) => sessions.setSession(SEEDED.broker, SEEDED.key, { a: 1 }, options as never),
  ]),
  ['open options undefined', OPTIONS, () => SessionManager.open(undefined as never)],
  ['open options null', OPTIONS, () => SessionManager.open(null as never)],
  ['open without a keyring', OPTIONS, (ctx) => open({ keyring: undefined }, ctx)],
  ['open keyring a plain object', OPTIONS, (ctx) => open({ keyring: { primaryKeyId: 'k1', keyIds: ['k1'] } }, ctx)],
  ['open keyring a config string', OPTIONS, (ctx) => open({ keyring: `k1:${KEY_B64}` }, ctx)],
  ['open maxValueBytes 0', OPTIONS, (ctx) => open({ maxValueBytes: 0 }, ctx)],
  ['open maxValueBytes -1', OPTIONS, (ctx) => open({ maxValueBytes: -1 }, ctx)],
  ['open maxValueBytes 1.5', OPTIONS, (ctx) => open({ maxValueBytes: 1.5 }, ctx)],
  ['open maxValueBytes 17 MiB', OPTIONS, (ctx) => open({ maxValueBytes: 17 * 1024 * 1024 }, ctx)],
  ['open maxValueBytes string', OPTIONS, (ctx) => open({ maxValueBytes: '100' }, ctx)],
  ['open clock not a function', OPTIONS, (ctx) => open({ clock: NOW }, ctx)],
  ['open store without methods', OPTIONS, (ctx) => open({ store: {} }, ctx)],
  ['open store a string', OPTIONS, (ctx) => open({ store: 'sqlite' }, ctx)],
  ['open namespace uppercase', KEY, (ctx) => open({ namespace: 'Prod' }, ctx)],
  ['open namespace empty', KEY, (ctx) => open({ namespace: '' }, ctx)],
  ['open namespace with !', KEY, (ctx) => open({ namespace: 'a!b' }, ctx)],
  ['open namespace glob', KEY, (ctx) => open({ namespace: 'prod*' }, ctx)],
  ['open namespace number', KEY, (ctx) => open({ namespace: 7 }, ctx)],
  ['Keyring no keys', KEYRING, () => new Keyring([])],
  ['Keyring not an array', KEYRING, () => new Keyring('k1' as never)],
  ['Keyring bad id', KEYRING, () => new Keyring([{ id: 'bad id', key: randomBytes(32) }])],
  ['Keyring id too long', KEYRING, () => new Keyring([{ id: 'k'.repeat(33), key: randomBytes(32) }])],
  ['Keyring duplicate id', KEYRING, () => new Keyring([{ id: 'k1', key: randomBytes(32) }, { id: 'k1', key: randomBytes(32) }])],
  ['Keyring key 31 bytes', KEYRING, () => new Keyring([{ id: 'k1', key: randomBytes(31) }])],
  ['Keyring key 33 bytes', KEYRING, () => new Keyring([{ id: 'k1', key: randomBytes(33) }])],
  ['Keyring key all zeros', KEYRING, () => new Keyring([{ id: 'k1', key: new Uint8Array(32) }])],
  ['Keyring key a string', KEYRING, () => new Keyring([{ id: 'k1', key: KEY_B64 as never }])],
  ['Keyring.parse empty', KEYRING, () => Keyring.parse('')],
  ['Keyring.parse short key', KEYRING, () => Keyring.parse('k1:dG9vLXNob3J0')],
  ['Keyring.parse no id', KEYRING, () => Keyring.parse(KEY_B64)],
  ['Keyring.parse duplicate', KEYRING, () => Keyring.parse(`k1:${KEY_B64},k1:${randomBytes(32).toString('base64')}`)],
  ['Keyring.parse bad base64', KEYRING, () => Keyring.parse(`k1:${'!'.repeat(44)}`)],
  ['Keyring.generateKey bad id', KEYRING, () => Keyring.generateKey('bad id!')],
  ['SqliteStore no options', OPTIONS, () => new SqliteStore(undefined as never)],
  ['SqliteStore empty path', OPTIONS, () => new SqliteStore({ path: '' })],
  ['SqliteStore path a number', OPTIONS, () => new SqliteStore({ path: 7 as never })],
  ['SqliteStore busyTimeoutMs -1', OPTIONS, () => new SqliteStore({ path: join(tmpdir(), 'never.db'), busyTimeoutMs: -1 })],
  ['SqliteStore busyTimeoutMs NaN', OPTIONS, () => new SqliteStore({ path: join(tmpdir(), 'never.db'), busyTimeoutMs: Number.NaN })],
  ['RedisStore no options', OPTIONS, () => new RedisStore(undefined as never)],
  ['RedisStore empty options', OPTIONS, () => new RedisStore({} as never)],
  ['RedisStore empty url', OPTIONS, () => new RedisStore({ url: '' })],
  ['RedisStore keyPrefix with braces', OPTIONS, () => new RedisStore({ url: REDIS_URL, keyPrefix: 'a{b}' })],
  ['RedisStore keyPrefix a number', OPTIONS, () => new RedisStore({ url: REDIS_URL, keyPrefix: 7 as never })],
  ['RedisStore commandTimeoutMs 0', OPTIONS, () => new RedisStore({ url: REDIS_URL, commandTimeoutMs: 0 })],
  ['RedisStore connectTimeoutMs 1.5', OPTIONS, () => new RedisStore({ url: REDIS_URL, connectTimeoutMs: 1.5 })],
  ['RedisStore client without sendCommand', OPTIONS, () => new RedisStore({ client: {} as never })],
  ['RedisStore cluster without rootNodes', OPTIONS, () => new RedisStore({ cluster: { rootNodes: [] } })],
  ['PostgresStore no options', OPTIONS, () => new PostgresStore(undefined as never)],
  ['PostgresStore empty options', OPTIONS, () => new PostgresStore({} as never)],
  ['PostgresStore empty connectionString', OPTIONS, () => new PostgresStore({ connectionString: '' })],
  ['PostgresStore schema pg_*', OPTIONS, () => new PostgresStore({ connectionString: DATABASE_URL, schema: 'pg_catalog' })],
  ['PostgresStore schema SQL injection', OPTIONS, () => new PostgresStore({ connectionString: DATABASE_URL, schema: 'a"; DROP SCHEMA public;--' })],
  ['PostgresStore table too long', OPTIONS, () => new PostgresStore({ connectionString: DATABASE_URL, table: 't'.repeat(49) })],
  ['PostgresStore poolSize 0', OPTIONS, () => new PostgresStore({ connectionString: DATABASE_URL, poolSize: 0 })],
  ['PostgresStore queryTimeoutMs -5', OPTIONS, () => new PostgresStore({ connectionString: DATABASE_URL, queryTimeoutMs: -5 })],
  ['PostgresStore pool without connect', OPTIONS, () => new PostgresStore({ pool: {} as never })],
];

/** Rows for methods other engineers are adding, run once they exist. */
function featureRows(sessions: SessionManager): Row[] {
  const extra: Row[] = [];
  const manager = sessions as unknown as Record<string, unknown>;
  if (typeof manager['getOrRefresh'] === 'function') {
    const call = (broker: unknown, key: unknown) => (manager['getOrRefresh'] as (...args: unknown[]) => unknown).call(sessions, broker, key, async () => ({ a: 1 }));
    extra.push(['getOrRefresh broker uppercase', KEY, () => call('Fyers', SEEDED.key)]);
    extra.push(['getOrRefresh key NFD', KEY, () => call(SEEDED.broker, 'Jose\u0301')]);
  }
  if (typeof manager['rotateKeys'] === 'function') {
    const rotate = (options: unknown) => (manager['rotateKeys'] as (o: unknown) => unknown).call(sessions, options);
    extra.push(['rotateKeys batchSize 0', OPTIONS, () => rotate({ batchSize: 0 })]);
    extra.push(['rotateKeys batchSize 1.5', OPTIONS, () => rotate({ batchSize: 1.5 })]);
    extra.push(['rotateKeys batchSize 10001', OPTIONS, () => rotate({ batchSize: 10_001 })]);
  }
  return extra;
}

let tried = 0;
const perStore: string[] = [];
afterAll(() => console.log(`bad inputs tried: ${tried} (${perStore.join(', ')})`));

async function outcome(call: () => unknown): Promise<unknown> {
  try {
    const result = await call();
    // listSessions is lazy only in its iteration: a bad broker must throw before that.
    return new Error(`resolved with ${typeof result}`);
  } catch (error) {
    return error;
  }
}

async function rawKeys(store: SessionStore): Promise<string[]> {
  const keys: string[] = [];
  let cursor: string | undefined;
  do {
    const page = await store.list('', cursor === undefined ? { limit: 500 } : { limit: 500, cursor });
    keys.push(...page.records.map((record) => record.key));
    cursor = page.cursor;
  } while (cursor !== undefined);
  return keys.sort();
}

for (const kind of allKinds) {
  const service = serviceOf(kind);
  describeWithService(service.name, service.available, `bad input on ${kind}`, () => {
    let testStore: TestStore;
    let sessions: SessionManager;
    let raw: SessionStore;
    let spare: SessionStore;

    beforeAll(async () => {
      testStore = await createTestStore(kind);
      // Seed through a manager of its own, closed so its bookkeeping (encryption counts) is flushed
      // and cannot land in the store during the table.
      const seeder = await SessionManager.open({ keyring, store: testStore.make(), clock: () => NOW });
      await seeder.setSession(SEEDED.broker, SEEDED.key, SEEDED.data);
      await seeder.close();
      sessions = await SessionManager.open({ keyring, store: testStore.make(), clock: () => NOW });
      raw = testStore.make();
      spare = testStore.make();
    });

    afterAll(async () => {
      await sessions?.close();
      await raw?.close();
      await spare?.close();
      await testStore?.cleanup();
    });

    it(`refuses ${rows.length}+ malformed inputs with their typed error, writing nothing`, async () => {
      const started = performance.now();
      const before = await rawKeys(raw);
      const countBefore = await testStore.rawCount();
      expect(before).toContain('default/fyers/XY1234');
      const all = [...rows, ...featureRows(sessions)];
      const wrong: string[] = [];
      for (const [name, [errorClass, code], call] of all) {
        const error = await outcome(() => call({ sessions, spare }));
        if (!(error instanceof errorClass) || (error as SessionError).code !== code) {
          wrong.push(`${name}: expected ${errorClass.name}/${code}, got ${(error as Error)?.name}/${(error as SessionError)?.code}`);
        }
      }
      expect(wrong).toEqual([]);
      expect(await rawKeys(raw)).toEqual(before);
      expect(await testStore.rawCount()).toBe(countBefore);
      expect(await sessions.getSession(SEEDED.broker, SEEDED.key)).toEqual(SEEDED.data);
      tried += all.length;
      perStore.push(`${kind} ${all.length} in ${Math.round(performance.now() - started)} ms`);
      expect(all.length).toBeGreaterThanOrEqual(60);
    });

    it('stores glob, SQL and prototype metacharacters in session keys literally, touching nothing else', async () => {
      const keys = ['*', '?', '[a-z]', '%', '_', "' OR 1=1 --", '__proto__', 'constructor', '\\', '..', '/', 'acct*'];
      const before = await rawKeys(raw);
      for (const key of keys) await sessions.setSession('meta', key, { key });
      for (const key of keys) expect(await sessions.getSession('meta', key)).toEqual({ key });
      const listed: string[] = [];
      for await (const info of sessions.listSessions('meta')) listed.push(info.key);
      expect(listed.sort()).toEqual([...keys].sort());
      expect(await sessions.clearBroker('meta')).toBe(keys.length);
      expect(await rawKeys(raw)).toEqual(before);
    });
  });
}
