// The package's Node.js entry (the "node" condition of its exports). Node.js 18 has WebCrypto as a module but not
// as a global (a global from 19 on), so it is put where every other runtime has it; then everything is the same.
import { webcrypto } from 'node:crypto';

const global = globalThis as { crypto?: unknown };
global.crypto ??= webcrypto;

export * from './index.js';
