/**
 * The one place that turns (namespace, broker, key) into a storage key.
 *
 * Layout: `<namespace>/<broker>/<key>`. Namespaces and broker ids are identifiers that cannot
 * contain `/`, so the first two `/` always end the namespace and the broker: the mapping is
 * injective (no two distinct triples share a storage key), and the broker prefix
 * `<namespace>/<broker>/` is matched by that broker's keys only (`a/` is not a prefix of
 * `ab/`, `a-b/`, `a:/`...). Store metadata lives at `<namespace>!<name>`, outside every
 * broker's prefix, because `!` cannot appear in a namespace.
 */
import { InvalidSessionKeyError } from './errors.ts';

/** Broker ids and namespaces: a lowercase letter, then up to 63 of `a-z 0-9 _ -`. */
export const IDENTIFIER_PATTERN = /^[a-z][a-z0-9_-]{0,63}$/;
/** The longest session key, in Unicode code points. */
export const MAX_SESSION_KEY_LENGTH = 512;
/** The namespace a manager uses when none is given. */
export const DEFAULT_NAMESPACE = 'default';

function assertIdentifier(value: unknown, what: string): asserts value is string {
  if (typeof value !== 'string') throw new InvalidSessionKeyError(`${what} must be a string, got ${describeType(value)}`);
  if (!IDENTIFIER_PATTERN.test(value)) {
    throw new InvalidSessionKeyError(
      `${what} must be 1 to 64 characters of a-z, 0-9, "_" or "-", starting with a letter`,
    );
  }
}

/**
 * Checks a broker id (`fyers`, `zerodha-kite`, `alpaca_paper`) and returns it.
 * @throws InvalidSessionKeyError
 */
export function validateBrokerId(broker: unknown): string {
  assertIdentifier(broker, 'broker id');
  return broker;
}

/**
 * Checks a namespace and returns it. Same rule as broker ids.
 * @throws InvalidSessionKeyError
 */
export function validateNamespace(namespace: unknown): string {
  assertIdentifier(namespace, 'namespace');
  return namespace;
}

/**
 * Checks a session key and returns it unchanged. A key is any well-formed Unicode string of
 * 1 to 512 code points that is already in NFC. Non-NFC keys are refused rather than silently
 * normalised, so a key reads back exactly as written and two keys that look the same can never
 * be two sessions. The message never repeats the key: a token passed by mistake stays private.
 * @throws InvalidSessionKeyError
 */
export function validateSessionKey(key: unknown): string {
  if (typeof key !== 'string') throw new InvalidSessionKeyError(`session key must be a string, got ${describeType(key)}`);
  if (key.length === 0) throw new InvalidSessionKeyError('session key must not be empty');
  if (!key.isWellFormed()) throw new InvalidSessionKeyError('session key must be well-formed Unicode (it has a lone surrogate)');
  // Count code points only when UTF-16 length alone cannot decide.
  if (key.length > MAX_SESSION_KEY_LENGTH && (key.length > 2 * MAX_SESSION_KEY_LENGTH || [...key].length > MAX_SESSION_KEY_LENGTH)) {
    throw new InvalidSessionKeyError(`session key must be at most ${MAX_SESSION_KEY_LENGTH} characters`);
  }
  if (key.normalize('NFC') !== key) {
    throw new InvalidSessionKeyError('session key must be in Unicode NFC; pass key.normalize("NFC")');
  }
  return key;
}

/** The prefix every storage key of one namespace starts with. */
export function namespacePrefix(namespace: string): string {
  return `${namespace}/`;
}

/** The prefix that every storage key of one broker starts with, and no other key does. */
export function brokerPrefix(namespace: string, broker: string): string {
  return `${namespace}/${broker}/`;
}

/** The storage key of one session. Arguments must already be validated. */
export function storageKey(namespace: string, broker: string, key: string): string {
  return `${namespace}/${broker}/${key}`;
}

/** Splits a storage key of `namespace` back into broker and key, or `undefined` if it is not one. */
export function parseStorageKey(namespace: string, stored: string): { broker: string; key: string } | undefined {
  const head = namespacePrefix(namespace);
  if (!stored.startsWith(head)) return undefined;
  const slash = stored.indexOf('/', head.length);
  if (slash < 0) return undefined;
  return { broker: stored.slice(head.length, slash), key: stored.slice(slash + 1) };
}

/** The storage key of a metadata record (the canary, counters) of one namespace. */
export function metadataKey(namespace: string, name: string): string {
  return `${namespace}!${name}`;
}

/** The prefix of every metadata record of one namespace. */
export function metadataPrefix(namespace: string): string {
  return `${namespace}!`;
}

/** A short name for the type of a refused value, for messages that must not show the value. */
export function describeType(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  return typeof value;
}
