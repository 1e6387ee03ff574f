/** Every form in which a secret could show up in bytes we inspect: plain, hex and base64 (at each alignment). */
export function leakForms(secret: string): string[] {
  const bytes = Buffer.from(secret, 'utf8');
  const forms = new Set<string>([secret, bytes.toString('hex'), bytes.toString('hex').toUpperCase()]);
  for (let shift = 0; shift < 3; shift++) {
    // base64 of the secret preceded by `shift` bytes: drop the characters those bytes touch.
    const encoded = Buffer.concat([Buffer.alloc(shift), bytes]).toString('base64');
    const start = Math.ceil((shift * 4) / 3) + (shift === 0 ? 0 : 1);
    const core = encoded.slice(start, encoded.length - 4);
    if (core.length >= 12) {
      forms.add(core);
      forms.add(core.replaceAll('+', '-').replaceAll('/', '_'));
    }
  }
  return [...forms];
}

/** The forms of `secret` found in `haystack` (bytes or text). */
export function findLeaks(haystack: Uint8Array | string, secret: string): string[] {
  const text = typeof haystack === 'string' ? haystack : Buffer.from(haystack).toString('latin1');
  const utf8 = typeof haystack === 'string' ? haystack : Buffer.from(haystack).toString('utf8');
  return leakForms(secret).filter((form) => text.includes(form) || utf8.includes(form));
}
