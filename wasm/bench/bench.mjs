// bench.mjs - indicium issuance per second through the wasm module, the same two loops as
// wasm/examples/bench_native.rs: the typed psd.issueIndicium() and the raw ISSUE INDICIUM
// APDU through psd.transmit(). Runs in Node (node-bench.mjs) and in Chromium (index.html).

const ISSUE_DATA_LEN = 34; // txn 8 | postage 8 | date 4 | rate 2 | "10115" 6 | "20095" 6

function issueApdu(n) {
  const d = new Uint8Array(5 + ISSUE_DATA_LEN + 1);
  d.set([0x80, 0x40, 0x00, 0x00, ISSUE_DATA_LEN]);
  const v = new DataView(d.buffer, 5);
  v.setBigUint64(0, BigInt(n));
  v.setBigUint64(8, 1n); // 0.01
  v.setUint16(16, 2026); v.setUint8(18, 11); v.setUint8(19, 21);
  v.setUint16(20, 1);
  d.set([5, ...new TextEncoder().encode('10115'), 5, ...new TextEncoder().encode('20095')], 5 + 22);
  return d; // Le = 00 (last byte)
}

function rate(seconds, f) {
  for (let i = 0; i < 20; i++) f();
  const t0 = performance.now();
  let calls = 0;
  while (performance.now() - t0 < seconds * 1000) {
    for (let i = 0; i < 20; i++) f();
    calls += 20;
  }
  return calls / ((performance.now() - t0) / 1000);
}

// A fixed demo KMS key pair (signing key 0x11…11) to fund the PSD with.
const KMS_KEY = '11'.repeat(32);
const KMS_PUBLIC_KEY = '040217e617f0b6443928278f96999e69a23a4f2c152bdf6d6cdf66e5b80282d4ed194a7debcb97712d2dda3ca85aa8765a56f45fc758599652f2897c65306e5794';

/** A PSD personalized from fixed inputs with the demo package `m` (license 4711, 10115;
 * 1.00 per piece at most), not yet funded. Also used by first-use.mjs and
 * wasm/tests/js/wide.html, which rely on its fixed inputs. */
export function createPsd(m) {
  const built = m.buildPersonalization(
    { licenses: [{ license: 4711, origin: '10115' }], maxPostage: '1.00', maxDr: '99999999.00',
      kmsPublicKey: KMS_PUBLIC_KEY },
    new Uint8Array(32).fill(7),
  );
  return m.Psd.create(built.personalization, new Uint8Array(32).fill(8));
}

/** Funds `psd` with `amount` from the demo KMS against its `audit` message. */
export function fund(m, psd, audit, amount) {
  psd.applyRefill(m.demoKmsRefill(KMS_KEY, psd.info().publicKey, audit, amount));
}

/** Runs both loops for `seconds` each with the package `m`; returns {typed, raw}. */
export function run(m, seconds = 3) {
  const psd = createPsd(m);
  fund(m, psd, psd.audit(new Uint8Array(16).fill(1)), '99999999.00');
  const piece = { postage: '0.01', date: '2026-11-21', rate: 1, origin: '10115', destination: '20095' };
  const typed = rate(seconds, () => psd.issueIndicium(piece));
  let n = 0;
  const raw = rate(seconds, () => {
    const r = psd.transmit(issueApdu(++n));
    if (r[r.length - 2] !== 0x90) throw new Error('ISSUE INDICIUM answered ' + r.slice(-2));
  });
  psd.free();
  return { typed, raw };
}
