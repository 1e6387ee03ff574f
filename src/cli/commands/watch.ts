/** `watch`: prints change notifications (never data) until Ctrl-C. */
import { EXIT, usageError, withSessions, type Command } from '../context.ts';
import { printable } from '../format.ts';
import { IDENTIFIER_PATTERN, InvalidSessionKeyError } from '../lib.ts';

export const watch: Command = {
  name: 'watch',
  summary: 'print session changes as they happen',
  usage: 'watch [broker] [--json]',
  options: { json: { type: 'boolean' } },
  needsStore: true,
  help: `Prints a line for every change to a session of the namespace (or of one broker), made by any
process sharing the store: the time, what happened (set, refresh, delete, expire), broker and key.
Never any session data. Runs until Ctrl-C (exit code 130).

Options:
  --json   one JSON object per line: { at, kind, broker, key }

Examples:
  ordo-sessions watch
  ordo-sessions watch kite --store redis://127.0.0.1:6379 --json`,
  async run(context, positionals, values) {
    const broker = positionals[0];
    if (positionals.length > 1) throw usageError('watch takes at most one broker');
    if (broker !== undefined && !IDENTIFIER_PATTERN.test(broker)) {
      throw new InvalidSessionKeyError('broker id must be 1 to 64 characters of a-z, 0-9, "_" or "-", starting with a letter');
    }
    const json = values['json'] === true;
    return withSessions(context, async (sessions) => {
      const stop = new Promise<void>((resolve) => process.once('SIGINT', resolve));
      const unwatch = await sessions.watch(
        (change) => {
          const at = new Date().toISOString();
          if (json) context.out(JSON.stringify({ at, ...change }));
          else context.out(`${context.style.dim(at)} ${change.kind.padEnd(7)} ${printable(change.broker)}/${printable(change.key)}`);
        },
        broker === undefined ? {} : { broker },
      );
      context.err(`ordo-sessions: watching ${broker === undefined ? 'every broker' : `broker ${broker}`} in namespace ${context.namespace}; Ctrl-C stops`);
      await stop;
      await unwatch();
      context.err('ordo-sessions: stopped');
      return EXIT.interrupted;
    });
  },
};
