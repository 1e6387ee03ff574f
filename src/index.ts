// The whole public API of ordo-sessions, on one screen.
export { SessionManager, DEFAULT_SQLITE_PATH } from './session-manager.ts';
export { BrokerSessions } from './broker-sessions.ts';
export type { SessionManagerOptions, SessionInfo } from './session-manager.ts';
export type { BrokerSessionInfo } from './session-manager.ts';
export type { ExpiryOptions, DailyExpiryOptions } from './expiry.ts';
export { dailyExpiry } from './expiry.ts';
// Change notifications and typed, validated broker views.
export type { SessionChange, SessionChangeListener, WatchOptions, Unwatch } from './watch.ts';
export type { ChangeKind, StoreChange, SubscribeOptions } from './stores/store.ts';
export { SessionSchemaError } from './errors.ts';
export { Keyring } from './crypto/keyring.ts';
export type { KeyringEntry } from './crypto/keyring.ts';
// Key management: providers, passphrases, rotation, nonce budget.
export { PassphraseKeyProvider } from './crypto/passphrase.ts';
export type { PassphraseOptions } from './crypto/passphrase.ts';
export type { KeyProvider, KeyProviderContext, KeySource, ProviderMetadata } from './crypto/key-provider.ts';
export type { RotateKeysOptions, RotationResult, KeyStat } from './rotation.ts';
export type { KeyWarning } from './session-manager.ts';
export { KeyInUseError, RotationAbortedError } from './errors.ts';
export { MemoryStore } from './stores/memory.ts';
export { SqliteStore } from './stores/sqlite.ts';
export type { SqliteStoreOptions } from './stores/sqlite.ts';
export { RedisStore } from './stores/redis.ts';
export type {
  RedisStoreOptions,
  RedisStoreUrlOptions,
  RedisStoreClusterOptions,
  RedisStoreClientOptions,
  RedisClientLike,
  RedisClusterLike,
} from './stores/redis.ts';
export { PostgresStore } from './stores/postgres.ts';
export type { PostgresStoreOptions, PostgresStoreUrlOptions, PostgresStorePoolOptions } from './stores/postgres.ts';
export type {
  SessionStore,
  StoredRecord,
  WriteOptions,
  ListOptions,
  RecordPage,
  CompareAndSetResult,
} from './stores/store.ts';
export type { JsonValue } from './values.ts';
export { DEFAULT_MAX_VALUE_BYTES } from './values.ts';
export { IDENTIFIER_PATTERN, MAX_SESSION_KEY_LENGTH, DEFAULT_NAMESPACE } from './namespace.ts';
export {
  SessionError,
  InvalidSessionKeyError,
  InvalidSessionDataError,
  InvalidExpiryError,
  InvalidOptionsError,
  SessionIntegrityError,
  UnknownKeyIdError,
  KeyringError,
  KeyringMismatchError,
  StoreError,
  StoreUnavailableError,
  SessionClosedError,
} from './errors.ts';
export type { SessionErrorCode } from './errors.ts';
export type { GetOrRefreshOptions, Refresher, RefreshResult } from './refresh.ts';
export { RefreshError, RefreshConflictError, LockTimeoutError, LoginRequiredError, loginRequired } from './errors.ts';

