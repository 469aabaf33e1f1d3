// node-indicium.mjs - the npm package in Node: personalize a PSD, fund it (with the demo
// KMS: this example holds K1, a real host never does), issue an indicium, and verify it
// twice: with the package's verifyIndicium (core's verifier) and independently with
// Node's WebCrypto ECDSA P-256.
//
//   bash scripts/wasm-pkg.sh && node wasm/examples/node-indicium.mjs [target/wasm-pkg/nodejs]
import { createRequire } from 'node:module';
import path from 'node:path';
import { webcrypto } from 'node:crypto';

const pkgDir = path.resolve(process.argv[2] || 'target/wasm-pkg/nodejs');
const { Psd, buildPersonalization, demoKmsRefill, verifyIndicium, dataMatrixSvg } =
  createRequire(import.meta.url)(path.join(pkgDir, 'openpsd.js'));

const random = (n) => webcrypto.getRandomValues(new Uint8Array(n));
const hex = (b) => Buffer.from(b).toString('hex');
const today = new Date().toISOString().slice(0, 10);

// 1. The vendor's personalization station: device ID, K1 and a vendor key from entropy.
const built = buildPersonalization(
  {
    licenses: [{ license: 4711, origin: '10115' }],
    maxPostage: '100.00',
    maxDr: '1000.00',
  },
  random(32),
);
const psd = Psd.create(built.personalization, random(32), today);
const info = psd.info();
console.log(`PSD ${info.deviceId}: key ID ${info.keyId}, ${info.registerSets} register set(s)`);

// 2. A fresh PSD has DR 0.00; fund it: AUDIT, the KMS seals a refill for it, REFILL.
try {
  psd.issueIndicium({ postage: '0.85', date: today, rate: 1, origin: '10115', destination: '20095' });
} catch (e) {
  console.log(`unfunded: ${e.name} ${e.swHex}: ${e.message}`);
}
const audit = psd.audit(random(16));
const regs = psd.applyRefill(demoKmsRefill(built.k1, audit, '25.00'));
console.log(`refilled: DR ${regs.dr}, control sum ${regs.controlSum}, refills ${regs.refills}`);

// 3. Issue an indicium.
const issued = psd.issueIndicium({
  postage: '0.85', date: today, rate: 1, origin: '10115', destination: '20095',
});
const f = issued.fields;
console.log(`indicium (${issued.barcode.length} bytes): ${f.postage} on ${f.date}, ` +
  `${f.origin} -> ${f.destination}, piece ${f.pieces}, AR ${f.ar}, DR ${f.dr}`);
console.log(`  ${hex(issued.barcode)}`);

// 4. Verify: the core's verifier, then Node's own WebCrypto.
const v = verifyIndicium(issued.barcode, info.publicKey);
const key = await webcrypto.subtle.importKey('raw', Buffer.from(info.publicKey, 'hex'),
  { name: 'ECDSA', namedCurve: 'P-256' }, false, ['verify']);
const webOk = await webcrypto.subtle.verify({ name: 'ECDSA', hash: 'SHA-256' }, key,
  issued.signature, issued.payload);
const tampered = issued.barcode.slice();
tampered[30] ^= 1;
const vBad = verifyIndicium(tampered, info.publicKey);
console.log(`verifyIndicium: ${v.valid}; WebCrypto ECDSA: ${webOk}; tampered: ${vBad.valid} (${vBad.error})`);

const svg = dataMatrixSvg(issued.barcode);
console.log(`DataMatrix SVG: ${svg.length} characters`);
if (!v.valid || !webOk || vBad.valid || !svg.startsWith('<svg')) {
  console.error('FAILED');
  process.exit(1);
}
console.log('OK');
