/**
 * Type-level tests, checked by `tsc --noEmit` (npm test): forBroker infers its types from a
 * Standard Schema, watch and dailyExpiry have the documented types. Every `@ts-expect-error`
 * below fails the type-check if the error it expects goes away. Nothing here runs.
 */
import type { StandardSchemaV1 } from '@standard-schema/spec';
import { expectTypeOf } from 'vitest';
import { z } from 'zod';
import {
  dailyExpiry,
  type BrokerSessions,
  type ChangeKind,
  type JsonValue,
  type SessionChange,
  type SessionManager,
  type Unwatch,
} from '../src/index.ts';

declare const sessions: SessionManager;

const FyersSession = z.object({
  accessToken: z.string(),
  expiresIn: z.number().int(),
  segments: z.array(z.enum(['equity', 'fno'])).default(['equity']),
});
type FyersOut = { accessToken: string; expiresIn: number; segments: Array<'equity' | 'fno'> };
type FyersIn = { accessToken: string; expiresIn: number; segments?: Array<'equity' | 'fno'> | undefined };

export async function schemaInference(): Promise<void> {
  const fyers = sessions.forBroker('fyers', { schema: FyersSession });
  expectTypeOf(fyers).toEqualTypeOf<BrokerSessions<FyersOut, FyersIn>>();
  expectTypeOf(fyers.getSession).returns.resolves.toEqualTypeOf<FyersOut | undefined>();
  expectTypeOf(fyers.setSession).parameter(1).toEqualTypeOf<FyersIn>();

  await fyers.setSession('XY1234', { accessToken: 't', expiresIn: 3600 }); // segments has a default: optional on input
  // @ts-expect-error accessToken must be a string
  await fyers.setSession('XY1234', { accessToken: 1, expiresIn: 3600 });
  // @ts-expect-error expiresIn is required
  await fyers.setSession('XY1234', { accessToken: 't' });

  const session = await fyers.getSession('XY1234');
  if (session !== undefined) {
    expectTypeOf(session.segments).toEqualTypeOf<Array<'equity' | 'fno'>>(); // the output: never undefined
    // @ts-expect-error the schema's output has no refreshToken
    void session.refreshToken;
  }

  // A transforming schema: input and output differ.
  const Stamped = z.object({ at: z.string() }).transform((value) => ({ ...value, length: value.at.length }));
  const stamped = sessions.forBroker('kite', { schema: Stamped });
  expectTypeOf(stamped.getSession).returns.resolves.toEqualTypeOf<{ at: string; length: number } | undefined>();
  expectTypeOf(stamped.setSession).parameter(1).toEqualTypeOf<{ at: string }>();

  // Any Standard Schema, not only zod.
  const handWritten = {} as StandardSchemaV1<{ token: string }, { token: string; ok: true }>;
  expectTypeOf(sessions.forBroker('upstox', { schema: handWritten })).toEqualTypeOf<BrokerSessions<{ token: string; ok: true }, { token: string }>>();

  // @ts-expect-error a schema must be a Standard Schema
  sessions.forBroker('kite', { schema: { parse: (value: unknown) => value } });

  // Without a schema: JsonValue, or the type given.
  expectTypeOf(sessions.forBroker('kite')).toEqualTypeOf<BrokerSessions<JsonValue>>();
  expectTypeOf(sessions.forBroker<{ a: string }>('kite').getSession).returns.resolves.toEqualTypeOf<{ a: string } | undefined>();
}

export async function watchTypes(): Promise<void> {
  const unwatch = await sessions.watch((change) => {
    expectTypeOf(change).toEqualTypeOf<SessionChange>();
    expectTypeOf(change.kind).toEqualTypeOf<ChangeKind>();
    expectTypeOf(change.kind).toEqualTypeOf<'set' | 'delete' | 'refresh' | 'expire'>();
    // @ts-expect-error a change never carries session data
    void change.data;
  });
  expectTypeOf(unwatch).toEqualTypeOf<Unwatch>();
  expectTypeOf(unwatch).returns.toEqualTypeOf<Promise<void>>();
  await sessions.forBroker('kite').watch(async ({ key }) => void key, { onError: () => undefined });
  // @ts-expect-error a broker view watches its own broker only
  await sessions.forBroker('kite').watch(() => undefined, { broker: 'fyers' });
}

export function expiryTypes(): void {
  expectTypeOf(dailyExpiry).returns.toEqualTypeOf<Date>();
  expectTypeOf(dailyExpiry({ at: '06:00', timeZone: 'Asia/Kolkata' }, Date.now())).toEqualTypeOf<Date>();
  // @ts-expect-error at and timeZone are both required
  dailyExpiry({ at: '06:00' });
}
