/** Timing and summary helpers shared by every bench case. No dependency beyond node. */
import { performance } from 'node:perf_hooks';

/** A median with its spread over rounds. */
export interface Spread {
  readonly median: number;
  readonly min: number;
  readonly max: number;
  readonly rounds: number;
}

export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = sorted.length >> 1;
  if (sorted.length === 0) return Number.NaN;
  return sorted.length % 2 === 1 ? (sorted[middle] as number) : ((sorted[middle - 1] as number) + (sorted[middle] as number)) / 2;
}

export function spread(values: readonly number[]): Spread {
  return { median: median(values), min: Math.min(...values), max: Math.max(...values), rounds: values.length };
}

/** The p-th percentile (0..100) of samples, nearest-rank. */
export function percentile(samples: Float64Array | readonly number[], p: number): number {
  const sorted = Float64Array.from(samples).sort();
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank] as number;
}

/** One operation under test: called with a running index so every call can use a different key or value. */
export type Operation = (i: number) => unknown;

/** Microseconds per operation, one after another, each awaited (sync operations are awaited too, so every variant pays the same harness cost). */
export async function sequentialUs(op: Operation, count: number, offset = 0): Promise<number> {
  const start = performance.now();
  for (let i = 0; i < count; i++) await op(offset + i);
  return ((performance.now() - start) * 1000) / count;
}

/** Operations per second with `inFlight` workers, each awaiting its own call before the next. */
export async function throughput(op: Operation, count: number, inFlight: number, offset = 0): Promise<number> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < count) {
      const i = next++;
      await op(offset + i);
    }
  };
  const start = performance.now();
  await Promise.all(Array.from({ length: inFlight }, worker));
  return (count / (performance.now() - start)) * 1000;
}

/** Per-call latencies in microseconds, for percentiles. */
export async function latenciesUs(op: Operation, count: number, offset = 0): Promise<Float64Array> {
  const samples = new Float64Array(count);
  for (let i = 0; i < count; i++) {
    const start = performance.now();
    await op(offset + i);
    samples[i] = (performance.now() - start) * 1000;
  }
  return samples;
}

/** Samples RSS every few ms (and on demand) to find the peak growth over a baseline. */
export class RssPeak {
  readonly baseline: number;
  #peak: number;
  readonly #timer: NodeJS.Timeout;

  constructor(intervalMs = 10) {
    globalThis.gc?.();
    this.baseline = process.memoryUsage.rss();
    this.#peak = this.baseline;
    this.#timer = setInterval(() => this.sample(), intervalMs);
  }

  sample(): void {
    const rss = process.memoryUsage.rss();
    if (rss > this.#peak) this.#peak = rss;
  }

  /** Stops sampling; the peak growth in bytes. */
  stop(): number {
    this.sample();
    clearInterval(this.#timer);
    return this.#peak - this.baseline;
  }
}

export const MiB = 1024 * 1024;
