// The one Node.js module the Node.js entry uses (the package has no dependency on Node.js's own types).
declare module 'node:crypto' {
  export const webcrypto: Crypto;
}
