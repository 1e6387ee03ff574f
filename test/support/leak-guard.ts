/**
 * A vitest setup file (registered in `vitest.config.ts`): watches everything the test run writes
 * through `console.*` and `process.stdout/stderr.write`, and fails the test file if any
 * registered canary shows up in plain, hex or base64 form. A hit is redacted before it reaches
 * the terminal, so a failing run does not print the very secret it caught.
 *
 * Cheap when unused: with no canary registered a write costs one size check.
 *
 * @example
 * ```ts
 * import { registerCanary } from '../support/leak-guard.ts';
 * const CANARY = registerCanary(`canary-${randomBytes(16).toString('hex')}`);
 * ```
 */
import { formatWithOptions } from 'node:util';
import { afterAll } from 'vitest';
import { leakForms } from './leaks.ts';

interface GuardState {
  forms: Map<string, string>; // form -> the canary it belongs to
  hits: Map<string, number>; // canary -> how many outputs contained it
  installed: boolean;
}

const STATE_KEY = Symbol.for('ordo-sessions.leak-guard');
const holder = globalThis as typeof globalThis & { [STATE_KEY]?: GuardState };
const state: GuardState = (holder[STATE_KEY] ??= { forms: new Map(), hits: new Map(), installed: false });

/** Adds a secret the run must never print; returns it. Registered canaries stay for the whole file. */
export function registerCanary(secret: string): string {
  for (const form of leakForms(secret)) state.forms.set(form, secret);
  return secret;
}

/** How many outputs contained a registered canary, in total or for one canary. */
export function canaryHits(secret?: string): number {
  if (secret !== undefined) return state.hits.get(secret) ?? 0;
  let total = 0;
  for (const count of state.hits.values()) total += count;
  return total;
}

/** Forgets one canary and its hits: for the guard's own self-test, which prints a canary on purpose. */
export function retireCanary(secret: string): void {
  for (const [form, owner] of state.forms) if (owner === secret) state.forms.delete(form);
  state.hits.delete(secret);
}

/** Redacts every registered canary in `text`, counting a hit per canary found. */
function scrub(text: string): string {
  if (state.forms.size === 0) return text;
  let out = text;
  const found = new Set<string>();
  for (const [form, owner] of state.forms) {
    if (out.includes(form)) {
      found.add(owner);
      out = out.replaceAll(form, '[REDACTED CANARY]');
    }
  }
  for (const owner of found) state.hits.set(owner, (state.hits.get(owner) ?? 0) + 1);
  return out;
}

function textOf(chunk: unknown): string | undefined {
  if (typeof chunk === 'string') return chunk;
  if (chunk instanceof Uint8Array) return Buffer.from(chunk).toString('utf8');
  return undefined;
}

function install(): void {
  if (state.installed) return;
  state.installed = true;
  for (const stream of [process.stdout, process.stderr]) {
    const write = stream.write.bind(stream) as (...args: unknown[]) => boolean;
    stream.write = ((chunk: unknown, ...rest: unknown[]) => {
      const text = state.forms.size === 0 ? undefined : textOf(chunk);
      return write(text === undefined ? chunk : scrub(text), ...rest);
    }) as typeof stream.write;
  }
  for (const method of ['log', 'info', 'warn', 'error', 'debug', 'trace'] as const) {
    const original = console[method].bind(console);
    console[method] = (...args: unknown[]) => {
      if (state.forms.size === 0) return original(...args);
      // Format as console would (inspect of objects, errors with stack and cause), then scrub.
      return original(scrub(formatWithOptions({ depth: 8 }, ...args)));
    };
  }
}

install();

afterAll(() => {
  const hits = canaryHits();
  state.hits.clear(); // reported once, here; a later file in the same worker starts clean
  if (hits > 0) {
    throw new Error(`leak guard: a registered canary appeared ${hits} time(s) in console or stdout/stderr output (redacted above)`);
  }
});
