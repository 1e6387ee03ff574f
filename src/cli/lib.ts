/**
 * What the CLI uses of the library, from the modules themselves rather than the package index:
 * the index also loads the Redis and PostgreSQL stores, and with them `redis` (about 0.2 s to
 * load) and `pg`. The CLI loads a server store only when `--store` names one (see store-url.ts).
 */
export {
  InvalidExpiryError,
  InvalidOptionsError,
  InvalidSessionDataError,
  InvalidSessionKeyError,
  KeyInUseError,
  RotationAbortedError,
  SessionError,
} from '../errors.ts';
export { Keyring } from '../crypto/keyring.ts';
export { dailyExpiry, type ExpiryOptions } from '../expiry.ts';
export { IDENTIFIER_PATTERN } from '../namespace.ts';
export type { RotationResult } from '../rotation.ts';
export { DEFAULT_SQLITE_PATH, SessionManager, type BrokerSessionInfo } from '../session-manager.ts';
export type { SessionStore } from '../stores/store.ts';
export { SqliteStore } from '../stores/sqlite.ts';
