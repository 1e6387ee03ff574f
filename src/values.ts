/**
 * What a session value may be: exactly what survives a JSON round trip unchanged. Plain
 * objects, arrays, strings, finite numbers, booleans and null. Anything JSON would drop or
 * change (undefined members, holes, functions, symbols, BigInt, NaN, Infinity, -0, Date, Map,
 * Set, class instances, getters, cycles) is refused before anything is written, naming the path
 * and never the value.
 */
import { InvalidSessionDataError } from './errors.ts';

/** A JSON value that round-trips exactly. */
export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };

/** The default limit of one serialised session, in bytes of UTF-8 JSON. */
export const DEFAULT_MAX_VALUE_BYTES = 64 * 1024;
/** The deepest nesting accepted; deeper values are refused (they are never sessions). */
export const MAX_DEPTH = 64;
const MAX_REPORTED_PATHS = 10;
const IDENTIFIER_KEY = /^[A-Za-z_$][A-Za-z0-9_$]*$/;

function childPath(path: string, key: string | number): string {
  if (typeof key === 'number') return `${path}[${key}]`;
  return IDENTIFIER_KEY.test(key) ? `${path}.${key}` : `${path}[${JSON.stringify(key)}]`;
}

function kindOf(value: object): string {
  const tag = Object.prototype.toString.call(value).slice(8, -1);
  return tag === 'Object' ? 'a class instance' : `a ${tag}`;
}

/**
 * Walks a value once. It runs on every write, so it allocates little: one property descriptor
 * at a time (V8 elides them), no descriptor maps, and paths only for what it refuses (the
 * segments of the path being walked are kept on a stack).
 */
class Checker {
  readonly problems: Array<{ path: string; reason: string }> = [];
  readonly #ancestors: object[] = [];
  readonly #segments: Array<string | number> = [];

  check(value: unknown, depth: number): void {
    if (this.problems.length >= MAX_REPORTED_PATHS) return;
    switch (typeof value) {
      case 'string':
      case 'boolean':
        return;
      case 'number':
        if (!Number.isFinite(value)) this.#refuse('is not a finite number');
        else if (Object.is(value, -0)) this.#refuse('is -0, which JSON turns into 0');
        return;
      case 'object':
        if (value === null) return;
        this.#checkObject(value, depth);
        return;
      default:
        this.#refuse(`is ${typeof value === 'undefined' ? 'undefined' : `a ${typeof value}`}`);
    }
  }

  #checkObject(value: object, depth: number): void {
    if (depth >= MAX_DEPTH) return this.#refuse(`is nested deeper than ${MAX_DEPTH} levels`);
    if (this.#ancestors.includes(value)) return this.#refuse('is a circular reference');
    const isArray = Array.isArray(value);
    const prototype: unknown = Object.getPrototypeOf(value);
    if (isArray ? prototype !== Array.prototype : prototype !== Object.prototype && prototype !== null) {
      return this.#refuse(`is ${kindOf(value)}, not a plain ${isArray ? 'array' : 'object'}`);
    }
    this.#ancestors.push(value);
    if (Object.getOwnPropertySymbols(value).length > 0) this.#refuse('has symbol keys, which JSON drops');
    if (isArray) this.#checkArray(value as unknown[], depth);
    else {
      for (const key of Object.getOwnPropertyNames(value)) {
        this.#checkMember(value, key, depth);
      }
    }
    this.#ancestors.pop();
  }

  #checkArray(array: unknown[], depth: number): void {
    // An array's own keys are its indices and "length"; anything else JSON would drop.
    if (Object.getOwnPropertyNames(array).length !== array.length + 1) {
      for (let i = 0; i < array.length; i++) {
        if (!Object.hasOwn(array, i)) return this.#refuseAt(i, 'is a hole, which JSON turns into null');
      }
      return this.#refuse('has non-index properties, which JSON drops');
    }
    for (let i = 0; i < array.length; i++) this.#checkMember(array, i, depth);
  }

  #checkMember(holder: object, key: string | number, depth: number): void {
    const descriptor = Object.getOwnPropertyDescriptor(holder, key);
    if (descriptor === undefined) return this.#refuseAt(key, 'is a hole, which JSON turns into null');
    if (!('value' in descriptor)) return this.#refuseAt(key, 'is a getter or setter');
    if (!descriptor.enumerable) return this.#refuseAt(key, 'is not enumerable, so JSON drops it');
    this.#segments.push(key);
    this.check(descriptor.value, depth + 1);
    this.#segments.pop();
  }

  #refuseAt(key: string | number, reason: string): void {
    this.#segments.push(key);
    this.#refuse(reason);
    this.#segments.pop();
  }

  #refuse(reason: string): void {
    if (this.problems.length < MAX_REPORTED_PATHS) this.problems.push({ path: this.#segments.reduce<string>(childPath, '$'), reason });
  }
}

/**
 * Validates a session value and returns its UTF-8 JSON.
 * @throws InvalidSessionDataError when the value would not round-trip exactly, or is larger than `maxBytes`.
 */
export function serializeSessionData(value: unknown, maxBytes: number): Buffer {
  const checker = new Checker();
  checker.check(value, 0);
  if (checker.problems.length > 0) {
    const details = checker.problems.map(({ path, reason }) => `${path} ${reason}`).join('; ');
    throw new InvalidSessionDataError(`Session data is not exact JSON: ${details}`, checker.problems.map(({ path }) => path));
  }
  const json = Buffer.from(JSON.stringify(value), 'utf8');
  if (json.length > maxBytes) {
    throw new InvalidSessionDataError(`Session data is ${json.length} bytes of JSON, over the limit of ${maxBytes}`);
  }
  return json;
}

/** Parses what {@link serializeSessionData} produced. */
export function deserializeSessionData(json: Uint8Array): unknown {
  return JSON.parse(Buffer.from(json.buffer, json.byteOffset, json.byteLength).toString('utf8'));
}
