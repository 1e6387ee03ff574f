/** The results file's shape, the targets checked against it, and the printed table. */
import type { Backend, VariantName } from './backends.ts';
import type { BackendResult, CryptoResult, Plan } from './compare.ts';
import type { ScaleResult } from './scale.ts';
import type { Spread } from './stats.ts';

export interface Target {
  readonly name: string;
  /** The measured ratio or figure. */
  readonly value: number | null;
  readonly target: string;
  readonly pass: boolean | null;
}

export interface Results {
  generatedAt: string;
  command: string;
  durationSeconds: number;
  machine: { cpu: string; cores: number; memoryBytes: number; os: string };
  versions: Record<string, string>;
  session: { jsonBytes: number; fields: string[] };
  plans: Partial<Record<string, Plan>>;
  variants: Record<VariantName, string>;
  backends: Partial<Record<Backend['name'], BackendResult>>;
  crypto: CryptoResult;
  scale?: ScaleResult;
  skipped: string[];
  ratios: Record<string, number>;
  targets: Target[];
}

const round = (value: number, digits = 3): number => Math.round(value * 10 ** digits) / 10 ** digits;

/** Fills `ratios` (all from medians of the same run) and `targets`. */
export function evaluateTargets(results: Results): void {
  const ratios = results.ratios;
  const targets = results.targets;
  const check = (name: string, value: number | undefined, target: string, pass: (v: number) => boolean): void => {
    if (value === undefined || !Number.isFinite(value)) {
      targets.push({ name, value: null, target, pass: null });
      return;
    }
    ratios[name] = round(value);
    targets.push({ name, value: round(value), target, pass: pass(value) });
  };
  for (const [name, result] of Object.entries(results.backends) as Array<[Backend['name'], BackendResult]>) {
    const limit = name === 'sqlite' ? { get: 1.1, set: 1.05 } : { get: 1.1, set: 1.1 };
    for (const op of ['get', 'set'] as const) {
      const us = op === 'get' ? result.getUs : result.setUs;
      check(`${name}.${op}.ordo/floor`, us.ordo.median / us.floor.median, `<= ${limit[op]}`, (v) => v <= limit[op]);
      ratios[`${name}.${op}.ordo/plain`] = round(us.ordo.median / us.plain.median);
      const keyvLimit = name === 'sqlite' ? (op === 'get' ? 3 : 1.5) : 1;
      check(`${name}.${op}.keyv/ordo`, us.keyv.median / us.ordo.median, keyvLimit === 1 ? '> 1 (faster than keyv)' : `>= ${keyvLimit}`, (v) =>
        keyvLimit === 1 ? v > 1 : v >= keyvLimit,
      );
    }
    for (const [what, d] of Object.entries(result.diagnostics ?? {})) {
      if (d.getUs) ratios[`${name}.get.ordo/${what}`] = round(result.getUs.ordo.median / d.getUs.median);
      if (d.setUs) ratios[`${name}.set.ordo/${what}`] = round(result.setUs.ordo.median / d.setUs.median);
      if (d.getOps && result.getOpsConcurrent) ratios[`${name}.get.concurrent64.ordo/${what}`] = round(result.getOpsConcurrent.ordo.median / d.getOps.median);
      if (d.setOps && result.setOpsConcurrent) ratios[`${name}.set.concurrent64.ordo/${what}`] = round(result.setOpsConcurrent.ordo.median / d.setOps.median);
    }
    if (result.setOpsConcurrent && name === 'sqlite') {
      check(
        'sqlite.set.ordo.concurrent64/sequential',
        result.setOpsConcurrent.ordo.median / result.setOpsSequential.ordo.median,
        '>= 5',
        (v) => v >= 5,
      );
    }
    if (result.getOpsConcurrent && result.setOpsConcurrent && name !== 'sqlite') {
      check(`${name}.get.concurrent64.ordo/floor`, result.getOpsConcurrent.ordo.median / result.getOpsConcurrent.floor.median, '>= 0.9', (v) => v >= 0.9);
      check(`${name}.set.concurrent64.ordo/floor`, result.setOpsConcurrent.ordo.median / result.setOpsConcurrent.floor.median, '>= 0.9', (v) => v >= 0.9);
      ratios[`${name}.get.concurrent64.ordo/keyv`] = round(result.getOpsConcurrent.ordo.median / result.getOpsConcurrent.keyv.median);
      ratios[`${name}.set.concurrent64.ordo/keyv`] = round(result.setOpsConcurrent.ordo.median / result.setOpsConcurrent.keyv.median);
    }
  }
  check('crypto.sealOpen.library/bare', results.crypto.libraryUs.median / results.crypto.bareUs.median, '<= 1.1', (v) => v <= 1.1);
  ratios['crypto.sealOpen.library/bareNoAad'] = round(results.crypto.libraryUs.median / results.crypto.bareNoAadUs.median);
  const scale = results.scale;
  if (scale !== undefined) {
    for (const [store, curve] of Object.entries(scale.getLatency)) {
      const first = curve[0];
      const last = curve.at(-1);
      if (first === undefined || last === undefined || last === first) continue;
      check(`scale.${store}.getP50.${last.sessions}/${first.sessions}`, last.p50Us / first.p50Us, '<= 1.5', (v) => v <= 1.5);
      ratios[`scale.${store}.getP99.${last.sessions}/${first.sessions}`] = round(last.p99Us / first.p99Us);
    }
    check('scale.sqlite.listSessions.peakRssMiB', scale.listSessions?.peakRssGrowthMiB, '< 64', (v) => v < 64);
    const rotate = scale.rotateKeys;
    if (rotate === undefined || rotate.available === false) {
      targets.push({ name: 'scale.sqlite.rotateKeys.recordsPerSecond', value: null, target: '>= 20000 (rotateKeys missing)', pass: null });
      targets.push({ name: 'scale.sqlite.rotateKeys.peakRssMiB', value: null, target: '< 64 (rotateKeys missing)', pass: null });
    } else {
      check('scale.sqlite.rotateKeys.recordsPerSecond', rotate.recordsPerSecond, '>= 20000', (v) => v >= 20000);
      check('scale.sqlite.rotateKeys.peakRssMiB', rotate.peakRssGrowthMiB, '< 64', (v) => v < 64);
    }
  }
}

