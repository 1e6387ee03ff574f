/**
 * A typed view of one broker's sessions, made by `SessionManager.forBroker`: it holds its broker
 * id, so it cannot reach another broker's sessions, and with a Standard Schema it validates what
 * goes in and what comes out.
 */
import { inspect } from 'node:util';
import type { StandardSchemaV1 } from '@standard-schema/spec';
import type { ExpiryOptions } from './expiry.ts';
import { validateBrokerId } from './namespace.ts';
import type { GetOrRefreshOptions, Refresher } from './refresh.ts';
import { parseForWrite, parseStored } from './schema.ts';
import type { SessionInfo, SessionManager } from './session-manager.ts';
import type { JsonValue } from './values.ts';
import type { SessionChangeListener, Unwatch, WatchOptions } from './watch.ts';

/**
 * One broker's sessions. Made by {@link SessionManager.forBroker}; it holds its broker id and no
 * method takes another, so it cannot reach any other broker's sessions.
 *
 * @example
 * ```ts
 * const kite = sessions.forBroker<KiteSession>('kite');
 * await kite.setSession('AB1234', { accessToken }, { expiresAt });
 * for await (const info of kite.listSessions()) console.log(info.key);
 * ```
 */
export class BrokerSessions<T = JsonValue, TInput = T> {
  readonly #manager: SessionManager;
  /** Validates data on write and on read, when the view was made with one. */
  readonly #schema: StandardSchemaV1 | undefined;
  /** The broker id every call of this view uses. */
  readonly broker: string;

  /** @internal use {@link SessionManager.forBroker}. */
  constructor(manager: SessionManager, broker: string, schema?: StandardSchemaV1) {
    this.#manager = manager;
    this.broker = validateBrokerId(broker);
    this.#schema = schema;
  }

  /**
   * Like {@link SessionManager.setSession} for this broker. With a schema, `data` is validated
   * first and the schema's output is what is stored.
   * @throws InvalidSessionDataError (listing the failing paths) when `data` fails the schema.
   */
  async setSession(key: string, data: TInput, options?: ExpiryOptions): Promise<void> {
    const value = this.#schema === undefined ? data : await parseForWrite(this.#schema, data);
    return this.#manager.setSession(this.broker, key, value, options);
  }

  /**
   * Like {@link SessionManager.getSession} for this broker. With a schema, the stored value is
   * validated and the schema's output returned.
   * @throws SessionSchemaError when the stored value no longer fits the schema.
   */
  async getSession(key: string): Promise<T | undefined> {
    const stored = await this.#manager.getSession<unknown>(this.broker, key);
    if (stored === undefined || this.#schema === undefined) return stored as T | undefined;
    return (await parseStored(this.#schema, stored)) as T;
  }

  /**
   * Like {@link SessionManager.watch}, for this broker's sessions only.
   *
   * @example
   * ```ts
   * const unwatch = await kite.watch(({ key, kind }) => console.log(key, kind));
   * ```
   */
  watch(listener: SessionChangeListener, options?: Omit<WatchOptions, 'broker'>): Promise<Unwatch> {
    return this.#manager.watch(listener, { ...options, broker: this.broker });
  }

  /**
   * Like {@link SessionManager.getOrRefresh} for this broker. With a schema, the refresher's data
   * must pass it (else RefreshError with an InvalidSessionDataError cause, nothing written) and
   * the result is the schema's output.
   *
   * @example
   * ```ts
   * const session = await fyers.getOrRefresh(accountId, async (current) => {
   *   const next = await callBrokerRefresh(current?.refreshToken);
   *   return { data: next, expiresAt: next.expiresAt };
   * });
   * ```
   */
  async getOrRefresh(key: string, refresher: Refresher<T>, options?: GetOrRefreshOptions): Promise<T> {
    const schema = this.#schema;
    if (schema === undefined) return this.#manager.getOrRefresh<T>(this.broker, key, refresher, options);
    const checked: Refresher<T> = async (current) => {
      const result = await refresher(current);
      if (typeof result !== 'object' || result === null) return result;
      return { ...result, data: (await parseForWrite(schema, result.data)) as T };
    };
    const stored = await this.#manager.getOrRefresh<T>(this.broker, key, checked, options);
    return (await parseStored(schema, stored)) as T;
  }

  /** Like {@link SessionManager.hasSession} for this broker. */
  hasSession(key: string): Promise<boolean> {
    return this.#manager.hasSession(this.broker, key);
  }

  /** Like {@link SessionManager.deleteSession} for this broker. */
  deleteSession(key: string): Promise<boolean> {
    return this.#manager.deleteSession(this.broker, key);
  }

  /** Like {@link SessionManager.listSessions} for this broker. */
  listSessions(): AsyncIterable<SessionInfo> {
    return this.#manager.listSessions(this.broker);
  }

  /** Like {@link SessionManager.clearBroker} for this broker. */
  clearBroker(): Promise<number> {
    return this.#manager.clearBroker(this.broker);
  }

  toString(): string {
    return `BrokerSessions(${this.broker})`;
  }

  toJSON(): { broker: string } {
    return { broker: this.broker };
  }

  [inspect.custom](): string {
    return this.toString();
  }
}
