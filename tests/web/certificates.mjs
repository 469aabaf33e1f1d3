// The Certificates tab's journey (issue 15 item 9) in Debian's Chromium driven by
// playwright-core: a new PSD in the page, refilled; the tab loads the second wasm module and
// the meter's rate tables (the one in effect ticked); a postmark key certified by the demo's
// CA through the meter (the route `openpsd cert request` uses), the fee shown before
// confirming; a file postmarked (hashed in the page, never uploaded: the test checks no
// request carries its bytes); the .tst, the postmark certificate and ca.pem downloaded and
// checked with stock `openssl ts -verify` (and a changed file refused by it); the same
// verified in the page; the key revoked through the meter and the CA, after which a postmark
// is refused (9A45). Run by scripts/web-test.sh after the mailer's journey.
//
//   node tests/web/certificates.mjs --url http://127.0.0.1:PORT/ --out target/web-test
//
// Writes OUT/cert/* (document, .tst, PEMs, certificates.json); exits non-zero on a failure.

import { createRequire } from 'node:module';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith('--') ? [...acc, [a.slice(2), all[i + 1]]] : acc), []),
);
const URL = args.url || 'http://127.0.0.1:8080/';
const OUT = join(args.out || 'target/web-test', 'cert');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
mkdirSync(OUT, { recursive: true });

function loadPlaywright() {
  const require = createRequire(import.meta.url);
  const tools = process.env.WEB_TOOLS || join(process.env.HOME || '', '.cache/openpsd/web-tools');
  for (const name of ['playwright-core', join(tools, 'js/node_modules/playwright-core')]) {
    try {
      return require(name);
    } catch {
      // next
    }
  }
  throw new Error('playwright-core not found: run bash scripts/install-web-toolchain.sh');
}

const t0 = Date.now();
const log = (msg) => console.log(`[certificates ${((Date.now() - t0) / 1000).toFixed(1).padStart(5)}s] ${msg}`);
function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
  log(`ok: ${what}`);
}

