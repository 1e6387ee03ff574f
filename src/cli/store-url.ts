/**
 * Turns `--store` (or ORDO_SESSION_STORE) into a SessionStore.
 *
 *   sqlite:PATH                       SqliteStore at PATH (`sqlite:///abs/path` also works)
 *   redis://... | rediss://...        RedisStore; `?prefix=app:ordo:` sets its key prefix
 *   postgres://... | postgresql://... PostgresStore; `?schema=auth&table=sessions` set where its table lives
 *
 * Our own query parameters are removed before the URL reaches the driver. With no spec at all
 * the store is left to `SessionManager.open` (SQLite at ORDO_SESSION_DB or ./.ordo/sessions.db).
 */
import { DEFAULT_SQLITE_PATH, InvalidOptionsError, SqliteStore, type SessionStore } from './lib.ts';

/** What a store spec says, before anything is opened. */
export type StoreSpec =
  | { readonly kind: 'sqlite'; readonly path: string }
  | { readonly kind: 'redis'; readonly url: string; readonly keyPrefix?: string }
  | { readonly kind: 'postgres'; readonly connectionString: string; readonly schema?: string; readonly table?: string };

/** Parses a store spec; `undefined` or empty means the default SQLite file. */
export function parseStoreSpec(spec: string | undefined, env: Readonly<Record<string, string | undefined>>): StoreSpec {
  if (spec === undefined || spec === '') return { kind: 'sqlite', path: env['ORDO_SESSION_DB'] || DEFAULT_SQLITE_PATH };
  if (spec.startsWith('sqlite:')) {
    const path = spec.startsWith('sqlite://') ? spec.slice('sqlite://'.length) : spec.slice('sqlite:'.length);
    if (path === '') throw new InvalidOptionsError('--store sqlite: needs a path, e.g. sqlite:./sessions.db');
    return { kind: 'sqlite', path };
  }
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(spec)?.[1]?.toLowerCase();
  if (scheme === 'redis' || scheme === 'rediss') {
    const url = parseUrl(spec);
    const keyPrefix = takeParam(url, 'prefix');
    return keyPrefix === undefined ? { kind: 'redis', url: url.href } : { kind: 'redis', url: url.href, keyPrefix };
  }
  if (scheme === 'postgres' || scheme === 'postgresql') {
    const url = parseUrl(spec);
    const schema = takeParam(url, 'schema');
    const table = takeParam(url, 'table');
    return {
      kind: 'postgres',
      connectionString: url.href,
      ...(schema === undefined ? {} : { schema }),
      ...(table === undefined ? {} : { table }),
    };
  }
  throw new InvalidOptionsError('--store must start with sqlite:, redis://, rediss://, postgres:// or postgresql://');
}

/**
 * Builds the store a spec names, with every network wait bounded by `timeoutMs`. A server store
 * (and its driver) is loaded only when named, so SQLite commands start without them.
 */
export async function createStore(spec: StoreSpec, timeoutMs: number): Promise<SessionStore> {
  switch (spec.kind) {
    case 'sqlite':
      return new SqliteStore({ path: spec.path, busyTimeoutMs: timeoutMs });
    case 'redis': {
      const { RedisStore } = await import('../stores/redis.ts');
      return new RedisStore({
        url: spec.url,
        connectTimeoutMs: timeoutMs,
        commandTimeoutMs: timeoutMs,
        ...(spec.keyPrefix === undefined ? {} : { keyPrefix: spec.keyPrefix }),
      });
    }
    case 'postgres': {
      const { PostgresStore } = await import('../stores/postgres.ts');
      return new PostgresStore({
        connectionString: spec.connectionString,
        connectTimeoutMs: timeoutMs,
        queryTimeoutMs: timeoutMs,
        poolSize: 2,
        applicationName: 'ordo-sessions-cli',
        ...(spec.schema === undefined ? {} : { schema: spec.schema }),
        ...(spec.table === undefined ? {} : { table: spec.table }),
      });
    }
  }
}

/** A store spec safe to print: no password. */
export function describeStoreSpec(spec: StoreSpec): string {
  if (spec.kind === 'sqlite') return `sqlite:${spec.path}`;
  const url = new URL(spec.kind === 'redis' ? spec.url : spec.connectionString);
  if (url.password !== '') url.password = '***';
  const where = spec.kind === 'redis' ? (spec.keyPrefix === undefined ? '' : ` prefix ${spec.keyPrefix}`) : ` schema ${spec.schema ?? 'public'}`;
  return `${url.href}${where}`;
}

function parseUrl(spec: string): URL {
  try {
    return new URL(spec);
  } catch {
    // Never repeat the spec: it may hold a password.
    throw new InvalidOptionsError('--store is not a valid URL');
  }
}

function takeParam(url: URL, name: string): string | undefined {
  const value = url.searchParams.get(name);
  url.searchParams.delete(name);
  return value ?? undefined;
}
