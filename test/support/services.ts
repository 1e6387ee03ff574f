/**
 * The shared services the Redis and PostgreSQL suites talk to. On a laptop without them those
 * suites are skipped with a loud notice; with CI=true they are required, and an unreachable
 * service fails the run.
 */
import { connect } from 'node:net';
import { describe, it } from 'vitest';

export const REDIS_URL = process.env['REDIS_URL'] ?? 'redis://127.0.0.1:6379';
export const DATABASE_URL = process.env['DATABASE_URL'] ?? 'postgres://postgres@127.0.0.1:5432/test';
export const IN_CI = process.env['CI'] === 'true' || process.env['CI'] === '1';

/** Whether something accepts TCP connections at the URL's host and port. */
export function isReachable(url: string, defaultPort: number, timeoutMs = 1500): Promise<boolean> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve) => {
    const socket = connect({ host: hostname.replace(/^\[|\]$/g, '') || '127.0.0.1', port: Number(port || defaultPort) });
    const done = (ok: boolean): void => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

/**
 * `describe` for a suite that needs a service: runs it when the service answers; otherwise
 * fails under CI, and skips with a loud notice elsewhere.
 */
export function describeWithService(service: string, available: boolean, name: string, body: () => void): void {
  if (available) {
    describe(name, body);
    return;
  }
  if (IN_CI) {
    describe(name, () => {
      it(`requires ${service}, which is not reachable (CI=true makes it mandatory)`, () => {
        throw new Error(`${service} is not reachable; CI requires it`);
      });
    });
    return;
  }
  console.warn(`\n!!! ${service} is not reachable: SKIPPING "${name}". Set CI=true to make this a failure.\n`);
  describe.skip(name, body);
}

export const redisAvailable = await isReachable(REDIS_URL, 6379);
export const postgresAvailable = await isReachable(DATABASE_URL, 5432);
