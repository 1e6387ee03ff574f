/**
 * The built CLI against a real SQLite store: every command, its output, its exit code, and the
 * bad inputs an operator types at 03:00.
 */
import { chmodSync, existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dailyExpiry, Keyring } from '../../src/index.ts';
import { buildCli, closedPort, errorCode, newKeys, removeBuild, runCli, runCliOnTty, scriptAvailable, tempDir, type RunOptions } from './support.ts';

const ACCESS = 'eyJhbGciOiJIUzI1NiJ9.access-token-secret-part-7f3a';
const REFRESH = 'refresh-token-0123456789-wxyz';
const SESSION = { accessToken: ACCESS, refreshToken: REFRESH, accountId: 'XY1234', pin: '1234', expiresIn: 28800, live: true, scopes: ['orders-and-holdings'] };
const COMMANDS = ['keygen', 'set', 'get', 'list', 'delete', 'clear', 'purge', 'rotate', 'doctor', 'watch'];
const ESC = '\u001b[';

let dir: string;
let keys: string;
let env: Record<string, string>;

/** Runs in a store of its own unless told otherwise. */
function cli(args: readonly string[], options: RunOptions = {}) {
  return runCli(args, { cwd: dir, env, ...options });
}

beforeAll(() => {
  buildCli();
}, 120_000);
afterAll(() => removeBuild());

function freshStore(): void {
  dir = tempDir();
  keys = newKeys('k1');
  env = { ORDO_SESSION_KEYS: keys, ORDO_SESSION_DB: join(dir, 'db', 'sessions.db') };
}

describe.concurrent('help, version and usage errors', () => {
  beforeAll(freshStore);

  it('--version prints the package version', async () => {
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
    const result = await cli(['--version']);
    expect(result).toMatchObject({ code: 0, stdout: `${pkg.version}\n`, stderr: '' });
  });

  it('--help lists every command with examples and the exit codes', async () => {
    const result = await cli(['--help']);
    expect(result.code).toBe(0);
    for (const name of COMMANDS) expect(result.stdout).toMatch(new RegExp(`^  ${name} `, 'm'));
    expect(result.stdout).toContain('Examples:');
    expect(result.stdout).toContain('130 interrupted');
  });

  it.each(COMMANDS)('%s --help and help %s print the same usage with examples', async (name) => {
    const [flag, word] = await Promise.all([cli([name, '--help']), cli(['help', name])]);
    expect(flag.code).toBe(0);
    expect(flag.stdout).toMatch(new RegExp(`^Usage: ordo-sessions ${name}\\b`));
    expect(flag.stdout).toContain('Examples:');
    expect(word).toMatchObject({ code: 0, stdout: flag.stdout });
  });

  it('no command prints the help on stderr with exit 2', async () => {
    const result = await cli([]);
    expect(result.code).toBe(2);
    expect(result.stdout).toBe('');
    expect(result.stderr).toContain('Usage: ordo-sessions <command>');
  });

  it.each([
    [['frobnicate']],
    [['help', 'frobnicate']],
    [['list', '--frob']],
    [['list', '--reveal']], // an option of another command
    [['keygen', '--store', 'sqlite:x.db']], // keygen touches no store
    [['get', 'fyers']],
    [['get', 'fyers', 'a', 'b']],
    [['set', 'fyers', 'XY', '--ttl']],
    [['list', '--timeout', 'soon']],
  ])('%j is a usage error: exit 2, one line', async (args) => {
    const result = await cli(args);
    expect(result.code).toBe(2);
    expect(errorCode(result.stderr)).toBe('ERR_USAGE');
    expect(result.stderr.trim().split('\n')).toHaveLength(1);
  });

  it('a usage error never repeats what was typed beyond an option name', async () => {
    const result = await cli(['get', 'fyers', 'XY', `--token=${ACCESS}`]);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('--token');
    expect(result.stderr).not.toContain(ACCESS);
  });
});

