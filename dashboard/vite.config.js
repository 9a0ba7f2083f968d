// The dashboard's build: `node_modules/.bin/vite build dashboard` from the repository root (or `npm run
// build:dashboard`). The output in dist/ is committed, so the Rust node can embed it without Node.js; that only
// works if a build is a pure function of the sources, hence fixed file-name patterns (content hashes, no
// timestamps) and no source maps.
import { fileURLToPath } from 'node:url';
import { svelte } from '@sveltejs/vite-plugin-svelte';
import { defineConfig } from 'vite';

const root = fileURLToPath(new URL('.', import.meta.url));

export default defineConfig({
  root,
  // served by the core node and the edge Worker at /dashboard/, same origin as the API
  base: '/dashboard/',
  // nothing to copy verbatim: every file the page needs is imported, so it gets a content hash
  publicDir: false,
  plugins: [
    svelte({
      // no svelte.config.js: everything the compiler needs is here
      configFile: false,
      compilerOptions: { runes: true },
      // a warning from the svelte compiler (accessibility ones included) fails the build instead of scrolling by
      onwarn(warning) {
        const where = warning.filename ? ` (${warning.filename}:${warning.start?.line ?? '?'})` : '';
        throw new Error(`svelte warning ${warning.code}${where}: ${warning.message}`);
      },
    }),
  ],
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    target: 'es2020',
    sourcemap: false,
    // the polyfill is for browsers older than the es2020 target
    modulePreload: { polyfill: false },
    // every asset is a file (no data: URLs), which keeps the page simple to serve under its CSP
    assetsInlineLimit: 0,
    // gzip sizes are measured by the budget test instead; skipping this keeps the build quick
    reportCompressedSize: false,
    rollupOptions: {
      output: {
        entryFileNames: 'assets/[name]-[hash].js',
        chunkFileNames: 'assets/[name]-[hash].js',
        assetFileNames: 'assets/[name]-[hash][extname]',
      },
    },
  },
});
