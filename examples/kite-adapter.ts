/**
 * A Kite-style adapter on the public API: the access token from a login lives until 06:00
 * Asia/Kolkata the next morning (IST is UTC+05:30 all year) and cannot be refreshed. So the
 * refresher given to `getOrRefresh` only ever says "log in again": every caller then gets a
 * `LoginRequiredError` (code `ERR_SESSION_LOGIN_REQUIRED`), the cue to send the user through the
 * Kite login page.
 *
 * Run the demo: `npx tsx examples/kite-adapter.ts`.
 */
import { fileURLToPath } from 'node:url';
import {
  Keyring,
  LoginRequiredError,
  MemoryStore,
  SessionManager,
  dailyExpiry,
  loginRequired,
  type BrokerSessions,
} from '../src/index.ts';
import { APP, kiteChecksum, startBrokerServer } from './broker-server.ts';

/** What is stored per Kite user (sealed; never logged). */
export interface KiteSession {
  userId: string;
  accessToken: string;
  publicToken: string;
}

/** Options of {@link KiteAdapter}. */
export interface KiteAdapterOptions {
  readonly sessions: SessionManager;
  readonly baseUrl: string;
  /** Epoch ms now, for the 06:00 IST expiry; give the manager's clock. Default `Date.now`. */
  readonly clock?: () => number;
}

/**
 * The instant a Kite token dies: the next 06:00 in Asia/Kolkata after `now`.
 *
 * @example
 * ```ts
 * kiteExpiry(Date.parse('2026-12-03T10:00:00Z')); // 2026-12-04T00:30:00.000Z
 * ```
 */
export function kiteExpiry(now: number): Date {
  return dailyExpiry({ at: '06:00', timeZone: 'Asia/Kolkata' }, now);
}

/**
 * Kite sessions on a {@link SessionManager}.
 *
 * @example
 * ```ts
 * const kite = new KiteAdapter({ sessions, baseUrl: 'https://api.kite.trade' });
 * await kite.login('AB1234', requestTokenFromRedirect);
 * try { await kite.placeOrder('AB1234', order); }
 * catch (e) { if (e instanceof LoginRequiredError) redirectToKiteLogin(); }
 * ```
 */
export class KiteAdapter {
  readonly #sessions: BrokerSessions<KiteSession>;
  readonly #baseUrl: string;
  readonly #clock: () => number;

  constructor(options: KiteAdapterOptions) {
    this.#sessions = options.sessions.forBroker<KiteSession>('kite');
    this.#baseUrl = options.baseUrl;
    this.#clock = options.clock ?? Date.now;
  }

  /** Trades the login redirect's request token for an access token, stored until 06:00 IST. */
  async login(userId: string, requestToken: string): Promise<void> {
    const response = await fetch(`${this.#baseUrl}/kite/session/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ api_key: APP.kiteKey, request_token: requestToken, checksum: kiteChecksum(requestToken) }),
    });
    const body = (await response.json()) as { data?: { access_token?: unknown; public_token?: unknown } };
    const { access_token: accessToken, public_token: publicToken } = body.data ?? {};
    if (!response.ok || typeof accessToken !== 'string' || typeof publicToken !== 'string') {
      throw new Error(`Kite login failed with HTTP ${response.status}`);
    }
    await this.#sessions.setSession(userId, { userId, accessToken, publicToken }, { expiresAt: kiteExpiry(this.#clock()) });
  }

  /**
   * The live access token.
   * @throws LoginRequiredError once the token has died (at 06:00 IST) or when there never was one.
   */
  async accessToken(userId: string): Promise<string> {
    const session = await this.#sessions.getOrRefresh(
      userId,
      () => {
        throw loginRequired('the Kite session ended at 06:00 IST (or never began): log in again');
      },
      { refreshBeforeMs: 0 }, // use the token to its last minute: there is nothing to refresh early
    );
    return session.accessToken;
  }

  /** Places a (fake) order; resolves with the broker's order id. */
  async placeOrder(userId: string, order: { tradingsymbol: string; quantity: number }): Promise<string> {
    const token = await this.accessToken(userId);
    const response = await fetch(`${this.#baseUrl}/orders`, {
      method: 'POST',
      headers: { authorization: `token ${APP.kiteKey}:${token}`, 'content-type': 'application/json' },
      body: JSON.stringify(order),
    });
    const body = (await response.json()) as { id?: string };
    if (!response.ok || typeof body.id !== 'string') throw new Error(`Kite order refused with HTTP ${response.status}`);
    return body.id;
  }
}

// The demo: a login at 10:00 UTC, trading, then the clock moves to 06:00 IST the next day.
if (process.argv[1] === fileURLToPath(import.meta.url)) {
  let now = Date.parse('2026-12-03T10:00:00Z');
  const clock = (): number => now;
  const broker = await startBrokerServer({ clock });
  const sessions = await SessionManager.open({ keyring: Keyring.parse(Keyring.generateKey('demo')), store: new MemoryStore(), clock });
  try {
    const kite = new KiteAdapter({ sessions, baseUrl: broker.url, clock });
    await kite.login('AB1234', broker.kiteRequestToken());
    console.log('order', await kite.placeOrder('AB1234', { tradingsymbol: 'INFY', quantity: 1 }), 'token valid until', kiteExpiry(now).toISOString());
    now = kiteExpiry(now).getTime();
    await kite.placeOrder('AB1234', { tradingsymbol: 'INFY', quantity: 1 }).catch((error: unknown) => {
      if (error instanceof LoginRequiredError) console.log(`at ${new Date(now).toISOString()}: ${error.code}, send the user to the Kite login`);
      else throw error;
    });
  } finally {
    await sessions.close();
    await broker.close();
  }
}
