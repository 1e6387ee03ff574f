/**
 * A small fake broker for the adapter examples and their tests: a `node:http` server on
 * 127.0.0.1 (port 0: the OS picks one) that plays two token endpoints and a fake order endpoint.
 *
 * Fyers-style (shapes after Fyers API v3):
 * - `POST /fyers/validate-authcode` `{ grant_type: 'authorization_code', appIdHash, code }`
 *   -> `{ s: 'ok', access_token, refresh_token, expires_in }`, the login.
 * - `POST /fyers/validate-refresh-token` `{ grant_type: 'refresh_token', appIdHash, refresh_token, pin }`
 *   -> a new access token and a new refresh token. Refresh tokens here are single-use: using
 *   one a second time is treated as theft and revokes the whole session (every token of the
 *   login), which is exactly what a refresh race would do to a real trading desk.
 *
 * Kite-style (shapes after Kite Connect v3):
 * - `POST /kite/session/token` `{ api_key, request_token, checksum }` -> `{ status: 'success',
 *   data: { user_id, access_token, public_token } }`. The access token dies at 06:00 Asia/Kolkata
 *   the next morning; there is no refresh endpoint at all.
 *
 * Both: `POST /orders` with `Authorization: Bearer <access token>` -> 200 `{ s: 'ok', id }` when
 * the token is live, 401 otherwise. `stats()` says what happened, for the tests.
 *
 * Tokens are random and held in memory only. The server's clock is injectable so a test can
 * move it past 06:00 IST.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { dailyExpiry } from '../src/index.ts';

/** Options of {@link startBrokerServer}. */
export interface BrokerServerOptions {
  /** Epoch ms now. Default `Date.now`. */
  readonly clock?: () => number;
  /** How long a Fyers access token lives. Default 8 hours (a trading day). */
  readonly fyersAccessTtlMs?: number;
  /** How long a Fyers refresh token lives. Default 15 days. */
  readonly fyersRefreshTtlMs?: number;
  /** The Fyers PIN the refresh endpoint expects. Default `'1234'`. */
  readonly pin?: string;
  /** How long a refresh call takes to answer, to widen any race. Default 20 ms. */
  readonly refreshLatencyMs?: number;
}

/** What the fake broker saw. */
export interface BrokerStats {
  /** Fyers refresh calls answered (good or bad). */
  readonly fyersRefreshCalls: number;
  /** Refresh tokens presented a second time (each one revoked a session). */
  readonly fyersRefreshReuse: number;
  /** Logins whose tokens were all revoked. */
  readonly fyersRevokedLogins: number;
  /** For each successful refresh: how long the access token it replaced still had to live (ms). */
  readonly fyersRefreshRemainingMs: readonly number[];
  /** Orders accepted, and refused for a dead or unknown token. */
  readonly ordersAccepted: number;
  readonly ordersRefused: number;
  /** Accepted orders per access token generation (Fyers) or login (Kite), in issue order. */
  readonly ordersPerToken: readonly number[];
  /** Kite logins. */
  readonly kiteLogins: number;
}

/** A running fake broker. */
export interface BrokerServer {
  /** `http://127.0.0.1:<port>` */
  readonly url: string;
  /** The `code` a Fyers login (the user's browser redirect) would hand the app. */
  fyersAuthCode(): string;
  /** The `request_token` a Kite login redirect would hand the app. */
  kiteRequestToken(): string;
  stats(): BrokerStats;
  close(): Promise<void>;
}

interface AccessToken {
  readonly login: number;
  readonly expiresAt: number;
  readonly index: number;
  revoked: boolean;
}

interface RefreshToken {
  readonly login: number;
  readonly expiresAt: number;
  readonly accessToken: string;
  used: boolean;
}

const MAX_BODY = 16 * 1024;

/** The app secret and its hash, as the Fyers and Kite adapters compute them. */
export const APP = { id: 'XA1234-100', secret: 'fake-app-secret', kiteKey: 'kite-api-key', kiteSecret: 'kite-api-secret' };

/** Fyers's appIdHash: SHA-256 of `appId:appSecret`. */
export function appIdHash(appId = APP.id, secret = APP.secret): string {
  return createHash('sha256').update(`${appId}:${secret}`).digest('hex');
}

/** Kite's checksum: SHA-256 of `api_key + request_token + api_secret`. */
export function kiteChecksum(requestToken: string, apiKey = APP.kiteKey, secret = APP.kiteSecret): string {
  return createHash('sha256').update(`${apiKey}${requestToken}${secret}`).digest('hex');
}

/**
 * Starts the fake broker on 127.0.0.1 and a free port.
 *
 * @example
 * ```ts
 * const broker = await startBrokerServer({ fyersAccessTtlMs: 2000 });
 * console.log(broker.url, broker.stats());
 * await broker.close();
 * ```
 */
