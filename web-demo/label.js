// The label area both the page's PSD and the online meter print into: the DataMatrix of the
// indicium's bytes and its fields as the wasm verifier reads them under the key that should
// have signed it, the addresses the mailer entered (beside the code: the indicium has no
// field for them), and the label as printed in the chosen format (sheet.js): a preview,
// Print… (`@page` sized to the format) and Download PDF.

import { FORMATS, drawLabel, toSvg, toPdf } from './sheet.js';
import { CURRENCY, rateLabel } from './rates.js';

const $ = (id) => document.getElementById(id);
const FORMAT_KEY = 'openpsd.labelFormat';

/** The label shown: {wasm, bytes, fields, from, to}, or null. */
let current = null;

/**
 * Fills the label area with indicium `bytes` (verified under `publicKeyHex`; `whose` names
 * the key in the verdict) and shows it, with `addresses` {from: [lines], to: [lines]} if
 * given. Answers the verification, or null (with nothing shown) when the bytes do not
 * decode as an indicium.
 */
export function fillLabel(wasm, bytes, publicKeyHex, whose, addresses = {}) {
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
  $('label-rate').textContent = rateLabel(f.rate);
  const from = addresses.from || [];
  const to = addresses.to || [];
  $('label-from').textContent = from.join('\n');
  $('label-to').textContent = to.join('\n');
  $('label-addresses').hidden = from.length === 0 && to.length === 0;
  $('label').dataset.deviceId = f.deviceId;
  $('label-verified').textContent = v.valid
    ? `Signature verified under ${whose} ${f.keyId}.`
    : `Signature NOT valid: ${v.error}`;
  current = { wasm, bytes, fields: f, from, to };
  renderSheet();
  $('label-area').hidden = false;
  return v;
}

function format() {
  const f = $('label-format').value;
  return FORMATS[f] ? f : 'thermal';
}

function drawing() {
  const f = current.fields;
  return drawLabel(format(), {
    modules: current.wasm.dataMatrixModules(current.bytes),
    postage: f.postage, currency: CURRENCY, date: f.date, deviceId: f.deviceId,
    piece: f.pieces, license: f.license, origin: f.origin, destination: f.destination,
    rateName: rateLabel(f.rate), from: current.from, to: current.to,
  });
}

// The preview is the printed page: the same SVG, scaled to the screen; in print media it
// is the only thing shown, at the format's size on a page of that size (@page).
function renderSheet() {
  const name = format();
  const fmt = FORMATS[name];
  localStorage.setItem(FORMAT_KEY, name);
  $('sheet-name').textContent = `(${fmt.name})`;
  $('sheet').dataset.format = name;
  let style = $('page-style');
  if (!style) {
    style = document.createElement('style');
    style.id = 'page-style';
    document.head.append(style);
  }
  style.textContent = `@media print {
  @page { size: ${fmt.page}; margin: 0; }
  #sheet svg { width: ${fmt.w}pt; height: ${fmt.h}pt; }
}`;
  if (!current) return;
  $('sheet').innerHTML = toSvg(drawing(), `Label as printed on ${fmt.name}`);
}

/** The label in the chosen format as a PDF file download. */
function downloadPdf() {
  if (!current) return;
  const f = current.fields;
  const name = format();
  const bytes = toPdf(drawing(), `Postage label ${f.deviceId} piece ${f.pieces}`);
  const url = URL.createObjectURL(new Blob([bytes], { type: 'application/pdf' }));
  const a = document.createElement('a');
  a.href = url;
  a.download = `label-${f.deviceId}-${f.pieces}-${name}.pdf`;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

/** Wires the format picker, Print… and Download PDF (once, at start-up). */
export function initLabelTools() {
  const sel = $('label-format');
  for (const [key, f] of Object.entries(FORMATS)) {
    const o = document.createElement('option');
    o.value = key;
    o.textContent = f.name;
    sel.append(o);
  }
  const saved = localStorage.getItem(FORMAT_KEY);
  if (saved && FORMATS[saved]) sel.value = saved;
  sel.addEventListener('change', renderSheet);
  $('label-tools').addEventListener('submit', (ev) => ev.preventDefault());
  $('print-button').addEventListener('click', () => window.print());
  $('pdf-button').addEventListener('click', downloadPdf);
  renderSheet();
}
