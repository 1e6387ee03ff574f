/** Output helpers of the CLI: masking, durations, tables, colour. No I/O except through the writers given. */
const MASK = '••••••••';
/** Strings shorter than this are masked entirely: showing 4 of 6 characters would show most of it. */
const MIN_PARTIAL_LENGTH = 12;

/**
 * A copy of a session value with every string masked: a fixed run of bullets (so the length
 * does not show) and, for strings of 12 or more characters, their last 4. Member names, numbers,
 * booleans and null stay as they are.
 */
export function maskValue(value: unknown): unknown {
  if (typeof value === 'string') {
    const points = Array.from(value);
    return points.length < MIN_PARTIAL_LENGTH ? MASK : MASK + points.slice(-4).join('');
  }
  if (Array.isArray(value)) return value.map(maskValue);
  if (typeof value === 'object' && value !== null) {
    const out: Record<string, unknown> = {};
    for (const [name, member] of Object.entries(value)) {
      // defineProperty: a member named __proto__ stays an own property, as it came from the store.
      Object.defineProperty(out, name, { value: maskValue(member), enumerable: true, writable: true, configurable: true });
    }
    return out;
  }
  return value;
}

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
const DURATION = /^(?:\d+(?:ms|s|m|h|d))+$/;

/**
 * Milliseconds of a duration like `8h`, `1h30m`, `90s`, `250ms`, `2d`; `undefined` if it is not one
 * (no unit, unknown unit, zero, negative, or beyond a safe integer).
 */
export function parseDuration(text: string): number | undefined {
  if (!DURATION.test(text)) return undefined;
  let total = 0;
  for (const [, digits, unit] of text.matchAll(/(\d+)(ms|s|m|h|d)/g)) {
    total += Number(digits) * (UNIT_MS[unit as string] as number);
  }
  return Number.isSafeInteger(total) && total > 0 ? total : undefined;
}

/** A short human duration: `45s`, `12m`, `7h 59m`, `3d 4h`. */
export function formatDuration(ms: number): string {
  const abs = Math.abs(ms);
  if (abs < 1000) return `${Math.round(abs)}ms`;
  const s = Math.floor(abs / 1000);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m`;
  const h = Math.floor(m / 60);
  if (h < 24) return m % 60 === 0 ? `${h}h` : `${h}h ${m % 60}m`;
  const d = Math.floor(h / 24);
  return h % 24 === 0 ? `${d}d` : `${d}d ${h % 24}h`;
}

/** `in 7h 59m` or `3m ago`, relative to `now`. */
export function relativeTime(at: number, now: number): string {
  return at >= now ? `in ${formatDuration(at - now)}` : `${formatDuration(now - at)} ago`;
}

/** An ISO instant without milliseconds: `2026-12-03T18:50:00Z`. */
export function isoSeconds(at: number): string {
  return new Date(at).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/**
 * Text from the store or the command line made safe for a terminal: control characters
 * (C0, DEL, C1, which could carry escape sequences) shown as `\u001b` and the like.
 */
export function printable(text: string): string {
  // eslint-disable-next-line no-control-regex
  return text.replace(/[\u0000-\u001f\u007f-\u009f]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** Display width of a string, counting each code point as one column (good enough for ids and ISO times). */
function width(text: string): number {
  return Array.from(text).length;
}

/** A plain left-aligned table with a header row; cells are already printable. */
export function table(header: readonly string[], rows: ReadonlyArray<readonly string[]>, style: Style): string {
  const widths = header.map((h, i) => Math.max(width(h), ...rows.map((r) => width(r[i] ?? ''))));
  const line = (cells: readonly string[]): string =>
    cells.map((c, i) => (i === cells.length - 1 ? c : c + ' '.repeat((widths[i] ?? 0) - width(c)))).join('  ');
  return [style.dim(line(header)), ...rows.map(line)].join('\n') + '\n';
}

/** Colour functions, all identity when colour is off. */
export interface Style {
  readonly enabled: boolean;
  ok(text: string): string;
  warn(text: string): string;
  fail(text: string): string;
  dim(text: string): string;
  bold(text: string): string;
}

/** Colour only on a terminal, and never when NO_COLOR is set to anything (https://no-color.org). */
export function colourEnabled(stream: { isTTY?: boolean }, env: Readonly<Record<string, string | undefined>>): boolean {
  return stream.isTTY === true && env['NO_COLOR'] === undefined;
}

export function makeStyle(enabled: boolean): Style {
  // Plain SGR codes: node:util styleText would second-guess us from TERM and FORCE_COLOR.
  const paint =
    (open: number, close: number) =>
    (text: string): string =>
      enabled ? `\u001b[${open}m${text}\u001b[${close}m` : text;
  return { enabled, ok: paint(32, 39), warn: paint(33, 39), fail: paint(31, 39), dim: paint(2, 22), bold: paint(1, 22) };
}
