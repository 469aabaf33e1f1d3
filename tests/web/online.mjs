// The "online meter" tab in Chromium (seed 001, issue 16 item 6): a mailer with nothing
// installed signs up, pays into the deposit (the demo's payments desk), adds funds to the
// meter the data center keeps, prints a label (a double click charges once; an answer lost
// on the way is finished by the retry with the same transaction ID, charged once) and a
// batch of labels (the same for a lost answer: the same transaction IDs, charged once), has the
// post office verify the label's screenshot, reads the box-signed history and logs out, then
// logs in again and finds that log-in and the sign-up's listed as the box signed them.
//
//   node tests/web/online.mjs --url http://127.0.0.1:PORT/ --out target/web-test
//
// Writes OUT/online/label.png and OUT/online/online.json (the meter's public key, device ID
// and the label's bytes, for dmtxread and verify-indicium.mjs); exits non-zero on a failure.

import { parseArgs, loadPlaywright, logger } from './harness.mjs';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const args = parseArgs();
const URL = args.url || 'http://127.0.0.1:8080/';
const OUT = join(args.out || 'target/web-test', 'online');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
mkdirSync(OUT, { recursive: true });


const { log, check } = logger('online');

const { chromium } = loadPlaywright();
const profile = mkdtempSync(join(tmpdir(), 'openpsd-online-'));
let context;
const consoleLines = [];

