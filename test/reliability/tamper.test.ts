/**
 * Tampering: on every store, fast-check rewrites stored records through the raw store API (bit
 * flips, truncations, extensions, header and key-id changes, splices of two envelopes, and swaps
 * of whole records between brokers, keys, namespaces and the canary, with or without their
 * expiry, and expiry edits alone). Every mutation must be detected as SessionIntegrityError
 * (UnknownKeyIdError extends it), and no mutated record may ever yield a plaintext. Then the
 * original is put back and must read exactly again.
 *
 * Plus nonce uniqueness: 10^6 seals under one key, all 12-byte nonces distinct.
 *
 * An expiry moved into the past is not a mutation here: the manager then reports the session
 * as absent without opening it (shortening a session gains an attacker nothing a delete would
 * not); every expiry edit below stays in the future of the fake clock.
 */
import { randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { seal } from '../../src/crypto/envelope.ts';
import { Keyring, SessionIntegrityError, SessionManager, type SessionStore, type StoredRecord } from '../../src/index.ts';
import { metadataKey, storageKey } from '../../src/namespace.ts';
import { describeWithService } from '../support/services.ts';
import { allKinds, createTestStore, serviceOf, type TestStore } from './stores.ts';

const NOW = 1_800_000_000_000;
const RUNS = process.env['SOAK'] === '1' ? 5000 : 400;
const NAMESPACE = 'tamper';
const OTHER_NAMESPACE = 'tamper2';
/** Two keys: k1 is primary (seals), k2 is held too, so a header naming k2 is a "known id, wrong key" case. */
const keyring = new Keyring([
  { id: 'k1', key: randomBytes(32) },
  { id: 'k2', key: randomBytes(32) },
]);

interface Slot {
  readonly broker: string;
  readonly key: string;
  readonly data: Record<string, unknown>;
  readonly expiresAt: number | null;
}

/** The records each store holds: several brokers, keys and expiries, so swaps have somewhere to go. */
const SLOTS: readonly Slot[] = [
  { broker: 'fyers', key: 'XY1234', data: { accessToken: 'at-fyers-1', refreshToken: 'rt-fyers-1' }, expiresAt: NOW + 3_600_000 },
  { broker: 'fyers', key: 'XY1235', data: { accessToken: 'at-fyers-2', refreshToken: 'rt-fyers-2' }, expiresAt: NOW + 3_600_000 },
  { broker: 'kite', key: 'XY1234', data: { accessToken: 'at-kite-1' }, expiresAt: null },
  { broker: 'kite', key: 'AB/../x', data: { accessToken: 'at-kite-2', n: 2 }, expiresAt: NOW + 7_200_000 },
  { broker: 'upstox', key: 'ünïcødé', data: { accessToken: 'at-upstox', list: [1, 2, 3] }, expiresAt: NOW + 60_000 },
];

type Mutation =
  | { readonly kind: 'bitflip'; readonly at: number; readonly bit: number }
  | { readonly kind: 'truncate'; readonly to: number }
  | { readonly kind: 'extend'; readonly extra: Uint8Array }
  | { readonly kind: 'version-byte'; readonly value: number }
  | { readonly kind: 'key-id-length'; readonly value: number }
  | { readonly kind: 'key-id'; readonly id: string }
  | { readonly kind: 'splice'; readonly other: number; readonly at: number }
  | { readonly kind: 'swap'; readonly other: number; readonly keepExpiry: boolean }
  | { readonly kind: 'foreign'; readonly source: 'canary' | 'other-namespace' }
  | { readonly kind: 'expiry'; readonly expiresAt: number | null };

const fraction = fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true });

const mutation = (): fc.Arbitrary<{ slot: number; mutation: Mutation; position: number }> =>
  fc.record({
    slot: fc.nat({ max: SLOTS.length - 1 }),
    position: fraction,
    mutation: fc.oneof(
      { weight: 4, arbitrary: fc.record({ kind: fc.constant('bitflip' as const), at: fc.nat(), bit: fc.nat({ max: 7 }) }) },
      fc.record({ kind: fc.constant('truncate' as const), to: fc.nat() }),
      fc.record({ kind: fc.constant('extend' as const), extra: fc.uint8Array({ minLength: 1, maxLength: 40 }) }),
      // A value equal to the original byte is a no-op, skipped (and not counted) below.
      fc.record({ kind: fc.constant('version-byte' as const), value: fc.integer({ min: 0, max: 255 }) }),
      fc.record({ kind: fc.constant('key-id-length' as const), value: fc.integer({ min: 0, max: 255 }) }),
      fc.record({ kind: fc.constant('key-id' as const), id: fc.constantFrom('k2', 'k3', 'K1', 'k_', '\u0000\u0001', 'k\u00ff') }),
      fc.record({ kind: fc.constant('splice' as const), other: fc.nat({ max: SLOTS.length - 1 }), at: fc.nat() }),
      fc.record({ kind: fc.constant('swap' as const), other: fc.nat({ max: SLOTS.length - 1 }), keepExpiry: fc.boolean() }),
      fc.record({ kind: fc.constant('foreign' as const), source: fc.constantFrom('canary' as const, 'other-namespace' as const) }),
      fc.record({
        kind: fc.constant('expiry' as const),
        expiresAt: fc.oneof(fc.constant(null), fc.integer({ min: NOW + 1, max: NOW + 10 * 3_600_000 })),
      }),
    ),
  });

