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

class Checker {
  readonly problems: Array<{ path: string; reason: string }> = [];
  readonly #ancestors = new Set<object>();

  check(value: unknown, path: string, depth: number): void {
    if (this.problems.length >= MAX_REPORTED_PATHS) return;
    switch (typeof value) {
      case 'string':
      case 'boolean':
        return;
      case 'number':
        if (!Number.isFinite(value)) this.#refuse(path, 'is not a finite number');
        else if (Object.is(value, -0)) this.#refuse(path, 'is -0, which JSON turns into 0');
        return;
      case 'object':
        if (value === null) return;
        this.#checkObject(value, path, depth);
        return;
      default:
        this.#refuse(path, `is ${typeof value === 'undefined' ? 'undefined' : `a ${typeof value}`}`);
    }
  }

  #checkObject(value: object, path: string, depth: number): void {
    if (depth >= MAX_DEPTH) return this.#refuse(path, `is nested deeper than ${MAX_DEPTH} levels`);
    if (this.#ancestors.has(value)) return this.#refuse(path, 'is a circular reference');
    const isArray = Array.isArray(value);
    const prototype: unknown = Object.getPrototypeOf(value);
    if (isArray ? prototype !== Array.prototype : prototype !== Object.prototype && prototype !== null) {
      return this.#refuse(path, `is ${kindOf(value)}, not a plain ${isArray ? 'array' : 'object'}`);
    }
    this.#ancestors.add(value);
    const descriptors = Object.getOwnPropertyDescriptors(value) as Record<PropertyKey, PropertyDescriptor>;
    if (Object.getOwnPropertySymbols(value).length > 0) this.#refuse(path, 'has symbol keys, which JSON drops');
    if (isArray) this.#checkArray(value as unknown[], descriptors, path, depth);
    else {
      for (const key of Object.keys(descriptors)) {
        this.#checkMember(descriptors[key] as PropertyDescriptor, childPath(path, key), depth);
      }
    }
    this.#ancestors.delete(value);
  }

  #checkArray(array: unknown[], descriptors: Record<PropertyKey, PropertyDescriptor>, path: string, depth: number): void {
    const keys = Object.keys(descriptors);
    // An array's own keys are its indices and "length"; anything else JSON would drop.
    if (keys.length !== array.length + 1) {
      for (let i = 0; i < array.length; i++) {
        if (!(String(i) in descriptors)) return this.#refuse(childPath(path, i), 'is a hole, which JSON turns into null');
      }
      return this.#refuse(path, 'has non-index properties, which JSON drops');
    }
    for (let i = 0; i < array.length; i++) {
      const descriptor = descriptors[i];
      if (descriptor === undefined) return this.#refuse(childPath(path, i), 'is a hole, which JSON turns into null');
      this.#checkMember(descriptor, childPath(path, i), depth);
    }
  }

  #checkMember(descriptor: PropertyDescriptor, path: string, depth: number): void {
    if (!('value' in descriptor)) return this.#refuse(path, 'is a getter or setter');
    if (!descriptor.enumerable) return this.#refuse(path, 'is not enumerable, so JSON drops it');
    this.check(descriptor.value, path, depth + 1);
  }

  #refuse(path: string, reason: string): void {
    if (this.problems.length < MAX_REPORTED_PATHS) this.problems.push({ path, reason });
  }
}

/**
 * Validates a session value and returns its UTF-8 JSON.
 * @throws InvalidSessionDataError when the value would not round-trip exactly, or is larger than `maxBytes`.
 */
export function serializeSessionData(value: unknown, maxBytes: number): Buffer {
  const checker = new Checker();
  checker.check(value, '$', 0);
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
