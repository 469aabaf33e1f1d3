// The label area both the page's PSD and the online meter print into: the DataMatrix of the
// indicium's bytes and its fields as the wasm verifier reads them under the key that should
// have signed it.

const $ = (id) => document.getElementById(id);

/**
 * Fills the label area with indicium `bytes` (verified under `publicKeyHex`; `whose` names
 * the key in the verdict) and shows it. Answers the verification, or null (with nothing
 * shown) when the bytes do not decode as an indicium.
 */
export function fillLabel(wasm, bytes, publicKeyHex, whose) {
  const v = wasm.verifyIndicium(bytes, publicKeyHex);
  if (!v.fields) return null;
  const f = v.fields;
  $('label-code').innerHTML = wasm.dataMatrixSvg(bytes, 4);
  $('label-postage').textContent = f.postage;
  $('label-date').textContent = f.date;
  $('label-origin').textContent = f.origin;
  $('label-destination').textContent = f.destination;
  $('label-device').textContent = f.deviceId;
  $('label-piece').textContent = f.pieces;
  $('label-license').textContent = f.license;
  $('label').dataset.deviceId = f.deviceId;
  $('label-verified').textContent = v.valid
    ? `Signature verified under ${whose} ${f.keyId}.`
    : `Signature NOT valid: ${v.error}`;
  $('label-area').hidden = false;
  return v;
}
