import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { Keyring, MemoryStore, SessionManager } from '../src/index.ts';

describe('watch with private key names', () => {
  it('is refused with InvalidOptionsError rather than reporting hashed names', async () => {
    const sessions = await SessionManager.open({
      keyring: new Keyring([{ id: 'k1', key: randomBytes(32) }]),
      store: new MemoryStore(),
      privateKeys: true,
    });
    await expect(sessions.watch(() => undefined)).rejects.toMatchObject({ code: 'ERR_SESSION_INVALID_OPTIONS' });
    await expect(sessions.forBroker('fyers').watch(() => undefined)).rejects.toMatchObject({ code: 'ERR_SESSION_INVALID_OPTIONS' });
    await sessions.close();
  });
});
