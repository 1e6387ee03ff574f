/**
 * Keyring.fromPassphrase: scrypt with a per-store salt in metadata. Same passphrase, same store:
 * opens; another passphrase or a swapped salt: KeyringMismatchError; bad parameters refused; the
 * passphrase never printed. Run on every store (the salt lives in each backend's metadata).
 */
import { inspect } from 'node:util';
import { describe, expect, it } from 'vitest';
import { Keyring, KeyringError, KeyringMismatchError, SessionManager } from '../src/index.ts';
import { metadataKey } from '../src/namespace.ts';
import { BACKENDS } from './support/key-stores.ts';
import { describeWithService } from './support/services.ts';

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => {
      throw new Error('expected a rejection');
    },
    (error: unknown) => error,
  );
}

const PASS = 'correct horse battery staple';
/** The floor is 2^15 for the per-store suites (two cores, many derivations); the default, 2^17, is checked once below. */
const FAST = { costLog2: 15 };

for (const backend of BACKENDS) {
  const suite = (): void => {
    it('round-trips with the same passphrase, refuses another, and catches a swapped salt', { timeout: 30_000 }, async () => {
      const backing = await backend.create();
      try {
        const first = await SessionManager.open({ keyring: Keyring.fromPassphrase(PASS, FAST), store: backing.open(), namespace: 'pp' });
        await first.setSession('fyers', 'XY1', { accessToken: 'tok' });
        await first.close();
        const kdf = await backing.open().get(metadataKey('pp', 'kdf'));
        const params = JSON.parse(Buffer.from(kdf!.value).toString()) as Record<string, unknown>;
        expect(params).toMatchObject({ v: 1, alg: 'scrypt', logN: 15, r: 8, p: 1 });
        expect(params['salt']).toMatch(/^[A-Za-z0-9_-]{22}$/);

        const again = await SessionManager.open({ keyring: Keyring.fromPassphrase(PASS, FAST), store: backing.open(), namespace: 'pp' });
        expect(await again.getSession('fyers', 'XY1')).toEqual({ accessToken: 'tok' });
        await again.close();

        expect(await rejection(SessionManager.open({ keyring: Keyring.fromPassphrase('wrong horse battery staple', FAST), store: backing.open(), namespace: 'pp' }))).toBeInstanceOf(KeyringMismatchError);

        // A swapped salt derives another key: the canary refuses it rather than opening "empty".
        const store = backing.open();
        const swapped = { ...params, salt: 'AAAAAAAAAAAAAAAAAAAAAA' };
        await store.set(metadataKey('pp', 'kdf'), Buffer.from(JSON.stringify(swapped)), { expiresAt: null, updatedAt: 0 });
        await store.close();
        expect(await rejection(SessionManager.open({ keyring: Keyring.fromPassphrase(PASS, FAST), store: backing.open(), namespace: 'pp' }))).toBeInstanceOf(KeyringMismatchError);
      } finally {
        await backing.cleanup();
      }
    });
  };
  if (backend.service === undefined) describe(`passphrase keyring on ${backend.name}`, suite);
  else describeWithService(backend.service, backend.available, `passphrase keyring on ${backend.name}`, suite);
}

describe('passphrase keyring rules', () => {
  it('refuses weakened or absurd parameters from the store before deriving anything', async () => {
    const backing = await BACKENDS[0]!.create();
    const store = backing.open();
    for (const params of [
      { v: 1, alg: 'scrypt', logN: 10, r: 8, p: 1, salt: 'AAAAAAAAAAAAAAAAAAAAAA' },
      { v: 1, alg: 'scrypt', logN: 30, r: 8, p: 1, salt: 'AAAAAAAAAAAAAAAAAAAAAA' },
      { v: 1, alg: 'pbkdf2', logN: 17, r: 8, p: 1, salt: 'AAAAAAAAAAAAAAAAAAAAAA' },
      'not json',
    ]) {
      await store.set(metadataKey('default', 'kdf'), Buffer.from(typeof params === 'string' ? params : JSON.stringify(params)), { expiresAt: null, updatedAt: 0 });
      const error = await rejection(SessionManager.open({ keyring: Keyring.fromPassphrase(PASS), store: backing.open() }));
      expect(error).toBeInstanceOf(KeyringError);
    }
  });

  it('refuses short passphrases and bad options, and never shows the passphrase', () => {
    expect(() => Keyring.fromPassphrase('short')).toThrow(KeyringError);
    expect(() => Keyring.fromPassphrase(PASS, { costLog2: 12 })).toThrow(KeyringError);
    expect(() => Keyring.fromPassphrase(PASS, { keyId: 'bad id!' })).toThrow(KeyringError);
    const provider = Keyring.fromPassphrase(PASS, { keyId: 'pp1' });
    for (const view of [inspect(provider, { showHidden: true }), JSON.stringify(provider), String(provider)]) {
      expect(view).not.toContain('horse');
      expect(view).toContain('pp1');
    }
  });

  it('derives with N=2^17 by default, without blocking the event loop', { timeout: 30_000 }, async () => {
    const backing = await BACKENDS[0]!.create();
    let ticks = 0;
    const timer = setInterval(() => ticks++, 5);
    const start = performance.now();
    const sessions = await SessionManager.open({ keyring: Keyring.fromPassphrase(PASS), store: backing.open() });
    const elapsed = performance.now() - start;
    clearInterval(timer);
    await sessions.close();
    const kdf = await backing.open().get(metadataKey('default', 'kdf'));
    expect(JSON.parse(Buffer.from(kdf!.value).toString())).toMatchObject({ logN: 17, r: 8, p: 1 });
    // scrypt N=2^17 takes ~0.2-0.5 s on the thread pool; the loop keeps ticking meanwhile.
    expect(ticks).toBeGreaterThan(Math.floor(elapsed / 5 / 4));
  });
});
