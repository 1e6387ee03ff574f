/** `rotate`: reseal every session under the primary key, with progress, resumable after Ctrl-C. */
import cliProgress from 'cli-progress';
import { RotationAbortedError, type RotationResult, type SessionManager } from '../lib.ts';
import { CliError, EXIT, usageError, withSessions, type Command, type Context } from '../context.ts';

/** How often piped progress is printed, at most. */
const LINE_INTERVAL_MS = 1000;

export const rotate: Command = {
  name: 'rotate',
  summary: 'reseal every session under the primary key',
  usage: 'rotate [--batch-size N]',
  options: { 'batch-size': { type: 'string' } },
  needsStore: true,
  help: `Reseals every session of the namespace that is not yet under the primary key (the first key
of ORDO_SESSION_KEYS). Shows a progress bar on a terminal and plain lines when piped. Ctrl-C
stops cleanly (exit code 130): every session stays readable, and running it again resumes.
Keep the old keys configured until it has finished.

Options:
  --batch-size N   sessions per batch (default: the library's)

Examples:
  export ORDO_SESSION_KEYS="$(ordo-sessions keygen --append)" && ordo-sessions rotate
  ordo-sessions rotate --store postgres://app@db/app?schema=auth | tee rotate.log`,
  async run(context, positionals, values) {
    if (positionals.length > 0) throw usageError('rotate takes no arguments');
    const batchSize = batchSizeOf(values['batch-size']);
    return withSessions(context, (sessions) => runRotation(context, sessions, batchSize), { yieldBetweenPages: true });
  },
};

function batchSizeOf(value: string | boolean | undefined): number | undefined {
  if (value === undefined) return undefined;
  const n = typeof value === 'string' && /^\d{1,7}$/.test(value) ? Number(value) : NaN;
  if (!Number.isSafeInteger(n) || n < 1) throw usageError('--batch-size must be a positive integer');
  return n;
}

async function runRotation(context: Context, sessions: SessionManager, batchSize: number | undefined): Promise<number> {
  const onTerminal = context.stdout.isTTY === true;
  // Header-only counts, cheap: the bar gets a length.
  const total = onTerminal ? Object.values(await sessions.keyUsage()).reduce((a, b) => a + b, 0) : 0;
  const bar = onTerminal
    ? new cliProgress.SingleBar(
        { format: ' {bar} {value}/{total} scanned | {rotated} rotated | {skipped} skipped', hideCursor: true, clearOnComplete: false, stream: process.stdout },
        cliProgress.Presets.shades_classic,
      )
    : undefined;
  bar?.start(Math.max(total, 1), 0, { rotated: 0, skipped: 0 });
  let lastLine = 0;
  let last: RotationResult = { scanned: 0, rotated: 0, skipped: 0, unreadable: 0 };
  const onProgress = (progress: RotationResult): void => {
    last = progress;
    if (bar !== undefined) {
      if (progress.scanned > bar.getTotal()) bar.setTotal(progress.scanned);
      bar.update(progress.scanned, { rotated: progress.rotated, skipped: progress.skipped });
    } else if (Date.now() - lastLine >= LINE_INTERVAL_MS) {
      lastLine = Date.now();
      context.out(`progress: ${describe(progress)}`);
    }
  };

  const controller = new AbortController();
  const onSigint = (): void => controller.abort();
  process.once('SIGINT', onSigint);
  try {
    const options = { onProgress, signal: controller.signal, ...(batchSize === undefined ? {} : { batchSize }) };
    const result = await sessions.rotateKeys(options);
    bar?.update(result.scanned, { rotated: result.rotated, skipped: result.skipped });
    bar?.stop();
    const primary = context.keyring().primaryKeyId;
    if (result.unreadable > 0) {
      context.out(`${context.style.warn('done')}: ${describe(result)}; primary key ${primary}`);
      return EXIT.failure; // finished, but some records stay under a key nobody holds: a script must notice
    }
    context.out(`${context.style.ok('done')}: ${describe(result)}; primary key ${primary}`);
    return EXIT.ok;
  } catch (error) {
    bar?.stop();
    if (error instanceof RotationAbortedError || controller.signal.aborted) {
      const counts = error instanceof RotationAbortedError ? error.result : last;
      throw new CliError('ERR_INTERRUPTED', `rotation interrupted after ${describe(counts)}; every session is still readable, run rotate again to resume`, EXIT.interrupted);
    }
    throw error;
  } finally {
    process.removeListener('SIGINT', onSigint);
  }
}

function describe(counts: RotationResult): string {
  const unreadable = counts.unreadable === 0 ? '' : `, ${counts.unreadable} unreadable (no key opens them)`;
  return `${counts.scanned} scanned, ${counts.rotated} rotated, ${counts.skipped} skipped${unreadable}`;
}
