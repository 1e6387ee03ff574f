#!/usr/bin/env node
/**
 * The ordo-sessions command line: a thin shell over the library. It parses arguments, calls one
 * library function per command, prints, and sets the exit code (0 ok, 1 failure, 2 usage,
 * 3 not found, 130 interrupted). Errors are one line, `ordo-sessions: <CODE>: <message>`; the
 * stack only with --verbose. No secret is printed unless `get --reveal` asks for that session.
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { InvalidExpiryError, InvalidOptionsError, InvalidSessionKeyError, SessionError } from './lib.ts';
import { doctor } from './commands/doctor.ts';
import { keygen } from './commands/keygen.ts';
import { rotate } from './commands/rotate.ts';
import { clear, del, get, list, purge, set } from './commands/sessions.ts';
import { watch } from './commands/watch.ts';
import { CliError, EXIT, makeContext, usageError, type Command, type Env, type OptionValues, type Output } from './context.ts';
import { parseDuration } from './format.ts';

const COMMANDS: readonly Command[] = [keygen, set, get, list, del, clear, purge, rotate, doctor, watch];
const BY_NAME = new Map(COMMANDS.map((c) => [c.name, c]));

const GLOBAL_OPTIONS = {
  help: { type: 'boolean', short: 'h' },
  version: { type: 'boolean', short: 'V' },
  verbose: { type: 'boolean' },
} as const;
const STORE_OPTIONS = {
  store: { type: 'string' },
  namespace: { type: 'string' },
  timeout: { type: 'string' },
  'private-keys': { type: 'boolean' },
} as const;
const DEFAULT_TIMEOUT_MS = 3000;

const GLOBAL_HELP = `Global options:
  --store SPEC        sqlite:PATH | redis://HOST:PORT[?prefix=P] | rediss://... |
                      postgres://USER@HOST/DB[?schema=S&table=T] | postgresql://...
                      (default: ORDO_SESSION_STORE, else SQLite at ORDO_SESSION_DB or ./.ordo/sessions.db)
  --namespace NAME    the namespace (default "default")
  --timeout MS        how long to wait for a network store, in ms or a duration like 5s (default 3000)
  --private-keys      the namespace stores broker names and keys as HMACs (privateKeys: true)
  --verbose           print the stack of an error
  -h, --help          help for the command
  -V, --version       print the version
Keys come from ORDO_SESSION_KEYS or ORDO_SESSION_KEYS_FILE.`;

function version(): string {
  // The package.json above this file: ../../ from src/cli/main.ts and dist/cli/main.js alike.
  for (let up = '../../'; up.length <= 3 * 6; up += '../') {
    try {
      const pkg = JSON.parse(readFileSync(new URL(`${up}package.json`, import.meta.url), 'utf8')) as { name?: unknown; version?: unknown };
      if (pkg.name === 'ordo-sessions') return String(pkg.version);
    } catch {
      // not here: one level up
    }
  }
  return 'unknown';
}

function mainHelp(): string {
  const width = Math.max(...COMMANDS.map((c) => c.name.length));
  const lines = COMMANDS.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`);
  return `ordo-sessions: broker sessions, sealed and namespaced, from the command line

Usage: ordo-sessions <command> [arguments] [options]

Commands:
${lines.join('\n')}
  ${'help'.padEnd(width)}  help for a command: ordo-sessions help get

${GLOBAL_HELP}

Exit codes: 0 ok, 1 failure, 2 usage error, 3 not found (get, delete), 130 interrupted.

Examples:
  export ORDO_SESSION_KEYS="$(ordo-sessions keygen)"
  echo '{"accessToken":"..."}' | ordo-sessions set fyers XY1234 --ttl 8h
  ordo-sessions list
  ordo-sessions doctor --store redis://127.0.0.1:6379`;
}

function commandHelp(command: Command): string {
  return `Usage: ordo-sessions ${command.usage}\n\n${command.help}\n\n${command.needsStore ? GLOBAL_HELP : GLOBAL_HELP.split('\n').filter((l) => /--verbose|--help|--version/.test(l)).join('\n')}`;
}

/** Every option any command knows, so one strict parse finds the command wherever it stands. */
function allOptions(): Record<string, { type: 'string' | 'boolean'; short?: string }> {
  const options: Record<string, { type: 'string' | 'boolean'; short?: string }> = { ...GLOBAL_OPTIONS, ...STORE_OPTIONS };
  for (const command of COMMANDS) Object.assign(options, command.options);
  return options;
}

function timeoutOf(value: string | undefined): number {
  if (value === undefined) return DEFAULT_TIMEOUT_MS;
  const ms = /^\d{1,9}$/.test(value) ? Number(value) : parseDuration(value);
  if (ms === undefined || ms < 1) throw usageError('--timeout must be a positive number of milliseconds or a duration like 5s');
  return ms;
}

