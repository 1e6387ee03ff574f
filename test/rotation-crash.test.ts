/**
 * SIGKILL during rotation, then resume: a child process rotates (slowed so the kill lands
 * mid-way) and is killed after its first batches; every record must still open with the new
 * keyring, some under each key, and a second rotateKeys finishes the job with nothing lost or
 * double-encrypted. SQLite, Redis and PostgreSQL.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { Keyring, SessionManager } from '../src/index.ts';
import { BACKENDS } from './support/key-stores.ts';
import { describeWithService } from './support/services.ts';

const WORKER = fileURLToPath(new URL('./support/rotate-worker.ts', import.meta.url));
/** Fewer on PostgreSQL, whose writes are the slowest here. */
const COUNTS = { sqlite: 1200, redis: 1200, postgres: 600, memory: 0 } as const;

/** Runs the worker and SIGKILLs it once it reports `killAfter` rotated records; resolves with its last progress line. */
function rotateAndKill(address: string, keys: string, killAfter: number): Promise<{ signal: NodeJS.Signals | null; last: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', WORKER, address, 'crash', '50', '30'], {
      env: { ...process.env, ORDO_SESSION_KEYS: keys },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let last = '';
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.stdout.on('data', (chunk: Buffer) => {
      for (const line of chunk.toString().split('\n').filter(Boolean)) {
        last = line;
        const rotated = Number(line.split(' ')[2] ?? 0);
        if (line.startsWith('progress') && rotated >= killAfter) child.kill('SIGKILL');
      }
    });
    child.once('error', reject);
    child.once('exit', (code, signal) => (signal === null && code !== 0 ? reject(new Error(`worker failed: ${stderr}`)) : resolve({ signal, last })));
  });
}

async function expectAllReadable(sessions: SessionManager, count: number): Promise<void> {
  for (let i = 0; i < count; i += 100) {
    const got = await Promise.all(Array.from({ length: 100 }, (_, j) => sessions.getSession('fyers', `acct-${i + j}`)));
    expect(got).toEqual(Array.from({ length: 100 }, (_, j) => ({ n: i + j })));
  }
}

for (const backend of BACKENDS.filter((b) => b.name !== 'memory')) {
  const COUNT = COUNTS[backend.name];
  const suite = (): void => {
    it(`survives SIGKILL mid-rotation and resumes to completion (${COUNT} records)`, { timeout: 60_000 }, async () => {
      const backing = await backend.create();
      try {
        const k1 = randomBytes(32);
        const k2 = randomBytes(32);
        const old = await SessionManager.open({ keyring: new Keyring([{ id: 'k1', key: k1 }]), store: backing.open(), namespace: 'crash' });
        for (let i = 0; i < COUNT; i += 100) {
          await Promise.all(Array.from({ length: 100 }, (_, j) => old.setSession('fyers', `acct-${i + j}`, { n: i + j })));
        }
        await old.close();
        const keys = `k2:${k2.toString('base64')},k1:${k1.toString('base64')}`;
        const { signal, last } = await rotateAndKill(backing.address!, keys, 200);
        expect(signal).toBe('SIGKILL');
        expect(last).toMatch(/^progress/);

        const ring = new Keyring([{ id: 'k2', key: k2 }, { id: 'k1', key: k1 }]);
        const sessions = await SessionManager.open({ keyring: ring, store: backing.open(), namespace: 'crash' });
        const usage = await sessions.keyUsage();
        expect(usage['k2']).toBeGreaterThanOrEqual(200);
        expect(usage['k1']).toBeGreaterThan(0);
        await expectAllReadable(sessions, COUNT);
        const rest = await sessions.rotateKeys({ batchSize: 100 });
        expect(rest.unreadable).toBe(0);
        expect(rest.rotated).toBe(usage['k1']);
        expect(Object.keys(await sessions.keyUsage())).toEqual(['k2']);
        await expectAllReadable(sessions, COUNT);
        expect((await sessions.rotateKeys()).rotated).toBe(0);
        await sessions.close();
      } finally {
        await backing.cleanup();
      }
    });
  };
  if (backend.service === undefined) describe(`rotation crash on ${backend.name}`, suite);
  else describeWithService(backend.service, backend.available, `rotation crash on ${backend.name}`, suite);
}
