/**
 * Private storage keys (`privateKeys: true`) and envelope format 2: HMAC-named records, the name
 * inside the ciphertext, listing per broker by exact prefix, rotation keeping names stable, mode
 * changes refused, and a raw scan of every store showing no broker name, account id or token.
 */
import { createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { associatedData, open, openNamed, sealNamed, seal, type RecordIdentity } from '../src/crypto/envelope.ts';
import { InvalidOptionsError, Keyring, KeyringMismatchError, SessionIntegrityError, SessionManager, type SessionInfo } from '../src/index.ts';
import { PrivateNames } from '../src/private-names.ts';
import { findLeaks } from './support/leaks.ts';
import { BACKENDS } from './support/key-stores.ts';
import { describeWithService } from './support/services.ts';

const golden = JSON.parse(readFileSync(new URL('./fixtures/envelope-v2.json', import.meta.url), 'utf8')) as {
  keyId: string;
  keyHex: string;
  storageKey: string;
  identity: RecordIdentity;
  name: string;
  plaintext: string;
  envelopeHex: string;
};
const goldenV1 = JSON.parse(readFileSync(new URL('./fixtures/envelope-v1.json', import.meta.url), 'utf8')) as {
  keyId: string;
  keyHex: string;
  identity: RecordIdentity;
  plaintext: string;
  envelopeHex: string;
};

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => {
      throw new Error('expected a rejection');
    },
    (error: unknown) => error,
  );
}

async function collect<T>(iterable: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const item of iterable) out.push(item);
  return out;
}

describe('envelope format 2 (named records)', () => {
  const goldenRing = new Keyring([{ id: golden.keyId, key: Buffer.from(golden.keyHex, 'hex') }]);

  it('opens the golden v2 fixture forever, and names it with the same storage key', () => {
    const { name, plaintext } = openNamed(goldenRing, Buffer.from(golden.envelopeHex, 'hex'), golden.identity);
    expect(name).toBe(golden.name);
    expect(plaintext.toString()).toBe(golden.plaintext);
    expect(new PrivateNames(goldenRing, golden.keyId, 'default').storageKey('fyers', 'XY1234')).toBe(golden.storageKey);
  });

  it('matches an independent decryption from the documented format', () => {
    const envelope = Buffer.from(golden.envelopeHex, 'hex');
    expect(envelope[0]).toBe(2);
    const idLength = envelope[1] as number;
    const subkey = Buffer.from(hkdfSync('sha256', Buffer.from(golden.keyHex, 'hex'), 'ordo-sessions/keyring/v1', 'ordo-sessions envelope', 32));
    const decipher = createDecipheriv('aes-256-gcm', subkey, envelope.subarray(2 + idLength, 14 + idLength), { authTagLength: 16 });
    decipher.setAuthTag(envelope.subarray(envelope.length - 16));
    decipher.setAAD(associatedData(2, golden.keyId, golden.identity));
    const body = Buffer.concat([decipher.update(envelope.subarray(14 + idLength, envelope.length - 16)), decipher.final()]);
    const nameLength = body.readUInt16BE(0);
    expect(body.toString('utf8', 2, 2 + nameLength)).toBe(golden.name);
    expect(body.toString('utf8', 2 + nameLength)).toBe(golden.plaintext);
  });

  it('keeps v1 opening, and never opens one version as the other', () => {
    const v1Ring = new Keyring([{ id: goldenV1.keyId, key: Buffer.from(goldenV1.keyHex, 'hex') }]);
    expect(open(v1Ring, Buffer.from(goldenV1.envelopeHex, 'hex'), goldenV1.identity).toString()).toBe(goldenV1.plaintext);
    expect(() => openNamed(v1Ring, Buffer.from(goldenV1.envelopeHex, 'hex'), goldenV1.identity)).toThrow(SessionIntegrityError);
    expect(() => open(goldenRing, Buffer.from(golden.envelopeHex, 'hex'), golden.identity)).toThrow(SessionIntegrityError);
    const asV1 = Buffer.from(golden.envelopeHex, 'hex');
    asV1[0] = 1;
    expect(() => open(goldenRing, asV1, golden.identity)).toThrow(SessionIntegrityError);
  });

  it('detects every single-bit flip and any other identity', () => {
    const ring = new Keyring([{ id: 'k1', key: randomBytes(32) }]);
    const identity: RecordIdentity = { kind: 'session', namespace: 'n', broker: 'B', key: 'K', expiresAt: null };
    const sealed = sealNamed(ring, 'fyers/A', Buffer.from('{"t":1}'), identity);
    expect(openNamed(ring, sealed, identity).name).toBe('fyers/A');
    for (let bit = 0; bit < sealed.length * 8; bit++) {
      const copy = Buffer.from(sealed);
      copy[bit >> 3]! ^= 1 << (bit & 7);
      expect(() => openNamed(ring, copy, identity)).toThrow(SessionIntegrityError);
    }
    expect(() => openNamed(ring, sealed, { ...identity, key: 'K2' })).toThrow(SessionIntegrityError);
    expect(() => openNamed(ring, seal(ring, Buffer.from('{}'), identity), identity)).toThrow(SessionIntegrityError);
  });
});

