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

/** Writes `text` as u32 BE length + UTF-8 at `offset`; returns the offset after it. */
function writeLengthPrefixed(target: Buffer, offset: number, text: string): number {
  const length = target.write(text, offset + 4, 'utf8');
  target.writeUInt32BE(length, offset);
  return offset + 4 + length;
}

/** Writes an expiry as i64 BE (-1 for none), without a BigInt for the usual non-negative safe integer. */
function writeExpiry(target: Buffer, offset: number, expiresAt: number | null): void {
  if (expiresAt === null) {
    target.writeInt32BE(-1, offset);
    target.writeInt32BE(-1, offset + 4);
  } else if (expiresAt >= 0 && Number.isSafeInteger(expiresAt)) {
    target.writeUInt32BE(Math.floor(expiresAt / 0x1_0000_0000), offset);
    target.writeUInt32BE(expiresAt >>> 0, offset + 4);
  } else {
    target.writeBigInt64BE(BigInt(expiresAt), offset);
  }
}

/**
 * The additional authenticated data of one record:
 * version | kind | len+keyId | len+namespace | len+broker | len+key | expiry (i64 BE, -1 for none).
 * Built in one allocation (it runs on every seal and open).
 */
export function associatedData(formatVersion: number, keyId: string, identity: RecordIdentity): Buffer {
  const size =
    2 + 16 + 8 +
    Buffer.byteLength(keyId, 'utf8') +
    Buffer.byteLength(identity.namespace, 'utf8') +
    Buffer.byteLength(identity.broker, 'utf8') +
    Buffer.byteLength(identity.key, 'utf8');
  const aad = Buffer.allocUnsafe(size);
  aad[0] = formatVersion;
  aad[1] = KIND_BYTE[identity.kind];
  let offset = writeLengthPrefixed(aad, 2, keyId);
  offset = writeLengthPrefixed(aad, offset, identity.namespace);
  offset = writeLengthPrefixed(aad, offset, identity.broker);
  offset = writeLengthPrefixed(aad, offset, identity.key);
  writeExpiry(aad, offset, identity.expiresAt);
  return aad;
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
  return sealParts(keyring, FORMAT_VERSION, [plaintext], identity);
}

/** Seals the concatenation of `parts` as format `version` under the keyring's primary key. */
function sealParts(keyring: Keyring, version: number, parts: readonly Uint8Array[], identity: RecordIdentity): Buffer {
  const keyId = keyring.primaryKeyId;
  const key = subkeyOf(keyring, keyId, 'envelope');
  if (key === undefined) throw new UnknownKeyIdError(keyId);
  const header = 2 + keyId.length;
  const bodyLength = parts.reduce((total, part) => total + part.length, 0);
  const envelope = Buffer.allocUnsafe(header + NONCE_BYTES + bodyLength + TAG_BYTES);
  envelope[0] = version;
  envelope[1] = keyId.length;
  envelope.write(keyId, 2, 'latin1');
  writeNonce(envelope, header);
  const cipher = createCipheriv(CIPHER, key, envelope.subarray(header, header + NONCE_BYTES), { authTagLength: TAG_BYTES });
  cipher.setAAD(associatedData(version, keyId, identity));
  let offset = header + NONCE_BYTES;
  for (const part of parts) offset += cipher.update(part).copy(envelope, offset);
  offset += cipher.final().copy(envelope, offset);
  cipher.getAuthTag().copy(envelope, offset);
  return envelope;
}

/** The key id written in an envelope's header, or `undefined` if the header is malformed. */
export function envelopeKeyId(envelope: Uint8Array): string | undefined {
  if (envelope.length < 2 || (envelope[0] !== FORMAT_VERSION && envelope[0] !== NAMED_FORMAT_VERSION)) return undefined;
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
  return openVersion(keyring, envelope, identity, FORMAT_VERSION);
}

/** Opens an envelope of format `version`, returning its whole authenticated body. */
function openVersion(keyring: Keyring, envelope: Uint8Array, identity: RecordIdentity, version: number): Buffer {
  const keyId = envelopeKeyId(envelope);
  if (keyId === undefined || envelope[0] !== version) throw new SessionIntegrityError();
  const key = subkeyOf(keyring, keyId, 'envelope');
  if (key === undefined) throw new UnknownKeyIdError(keyId);
  const bytes = Buffer.from(envelope.buffer, envelope.byteOffset, envelope.byteLength);
  const header = 2 + keyId.length;
  const tagStart = bytes.length - TAG_BYTES;
  let body: Buffer | undefined;
  try {
    const decipher = createDecipheriv(CIPHER, key, bytes.subarray(header, header + NONCE_BYTES), { authTagLength: TAG_BYTES });
    decipher.setAuthTag(bytes.subarray(tagStart));
    decipher.setAAD(associatedData(version, keyId, identity));
    body = decipher.update(bytes.subarray(header + NONCE_BYTES, tagStart));
    const tail = decipher.final(); // throws here, after update, when the tag does not verify
    return tail.length === 0 ? body : Buffer.concat([body, tail]);
  } catch {
    body?.fill(0); // unauthenticated plaintext: wipe it, never return it
    throw new SessionIntegrityError();
  }
}

/*
 * Format version 2: a named record, for stores whose storage keys are private (HMACs).
 * The binary layout is version 1's with 0x02 in the first byte; the AAD is version 1's rule with
 * format version 2 (so a v2 body can never open as v1 or the reverse). The plaintext carries
 * the record's name, since the storage key no longer shows it:
 *
 * ```
 * plaintext = name length N (uint16 BE) | name (UTF-8, N bytes) | data
 * ```
 */
export const NAMED_FORMAT_VERSION = 2;
const MAX_NAME_BYTES = 0xffff;

/** The format version in an envelope's first byte, or `undefined` for an empty buffer. */
export function envelopeVersion(envelope: Uint8Array): number | undefined {
  return envelope[0];
}

/**
 * Seals `plaintext` with its `name` inside, as format version 2, under the primary key.
 *
 * @example
 * ```ts
 * const sealed = sealNamed(keyring, 'XY1234', Buffer.from('{"a":1}'), identityOfTheStorageKey);
 * ```
 */
export function sealNamed(keyring: Keyring, name: string, plaintext: Uint8Array, identity: RecordIdentity): Buffer {
  const nameBytes = Buffer.from(name, 'utf8');
  if (nameBytes.length > MAX_NAME_BYTES) throw new SessionIntegrityError();
  const prefix = Buffer.allocUnsafe(2);
  prefix.writeUInt16BE(nameBytes.length, 0);
  return sealParts(keyring, NAMED_FORMAT_VERSION, [prefix, nameBytes, plaintext], identity);
}

/**
 * Opens a format version 2 envelope sealed for `identity`: its name and its data.
 *
 * @example
 * ```ts
 * const { name, plaintext } = openNamed(keyring, sealed, identityOfTheStorageKey);
 * ```
 * @throws SessionIntegrityError for anything that is not an intact v2 envelope of this identity.
 * @throws UnknownKeyIdError when the key id in the header is not in the keyring.
 */
export function openNamed(keyring: Keyring, envelope: Uint8Array, identity: RecordIdentity): { name: string; plaintext: Buffer } {
  const body = openVersion(keyring, envelope, identity, NAMED_FORMAT_VERSION);
  const nameLength = body.length >= 2 ? body.readUInt16BE(0) : -1;
  if (nameLength < 0 || body.length < 2 + nameLength) {
    body.fill(0);
    throw new SessionIntegrityError();
  }
  const name = body.toString('utf8', 2, 2 + nameLength);
  return { name, plaintext: body.subarray(2 + nameLength) };
}
