/**
 * A canary token written through the manager must be found nowhere it could leak: not in the
 * SQLite files (db, -wal, -shm) in plain, hex or base64 form, not in any error's message, stack
 * or cause, and not in inspect or JSON output.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inspect } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { Keyring, SessionManager, SqliteStore, type SessionError } from '../src/index.ts';
import { findLeaks } from './support/leaks.ts';

const dir = mkdtempSync(join(tmpdir(), 'ordo-leak-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const CANARY = `canary-${randomBytes(24).toString('hex')}`;

function everythingAbout(error: unknown): string {
  const parts: string[] = [];
  let current: unknown = error;
  for (let depth = 0; current !== undefined && depth < 5; depth++) {
    const e = current as Error & { cause?: unknown };
    parts.push(String(e), e.message ?? '', e.stack ?? '', inspect(e, { showHidden: true, depth: 10 }), JSON.stringify(e) ?? '');
    current = e.cause;
  }
  return parts.join('\n');
}

describe('leakage', () => {
  it('finds the canary in none of the SQLite files, before and after a checkpoint', async () => {
    const path = join(dir, 'sessions.db');
    const keyring = new Keyring([{ id: 'k1', key: randomBytes(32) }]);
    const sessions = await SessionManager.open({ keyring, store: new SqliteStore({ path }) });
    for (let i = 0; i < 50; i++) {
      await sessions.setSession('fyers', `acct-${i}`, { accessToken: CANARY, refreshToken: `${CANARY}-r`, n: i });
    }
    await sessions.setSession('kite', 'acct-0', { accessToken: CANARY });
    const scan = (): string[] =>
      readdirSync(dir)
        .filter((name) => name.startsWith('sessions.db'))
        .flatMap((name) => findLeaks(readFileSync(join(dir, name)), CANARY).map((form) => `${name}: ${form}`));
    expect(readdirSync(dir).sort()).toEqual(['sessions.db', 'sessions.db-shm', 'sessions.db-wal']);
    expect(scan()).toEqual([]);
    expect(await sessions.getSession('fyers', 'acct-7')).toEqual({ accessToken: CANARY, refreshToken: `${CANARY}-r`, n: 7 });
    await sessions.close(); // the last close checkpoints the WAL into the main file
    expect(scan()).toEqual([]);
  });

  it('never puts the canary in an error, however it was passed in by mistake', async () => {
    const sessions = await SessionManager.open({
      keyring: new Keyring([{ id: 'k1', key: randomBytes(32) }]),
      store: new SqliteStore({ path: join(dir, 'errors.db') }),
    });
    await sessions.setSession('fyers', 'acct', { accessToken: CANARY });
    const failures: Array<Promise<unknown>> = [
      sessions.setSession(`${CANARY}:broker`, 'acct', {}),
      sessions.setSession('fyers', CANARY.repeat(20), {}),
      sessions.setSession('fyers', `${CANARY}\ud800`, {}),
      sessions.setSession('fyers', 'acct', { accessToken: CANARY, at: new Date() }),
      sessions.setSession('fyers', 'acct', { accessToken: CANARY, n: Number.NaN }),
      sessions.setSession('fyers', 'acct', { accessToken: CANARY.repeat(2000) }),
      sessions.setSession('fyers', 'acct', { accessToken: CANARY }, { [CANARY]: 1 } as never),
      sessions.getSession(`${CANARY}/x`, 'acct'),
    ];
    const errors = await Promise.all(failures.map((p) => p.then(() => undefined, (e: unknown) => e)));
    const keyringErrors = [`k1:${CANARY}`, `${CANARY}:${randomBytes(32).toString('base64')}`].map((config) => {
      try {
        Keyring.parse(config);
      } catch (error) {
        return error;
      }
      return undefined;
    });
    for (const error of [...errors, ...keyringErrors]) {
      expect(error).toBeDefined();
      expect((error as SessionError).code).toMatch(/^ERR_SESSION_/);
      expect(findLeaks(everythingAbout(error), CANARY)).toEqual([]);
    }
    await sessions.close();
  });

  it('never puts the canary in inspect or JSON output of the manager, a broker view or the store', async () => {
    const sessions = await SessionManager.open({
      keyring: new Keyring([{ id: 'k1', key: randomBytes(32) }]),
      store: new SqliteStore({ path: join(dir, 'inspect.db') }),
    });
    await sessions.setSession('fyers', 'acct', { accessToken: CANARY });
    await sessions.getSession('fyers', 'acct');
    for (const thing of [sessions, sessions.forBroker('fyers'), sessions.store]) {
      const shown = `${inspect(thing, { showHidden: true, depth: 20 })}\n${JSON.stringify(thing)}\n${String(thing)}`;
      expect(findLeaks(shown, CANARY)).toEqual([]);
    }
    await sessions.close();
  });
});