/** `openssl ts -verify`: [passed, output]. */
function tsVerify(data, tst, cert) {
  try {
    const out = execFileSync('openssl', ['ts', '-verify', '-data', data, '-in', tst, '-token_in',
      '-CAfile', join(OUT, 'ca.pem'), '-untrusted', cert], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    return [/Verification: OK/.test(out), out];
  } catch (e) {
    return [false, `${e.stdout || ''}${e.stderr || ''}`];
  }
}

const { chromium } = loadPlaywright();
const profile = mkdtempSync(join(tmpdir(), 'openpsd-certificates-'));
let context;
const consoleLines = [];

async function main() {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    acceptDownloads: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    viewport: { width: 1100, height: 1400 },
  });
  const page = context.pages()[0] || await context.newPage();
  page.on('console', (m) => consoleLines.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => consoleLines.push(`pageerror: ${e.message}`));
  page.setDefaultTimeout(60_000);
  // The document's bytes must never leave the page: every request body is searched for them.
  const marker = `openpsd postmark test document ${Date.now()} ${Math.random()}`;
  const doc = Buffer.from(`${marker}\nNothing of this file is uploaded.\n`);
  const leaks = [];
  page.on('request', (r) => {
    const body = r.postDataBuffer();
    if (body && (body.includes(doc) || body.includes(Buffer.from(marker)))) leaks.push(r.url());
  });

  const settled = async () => {
    await page.waitForFunction(() => {
      const s = document.getElementById('status').dataset.state;
      return s !== 'busy' && s !== 'loading';
    });
  };
  const text = (sel) => page.locator(sel).innerText();
  const notice = async () => ({
    kind: await page.locator('#notice').getAttribute('data-kind'),
    text: await text('#notice'),
    hidden: await page.locator('#notice').isHidden(),
  });
  const confirmFee = async (pattern, what) => {
    await page.locator('#cert-confirm').waitFor({ state: 'visible' });
    const t = await text('#cert-confirm-text');
    check(pattern.test(t), `${what}: the fee is shown before confirming ("${t.slice(0, 110)}…")`);
    await page.click('#cert-confirm-yes');
    await settled();
  };

  // -- a device in the page, refilled (the postmark's clock window opens at that contact)
  await page.goto(URL);
  await settled();
  await page.fill('#create-origin', '10115');
  await page.click('#create-button');
  await settled();
  const deviceId = await text('#dev-id');
  check(/^[0-9A-F]{16}$/.test(deviceId), `device ${deviceId} created`);
  await page.fill('#refill-amount', '25.00');
  await page.click('#refill-button');
  await settled();
  check((await text('#reg-dr')) === '25.00', 'refilled 25.00');

  // -- the tab: the second module, the rate tables
  check(await page.locator('#certificates').isVisible(), 'the Certificates section is shown');
  const wasmBefore = await page.evaluate(() => performance.getEntriesByType('resource').filter((e) => /cert\/openpsd/.test(e.name)).length);
  check(wasmBefore === 0, 'the certificate meter module is not loaded before the tab is opened');
  await page.click('#cert-open');
  await settled();
  const moduleText = await text('#cert-module');
  check(/module loaded/.test(moduleText), `second module: ${moduleText}`);
  const rates = await page.locator('#cert-rates tr').evaluateAll((rows) => rows.map((r) => ({
    version: r.dataset.version, inEffect: r.dataset.inEffect, cells: [...r.cells].map((c) => c.textContent),
  })));
  check(rates.some((r) => r.inEffect === 'true' && r.cells[0] === '✓' && /postmark 0\.10/.test(r.cells[3]) && /certificate 5\.00/.test(r.cells[3])),
    `rate table in effect ticked: ${JSON.stringify(rates)}`);

  // -- a postmark before any key: refused with the PSD's word
  await page.setInputFiles('#postmark-file', { name: 'contract.txt', mimeType: 'text/plain', buffer: doc });
  await page.click('#postmark-button');
  await confirmFee(/Fee: 0\.10/, 'postmark without a key');
  let n = await notice();
  check(n.kind === 'error' && /9A43/.test(n.text), `postmark without a key refused: ${n.text.replace(/\n/g, ' ')}`);
  check((await text('#reg-dr')) === '25.00', 'nothing charged for the refusal');

  // -- a postmark key certified by the CA (GENERATE KEY, POST /v1/certificates, INSTALL)
  await page.click('#cert-request');
  await confirmFee(/Fee at install: 5\.00/, 'certificate request');
  n = await notice();
  check(n.kind === 'ok' && /Postmark certificate .* installed \(fee 5\.00\)/.test(n.text), `certificate: ${n.text.split('\n')[0]}`);
  for (const s of await page.locator('#cert-steps li').allInnerTexts()) log(`  step: ${s}`);
  const slot = await page.locator('#cert-slots tr[data-state="active"]').first().getAttribute('data-slot');
  check(slot !== null, `slot ${slot} holds an active postmark key`);
  check((await text('#reg-dr')) === '20.00', 'certificate fee 5.00 paid from DR');

  // -- postmark the file, download the token, the certificate and the CA's
  await page.setInputFiles('#postmark-file', { name: 'contract.txt', mimeType: 'text/plain', buffer: doc });
  await page.click('#postmark-button');
  await confirmFee(/contract\.txt.*Fee: 0\.10/, 'postmark');
  n = await notice();
  check(n.kind === 'ok' && /Postmark 1 issued for 0\.10/.test(n.text), `postmark: ${n.text.split('\n')[0]}`);
  check((await text('#reg-dr')) === '19.90', 'postmark fee 0.10 paid from DR');
  const ms = Number(await page.locator('#postmark-result').getAttribute('data-ms'));
  const save = async (sel, name) => {
    const [d] = await Promise.all([page.waitForEvent('download'), page.click(sel)]);
    const path = join(OUT, name);
    await d.saveAs(path);
    return path;
  };
  const tst = await save('#postmark-tst', 'contract.txt.tst');
  const certPem = await save('#postmark-cert', 'contract.txt.postmark.pem');
  await save('#postmark-ca', 'ca.pem');
  const docPath = join(OUT, 'contract.txt');
  writeFileSync(docPath, doc);
  check(readFileSync(tst).length > 400, `token downloaded (${readFileSync(tst).length} bytes)`);
  check(await page.locator('#postmark-code svg').count() === 1, 'DataMatrix label of the compact postmark shown');

  // -- stock OpenSSL
  const [ok, out] = tsVerify(docPath, tst, certPem);
  check(ok, `openssl ts -verify: ${out.trim().split('\n').pop()}`);
  const changed = join(OUT, 'contract-changed.txt');
  writeFileSync(changed, Buffer.concat([doc, Buffer.from('x')]));
  const [bad, badOut] = tsVerify(changed, tst, certPem);
  check(!bad && /message imprint mismatch/.test(badOut), 'openssl ts -verify refuses a changed file (message imprint mismatch)');

  // -- verify in the page
  await page.setInputFiles('#pmverify-file', { name: 'contract.txt', mimeType: 'text/plain', buffer: doc });
  await page.setInputFiles('#pmverify-token', tst);
  await page.click('#pmverify-button');
  await settled();
  check((await page.locator('#pmverify-result').getAttribute('data-valid')) === 'true', `in the page: ${await text('#pmverify-result')}`);
  await page.setInputFiles('#pmverify-file', changed);
  await page.click('#pmverify-button');
  await settled();
  const refusedText = await text('#pmverify-result');
  check((await page.locator('#pmverify-result').getAttribute('data-valid')) === 'false' && /imprint/.test(refusedText),
    `in the page, a changed file: ${refusedText}`);

  // -- revoke the key through the meter and the CA; a postmark is refused after it
  await page.click(`#cert-slots button[data-slot="${slot}"]`);
  await confirmFee(/Revoke the postmark key/, 'revocation');
  n = await notice();
  check(n.kind === 'ok' && /revoked/.test(n.text), `revocation: ${n.text.split('\n')[0]}`);
  check((await page.locator(`#cert-slots tr[data-slot="${slot}"]`).getAttribute('data-state')) === 'retired', 'the slot is retired');
  await page.setInputFiles('#postmark-file', { name: 'contract.txt', mimeType: 'text/plain', buffer: doc });
  await page.click('#postmark-button');
  await confirmFee(/Fee: 0\.10/, 'postmark after the revocation');
  n = await notice();
  check(n.kind === 'error' && /9A45/.test(n.text), `postmark after the revocation refused: ${n.text.replace(/\n/g, ' ')}`);

  // -- reload: the page's PSD (main module) carries the certificate meter's state
  await page.reload();
  await settled();
  check((await text('#dev-id')) === deviceId, 'after a reload the same device');
  await page.click('#cert-open');
  await settled();
  check((await page.locator(`#cert-slots tr[data-slot="${slot}"]`).getAttribute('data-state')) === 'retired', 'after a reload the slot is still retired');

  check(leaks.length === 0, `the document was never uploaded (${leaks.length} requests carried it)`);
  writeFileSync(join(OUT, 'certificates.json'), JSON.stringify({ deviceId, postmarkMs: ms, module: moduleText }, null, 2));
  log(`postmark in Chromium: ${ms.toFixed(2)} ms (ISSUE POSTMARK + expansion + GET DATA + READ REGISTERS in the second module)`);
}

try {
  await main();
  await context.close();
  rmSync(profile, { recursive: true, force: true });
} catch (e) {
  console.error(`[certificates] FAILED: ${e.stack || e}`);
  if (consoleLines.length) console.error('[certificates] page console:\n  ' + consoleLines.join('\n  '));
  if (context) {
    try {
      const page = context.pages()[0];
      if (page) await page.screenshot({ path: join(OUT, 'failure.png'), fullPage: true });
    } catch {
      // ignore
    }
    await context.close().catch(() => {});
  }
  rmSync(profile, { recursive: true, force: true });
  process.exit(1);
}
