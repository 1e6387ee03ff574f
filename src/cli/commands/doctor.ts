/**
 * `doctor`: checks what goes wrong at 03:00 — the keys, the store, the canary, file modes, which
 * keys protect how many sessions, and what expires soon. Each check prints ok / warn / fail with a
 * one-line detail; any fail makes the exit code 1.
 */
import { statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { KeyInUseError, SessionError, SessionManager, type Keyring, type SessionStore } from '../lib.ts';
import { EXIT, usageError, type Command, type Context } from '../context.ts';
import { formatDuration, printable, relativeTime } from '../format.ts';
import { describeStoreSpec } from '../store-url.ts';

type Status = 'ok' | 'warn' | 'fail';
interface Check {
  readonly check: string;
  readonly status: Status;
  readonly detail: string;
}

/** A get slower than this is worth a warning. */
const SLOW_GET_MS = 250;
const SOON_MS = 3600_000;

export const doctor: Command = {
  name: 'doctor',
  summary: 'check keys, store, canary, file modes, key usage, expiring sessions',
  usage: 'doctor [--json]',
  options: { json: { type: 'boolean' } },
  needsStore: true,
  help: `Checks the configuration and the store, one line per check (ok, warn or fail):
  keys        the key configuration parses (lengths, duplicates, key file permissions)
  files       SQLite only: database, -wal and -shm are 0600 and their directory 0700
  store       the store answers, and how fast (a get of a missing key)
  canary      these keys are the right keys for this store
  key usage   live sessions per key id (sessions not under the primary await \`rotate\`)
  nonces      encryptions per key against the AES-GCM random-nonce budget
  expiring    sessions that expire within the next hour
Exit code 1 when any check fails.

Options:
  --json   a JSON array of { check, status, detail }

Examples:
  ordo-sessions doctor
  ordo-sessions doctor --store redis://10.0.0.5:6379 --namespace prod`,
  async run(context, positionals, values) {
    if (positionals.length > 0) throw usageError('doctor takes no arguments');
    const checks: Check[] = [];
    const report = (check: Check): void => {
      checks.push(check);
      if (values['json'] !== true) printCheck(context, check);
    };
    await diagnose(context, report);
    if (values['json'] === true) context.out(JSON.stringify(checks));
    return checks.some((c) => c.status === 'fail') ? EXIT.failure : EXIT.ok;
  },
};

function printCheck(context: Context, { check, status, detail }: Check): void {
  const paint = status === 'ok' ? context.style.ok : status === 'warn' ? context.style.warn : context.style.fail;
  context.out(`${paint(status.padEnd(4))}  ${check.padEnd(10)}  ${detail}`);
}

function failure(error: unknown): string {
  if (error instanceof SessionError) return `${error.code}: ${error.message}`;
  return `unexpected ${error instanceof Error ? error.name : typeof error}`;
}

async function diagnose(context: Context, report: (check: Check) => void): Promise<void> {
  let keyring: Keyring | undefined;
  try {
    keyring = context.keyring();
    const source = context.env['ORDO_SESSION_KEYS'] ? 'ORDO_SESSION_KEYS' : 'ORDO_SESSION_KEYS_FILE';
    const n = keyring.keyIds.length;
    report({ check: 'keys', status: 'ok', detail: `${n} key${n === 1 ? '' : 's'} from ${source}, primary ${keyring.primaryKeyId}` });
  } catch (error) {
    report({ check: 'keys', status: 'fail', detail: failure(error) });
  }

  const spec = context.storeSpec;
  if (spec.kind === 'sqlite') {
    if (!checkSqliteFiles(spec.path, report)) {
      for (const check of ['store', 'canary', 'key usage', 'nonces', 'expiring']) {
        report({ check, status: 'warn', detail: 'skipped: no database yet' });
      }
      return;
    }
  }

  let store: SessionStore;
  try {
    store = await context.createStore();
  } catch (error) {
    report({ check: 'store', status: 'fail', detail: failure(error) });
    return;
  }
  const where = describeStoreSpec(spec);
  try {
    await store.open?.();
    const started = performance.now();
    await store.get(`${context.namespace}!doctor/probe`);
    const ms = performance.now() - started;
    report({
      check: 'store',
      status: ms > SLOW_GET_MS ? 'warn' : 'ok',
      detail: `${printable(where)} answers; get of a missing key took ${ms.toFixed(1)} ms`,
    });
  } catch (error) {
    await store.close().catch(() => undefined);
    report({ check: 'store', status: 'fail', detail: `${printable(where)}: ${failure(error)}` });
    return;
  }

  if (keyring === undefined) {
    await store.close().catch(() => undefined);
    for (const check of ['canary', 'key usage', 'nonces', 'expiring']) report({ check, status: 'warn', detail: 'skipped: no usable keys' });
    return;
  }
  let sessions: SessionManager;
  const open = (allowMissingKeys: boolean): Promise<SessionManager> =>
    SessionManager.open({ keyring, store, namespace: context.namespace, privateKeys: context.privateKeys, allowMissingKeys, onWarning: () => undefined });
  try {
    sessions = await open(false); // closes the store if it throws
    report({ check: 'canary', status: 'ok', detail: `the configured keys open this store (namespace ${context.namespace})` });
  } catch (error) {
    report({ check: 'canary', status: 'fail', detail: failure(error) });
    if (!(error instanceof KeyInUseError)) return;
    // The keys are right but one is missing: the rest of the checks still say something useful.
    store = await context.createStore();
    try {
      sessions = await open(true);
    } catch {
      return;
    }
  }
  try {
    await checkSessions(sessions, keyring, report);
  } finally {
    await sessions.close().catch(() => undefined);
  }
}

/** File modes of a SQLite store, read before anything opens it. Returns whether the database exists. */
function checkSqliteFiles(path: string, report: (check: Check) => void): boolean {
  const db = resolve(path);
  const problems: string[] = [];
  const mode = (file: string): number | undefined => {
    try {
      return statSync(file).mode & 0o777;
    } catch {
      return undefined;
    }
  };
  const dbMode = mode(db);
  if (dbMode === undefined) {
    report({ check: 'files', status: 'warn', detail: `no database at ${printable(db)} (the first write creates it); is --store right?` });
    return false;
  }
  for (const file of [db, `${db}-wal`, `${db}-shm`]) {
    const m = file === db ? dbMode : mode(file);
    if (m !== undefined && (m & 0o077) !== 0) problems.push(`${printable(file)} is ${m.toString(8)} (want 600)`);
  }
  const dirMode = mode(dirname(db));
  if (dirMode !== undefined && (dirMode & 0o077) !== 0) problems.push(`directory ${printable(dirname(db))} is ${dirMode.toString(8)} (want 700)`);
  report(
    problems.length === 0
      ? { check: 'files', status: 'ok', detail: `${printable(db)} and its -wal/-shm are 600, directory 700` }
      : { check: 'files', status: 'fail', detail: problems.join('; ') },
  );
  return true;
}

async function checkSessions(sessions: SessionManager, keyring: Keyring, report: (check: Check) => void): Promise<void> {
  try {
    const usage = await sessions.keyUsage();
    const primary = keyring.primaryKeyId;
    const entries = Object.entries(usage).sort(([a], [b]) => (a === primary ? -1 : b === primary ? 1 : a < b ? -1 : 1));
    const counts = entries.map(([id, n]) => `${printable(id)} ${n}${id === primary ? ' (primary)' : ''}`).join(', ');
    const missing = entries.filter(([id]) => !keyring.has(id)).map(([id]) => printable(id));
    const behind = entries.filter(([id]) => id !== primary && keyring.has(id)).reduce((a, [, n]) => a + n, 0);
    if (entries.length === 0) report({ check: 'key usage', status: 'ok', detail: 'no live records' });
    else if (missing.length > 0) {
      report({ check: 'key usage', status: 'fail', detail: `${counts}; no configured key for ${missing.join(', ')}: those records cannot be read` });
    } else if (behind > 0) {
      report({ check: 'key usage', status: 'warn', detail: `${counts}; ${behind} not under the primary key: run \`ordo-sessions rotate\`` });
    } else report({ check: 'key usage', status: 'ok', detail: counts });
  } catch (error) {
    report({ check: 'key usage', status: 'fail', detail: failure(error) });
  }

  try {
    const stats = await sessions.keyStats();
    const worst = Math.max(0, ...stats.map((s) => s.used));
    const detail = stats.map((s) => `${printable(s.keyId)} ${s.encryptions} (${(s.used * 100).toFixed(4)}%)`).join(', ');
    const status: Status = worst >= 0.9 ? 'fail' : worst >= 0.5 ? 'warn' : 'ok';
    const advice = status === 'ok' ? '' : ': add a new primary key and run `ordo-sessions rotate`';
    report({ check: 'nonces', status, detail: `encryptions of 2^32 per key: ${detail}${advice}` });
  } catch (error) {
    report({ check: 'nonces', status: 'fail', detail: failure(error) });
  }

  const now = Date.now();
  const soon: Array<{ name: string; at: number }> = [];
  try {
    for await (const info of sessions.listAllSessions()) {
      const at = info.expiresAt?.getTime();
      if (at !== undefined && at - now <= SOON_MS) soon.push({ name: `${info.broker}/${info.key}`, at });
    }
  } catch (error) {
    report({ check: 'expiring', status: 'fail', detail: failure(error) });
    return;
  }
  soon.sort((a, b) => a.at - b.at);
  if (soon.length === 0) report({ check: 'expiring', status: 'ok', detail: `no session expires within the next ${formatDuration(SOON_MS)}` });
  else {
    const first = soon.slice(0, 3).map((s) => `${printable(s.name)} ${relativeTime(s.at, now)}`).join(', ');
    const more = soon.length > 3 ? `, and ${soon.length - 3} more` : '';
    report({ check: 'expiring', status: 'warn', detail: `${soon.length} expire within the next hour: ${first}${more}` });
  }
}
