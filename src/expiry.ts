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
    if (!KNOWN_OPTIONS.has(name)) {
      // Name a short identifier (a typo like `ttl`); never repeat anything longer, which may be a token passed by mistake.
      const shown = /^[A-Za-z_$][A-Za-z0-9_$]{0,23}$/.test(name) ? ` "${name}"` : '';
      throw new InvalidExpiryError(`unknown expiry option${shown}: use ttlMs or expiresAt`);
    }
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

/**
 * A daily wall-clock deadline in one time zone, as brokers expire their tokens.
 *
 * @example
 * ```ts
 * const kite: DailyExpiryOptions = { at: '06:00', timeZone: 'Asia/Kolkata' };
 * const upstox: DailyExpiryOptions = { at: '03:30', timeZone: 'Asia/Kolkata' };
 * ```
 */
export interface DailyExpiryOptions {
  /** `HH:MM`, 24-hour, `00:00` to `23:59`. */
  readonly at: string;
  /** An IANA time zone name, such as `'Asia/Kolkata'` or `'America/New_York'`. */
  readonly timeZone: string;
}

const WALL_TIME = /^([01]\d|2[0-3]):([0-5]\d)$/;
const DAY_MS = 86_400_000;
const formatters = new Map<string, Intl.DateTimeFormat>();

function formatterFor(timeZone: string): Intl.DateTimeFormat {
  let formatter = formatters.get(timeZone);
  if (formatter === undefined) {
    formatter = new Intl.DateTimeFormat('en-US', {
      timeZone,
      hourCycle: 'h23',
      year: 'numeric',
      month: 'numeric',
      day: 'numeric',
      hour: 'numeric',
      minute: 'numeric',
      second: 'numeric',
      era: 'short',
    });
    formatters.set(timeZone, formatter);
  }
  return formatter;
}

/** The wall time of `instant` in the formatter's zone, written as if it were a UTC instant (whole seconds). */
function wallClock(formatter: Intl.DateTimeFormat, instant: number): number {
  const fields: Record<string, string> = {};
  for (const part of formatter.formatToParts(instant)) fields[part.type] = part.value;
  const year = Number(fields['year']) * (fields['era'] === 'BC' || fields['era'] === 'B' ? -1 : 1);
  const wall = new Date(0);
  wall.setUTCFullYear(year, Number(fields['month']) - 1, Number(fields['day']));
  wall.setUTCHours(Number(fields['hour']), Number(fields['minute']), Number(fields['second']), 0);
  return wall.getTime();
}

/** The zone's offset from UTC (ms) at `instant`. */
function offsetAt(formatter: Intl.DateTimeFormat, instant: number): number {
  return wallClock(formatter, instant) - Math.floor(instant / 1000) * 1000;
}

/**
 * The first instant whose wall time in the zone is `wall` (a wall time written as a UTC instant),
 * or, when that wall time does not exist (a spring-forward gap), the first instant after the gap.
 */
function instantOfWallTime(formatter: Intl.DateTimeFormat, wall: number): number {
  // Any one day holds at most one transition in real zones: the offsets a day either side bound it.
  const before = offsetAt(formatter, wall - DAY_MS);
  const after = offsetAt(formatter, wall + DAY_MS);
  const matches = [wall - before, wall - after].filter((instant) => wallClock(formatter, instant) === wall);
  if (matches.length > 0) return Math.min(...matches);
  // A gap: the wall time is skipped. Find the transition, the first instant with the later offset.
  let low = Math.min(wall - before, wall - after);
  let high = Math.max(wall - before, wall - after);
  while (high - low > 1) {
    const middle = Math.floor((low + high) / 2);
    if (offsetAt(formatter, middle) === after) high = middle;
    else low = middle;
  }
  return high;
}

function checkTimeZone(timeZone: unknown): Intl.DateTimeFormat {
  if (typeof timeZone !== 'string' || timeZone.length === 0 || timeZone.length > 64 || !/^[A-Za-z][A-Za-z0-9_+\-/]*$/.test(timeZone)) {
    throw new InvalidExpiryError('timeZone must be an IANA time zone name such as "Asia/Kolkata"');
  }
  try {
    return formatterFor(timeZone);
  } catch {
    throw new InvalidExpiryError(`timeZone "${timeZone}" is not a time zone this platform knows`);
  }
}

/**
 * The next instant after `from` (default now) at which the wall clock in `timeZone` reads `at`:
 * pass it as `expiresAt`. Uses the platform's time zone database (`Intl`), so DST is handled:
 * - a wall time that does not exist that day (inside a spring-forward gap) gives the first
 *   instant after the gap (`02:30` in New York on 8 March 2026 gives 03:00 EDT);
 * - a wall time that occurs twice (fall-back) gives its first occurrence; if `from` lies
 *   between the two, the next day's is returned (one expiry a day, never an hour later).
 * The result is strictly after `from`: `from` exactly at the instant gives the next day's.
 *
 * @example
 * ```ts
 * await kite.setSession('AB1234', session, { expiresAt: dailyExpiry({ at: '06:00', timeZone: 'Asia/Kolkata' }) });
 * ```
 * @throws InvalidExpiryError for a malformed `at`, an unknown `timeZone` or an invalid `from`.
 */
export function dailyExpiry(options: DailyExpiryOptions, from?: Date | number): Date {
  if (typeof options !== 'object' || options === null) throw new InvalidExpiryError('dailyExpiry needs { at, timeZone }');
  const { at, timeZone } = options;
  const match = typeof at === 'string' ? WALL_TIME.exec(at) : null;
  if (match === null) throw new InvalidExpiryError('at must be a wall time "HH:MM" from 00:00 to 23:59');
  const formatter = checkTimeZone(timeZone);
  const start = from === undefined ? Date.now() : from instanceof Date ? from.getTime() : from;
  if (typeof start !== 'number' || !Number.isFinite(start) || Math.abs(start) > MAX_EPOCH_MS - 2 * DAY_MS) {
    throw new InvalidExpiryError(`from must be a valid Date or epoch milliseconds, got ${describeType(from)}`);
  }
  const hours = Number(match[1]);
  const minutes = Number(match[2]);
  const today = new Date(wallClock(formatter, start));
  for (let days = 0; days <= 2; days++) {
    const wall = new Date(0);
    wall.setUTCFullYear(today.getUTCFullYear(), today.getUTCMonth(), today.getUTCDate() + days);
    wall.setUTCHours(hours, minutes, 0, 0);
    const instant = instantOfWallTime(formatter, wall.getTime());
    if (instant > start) return new Date(instant);
  }
  throw new InvalidExpiryError('no such wall time follows from'); // unreachable in any real zone
}
