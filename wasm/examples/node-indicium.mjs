// node-indicium.mjs - the npm package in Node: personalize a PSD, fund it (with the demo
// KMS: this example holds the KMS's signing key, a real host never does), issue an
// indicium, and verify it
// twice: with the package's verifyIndicium (core's verifier) and independently with
// Node's WebCrypto ECDSA P-256.
//
//   bash scripts/wasm-pkg.sh demo && node wasm/examples/node-indicium.mjs [target/wasm-pkg/demo/nodejs]
// (the demo build: buildPersonalization and demoKmsRefill are not in the shipped package)
import { createRequire } from 'node:module';
import path from 'node:path';
import { webcrypto } from 'node:crypto';

const pkgDir = path.resolve(process.argv[2] || 'target/wasm-pkg/demo/nodejs');
const { Psd, buildPersonalization, demoKmsRefill, verifyIndicium, dataMatrixSvg } =
  createRequire(import.meta.url)(path.join(pkgDir, 'openpsd.js'));

const random = (n) => webcrypto.getRandomValues(new Uint8Array(n));
const hex = (b) => Buffer.from(b).toString('hex');
const today = new Date().toISOString().slice(0, 10);
// A fixed demo KMS key pair (signing key 0x11…11): the PSD is personalized with the public
// half and takes only refill messages signed with the private half.
const KMS_KEY = '11'.repeat(32);
const KMS_PUBLIC_KEY = '040217e617f0b6443928278f96999e69a23a4f2c152bdf6d6cdf66e5b80282d4ed194a7debcb97712d2dda3ca85aa8765a56f45fc758599652f2897c65306e5794';

// 1. The vendor's personalization station: the KMS's public key, and a device ID and a
//    vendor key from entropy. The PSD makes its own keys inside.
const built = buildPersonalization(
  {
    licenses: [{ license: 4711, origin: '10115' }],
    maxPostage: '100.00',
    maxDr: '1000.00',
    kmsPublicKey: KMS_PUBLIC_KEY,
  },
  random(32),
);
const psd = Psd.create(built.personalization, random(32), today);
const info = psd.info();
console.log(`PSD ${info.deviceId}: key ID ${info.keyId}, ${info.registerSets} register set(s)`);

// 2. A fresh PSD has DR 0.00; fund it: AUDIT (signed by the device key), the KMS checks it
//    under the device's public key and signs a refill message for it, REFILL.
try {
  psd.issueIndicium({ postage: '0.85', date: today, rate: 1, origin: '10115', destination: '20095' });
} catch (e) {
  console.log(`unfunded: ${e.name} ${e.swHex}: ${e.message}`);
}
const audit = psd.audit(random(16));
const regs = psd.applyRefill(demoKmsRefill(KMS_KEY, info.publicKey, audit, '25.00'));
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
