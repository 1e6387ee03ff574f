/**
 * getOrRefresh: at most one refresh of a session at a time, across every process sharing the store.
 *
 * - In one process (one manager), concurrent calls for the same session share one promise: a
 *   call that joins one in flight shares its refresher and options, though its own
 *   `waitTimeoutMs` still bounds its wait.
 * - Across processes, the refresher runs only under the store's lease on that session
 *   (`acquireLease`/`releaseLease`, a random token per attempt). Whoever takes it reads the
 *   session again, since another worker may have refreshed it meanwhile, and only then refreshes.
 * - Fencing: the write-back is a compare-and-set against the version read under the lease, so a
 *   refresher that outlived its lease can never overwrite a newer session (RefreshConflictError).
 * - Everyone else polls, with small jittered backoff, until the session is fresh or the lease is
 *   free to take; `waitTimeoutMs` bounds each caller's whole wait (LockTimeoutError).
 *
 * A refresher that throws releases the lease and writes nothing. Callers sharing its promise in
 * this process all get the RefreshError (or LoginRequiredError). Waiters in other processes do not
 * see that error: they find the lease free and the session still stale, so one of them takes the
 * lease and runs its own refresher (at most one such retry at a time, per process that waits).
 *
 * The lease is not renewed while the refresher runs: give `lockTtlMs` a good margin over the
 * slowest refresh. A refresher that outlives it cannot overwrite anything (fencing), but another
 * worker may have refreshed meanwhile, which a broker with single-use refresh tokens will notice.
 *
 * This module is policy (manager layer): it sees plaintext only through the `read`/`seal`
 * callbacks the manager gives it, and bytes-in-bytes-out through the store.
 */
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  InvalidExpiryError,
  InvalidOptionsError,
  InvalidSessionDataError,
  LockTimeoutError,
  LoginRequiredError,
  RefreshConflictError,
  RefreshError,
} from './errors.ts';
import { resolveExpiry } from './expiry.ts';
import { callStore } from './store-calls.ts';
import type { SessionStore } from './stores/store.ts';

/**
 * What a refresher returns: the new session data, and when it expires (`expiresAt`, a Date or
 * epoch ms, or `ttlMs`; neither: it never expires). Validated exactly like `setSession`.
 *
 * @example
 * ```ts
 * const result: RefreshResult<FyersSession> = { data: next, ttlMs: 8 * 3600_000 };
 * ```
 */
export type RefreshResult<T> =
  | { readonly data: T; readonly expiresAt: Date | number; readonly ttlMs?: undefined }
  | { readonly data: T; readonly ttlMs: number; readonly expiresAt?: undefined }
  | { readonly data: T; readonly expiresAt?: undefined; readonly ttlMs?: undefined };

/**
 * User code that turns the current session (possibly expired; `undefined` when there is none)
 * into a new one. Throw {@link LoginRequiredError} when only a new login can help.
 *
 * @example
 * ```ts
 * const refresher: Refresher<FyersSession> = async (current) => {
 *   if (!current) throw loginRequired();
 *   const next = await fyersApi.refresh(current.refreshToken, pin);
 *   return { data: next, expiresAt: next.expiresAt };
 * };
 * ```
 */
export type Refresher<T> = (current: T | undefined) => Promise<RefreshResult<T>> | RefreshResult<T>;

/**
 * Options of `getOrRefresh`. All durations in milliseconds.
 *
 * @example
 * ```ts
 * const options: GetOrRefreshOptions = { refreshBeforeMs: 60_000, lockTtlMs: 30_000, waitTimeoutMs: 60_000 };
 * ```
 */
export interface GetOrRefreshOptions {
  /** Refresh a session this close to its expiry (or past it). Default 60 000. */
  readonly refreshBeforeMs?: number;
  /** How long the lease holds if its holder dies; longer than any refresh should take. Default 30 000. */
  readonly lockTtlMs?: number;
  /** The longest a caller waits, for the lease or for another caller's refresh. Default 60 000. */
  readonly waitTimeoutMs?: number;
}

/** What the manager gives this module about one session. */
export interface RefreshTarget<T> {
  readonly store: SessionStore;
  /** The session's storage key; also the name of its lease. */
  readonly location: string;
  /** The manager's clock (epoch ms), which decides freshness and expiry. */
  readonly clock: () => number;
  /** Calls for the same location in flight in this manager. */
  readonly inflight: Map<string, Promise<unknown>>;
  /** The session, opened, whether expired or not, with its version; `undefined` when absent. */
  read(): Promise<VersionedSession<T> | undefined>;
  /** Validates and seals `data` for this session with `expiresAt`; returns the bytes and the data as read back. */
  seal(data: unknown, expiresAt: number | null): { sealed: Uint8Array; data: T };
}

