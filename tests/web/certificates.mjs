// The Certificates tab's journey (issue 15 item 9) in Debian's Chromium driven by
// playwright-core: a new PSD in the page, refilled; the tab loads the second wasm module and
// the meter's rate tables (the one in effect ticked); a postmark key certified by the demo's
// CA through the meter (the route `openpsd cert request` uses), the fee shown before
// confirming; a file postmarked (hashed in the page, never uploaded: the test checks no
// request carries its bytes); the .tst, the postmark certificate and ca.pem downloaded and
// checked with stock `openssl ts -verify` (and a changed file refused by it); the same
// verified in the page; the key revoked through the meter and the CA, after which a postmark
// is refused (9A45). Then a new key, and a postmark whose output is lost after the PSD
// charged it (the page's output step made to fail once): the page keeps its transaction ID,
// and after a reload finishes it with the same ID, the same token bytes, charged once. Last,
// the CA's operator revokes that key's certificate (mutual TLS with the demo's operator
// certificate): the page fetches the order before the next refill, applies it (REVOKE KEY),
// posts the confirmation, and the refill completes; the meter then lists no pending order
// (it asks the CA). Run by scripts/web-test.sh after the mailer's journey.
//
//   node tests/web/certificates.mjs --url http://127.0.0.1:PORT/ --out target/web-test \
//     --ca https://127.0.0.1:CAPORT --pki DATA/pki
//
// Writes OUT/cert/* (document, .tst, PEMs, certificates.json); exits non-zero on a failure.

