/**
 * Private storage keys: with `privateKeys: true` a store holds `<namespace>/<B>/<K>` where
 * `B = HMAC(namespace, broker)` (16 bytes) and `K = HMAC(namespace, broker, key)` (32 bytes),
 * base64url, under the `'storage-key-hmac'` HKDF subkey of one long-lived key (the *name key*,
 * recorded in the store's metadata when the store is created, changed by `rotateKeys({ renameKeys: true })`). A raw dump shows neither broker
 * names nor account ids; listing one broker is still an exact prefix. Records are sealed as
 * envelope format 2 with the session key inside, bound (AAD) to their storage key, so listing
 * and rotation can open a record from its storage key alone.
 */
import { createHmac, type KeyObject } from 'node:crypto';
import type { RecordIdentity } from './crypto/envelope.ts';
import { subkeyOf, type Keyring } from './crypto/keyring.ts';
import { KeyringMismatchError } from './errors.ts';
import { namespacePrefix } from './namespace.ts';

/** The metadata name of the naming mode record. */
export const NAMES_METADATA_NAME = 'names';

/** What the `names` metadata record says (plaintext JSON: key ids are not secret). */
export interface NamesMode {
  readonly v: 1;
  readonly mode: 'private';
  readonly nameKeyId: string;
  /** Set while `rotateKeys({ renameKeys: true })` moves records to storage keys named with this key id. */
  readonly renamingTo?: string;
}

const SEGMENT = /^[A-Za-z0-9_-]+$/;

function lengthPrefixed(hmac: ReturnType<typeof createHmac>, text: string): void {
  const bytes = Buffer.from(text, 'utf8');
  const length = Buffer.allocUnsafe(4);
  length.writeUInt32BE(bytes.length, 0);
  hmac.update(length).update(bytes);
}

/** Parses the `names` record; `undefined` if it is not one we wrote. */
export function parseNamesMode(bytes: Uint8Array): NamesMode | undefined {
  try {
    const value = JSON.parse(Buffer.from(bytes).toString('utf8')) as Partial<NamesMode>;
    if (value.v === 1 && value.mode === 'private' && typeof value.nameKeyId === 'string' && (value.renamingTo === undefined || typeof value.renamingTo === 'string')) {
      return value as NamesMode;
    }
  } catch {
    // fall through
  }
  return undefined;
}

/** Turns broker and key into private storage keys, and storage keys back into sealed identities. */
export class PrivateNames {
  readonly #key: KeyObject;
  readonly #namespace: string;
  /** The key id whose subkey names records. */
  readonly keyId: string;

  /** @throws KeyringMismatchError when the keyring lacks the name key. */
  constructor(keyring: Keyring, nameKeyId: string, namespace: string) {
    const key = subkeyOf(keyring, nameKeyId, 'storage-key-hmac');
    if (key === undefined) {
      throw new KeyringMismatchError(
        `this store's storage keys are private, named with key "${nameKeyId}", which the keyring lacks: it must stay in the keyring for as long as the store exists`,
      );
    }
    this.#key = key;
    this.#namespace = namespace;
    this.keyId = nameKeyId;
  }

  /** The prefix of every storage key of one broker (and of no other). */
  brokerPrefix(broker: string): string {
    return `${namespacePrefix(this.#namespace)}${this.#brokerSegment(broker)}/`;
  }

  /** The storage key of one session. */
  storageKey(broker: string, key: string): string {
    const hmac = createHmac('sha256', this.#key).update('k');
    lengthPrefixed(hmac, this.#namespace);
    lengthPrefixed(hmac, broker);
    lengthPrefixed(hmac, key);
    return `${this.brokerPrefix(broker)}${hmac.digest('base64url')}`;
  }

  /** The identity a record at `stored` is sealed for (its storage key's segments), or `undefined`. */
  identityOf(stored: string, expiresAt: number | null): RecordIdentity | undefined {
    const head = namespacePrefix(this.#namespace);
    if (!stored.startsWith(head)) return undefined;
    const rest = stored.slice(head.length);
    const slash = rest.indexOf('/');
    if (slash < 0) return undefined;
    const broker = rest.slice(0, slash);
    const key = rest.slice(slash + 1);
    if (!SEGMENT.test(broker) || !SEGMENT.test(key)) return undefined;
    return { kind: 'session', namespace: this.#namespace, broker, key, expiresAt };
  }

  #brokerSegment(broker: string): string {
    const hmac = createHmac('sha256', this.#key).update('b');
    lengthPrefixed(hmac, this.#namespace);
    lengthPrefixed(hmac, broker);
    return hmac.digest().subarray(0, 16).toString('base64url');
  }

  toString(): string {
    return 'PrivateNames';
  }
}
