import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { InvalidExpiryError } from '../src/errors.ts';
import { dailyExpiry } from '../src/expiry.ts';

const HOUR = 3_600_000;
const at = (iso: string): number => Date.parse(iso);
const next = (time: string, timeZone: string, from: string): string => dailyExpiry({ at: time, timeZone }, at(from)).toISOString();

function wallTime(instant: Date, timeZone: string): string {
  return new Intl.DateTimeFormat('en-GB', { timeZone, hour: '2-digit', minute: '2-digit', second: '2-digit', hourCycle: 'h23' }).format(instant);
}

function offsetName(instant: Date, timeZone: string): string {
  return new Intl.DateTimeFormat('en-US', { timeZone, timeZoneName: 'longOffset' }).format(instant);
}

describe('dailyExpiry', () => {
  it('gives the next 06:00 and 03:30 in Asia/Kolkata (Kite, Upstox)', () => {
    expect(next('06:00', 'Asia/Kolkata', '2026-12-03T10:00:00Z')).toBe('2026-12-04T00:30:00.000Z');
    expect(next('06:00', 'Asia/Kolkata', '2026-12-03T00:29:59.999Z')).toBe('2026-12-03T00:30:00.000Z');
    expect(next('03:30', 'Asia/Kolkata', '2026-12-03T10:00:00Z')).toBe('2026-12-03T22:00:00.000Z');
    expect(next('00:00', 'Asia/Kolkata', '2026-12-31T18:30:00Z')).toBe('2027-01-01T18:30:00.000Z');
    expect(next('23:59', 'Asia/Kolkata', '2026-12-31T18:00:00Z')).toBe('2026-12-31T18:29:00.000Z');
  });

  it('gives the next day when from is exactly the instant', () => {
    expect(next('06:00', 'Asia/Kolkata', '2026-12-03T00:30:00.000Z')).toBe('2026-12-04T00:30:00.000Z');
    expect(next('09:15', 'America/New_York', '2026-07-01T13:15:00.000Z')).toBe('2026-07-02T13:15:00.000Z');
  });

  it('accepts a Date as from, defaults to now, and returns a Date', () => {
    const from = new Date('2026-06-01T12:00:00Z');
    expect(dailyExpiry({ at: '06:00', timeZone: 'Asia/Kolkata' }, from)).toStrictEqual(new Date('2026-06-02T00:30:00Z'));
    const now = Date.now();
    const result = dailyExpiry({ at: '06:00', timeZone: 'Asia/Kolkata' });
    expect(result).toBeInstanceOf(Date);
    expect(result.getTime()).toBeGreaterThan(now);
    expect(result.getTime()).toBeLessThanOrEqual(now + 24 * HOUR + 1000);
  });

  describe('America/New_York, 2026', () => {
    it('spring forward (8 March, 02:00 EST -> 03:00 EDT): a wall time in the gap gives the end of the gap', () => {
      expect(next('02:30', 'America/New_York', '2026-03-08T05:00:00Z')).toBe('2026-03-08T07:00:00.000Z');
      expect(next('02:00', 'America/New_York', '2026-03-08T05:00:00Z')).toBe('2026-03-08T07:00:00.000Z');
      expect(next('02:30', 'America/New_York', '2026-03-07T12:00:00Z')).toBe('2026-03-08T07:00:00.000Z');
      // The next day the wall time exists again, at -04:00.
      expect(next('02:30', 'America/New_York', '2026-03-08T07:00:00Z')).toBe('2026-03-09T06:30:00.000Z');
    });

    it('times either side of the gap keep their own offsets', () => {
      expect(next('01:59', 'America/New_York', '2026-03-08T05:00:00Z')).toBe('2026-03-08T06:59:00.000Z');
      expect(next('03:00', 'America/New_York', '2026-03-08T05:00:00Z')).toBe('2026-03-08T07:00:00.000Z');
      expect(next('09:30', 'America/New_York', '2026-03-07T20:00:00Z')).toBe('2026-03-08T13:30:00.000Z');
    });

    it('fall back (1 November, 02:00 EDT -> 01:00 EST): a repeated wall time gives its first occurrence', () => {
      expect(next('01:30', 'America/New_York', '2026-11-01T04:00:00Z')).toBe('2026-11-01T05:30:00.000Z');
      // Between the two occurrences: not the second one an hour later, the next day's.
      expect(next('01:30', 'America/New_York', '2026-11-01T06:00:00Z')).toBe('2026-11-02T06:30:00.000Z');
      expect(next('01:30', 'America/New_York', '2026-11-01T05:30:00Z')).toBe('2026-11-02T06:30:00.000Z');
      expect(next('03:00', 'America/New_York', '2026-10-31T12:00:00Z')).toBe('2026-11-01T08:00:00.000Z');
    });
  });

  describe('Europe/London, 2026', () => {
    it('spring forward (29 March, 01:00 GMT -> 02:00 BST)', () => {
      expect(next('01:30', 'Europe/London', '2026-03-29T00:00:00Z')).toBe('2026-03-29T01:00:00.000Z');
      expect(next('00:59', 'Europe/London', '2026-03-29T00:00:00Z')).toBe('2026-03-29T00:59:00.000Z');
      expect(next('02:00', 'Europe/London', '2026-03-29T00:00:00Z')).toBe('2026-03-29T01:00:00.000Z');
      expect(next('08:00', 'Europe/London', '2026-03-28T12:00:00Z')).toBe('2026-03-29T07:00:00.000Z');
    });

    it('fall back (25 October, 02:00 BST -> 01:00 GMT)', () => {
      expect(next('01:30', 'Europe/London', '2026-10-25T00:00:00Z')).toBe('2026-10-25T00:30:00.000Z');
      expect(next('01:30', 'Europe/London', '2026-10-25T01:00:00Z')).toBe('2026-10-26T01:30:00.000Z');
      expect(next('08:00', 'Europe/London', '2026-10-24T12:00:00Z')).toBe('2026-10-25T08:00:00.000Z');
    });
  });

  it('refuses a malformed at with InvalidExpiryError', () => {
    for (const bad of ['6:00', '24:00', '23:60', '06:00:00', '', ' 06:00', '06-00', '0600', 'ab:cd', '-1:00']) {
      expect(() => dailyExpiry({ at: bad, timeZone: 'Asia/Kolkata' }), bad).toThrow(InvalidExpiryError);
    }
    expect(() => dailyExpiry({ at: 600 as unknown as string, timeZone: 'Asia/Kolkata' })).toThrow(InvalidExpiryError);
  });

  it('refuses an unknown time zone, an offset string and a bad from with InvalidExpiryError', () => {
    for (const bad of ['Asia/Kolkatta', 'Mars/Olympus', '', '+05:30', 'Asia/Kolkata; DROP', 42]) {
      expect(() => dailyExpiry({ at: '06:00', timeZone: bad as string }), String(bad)).toThrow(InvalidExpiryError);
    }
    for (const bad of [Number.NaN, Infinity, new Date('nope'), '2026-01-01']) {
      expect(() => dailyExpiry({ at: '06:00', timeZone: 'Asia/Kolkata' }, bad as number)).toThrow(InvalidExpiryError);
    }
    expect(() => dailyExpiry(null as unknown as { at: string; timeZone: string })).toThrow(InvalidExpiryError);
  });

  it('is after from, at most 25 h later, and reads back as at in its zone (outside gaps)', () => {
    const zones = ['Asia/Kolkata', 'America/New_York', 'Europe/London'];
    const wall = fc.tuple(fc.integer({ min: 0, max: 23 }), fc.integer({ min: 0, max: 59 }));
    const from = fc.integer({ min: at('2025-06-01T00:00:00Z'), max: at('2027-06-01T00:00:00Z') });
    fc.assert(
      fc.property(fc.constantFrom(...zones), wall, from, (timeZone, [hours, minutes], start) => {
        const time = `${String(hours).padStart(2, '0')}:${String(minutes).padStart(2, '0')}`;
        const result = dailyExpiry({ at: time, timeZone }, start).getTime();
        expect(result).toBeGreaterThan(start);
        expect(result).toBeLessThanOrEqual(start + 25 * HOUR);
        expect(result % 60_000).toBe(0);
        const local = wallTime(new Date(result), timeZone);
        if (local !== `${time}:00`) {
          // Only in a spring-forward gap: the offset changes exactly at the result, and the wall
          // time asked for lies between the last instant before it and the result.
          expect(offsetName(new Date(result - 1), timeZone)).not.toBe(offsetName(new Date(result), timeZone));
          const before = wallTime(new Date(result - 1), timeZone);
          expect(before < `${time}:00` && `${time}:00` < local).toBe(true);
        }
      }),
      { numRuns: 500 },
    );
  });
});
