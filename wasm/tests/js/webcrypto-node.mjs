// webcrypto-node.mjs - the outside signer's module and signer.mjs (wasm/js/webcrypto.js) in
// Node, with Node's WebCrypto and the in-memory key store (Node has no IndexedDB): the key
// is generated non-extractable, the PSD is personalized with its public half, an indicium is
// debited in the PSD, signed by the CryptoKey and stored; a page that dies between debit and
// signature completes on the next load, debited once; a refusal leaves nothing pending.
//
//   bash scripts/wasm-pkg.sh demo && node wasm/tests/js/webcrypto-node.mjs [target/wasm-pkg/demo/nodejs/webcrypto]
import { createRequire } from 'node:module';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { webcrypto } from 'node:crypto';
import assert from 'node:assert/strict';

const dir = path.resolve(process.argv[2] || 'target/wasm-pkg/demo/nodejs/webcrypto');
const wasm = createRequire(import.meta.url)(path.join(dir, 'openpsd.js'));
const { WebCryptoPsd, memorySignerStore, signerKey } = await import(
  pathToFileURL(path.join(dir, 'signer.mjs')).href
);
const subtle = webcrypto.subtle;
const random = (n) => webcrypto.getRandomValues(new Uint8Array(n));
const hex = (b) => Buffer.from(b).toString('hex');
const today = '2026-11-21';
const KMS_KEY = '11'.repeat(32);
const KMS_PUBLIC_KEY = '040217e617f0b6443928278f96999e69a23a4f2c152bdf6d6cdf66e5b80282d4ed194a7debcb97712d2dda3ca85aa8765a56f45fc758599652f2897c65306e5794';
const piece = (txn, postage = '0.85') => ({
  postage, date: today, rate: 1, origin: '10115', destination: '20095', transactionId: txn,
});

// 1. The key: generated once, non-extractable, the same on the next call.
const store = memorySignerStore();
const key = await signerKey(store, 'psd1', subtle);
assert.equal(key.privateKey.extractable, false, 'the private key is not extractable');
await assert.rejects(subtle.exportKey('pkcs8', key.privateKey), 'exportKey refuses it');
assert.equal(key.publicKeyRaw.length, 65);
assert.deepEqual((await signerKey(store, 'psd1', subtle)).publicKeyRaw, key.publicKeyRaw);

// 2. The PSD, personalized with the key's public half, funded by the demo KMS.
const built = wasm.buildPersonalization(
  { licenses: [{ license: 4711, origin: '10115' }], maxPostage: '100.00', maxDr: '1000.00',
    kmsPublicKey: KMS_PUBLIC_KEY },
  random(32),
);
let psd = wasm.Psd.createOutside(key.publicKeyRaw, built.personalization, random(32), today);
const info = psd.info();
assert.notEqual(info.publicKey, hex(key.publicKeyRaw), 'GET DATA shows the device key');
psd.applyRefill(wasm.demoKmsRefill(KMS_KEY, info.publicKey, psd.audit(random(16)), '25.00'));
let saved = psd.saveState();
const save = async (s) => { saved = s; };

// 3. issueIndicium: debited in the PSD, signed by the CryptoKey, kept by the PSD.
let w = new WebCryptoPsd({ psd, key, store, name: 'psd1', save, subtle });
const first = await w.issueIndicium(piece('00000000000000a1'));
assert.ok(wasm.verifyIndicium(first.barcode, hex(key.publicKeyRaw)).valid, 'core verifies');
assert.ok(await subtle.verify({ name: 'ECDSA', hash: 'SHA-256' }, key.publicKey,
  first.signature, first.payload), 'WebCrypto verifies');
assert.equal(first.registers.dr, '24.15');
assert.equal(await store.getPending('psd1'), undefined, 'nothing pending after');
const again = await w.issueIndicium(piece('00000000000000a1'));
assert.deepEqual(again.barcode, first.barcode, 'the same transaction: the same bytes');
assert.equal(psd.registers().dr, '24.15', 'debited once');

// 4. The page dies between the debit and the signature: the sign step throws.
const dying = { sign: async () => { throw new Error('page closed'); },
  exportKey: subtle.exportKey.bind(subtle) };
w = new WebCryptoPsd({ psd, key, store, name: 'psd1', save, subtle: dying });
await assert.rejects(w.issueIndicium(piece('00000000000000a2')), /page closed/);
assert.equal((await store.getPending('psd1')).transactionId, '00000000000000a2');
// Reload: the PSD from its saved state (the debit was saved before signing).
psd.free();
psd = wasm.Psd.restore(saved, random(32), today);
assert.equal(psd.registers().dr, '23.30', 'the debit was saved before the signature');
// The typed Psd.issueIndicium expects a signed answer: refused before the debit.
assert.throws(() => psd.issueIndicium(piece('00000000000000ff')),
  (e) => e.name === 'InputError' && /issueUnsigned/.test(e.message));
assert.equal(psd.registers().dr, '23.30', 'issueIndicium debited nothing');
w = new WebCryptoPsd({ psd, key, store, name: 'psd1', save, subtle });
const resumed = await w.resumePending();
assert.ok(wasm.verifyIndicium(resumed.barcode, hex(key.publicKeyRaw)).valid);
assert.equal(resumed.fields.dr, '23.30');
assert.equal(psd.registers().dr, '23.30', 'debited once');
assert.equal(await w.resumePending(), null, 'nothing left');

// 5. A request the PSD refuses (more than DR): nothing debited, nothing pending.
await assert.rejects(w.issueIndicium(piece('00000000000000a3', '99.00')),
  (e) => e.name === 'CardError' && e.swHex === '9A01');
assert.equal(await store.getPending('psd1'), undefined);

console.log('webcrypto-node: OK (key non-extractable, issue, retry, resume after a dead page, issueIndicium refused, refusal)');
