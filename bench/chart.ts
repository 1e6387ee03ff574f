/**
 * bench/chart.svg from bench/results.json: get latency (p50 solid, p99 dashed) against stored
 * sessions, log scale. Plain SVG text, no charting dependency.
 * `npx tsx bench/chart.ts` redraws it from the last results.json.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Results } from './lib/report.ts';

const COLORS: Record<string, string> = { sqlite: '#1f77b4', redis: '#d62728', postgres: '#2ca02c' };
const W = 760;
const H = 440;
const PAD = { left: 70, right: 170, top: 50, bottom: 60 };

const esc = (text: string): string => text.replace(/[&<>"]/g, (c) => `&#${c.charCodeAt(0)};`);

export function renderChart(results: Pick<Results, 'scale' | 'machine' | 'generatedAt'>): string {
  const curves = Object.entries(results.scale?.getLatency ?? {}).filter(([, points]) => points.length > 0);
  const all = curves.flatMap(([, points]) => points);
  const xs = all.map((p) => p.sessions);
  const minX = Math.log10(Math.min(...xs, 1000));
  const maxX = Math.log10(Math.max(...xs, 1_000_000));
  const maxY = niceCeil(Math.max(...all.map((p) => p.p99Us), 1) * 1.1);
  const x = (sessions: number): number => PAD.left + ((Math.log10(sessions) - minX) / (maxX - minX || 1)) * (W - PAD.left - PAD.right);
  const y = (us: number): number => H - PAD.bottom - (us / maxY) * (H - PAD.top - PAD.bottom);
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="#fff"/>`,
    `<text x="${PAD.left}" y="24" font-size="15" font-weight="bold">ordo-sessions getSession latency vs stored sessions</text>`,
    `<text x="${PAD.left}" y="40" fill="#555">${esc(`${results.machine.cpu}, ${results.machine.cores} cores; ${results.generatedAt}`)}</text>`,
  ];
  for (let i = 0; i <= 5; i++) {
    const value = (maxY / 5) * i;
    out.push(
      `<line x1="${PAD.left}" x2="${W - PAD.right}" y1="${y(value).toFixed(1)}" y2="${y(value).toFixed(1)}" stroke="#e5e5e5"/>`,
      `<text x="${PAD.left - 8}" y="${(y(value) + 4).toFixed(1)}" text-anchor="end">${trim(value)}</text>`,
    );
  }
  for (let decade = Math.ceil(minX); decade <= Math.floor(maxX); decade++) {
    const sessions = 10 ** decade;
    out.push(
      `<line x1="${x(sessions).toFixed(1)}" x2="${x(sessions).toFixed(1)}" y1="${PAD.top}" y2="${H - PAD.bottom}" stroke="#e5e5e5"/>`,
      `<text x="${x(sessions).toFixed(1)}" y="${H - PAD.bottom + 18}" text-anchor="middle">${label(sessions)}</text>`,
    );
  }
  out.push(
    `<line x1="${PAD.left}" x2="${W - PAD.right}" y1="${H - PAD.bottom}" y2="${H - PAD.bottom}" stroke="#333"/>`,
    `<line x1="${PAD.left}" x2="${PAD.left}" y1="${PAD.top}" y2="${H - PAD.bottom}" stroke="#333"/>`,
    `<text x="${(PAD.left + W - PAD.right) / 2}" y="${H - 18}" text-anchor="middle">stored sessions (log scale)</text>`,
    `<text transform="translate(18 ${(PAD.top + H - PAD.bottom) / 2}) rotate(-90)" text-anchor="middle">µs per getSession</text>`,
  );
  let legend = PAD.top + 10;
  for (const [store, points] of curves) {
    const color = COLORS[store] ?? '#555';
    for (const [field, dash] of [['p50Us', ''], ['p99Us', ' stroke-dasharray="6 4"']] as const) {
      const path = points.map((p, i) => `${i === 0 ? 'M' : 'L'}${x(p.sessions).toFixed(1)},${y(p[field]).toFixed(1)}`).join(' ');
      out.push(`<path d="${path}" fill="none" stroke="${color}" stroke-width="2"${dash}/>`);
      for (const p of points) {
        out.push(`<circle cx="${x(p.sessions).toFixed(1)}" cy="${y(p[field]).toFixed(1)}" r="3" fill="${color}"><title>${store} ${field === 'p50Us' ? 'p50' : 'p99'} at ${p.sessions}: ${p[field].toFixed(1)} µs</title></circle>`);
      }
      const lx = W - PAD.right + 16;
      out.push(
        `<line x1="${lx}" x2="${lx + 24}" y1="${legend}" y2="${legend}" stroke="${color}" stroke-width="2"${dash}/>`,
        `<text x="${lx + 30}" y="${legend + 4}">${store} ${field === 'p50Us' ? 'p50' : 'p99'}</text>`,
      );
      legend += 18;
    }
  }
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}

function niceCeil(value: number): number {
  const magnitude = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) if (step * magnitude >= value) return step * magnitude;
  return 10 * magnitude;
}

function trim(value: number): string {
  return Number.isInteger(value) ? String(value) : value.toFixed(1);
}

function label(sessions: number): string {
  return sessions >= 1e6 ? `${sessions / 1e6}M` : sessions >= 1e3 ? `${sessions / 1e3}k` : String(sessions);
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  const here = dirname(fileURLToPath(import.meta.url));
  const results = JSON.parse(readFileSync(join(here, 'results.json'), 'utf8')) as Results;
  writeFileSync(join(here, 'chart.svg'), renderChart(results));
  console.log('wrote bench/chart.svg');
}
