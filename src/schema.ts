/**
 * Validating session data against a Standard Schema (zod 4, valibot, arktype...): only the
 * spec's types are used, so no schema library is a dependency. Issue messages are never passed
 * on (a library may echo the value in them, and the value holds tokens): only issue paths.
 */
import type { StandardSchemaV1 } from '@standard-schema/spec';
import { InvalidSessionDataError, SessionSchemaError } from './errors.ts';

const IDENTIFIER_KEY = /^[A-Za-z_$][A-Za-z0-9_$]*$/;
const MAX_REPORTED_PATHS = 20;
const MAX_SEGMENT_LENGTH = 64;

/** The outcome of {@link validateWithSchema}: the schema's output, or the paths that failed. */
export type SchemaOutcome<T> = { readonly ok: true; readonly value: T } | { readonly ok: false; readonly paths: readonly string[] };

/** `$.a[0]["b c"]` for an issue path; symbols and over-long keys are shortened, never echoed whole. */
export function issuePath(path: StandardSchemaV1.Issue['path']): string {
  let out = '$';
  for (const segment of path ?? []) {
    const key = typeof segment === 'object' && segment !== null ? segment.key : segment;
    if (typeof key === 'number') out += `[${key}]`;
    else if (typeof key === 'symbol') out += '[symbol]';
    else {
      const text = String(key).slice(0, MAX_SEGMENT_LENGTH);
      out += IDENTIFIER_KEY.test(text) ? `.${text}` : `[${JSON.stringify(text)}]`;
    }
  }
  return out;
}

/**
 * Runs `schema` on `value` (awaiting an async schema). A schema that throws counts as a failure
 * at `$`; what it threw is dropped, since it may hold the value.
 */
export async function validateWithSchema<S extends StandardSchemaV1>(
  schema: S,
  value: unknown,
): Promise<SchemaOutcome<StandardSchemaV1.InferOutput<S>>> {
  let result: StandardSchemaV1.Result<StandardSchemaV1.InferOutput<S>>;
  try {
    result = (await schema['~standard'].validate(value)) as StandardSchemaV1.Result<StandardSchemaV1.InferOutput<S>>;
  } catch {
    return { ok: false, paths: ['$'] };
  }
  if (result.issues === undefined) return { ok: true, value: result.value };
  const paths = [...new Set(result.issues.map((issue) => issuePath(issue.path)))].slice(0, MAX_REPORTED_PATHS);
  return { ok: false, paths: paths.length > 0 ? paths : ['$'] };
}

/** Whether `schema` looks like a Standard Schema (v1). */
export function isStandardSchema(schema: unknown): schema is StandardSchemaV1 {
  if ((typeof schema !== 'object' && typeof schema !== 'function') || schema === null) return false;
  const props = (schema as { '~standard'?: unknown })['~standard'];
  return typeof props === 'object' && props !== null && (props as { version?: unknown }).version === 1 &&
    typeof (props as { validate?: unknown }).validate === 'function';
}

/**
 * What `setSession` stores for `data` under `schema`: the schema's output (defaults applied,
 * unknown members stripped, as the schema says). The output must pass the schema again, since
 * every read validates what is stored: a schema that does not accept its own output (a
 * transform into a Date, say) is refused here, before anything is written, not on every read.
 * @throws InvalidSessionDataError listing the failing paths, never the values.
 */
export async function parseForWrite(schema: StandardSchemaV1, data: unknown): Promise<unknown> {
  const first = await validateWithSchema(schema, data);
  if (!first.ok) throw new InvalidSessionDataError(`session data does not match its schema at ${first.paths.join(', ')}`, first.paths);
  const again = await validateWithSchema(schema, first.value);
  if (!again.ok) {
    throw new InvalidSessionDataError(
      `the schema does not accept its own output at ${again.paths.join(', ')}, so the stored session could never be read back`,
      again.paths,
    );
  }
  return first.value;
}

/**
 * What a read returns for a stored value under `schema`: the schema's output.
 * @throws SessionSchemaError when the stored value no longer fits.
 */
export async function parseStored(schema: StandardSchemaV1, stored: unknown): Promise<unknown> {
  const outcome = await validateWithSchema(schema, stored);
  if (!outcome.ok) throw new SessionSchemaError(outcome.paths);
  return outcome.value;
}
