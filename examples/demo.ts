/**
 * npm run demo: two broker adapters with different session shapes share one SessionManager on
 * the embedded SQLite default. Needs no configuration.
 */
import Database from 'better-sqlite3';
import { rmSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { Keyring, type SessionIntegrityError, SessionManager } from '../src/index.ts';

interface FyersSession {
  accessToken: string;
  refreshToken: string;
  accountId: string;
  expiresAt: number;
}

interface KiteSession {
  accessToken: string;
  publicToken: string;
  userId: string;
}

const DEMO_DB = process.env['ORDO_SESSION_DB'] ?? '.ordo/demo-sessions.db';
const HOUR = 3_600_000;

/** Kite tokens die at 06:00 in India (IST, UTC+05:30, no daylight saving) the next morning. */
function nextSixAmIst(now = Date.now()): Date {
  const istOffset = 5.5 * HOUR;
  const ist = new Date(now + istOffset);
  const sixAm = Date.UTC(ist.getUTCFullYear(), ist.getUTCMonth(), ist.getUTCDate(), 6) - istOffset;
  return new Date(sixAm > now ? sixAm : sixAm + 24 * HOUR);
}

function heading(text: string): void {
  console.log(`\n== ${text}`);
}

// A fresh demo database each run: the demo's key is thrown away at the end.
rmSync(DEMO_DB, { force: true });
rmSync(`${DEMO_DB}-wal`, { force: true });
rmSync(`${DEMO_DB}-shm`, { force: true });
process.env['ORDO_SESSION_DB'] = DEMO_DB;

let keyring: Keyring;
if (process.env['ORDO_SESSION_KEYS'] || process.env['ORDO_SESSION_KEYS_FILE']) {
  keyring = Keyring.fromEnv();
  console.log(`Using the keys from the environment (primary "${keyring.primaryKeyId}").`);
} else {
  keyring = Keyring.parse(Keyring.generateKey('demo'));
  console.log('No ORDO_SESSION_KEYS set: generated a throwaway key "demo" for this run.');
  console.log('In production: ORDO_SESSION_KEYS="$(npx ordo-sessions keygen)" (keep it in your secret store).');
}

// No store given: the embedded SQLite default, at ORDO_SESSION_DB.
const sessions = await SessionManager.open({ keyring });
console.log(`Opened ${String(sessions)} at ${DEMO_DB}`);

const fyers = sessions.forBroker<FyersSession>('fyers');
const kite = sessions.forBroker<KiteSession>('kite');
const accountId = 'XY1234'; // the same account id at both brokers

heading('Each adapter stores its own session shape');
const fyersSession: FyersSession = {
  accessToken: `fyers-access-${'a'.repeat(24)}`,
  refreshToken: `fyers-refresh-${'r'.repeat(24)}`,
  accountId,
  expiresAt: Date.now() + 24 * HOUR,
};
await fyers.setSession(accountId, fyersSession, { expiresAt: fyersSession.expiresAt });
const kiteExpiry = nextSixAmIst();
await kite.setSession(accountId, { accessToken: `kite-access-${'k'.repeat(24)}`, publicToken: 'kite-public', userId: accountId }, { expiresAt: kiteExpiry });
console.log(`fyers/${accountId}: refresh-token session, expires ${new Date(fyersSession.expiresAt).toISOString()}`);
console.log(`kite/${accountId}:  daily token, expires at 06:00 IST = ${kiteExpiry.toISOString()}`);

heading('Same account id, two brokers: no collision');
const readFyers = await fyers.getSession(accountId);
const readKite = await kite.getSession(accountId);
console.log(`fyers reads accessToken ${readFyers?.accessToken.slice(0, 16)}...`);
console.log(`kite  reads accessToken ${readKite?.accessToken.slice(0, 16)}...`);
console.log(`distinct sessions: ${readFyers?.accessToken !== readKite?.accessToken}`);

heading('Listing shows keys and metadata, never tokens');
for (const broker of ['fyers', 'kite']) {
  for await (const info of sessions.listSessions(broker)) {
    console.log(`${broker.padEnd(6)} key=${info.key} keyId=${info.keyId} expires=${info.expiresAt?.toISOString() ?? 'never'}`);
  }
}

heading('What is on disk: ciphertext, not tokens');
const db = new Database(DEMO_DB, { readonly: true });
const rows = db.prepare('SELECT key, value, expires_at FROM ordo_sessions WHERE key LIKE ? ORDER BY key').all('default/%') as Array<{
  key: string;
  value: Buffer;
  expires_at: number | null;
}>;
for (const row of rows) {
  console.log(`${row.key}  expires_at=${row.expires_at}  ${row.value.length} bytes`);
  console.log(`  ${row.value.subarray(0, 48).toString('hex')}...`);
  const leaked = row.value.includes(Buffer.from('access')) || row.value.includes(Buffer.from(accountId));
  console.log(`  plaintext token or account id in the stored bytes: ${leaked ? 'YES (bug!)' : 'no'}`);
}
db.close();

heading('Tampering is detected: a fyers record copied into the kite row');
const store = sessions.store;
const fyersRecord = await store.get(`default/fyers/${accountId}`);
const kiteRecord = await store.get(`default/kite/${accountId}`);
if (fyersRecord && kiteRecord) {
  await store.set(`default/kite/${accountId}`, fyersRecord.value, { expiresAt: fyersRecord.expiresAt, updatedAt: Date.now() });
  try {
    await kite.getSession(accountId);
    console.log('opened a swapped record (bug!)');
  } catch (error) {
    console.log(`kite.getSession -> ${(error as Error).name} (${(error as SessionIntegrityError).code})`);
  }
  await store.set(`default/kite/${accountId}`, kiteRecord.value, { expiresAt: kiteRecord.expiresAt, updatedAt: kiteRecord.updatedAt });
  console.log(`restored: kite reads its own session again: ${(await kite.getSession(accountId))?.publicToken}`);
}

heading('Expiry: invisible at once, purged later');
await fyers.setSession('SHORT1', { ...fyersSession, accountId: 'SHORT1' }, { ttlMs: 1000 });
console.log(`fyers/SHORT1 present: ${await fyers.hasSession('SHORT1')}`);
await sleep(1100);
console.log(`after 1.1 s: present ${await fyers.hasSession('SHORT1')}; purged ${await sessions.purgeExpired()} expired record(s)`);

heading('Clearing one broker leaves the other alone');
console.log(`kite.clearBroker() deleted ${await kite.clearBroker()}; fyers still has ${accountId}: ${await fyers.hasSession(accountId)}`);

await sessions.close();
console.log('\nDone. The demo database is at', DEMO_DB);
