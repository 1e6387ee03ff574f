/**
 * The benchmark session (~600 bytes of JSON) and the "floor": what a careful user would write
 * by hand with node:crypto and JSON, with no library in between.
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';

const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';

function token(length: number): string {
  const bytes = randomBytes(length);
  let text = '';
  for (const byte of bytes) text += ALPHABET[byte & 63];
  return text;
}

const ACCESS_BASE = token(352); // + 8 = 360 chars: with the rest, ~600 bytes of JSON
const REFRESH_BASE = token(112); // + 8 = 120 chars
const EXPIRES_AT = new Date(Date.UTC(2026, 11, 4, 0, 30)).toISOString();

/** The session written by call `i`: the tokens change on every call, so every write changes the row. */
export interface BenchSession {
  accessToken: string;
  refreshToken: string;
  expiresAt: string;
  accountId: string;
  broker: string;
  [key: string]: string;
}

export function session(i: number): BenchSession {
  const tag = (i >>> 0).toString(16).padStart(8, '0');
  return {
    accessToken: ACCESS_BASE + tag,
    refreshToken: REFRESH_BASE + tag,
    expiresAt: EXPIRES_AT,
    accountId: `XY${(i % 100_000).toString().padStart(6, '0')}`,
    broker: 'fyers',
  };
}

/** Its size as JSON, for the report. */
export const SESSION_JSON_BYTES = Buffer.byteLength(JSON.stringify(session(0)));

/** AES-256-GCM by hand: a fresh `randomBytes(12)` nonce per seal, nonce | ciphertext | tag. */
export class BareCrypto {
  readonly #key = randomBytes(32);

  seal(plaintext: Buffer, aad?: Buffer): Buffer {
    const iv = randomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', this.#key, iv);
    if (aad !== undefined) cipher.setAAD(aad);
    const body = cipher.update(plaintext);
    const final = cipher.final();
    return Buffer.concat([iv, body, final, cipher.getAuthTag()]);
  }

  open(sealed: Buffer, aad?: Buffer): Buffer {
    const decipher = createDecipheriv('aes-256-gcm', this.#key, sealed.subarray(0, 12));
    decipher.setAuthTag(sealed.subarray(sealed.length - 16));
    if (aad !== undefined) decipher.setAAD(aad);
    const body = decipher.update(sealed.subarray(12, sealed.length - 16));
    const final = decipher.final();
    return final.length === 0 ? body : Buffer.concat([body, final]);
  }

  /** JSON, then seal. */
  sealJson(value: unknown): Buffer {
    return this.seal(Buffer.from(JSON.stringify(value), 'utf8'));
  }

  /** Open, then JSON. */
  openJson(sealed: Buffer): unknown {
    return JSON.parse(this.open(sealed).toString('utf8'));
  }
}