/** Names an option of a parse error without repeating anything else the user typed (it may be a token). */
function parseArgsError(error: unknown): CliError {
  const message = error instanceof Error ? error.message : '';
  const option = /'(-{1,2}[A-Za-z0-9-]{1,40})/.exec(message)?.[1];
  const code = (error as { code?: unknown }).code;
  if (code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') return usageError(`unknown option ${option ?? ''}`.trim());
  if (code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE') return usageError(`option ${option ?? ''} needs a value (or takes none)`.replace('  ', ' '));
  return usageError('the arguments could not be parsed; see ordo-sessions --help');
}

/** Runs one command line; resolves with the exit code. */
export async function run(argv: readonly string[], env: Env, stdout: Output, stderr: Output): Promise<number> {
  let verbose = argv.includes('--verbose');
  try {
    let parsed;
    try {
      parsed = parseArgs({ args: [...argv], options: allOptions(), allowPositionals: true, strict: true, tokens: true });
    } catch (error) {
      throw parseArgsError(error);
    }
    const values = parsed.values as OptionValues;
    verbose = values['verbose'] === true;
    const [name, ...positionals] = parsed.positionals;
    if (values['version'] === true) {
      stdout.write(`${version()}\n`);
      return EXIT.ok;
    }
    if (name === undefined) {
      if (values['help'] === true) {
        stdout.write(`${mainHelp()}\n`);
        return EXIT.ok;
      }
      stderr.write(`${mainHelp()}\n`);
      return EXIT.usage;
    }
    if (name === 'help') {
      const topic = positionals[0];
      if (topic === undefined) {
        stdout.write(`${mainHelp()}\n`);
        return EXIT.ok;
      }
      const command = BY_NAME.get(topic);
      if (command === undefined) throw usageError(`unknown command "${topic.slice(0, 40)}"; see ordo-sessions --help`);
      stdout.write(`${commandHelp(command)}\n`);
      return EXIT.ok;
    }
    const command = BY_NAME.get(name);
    if (command === undefined) throw usageError(`unknown command "${name.slice(0, 40)}"; see ordo-sessions --help`);
    if (values['help'] === true) {
      stdout.write(`${commandHelp(command)}\n`);
      return EXIT.ok;
    }
    const allowed = new Set([...Object.keys(GLOBAL_OPTIONS), ...Object.keys(command.options), ...(command.needsStore ? Object.keys(STORE_OPTIONS) : [])]);
    for (const token of parsed.tokens ?? []) {
      if (token.kind === 'option' && !allowed.has(token.name)) throw usageError(`${command.name} does not take ${token.rawName}`);
    }
    const context = makeContext(
      {
        store: typeof values['store'] === 'string' ? values['store'] : undefined,
        namespace: typeof values['namespace'] === 'string' ? values['namespace'] : undefined,
        timeoutMs: timeoutOf(typeof values['timeout'] === 'string' ? values['timeout'] : undefined),
        verbose,
        privateKeys: values['private-keys'] === true,
      },
      env,
      stdout,
      stderr,
    );
    return await command.run(context, positionals, values);
  } catch (error) {
    return reportError(error, verbose, stderr);
  }
}

/** One line per error; the exit code that goes with it. */
function reportError(error: unknown, verbose: boolean, stderr: Output): number {
  let code: string;
  let message: string;
  let exitCode: number;
  if (error instanceof CliError) {
    ({ code, message, exitCode } = error);
  } else if (error instanceof SessionError) {
    code = error.code;
    message = error.message;
    // These come from what was typed on the command line: a usage error.
    const usage = error instanceof InvalidSessionKeyError || error instanceof InvalidExpiryError || error instanceof InvalidOptionsError;
    exitCode = usage ? EXIT.usage : EXIT.failure;
  } else {
    // Not ours: its message may quote anything (a file, the input); name it, and show it only with --verbose.
    const systemCode = (error as { code?: unknown } | null)?.code;
    code = typeof systemCode === 'string' && /^[A-Z0-9_]{1,40}$/.test(systemCode) ? systemCode : 'ERR_UNEXPECTED';
    message = `${error instanceof Error ? error.name : typeof error}${verbose ? '' : ' (run with --verbose for details)'}`;
    exitCode = EXIT.failure;
  }
  stderr.write(`ordo-sessions: ${code}: ${message.replace(/\s*\n\s*/g, ' ')}\n`);
  if (verbose && error instanceof Error && error.stack !== undefined) stderr.write(`${error.stack}\n`);
  return exitCode;
}

// A closed stdout (`ordo-sessions list | head -1`) is not an error worth a stack trace.
process.stdout.on('error', (error: NodeJS.ErrnoException) => {
  if (error.code === 'EPIPE') process.exit(process.exitCode ?? EXIT.ok);
  throw error;
});

process.exitCode = await run(process.argv.slice(2), process.env, process.stdout, process.stderr);
// Every command closes what it opened; this only guards against a driver handle left behind.
setTimeout(() => process.exit(), 2000).unref();
