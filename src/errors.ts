/**
 * Every error ordo-sessions throws is a {@link SessionError} with a stable `code`.
 * Match on `code` (or `instanceof`), never on message text.
 *
 * No error ever carries key material or session data: not in its message, its
 * stack, or its `cause`. Errors from drivers are reduced to a sanitised copy
 * (name, code, message with credentials removed) before they become a `cause`.
 *
 * @example
 * ```ts
 * try {
 *   await sessions.getSession('fyers', accountId);
 * } catch (error) {
 *   if (error instanceof SessionError && error.code === 'ERR_SESSION_INTEGRITY') {
 *     // the stored record was tampered with or written under another key
 *   }
 * }
 * ```
 */

/** Every code a {@link SessionError} can carry. */
export type SessionErrorCode =
  | 'ERR_SESSION_INVALID_KEY'
  | 'ERR_SESSION_INVALID_DATA'
  | 'ERR_SESSION_INVALID_EXPIRY'
  | 'ERR_SESSION_INVALID_OPTIONS'
  | 'ERR_SESSION_INTEGRITY'
  | 'ERR_SESSION_UNKNOWN_KEY_ID'
  | 'ERR_SESSION_KEYRING'
  | 'ERR_SESSION_KEYRING_MISMATCH'
  | 'ERR_SESSION_STORE'
  | 'ERR_SESSION_STORE_UNAVAILABLE'
  | 'ERR_SESSION_CLOSED'
  | 'ERR_SESSION_SCHEMA'
  | 'ERR_SESSION_KEY_IN_USE'
  | 'ERR_SESSION_ROTATION_ABORTED'
  | 'ERR_SESSION_REFRESH'
  | 'ERR_SESSION_REFRESH_CONFLICT'
  | 'ERR_SESSION_LOCK_TIMEOUT'
  | 'ERR_SESSION_LOGIN_REQUIRED';

/**
 * Base class of every ordo-sessions error.
 *
 * @example
 * ```ts
 * if (error instanceof SessionError) console.error(error.code, error.message);
 * ```
 */
export class SessionError extends Error {
  /** A stable, machine-readable code. */
  readonly code: SessionErrorCode;

  constructor(code: SessionErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.name = new.target.name;
  }
}

/**
 * A broker id, session key or namespace breaks the documented rules.
 *
 * @example
 * ```ts
 * await sessions.getSession('Fyers!', 'acct'); // throws InvalidSessionKeyError
 * ```
 */
export class InvalidSessionKeyError extends SessionError {
  constructor(message: string) {
    super('ERR_SESSION_INVALID_KEY', message);
  }
}

/**
 * A session value is not exact JSON, is too large, or fails its schema.
 * The message names the offending path, never the value.
 *
 * @example
 * ```ts
 * await sessions.setSession('fyers', 'acct', { at: new Date() }); // throws: $.at is a Date
 * ```
 */
export class InvalidSessionDataError extends SessionError {
  /** JSON paths (`$.a[0].b`) of the members that were refused. */
  readonly paths: readonly string[];

  constructor(message: string, paths: readonly string[] = []) {
    super('ERR_SESSION_INVALID_DATA', message);
    this.paths = paths;
  }
}

/**
 * A `ttlMs` or `expiresAt` is not a usable time: not a number, not an integer, in the past, or both given.
 *
 * @example
 * ```ts
 * await sessions.setSession('fyers', 'acct', data, { ttlMs: -1 }); // throws InvalidExpiryError
 * ```
 */
export class InvalidExpiryError extends SessionError {
  constructor(message: string) {
    super('ERR_SESSION_INVALID_EXPIRY', message);
  }
}

/**
 * An option passed to a constructor or `open` is not valid.
 *
 * @example
 * ```ts
 * await SessionManager.open({ keyring, maxValueBytes: 0 }); // throws InvalidOptionsError
 * ```
 */
export class InvalidOptionsError extends SessionError {
  constructor(message: string) {
    super('ERR_SESSION_INVALID_OPTIONS', message);
  }
}

/** The one message of every integrity failure: it says nothing about why. */
export const INTEGRITY_MESSAGE = 'Stored session failed its integrity check';

/**
 * A stored record failed to open: tampered, truncated, moved to another identity,
 * or written under a different key with the same id. The message is always the same.
 *
 * @example
 * ```ts
 * try { await fyers.getSession('acct'); }
 * catch (e) { if (e instanceof SessionIntegrityError) alertSecurityTeam(); }
 * ```
 */
export class SessionIntegrityError extends SessionError {
  constructor(code: 'ERR_SESSION_INTEGRITY' | 'ERR_SESSION_UNKNOWN_KEY_ID' = 'ERR_SESSION_INTEGRITY', message = INTEGRITY_MESSAGE) {
    super(code, message);
  }
}

