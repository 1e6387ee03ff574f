/**
 * Keys by id, with one primary. New writes use the primary; reads use the id written in each
 * envelope, so adding a new primary while keeping the old key rotates with no downtime.
 *
 * Raw key bytes never stay in the object: each key is expanded with HKDF-SHA256 into one
 * subkey per purpose (today: the AES-256-GCM envelope key), held as a `KeyObject` in a
 * module-private map. `util.inspect`, `JSON.stringify` and `String()` show only the key ids.
 */
import { createSecretKey, hkdfSync, randomBytes, type KeyObject } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { inspect } from 'node:util';
import { KeyringError } from '../errors.ts';
import { PassphraseKeyProvider, type PassphraseOptions } from './passphrase.ts';

/** One key as given to the {@link Keyring} constructor. */
export interface KeyringEntry {
  /** 1 to 32 characters of `A-Z a-z 0-9 _ -`; written into every envelope the key seals. */
  readonly id: string;
  /** Exactly 32 random bytes. */
  readonly key: Uint8Array;
}

/** Key ids: short, so every envelope stays small, and safe to print. */
export const KEY_ID_PATTERN = /^[A-Za-z0-9_-]{1,32}$/;
export const KEY_BYTES = 32;
const BASE64 = /^[A-Za-z0-9+/]{43}=$|^[A-Za-z0-9_-]{43}$/;
const HKDF_SALT = Buffer.from('ordo-sessions/keyring/v1', 'utf8');

/** The purposes a key serves; each gets its own HKDF subkey. */
export type KeyPurpose = 'envelope' | 'storage-key-hmac';

interface KeyringSecrets {
  readonly primaryId: string;
  readonly subkeys: ReadonlyMap<string, Readonly<Record<KeyPurpose, KeyObject>>>;
}

const secrets = new WeakMap<Keyring, KeyringSecrets>();

function deriveSubkey(key: Uint8Array, purpose: KeyPurpose): KeyObject {
  const info = Buffer.from(`ordo-sessions ${purpose}`, 'utf8');
  return createSecretKey(Buffer.from(hkdfSync('sha256', key, HKDF_SALT, info, KEY_BYTES)));
}

function decodeKey(id: string, encoded: string): Buffer {
  if (!BASE64.test(encoded)) {
    throw new KeyringError(`key "${id}" is not the base64 of ${KEY_BYTES} bytes (expected 44 characters of base64, or 43 of base64url)`);
  }
  return Buffer.from(encoded, encoded.endsWith('=') ? 'base64' : 'base64url');
}

/**
 * Holds the keys that seal and open sessions.
 *
 * @example
 * ```ts
 * const keyring = Keyring.fromEnv();                       // ORDO_SESSION_KEYS="k2:<base64>,k1:<base64>"
 * const same = new Keyring([{ id: 'k2', key: randomBytes(32) }]);
 * console.log(keyring.primaryKeyId, keyring.keyIds);       // 'k2' [ 'k2', 'k1' ]
 * ```
 */
export class Keyring {
  readonly #ids: readonly string[];

