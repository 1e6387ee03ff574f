/**
 * KeyProvider: SessionManager.open takes a Keyring or any provider (secret manager, KMS); the
 * built-in sources are providers; fromEnv / fromFile keep their rules (0600 check).
 */
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  InvalidOptionsError,
  Keyring,
  KeyringError,
  KeyringMismatchError,
  MemoryStore,
  SessionManager,
  type KeyProvider,
  type KeyProviderContext,
} from '../src/index.ts';
import { BACKENDS } from './support/key-stores.ts';

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => {
      throw new Error('expected a rejection');
    },
    (error: unknown) => error,
  );
}

const dir = mkdtempSync(join(tmpdir(), 'ordo-provider-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('KeyProvider', () => {
  it('is resolved once at open, with the namespace, and its keyring is used', async () => {
    const dataKey = randomBytes(32);
    const contexts: KeyProviderContext[] = [];
    // A KMS-style provider: unwraps a data key at start-up and holds it only inside the Keyring.
    const kms: KeyProvider = {
      async loadKeyring(context) {
        contexts.push(context);
        const key = Buffer.from(dataKey);
        try {
          return new Keyring([{ id: 'kms-1', key }]);
        } finally {
          key.fill(0);
        }
      },
    };
    const backing = await BACKENDS[0]!.create();
    const sessions = await SessionManager.open({ keyring: kms, store: backing.open(), namespace: 'kms' });
    await sessions.setSession('fyers', 'A', { v: 1 });
    expect(contexts.map((c) => c.namespace)).toEqual(['kms']);
    expect((await sessions.keyStats())[0]!.keyId).toBe('kms-1');
    const direct = await SessionManager.open({ keyring: new Keyring([{ id: 'kms-1', key: dataKey }]), store: backing.open(), namespace: 'kms' });
    expect(await direct.getSession('fyers', 'A')).toEqual({ v: 1 });
  });

  it('refuses a provider that resolves to something else, and passes its errors through', async () => {
    const bogus = { loadKeyring: async () => ({ keyIds: ['x'] }) } as unknown as KeyProvider;
    expect(await rejection(SessionManager.open({ keyring: bogus, store: new MemoryStore() }))).toBeInstanceOf(InvalidOptionsError);
    const failing: KeyProvider = { loadKeyring: async () => Keyring.parse('nope') };
    expect(await rejection(SessionManager.open({ keyring: failing, store: new MemoryStore() }))).toBeInstanceOf(KeyringError);
    expect(await rejection(SessionManager.open({ keyring: {} as KeyProvider, store: new MemoryStore() }))).toBeInstanceOf(InvalidOptionsError);
  });

  it('a Keyring is its own provider', async () => {
    const ring = new Keyring([{ id: 'k1', key: randomBytes(32) }]);
    expect(await ring.loadKeyring()).toBe(ring);
  });

  it('a provider with the wrong key is still caught by the canary', async () => {
    const backing = await BACKENDS[0]!.create();
    const first = await SessionManager.open({ keyring: new Keyring([{ id: 'k1', key: randomBytes(32) }]), store: backing.open() });
    await first.setSession('fyers', 'A', { v: 1 });
    const wrong: KeyProvider = { loadKeyring: async () => new Keyring([{ id: 'k1', key: randomBytes(32) }]) };
    expect(await rejection(SessionManager.open({ keyring: wrong, store: backing.open() }))).toBeInstanceOf(KeyringMismatchError);
  });
});

describe('Keyring.fromEnv / fromFile', () => {
  it('reads a mounted key file only when only its owner can read it', () => {
    const path = join(dir, 'keys');
    writeFileSync(path, `${Keyring.generateKey('k2')}\n${Keyring.generateKey('k1')}\n`);
    for (const mode of [0o644, 0o640, 0o604, 0o660]) {
      chmodSync(path, mode);
      expect(() => Keyring.fromFile(path)).toThrow(KeyringError);
      expect(() => Keyring.fromEnv({ ORDO_SESSION_KEYS_FILE: path })).toThrow(KeyringError);
    }
    for (const mode of [0o600, 0o400]) {
      chmodSync(path, mode);
      expect(Keyring.fromEnv({ ORDO_SESSION_KEYS_FILE: path }).keyIds).toEqual(['k2', 'k1']);
    }
  });

  it('refuses both sources at once, neither, and a missing file, never echoing key material', () => {
    const inline = Keyring.generateKey('k1');
    expect(() => Keyring.fromEnv({ ORDO_SESSION_KEYS: inline, ORDO_SESSION_KEYS_FILE: '/x' })).toThrow(KeyringError);
    expect(() => Keyring.fromEnv({})).toThrow(KeyringError);
    expect(() => Keyring.fromFile(join(dir, 'missing'))).toThrow(KeyringError);
    try {
      Keyring.fromEnv({ ORDO_SESSION_KEYS: `${inline.slice(0, -4)}` });
      expect.unreachable();
    } catch (error) {
      expect((error as Error).message).not.toContain(inline.slice(3, 20));
    }
  });
});