describe.concurrent('keygen', () => {
  beforeAll(freshStore);

  it('prints a key in the config format that the library accepts', async () => {
    const result = await cli(['keygen'], { env: {} });
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/^k\d{8}-[0-9a-f]{4}:[A-Za-z0-9+/]{43}=\n$/);
    expect(Keyring.parse(result.stdout.trim()).keyIds).toHaveLength(1);
  });

  it('--id names the key', async () => {
    const result = await cli(['keygen', '--id', 'prod2'], { env: {} });
    expect(Keyring.parse(result.stdout.trim()).keyIds).toEqual(['prod2']);
  });

  it('--append prints the new key first, then the current ones', async () => {
    const result = await cli(['keygen', '--id', 'k2', '--append']);
    expect(result.code).toBe(0);
    expect(result.stdout.trim().endsWith(`,${keys}`)).toBe(true);
    expect(Keyring.parse(result.stdout.trim()).keyIds).toEqual(['k2', 'k1']);
  });

  it('--append reads the current keys from ORDO_SESSION_KEYS_FILE too', async () => {
    const file = join(dir, 'keys');
    writeFileSync(file, `${keys}\n`, { mode: 0o600 });
    const result = await cli(['keygen', '--id', 'k2', '--append'], { env: { ORDO_SESSION_KEYS_FILE: file } });
    expect(Keyring.parse(result.stdout.trim()).keyIds).toEqual(['k2', 'k1']);
  });

  it('--append refuses a duplicate id without printing any key', async () => {
    const result = await cli(['keygen', '--id', 'k1', '--append']);
    expect(result.code).toBe(1);
    expect(errorCode(result.stderr)).toBe('ERR_SESSION_KEYRING');
    expect(result.stdout).toBe('');
    expect(result.stderr).not.toContain(keys.split(':')[1]);
  });

  it('refuses a bad id', async () => {
    const result = await cli(['keygen', '--id', 'no spaces!'], { env: {} });
    expect(result.code).toBe(1);
    expect(errorCode(result.stderr)).toBe('ERR_SESSION_KEYRING');
  });
});