const us = (s: Spread): string => `${s.median.toFixed(1)} (${s.min.toFixed(1)}–${s.max.toFixed(1)})`;
const ops = (s: Spread): string => `${Math.round(s.median).toLocaleString('en-US')} (${Math.round(s.min / 1000)}k–${Math.round(s.max / 1000)}k)`;

/** Markdown tables of every figure: medians with min–max over rounds. */
export function renderTable(results: Results): string {
  const lines: string[] = [];
  const m = results.machine;
  lines.push(
    `Run ${results.generatedAt} (\`${results.command}\`, ${results.durationSeconds} s) on ${m.cpu}, ${m.cores} cores, ${(m.memoryBytes / 2 ** 30).toFixed(1)} GiB, Node ${results.versions['node']}; session ${results.session.jsonBytes} bytes of JSON.`,
    '',
    'Sequential latency, µs per call: median (min–max over rounds). Ratios are of medians.',
    '',
    '| store | op | ordo-sessions | floor (driver + AES-GCM + JSON) | driver + JSON | keyv | ordo / floor | keyv / ordo |',
    '|---|---|---|---|---|---|---|---|',
  );
  for (const [name, result] of Object.entries(results.backends) as Array<[string, BackendResult]>) {
    for (const op of ['get', 'set'] as const) {
      const s = op === 'get' ? result.getUs : result.setUs;
      lines.push(
        `| ${name} | ${op} | ${us(s.ordo)} | ${us(s.floor)} | ${us(s.plain)} | ${us(s.keyv)} | ${(s.ordo.median / s.floor.median).toFixed(2)}x | ${(s.keyv.median / s.ordo.median).toFixed(2)}x |`,
      );
    }
  }
  for (const [name, result] of Object.entries(results.backends) as Array<[string, BackendResult]>) {
    for (const [what, d] of Object.entries(result.diagnostics ?? {})) {
      if (d.getUs) lines.push(`| ${name} | get: ${what} | | ${us(d.getUs)} | | | ordo / this: ${(result.getUs.ordo.median / d.getUs.median).toFixed(2)}x | |`);
      if (d.setUs) lines.push(`| ${name} | set: ${what} | | ${us(d.setUs)} | | | ordo / this: ${(result.setUs.ordo.median / d.setUs.median).toFixed(2)}x | |`);
    }
  }
  lines.push('', 'Throughput at 64 in flight, operations per second: median (min–max).', '');
  lines.push('| store | op | ordo-sessions | floor | driver + JSON | keyv | ordo / floor | ordo vs own sequential |', '|---|---|---|---|---|---|---|---|');
  for (const [name, result] of Object.entries(results.backends) as Array<[string, BackendResult]>) {
    for (const op of ['get', 'set'] as const) {
      const s = op === 'get' ? result.getOpsConcurrent : result.setOpsConcurrent;
      if (s === undefined) continue;
      const sequential = op === 'get' ? 1e6 / result.getUs.ordo.median : 1e6 / result.setUs.ordo.median;
      lines.push(
        `| ${name} | ${op} | ${ops(s.ordo)} | ${ops(s.floor)} | ${ops(s.plain)} | ${ops(s.keyv)} | ${(s.ordo.median / s.floor.median).toFixed(2)}x | ${(s.ordo.median / sequential).toFixed(1)}x |`,
      );
    }
  }
  for (const [name, result] of Object.entries(results.backends) as Array<[string, BackendResult]>) {
    for (const [what, d] of Object.entries(result.diagnostics ?? {})) {
      if (d.getOps && result.getOpsConcurrent) lines.push(`| ${name} | get: ${what} | | ${ops(d.getOps)} | | | ordo / this: ${(result.getOpsConcurrent.ordo.median / d.getOps.median).toFixed(2)}x | |`);
      if (d.setOps && result.setOpsConcurrent) lines.push(`| ${name} | set: ${what} | | ${ops(d.setOps)} | | | ordo / this: ${(result.setOpsConcurrent.ordo.median / d.setOps.median).toFixed(2)}x | |`);
    }
  }
  const c = results.crypto;
  lines.push(
    '',
    '| crypto, seal + open of the record | µs |',
    '|---|---|',
    `| library \`seal\` + \`open\` (envelope.ts) | ${us(c.libraryUs)} |`,
    `| bare createCipheriv/createDecipheriv, randomBytes(12), same AAD | ${us(c.bareUs)} |`,
    `| bare, no AAD | ${us(c.bareNoAadUs)} |`,
    `| library / bare | ${(c.libraryUs.median / c.bareUs.median).toFixed(2)}x |`,
  );
  const scale = results.scale;
  if (scale !== undefined) {
    lines.push('', '| scale: get latency (µs) | stored sessions | p50 | p99 |', '|---|---|---|---|');
    for (const [store, curve] of Object.entries(scale.getLatency)) {
      for (const point of curve) lines.push(`| ${store} | ${point.sessions.toLocaleString('en-US')} | ${point.p50Us.toFixed(1)} | ${point.p99Us.toFixed(1)} |`);
    }
    lines.push('', '| scale: bulk operations (SQLite, each in a fresh process) | sessions | time | rate | peak RSS growth | heap retained after GC |', '|---|---|---|---|---|---|');
    const l = scale.listSessions;
    if (l) lines.push(`| listSessions (one broker) | ${l.sessions.toLocaleString('en-US')} | ${l.seconds.toFixed(2)} s | ${Math.round(l.sessions / l.seconds).toLocaleString('en-US')}/s | ${l.peakRssGrowthMiB.toFixed(1)} MiB | ${(l.retainedHeapMiB ?? Number.NaN).toFixed(1)} MiB |`);
    const r = scale.rotateKeys;
    if (r?.available) {
      lines.push(`| rotateKeys | ${r.records.toLocaleString('en-US')} | ${r.seconds.toFixed(2)} s | ${Math.round(r.recordsPerSecond).toLocaleString('en-US')}/s | ${r.peakRssGrowthMiB.toFixed(1)} MiB | ${(r.retainedHeapMiB ?? Number.NaN).toFixed(1)} MiB |`);
    } else {
      lines.push('| rotateKeys | — | not available in this build (`sessions.rotateKeys` missing) | — | — | — |');
    }
    const mem = scale.memory;
    lines.push('', '| memory | count | heap per instance | RSS per instance |', '|---|---|---|---|');
    for (const row of mem) lines.push(`| ${row.what} | ${row.count} | ${(row.heapBytesEach / 1024).toFixed(1)} KiB | ${(row.rssBytesEach / 1024).toFixed(1)} KiB |`);
  }
  lines.push('', '| target | measured | wanted | met |', '|---|---|---|---|');
  for (const t of results.targets) {
    lines.push(`| ${t.name} | ${t.value === null ? '—' : t.value} | ${t.target} | ${t.pass === null ? 'not measured' : t.pass ? 'yes' : '**no**'} |`);
  }
  if (results.skipped.length > 0) lines.push('', `Skipped: ${results.skipped.join('; ')}`);
  return lines.join('\n');
}
