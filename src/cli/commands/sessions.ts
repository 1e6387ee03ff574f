/** The session commands: set, get, list, delete, clear, purge. */
import { readFile } from 'node:fs/promises';
import { createInterface } from 'node:readline/promises';
import { dailyExpiry, IDENTIFIER_PATTERN, InvalidExpiryError, InvalidSessionDataError, InvalidSessionKeyError, type BrokerSessionInfo, type ExpiryOptions } from '../lib.ts';
import { CliError, EXIT, usageError, withSessions, type Command, type Context, type OptionValues } from '../context.ts';
import { isoSeconds, maskValue, parseDuration, printable, relativeTime, table } from '../format.ts';

/** More than any session the library accepts (16 MiB at most), so the library gives the size error. */
const MAX_INPUT_BYTES = 17 * 1024 * 1024;

function brokerArg(value: string | undefined, command: string): string {
  if (value === undefined) throw usageError(`${command} needs a broker id`);
  // The library checks it again; checking here fails before any store is touched.
  if (!IDENTIFIER_PATTERN.test(value)) {
    throw new InvalidSessionKeyError('broker id must be 1 to 64 characters of a-z, 0-9, "_" or "-", starting with a letter');
  }
  return value;
}

function keyArg(value: string | undefined, command: string): string {
  if (value === undefined) throw usageError(`${command} needs a session key`);
  return value;
}

function noMore(positionals: readonly string[], count: number, command: string): void {
  if (positionals.length > count) throw usageError(`${command} takes ${count} argument${count === 1 ? '' : 's'}, got ${positionals.length}`);
}

/** `--ttl`, `--expires-at` or `--daily` (with `--tz`) as library expiry options; at most one. */
export function expiryFrom(values: OptionValues, now: number): ExpiryOptions | undefined {
  const ttl = values['ttl'];
  const at = values['expires-at'];
  const daily = values['daily'];
  const tz = values['tz'];
  const given = [ttl, at, daily].filter((v) => v !== undefined).length;
  if (given > 1) throw usageError('give one of --ttl, --expires-at and --daily');
  if (tz !== undefined && daily === undefined) throw usageError('--tz goes with --daily');
  if (typeof ttl === 'string') {
    const ms = parseDuration(ttl);
    if (ms === undefined) throw new InvalidExpiryError('--ttl must be a duration like 8h, 1h30m, 90s or 500ms (units ms, s, m, h, d)');
    return { ttlMs: ms };
  }
  if (typeof at === 'string') {
    // A zone is required: at 03:00 "06:00" without one is a guess about whose 06:00.
    if (!/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,3})?)?(Z|[+-]\d{2}:\d{2})$/i.test(at) || Number.isNaN(Date.parse(at))) {
      throw new InvalidExpiryError('--expires-at must be an ISO time with a zone, e.g. 2026-12-04T06:00:00+05:30 or 2026-12-04T00:30:00Z');
    }
    return { expiresAt: Date.parse(at) };
  }
  if (typeof daily === 'string') {
    if (typeof tz !== 'string') throw usageError('--daily needs --tz, e.g. --tz Asia/Kolkata: whose 06:00 is a guess otherwise');
    return { expiresAt: dailyExpiry({ at: daily, timeZone: tz }, now) };
  }
  return undefined;
}

async function readInput(context: Context, file: string | undefined): Promise<string> {
  if (file !== undefined) return readFile(file, 'utf8');
  const stdin = process.stdin;
  if (stdin.isTTY) context.err('ordo-sessions: reading the session JSON from the terminal; end it with Ctrl-D');
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of stdin as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_INPUT_BYTES) throw new InvalidSessionDataError('the session JSON is too large');
    chunks.push(chunk);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  chunks.forEach((c) => c.fill(0));
  return text;
}

function parseSession(text: string): unknown {
  if (text.trim() === '') throw new InvalidSessionDataError('no session JSON given: pipe it on stdin or pass --file');
  try {
    return JSON.parse(text);
  } catch {
    // Never the parser's message: it quotes the input, which is a token.
    throw new InvalidSessionDataError('the session is not valid JSON');
  }
}