describe.concurrent('set, get, delete', () => {
  beforeAll(freshStore);

  it('stores JSON from stdin; get masks every string, --reveal shows it exactly', async () => {
    const set = await cli(['set', 'fyers', 'XY1234', '--ttl', '8h'], { input: JSON.stringify(SESSION) });
    expect(set.code).toBe(0);
    expect(set.stdout).toMatch(/^stored fyers\/XY1234 \(expires in 7h 59m|in 8h/);

    const masked = await cli(['get', 'fyers', 'XY1234']);
    expect(masked.code).toBe(0);
    expect(masked.stdout).not.toContain(ACCESS);
    expect(masked.stdout).not.toContain(REFRESH);
    expect(masked.stdout).not.toContain('1234"'); // pin and accountId are short: fully masked
    const shown = JSON.parse(masked.stdout) as Record<string, unknown>;
    expect(shown).toEqual({
      accessToken: '••••••••7f3a',
      refreshToken: '••••••••wxyz',
      accountId: '••••••••',
      pin: '••••••••',
      expiresIn: 28800,
      live: true,
      scopes: ['••••••••ings'],
    });

    const json = await cli(['get', 'fyers', 'XY1234', '--json']);
    expect(json.stdout.trim().split('\n')).toHaveLength(1);
    expect(JSON.parse(json.stdout)).toEqual(shown);

    const revealed = await cli(['get', 'fyers', 'XY1234', '--reveal', '--json']);
    expect(revealed.code).toBe(0);
    expect(JSON.parse(revealed.stdout)).toEqual(SESSION);
    expect(revealed.stdout).toContain(ACCESS);
  });

  it('reads --file', async () => {
    const file = join(dir, 'session.json');
    writeFileSync(file, JSON.stringify({ accessToken: 'from-a-file-token-9999' }), { mode: 0o600 });
    expect((await cli(['set', 'kite', 'AB1234', '--file', file])).code).toBe(0);
    const got = await cli(['get', 'kite', 'AB1234', '--reveal', '--json']);
    expect(JSON.parse(got.stdout)).toEqual({ accessToken: 'from-a-file-token-9999' });
  });

  it('get of a missing session exits 3', async () => {
    const result = await cli(['get', 'fyers', 'NOPE']);
    expect(result).toMatchObject({ code: 3, stdout: '' });
    expect(errorCode(result.stderr)).toBe('ERR_NOT_FOUND');
  });

  it('delete exits 0, then 3 when there is none', async () => {
    await cli(['set', 'upstox', 'U1'], { input: '{"a":"b"}' });
    const first = await cli(['delete', 'upstox', 'U1']);
    expect(first).toMatchObject({ code: 0, stdout: 'deleted upstox/U1\n' });
    const second = await cli(['delete', 'upstox', 'U1']);
    expect(second.code).toBe(3);
    expect(errorCode(second.stderr)).toBe('ERR_NOT_FOUND');
  });

  it('malformed JSON on stdin: exit 1, and the input is never echoed', async () => {
    const result = await cli(['set', 'fyers', 'XY9', '--ttl', '1h'], { input: `{"accessToken": "${ACCESS}",` });
    expect(result.code).toBe(1);
    expect(errorCode(result.stderr)).toBe('ERR_SESSION_INVALID_DATA');
    expect(result.stderr).not.toContain(ACCESS);
    expect(result.stderr).not.toContain('access');
    expect((await cli(['get', 'fyers', 'XY9'])).code).toBe(3);
  });

  it('empty stdin and non-JSON session values are refused', async () => {
    expect(errorCode((await cli(['set', 'fyers', 'XY9'], { input: '' })).stderr)).toBe('ERR_SESSION_INVALID_DATA');
    const huge = await cli(['set', 'fyers', 'XY9'], { input: JSON.stringify({ blob: 'x'.repeat(70_000) }) });
    expect(huge.code).toBe(1);
    expect(errorCode(huge.stderr)).toBe('ERR_SESSION_INVALID_DATA');
  });

  it('a bad broker id is refused with exit 2 before any store is opened', async () => {
    const results = await Promise.all(
      ['Fyers', 'fy/ers', '9lives', 'a'.repeat(65), ''].map((broker) =>
        cli(['get', broker, 'XY1234'], { env: { ...env, ORDO_SESSION_DB: join(dir, 'never', 'created.db') } }),
      ),
    );
    for (const result of results) {
      expect(result.code).toBe(2);
      expect(errorCode(result.stderr)).toBe('ERR_SESSION_INVALID_KEY');
    }
    expect(existsSync(join(dir, 'never'))).toBe(false);
  });

  it('a session key that is not NFC is refused (exit 2)', async () => {
    const result = await cli(['set', 'fyers', 'e\u0301'], { input: '{}' });
    expect(result.code).toBe(2);
    expect(errorCode(result.stderr)).toBe('ERR_SESSION_INVALID_KEY');
  });

  it('--ttl garbage is refused (exit 2) and writes nothing', async () => {
    const results = await Promise.all(
      ['8', 'abc', '0s', '1x', '-1h', '1h 30m', '1.5h', '99999999999999999d'].map((ttl) => cli(['set', 'fyers', 'TTL', `--ttl=${ttl}`], { input: '{}' })),
    );
    for (const result of results) {
      expect(result.code).toBe(2);
      expect(errorCode(result.stderr)).toBe('ERR_SESSION_INVALID_EXPIRY');
    }
    expect((await cli(['get', 'fyers', 'TTL'])).code).toBe(3);
  });

  it('--ttl 1h30m sets the expiry 90 minutes out', async () => {
    const before = Date.now();
    expect((await cli(['set', 'ttl', 'K', '--ttl', '1h30m'], { input: '{}' })).code).toBe(0);
    const [row] = JSON.parse((await cli(['list', 'ttl', '--json'])).stdout) as Array<{ expiresAt: string }>;
    const at = Date.parse(row?.expiresAt ?? '');
    expect(at).toBeGreaterThanOrEqual(before + 5_400_000);
    expect(at).toBeLessThanOrEqual(Date.now() + 5_400_000);
  });

  it('--expires-at takes an ISO time with a zone', async () => {
    const at = new Date(Date.now() + 3 * 86_400_000);
    at.setUTCMilliseconds(0);
    const iso = at.toISOString().replace('Z', '+00:00');
    expect((await cli(['set', 'abs', 'K', '--expires-at', iso], { input: '{}' })).code).toBe(0);
    const [row] = JSON.parse((await cli(['list', 'abs', '--json'])).stdout) as Array<{ expiresAt: string }>;
    expect(row?.expiresAt).toBe(at.toISOString());
  });

  it('--expires-at without a zone, in the past or not a time is refused (exit 2)', async () => {
    const results = await Promise.all(
      ['2026-12-04T06:00', 'tomorrow', '2020-01-01T00:00:00Z', '2026-13-45T99:00:00Z'].map((at) => cli(['set', 'abs', 'K2', '--expires-at', at], { input: '{}' })),
    );
    for (const result of results) {
      expect(result.code).toBe(2);
      expect(errorCode(result.stderr)).toBe('ERR_SESSION_INVALID_EXPIRY');
    }
  });

  it('--daily 06:00 --tz Asia/Kolkata expires at the next 06:00 in Kolkata', async () => {
    const before = Date.now();
    expect((await cli(['set', 'kite', 'DAILY', '--daily', '06:00', '--tz', 'Asia/Kolkata'], { input: '{}' })).code).toBe(0);
    const rows = JSON.parse((await cli(['list', 'kite', '--json'])).stdout) as Array<{ key: string; expiresAt: string }>;
    const at = Date.parse(rows.find((r) => r.key === 'DAILY')?.expiresAt ?? '');
    expect([dailyExpiry({ at: '06:00', timeZone: 'Asia/Kolkata' }, before).getTime(), dailyExpiry({ at: '06:00', timeZone: 'Asia/Kolkata' }).getTime()]).toContain(at);
    expect(new Date(at + 5.5 * 3_600_000).toISOString().slice(11, 16)).toBe('06:00');
  });

  it.each([
    [['--daily', '06:00'], 'ERR_USAGE'],
    [['--tz', 'Asia/Kolkata'], 'ERR_USAGE'],
    [['--daily', '6am', '--tz', 'Asia/Kolkata'], 'ERR_SESSION_INVALID_EXPIRY'],
    [['--daily', '06:00', '--tz', 'Mars/Olympus'], 'ERR_SESSION_INVALID_EXPIRY'],
    [['--ttl', '1h', '--expires-at', '2030-01-01T00:00:00Z'], 'ERR_USAGE'],
  ])('expiry flags %j are refused with %s (exit 2)', async (flags, code) => {
    const result = await cli(['set', 'kite', 'BAD', ...flags], { input: '{}' });
    expect(result.code).toBe(2);
    expect(errorCode(result.stderr)).toBe(code);
  });
});

describe.concurrent('keys and stores that are wrong', () => {
  beforeAll(freshStore);

  it('no key configuration: exit 1 with ERR_SESSION_KEYRING, and no store is created', async () => {
    const result = await cli(['list'], { env: { ORDO_SESSION_DB: join(dir, 'nokeys', 's.db') } });
    expect(result.code).toBe(1);
    expect(errorCode(result.stderr)).toBe('ERR_SESSION_KEYRING');
    expect(existsSync(join(dir, 'nokeys'))).toBe(false);
  });

  it('a malformed key configuration names no key material', async () => {
    const bad = `k1:${'A'.repeat(20)}`;
    const result = await cli(['list'], { env: { ...env, ORDO_SESSION_KEYS: bad } });
    expect(result.code).toBe(1);
    expect(errorCode(result.stderr)).toBe('ERR_SESSION_KEYRING');
    expect(result.stderr).not.toContain('A'.repeat(20));
  });

  it('other keys than the store was written with: ERR_SESSION_KEYRING_MISMATCH', async () => {
    expect((await cli(['set', 'fyers', 'XY1234'], { input: JSON.stringify(SESSION) })).code).toBe(0);
    const result = await cli(['get', 'fyers', 'XY1234', '--reveal'], { env: { ...env, ORDO_SESSION_KEYS: newKeys('k1') } });
    expect(result.code).toBe(1);
    expect(errorCode(result.stderr)).toBe('ERR_SESSION_KEYRING_MISMATCH');
    expect(result.stdout).toBe('');
  });

  it('a --store that is no store spec is refused (exit 2)', async () => {
    for (const result of await Promise.all(['mysql://db/x', 'sqlite:', 'redis://[bad'].map((store) => cli(['list', '--store', store])))) {
      expect(result.code).toBe(2);
      expect(errorCode(result.stderr)).toBe('ERR_SESSION_INVALID_OPTIONS');
    }
  });

  it('ORDO_SESSION_STORE picks the store, --store wins over it', async () => {
    const other = join(dir, 'other.db');
    expect((await cli(['set', 'alpaca', 'A1'], { input: '{}', env: { ...env, ORDO_SESSION_STORE: `sqlite:${other}` } })).code).toBe(0);
    expect(existsSync(other)).toBe(true);
    expect((await cli(['get', 'alpaca', 'A1'])).code).toBe(3); // the default store does not have it
    expect((await cli(['get', 'alpaca', 'A1', '--store', `sqlite:${other}`])).code).toBe(0);
  });

  it('--private-keys opens a namespace with private storage keys; without it the store says so (exit 2)', async () => {
    const store = `sqlite:${join(dir, 'private.db')}`;
    expect((await cli(['set', 'fyers', 'XY1', '--private-keys', '--store', store], { input: '{}' })).code).toBe(0);
    const rows = JSON.parse((await cli(['list', '--json', '--private-keys', '--store', store])).stdout) as Array<{ broker: string; key: string }>;
    expect(rows.map((r) => `${r.broker}/${r.key}`)).toEqual(['fyers/XY1']);
    const plainOpen = await cli(['list', '--store', store]);
    expect(plainOpen.code).toBe(2);
    expect(errorCode(plainOpen.stderr)).toBe('ERR_SESSION_INVALID_OPTIONS');
  });

  it('--verbose adds the stack; without it the error is one line', async () => {
    const plain = await cli(['list'], { env: {} });
    const verbose = await cli(['list', '--verbose'], { env: {} });
    expect(plain.stderr.trim().split('\n')).toHaveLength(1);
    expect(verbose.stderr).toMatch(/\n\s+at /);
  });
});

// Not concurrent: these measure time.
describe('an unreachable store', () => {
  beforeAll(freshStore);

  it.each(['redis', 'postgres'])('an unreachable %s store fails fast with ERR_SESSION_STORE_UNAVAILABLE', async (kind) => {
    const port = await closedPort();
    const url = kind === 'redis' ? `redis://127.0.0.1:${port}` : `postgres://postgres:hunter2@127.0.0.1:${port}/test`;
    const result = await cli(['list', '--store', url, '--timeout', '1000']);
    expect(result.code).toBe(1);
    expect(errorCode(result.stderr)).toBe('ERR_SESSION_STORE_UNAVAILABLE');
    expect(result.stderr.trim().split('\n')).toHaveLength(1);
    expect(result.stderr).not.toContain('hunter2');
    expect(result.ms).toBeLessThan(8000);
  });

  it('the default timeout is a few seconds', async () => {
    const port = await closedPort();
    const result = await cli(['get', 'fyers', 'XY', '--store', `redis://127.0.0.1:${port}`]);
    expect(errorCode(result.stderr)).toBe('ERR_SESSION_STORE_UNAVAILABLE');
    expect(result.ms).toBeLessThan(15_000); // 3 s of timeout, and a loaded machine's process start
  });

});

describe('list, clear, purge', () => {
  beforeAll(async () => {
    freshStore();
    for (const [broker, key] of [['fyers', 'XY1'], ['fyers', 'XY2'], ['kite', 'AB1'], ['kite-paper', 'AB1']] as const) {
      const result = await cli(['set', broker, key, '--ttl', '2h'], { input: JSON.stringify(SESSION) });
      expect(result.code).toBe(0);
    }
  });

  it('a table of every broker, never any session data', async () => {
    const result = await cli(['list']);
    expect(result.code).toBe(0);
    const lines = result.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^BROKER\s+KEY\s+EXPIRES\s+EXPIRES AT\s+UPDATED\s+KEY ID$/);
    expect(lines.slice(1).map((l) => l.split(/\s+/).slice(0, 2).join('/'))).toEqual(['fyers/XY1', 'fyers/XY2', 'kite/AB1', 'kite-paper/AB1']);
    expect(lines[1]).toMatch(/^fyers +XY1 +in 1h 59m +\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z +\d+m?s ago +k1$/);
    expect(lines[1]).toMatch(/k1$/);
    expect(result.stdout).not.toContain(ACCESS.slice(-4));
    expect(result.stdout).not.toContain(ESC);
  });

  it('list <broker> --json: that broker only', async () => {
    const rows = JSON.parse((await cli(['list', 'kite', '--json'])).stdout) as Array<Record<string, unknown>>;
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({ broker: 'kite', key: 'AB1', keyId: 'k1' });
    expect(Object.keys(rows[0] ?? {}).sort()).toEqual(['broker', 'expiresAt', 'key', 'keyId', 'updatedAt']);
  });

  it('another namespace sees nothing', async () => {
    expect(JSON.parse((await cli(['list', '--json', '--namespace', 'staging'])).stdout)).toEqual([]);
    expect((await cli(['list', '--namespace', 'staging'])).stdout).toBe('no sessions\n');
    expect(errorCode((await cli(['list', '--namespace', 'Bad NS'])).stderr)).toBe('ERR_SESSION_INVALID_KEY');
  });

  it('a key with terminal escapes is listed harmlessly', async () => {
    expect((await cli(['set', 'evil', '\u001b[31mred\u0007'], { input: '{}' })).code).toBe(0);
    const result = await cli(['list', 'evil']);
    expect(result.stdout).toContain('\\u001b[31mred\\u0007');
    expect(result.stdout).not.toContain('\u001b');
    expect((await cli(['delete', 'evil', '\u001b[31mred\u0007'])).code).toBe(0);
  });

  it('clear refuses without --yes when stdin is not a terminal', async () => {
    const result = await cli(['clear', 'kite']);
    expect(result.code).toBe(2);
    expect(errorCode(result.stderr)).toBe('ERR_USAGE');
    expect(JSON.parse((await cli(['list', 'kite', '--json'])).stdout)).toHaveLength(1);
  });

  it('clear --yes deletes that broker only', async () => {
    const result = await cli(['clear', 'kite', '--yes']);
    expect(result).toMatchObject({ code: 0, stdout: 'deleted 1 session of kite\n' });
    const left = JSON.parse((await cli(['list', '--json'])).stdout) as Array<{ broker: string }>;
    expect(left.map((r) => r.broker)).toEqual(['fyers', 'fyers', 'kite-paper']);
  });

  it.runIf(scriptAvailable)('clear on a terminal asks, and "n" keeps everything', async () => {
    const result = await runCliOnTty(['clear', 'fyers'], { cwd: dir, env, input: 'n\r' });
    expect(plain(result.stdout)).toContain('Delete all 2 live sessions of broker "fyers" in namespace "default"? [y/N]');
    expect(result.code).toBe(1);
    expect(JSON.parse((await cli(['list', 'fyers', '--json'])).stdout)).toHaveLength(2);
  });

  it.runIf(scriptAvailable)('clear on a terminal asks, and "y" deletes', async () => {
    const result = await runCliOnTty(['clear', 'kite-paper'], { cwd: dir, env, input: 'y\r' });
    expect(result.code).toBe(0);
    expect(plain(result.stdout)).toContain('deleted 1 session of kite-paper');
    expect(JSON.parse((await cli(['list', 'kite-paper', '--json'])).stdout)).toEqual([]);
  });

  it('purge deletes the expired sessions only', async () => {
    expect((await cli(['set', 'short', 'S1', '--ttl', '300ms'], { input: '{}' })).code).toBe(0);
    await new Promise((r) => setTimeout(r, 600));
    expect((await cli(['purge'])).stdout).toBe('purged 1 expired session\n');
    expect((await cli(['purge'])).stdout).toBe('purged 0 expired sessions\n');
    expect(JSON.parse((await cli(['list', 'fyers', '--json'])).stdout)).toHaveLength(2);
  });
});

