/** What every command gets: the parsed global options, output streams, and how to open the library. */
import { Keyring, SessionManager, type SessionStore } from './lib.ts';
import { colourEnabled, makeStyle, type Style } from './format.ts';
import { createStore, parseStoreSpec, type StoreSpec } from './store-url.ts';

/** Exit codes, as documented in the README. */
export const EXIT = { ok: 0, failure: 1, usage: 2, notFound: 3, interrupted: 130 } as const;

/** A failure of the CLI itself (not of the library), with its own code and exit code. */
export class CliError extends Error {
  readonly code: string;
  readonly exitCode: number;

  constructor(code: string, message: string, exitCode: number) {
    super(message);
    this.name = 'CliError';
    this.code = code;
    this.exitCode = exitCode;
  }
}

/** A bad command line: exit 2. */
export function usageError(message: string): CliError {
  return new CliError('ERR_USAGE', message, EXIT.usage);
}

export type Env = Readonly<Record<string, string | undefined>>;

export interface Output {
  write(text: string): unknown;
  readonly isTTY?: boolean;
}

export interface Context {
  readonly env: Env;
  readonly stdout: Output;
  readonly stderr: Output;
  /** Colours for stdout (and for stderr when it is a terminal too). */
  readonly style: Style;
  readonly errStyle: Style;
  readonly verbose: boolean;
  readonly namespace: string;
  readonly timeoutMs: number;
  readonly storeSpec: StoreSpec;
  /** Prints a line on stdout. */
  out(line: string): void;
  /** Prints a line on stderr. */
  err(line: string): void;
  /** Whether the store's storage keys are private HMACs (`--private-keys`). */
  readonly privateKeys: boolean;
  /** Keys from the environment, then the store, then the manager (canary checked). Close it when done. */
  open(options?: { readonly yieldBetweenPages?: boolean }): Promise<SessionManager>;
  /** The store alone, not opened, for checks that must run before the manager (doctor). */
  createStore(): Promise<SessionStore>;
  keyring(): Keyring;
}

export interface GlobalOptions {
  readonly store?: string | undefined;
  readonly namespace?: string | undefined;
  readonly timeoutMs: number;
  readonly verbose: boolean;
  readonly privateKeys: boolean;
}

export function makeContext(global: GlobalOptions, env: Env, stdout: Output, stderr: Output): Context {
  const storeSpec = parseStoreSpec(global.store ?? env['ORDO_SESSION_STORE'], env);
  const namespace = global.namespace ?? 'default';
  const timeoutMs = global.timeoutMs;
  let keys: Keyring | undefined;
  const keyring = (): Keyring => (keys ??= Keyring.fromEnv(env));
  const store = (): Promise<SessionStore> => createStore(storeSpec, timeoutMs);
  return {
    env,
    stdout,
    stderr,
    style: makeStyle(colourEnabled(stdout, env)),
    errStyle: makeStyle(colourEnabled(stderr, env)),
    verbose: global.verbose,
    namespace,
    timeoutMs,
    storeSpec,
    privateKeys: global.privateKeys,
    out: (line) => void stdout.write(`${line}\n`),
    err: (line) => void stderr.write(`${line}\n`),
    keyring,
    createStore: store,
    async open(options = {}) {
      const source = keyring(); // before the store: a missing key configuration touches nothing
      return SessionManager.open({
        keyring: source,
        store: options.yieldBetweenPages === true ? yieldingStore(await store()) : await store(),
        namespace,
        privateKeys: global.privateKeys,
        // Our own line rather than a process warning with a Node prefix.
        onWarning: (warning) => void stderr.write(`ordo-sessions: warning: ${warning.code}: ${warning.message}\n`),
      });
    },
  };
}

/**
 * The store, giving the event loop a turn before each page it lists. A long scan over SQLite
 * (whose calls settle as microtasks) would otherwise never let a SIGINT handler run, and Ctrl-C
 * could not stop `rotate`.
 */
function yieldingStore(store: SessionStore): SessionStore {
  return new Proxy(store, {
    get(target, name) {
      const value: unknown = Reflect.get(target, name, target);
      if (typeof value !== 'function') return value;
      if (name !== 'list') return value.bind(target);
      return async (...args: unknown[]) => {
        await new Promise<void>((resolve) => setImmediate(resolve));
        return (value as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
}

/** Runs `body` with an open manager and always closes it. */
export async function withSessions<T>(
  context: Context,
  body: (sessions: SessionManager) => Promise<T>,
  options?: { readonly yieldBetweenPages?: boolean },
): Promise<T> {
  const sessions = await context.open(options);
  try {
    return await body(sessions);
  } finally {
    await sessions.close().catch(() => undefined);
  }
}

/** The parsed option values of one command line. */
export type OptionValues = Readonly<Record<string, string | boolean | undefined>>;

/** One command: its help, its options (beyond the global ones), and what it runs. */
export interface Command {
  readonly name: string;
  /** One line for the command list. */
  readonly summary: string;
  /** The synopsis, after `ordo-sessions `. */
  readonly usage: string;
  /** Full help text, with examples. */
  readonly help: string;
  readonly options: Readonly<Record<string, { readonly type: 'string' | 'boolean'; readonly short?: string }>>;
  /** Whether the global store options (--store, --namespace, --timeout) apply. */
  readonly needsStore: boolean;
  /** Resolves with the exit code. */
  run(context: Context, positionals: readonly string[], values: OptionValues): Promise<number>;
}
