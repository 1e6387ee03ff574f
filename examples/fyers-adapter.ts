/**
 * A Fyers-style adapter on the public API: log in once with an auth code, then every worker asks
 * `accessToken()` before it trades. The refresh token is single-use (see broker-server.ts), so two
 * workers refreshing at once would get the login revoked; `getOrRefresh` makes sure exactly one
 * of them refreshes, in whichever process, and the others use what it wrote.
 *
 * Run the demo: `npx tsx examples/fyers-adapter.ts` (a fake broker on 127.0.0.1, a temp SQLite file).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { Keyring, SessionManager, SqliteStore, loginRequired, type BrokerSessions, type GetOrRefreshOptions } from '../src/index.ts';
import { APP, appIdHash, startBrokerServer } from './broker-server.ts';

/** What is stored per Fyers account (sealed; never logged). */
export interface FyersSession {
  accessToken: string;
  refreshToken: string;
  /** Epoch ms the access token dies. */
  accessExpiresAt: number;
}

/** Options of {@link FyersAdapter}. */
export interface FyersAdapterOptions {
  readonly sessions: SessionManager;
  /** The broker's base URL. */
  readonly baseUrl: string;
  /** The account's 4-digit PIN, which every refresh needs. */
  readonly pin: string;
  /** Passed to getOrRefresh. Default: refresh in the last 10 minutes of an access token's life. */
  readonly refresh?: GetOrRefreshOptions;
}

interface TokenReply {
  s?: string;
  code?: number;
  access_token?: string;
  refresh_token?: string;
  expires_in?: number;
}

/**
 * Fyers sessions on a {@link SessionManager}.
 *
 * @example
 * ```ts
 * const fyers = new FyersAdapter({ sessions, baseUrl: 'https://api-t1.fyers.in/api/v3', pin });
 * await fyers.login('XY1234', authCodeFromRedirect);
 * await fyers.placeOrder('XY1234', { symbol: 'NSE:SBIN-EQ', qty: 1 });
 * ```
 */
export class FyersAdapter {
  readonly #sessions: BrokerSessions<FyersSession>;
  readonly #baseUrl: string;
  readonly #pin: string;
  readonly #refresh: GetOrRefreshOptions;

  constructor(options: FyersAdapterOptions) {
    this.#sessions = options.sessions.forBroker<FyersSession>('fyers');
    this.#baseUrl = options.baseUrl;
    this.#pin = options.pin;
    this.#refresh = options.refresh ?? { refreshBeforeMs: 10 * 60_000, lockTtlMs: 30_000, waitTimeoutMs: 60_000 };
  }

  /** Trades the auth code from the login redirect for tokens, and stores them. */
  async login(accountId: string, authCode: string): Promise<void> {
    const reply = await this.#post('/fyers/validate-authcode', { grant_type: 'authorization_code', appIdHash: appIdHash(), code: authCode });
    const session = toSession(reply);
    if (session === undefined) throw new Error('Fyers login failed');
    await this.#sessions.setSession(accountId, session, { expiresAt: session.accessExpiresAt });
  }

  /** A live access token: the stored one, or a refreshed one when it is about to die. */
  async accessToken(accountId: string): Promise<string> {
    const session = await this.#sessions.getOrRefresh(
      accountId,
      async (current) => {
        // On Redis an expired record is gone by itself: without it there is no refresh token left.
        if (current === undefined) throw loginRequired('no Fyers session: log in again');
        const reply = await this.#post('/fyers/validate-refresh-token', {
          grant_type: 'refresh_token',
          appIdHash: appIdHash(),
          refresh_token: current.refreshToken,
          pin: this.#pin,
        });
        const next = toSession(reply);
        if (next === undefined) {
          // Fyers answers -17/-19 for a refresh token that is dead: only a new login helps.
          if (reply.status === 401) throw loginRequired('the Fyers refresh token was refused: log in again');
          throw new Error(`Fyers refresh failed with HTTP ${reply.status}`); // status only, never the body
        }
        return { data: next, expiresAt: next.accessExpiresAt };
      },
      this.#refresh,
    );
    return session.accessToken;
  }

  /** Places a (fake) order with a live token; resolves with the broker's order id. */
  async placeOrder(accountId: string, order: { symbol: string; qty: number }): Promise<string> {
    const token = await this.accessToken(accountId);
    const response = await fetch(`${this.#baseUrl}/orders`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify(order),
    });
    const body = (await response.json()) as { id?: string };
    if (!response.ok || typeof body.id !== 'string') throw new Error(`Fyers order refused with HTTP ${response.status}`);
    return body.id;
  }

  async #post(path: string, body: unknown): Promise<TokenReply & { status: number }> {
    const response = await fetch(`${this.#baseUrl}${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    return { ...((await response.json()) as TokenReply), status: response.status };
  }
}

function toSession(reply: TokenReply & { status: number }): FyersSession | undefined {
  if (reply.status !== 200 || reply.s !== 'ok' || typeof reply.access_token !== 'string' || typeof reply.refresh_token !== 'string' ||
    typeof reply.expires_in !== 'number') {
    return undefined;
  }
  return { accessToken: reply.access_token, refreshToken: reply.refresh_token, accessExpiresAt: Date.now() + reply.expires_in * 1000 };
}

// The demo: one login, then four "workers" trading across three token expiries.
if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const dir = mkdtempSync(join(tmpdir(), 'ordo-fyers-demo-'));
  const broker = await startBrokerServer({ fyersAccessTtlMs: 3_000 });
  const sessions = await SessionManager.open({
    keyring: Keyring.parse(Keyring.generateKey('demo')),
    store: new SqliteStore({ path: join(dir, 'sessions.db') }),
  });
  try {
    const fyers = new FyersAdapter({ sessions, baseUrl: broker.url, pin: '1234', refresh: { refreshBeforeMs: 1_000 } });
    await fyers.login(APP.id, broker.fyersAuthCode());
    const deadline = Date.now() + 7_000;
    await Promise.all(
      Array.from({ length: 4 }, async () => {
        while (Date.now() < deadline) {
          await fyers.placeOrder(APP.id, { symbol: 'NSE:SBIN-EQ', qty: 1 });
          await sleep(50);
        }
      }),
    );
    const stats = broker.stats();
    console.log(`orders ${stats.ordersAccepted} accepted, ${stats.ordersRefused} refused; ` +
      `${stats.fyersRefreshCalls} refreshes, ${stats.fyersRefreshReuse} refresh-token reuses, ${stats.fyersRevokedLogins} revoked logins`);
  } finally {
    await sessions.close();
    await broker.close();
    rmSync(dir, { recursive: true, force: true });
  }
}
