// An independent check of the label's DataMatrix: the bytes libdmtx's `dmtxread` decoded
// from the screenshot are parsed here from the layout in docs/apdu.md § 5 (not with the
// project's Rust or wasm code) and their ECDSA P-256 / SHA-256 signature is verified with
// Node's WebCrypto under the public key the page showed for its device.
//
//   node tests/web/verify-indicium.mjs DECODED.bin JOURNEY.json
//
// Prints the decoded fields; exits non-zero unless the bytes are a valid indicium of that
// device (and the same bytes the page put on the label).

import { readFileSync } from 'node:fs';
import { webcrypto as crypto } from 'node:crypto';

const [decodedPath, journeyPath] = process.argv.slice(2);
if (!decodedPath || !journeyPath) {
  console.error('usage: verify-indicium.mjs DECODED.bin JOURNEY.json');
  process.exit(2);
}
const bytes = new Uint8Array(readFileSync(decodedPath));
const journey = JSON.parse(readFileSync(journeyPath, 'utf8'));
const hex = (b) => Buffer.from(b).toString('hex');
const fail = (msg) => {
  console.error(`verify-indicium: FAILED: ${msg}`);
  process.exit(1);
};

// --- parse (docs/apdu.md § 5)
if (bytes.length < 54 + 2 + 64) fail(`${bytes.length} bytes is too short for an indicium`);
const signed = bytes.subarray(0, bytes.length - 64);
const signature = bytes.subarray(bytes.length - 64);
const dv = new DataView(signed.buffer, signed.byteOffset, signed.byteLength);
const u64 = (o) => dv.getBigUint64(o);
const money = (v) => `${v / 100n}.${String(v % 100n).padStart(2, '0')}`;
const code = (o) => {
  const n = signed[o];
  if (n < 1 || n > 10) fail(`postal code length ${n} at offset ${o}`);
  const s = Buffer.from(signed.subarray(o + 1, o + 1 + n)).toString('latin1');
  if (!/^[A-Z0-9 -]+$/.test(s)) fail(`postal code ${JSON.stringify(s)}`);
  return [s, o + 1 + n];
};
const f = {
  version: signed[0],
  algorithm: signed[1],
  keyId: hex(signed.subarray(2, 6)),
  deviceId: hex(signed.subarray(6, 14)).toUpperCase(),
  license: dv.getUint32(14),
  ar: money(u64(18)),
  dr: money(u64(26)),
  pieces: dv.getUint32(34),
  postage: money(u64(38)),
  date: `${dv.getUint16(46)}-${String(signed[48]).padStart(2, '0')}-${String(signed[49]).padStart(2, '0')}`,
  rate: dv.getUint16(50),
};
let o;
[f.origin, o] = code(52);
[f.destination, o] = code(o);
if (o !== signed.length) fail(`${signed.length - o} bytes left over after the destination`);
if (f.version !== 1 || f.algorithm !== 1) fail(`version ${f.version} / algorithm ${f.algorithm}`);

// --- that device's key
const pub = Buffer.from(journey.publicKey, 'hex');
const kid = hex(new Uint8Array(await crypto.subtle.digest('SHA-256', pub)).subarray(0, 4));
if (f.keyId !== kid) fail(`key ID ${f.keyId} is not the page's device key (${kid})`);
if (f.deviceId !== journey.deviceId) fail(`device ${f.deviceId}, the page's device is ${journey.deviceId}`);
const key = await crypto.subtle.importKey('raw', pub, { name: 'ECDSA', namedCurve: 'P-256' }, false, ['verify']);
const ok = await crypto.subtle.verify({ name: 'ECDSA', hash: 'SHA-256' }, key, signature, signed);
if (!ok) fail('the ECDSA P-256 signature does not verify under the device public key');
if (hex(bytes) !== journey.barcode) fail('the decoded bytes differ from the indicium the page put on the label');

// A changed byte must not verify (the check above is not vacuous).
const forged = signed.slice();
forged[38 + 7] ^= 1;
if (await crypto.subtle.verify({ name: 'ECDSA', hash: 'SHA-256' }, key, signature, forged)) fail('a changed postage still verifies');

console.log(`decoded indicium (${bytes.length} bytes: ${signed.length} signed + 64 signature), signature VALID under the page's device key (WebCrypto ECDSA P-256/SHA-256):`);
for (const [k, v] of Object.entries(f)) console.log(`  ${k.padEnd(12)} ${v}`);
console.log(`  signature    ${hex(signature)}`);