/** The bytes and expiry a mutation writes over a slot, or `undefined` when it would change nothing. */
function mutate(
  mutation: Mutation,
  original: StoredRecord,
  records: readonly StoredRecord[],
  foreign: { canary: StoredRecord; otherNamespace: StoredRecord },
): { value: Uint8Array; expiresAt: number | null } | undefined {
  const bytes = Buffer.from(original.value);
  let value: Buffer = bytes;
  let expiresAt = original.expiresAt;
  switch (mutation.kind) {
    case 'bitflip':
      value = Buffer.from(bytes);
      value[mutation.at % bytes.length] = (value[mutation.at % bytes.length] as number) ^ (1 << mutation.bit);
      break;
    case 'truncate':
      value = bytes.subarray(0, mutation.to % bytes.length);
      break;
    case 'extend':
      value = Buffer.concat([bytes, mutation.extra]);
      break;
    case 'version-byte':
      value = Buffer.from(bytes);
      value[0] = mutation.value;
      break;
    case 'key-id-length':
      value = Buffer.from(bytes);
      value[1] = mutation.value;
      break;
    case 'key-id': {
      // Replace the id (bytes 2..2+L) with another one, adjusting the length byte.
      const id = Buffer.from(mutation.id, 'latin1');
      value = Buffer.concat([Buffer.from([bytes[0] as number, id.length]), id, bytes.subarray(2 + (bytes[1] as number))]);
      break;
    }
    case 'splice': {
      const other = Buffer.from((records[mutation.other] as StoredRecord).value);
      const at = mutation.at % Math.min(bytes.length, other.length);
      value = Buffer.concat([bytes.subarray(0, at), other.subarray(at)]);
      break;
    }
    case 'swap': {
      const other = records[mutation.other] as StoredRecord;
      value = Buffer.from(other.value);
      if (!mutation.keepExpiry) expiresAt = other.expiresAt;
      break;
    }
    case 'foreign': {
      const source = mutation.source === 'canary' ? foreign.canary : foreign.otherNamespace;
      value = Buffer.from(source.value);
      expiresAt = source.expiresAt;
      break;
    }
    case 'expiry':
      expiresAt = mutation.expiresAt;
      break;
  }
  if (value.equals(bytes) && expiresAt === original.expiresAt) return undefined;
  return { value, expiresAt };
}

let mutationsTried = 0;
const perStore: string[] = [];

afterAll(() => {
  console.log(`tamper: mutations tried: ${mutationsTried} (${perStore.join(', ')})`);
});

/** Every storage key the store holds, through the raw store API. */
async function rawKeys(store: SessionStore): Promise<Set<string>> {
  const keys = new Set<string>();
  let cursor: string | undefined;
  do {
    const page = await store.list('', cursor === undefined ? { limit: 500 } : { limit: 500, cursor });
    for (const record of page.records) keys.add(record.key);
    cursor = page.cursor;
  } while (cursor !== undefined);
  return keys;
}

/** Writes one session and returns the storage key it landed at (found by difference: private names are HMACs). */
async function writeAndLocate(
  store: SessionStore,
  sessions: SessionManager,
  slot: Pick<Slot, 'broker' | 'key' | 'data' | 'expiresAt'>,
): Promise<string> {
  const before = await rawKeys(store);
  await sessions.setSession(slot.broker, slot.key, slot.data, slot.expiresAt === null ? undefined : { expiresAt: slot.expiresAt });
  const added = [...(await rawKeys(store))].filter((key) => !before.has(key) && !key.includes('!'));
  expect(added.length, `where ${slot.broker}/${slot.key} was stored`).toBe(1);
  return added[0] as string;
}

const modes = [
  { privateKeys: false, label: '' },
  // Private key names: storage keys are HMACs and records are envelope format 2.
  { privateKeys: true, label: ' with private key names' },
] as const;

