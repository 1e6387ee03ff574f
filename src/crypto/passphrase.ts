/**
 * A keyring derived from a passphrase with scrypt (N = 2^17, r = 8, p = 1: OWASP's floor).
 *
 * The salt is per store: a random 16 bytes and the scrypt parameters are written, in plaintext,
 * to the namespace's metadata (`kdf`) the first time the store is opened, and read back on every
 * later open, so the same passphrase opens the same store. The record is not secret; it is
 * integrity-checked at use by the canary: a swapped salt or edited parameters derive another key,
 * whose canary fails to open, so `SessionManager.open` throws `KeyringMismatchError` and never
 * silently works with another key. Parameters below the floor or above a sane ceiling are refused
 * before any work is done (a store cannot make us spend a gigabyte or weaken the KDF).
 *
 * Derivation uses the async `crypto.scrypt` (about 0.3 s on the thread pool), so the event loop
 * stays free.
 */
import { randomBytes, scrypt } from 'node:crypto';
import { KeyringError } from '../errors.ts';
import type { KeyProvider, KeyProviderContext } from './key-provider.ts';
import { KEY_BYTES, KEY_ID_PATTERN, Keyring } from './keyring.ts';

/** Options of {@link Keyring.fromPassphrase}. */
export interface PassphraseOptions {
  /** The key id written into envelopes. Default `'passphrase'`. */
  readonly keyId?: string;
  /** log2 of scrypt's N for a new store. Default 17; at least 15, at most 20. */
  readonly costLog2?: number;
}

interface KdfParams {
  readonly v: 1;
  readonly alg: 'scrypt';
  readonly logN: number;
  readonly r: number;
  readonly p: number;
  readonly salt: string;
}

/** The metadata name of the salt and parameters record. */
export const KDF_METADATA_NAME = 'kdf';
const MIN_LOG_N = 15;
const MAX_LOG_N = 20;
const SALT_BYTES = 16;

function parseParams(bytes: Uint8Array): KdfParams {
  let params: Partial<KdfParams>;
  try {
    params = JSON.parse(Buffer.from(bytes).toString('utf8')) as Partial<KdfParams>;
  } catch {
    throw new KeyringError('the store\'s passphrase parameters are not valid JSON');
  }
  const { v, alg, logN, r, p, salt } = params;
  if (
    v !== 1 || alg !== 'scrypt' || !Number.isInteger(logN) || (logN as number) < MIN_LOG_N || (logN as number) > MAX_LOG_N ||
    r !== 8 || p !== 1 || typeof salt !== 'string' || !/^[A-Za-z0-9_-]{22}$/.test(salt)
  ) {
    throw new KeyringError('the store\'s passphrase parameters are malformed or outside the allowed range');
  }
  return { v, alg, logN: logN as number, r, p, salt };
}

function derive(passphrase: string, params: KdfParams): Promise<Buffer> {
  const N = 2 ** params.logN;
  // 128 * N * r bytes of working memory, plus headroom; Node's default cap is 32 MiB.
  const maxmem = 128 * N * params.r + 64 * 1024 * 1024;
  return new Promise((resolve, reject) => {
    scrypt(passphrase.normalize('NFC'), Buffer.from(params.salt, 'base64url'), KEY_BYTES, { N, r: params.r, p: params.p, maxmem }, (error, key) => {
      if (error) reject(new KeyringError(`scrypt failed (${(error as { code?: string }).code ?? 'error'})`));
      else resolve(key);
    });
  });
}

/**
 * The {@link KeyProvider} behind {@link Keyring.fromPassphrase}. The passphrase is held in a
 * private field; nothing prints it.
 *
 * @example
 * ```ts
 * const sessions = await SessionManager.open({ keyring: new PassphraseKeyProvider(passphrase, { keyId: 'ops' }), store });
 * ```
 */
export class PassphraseKeyProvider implements KeyProvider {
  readonly #passphrase: string;
  readonly #keyId: string;
  readonly #logN: number;

  constructor(passphrase: string, options: PassphraseOptions = {}) {
    if (typeof passphrase !== 'string' || passphrase.length < 8) throw new KeyringError('a passphrase must be a string of at least 8 characters');
    const keyId = options.keyId ?? 'passphrase';
    if (!KEY_ID_PATTERN.test(keyId)) throw new KeyringError('key id must be 1 to 32 characters of A-Z, a-z, 0-9, "_" or "-"');
    const logN = options.costLog2 ?? 17;
    if (!Number.isInteger(logN) || logN < MIN_LOG_N || logN > MAX_LOG_N) {
      throw new KeyringError(`costLog2 must be an integer from ${MIN_LOG_N} to ${MAX_LOG_N}`);
    }
    this.#passphrase = passphrase;
    this.#keyId = keyId;
    this.#logN = logN;
  }

  /** Reads (or, on a new store, creates) the salt, then derives the key. */
  async loadKeyring(context: KeyProviderContext): Promise<Keyring> {
    let stored = await context.metadata.get(KDF_METADATA_NAME);
    if (stored === undefined) {
      const fresh: KdfParams = { v: 1, alg: 'scrypt', logN: this.#logN, r: 8, p: 1, salt: randomBytes(SALT_BYTES).toString('base64url') };
      const bytes = Buffer.from(JSON.stringify(fresh), 'utf8');
      // Two processes creating the same store at once: whoever loses reads the winner's salt.
      stored = (await context.metadata.create(KDF_METADATA_NAME, bytes)) ? bytes : await context.metadata.get(KDF_METADATA_NAME);
      if (stored === undefined) throw new KeyringError('the store\'s passphrase parameters vanished while being created');
    }
    const key = await derive(this.#passphrase, parseParams(stored));
    try {
      return new Keyring([{ id: this.#keyId, key }]);
    } finally {
      key.fill(0);
    }
  }

  toString(): string {
    return `PassphraseKeyProvider(${this.#keyId})`;
  }

  toJSON(): { keyId: string } {
    return { keyId: this.#keyId };
  }

  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return this.toString();
  }
}