import { parseArgs, loadPlaywright, logger } from './harness.mjs';
import { execFileSync } from 'node:child_process';
import https from 'node:https';
import { mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const args = parseArgs();
const URL = args.url || 'http://127.0.0.1:8080/';
const OUT = join(args.out || 'target/web-test', 'cert');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const CA_URL = args.ca;
const VENDOR_URL = args.vendor;
if (!VENDOR_URL) throw new Error('--vendor URL is needed (the vendor publishes a newer rate table)');
const PKI = args.pki;
if (!CA_URL || !PKI) throw new Error('--ca URL and --pki DIR are needed (the CA operator revokes a certificate)');
mkdirSync(OUT, { recursive: true });


const { log, check } = logger('certificates');

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

/** The CA's operator revokes a certificate (`POST /v1/certificates/{serial}/revoke`, mutual TLS). */
function operatorRevoke(serial, reason) {
  return operatorPost(CA_URL, `/v1/certificates/${serial}/revoke`, { reason });
}

/** An operator's POST to a back-office service (mutual TLS with the demo's operator certificate). */
function operatorPost(base, path, json) {
  const body = JSON.stringify(json);
  const u = new globalThis.URL(path, base);
  return new Promise((resolve, reject) => {
    const req = https.request({
      hostname: u.hostname, port: u.port, path: u.pathname, method: 'POST',
      cert: readFileSync(join(PKI, 'operator.crt')), key: readFileSync(join(PKI, 'operator.key')),
      ca: readFileSync(join(PKI, 'ca.crt')), minVersion: 'TLSv1.3',
      headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
    }, (resp) => {
      let text = '';
      resp.on('data', (c) => { text += c; });
      resp.on('end', () => (resp.statusCode === 200 || resp.statusCode === 201 ? resolve(JSON.parse(text)) : reject(new Error(`${path}: HTTP ${resp.statusCode} ${text}`))));
    });
    req.on('error', reject);
    req.end(body);
  });
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

  // -- a new postmark key (the slot above retired)
  await page.click('#cert-request');
  await confirmFee(/Fee at install: 5\.00/, 'second certificate request');
  n = await notice();
  const serialB = (/Postmark certificate (\S+) installed/.exec(n.text) || [])[1];
  check(n.kind === 'ok' && !!serialB, `second certificate ${serialB}: ${n.text.split('\n')[0]}`);
  const slotB = await page.locator('#cert-slots tr[data-state="active"]').first().getAttribute('data-slot');
  check((await text('#reg-dr')) === '14.90', 'certificate fee 5.00 paid from DR (14.90)');

  // -- a postmark charged whose output is lost (the page's output step fails once after the
  //    PSD committed and the page sealed it): kept, finished after a reload, charged once
  const doc2 = Buffer.from(`${marker}\nA second document, its postmark interrupted.\n`);
  await page.evaluate(() => {
    const real = URL.createObjectURL;
    URL.createObjectURL = (blob) => {
      URL.createObjectURL = real;
      window.lostToken = blob.arrayBuffer().then((b) => Array.from(new Uint8Array(b)));
      throw new Error('test: the output was lost after the charge');
    };
  });
  await page.setInputFiles('#postmark-file', { name: 'second.txt', mimeType: 'text/plain', buffer: doc2 });
  await page.click('#postmark-button');
  await confirmFee(/second\.txt.*Fee: 0\.10/, 'postmark to be interrupted');
  n = await notice();
  check(n.kind === 'error' && /lost after the charge/.test(n.text) && /is paid but its token was not shown/.test(n.text),
    `interrupted postmark reported: ${n.text.replace(/\n/g, ' ')}`);
  check((await text('#reg-dr')) === '14.80', 'the interrupted postmark charged 0.10 (14.80)');
  check(await page.locator('#postmark-pending').isVisible(), 'the page offers to finish the postmark');
  const lostToken = Buffer.from(await page.evaluate(() => window.lostToken));
  const kept = await page.evaluate((id) => JSON.parse(localStorage.getItem(`openpsd.postmark.pending.${id}`)), deviceId);
  check(kept && /^[0-9a-f]{16}$/.test(kept.txn) && kept.name === 'second.txt', `the page kept its transaction ID ${kept && kept.txn}`);
  check(lostToken.length > 400, `the lost token (${lostToken.length} bytes) captured by the test`);
  await page.reload();
  await settled();
  check((await text('#reg-dr')) === '14.80', 'after a reload still 14.80');
  await page.click('#cert-open');
  await settled();
  n = await notice();
  check(n.kind === 'ok' && /Postmark 2 of "second\.txt" finished/.test(n.text), `finished after the reload: ${n.text.split('\n')[0]}`);
  check((await text('#reg-dr')) === '14.80', 'finishing it charged nothing more (14.80: debited once)');
  check(/Postmarks issued by this PSD: 2\b/.test(await text('#cert-fees-due')), 'the PSD counts 2 postmarks');
  check((await page.locator('#postmark-result').getAttribute('data-transaction')) === kept.txn, 'the same transaction ID re-issued');
  check(!(await page.locator('#postmark-pending').isVisible()), 'nothing pending any more');
  const tst2 = await save('#postmark-tst', 'second.txt.tst');
  const cert2 = await save('#postmark-cert', 'second.txt.postmark.pem');
  check(readFileSync(tst2).equals(lostToken), `the token shown is byte for byte the one lost (${lostToken.length} bytes)`);
  const doc2Path = join(OUT, 'second.txt');
  writeFileSync(doc2Path, doc2);
  const [ok2, out2] = tsVerify(doc2Path, tst2, cert2);
  check(ok2, `openssl ts -verify of the finished postmark: ${out2.trim().split('\n').pop()}`);

  // -- the CA's operator revokes the key's certificate: a forced order, applied by the page
  //    before the next refill, confirmed to the CA through the meter
  const pendingOrders = () => page.evaluate(async (id) => (await (await fetch(`/v1/devices/${id}/revocations`)).json()), deviceId);
  check((await pendingOrders()).orders.length === 0, 'no pending revocation order before the operator acts');
  await operatorRevoke(serialB, 'keyCompromise');
  const before = await pendingOrders();
  check(before.orders.length === 1 && before.orders[0].serial === serialB && String(before.orders[0].slot) === slotB,
    `the meter hands the page the forced order (through the demo's proxy): ${JSON.stringify(before.orders.map((o) => [o.counter, o.serial, o.slot, o.reason]))}`);
  await page.fill('#refill-amount', '5.00');
  await page.click('#refill-button');
  await settled();
  const refillSteps = await page.locator('#refill-steps li').allInnerTexts();
  for (const s of refillSteps) log(`  refill step: ${s}`);
  const appliedAt = refillSteps.findIndex((t) => /Revocation order \d+ applied: the back office revoked certificate/.test(t));
  const refillAt = refillSteps.findIndex((t) => /meter server: refill/.test(t));
  check(appliedAt >= 0 && refillAt > appliedAt, 'the order applied before the refill, in plain words');
  n = await notice();
  check(n.kind === 'ok' && /Refilled 5\.00/.test(n.text) && /revoked a certificate of this PSD/.test(n.text), `refill: ${n.text.split('\n')[0]}`);
  check((await text('#reg-dr')) === '19.80', 'the refill completed (19.80)');
  check((await pendingOrders()).orders.length === 0, 'the meter lists no pending order: the CA has the confirmation');
  check((await page.locator(`#cert-slots tr[data-slot="${slotB}"]`).getAttribute('data-state')) === 'retired', `slot ${slotB} retired by the order`);
  await page.setInputFiles('#postmark-file', { name: 'contract.txt', mimeType: 'text/plain', buffer: doc });
  await page.click('#postmark-button');
  await confirmFee(/Fee: 0\.10/, 'postmark after the forced revocation');
  n = await notice();
  check(n.kind === 'error' && /9A4[35]/.test(n.text), `postmark after the forced revocation refused: ${n.text.replace(/\n/g, ' ')}`);

  // -- an order the PSD cannot apply (the certificate of a request whose answer was lost,
  //    never installed, revoked by the operator): shown with the PSD's word, skipped, and
  //    the refill goes on (one pass, no loop)
  let issued = null;
  await page.route('**/v1/certificates', async (route) => {
    const resp = await route.fetch();
    issued = await resp.json();
    await route.abort('connectionreset');
  }, { times: 1 });
  await page.click('#cert-request');
  await confirmFee(/Fee at install: 5\.00/, 'certificate request whose answer is lost');
  n = await notice();
  check(n.kind === 'error' && issued && issued.serial, `the CA issued ${issued && issued.serial}, the page never got it: ${n.text.split('\n')[0]}`);
  check((await text('#reg-dr')) === '19.80', 'nothing charged for the uninstalled certificate');
  await operatorRevoke(issued.serial, 'cessationOfOperation');
  check((await pendingOrders()).orders.some((o) => o.serial === issued.serial), 'the meter hands the page an order for a certificate the PSD never installed');
  await page.fill('#refill-amount', '5.00');
  await page.click('#refill-button');
  await settled();
  const steps2 = await page.locator('#refill-steps li').allInnerTexts();
  for (const s of steps2) log(`  refill step: ${s}`);
  const refusedAt = steps2.findIndex((t) => new RegExp(`Revocation order \\d+ for certificate ${issued.serial}.*could not be applied: the PSD refused it \\(9A44`).test(t));
  check(refusedAt >= 0 && (await page.locator('#refill-steps li').nth(refusedAt).getAttribute('data-state')) === 'failed',
    'the refused order shown as such in the refill\'s steps (9A44)');
  check(steps2.filter((t) => /could not be applied/.test(t)).length === 1, 'tried once (no loop)');
  n = await notice();
  check(n.kind === 'ok' && /Refilled 5\.00/.test(n.text) && (await text('#reg-dr')) === '24.80', `the refill went on: ${n.text.split('\n')[0]}`);

  // -- the vendor publishes a dearer table in effect today: the meter refuses the audit of a
  //    PSD holding an older one (409 rate_table_stale), so the page loads it before the refill
  const today = new Date().toISOString().slice(0, 10);
  const t2 = await operatorPost(VENDOR_URL, '/v1/rates', { effective: today, fees: { postmark: 12, certificate: 500 } });
  log(`vendor published rate table ${t2.version} (postmark 0.12) effective ${today}`);
  // The meter keeps the vendor's answer 10 s (docs/rates.md): the table reaches it after that.
  await page.waitForTimeout(11_000);
  await page.fill('#refill-amount', '5.00');
  await page.click('#refill-button');
  await settled();
  const steps3 = await page.locator('#refill-steps li').allInnerTexts();
  for (const s of steps3) log(`  refill step: ${s}`);
  const loadedAt = steps3.findIndex((t) => /newer fees reached the PSD: 1 rate table/.test(t));
  const auditAt = steps3.findIndex((t) => /audit made for the nonce/.test(t));
  check(loadedAt >= 0 && auditAt > loadedAt, 'the newer rate table loaded before the refill\'s audit');
  n = await notice();
  check(n.kind === 'ok' && (await text('#reg-dr')) === '29.80', `the refill with the newer table held completed: ${n.text.split('\n')[0]}`);
  const held = page.locator(`#cert-rates tr[data-version="${t2.version}"]`);
  check((await held.count()) === 1 && (await held.getAttribute('data-in-effect')) === 'true'
    && /postmark 0\.12/.test(await held.innerText()), `the PSD holds table ${t2.version}, in effect`);

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
