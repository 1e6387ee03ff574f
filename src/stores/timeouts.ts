/** What the stores share to bound their waits: timer options, and a race against a timer. */
import { InvalidOptionsError } from '../errors.ts';

/** The longest delay Node's timers keep (2^31 - 1 ms). */
const MAX_TIMER_MS = 2_147_483_647;

/**
 * An option that must be an integer from 1 to the longest timer, or `fallback` when absent.
 * @throws InvalidOptionsError with `message`
 */
export function positiveInteger(value: number | undefined, fallback: number, message: string): number {
  if (value === undefined) return fallback;
  if (!Number.isSafeInteger(value) || value < 1 || value > MAX_TIMER_MS) throw new InvalidOptionsError(message);
  return value;
}

/**
 * Settles with `promise`, or rejects with `timeout()` after `ms` (for waits that are safe to
 * abandon; the abandoned promise's later rejection is swallowed).
 */
export function settleWithin<T>(promise: Promise<T>, ms: number, timeout: () => Error): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(timeout()), ms);
    promise.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (error: unknown) => {
        clearTimeout(timer);
        reject(error);
      },
    );
  });
}
