/**
 * Typed, validated broker views: forBroker(broker, { schema }) with any Standard Schema (zod 4
 * here, and hand-written ones). Data is validated on write and on read; errors list paths only.
 */
import type { StandardSchemaV1 } from '@standard-schema/spec';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import {
  InvalidOptionsError,
  InvalidSessionDataError,
  Keyring,
  MemoryStore,
  RefreshError,
  SessionError,
  SessionManager,
  SessionSchemaError,
} from '../src/index.ts';

const FyersSession = z.object({
  accessToken: z.string().min(10),
  refreshToken: z.string(),
  accountId: z.string(),
  segments: z.array(z.enum(['equity', 'fno', 'commodity'])).default(['equity']),
});

const SECRET = 'tok-VERY-SECRET-4f1d2e';

async function open(): Promise<SessionManager> {
  return SessionManager.open({ keyring: Keyring.parse(Keyring.generateKey('schema1')), store: new MemoryStore() });
}

async function rejection(promise: Promise<unknown>): Promise<SessionError> {
  const error = await promise.then(
    () => {
      throw new Error('expected a rejection');
    },
    (caught: unknown) => caught,
  );
  expect(error).toBeInstanceOf(SessionError);
  return error as SessionError;
}

/** A schema whose issue messages repeat the value, as some libraries' custom messages do. */
const leakySchema: StandardSchemaV1<{ token: string }> = {
  '~standard': {
    version: 1,
    vendor: 'test',
    validate: (value) => {
      const token = (value as { token?: unknown } | null)?.token;
      if (typeof token === 'string' && token.startsWith('ok-')) return { value: { token } };
      return { issues: [{ message: `bad token ${String(token)}`, path: [{ key: 'token' }] }] };
    },
  },
};

