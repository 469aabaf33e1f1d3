// chromium.mjs - serves a directory on 127.0.0.1 and runs one page of it in Debian's
// headless Chromium (playwright-core): the page sets window.__result (a string; one that
// starts with "ERROR" is a failure). Used by the wasm tests and benchmarks:
//
//   node wasm/tests/js/chromium.mjs <dir> <page path+query> [timeout seconds]
//
// Prints the result; exits 1 on "ERROR", a page error or a timeout. Needs NODE_PATH to
// reach playwright-core (scripts/web-env.sh). CHROMIUM_JS_FLAGS, if set, is passed to V8 as
// --js-flags (e.g. --wasm-wide-arithmetic, which Chromium 156 keeps behind a flag).
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const { chromium } = require('playwright-core');

const [rootArg, pagePath = '/index.html', timeoutArg = '180'] = process.argv.slice(2);
const root = path.resolve(rootArg);
const types = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript',
  '.mjs': 'text/javascript',
  '.wasm': 'application/wasm',
  '.json': 'application/json',
};

const server = http.createServer((req, res) => {
  if (req.url === '/favicon.ico') {
    res.writeHead(204);
    res.end();
    return;
  }
  const file = path.join(root, decodeURIComponent(new URL(req.url, 'http://x').pathname));
  if (!file.startsWith(root) || !fs.existsSync(file) || fs.statSync(file).isDirectory()) {
    res.writeHead(404);
    res.end();
    return;
  }
  res.writeHead(200, {
    'content-type': types[path.extname(file)] || 'application/octet-stream',
    'cache-control': 'no-store',
  });
  fs.createReadStream(file).pipe(res);
});
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: [
    '--no-sandbox',
    '--headless',
    '--disable-gpu',
    '--disable-dev-shm-usage',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--no-first-run',
    ...(process.env.CHROMIUM_JS_FLAGS ? [`--js-flags=${process.env.CHROMIUM_JS_FLAGS}`] : []),
  ],
});
let failed = false;
try {
  const page = await browser.newPage();
  page.on('pageerror', (e) => {
    failed = true;
    console.error('[pageerror]', e.message);
  });
  page.on('console', (m) => {
    if (m.type() === 'error') console.error('[console]', m.text());
  });
  await page.goto(`http://127.0.0.1:${server.address().port}${pagePath}`);
  await page.waitForFunction(() => window.__result !== undefined, null, {
    timeout: Number(timeoutArg) * 1000,
  });
  const result = await page.evaluate(() => window.__result);
  console.log(result);
  if (String(result).startsWith('ERROR')) failed = true;
  if (process.env.SHOW_VERSION) console.error('chromium', browser.version());
} catch (e) {
  failed = true;
  console.error('ERROR', e.message);
} finally {
  await browser.close();
  server.close();
}
process.exit(failed ? 1 : 0);
