// node wasm/bench/first-use.mjs <target/wasm-pkg/demo/nodejs> - what a fresh module instance
// pays once and what verification costs, as one JSON line:
//   createMs      buildPersonalization + Psd.create (device key generation)
//   firstSignMs   the instance's first signature (an audit): builds the generator's table
//   secondSignMs  the next one
//   verifyPerS    verifyIndicium over 200 labels of one device (all must verify)
import { createRequire } from 'node:module';
import path from 'node:path';
import { createPsd, fund } from './bench.mjs';

const m = createRequire(import.meta.url)(path.resolve(process.argv[2], 'openpsd.js'));
const PIECES = 200;

function timed(f) {
  const t0 = performance.now();
  const value = f();
  return [value, performance.now() - t0];
}

const [psd, createMs] = timed(() => createPsd(m));
const [audit, firstSignMs] = timed(() => psd.audit(new Uint8Array(16).fill(1)));
const [, secondSignMs] = timed(() => psd.audit(new Uint8Array(16).fill(2)));
fund(m, psd, audit, '99999999.00');
const piece = { postage: '0.01', date: '2026-11-21', rate: 1, origin: '10115', destination: '20095' };
const labels = Array.from({ length: PIECES }, () => psd.issueIndicium(piece).barcode);
const publicKey = psd.info().publicKey;
const [valid, verifyMs] = timed(() => labels.filter((b) => m.verifyIndicium(b, publicKey).valid).length);
psd.free();
if (valid !== PIECES) throw new Error(`only ${valid} of ${PIECES} labels verified`);
const r = (x) => Number(x.toFixed(2));
console.log(JSON.stringify({
  createMs: r(createMs), firstSignMs: r(firstSignMs), secondSignMs: r(secondSignMs),
  verifyPerS: Math.round(PIECES / verifyMs * 1000),
}));