describe('colour', () => {
  beforeAll(async () => {
    freshStore();
    await cli(['set', 'fyers', 'XY1', '--ttl', '20m'], { input: '{}' });
  });

  it('never when piped', async () => {
    const result = await cli(['doctor']);
    expect(result.stdout).toMatch(/^ok {4}keys/m);
    expect(result.stdout).not.toContain(ESC);
  });

  it.runIf(scriptAvailable)('on a terminal, unless NO_COLOR is set to anything (even empty)', async () => {
    const coloured = await runCliOnTty(['doctor'], { cwd: dir, env });
    expect(coloured.stdout).toContain(ESC);
    for (const value of ['1', '']) {
      const plain = await runCliOnTty(['doctor'], { cwd: dir, env: { ...env, NO_COLOR: value } });
      expect(plain.stdout).toMatch(/ok {4}keys/);
      expect(plain.stdout).not.toContain(ESC);
    }
  });
});

describe('doctor', () => {
  beforeAll(async () => {
    freshStore();
    await cli(['set', 'fyers', 'XY1', '--ttl', '20m'], { input: JSON.stringify(SESSION) });
    await cli(['set', 'fyers', 'XY2', '--ttl', '8h'], { input: JSON.stringify(SESSION) });
  });

  function statuses(stdout: string): Record<string, string> {
    return Object.fromEntries((JSON.parse(stdout) as Array<{ check: string; status: string }>).map((c) => [c.check, c.status]));
  }

  it('a healthy store: ok, with a warning for what expires within the hour', async () => {
    const result = await cli(['doctor']);
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/^ok {4}store {7}sqlite:.* answers; get of a missing key took \d+\.\d ms$/m);
    expect(result.stdout).toMatch(/^warn {2}expiring {4}1 expire within the next hour: fyers\/XY1 in 1\dm$/m);
    expect(result.stdout).toMatch(/^ok {4}nonces {6}encryptions of 2\^32 per key: k1 \d+ \(0\.0000%\)$/m);
    expect(result.stdout).not.toContain(ACCESS.slice(-4));
    const json = await cli(['doctor', '--json']);
    expect(statuses(json.stdout)).toEqual({ keys: 'ok', files: 'ok', store: 'ok', canary: 'ok', 'key usage': 'ok', nonces: 'ok', expiring: 'warn' });
  });

  it('sessions under an older key: a warning to rotate', async () => {
    const rotated = `${newKeys('k2')},${keys}`;
    const result = await cli(['doctor', '--json'], { env: { ...env, ORDO_SESSION_KEYS: rotated } });
    expect(result.code).toBe(0);
    const usage = (JSON.parse(result.stdout) as Array<{ check: string; status: string; detail: string }>).find((c) => c.check === 'key usage');
    // keyUsage counts sealed metadata beside the 2 sessions.
    expect(usage?.status).toBe('warn');
    expect(usage?.detail).toMatch(/^k1 (\d+); \1 not under the primary key: run `ordo-sessions rotate`$/);
  });

  it('wrong keys: the canary fails, exit 1', async () => {
    const result = await cli(['doctor', '--json'], { env: { ...env, ORDO_SESSION_KEYS: newKeys('k1') } });
    expect(result.code).toBe(1);
    expect(statuses(result.stdout)['canary']).toBe('fail');
  });

  it('no keys: keys fail, the store is still checked', async () => {
    const result = await cli(['doctor'], { env: { ORDO_SESSION_DB: env['ORDO_SESSION_DB'] } });
    expect(result.code).toBe(1);
    expect(result.stdout).toMatch(/^fail {2}keys {8}ERR_SESSION_KEYRING: /m);
    expect(result.stdout).toMatch(/^ok {4}store/m);
  });

  it('a key file others can read fails', async () => {
    const file = join(dir, 'keys');
    writeFileSync(file, keys, { mode: 0o644 });
    chmodSync(file, 0o644);
    const result = await cli(['doctor', '--json'], { env: { ORDO_SESSION_DB: env['ORDO_SESSION_DB'], ORDO_SESSION_KEYS_FILE: file } });
    expect(result.code).toBe(1);
    expect(statuses(result.stdout)['keys']).toBe('fail');
    chmodSync(file, 0o600);
    expect(statuses((await cli(['doctor', '--json'], { env: { ORDO_SESSION_DB: env['ORDO_SESSION_DB'], ORDO_SESSION_KEYS_FILE: file } })).stdout)['keys']).toBe('ok');
  });

  it('a database file others can read fails, and doctor does not fix it silently', async () => {
    const db = env['ORDO_SESSION_DB'] as string;
    chmodSync(db, 0o644);
    try {
      const result = await cli(['doctor']);
      expect(result.code).toBe(1);
      expect(result.stdout).toMatch(/^fail {2}files {7}.*sessions\.db is 644 \(want 600\)/m);
    } finally {
      chmodSync(db, 0o600);
    }
    expect(statSync(db).mode & 0o777).toBe(0o600);
  });

  it('no database at the path: a warning, and nothing is created', async () => {
    const missing = join(dir, 'typo', 'sessions.db');
    const result = await cli(['doctor', '--store', `sqlite:${missing}`]);
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/^warn {2}files {7}no database at /m);
    expect(existsSync(missing)).toBe(false);
  });

  it('an unreachable store fails', async () => {
    const port = await closedPort();
    const result = await cli(['doctor', '--json', '--store', `redis://127.0.0.1:${port}`, '--timeout', '800']);
    expect(result.code).toBe(1);
    const store = (JSON.parse(result.stdout) as Array<{ check: string; status: string; detail: string }>).find((c) => c.check === 'store');
    expect(store?.status).toBe('fail');
    expect(store?.detail).toContain('ERR_SESSION_STORE_UNAVAILABLE');
  });
});

