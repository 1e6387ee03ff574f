import { randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inspect } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { Keyring } from '../src/crypto/keyring.ts';
import { KeyringError } from '../src/errors.ts';

const dir = mkdtempSync(join(tmpdir(), 'ordo-keyring-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function keyringError(run: () => unknown): KeyringError {
  try {
    run();
  } catch (error) {
    expect(error).toBeInstanceOf(KeyringError);
    expect((error as KeyringError).code).toBe('ERR_SESSION_KEYRING');
    return error as KeyringError;
  }
  throw new Error('no KeyringError');
}

describe('Keyring', () => {
  it('parses the config format, primary first, tolerating whitespace and newlines', () => {
    const a = Keyring.generateKey('new');
    const b = Keyring.generateKey('old');
    const keyring = Keyring.parse(` ${a} ,\n${b}\n`);
    expect(keyring.primaryKeyId).toBe('new');
    expect(keyring.keyIds).toEqual(['new', 'old']);
    expect(keyring.has('old')).toBe(true);
    expect(keyring.has('other')).toBe(false);
  });

  it('accepts base64url keys too', () => {
    expect(Keyring.parse(`u:${randomBytes(32).toString('base64url')}`).primaryKeyId).toBe('u');
  });

  it('generates keys in the config format with a readable default id', () => {
    const line = Keyring.generateKey();
    expect(line).toMatch(/^k\d{8}-[0-9a-f]{4}:[A-Za-z0-9+/]{43}=$/);
    expect(Buffer.from(line.split(':')[1]!, 'base64')).toHaveLength(32);
    expect(Keyring.generateKey()).not.toBe(line);
  });

  const secret = randomBytes(32).toString('base64');
  it.each([
    ['an empty config', ''],
    ['only separators', ' , \n '],
    ['no colon', secret],
    ['an empty id', `:${secret}`],
    ['a bad id', `bad id:${secret}`],
    ['an id too long', `${'k'.repeat(33)}:${secret}`],
    ['a short key', `k1:${randomBytes(16).toString('base64')}`],
    ['a long key', `k1:${randomBytes(48).toString('base64')}`],
    ['bad base64', `k1:${'!'.repeat(44)}`],
    ['base64 with junk appended', `k1:${secret}xx`],
    ['a duplicate id', `k1:${secret},k1:${randomBytes(32).toString('base64')}`],
    ['an all-zero placeholder', `k1:${Buffer.alloc(32).toString('base64')}`],
  ])('refuses %s without echoing key material', (_name, config) => {
    const error = keyringError(() => Keyring.parse(config));
    expect(error.message).not.toContain(secret);
    expect(error.message).not.toContain(secret.slice(0, 12));
  });

  it.each([
    ['no entries', []],
    ['a 31-byte key', [{ id: 'k', key: randomBytes(31) }]],
    ['a string key', [{ id: 'k', key: 'x'.repeat(32) }]],
    ['a missing id', [{ key: randomBytes(32) }]],
    ['duplicate ids', [{ id: 'k', key: randomBytes(32) }, { id: 'k', key: randomBytes(32) }]],
  ])('the constructor refuses %s', (_name, entries) => {
    keyringError(() => new Keyring(entries as never));
  });

  it('reads ORDO_SESSION_KEYS, or a key file only its owner can read', () => {
    const line = Keyring.generateKey('env');
    expect(Keyring.fromEnv({ ORDO_SESSION_KEYS: line }).primaryKeyId).toBe('env');
    const file = join(dir, 'keys');
    writeFileSync(file, `${Keyring.generateKey('file')}\n`, { mode: 0o600 });
    chmodSync(file, 0o600);
    expect(Keyring.fromEnv({ ORDO_SESSION_KEYS_FILE: file }).primaryKeyId).toBe('file');
    chmodSync(file, 0o400);
    expect(Keyring.fromFile(file).primaryKeyId).toBe('file');
    for (const mode of [0o640, 0o604, 0o644]) {
      chmodSync(file, mode);
      expect(keyringError(() => Keyring.fromFile(file)).message).toMatch(/chmod 600/);
    }
  });

  it('refuses no configuration, both configurations, and a missing file', () => {
    expect(keyringError(() => Keyring.fromEnv({})).message).toMatch(/ORDO_SESSION_KEYS/);
    keyringError(() => Keyring.fromEnv({ ORDO_SESSION_KEYS: Keyring.generateKey(), ORDO_SESSION_KEYS_FILE: '/x' }));
    keyringError(() => Keyring.fromEnv({ ORDO_SESSION_KEYS_FILE: join(dir, 'missing') }));
  });

  it('shows key ids and nothing else in inspect, JSON and String', () => {
    const raw = randomBytes(32);
    const keyring = new Keyring([{ id: 'k1', key: raw }]);
    for (const shown of [inspect(keyring, { showHidden: true, depth: 10 }), JSON.stringify(keyring), String(keyring)]) {
      expect(shown).toContain('k1');
      for (const encoding of ['hex', 'base64', 'base64url'] as const) {
        expect(shown).not.toContain(raw.toString(encoding).slice(0, 16));
      }
    }
    expect(JSON.parse(JSON.stringify(keyring))).toEqual({ primaryKeyId: 'k1', keyIds: ['k1'] });
  });
});