/** A session as read for a refresh. */
export interface VersionedSession<T> {
  readonly data: T;
  readonly version: string;
  readonly expiresAt: number | null;
}

type LeaseStore = SessionStore & Required<Pick<SessionStore, 'acquireLease' | 'releaseLease'>>;

function hasLeases(store: SessionStore): store is LeaseStore {
  return typeof store.acquireLease === 'function' && typeof store.releaseLease === 'function';
}

interface Settings {
  readonly refreshBeforeMs: number;
  readonly lockTtlMs: number;
  readonly waitTimeoutMs: number;
}

const DEFAULTS: Settings = { refreshBeforeMs: 60_000, lockTtlMs: 30_000, waitTimeoutMs: 60_000 };
const KNOWN_OPTIONS = new Set(Object.keys(DEFAULTS));
const KNOWN_RESULT_KEYS = new Set(['data', 'expiresAt', 'ttlMs']);
const MAX_DURATION_MS = 2_147_483_647; // the longest timer Node keeps
const FIRST_BACKOFF_MS = 5;
const MAX_BACKOFF_MS = 100;

/** Validated options with their defaults. @throws InvalidOptionsError */
export function refreshSettings(options: unknown): Settings {
  if (options === undefined) return DEFAULTS;
  if (typeof options !== 'object' || options === null) throw new InvalidOptionsError('getOrRefresh options must be an object');
  for (const name of Object.keys(options)) {
    if (!KNOWN_OPTIONS.has(name)) throw new InvalidOptionsError(`unknown getOrRefresh option "${name.slice(0, 40)}"`);
  }
  const given = options as Record<string, unknown>;
  const pick = (name: keyof Settings, min: number): number => {
    const value = given[name] ?? DEFAULTS[name];
    if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min || value > MAX_DURATION_MS) {
      throw new InvalidOptionsError(`${name} must be an integer number of milliseconds from ${min} to ${MAX_DURATION_MS}`);
    }
    return value;
  };
  return { refreshBeforeMs: pick('refreshBeforeMs', 0), lockTtlMs: pick('lockTtlMs', 1), waitTimeoutMs: pick('waitTimeoutMs', 1) };
}

/**
 * The session, refreshed first if it is missing, expired, or within `refreshBeforeMs` of expiry.
 * @throws RefreshError, RefreshConflictError, LockTimeoutError, LoginRequiredError, StoreError,
 *   SessionIntegrityError (a tampered record is never refreshed over), InvalidOptionsError
 */
export async function getOrRefresh<T>(target: RefreshTarget<T>, refresher: Refresher<T>, options?: GetOrRefreshOptions): Promise<T> {
  const settings = refreshSettings(options);
  if (typeof refresher !== 'function') throw new InvalidOptionsError('getOrRefresh needs a refresher function');
  const { store } = target;
  if (!hasLeases(store)) {
    throw new InvalidOptionsError(`the ${store.kind} store has no leases (acquireLease/releaseLease): getOrRefresh needs them`);
  }
  let round = target.inflight.get(target.location) as Promise<T> | undefined;
  if (round === undefined) {
    const current = await target.read();
    if (current !== undefined && isFresh(current, target.clock(), settings)) return current.data;
    round = target.inflight.get(target.location) as Promise<T> | undefined; // another call started one while we read
    if (round === undefined) {
      const started = refreshRound(store, target, refresher, settings, current?.version);
      const forget = (): void => {
        clearTimeout(stale);
        if (target.inflight.get(target.location) === started) target.inflight.delete(target.location);
      };
      // A refresher that hangs past its lease must not hold this process's later callers hostage:
      // they start a new round (the hung one, should it ever finish, is fenced off).
      const stale = setTimeout(forget, Math.min(settings.lockTtlMs + settings.waitTimeoutMs, MAX_DURATION_MS));
      stale.unref();
      round = started;
      target.inflight.set(target.location, started);
      started.then(forget, forget);
    }
  }
  // Each caller gets its own copy: one caller mutating its session changes nobody else's.
  return structuredClone(await withinDeadline(round, settings.waitTimeoutMs));
}

