import { createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { associatedData, envelopeKeyId, FORMAT_VERSION, open, seal, type RecordIdentity } from '../src/crypto/envelope.ts';
import { Keyring } from '../src/crypto/keyring.ts';
import { INTEGRITY_MESSAGE, SessionIntegrityError, UnknownKeyIdError } from '../src/errors.ts';

const golden = JSON.parse(readFileSync(new URL('./fixtures/envelope-v1.json', import.meta.url), 'utf8')) as {
  keyId: string;
  keyHex: string;
  identity: RecordIdentity;
  plaintext: string;
  envelopeHex: string;
};

const keyring = new Keyring([{ id: 'k1', key: randomBytes(32) }]);
const identity: RecordIdentity = { kind: 'session', namespace: 'default', broker: 'fyers', key: 'XY1234', expiresAt: 1_900_000_000_000 };
const plaintext = Buffer.from(JSON.stringify({ accessToken: 'a'.repeat(300), refreshToken: 'r'.repeat(100) }));

function failure(run: () => unknown): unknown {
  try {
    run();
  } catch (error) {
    return error;
  }
  return undefined;
}

describe('envelope format v1', () => {
  it('opens what it sealed', () => {
    expect(open(keyring, seal(keyring, plaintext, identity), identity).equals(plaintext)).toBe(true);
  });

  it('has the documented layout: version, key id, 12-byte nonce, ciphertext, 16-byte tag', () => {
    const envelope = seal(keyring, plaintext, identity);
    expect(envelope[0]).toBe(FORMAT_VERSION);
    expect(envelope[1]).toBe(2);
    expect(envelope.subarray(2, 4).toString()).toBe('k1');
    expect(envelope.length).toBe(2 + 2 + 12 + plaintext.length + 16);
    expect(envelopeKeyId(envelope)).toBe('k1');
    expect(envelope.includes(plaintext.subarray(0, 16))).toBe(false);
  });

  it('opens the golden v1 fixture forever', () => {
    const goldenKeyring = new Keyring([{ id: golden.keyId, key: Buffer.from(golden.keyHex, 'hex') }]);
    const opened = open(goldenKeyring, Buffer.from(golden.envelopeHex, 'hex'), golden.identity);
    expect(opened.toString()).toBe(golden.plaintext);
  });

  it('matches an independent decryption of the golden fixture from the documented format', () => {
    const envelope = Buffer.from(golden.envelopeHex, 'hex');
    const idLength = envelope[1] as number;
    const nonce = envelope.subarray(2 + idLength, 14 + idLength);
    const tag = envelope.subarray(envelope.length - 16);
    const subkey = Buffer.from(
      hkdfSync('sha256', Buffer.from(golden.keyHex, 'hex'), 'ordo-sessions/keyring/v1', 'ordo-sessions envelope', 32),
    );
    const decipher = createDecipheriv('aes-256-gcm', subkey, nonce, { authTagLength: 16 });
    decipher.setAuthTag(tag);
    decipher.setAAD(associatedData(1, golden.keyId, golden.identity));
    const text = Buffer.concat([decipher.update(envelope.subarray(14 + idLength, envelope.length - 16)), decipher.final()]);
    expect(text.toString()).toBe(golden.plaintext);
  });

  it('detects every single-bit flip anywhere in the envelope', () => {
    const envelope = seal(keyring, Buffer.from('{"accessToken":"tok"}'), identity);
    const keyIdBytes = new Set([1, 2, 3]);
    for (let bit = 0; bit < envelope.length * 8; bit++) {
      const flipped = Buffer.from(envelope);
      flipped[bit >> 3]! ^= 1 << (bit & 7);
      const error = failure(() => open(keyring, flipped, identity));
      expect(error, `bit ${bit}`).toBeInstanceOf(SessionIntegrityError);
      if (!keyIdBytes.has(bit >> 3)) expect((error as SessionIntegrityError).code).toBe('ERR_SESSION_INTEGRITY');
    }
  });

  it('detects truncation to every length and any extension', () => {
    const envelope = seal(keyring, plaintext, identity);
    for (let length = 0; length < envelope.length; length++) {
      const error = failure(() => open(keyring, envelope.subarray(0, length), identity));
      expect(error, `length ${length}`).toBeInstanceOf(SessionIntegrityError);
      expect((error as SessionIntegrityError).code).toBe('ERR_SESSION_INTEGRITY');
    }
    for (const extra of [Buffer.from([0]), randomBytes(1), randomBytes(16)]) {
      expect(failure(() => open(keyring, Buffer.concat([envelope, extra]), identity))).toBeInstanceOf(SessionIntegrityError);
    }
  });

  it.each([
    ['another broker', { broker: 'kite' }],
    ['another key', { key: 'XY1235' }],
    ['another namespace', { namespace: 'prod' }],
    ['a changed expiry', { expiresAt: 1_900_000_000_001 }],
    ['no expiry', { expiresAt: null }],
    ['another record kind', { kind: 'metadata' as const }],
  ])('is bound to its identity: opening it as %s fails', (_what, change) => {
    const envelope = seal(keyring, plaintext, identity);
    const error = failure(() => open(keyring, envelope, { ...identity, ...change }));
    expect(error).toBeInstanceOf(SessionIntegrityError);
    expect((error as Error).message).toBe(INTEGRITY_MESSAGE);
  });

  it('fails with the one fixed message, and no cause, under a different key with the same id', () => {
    const other = new Keyring([{ id: 'k1', key: randomBytes(32) }]);
    const error = failure(() => open(other, seal(keyring, plaintext, identity), identity)) as SessionIntegrityError;
    expect(error).toBeInstanceOf(SessionIntegrityError);
    expect(error.message).toBe(INTEGRITY_MESSAGE);
    expect(error.cause).toBeUndefined();
  });

  it('names an unknown key id, never a key', () => {
    const other = new Keyring([{ id: 'k2', key: randomBytes(32) }]);
    const error = failure(() => open(other, seal(keyring, plaintext, identity), identity)) as UnknownKeyIdError;
    expect(error).toBeInstanceOf(UnknownKeyIdError);
    expect(error.code).toBe('ERR_SESSION_UNKNOWN_KEY_ID');
    expect(error.keyId).toBe('k1');
  });

  it('refuses an envelope of an unknown format version', () => {
    const envelope = seal(keyring, plaintext, identity);
    envelope[0] = 2;
    expect(failure(() => open(keyring, envelope, identity))).toBeInstanceOf(SessionIntegrityError);
  });

  it('uses a fresh nonce for every write', () => {
    const nonces = new Set<string>();
    const count = 100_000;
    const small = Buffer.from('{}');
    for (let i = 0; i < count; i++) nonces.add(seal(keyring, small, identity).subarray(4, 16).toString('hex'));
    expect(nonces.size).toBe(count);
  });
});
