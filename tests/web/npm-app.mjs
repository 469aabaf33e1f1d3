// The Vite app of tests/npm-app (built by scripts/npm-test.sh against the packed npm package)
// in Chromium: it restores the funded PSD of tests/state/v1/wasm-psd.state, issues an
// indicium and shows its label; after a reload it continues from its sealed state in
// IndexedDB (openpsd/storage) and issues the next piece. The barcode is then verified in
// Node with the same tarball's CommonJS build (require('openpsd')) and its ES-import form.
//
//   node tests/web/npm-app.mjs --dist DIR --app DIR --state FILE --out DIR
import { createServer } from 'node:http';
import { readFile, writeFile, mkdir } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { extname, join, normalize } from 'node:path';
import { pathToFileURL } from 'node:url';
import { loadPlaywright, logger, parseArgs } from './harness.mjs';

const args = parseArgs();
for (const k of ['dist', 'app', 'state', 'out']) if (!args[k]) throw new Error(`--${k} missing`);
const { log, check } = logger('npm-app');
await mkdir(args.out, { recursive: true });

// The built app as static files, with the fixture at ./psd-state.bin.
const types = { '.html': 'text/html', '.js': 'text/javascript', '.wasm': 'application/wasm', '.css': 'text/css', '.svg': 'image/svg+xml' };
const server = createServer(async (req, res) => {
  const path = new URL(req.url, 'http://x').pathname;
  try {
    const body = path === '/psd-state.bin'
      ? await readFile(args.state)
      : await readFile(join(args.dist, normalize(path === '/' ? '/index.html' : path).replace(/^(\.\.[/\\])+/, '')));
    res.writeHead(200, { 'content-type': types[extname(path)] || (path === '/' ? 'text/html' : 'application/octet-stream') });
    res.end(body);
  } catch {
    res.writeHead(404).end();
  }
});
await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
const url = `http://127.0.0.1:${server.address().port}/`;

const { chromium } = loadPlaywright();
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const problems = [];
try {
  const page = await browser.newPage({ viewport: { width: 1024, height: 700 } });
  page.setDefaultTimeout(60_000);
  page.on('console', (m) => { if (m.type() === 'error') problems.push(`console: ${m.text()}`); });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('requestfailed', (r) => problems.push(`request failed: ${r.url()}`));
  page.on('response', (r) => { if (r.status() >= 400) problems.push(`HTTP ${r.status()}: ${r.url()}`); });

  log(`opening the built app at ${url}`);
  await page.goto(url);
  await page.waitForSelector('body[data-ready]');
  check(await page.getAttribute('body', 'data-ready') === '1', `the app loaded the wasm module and restored the PSD: ${await page.textContent('#device')}`);
  await page.click('#issue');
  await page.waitForSelector('#result[data-state]');
  check(await page.getAttribute('#result', 'data-state') === 'issued', `indicium issued and verified in the page: ${await page.textContent('#result')}`);
  const first = await page.getAttribute('#result', 'data-barcode');
  const pieces1 = Number(await page.getAttribute('#result', 'data-pieces'));
  check(await page.locator('#label svg').count() === 1, 'the DataMatrix label is on the page');
  await page.screenshot({ path: join(args.out, 'npm-app.png') });
  const publicKey = await page.getAttribute('#device', 'data-public-key');

  log('reload: the app continues from its sealed state in IndexedDB');
  await page.reload();
  await page.waitForSelector('body[data-ready]');
  check((await page.textContent('#device')).includes('from sealed storage'), 'restored from openpsd/storage after the reload');
  await page.fill('#postage', '1.10');
  await page.click('#issue');
  await page.waitForSelector('#result[data-state]');
  check(await page.getAttribute('#result', 'data-state') === 'issued', 'the second piece is issued');
  check(Number(await page.getAttribute('#result', 'data-pieces')) === pieces1 + 1, `the piece count moved on from the sealed state (${pieces1 + 1})`);

  await page.fill('#postage', '0.00');
  await page.click('#issue');
  await page.waitForFunction(() => document.querySelector('#result')?.dataset.state === 'refused');
  check(true, `a bad postage is refused with the package's error: ${await page.textContent('#result')}`);

  // The other target of the same tarball, in Node: CommonJS and ES import.
  const require = createRequire(join(args.app, 'package.json'));
  const cjs = require('openpsd');
  const esm = await import(pathToFileURL(require.resolve('openpsd')).href);
  const barcode = Buffer.from(first, 'hex');
  const v = cjs.verifyIndicium(barcode, publicKey);
  check(v.valid && v.fields.pieces === pieces1, `require('openpsd') (nodejs build) verifies the page's indicium: piece ${v.fields.pieces}, ${v.fields.postage}`);
  check(esm.verifyIndicium(barcode, publicKey).valid, "import('openpsd') in Node gets the same build");
  barcode[20] ^= 1;
  check(!cjs.verifyIndicium(barcode, publicKey).valid, 'a changed byte does not verify');
  await writeFile(join(args.out, 'npm-app.json'), JSON.stringify({ publicKey, barcode: first }, null, 2));
  check(problems.length === 0, `no console errors, failed requests or HTTP errors${problems.length ? `: ${problems.join('; ')}` : ''}`);
} finally {
  await browser.close();
  server.close();
}
log('passed');
