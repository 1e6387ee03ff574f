import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { Keyring, SessionManager, SqliteStore, StoreError } from '../src/index.ts';

const run = promisify(execFile);
const dir = mkdtempSync(join(tmpdir(), 'ordo-sqlite-files-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function mode(path: string): number {
  return statSync(path).mode & 0o777;
}

describe('SQLite files', () => {
  it.each([0o022, 0o000, 0o002])('are created 0600 (directory 0700) under umask %o', async (umask) => {
    const previous = process.umask(umask);
    try {
      const path = join(dir, `umask-${umask.toString(8)}`, 'nested', 'sessions.db');
      const sessions = await SessionManager.open({ keyring: new Keyring([{ id: 'k1', key: randomBytes(32) }]), store: new SqliteStore({ path }) });
      await sessions.setSession('fyers', 'XY1234', { accessToken: 'x' });
      expect(mode(path)).toBe(0o600);
      expect(mode(`${path}-wal`)).toBe(0o600);
      expect(mode(`${path}-shm`)).toBe(0o600);
      expect(mode(join(dir, `umask-${umask.toString(8)}`, 'nested'))).toBe(0o700);
      await sessions.close();
    } finally {
      process.umask(previous);
    }
  });

  it('backs a manager opened without a store, at ORDO_SESSION_DB', async () => {
    const path = join(dir, 'default-store', 'sessions.db');
    const previous = process.env['ORDO_SESSION_DB'];
    process.env['ORDO_SESSION_DB'] = path;
    try {
      const sessions = await SessionManager.open({ keyring: new Keyring([{ id: 'k1', key: randomBytes(32) }]) });
      expect(sessions.store).toBeInstanceOf(SqliteStore);
      await sessions.setSession('fyers', 'XY1234', { accessToken: 'x' });
      await sessions.close();
      expect(mode(path)).toBe(0o600);
      expect(mode(join(dir, 'default-store'))).toBe(0o700);
    } finally {
      if (previous === undefined) delete process.env['ORDO_SESSION_DB'];
      else process.env['ORDO_SESSION_DB'] = previous;
    }
  });

  it('tightens an existing database file that others could read', async () => {
    const path = join(dir, 'loose.db');
    new SqliteStore({ path }).close();
    chmodSync(path, 0o644);
    const store = new SqliteStore({ path });
    expect(mode(path)).toBe(0o600);
    await store.close();
  });

  it('uses WAL, synchronous=NORMAL and a busy timeout', async () => {
    const path = join(dir, 'pragmas.db');
    const store = new SqliteStore({ path, busyTimeoutMs: 1234 });
    await store.close();
    const { default: Database } = await import('better-sqlite3');
    const db = new Database(path, { readonly: true });
    expect(db.pragma('journal_mode', { simple: true })).toBe('wal');
    db.close();
    expect(readFileSync(path).subarray(0, 16).toString()).toBe('SQLite format 3\u0000');
  });

  it('fails with a StoreError when the file cannot be created', () => {
    const notADirectory = join(dir, 'plain-file');
    writeFileSync(notADirectory, 'x');
    expect(() => new SqliteStore({ path: join(notADirectory, 'sessions.db') })).toThrow(StoreError);
  });

  it('is shared by two processes writing at the same time', async () => {
    const path = join(dir, 'shared.db');
    const keys = Keyring.generateKey('shared');
    const env = { ...process.env, ORDO_SESSION_KEYS: keys };
    const child = (broker: string) =>
      run(process.execPath, ['--import', 'tsx', join(import.meta.dirname, 'support', 'sqlite-writer.ts'), path, broker, '300'], { env });
    const results = await Promise.all([child('alpha'), child('beta')]);
    for (const result of results) expect(result.stdout.trim()).toBe('done 300');
    const sessions = await SessionManager.open({ keyring: Keyring.parse(keys), store: new SqliteStore({ path }) });
    for (const broker of ['alpha', 'beta']) {
      for (let n = 0; n < 300; n++) {
        expect(await sessions.getSession(broker, `acct-${n}`)).toEqual({ writer: broker, n, token: `${broker}-${n}` });
      }
    }
    expect(['alpha', 'beta']).toContain(((await sessions.getSession('shared', 'last-writer')) as { writer: string }).writer);
    await sessions.close();
  });
});
