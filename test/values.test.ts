import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { InvalidSessionDataError } from '../src/errors.ts';
import { deserializeSessionData, MAX_DEPTH, serializeSessionData } from '../src/values.ts';

const LIMIT = 64 * 1024;
const roundTrip = (value: unknown): unknown => deserializeSessionData(serializeSessionData(value, LIMIT));

class Token {
  accessToken = 'x';
}

function refusal(value: unknown, limit = LIMIT): InvalidSessionDataError {
  try {
    serializeSessionData(value, limit);
  } catch (error) {
    expect(error).toBeInstanceOf(InvalidSessionDataError);
    return error as InvalidSessionDataError;
  }
  throw new Error('value was accepted');
}

describe('session values', () => {
  it('round-trips every JSON value exactly', () => {
    fc.assert(
      fc.property(fc.jsonValue().filter((value) => !containsNegativeZero(value)), (value) => {
        expect(roundTrip(value)).toStrictEqual(value);
      }),
      { numRuns: 1000 },
    );
  });

  it('refuses -0 wherever it hides, since JSON turns it into 0', () => {
    fc.assert(
      fc.property(fc.jsonValue().filter(containsNegativeZero), (value) => {
        expect(() => serializeSessionData(value, LIMIT)).toThrow(InvalidSessionDataError);
      }),
      { numRuns: 200 },
    );
  });

  it('round-trips a realistic broker session', () => {
    const session = {
      accessToken: 'eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.x.y',
      refreshToken: 'r'.repeat(100),
      expiresAt: 1_764_000_000_000,
      accountId: 'XY1234',
      scopes: ['orders', 'holdings'],
      pin: null,
      nested: { ok: true, ratio: 0.25, unicode: 'ü😀', lone: '\ud800' },
    };
    expect(roundTrip(session)).toStrictEqual(session);
  });

  it('keeps __proto__ and constructor as plain data, with no prototype pollution', () => {
    const value = JSON.parse('{"__proto__":{"polluted":true},"constructor":{"prototype":{"polluted":true}}}') as object;
    const back = roundTrip(value) as Record<string, unknown>;
    expect(Object.getPrototypeOf(back)).toBe(Object.prototype);
    expect(Object.hasOwn(back, '__proto__')).toBe(true);
    expect(Object.hasOwn(back, 'constructor')).toBe(true);
    expect(({} as Record<string, unknown>)['polluted']).toBeUndefined();
    expect((back as { polluted?: unknown }).polluted).toBeUndefined();
  });

  it('accepts null-prototype objects as plain data', () => {
    const value = Object.assign(Object.create(null) as object, { a: 1 });
    expect(roundTrip(value)).toStrictEqual({ a: 1 });
  });

  const circular: Record<string, unknown> = { a: 1 };
  circular['self'] = circular;
  const sparse = [1, , 3]; // eslint-disable-line no-sparse-arrays
  const withExtra = Object.assign([1, 2], { extra: true });
  const withSymbol = { a: 1, [Symbol('s')]: 2 };
  const withGetter = Object.defineProperty({}, 'token', { get: () => 'x', enumerable: true });
  const hidden = Object.defineProperty({}, 'token', { value: 'x', enumerable: false });
  let deep: unknown = 'leaf';
  for (let i = 0; i <= MAX_DEPTH; i++) deep = { d: deep };

  it.each([
    ['undefined', undefined, '$'],
    ['a function', () => 1, '$'],
    ['a symbol', Symbol('x'), '$'],
    ['a BigInt', 10n, '$'],
    ['NaN', Number.NaN, '$'],
    ['Infinity', Number.POSITIVE_INFINITY, '$'],
    ['-Infinity', Number.NEGATIVE_INFINITY, '$'],
    ['-0', -0, '$'],
    ['a Date', new Date(), '$'],
    ['a Map', new Map(), '$'],
    ['a Set', new Set(), '$'],
    ['a class instance', new Token(), '$'],
    ['a RegExp', /x/, '$'],
    ['a Uint8Array', new Uint8Array(2), '$'],
    ['a Buffer', Buffer.from('x'), '$'],
    ['a boxed string', new String('x'), '$'],
    ['a Promise', Promise.resolve(1), '$'],
    ['an Error', new Error('x'), '$'],
    ['an undefined member', { a: 1, b: undefined }, '$.b'],
    ['a nested function', { cb: { fn: () => 1 } }, '$.cb.fn'],
    ['undefined in an array', [1, undefined], '$[1]'],
    ['a hole in an array', sparse, '$[1]'],
    ['an array with extra properties', withExtra, '$'],
    ['a symbol key', withSymbol, '$'],
    ['a getter', withGetter, '$.token'],
    ['a non-enumerable property', hidden, '$.token'],
    ['a circular reference', circular, '$.self'],
    ['nesting past the limit', deep, undefined],
    ['an odd key with a bad value', { 'a b': Number.NaN }, '$["a b"]'],
  ])('refuses %s, naming its path and never its value', (_name, value, path) => {
    const error = refusal(value);
    expect(error.code).toBe('ERR_SESSION_INVALID_DATA');
    if (path !== undefined) expect(error.paths).toContain(path);
  });

  it('never repeats a refused value in the message', () => {
    const error = refusal({ accessToken: 'SECRET-TOKEN-VALUE', when: new Date() });
    expect(error.message).not.toContain('SECRET-TOKEN-VALUE');
    expect(error.paths).toEqual(['$.when']);
  });

  it('enforces the size limit on the UTF-8 JSON', () => {
    expect(serializeSessionData('x'.repeat(98), 100).length).toBe(100);
    expect(refusal('x'.repeat(99), 100).message).toMatch(/101 bytes/);
    expect(refusal('é'.repeat(50), 100).code).toBe('ERR_SESSION_INVALID_DATA');
  });
});

function containsNegativeZero(value: unknown): boolean {
  if (Object.is(value, -0)) return true;
  if (value !== null && typeof value === 'object') return Object.values(value).some(containsNegativeZero);
  return false;
}
