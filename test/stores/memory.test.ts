import { MemoryStore } from '../../src/stores/memory.ts';
import { storeConformanceSuite } from '../store-conformance.ts';

storeConformanceSuite('MemoryStore', async () => new MemoryStore());
