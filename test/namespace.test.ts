import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { InvalidSessionKeyError } from '../src/errors.ts';
import {
  brokerPrefix,
  metadataKey,
  namespacePrefix,
  parseStorageKey,
  storageKey,
  validateBrokerId,
  validateNamespace,
  validateSessionKey,
} from '../src/namespace.ts';

const identifier = fc.stringMatching(/^[a-z][a-z0-9_-]{0,63}$/);
const sessionKey = fc
  .string({ unit: 'grapheme', minLength: 1, maxLength: 40 })
  .map((key) => key.normalize('NFC'))
  .filter((key) => key.length > 0 && [...key].length <= 512);
const tricky = fc.constantFrom('a', 'a:b', 'b:c', 'c', ':', '/', 'a/b', '%', '%2F', '*', '?', '[a]', '\u0000', '..', '../x', '{x}', '!', 'é', '😀');
const anyKey = fc.oneof(sessionKey, tricky, fc.array(tricky, { minLength: 1, maxLength: 4 }).map((parts) => parts.join('')));
const triple = fc.tuple(identifier, identifier, anyKey);

describe('storage key encoding', () => {
  it('is injective: distinct (namespace, broker, key) triples never share a storage key', () => {
    fc.assert(
      fc.property(triple, triple, ([n1, b1, k1], [n2, b2, k2]) => {
        fc.pre(n1 !== n2 || b1 !== b2 || k1 !== k2);
        expect(storageKey(n1, b1, k1)).not.toBe(storageKey(n2, b2, k2));
      }),
      { numRuns: 5000 },
    );
  });

  it('round-trips through parseStorageKey', () => {
    fc.assert(
      fc.property(triple, ([namespace, broker, key]) => {
        expect(parseStorageKey(namespace, storageKey(namespace, broker, key))).toEqual({ broker, key });
      }),
      { numRuns: 2000 },
    );
  });

  it("is prefix-free per broker: a broker's prefix matches its own keys and no other broker's", () => {
    fc.assert(
      fc.property(identifier, identifier, identifier, anyKey, (namespace, a, b, key) => {
        expect(storageKey(namespace, a, key).startsWith(brokerPrefix(namespace, a))).toBe(true);
        if (a !== b) expect(storageKey(namespace, b, key).startsWith(brokerPrefix(namespace, a))).toBe(false);
      }),
      { numRuns: 5000 },
    );
  });

  it("keeps namespaces apart, and metadata outside every broker's prefix", () => {
    fc.assert(
      fc.property(identifier, identifier, identifier, anyKey, identifier, (n1, n2, broker, key, name) => {
        if (n1 !== n2) expect(storageKey(n2, broker, key).startsWith(namespacePrefix(n1))).toBe(false);
        expect(metadataKey(n1, name).startsWith(namespacePrefix(n1))).toBe(false);
        expect(metadataKey(n1, name)).not.toBe(storageKey(n1, broker, key));
      }),
      { numRuns: 3000 },
    );
  });

  it('does not fall for the classic collisions', () => {
    expect(storageKey('n', 'a', 'b:c')).not.toBe(storageKey('n', 'ab', 'c'));
    expect(storageKey('n', 'a', 'b/c')).not.toBe(storageKey('n', 'ab', 'c'));
    for (const sibling of ['ab', 'a-b', 'a_b', 'a0']) {
      expect(storageKey('n', sibling, 'x').startsWith(brokerPrefix('n', 'a'))).toBe(false);
    }
    // The broker part of a storage key is fixed by the first two slashes, whatever the key holds.
    for (const key of ['../b/x', '/b/x', 'b/x', '%2Fb', '*', '\u0000b/x']) {
      expect(parseStorageKey('n', storageKey('n', 'a', key))).toEqual({ broker: 'a', key });
    }
  });
});

describe('broker ids and namespaces', () => {
  it.each(['fyers', 'zerodha-kite', 'alpaca_paper', 'a', 'a'.repeat(64), 'x1'])('accepts %s', (id) => {
    expect(validateBrokerId(id)).toBe(id);
    expect(validateNamespace(id)).toBe(id);
  });

  it.each([
    '', 'Fyers', '1fyers', '-a', 'a'.repeat(65), 'a:b', 'a/b', 'a b', 'a*', 'a%', 'a!', 'ä', 'a\u0000', '__proto__', 'a.b',
  ])('refuses %j', (id) => {
    expect(() => validateBrokerId(id)).toThrow(InvalidSessionKeyError);
    expect(() => validateNamespace(id)).toThrow(InvalidSessionKeyError);
  });

  it.each([undefined, null, 42, {}, ['a'], Symbol('a')])('refuses a non-string %s', (id) => {
    expect(() => validateBrokerId(id)).toThrow(InvalidSessionKeyError);
  });
});

describe('session keys', () => {
  it.each(['XY1234', 'a:b', '/', '..', '%', '*?[]', '\u0000', '😀', 'ünïcödé', 'x'.repeat(512), '😀'.repeat(512)])(
    'accepts %j exactly as given',
    (key) => {
      expect(validateSessionKey(key)).toBe(key);
    },
  );

  it('refuses empty, too long, lone surrogates and non-NFC, without echoing the key', () => {
    const secretLooking = 'eyJhbGciOi-SECRET-TOKEN'.repeat(30);
    for (const key of ['', 'x'.repeat(513), '😀'.repeat(513), '\ud800', 'a\udc00b', 'u\u0308', secretLooking]) {
      let error: unknown;
      try {
        validateSessionKey(key);
      } catch (caught) {
        error = caught;
      }
      expect(error).toBeInstanceOf(InvalidSessionKeyError);
      expect((error as Error).message).not.toContain('SECRET');
    }
  });

  it('accepts NFC and refuses its NFD twin, so two keys that look alike are never two sessions', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'grapheme', minLength: 1, maxLength: 20 }), (raw) => {
        const nfc = raw.normalize('NFC');
        const nfd = raw.normalize('NFD');
        expect(validateSessionKey(nfc)).toBe(nfc);
        if (nfd !== nfc) expect(() => validateSessionKey(nfd)).toThrow(InvalidSessionKeyError);
      }),
    );
  });
});
