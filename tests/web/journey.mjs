// The mailer's journey through the web demo, in Debian's Chromium driven by playwright-core:
// create a PSD in the page, refusals with their messages, refill through the meter server,
// issue an indicium and screenshot its label, the post office reading that screenshot (accepted,
// then a duplicate), print CSS, history, a purse card and a transfer
// to it (and a wrong PIN), a license requested, exported to a file, imported once and refused
// the second time (9A33), reload
// (the device, its registers and the purse are still there), desktop and phone size (no
// sideways scroll at 390 px, screenshots, an axe-core audit: no serious or critical
// violation), no console error but the API answers the journey causes, tamper with the sealed record (a clear
// error, the record kept). Run by scripts/web-test.sh, which starts the back office and then
// decodes the label with libdmtx and verifies it independently (verify-indicium.mjs).
//
//   node tests/web/journey.mjs --url http://127.0.0.1:PORT/ --out target/web-test
//
// Issue 19 part 2 on top: the label's addresses; each label format's print preview, its PDF
// download (pdfinfo, pdftotext, pdftoppm + dmtxread: poppler-utils and libdmtx) and
// Chromium's print of it (@page); the post office reading the PDF's code; the rates picker;
// the history's search and CSV; start over (backup, cancel changes nothing, confirm resets).
//
// Writes OUT/label.png, OUT/print.png, OUT/label.pdf, OUT/page.png, OUT/desktop.png, OUT/phone.png,
// OUT/pdf/ (each format's PDF, preview, rendering and decoded bytes), OUT/history.csv, the
// backup, OUT/journey.json; exits non-zero on the first failure.