for (const kind of allKinds) {
  for (const { privateKeys, label } of modes) {
    const service = serviceOf(kind);
    describeWithService(service.name, service.available, `tampering on ${kind}${label}`, () => {
      let testStore: TestStore;
      let store: SessionStore;
      let sessions: SessionManager;
      const locations: string[] = [];
      let otherLocation: string;

      beforeAll(async () => {
        testStore = await createTestStore(kind);
        store = testStore.make();
        const options = { keyring, clock: () => NOW, ...(privateKeys ? { privateKeys: true } : {}) };
        sessions = await SessionManager.open({ ...options, store, namespace: NAMESPACE });
        for (const slot of SLOTS) locations.push(await writeAndLocate(store, sessions, slot));
        if (!privateKeys) expect(locations).toEqual(SLOTS.map((slot) => storageKey(NAMESPACE, slot.broker, slot.key)));
        // A record of another namespace in the same store, to be copied across.
        const other = await SessionManager.open({ ...options, store: testStore.make(), namespace: OTHER_NAMESPACE });
        otherLocation = await writeAndLocate(store, other, { broker: 'fyers', key: 'XY1234', data: { accessToken: 'at-other' }, expiresAt: null });
        await other.close();
      });

      afterAll(async () => {
        await sessions?.close();
        await testStore?.cleanup();
      });

      it('detects every mutation of a stored record and never yields its plaintext', async () => {
        const started = performance.now();
        const records = await Promise.all(locations.map(async (location) => (await store.get(location)) as StoredRecord));
        const canary = (await store.get(metadataKey(NAMESPACE, 'canary/k1'))) as StoredRecord;
        const otherNamespace = (await store.get(otherLocation)) as StoredRecord;
        expect(canary).toBeDefined();
        expect(otherNamespace).toBeDefined();
        let tried = 0;
        await fc.assert(
          fc.asyncProperty(mutation(), async ({ slot, mutation }) => {
            const original = records[slot] as StoredRecord;
            const changed = mutate(mutation, original, records, { canary, otherNamespace });
            if (changed === undefined) return; // a no-op (a record spliced or swapped with itself)
            tried++;
            const { broker, key, data } = SLOTS[slot] as Slot;
            const location = locations[slot] as string;
            await store.set(location, changed.value, { expiresAt: changed.expiresAt, updatedAt: NOW });
            try {
              const outcome = await sessions.getSession(broker, key).then(
                (value) => ({ value }),
                (error: unknown) => ({ error }),
              );
              expect('value' in outcome ? `yielded ${JSON.stringify(outcome.value)} after ${mutation.kind}` : 'threw').toBe('threw');
              const { error } = outcome as { error: unknown };
              expect(error, mutation.kind).toBeInstanceOf(SessionIntegrityError);
              expect(['ERR_SESSION_INTEGRITY', 'ERR_SESSION_UNKNOWN_KEY_ID']).toContain((error as SessionIntegrityError).code);
              await expect(sessions.hasSession(broker, key)).rejects.toBeInstanceOf(SessionIntegrityError);
            } finally {
              await store.set(location, original.value, { expiresAt: original.expiresAt, updatedAt: original.updatedAt });
            }
            expect(await sessions.getSession(broker, key)).toEqual(data);
          }),
          { numRuns: privateKeys ? Math.ceil(RUNS / 2) : RUNS },
        );
        mutationsTried += tried;
        perStore.push(`${kind}${privateKeys ? ' (private names)' : ''} ${tried} in ${Math.round(performance.now() - started)} ms`);
        expect(tried).toBeGreaterThan((privateKeys ? RUNS / 2 : RUNS) * 0.8);
      });
    });
  }
}

describe('nonces', () => {
  it('are distinct over 10^6 seals under one key', () => {
    const COUNT = 1_000_000;
    const started = performance.now();
    const one = new Keyring([{ id: 'n1', key: randomBytes(32) }]);
    const identity = { kind: 'session', namespace: 'n', broker: 'b', key: 'k', expiresAt: null } as const;
    const plaintext = Buffer.from('{"a":1}');
    const NONCE_AT = 2 + 'n1'.length;
    // The first 8 nonce bytes as one 64-bit number each: 8 MB, sorted natively. Distinct prefixes
    // prove distinct nonces; equal prefixes (odds ~3e-8) are settled on all 12 bytes.
    const prefixes = new BigUint64Array(COUNT);
    const tails = new Uint32Array(COUNT);
    for (let i = 0; i < COUNT; i++) {
      const envelope = seal(one, plaintext, identity);
      prefixes[i] = envelope.readBigUInt64BE(NONCE_AT);
      tails[i] = envelope.readUInt32BE(NONCE_AT + 8);
    }
    const order = prefixes.slice().sort();
    const suspects = new Set<bigint>();
    for (let i = 1; i < COUNT; i++) if (order[i] === order[i - 1]) suspects.add(order[i] as bigint);
    const full = new Set<string>();
    for (let i = 0; i < COUNT && suspects.size > 0; i++) {
      if (suspects.has(prefixes[i] as bigint)) {
        const id = `${prefixes[i]}:${tails[i]}`;
        expect(full.has(id), 'a repeated 96-bit nonce').toBe(false);
        full.add(id);
      }
    }
    console.log(`nonces: ${COUNT} seals, all distinct (${suspects.size} 64-bit prefix collisions settled) in ${Math.round(performance.now() - started)} ms`);
  }, 120_000);
});