/**
 * A record was sealed under a key id this keyring does not hold.
 * The message names the id (ids are not secret), never any key. It is a
 * {@link SessionIntegrityError} too (the record cannot be opened, and a corrupted id byte
 * looks just like a missing key), with its own code.
 *
 * @example
 * ```ts
 * catch (e) { if (e instanceof UnknownKeyIdError) console.error('missing key', e.keyId); }
 * ```
 */
export class UnknownKeyIdError extends SessionIntegrityError {
  /** The key id found in the record. */
  readonly keyId: string;

  constructor(keyId: string) {
    super('ERR_SESSION_UNKNOWN_KEY_ID', `Stored session was sealed under key id "${keyId}", which the keyring does not hold`);
    this.keyId = keyId;
  }
}

/**
 * The key configuration is malformed: a bad id, a key of the wrong length, a duplicate id, bad base64.
 *
 * @example
 * ```ts
 * Keyring.parse('k1:dG9vLXNob3J0'); // throws KeyringError: key "k1" must be 32 bytes
 * ```
 */
export class KeyringError extends SessionError {
  constructor(message: string) {
    super('ERR_SESSION_KEYRING', message);
  }
}

/**
 * No configured key can open this store's canary: the store was written with other keys.
 * Opening it would otherwise look empty or overwrite its sessions.
 *
 * @example
 * ```ts
 * await SessionManager.open({ keyring: wrongKeys }); // throws KeyringMismatchError
 * ```
 */
export class KeyringMismatchError extends SessionError {
  constructor(message: string, code: 'ERR_SESSION_KEYRING_MISMATCH' | 'ERR_SESSION_KEY_IN_USE' = 'ERR_SESSION_KEYRING_MISMATCH') {
    super(code, message);
  }
}

/**
 * The keyring lacks a key that still protects records of this store: opening would leave them
 * unreadable. Add the key back and run `rotateKeys()`, or open with `allowMissingKeys: true`.
 * A {@link KeyringMismatchError} with its own code.
 *
 * @example
 * ```ts
 * catch (e) { if (e instanceof KeyInUseError) console.error(`key ${e.keyId} still protects ${e.records} records`); }
 * ```
 */
export class KeyInUseError extends KeyringMismatchError {
  /** The id of the missing key (ids are not secret). */
  readonly keyId: string;
  /** How many live records it still protects. */
  readonly records: number;

  constructor(keyId: string, records: number) {
    super(
      `key "${keyId}" is not in the keyring but still protects ${records} record${records === 1 ? '' : 's'} of this store: add it back and run rotateKeys(), or open with allowMissingKeys: true`,
      'ERR_SESSION_KEY_IN_USE',
    );
    this.keyId = keyId;
    this.records = records;
  }
}

/**
 * `rotateKeys()` stopped because its `signal` aborted. Every record stays readable (each is
 * under its old key or already under the primary); run it again to resume. `result` says how
 * far it got.
 *
 * @example
 * ```ts
 * catch (e) { if (e instanceof RotationAbortedError) console.log('rotated so far', e.result.rotated); }
 * ```
 */
export class RotationAbortedError extends SessionError {
  /** Counts up to the moment it stopped. */
  readonly result: { readonly scanned: number; readonly rotated: number; readonly skipped: number; readonly unreadable: number; readonly renamed?: number };

  constructor(result: RotationAbortedError['result']) {
    super('ERR_SESSION_ROTATION_ABORTED', `key rotation aborted after ${result.scanned} records; run it again to resume`);
    this.result = result;
  }
}

/**
 * The storage backend failed. `cause` holds a sanitised copy of the driver's error.
 *
 * @example
 * ```ts
 * catch (e) { if (e instanceof StoreError) retryLater(); }
 * ```
 */
export class StoreError extends SessionError {
  constructor(message: string, options?: { cause?: unknown; code?: 'ERR_SESSION_STORE' | 'ERR_SESSION_STORE_UNAVAILABLE' }) {
    super(options?.code ?? 'ERR_SESSION_STORE', message, { cause: sanitizeCause(options?.cause) });
  }
}

/**
 * The storage backend could not be reached within its time bound.
 *
 * @example
 * ```ts
 * catch (e) { if (e instanceof StoreUnavailableError) serveFromLastKnownGood(); }
 * ```
 */
export class StoreUnavailableError extends StoreError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, { cause: options?.cause, code: 'ERR_SESSION_STORE_UNAVAILABLE' });
  }
}

/**
 * The manager (or store) was used after `close()`.
 *
 * @example
 * ```ts
 * await sessions.close();
 * await sessions.getSession('fyers', 'acct'); // throws SessionClosedError
 * ```
 */