describe('watch', () => {
  beforeAll(freshStore);

  it('prints changes as they happen, never data, and stops on SIGINT with 130', async () => {
    const { spawn } = await import('node:child_process');
    const { CLI, baseEnv } = await import('./support.ts');
    const child = spawn(process.execPath, [CLI, 'watch', 'fyers', '--json'], { cwd: dir, env: baseEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
    child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    try {
      await waitFor(() => stderr.includes('watching'), 15_000);
      expect((await cli(['set', 'fyers', 'XY1'], { input: JSON.stringify(SESSION) })).code).toBe(0);
      expect((await cli(['set', 'kite', 'AB1'], { input: '{}' })).code).toBe(0); // another broker: not shown
      expect((await cli(['delete', 'fyers', 'XY1'])).code).toBe(0);
      await waitFor(() => stdout.split('\n').filter(Boolean).length >= 2, 10_000);
      const events = stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
      expect(events.map(({ kind, broker, key }) => ({ kind, broker, key }))).toEqual([
        { kind: 'set', broker: 'fyers', key: 'XY1' },
        { kind: 'delete', broker: 'fyers', key: 'XY1' },
      ]);
      expect(stdout).not.toContain(ACCESS.slice(-4));
      const exit = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
      child.kill('SIGINT');
      expect(await exit).toBe(130);
    } finally {
      child.kill('SIGKILL');
    }
  });
});

/** Terminal output without its escape sequences. */
function plain(text: string): string {
  // eslint-disable-next-line no-control-regex
  return text.replace(/\u001b\[[0-9;?]*[A-Za-z]|\u001b[78]/g, '');
}

async function waitFor(condition: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('timed out waiting');
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('rotate', () => {
  const SEEDED = 3000;
  let k2: string;

  beforeAll(async () => {
    freshStore();
    k2 = newKeys('k2');
    // Seeded in-process: 3000 child processes would take minutes.
    const { SessionManager, SqliteStore } = await import('../../src/index.ts');
    const sessions = await SessionManager.open({ keyring: Keyring.parse(keys), store: new SqliteStore({ path: env['ORDO_SESSION_DB'] as string }) });
    await Promise.all(Array.from({ length: SEEDED }, (_, i) => sessions.setSession('fyers', `XY${i}`, { accessToken: `${ACCESS}-${i}` }, { ttlMs: 3_600_000 * 8 })));
    await sessions.close();
  });

  async function keyIds(): Promise<Record<string, number>> {
    const rows = JSON.parse((await cli(['list', '--json'], { env: { ...env, ORDO_SESSION_KEYS: `${k2},${keys}` } })).stdout) as Array<{ keyId: string }>;
    const counts: Record<string, number> = {};
    for (const row of rows) counts[row.keyId] = (counts[row.keyId] ?? 0) + 1;
    return counts;
  }

  it('Ctrl-C stops it with exit 130 and every session readable; a rerun resumes and finishes', async () => {
    const { spawn } = await import('node:child_process');
    const { CLI, baseEnv } = await import('./support.ts');
    const rotated = { ...env, ORDO_SESSION_KEYS: `${k2},${keys}` };
    const child = spawn(process.execPath, [CLI, 'rotate', '--batch-size', '1'], { cwd: dir, env: baseEnv(rotated), stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
    child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    const exit = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    try {
      await waitFor(() => stdout.includes('progress: '), 20_000);
      child.kill('SIGINT');
      expect(await exit).toBe(130);
    } finally {
      child.kill('SIGKILL');
    }
    expect(errorCode(stderr)).toBe('ERR_INTERRUPTED');
    expect(stderr).toMatch(/rotation interrupted after \d+ scanned, \d+ rotated, \d+ skipped; every session is still readable, run rotate again to resume/);
    const partial = await keyIds();
    expect(partial['k2']).toBeGreaterThan(0);
    expect(partial['k1']).toBeGreaterThan(0);
    expect((partial['k1'] ?? 0) + (partial['k2'] ?? 0)).toBe(SEEDED);
    // Both kinds read back.
    for (const key of ['XY0', `XY${SEEDED - 1}`]) {
      const got = await cli(['get', 'fyers', key, '--reveal', '--json'], { env: rotated });
      expect(JSON.parse(got.stdout)).toEqual({ accessToken: `${ACCESS}-${key.slice(2)}` });
    }

    const rerun = await cli(['rotate'], { env: rotated });
    expect(rerun.code).toBe(0);
    const [, rotatedNow] = /^done: \d+ scanned, (\d+) rotated, \d+ skipped; primary key k2$/m.exec(rerun.stdout) ?? [];
    expect(Number(rotatedNow)).toBe(partial['k1']);
    expect(await keyIds()).toEqual({ k2: SEEDED });
    expect(rerun.stdout).not.toContain(ACCESS);
  });

  it.runIf(scriptAvailable)('draws a progress bar on a terminal', async () => {
    const k3 = newKeys('k3');
    const result = await runCliOnTty(['rotate'], { cwd: dir, env: { ...env, ORDO_SESSION_KEYS: `${k3},${k2},${keys}` } });
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(new RegExp(`█+ (\\d+)/\\1 scanned \\| ${SEEDED} rotated`));
    expect(plain(result.stdout)).toMatch(/done: \d+ scanned, 3000 rotated, \d+ skipped; primary key k3/);
  });

  it('without the old key configured, it refuses to open rather than strand sessions', async () => {
    const result = await cli(['rotate'], { env: { ...env, ORDO_SESSION_KEYS: newKeys('k9') } });
    expect(result.code).toBe(1);
    expect(errorCode(result.stderr)).toMatch(/^ERR_SESSION_(KEYRING_MISMATCH|KEY_IN_USE)$/);
  });
});