export const set: Command = {
  name: 'set',
  summary: 'store a session (JSON on stdin or --file)',
  usage: 'set <broker> <key> [--file PATH] [--ttl 8h | --expires-at ISO | --daily HH:MM --tz ZONE]',
  options: { file: { type: 'string' }, ttl: { type: 'string' }, 'expires-at': { type: 'string' }, daily: { type: 'string' }, tz: { type: 'string' } },
  needsStore: true,
  help: `Stores a session, replacing any previous one at the same broker and key. The session is
JSON read from stdin (or from --file). Without an expiry option the session never expires.

Options:
  --file PATH          read the session JSON from PATH instead of stdin
  --ttl DURATION       expire after a duration: 500ms, 90s, 15m, 8h, 2d, 1h30m
  --expires-at TIME    expire at an ISO time with a zone: 2026-12-04T06:00:00+05:30
  --daily HH:MM        expire at the next HH:MM (broker sessions that die every morning)
  --tz ZONE            the IANA time zone of --daily, e.g. Asia/Kolkata

Examples:
  echo '{"accessToken":"...","refreshToken":"..."}' | ordo-sessions set fyers XY1234 --ttl 8h
  ordo-sessions set kite AB1234 --file session.json --daily 06:00 --tz Asia/Kolkata`,
  async run(context, positionals, values) {
    const broker = brokerArg(positionals[0], 'set');
    const key = keyArg(positionals[1], 'set');
    noMore(positionals, 2, 'set');
    const expiry = expiryFrom(values, Date.now());
    const data = parseSession(await readInput(context, typeof values['file'] === 'string' ? values['file'] : undefined));
    await withSessions(context, async (sessions) => {
      await sessions.setSession(broker, key, data, expiry);
    });
    const until = expiry === undefined ? 'never expires' : `expires ${describeExpiry(expiry)}`;
    context.out(`${context.style.ok('stored')} ${printable(broker)}/${printable(key)} (${until})`);
    return EXIT.ok;
  },
};

function describeExpiry(expiry: ExpiryOptions): string {
  const now = Date.now();
  const at = expiry.ttlMs !== undefined ? now + expiry.ttlMs : expiry.expiresAt instanceof Date ? expiry.expiresAt.getTime() : (expiry.expiresAt as number);
  return `${relativeTime(at, now)}, ${isoSeconds(at)}`;
}

export const get: Command = {
  name: 'get',
  summary: 'print a session, masked unless --reveal',
  usage: 'get <broker> <key> [--reveal] [--json]',
  options: { reveal: { type: 'boolean' }, json: { type: 'boolean' } },
  needsStore: true,
  help: `Prints one session. Every string in it is masked (a run of bullets and, for strings of 12
or more characters, their last 4) unless --reveal is given. Exit code 3 when there is no live
session at that broker and key.

Options:
  --reveal   print the session as stored, tokens included
  --json     one line of JSON for scripts (still masked unless --reveal)

Examples:
  ordo-sessions get fyers XY1234
  ordo-sessions get fyers XY1234 --reveal --json | jq -r .accessToken`,
  async run(context, positionals, values) {
    const broker = brokerArg(positionals[0], 'get');
    const key = keyArg(positionals[1], 'get');
    noMore(positionals, 2, 'get');
    const session = await withSessions(context, (sessions) => sessions.getSession(broker, key));
    if (session === undefined) throw new CliError('ERR_NOT_FOUND', 'no live session at that broker and key', EXIT.notFound);
    const shown = values['reveal'] === true ? session : maskValue(session);
    context.out(values['json'] === true ? JSON.stringify(shown) : JSON.stringify(shown, null, 2));
    return EXIT.ok;
  },
};

export const list: Command = {
  name: 'list',
  summary: 'list sessions (metadata only, never data)',
  usage: 'list [broker] [--json]',
  options: { json: { type: 'boolean' } },
  needsStore: true,
  help: `Lists the live sessions of one broker, or of every broker in the namespace: broker, key,
expiry (relative and absolute), last update and the id of the key that sealed it. Never any
session data.

Options:
  --json   a JSON array of { broker, key, expiresAt, updatedAt, keyId } (ISO times, expiresAt null = never)

Examples:
  ordo-sessions list
  ordo-sessions list fyers --json | jq -r '.[].key'`,
  async run(context, positionals, values) {
    const broker = positionals[0] === undefined ? undefined : brokerArg(positionals[0], 'list');
    noMore(positionals, 1, 'list');
    const rows = await withSessions(context, async (sessions) => {
      const found: BrokerSessionInfo[] = [];
      if (broker === undefined) {
        for await (const info of sessions.listAllSessions()) found.push(info);
      } else {
        for await (const info of sessions.listSessions(broker)) found.push({ ...info, broker });
      }
      return found;
    });
    rows.sort((a, b) => (a.broker === b.broker ? compare(a.key, b.key) : compare(a.broker, b.broker)));
    if (values['json'] === true) {
      const json = rows.map((r) => ({
        broker: r.broker,
        key: r.key,
        expiresAt: r.expiresAt?.toISOString() ?? null,
        updatedAt: r.updatedAt.toISOString(),
        keyId: r.keyId,
      }));
      context.out(JSON.stringify(json));
      return EXIT.ok;
    }
    if (rows.length === 0) {
      context.out(context.style.dim('no sessions'));
      return EXIT.ok;
    }
    const now = Date.now();
    const cells = rows.map((r) => {
      const at = r.expiresAt?.getTime();
      const soon = at !== undefined && at - now < 3600_000;
      const relative = at === undefined ? 'never' : relativeTime(at, now);
      return [
        printable(r.broker),
        printable(r.key),
        soon ? context.style.warn(relative) : relative,
        at === undefined ? '-' : isoSeconds(at),
        relativeTime(r.updatedAt.getTime(), now),
        r.keyId ?? '?',
      ];
    });
    context.stdout.write(table(['BROKER', 'KEY', 'EXPIRES', 'EXPIRES AT', 'UPDATED', 'KEY ID'], cells, context.style));
    return EXIT.ok;
  },
};

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