export class SessionClosedError extends SessionError {
  constructor(what = 'SessionManager') {
    super('ERR_SESSION_CLOSED', `${what} is closed`);
  }
}

/**
 * A refresher passed to `getOrRefresh` threw, or returned something that is not a valid session.
 * `cause` is the refresher's own error object (your code's error, passed through as is), or the
 * {@link InvalidSessionDataError} / {@link InvalidExpiryError} its result failed. The message
 * never repeats the cause's message. The old session, if any, is left as it was.
 *
 * @example
 * ```ts
 * catch (e) { if (e instanceof RefreshError) log.warn('refresh failed', e.code, e.cause); }
 * ```
 */
export class RefreshError extends SessionError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_SESSION_REFRESH', message, options);
  }
}

/**
 * A refresh finished but could not be written: the session changed since it was read under the
 * lease (the lease ran out and another worker refreshed it). The newer session stands.
 *
 * @example
 * ```ts
 * catch (e) { if (e instanceof RefreshConflictError) session = await fyers.getSession(accountId); }
 * ```
 */
export class RefreshConflictError extends SessionError {
  constructor(message = 'the session changed while it was being refreshed; the newer session was kept') {
    super('ERR_SESSION_REFRESH_CONFLICT', message);
  }
}

/**
 * `getOrRefresh` waited `waitTimeoutMs` for another worker's refresh (or for the lease) and gave up.
 *
 * @example
 * ```ts
 * catch (e) { if (e instanceof LockTimeoutError) retryLater(); }
 * ```
 */
export class LockTimeoutError extends SessionError {
  constructor(message: string) {
    super('ERR_SESSION_LOCK_TIMEOUT', message);
  }
}

/**
 * A session cannot be refreshed and needs a new interactive login (a Kite-style daily token).
 * Throw it from a refresher (or `throw loginRequired()`); `getOrRefresh` passes it to every
 * waiting caller unwrapped.
 *
 * @example
 * ```ts
 * await kite.getOrRefresh(userId, async () => { throw new LoginRequiredError(); });
 * ```
 */
export class LoginRequiredError extends SessionError {
  constructor(message = 'a new login is needed: this session cannot be refreshed') {
    super('ERR_SESSION_LOGIN_REQUIRED', message);
  }
}

/**
 * A {@link LoginRequiredError} to throw from a refresher.
 *
 * @example
 * ```ts
 * await kite.getOrRefresh(userId, async () => { throw loginRequired(); });
 * ```
 */
export function loginRequired(message?: string): LoginRequiredError {
  return new LoginRequiredError(message);
}

/**
 * A stored session no longer fits the schema its broker view was given (the schema changed, or
 * another writer stored other data). Lists the failing paths, never the values or the schema's messages.
 *
 * @example
 * ```ts
 * const fyers = sessions.forBroker('fyers', { schema: FyersSession });
 * try { await fyers.getSession('XY1234'); }
 * catch (e) { if (e instanceof SessionSchemaError) await relogin(); }
 * ```
 */
export class SessionSchemaError extends SessionError {
  /** JSON paths (`$.a[0].b`) that failed the schema. */
  readonly paths: readonly string[];

  constructor(paths: readonly string[]) {
    super('ERR_SESSION_SCHEMA', `Stored session does not match its schema at ${paths.join(', ')}`);
    this.paths = paths;
  }
}

const CREDENTIALS_IN_URL = /([a-z][a-z0-9+.-]*:\/\/)[^/@\s]*@/gi;

/** Removes credentials from URLs that a driver may have put in its message. */
export function redactUrls(text: string): string {
  return text.replace(CREDENTIALS_IN_URL, '$1***@');
}

/**
 * Reduces a driver error to what is safe to keep: its name, code and message (URL credentials
 * removed), and the same for its own cause. Driver errors can hold the failed command, its
 * arguments (sealed bytes), or a connection string with a password; none of that survives.
 */
function sanitizeCause(cause: unknown, depth = 0): Error | undefined {
  if (cause === undefined || cause === null) return undefined;
  if (cause instanceof SessionError) return cause;
  const source = cause instanceof Error ? cause : new Error(String(cause));
  const copy = new Error(redactUrls(source.message));
  copy.name = source.name;
  const code = (source as { code?: unknown }).code;
  if (typeof code === 'string' || typeof code === 'number') {
    Object.defineProperty(copy, 'code', { value: code, enumerable: true });
  }
  copy.stack = `${copy.name}: ${copy.message}`;
  if (depth < 3 && source.cause !== undefined) {
    const inner = sanitizeCause(source.cause, depth + 1);
    if (inner) Object.defineProperty(copy, 'cause', { value: inner, enumerable: false, configurable: true });
  }
  return copy;
}