describe('forBroker(broker, { schema })', () => {
  it('stores and returns the schema output (defaults applied, unknown members stripped)', async () => {
    const sessions = await open();
    const fyers = sessions.forBroker('fyers', { schema: FyersSession });
    await fyers.setSession('XY1234', { accessToken: SECRET, refreshToken: 'r', accountId: 'XY1234', extra: 1 } as never);
    const expected = { accessToken: SECRET, refreshToken: 'r', accountId: 'XY1234', segments: ['equity'] };
    expect(await fyers.getSession('XY1234')).toStrictEqual(expected);
    // What is stored is the output too: the plain view reads it back the same.
    expect(await sessions.getSession('fyers', 'XY1234')).toStrictEqual(expected);
    expect(await fyers.getSession('missing')).toBeUndefined();
    await sessions.close();
  });

  it('refuses data that fails the schema with InvalidSessionDataError listing the paths, and writes nothing', async () => {
    const sessions = await open();
    const fyers = sessions.forBroker('fyers', { schema: FyersSession });
    const error = await rejection(
      fyers.setSession('XY1234', { accessToken: 'short', refreshToken: 7, accountId: 'XY1234', segments: ['crypto', SECRET] } as never),
    );
    expect(error).toBeInstanceOf(InvalidSessionDataError);
    expect(error.code).toBe('ERR_SESSION_INVALID_DATA');
    expect([...(error as InvalidSessionDataError).paths].sort()).toStrictEqual(['$.accessToken', '$.refreshToken', '$.segments[0]', '$.segments[1]']);
    expect(await sessions.hasSession('fyers', 'XY1234')).toBe(false);
    await sessions.close();
  });

  it("never repeats the value or the schema's messages in the error", async () => {
    const sessions = await open();
    const view = sessions.forBroker('fyers', { schema: leakySchema });
    const error = await rejection(view.setSession('a', { token: SECRET }));
    expect(error).toBeInstanceOf(InvalidSessionDataError);
    expect((error as InvalidSessionDataError).paths).toStrictEqual(['$.token']);
    const shown = `${error.message} ${error.stack ?? ''} ${JSON.stringify(error)} ${String(error.cause)}`;
    expect(shown).not.toContain(SECRET);
    expect(shown).not.toContain('bad token');
    await sessions.close();
  });

  it('throws SessionSchemaError (ERR_SESSION_SCHEMA) when a stored value no longer fits, without its values', async () => {
    const sessions = await open();
    await sessions.setSession('fyers', 'old', { accessToken: SECRET, refreshToken: 'r' }); // written before the schema
    const fyers = sessions.forBroker('fyers', { schema: FyersSession });
    const error = await rejection(fyers.getSession('old'));
    expect(error).toBeInstanceOf(SessionSchemaError);
    expect(error.code).toBe('ERR_SESSION_SCHEMA');
    expect((error as SessionSchemaError).paths).toStrictEqual(['$.accountId']);
    expect(`${error.message} ${JSON.stringify(error)}`).not.toContain(SECRET);
    // The stored value is untouched: the plain view still reads it.
    expect(await sessions.getSession('fyers', 'old')).toStrictEqual({ accessToken: SECRET, refreshToken: 'r' });
    await sessions.close();
  });

  it('works with async schemas', async () => {
    const sessions = await open();
    const seen: string[] = [];
    const Async = z.object({ accessToken: z.string() }).refine(async (value) => {
      seen.push('checked');
      await new Promise((resolve) => setTimeout(resolve, 1));
      return value.accessToken.startsWith('tok-');
    });
    const result = Async['~standard'].validate({ accessToken: 'tok-1' });
    expect(result).toBeInstanceOf(Promise); // really async
    await result;
    const view = sessions.forBroker('kite', { schema: Async });
    await view.setSession('a', { accessToken: 'tok-1' });
    expect(await view.getSession('a')).toStrictEqual({ accessToken: 'tok-1' });
    expect(await rejection(view.setSession('b', { accessToken: 'nope' }))).toBeInstanceOf(InvalidSessionDataError);
    expect(await sessions.hasSession('kite', 'b')).toBe(false);
    await sessions.close();
  });

  it('refuses a schema that does not accept its own output, before writing anything', async () => {
    const sessions = await open();
    const Transforming = z.object({ issuedAt: z.string().transform((text) => text.length) });
    const view = sessions.forBroker('kite', { schema: Transforming });
    const error = await rejection(view.setSession('a', { issuedAt: '2026-12-03' }));
    expect(error).toBeInstanceOf(InvalidSessionDataError);
    expect((error as InvalidSessionDataError).paths).toStrictEqual(['$.issuedAt']);
    expect(await sessions.hasSession('kite', 'a')).toBe(false);
    await sessions.close();
  });

  it('counts a schema that throws as a failure at $, dropping what it threw', async () => {
    const sessions = await open();
    const throwing: StandardSchemaV1<{ a: number }> = {
      '~standard': {
        version: 1,
        vendor: 'test',
        validate: () => {
          throw new Error(`boom ${SECRET}`);
        },
      },
    };
    const error = await rejection(sessions.forBroker('kite', { schema: throwing }).setSession('a', { a: 1 }));
    expect(error).toBeInstanceOf(InvalidSessionDataError);
    expect((error as InvalidSessionDataError).paths).toStrictEqual(['$']);
    expect(`${error.message} ${String(error.cause)}`).not.toContain(SECRET);
    await sessions.close();
  });

  it('still refuses values that are not exact JSON after the schema (the value rules still apply)', async () => {
    const sessions = await open();
    const view = sessions.forBroker('kite', { schema: z.object({ at: z.date() }) });
    expect(await rejection(view.setSession('a', { at: new Date() }))).toBeInstanceOf(InvalidSessionDataError);
    await sessions.close();
  });

  it('validates what getOrRefresh writes: bad refreshed data writes nothing, good data comes back as the output', async () => {
    const sessions = await open();
    const fyers = sessions.forBroker('fyers', { schema: FyersSession });
    const error = await rejection(
      fyers.getOrRefresh('XY1234', async () => ({ data: { accessToken: SECRET, refreshToken: 'r' } as never, ttlMs: 60_000 })),
    );
    expect(error).toBeInstanceOf(RefreshError);
    expect(error.cause).toBeInstanceOf(InvalidSessionDataError);
    expect((error.cause as InvalidSessionDataError).paths).toStrictEqual(['$.accountId']);
    expect(await sessions.hasSession('fyers', 'XY1234')).toBe(false);
    const fresh = await fyers.getOrRefresh('XY1234', async () => ({
      data: { accessToken: SECRET, refreshToken: 'r', accountId: 'XY1234' } as never,
      ttlMs: 60_000,
    }));
    expect(fresh).toStrictEqual({ accessToken: SECRET, refreshToken: 'r', accountId: 'XY1234', segments: ['equity'] });
    await sessions.close();
  });

  it('refuses something that is not a Standard Schema with InvalidOptionsError', async () => {
    const sessions = await open();
    for (const bad of [null, {}, { schema: {} }, { schema: { '~standard': { version: 2, validate: () => ({}) } } }, { schema: 'zod' }]) {
      expect(() => sessions.forBroker('kite', bad as never)).toThrow(InvalidOptionsError);
    }
    await sessions.close();
  });
});
