/** Turning `{ ttlMs }` or `{ expiresAt }` into one epoch-ms instant, or refusing it. */
import { InvalidExpiryError } from './errors.ts';
import { describeType } from './namespace.ts';

/**
 * When a session dies: after `ttlMs`, or at `expiresAt` (a `Date` or epoch ms). Give one or
 * neither (neither: the session never expires on its own).
 */
export type ExpiryOptions =
  | { readonly ttlMs: number; readonly expiresAt?: undefined }
  | { readonly expiresAt: Date | number; readonly ttlMs?: undefined };

/** The latest instant a JavaScript Date can hold. */
const MAX_EPOCH_MS = 8.64e15;
const KNOWN_OPTIONS = new Set(['ttlMs', 'expiresAt']);

/**
 * The absolute expiry (epoch ms) that `options` asks for at `now`, or `null` for none.
 * Unknown option names are refused: `{ ttl: 1000 }` silently meaning "never expires" would be
 * the worst kind of typo.
 * @throws InvalidExpiryError
 */
export function resolveExpiry(options: unknown, now: number): number | null {
  if (options === undefined) return null;
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw new InvalidExpiryError(`expiry options must be an object like { ttlMs } or { expiresAt }, got ${describeType(options)}`);
  }
  for (const name of Object.keys(options)) {
    if (!KNOWN_OPTIONS.has(name)) throw new InvalidExpiryError(`unknown expiry option "${name.slice(0, 40)}": use ttlMs or expiresAt`);
  }
  const { ttlMs, expiresAt } = options as { ttlMs?: unknown; expiresAt?: unknown };
  if (ttlMs !== undefined && expiresAt !== undefined) throw new InvalidExpiryError('give ttlMs or expiresAt, not both');
  if (ttlMs !== undefined) {
    if (typeof ttlMs !== 'number' || !Number.isSafeInteger(ttlMs) || ttlMs <= 0) {
      throw new InvalidExpiryError('ttlMs must be a positive integer number of milliseconds');
    }
    return checkInstant(now + ttlMs, now);
  }
  if (expiresAt !== undefined) {
    let instant: number;
    if (expiresAt instanceof Date) instant = expiresAt.getTime();
    else if (typeof expiresAt === 'number') instant = expiresAt;
    else throw new InvalidExpiryError(`expiresAt must be a Date or epoch milliseconds, got ${describeType(expiresAt)}`);
    if (!Number.isSafeInteger(instant)) throw new InvalidExpiryError('expiresAt must be a valid date (an integer of epoch milliseconds)');
    return checkInstant(instant, now);
  }
  return null;
}

function checkInstant(instant: number, now: number): number {
  if (instant > MAX_EPOCH_MS) throw new InvalidExpiryError('expiry lies beyond the last date JavaScript can represent');
  if (instant <= now) throw new InvalidExpiryError('expiry must lie in the future');
  return instant;
}
