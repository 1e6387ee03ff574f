import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll } from 'vitest';
import { SqliteStore } from '../../src/stores/sqlite.ts';
import { storeConformanceSuite } from '../store-conformance.ts';

const dir = mkdtempSync(join(tmpdir(), 'ordo-sqlite-conformance-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

storeConformanceSuite('SqliteStore (file)', async () => new SqliteStore({ path: join(dir, 'sessions.db') }));
storeConformanceSuite('SqliteStore (:memory:)', async () => new SqliteStore({ path: ':memory:' }));
