// Serves the built dashboard (dist/) at /dashboard/ under the node's Content-Security-Policy and proxies every
// other path (/api, /sse, /t, ...) to a running node, so a new build can be tried against a real API without
// recompiling the node that embeds dist/. Same origin for both, as in production, so the session cookie works.
//
//   node dashboard/preview.mjs http://127.0.0.1:3030 [port]    then open http://127.0.0.1:4173/dashboard/

import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const upstream = process.argv[2];
const port = Number(process.argv[3] ?? 4173);
if (!upstream) {
  console.error('usage: node dashboard/preview.mjs <node URL, e.g. http://127.0.0.1:3030> [port]');
  process.exit(2);
}

const dist = fileURLToPath(new URL('./dist/', import.meta.url));
// the policy the core node and the edge Worker send with the dashboard, read from where it is defined
// (core/tracker-protocol/src/dashboard.rs), so a build that breaks it fails here too
const CSP = (() => {
  const source = fs.readFileSync(new URL('../core/tracker-protocol/src/dashboard.rs', import.meta.url), 'utf8');
  const literal = source.match(/pub const CSP: &str = "([^"]+)"/)[1];
  return literal.replace(/\\\n\s*/g, '');
})();
const TYPES = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript', '.css': 'text/css', '.svg': 'image/svg+xml' };

function serveFile(pathname, res) {
  const relative = pathname.replace(/^\/dashboard\/?/, '') || 'index.html';
  const file = path.join(dist, relative);
  if (!file.startsWith(dist) || !fs.existsSync(file) || !fs.statSync(file).isFile()) {
    res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
    return;
  }
  res.writeHead(200, {
    'content-type': TYPES[path.extname(file)] ?? 'application/octet-stream',
    'content-security-policy': CSP,
    'x-content-type-options': 'nosniff',
    'cache-control': 'no-cache',
  });
  fs.createReadStream(file).pipe(res);
}

function proxy(req, res) {
  const target = new URL(req.url, upstream);
  const forward = http.request(target, { method: req.method, headers: { ...req.headers, host: target.host } }, (answer) => {
    res.writeHead(answer.statusCode ?? 502, answer.headers);
    answer.pipe(res);
  });
  forward.on('error', (error) => res.writeHead(502, { 'content-type': 'text/plain' }).end(`${error.message}\n`));
  req.pipe(forward);
}

http
  .createServer((req, res) => {
    const { pathname } = new URL(req.url ?? '/', 'http://preview');
    if (pathname === '/dashboard') res.writeHead(301, { location: '/dashboard/' }).end();
    else if (pathname.startsWith('/dashboard/')) serveFile(pathname, res);
    else proxy(req, res);
  })
  .listen(port, '127.0.0.1', () => console.log(`http://127.0.0.1:${port}/dashboard/ (API: ${upstream})`));