  /**
   * @param entries the keys, primary first.
   * @throws KeyringError on no keys, a bad id, a duplicate id, or a key that is not 32 bytes.
   */
  constructor(entries: ReadonlyArray<KeyringEntry>) {
    if (!Array.isArray(entries) || entries.length === 0) throw new KeyringError('a keyring needs at least one key');
    const subkeys = new Map<string, Record<KeyPurpose, KeyObject>>();
    for (const [index, entry] of entries.entries()) {
      const { id, key } = (entry ?? {}) as Partial<KeyringEntry>;
      if (typeof id !== 'string' || !KEY_ID_PATTERN.test(id)) {
        throw new KeyringError(`key #${index + 1}: its id must be 1 to 32 characters of A-Z, a-z, 0-9, "_" or "-"`);
      }
      if (subkeys.has(id)) throw new KeyringError(`key id "${id}" appears twice`);
      if (!(key instanceof Uint8Array) || key.length !== KEY_BYTES) {
        throw new KeyringError(`key "${id}" must be exactly ${KEY_BYTES} bytes`);
      }
      if (key.every((byte) => byte === key[0])) {
        throw new KeyringError(`key "${id}" is ${KEY_BYTES} copies of one byte: a placeholder, not a key`);
      }
      subkeys.set(id, { envelope: deriveSubkey(key, 'envelope'), 'storage-key-hmac': deriveSubkey(key, 'storage-key-hmac') });
    }
    this.#ids = Object.freeze([...subkeys.keys()]);
    secrets.set(this, { primaryId: this.#ids[0] as string, subkeys });
  }

  /**
   * Parses the config format `id1:<base64 32 bytes>,id0:<base64 32 bytes>` (primary first).
   * Entries may also be separated by newlines, as in a mounted secret file.
   *
   * @example
   * ```ts
   * const keyring = Keyring.parse(process.env.MY_KEYS ?? '');
   * ```
   * @throws KeyringError, never echoing key material.
   */
  static parse(config: string): Keyring {
    if (typeof config !== 'string') throw new KeyringError('key configuration must be a string');
    const entries = config
      .split(/[,\n]/)
      .map((part) => part.trim())
      .filter((part) => part.length > 0)
      .map((part, index) => {
        const colon = part.indexOf(':');
        if (colon <= 0) throw new KeyringError(`key #${index + 1} is not in the form id:base64`);
        const id = part.slice(0, colon);
        if (!KEY_ID_PATTERN.test(id)) {
          throw new KeyringError(`key #${index + 1}: its id must be 1 to 32 characters of A-Z, a-z, 0-9, "_" or "-"`);
        }
        return { id, key: decodeKey(id, part.slice(colon + 1).trim()) };
      });
    if (entries.length === 0) throw new KeyringError('key configuration holds no keys');
    try {
      return new Keyring(entries);
    } finally {
      for (const entry of entries) entry.key.fill(0);
    }
  }

  /**
   * Reads keys from `ORDO_SESSION_KEYS`, or from the file named by `ORDO_SESSION_KEYS_FILE`
   * (a mounted secret; refused when group or others may read it).
   *
   * @example
   * ```ts
   * const keyring = Keyring.fromEnv();              // process.env
   * const forTests = Keyring.fromEnv({ ORDO_SESSION_KEYS: Keyring.generateKey() });
   * ```
   * @throws KeyringError when neither or both are set, or the value is malformed.
   */
  static fromEnv(env: Readonly<Record<string, string | undefined>> = process.env): Keyring {
    const inline = env['ORDO_SESSION_KEYS'];
    const file = env['ORDO_SESSION_KEYS_FILE'];
    if (inline && file) throw new KeyringError('set ORDO_SESSION_KEYS or ORDO_SESSION_KEYS_FILE, not both');
    if (inline) return Keyring.parse(inline);
    if (file) return Keyring.fromFile(file);
    throw new KeyringError(
      'no session keys configured: set ORDO_SESSION_KEYS (generate one with `npx ordo-sessions keygen`) or ORDO_SESSION_KEYS_FILE',
    );
  }

  /**
   * Reads keys in the config format from a file that only its owner may read (mode 0600 or 0400).
   *
   * @example
   * ```ts
   * const keyring = Keyring.fromFile('/run/secrets/ordo-session-keys');
   * ```
   * @throws KeyringError when the file is missing, unreadable, or readable by group or others.
   */
  static fromFile(path: string): Keyring {
    let mode: number;
    let text: string;
    try {
      mode = statSync(path).mode;
      text = readFileSync(path, 'utf8');
    } catch (error) {
      const code = (error as { code?: string }).code ?? 'error';
      throw new KeyringError(`cannot read the key file ${JSON.stringify(path)} (${code})`);
    }
    if ((mode & 0o077) !== 0) {
      throw new KeyringError(
        `key file ${JSON.stringify(path)} is readable by group or others (mode ${(mode & 0o777).toString(8)}); run chmod 600 on it`,
      );
    }
    return Keyring.parse(text);
  }

  /**
   * A new random key in the config format, `id:<base64 of 32 bytes>`.
   *
   * @example
   * ```ts
   * Keyring.generateKey();        // 'k20261203-3fa9:q0x...='
   * Keyring.generateKey('prod2'); // 'prod2:...'
   * ```
   */
  static generateKey(id?: string): string {
    const keyId = id ?? `k${new Date().toISOString().slice(0, 10).replaceAll('-', '')}-${randomBytes(2).toString('hex')}`;
    if (!KEY_ID_PATTERN.test(keyId)) throw new KeyringError('key id must be 1 to 32 characters of A-Z, a-z, 0-9, "_" or "-"');
    return `${keyId}:${randomBytes(KEY_BYTES).toString('base64')}`;
  }

  /**
   * A key provider that derives the key from a passphrase with scrypt (N=2^17, r=8, p=1) and a
   * per-store random salt kept in the store's metadata. It is lazy: the salt can only be read
   * once the store is known, so `SessionManager.open` resolves it. The same passphrase opens the
   * same store; another one gets `KeyringMismatchError` (caught by the canary).
   *
   * @example
   * ```ts
   * const sessions = await SessionManager.open({ keyring: Keyring.fromPassphrase(process.env.ORDO_PASSPHRASE!), store });
   * ```
   * @throws KeyringError for a passphrase shorter than 8 characters or a bad option.
   */
  static fromPassphrase(passphrase: string, options?: PassphraseOptions): PassphraseKeyProvider {
    return new PassphraseKeyProvider(passphrase, options);
  }

  /**
   * A Keyring is its own {@link KeyProvider}: resolves with itself.
   *
   * @example
   * ```ts
   * const same = await keyring.loadKeyring();
   * ```
   */
  loadKeyring(): Promise<Keyring> {
    return Promise.resolve(this);
  }

  /** The id of the key that seals new writes. */
  get primaryKeyId(): string {
    return this.#ids[0] as string;
  }

  /** Every key id, primary first. */
  get keyIds(): readonly string[] {
    return this.#ids;
  }

  /** Whether the keyring holds a key with this id. */
  has(id: string): boolean {
    return this.#ids.includes(id);
  }

  toJSON(): { primaryKeyId: string; keyIds: readonly string[] } {
    return { primaryKeyId: this.primaryKeyId, keyIds: this.#ids };
  }

  toString(): string {
    return `Keyring(primary ${this.primaryKeyId}, ${this.#ids.length} key${this.#ids.length === 1 ? '' : 's'})`;
  }

  [inspect.custom](): string {
    return this.toString();
  }
}

/**
 * The subkey for one purpose of the key with this id, or `undefined` if the keyring lacks it.
 * Not exported from the package: only the crypto layer calls it.
 */
export function subkeyOf(keyring: Keyring, id: string, purpose: KeyPurpose): KeyObject | undefined {
  return secrets.get(keyring)?.subkeys.get(id)?.[purpose];
}
