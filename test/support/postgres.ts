/**
 * Helpers for the PostgreSQL suites: throwaway schemas, an admin connection that can see and
 * terminate the store's own backends (found by a unique `application_name`), and a free port.
 * Nothing here touches another suite's schema or backends, or the server itself.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { createServer } from 'node:net';
import pg from 'pg';
import { DATABASE_URL } from './services.ts';

/** A schema name no other run uses. */
export function randomSchema(label = 'ordo_test'): string {
  return `${label}_${randomBytes(6).toString('hex')}`;
}

/** An `application_name` that identifies exactly one test's connections. */
export function randomApplicationName(): string {
  return `ordo-test-${randomUUID()}`;
}

/** A pool for the test itself (inspecting tables, holding locks, terminating backends). */
export function adminPool(): pg.Pool {
  const pool = new pg.Pool({ connectionString: DATABASE_URL, max: 4, application_name: 'ordo-test-admin' });
  pool.on('error', () => {}); // an idle admin connection dying must not crash the run
  return pool;
}

export async function dropSchema(admin: pg.Pool, schema: string): Promise<void> {
  await admin.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
}

/** Terminates every backend with this application name, waiting until each is gone; returns how many. */
export async function terminateBackends(admin: pg.Pool, applicationName: string): Promise<number> {
  const { rows } = await admin.query<{ terminated: number }>(
    `SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 2000))::int AS terminated
       FROM pg_stat_activity WHERE application_name = $1 AND pid <> pg_backend_pid()`,
    [applicationName],
  );
  return rows[0]?.terminated ?? 0;
}

/** How many backends with this application name wait on a lock of this type (`'Lock'` row/advisory locks). */
export async function backendsWaiting(admin: pg.Pool, applicationName: string, waitEvent?: string): Promise<number> {
  const { rows } = await admin.query<{ waiting: number }>(
    `SELECT count(*)::int AS waiting FROM pg_stat_activity
      WHERE application_name = $1 AND wait_event_type = 'Lock' AND ($2::text IS NULL OR wait_event = $2)`,
    [applicationName, waitEvent ?? null],
  );
  return rows[0]?.waiting ?? 0;
}

/** Polls until `predicate` holds; throws after `timeoutMs`. */
export async function waitFor(predicate: () => Promise<boolean> | boolean, timeoutMs = 5000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await predicate())) {
    if (Date.now() > end) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** A TCP port on 127.0.0.1 that nothing listens on (it was free a moment ago). */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  if (address === null || typeof address === 'string') throw new Error('no port');
  return address.port;
}

export type Settled<T> =
  | { readonly ok: true; readonly value: T; readonly elapsedMs: number }
  | { readonly ok: false; readonly error: unknown; readonly elapsedMs: number };

/** Awaits `promise`, failing loudly (instead of hanging the test) if it takes longer than `limitMs`. */
export async function settle<T>(promise: Promise<T>, limitMs: number): Promise<Settled<T>> {
  const start = performance.now();
  let timer: NodeJS.Timeout | undefined;
  const hung = new Error(`did not settle within ${limitMs} ms`);
  const hang = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(hung), limitMs);
  });
  try {
    const value = await Promise.race([promise, hang]);
    return { ok: true, value, elapsedMs: performance.now() - start };
  } catch (error) {
    if (error === hung) throw error;
    return { ok: false, error, elapsedMs: performance.now() - start };
  } finally {
    clearTimeout(timer);
  }
}