describe('private names, for all inputs', () => {
  const ring = new Keyring([{ id: 'k1', key: randomBytes(32) }]);
  const names = new PrivateNames(ring, 'k1', 'ns');
  const identifier = fc.stringMatching(/^[a-z][a-z0-9_-]{0,63}$/);
  const sessionKey = fc.string({ unit: 'grapheme', minLength: 1, maxLength: 40 }).filter((k) => k.normalize('NFC') === k);

  it('a storage key lies under its own broker prefix only, and maps back to a sealed identity', () => {
    fc.assert(
      fc.property(identifier, identifier, sessionKey, (broker, other, key) => {
        const stored = names.storageKey(broker, key);
        expect(stored.startsWith(names.brokerPrefix(broker))).toBe(true);
        if (other !== broker) expect(stored.startsWith(names.brokerPrefix(other))).toBe(false);
        expect(stored).not.toContain(broker.length >= 6 ? broker : '\u0000'); // 6+ chars: a chance match in base64url is ~1e-11
        const identity = names.identityOf(stored, null);
        expect(identity?.namespace).toBe('ns');
        expect(`ns/${identity?.broker}/${identity?.key}`).toBe(stored);
      }),
      { numRuns: 300 },
    );
  });

  it('distinct (broker, key) pairs never share a storage key', () => {
    fc.assert(
      fc.property(fc.uniqueArray(fc.tuple(identifier, sessionKey), { minLength: 2, maxLength: 30, selector: ([b, k]) => `${b}\u0000${k}` }), (pairs) => {
        expect(new Set(pairs.map(([b, k]) => names.storageKey(b, k))).size).toBe(pairs.length);
      }),
      { numRuns: 100 },
    );
  });

  it('format 2 round-trips any name and data', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 600 }), fc.uint8Array({ maxLength: 300 }), (name, data) => {
        const identity: RecordIdentity = { kind: 'session', namespace: 'ns', broker: 'B', key: 'K', expiresAt: 5 };
        const opened = openNamed(ring, sealNamed(ring, name, data, identity), identity);
        expect(opened.name).toBe(Buffer.from(name, 'utf8').toString('utf8'));
        expect(Buffer.compare(opened.plaintext, Buffer.from(data))).toBe(0);
      }),
      { numRuns: 200 },
    );
  });
});

const BROKERS = ['zerodha-kite', 'fyers', 'upstox'];
const ACCOUNTS = ['XY123456', 'AB987654', 'ZZ246810', 'acct-secret-42'];

