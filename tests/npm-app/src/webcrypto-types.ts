// The outside signer's types as an app meets them (`openpsd/webcrypto`, wasm/API.md §
// WebCrypto signer): type-checked by `tsc --strict` in scripts/npm-test.sh, not bundled (the
// page's entry does not import it; the Chromium test of the signer is tests/web/webcrypto.mjs).
import init, {
  Psd,
  WebCryptoPsd,
  openSignerStore,
  signerKey,
  type IssuedIndicium,
  type OutsideIssued,
} from 'openpsd/webcrypto';

export async function issueWithWebCrypto(personalization: Uint8Array): Promise<IssuedIndicium> {
  await init();
  const store = await openSignerStore();
  const key = await signerKey(store, 'psd');
  const entropy = crypto.getRandomValues(new Uint8Array(32));
  const psd = Psd.createOutside(key.publicKeyRaw, personalization, entropy, null);
  const signer = new WebCryptoPsd({ psd, key, store, name: 'psd' });
  const resumed: IssuedIndicium | null = await signer.resumePending();
  if (resumed) return resumed;
  return signer.issueIndicium({
    postage: '0.85', date: '2026-11-21', rate: 1, origin: '10115', destination: '20095',
  });
}

/** What the module's own step answers, as a page that drives it itself reads it. */
export function describe(answer: OutsideIssued): string {
  return answer.pending
    ? `sign ${answer.payload.length} bytes, then psd.storeSignature(${answer.set}, '${answer.transactionId}', ...)`
    : `signed: ${answer.barcode.length} bytes`;
}