export async function startBrokerServer(options: BrokerServerOptions = {}): Promise<BrokerServer> {
  const clock = options.clock ?? Date.now;
  const accessTtl = options.fyersAccessTtlMs ?? 8 * 3_600_000;
  const refreshTtl = options.fyersRefreshTtlMs ?? 15 * 86_400_000;
  const pin = options.pin ?? '1234';
  const latency = options.refreshLatencyMs ?? 20;

  const authCodes = new Set<string>();
  const requestTokens = new Set<string>();
  const access = new Map<string, AccessToken>();
  const refresh = new Map<string, RefreshToken>();
  const revokedLogins = new Set<number>();
  const ordersPerToken: number[] = [];
  const remaining: number[] = [];
  let logins = 0;
  let refreshCalls = 0;
  let reuse = 0;
  let accepted = 0;
  let refused = 0;
  let kiteLogins = 0;

  const token = (): string => randomBytes(24).toString('base64url');
  const issueAccess = (login: number, expiresAt: number): string => {
    const value = token();
    access.set(value, { login, expiresAt, index: ordersPerToken.length, revoked: false });
    ordersPerToken.push(0);
    return value;
  };
  const issueFyers = (login: number): { access_token: string; refresh_token: string; expires_in: number } => {
    const accessToken = issueAccess(login, clock() + accessTtl);
    const refreshToken = token();
    refresh.set(refreshToken, { login, expiresAt: clock() + refreshTtl, accessToken, used: false });
    return { access_token: accessToken, refresh_token: refreshToken, expires_in: Math.floor(accessTtl / 1000) };
  };
  const revoke = (login: number): void => {
    revokedLogins.add(login);
    for (const entry of access.values()) if (entry.login === login) entry.revoked = true;
  };

  async function handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const body = await readJson(request);
    const path = request.url ?? '';
    if (request.method !== 'POST') return send(response, 405, { s: 'error', message: 'POST only' });

    if (path === '/fyers/validate-authcode') {
      if (body['appIdHash'] !== appIdHash() || typeof body['code'] !== 'string' || !authCodes.delete(body['code'])) {
        return send(response, 401, { s: 'error', code: -16, message: 'invalid auth code' });
      }
      return send(response, 200, { s: 'ok', code: 200, ...issueFyers(++logins) });
    }

    if (path === '/fyers/validate-refresh-token') {
      refreshCalls++;
      await new Promise((resolve) => setTimeout(resolve, latency));
      const presented = typeof body['refresh_token'] === 'string' ? refresh.get(body['refresh_token']) : undefined;
      if (body['appIdHash'] !== appIdHash() || body['pin'] !== pin || presented === undefined) {
        return send(response, 401, { s: 'error', code: -17, message: 'invalid refresh token or pin' });
      }
      if (presented.used) {
        reuse++;
        revoke(presented.login); // a refresh token used twice: assume it leaked, kill the login
        return send(response, 401, { s: 'error', code: -18, message: 'refresh token reused: session revoked' });
      }
      if (revokedLogins.has(presented.login) || presented.expiresAt <= clock()) {
        return send(response, 401, { s: 'error', code: -19, message: 'refresh token expired or revoked: log in again' });
      }
      presented.used = true;
      const old = access.get(presented.accessToken);
      if (old) remaining.push(old.expiresAt - clock());
      return send(response, 200, { s: 'ok', code: 200, ...issueFyers(presented.login) });
    }

    if (path === '/kite/session/token') {
      const requestToken = body['request_token'];
      if (body['api_key'] !== APP.kiteKey || typeof requestToken !== 'string' || body['checksum'] !== kiteChecksum(requestToken) ||
        !requestTokens.delete(requestToken)) {
        return send(response, 403, { status: 'error', error_type: 'TokenException', message: 'invalid request token' });
      }
      kiteLogins++;
      const expiresAt = dailyExpiry({ at: '06:00', timeZone: 'Asia/Kolkata' }, clock()).getTime();
      const accessToken = issueAccess(-kiteLogins, expiresAt); // Kite logins get negative ids: never a Fyers login
      return send(response, 200, {
        status: 'success',
        data: { user_id: 'AB1234', access_token: accessToken, public_token: token(), login_time: new Date(clock()).toISOString() },
      });
    }

    if (path === '/orders') {
      const header = request.headers['authorization'] ?? '';
      const match = /^Bearer (\S+)$/.exec(header) ?? /^token [^:]+:(\S+)$/.exec(header);
      const entry = match?.[1] === undefined ? undefined : access.get(match[1]);
      if (entry === undefined || entry.revoked || entry.expiresAt <= clock()) {
        refused++;
        return send(response, 401, { s: 'error', code: -8, message: 'token expired or invalid' });
      }
      accepted++;
      ordersPerToken[entry.index] = (ordersPerToken[entry.index] ?? 0) + 1;
      return send(response, 200, { s: 'ok', id: randomBytes(6).toString('hex') });
    }

    return send(response, 404, { s: 'error', message: 'no such endpoint' });
  }

  const server = createServer((request, response) => {
    handle(request, response).catch(() => send(response, 400, { s: 'error', message: 'bad request' }));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;

  return {
    url: `http://127.0.0.1:${port}`,
    fyersAuthCode: () => {
      const code = token();
      authCodes.add(code);
      return code;
    },
    kiteRequestToken: () => {
      const value = token();
      requestTokens.add(value);
      return value;
    },
    stats: () => ({
      fyersRefreshCalls: refreshCalls,
      fyersRefreshReuse: reuse,
      fyersRevokedLogins: revokedLogins.size,
      fyersRefreshRemainingMs: [...remaining],
      ordersAccepted: accepted,
      ordersRefused: refused,
      ordersPerToken: [...ordersPerToken],
      kiteLogins,
    }),
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

async function readJson(request: IncomingMessage): Promise<Record<string, unknown>> {
  let size = 0;
  const chunks: Buffer[] = [];
  for await (const chunk of request as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY) throw new Error('body too large');
    chunks.push(chunk);
  }
  if (chunks.length === 0) return {};
  const parsed: unknown = JSON.parse(Buffer.concat(chunks).toString('utf8'));
  return typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed) ? (parsed as Record<string, unknown>) : {};
}

function send(response: ServerResponse, status: number, body: unknown): void {
  if (response.headersSent) return;
  response.writeHead(status, { 'content-type': 'application/json' });
  response.end(JSON.stringify(body));
}
