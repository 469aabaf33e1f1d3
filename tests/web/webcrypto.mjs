// webcrypto.mjs - the outside signer (wasm/API.md § WebCrypto signer) in headless Chromium
// with the real IndexedDB: the P-256 key is generated non-extractable and stored, the PSD is
// personalized with its public half, an indicium is issued (debit in the PSD, signature by the
// CryptoKey); a second one dies between debit and signature; after a page reload the same key
// comes back from IndexedDB (still not exportable), the PSD from its sealed state, the dead
// piece is completed (debited once) and a third is issued; every label verifies under the key,
// in the page (verifyIndicium) and here with Node's WebCrypto.
//
//   bash scripts/wasm-pkg.sh demo && node tests/web/webcrypto.mjs [--pkg target/wasm-pkg/demo/web]
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { webcrypto } from 'node:crypto';
import { loadPlaywright, logger, parseArgs } from './harness.mjs';

const args = parseArgs();
const root = path.resolve(args.pkg || 'target/wasm-pkg/demo/web');
const { log, check } = logger('webcrypto');
const types = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript', '.wasm': 'application/wasm' };
const server = http.createServer((req, res) => {
  const p = decodeURIComponent(new URL(req.url, 'http://x').pathname);
  if (p === '/' || p === '/index.html') {
    res.writeHead(200, { 'content-type': types['.html'] });
    res.end('<!doctype html><title>webcrypto signer</title><p>test page</p>');
    return;
  }
  const file = path.join(root, p.replace(/^\/pkg\//, '/'));
  if (!p.startsWith('/pkg/') || !file.startsWith(root) || !fs.existsSync(file) || fs.statSync(file).isDirectory()) {
    res.writeHead(404);
    res.end();
    return;
  }
  res.writeHead(200, { 'content-type': types[path.extname(file)] || 'application/octet-stream', 'cache-control': 'no-store' });
  fs.createReadStream(file).pipe(res);
});
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const url = `http://127.0.0.1:${server.address().port}/`;

const { chromium } = loadPlaywright();
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run'],
});
const errors = [];
try {
  const page = await browser.newPage();
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(url);

  // What both page loads share, defined in the page each time.
  const setup = `
    window.setupSigner = async () => {
      const m = await import('/pkg/webcrypto/index.js');
      await m.default();
      const st = await import('/pkg/storage.js');
      const store = await m.openSignerStore('wc-test-signer');
      const key = await m.signerKey(store, 'psd1');
      const sealed = await st.openStorage('wc-test-state');
      const hex = (b) => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
      const random = (n) => crypto.getRandomValues(new Uint8Array(n));
      const piece = (t) => ({ postage: '0.85', date: '2026-11-21', rate: 1, origin: '10115',
        destination: '20095', transactionId: t });
      const save = (s) => sealed.saveSealed('psd1', s);
      const view = (i) => ({ barcode: hex(i.barcode), payload: hex(i.payload),
        signature: hex(i.signature), pieces: i.fields.pieces, dr: i.registers.dr,
        valid: m.verifyIndicium(i.barcode, hex(key.publicKeyRaw)).valid });
      let exportRefused = false;
      try { await crypto.subtle.exportKey('pkcs8', key.privateKey); } catch { exportRefused = true; }
      return { m, store, key, sealed, hex, random, piece, save, view, exportRefused };
    };`;

  // 1. First load: key, PSD, one indicium, a second dying before its signature.
  await page.addScriptTag({ content: setup });
  const first = await page.evaluate(async () => {
    const { m, store, key, sealed, hex, random, piece, save, view, exportRefused } = await window.setupSigner();
    const KMS = '11'.repeat(32);
    const KMS_PUB = '040217e617f0b6443928278f96999e69a23a4f2c152bdf6d6cdf66e5b80282d4ed194a7debcb97712d2dda3ca85aa8765a56f45fc758599652f2897c65306e5794';
    const built = m.buildPersonalization({ licenses: [{ license: 4711, origin: '10115' }],
      maxPostage: '100.00', maxDr: '1000.00', kmsPublicKey: KMS_PUB }, random(32));
    const psd = m.Psd.createOutside(key.publicKeyRaw, built.personalization, random(32), '2026-11-21');
    psd.applyRefill(m.demoKmsRefill(KMS, psd.info().publicKey, psd.audit(random(16)), '25.00'));
    await save(psd.saveState());
    const w = new m.WebCryptoPsd({ psd, key, store, name: 'psd1', save });
    const a = view(await w.issueIndicium(piece('00000000000000a1')));
    const dying = { sign: async () => { throw new Error('page closed'); },
      exportKey: crypto.subtle.exportKey.bind(crypto.subtle) };
    let died = false;
    try {
      await new m.WebCryptoPsd({ psd, key, store, name: 'psd1', save, subtle: dying })
        .issueIndicium(piece('00000000000000b2'));
    } catch { died = true; }
    const pending = await store.getPending('psd1');
    return { pk: hex(key.publicKeyRaw), extractable: key.privateKey.extractable, exportRefused,
      a, died, pendingTxn: pending && pending.transactionId, dr: psd.registers().dr };
  });
  check(first.extractable === false && first.exportRefused, 'the private key is not extractable: exportKey refuses it');
  check(first.a.valid && first.a.pieces === 1, 'the first indicium verifies under the CryptoKey\'s public key');
  check(first.died && first.pendingTxn === '00000000000000b2' && first.dr === '23.30',
    'the second piece is debited and left pending when the sign step dies');

  // 2. Reload: the key from IndexedDB, the PSD from its sealed state.
  await page.reload();
  log('reloaded');
  await page.addScriptTag({ content: setup });
  const second = await page.evaluate(async () => {
    const { m, store, key, sealed, hex, random, piece, save, view, exportRefused } = await window.setupSigner();
    const psd = m.Psd.restore(await sealed.loadSealed('psd1'), random(32), '2026-11-21');
    const w = new m.WebCryptoPsd({ psd, key, store, name: 'psd1', save });
    const b = view(await w.resumePending());
    const c = view(await w.issueIndicium(piece('00000000000000c3')));
    return { pk: hex(key.publicKeyRaw), extractable: key.privateKey.extractable, exportRefused,
      b, c, dr: psd.registers().dr, left: (await store.getPending('psd1')) ?? null };
  });
  check(second.pk === first.pk && second.extractable === false && second.exportRefused,
    'after the reload the same key comes back from IndexedDB, still not extractable');
  check(second.b.valid && second.b.pieces === 2, 'the dead page\'s piece is completed and verifies');
  check(second.c.valid && second.c.pieces === 3 && second.dr === '22.45' && second.left === null,
    'the next piece continues with the same key, each debited once');

  // 3. Independently: Node's WebCrypto over the payloads.
  const pub = await webcrypto.subtle.importKey('raw', Buffer.from(first.pk, 'hex'),
    { name: 'ECDSA', namedCurve: 'P-256' }, false, ['verify']);
  for (const [name, i] of [['first', first.a], ['resumed', second.b], ['third', second.c]]) {
    const ok = await webcrypto.subtle.verify({ name: 'ECDSA', hash: 'SHA-256' }, pub,
      Buffer.from(i.signature, 'hex'), Buffer.from(i.payload, 'hex'));
    check(ok && i.barcode === i.payload + i.signature, `Node's WebCrypto verifies the ${name} label`);
  }
  check(errors.length === 0, `no page errors${errors.length ? ': ' + errors.join('; ') : ''}`);
  log('passed');
} finally {
  await browser.close();
  server.close();
}
