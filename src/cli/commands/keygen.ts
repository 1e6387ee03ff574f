/** `keygen`: a new key in the config format, or a whole new ORDO_SESSION_KEYS value with it first. */
import { readFileSync } from 'node:fs';
import { Keyring } from '../lib.ts';
import { EXIT, type Command } from '../context.ts';

export const keygen: Command = {
  name: 'keygen',
  summary: 'print a new key (id:base64)',
  usage: 'keygen [--id ID] [--append]',
  options: { id: { type: 'string' }, append: { type: 'boolean' } },
  needsStore: false,
  help: `Prints a new random 32-byte key in the config format, id:base64.
With --append, prints a whole new ORDO_SESSION_KEYS value: the new key first (the new primary),
then the keys configured now (ORDO_SESSION_KEYS, or the file ORDO_SESSION_KEYS_FILE), so that
sessions sealed under the old keys stay readable until \`rotate\` has resealed them.

Options:
  --id ID     the key id (1 to 32 of A-Z a-z 0-9 _ -); default k<yyyymmdd>-<4 hex>
  --append    print new,current instead of the new key alone

Examples:
  ordo-sessions keygen
  ordo-sessions keygen --id prod2
  export ORDO_SESSION_KEYS="$(ordo-sessions keygen --append)"`,
  run(context, _positionals, values) {
    const id = values['id'];
    const key = Keyring.generateKey(typeof id === 'string' ? id : undefined);
    if (values['append'] !== true) {
      context.out(key);
      return Promise.resolve(EXIT.ok);
    }
    const current = currentConfig(context.env);
    const combined = current === undefined ? key : `${key},${current}`;
    Keyring.parse(combined); // refuses a duplicate id or a malformed current value, naming no key
    if (current === undefined) context.err('ordo-sessions: no keys configured yet; printing the new key alone');
    context.out(combined);
    return Promise.resolve(EXIT.ok);
  },
};

/** The current key configuration as one comma-separated line, or `undefined` when there is none. */
function currentConfig(env: Readonly<Record<string, string | undefined>>): string | undefined {
  const inline = env['ORDO_SESSION_KEYS'];
  const file = env['ORDO_SESSION_KEYS_FILE'];
  if (inline) {
    if (file) Keyring.fromEnv(env); // throws: both set
    return joinEntries(inline);
  }
  if (file) {
    Keyring.fromFile(file); // the same checks (mode, format) the library applies
    return joinEntries(readFileSync(file, 'utf8'));
  }
  return undefined;
}

function joinEntries(config: string): string {
  return config
    .split(/[,\n]/)
    .map((part) => part.trim())
    .filter((part) => part.length > 0)
    .join(',');
}