/** One refresh attempt for this process: take the lease (or see someone else's refresh land), re-read, refresh, write. */
async function refreshRound<T>(
  store: LeaseStore,
  target: RefreshTarget<T>,
  refresher: Refresher<T>,
  settings: Settings,
  seenVersion: string | undefined,
): Promise<T> {
  const { location } = target;
  const giveUpAt = performance.now() + settings.waitTimeoutMs;
  const token = randomBytes(16).toString('hex');
  let backoff = FIRST_BACKOFF_MS;
  for (;;) {
    if (await callStore(store, 'take the lease of', () => store.acquireLease(location, token, settings.lockTtlMs))) {
      try {
        return await refreshUnderLease(target, refresher, settings, seenVersion);
      } finally {
        // Best effort: if our lease ran out and someone else holds it now, this releases nothing.
        await store.releaseLease(location, token).catch(() => false);
      }
    }
    const left = giveUpAt - performance.now();
    if (left <= 0) throw new LockTimeoutError(`gave up waiting for another worker's refresh after ${settings.waitTimeoutMs} ms`);
    // Jittered, so waiters across processes do not poll in lockstep.
    await sleep(Math.min(left, backoff / 2 + Math.random() * backoff));
    backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
    const current = await target.read();
    if (current !== undefined && isSettled(current, seenVersion, target.clock(), settings)) return current.data;
  }
}

async function refreshUnderLease<T>(
  target: RefreshTarget<T>,
  refresher: Refresher<T>,
  settings: Settings,
  seenVersion: string | undefined,
): Promise<T> {
  const current = await target.read();
  if (current !== undefined && isSettled(current, seenVersion, target.clock(), settings)) return current.data; // another worker refreshed it meanwhile
  let result: unknown;
  try {
    result = await refresher(current && structuredClone(current.data));
  } catch (error) {
    if (error instanceof LoginRequiredError) throw error;
    // The cause is the caller's own error object; our message never repeats its text.
    throw new RefreshError('the refresher failed; the session was left as it was', { cause: error });
  }
  if (result instanceof LoginRequiredError) throw result; // `return loginRequired()` works too
  const now = target.clock();
  let sealed: { sealed: Uint8Array; data: T };
  let expiresAt: number | null;
  try {
    expiresAt = resolveExpiry(expiryOf(result), now);
    sealed = target.seal((result as { data: unknown }).data, expiresAt);
  } catch (error) {
    if (error instanceof InvalidSessionDataError || error instanceof InvalidExpiryError) {
      throw new RefreshError('the refresher returned an invalid session; nothing was written', { cause: error });
    }
    throw error;
  }
  const { store, location } = target;
  const written = await callStore(store, 'write back', () =>
    store.compareAndSet(location, current?.version ?? null, sealed.sealed, { expiresAt, updatedAt: now, change: 'refresh' }),
  );
  if (!written.ok) throw new RefreshConflictError();
  return sealed.data;
}

/** The expiry options of a refresher's result, after checking its shape. @throws InvalidSessionDataError, InvalidExpiryError */
function expiryOf(result: unknown): { ttlMs?: unknown; expiresAt?: unknown } | undefined {
  if (typeof result !== 'object' || result === null || Array.isArray(result) || !('data' in result)) {
    throw new InvalidSessionDataError('a refresher must return { data, expiresAt } or { data, ttlMs }');
  }
  for (const name of Object.keys(result)) {
    if (!KNOWN_RESULT_KEYS.has(name)) throw new InvalidExpiryError(`unknown refresher result field "${name.slice(0, 40)}": use data, expiresAt or ttlMs`);
  }
  const { ttlMs, expiresAt } = result as { ttlMs?: unknown; expiresAt?: unknown };
  if (ttlMs === undefined && expiresAt === undefined) return undefined;
  return ttlMs === undefined ? { expiresAt } : expiresAt === undefined ? { ttlMs } : { ttlMs, expiresAt };
}

function isFresh(session: VersionedSession<unknown>, now: number, settings: Settings): boolean {
  return session.expiresAt === null || session.expiresAt - now > settings.refreshBeforeMs;
}

/**
 * Whether a waiter can stop: the session is fresh, or it was rewritten since this round first
 * read it and is still alive (a refresher whose sessions live shorter than `refreshBeforeMs`
 * must not make every waiter refresh again, burning a single-use refresh token each time).
 */
function isSettled(session: VersionedSession<unknown>, seenVersion: string | undefined, now: number, settings: Settings): boolean {
  if (isFresh(session, now, settings)) return true;
  return session.version !== seenVersion && (session.expiresAt === null || session.expiresAt > now);
}

/** `promise`, or LockTimeoutError once `ms` pass first (the work itself goes on). */
async function withinDeadline<T>(promise: Promise<T>, ms: number): Promise<T> {
  const controller = new AbortController();
  const timeout = sleep(ms, undefined, { signal: controller.signal }).then(() => {
    throw new LockTimeoutError(`gave up waiting for the session's refresh after ${ms} ms`);
  });
  timeout.catch(() => undefined);
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    controller.abort();
  }
}

