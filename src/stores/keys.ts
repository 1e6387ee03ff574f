/** Helpers that every store shares: record versions and exact prefix ranges. */
import { randomUUID } from 'node:crypto';

/** A new record version: random, so a version is never reused, even after delete and re-create. */
export function newVersion(): string {
  return randomUUID();
}

/**
 * The smallest string greater than every string that starts with `prefix`, in code point
 * order (which is also UTF-8 byte order), or `undefined` when no such bound exists.
 * With it, "starts with prefix" becomes the index-friendly range `prefix <= key < bound`,
 * with no pattern syntax to escape.
 */
export function prefixUpperBound(prefix: string): string | undefined {
  const codePoints = Array.from(prefix);
  while (codePoints.length > 0) {
    const last = codePoints.pop() as string;
    let next = (last.codePointAt(0) as number) + 1;
    if (next === 0xd800) next = 0xe000; // skip the surrogate range: not valid scalar values
    if (next <= 0x10ffff) return codePoints.join('') + String.fromCodePoint(next);
  }
  return undefined;
}

/** Orders strings by code point (UTF-8 byte order), unlike `<` on UTF-16 code units. */
export function compareCodePoints(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}
