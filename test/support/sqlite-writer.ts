/**
 * A child process for multi-process tests: opens the SQLite file at argv[2] with the keys in
 * ORDO_SESSION_KEYS and writes argv[4] sessions under broker argv[3], printing "done N".
 */
import { Keyring, SessionManager, SqliteStore } from '../../src/index.ts';

const [path, broker, countText] = process.argv.slice(2);
const count = Number(countText);
const sessions = await SessionManager.open({ keyring: Keyring.fromEnv(), store: new SqliteStore({ path: path! }) });
for (let round = 0; round < count; round += 10) {
  await Promise.all(
    Array.from({ length: Math.min(10, count - round) }, (_, i) =>
      sessions.setSession(broker!, `acct-${round + i}`, { writer: broker, n: round + i, token: `${broker}-${round + i}` }),
    ),
  );
}
await sessions.setSession('shared', 'last-writer', { writer: broker });
await sessions.close();
console.log(`done ${count}`);