export const del: Command = {
  name: 'delete',
  summary: 'delete one session (exit 3 when there was none)',
  usage: 'delete <broker> <key>',
  options: {},
  needsStore: true,
  help: `Deletes one session, expired or not. Exit code 3 when there was none.

Examples:
  ordo-sessions delete fyers XY1234`,
  async run(context, positionals) {
    const broker = brokerArg(positionals[0], 'delete');
    const key = keyArg(positionals[1], 'delete');
    noMore(positionals, 2, 'delete');
    const existed = await withSessions(context, (sessions) => sessions.deleteSession(broker, key));
    if (!existed) throw new CliError('ERR_NOT_FOUND', 'no session at that broker and key', EXIT.notFound);
    context.out(`${context.style.ok('deleted')} ${printable(broker)}/${printable(key)}`);
    return EXIT.ok;
  },
};

export const clear: Command = {
  name: 'clear',
  summary: "delete every session of one broker (asks first; --yes)",
  usage: 'clear <broker> [--yes]',
  options: { yes: { type: 'boolean', short: 'y' } },
  needsStore: true,
  help: `Deletes every session of one broker in the namespace, and nothing of any other broker.
On a terminal it asks for confirmation; when stdin is not a terminal it refuses without --yes.

Options:
  -y, --yes   do not ask

Examples:
  ordo-sessions clear upstox
  ordo-sessions clear upstox --yes --namespace staging`,
  async run(context, positionals, values) {
    const broker = brokerArg(positionals[0], 'clear');
    noMore(positionals, 1, 'clear');
    if (values['yes'] !== true && !process.stdin.isTTY) {
      throw usageError('clear deletes every session of the broker: pass --yes when stdin is not a terminal');
    }
    const deleted = await withSessions(context, async (sessions) => {
      if (values['yes'] !== true) {
        let count = 0;
        for await (const _ of sessions.listSessions(broker)) count += 1;
        const answer = await ask(`Delete all ${count} live session${count === 1 ? '' : 's'} of broker "${broker}" in namespace "${context.namespace}"? [y/N] `);
        if (!/^y(es)?$/i.test(answer.trim())) return undefined;
      }
      return sessions.clearBroker(broker);
    });
    if (deleted === undefined) {
      context.err('ordo-sessions: nothing deleted');
      return EXIT.failure;
    }
    context.out(`${context.style.ok('deleted')} ${deleted} session${deleted === 1 ? '' : 's'} of ${broker}`);
    return EXIT.ok;
  },
};

async function ask(question: string): Promise<string> {
  const readline = createInterface({ input: process.stdin, output: process.stderr });
  try {
    return await readline.question(question);
  } finally {
    readline.close();
  }
}

export const purge: Command = {
  name: 'purge',
  summary: 'delete the expired sessions of the namespace',
  usage: 'purge',
  options: {},
  needsStore: true,
  help: `Deletes the expired sessions of the namespace (they are already invisible; this reclaims
their space) and prints how many.

Examples:
  ordo-sessions purge
  ordo-sessions purge --store redis://127.0.0.1:6379`,
  async run(context, positionals) {
    noMore(positionals, 0, 'purge');
    const purged = await withSessions(context, (sessions) => sessions.purgeExpired());
    context.out(`${context.style.ok('purged')} ${purged} expired session${purged === 1 ? '' : 's'}`);
    return EXIT.ok;
  },
};
