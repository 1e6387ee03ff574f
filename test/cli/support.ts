/**
 * Runs the BUILT command line as a child process. `buildCli()` compiles `src/` with
 * tsconfig.build.json into a private directory under node_modules/.cache (so that the build's
 * imports of better-sqlite3, redis and pg resolve, and `dist/` of other engineers is untouched);
 * `removeBuild()` deletes it.
 */
import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Keyring } from '../../src/index.ts';

const ROOT = resolve(import.meta.dirname, '../..');
export const BUILD_DIR = join(ROOT, 'node_modules', '.cache', `ordo-sessions-cli-test-${randomBytes(4).toString('hex')}`);
export const CLI = join(BUILD_DIR, 'cli', 'main.js');

/**
 * Compiles the package. tsc emits even when some file of the tree has a type error (another
 * engineer's work in progress); what matters here is that the CLI was emitted.
 */
export function buildCli(): void {
  const result = spawnSync(
    process.execPath,
    [join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.build.json', '--outDir', BUILD_DIR, '--declaration', 'false', '--sourceMap', 'false'],
    { cwd: ROOT, encoding: 'utf8', timeout: 120_000 },
  );
  if (!existsSync(CLI)) throw new Error(`the CLI was not built: ${result.stdout}${result.stderr}`);
}

/** Deletes the build and every temp directory `tempDir()` made. */
export function removeBuild(): void {
  rmSync(BUILD_DIR, { recursive: true, force: true });
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
}

const tempDirs: string[] = [];

export interface CliResult {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
  readonly ms: number;
}

export interface RunOptions {
  /** Written to stdin, which is then closed. Default: nothing (stdin closed at once). */
  readonly input?: string;
  /** The whole environment of the child, on top of PATH and HOME. */
  readonly env?: Readonly<Record<string, string | undefined>>;
  readonly cwd?: string;
  readonly timeoutMs?: number;
}

/** An environment with nothing of ours inherited from the test process. */
export function baseEnv(extra: Readonly<Record<string, string | undefined>> = {}): Record<string, string> {
  const env: Record<string, string> = { PATH: process.env['PATH'] ?? '/usr/bin:/bin', HOME: process.env['HOME'] ?? '/tmp', LANG: 'C.UTF-8' };
  for (const [name, value] of Object.entries(extra)) if (value !== undefined) env[name] = value;
  return env;
}

/** Gathers a child's output and settles with it when it closes; kills it after `timeoutMs`. */
function collect(
  child: ChildProcessWithoutNullStreams,
  options: RunOptions,
  started: number,
  resolvePromise: (result: CliResult) => void,
  reject: (error: Error) => void,
): void {
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 30_000);
  child.on('error', reject);
  child.on('close', (code, signal) => {
    clearTimeout(timer);
    resolvePromise({ code, signal, stdout, stderr, ms: Date.now() - started });
  });
}

/** Runs `node <built cli> ...args`; never rejects. */
export function runCli(args: readonly string[], options: RunOptions = {}): Promise<CliResult> {
  const started = Date.now();
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], {
      cwd: options.cwd ?? tmpdir(),
      env: baseEnv(options.env),
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    collect(child, options, started, resolvePromise, reject);
    child.stdin.on('error', () => undefined); // the CLI may exit before reading
    child.stdin.end(options.input ?? '');
  });
}

/**
 * Runs the CLI on a pseudo-terminal (util-linux `script`), so stdin and stdout are TTYs.
 * `input` is typed into the terminal. Output comes back with the terminal's CRLF line ends.
 */
export function runCliOnTty(args: readonly string[], options: RunOptions = {}): Promise<CliResult> {
  const started = Date.now();
  const command = [process.execPath, CLI, ...args].map(shellQuote).join(' ');
  return new Promise((resolvePromise, reject) => {
    const child = spawn('script', ['-qefc', command, '/dev/null'], {
      cwd: options.cwd ?? tmpdir(),
      env: baseEnv(options.env),
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    collect(child, options, started, resolvePromise, reject);
    child.stdin.on('error', () => undefined);
    // Typed after a moment, as a person would: the CLI must be reading by then.
    if (options.input !== undefined) setTimeout(() => child.stdin.write(options.input), 1500).unref();
  });
}

export const scriptAvailable = spawnSync('script', ['--version'], { stdio: 'ignore' }).status === 0;

function shellQuote(word: string): string {
  return `'${word.replaceAll("'", `'\\''`)}'`;
}

/** A fresh temp directory. */
export function tempDir(label = 'ordo-cli-'): string {
  const dir = mkdtempSync(join(tmpdir(), label));
  tempDirs.push(dir);
  return dir;
}

/** A key configuration of one new key. */
export function newKeys(id = 'k1'): string {
  return Keyring.generateKey(id);
}

/** A loopback port nothing listens on (bound, then closed). */
export async function closedPort(): Promise<number> {
  return new Promise((resolvePromise, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      server.close(() => resolvePromise(port));
    });
  });
}

/** The one-line error format: `ordo-sessions: <CODE>: <message>`; returns the code. */
export function errorCode(stderr: string): string | undefined {
  return /^ordo-sessions: ([A-Z0-9_]+): /m.exec(stderr)?.[1];
}