import { parseArgs, loadPlaywright, logger, axeAudit } from './harness.mjs';
import { mkdtempSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const args = parseArgs();
const URL = args.url || 'http://127.0.0.1:8080/';
const OUT = args.out || 'target/web-test';
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
mkdirSync(OUT, { recursive: true });


const { log, check } = logger('journey');
// The addresses the mailer enters (Latin-1 on purpose: the PDF's WinAnsi text).
const SENDER = ['Erika Müller', 'Invalidenstraße 1', '10115 Berlin'];
const RECIPIENT = ['Max Mustermann', 'Große Bleichen 5, Hof', '20095 Hamburg'];
const pdfTool = (tool, ...a) => execFileSync(tool, a, { encoding: 'utf8' });

const { chromium } = loadPlaywright();
const profile = mkdtempSync(join(tmpdir(), 'openpsd-journey-'));
let context;
const consoleLines = [];
// Console errors the journey causes on purpose: Chromium logs every HTTP error answer of a
// deliberate refusal (a refill refused by the meter server, the online meter's session
// check) and the answer the journey cuts off (a refill's lost confirmation). Only calls of
// the API match, never a page file (the favicon's 404 was one).
const expectedConsole = [/^error: Failed to load resource: (the server responded with a status of 4\d\d\b|net::ERR_CONNECTION_RESET).* @ https?:\/\/[^/]+\/(v1|dc\/v1|demo\/v1|dc\/demo)\//];

async function main() {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    viewport: { width: 1100, height: 1400 },
    deviceScaleFactor: 2,
  });
  const page = context.pages()[0] || await context.newPage();
  page.on('console', (m) => consoleLines.push(`${m.type()}: ${m.text()}${m.location()?.url ? ` @ ${m.location().url}` : ''}`));
  page.on('pageerror', (e) => consoleLines.push(`pageerror: ${e.message}`));
  page.setDefaultTimeout(60_000);

  const settled = async () => {
    await page.waitForFunction(() => {
      const s = document.getElementById('status').dataset.state;
      return s !== 'busy' && s !== 'loading';
    });
    return page.locator('#status').getAttribute('data-state');
  };
  const text = (sel) => page.locator(sel).innerText();
  const notice = async () => ({
    kind: await page.locator('#notice').getAttribute('data-kind'),
    text: await text('#notice'),
    hidden: await page.locator('#notice').isHidden(),
  });
  const registers = async () => ({
    ar: await text('#reg-ar'), dr: await text('#reg-dr'), controlSum: await text('#reg-cs'),
    pieces: await text('#reg-pieces'), refills: await text('#reg-refills'),
    inspection: await text('#reg-inspection'),
  });
  const expectRefusal = async (what, pattern) => {
    await settled();
    const n = await notice();
    const [msg, code] = n.text.split('\n').filter((l) => l.trim());
    check(!n.hidden && n.kind === 'error' && pattern.test(msg), `${what} refused with a clear message: "${msg}" [${code || ''}]`);
  };
  // A piece of mail: the product (rate 1, a letter at 0.85, or rate 2 at 1.60, fixed by the
  // rate card: the postage field is read-only; any other amount: rate 9, free entry), the
  // addresses, the recipient's postal code.
  const frank = async (postage, destination, to = RECIPIENT) => {
    const rate = { '0.85': '1', '1.60': '2' }[postage] || '9';
    await page.selectOption('#frank-rate', rate);
    if (rate === '9') {
      await page.fill('#frank-postage', postage);
    } else {
      check(await page.locator('#frank-postage').getAttribute('readonly') !== null
        && await page.inputValue('#frank-postage') === postage, `rate ${rate} fixes the postage at ${postage} (read-only)`);
    }
    if (!(await page.inputValue('#frank-from'))) await page.fill('#frank-from', SENDER.join('\n'));
    await page.fill('#frank-to', to.join('\n'));
    await page.fill('#frank-destination', destination);
    await page.click('#frank-button');
  };

  // -- 1. open the page: no device yet
  await page.goto(URL);
  check(await settled() === 'ready', 'the page loads the wasm module and the sealed storage');
  check(await page.locator('#create').isVisible(), 'no device yet: the create form is shown');

  // -- 2. create the device (personalization room + PSD in the page + KMS registration)
  await page.fill('#create-origin', '10115');
  await page.click('#create-button');
  await settled();
  let n = await notice();
  check(n.kind === 'ok' && /created and registered/.test(n.text), `device created: ${n.text.split('\n')[0]}`);
  const deviceId = await text('#dev-id');
  const publicKey = (await page.locator('#dev-pubkey').textContent()).trim();
  const keyId = await text('#dev-keyid');
  check(/^[0-9A-F]{16}$/.test(deviceId), `device ID ${deviceId}`);
  check(/^04[0-9a-f]{128}$/.test(publicKey), `public key ${publicKey.slice(0, 20)}…`);
  let regs = await registers();
  check(regs.dr === '0.00' && regs.pieces === '0' && /never inspected/.test(regs.inspection), `fresh registers ${JSON.stringify(regs)}`);

  // -- 3. refusal: a fresh device has never been inspected
  await frank('0.85', '20095');
  await expectRefusal('franking before the first inspection', /Inspection due/);
  check(await page.evaluate(() => {
    const n = document.getElementById('notice');
    const r = n.getBoundingClientRect();
    return document.getElementById('frank-form').nextElementSibling === n && r.top >= 0 && r.bottom <= window.innerHeight;
  }), 'the refusal is next to the "Issue indicium" form, on screen');

  // -- 4. refill 25.00 through the meter server
  await page.fill('#refill-amount', '25.00');
  await page.click('#refill-button');
  check(await settled() === 'ready', 'refill finished');
  n = await notice();
  const steps = await page.locator('#refill-steps li').allInnerTexts();
  for (const s of steps) log(`  refill step: ${s}`);
  check(n.kind === 'ok' && /Refilled 25\.00/.test(n.text), `refill: ${n.text.split('\n')[0]}`);
  check(steps.some((s) => /completed/.test(s)) && steps.some((s) => /receipt accepted/.test(s)), 'refill steps: audit, message, receipt, confirmation completed');
  regs = await registers();
  check(regs.dr === '25.00' && regs.controlSum === '25.00' && regs.refills === '1' && /franking allowed/.test(regs.inspection),
    `registers after the refill ${JSON.stringify(regs)}`);
  check(/available 75\.00, held 0\.00, debited 25\.00/.test(await text('#dev-account')), `account: ${await text('#dev-account')}`);

  // -- 5. refusals with their messages
  await page.fill('#refill-amount', '500.00');
  await page.click('#refill-button');
  await expectRefusal('a refill above the deposit', /deposit does not cover/);
  await frank('30.00', '20095');
  await expectRefusal('postage above the descending register', /Insufficient funds/);
  await frank('150.00', '20095');
  await expectRefusal('postage above the per-piece limit', /Postage above the limit/);
  regs = await registers();
  check(regs.dr === '25.00' && regs.pieces === '0', 'nothing was debited by the refusals');

  // -- 5b. a refill whose confirmation is lost on the way is resumed with the same
  //        transaction ID: applied once, charged once
  let aborted = 0;
  await page.route('**/v1/refills/*/confirm', (route) => {
    aborted += 1;
    return route.abort('connectionreset');
  });
  await page.fill('#refill-amount', '5.00');
  await page.click('#refill-button');
  await expectRefusal('a refill whose confirmation was lost', /not reachable/);
  await page.unroute('**/v1/refills/*/confirm');
  check(aborted === 1, 'the confirmation request was cut once');
  check(/interrupted refill of 5\.00/.test(await text('#refill-pending')), `the page says so: ${await text('#refill-pending')}`);
  regs = await registers();
  check(regs.dr === '30.00' && regs.refills === '2', `the message was applied before the connection broke ${JSON.stringify(regs)}`);
  await page.fill('#refill-amount', '99.00');
  await page.click('#refill-button');
  await settled();
  n = await notice();
  const resumed = await page.locator('#refill-steps li').allInnerTexts();
  for (const s of resumed) log(`  resumed step: ${s}`);
  check(n.kind === 'ok' && /Refilled 5\.00/.test(n.text) && resumed.some((s) => /finishing the interrupted refill/.test(s))
    && resumed.some((s) => /applied before/.test(s)), 'the next refill first finishes the interrupted one (same transaction ID)');
  regs = await registers();
  check(regs.dr === '30.00' && regs.controlSum === '30.00' && regs.refills === '2', `credited once ${JSON.stringify(regs)}`);
  check(/available 70\.00, held 0\.00, debited 30\.00/.test(await text('#dev-account')), `charged once: ${await text('#dev-account')}`);

  // -- 6. issue an indicium; its label
  await frank('0.85', '20095');
  await settled();
  n = await notice();
  check(n.kind === 'ok' && /Indicium #1 issued: 0\.85 to 20095/.test(n.text), `indicium: ${n.text.split('\n')[0]}`);
  check(await page.evaluate(() => document.getElementById('frank-form').nextElementSibling?.id === 'notice'), 'the message is shown next to the "Issue indicium" form');
  regs = await registers();
  check(regs.ar === '0.85' && regs.dr === '29.15' && regs.controlSum === '30.00' && regs.pieces === '1', `registers after the piece ${JSON.stringify(regs)}`);
  const label = page.locator('#label');
  check(await label.isVisible(), 'the label is shown');
  const barcode = await label.getAttribute('data-barcode');
  check(/^[0-9a-f]+$/.test(barcode) && barcode.length === 256, `label carries a ${barcode.length / 2}-byte indicium`);
  check(/Signature verified/.test(await text('#label-verified')), 'the page verified the indicium (wasm verifyIndicium)');
  const labelText = await label.innerText();
  log(`  label text: ${labelText.replace(/\s+/g, ' ')}`);
  check(labelText.includes('0.85') && labelText.includes('10115') && labelText.includes('20095') && labelText.includes(deviceId),
    'the label shows postage, origin, destination and device ID');
  check([...SENDER, ...RECIPIENT].every((l) => labelText.includes(l)) && /Letter \(rate 1\)/.test(labelText),
    'the label shows the sender\'s and the recipient\'s address beside the code, and the product');
  await label.screenshot({ path: join(OUT, 'label.png') });
  log(`  saved ${join(OUT, 'label.png')}`);

  // -- 6a. the label formats: for each, the print preview, Download PDF (our own writer:
  //        pdfinfo's page size, pdftotext's addresses, the Data Matrix rendered by pdftoppm
  //        and decoded by libdmtx: the indicium's bytes), and Chromium's print of the page
  //        (@page: one page of the format's size)
  const FORMATS = { thermal: [288, 432], a4: [595.28, 841.89], letter: [612, 792], env10: [684, 297] };
  mkdirSync(join(OUT, 'pdf'), { recursive: true });
  const pageSize = (file) => {
    const info = pdfTool('pdfinfo', file);
    const m = /Page size:\s+([\d.]+) x ([\d.]+) pts/.exec(info);
    return { w: Number(m[1]), h: Number(m[2]), pages: Number(/Pages:\s+(\d+)/.exec(info)[1]) };
  };
  for (const [fmt, [w, h]] of Object.entries(FORMATS)) {
    await page.selectOption('#label-format', fmt);
    check(await page.locator(`#sheet[data-format="${fmt}"] svg`).isVisible(), `${fmt}: the print preview is shown`);
    await page.locator('#sheet').screenshot({ path: join(OUT, 'pdf', `preview-${fmt}.png`) });
    const [dl] = await Promise.all([page.waitForEvent('download'), page.click('#pdf-button')]);
    const file = join(OUT, 'pdf', dl.suggestedFilename());
    await dl.saveAs(file);
    check(dl.suggestedFilename() === `label-${deviceId}-1-${fmt}.pdf`, `${fmt}: downloaded ${dl.suggestedFilename()} (${statSync(file).size} bytes)`);
    const size = pageSize(file);
    check(size.pages === 1 && Math.abs(size.w - w) < 0.5 && Math.abs(size.h - h) < 0.5, `${fmt}: pdfinfo says 1 page of ${size.w} x ${size.h} pt`);
    const txt = pdfTool('pdftotext', '-enc', 'UTF-8', file, '-');
    check([...SENDER, ...RECIPIENT].every((l) => txt.includes(l)) && txt.includes('EUR 0.85') && txt.includes(deviceId),
      `${fmt}: pdftotext finds both addresses, the postage and the device`);
    pdfTool('pdftoppm', '-r', '150', '-png', '-singlefile', file, join(OUT, 'pdf', fmt));
    const decoded = execFileSync('dmtxread', ['-N1', '-m', '60000', join(OUT, 'pdf', `${fmt}.png`)]);
    writeFileSync(join(OUT, 'pdf', `${fmt}.bin`), decoded);
    check(decoded.toString('hex') === barcode, `${fmt}: dmtxread decodes the PDF's Data Matrix (pdftoppm, 150 dpi) to the indicium's ${decoded.length} bytes`);
    await page.emulateMedia({ media: 'print' });
    const printFile = join(OUT, 'pdf', `print-${fmt}.pdf`);
    await page.pdf({ path: printFile, preferCSSPageSize: true, printBackground: true });
    await page.emulateMedia({ media: 'screen' });
    const ps = pageSize(printFile);
    check(ps.pages === 1 && Math.abs(ps.w - w) < 1 && Math.abs(ps.h - h) < 1, `${fmt}: Chromium prints the page on 1 page of ${ps.w} x ${ps.h} pt (@page)`);
    const ptxt = pdfTool('pdftotext', '-enc', 'UTF-8', printFile, '-');
    check(ptxt.includes(RECIPIENT[0]) && ptxt.includes(SENDER[0]), `${fmt}: the printed page carries both addresses`);
  }
  await page.selectOption('#label-format', 'thermal');

  // -- 6b. the post office reads the labels: the thermal PDF rendered by pdftoppm (its code) is
  //        accepted, a screenshot of the same label's code is then a duplicate; an image
  //        above what the demo's listener takes is refused in words, before any upload
  await page.setInputFiles('#verify-file', join(OUT, 'label.png'));
  await page.click('#verify-form button');
  await expectRefusal(`an image of ${statSync(join(OUT, 'label.png')).size} bytes`, /takes images up to 32 KB/);
  // A scan of the thermal label's top right corner (its code, 200 dpi, grey), as a mailer
  // would crop a photo: the demo's listener takes images up to 32 KB.
  pdfTool('pdftoppm', '-r', '200', '-png', '-gray', '-singlefile', '-x', '470', '-y', '0', '-W', '330', '-H', '330',
    join(OUT, 'pdf', `label-${deviceId}-1-thermal.pdf`), join(OUT, 'pdf', 'thermal-scan'));
  await page.locator('#label-code').screenshot({ path: join(OUT, 'label-code.png') });
  for (const [want, image] of [['accepted', join(OUT, 'pdf', 'thermal-scan.png')], ['duplicate', join(OUT, 'label-code.png')]]) {
    log(`  uploading ${image} (${statSync(image).size} bytes)`);
    await page.setInputFiles('#verify-file', image);
    await page.click('#verify-form button');
    await settled();
    const verdict = await page.locator('#verify-result').getAttribute('data-verdict');
    const said = await text('#verify-result');
    log(`  post office: ${said}`);
    check(verdict === want && said.includes(deviceId) && said.includes('piece 1'),
      `the post office's verdict on the scanned label is ${want}: ${said || (await notice()).text}`);
  }

  // -- 7. print CSS: only the label prints
  await page.emulateMedia({ media: 'print' });
  const printed = await page.evaluate(() => {
    const vis = (sel) => document.querySelector(sel).checkVisibility();
    return { main: vis('main'), header: vis('header'), label: vis('#label'), sheet: vis('#sheet svg'), labelArea: vis('#label-area'), printButton: vis('#print-button') };
  });
  check(!printed.main && !printed.header && !printed.printButton && !printed.label && printed.sheet && printed.labelArea,
    `print media shows only the label in its format ${JSON.stringify(printed)}`);
  await page.screenshot({ path: join(OUT, 'print.png') });
  await page.pdf({ path: join(OUT, 'label.pdf'), preferCSSPageSize: true });
  log(`  printed to ${join(OUT, 'label.pdf')}`);
  await page.emulateMedia({ media: 'screen' });
  await page.screenshot({ path: join(OUT, 'page.png'), fullPage: true });

  // -- 8. history
  let rows = await page.locator('#history-rows tr').allInnerTexts();
  check(rows.length === 1 && /verified/.test(rows[0]), `history: ${rows.map((r) => r.replace(/\s+/g, ' '))}`);

  // -- 9. purse: create a purse card (room + Purse in the page + issuer certificate), move
  //        5.00 to it, and a wrong PIN refused with the tries left
  check(await page.locator('#purse-create-form').isVisible(), 'no purse yet: the create form is shown');
  await page.fill('#purse-new-pin', '2468');
  await page.click('#purse-create-button');
  await settled();
  n = await notice();
  check(n.kind === 'ok' && /Purse card [0-9A-F]{16} created and certified/.test(n.text), `purse created: ${n.text.split('\n')[0]}`);
  const purseId = await text('#purse-id');
  check(await text('#purse-balance') === '0.00' && await text('#purse-certified') === 'installed', `purse ${purseId}: empty and certified`);
  check(await page.locator('#purse-create-form').isHidden(), '"Create purse card" is gone once the purse exists');
  await page.fill('#purse-amount', '5.00');
  await page.fill('#purse-pin', '2468');
  await page.click('#purse-button');
  await settled();
  n = await notice();
  check(n.kind === 'ok' && /Moved 5\.00 to purse/.test(n.text), `transfer: ${n.text.split('\n')[0]}`);
  check(await text('#purse-balance') === '5.00', `the purse shows ${await text('#purse-balance')}`);
  regs = await registers();
  check(regs.dr === '24.15' && regs.ar === '5.85' && regs.controlSum === '30.00' && regs.pieces === '1', `DR went down by 5.00 (AR counts the value moved out) ${JSON.stringify(regs)}`);
  check(await text('#reg-printed') === '0.85' && await text('#reg-moved') === '5.00' && await page.locator('#reg-other-row').isHidden(),
    `used shown apart: ${await text('#reg-printed')} postage printed, ${await text('#reg-moved')} moved to the purse`);
  check(await page.evaluate(() => document.getElementById('purse-form').nextElementSibling?.id === 'notice'), 'the transfer\'s message is next to its form');
  await page.fill('#purse-pin', '1111');
  await page.click('#purse-button');
  await expectRefusal('a transfer with a wrong PIN', /Wrong PIN: 2 tries left/);
  check(await text('#purse-balance') === '5.00' && (await registers()).dr === '24.15', 'nothing moved with the wrong PIN');
  check(/^2 of 3/.test(await text('#purse-tries')), `tries left shown: ${await text('#purse-tries')}`);

  // -- 9b. licenses (seed 003): request one (the PSD's signed request -> meter server ->
  //        manufacturer -> postal authority -> countersignature -> install in the PSD), its
  //        balance in its slot, export it to a file (a download), import it (the file
  //        picker), and the same file again refused: it can never be used (9A33)
  check(await page.locator('#licenses').isVisible(), 'the licenses panel is shown');
  const slotRow = (i) => page.locator(`#license-rows tr[data-slot="${i}"]`);
  check(await page.locator('#license-rows tr').count() === 4, 'four slots listed');
  check(await slotRow(0).locator('td.dr').innerText() === '24.15' && /free/.test(await slotRow(1).innerText()),
    `slot 0 holds the page's set (DR ${await slotRow(0).locator('td.dr').innerText()}), slot 1 is free`);
  await page.fill('#license-origin', '10115');
  await page.click('#license-button');
  await settled();
  n = await notice();
  const licSteps = await page.locator('#license-steps li').allInnerTexts();
  for (const s of licSteps) log(`  license step: ${s}`);
  check(n.kind === 'ok' && /License \d+ at 10115 installed in slot 1/.test(n.text), `license installed: ${n.text.split('\n')[0]}`);
  check(['1/4', '2/4', '3/4 granted', '4/4'].every((k) => licSteps.some((s) => s.startsWith(k))),
    'every step of the request was shown: the PSD\'s request, the meter server, the grant, the install');
  const license = await slotRow(1).getAttribute('data-license');
  check(/^\d+$/.test(license) && await slotRow(1).locator('td.dr').innerText() === '0.00'
    && /10115/.test(await slotRow(1).innerText()), `license ${license} in slot 1 with its own balance 0.00: ${(await slotRow(1).innerText()).replace(/\s+/g, ' ')}`);
  check(await slotRow(0).locator('td.dr').innerText() === '24.15', 'slot 0 keeps its balance');

  const [download] = await Promise.all([
    page.waitForEvent('download'),
    slotRow(1).locator('button.export').click(),
  ]);
  await settled();
  const setFile = join(OUT, download.suggestedFilename());
  await download.saveAs(setFile);
  n = await notice();
  const expSteps = await page.locator('#license-steps li').allInnerTexts();
  for (const s of expSteps) log(`  export step: ${s}`);
  check(n.kind === 'ok' && new RegExp(`License ${license} exported to`).test(n.text), `export: ${n.text.split('\n')[0]}`);
  check(new RegExp(`^license-${license}-.+-e\\d+\\.psdset$`).test(download.suggestedFilename()) && statSync(setFile).size > 200,
    `downloaded ${download.suggestedFilename()} (${statSync(setFile).size} bytes)`);
  check(/free/.test(await slotRow(1).innerText()) && new RegExp(`license ${license}`).test(await text('#license-exported')),
    `slot 1 is free and the PSD still counts the export: ${await text('#license-exported')}`);

  const [again] = await Promise.all([
    page.waitForEvent('download'),
    page.locator('#license-exported button').click(),
  ]);
  const againFile = join(OUT, `again-${again.suggestedFilename()}`);
  await again.saveAs(againFile);
  check(readFileSync(againFile).equals(readFileSync(setFile)), 'the browser\'s copy downloads again, byte for byte the same file');

  await page.setInputFiles('#import-file', setFile);
  await page.click('#import-button');
  await settled();
  n = await notice();
  check(n.kind === 'ok' && new RegExp(`License ${license} is back in slot 1`).test(n.text), `import: ${n.text.split('\n')[0]}`);
  check(await slotRow(1).getAttribute('data-license') === license && await slotRow(1).locator('td.dr').innerText() === '0.00'
    && await page.locator('#license-exported').isHidden(), 'the set is back in slot 1 and no export is outstanding');

  await page.setInputFiles('#import-file', setFile);
  await page.click('#import-button');
  await expectRefusal('a second import of the same file', /older or duplicate copy: it can never be used \(9A33\)/);
  check(/Card status 9A33/.test(await text('#notice')), 'the status word is shown with the refusal');
  check(await slotRow(1).getAttribute('data-license') === license, 'the refused import changed nothing');

  // -- 10. reload: the device, its registers and its history are still there
  await page.reload();
  check(await settled() === 'ready', 'reloaded');
  check(await text('#dev-id') === deviceId, `same device ${deviceId} after the reload`);
  const after = await registers();
  check(after.ar === regs.ar && after.dr === regs.dr && after.pieces === regs.pieces && after.refills === regs.refills,
    `same registers after the reload ${JSON.stringify(after)}`);
  rows = await page.locator('#history-rows tr').allInnerTexts();
  check(rows.length === 1 && /verified/.test(rows[0]), 'history kept and re-verified after the reload');
  check(await text('#purse-id') === purseId && await text('#purse-balance') === '5.00', `purse ${purseId} still holds ${await text('#purse-balance')} after the reload`);
  check(await slotRow(1).getAttribute('data-license') === license, `license ${license} still in slot 1 after the reload`);

  // -- 10b. the history is verified, not trusted: a changed entry shows as invalid
  const historyKey = `openpsd.history.${deviceId}`;
  const original = await page.evaluate((k) => localStorage.getItem(k), historyKey);
  await page.evaluate(([k, v]) => {
    const list = JSON.parse(v);
    const b = list[0].barcode;
    list[0].barcode = b.slice(0, 76) + (b[76] === '0' ? '1' : '0') + b.slice(77); // postage byte
    localStorage.setItem(k, JSON.stringify(list));
  }, [historyKey, original]);
  await page.reload();
  await settled();
  rows = await page.locator('#history-rows tr').allInnerTexts();
  check(rows.length === 1 && /INVALID: indicium signature invalid/.test(rows[0]), `a changed history entry is flagged: ${rows[0].replace(/\s+/g, ' ')}`);
  await page.evaluate(([k, v]) => localStorage.setItem(k, v), [historyKey, original]);
  await page.reload();
  await settled();
  rows = await page.locator('#history-rows tr').allInnerTexts();
  check(/verified/.test(rows[0]) && !/INVALID/.test(rows[0]), 'the original entry verifies again');

  // -- 10d. the history's search and its CSV: two more pieces (a large letter at 1.60, rate 2,
  //         and another amount, 3.00), searched by text, date and amount; the CSV of the rows
  //         shown parses and has exactly those rows
  await frank('1.60', '80331', ['Anna Schmidt', 'Marienplatz 8', '80331 München']);
  await settled();
  check((await notice()).kind === 'ok', 'a large letter at 1.60 issued');
  await frank('3.00', '75001', ['Jean "JD" Dupont', '1 rue de Rivoli', '75001 Paris']);
  await settled();
  check((await notice()).kind === 'ok', 'another amount, 3.00, issued');
  const historyRows = async () => (await page.locator('#history-rows tr').allInnerTexts()).map((r) => r.split('\t')[0].trim());
  check(JSON.stringify(await historyRows()) === '["3","2","1"]', `history lists pieces 3, 2, 1: ${await text('#history-count')}`);
  const search = async (fields) => {
    await page.click('#history-clear');
    for (const [id, v] of Object.entries(fields)) await page.fill(`#history-${id}`, v);
    await page.waitForTimeout(50);
    return historyRows();
  };
  check(JSON.stringify(await search({ q: 'schmidt' })) === '["2"]', 'search "schmidt" (the recipient) finds piece 2');
  check(JSON.stringify(await search({ q: '20095' })) === '["1"]', 'search "20095" (a postal code) finds piece 1');
  check(JSON.stringify(await search({ min: '1.00' })) === '["3","2"]', 'postage at least 1.00: pieces 3 and 2');
  check(JSON.stringify(await search({ min: '1.00', max: '2' })) === '["2"]', 'postage 1.00 to 2.00: piece 2');
  const day = await page.inputValue('#frank-date');
  check(JSON.stringify(await search({ from: day, to: day })) === '["3","2","1"]', `date ${day} to ${day}: all three`);
  check(JSON.stringify(await search({ from: '2099-01-01' })) === '[]' && /Showing 0 of 3/.test(await text('#history-count')),
    `a date after them: none (${await text('#history-count')})`);
  const csvOf = async () => {
    const [dl] = await Promise.all([page.waitForEvent('download'), page.click('#history-csv')]);
    const file = join(OUT, `history-${Date.now()}.csv`);
    await dl.saveAs(file);
    return { name: dl.suggestedFilename(), rows: parseCsv(readFileSync(file, 'utf8')), file };
  };
  await search({ min: '1.00' });
  let csv = await csvOf();
  check(csv.rows.length === 3 && csv.rows[0].join(',') === 'piece,date,postage,currency,product,rate,origin,destination,from,to,transaction,signature,issued_at'
    && JSON.stringify(csv.rows.slice(1).map((r) => r[0])) === JSON.stringify(await historyRows()),
    `the CSV of the search (${csv.name}) parses: a header and the 2 rows shown (pieces ${csv.rows.slice(1).map((r) => r[0])})`);
  await search({});
  csv = await csvOf();
  const byPiece = Object.fromEntries(csv.rows.slice(1).map((r) => [r[0], Object.fromEntries(csv.rows[0].map((k, i) => [k, r[i]]))]));
  check(csv.rows.length === 4 && byPiece['3'].to === 'Jean "JD" Dupont, 1 rue de Rivoli, 75001 Paris' && byPiece['3'].postage === '3.00'
    && byPiece['3'].rate === '9' && byPiece['2'].to.startsWith('Anna Schmidt') && byPiece['2'].product === 'Large letter (rate 2)'
    && byPiece['1'].from === SENDER.join(', ') && byPiece['1'].currency === 'EUR'
    && Object.values(byPiece).every((r) => r.signature === 'verified' && r.origin === '10115'),
    'the whole CSV: 3 rows, quotes and commas in addresses kept, product, rate, currency, verified');
  writeFileSync(join(OUT, 'history.csv'), readFileSync(csv.file));
  const csvTxt = readFileSync(csv.file, 'utf8');
  check(csvTxt.includes('"Jean ""JD"" Dupont, 1 rue de Rivoli, 75001 Paris"'), 'RFC 4180 quoting in the file');
  regs = await registers();

  // -- 10c. desktop and phone size (issue 19, part 2): screenshots of both, no sideways
  //         scroll at 390 px, an axe-core audit at each size with no serious or critical
  //         violation, and no console error in the whole journey so far (a favicon, no 404)
  const sizes = [['desktop', { width: 1280, height: 900 }], ['phone', { width: 390, height: 844 }]];
  for (const [name, size] of sizes) {
    await page.setViewportSize(size);
    await page.waitForTimeout(200);
    const w = await page.evaluate(() => ({
      scroll: document.documentElement.scrollWidth,
      view: document.documentElement.clientWidth,
      wide: [...document.querySelectorAll('body *')]
        .filter((e) => e.checkVisibility() && e.getBoundingClientRect().right > document.documentElement.clientWidth + 0.5)
        // not the content of a box that scrolls (or clips) sideways itself, unless positioned
        // out of it (an absolute element escapes a box that is not its containing block)
        .filter((e) => { if (/absolute|fixed/.test(getComputedStyle(e).position)) return true; for (let a = e.parentElement; a && a !== document.body; a = a.parentElement) if (getComputedStyle(a).overflowX !== 'visible') return false; return true; })
        .slice(0, 5).map((e) => `${e.tagName.toLowerCase()}${e.id ? '#' + e.id : ''}${e.className && typeof e.className === 'string' ? '.' + e.className.split(' ')[0] : ''}`),
    }));
    check(w.scroll <= w.view, `${name} (${size.width} px): no sideways scroll (document ${w.scroll} px wide, viewport ${w.view} px)${w.scroll > w.view ? `; wider than the screen: ${w.wide.join(' ')}` : ''}`);
    await page.screenshot({ path: join(OUT, `${name}.png`), fullPage: true });
    const a11y = await axeAudit(page);
    check(a11y.bad.length === 0, `${name}: axe-core finds no serious or critical violation (${a11y.all} in all${a11y.other.length ? `: ${a11y.other.join(', ')}` : ''})${a11y.bad.length ? `:\n  ${a11y.bad.join('\n  ')}` : ''}`);
  }
  await page.setViewportSize({ width: 1100, height: 1400 });
  const consoleErrors = consoleLines.filter((l) => /^(error|pageerror):/.test(l) && !expectedConsole.some((re) => re.test(l)));
  check(consoleErrors.length === 0, `no console errors (a favicon, no 404)${consoleErrors.length ? `:\n  ${consoleErrors.join('\n  ')}` : ''}`);

  // -- 10e. start over, safely: the backup first (a JSON download), then a confirm step;
  //         Cancel changes nothing, Confirm leaves a clean page and a new device can be made
  check(await page.locator('#reset-start').isDisabled(), '"Start over…" is disabled until a backup is downloaded');
  const [bk] = await Promise.all([page.waitForEvent('download'), page.click('#reset-backup')]);
  const backupFile = join(OUT, bk.suggestedFilename());
  await bk.saveAs(backupFile);
  const backup = JSON.parse(readFileSync(backupFile, 'utf8'));
  check(backup.device.id === deviceId && backup.history.length === 3 && backup.registers.dr === regs.dr
    && backup.sealed.psd && backup.sealed.psd.ct.length > 100 && backup.purse && backup.transfers.length === 1,
    `backup ${bk.suggestedFilename()}: the device, DR ${backup.registers.dr}, 3 labels, the purse, the transfer, the sealed record`);
  check(await page.locator('#reset-start').isEnabled(), '"Start over…" enabled after the backup');
  const sealedBefore = await page.evaluate(readSealedRecord);
  const historyBefore = await page.evaluate((k) => localStorage.getItem(k), historyKey);
  await page.click('#reset-start');
  check(await page.locator('#reset-confirm').isVisible() && new RegExp(`Delete meter ${deviceId}.*EUR ${regs.dr.replace('.', '\\.')}`).test(await text('#reset-confirm-text')),
    `the confirm step says what is lost: ${await text('#reset-confirm-text')}`);
  await page.click('#reset-no');
  n = await notice();
  check(n.kind === 'ok' && /nothing was deleted/.test(n.text) && await page.locator('#reset-confirm').isHidden(), `cancel: ${n.text}`);
  const afterCancel = await registers();
  check(await page.evaluate(readSealedRecord) === sealedBefore && await page.evaluate((k) => localStorage.getItem(k), historyKey) === historyBefore
    && afterCancel.dr === regs.dr && afterCancel.pieces === regs.pieces && await text('#dev-id') === deviceId,
    'cancel changed nothing: the same sealed record, history and registers');
  await page.reload();
  check(await settled() === 'ready' && await text('#dev-id') === deviceId, 'after a reload the device is still there');
  await page.click('#reset-backup');
  await page.click('#reset-start');
  await Promise.all([page.waitForEvent('load'), page.click('#reset-yes')]);
  check(await settled() === 'ready' && await page.locator('#create').isVisible() && await page.locator('#device').isHidden(),
    'confirm: the page starts over with the create form');
  check(await page.evaluate(readSealedRecord) === null && await page.evaluate((k) => localStorage.getItem(k), historyKey) === null
    && await page.evaluate(() => localStorage.getItem('openpsd.device')) === null, 'no sealed record, history or device left in the browser');
  await page.fill('#create-origin', '10115');
  await page.click('#create-button');
  await settled();
  const newId = await text('#dev-id');
  const fresh = await registers();
  check(newId !== deviceId && fresh.dr === '0.00' && fresh.pieces === '0' && await page.locator('#history').isHidden()
    && await page.locator('#purse-create-form').isVisible(), `a clean PSD: device ${newId}, DR 0.00, no history, no purse`);

  // -- 11. tamper with the sealed record: a clear error, never a silent reset
  const tampered = await page.evaluate(tamperSealedRecord);
  log(`  tampered: ${tampered}`);
  await page.reload();
  check(await settled() === 'fatal', 'after tampering the page refuses to open the device');
  const fatalText = await text('#fatal-text');
  check(/changed or damaged and does not open/.test(fatalText), `clear error: "${fatalText}"`);
  check(await page.locator('#create').isHidden(), 'no "create device" offered over the tampered record');
  const still = await page.evaluate(readSealedRecord);
  check(still === tampered, 'the tampered record is kept as it was (not reset, not replaced)');

  const result = { url: URL, deviceId, keyId, publicKey, barcode, registers: regs };
  writeFileSync(join(OUT, 'journey.json'), JSON.stringify(result, null, 2) + '\n');
  log(`journey passed; ${join(OUT, 'journey.json')} written`);
}

// RFC 4180: quoted fields may hold commas, doubled quotes and line breaks; CRLF rows.
function parseCsv(t) {
  const rows = [];
  let row = [];
  let f = '';
  let q = false;
  for (let i = 0; i < t.length; i++) {
    const c = t[i];
    if (q) {
      if (c === '"' && t[i + 1] === '"') { f += '"'; i++; } else if (c === '"') q = false; else f += c;
    } else if (c === '"') q = true;
    else if (c === ',') { row.push(f); f = ''; } else if (c === '\r' && t[i + 1] === '\n') { row.push(f); rows.push(row); row = []; f = ''; i++; } else f += c;
  }
  if (f || row.length) { row.push(f); rows.push(row); }
  return rows;
}

// In the page: find the sealed record of "psd" in the storage module's IndexedDB and flip
// one bit of its ciphertext. Returns a fingerprint of the record after the change.
async function tamperSealedRecord() {
  const open = () => new Promise((res, rej) => {
    const r = indexedDB.open('openpsd');
    r.onsuccess = () => res(r.result);
    r.onerror = () => rej(r.error);
  });
  const db = await open();
  const p = (req) => new Promise((res, rej) => { req.onsuccess = () => res(req.result); req.onerror = () => rej(req.error); });
  for (const storeName of db.objectStoreNames) {
    const tx = db.transaction(storeName, 'readwrite');
    const st = tx.objectStore(storeName);
    const keys = await p(st.getAllKeys());
    for (const key of keys) {
      const rec = await p(st.get(key));
      if (rec && rec.ct && rec.iv && String(key).includes('psd')) {
        const ct = new Uint8Array(rec.ct instanceof ArrayBuffer ? rec.ct : rec.ct.buffer).slice();
        ct[Math.floor(ct.length / 2)] ^= 0x01;
        rec.ct = ct.buffer;
        await p(st.put(rec, st.keyPath === null ? key : undefined));
        await new Promise((res) => { tx.oncomplete = res; });
        db.close();
        const h = await crypto.subtle.digest('SHA-256', ct);
        return `${storeName}/${key}: ${ct.length} bytes, sha256 ${Array.from(new Uint8Array(h), (b) => b.toString(16).padStart(2, '0')).join('')}`;
      }
    }
  }
  db.close();
  throw new Error('no sealed "psd" record found in IndexedDB "openpsd"');
}

async function readSealedRecord() {
  const db = await new Promise((res, rej) => {
    const r = indexedDB.open('openpsd');
    r.onsuccess = () => res(r.result);
    r.onerror = () => rej(r.error);
  });
  const p = (req) => new Promise((res, rej) => { req.onsuccess = () => res(req.result); req.onerror = () => rej(req.error); });
  for (const storeName of db.objectStoreNames) {
    const st = db.transaction(storeName, 'readonly').objectStore(storeName);
    for (const key of await p(st.getAllKeys())) {
      const rec = await p(st.get(key));
      if (rec && rec.ct && rec.iv && String(key).includes('psd')) {
        const ct = new Uint8Array(rec.ct instanceof ArrayBuffer ? rec.ct : rec.ct.buffer);
        const h = await crypto.subtle.digest('SHA-256', ct);
        db.close();
        return `${storeName}/${key}: ${ct.length} bytes, sha256 ${Array.from(new Uint8Array(h), (b) => b.toString(16).padStart(2, '0')).join('')}`;
      }
    }
  }
  db.close();
  return null;
}

try {
  await main();
  await context.close();
  rmSync(profile, { recursive: true, force: true });
} catch (e) {
  console.error(`[journey] FAILED: ${e.stack || e}`);
  if (consoleLines.length) console.error('[journey] page console:\n  ' + consoleLines.join('\n  '));
  if (context) {
    try {
      const page = context.pages()[0];
      if (page) await page.screenshot({ path: join(OUT, 'failure.png'), fullPage: true });
      console.error(`[journey] screenshot at ${join(OUT, 'failure.png')}`);
    } catch {
      // ignore
    }
    await context.close().catch(() => {});
  }
  rmSync(profile, { recursive: true, force: true });
  process.exit(1);
}
