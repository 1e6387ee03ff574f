/**
 * The sealed record: a versioned binary envelope around AES-256-GCM.
 *
 * Format version 1:
 *
 * ```
 * offset  size  field
 * 0       1     format version (0x01)
 * 1       1     key id length L (1..32)
 * 2       L     key id (ASCII)
 * 2+L     12    nonce (random, never reused)
 * 14+L    n     ciphertext
 * 14+L+n  16    GCM tag (always 16 bytes)
 * ```
 *
 * The additional authenticated data binds the ciphertext to where it is stored: format version,
 * key id, record kind, namespace, broker, key and expiry, each length-prefixed so no two
 * identities encode alike. A ciphertext copied to another broker's or key's row, or whose
 * expiry was edited in the store, fails to open. Any failure to open throws
 * {@link SessionIntegrityError} (one fixed message, no cause) or {@link UnknownKeyIdError};
 * no partial plaintext ever leaves this module. No I/O happens here.
 */
import { createCipheriv, createDecipheriv, randomFillSync } from 'node:crypto';
import { SessionIntegrityError, UnknownKeyIdError } from '../errors.ts';
import { type Keyring, subkeyOf } from './keyring.ts';

export const FORMAT_VERSION = 1;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
const CIPHER = 'aes-256-gcm';

/** What a record is: a session, or the store metadata the manager keeps beside them. */
export type RecordKind = 'session' | 'metadata';
const KIND_BYTE: Record<RecordKind, number> = { session: 1, metadata: 2 };

/** Where a record lives: what its ciphertext is bound to. */
export interface RecordIdentity {
  readonly kind: RecordKind;
  readonly namespace: string;
  /** Empty for metadata records. */
  readonly broker: string;
  readonly key: string;
  readonly expiresAt: number | null;
}

/**
 * Random nonces drawn from a buffer filled by the CSPRNG 4096 at a time: one
 * `randomFillSync` per 4096 writes instead of one `randomBytes(12)` per write. Each byte of
 * the pool is used once, so nonces are exactly as random and as unique as one call per write.
 */
const pool = Buffer.allocUnsafe(NONCE_BYTES * 4096);
let poolOffset = pool.length;

function writeNonce(target: Buffer, offset: number): void {
  if (poolOffset === pool.length) {
    randomFillSync(pool);
    poolOffset = 0;
  }
  pool.copy(target, offset, poolOffset, poolOffset + NONCE_BYTES);
  pool.fill(0, poolOffset, poolOffset + NONCE_BYTES);
  poolOffset += NONCE_BYTES;
}

function lengthPrefixed(parts: Buffer[], text: string): void {
  const bytes = Buffer.from(text, 'utf8');
  const length = Buffer.allocUnsafe(4);
  length.writeUInt32BE(bytes.length, 0);
  parts.push(length, bytes);
}

/** The additional authenticated data of one record. */
export function associatedData(formatVersion: number, keyId: string, identity: RecordIdentity): Buffer {
  const parts: Buffer[] = [Buffer.from([formatVersion, KIND_BYTE[identity.kind]])];
  lengthPrefixed(parts, keyId);
  lengthPrefixed(parts, identity.namespace);
  lengthPrefixed(parts, identity.broker);
  lengthPrefixed(parts, identity.key);
  const expiry = Buffer.allocUnsafe(8);
  expiry.writeBigInt64BE(identity.expiresAt === null ? -1n : BigInt(identity.expiresAt), 0);
  parts.push(expiry);
  return Buffer.concat(parts);
}

/**
 * Seals `plaintext` under the keyring's primary key, bound to `identity`.
 *
 * @example
 * ```ts
 * const sealed = seal(keyring, Buffer.from('{"a":1}'), { kind: 'session', namespace: 'default', broker: 'fyers', key: 'acct', expiresAt: null });
 * ```
 */
export function seal(keyring: Keyring, plaintext: Uint8Array, identity: RecordIdentity): Buffer {
  const keyId = keyring.primaryKeyId;
  const key = subkeyOf(keyring, keyId, 'envelope');
  if (key === undefined) throw new UnknownKeyIdError(keyId);
  const header = 2 + keyId.length;
  const envelope = Buffer.allocUnsafe(header + NONCE_BYTES + plaintext.length + TAG_BYTES);
  envelope[0] = FORMAT_VERSION;
  envelope[1] = keyId.length;
  envelope.write(keyId, 2, 'latin1');
  writeNonce(envelope, header);
  const cipher = createCipheriv(CIPHER, key, envelope.subarray(header, header + NONCE_BYTES), { authTagLength: TAG_BYTES });
  cipher.setAAD(associatedData(FORMAT_VERSION, keyId, identity));
  let offset = header + NONCE_BYTES;
  offset += cipher.update(plaintext).copy(envelope, offset);
  offset += cipher.final().copy(envelope, offset);
  cipher.getAuthTag().copy(envelope, offset);
  return envelope;
}

/** The key id written in an envelope's header, or `undefined` if the header is malformed. */
export function envelopeKeyId(envelope: Uint8Array): string | undefined {
  if (envelope.length < 2 || envelope[0] !== FORMAT_VERSION) return undefined;
  const length = envelope[1] as number;
  if (length < 1 || length > 32 || envelope.length < 2 + length + NONCE_BYTES + TAG_BYTES) return undefined;
  const id = Buffer.from(envelope.buffer, envelope.byteOffset + 2, length).toString('latin1');
  return /^[A-Za-z0-9_-]+$/.test(id) ? id : undefined;
}

/**
 * Opens an envelope sealed for `identity`.
 *
 * @example
 * ```ts
 * const plaintext = open(keyring, sealed, identity);
 * ```
 * @throws SessionIntegrityError for any malformed, tampered, moved or wrong-key envelope.
 * @throws UnknownKeyIdError when the key id in the header is not in the keyring.
 */
export function open(keyring: Keyring, envelope: Uint8Array, identity: RecordIdentity): Buffer {
  const keyId = envelopeKeyId(envelope);
  if (keyId === undefined) throw new SessionIntegrityError();
  const key = subkeyOf(keyring, keyId, 'envelope');
  if (key === undefined) throw new UnknownKeyIdError(keyId);
  const bytes = Buffer.from(envelope.buffer, envelope.byteOffset, envelope.byteLength);
  const header = 2 + keyId.length;
  const tagStart = bytes.length - TAG_BYTES;
  let body: Buffer | undefined;
  try {
    const decipher = createDecipheriv(CIPHER, key, bytes.subarray(header, header + NONCE_BYTES), { authTagLength: TAG_BYTES });
    decipher.setAuthTag(bytes.subarray(tagStart));
    decipher.setAAD(associatedData(FORMAT_VERSION, keyId, identity));
    body = decipher.update(bytes.subarray(header + NONCE_BYTES, tagStart));
    const tail = decipher.final(); // throws here, after update, when the tag does not verify
    return tail.length === 0 ? body : Buffer.concat([body, tail]);
  } catch {
    body?.fill(0); // unauthenticated plaintext: wipe it, never return it
    throw new SessionIntegrityError();
  }
}