async function main() {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    viewport: { width: 1100, height: 1400 },
  });
  const page = context.pages()[0] || await context.newPage();
  page.on('console', (m) => consoleLines.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => consoleLines.push(`pageerror: ${e.message}`));
  page.setDefaultTimeout(60_000);
  const text = (sel) => page.locator(sel).innerText();
  const idle = async () => {
    await page.waitForFunction(() => !/…$/.test(document.getElementById('online-result').textContent));
    return text('#online-result');
  };

  await page.goto(URL);
  await page.locator('#online-login').waitFor({ state: 'visible' });
  const user = `mailer-${Date.now()}`;
  await page.fill('#online-user', user);
  await page.fill('#online-pass', 'a long enough password');
  await page.click('#online-signup');
  let said = await idle();
  check(/Signed up/.test(said) && await page.locator('#online-meter').isVisible(), `signed up with nothing installed: ${said}`);
  const meterId = await text('#online-meter-id');
  check(/^[0-9A-F]{16}$/.test(meterId) && (await text('#online-balance')) === '0.00', `meter ${meterId}, balance 0.00`);
  // The session token stays in an HttpOnly cookie: no script of the page can read it.
  const cookieSeen = await page.evaluate(() => document.cookie.includes('openpsd_dc_session'));
  check(!cookieSeen, 'the session token is not visible to the page\'s scripts');

  // Adding funds before paying in: the recharging center says no; nothing moves.
  await page.fill('#online-refill', '20.00');
  await page.click('#online-refill-form button');
  said = await idle();
  check((await page.locator('#online-result').getAttribute('data-kind')) === 'error' && (await text('#online-balance')) === '0.00',
    `no funds without a deposit: ${said}`);

  await page.fill('#online-pay', '50.00');
  await page.click('#online-pay-form button');
  said = await idle();
  check((await text('#online-deposit')) === '50.00', `paid into the deposit: ${said}`);
  await page.click('#online-refill-form button');
  said = await idle();
  check((await text('#online-balance')) === '20.00' && (await text('#online-deposit')) === '30.00', `funds added: ${said}`);

  // A double click on Print: one label, charged once.
  await page.fill('#online-postage', '1.45');
  await page.fill('#online-dest', '80331');
  await page.dblclick('#online-print-form button');
  said = await idle();
  check((await text('#online-balance')) === '18.55' && (await text('#online-pieces')) === '1', `a double click charged once: ${said}`);
  check(/Signature verified/.test(await text('#label-verified')), 'the page verified the label under the meter\'s key');
  const labelText = (await page.locator('#label').innerText()).replace(/\s+/g, ' ');
  check(labelText.includes(meterId) && labelText.includes('80331'), `the label names the meter and the destination: ${labelText}`);
  const barcode = await page.locator('#label').getAttribute('data-barcode');
  await page.locator('#label').screenshot({ path: join(OUT, 'label.png') });
  const publicKey = await page.evaluate(() => fetch('/dc/v1/meter').then((r) => r.json()).then((m) => m.public_key));
  writeFileSync(join(OUT, 'online.json'), JSON.stringify({ deviceId: meterId, publicKey, barcode }, null, 2) + '\n');

  // An answer lost on the way back (the data center charged): the retry with the same
  // order reuses the transaction ID and gets the same indicium, charged once.
  let lost = 0;
  await page.route('**/dc/v1/indicia', async (route) => {
    if (lost === 0) {
      lost += 1;
      await route.fetch();
      await route.abort('connectionreset');
    } else {
      await route.continue();
    }
  });
  await page.fill('#online-postage', '0.85');
  await page.click('#online-print-form button');
  said = await idle();
  check((await page.locator('#online-result').getAttribute('data-kind')) === 'error', `the answer was lost: ${said}`);
  await page.click('#online-print-form button');
  said = await idle();
  check(/not charged twice/.test(said) && (await text('#online-balance')) === '17.70' && (await text('#online-pieces')) === '2',
    `the retry got the same indicium, charged once: ${said}`);
  await page.unroute('**/dc/v1/indicia');

  // A batch: three labels in one request (one box command), each verified under the
  // meter's key, charged once each; its answer lost on the way is finished by the retry
  // with the same transaction IDs, charged once.
  // 17 copies: the form's own validation (max 16, one box command) stops the submission.
  await page.fill('#online-copies', '17');
  await page.click('#online-print-form button');
  const overflow = await page.$eval('#online-copies', (el) => el.validity.rangeOverflow);
  check(overflow && (await text('#online-pieces')) === '2' && (await text('#online-balance')) === '17.70',
    '17 copies refused by the form, nothing printed');
  await page.fill('#online-copies', '3');
  await page.click('#online-print-form button');
  said = await idle();
  check(/Printed 3 labels, 2\.55 charged/.test(said) && (await text('#online-balance')) === '15.15' && (await text('#online-pieces')) === '5',
    `a batch of three charged once each: ${said}`);
  const batchItems = async () => page.locator('#online-batch-list li').evaluateAll(
    (lis) => lis.map((li) => ({ barcode: li.dataset.barcode, valid: li.dataset.valid, text: li.textContent })));
  let items = await batchItems();
  check(items.length === 3 && items.every((i) => i.valid === 'true') && new Set(items.map((i) => i.barcode)).size === 3
    && items.map((i) => /piece (\d+)/.exec(i.text)?.[1]).join() === '3,4,5',
  `three distinct labels, pieces 3 to 5, each verified: ${items.map((i) => i.text).join(' | ')}`);
  let lostBatch = 0;
  await page.route('**/dc/v1/indicia/batch', async (route) => {
    if (lostBatch === 0) {
      lostBatch += 1;
      await route.fetch();
      await route.abort('connectionreset');
    } else {
      await route.continue();
    }
  });
  await page.click('#online-print-form button');
  said = await idle();
  check((await page.locator('#online-result').getAttribute('data-kind')) === 'error', `the batch's answer was lost: ${said}`);
  await page.click('#online-print-form button');
  said = await idle();
  check(/same 3 labels again: not charged twice/.test(said) && (await text('#online-balance')) === '12.60' && (await text('#online-pieces')) === '8',
    `the retry got the same three indicia, charged once: ${said}`);
  items = await batchItems();
  check(items.length === 3 && items.every((i) => i.valid === 'true')
    && items.map((i) => /piece (\d+)/.exec(i.text)?.[1]).join() === '6,7,8', `the retry's labels are pieces 6 to 8: ${items.map((i) => i.text).join(' | ')}`);
  await page.unroute('**/dc/v1/indicia/batch');
  await page.fill('#online-copies', '1');

  // The post office reads the first label's screenshot: the meter's key at the KMS verifies it.
  await page.setInputFiles('#verify-file', join(OUT, 'label.png'));
  await page.click('#verify-form button');
  await page.waitForFunction(() => document.getElementById('verify-result').dataset.verdict);
  const verdict = await page.locator('#verify-result').getAttribute('data-verdict');
  said = await text('#verify-result');
  check(verdict === 'accepted' && said.includes(meterId), `the post office accepts the online meter's label: ${said}`);

  // The history the box signed: create, refill, two pieces, two batches of three.
  const kinds = await page.locator('#online-history tr td:nth-child(2)').allInnerTexts();
  check(JSON.stringify(kinds) === JSON.stringify([...Array(8).fill('issue'), 'refill', 'create']), `history ${kinds.join(', ')}`);
  // Each record checked in the page under the box's key (WebCrypto, web-demo/boxrecords.js).
  const verifiedRows = () => page.locator('#online-history tr').evaluateAll((trs) => trs.map((t) => t.dataset.verified));
  let verified = await verifiedRows();
  check(verified.length === 10 && verified.every((v) => v === 'true'), `every history record verifies under the box's key: ${verified.join(',')}`);
  said = await text('#online-verified');
  check(/^Every record above verifies under the box's key \(transactions: 10, log-ins: 1\)\.$/.test(said), said);
  // A record changed on its way from the data center (a byte of the newest one's amount,
  // as an edit in the database would): shown as not the box's, the rest still verified.
  await page.route('**/dc/v1/history', async (route) => {
    const resp = await route.fetch();
    const h = await resp.json();
    const last = h.entries[h.entries.length - 1];
    const at = 2 * 38; // box ID 8, shard 2, sequence 8, kind 1, meter 8, slot 4, amount's last byte
    last.record = last.record.slice(0, at) + (parseInt(last.record.slice(at, at + 2), 16) ^ 1).toString(16).padStart(2, '0') + last.record.slice(at + 2);
    await route.fulfill({ response: resp, json: h });
  });
  await page.reload();
  await page.locator('#online-meter').waitFor({ state: 'visible' });
  verified = await verifiedRows();
  said = await text('#online-verified');
  check(verified[0] === 'false' && verified.slice(1).every((v) => v === 'true') && /^1 record\(s\) do NOT verify/.test(said),
    `a changed record is shown as not the box's: ${verified.join(',')}; ${said}`);
  await page.unroute('**/dc/v1/history');

  // Reload: still logged in (the cookie); log out: the session is gone.
  await page.reload();
  await page.locator('#online-meter').waitFor({ state: 'visible' });
  check((await text('#online-balance')) === '12.60', 'a reload keeps the session');
  await page.click('#online-logout');
  said = await idle();
  check(await page.locator('#online-login').isVisible(), `logged out: ${said}`);
  const status = await page.evaluate(() => fetch('/dc/v1/meter').then((r) => r.status));
  check(status === 401, `after log-out the meter answers ${status}`);
  // Log in again: the box counts and signs the log-in, and the tab lists it.
  await page.fill('#online-user', user);
  await page.fill('#online-pass', 'a long enough password');
  await page.click('#online-login-form button[type=submit]');
  said = await idle();
  await page.locator('#online-meter').waitFor({ state: 'visible' });
  const logins = await text('#online-logins');
  // Newest first: this log-in, then the sign-up's (the box counts and signs both).
  const listed = /signed by the box: #(\d+) at \d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC; #(\d+) at \d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC\.$/.exec(logins);
  check(listed && Number(listed[1]) > Number(listed[2]), `the log-in and the sign-up, signed by the box, are listed: ${logins}`);
  await page.click('#online-logout');
  said = await idle();
  check(await page.locator('#online-login').isVisible(), `logged out again: ${said}`);
  await page.screenshot({ path: join(OUT, 'page.png'), fullPage: true });
}

try {
  await main();
  await context.close();
  rmSync(profile, { recursive: true, force: true });
} catch (e) {
  console.error(`[online] FAILED: ${e.stack || e}`);
  if (consoleLines.length) console.error('[online] page console:\n  ' + consoleLines.join('\n  '));
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
