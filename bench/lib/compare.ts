/** The side-by-side runs: every variant of one backend, interleaved round by round. */
import { open, seal, type RecordIdentity } from '../../src/crypto/envelope.ts';
import { associatedData } from '../../src/crypto/envelope.ts';
import { ACCOUNTS, benchKeyring, VARIANTS, type Backend, type VariantName } from './backends.ts';
import { BareCrypto, session } from './payload.ts';
import { sequentialUs, spread, throughput, type Spread } from './stats.ts';

export interface Plan {
  readonly rounds: number;
  /** Sequential operations per variant per round. */
  readonly sequential: number;
  /** Operations per variant per round at 64 in flight. */
  readonly concurrent: number;
  readonly inFlight: number;
  /** Whether to measure throughput at `inFlight` (gets and sets). */
  readonly concurrency: boolean;
}

export interface DiagnosticResult {
  readonly getUs?: Spread;
  readonly setUs?: Spread;
  readonly getOps?: Spread;
  readonly setOps?: Spread;
}

export interface BackendResult {
  /** Microseconds per call, sequential. */
  readonly getUs: Record<VariantName, Spread>;
  readonly setUs: Record<VariantName, Spread>;
  /** Operations per second, sequential (1e6 / median µs of each round). */
  readonly setOpsSequential: Record<VariantName, Spread>;
  /** Operations per second at `inFlight`. */
  readonly getOpsConcurrent?: Record<VariantName, Spread>;
  readonly setOpsConcurrent?: Record<VariantName, Spread>;
  /** Diagnostic contenders, measured in the same rounds: µs per call, and operations per second at `inFlight`. */
  readonly diagnostics?: Record<string, DiagnosticResult>;
  readonly notes: string[];
}

function rotate<T>(items: readonly T[], by: number): T[] {
  const k = by % items.length;
  return [...items.slice(k), ...items.slice(0, k)];
}

function collect(): Record<VariantName, number[]> {
  return { ordo: [], floor: [], plain: [], keyv: [] };
}

function summarise(samples: Record<VariantName, number[]>): Record<VariantName, Spread> {
  return {
    ordo: spread(samples.ordo),
    floor: spread(samples.floor),
    plain: spread(samples.plain),
    keyv: spread(samples.keyv),
  };
}

/** Warm-up, then `rounds` rounds; in each, every variant in turn (order rotated per round). */
export async function compareBackend(backend: Backend, plan: Plan, log: (line: string) => void): Promise<BackendResult> {
  let offset = 0;
  for (const name of VARIANTS) {
    const variant = backend.variants[name];
    for (let pass = 0; pass < 2; pass++) {
      offset += ACCOUNTS;
      await sequentialUs(variant.set, ACCOUNTS, offset); // every account exists before any get
      await sequentialUs(variant.get, ACCOUNTS, offset);
    }
  }
  const get = collect();
  const set = collect();
  const diagnostics = Object.entries(backend.diagnostics ?? {});
  const diagnosticSamples = new Map(diagnostics.map(([name]) => [name, { getUs: [] as number[], setUs: [] as number[], getOps: [] as number[], setOps: [] as number[] }]));
  for (const [, variant] of diagnostics) {
    if (variant.set) await sequentialUs(variant.set, ACCOUNTS, (offset += ACCOUNTS));
    if (variant.get) await sequentialUs(variant.get, ACCOUNTS, offset);
  }
  const getConcurrent = collect();
  const setConcurrent = collect();
  for (let round = 0; round < plan.rounds; round++) {
    for (const name of rotate(VARIANTS, round)) {
      const variant = backend.variants[name];
      offset += plan.sequential;
      get[name].push(await sequentialUs(variant.get, plan.sequential, offset));
      set[name].push(await sequentialUs(variant.set, plan.sequential, offset));
      if (plan.concurrency) {
        offset += plan.concurrent;
        getConcurrent[name].push(await throughput(variant.get, plan.concurrent, plan.inFlight, offset));
        setConcurrent[name].push(await throughput(variant.set, plan.concurrent, plan.inFlight, offset));
      }
    }
    for (const [name, variant] of diagnostics) {
      const samples = diagnosticSamples.get(name);
      if (samples === undefined) continue;
      offset += plan.sequential;
      if (variant.get) samples.getUs.push(await sequentialUs(variant.get, plan.sequential, offset));
      if (variant.set) samples.setUs.push(await sequentialUs(variant.set, plan.sequential, offset));
      if (plan.concurrency) {
        offset += plan.concurrent;
        if (variant.get) samples.getOps.push(await throughput(variant.get, plan.concurrent, plan.inFlight, offset));
        if (variant.set) samples.setOps.push(await throughput(variant.set, plan.concurrent, plan.inFlight, offset));
      }
    }
    log(`  ${backend.name}: round ${round + 1}/${plan.rounds}`);
  }
  const setOps = collect();
  for (const name of VARIANTS) setOps[name] = set[name].map((us) => 1e6 / us);
  return {
    getUs: summarise(get),
    setUs: summarise(set),
    setOpsSequential: summarise(setOps),
    ...(diagnostics.length > 0
      ? {
          diagnostics: Object.fromEntries(
            [...diagnosticSamples].map(([name, samples]) => [
              name,
              Object.fromEntries(Object.entries(samples).filter(([, values]) => values.length > 0).map(([what, values]) => [what, spread(values)])),
            ]),
          ),
        }
      : {}),
    ...(plan.concurrency ? { getOpsConcurrent: summarise(getConcurrent), setOpsConcurrent: summarise(setConcurrent) } : {}),
    notes: backend.notes,
  };
}

export interface CryptoResult {
  /** Microseconds for one seal plus one open of the session record. */
  readonly libraryUs: Spread;
  readonly bareUs: Spread;
  /** Bare calls without AAD (what a careless hand-rolled store does), for reference. */
  readonly bareNoAadUs: Spread;
}

/**
 * Seal plus open of the ~600-byte record: the library's envelope vs bare node:crypto with the
 * same plaintext and the same AAD bytes (so both do the same AES-GCM work), interleaved.
 */
export function compareCrypto(rounds: number, count: number): CryptoResult {
  const keyring = benchKeyring();
  const bare = new BareCrypto();
  const identity: RecordIdentity = { kind: 'session', namespace: 'default', broker: 'fyers', key: 'XY000001', expiresAt: Date.now() + 3600_000 };
  const plaintext = Buffer.from(JSON.stringify(session(1)), 'utf8');
  const aad = associatedData(1, keyring.primaryKeyId, identity);
  const cases: Array<[keyof CryptoResult, () => void]> = [
    ['libraryUs', () => void open(keyring, seal(keyring, plaintext, identity), identity)],
    ['bareUs', () => void bare.open(bare.seal(plaintext, aad), aad)],
    ['bareNoAadUs', () => void bare.open(bare.seal(plaintext))],
  ];
  const samples: Record<keyof CryptoResult, number[]> = { libraryUs: [], bareUs: [], bareNoAadUs: [] };
  for (const [, run] of cases) for (let i = 0; i < count; i++) run(); // warm-up
  for (let round = 0; round < rounds; round++) {
    for (const [name, run] of rotate(cases, round)) {
      const start = performance.now();
      for (let i = 0; i < count; i++) run();
      samples[name].push(((performance.now() - start) * 1000) / count);
    }
  }
  return { libraryUs: spread(samples.libraryUs), bareUs: spread(samples.bareUs), bareNoAadUs: spread(samples.bareNoAadUs) };
}