for (const backend of BACKENDS) {
  const suite = (): void => {
    it('stores no broker name, account id or token anywhere in the raw store, yet lists, reads and rotates', { timeout: 60_000 }, async () => {
      const backing = await backend.create();
      const k1 = randomBytes(32);
      const k2 = randomBytes(32);
      const ring1 = new Keyring([{ id: 'k1', key: k1 }]);
      const ring21 = new Keyring([{ id: 'k2', key: k2 }, { id: 'k1', key: k1 }]);
      try {
        const sessions = await SessionManager.open({ keyring: ring1, store: backing.open(), namespace: 'prv', privateKeys: true });
        for (const broker of BROKERS) {
          for (const account of ACCOUNTS) {
            await sessions.setSession(broker, account, { accessToken: `token-${broker}-${account}`, accountId: account }, { ttlMs: 3_600_000 });
          }
        }
        await sessions.setSession('fyers', 'rotating', { v: 1 });
        await sessions.deleteSession('fyers', 'rotating');
        for (const broker of BROKERS) {
          const listed = await collect<SessionInfo>(sessions.listSessions(broker));
          expect(listed.map((info) => info.key).sort()).toEqual([...ACCOUNTS].sort());
          expect(listed.every((info) => info.keyId === 'k1' && info.expiresAt instanceof Date)).toBe(true);
        }
        const all = await collect(sessions.listAllSessions());
        expect(all.map(({ broker, key }) => `${broker}/${key}`).sort()).toEqual(BROKERS.flatMap((b) => ACCOUNTS.map((a) => `${b}/${a}`)).sort());
        expect(await sessions.getSession('fyers', 'XY123456')).toEqual({ accessToken: 'token-fyers-XY123456', accountId: 'XY123456' });
        expect(await sessions.getSession('fyers', 'nobody')).toBeUndefined();
        await sessions.close();

        // Rotation keeps the names (the name key stays k1) and re-seals under k2.
        const rotated = await SessionManager.open({ keyring: ring21, store: backing.open(), namespace: 'prv', privateKeys: true });
        const result = await rotated.rotateKeys({ batchSize: 5 });
        expect(result.unreadable).toBe(0);
        expect(result.rotated).toBeGreaterThanOrEqual(BROKERS.length * ACCOUNTS.length);
        expect(Object.keys(await rotated.keyUsage())).toEqual(['k2']);
        expect((await collect<SessionInfo>(rotated.listSessions('upstox'))).map((i) => [i.key, i.keyId]).sort()).toEqual(
          [...ACCOUNTS].sort().map((a) => [a, 'k2']),
        );
        expect(await rotated.getSession('zerodha-kite', 'ZZ246810')).toEqual({ accessToken: 'token-zerodha-kite-ZZ246810', accountId: 'ZZ246810' });
        expect(await rotated.clearBroker('upstox')).toBe(ACCOUNTS.length);
        expect((await collect(rotated.listSessions('fyers'))).length).toBe(ACCOUNTS.length);
        await rotated.close();

        const dump = await backing.dump();
        expect(dump.length).toBeGreaterThan(0);
        const secrets = [...BROKERS, ...ACCOUNTS, ...BROKERS.flatMap((b) => ACCOUNTS.map((a) => `token-${b}-${a}`))];
        const hits = secrets.flatMap((secret) => dump.flatMap((bytes) => findLeaks(bytes, secret)));
        expect(hits).toEqual([]);
        // Control: the same scan does find a plain-named store's broker and account id.
        const control = await SessionManager.open({ keyring: ring1, store: backing.open(), namespace: 'control' });
        await control.setSession('controlbroker', 'CONTROL-ACCT-777', { v: 1 });
        await control.close();
        const controlDump = await backing.dump();
        expect(controlDump.some((bytes) => findLeaks(bytes, 'CONTROL-ACCT-777').length > 0)).toBe(true);
        expect(controlDump.some((bytes) => findLeaks(bytes, 'controlbroker').length > 0)).toBe(true);

        // The name key must stay: without k1 the store cannot even be addressed.
        expect(await rejection(SessionManager.open({ keyring: new Keyring([{ id: 'k2', key: k2 }]), store: backing.open(), namespace: 'prv', privateKeys: true }))).toBeInstanceOf(KeyringMismatchError);
      } finally {
        await backing.cleanup();
      }
    });

    it('refuses to switch an existing store between plain and private names', async () => {
      const backing = await backend.create();
      const ring = new Keyring([{ id: 'k1', key: randomBytes(32) }]);
      try {
        const priv = await SessionManager.open({ keyring: ring, store: backing.open(), namespace: 'modes', privateKeys: true });
        await priv.setSession('fyers', 'A', { v: 1 });
        await priv.close();
        expect(await rejection(SessionManager.open({ keyring: ring, store: backing.open(), namespace: 'modes' }))).toBeInstanceOf(InvalidOptionsError);
        const plain = await SessionManager.open({ keyring: ring, store: backing.open(), namespace: 'plain' });
        await plain.setSession('fyers', 'A', { v: 1 });
        await plain.close();
        expect(await rejection(SessionManager.open({ keyring: ring, store: backing.open(), namespace: 'plain', privateKeys: true }))).toBeInstanceOf(InvalidOptionsError);
        // An existing plain store stays plain and readable.
        const again = await SessionManager.open({ keyring: ring, store: backing.open(), namespace: 'plain' });
        expect(await again.getSession('fyers', 'A')).toEqual({ v: 1 });
        await again.close();
      } finally {
        await backing.cleanup();
      }
    });
  };
  if (backend.service === undefined) describe(`private key names on ${backend.name}`, suite);
  else describeWithService(backend.service, backend.available, `private key names on ${backend.name}`, suite);
}
