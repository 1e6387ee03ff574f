/**
 * Where a keyring comes from when it is not simply given: a secret manager, a KMS, a passphrase
 * whose salt lives in the store. `SessionManager.open` accepts a {@link Keyring} or any
 * {@link KeyProvider} and resolves it once, before the wrong-key check.
 *
 * A provider does no store I/O of its own: the manager hands it a small metadata accessor for
 * the namespace being opened (the passphrase provider keeps its salt there).
 */
import { InvalidOptionsError } from '../errors.ts';
import { Keyring } from './keyring.ts';

/** Plaintext (not secret, not sealed) metadata of the namespace being opened, by name. */
export interface ProviderMetadata {
  /** The bytes stored under `name`, or `undefined`. */
  get(name: string): Promise<Uint8Array | undefined>;
  /** Stores `value` under `name` only if nothing is there yet; resolves with whether it did. */
  create(name: string, value: Uint8Array): Promise<boolean>;
}

/** What a provider is told about the store it is resolved for. */
export interface KeyProviderContext {
  /** The namespace being opened. */
  readonly namespace: string;
  /** Its plaintext metadata (for salts and parameters, never for keys). */
  readonly metadata: ProviderMetadata;
}

/**
 * Supplies the keyring at `SessionManager.open`. Implement it to take keys from Vault, a cloud
 * KMS (unwrap a data key at start-up) or any secret manager; build the {@link Keyring} from the
 * key bytes and zero them afterwards.
 *
 * @example
 * ```ts
 * const fromKms: KeyProvider = {
 *   async loadKeyring() {
 *     const key = await kms.decrypt(wrappedDataKey);           // 32 bytes, held only in memory
 *     try { return new Keyring([{ id: 'kms-2026', key }]); } finally { key.fill(0); }
 *   },
 * };
 * const sessions = await SessionManager.open({ keyring: fromKms, store });
 * ```
 */
export interface KeyProvider {
  /** Resolves with the keyring to use for the store described by `context`. */
  loadKeyring(context: KeyProviderContext): Promise<Keyring>;
}

/** A Keyring or a KeyProvider: what `SessionManager.open` takes as `keyring`. */
export type KeySource = Keyring | KeyProvider;

/** Whether `value` can serve as a key source. */
export function isKeySource(value: unknown): value is KeySource {
  return value instanceof Keyring || (typeof value === 'object' && value !== null && typeof (value as KeyProvider).loadKeyring === 'function');
}

/**
 * Resolves a key source to a keyring.
 * @throws InvalidOptionsError when a provider resolves to something that is not a Keyring;
 *   whatever the provider throws otherwise.
 */
export async function resolveKeySource(source: KeySource, context: KeyProviderContext): Promise<Keyring> {
  if (source instanceof Keyring) return source;
  const keyring = await source.loadKeyring(context);
  if (!(keyring instanceof Keyring)) throw new InvalidOptionsError('a KeyProvider must resolve to a Keyring');
  return keyring;
}
